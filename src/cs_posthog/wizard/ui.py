"""Prompt building blocks on top of questionary / prompt_toolkit.

* ``add_footer``: a line of live text under any questionary prompt (a counter, a badge). Render
  callables only read state; the I/O happens in threads that call ``app.invalidate()``.
* ``LiveCount``: a debounced background count (``threading.Timer``) shown as a badge.
* ``NameCompleter``: autocomplete from an API search, cached, from a minimum prefix, meant to run
  inside ``ThreadedCompleter`` so the keyboard never waits for the network.
* ``busy``: a spinner on stderr while something slow runs (only on a terminal).

Prompts are always asked with ``.unsafe_ask()``: Ctrl-C raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import string
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import questionary
from prompt_toolkit.application import get_app_or_none
from prompt_toolkit.application.current import get_app
from prompt_toolkit.completion import Completer, Completion, ThreadedCompleter
from prompt_toolkit.filters import Condition, IsDone, to_filter
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import ConditionalContainer, HSplit, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.layout.dimension import Dimension
from questionary import Separator
from questionary.constants import INVALID_INPUT

from cs_posthog._private_apis import inquirer_control_class, set_checkbox_indicators, wrap_prompt_toolkit_writes
from cs_posthog.output import esc, fit, is_unicode


# --- layout ----------------------------------------------------------------------------------
def add_footer(question: Any, get_text: Callable[[], Any], *, index: int | None = None,
               shown: Callable[[], bool] | None = None) -> Any:
    """Show ``get_text()`` (plain or formatted text) below the prompt until it is answered (and,
    with ``shown``, only while ``shown()`` is true: no blank line otherwise).

    Works for every questionary prompt: their layouts are an ``HSplit`` whose children list can
    take one more window. ``get_text`` and ``shown`` are render callables: they must not do I/O.
    """
    container = question.application.layout.container
    if not isinstance(container, HSplit):  # pragma: no cover - questionary always builds an HSplit
        raise TypeError(f"unexpected prompt layout: {type(container).__name__}")
    window = ConditionalContainer(
        Window(FormattedTextControl(get_text), dont_extend_height=True, wrap_lines=True),
        filter=(~IsDone() & Condition(shown)) if shown is not None else ~IsDone(),
    )
    children = container.children
    children.insert(len(children) if index is None else index, window)
    return question


def inquirer_control(question: Any) -> Any:
    """The ``InquirerControl`` of a questionary select/checkbox (its choices and selection)."""
    kind = inquirer_control_class()
    for control in question.application.layout.find_all_controls():
        if isinstance(control, kind):
            return control
    raise LookupError("not a select or checkbox prompt")


_GLYPHS_SET = False


def use_stream_glyphs() -> None:
    """Prompts on a terminal that is not UTF-8 (latin-1, ascii, cp1252): ticked and unticked
    checkboxes are ``[x]`` and ``[ ]`` (questionary's ● and ○ would both be written as "?"), and
    whatever else prompt_toolkit writes gets the ASCII stand-ins of ``output.fit`` (» · ↑↓ →)
    instead of "?". Nothing changes on a UTF-8 terminal. Idempotent."""
    global _GLYPHS_SET

    if _GLYPHS_SET or is_unicode(sys.stdout):
        return
    _GLYPHS_SET = True

    set_checkbox_indicators("[x]", "[ ]")
    # prompt_toolkit laid the screen out already: each stand-in keeps its glyph's columns
    wrap_prompt_toolkit_writes(lambda stdout, data: fit(data, stdout, one_column=True))


def checklist(
    message: str,
    choices: Sequence[tuple[str, str, bool]],
    *,
    noun: str = "selected",
    validate: Callable[[list[str]], bool | str] | None = None,
    instruction: str | None = None,
    max_rows: int = 12,
    note: Callable[[list[Any]], str | None] | None = None,
) -> Any:
    """A searchable checkbox with a live "N of M selected" line under the list.

    ``choices``: ``(value, title, checked)``. The keys:

    * typing starts a search (the list keeps the titles containing it); while the search is being
      typed, Space types a space, so "Checkout Completed" can be found;
    * Tab toggles the row at the pointer, always; Space toggles it when no search is being typed
      (no search text, or the pointer was moved with the arrows since the last letter);
    * Ctrl-A selects all the choices shown (every one, or only those matching the search), or
      deselects them when they are all selected; Enter confirms.

    Under the list: the counter (with how many rows are above and below the visible ones, as the
    pointer moves), the line of keys as they work right now, and ``note(selected values)`` when it
    says something. These lines are wrapped between words at the terminal's width. Returns the
    Question.
    """
    use_stream_glyphs()
    check = validate or (lambda _sel: True)
    q = questionary.checkbox(
        message,
        choices=[questionary.Choice(title=esc(title, markup=False), value=value, checked=checked)
                 for value, title, checked in choices],
        use_search_filter=True,
        use_jk_keys=False,
        validate=check,
        instruction="" if instruction is None else instruction,  # the keys are said under the list
    )
    ic = inquirer_control(q)
    total = sum(1 for c in ic.choices if not getattr(c, "disabled", False))
    list_window = _list_window(q, ic)
    scroll = _Scroll()
    typing = [False]  # a search is being typed: Space is a character of it

    def view() -> tuple[int, int]:
        """(rows above, rows below) the visible ones, for the pointer where it is now."""
        rows = max_rows
        info = list_window.render_info if list_window is not None else None
        if info is not None and info.window_height < min(max_rows, info.ui_content.line_count):
            rows = info.window_height  # a short terminal squeezed the list
        return scroll.view(ic.pointed_at, len(ic.filtered_choices), rows)

    def counter() -> list[tuple[str, str]]:
        n = len(ic.selected_options)
        text = f"{n} of {total} {noun}"
        listed = len(ic.filtered_choices)  # computes found_in_search as a side effect
        if ic.search_filter:
            text += f" · {listed if ic.found_in_search else 0} match {ic.search_filter!r}"
        above, below = view()
        if above or below:  # the list scrolls: say so, or the rows outside the window go unseen
            parts = ([f"{above} more above"] if above else []) + ([f"{below} more below"] if below else [])
            text += f" · {', '.join(parts)}, ↑↓ to scroll"
        return [("class:instruction bold", wrap_to_terminal(text))]

    def keys_line() -> list[tuple[str, str]]:
        if typing[0]:
            text = "Space types a space · Tab toggles · ↑↓ move, then Space toggles · Ctrl-U clears · Enter confirms"
        else:
            text = "Space or Tab toggles · type to search · Ctrl-A all/none · Enter confirms"
        return [("class:instruction", wrap_to_terminal(text))]

    def note_text() -> str | None:
        return note(_selected_values()) if note is not None else None

    def note_line() -> list[tuple[str, str]]:
        return [("fg:ansiyellow", wrap_to_terminal(note_text() or ""))]

    def _selected_values() -> list[Any]:
        return [c.value for c in ic.get_selected_values()]

    def _shown_values() -> list[Any]:
        return [c.value for c in ic.filtered_choices if not getattr(c, "disabled", False) and not _is_separator(c)]

    def revalidate() -> None:
        """questionary's own check after a change: the error shows only once Enter was tried."""
        verdict = check(_selected_values())
        if verdict is True or not ic.submission_attempted:
            ic.error_message = None
        else:
            text = INVALID_INPUT if verdict is False else str(verdict)
            ic.error_message = FormattedText([("class:validation-toolbar", text)])

    def toggle() -> None:
        choice = ic.get_pointed_at()
        if getattr(choice, "disabled", False) or _is_separator(choice):
            return
        if choice.value in ic.selected_options:
            ic.selected_options.remove(choice.value)
        else:
            ic.selected_options.append(choice.value)
        revalidate()

    kb = q.application.key_bindings  # bindings added here win over questionary's for the same key
    assert isinstance(kb, KeyBindings)  # questionary gives each prompt its own KeyBindings

    @kb.add(" ", eager=True)
    def _space(_event: Any) -> None:
        if typing[0] and ic.search_filter:
            ic.add_search_character(" ")
        else:
            toggle()

    # Tab (Ctrl-I) is questionary's "invert every choice", the hidden ones too: here it toggles
    @kb.add(Keys.ControlI, eager=True)
    def _tab(_event: Any) -> None:
        toggle()

    def _search(event: Any) -> None:
        ic.add_search_character(event.key_sequence[0].key)
        typing[0] = bool(ic.search_filter)

    for character in string.printable:
        if character not in string.whitespace:
            kb.add(character, eager=True)(_search)
    kb.add(Keys.Backspace, eager=True)(_search)

    @kb.add(Keys.ControlU, eager=True)  # as in a shell's line: the whole search goes, the list is whole again
    def _clear(_event: Any) -> None:
        ic.search_filter = None
        ic.pointed_at = 0
        typing[0] = False

    def _move(step: int) -> Callable[[Any], None]:
        def move(_event: Any) -> None:
            if ic.choice_count:
                ic.pointed_at = (ic.pointed_at + step) % ic.choice_count
            typing[0] = False  # the search is done being typed: Space toggles again
        return move

    for key, step in ((Keys.Down, 1), (Keys.ControlN, 1), (Keys.Up, -1), (Keys.ControlP, -1)):
        kb.add(key, eager=True)(_move(step))

    # questionary's Ctrl-A selects every choice, even those a search hides: after searching
    # "invoice", Ctrl-A would tick 29 events where the person sees 2. Here it acts on what is shown.
    @kb.add(Keys.ControlA, eager=True)
    def _all_or_none(_event: Any) -> None:
        shown = _shown_values()
        missing = [v for v in shown if v not in ic.selected_options]
        if missing:
            ic.selected_options.extend(missing)
        else:
            ic.selected_options = [v for v in ic.selected_options if v not in shown]
        revalidate()

    if list_window is not None:
        # The list must not take the height a longer list had before (the search shrinks it, and a
        # prompt_toolkit screen never shrinks): the counter stays right under the visible choices.
        list_window.dont_extend_height = to_filter(True)
        # a long list scrolls in a window of ``max_rows``, so the explanation printed above it
        # stays on screen; its scroll is the one the counter reports
        list_window.height = Dimension(max=max_rows)
        list_window.get_vertical_scroll = lambda _w: view()[0]
    # under the list, above the search line and the validation message
    if note is not None:
        add_footer(q, note_line, index=2, shown=lambda: bool(note_text()))
    add_footer(q, keys_line, index=2)
    add_footer(q, counter, index=2)
    return q


def _list_window(question: Any, ic: Any) -> Any:
    for child in question.application.layout.container.children:
        window = getattr(child, "content", None)
        if isinstance(window, Window) and window.content is ic:
            return window
    return None  # pragma: no cover - questionary always puts the list in a Window


class _Scroll:
    """Which rows of a list the window shows: it scrolls only as far as needed to keep the pointer
    in view (prompt_toolkit's own rule), and the counter reads the same numbers the window uses."""

    def __init__(self) -> None:
        self.top = 0  # the first row shown

    def view(self, pointer: int, count: int, rows: int) -> tuple[int, int]:
        """(rows above, rows below) the window of ``rows`` rows over ``count``, pointer in view."""
        height = max(0, min(rows, count))
        top = max(0, min(self.top, count - height))
        if pointer < top:
            top = pointer
        elif height and pointer >= top + height:
            top = pointer - height + 1
        self.top = top
        return top, max(0, count - top - height)


def wrap_to_terminal(text: str, indent: str = "  ") -> str:
    """``text`` indented and broken between words at the running prompt's width (prompt_toolkit
    would cut a word in two at the last column)."""
    width = get_app().output.get_size().columns  # outside a running prompt: a dummy's 80
    lines = textwrap.wrap(text, width=max(20, width - 1), initial_indent=indent, subsequent_indent=indent,
                          break_on_hyphens=False)
    return "\n".join(lines)


def select(message: str, choices: Sequence[Any], **kw: Any) -> Any:
    """``questionary.select`` with its choices fitted to the terminal (``fit_choices``)."""
    return questionary.select(message, choices=fit_choices(choices), **kw)


def fit_choices(choices: Sequence[Any], width: int | None = None) -> list[Any]:
    """Menu items broken between words at the terminal's width, continued under their text:
    prompt_toolkit cuts a menu line at the last column, and at 60 columns "Change how contacts are
    identified (now: ...)" lost what it is now. A disabled item's reason joins its title, so that
    it is wrapped with it. Strings become ``Choice``s; separators and formatted titles are kept."""
    if width is None:
        width = _terminal_columns()
    out: list[Any] = []
    for c in choices:
        if isinstance(c, str):
            c = questionary.Choice(c)
        if _is_separator(c) or not isinstance(c.title, str):
            out.append(c)
            continue
        if isinstance(c.disabled, str):  # drawn as "- title (reason)"
            c.title, c.disabled = f"{c.title} ({c.disabled})", True
        lead = _MENU_LEAD + (2 if c.disabled else 0)
        room = width - lead - 1
        if len(c.title) > room >= 20:
            c.title = ("\n" + " " * lead).join(textwrap.wrap(c.title, room, break_on_hyphens=False))
        out.append(c)
    return out


_MENU_LEAD = 3  # the columns before a menu item's title: " » " (questionary's pointer) or three spaces


def _terminal_columns() -> int:
    """The columns of the terminal the prompts draw on (stdout); 80 when it is not one."""
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


def _is_separator(choice: Any) -> bool:
    return isinstance(choice, Separator)


# --- live count ------------------------------------------------------------------------------
PAUSE_AFTER_S = 0.5  # a count that would wait longer than this for the query budget is paused instead


def budget_of(source: Any) -> Callable[[], tuple[float, int]] | None:
    """``() -> (seconds a query would wait, queries per hour)`` for a data source that paces its
    queries (``query_wait``/``query_budget``), else None."""
    wait = getattr(source, "query_wait", None)
    per_hour = getattr(source, "query_budget", None)
    if not callable(wait):
        return None
    return lambda: (float(wait()), int(per_hour()) if callable(per_hour) else 0)


def paused_text(what: str, wait_s: float, per_hour: int) -> str:
    """"counts paused: PostHog query budget (120/hour) — resumes in 42 s"."""
    budget = f" ({per_hour:,}/hour)" if per_hour else ""
    secs = max(1, int(wait_s + 0.999))
    when = f"{secs} s" if secs < 120 else f"{(secs + 59) // 60} min"
    return f"{what} paused: PostHog query budget{budget} — resumes in {when}"


class LiveCount:
    """A count that runs in the background, debounced, and redraws the prompt when it is known.

    ``request(arg)`` (re)starts a timer; once the input has been quiet for ``delay`` seconds
    ``count(arg)`` runs in the timer's thread: one query per settled input, not one per keystroke.
    Only the newest request's answer is shown; an argument already counted is answered from memory.

    ``budget`` (see ``budget_of``): when the query would wait for PostHog's query budget longer than
    ``PAUSE_AFTER_S``, nothing is asked: the badge says "counts paused: PostHog query budget
    (N/hour) — resumes in M s" (counting down) and the count runs by itself when the budget has
    room. The prompt never waits for it. ``text()`` is the render callable.
    """

    def __init__(
        self,
        count: Callable[[Any], int],
        *,
        delay: float = 0.4,
        render: Callable[[int], str] = lambda n: f"{n:,} persons will be synced",
        budget: Callable[[], tuple[float, int]] | None = None,
        key: Callable[[Any], Any] = repr,
    ) -> None:
        self._count = count
        self._delay = delay
        self._render = render
        self._budget = budget
        self._key = key
        self._lock = threading.Lock()
        self._gen = 0
        self._shown_gen = -1
        self._timer: threading.Timer | None = None
        self._value: int | None = None
        self._error: str | None = None
        self._paused: tuple[float, int] | None = None  # (resume at, per hour) while the budget is out
        self._cache: dict[Any, int] = {}
        self._app: Any = None
        self._done = threading.Event()
        self.queries = 0  # counts actually run (tests, and a budget-minded caller)

    # called from the UI thread
    def request(self, arg: Any) -> None:
        with self._lock:
            self._gen += 1
            gen = self._gen
            self._done.clear()
            self._schedule(self._delay, gen, arg)
        self._invalidate()

    def _schedule(self, delay: float, gen: int, arg: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(delay, self._run, args=(gen, arg))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._done.set()

    @property
    def pending(self) -> bool:
        return self._shown_gen != self._gen

    @property
    def paused(self) -> bool:
        return self._paused is not None and self.pending

    @property
    def value(self) -> int | None:
        return self._value

    def wait(self, timeout: float = 30.0) -> int | None:
        """Block until the newest request is answered (tests, and the final summary); None when it
        is not (paused by the query budget, or still running after ``timeout``)."""
        self._done.wait(timeout)
        with self._lock:
            return None if self.pending else self._value

    def _run(self, gen: int, arg: Any) -> None:
        try:
            key = self._key(arg)
        except Exception:
            key = None
        with self._lock:
            if gen != self._gen:
                return
            cached = self._cache.get(key) if key is not None else None
        if cached is None and self._budget is not None:
            try:
                wait, per_hour = self._budget()
            except Exception:
                wait, per_hour = 0.0, 0
            if wait > PAUSE_AFTER_S:
                with self._lock:
                    if gen != self._gen:
                        return
                    self._paused = (time.monotonic() + wait, per_hour)
                    # look again each second (the badge counts down) and count once there is room
                    self._schedule(min(1.0, wait), gen, arg)
                    self._done.set()  # nothing to wait for now: the prompt goes on
                self._invalidate()
                return
        if cached is not None:
            value, error = cached, None
        else:
            try:
                with self._lock:
                    self.queries += 1
                value, error = self._count(arg), None
            except Exception as exc:  # shown in the badge; the wizard goes on
                value, error = None, _short_error(exc)
        with self._lock:
            if value is not None and key is not None:
                if len(self._cache) >= 256:
                    self._cache.clear()
                self._cache[key] = value
            if gen != self._gen:
                return
            self._value, self._error, self._shown_gen, self._paused = value, error, gen, None
            self._done.set()
        self._invalidate()

    def _invalidate(self) -> None:
        app = self._app
        if app is not None and getattr(app, "is_running", False):
            app.invalidate()  # thread-safe: schedules a redraw on the app's loop

    def plain(self) -> str:
        paused = self._paused
        if paused is not None and self.pending:
            return paused_text("counts", paused[0] - time.monotonic(), paused[1])
        if self._error is not None and not self.pending:
            return f"could not count: {self._error}"
        if self._value is None:
            return "counting…"
        text = self._render(self._value)
        return text + (" (updating…)" if self.pending else "")

    def text(self) -> list[tuple[str, str]]:
        """Render callable (no I/O): remembers the running app for later redraws."""
        app = get_app_or_none()
        if app is not None:
            self._app = app
        if self.paused:
            style = "fg:ansiyellow"
        elif self._error and not self.pending:
            style = "fg:ansired"
        else:
            style = "fg:ansigreen bold"
        return [(style, "  ● " + self.plain())]


def _short_error(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return msg.splitlines()[0][:120]


# --- autocomplete ----------------------------------------------------------------------------
class NameCompleter:
    """Completes whole names (which may contain spaces) from ``search(text) -> names``.

    * nothing is fetched below ``min_prefix`` characters (unless Tab asks for it);
    * answers are cached per search text; a longer text is filtered locally from the answer for
      its longest cached prefix (a server search narrows as the text grows);
    * a fetch runs in its own thread: the completion waits for it ``wait`` seconds at most, then
      shows nothing and asks the prompt to complete again when the answer arrives. So neither
      typing nor Enter ever waits for a slow PostHog. Wrap it in ``ThreadedCompleter`` too.
    """

    def __init__(self, search: Callable[[str], Iterable[str]], *, min_prefix: int = 1, limit: int = 50,
                 wait: float = 0.4) -> None:
        # subclassing at run time keeps prompt_toolkit out of module import
        self._search = search
        self.min_prefix = min_prefix
        self.limit = limit
        self.wait = wait
        self._cache: dict[str, list[str]] = {}
        self._inflight: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.fetches = 0
        self.completer = _make_completer(Completer, self)

    def _cached(self, key: str) -> list[str] | None:
        with self._lock:
            base = max((k for k in self._cache if key.lower().startswith(k.lower())), key=len, default=None)
            return self._cache.get(base) if base is not None else None

    def _fetch(self, key: str) -> Any:
        """The Future of ``search(key)``, started once per key, in a daemon thread."""
        with self._lock:
            fut = self._inflight.get(key)
            if fut is not None:
                return fut
            fut = Future()
            self._inflight[key] = fut
            self.fetches += 1

        def run() -> None:
            try:
                names = list(dict.fromkeys(self._search(key)))
            except BaseException as exc:
                with self._lock:
                    self._inflight.pop(key, None)
                fut.set_exception(exc)
                return
            with self._lock:
                self._cache[key] = names
                self._inflight.pop(key, None)
            fut.set_result(names)

        threading.Thread(target=run, daemon=True, name="complete").start()
        return fut

    def names(self, text: str, *, wait: float | None = None, on_ready: Callable[[], None] | None = None) -> list[str]:
        """Matching names, best first. Raises TimeoutError when the fetch is still running
        (``on_ready`` is then called once it is done) and the search's own errors."""
        key = text.strip()
        cached = self._cached(key)
        if cached is None:
            fut = self._fetch(key)
            try:
                cached = fut.result(timeout=self.wait if wait is None else wait)
            except concurrent.futures.TimeoutError:
                if on_ready is not None:
                    fut.add_done_callback(lambda _f: on_ready())
                raise TimeoutError(key) from None
        low = key.lower()
        hits = [n for n in cached if low in n.lower()]
        hits.sort(key=lambda n: (not n.lower().startswith(low), n.startswith("$"), n.lower()))
        return hits[: self.limit]

    def completions(self, text: str, *, requested: bool, on_ready: Callable[[], None] | None = None) -> list[str]:
        if len(text.strip()) < self.min_prefix and not requested:
            return []
        try:
            return self.names(text, on_ready=on_ready)
        except Exception:  # slow or failed lookup: no suggestions now, typing goes on
            return []


def _make_completer(base: type, owner: NameCompleter) -> Any:
    class _Completer(base):
        def get_completions(self, document: Any, complete_event: Any) -> Iterator[Any]:
            text = document.text_before_cursor
            app = get_app_or_none()

            def ready() -> None:  # the answer came late: complete again if the text is the same
                if app is None or not app.is_running or app.loop is None:
                    return

                def again() -> None:
                    buf = app.current_buffer
                    if buf.text == text and buf.complete_state is None:
                        buf.start_completion(select_first=False)

                app.loop.call_soon_threadsafe(again)

            for name in owner.completions(text, requested=complete_event.completion_requested, on_ready=ready):
                if name != text:  # the name itself is inserted; its label shows control characters
                    yield Completion(name, start_position=-len(text), display=esc(name, markup=False))

    return _Completer()


def threaded(completer: NameCompleter) -> Any:
    return ThreadedCompleter(completer.completer)


# --- spinner ---------------------------------------------------------------------------------
@contextlib.contextmanager
def busy(out: Any, text: str) -> Iterator[None]:
    """A spinner on stderr while the block runs (a terminal only; otherwise nothing)."""
    if getattr(out, "is_tty", False):
        with out.err.status(text, spinner="dots"):
            yield
    else:
        yield
