"""The real `cs-posthog connect` in a pseudo-terminal (pexpect) against the sandbox: from the first
screen to the saved config and the first sync, with a Ctrl-C in the middle and a resume.

Plus one screen captured with tmux (when installed) to check what a person sees: the checklist's
live counter under the list.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import tomllib

import pytest
from helpers import cs_posthog_cmd

from cs_posthog.sandbox.runner import start_sandbox

pexpect = pytest.importorskip("pexpect")

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]|\r")
PROP = "organization_id"


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2000, persons=300, customers=40, seed=1, region="eu") as sb:
        yield sb


@pytest.fixture
def term_env(sandbox, home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTHOG_", "CUSTOMERSCORE_"))}
    env.update(
        CS_POSTHOG_HOME=str(home), CS_POSTHOG_SECRET_STORE="file", CS_POSTHOG_RATE_SCALE="off",
        CS_POSTHOG_US_HOST=sandbox.info["posthog_us"], CS_POSTHOG_EU_HOST=sandbox.info["posthog_eu"],
        PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color", COLUMNS="100", LINES="30",
    )
    return env


def spawn(env: dict, *args: str):
    cmd = cs_posthog_cmd()
    child = pexpect.spawn(cmd[0], [*cmd[1:], "connect", *args], env=env, dimensions=(30, 100),
                          encoding="utf-8", timeout=20)
    child.logfile_read = _Transcript()
    return child


class _Transcript:
    """Everything the terminal showed, for assertions and failure messages."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return ANSI.sub("", "".join(self.parts))


def screen(child) -> str:
    return child.logfile_read.text()


@pytest.mark.slow
def test_connect_in_a_terminal_with_ctrl_c_and_resume(sandbox, term_env, home):
    info = sandbox.info
    child = spawn(term_env)
    child.expect("PostHog personal API key")
    child.send(info["api_key"] + "\r")
    child.expect("Project ID or project URL")
    child.send(f"{info['posthog_eu']}/project/{info['project_id']}/insights\r")
    child.expect("PostHog EU Cloud")
    child.expect("Customerscore API key")
    child.send(info["customerscore_api_key"] + "\r")
    child.expect("Tracker key")
    child.send(info["tracker_key"] + "\r")
    child.expect("advanced options")
    child.send("y")
    child.expect("Customerscore API base URL")  # the text prompt; "(API base URL)?" ends the confirm before it
    child.send("\x15" + info["customerscore"] + "\r")
    child.expect("How are Persons tied to a customer")
    child.send("\r")
    child.expect("stores the customer identifier")
    child.send(PROP + "\r")
    child.expect("Persons have organization_id set")
    child.expect("Events to send")
    child.send("invoice_p")
    child.expect("match 'invoice_p'")
    child.sendcontrol("c")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, screen(child)
    assert "interrupted" in screen(child)
    assert not (home / "config.toml").exists()
    draft = tomllib.loads((home / "draft.toml").read_text())
    assert {"posthog", "customerscore", "identification"} <= set(draft) and "events" not in draft
    shown = screen(child)
    assert info["api_key"] not in shown and info["customerscore_api_key"] not in shown  # hidden input

    # again: resume at step 4, pick the event, save; the first sync runs
    child = spawn(term_env)
    child.expect("Resume at step 4 of 5: Events to track")
    child.send("\r")
    child.expect("Resuming at step 4 of 5: Events to track")
    child.expect("Events to send")
    child.send("invoice_p")
    child.expect("match 'invoice_p'")
    child.send("\t")  # Tab toggles; the counter redraws only the digit that changed: the tmux test reads the screen
    child.send("\r")
    child.expect("Persons to sync")
    child.expect("persons will be synced")
    child.send("\r")  # Save configuration
    child.expect("Configuration saved")
    child.expect("Sync ok")
    child.expect("cs-posthog schedule --install")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, screen(child)
    text = screen(child)
    assert "Step 1 of 5" not in text and "Step 4 of 5 · Events to track" in text

    cfg = tomllib.loads((home / "config.toml").read_text())
    assert cfg["posthog"]["project_id"] == info["project_id"] and cfg["posthog"]["region"] == "eu"
    assert cfg["customerscore"] == {"api_url": info["customerscore"], "tracker_key": info["tracker_key"]}
    assert cfg["identification"]["property"] == PROP
    assert cfg["events"]["selected"] == ["invoice_paid"]
    assert (home / "config.toml").stat().st_mode & 0o777 == 0o600
    assert (home / "secrets.toml").stat().st_mode & 0o777 == 0o600
    assert not (home / "draft.toml").exists()


def test_connect_without_a_terminal_points_at_no_input(term_env):
    cmd = cs_posthog_cmd()
    r = subprocess.run([*cmd, "connect"], env=term_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert "stdin is not a terminal" in r.stderr and "--no-input" in r.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_what_the_events_step_looks_like(sandbox, term_env, home, tmp_path):
    """A person's view of step 4 (tmux capture-pane): the list, the volumes, the live counter."""
    info = sandbox.info
    session = f"csph{os.getpid()}"
    sock = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", sock]
    envs = " ".join(f"{k}={v!r}" for k, v in term_env.items() if k.startswith(("CS_POSTHOG", "PROMPT_")))
    cmd = " ".join(cs_posthog_cmd())
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    f"env {envs} {cmd} connect --project {info['project_id']} --tracker-key {info['tracker_key']} "
                    f"--cs-url {info['customerscore']} --customer-property {PROP}; sleep 30"], check=True, timeout=60)

    def capture() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                              timeout=60).stdout

    def keys(*k: str) -> None:
        subprocess.run([*tmux, "send-keys", "-t", session, *k], check=True, timeout=60)

    def wait_for(text: str, timeout: float = 15) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = capture()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; screen:\n{capture()}")

    try:
        wait_for("PostHog personal API key")
        keys("-l", info["api_key"])
        keys("Enter")
        wait_for("Project ID")
        keys("Enter")  # the --project value is the default
        wait_for("Customerscore API key")
        keys("-l", info["customerscore_api_key"])
        keys("Enter")
        for prompt in ("Tracker key", "tied to a customer", "identifier?"):  # --cs-url: no advanced question
            wait_for(prompt)
            keys("Enter")
        wait_for("Events to send")
        keys("-l", "invoice")
        keys("Tab")
        shown = wait_for("1 of ")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=60)
    lines = shown.splitlines()
    counter = next(i for i, line in enumerate(lines) if "events selected" in line)
    assert re.search(r"1 of \d+ events selected · 2 match 'invoice'", lines[counter])
    # the two matching events with their 30-day volumes, right above the counter
    assert lines[counter - 3].startswith("? Events to send:")
    assert re.fullmatch(r" » ● invoice_paid +\d+", lines[counter - 2].rstrip())
    assert re.fullmatch(r"   ○ invoice_failed +\d+", lines[counter - 1].rstrip())


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_an_80_column_terminal_breaks_lines_between_words(sandbox, term_env, home, tmp_path):
    """At 80x24 every message fits or is wrapped between words (the terminal used to cut "Propert|y
    definition" and "PostHog US or EU Clo|ud"). Also: a US Cloud address with an EU key goes on in
    EU Cloud, saying so."""
    from cs_posthog.wizard.step_identification import NOT_SURE

    info = sandbox.info
    session = f"csph80{os.getpid()}"
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    envs = " ".join(f"{k}={v!r}" for k, v in term_env.items() if k.startswith(("CS_POSTHOG", "PROMPT_")))
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    f"env {envs} {' '.join(cs_posthog_cmd())} connect --tracker-key {info['tracker_key']} "
                    f"--cs-url {info['customerscore']}; sleep 30"], check=True, timeout=60)

    def capture() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                              timeout=60).stdout

    def keys(*k: str) -> None:
        subprocess.run([*tmux, "send-keys", "-t", session, *k], check=True, timeout=60)

    def wait_for(text: str, timeout: float = 15) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = capture()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; screen:\n{capture()}")

    def words(text: str) -> str:
        return " ".join(text.split())

    try:
        first = wait_for("PostHog personal API key")
        keys("-l", info["api_key"])
        keys("Enter")
        wait_for("Project ID")
        keys("-l", f"https://us.posthog.com/project/{info['project_id']}")
        keys("Enter")
        region = wait_for("Customerscore API key")  # the key works in EU Cloud: no question asked again
        keys("-l", info["customerscore_api_key"])
        keys("Enter")
        for prompt in ("Tracker key",):  # --cs-url: no advanced question
            wait_for(prompt)
            keys("Enter")
        wait_for("tied to a customer")
        keys("Down")
        keys("Down")
        keys("Enter")  # I'm not sure: both ways explained, then asked again
        wait_for("Which one, then?")
        explained = capture()
        keys("Down")  # from the group (offered first: the project has groups)
        keys("Enter")  # Stop here
        wait_for("Stopped at step 3")
        time.sleep(0.3)
        not_sure = capture()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=60)

    from cs_posthog.wizard.step_posthog import SCOPE_LABELS

    assert words("3. Scopes, Read only: " + ", ".join(SCOPE_LABELS) + " (and Group, if your customers are PostHog "
                 "groups).") in words(first)  # wrapped by rich
    assert all(len(line) <= 80 for line in first.splitlines())
    assert words("This key works in PostHog EU Cloud (the address is on PostHog US Cloud): going on with "
                 "PostHog EU Cloud.") in words(region)
    assert "not valid" not in region and "error:" not in region
    assert all(len(line) <= 80 for line in region.splitlines())
    assert words(NOT_SURE.split("\n")[-1]) in words(explained)  # every word whole (the start may scroll away)
    assert all(len(line) <= 80 for line in explained.splitlines())
    assert "This project has group types: company (index 0), project (index 1)." in words(explained)
    assert "? Which one, then? Stop here" in not_sure.splitlines()
    assert words("Stopped at step 3; the finished steps are kept: `cs-posthog connect` resumes there.") \
        in words(not_sure)


def test_connect_finds_an_event_name_with_a_space_and_reminds_of_its_codename(sandbox, term_env, home):
    """Issue 12 item 7: "Checkout Completed" is typed into the search with its space, Tab ticks it,
    the codename rule is said for it under the list and once more after the list; the saved
    configuration sends it. The snake_case event checked from the start gets no such line.

    (prompt_toolkit redraws only the cells that changed: what is expected here is text drawn whole.)"""
    info = sandbox.info
    term_env.update(POSTHOG_PERSONAL_API_KEY=info["api_key"], CUSTOMERSCORE_API_KEY=info["customerscore_api_key"])
    child = spawn(term_env, "--project", str(info["project_id"]), "--tracker-key", info["tracker_key"],
                  "--cs-url", info["customerscore"], "--customer-property", PROP, "--event", "invoice_paid")
    child.expect("PostHog personal API key")
    child.send("\r")  # from the environment
    for prompt in ("Project ID", "Customerscore API key", "Tracker key", "tied to a customer",
                   "identifier?"):  # --cs-url: no advanced question
        child.expect(prompt)
        child.send("\r")
    child.expect("Events to send")
    child.expect("Space or Tab toggles")
    child.send("Checkout Completed\t")  # keys are handled in order: no need to wait for the search
    child.expect('keeps "Checkout Completed" only if')  # the note under the list, a line of its own
    child.send("\r")
    child.expect("2 events selected")
    child.expect("Persons to sync")
    child.expect("persons will be synced")
    child.send("\r")  # Save configuration
    child.expect("Configuration saved")
    child.expect("Sync ok")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, screen(child)
    shown = screen(child)
    assert 'keeps "invoice_paid"' not in shown  # never said for a snake_case name
    words = " ".join(shown.split())
    after = words[words.index("2 events selected"):]
    assert ('warning: Customerscore keeps "Checkout Completed" only if a metric\'s codename is exactly the '
            "event name, spaces, capitals and $ included.") in after
    assert after.count("Customerscore keeps") == 1  # one line for the list, not one per event
    cfg = tomllib.loads((home / "config.toml").read_text())
    assert sorted(cfg["events"]["selected"]) == ["Checkout Completed", "invoice_paid"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_events_checklist_at_60_columns(sandbox, term_env, home, tmp_path):
    """What a person sees of step 4 in a 60-column terminal (tmux capture-pane): the keys said under
    the list in whole words, the "more above/below" hint moving with the pointer, a search with a
    space, Tab ticking, and the codename line."""
    info = sandbox.info
    session = f"csph60{os.getpid()}"
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    envs = " ".join(f"{k}={v!r}" for k, v in term_env.items() if k.startswith(("CS_POSTHOG", "PROMPT_")))
    envs += f" POSTHOG_PERSONAL_API_KEY={info['api_key']!r} CUSTOMERSCORE_API_KEY={info['customerscore_api_key']!r}"
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "60", "-y", "30",
                    f"env {envs} {' '.join(cs_posthog_cmd())} connect --project {info['project_id']} "
                    f"--tracker-key {info['tracker_key']} --cs-url {info['customerscore']} "
                    f"--customer-property {PROP}; sleep 30"], check=True, timeout=60)

    def capture() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                              timeout=60).stdout

    def keys(*k: str) -> None:
        subprocess.run([*tmux, "send-keys", "-t", session, *k], check=True, timeout=60)

    def wait_for(pattern: str, timeout: float = 15) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = capture()
            if re.search(pattern, " ".join(shown.split())):
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} never appeared; screen:\n{capture()}")

    def words(text: str) -> str:
        return " ".join(text.split())

    try:
        for prompt in ("PostHog personal API key", "Project ID", "Customerscore API key", "Tracker key",
                       "tied to a customer", "identifier\\?"):  # --cs-url: no advanced question
            wait_for(prompt)
            keys("Enter")
        first = wait_for(r"Space or Tab toggles · type to search · Ctrl-A all/none · Enter confirms")
        n = int(re.search(r"0 of (\d+) events selected", words(first)).group(1))
        assert n > 12 + 2
        assert f"· {n - 12} more below, ↑↓ to scroll" in words(first)
        for _ in range(13):
            keys("Down")
        moved = wait_for(rf"· 2 more above, {n - 14} more below, ↑↓ to scroll")
        lines = moved.splitlines()
        counter = next(i for i, line in enumerate(lines) if "events selected" in line)
        assert lines[counter - 1].startswith(" » ")  # the pointer on the last row shown: 2 rows went up
        keys("-l", "Checkout Completed")
        searched = wait_for(r"1 match 'Checkout Completed'")
        assert "Space types a space · Tab toggles · ↑↓ move, then Space toggles · Ctrl-U clears · Enter confirms" in words(searched)
        keys("Tab")
        ticked = wait_for(r'keeps "Checkout Completed" only if')
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=60)
    for shown in (first, moved, searched, ticked):
        assert all(len(line) <= 60 for line in shown.splitlines())
    assert re.search(r"^ » ● Checkout Completed +\d+$", ticked, re.M), ticked
    assert ('Customerscore keeps "Checkout Completed" only if a metric\'s codename is exactly the event name, '
            "spaces, capitals and $ included.") in words(ticked)
