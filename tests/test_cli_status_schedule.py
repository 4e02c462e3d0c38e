"""`cs-posthog status` and `cs-posthog schedule`. The crontab is a fake program (env
CS_POSTHOG_CRONTAB) keeping its table in a file: the real crontab is never touched."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cs_posthog.config import Config, save_config
from cs_posthog.sync.state import Cursor, Stream, SyncState
from helpers import env_paths, env_store, fake_key, run_cli, sample_config_dict


@pytest.fixture
def connected(home):
    cfg = Config.model_validate(sample_config_dict())
    save_config(cfg, env_paths().config_file)
    return cfg


# --- schedule ------------------------------------------------------------------------------------
def test_schedule_prints_an_hourly_quiet_line_with_a_log(home, crontab):
    r = run_cli("schedule")
    assert r.exit_code == 0
    line = r.stdout.strip()
    assert "\n" not in line
    fields = line.split()
    assert fields[:5] == ["7", "*", "*", "*", "*"]
    assert "sync --quiet" in line
    assert f">> {shlex.quote(str(env_paths().log_file))} 2>&1" in line
    assert f"CS_POSTHOG_HOME={shlex.quote(str(Path(home).resolve()))}" in line  # cron has no env
    assert line.endswith(f"# cs-posthog sync: {env_paths().config_dir}")
    assert "--install" in r.stderr
    assert not crontab.exists()  # printing never touches the crontab


@pytest.mark.parametrize("every,expr", [("15m", "*/15 * * * *"), ("30m", "*/30 * * * *"), ("2h", "7 */2 * * *"), ("1d", "7 3 * * *"), ("daily", "7 3 * * *")])
def test_schedule_intervals(home, crontab, every, expr):
    r = run_cli("schedule", "--every", every)
    assert r.exit_code == 0 and r.stdout.startswith(expr + " ")


def test_schedule_bad_interval_is_a_usage_error(home, crontab):
    r = run_cli("schedule", "--every", "7m")
    assert r.exit_code == 2 and "--every" in r.stderr and "15m" in r.stderr


def test_install_keeps_other_lines_and_never_duplicates(home, crontab, connected):
    crontab.write_text("MAILTO=me@example.com\n0 5 * * * /usr/bin/backup\n")
    r = run_cli("schedule", "--install")
    assert r.exit_code == 0, r.stderr
    lines = crontab.read_text().splitlines()
    assert lines[:2] == ["MAILTO=me@example.com", "0 5 * * * /usr/bin/backup"]
    ours = [ln for ln in lines if "cs-posthog sync:" in ln]
    assert len(ours) == 1 and ours[0].startswith("7 * * * * ")
    assert env_paths().log_file.parent.is_dir()

    again = run_cli("schedule", "--install")
    assert again.exit_code == 0 and "unchanged" in again.stderr
    assert crontab.read_text().splitlines() == lines

    other = run_cli("schedule", "--install", "--every", "30m")
    assert other.exit_code == 0 and "Replaced" in other.stderr
    ours = [ln for ln in crontab.read_text().splitlines() if "cs-posthog sync:" in ln]
    assert len(ours) == 1 and ours[0].startswith("*/30 * * * * ")
    assert "0 5 * * * /usr/bin/backup" in crontab.read_text()


def test_install_leaves_another_installation_alone(home, crontab, connected, tmp_path, monkeypatch):
    assert run_cli("schedule", "--install").exit_code == 0
    monkeypatch.setenv("CS_POSTHOG_HOME", str(tmp_path / "second-home"))
    assert run_cli("schedule", "--install", "--every", "1d").exit_code == 0
    assert len([ln for ln in crontab.read_text().splitlines() if "cs-posthog sync:" in ln]) == 2
    assert run_cli("schedule", "--remove").exit_code == 0
    left = [ln for ln in crontab.read_text().splitlines() if "cs-posthog sync:" in ln]
    assert len(left) == 1 and str(home) in left[0]


def test_remove_takes_our_line_out_and_is_a_no_op_after(home, crontab, connected):
    crontab.write_text("0 5 * * * /usr/bin/backup\n")
    run_cli("schedule", "--install")
    r = run_cli("schedule", "--remove")
    assert r.exit_code == 0 and "Removed" in r.stderr
    assert crontab.read_text() == "0 5 * * * /usr/bin/backup\n"
    again = run_cli("schedule", "--remove")
    assert again.exit_code == 0 and "nothing to remove" in again.stderr
    assert crontab.read_text() == "0 5 * * * /usr/bin/backup\n"


def test_install_warns_when_a_key_only_lives_in_the_environment(home, crontab, connected, monkeypatch):
    key = fake_key()
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", key)
    r = run_cli("schedule", "--install")
    assert r.exit_code == 0
    assert "POSTHOG_PERSONAL_API_KEY" in r.stderr and "cron" in r.stderr
    assert key not in r.stderr + r.stdout


def test_install_and_remove_together_is_refused(home, crontab):
    r = run_cli("schedule", "--install", "--remove")
    assert r.exit_code == 2
    assert not crontab.exists()


def test_missing_crontab_program_says_so(home, monkeypatch, connected):
    monkeypatch.setenv("CS_POSTHOG_CRONTAB", "/nonexistent/crontab-xyz")
    r = run_cli("schedule", "--install")
    assert r.exit_code == 78 and "crontab" in r.stderr
    assert "hint:" in r.stderr


# --- status --------------------------------------------------------------------------------------
def seed_state() -> None:
    st = SyncState(env_paths().state_db)
    run1 = st.start_run("first")
    st.finish_run(run1, "ok", {"events_sent": 1234, "contacts_sent": 56, "events_skipped_no_customer": 7, "duration_s": 3.2, "contacts_no_longer_matching": 0})
    run2 = st.start_run("incremental")
    st.finish_run(run2, "failed", {"events_sent": 0, "contacts_sent": 0}, "PostHog is unavailable (HTTP 503 after 6 attempts)")
    s = Stream("events", ["$pageview", "invoice_paid"], "2024-03-01T00:00:00.000000Z", None, "")
    st.checkpoint(s, Cursor("2024-03-30T12:00:00.000000Z", "0190aaaa-0000-7000-8000-000000000001"), [("u1", "2024-03-30T12:00:00.000000Z")])
    st.record_contacts([("p1", "org_1", "f" * 32), ("p2", "org_2", "e" * 32)], run1)
    st.close()


def test_status_json_has_everything_and_no_secret(home, connected, crontab, monkeypatch):
    ph_key = fake_key()
    cs_key = fake_key("cs_", 30)
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", ph_key)
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", cs_key)
    seed_state()
    run_cli("schedule", "--install")
    r = run_cli("status", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["posthog"]["project_id"] == 12345 and d["posthog"]["region"] == "eu"
    assert d["keys"]["posthog"]["masked"] == "phx_****" + ph_key[-4:]
    assert d["keys"]["posthog"]["stored_in"] == "environment"
    assert d["keys"]["customerscore"]["masked"].endswith(cs_key[-4:])
    assert ph_key not in r.stdout and cs_key not in r.stdout
    assert d["customer_property"] == "organization_id"
    assert d["events"] == ["$pageview", "invoice_paid"]
    assert d["filters"][0] == "organization_id is set"  # the locked condition first
    # a config from before persons.filter_events: the filters choose the contacts only, and status says so
    assert d["filter_events"] is False
    human = " ".join(run_cli("status").stderr.split()) + " ".join(run_cli("status").stdout.split())
    assert "(contacts only: the events of every Person with a customer id are sent)" in human
    assert [x["status"] for x in d["last_runs"]] == ["failed", "ok"]
    assert d["last_runs"][1]["summary"]["events_sent"] == 1234
    assert d["cursors"][0]["created_at"] == "2024-03-30T12:00:00.000000Z"
    assert d["contacts_known"] == 2 and d["running"] is False
    assert d["schedule"]["installed"] is True and "sync --quiet" in d["schedule"]["line"]
    assert d["sync_settings"]["max_lateness_days"] == 3


def test_status_human(home, connected, crontab, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping inside table cells
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", fake_key())
    seed_state()
    r = run_cli("status")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    for text in ("project 12345 (Acme)", "organization_id", "plan equals 'pro'", "Last runs", "1,234 events",
                 "PostHog is unavailable", "Event cursors", "2024-03-30 12:00:00 UTC", "not scheduled", "missing",
                 "not synced"):
        assert text in out, text


def test_status_before_any_sync(home, connected, crontab):
    r = run_cli("status")
    assert r.exit_code == 0
    assert "No sync has run yet" in r.stdout
    assert not env_paths().state_db.exists()  # status never creates state


def test_status_not_connected_is_78(home):
    r = run_cli("status")
    assert r.exit_code == 78 and "not connected" in r.stderr


# --- the cron line really runs a sync ------------------------------------------------------------
def test_the_installed_cron_line_runs_a_quiet_sync_with_a_bare_environment(home, crontab, monkeypatch, tmp_path):
    from cs_posthog.sandbox.runner import get_jsonl, start_sandbox

    with start_sandbox(events=800, persons=100, customers=20, seed=2) as sb:
        info = sb.info
        save_config(Config.model_validate({
            "posthog": {"region": info["region"], "host": sb.posthog_url, "project_id": info["project_id"]},
            "customerscore": {"api_url": info["customerscore"], "tracker_key": info["tracker_key"]},
            "identification": {"property": info["customer_property"]},
            "events": {"selected": ["$pageview", "invoice_paid"]},
        }), env_paths().config_file)
        env_store().store("posthog", info["api_key"])  # cron has no environment: keys in the 0600 file
        env_store().store("customerscore", info["customerscore_api_key"])
        assert run_cli("schedule", "--install", "--every", "15m").exit_code == 0
        (line,) = [ln for ln in crontab.read_text().splitlines() if "cs-posthog sync:" in ln]
        command = " ".join(line.split(" ")[5:]).replace("\\%", "%")  # what cron hands to sh
        bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHELL": "/bin/sh", "CS_POSTHOG_SECRET_STORE": "file",
                "CS_POSTHOG_RATE_SCALE": "off"}
        proc = subprocess.run(["/bin/sh", "-c", command], env=bare, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, env_paths().log_file.read_text() if env_paths().log_file.exists() else proc.stderr
        assert proc.stdout == "" and proc.stderr == ""
        assert env_paths().log_file.exists() and env_paths().log_file.read_text() == ""  # quiet on success
        assert len(get_jsonl(info["customerscore"] + "/_sandbox/received/events")) > 0
        st = SyncState(env_paths().state_db, readonly=True)
        assert st.last_runs(1)[0].status == "ok"
        st.close()
    assert sys.executable  # the line names this interpreter's cs-posthog


def test_schedule_help_lists_every_interval_it_takes():
    """`schedule --help` names the values --every takes (issue 12, 10), all of them: the help text is
    written by hand beside the table the command reads."""
    from cs_posthog.commands.schedule import INTERVALS

    r = run_cli("schedule", "--help", env={"COLUMNS": "100"})
    assert r.exit_code == 0
    shown = " ".join(r.stdout.split())
    assert "--every INTERVAL" in shown
    every_help = shown.split("--every INTERVAL", 1)[1].split("[default", 1)[0]
    for interval in INTERVALS:
        assert re.search(rf"(?<![\w.]){re.escape(interval)}\b", every_help), (interval, every_help)


def test_status_at_60_columns_cuts_no_word_of_a_run(home, connected, crontab, monkeypatch):
    """A failed run's reason is long ("Customerscore rejected the tracker key ..."): at 60
    columns the table wraps it, and breaks a word too long for its column instead of cutting it short
    ("Customersco…")."""
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", fake_key())
    seed_state()
    st = SyncState(env_paths().state_db)
    run = st.start_run("incremental")
    st.finish_run(run, "failed", {"events_sent": 0, "contacts_sent": 0},
                  "Customerscore rejected the tracker key (401): Unknown trackerKey.")
    st.close()
    r = run_cli("status")
    assert r.exit_code == 0, r.stderr
    assert "…" not in r.stdout, r.stdout
    words = " ".join(r.stdout.replace("│", " ").replace("|", " ").split())
    for text in ("Customersc", "trackerKey.", "1,234", "skipped"):
        assert text in words, r.stdout
