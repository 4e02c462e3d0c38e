"""`cs-posthog disconnect`: remove the integration from this machine.

Removes the config, the wizard's draft, both keys (OS keyring and key file) and the sync state
(its SQLite database and lock), after a confirmation or ``--yes``. A running sync holds the lock:
then nothing is removed (exit 75). Data already in Customerscore is not touched. Not connected:
a friendly no-op, exit 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import questionary

from cs_posthog.commands.schedule import marker, read_crontab
from cs_posthog.errors import UsageError
from cs_posthog.secrets import SPECS
from cs_posthog.sync.state import RunLock

if TYPE_CHECKING:
    from cs_posthog.app import App
    from cs_posthog.paths import Paths
    from cs_posthog.secrets import SecretStore

KEPT = "Data already sent to Customerscore stays there (delete it in Customerscore if you want it gone)."


def _state_files(paths: Paths) -> list[Path]:
    db = paths.state_db
    return [db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


def _keyring_entries(secrets: SecretStore) -> list[str]:
    """Which keys the OS keyring holds for us (bounded by the keyring timeout)."""
    return [spec.label for name, spec in SPECS.items() if secrets.keyring_value(name)]


def inventory(paths: Paths, secrets: SecretStore) -> list[str]:
    """What there is to remove, in words, with paths."""
    items = []
    if paths.config_file.exists():
        items.append(f"the configuration ({paths.config_file})")
    if paths.draft_file.exists():
        items.append(f"the unfinished setup ({paths.draft_file})")
    for label in _keyring_entries(secrets):
        items.append(f"the {label} in the OS keyring")
    if paths.secrets_file.exists():
        items.append(f"the stored keys ({paths.secrets_file})")
    if any(p.exists() for p in _state_files(paths)) or paths.lock_file.exists():
        items.append(f"the sync state ({paths.state_db})")
    return items


def ask_confirm() -> bool:
    return bool(questionary.confirm("Remove all of this?", default=False).unsafe_ask())


def schedule_installed(app: App) -> bool:
    """True when our line is in the crontab (never fails: False when it cannot tell)."""
    try:
        return marker(app) in read_crontab(app)
    except Exception:
        return False


def run(app: App, *, yes: bool = False) -> None:
    out, paths = app.out, app.paths
    items = inventory(paths, app.secrets)
    if not items:
        out.info("Not connected: there is nothing to remove.")
        if schedule_installed(app):
            out.warn("a cs-posthog line is still in your crontab: remove it with `cs-posthog schedule --remove`.")
        return

    out.info("This removes from this machine:")
    for item in items:
        out.info(f"  • {item}")
    if not yes:
        out.info(KEPT)
        if not out.stdin_is_tty():
            raise UsageError("not confirmed: stdin is not a terminal",
                             hint="Pass --yes to disconnect without a question.")
        if not ask_confirm():
            out.info("Nothing was removed.")
            return

    lock = RunLock(paths.lock_file).acquire() if paths.state_dir.exists() else None  # 75 while a sync runs
    try:
        for p in _state_files(paths):
            p.unlink(missing_ok=True)
        paths.config_file.unlink(missing_ok=True)
        paths.draft_file.unlink(missing_ok=True)
        app.secrets.delete_all()
    finally:
        if lock is not None:
            lock.release()
            paths.lock_file.unlink(missing_ok=True)
    out.success("Disconnected: configuration, keys and sync state removed.")
    out.info(KEPT)
    if schedule_installed(app):
        out.warn("your crontab still runs `cs-posthog sync`: remove it with `cs-posthog schedule --remove`.")
    out.info("To connect again: `cs-posthog connect`.")
