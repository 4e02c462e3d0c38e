"""The wizard's steps through piped keys against the sandbox: the real credential check and the
real PostHog data source (definitions, HogQL counts, preview, volumes)."""

from __future__ import annotations

import socket

import pytest

from cs_posthog.config import Draft, Identification, Operator, PersonFilter
from cs_posthog.output import Output
from cs_posthog.sandbox.runner import get_json, get_jsonl, start_sandbox
from cs_posthog.wizard.context import WizardContext
from helpers import env_app, env_store, fake_key, sandbox_env, wizard_parts
from wizard_fakes import DOWN, ENTER, TAB, piped_keys

PROP = "organization_id"


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2000, persons=300, customers=40, seed=3, region="us") as sb:
        yield sb


@pytest.fixture
def info(sandbox, monkeypatch):
    return sandbox_env(monkeypatch, sandbox.info, keys=False)


def persons(info) -> list[dict]:
    return get_jsonl(info["posthog_us"] + "/_sandbox/dump/persons")


def count_where(info, pred) -> int:
    return sum(1 for p in persons(info) if pred(p["properties"]))


def ask_step1(text: str):
    from cs_posthog.wizard.step_posthog import ask_posthog

    ctx = WizardContext(out=Output(), draft=Draft(), **wizard_parts())
    with piped_keys() as keys:
        keys.send_text(text)
        settings = ask_posthog(ctx)
    return ctx, settings


def test_step1_finds_the_region_and_project(home, info, capsys):
    ctx, settings = ask_step1(info["api_key"] + ENTER + str(info["project_id"]) + ENTER)
    assert settings.region.value == "us" and settings.host == info["posthog_us"]
    assert settings.project_id == info["project_id"] and settings.project_name
    assert "PostHog US Cloud" in capsys.readouterr().err


def test_step1_bad_key_then_good(home, info, capsys):
    ask_step1(fake_key() + ENTER + str(info["project_id"]) + ENTER + info["api_key"] + ENTER)
    assert "not valid in PostHog US or EU Cloud" in capsys.readouterr().err


def test_step1_address_of_the_other_region(home, info, capsys):
    # the pasted address names EU Cloud and the key lives in US: EU refuses the key, US knows it:
    # the step says the key works in US Cloud and goes on there, asking nothing again
    eu_url = f"{info['posthog_eu']}/project/{info['project_id']}"
    _, settings = ask_step1(info["api_key"] + ENTER + eu_url + ENTER)
    assert settings.region.value == "us" and settings.host == info["posthog_us"]
    assert settings.project_id == info["project_id"]
    err = " ".join(capsys.readouterr().err.split())
    assert "This key works in PostHog US Cloud (the address is on PostHog EU Cloud): going on with PostHog US Cloud." in err
    assert "not valid" not in err and "error:" not in err


def test_step1_missing_scopes_listed(home, info, capsys):
    ask_step1(info["api_key_missing_scopes"] + ENTER + str(info["project_id"]) + ENTER
              + DOWN + ENTER + info["api_key"] + ENTER)
    err = capsys.readouterr().err
    assert "Property definition (property_definition:read)" in err and "Query (query:read)" in err


def test_step1_key_of_another_project(home, info, capsys):
    ask_step1(info["api_key_other_project"] + ENTER + str(info["project_id"]) + ENTER
              + DOWN + ENTER + info["api_key"] + ENTER)
    assert f"cannot read project {info['project_id']}" in capsys.readouterr().err


def test_step1_posthog_down(home, info, monkeypatch, capsys):
    from cs_posthog.errors import UnavailableError

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    monkeypatch.setenv("CS_POSTHOG_US_HOST", dead)
    monkeypatch.setenv("CS_POSTHOG_EU_HOST", dead)
    monkeypatch.setenv("CS_POSTHOG_TIMEOUT", "2")
    with pytest.raises(UnavailableError):
        ask_step1(info["api_key"] + ENTER + str(info["project_id"]) + ENTER + DOWN + DOWN + ENTER)
    assert "could not check the key" in capsys.readouterr().err


def connected_ctx(info) -> WizardContext:
    ctx, settings = ask_step1(info["api_key"] + ENTER + str(info["project_id"]) + ENTER)
    ctx.draft.posthog = settings
    return ctx


def test_steps_3_to_5_on_real_data(home, info, capsys):
    from cs_posthog.wizard.step_events import ask_events
    from cs_posthog.wizard.step_identification import ask_identification
    from cs_posthog.wizard.step_persons import ask_persons

    ctx = connected_ctx(info)
    capsys.readouterr()
    with piped_keys() as keys:
        keys.send_text(ENTER + "organization_id" + ENTER)
        ctx.draft.identification = ask_identification(ctx)
    with_prop = count_where(info, lambda p: p.get(PROP) not in (None, ""))
    assert with_prop < count_where(info, lambda p: p.get(PROP) is not None)  # the sandbox has empty ids
    err = capsys.readouterr().err
    assert f"{with_prop:,} of {len(persons(info)):,} Persons have {PROP} set, not empty." in err

    with piped_keys() as keys:
        keys.send_text("invoice_p" + TAB + ENTER)
        ctx.draft.events = ask_events(ctx)
    assert ctx.draft.events.selected == ["invoice_paid"]
    err = capsys.readouterr().err
    defs = get_json(f"{info['posthog_us']}/api/projects/{info['project_id']}/event_definitions/?limit=1000",
                    headers={"Authorization": f"Bearer {info['api_key']}"})["results"]
    assert f"We found {len(defs)} events in your account." in err

    with piped_keys() as keys:
        # add "plan tier = gold" (a name with a space), then save
        keys.send_text(DOWN + ENTER + "plan tier" + ENTER + ENTER + "gold" + ENTER + ENTER)
        ctx.draft.persons = ask_persons(ctx)
    assert ctx.draft.persons.filters == [PersonFilter(property="plan tier", operator=Operator.EQUALS, value="gold")]
    expected = count_where(info, lambda p: p.get(PROP) not in (None, "") and p.get("plan tier") == "gold")
    err = capsys.readouterr().err
    assert f"{expected:,} persons will be synced." in err
    assert "plan tier" in err and "Preview" in err


def test_the_badge_is_what_the_first_sync_sends(home, info, capsys):
    """The Persons step's promise ("N persons will be synced") against the real sync's contacts,
    with a property as the contact id (Persons without it, or with an empty customer id, are
    skipped by the sync and must not be counted)."""
    from cs_posthog.commands.sync import execute
    from cs_posthog.config import CustomerscoreSettings, EventsSettings
    from cs_posthog.sync.engine import SyncOptions
    from cs_posthog.wizard.flow import draft_to_config
    from cs_posthog.wizard.step_persons import ask_persons

    ctx = connected_ctx(info)
    ctx.draft.identification = Identification(property=PROP)
    ctx.draft.events = EventsSettings(selected=["invoice_paid"])
    ctx.draft.customerscore = CustomerscoreSettings(api_url=info["customerscore"], tracker_key=info["tracker_key"])
    env_store().store("customerscore", info["customerscore_api_key"])
    capsys.readouterr()
    with piped_keys() as keys:
        # contact id: the email property; add "plan != free"; save
        keys.send_text(DOWN + DOWN + ENTER + DOWN + ENTER + "email" + ENTER
                       + DOWN + ENTER + "plan" + ENTER + DOWN + ENTER + "free" + ENTER + ENTER)
        ctx.draft.persons = ask_persons(ctx)
    assert ctx.draft.persons.contact_id == "email"
    import re

    promised = int(re.search(r"✓ ([\d,]+) persons will be synced\.", capsys.readouterr().err).group(1).replace(",", ""))
    report, error = execute(env_app(), draft_to_config(ctx.draft), SyncOptions())
    assert error is None and report.status == "ok"
    assert report.contacts_skipped_no_customer + report.contacts_skipped_no_contact_id > 0  # there was something to leave out
    assert report.contacts_sent == promised > 0


def test_identification_autocomplete_from_posthog(home, info):
    from cs_posthog.wizard.step_identification import property_completer

    ctx = connected_ctx(info)
    ctx.draft.identification = Identification(property=PROP)
    c = property_completer(ctx)
    assert c.names("orga", wait=10)[0] == "organization_id"
    assert "plan tier" in c.names("plan", wait=10)
    assert not [n for n in c.names("$virt", wait=10) if n.startswith("$virt_")]  # virtual ones left out
