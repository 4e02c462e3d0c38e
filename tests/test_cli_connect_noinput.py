"""`connect --no-input` and `edit --no-input` against the sandbox: every flag, every missing or
invalid flag named (exit 2), credential problems (77), PostHog down (75), the first sync."""

from __future__ import annotations

import json
import os
import socket
import tomllib

import pytest
from helpers import fake_key, run_cli, sandbox_env

from cs_posthog.sandbox.runner import get_json, get_jsonl, start_sandbox

PROP = "organization_id"


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2000, persons=300, customers=40, seed=1, region="eu") as sb:
        yield sb


@pytest.fixture
def env(sandbox, monkeypatch):
    """The sandbox stands in for PostHog US and EU; keys in the environment."""
    return sandbox_env(monkeypatch, sandbox.info)


def base_args(info, *extra: str) -> list[str]:
    return [
        "connect", "--no-input", "--no-sync",
        "--project", str(info["project_id"]),
        "--tracker-key", info["tracker_key"],
        "--cs-url", info["customerscore"],
        "--customer-property", PROP,
        *extra,
    ]


def config(home) -> dict:
    return tomllib.loads((home / "config.toml").read_text())


def secrets(home) -> dict:
    return tomllib.loads((home / "secrets.toml").read_text())


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- success ---------------------------------------------------------------------------------
def test_every_flag(home, env):
    info = env
    url = f"{info['posthog_eu']}/project/{info['project_id']}/insights"
    r = run_cli(
        "connect", "--no-input", "--no-sync", "--project", url,
        "--tracker-key", info["tracker_key"], "--cs-url", info["customerscore"] + "/api/v1",
        "--customer-property", PROP, "--event", "invoice_paid", "--event", "$pageview", "--event", "invoice_paid",
        "--filter", "plan != free", "--filter", "email is set", "--filter", "plan tier = gold",
        "--filter", "phone is not set", "--contact-id", "email",
    )
    assert r.exit_code == 0, r.stderr
    cfg = config(home)
    assert cfg["posthog"]["region"] == "eu"
    assert cfg["posthog"]["host"] == info["posthog_eu"]
    assert cfg["posthog"]["project_id"] == info["project_id"]
    assert cfg["posthog"]["project_name"] and cfg["posthog"]["timezone"]
    assert cfg["customerscore"] == {"api_url": info["customerscore"], "tracker_key": info["tracker_key"]}
    assert cfg["identification"] == {"kind": "person_property", "property": PROP}
    assert cfg["events"]["selected"] == ["invoice_paid", "$pageview"]
    assert cfg["persons"] == {
        "contact_id": "email",
        "filter_events": True,  # a new setup: the filters choose the events too (no --no-filter-events)
        "attributes": [],
        "filters": [
            {"property": "plan", "operator": "not_equals", "value": "free"},
            {"property": "email", "operator": "is_set"},
            {"property": "plan tier", "operator": "equals", "value": "gold"},
            {"property": "phone", "operator": "is_not_set"},
        ],
    }
    for name in ("config.toml", "secrets.toml"):
        assert (home / name).stat().st_mode & 0o777 == 0o600
    assert secrets(home) == {"posthog": info["api_key"], "customerscore": info["customerscore_api_key"]}
    assert info["api_key"] not in r.stderr + r.stdout
    # the count is what the sync will send: an empty customer id or email is skipped by the sync
    people = [p["properties"] for p in get_jsonl(info["posthog_eu"] + "/_sandbox/dump/persons")]
    expected = sum(
        1 for p in people
        if p.get(PROP) not in (None, "") and p.get("email") not in (None, "") and p.get("plan") != "free"
        and p.get("plan tier") == "gold" and p.get("phone") is None
    )
    assert f"{expected:,} persons will be synced" in r.stderr
    assert "Run the first sync with `cs-posthog sync`" in r.stderr


def test_counts_leave_out_empty_customer_and_contact_ids(home, env):
    """--no-input says how many Persons the sync will send: an empty organization_id or email (the
    contact id here) is skipped by the sync, so it is not counted."""
    info = env
    r = run_cli(*base_args(info, "--event", "invoice_paid", "--contact-id", "email"))
    assert r.exit_code == 0, r.stderr
    people = [p["properties"] for p in get_jsonl(info["posthog_eu"] + "/_sandbox/dump/persons")]
    usable = [p for p in people if p.get(PROP) not in (None, "")]
    naive = sum(1 for p in people if p.get(PROP) is not None and p.get("email") is not None)
    expected = sum(1 for p in usable if p.get("email") not in (None, ""))
    assert expected < naive  # the sandbox has empty ids: the test can tell the two counts apart
    assert f"{len(usable):,} of {len(people):,} Persons have {PROP} set, not empty" in r.stderr
    assert f"1 event; {expected:,} persons will be synced" in r.stderr  # one event, not "1 events"


def test_keys_from_stdin_and_all_events(home, env, monkeypatch):
    info = env
    monkeypatch.delenv("POSTHOG_PERSONAL_API_KEY")
    monkeypatch.delenv("CUSTOMERSCORE_API_KEY")
    r = run_cli(*base_args(info, "--all-events", "--api-key-stdin", "--cs-api-key-stdin"),
                input=f"{info['api_key']}\n{info['customerscore_api_key']}\n")
    assert r.exit_code == 0, r.stderr
    defs = get_json(f"{info['posthog_eu']}/api/projects/{info['project_id']}/event_definitions/?limit=500",
                    headers={"Authorization": f"Bearer {info['api_key']}"})
    assert sorted(config(home)["events"]["selected"]) == sorted(d["name"] for d in defs["results"])
    assert secrets(home) == {"posthog": info["api_key"], "customerscore": info["customerscore_api_key"]}


def test_self_hosted_host(home, env, monkeypatch):
    info = env
    monkeypatch.delenv("CS_POSTHOG_US_HOST")
    monkeypatch.delenv("CS_POSTHOG_EU_HOST")
    r = run_cli(*base_args(info, "--event", "invoice_paid", "--host", info["posthog_eu"]))
    assert r.exit_code == 0, r.stderr
    assert config(home)["posthog"]["region"] == "self-hosted"
    assert config(home)["posthog"]["host"] == info["posthog_eu"]


def test_first_sync_runs_unless_no_sync(home, env):
    info = env
    args = [a for a in base_args(info, "--event", "invoice_paid") if a != "--no-sync"]
    seen = len(get_jsonl(info["customerscore"] + "/_sandbox/received/events"))
    r = run_cli(*args)
    assert r.exit_code == 0, r.stderr
    assert "Sync ok" in r.stdout
    assert "cs-posthog schedule --install" in r.stderr
    assert (home / "state.sqlite3").exists()
    new = get_jsonl(info["customerscore"] + "/_sandbox/received/events")[seen:]
    assert new and {e["name"] for e in new} == {"invoice_paid"}


def test_unknown_names_are_warnings(home, env):
    r = run_cli(*base_args(env, "--event", "not_an_event_yet"))
    assert r.exit_code == 0, r.stderr
    assert "not seen in PostHog yet (kept): not_an_event_yet" in r.stderr


# --- usage errors (exit 2) -------------------------------------------------------------------
def test_every_missing_flag_is_named(home, env, monkeypatch):
    monkeypatch.delenv("POSTHOG_PERSONAL_API_KEY")
    monkeypatch.delenv("CUSTOMERSCORE_API_KEY")
    r = run_cli("connect", "--no-input")
    assert r.exit_code == 2
    line = r.stderr.splitlines()[0]
    for name in ("the PostHog key", "--project", "the Customerscore key", "--tracker-key",
                 "--customer-property", "--event (or --all-events)"):
        assert name in line, name
    assert "POSTHOG_PERSONAL_API_KEY" in r.stderr and "--api-key-stdin" in r.stderr
    assert not (home / "config.toml").exists()


def test_every_invalid_flag_is_named(home, env):
    r = run_cli(
        "connect", "--no-input", "--project", "not a project", "--tracker-key", "AB12",
        "--cs-url", "http://example.com", "--customer-property", PROP, "--event", "x", "--all-events",
        "--filter", "plan ~ pro", "--filter", "= x", "--host", "ftp://x",
    )
    assert r.exit_code == 2
    line = r.stderr.splitlines()[0]
    for part in ("--project 'not a project'", "--tracker-key", "--cs-url", "--event and --all-events",
                 "--filter 'plan ~ pro'", "--filter '= x'", "--host"):
        assert part in line, part
    assert line.startswith("error: --project 'not a project': ") and "invalid" not in line
    assert not (home / "config.toml").exists()


def test_unknown_project_names_the_flag(home, env):
    r = run_cli(*base_args(env, "--event", "x"), "--project", "424242")
    assert r.exit_code == 77  # README: 77 is "no access to the project"
    assert r.stderr.startswith("error: --project 424242: project 424242 does not exist")


def test_already_connected(home, env):
    assert run_cli(*base_args(env, "--event", "invoice_paid")).exit_code == 0
    before = (home / "config.toml").read_bytes()
    r = run_cli(*base_args(env, "--event", "$pageview"))
    assert r.exit_code == 2
    assert "already connected" in r.stderr and "cs-posthog edit --no-input" in r.stderr
    assert (home / "config.toml").read_bytes() == before


# --- credentials (77) and PostHog down (75) --------------------------------------------------
def test_bad_key_exits_77(home, env, monkeypatch):
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", fake_key())
    r = run_cli(*base_args(env, "--event", "x"))
    assert r.exit_code == 77
    assert "not valid in PostHog US or EU Cloud" in r.stderr
    assert not (home / "config.toml").exists() and not (home / "secrets.toml").exists()


def test_address_of_the_other_region_saves_the_key_region(home, env):
    info = env
    # the project's address names US Cloud; the key lives in EU: EU is saved, with one line saying so
    url = f"{info['posthog_us']}/project/{info['project_id']}"
    r = run_cli(*base_args(info, "--event", "invoice_paid"), "--project", url)
    assert r.exit_code == 0, r.stderr
    assert "not valid" not in r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "this key works in" in ln]
    assert notes == [f"warning: --project is an address of PostHog US Cloud, but this key works in PostHog EU "
                     f"Cloud: saving PostHog EU Cloud ({info['posthog_eu']})"]
    saved = config(home)["posthog"]
    assert (saved["region"], saved["host"], saved["project_id"]) == ("eu", info["posthog_eu"], info["project_id"])


def test_edit_with_an_address_of_the_other_region_keeps_the_key_region(home, env):
    info = env
    assert run_cli(*base_args(info, "--event", "invoice_paid")).exit_code == 0
    url = f"{info['posthog_us']}/project/{info['project_id']}/insights"
    r = run_cli("edit", "credentials", "--no-input", "--project", url)
    assert r.exit_code == 0, r.stderr
    assert "--project is an address of PostHog US Cloud, but this key works in PostHog EU Cloud" in r.stderr
    assert config(home)["posthog"]["region"] == "eu" and config(home)["posthog"]["host"] == info["posthog_eu"]


def test_bad_key_with_an_address_exits_77(home, env, monkeypatch):
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", fake_key())
    url = f"{env['posthog_us']}/project/{env['project_id']}"
    r = run_cli(*base_args(env, "--event", "x"), "--project", url)
    assert r.exit_code == 77
    assert "not valid in PostHog US or EU Cloud" in r.stderr  # both were asked
    assert not (home / "config.toml").exists()


def test_missing_scopes_are_listed_exit_77(home, env, monkeypatch):
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", env["api_key_missing_scopes"])
    r = run_cli(*base_args(env, "--event", "x"))
    assert r.exit_code == 77
    assert "property_definition:read" in r.stderr and "query:read" in r.stderr
    assert "Property definition" in r.stderr and "Query" in r.stderr


def test_key_of_another_project_exits_77(home, env, monkeypatch):
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", env["api_key_other_project"])
    r = run_cli(*base_args(env, "--event", "x"))
    assert r.exit_code == 77
    assert f"cannot read project {env['project_id']}" in r.stderr


def test_posthog_down_exits_75(home, env, monkeypatch):
    monkeypatch.setenv("CS_POSTHOG_US_HOST", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("CS_POSTHOG_EU_HOST", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("CS_POSTHOG_TIMEOUT", "2")
    r = run_cli(*base_args(env, "--event", "x"))
    assert r.exit_code == 75
    assert "could not check the key" in r.stderr
    assert not (home / "config.toml").exists()


# --- edit --no-input -------------------------------------------------------------------------
def test_edit_no_input_changes_only_what_is_given(home, env):
    assert run_cli(*base_args(env, "--event", "invoice_paid", "--filter", "plan = pro")).exit_code == 0
    before = config(home)
    r = run_cli("edit", "events", "--no-input", "--event", "$pageview", "--event", "report_created")
    assert r.exit_code == 0, r.stderr
    after = config(home)
    assert after["events"]["selected"] == ["$pageview", "report_created"]
    assert {k: v for k, v in after.items() if k != "events"} == {k: v for k, v in before.items() if k != "events"}
    assert "events: + $pageview, report_created; - invoice_paid" in r.stderr

    r = run_cli("edit", "--no-input", "--filter", "email is set", "--contact-id", "email")
    assert r.exit_code == 0, r.stderr
    after = config(home)
    assert after["persons"] == {"contact_id": "email", "filters": [{"property": "email", "operator": "is_set"}],
                                "attributes": [], "filter_events": True}  # as saved: not given


def test_edit_no_input_clears_the_filters_and_the_contact_attributes(home, env):
    args = base_args(env, "--event", "invoice_paid", "--filter", "plan = pro", "--contact-attribute", "plan")
    assert run_cli(*args).exit_code == 0
    assert config(home)["persons"]["attributes"] == [{"property": "plan", "codename": "plan"}]
    before = (home / "config.toml").read_bytes()
    for flags, why in ((["--filter", "email is set", "--no-filters"], "--filter and --no-filters: pick one"),
                       (["--contact-attribute", "name", "--no-contact-attributes"],
                        "--contact-attribute and --no-contact-attributes: pick one")):
        r = run_cli("edit", "--no-input", *flags)
        assert r.exit_code == 2 and why in r.stderr, r.stderr
    r = run_cli("edit", "events", "--no-input", "--no-filters")
    assert r.exit_code == 2 and "--no-filters: not part of the 'events' section" in r.stderr
    assert (home / "config.toml").read_bytes() == before

    r = run_cli("edit", "persons", "--no-input", "--no-filters", "--no-contact-attributes")
    assert r.exit_code == 0, r.stderr
    persons = config(home)["persons"]
    assert (persons["filters"], persons["attributes"]) == ([], [])
    assert config(home)["events"]["selected"] == ["invoice_paid"]  # the rest as it was
    r = run_cli("status", "--json")
    assert json.loads(r.stdout)["filters"] == [f"{env['customer_property']} is set"]  # the locked one stays


def test_edit_no_input_checks_the_customerscore_keys_before_saving(home, env, monkeypatch):
    assert run_cli(*base_args(env, "--event", "invoice_paid")).exit_code == 0
    before = (home / "config.toml").read_bytes()
    r = run_cli("edit", "--no-input", "--filter", "email is set", "--tracker-key", "CS-ZZ9")
    assert r.exit_code == 77, r.stderr
    assert "--tracker-key: Customerscore rejected the tracker key" in r.stderr and "Nothing was saved" in r.stderr
    assert (home / "config.toml").read_bytes() == before

    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", "cs_live_" + "9" * 32)
    r = run_cli("edit", "customerscore", "--no-input", "--cs-api-key-stdin", input="cs_live_" + "9" * 32 + "\n")
    assert r.exit_code == 77, r.stderr
    assert "the Customerscore key" in r.stderr and "cs_live_9999" not in r.stderr
    assert (home / "config.toml").read_bytes() == before

    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", env["customerscore_api_key"])
    r = run_cli("edit", "customerscore", "--no-input", "--tracker-key", env["tracker_key"], "--cs-url", env["customerscore"])
    assert r.exit_code == 0, r.stderr
    assert "Customerscore accepted the API key and the tracker key" in r.stderr


def test_edit_no_input_errors(home, env, monkeypatch):
    assert run_cli("edit", "--no-input", "--event", "x").exit_code == 78  # not connected
    assert run_cli(*base_args(env, "--event", "invoice_paid")).exit_code == 0
    before = (home / "config.toml").read_bytes()
    r = run_cli("edit", "events", "--no-input", "--tracker-key", "CS-ZZ9")
    assert r.exit_code == 2 and "--tracker-key: not part of the 'events' section" in r.stderr
    r = run_cli("edit", "--no-input")
    assert r.exit_code == 2 and "nothing to change" in r.stderr
    r = run_cli("edit", "--no-input", "--filter", "plan")
    assert r.exit_code == 2 and "--filter 'plan'" in r.stderr
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", fake_key())
    r = run_cli("edit", "credentials", "--no-input", "--api-key-stdin", input=fake_key() + "\n")
    assert r.exit_code == 77
    assert (home / "config.toml").read_bytes() == before
    assert secrets(home)["posthog"] == env["api_key"]  # the refused key was not stored


def test_edit_no_input_new_key_from_stdin(home, env, monkeypatch):
    assert run_cli(*base_args(env, "--event", "invoice_paid")).exit_code == 0
    monkeypatch.delenv("POSTHOG_PERSONAL_API_KEY")
    os.unlink(home / "secrets.toml")
    r = run_cli("edit", "credentials", "--no-input", "--api-key-stdin", input=env["api_key"] + "\n")
    assert r.exit_code == 0, r.stderr
    assert secrets(home) == {"posthog": env["api_key"]}
    assert "PostHog personal API key: replaced" in r.stderr
