"""Where cs-posthog keeps its files.

With a home (``CS_POSTHOG_HOME``, or the demo's temporary directory), one directory holds
everything. Otherwise the platform's usual places: config in ``user_config_path``, state in
``user_state_path``, logs in ``user_log_path``. ``get_paths`` is called once, where the App is made
(``app.py``); everything else receives the ``Paths`` (or one path) as an argument.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "cs-posthog"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    state_dir: Path
    log_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def draft_file(self) -> Path:
        """The wizard's partially completed setup, beside the config."""
        return self.config_dir / "draft.toml"

    @property
    def secrets_file(self) -> Path:
        return self.config_dir / "secrets.toml"

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.sqlite3"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "sync.lock"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "sync.log"


def get_paths(home: str | None) -> Paths:
    """The files of the installation at ``home`` (``Settings.home``), or the platform's places."""
    if home:
        root = Path(home).expanduser()
        return Paths(root, root, root)

    return Paths(
        platformdirs.user_config_path(APP),
        platformdirs.user_state_path(APP),
        platformdirs.user_log_path(APP),
    )


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700. Returns it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if (path.stat().st_mode & 0o777) != 0o700:
            os.chmod(path, 0o700)
    except OSError:
        pass
    return path
