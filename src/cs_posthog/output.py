"""One output sink handed to every command: data on stdout, messages on stderr.

Modes: human (default), ``--json`` (one JSON document on stdout, messages still on stderr), and
``--quiet`` (nothing on success; warnings and errors still on stderr). No colour or progress when
stderr is not a terminal; ``NO_COLOR`` is honoured by rich.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import sys
import unicodedata
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console

# What must never reach a terminal raw: C0 and C1 controls (ESC starts OSC/CSI sequences that set
# the title, clear the screen, write the clipboard; U+009B is an 8-bit CSI), DEL, line and
# paragraph separators, and the bidirectional overrides that reorder what is shown.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# the same, less the C0 controls that JSON escapes itself (and that its layout uses)
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def esc(value: Any, *, markup: bool = True, keep: str = "") -> str:
    """THE way a name or value that came from PostHog, the config or the user is shown on a
    terminal: control characters are made visible as their escapes (``\\x1b``, ``\\n``,
    ``\\u202e``), so such text can neither drive the terminal nor break a line; with ``markup``
    (the default: rich messages) its brackets are text, not rich markup. ``markup=False`` for plain
    text (rich ``Text``, questionary labels, one-line errors). ``keep``: characters left as they
    are (a message's own line breaks)."""
    text = value if isinstance(value, str) else str(value)
    if _CONTROL.search(text):
        text = _CONTROL.sub(
            lambda m: m.group() if m.group() in keep else m.group().encode("unicode_escape").decode("ascii"), text
        )
    if markup:
        # local: cli.main() imports this module at start-up (--help stays light)
        from rich.markup import escape

        text = escape(text)
    return text


# --- streams that are not UTF-8 (latin-1, ascii, cp1252): ASCII stand-ins, never a crash ------------
# What a glyph becomes on a stream that cannot encode it: a mark stays a mark (ticked and unticked
# stay apart), an arrow an arrow. Box drawing is decided by its name; anything else loses its
# accents (NFKD) or, last, becomes "?".
GLYPH_FALLBACKS = {
    "✓": "+", "✔": "+", "✗": "x", "✘": "x", "●": "*", "○": "o", "•": "*", "◦": "o",
    "→": "->", "←": "<-", "↑": "^", "↓": "v", "⇒": "=>", "…": "...", "—": "--", "–": "-",
    "·": "-", "»": ">", "«": "<", "‘": "'", "’": "'", "“": '"', "”": '"', "×": "x", "≈": "~",
    "≤": "<=", "≥": ">=", "≠": "!=", "\u00a0": " ", "\u202f": " ",
}
FALLBACK_ERRORS = "cs-posthog-fallback"
# a message line's indent and list marker ("  1. ", "  • ", "- ", the "! " of a not-checked key):
# its wrapped lines start after it
_HANGING_LEAD = re.compile(r" *(?:(?:[0-9]+\.|[•*\-!]) +)?").match
# Where a screen is laid out cell by cell (prompt_toolkit's prompts), a stand-in must take the
# glyph's one column, or everything after it on the line is drawn where the layout did not expect.
ONE_COLUMN_FALLBACKS = {"→": ">", "←": "<", "⇒": ">", "…": ".", "—": "-", "≤": "<", "≥": ">", "≠": "#"}
ONE_COLUMN_ERRORS = "cs-posthog-fallback-one-column"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 event``, ``2 events``, ``1,204 Persons``: a figure with its noun in the right number."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def ascii_for(ch: str) -> str:
    """The ASCII stand-in of one character a stream cannot encode."""
    if ch in GLYPH_FALLBACKS:
        return GLYPH_FALLBACKS[ch]
    if "\u2500" <= ch <= "\u259f":  # box drawing and block elements (rich's rules, boxes, bars)
        name = unicodedata.name(ch, "")
        if "HORIZONTAL" in name and "VERTICAL" not in name:
            return "-"
        if "VERTICAL" in name and "HORIZONTAL" not in name:
            return "|"
        return "#" if "BLOCK" in name or "SHADE" in name else "+"
    if "\u2800" <= ch <= "\u28ff":  # braille (spinners)
        return "*"
    stripped = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return stripped if stripped and stripped.isascii() else "?"


def _fallback_errors(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return "".join(ascii_for(ch) for ch in exc.object[exc.start:exc.end]), exc.end


def _one_column_errors(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    def one(ch: str) -> str:
        if unicodedata.east_asian_width(ch) in ("W", "F"):  # a wide character takes two columns
            return "??"
        return ONE_COLUMN_FALLBACKS.get(ch) or ascii_for(ch)[:1]

    return "".join(one(ch) for ch in exc.object[exc.start:exc.end]), exc.end


codecs.register_error(FALLBACK_ERRORS, _fallback_errors)
codecs.register_error(ONE_COLUMN_ERRORS, _one_column_errors)


def stream_encoding(stream: Any) -> str:
    stream = getattr(stream, "rich_proxied_file", stream)
    return (getattr(stream, "encoding", None) or "utf-8").lower()


def is_unicode(stream: Any) -> bool:
    """True when ``stream`` takes any character (UTF-8/16/32): the glyphs are written as they are."""
    return stream_encoding(stream).replace("_", "-").startswith("utf")


def fit(text: str, stream: Any, *, one_column: bool = False) -> str:
    """``text`` as ``stream`` can write it: unchanged on a UTF stream, else with ASCII stand-ins.
    THE one place a glyph is chosen by the stream's encoding (before rich lays the text out, so
    "->" takes its two columns). ``one_column``: each stand-in is one character, for text already
    laid out (prompt_toolkit's screen: "…" is ".", "→" is ">")."""
    if is_unicode(stream):
        return text
    enc = stream_encoding(stream)
    errors = ONE_COLUMN_ERRORS if one_column else FALLBACK_ERRORS
    try:
        return text.encode(enc, errors).decode(enc)
    except LookupError:
        return text.encode("ascii", errors).decode("ascii")


def install_stream_fallbacks() -> None:
    """The net under everything written (typer's help, prompt_toolkit, tracebacks): a stdout or
    stderr that is not UTF-8 writes ASCII stand-ins for what it cannot encode, instead of raising
    UnicodeEncodeError."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is None or is_unicode(stream) or not hasattr(stream, "reconfigure"):
            continue
        try:
            stream.reconfigure(errors=FALLBACK_ERRORS)
        except (ValueError, OSError, LookupError):
            pass


class _RedactingStream:
    """What the consoles write to: the process's stream of the moment (rich's own redirection
    unwrapped), every write with the keys masked. The last net under every output channel."""

    def __init__(self, name: str) -> None:
        self._name = name

    @classmethod
    def for_(cls, name: str) -> IO[str]:
        """One, typed as the text stream it stands in for (it forwards every other attribute)."""
        return cast("IO[str]", cls(name))

    def _target(self) -> Any:
        stream = getattr(sys, self._name)
        return getattr(stream, "rich_proxied_file", stream)

    def write(self, text: str) -> int:
        # local: cli.main() imports this module at start-up (--help stays light)
        from cs_posthog.secrets import redact

        target = self._target()
        # rich laid the text out already: a stand-in may not take more columns than its glyph
        return int(target.write(fit(redact(text), target, one_column=True)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


def _safe_renderable(obj: Any, stream: Any = None) -> Any:
    """What rich is about to lay out, with keys masked and control characters visible (line breaks
    kept): a key wrapped across two lines of a table cell would escape a redaction of the written
    text, and a name put into a table without ``esc`` must not drive the terminal either."""
    # local: cli.main() imports this module at start-up (--help stays light)
    from cs_posthog.secrets import redact

    def clean(text: str) -> str:
        text = esc(redact(text), markup=False, keep="\n")
        return fit(text, stream) if stream is not None else text

    if isinstance(obj, str):
        return clean(obj)
    # local: cli.main() imports this module at start-up (--help stays light)
    from rich.table import Table
    from rich.text import Text

    if isinstance(obj, Text):
        plain = obj.plain
        cleaned = clean(plain)
        return obj if cleaned == plain else Text(cleaned, style=obj.style, justify=obj.justify)
    if isinstance(obj, Table):
        obj.title = _safe_renderable(obj.title, stream) if obj.title is not None else None
        for column in obj.columns:
            column.header = _safe_renderable(column.header, stream)
            column._cells = [_safe_renderable(c, stream) for c in column._cells]
    return obj


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
            # local: cli.main() imports this module at start-up (--help stays light)
            from rich.console import Console

            # soft_wrap off a terminal only (a log line stays whole); on a terminal rich wraps long
            # messages between words, where the terminal itself would cut them mid-word
            self._err = Console(file=_RedactingStream.for_("stderr"), soft_wrap=not _isatty(sys.stderr),
                                highlight=False)
        return self._err

    @property
    def out(self) -> Console:
        if self._out is None:
            # local: cli.main() imports this module at start-up (--help stays light)
            from rich.console import Console

            self._out = Console(file=_RedactingStream.for_("stdout"), soft_wrap=not _isatty(sys.stdout),
                                highlight=False)
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

    def _message(self, message: str) -> str:
        """A rich message as written: keys masked, stray control characters visible (its own line
        breaks kept). The names it quotes went through ``esc`` already; this is the net."""
        # local: cli.main() imports this module at start-up (--help stays light)
        from cs_posthog.secrets import redact

        return fit(esc(redact(message), markup=False, keep="\n"), sys.stderr)

    def glyph(self, text: str, *, stream: Any = None) -> str:
        """A glyph (✓ ✗ ● →) as the stream (stderr by default) can show it: see ``fit``."""
        return fit(text, sys.stderr if stream is None else stream)

    # --- messages (stderr) ---------------------------------------------------------------------
    def _print_hanging(self, prefix: str, body: str) -> None:
        """``prefix`` then ``body``; on a terminal, the lines rich wraps each line of ``body`` into
        start under its text, not at column 0: after the prefix (``✓ ``, ``warning: ``), after a
        line's own indent and list marker (``  1. ``, ``  • ``). Off a terminal each line is
        written whole (soft wrap), as a log line should be."""
        # local: cli.main() imports this module at start-up (--help stays light)
        from rich.text import Text

        console = self.err
        if console.soft_wrap:
            console.print(prefix + body)
            return
        head = Text.from_markup(prefix)
        for n, source in enumerate(Text.from_markup(body).split("\n", allow_blank=True)):
            start = Text.assemble(head) if n == 0 else Text()
            lead = _HANGING_LEAD(source.plain)
            cut = lead.end() if lead else 0
            start.append_text(source[:cut])
            hang = start.cell_len
            if hang >= console.width // 2:  # too deep to hang: let it wrap at the margin
                console.print(Text.assemble(start, source[cut:]))
                continue
            lines = source[cut:].wrap(console, console.width - hang) if source.plain[cut:] else [Text()]
            for i, line in enumerate(lines):
                line.rstrip()
                console.print(Text.assemble(start if i == 0 else " " * hang, line), soft_wrap=True)

    def info(self, message: str) -> None:
        """Progress and confirmations: silent in --quiet and --json."""
        if self.human:
            self._print_hanging("", self._message(message))

    def success(self, message: str) -> None:
        if self.human:
            self._print_hanging(f"[green]{self.glyph('✓')}[/green] ", self._message(message))

    def warn(self, message: str) -> None:
        """Always shown (stderr), whatever the mode."""
        self._print_hanging("[yellow]warning:[/yellow] ", self._message(message))

    def error(self, message: str, hint: str | None = None) -> None:
        # local: cli.main() imports this module at start-up (--help stays light)
        from cs_posthog.secrets import redact

        self._print_hanging("[red]error:[/red] ", fit(esc(redact(message)), sys.stderr))
        if hint:
            self._print_hanging("[dim]hint:[/dim] ", fit(esc(redact(hint)), sys.stderr))

    # --- data (stdout) -------------------------------------------------------------------------
    def data(self, obj: Any, *, line: bool = False) -> None:
        """One JSON document on stdout, keys masked (``line``: on one line, for a stream of JSON
        lines). C1 controls, line separators and bidi overrides inside its strings are written as
        ``\\uXXXX`` (JSON escapes the C0 ones itself)."""
        # local: cli.main() imports this module at start-up (--help stays light)
        from cs_posthog.secrets import redact_data

        indent = None if line else 2
        text = json.dumps(redact_data(json.loads(json.dumps(obj, default=str))), indent=indent, ensure_ascii=False)
        text = _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        if not is_unicode(sys.stdout):  # a latin-1 or ascii stream: \uXXXX escapes lose nothing
            try:
                text.encode(stream_encoding(sys.stdout))
            except (UnicodeEncodeError, LookupError):
                text = json.dumps(json.loads(text), indent=indent, ensure_ascii=True)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def print(self, renderable: Any = "") -> None:
        """Human results on stdout (tables, text); nothing in quiet mode. Keys masked, controls visible."""
        if not self.quiet:
                self.out.print(_safe_renderable(renderable, sys.stdout))


def setup_logging(*, verbose: int = 0, debug: bool = False) -> None:
    """stdlib logging to stderr: WARNING by default, -v INFO, --debug DEBUG; keys always masked."""
    # local: cli.main() imports this module at start-up (--help stays light)
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
