"""Hardening (issue 11, item 13): the crontab line for an installation whose path is unusual.

A line break in ``CS_POSTHOG_HOME`` would end the crontab line and make the rest a second job: refused
(78), the crontab untouched. A ``%`` (which cron turns into a line break unless escaped) is escaped in
the line, and ``--install`` / ``--remove`` still find the line they wrote: never a duplicate, never
one left behind. The crontab is a fake program keeping its table in a file, as in
test_cli_status_schedule.py; the real one is never touched.
"""

from __future__ import annotations

import re
import shlex

import pytest

from helpers import env_app, run_cli


def cron_command(line: str) -> str:
    """What cron hands to the shell for a crontab line (crontab(5)): the text after the five time
    fields, up to the first unescaped %, with ``\\%`` read as ``%``."""
    command = line.split(None, 5)[5]
    out, i = "", 0
    while i < len(command):
        if command[i] == "\\" and command[i + 1 : i + 2] == "%":
            out, i = out + "%", i + 2
            continue
        if command[i] == "%":
            break
        out, i = out + command[i], i + 1
    return out


@pytest.mark.parametrize("home_name", ["line\n7 * * * * touch /tmp/pwned #", "cr\rhere", "tab\there"])
@pytest.mark.parametrize("install", [True, False], ids=["install", "print"])
def test_a_control_character_in_the_home_is_refused_and_the_crontab_untouched(tmp_path, monkeypatch, crontab,
                                                                            home_name, install):
    crontab.write_text("0 5 * * * /usr/bin/backup\n")
    monkeypatch.setenv("CS_POSTHOG_HOME", str(tmp_path / home_name))
    r = run_cli("schedule", *(["--install"] if install else []))
    assert r.exit_code == 78, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and "control character" in lines[0], r.stderr
    assert lines[1].startswith("hint: ") and "CS_POSTHOG_HOME" in lines[1]
    assert crontab.read_text() == "0 5 * * * /usr/bin/backup\n"


def test_a_percent_in_the_home_is_escaped_and_install_remove_find_their_line(tmp_path, monkeypatch, crontab):
    home = tmp_path / "100% home"
    monkeypatch.setenv("CS_POSTHOG_HOME", str(home))
    crontab.write_text("0 5 * * * /usr/bin/backup\n")

    first = run_cli("schedule", "--install")
    assert first.exit_code == 0, first.stderr
    ours = [ln for ln in crontab.read_text().splitlines() if "cs-posthog sync:" in ln]
    assert len(ours) == 1
    assert re.search(r"(?<!\\)%", ours[0]) is None  # every % escaped: cron would cut the line there
    command = cron_command(ours[0])  # the whole line reaches the shell, with the real path
    assert f"CS_POSTHOG_HOME={shlex.quote(str(home.resolve()))} " in command
    assert command.endswith(f"# cs-posthog sync: {home}")

    again = run_cli("schedule", "--install")
    assert again.exit_code == 0 and "unchanged" in again.stderr
    assert len([ln for ln in crontab.read_text().splitlines() if "cs-posthog sync:" in ln]) == 1

    other = run_cli("schedule", "--install", "--every", "30m")
    assert other.exit_code == 0 and "Replaced" in other.stderr
    assert len([ln for ln in crontab.read_text().splitlines() if "cs-posthog sync:" in ln]) == 1

    gone = run_cli("schedule", "--remove")
    assert gone.exit_code == 0 and "Removed" in gone.stderr
    assert crontab.read_text() == "0 5 * * * /usr/bin/backup\n"


def test_status_finds_the_line_of_a_home_with_a_percent(tmp_path, monkeypatch, crontab):
    from cs_posthog.commands.schedule import installed_line

    monkeypatch.setenv("CS_POSTHOG_HOME", str(tmp_path / "50%off"))
    assert run_cli("schedule", "--install").exit_code == 0
    line = installed_line(env_app())
    assert line is not None and line.endswith("50\\%off")
