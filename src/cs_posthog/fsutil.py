"""Atomic private writes: mkstemp (0600) in the target dir, write, fsync, os.replace.

A file that is a symbolic link (a config.toml kept in a dotfiles repository) is written through: the
new content replaces the link's target, atomically in the target's directory, and the link stays.
Every OS error is a ``FileError`` naming the file and the reason (73 read-only or not allowed, 74
disk full or I/O), never an unexplained traceback.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from cs_posthog.errors import FileError
from cs_posthog.paths import ensure_private_dir


def write_target(path: Path) -> Path:
    """Where writing ``path`` lands: ``path`` itself, or the file its symbolic link(s) point at (which
    may not exist yet). A link that loops is a ``FileError`` (73) naming it."""
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileError.from_os_error(exc, path) from None
    return Path(os.path.realpath(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` (or the target of its link) with ``data`` at mode 0600; our own directory is
    made 0700 (a link's target directory is the user's: left as it is).

    A crash or error at any point leaves either the old file or the new one, never a mix.
    """
    path = Path(path)
    target = write_target(path)
    tmp: str | None = None
    try:
        if target == path:
            ensure_private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise FileError.from_os_error(exc, target) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    try:  # make the rename itself durable
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
