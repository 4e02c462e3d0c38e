from __future__ import annotations

import subprocess
import sys

import pytest

from cs_posthog import __version__
from cs_posthog.errors import ExitCode, UnavailableError
from helpers import run_cli

COMMANDS = ["connect", "edit", "sync", "status", "disconnect", "schedule", "demo", "completion"]


def test_cli_import_stays_lean():
    code = (
        "import sys, cs_posthog.cli; heavy = {'questionary','prompt_toolkit','httpx','pydantic'} "
        "& set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_nothing_heavy(args):
    code = (
        "import sys\nfrom cs_posthog.cli import app\n"
        f"try:\n    app({args!r}, prog_name='cs-posthog')\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = {'questionary','prompt_toolkit','httpx','pydantic'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_console_script_help_and_version_import_nothing_heavy(args):
    """Through ``cli.main`` (the console script), which also loads ``output`` for the stream fallbacks:
    beyond what typer itself loads, no rich, no prompt library, no HTTP, no pydantic, no keyring."""
    code = (
        "import sys\nimport typer\nbefore = set(sys.modules)\n"
        f"sys.argv = ['cs-posthog', *{args!r}]\n"
        "from cs_posthog.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = {'rich', 'questionary', 'prompt_toolkit', 'httpx', 'pydantic', 'keyring'}\n"
        "loaded = {m for m in set(sys.modules) - before if m.split('.')[0] in heavy}\n"
        "assert not loaded, sorted(loaded)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_version_names_the_python_and_the_platform():
    import platform

    r = run_cli("--version")
    assert r.exit_code == 0
    first, second = r.stdout.splitlines()
    assert first == f"cs-posthog {__version__}"
    assert second == (f"Python {platform.python_version()} ({platform.python_implementation()}) "
                      f"on {platform.platform()}")


def test_help_lists_every_command_with_one_line_and_exit_codes():
    r = run_cli("--help")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    for cmd in COMMANDS:
        row = next(line for line in lines if line.strip().startswith(cmd + " "))
        desc = row.strip()[len(cmd):].strip()
        assert desc and not desc.endswith("..."), row  # fits on its line, not truncated
    for code in ("75", "77", "78", "130"):
        assert code in r.stdout


def test_no_args_shows_help():
    r = run_cli()
    assert "Usage" in r.stdout + r.stderr


@pytest.mark.parametrize("cmd", ["sync", "status"])
def test_not_connected_exits_78_with_hint(cmd):
    r = run_cli(cmd)
    assert r.exit_code == ExitCode.CONFIG
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "error: not connected: no configuration found",
        "hint: Run `cs-posthog connect` to set up the integration.",
    ]


def test_unknown_option_is_usage_error_exit_2():
    r = run_cli("sync", "--frobnicate")
    assert r.exit_code == 2 and "--frobnicate" in r.stderr


def test_bad_edit_section_is_usage_error():
    r = run_cli("edit", "everything")
    assert r.exit_code == 2 and "everything" in r.stderr
    assert "Choose one of: posthog, customerscore, credentials, identification, events, persons" in r.stderr


def test_edit_help_lists_the_sections_not_a_type():
    r = run_cli("edit", "--help", env={"COLUMNS": "100"})
    assert r.exit_code == 0
    assert "Usage: cs-posthog edit [OPTIONS] [SECTION]" in r.stdout
    assert "posthog, customerscore, credentials, identification, events, persons" in " ".join(r.stdout.split())
    assert "<str>" not in r.stdout


def test_keys_are_never_flag_values():
    r = run_cli("connect", "--api-key", "phx_abc")
    assert r.exit_code == 2
    assert "No such option" in r.stderr


def test_errors_render_one_line_hint_and_exit_code(monkeypatch):
    from cs_posthog import cli

    @cli.handle_errors
    def failing():
        raise UnavailableError("PostHog is unavailable (HTTP 502 after 6 attempts)", service="PostHog")

    with pytest.raises(SystemExit) as exc:
        try:
            failing()
        except Exception as e:  # typer.Exit
            raise SystemExit(e.exit_code)
    assert exc.value.code == 75


def test_unexpected_exception_is_exit_1_and_traceback_only_with_debug(capsys, monkeypatch):
    import typer

    from cs_posthog import cli

    @cli.handle_errors
    def buggy():
        raise ZeroDivisionError("division by zero")

    def run(debug: bool) -> int:
        """``buggy`` in an invocation whose root options say ``--debug`` or not (no module state)."""
        with typer.Context(typer.main.get_command(cli.app), obj=cli.Invocation(debug=debug)), \
                pytest.raises(typer.Exit) as exc:
            buggy()
        return exc.value.exit_code

    assert run(debug=False) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: unexpected error: ZeroDivisionError")
    assert "--debug" in err
    assert run(debug=True) == 1
    assert "Traceback" in capsys.readouterr().err
    assert run(debug=False) == 1  # the next invocation starts without it
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("CS_POSTHOG_DEBUG", "1")  # read by the App, as --debug
    assert run(debug=False) == 1
    assert "Traceback" in capsys.readouterr().err


def test_keyboard_interrupt_exits_130(capsys):
    import typer

    from cs_posthog import cli

    @cli.handle_errors
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as exc:
        interrupted()
    assert exc.value.exit_code == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted\nhint: ") and err.count("\n") == 2, err


def test_python_dash_m_works():
    proc = subprocess.run([sys.executable, "-m", "cs_posthog", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == f"cs-posthog {__version__}"
    assert proc.stdout.splitlines()[1].startswith(f"Python {sys.version.split()[0]} ")


def test_an_error_on_a_narrow_terminal_breaks_between_words_under_its_text(tmp_path):
    """The error and hint lines of a failed command, on a 40-column terminal: broken between words by
    us, the lines after the first under the text (issue 12, 6 and 10: the terminal cut words and
    started them at column 0). Off a terminal they stay one line each (cron logs, pipes)."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    from helpers import cs_posthog_cmd

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(CS_POSTHOG_HOME=str(tmp_path / "home"), PYTHONIOENCODING="utf-8")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
    proc = subprocess.run([*cs_posthog_cmd(), "sync"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=follower, env=env, timeout=60)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the terminal's other end is closed and everything was read
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    lines = b"".join(chunks).decode().replace("\r\n", "\n").splitlines()
    assert proc.returncode == 78
    assert lines == ["error: not connected: no configuration",
                     "       found",
                     "hint: Run `cs-posthog connect` to set up",
                     "      the integration."], lines

    piped = run_cli("sync")  # not a terminal: one line each
    assert piped.stderr.splitlines() == ["error: not connected: no configuration found",
                                         "hint: Run `cs-posthog connect` to set up the integration."]
