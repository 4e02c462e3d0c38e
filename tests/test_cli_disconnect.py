"""`cs-posthog disconnect`: what it removes, what it keeps, the lock, the no-op."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers import env_app, env_paths, env_store, fake_key, run_cli, sample_config_dict

FAKE_CRONTAB = """#!/bin/sh
f="$FAKE_CRONTAB_FILE"
case "$1" in
  -l) if [ -f "$f" ]; then cat "$f"; else echo "no crontab for tester" >&2; exit 1; fi ;;
  -) cat > "$f" ;;
esac
"""


def connected(home):
    from cs_posthog.config import Config, Draft, save_config, save_draft
    from cs_posthog.sync.state import SyncState

    cfg = Config.model_validate(sample_config_dict())
    save_config(cfg, env_paths().config_file)
    save_draft(Draft(posthog=cfg.posthog), env_paths().draft_file)
    env_store().store("posthog", fake_key())
    env_store().store("customerscore", fake_key("cs_"))
    SyncState(home / "state.sqlite3").close()
    return cfg


def test_disconnect_yes_removes_everything_and_says_data_is_kept(home, monkeypatch, tmp_path):
    monkeypatch.setenv("CS_POSTHOG_CRONTAB", str(tmp_path / "no-such-crontab"))
    connected(home)
    assert (home / "state.sqlite3").exists()
    r = run_cli("disconnect", "--yes")
    assert r.exit_code == 0, r.stderr
    for name in ("config.toml", "draft.toml", "secrets.toml", "state.sqlite3", "sync.lock"):
        assert not (home / name).exists(), name
    assert not [p for p in home.iterdir() if p.name.startswith("state.sqlite3")]
    assert "Disconnected" in r.stderr
    assert "Data already sent to Customerscore stays there" in r.stderr
    # afterwards: not connected
    assert run_cli("status").exit_code == 78


def test_disconnect_when_not_connected_is_a_friendly_no_op(home):
    r = run_cli("disconnect")
    assert r.exit_code == 0
    assert "Not connected: there is nothing to remove." in r.stderr


def test_disconnect_without_yes_off_a_terminal_asks_for_yes(home):
    connected(home)
    r = run_cli("disconnect")
    assert r.exit_code == 2
    assert "--yes" in r.stderr
    assert (home / "config.toml").exists() and (home / "secrets.toml").exists()


def test_disconnect_confirmation_no_and_yes(home, monkeypatch):
    from cs_posthog.commands import disconnect
    from cs_posthog.output import Output
    from wizard_fakes import piped_keys

    monkeypatch.setattr(Output, "stdin_is_tty", staticmethod(lambda: True))
    connected(home)
    with piped_keys() as keys:
        keys.send_text("n")
        disconnect.run(env_app(), yes=False)
    assert (home / "config.toml").exists() and (home / "secrets.toml").exists()
    with piped_keys() as keys:
        keys.send_text("y")
        disconnect.run(env_app(), yes=False)
    assert not (home / "config.toml").exists() and not (home / "secrets.toml").exists()


def test_disconnect_refuses_while_a_sync_holds_the_lock(home):
    connected(home)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from filelock import FileLock
            lock = FileLock({str(home / "sync.lock")!r}, timeout=0); lock.acquire()
            print("held", flush=True); time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run_cli("disconnect", "--yes")
        assert r.exit_code == 75
        assert "another sync is running" in r.stderr
        assert (home / "config.toml").exists() and (home / "secrets.toml").exists()
        assert (home / "state.sqlite3").exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_disconnect_points_at_a_leftover_schedule(home, monkeypatch, tmp_path):
    from cs_posthog.commands.schedule import cron_line

    prog = tmp_path / "fake-crontab"
    prog.write_text(FAKE_CRONTAB)
    prog.chmod(0o755)
    table = tmp_path / "crontab.txt"
    monkeypatch.setenv("CS_POSTHOG_CRONTAB", str(prog))
    monkeypatch.setenv("FAKE_CRONTAB_FILE", str(table))
    connected(home)
    table.write_text(cron_line(env_app()) + "\n")
    r = run_cli("disconnect", "--yes")
    assert r.exit_code == 0
    assert "cs-posthog schedule --remove" in r.stderr
    assert table.read_text() == cron_line(env_app()) + "\n"  # the crontab itself is the user's to change
