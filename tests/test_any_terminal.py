"""Issue 12 item 6: any terminal. The real program in subprocesses, its streams encoded in latin-1
or ascii (PYTHONIOENCODING) at 60 columns: nothing crashes, everything written decodes in that
encoding, ticks stay distinguishable, and text is wrapped by Rich (not by hard line breaks)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cs_posthog.sandbox.runner import start_sandbox
from helpers import cs_posthog_cmd

PROP = "organization_id"
ENCODINGS = ["latin-1", "ascii", "cp1252"]


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2000, persons=300, customers=40, seed=1, region="eu") as sb:
        yield sb


@pytest.fixture(scope="module")
def connected_home(sandbox, tmp_path_factory):
    """One connected configuration (connect --no-input, UTF-8) shared by the runs below."""
    home = tmp_path_factory.mktemp("any-terminal") / "cs-home"
    info = sandbox.info
    r = run(base_env(sandbox, home, "utf-8"), "connect", "--no-input", "--no-sync",
            "--project", str(info["project_id"]), "--tracker-key", info["tracker_key"],
            "--cs-url", info["customerscore"], "--customer-property", PROP,
            "--event", "invoice_paid", "--event", "$pageview")
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    return home


def base_env(sandbox, home: Path, encoding: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTHOG_", "CUSTOMERSCORE_", "LC_", "LANG", "FORCE_COLOR"))}
    env.update(
        CS_POSTHOG_HOME=str(home), CS_POSTHOG_SECRET_STORE="file", CS_POSTHOG_RATE_SCALE="off",
        CS_POSTHOG_US_HOST=sandbox.info["posthog_us"], CS_POSTHOG_EU_HOST=sandbox.info["posthog_eu"],
        POSTHOG_PERSONAL_API_KEY=sandbox.info["api_key"],
        CUSTOMERSCORE_API_KEY=sandbox.info["customerscore_api_key"],
        PYTHONIOENCODING=encoding, COLUMNS="60", NO_COLOR="1",
    )
    return env


def run(env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = cs_posthog_cmd()
    return subprocess.run([*cmd, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


def check_stream(raw: bytes, encoding: str) -> str:
    text = raw.decode(encoding)  # raises if anything written is not in the stream's encoding
    assert "Traceback" not in text and "UnicodeEncodeError" not in text, text
    return text


def assert_wrapped_at(text: str, width: int) -> None:
    for line in text.splitlines():
        assert len(line) <= width, f"line longer than {width} columns: {line!r}"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_status_on_a_non_utf8_stream(sandbox, connected_home, encoding):
    r = run(base_env(sandbox, connected_home, encoding), "status")
    out, err = check_stream(r.stdout, encoding), check_stream(r.stderr, encoding)
    assert r.returncode == 0, err
    assert "invoice_paid" in out + err
    assert_wrapped_at(out, 60)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sync_dry_run_on_a_non_utf8_stream(sandbox, connected_home, encoding):
    r = run(base_env(sandbox, connected_home, encoding), "sync", "--dry-run")
    out, err = check_stream(r.stdout, encoding), check_stream(r.stderr, encoding)
    assert r.returncode == 0, err
    assert out + err


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("command", [[], ["connect"], ["sync"], ["status"], ["edit"], ["schedule"], ["completion"]])
def test_help_on_a_non_utf8_stream(sandbox, tmp_path, encoding, command):
    r = run(base_env(sandbox, tmp_path / "h", encoding), *command, "--help")
    out, err = check_stream(r.stdout, encoding), check_stream(r.stderr, encoding)
    assert r.returncode == 0, err
    assert "Usage" in out
    assert_wrapped_at(out, 60)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_connect_no_input_on_a_non_utf8_stream(sandbox, tmp_path, encoding):
    info = sandbox.info
    r = run(base_env(sandbox, tmp_path / "cs-home", encoding), "connect", "--no-input",
            "--project", str(info["project_id"]), "--tracker-key", info["tracker_key"],
            "--cs-url", info["customerscore"], "--customer-property", PROP, "--event", "invoice_paid")
    out, err = check_stream(r.stdout, encoding), check_stream(r.stderr, encoding)
    assert r.returncode == 0, err
    assert "Configuration saved" in err
    assert "Sync ok" in out + err


# --- text is wrapped by rich, not by line breaks written for 80 columns ----------------------------
# A line break inside a paragraph or list item: not after the end of a sentence or a colon, and not
# before a new list item or paragraph.
HARD_BREAK = re.compile(r"[^.:!?\n]\n(?![ ]*(?:\d+\.|•|-|\n|$))")


def long_texts() -> dict[str, str]:
    import io

    from rich.console import Console

    from cs_posthog.commands.demo import next_steps
    from cs_posthog.output import Output
    from cs_posthog.wizard.step_customerscore import INSTRUCTIONS as CS_INSTRUCTIONS
    from cs_posthog.wizard.step_events import REMINDER
    from cs_posthog.wizard.step_identification import NOT_SURE
    from cs_posthog.wizard.step_posthog import INSTRUCTIONS, scope_lines

    out = Output()
    out._out = Console(file=io.StringIO(), width=1000, soft_wrap=True, no_color=True)
    next_steps(out)
    return {
        "posthog instructions": INSTRUCTIONS.format(scopes=scope_lines()),
        "customerscore instructions": CS_INSTRUCTIONS,
        "not sure": NOT_SURE,
        "codename reminder": REMINDER,
        "demo next steps": out._out.file.getvalue(),
    }


@pytest.mark.parametrize("name", list(long_texts()))
def test_long_messages_are_not_hard_wrapped(name):
    text = long_texts()[name]
    assert not HARD_BREAK.search(text), f"{name}: a line break inside a sentence: {text!r}"


def test_rich_wraps_the_instructions_at_60_columns_between_words():
    import io

    from rich.console import Console

    from cs_posthog.wizard.step_posthog import INSTRUCTIONS, SCOPE_LABELS, scope_lines

    con = Console(file=io.StringIO(), width=60, no_color=True)
    con.print(INSTRUCTIONS.format(scopes=scope_lines()))
    shown = con.file.getvalue()
    assert all(len(line) <= 60 for line in shown.splitlines())
    assert " ".join(("Scopes, Read only: " + ", ".join(SCOPE_LABELS)).split()) in " ".join(shown.split())


# --- the fallbacks themselves -------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_fit_keeps_marks_apart_and_encodable(encoding):
    import io

    from cs_posthog.output import fit

    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    text = fit("✓ done ✗ failed ● on ○ off a → b … ╭─│╮ ━━ ⠋ Žluťoučký 日本", stream)
    text.encode(encoding)
    assert "✓" not in text and "+ done x failed" in text
    assert "* on o off a -> b" in text and "+-|+ --" in text and "lutou" in text


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_fit_for_a_laid_out_screen_keeps_each_glyphs_columns(encoding):
    """prompt_toolkit lays a prompt out cell by cell before it is written: a stand-in for "…" or
    "→" that took three columns would push the rest of the line off where it was drawn."""
    import io

    from wcwidth import wcswidth

    from cs_posthog.output import fit

    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    text = "Tracker key (CS-…): a → b ✓ ● ○ ↑↓ ≤ 日本 — Žluť"
    fitted = fit(text, stream, one_column=True)
    fitted.encode(encoding)
    assert wcswidth(fitted) == wcswidth(text)
    assert "a > b + * o ^v" in fitted  # (cp1252 has its own "…")


def test_fit_leaves_a_utf8_stream_alone():
    import io

    from cs_posthog.output import fit

    text = "✓ ● ○ → … ╭─╮"
    assert fit(text, io.TextIOWrapper(io.BytesIO(), encoding="utf-8")) == text


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_json_on_a_non_utf8_stream_keeps_every_character(sandbox, connected_home, encoding):
    """--json escapes what the stream cannot encode (\\uXXXX): nothing lost, nothing replaced."""
    import json

    r = run(base_env(sandbox, connected_home, encoding), "status", "--json")
    assert r.returncode == 0, r.stderr.decode(encoding, "replace")
    doc = json.loads(r.stdout.decode(encoding))
    assert doc


# --- the wizard's checklist in a latin-1 terminal ------------------------------------------------
@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_checklist_ticks_stay_distinguishable_in_a_non_utf8_terminal(sandbox, tmp_path, encoding):
    pexpect = pytest.importorskip("pexpect")
    info = sandbox.info
    env = base_env(sandbox, tmp_path / "cs-home", encoding)
    env.update(TERM="xterm-256color", LINES="30", PROMPT_TOOLKIT_NO_CPR="1")
    cmd = cs_posthog_cmd()
    child = pexpect.spawn(cmd[0], [*cmd[1:], "connect", "--project", str(info["project_id"]),
                                   "--tracker-key", info["tracker_key"], "--cs-url", info["customerscore"],
                                   "--customer-property", PROP],
                          env=env, dimensions=(30, 60), encoding=encoding, codec_errors="strict", timeout=30)
    transcript: list[str] = []

    class Log:
        def write(self, s: str) -> None:
            transcript.append(s)

        def flush(self) -> None:
            pass

    child.logfile_read = Log()
    try:
        for prompt in ("PostHog personal API key", "Project ID"):
            child.expect(prompt)
            child.send("\r")  # the key from the environment, the --project value
        child.expect("Customerscore API key")
        child.send("\r")
        for prompt in ("Tracker key", "tied to a customer", "identifier?"):  # --cs-url: no advanced question
            child.expect(prompt)
            child.send("\r")
        child.expect("Events to send")
        child.send("invoice")
        child.expect("match 'invoice'")
        child.send("\t")  # Tab toggles (Space would type a space into the search)
        child.expect(r"\[x\] invoice_paid")
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    shown = "".join(transcript)
    assert "Traceback" not in shown and "UnicodeEncodeError" not in shown
    screen = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\r", "", shown)
    assert "[ ] $pageview" in screen  # unticked
    assert "[x] invoice_paid" in screen  # after
    assert "? invoice_paid" not in screen  # no mark written as "?"


def test_wrapped_messages_keep_their_indent_on_a_terminal():
    """A hint under a ✓ line, a warning, a ✓ line: rich's wrapped lines start under the text, not at
    column 0. Off a terminal (soft wrap) each message stays one line."""
    import io

    from rich.console import Console

    from cs_posthog.output import Output

    def shown(soft_wrap: bool) -> list[str]:
        out = Output()
        out._err = Console(file=io.StringIO(), width=40, soft_wrap=soft_wrap, no_color=True, highlight=False)
        out.info("  [dim]They are used as typed; the first sync will tell if Customerscore refuses them.[/dim]")
        out.success("Customerscore at https://api.customerscore.io · both keys accepted")
        out.warn("the Customerscore keys were not checked: timeout; they are saved as given")
        return out._err.file.getvalue().splitlines()

    lines = shown(False)
    assert lines[0] == "  They are used as typed; the first sync"
    assert all(line.startswith("  ") and len(line) <= 40 for line in lines[:3])
    assert lines[3].startswith("✓ Customerscore at") and lines[4].startswith("  ")
    warn_at = next(i for i, line in enumerate(lines) if line.startswith("warning: "))
    assert lines[warn_at + 1].startswith(" " * len("warning: ")) and lines[warn_at + 1].strip()
    assert all(line == line.rstrip() for line in lines)
    assert len(shown(True)) == 3


def test_a_key_not_checked_line_wraps_under_its_text():
    """The yellow "!" line of step 2 when Customerscore cannot be reached: its reason, wrapped, starts
    under the text, not at column 0 (issue 12, 10: wrapped lines without indent)."""
    import io

    from rich.console import Console

    from cs_posthog.output import Output

    out = Output()
    out._err = Console(file=io.StringIO(), width=60, soft_wrap=False, no_color=True, highlight=False)
    out.info("[yellow]![/yellow] Customerscore at https://api.customerscore.io · tracker key CS-8W0IW · "
             "[yellow]keys not checked[/yellow]: Customerscore did not answer after 3 attempts (connection "
             "refused or unreachable)")
    lines = out._err.file.getvalue().splitlines()
    assert lines[0].startswith("! Customerscore at") and len(lines) > 2
    assert all(line.startswith("  ") and line.strip() for line in lines[1:]), lines
    assert all(len(line) <= 60 for line in lines)
