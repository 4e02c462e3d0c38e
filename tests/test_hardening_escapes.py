"""Hardening (issue 11, item 8): terminal escapes from PostHog data.

Anyone with a project's public token can create an event named ``x\\x1b]0;TITLE\\x1b\\\\\\x1b[2J`` (set
the window title, clear the screen) or a Person property with such a name. Wherever cs-posthog shows
a name or value that came from PostHog or the config, the control characters are made visible
(``\\x1b``), through one function (``cs_posthog.output.esc``): `status` (and `status --json`, where
JSON leaves C1 controls raw), `edit`'s change list, the coverage line of `connect`, and the
wizard's event list, reminder and coverage line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cs_posthog.sandbox.runner import post_json, start_sandbox
from helpers import fake_key, wizard_parts
from wizard_fakes import ENTER, FakeSource, piped_keys

# OSC 0 (window title) ended by ST, then CSI 2J (clear the screen); an 8-bit CSI and a bidi override
EVENT = "x\x1b]0;TITLE\x1b\\\x1b[2J\x9b31m\u202eevil"
EVENT_SHOWN = "x\\x1b]0;TITLE\\x1b\\\\x1b[2J\\x9b31m\\u202eevil"
PROP = "org\x1b]0;PWNED\x07id\x9b2J"
PROP_SHOWN = "org\\x1b]0;PWNED\\x07id\\x9b2J"
RAW = ("\x1b", "\x9b", "\x07", "\u202e")


def assert_no_raw(text: str, where: str) -> None:
    found = [c for c in RAW if c in text]
    assert not found, (where, found, text[-1500:])


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=200, persons=30, customers=6, seed=17, region="eu") as sb:
        ph = sb.info["posthog_eu"]
        post_json(ph + "/_sandbox/persons", [
            {"id": "00000000-0000-4000-8000-00000000e5c1", "properties": {PROP: "acme", "email": "e@example.com"},
             "distinct_ids": ["escaper"]},
        ])
        post_json(ph + "/_sandbox/events", [{"event": EVENT, "distinct_id": "escaper"}])
        yield sb


def run(home: Path, info: dict, *args: str, stdin: str = "", code: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "CS_POSTHOG_US_HOST": info["posthog_us"], "CS_POSTHOG_EU_HOST": info["posthog_eu"],
           "CS_POSTHOG_RATE_SCALE": "off", "CS_POSTHOG_CRONTAB": str(home.parent / "no-crontab")}
    proc = subprocess.run([sys.executable, "-m", "cs_posthog", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == code, (args, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def test_status_edit_and_the_coverage_line_show_posthog_names_escaped(home, sandbox):
    info = sandbox.info
    connect = run(home, info, "connect", "--no-input", "--no-sync", "--api-key-stdin", "--cs-api-key-stdin",
                  "--project", str(info["project_id"]), "--tracker-key", info["tracker_key"],
                  "--cs-url", info["customerscore"], "--customer-property", PROP, "--event", "invoice_paid",
                  "--event", EVENT, stdin=f"{info['api_key']}\n{info['customerscore_api_key']}\n")
    assert_no_raw(connect.stdout + connect.stderr, "connect")
    # the coverage line: the one Person with the property
    assert f"Persons have {PROP_SHOWN} set" in connect.stderr, connect.stderr

    status = run(home, info, "status")
    assert_no_raw(status.stdout + status.stderr, "status")
    assert EVENT_SHOWN in status.stdout and PROP_SHOWN in status.stdout

    status_json = run(home, info, "status", "--json")
    assert_no_raw(status_json.stdout, "status --json")
    data = json.loads(status_json.stdout)
    assert data["events"] == ["invoice_paid", EVENT] and data["customer_property"] == PROP  # the real names

    other = EVENT.replace("evil", "second")
    edit = run(home, info, "edit", "events", "--no-input", "--event", "invoice_paid", "--event", other)
    assert_no_raw(edit.stdout + edit.stderr, "edit")
    assert "+ " + EVENT_SHOWN.replace("evil", "second") in edit.stderr, edit.stderr  # the change list
    assert "- " + EVENT_SHOWN in edit.stderr

    sync = run(home, info, "sync", "--dry-run")  # the sample tables hold PostHog's names and values
    assert_no_raw(sync.stdout + sync.stderr, "sync --dry-run")


# --- the wizard, with the fakes --------------------------------------------------------------
def make_ctx(source):
    from cs_posthog.config import Draft, PostHogSettings, Region
    from cs_posthog.output import Output
    from cs_posthog.wizard.context import WizardContext

    posthog = PostHogSettings(region=Region.EU, host="https://eu.posthog.com", project_id=101)
    ctx = WizardContext(out=Output(), draft=Draft(posthog=posthog), mode="connect",
                        make_source=lambda settings, key: source, **wizard_parts())
    ctx.pending_secrets["posthog"] = fake_key()
    return ctx


def test_wizard_event_list_and_reminder_show_the_name_escaped(home, monkeypatch, capsys):
    from cs_posthog.wizard import step_events, ui

    source = FakeSource(events=[EVENT, "invoice_paid"], volumes={EVENT: 900, "invoice_paid": 5}, persons=[])
    titles: list[str] = []
    real = ui.checklist

    def spy(*args, **kwargs):
        q = real(*args, **kwargs)
        titles.extend(str(c.title) for c in ui.inquirer_control(q).choices)
        return q

    monkeypatch.setattr(step_events, "checklist", spy)
    ctx = make_ctx(source)
    with piped_keys() as keys:
        keys.send_text(" " + ENTER)  # tick the first (the busiest: the escaped one), confirm
        chosen = step_events.ask_events(ctx)
    assert chosen.selected == [EVENT]  # the real name is what is saved
    assert titles and all(not any(c in t for c in RAW) for t in titles), titles
    assert any(t.startswith(EVENT_SHOWN[:38]) for t in titles), titles  # cut at 40 columns
    err = capsys.readouterr().err
    assert_no_raw(err, "wizard")
    assert f"(e.g. {EVENT_SHOWN})" in err.replace("\n", " ")  # the reminder's example
    assert f"selected: {EVENT_SHOWN}" in err


def test_wizard_coverage_line_and_questions_show_the_property_escaped(home, capsys):
    from cs_posthog.wizard import step_identification, step_persons

    persons = [{"id": f"p{i}", "properties": {PROP: "acme"} if i % 2 else {}} for i in range(4)]
    source = FakeSource(events=["invoice_paid"], volumes=None, persons=persons, properties=[PROP])
    ctx = make_ctx(source)
    ctx.prefill.customer_property = PROP
    with piped_keys() as keys:
        keys.send_text(ENTER + ENTER)  # "a Person property", then the offered name
        ident = step_identification.ask_identification(ctx)
    assert ident.property == PROP
    err = capsys.readouterr().err
    assert_no_raw(err, "identification")
    assert f"2 of 4 Persons have {PROP_SHOWN} set, not empty." in err
    # the persons step's questions: the condition list to remove from, the operator question
    import questionary

    from cs_posthog.config import Operator, PersonFilter

    asked: list[str] = []

    class Answer:
        def __init__(self, value):
            self.value = value
            self.application = None

        def unsafe_ask(self):
            return self.value

    def select(message, choices, **kw):
        asked.append(message)
        asked.extend(str(c.title) for c in choices)
        return Answer(-1)

    orig = questionary.select
    questionary.select = select
    try:
        step_persons.ask_remove([PersonFilter(property=PROP, operator=Operator.IS_SET)])
    finally:
        questionary.select = orig
    assert any(PROP_SHOWN in a for a in asked), asked
    assert_no_raw(" ".join(asked), "persons questions")
