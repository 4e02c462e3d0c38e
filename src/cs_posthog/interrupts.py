"""Ctrl-C and SIGTERM end every command the same way: one ``error:`` line, a ``hint:`` line, and
exit 130 (128 + SIGINT) or 143 (128 + SIGTERM). Light: imported before anything heavy at start-up.

Python turns SIGINT into ``KeyboardInterrupt``; SIGTERM's default action kills the process on the
spot (no ``finally``, exit -15: a demo's sandbox and temporary files left behind). ``install()``
makes SIGTERM raise ``TerminateRequested``, a ``KeyboardInterrupt``, so that everything that
stops cleanly on Ctrl-C (``finally`` blocks, the sync finishing its batch in flight) stops
cleanly on SIGTERM too, and remembers which signal it was for the exit code.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, NoReturn

_received: int | None = None  # the last signal our handler turned into an exception


class TerminateRequested(KeyboardInterrupt):
    """Raised in the main thread by the SIGTERM handler."""


def on_sigterm(signum: int, frame: Any) -> None:
    global _received
    _received = signum
    raise TerminateRequested


def install() -> None:
    """SIGTERM raises ``TerminateRequested`` in the main thread (from then on)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no such signal here
        pass


def terminated(exc: BaseException | None = None) -> bool:
    """Whether the stop came from SIGTERM (not Ctrl-C)."""
    return isinstance(exc, TerminateRequested) or _received == signal.SIGTERM


def error_for(exc: BaseException | None = None) -> Any:
    """The error to report for a stop: ``Terminated`` (143) after SIGTERM, else ``Interrupted`` (130)."""
    # local: cli.py imports this module first, before its Ctrl-C guard and SIGTERM handler are in
    # place; it stays stdlib-only so that nothing else loads before them
    from cs_posthog.errors import Interrupted, Terminated

    return Terminated() if terminated(exc) else Interrupted()


def exit_now(exc: BaseException | None = None) -> NoReturn:
    """For a stop outside the CLI's error handling (while starting up): the two lines, then exit."""
    err = error_for(exc)
    try:
        sys.stderr.write(f"error: {err.message}\nhint: {err.hint}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: the exit code still says it
        pass
    raise SystemExit(int(err.exit_code))
