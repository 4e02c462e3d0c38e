"""Issue 14 against the sandbox (its groups: company at index 0 keyed by the customer id, project at
1): `connect --no-input --customer-group`, the Group (Read) scope's message, flags that exclude each
other, `--contact-attribute`, `edit identification` switching modes (flags and the interactive step),
`status`, and the wizard's group counts worked out from the sandbox's dumps."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta

import pytest
from helpers import env_app, env_settings, run_cli, sandbox_env, wizard_parts
from wizard_fakes import DOWN, ENTER, piped_keys

from cs_posthog.sandbox.runner import get_jsonl, start_sandbox

PROP = "organization_id"


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2000, persons=300, customers=40, seed=1, region="eu") as sb:
        yield sb


@pytest.fixture
def env(sandbox, monkeypatch):
    return sandbox_env(monkeypatch, sandbox.info)


@pytest.fixture
def tty(monkeypatch):
    from cs_posthog.output import Output

    monkeypatch.setattr(Output, "stdin_is_tty", staticmethod(lambda: True))


@pytest.fixture(scope="module")
def dumps(sandbox):
    url = sandbox.info["posthog_eu"]
    return {what: get_jsonl(url + f"/_sandbox/dump/{what}") for what in ("events", "persons", "groups")}


def connect_args(info, *extra: str) -> list[str]:
    return ["connect", "--no-input", "--no-sync", "--project", str(info["project_id"]),
            "--tracker-key", info["tracker_key"], "--cs-url", info["customerscore"], "--event", "invoice_paid",
            *extra]


def config(home) -> dict:
    return tomllib.loads((home / "config.toml").read_text())


def words(text: str) -> str:
    return " ".join(text.split())


def coverage(dumps, index: int, since: datetime, prop: str | None = None) -> tuple[int, int]:
    """(groups with events since ``since``, Persons of those events): what the wizard's line says."""
    groups = {g["key"]: g["properties"] for g in dumps["groups"] if g["index"] == index}
    keys, persons = set(), set()
    for e in dumps["events"]:
        key = e[f"$group_{index}"]
        if not key or datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) < since:
            continue
        if prop is not None and groups.get(key, {}).get(prop) in (None, ""):
            continue
        keys.add(key)
        persons.add(e["person_id"])
    return len(keys), len(persons)


def assert_coverage_line(text: str, dumps, index: int, plural: str, before: datetime, after: datetime,
                         prop: str | None = None) -> None:
    """The counts shown lie between those of the window at the start and at the end of the run."""
    m = re.search(rf"(\d[\d,]*) of (\d[\d,]*) {plural} (?:with {prop} )?have events in the last 30 days; "
                  r"(\d[\d,]*) of (\d[\d,]*) Persons belong to one", words(text))
    assert m, text
    shown = [int(g.replace(",", "")) for g in m.groups()]
    hi = coverage(dumps, index, before - timedelta(days=30), prop)
    lo = coverage(dumps, index, after - timedelta(days=30), prop)
    assert lo[0] <= shown[0] <= hi[0] and lo[1] <= shown[2] <= hi[1]
    assert shown[1] == len([g for g in dumps["groups"] if g["index"] == index])
    assert shown[3] == len(dumps["persons"])
    assert 0 < shown[0] < shown[1] and 0 < shown[2] < shown[3]  # the data tells them apart


# --- connect --no-input ------------------------------------------------------------------------
def test_connect_with_a_group_type_by_name(home, env, dumps):
    before = datetime.now(UTC)
    r = run_cli(*connect_args(env, "--customer-group", "company"))
    after = datetime.now(UTC)
    assert r.exit_code == 0, r.stderr
    assert config(home)["identification"] == {"kind": "group", "group_type": "company", "group_type_index": 0}
    assert_coverage_line(r.stderr, dumps, 0, "companies", before, after)
    assert ("A Person belongs to the company of the group on their most recent selected event in the last 30 "
            "days") in words(r.stderr)
    assert "persons of a company will be synced" in words(r.stderr)
    assert "Events: those of every company are sent." in words(r.stderr)


def test_connect_with_a_group_index_and_property(home, env, dumps):
    before = datetime.now(UTC)
    r = run_cli(*connect_args(env, "--customer-group", "0", "--customer-group-property", "crm_id"))
    after = datetime.now(UTC)
    assert r.exit_code == 0, r.stderr
    assert config(home)["identification"] == {"kind": "group", "group_type": "company", "group_type_index": 0,
                                              "property": "crm_id"}
    assert_coverage_line(r.stderr, dumps, 0, "companies", before, after, prop="crm_id")


def test_connect_with_the_second_group_type(home, env, dumps):
    before = datetime.now(UTC)
    r = run_cli(*connect_args(env, "--customer-group", "Project"))  # the name, any case
    after = datetime.now(UTC)
    assert r.exit_code == 0, r.stderr
    assert config(home)["identification"] == {"kind": "group", "group_type": "project", "group_type_index": 1}
    assert_coverage_line(r.stderr, dumps, 1, "projects", before, after)


def test_a_key_without_group_read(home, env, monkeypatch):
    """By name: the group type cannot be found, the scope is named (77), nothing saved. By index: saved,
    nameless, with the same scope named in a warning."""
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", env["api_key_no_group"])
    r = run_cli(*connect_args(env, "--customer-group", "company"))
    assert r.exit_code == 77, r.stderr
    assert ("error: the API key is missing read access to: Group (group:read), needed to find the group type "
            "'company' by its name") in r.stderr
    assert "add Read access to Group" in r.stderr
    assert not (home / "config.toml").exists()

    r = run_cli(*connect_args(env, "--customer-group", "0"))
    assert r.exit_code == 0, r.stderr
    assert config(home)["identification"] == {"kind": "group", "group_type_index": 0}
    assert "the API key is missing read access to: Group (group:read)" in words(r.stderr)
    assert "saved by its index" in r.stderr


@pytest.mark.parametrize(("extra", "message"), [
    (["--customer-property", PROP, "--customer-group", "company"],
     "--customer-property and --customer-group: pick one"),
    (["--customer-group-property", "crm_id", "--customer-property", PROP],
     "--customer-group-property: goes with --customer-group"),
    (["--customer-group", "7"], "--customer-group '7': a group type index is 0 to 4"),
    (["--customer-group", "company", "--contact-attribute", "plan=Plan Name"],
     "--contact-attribute 'plan=Plan Name': an attribute codename is lower case letters"),
    (["--customer-group", "company", "--contact-attribute", "plan", "--contact-attribute", "plan tier=plan"],
     "two properties are sent as the attribute 'plan'"),
    (["--customer-group", "company", "--contact-attribute", "name=email"],
     "two properties are sent as the attribute 'email'"),
    ([], "missing --customer-property (or --customer-group)"),
])
def test_bad_identification_and_attribute_flags_exit_2(home, env, extra, message):
    r = run_cli(*connect_args(env, *extra))
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr
    assert not (home / "config.toml").exists()


def test_an_unknown_group_type_names_the_known_ones(home, env):
    r = run_cli(*connect_args(env, "--customer-group", "team"))
    assert r.exit_code == 2, r.stderr
    assert "error: --customer-group 'team': no such group type in this project" in r.stderr
    assert "hint: Its group types: company (0), project (1)." in r.stderr


def test_contact_attributes_are_saved_with_their_codenames(home, env):
    r = run_cli(*connect_args(env, "--customer-property", PROP, "--contact-attribute", "plan",
                              "--contact-attribute", "signed_up_at=signup_date", "--contact-attribute", "$initial_os"))
    assert r.exit_code == 0, r.stderr
    assert config(home)["persons"]["attributes"] == [
        {"property": "plan", "codename": "plan"}, {"property": "signed_up_at", "codename": "signup_date"},
        {"property": "$initial_os", "codename": "initial_os"}]
    err = words(r.stderr)
    assert "Contact attributes: email, plan, signed_up_at as signup_date, $initial_os as initial_os" in err
    assert "any other is dropped silently" in err


# --- edit identification -----------------------------------------------------------------------
def test_edit_switches_to_a_group_and_back(home, env):
    assert run_cli(*connect_args(env, "--customer-property", PROP, "--filter", "plan != free")).exit_code == 0
    before = config(home)
    r = run_cli("edit", "identification", "--no-input", "--customer-group", "company")
    assert r.exit_code == 0, r.stderr
    after = config(home)
    assert after["identification"] == {"kind": "group", "group_type": "company", "group_type_index": 0}
    assert {k: v for k, v in after.items() if k != "identification"} == {
        k: v for k, v in before.items() if k != "identification"}
    err = words(r.stderr)
    assert "customer: Person property organization_id → company group key" in err
    assert ("contacts are attached to the company of the group on their most recent selected event (last 30 days) "
            "instead of by the Person property organization_id") in err
    assert "the next sync sends every contact again" in err

    r = run_cli("status")
    assert r.exit_code == 0, r.stderr
    assert re.search(r"Customer\s+company group key", r.stdout), r.stdout
    assert re.search(r"Contacts\s+each Person belongs to the group", r.stdout), r.stdout
    assert re.search(r"Person filters\s+plan does not equal 'free'", r.stdout)  # no locked condition now

    r = run_cli("edit", "identification", "--no-input", "--customer-group-property", "crm_id")
    assert r.exit_code == 0, r.stderr
    assert config(home)["identification"]["property"] == "crm_id"
    assert "customer: company group key → company group property crm_id" in words(r.stderr)

    r = run_cli("edit", "identification", "--no-input", "--customer-property", PROP)
    assert r.exit_code == 0, r.stderr
    assert config(home)["identification"] == {"kind": "person_property", "property": PROP}
    assert "contacts and events are attached by the Person property organization_id instead of by the company group" \
        in words(r.stderr)


def test_edit_group_property_needs_a_group(home, env):
    assert run_cli(*connect_args(env, "--customer-property", PROP)).exit_code == 0
    before = (home / "config.toml").read_bytes()
    r = run_cli("edit", "--no-input", "--customer-group-property", "crm_id")
    assert r.exit_code == 2
    assert ("--customer-group-property: the customer is Person property organization_id; give --customer-group TYPE "
            "too") in r.stderr
    r = run_cli("edit", "persons", "--no-input", "--customer-group", "company")
    assert r.exit_code == 2 and "--customer-group: not part of the 'persons' section" in r.stderr
    assert (home / "config.toml").read_bytes() == before


def test_edit_contact_attributes_only(home, env):
    assert run_cli(*connect_args(env, "--customer-group", "company", "--filter", "plan != free")).exit_code == 0
    before = config(home)
    r = run_cli("edit", "persons", "--no-input", "--contact-attribute", "plan", "--contact-attribute", "name")
    assert r.exit_code == 0, r.stderr
    after = config(home)
    assert after["persons"]["attributes"] == [{"property": "plan", "codename": "plan"},
                                              {"property": "name", "codename": "name"}]
    assert after["persons"]["filters"] == before["persons"]["filters"]
    assert after["identification"] == before["identification"]
    assert "contact attributes: email, plan, name (the next sync sends the contacts whose attributes changed)" \
        in words(r.stderr)


def test_interactive_edit_switches_to_a_group(home, env, tty, capsys, dumps):
    """`edit identification` on a terminal: PostHog group, company, its key; the changes and what they do."""
    from cs_posthog.commands import edit

    assert run_cli(*connect_args(env, "--customer-property", PROP)).exit_code == 0
    from cs_posthog.output import Output

    before = datetime.now(UTC)
    with piped_keys() as keys:
        keys.send_text(DOWN + ENTER + ENTER + ENTER + "y")  # group; company; the key; save
        edit.run(env_app(), section="identification")
    after = datetime.now(UTC)
    assert config(home)["identification"] == {"kind": "group", "group_type": "company", "group_type_index": 0}
    err = capsys.readouterr().err
    assert_coverage_line(err, dumps, 0, "companies", before, after)
    assert "Preview (the newest company groups)" in err
    newest = max((g for g in dumps["groups"] if g["index"] == 0), key=lambda g: g["created_at"])
    assert newest["key"] in err
    assert "customer: Person property organization_id → company group key" in words(err)
    assert "the next sync sends every contact again" in words(err)


def test_interactive_connect_step3_without_group_read_falls_back_to_the_indexes(home, env, monkeypatch, capsys):
    from cs_posthog.config import Draft
    from cs_posthog.output import Output
    from cs_posthog.wizard.context import WizardContext
    from cs_posthog.wizard.step_identification import ask_identification
    from cs_posthog.wizard.step_posthog import default_check, settings_from_check

    key = env["api_key_no_group"]
    settings = settings_from_check(default_check(key, str(env["project_id"]), settings=env_app().settings))
    ctx = WizardContext(out=Output(), draft=Draft(posthog=settings), **wizard_parts())
    ctx.prefill.secrets["posthog"] = (key, "test")
    with piped_keys() as keys:
        keys.send_text(DOWN + ENTER + DOWN + ENTER + ENTER)  # group; group type 1; its key
        ident = ask_identification(ctx)
    assert ident.model_dump(exclude_none=True) == {"kind": "group", "group_type_index": 1}
    err = words(capsys.readouterr().err)
    assert "the API key is missing read access to: Group (group:read), which lists the group types by name" in err
    assert re.search(r"\d+ of \d+ groups of group type 1 have events in the last 30 days", err)


# --- the demo ------------------------------------------------------------------------------------
def test_demo_in_group_mode_sends_events_to_the_group_they_carry(tmp_path, sandbox, dumps):
    """`cs-posthog demo --no-input --groups --json` (`make demo DEMO_FLAGS=--groups`): the setup names the
    company group, and every event Customerscore received went to the company group its PostHog event
    carries."""
    import json
    import os
    import subprocess
    import sys

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CS_POSTHOG_", "POSTHOG_", "CUSTOMERSCORE_"))}
    env.update(TMPDIR=str(tmpdir), NO_COLOR="1", COLUMNS="100", CS_POSTHOG_DEMO_SANDBOX=json.dumps(sandbox.info))
    cs = sandbox.info["customerscore"]
    before = len(get_jsonl(cs + "/_sandbox/received/events"))
    proc = subprocess.run([sys.executable, "-m", "cs_posthog", "demo", "--no-input", "--groups", "--json"], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["customer"] == "company group key"
    got = get_jsonl(cs + "/_sandbox/received/events")[before:]
    assert got and summary["sync"]["status"] == "ok"
    # each event went to the company group its PostHog event carries (matched by name and time)
    carried: dict[tuple, set] = {}
    for e in dumps["events"]:
        ms = int(datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() * 1000)
        carried.setdefault((e["event"], ms), set()).add(e["$group_0"])
    for e in got:
        near = set().union(*(carried.get((e["name"], e["timestamp"] + d), set()) for d in (-1, 0, 1)))
        assert e["identification"]["customer"] in near, e  # (±1 ms: float rounding of the microseconds)
    assert list(tmpdir.iterdir()) == []  # the temporary home is gone


# --- the data source on the real client -------------------------------------------------------------
def test_posthog_source_reads_group_types_properties_and_counts(env, dumps):
    from cs_posthog.config import Operator, PersonFilter, PostHogSettings, Region
    from cs_posthog.errors import MissingScopesError
    from cs_posthog.posthog.hogql import GroupRef
    from cs_posthog.wizard.source import PostHogSource

    settings = PostHogSettings(region=Region.EU, host=env["posthog_eu"], project_id=env["project_id"])
    src = PostHogSource(settings, env["api_key"], env=env_settings())
    try:
        types = src.group_types()
        assert [(t.index, t.name, t.plural) for t in types] == [(0, "company", "companies"), (1, "project", "projects")]
        assert "crm_id" in src.group_properties(0, "cr") and "name" not in src.group_properties(0, "cr")
        assert {"name", "plan", "crm_id"} <= set(src.group_properties(0))
        assert "crm_id" not in src.group_properties(1)  # the definitions of that type only
        assert src.group_indexes() == {i: sum(1 for g in dumps["groups"] if g["index"] == i) for i in (0, 1)}
        with_crm = sum(1 for g in dumps["groups"] if g["index"] == 0 and g["properties"].get("crm_id"))
        assert src.count_groups(GroupRef(0, "crm_id")) == with_crm < src.count_groups(GroupRef(0))
        # step 5's preview in group mode: Persons who belong to a company, with its key (their latest)
        since = datetime.now(UTC) - timedelta(days=30)
        latest: dict[str, tuple[str, str]] = {}
        for e in dumps["events"]:
            if e["$group_0"] and e["event"] == "invoice_paid" and e["timestamp"] >= since.isoformat()[:19]:
                latest[e["person_id"]] = max(latest.get(e["person_id"], ("", "")), (e["timestamp"], e["$group_0"]))
        plan = PersonFilter(property="plan", operator=Operator.IS_SET)
        columns, rows = src.preview_persons([plan], (), group=GroupRef(0), group_label="company",
                                            events=["invoice_paid"])
        assert columns[:2] == ["id", "company"] and len(rows) == 5
        plans = {p["id"]: p["properties"].get("plan") for p in dumps["persons"]}
        assert all(latest[pid][1] == key and plans[pid] is not None for pid, key, *_ in rows), (rows, latest)
        columns, rows = src.preview_groups(GroupRef(0, "crm_id"))
        assert columns == ["key", "name", "crm_id"]
        by_key = {g["key"]: g["properties"] for g in dumps["groups"] if g["index"] == 0}
        assert rows and all([by_key[k].get("name"), by_key[k].get("crm_id")] == rest for k, *rest in rows)
    finally:
        src.close()
    nogroup = PostHogSource(settings, env["api_key_no_group"], env=env_settings())
    try:
        with pytest.raises(MissingScopesError) as exc:
            nogroup.group_types()
        assert exc.value.missing == ["group:read"]
        assert nogroup.group_indexes()  # HogQL needs no Group scope
    finally:
        nogroup.close()


def test_group_type_plurals():
    from cs_posthog.posthog.client import GroupType

    assert [GroupType(0, n).plural for n in ("company", "project", "key", "business", "box")] == [
        "companies", "projects", "keys", "businesses", "boxes"]
