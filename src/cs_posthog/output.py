"""One output sink handed to every command: data on stdout, messages on stderr.

Modes: human (default), ``--json`` (one JSON document on stdout, messages still on stderr), and
``--quiet`` (nothing on success; warnings and errors still on stderr). No colour or progress when
stderr is not a terminal; ``NO_COLOR`` is honoured by rich.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False, debug: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.debug = debug
        self._err: Console | None = None
        self._out: Console | None = None

    # consoles are created lazily so that `--help` never pays for them
    @property
    def err(self) -> Console:
        if self._err is None:
            from rich.console import Console

            # soft_wrap off a terminal only (a log line stays whole); on a terminal rich wraps long
            # messages between words, where the terminal itself would cut them mid-word
            self._err = Console(stderr=True, soft_wrap=not _isatty(sys.stderr), highlight=False)
        return self._err

    @property
    def out(self) -> Console:
        if self._out is None:
            from rich.console import Console

            self._out = Console(soft_wrap=not _isatty(sys.stdout), highlight=False)
        return self._out

    @property
    def is_tty(self) -> bool:
        """True when progress bars and spinners may be shown (stderr is a terminal)."""
        return sys.stderr.isatty() and not self.quiet and not self.json_mode

    @staticmethod
    def stdin_is_tty() -> bool:
        try:
            return sys.stdin.isatty()
        except (AttributeError, ValueError):
            return False

    @property
    def human(self) -> bool:
        return not self.json_mode and not self.quiet

    # --- messages (stderr) ---------------------------------------------------------------------
    def info(self, message: str) -> None:
        """Progress and confirmations: silent in --quiet and --json."""
        if self.human:
            self.err.print(message)

    def success(self, message: str) -> None:
        if self.human:
            self.err.print(f"[green]✓[/green] {message}")

    def warn(self, message: str) -> None:
        """Always shown (stderr), whatever the mode."""
        self.err.print(f"[yellow]warning:[/yellow] {message}")

    def error(self, message: str, hint: str | None = None) -> None:
        from rich.markup import escape

        self.err.print(f"[red]error:[/red] {escape(message)}")
        if hint:
            self.err.print(f"[dim]hint:[/dim] {escape(hint)}")

    # --- data (stdout) -------------------------------------------------------------------------
    def data(self, obj: Any) -> None:
        """One JSON document on stdout."""
        sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()

    def print(self, renderable: Any = "") -> None:
        """Human results on stdout (tables, text); nothing in quiet mode."""
        if not self.quiet:
            self.out.print(renderable)


def setup_logging(*, verbose: int = 0, debug: bool = False) -> None:
    """stdlib logging to stderr: WARNING by default, -v INFO, --debug DEBUG; keys always masked."""
    from cs_posthog.secrets import RedactingFilter, redact

    class _Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return redact(super().format(record))

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_cs_posthog", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._cs_posthog = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # httpx's INFO line prints full URLs; keep it (and httpcore) at WARNING unless --debug
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
