"""`cs-posthog sync`: run the engine, show progress on a terminal, then a summary (or JSON).

Data on stdout (summary table, ``--json`` document, dry-run sample), messages on stderr. ``--quiet``
prints nothing on success; warnings and errors go to stderr in every mode. ``cli.py`` imports this
module only when the command runs, so ``cs-posthog --help`` does not pay for its imports.
"""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressBar,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from cs_posthog.config import load_config
from cs_posthog.errors import UsageError
from cs_posthog.interrupts import on_sigterm
from cs_posthog.output import count, is_unicode
from cs_posthog.sync.engine import SyncOptions
from cs_posthog.sync.runner import run_sync

if TYPE_CHECKING:
    from cs_posthog.app import App
    from cs_posthog.config import Config
    from cs_posthog.output import Output
    from cs_posthog.sync.engine import Report

SUMMARY_FIELDS = (
    "status",
    "events_sent",
    "events_skipped_no_customer",
    "contacts_sent",
    "contacts_unchanged",
    "posthog_requests",
    "customerscore_requests",
    "retries",
    "resent_after_crash",
    "events_possibly_doubled",
    "duration_s",
)


SINCE_RANGE_HINT = "Give a date from 1970-01-01 to today, e.g. --since 2024-03-01 (PostHog keeps no earlier events)."


def parse_since(text: str | None) -> Any:
    """``--since YYYY-MM-DD`` (or a full ISO timestamp) as an aware UTC datetime."""
    if text is None:
        return None

    raw = text.strip()
    try:
        if len(raw) == 10:
            dt = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except ValueError:
        raise UsageError(f"--since: {text!r} is not a date (YYYY-MM-DD)",
                         hint="For example: --since 2024-03-01") from None
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is a UTC instant before year 1
        raise UsageError(f"--since: {text!r} is out of range", hint=SINCE_RANGE_HINT) from None
    # the sync's windows reach back from it (overlap, lateness): keep them in range
    if dt < datetime(1970, 1, 1, tzinfo=UTC):
        raise UsageError(f"--since: {text!r} is before 1970-01-01", hint=SINCE_RANGE_HINT)
    if dt > datetime.now(UTC):
        raise UsageError(f"--since: {text} is in the future")
    return dt


def run(
    app: App,
    *,
    config: Config | None = None,
    json_: bool = False,
    quiet: bool = False,
    dry_run: bool = False,
    full: bool = False,
    since: str | None = None,
) -> None:
    out = app.out
    since_dt = parse_since(since)
    cfg = config if config is not None else load_config(app.paths.config_file)
    options = SyncOptions(dry_run=dry_run, full=full, since=since_dt)
    report, error = execute(app, cfg, options)
    for w in report.warnings:
        out.warn(w)
    if json_:
        out.data(report.as_dict())
    elif not quiet:
        render_summary(out, report)
    if error is not None:
        raise error


def execute(app: App, cfg: Config, options: SyncOptions) -> tuple[Report, BaseException | None]:
    """Run one sync with progress bars when stderr is a terminal; returns ``(report, error)``.
    Shared by `sync` and `demo`. ``CS_POSTHOG_PAGE_SIZE`` (``app.settings.page_size``) sets the rows
    per PostHog query, for tests and benchmarks that need many pages from little data."""
    out = app.out
    options.count_totals = out.is_tty
    page = app.settings.page_size
    if page:
        options.events_page_size = options.persons_page_size = options.events_page_max = page
    with _sigterm_as_interrupt():
        if out.is_tty:
            return _with_progress(app, cfg, options)
        return run_sync(cfg, paths=app.paths, secrets=app.secrets, settings=app.settings, options=options)


class _sigterm_as_interrupt:
    """SIGTERM (a service manager, `kill`) stops like Ctrl-C: the batch in flight is finished and
    checkpointed, then exit 143 (130 for Ctrl-C). SIGKILL cannot be caught, and loses nothing either."""

    def __enter__(self) -> None:
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, on_sigterm)

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _with_progress(app: App, cfg: Config, options: SyncOptions) -> tuple[Report, BaseException | None]:
    """The sync with a bar per stream on stderr. A bar's total is what the engine counted before
    reading (events and Persons it will account for); it advances by what is sent, skipped, dropped
    or unchanged, so that on success it ends at the summary's figures (``events_read``,
    ``contacts_read``) with a green tick; a stream that fails or is stopped ends with a cross and
    the bar where it stopped."""
    out = app.out
    tick = Text.from_markup(f"[green]{out.glyph('✓')}[/green]")
    cross = {"failed": Text.from_markup(f"[red]{out.glyph('✗')}[/red]"),
             "stopped": Text.from_markup(f"[yellow]{out.glyph('✗')}[/yellow]")}

    class StateColumn(SpinnerColumn):
        """A spinner while the stream runs, then a tick only when it completed."""

        def render(self, task: Any) -> Any:
            state = task.fields.get("state")
            if state == "ok":
                return tick
            if state in cross:
                return cross[state]
            return self.spinner.render(task.get_time())

    class StreamBar(BarColumn):
        """A stream that did not complete keeps its bar short of the end, even if it had read it all."""

        def render(self, task: Any) -> Any:
            state = task.fields.get("state")
            if state not in cross:
                return super().render(task)
            done = max(0, task.completed)
            colour = "red" if state == "failed" else "yellow"
            return ProgressBar(total=max(task.total or 0, done + 1), completed=done,
                               width=None if self.bar_width is None else max(1, self.bar_width),
                               style=self.style, complete_style=colour, finished_style=colour)

    # the bar gives way on a narrow terminal; the mark, the name, the numbers and the time are never
    # cut, and a detail too long for what is left continues on the next line, under itself. A
    # terminal that is not UTF-8 gets an ASCII spinner and marks (rich draws the bar in ASCII there)
    width = out.err.width
    unicode = is_unicode(out.err.file)
    progress = Progress(
        StateColumn(spinner_name="dots" if unicode else "line", table_column=Column(no_wrap=True)),
        TextColumn("{task.description:<9}", table_column=Column(no_wrap=True)),
        StreamBar(bar_width=max(5, min(40, width - 75)), finished_style="green", table_column=Column(no_wrap=True)),
        MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[detail]}", table_column=Column(overflow="fold")),
        TimeElapsedColumn(table_column=Column(no_wrap=True)),
        console=out.err,
        transient=False,
    )
    verb = "to send" if options.dry_run else "sent"
    tasks = {
        "events": progress.add_task("events", total=None, detail="", state="running"),
        "contacts": progress.add_task("contacts", total=None, detail="", state="running"),
    }

    def on_progress(p: Any) -> None:
        handled = p.handled
        state = "failed" if p.failed else "stopped" if p.stopped else "ok" if p.done else "running"
        if state == "ok":
            total: int | None = handled  # what the stream accounted for: the summary's figure
        else:
            total = max(p.total, handled) if p.total is not None else None
        progress.update(tasks[p.name], completed=handled, total=total, detail=progress_detail(p, verb), state=state)

    def end_unfinished(state: str) -> None:
        """Streams that never ran, in a run that failed before them (PostHog refused the project)."""
        for task_id in tasks.values():
            if progress.tasks[task_id].fields.get("state") == "running":
                progress.update(task_id, state=state)

    with progress:
        try:
            report, error = run_sync(cfg, paths=app.paths, secrets=app.secrets, settings=app.settings,
                                     options=options, progress=on_progress)
        except BaseException as exc:  # another sync holds the lock, a key is missing, Ctrl-C
            end_unfinished("stopped" if isinstance(exc, KeyboardInterrupt) else "failed")
            raise
        end_unfinished("failed" if report.status == "failed" else "stopped")
        return report, error


def progress_detail(p: Any, verb: str) -> str:
    """What a stream's bar says besides its numbers, in the summary's words."""
    if p.done and not (p.failed or p.stopped) and p.handled == 0 and p.name == "events":
        parts = ["nothing new"]
    else:
        parts = [f"{verb} {p.sent:,}"]
        if p.name == "contacts":
            parts.append(f"unchanged {p.unchanged:,}")
        if p.skipped:
            parts.append(f"skipped {p.skipped:,}")
        if p.unsendable:
            parts.append(f"not sendable {p.unsendable:,}")
        if p.dropped:
            parts.append(f"duplicates {p.dropped:,}")
    if p.failed:
        parts.append("[red]failed[/red]")
    elif p.stopped:
        parts.append("[yellow]stopped[/yellow]")
    return " · ".join(parts)


def render_summary(out: Output, report: Report) -> None:
    r = report
    if nothing_new(r):
        when = f" ({_when(r.previous_sync_at)})" if r.previous_sync_at else ""
        out.print(f"Nothing new since the last sync{when}: no new events, "
                  f"{count(r.contacts_unchanged, 'contact')} unchanged.")
        return
    title = "Dry run: nothing was sent" if r.dry_run else f"Sync {r.status}"
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    table.add_column("note", style="dim")
    if r.dry_run:
        table.add_row("events to send", f"{r.events_to_send:,}", _backfill_note(r))
        table.add_row("contacts to send", f"{r.contacts_to_send:,}", f"{r.contacts_unchanged:,} unchanged")
    else:
        table.add_row("events sent", f"{r.events_sent:,}", _backfill_note(r))
        table.add_row("contacts sent", f"{r.contacts_sent:,}", f"{r.contacts_unchanged:,} unchanged")
    table.add_row("events skipped", f"{r.events_skipped_no_customer:,}", "no customer id on their Person")
    other = r.events_skipped_no_contact + r.events_skipped_invalid + r.events_rejected
    if other:
        table.add_row("events not sendable", f"{other:,}", "no contact id, over 255 characters, or rejected")
    c_skip = (r.contacts_skipped_no_customer + r.contacts_skipped_no_contact_id + r.contacts_skipped_invalid
              + r.contacts_rejected + r.contacts_skipped_duplicate_id)
    if c_skip:
        table.add_row("persons skipped", f"{c_skip:,}",
                      "empty customer id, no contact id, invalid, or a contact id another Person has")
    if r.events_duplicates_dropped:
        table.add_row("duplicates dropped", f"{r.events_duplicates_dropped:,}",
                      "stored twice by PostHog, or already delivered")
    if r.resent_after_crash:
        # the last run crashed, was stopped, or failed without an answer: "after crash" is not always so
        table.add_row("sent again", f"{r.resent_after_crash:,}",
                      "the batch in flight when the last run ended")
    if r.events_possibly_doubled:
        table.add_row("possibly doubled", f"{r.events_possibly_doubled:,}",
                      "retried after a timeout that may have been applied")
    if r.contacts_no_longer_matching:
        table.add_row("contacts no longer matching", f"{r.contacts_no_longer_matching:,}", "kept in Customerscore")
    table.add_row("requests", f"{r.posthog_requests:,} / {r.customerscore_requests:,}",
                  f"PostHog / Customerscore, {r.retries:,} retried")
    table.add_row("duration", f"{r.duration_s:.1f} s", "")
    out.print(table)
    if r.dry_run and (r.sample.get("events") or r.sample.get("contacts")):
        _render_sample(out, r.sample)
    if r.customers_referenced and not r.dry_run and (r.events_sent or r.contacts_sent):
        out.info(
            f"[dim]The Persons synced name {count(r.customers_referenced, 'customer id')}. "
            "Customerscore silently ignores contacts and events of customers that do not exist there, "
            "and events whose name is not a metric codename.[/dim]"
        )


def nothing_new(r: Any) -> bool:
    """An incremental run that completed without reading a new event or sending a contact."""
    return (not r.dry_run and r.status == "ok" and r.mode == "incremental" and r.events_read == 0
            and r.contacts_sent == 0 and r.contacts_rejected == 0)


def _when(iso: str) -> str:
    """A stored UTC time as the summary shows it: 2024-03-01 14:05 UTC."""
    return f"{iso[:16].replace('T', ' ')} UTC"


def _backfill_note(r: Any) -> str:
    if r.backfill_from:
        return f"backfill from {r.backfill_from[:10]}"
    return ""


def _render_sample(out: Output, sample: dict[str, list[dict[str, Any]]]) -> None:
    if sample.get("events"):
        t = Table(title="Sample events", title_justify="left")
        for col in ("name", "timestamp (UTC)", "customer", "contact", "email"):
            t.add_column(col)
        for e in sample["events"]:
            ts = datetime.fromtimestamp(e["timestamp"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            ident = e["identification"]
            email = e["data"]["contact"].get("email", "")
            t.add_row(*map(Text, (e["name"], ts, ident["customer"], ident["contact"], email)))
        out.print(t)
    if sample.get("contacts"):
        t = Table(title="Sample contacts", title_justify="left")
        for col in ("customer", "contact", "name", "email"):
            t.add_column(col)
        for c in sample["contacts"]:
            t.add_row(*map(Text, (c["customer_external_id"], c["contact_external_id"], c["contact_name"],
                                  c["attributes"].get("email", ""))))
        out.print(t)
