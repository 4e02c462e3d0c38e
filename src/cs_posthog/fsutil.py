"""Atomic private writes: mkstemp (0600) in the target dir, write, fsync, os.replace."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cs_posthog.paths import ensure_private_dir


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at mode 0600 in a 0700 directory.

    A crash or error at any point leaves either the old file or the new one, never a mix.
    """
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
