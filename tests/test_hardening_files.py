"""Hardening (issue 11, items 11, 14, 15): files that cannot be written, links, permissions.

- 11: the disk full is exit 74 and a read-only home exit 73, each one line naming the file and the OS
  error; `status` on a read-only home reads the state instead of calling it damaged. Tests run as
  root here, where chmod stops nothing: a read-only home is a read-only bind mount in a private
  mount namespace (``unshare -m``; skipped where that is not allowed), a directory that cannot be
  created is a path under a regular file, and a full disk is the OS's ENOSPC raised where files are
  written (fsutil) or RLIMIT_FSIZE making SQLite's own writes fail.
- 14: `edit` writes through a symlinked config.toml (the link stays, its target changes); a link
  that leads nowhere or loops is named (78), not "not connected".
- 15: a secrets.toml others can read is warned about on stderr (one line) and made 0600.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from cs_posthog.config import Config, save_config
from cs_posthog.sandbox.runner import start_sandbox
from cs_posthog.sync.state import SyncState
from helpers import cs_posthog_cmd, env_paths, fake_key, run_cli, sample_config_dict, sandbox_env

PROP = "organization_id"


def one_error(stderr: str) -> tuple[str, str]:
    lines = stderr.splitlines()
    assert len(lines) >= 2 and lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), stderr
    assert sum(ln.startswith("error: ") for ln in lines) == 1, stderr
    assert "Traceback" not in stderr and "bug in cs-posthog" not in stderr and "damaged" not in stderr, stderr
    return lines[-2], lines[-1]


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=1500, persons=200, customers=20, seed=4, region="eu") as sb:
        yield sb


@pytest.fixture
def env(sandbox, monkeypatch):
    return sandbox_env(monkeypatch, sandbox.info)


def connect(info) -> None:
    r = run_cli("connect", "--no-input", "--no-sync", "--project", str(info["project_id"]),
                "--tracker-key", info["tracker_key"], "--cs-url", info["customerscore"],
                "--customer-property", PROP, "--event", "invoice_paid", "--event", "$pageview")
    assert r.exit_code == 0, r.stderr


# --- 11: a read-only home ----------------------------------------------------------------------------
def _read_only_mount_works(tmp_path: Path) -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = tmp_path / "ro-probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount --bind '{probe}' '{probe}' && mount -o remount,bind,ro '{probe}' && "
                        f"! touch '{probe}/x' 2>/dev/null"], capture_output=True, timeout=60)
    return r.returncode == 0


def run_in_read_only(home: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    """``cs-posthog ARGS`` with ``home`` mounted read-only (root is refused writes there too)."""
    script = 'mount --bind "$HOMEDIR" "$HOMEDIR" && mount -o remount,bind,ro "$HOMEDIR" && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *cs_posthog_cmd(), *args],
                          env={**env, "HOMEDIR": str(home)}, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def read_only_ok(tmp_path):
    if os.geteuid() != 0 and not _read_only_mount_works(tmp_path):
        # an unprivileged user: a chmod makes the home read-only just as well
        return "chmod"
    if not _read_only_mount_works(tmp_path):
        pytest.skip("cannot make a read-only bind mount here (no unshare -m)")
    return "mount"


def test_status_on_a_read_only_home_reads_the_state_and_sync_names_the_file(home, env, read_only_ok):
    connect(env)
    st = SyncState(home / "state.sqlite3")
    run = st.start_run("first")
    st.finish_run(run, "ok", {"events_sent": 321, "contacts_sent": 4})
    st.close()
    child_env = {**os.environ, "CS_POSTHOG_HOME": str(home)}
    if read_only_ok == "chmod":
        home.chmod(0o500)
        try:
            status = subprocess.run([*cs_posthog_cmd(), "status"], env=child_env, capture_output=True, text=True,
                                    timeout=60)
            sync = subprocess.run([*cs_posthog_cmd(), "sync"], env=child_env, capture_output=True, text=True,
                                  timeout=60)
        finally:
            home.chmod(0o700)
        reason = "Permission denied"
    else:
        status = run_in_read_only(home, "status", env=child_env)
        sync = run_in_read_only(home, "sync", env=child_env)
        reason = "Read-only file system (EROFS)"
    assert status.returncode == 0, status.stderr
    assert "damaged" not in status.stderr and "321 events" in status.stdout
    assert sync.returncode == 73, sync.stderr
    error, hint = one_error(sync.stderr)
    assert f"cannot use {home}/" in error or f"cannot write {home}/" in error or f"cannot open {home}/" in error
    assert reason in error and "writable" in hint


def test_a_home_that_cannot_be_a_directory_is_73_naming_it(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    monkeypatch.setenv("CS_POSTHOG_HOME", str(blocker / "home"))
    monkeypatch.setenv("CS_POSTHOG_CRONTAB", "true")
    r = run_cli("schedule", "--install")
    assert r.exit_code == 73, r.stderr
    error, hint = one_error(r.stderr)
    assert str(blocker / "home") in error and "Not a directory (ENOTDIR)" in error
    assert "writable" in hint


# --- 11: the disk full ---------------------------------------------------------------------------------
def test_a_full_disk_while_saving_the_config_is_74_and_changes_nothing(home, env, monkeypatch):
    from cs_posthog import fsutil

    connect(env)
    before = (home / "config.toml").read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil.os, "fsync", full)
    r = run_cli("edit", "--no-input", "--contact-id", "email")
    monkeypatch.undo()
    assert r.exit_code == 74, r.stderr
    error, hint = one_error(r.stderr)
    assert error == f"error: cannot write {home / 'config.toml'}: No space left on device (ENOSPC)"
    assert "space" in hint
    assert (home / "config.toml").read_bytes() == before
    assert sorted(p.name for p in home.iterdir() if p.name.endswith(".tmp")) == []


def test_a_full_disk_under_the_state_database_is_74_naming_it(home, env):
    """RLIMIT_FSIZE: the OS refuses SQLite's writes past a size (EFBIG; Python ignores SIGXFSZ)."""
    import resource

    connect(env)
    limit = 48 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    # not measured by coverage (make test): the size limit would refuse its data file too
    bare = {k: v for k, v in os.environ.items() if k not in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")}
    proc = subprocess.run([*cs_posthog_cmd(), "sync"], env={**bare, "CS_POSTHOG_HOME": str(home)},
                          capture_output=True, text=True, timeout=120, preexec_fn=small_files,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 74, proc.stderr
    error, _ = one_error(proc.stderr)
    assert f"{home / 'state.sqlite3'}" in error


# --- 14: a symlinked config.toml -----------------------------------------------------------------------
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_edit_writes_through_a_symlinked_config(home, env, tmp_path, relative):
    connect(env)
    dots = tmp_path / "dotfiles"
    dots.mkdir()
    real = dots / "config.toml"
    shutil.move(home / "config.toml", real)
    link = home / "config.toml"
    link.symlink_to(os.path.relpath(real, home) if relative else real)
    r = run_cli("edit", "--no-input", "--contact-id", "email")
    assert r.exit_code == 0, r.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert tomllib.loads(real.read_text())["persons"]["contact_id"] == "email"
    assert [p.name for p in dots.iterdir()] == ["config.toml"]  # no temporary file left beside it
    assert [p for p in home.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("command", [["status"], ["sync"], ["edit", "--no-input", "--tracker-key", "CS-ZZ9"]])
def test_a_dangling_config_link_is_named_not_called_not_connected(home, tmp_path, command):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").symlink_to(tmp_path / "gone" / "config.toml")
    r = run_cli(*command)
    assert r.exit_code == 78, r.stderr
    error, _ = one_error(r.stderr)
    assert str(home / "config.toml") in error and "does not exist" in error and "not connected" not in error


def test_a_looping_config_link_is_named(home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "a.toml").symlink_to(home / "config.toml")
    (home / "config.toml").symlink_to(home / "a.toml")
    r = run_cli("status")
    assert r.exit_code == 78, r.stderr
    error, _ = one_error(r.stderr)
    assert str(home / "config.toml") in error and "loops" in error


# --- 15: secrets.toml readable by others -----------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secrets_file_others_can_read_is_warned_about_and_made_private(home, mode):
    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)
    key = fake_key()
    secrets = home / "secrets.toml"
    secrets.write_text(f'posthog = "{key}"\ncustomerscore = "{fake_key("csk_", 24)}"\n')
    secrets.chmod(mode)
    r = run_cli("status")
    assert r.exit_code == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if str(secrets) in ln]
    assert len(warnings) == 1 and "warning" in warnings[0].lower() and f"{mode:o}" in warnings[0], r.stderr
    assert "0600" in warnings[0]
    assert (secrets.stat().st_mode & 0o777) == 0o600
    assert key not in r.stderr + r.stdout
    again = run_cli("status")  # fixed: said once
    assert str(secrets) not in again.stderr


def test_a_private_secrets_file_is_used_silently(home):
    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)
    secrets = home / "secrets.toml"
    secrets.write_text(f'posthog = "{fake_key()}"\n')
    secrets.chmod(0o600)
    r = run_cli("status")
    assert r.exit_code == 0 and str(secrets) not in r.stderr
