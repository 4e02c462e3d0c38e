"""Issue 12, items 2 and 3, against the sandbox over real HTTP: conditions no Person can match are
refused where they are typed (step 5) and by ``--filter`` (exit 2, nothing saved); saving with 0
Persons asks first on a terminal and warns with ``--no-input``; step 5 says what the conditions cover
and offers "Also sync only these Persons' events?", stored as ``persons.filter_events``
(``--filter-events/--no-filter-events``), with the event figures following the choice."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from cs_posthog.config import EventsSettings, Identification, Operator, PersonFilter
from cs_posthog.sandbox.runner import get_jsonl, start_sandbox
from helpers import run_cli, sandbox_env, wizard_parts
from wizard_fakes import CTRL_U, DOWN, ENTER, piped_keys

PROP = "organization_id"


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2000, persons=300, customers=40, seed=4, region="eu") as sb:
        yield sb


@pytest.fixture
def env(sandbox, monkeypatch):
    return sandbox_env(monkeypatch, sandbox.info)


def connect_args(info, *extra: str) -> list[str]:
    return ["connect", "--no-input", "--no-sync", "--project", str(info["project_id"]),
            "--tracker-key", info["tracker_key"], "--cs-url", info["customerscore"],
            "--customer-property", PROP, "--event", "invoice_paid", *extra]


def saved(home) -> dict:
    return tomllib.loads((home / "config.toml").read_text())


def people(info) -> list[dict]:
    return [p["properties"] for p in get_jsonl(info["posthog_eu"] + "/_sandbox/dump/persons")]


# --- --filter --------------------------------------------------------------------------------
@pytest.mark.parametrize("rules, why", [
    (["organization_id is not set"], "contradicts the locked condition `organization_id is set`"),
    (['organization_id = ""'], "contradicts the locked condition `organization_id is set, not empty`"),
    (["organization_id = '  '"], "contradicts the locked condition `organization_id is set, not empty`"),
    (["plan = pro", "plan = free"], "excludes `plan = pro`"),
    (["plan = pro", "plan != pro"], "excludes `plan = pro`"),
    (["plan is set", "plan is not set"], "excludes `plan is set`"),
])
def test_a_filter_no_person_can_match_exits_2_and_saves_nothing(home, env, rules, why):
    r = run_cli(*connect_args(env, *[a for rule in rules for a in ("--filter", rule)]))
    assert r.exit_code == 2, r.stderr
    assert why in r.stderr and "no Person would be synced" in r.stderr
    assert r.stderr.startswith("error:") and "--filter '" in r.stderr.splitlines()[0] and "Traceback" not in r.stderr
    assert not (home / "config.toml").exists()
    assert not (home / "secrets.toml").exists()  # nothing at all was written


def test_a_contact_id_property_is_locked_too(home, env):
    r = run_cli(*connect_args(env, "--contact-id", "email", "--filter", "email is not set"))
    assert r.exit_code == 2 and "contradicts the locked condition `email is set` (the contact id)" in r.stderr
    assert not (home / "config.toml").exists()


def test_edit_refuses_a_contradiction_and_keeps_the_config(home, env):
    assert run_cli(*connect_args(env, "--filter", "plan is not set")).exit_code == 0
    before = (home / "config.toml").read_bytes()
    r = run_cli("edit", "persons", "--no-input", "--filter", "organization_id is not set")
    assert r.exit_code == 2 and "contradicts the locked condition" in r.stderr
    # the saved filter against a new customer property: `plan is not set` beside `plan is set`
    r = run_cli("edit", "--no-input", "--customer-property", "plan")
    assert r.exit_code == 2 and "saved filter 'plan is not set': it contradicts" in r.stderr
    assert (home / "config.toml").read_bytes() == before


def test_no_input_warns_when_no_person_matches_and_saves(home, env):
    assert not any(p.get("plan") == "platinum" for p in people(env))
    r = run_cli(*connect_args(env, "--filter", "plan = platinum"))
    assert r.exit_code == 0, r.stderr
    assert "warning: no Person matches organization_id is set AND plan equals 'platinum'" in " ".join(r.stderr.split())
    assert "0 persons will be synced" not in r.stderr  # no figure to tick: a warning instead
    assert saved(home)["persons"]["filters"] == [{"property": "plan", "operator": "equals", "value": "platinum"}]
    # edit too
    r = run_cli("edit", "persons", "--no-input", "--filter", "plan = pro")
    assert r.exit_code == 0 and "warning: no Person matches" not in r.stderr
    r = run_cli("edit", "persons", "--no-input", "--filter", "plan = platinum")
    assert r.exit_code == 0 and "warning: no Person matches" in r.stderr


# --- --filter-events -------------------------------------------------------------------------
def test_filter_events_flags_are_stored(home, env):
    r = run_cli(*connect_args(env, "--filter", "plan = pro"))
    assert r.exit_code == 0, r.stderr
    assert saved(home)["persons"]["filter_events"] is True  # a new setup: what narrowing the Persons means
    assert "Events: only these Persons' events are sent." in r.stderr
    before = saved(home)
    r = run_cli("edit", "persons", "--no-input", "--no-filter-events")
    assert r.exit_code == 0, r.stderr
    after = saved(home)
    assert after["persons"]["filter_events"] is False
    assert {k: v for k, v in after.items() if k != "persons"} == {k: v for k, v in before.items() if k != "persons"}
    text = " ".join(r.stderr.split())
    assert "the next sync also sends, once, the events of the backfill window left out" in text
    assert "Persons:" not in text  # the conditions themselves did not change
    r = run_cli("edit", "--no-input", "--filter-events")
    assert r.exit_code == 0 and saved(home)["persons"]["filter_events"] is True
    r = run_cli("edit", "events", "--no-input", "--no-filter-events")
    assert r.exit_code == 2 and "--no-filter-events: not part of the 'events' section" in r.stderr


def test_no_filter_events_at_connect(home, env):
    r = run_cli(*connect_args(env, "--filter", "plan = pro", "--no-filter-events"))
    assert r.exit_code == 0, r.stderr
    assert saved(home)["persons"]["filter_events"] is False
    assert "also outside these conditions" in " ".join(r.stderr.split())


# --- step 5 on a terminal --------------------------------------------------------------------
def step5_ctx(info, **prefill):
    from cs_posthog.config import Draft, PostHogSettings
    from cs_posthog.output import Output
    from cs_posthog.wizard.context import WizardContext

    settings = PostHogSettings(region="eu", host=info["posthog_eu"], project_id=info["project_id"])
    ctx = WizardContext(out=Output(), draft=Draft(posthog=settings, identification=Identification(property=PROP),
                                                  events=EventsSettings(selected=["invoice_paid"])), **wizard_parts())
    ctx.prefill.secrets["posthog"] = (info["api_key"], "test")
    for k, v in prefill.items():
        setattr(ctx.prefill, k, v)
    return ctx


ADD = DOWN + ENTER  # "Add a condition" (second in the menu)


def a_customer_id(info) -> str:
    """A customer id some Person holds (so saving does not stop at "no Person matches")."""
    return min(p[PROP] for p in people(info) if isinstance(p.get(PROP), str) and p[PROP].strip())


def test_step5_refuses_is_not_set_on_the_customer_property(home, env, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    org = a_customer_id(env)
    # organization_id, then the third operator down: "is not set" is disabled, so the selection
    # wraps round to "equals", which asks for a value
    with piped_keys() as keys:
        keys.send_text(ADD + PROP + ENTER + DOWN * 3 + ENTER + org + ENTER + ENTER)
        settings = ask_persons(step5_ctx(env))
    assert settings.filters == [PersonFilter(property=PROP, operator=Operator.EQUALS, value=org)]


def test_step5_refuses_an_empty_customer_id_where_it_is_typed(home, env, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    org = a_customer_id(env)
    with piped_keys() as keys:
        # equals "" is refused in the value prompt (it stays open); then a real id; save
        keys.send_text(ADD + PROP + ENTER + ENTER + '""' + ENTER + CTRL_U + org + ENTER + ENTER)
        settings = ask_persons(step5_ctx(env))
    assert settings.filters == [PersonFilter(property=PROP, operator=Operator.EQUALS, value=org)]


def test_step5_refuses_a_prefilled_contradiction_at_save(home, env, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    bad = PersonFilter(property=PROP, operator=Operator.IS_NOT_SET)
    with piped_keys() as keys:
        # save is refused; remove the condition (third entry), then save
        keys.send_text(ENTER + DOWN * 2 + ENTER + ENTER + ENTER)
        settings = ask_persons(step5_ctx(env, filters=[bad]))
    assert settings.filters == []
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: organization_id is not set: it contradicts the locked condition" in err


def test_step5_saving_with_no_person_asks_first(home, env, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    add = ADD + "plan" + ENTER + ENTER + "platinum" + ENTER  # plan equals platinum: nobody
    with piped_keys() as keys:
        # save -> "Save anyway?" no -> remove it -> save
        keys.send_text(add + ENTER + "n" + DOWN * 2 + ENTER + ENTER + ENTER)
        settings = ask_persons(step5_ctx(env))
    assert settings.filters == []
    err = capsys.readouterr().err
    # asked ("No Person matches these conditions: ... Save anyway?"), not also warned
    assert "warning: no Person matches" not in err
    assert "✓ 0 persons" not in err
    with piped_keys() as keys:
        keys.send_text(add + ENTER + "y")  # save anyway
        settings = ask_persons(step5_ctx(env))
    assert settings.filters == [PersonFilter(property="plan", operator=Operator.EQUALS, value="platinum")]
    err = capsys.readouterr().err
    assert "warning: no Person matches" not in err and "✓ 0 persons" not in err


def _events_of(info, pred, now: datetime) -> int:
    persons = {p["id"]: p["properties"] for p in get_jsonl(info["posthog_eu"] + "/_sandbox/dump/persons")}
    since = now - timedelta(days=30)
    uuids = {e["uuid"] for e in get_jsonl(info["posthog_eu"] + "/_sandbox/dump/events")
             if e["event"] == "invoice_paid" and datetime.fromisoformat(e["timestamp"]) >= since
             and pred(persons.get(e["person_id"], {}))}
    return len(uuids)


def test_step5_offers_to_sync_only_these_persons_events_and_the_figures_follow(home, env, capsys):
    import re

    from cs_posthog.wizard.step_persons import ask_persons

    def has_id(p):
        return p.get(PROP) not in (None, "")

    def figure(err: str) -> tuple[int, str]:
        m = re.search(r"([\d,]+) selected events of (these Persons|every Person with a customer id) in the last 30 days", err)
        assert m, err
        return int(m.group(1).replace(",", "")), m.group(2)

    add = ADD + "plan" + ENTER + ENTER + "pro" + ENTER  # plan = pro
    before = datetime.now(UTC)
    with piped_keys() as keys:
        keys.send_text(add + ENTER)  # save: the choice as offered
        kept = ask_persons(step5_ctx(env))
    err_on = " ".join(capsys.readouterr().err.split())
    with piped_keys() as keys:
        # "Also sync only these Persons' events?" (fifth with a condition): no; save
        keys.send_text(add + DOWN * 4 + ENTER + ENTER)
        settings = ask_persons(step5_ctx(env))
    err_off = " ".join(capsys.readouterr().err.split())
    after = datetime.now(UTC)
    assert kept.filter_events is True and settings.filter_events is False  # yes for a new setup
    assert "Events: only these Persons' events are sent." in err_on
    assert "Also sync only these Persons' events?" not in err_on  # (a menu entry, not a line)
    assert err_off.index("Events: only these Persons' events are sent.") < err_off.index(
        "Events: those of every Person with a customer id are sent, also outside these conditions")
    # the event figure follows the choice: the Persons of the conditions, then every one with an id
    pro = (_events_of(env, lambda p: has_id(p) and p.get("plan") == "pro", after),
           _events_of(env, lambda p: has_id(p) and p.get("plan") == "pro", before))
    every = (_events_of(env, has_id, after), _events_of(env, has_id, before))
    assert pro[1] < every[0]  # the data tells them apart
    n_on, whose_on = figure(err_on)
    n_off, whose_off = figure(err_off)
    assert whose_on == "these Persons" and pro[0] <= n_on <= pro[1]
    assert whose_off == "every Person with a customer id" and every[0] <= n_off <= every[1]

    # edit: the saved choice is offered back; toggled on again
    ctx = step5_ctx(env)
    ctx.mode = "edit"
    ctx.draft.persons = settings
    with piped_keys() as keys:
        keys.send_text(DOWN * 4 + ENTER + ENTER)
        again = ask_persons(ctx)
    assert again.filter_events is True and again.filters == settings.filters
