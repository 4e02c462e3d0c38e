"""The interactive `cs-posthog demo` in a pseudo-terminal (pexpect): the real connect wizard against
the demo's own sandbox with every answer offered, Enter through each question, then the first
sync and the summary. The temporary home (and the sandbox's files) are gone afterwards."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]|\r")

# the questions, in order; Enter accepts what each one offers
QUESTIONS = (
    "PostHog personal API key",
    "Project ID or project URL",
    "Customerscore API key",
    "Tracker key",
    "advanced options",
    "Customerscore API base URL",
    "How are Persons tied to a customer",
    "stores the customer identifier",
    "Events to send",
    "Persons to sync",
)


class _Transcript:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return ANSI.sub("", "".join(self.parts))


def spawn_demo(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTHOG_", "CUSTOMERSCORE_", "CS_POSTHOG_"))}
    env.update(TMPDIR=str(tmpdir), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color", COLUMNS="100", LINES="30",
               CS_POSTHOG_RATE_SCALE="off")
    script = Path(sys.executable).parent / "cs-posthog"
    cmd, args = (str(script), ["demo"]) if script.exists() else (sys.executable, ["-m", "cs_posthog", "demo"])
    child = pexpect.spawn(cmd, args, env=env, dimensions=(30, 100), encoding="utf-8", timeout=20)
    child.logfile_read = _Transcript()
    return child, child.logfile_read, tmpdir


def test_interactive_demo_enter_through_the_defaults(tmp_path):
    child, transcript, tmpdir = spawn_demo(tmp_path)
    try:
        for question in QUESTIONS:
            child.expect(re.escape(question))
            if question == "Events to send":
                child.expect(r"5 of \d+ events selected")  # the demo's events are offered, checked
            if question == "Persons to sync":
                child.expect(r"[\d,]+ persons will be synced")
            child.send("\r")
        child.expect("First sync")
        child.expect("What Customerscore received")
        child.expect("Next steps")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = transcript.text()
    assert child.exitstatus == 0, text[-3000:]

    # every question was answered by its default: a working setup and a real sync
    assert "Configuration saved" in text and "error:" not in text
    assert "5 events selected: " in text and "plan does not equal 'free'" in text
    # the promise of the Persons step is what the sync sent
    promised = re.search(r"✓ ([\d,]+) persons will be synced\.", text).group(1)
    assert re.search(rf"contacts_sent\s*│\s*{promised}\s*│", text), text[-3000:]
    # nothing that makes no sense in the demo: it runs the sync itself and keeps no setup
    assert "Run the first sync with" not in text
    assert text.count("cs-posthog schedule --install") == 1  # once, in the next steps
    assert "resume" not in text.lower()
    # the temporary home and the sandbox's files are gone
    assert list(tmpdir.iterdir()) == []
    assert re.search(r"[\d,]+ │ Persons skipped by cs-posthog", text)


def test_stopping_the_wizard_ends_the_demo_cleanly(tmp_path):
    child, transcript, tmpdir = spawn_demo(tmp_path)
    try:
        for question in QUESTIONS[:-1]:
            child.expect(re.escape(question))
            child.send("\r")
        child.expect("Stop here \\(nothing is saved\\)")
        # Save, Add, Remove (the demo's condition), Change contact, Also sync only these Persons' events?,
        # Contact attributes, Stop
        child.send("\x1b[B" * 6 + "\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = transcript.text()
    assert child.exitstatus == 0, text[-3000:]
    assert "The demo stopped before the setup was saved: nothing was synced." in text
    assert "First sync" not in text and "error:" not in text
    assert list(tmpdir.iterdir()) == []
