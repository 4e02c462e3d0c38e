"""The sync engine: PostHog events and Persons to Customerscore tracker events and contacts.

No terminal I/O: progress goes through a callback, the result is a ``Report``. The contract is
``docs/sync-invariants.md``; the numbers below refer to it.

Two streams run at once, each in its own thread, each with a reader one page ahead
(``Prefetcher``), so PostHog reads overlap Customerscore sends and each API's budget stays busy:

* events: keyset pages on ``(created_at, uuid)`` (1), from ``cursor - overlap`` (2), bounded on
  ``timestamp`` (3), ``LIMIT page+1`` (4). For every tracker batch: an in-flight mark, the POST, then
  one transaction with the delivered uuids and the cursor (5). Rows without a usable customer id are
  skipped and the cursor moves past them (6). Retries after ambiguous failures are counted (7).
  Tracker batches go one at a time: a crash resends at most the one batch in flight.
* contacts: every Person who may hold a customer id, keyset on ``id``; those matching the filters
  become contacts, payload fingerprints decide what is sent and are stored after the
  acknowledgement (8); a change of settings clears them (9).
* attribution (6a, 6b): events are read with PostHog's ``person_id_override_properties_joined``
  modifier, so ``person.properties`` is the Person as it is now, not as stamped on the event at
  ingestion; ids are the raw JSON text of the property (``sync/queries.py``). A Person the contacts
  scan sees attachable for the first time (``persons_seen``) gets the selected events of the
  backfill window sent once, by a resumable stream per group of Persons that runs after the main
  stream, bounded by the main cursor (later events come through the main stream).
* filters and events (6c): with ``persons.filter_events``, every events query and count also states
  the saved filters; a Person outside them is dropped from ``persons_seen`` (where their events stopped
  is kept in ``persons_left``), so that back inside, or with the option off, 6a sends what they missed.

Memory holds one page being sent plus one being read, whatever the number of events (12).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from cs_posthog.customerscore.client import FIELD_MAX, batched, encode
from cs_posthog.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    CsPosthogError,
    Interrupted,
    MissingScopesError,
    PermissionDeniedError,
    ThrottledError,
    UnavailableError,
    UnexpectedAnswerError,
    UsageError,
)
from cs_posthog.http import Stats
from cs_posthog.interrupts import error_for
from cs_posthog.output import count
from cs_posthog.posthog.client import QueryTooSlowError
from cs_posthog.posthog.hogql import raw_id, raw_value
from cs_posthog.sync import queries
from cs_posthog.sync.event_page import EventRow, PageTriage, plan_batches, skipped_rows, triage_page
from cs_posthog.sync.mapping import (
    PERSON_ID,
    attribute_value,
    contact_payload,
    contacts_settings_hash,
    event_json,
    fingerprint,
    legacy_events_settings_hash,
    project_identity,
    text_or_none,
)
from cs_posthog.sync.prefetch import Prefetcher
from cs_posthog.sync.state import (
    GROUPS_READY_KEY,
    MAIN_STREAM,
    MERGES_KEY,
    PERSONS_STREAM_PREFIX,
    SKIPPED_IDS_KEY,
    Cursor,
    Stream,
    SyncState,
)
from cs_posthog.sync.stream_plan import StreamPlan, plan_event_streams
from cs_posthog.timeutil import fmt_ts, norm_ts, parse_ts, ts_ms, utcnow

if TYPE_CHECKING:
    from cs_posthog.config import Config
    from cs_posthog.posthog.client import QueryResult
    from cs_posthog.sync.clients import CustomerscoreSender, PostHogReader

log = logging.getLogger(__name__)

DEFAULT_EVENTS_PAGE = 10_000  # the first page; pages grow while PostHog answers fast
MAX_EVENTS_PAGE = 49_999  # PostHog caps a LIMIT at 50,000 (see PostHogClient.iter_pages)
_T = TypeVar("_T")
MIN_WINDOW = timedelta(minutes=1)  # the narrowest time window before a too-slow query fails the run
FUTURE_SLACK = timedelta(days=1)  # timestamp may be after created_at (client clocks; PostHog clamps at +23 h)
DEFAULT_PERSONS_PAGE = 10_000
IN_LIST = 500  # values per `x IN (...)` list of a query: Persons of a backfill stream, duplicated contact ids
DROPPED_KEY = "dropped_events"  # meta: {event: [created_at, uuid]} where a deselected event's stream stopped
CUSTOMER_KEY = "customer_rule"  # meta: the identification the Persons in persons_seen were attachable by
RESUME_KEY = "resume_start"  # meta: {stream: [created_at, uuid]} the cursor a resume stream starts strictly after


# --- options, progress, report ---------------------------------------------------------------
@dataclass
class SyncOptions:
    dry_run: bool = False
    full: bool = False
    since: datetime | None = None  # backfill start for a first (or --full) sync
    events_page_size: int = DEFAULT_EVENTS_PAGE  # the first page of each stream
    events_page_max: int = 49_999  # pages grow up to this while PostHog answers fast (MAX_EVENTS_PAGE)
    persons_page_size: int = DEFAULT_PERSONS_PAGE
    sample_size: int = 5
    count_totals: bool = False  # one count query per stream, for progress bars
    check_definitions: bool = True
    now: datetime | None = None


@dataclass
class StreamProgress:
    """One stream's progress, in the report's terms: ``handled`` (what the stream accounted for so
    far) ends at the report's ``events_read`` / ``contacts_read`` when the stream completes, and
    ``total`` is the engine's count of that before reading (None: not counted, or the count failed).
    Events: ``sent`` (to send in a dry run), ``skipped`` (no customer id: events_skipped_no_customer),
    ``unsendable`` (no contact id, invalid, rejected), ``dropped`` (duplicates dropped). Contacts:
    ``sent``, ``unchanged``, ``skipped`` (the contacts_skipped_* and rejected ones)."""

    name: str  # "events" or "contacts"
    total: int | None = None
    read: int = 0  # rows read from PostHog (re-reads of the overlap included)
    sent: int = 0
    skipped: int = 0
    unsendable: int = 0
    dropped: int = 0
    unchanged: int = 0
    done: bool = False
    failed: bool = False  # ended by an error
    stopped: bool = False  # ended by Ctrl-C or SIGTERM before its end

    @property
    def handled(self) -> int:
        return self.sent + self.skipped + self.unsendable + self.dropped + self.unchanged


ProgressFn = Callable[[StreamProgress], None]


@dataclass
class Report:
    status: str = "ok"  # ok, failed, interrupted
    mode: str = "incremental"  # incremental, full, first
    dry_run: bool = False
    events_sent: int = 0
    events_skipped_no_customer: int = 0
    events_skipped_no_contact: int = 0
    events_skipped_invalid: int = 0
    events_rejected: int = 0
    events_duplicates_dropped: int = 0
    events_possibly_doubled: int = 0
    # what the sync accounted for: rows read (re-reads of the overlap left out) plus the events of Persons
    # without a customer id, which are counted by a query instead of read; a completed run has
    # events_read == events_sent (events_to_send in a dry run) + events_skipped_* + events_duplicates_dropped
    # + events_rejected, and contacts_read == contacts_sent (to_send) + contacts_unchanged + contacts_skipped_*
    # + contacts_rejected. With persons.filter_events, the events of Persons outside the filters are not
    # read (no query asks for them) and are in none of these figures (6c)
    events_read: int = 0
    contacts_read: int = 0
    events_backfilled_for_new_persons: int = 0  # (also in events_sent)
    persons_became_attachable: int = 0
    groups_became_attachable: int = 0  # group-property mode: groups that got the property (6d)
    distinct_ids_merged: int = 0  # skipped distinct ids PostHog merged into another Person (6e)
    query_windows_narrowed: int = 0  # events queries PostHog found too slow, read in shorter time windows
    resent_after_crash: int = 0
    contacts_sent: int = 0
    contacts_unchanged: int = 0
    contacts_skipped_no_customer: int = 0
    contacts_skipped_no_contact_id: int = 0
    contacts_skipped_invalid: int = 0
    contacts_skipped_duplicate_id: int = 0  # Persons sharing a contact id with a more recently created one
    contacts_rejected: int = 0
    contacts_no_longer_matching: int | None = None
    customers_referenced: int = 0
    posthog_requests: int = 0
    customerscore_requests: int = 0
    retries: int = 0
    throttled: int = 0
    duration_s: float = 0.0
    events_to_send: int = 0  # dry run: what a real run would send
    contacts_to_send: int = 0
    cursor: dict[str, Any] | None = None
    backfill_from: str | None = None
    previous_sync_at: str | None = None  # when the last run that completed before this one finished
    warnings: list[str] = field(default_factory=list)
    sample: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    error: str | None = None
    error_hint: str | None = None
    exit_code: int = 0
    run_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["duration_s"] = round(self.duration_s, 3)
        if not self.dry_run:
            d.pop("events_to_send")
            d.pop("contacts_to_send")
            d.pop("sample")
        return d


def _merged_id(raw: Any) -> str | None:
    """A distinct id named by a merge event's property (raw JSON text): a string as it is, a number
    as written (PostHog's ingestion turns it into text); nothing else names one."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        v = json.loads(raw)
    except ValueError:
        return None
    if isinstance(v, str):
        return v or None
    return raw if isinstance(v, int | float) and not isinstance(v, bool) else None


# --- rows ------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Contact:
    contact_id: str
    customer_id: str
    fp: str
    payload: bytes


class _Stop(Exception):
    """Internal: the run was asked to stop between batches."""


# --- the engine ------------------------------------------------------------------------------
class SyncEngine:
    def __init__(
        self,
        cfg: Config,
        posthog: PostHogReader,
        customerscore: CustomerscoreSender | None,
        state: SyncState,
        *,
        options: SyncOptions | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.ph = posthog
        self.cs = customerscore
        self.state = state
        self.opt = options or SyncOptions()
        self._progress_fn = progress
        self.report = Report(dry_run=self.opt.dry_run)
        self.now = self.opt.now or utcnow()
        self.overlap = timedelta(minutes=cfg.sync.overlap_minutes)
        self.lateness = timedelta(days=cfg.sync.max_lateness_days)
        # where customer ids come from: a Person property (customer_prop), or a group (group mode)
        self.customer = queries.CustomerSource.of(cfg.identification)
        self.customer_prop = cfg.identification.person_property
        self.attributes = [(a.codename, a.property) for a in cfg.persons.attributes]
        self._customer_is_key = not self.customer.raw
        cid = cfg.persons.contact_id
        self.contact_prop: str | None = None if cid == PERSON_ID else cid
        # persons.filter_events: only the events of Persons matching the saved filters are read (every
        # events query and count states them); else the filters choose the contacts only
        self.filter_events = bool(getattr(cfg.persons, "filter_events", False))
        self.person_filters: tuple[Any, ...] = (
            tuple(queries.user_filters(cfg.all_filters(), self.customer_prop)) if self.filter_events else ())
        self.stop = threading.Event()
        self.run_id: int | None = None
        self._inflight_before: set[str] = set()
        # a dry run of --full reads the state as if it were empty; a real one empties it (_prepare) and
        # then reads it like any run: the uuids it delivered are what drops a copy PostHog holds twice
        self._ignore_state = self.opt.full and self.opt.dry_run
        self._progress = {"events": StreamProgress("events"), "contacts": StreamProgress("contacts")}
        self._plock = threading.Lock()
        self._customers: set[str] = set()
        self._reject_notes: list[str] = []
        self._ignore_fingerprints = False
        self._streams: list[Stream] = []
        self._contacts_done = threading.Event()
        self._persons_init = True  # this run's Persons scan fills persons_seen without backfilling
        self._dry_new_persons: list[str] = []
        self._resume_start: dict[str, tuple[str, str]] = {}
        self._contact_losers: set[str] = set()
        self._skip_mark: str | None = None
        self._start_cursor: tuple[str, str] | None = None  # the main cursor before this run
        self.error: BaseException | None = None
        if self.opt.dry_run:
            self.report.sample = {"events": [], "contacts": []}

    # --- public ------------------------------------------------------------------------------
    def run(self) -> Report:
        t0 = time.monotonic()
        rep = self.report
        errors: list[BaseException] = []
        first: BaseException | None = None
        try:
            self._prepare()
            done = {"events": threading.Event(), "contacts": self._contacts_done}
            workers = [
                threading.Thread(target=self._guard, args=(self._events, "events", errors, done["events"]),
                                 name="sync-events", daemon=True),
                threading.Thread(target=self._guard, args=(self._contacts, "contacts", errors, done["contacts"]),
                                 name="sync-contacts", daemon=True),
            ]
            for w in workers:
                w.start()
            # Wait with our own events and short sleeps: a KeyboardInterrupt landing inside
            # Thread.join() can leave the thread looking finished while it is not.
            try:
                while not all(e.is_set() for e in done.values()):
                    time.sleep(0.05)
            except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (cs_posthog.interrupts)
                self.stop.set()
                deadline = time.monotonic() + 120  # let each finish (and checkpoint) its current batch
                while not all(e.is_set() for e in done.values()) and time.monotonic() < deadline:
                    time.sleep(0.05)
                errors.append(error_for(stop))
        except KeyboardInterrupt as stop:
            self.stop.set()
            errors.append(error_for(stop))
        except CsPosthogError as exc:
            errors.append(exc)
        finally:
            rep.duration_s = time.monotonic() - t0
            self._collect_stats()
            if self._reject_notes:
                rep.warnings.append(
                    f"Customerscore rejected {count(rep.events_rejected, 'event')} and "
                    f"{count(rep.contacts_rejected, 'contact')} as invalid; they were skipped "
                    f"(first reason: {self._reject_notes[0]})"
                )
            first = next((e for e in errors if not isinstance(e, _Stop)), None)
            if isinstance(first, Interrupted):
                rep.status = "interrupted"
            elif first is not None:
                rep.status = "failed"
            if first is not None:
                rep.error = getattr(first, "message", None) or str(first) or type(first).__name__
                rep.error_hint = getattr(first, "hint", None)
                rep.exit_code = int(getattr(first, "exit_code", 1))
            self._finish_run()
        self.error = first
        return rep

    # --- preparation -------------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg, st, rep = self.cfg, self.state, self.report
        if self.opt.full:
            rep.mode = "full"
        main = st.stream(MAIN_STREAM)
        if self.opt.since is not None and not self.opt.full and main is not None and main.cursor is not None:
            raise UsageError(
                "--since applies to the first sync only: events are already synced from "
                f"{main.floor[:10]} (cursor at {main.cursor.created_at[:19].replace('T', ' ')} UTC)",
                hint="Use `cs-posthog sync --full --since DATE` to send everything again from DATE.",
            )
        if not self.opt.full and (self._ignore_state or main is None or main.cursor is None):
            rep.mode = "first"
        self._skip_mark = st.time_meta("skip_count_upto")  # (read now: a damaged state fails before any send)
        rep.previous_sync_at = st.last_completed_at()
        # PostHog answers for the project first: a mistyped id fails here, before anything is reset (11)
        ident = self._project_identity()
        old_ident = st.get_meta("events_project")
        if old_ident is None:  # a state from before project identities: it named the host and id as typed
            legacy = st.get_meta("events_settings")
            same_project = legacy is None or legacy == legacy_events_settings_hash(cfg)
        else:
            same_project = old_ident == ident
        customer_rule = json.dumps(cfg.identification.model_dump(mode="json", exclude={"group_type"}), sort_keys=True)
        stored_rule = st.get_meta(CUSTOMER_KEY)
        same_customer = stored_rule is None or stored_rule == customer_rule
        c_hash = contacts_settings_hash(cfg, ident)
        stored = st.get_meta("contacts_settings")
        same_contacts = stored is None or stored == c_hash or (
            old_ident is None and same_project and stored == contacts_settings_hash(cfg))
        if not self.opt.dry_run:
            if self.opt.full:
                st.reset()
                self._skip_mark = None
            # another PostHog project: old cursors mean nothing
            if not same_project and st.streams():
                rep.warnings.append("the PostHog project changed: events start over")
                st.reset()
                self._skip_mark = None
            st.set_meta("events_project", ident)
            if not same_contacts:
                st.clear_fingerprints()  # invariant 9
            if not same_customer:  # another rule: its attachable Persons are not new ones (6a)
                st.reset_persons()
            st.set_meta(CUSTOMER_KEY, customer_rule)
            st.set_meta("contacts_settings", c_hash)
            self.run_id = st.start_run(rep.mode)
            rep.run_id = self.run_id
            self._inflight_before = st.inflight()
        elif not self.opt.full and not (same_contacts and same_project):
            self._ignore_fingerprints = True
            if not same_project:
                self._ignore_state = True  # a dry run for another project: as if nothing was synced yet
        self._streams = self._plan_streams()
        main = self._streams[-1]
        self._start_cursor = None if main.cursor is None else (main.cursor.created_at, main.cursor.uuid)
        self._persons_init = (self._ignore_state or main.cursor is None or not st.persons_ready()
                              or not same_customer)
        if main.cursor is None:
            if rep.mode != "full":
                rep.mode = "first"  # (also after a change of project reset the cursors above)
            rep.backfill_from = main.floor
        if self.opt.check_definitions:
            self._check_definitions()

    def _project_identity(self) -> str:
        """``project_identity`` from PostHog's answer for the project (its uuid); without the
        project:read scope, the configured host (normalised) and id."""
        try:
            uuid = self.ph.project().uuid
        except (PermissionDeniedError, MissingScopesError):
            uuid = None
        return project_identity(self.cfg, uuid)

    def _plan_streams(self) -> list[Stream]:
        """The event cursors to run this time: catch-up streams for newly selected events (from the
        backfill start up to the main cursor), then the main stream."""
        selected = list(self.cfg.events.selected)
        floor = fmt_ts(self.opt.since or (self.now - timedelta(days=self.cfg.sync.backfill_days)))
        existing = {} if self._ignore_state else {
            s.name: s for s in self.state.streams() if not s.name.startswith(PERSONS_STREAM_PREFIX)}
        main = existing.pop(MAIN_STREAM, None)
        if main is None or main.cursor is None:
            return [self._start_main(main, existing, selected, floor)]
        # events no longer selected: where their stream stopped, so that selecting one again resumes
        # there instead of resending its history (issue 11, 3)
        dropped: dict[str, list[str]] = {} if self._ignore_state else self.state.json_meta(DROPPED_KEY, {})
        plan = plan_event_streams(selected, main, existing, dropped, floor)
        self._resume_start.update(plan.resume_start)
        if not self.opt.dry_run:
            for name in plan.deleted:
                self.state.delete_stream(name)
            self._save_plan(plan, main)
        return [*plan.streams, main]

    def _start_main(self, main: Stream | None, existing: dict[str, Stream], selected: list[str],
                    floor: str) -> Stream:
        """No main cursor yet (a first sync, or one that never got a page through): the main
        stream alone, from the backfill start, and no other stream."""
        main = Stream(MAIN_STREAM, selected, floor if (main is None or self.opt.since) else main.floor, None, "")
        if not self.opt.dry_run:
            for name in existing:
                self.state.delete_stream(name)
            self.state.save_stream(main)
        return main

    def _save_plan(self, plan: StreamPlan, main: Stream) -> None:
        starts = self.state.json_meta(RESUME_KEY, {})
        starts.update({k: list(v) for k, v in self._resume_start.items()})
        live = {s.name for s in plan.streams}
        self.state.set_meta(RESUME_KEY, json.dumps({k: v for k, v in starts.items() if k in live}))
        self.state.set_meta(DROPPED_KEY, json.dumps(plan.dropped))
        for s in plan.streams:
            self.state.save_stream(s)
        self.state.save_stream(main)
        self._resume_start = {k: (v[0], v[1]) for k, v in starts.items() if k in live}

    def _check_definitions(self) -> None:
        """Warn about selected events PostHog no longer knows (renamed, or never sent again)."""
        try:
            known = {d.name for d in self.ph.event_definitions()}
        except (AuthError, UnavailableError, ThrottledError, UnexpectedAnswerError):
            raise  # PostHog is down or refuses the key: the sync cannot go on either
        except CsPosthogError as exc:  # e.g. the key lacks event_definition:read: only this check is lost
            self.report.warnings.append(f"could not check the selected events against PostHog: {exc.message}")
            return
        missing = [e for e in self.cfg.events.selected if e not in known]
        if missing:
            self.report.warnings.append(
                "PostHog has no event definition for "
                + ", ".join(repr(m) for m in missing[:10])
                + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                + ": nothing will be synced for them (renamed or no longer sent?); see `cs-posthog edit events`"
            )

    # --- threads -----------------------------------------------------------------------------
    def _guard(self, fn: Callable[[], None], name: str, errors: list[BaseException], done: threading.Event) -> None:
        try:
            fn()
        except _Stop:
            with self._plock:
                self._progress[name].stopped = True
        except BaseException as exc:  # reported by run(); the other stream goes on
            log.debug("%s stream failed", name, exc_info=True)
            errors.append(exc)
            with self._plock:
                self._progress[name].failed = True
            self._emit(name)
        finally:
            with self._plock:
                self._progress[name].done = True
            self._emit(name)
            done.set()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stop()

    def _emit(self, name: str, **incr: int) -> None:
        with self._plock:
            p = self._progress[name]
            for k, v in incr.items():
                setattr(p, k, getattr(p, k) + v)
            if self._progress_fn is None:  # (--json, cron): no snapshot to hand over
                return
            snap = replace(p)
        if self._progress_fn is not None:
            try:
                self._progress_fn(snap)
            except Exception:  # a display problem must never break a sync
                log.debug("progress callback failed", exc_info=True)

    def _set_total(self, name: str, total: int | None) -> None:
        with self._plock:
            self._progress[name].total = total
        self._emit(name)

    def _sender(self) -> CustomerscoreSender:
        """The Customerscore client: a dry run has none, and sends nothing."""
        if self.cs is None:
            raise RuntimeError("a dry run sends nothing to Customerscore")
        return self.cs

    # --- PostHog reads -----------------------------------------------------------------------
    def _query(self, sql: str, values: dict[str, Any], name: str,
               modifiers: dict[str, Any] | None = None) -> QueryResult:
        if modifiers:
            return self.ph.query(sql, values, name=name, modifiers=modifiers)
        return self.ph.query(sql, values, name=name)

    def _paged(self, build: Callable[[Any], tuple[str, dict[str, Any]]], key_of: Callable[[list[Any]], Any],
               page_size: int, name: str, modifiers: dict[str, Any] | None = None,
               **paging: Any) -> Iterator[list[list[Any]]]:
        """Keyset pages through the PostHog client (LIMIT page+1, smaller pages when PostHog stops a
        query at its time limit: invariants 3 and 4), stopping between pages when asked to."""
        kw: dict[str, Any] = {"modifiers": modifiers} if modifiers else {}
        kw.update(paging)
        for rows in self.ph.iter_pages(build, key_of, page_size, name=name, **kw):
            yield rows
            self._check_stop()

    # --- events ------------------------------------------------------------------------------
    def _events(self) -> None:
        rep = self.report
        main = self._streams[-1]
        base_events = list(main.events)  # before catch-up streams join it
        if self.opt.count_totals:
            self._set_total("events", self._count_events_to_read())
        for s in self._streams:
            self._check_stop()
            if not s.events:
                continue
            upto: tuple[str, str] | None = None  # set for every stream but the main one
            if not s.is_main:
                if main.cursor is None:
                    continue
                upto = (main.cursor.created_at, main.cursor.uuid)
            start = s.cursor
            completed = self._event_stream(s, upto)
            if completed and upto is not None:
                # counted once, over its whole range, when it completes
                n = self._count_without_customer(
                    s.events, s.floor, upto[0], after=self._resume_start.get(s.name, (None,))[0])
                rep.events_skipped_no_customer += n
                rep.events_read += n
                if n:
                    self._emit("events", skipped=n)
                self._note_skipped_ids(s.events, s.floor, after=self._resume_start.get(s.name, (None,))[0],
                                       upto=upto[0])
                if not self.opt.dry_run:
                    merged = self.state.merge_stream(s, main)
                    main.events = merged.events
                else:
                    main.events = main.events + s.events
            if s.is_main and completed:
                self._count_main_skips(start)
                self._note_main_skipped_ids(start)
        self._merged_devices()
        self._backfill_new_persons(base_events)

    # --- skipped distinct ids merged into attachable Persons (invariant 6e) --------------------
    def _note_main_skipped_ids(self, start: Cursor | None) -> None:
        """Person mode: keep the distinct ids of the main stream's skipped events (no customer id),
        from a watermark of their own, as ``_count_main_skips`` counts them."""
        if self.customer_prop is None or self.opt.dry_run:
            return
        mark = self.state.time_meta(SKIPPED_IDS_KEY)
        main = self._streams[-1]
        upto = fmt_ts(utcnow())
        if self._note_skipped_ids(main.events, main.floor, after=mark or (start.created_at if start else None),
                                  upto=upto):
            self.state.set_meta(SKIPPED_IDS_KEY, upto)

    def _note_skipped_ids(self, events: list[str], floor: str, *, after: str | None, upto: str) -> bool:
        """Person mode: record in ``skipped_ids`` the distinct ids of the selected events ingested in
        (``after``, ``upto``] (from ``floor`` when ``after`` is None) that lack a customer id, so that
        a later merge into an attachable Person brings their events (6e). False when PostHog could not
        answer (nothing lost but that chance: the events stay skipped, as before 6e)."""
        if self.customer_prop is None or self.opt.dry_run or self._ignore_state:
            return False
        floor_dt = parse_ts(floor)
        rows: list[tuple[str, str, str]] = []

        def one(lo: datetime, lo_open: bool, hi: datetime | None, hi_open: bool) -> None:
            assert hi is not None  # (the range ends at upto)
            ts_from = fmt_ts(max(floor_dt, lo - self.overlap - self.lateness))
            before = (fmt_ts(hi), fmt_ts(hi + FUTURE_SLACK)) if hi_open else None
            w = queries.EventsWindow(tuple(events), ts_from, created_from=None if lo_open else fmt_ts(lo),
                                     before=before)

            def build(key: tuple[str, str] | None) -> tuple[str, dict[str, Any]]:
                return queries.skipped_ids_page(w, customer=self.customer, created_to=None if hi_open else fmt_ts(hi),
                                                created_after=fmt_ts(lo) if lo_open else None, after=key)

            size = self.opt.persons_page_size
            for page in self._paged(build, lambda r: (str(r[0]), str(r[1])), size, "cs-posthog sync skipped ids",
                                    queries.EVENTS_MODIFIERS, min_page_size=size):
                rows.extend((str(d), str(pid), norm_ts(last)) for d, pid, last in page if isinstance(d, str) and d)

        try:
            self._in_halves(one, parse_ts(after or floor), after is not None, parse_ts(upto))
        except CsPosthogError as exc:
            log.info("could not note the distinct ids of skipped events: %s", exc)
            return False
        if rows:
            keep_from = fmt_ts(self.now - timedelta(days=self.cfg.sync.backfill_days))
            self.state.record_skipped_ids(rows, keep_from=keep_from)
        return True

    def _merged_devices(self) -> None:
        """Person mode: the merge events (``$identify``, ``$create_alias``, ``$merge_dangerously``)
        ingested since the last run name distinct ids that PostHog merged into another Person; those
        whose selected events were skipped (no customer id then) have those events, which now belong
        to the surviving Person, sent by the backfill of ``_backfill_new_persons`` (``device_owner``
        ids in ``persons_seen``). Nothing is sent twice: only skipped ids are taken, once."""
        if self.customer_prop is None or self._ignore_state:
            return
        mark = self.state.time_meta(MERGES_KEY)
        upto = fmt_ts(utcnow())
        if not self.state.has_skipped_ids():
            if not self.opt.dry_run:
                self.state.set_meta(MERGES_KEY, upto)
            return
        # a first run: the merges before it were done when it read the events; later, the overlap
        # reads late-inserted merge events again (looking at one twice finds nothing more)
        after = fmt_ts(parse_ts(mark) - self.overlap) if mark else fmt_ts(self.now)
        ts_from = fmt_ts(parse_ts(after) - self.lateness)

        def build(key: tuple[str, str] | None) -> tuple[str, dict[str, Any]]:
            return queries.merge_events_page(timestamp_from=ts_from, created_after=after, created_to=upto, after=key)

        found: set[str] = set()
        try:
            for page in self._paged(build, lambda r: (norm_ts(r[0]), str(r[1])), self.opt.persons_page_size,
                                    "cs-posthog sync merges"):
                # the merged-away side: the event's own distinct id is the Person that stays
                named = {x for row in page for x in map(_merged_id, row[3:]) if x}
                found.update(self.state.skipped_ids_merged(sorted(named)))
        except CsPosthogError as exc:  # the next run looks at them again
            log.info("could not read PostHog's merge events: %s", exc)
            return
        new = sorted(found)
        self.report.distinct_ids_merged += len(new)
        owners = [queries.device_owner(d) for d in new]
        if self.opt.dry_run:
            self._dry_new_persons.extend(owners)
            return
        self.state.mark_merged(new, owners)
        self.state.set_meta(MERGES_KEY, upto)

    # --- Persons who became attachable (invariant 6a) ------------------------------------------
    def _backfill_new_persons(self, base_events: list[str]) -> None:
        """Send the backfill-window events of Persons who became attachable since the last complete
        Persons scan (found by the contacts stream, kept in ``persons_seen`` as pending), up to the
        main cursor: later events come through the main stream. One stream per group of Persons,
        checkpointed like any other, so a crash resumes it; events already delivered are dropped
        (skipped ones are not: they were never sent)."""
        main = self._streams[-1]
        if main.cursor is None or not base_events:
            return
        while not self._contacts_done.is_set():  # the Persons scan decides who is new
            self._check_stop()
            time.sleep(0.05)
        floor = fmt_ts(self.now - timedelta(days=self.cfg.sync.backfill_days))
        selected = set(self.cfg.events.selected)
        if self.opt.dry_run:  # grouped as a real run would (pending_group): by where each one starts
            left = self.state.left_points(self._dry_new_persons)
            groups: dict[tuple[str, str] | None, list[str]] = {}
            for pid in self._dry_new_persons:
                groups.setdefault(left.get(pid), []).append(pid)
            for after, ids in groups.items():
                for i in range(0, len(ids), IN_LIST):
                    self._check_stop()
                    part = ids[i : i + IN_LIST]
                    s = Stream(PERSONS_STREAM_PREFIX + "dry", list(base_events), floor,
                               None if after is None else Cursor(*after), "")
                    if after is not None:
                        self._resume_start[s.name] = after
                    else:
                        self._resume_start.pop(s.name, None)
                    self._event_stream(s, (main.cursor.created_at, main.cursor.uuid), persons=tuple(part))
            return

        while True:
            self._check_stop()
            cur = self.state.current_backfill()
            if cur is None:
                ids, after = self.state.pending_group(IN_LIST)
                if not ids:
                    return
                name = PERSONS_STREAM_PREFIX + hashlib.sha256("\0".join(ids).encode()).hexdigest()[:12]
                # Persons back inside the filters: from where their events stopped being sent
                s = Stream(name, list(base_events), floor, None if after is None else Cursor(*after), "")
                upto = (main.cursor.created_at, main.cursor.uuid)
                self.state.start_backfill(s, ids, upto, after)
            else:
                s, ids, upto = cur
                s.events = [e for e in s.events if e in selected]
                after = self.state.backfill_after()
            if after is not None:
                self._resume_start[s.name] = after  # strictly after it, no overlap (as for a re-selected event)
            if s.events:
                self._event_stream(s, upto, persons=tuple(ids))
            self.state.finish_backfill(s, ids)

    def _window_start(self, s: Stream) -> tuple[str, str]:
        """(created_from, timestamp_from) of a stream's first page this run (2, 3)."""
        floor = parse_ts(s.floor)
        if s.cursor is None:
            return fmt_ts(floor), fmt_ts(floor)
        lo = parse_ts(s.cursor.created_at) - self.overlap
        return fmt_ts(lo), fmt_ts(max(floor, lo - self.lateness))

    def _event_pages(self, s: Stream, upto: tuple[str, str] | None,
                     persons: tuple[str, ...] = ()) -> Iterator[list[EventRow]]:
        """The stream's pages in keyset order. When PostHog stops a query at its time limit even after
        the page shrank (``QueryTooSlowError`` from ``iter_pages``), the *time window* shrinks: what a
        query scans is the events in its ``timestamp`` range, whatever its LIMIT. Pages are then read
        window by window (``created_at < end``, ``timestamp < end + FUTURE_SLACK``), the window halved
        on each too-slow answer and doubled after each window read, until it reaches the present."""
        created_from, ts_from0 = self._window_start(s)
        floor = parse_ts(s.floor)
        events = tuple(s.events)
        start = parse_ts(created_from)
        pos = start  # where the current window starts (created_at): everything before it is read
        key: tuple[Any, str] | None = None  # the last row handed out
        if s.cursor is not None and self._resume_start.get(s.name) == (s.cursor.created_at, s.cursor.uuid):
            # an event selected again: everything up to where it stopped was delivered long ago (and
            # those uuids pruned), so no overlap: strictly after that point
            key = (s.cursor.created_at, s.cursor.uuid)
            start = pos = parse_ts(s.cursor.created_at)
        span: timedelta | None = None  # the window's length; None: up to the present, no upper bound

        def key_of(row: list[Any]) -> tuple[Any, str]:
            return (row[queries.EV_CREATED], str(row[queries.EV_UUID]))

        page_size = self.opt.events_page_size
        while True:
            end = None if span is None or pos + span >= self.now else pos + span

            # (bound now: build(None) only starts this window's paging, before a row of it is handed out)
            def build(after: tuple[Any, str] | None, end: datetime | None = end, pos: datetime = pos,
                      start_key: tuple[Any, str] | None = key) -> tuple[str, dict[str, Any]]:
                after = after if after is not None else start_key
                before = None if end is None else (fmt_ts(end), fmt_ts(end + FUTURE_SLACK))
                if after is not None and parse_ts(after[0]) >= pos:
                    ts_from = fmt_ts(max(floor, parse_ts(after[0]) - self.overlap - self.lateness))
                    w = queries.EventsWindow(events, ts_from, after=(norm_ts(after[0]), after[1]), upto=upto,
                                       persons=persons, before=before, person_filters=self.person_filters)
                elif pos > start:  # a later window: nothing before pos is left to read
                    ts_from = fmt_ts(max(floor, pos - self.overlap - self.lateness))
                    w = queries.EventsWindow(events, ts_from, created_from=fmt_ts(pos), upto=upto, persons=persons,
                                       before=before, person_filters=self.person_filters)
                else:
                    w = queries.EventsWindow(events, ts_from0, created_from=created_from, upto=upto, persons=persons,
                                       before=before, person_filters=self.person_filters)
                return queries.events_page(w, customer=self.customer, contact_property=self.contact_prop)

            try:
                for rows in self._paged(build, key_of, page_size, f"cs-posthog sync events ({s.name})",
                                        queries.EVENTS_MODIFIERS, min_page_size=page_size,
                                        max_page_size=max(page_size, min(self.opt.events_page_max, MAX_EVENTS_PAGE))):
                    key = key_of(rows[-1])
                    page = [self._map_event(r) for r in rows]
                    rows.clear()  # the raw rows go now, not when the next page replaces them (12)
                    yield page
            except QueryTooSlowError as exc:
                if key is not None and parse_ts(key[0]) > pos:
                    pos = parse_ts(key[0])  # (the keyset still starts after the last row handed out)
                span = (max(self.now - pos, MIN_WINDOW) if span is None else span) / 2
                if span < MIN_WINDOW:
                    raise
                log.info("PostHog too slow for %s: reading %s of ingestion time per query (%s)", s.name, span,
                         exc.message)
                self.report.query_windows_narrowed += 1
                continue
            if end is None or span is None:  # (span is set when end is)
                return
            pos, span = end, span * 2

    def _map_event(self, row: list[Any]) -> EventRow:
        """One event row as a tracker payload (or the reason it is skipped). Hot: once per event;
        plain strings without escapes (nearly every value) skip the general conversions."""
        uuid = row[queries.EV_UUID]
        if type(uuid) is not str:
            uuid = str(uuid)
        created_raw = row[queries.EV_CREATED]
        created = norm_ts(created_raw)
        # ids are JSONExtractRaw's text: a plain JSON string (nearly every id) is unquoted here,
        # anything else goes through raw_id (numbers kept as written, booleans and null refused)
        v = row[queries.EV_CUSTOMER]
        if self._customer_is_key:  # a group key: plain text
            customer = (v.strip() or None) if type(v) is str else text_or_none(v)
        else:
            customer = (v[1:-1].strip() or None) if (type(v) is str and len(v) > 1 and v[0] == '"' and v[-1] == '"'
                                                     and "\\" not in v) else raw_id(v)
        if customer is None:
            return EventRow(uuid, created, created_raw, None, "no_customer", None)
        if self.contact_prop is None:
            v = row[queries.EV_PERSON]
            contact = (v.strip() or None) if type(v) is str else text_or_none(v)
        else:
            v = row[queries.EV_CONTACT]
            contact = (v[1:-1].strip() or None) if (type(v) is str and len(v) > 1 and v[0] == '"' and v[-1] == '"'
                                                    and "\\" not in v) else raw_id(v)
        if contact is None:
            return EventRow(uuid, created, created_raw, None, "no_contact", customer)
        name = row[queries.EV_EVENT]
        if name and type(name) is not str:
            name = str(name)
        if len(customer) > FIELD_MAX or len(contact) > FIELD_MAX or not name or len(name) > FIELD_MAX:
            return EventRow(uuid, created, created_raw, None, "invalid", customer)
        v = row[queries.EV_EMAIL]
        email = (v[1:-1].strip() or None) if (type(v) is str and len(v) > 1 and v[0] == '"' and v[-1] == '"'
                                              and "\\" not in v) else text_or_none(raw_value(v))
        try:
            payload = event_json(
                name=name, timestamp_ms=ts_ms(row[queries.EV_TIMESTAMP]), customer=customer, contact=contact,
                email=email,
            )
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it, Customerscore could never take it
            return EventRow(uuid, created, created_raw, None, "invalid", customer)
        return EventRow(uuid, created, created_raw, payload, None, customer)

    def _event_stream(self, s: Stream, upto: tuple[str, str] | None, persons: tuple[str, ...] = ()) -> bool:
        """Read and send one stream to its end. True when it reached the end."""
        start_created = s.cursor.created_at if s.cursor else ""
        prev_page_uuids: set[str] = set()
        with Prefetcher(self._event_pages(s, upto, persons), name=f"read-{s.name}") as pages:
            for page in pages:
                self._check_stop()
                self._emit("events", read=len(page))
                prev_page_uuids = self._send_event_page(s, page, start_created, prev_page_uuids)
                page.clear()  # sent: free it while the next one is awaited (12)
        return True

    def _send_event_page(
        self, s: Stream, page: list[EventRow], start_created: str, prev_page_uuids: set[str]
    ) -> set[str]:
        """Send one page in tracker batches, checkpointing after each. Rows skipped for lack of a
        customer or contact id are recorded like delivered ones (handled), so that PostHog's
        duplicate rows and overlap re-reads count them once."""
        backfill = s.name.startswith(PERSONS_STREAM_PREFIX)
        # a new Person's events were skipped before (no id then): only deliveries count as sent
        already = set() if self._ignore_state else self.state.delivered_among(
            [r.uuid for r in page], include_skipped=not backfill)
        if self.opt.dry_run:
            already |= prev_page_uuids
        t = triage_page(page, already, start_created=start_created, backfill=backfill)
        self._count_triage(page, t)
        if self.opt.dry_run:
            self._count_dry_page(page, t, backfill)
        else:
            self._send_batches(s, page, t, backfill)
        return t.seen

    def _count_triage(self, page: list[EventRow], t: PageTriage) -> None:
        rep = self.report
        rep.events_skipped_no_customer += t.no_customer
        rep.events_skipped_no_contact += t.no_contact
        rep.events_skipped_invalid += t.invalid
        rep.events_duplicates_dropped += t.dropped
        rep.events_read += len(page) - t.rereads  # (re-reads of what earlier runs handled are not counted)
        if t.no_customer or t.unsendable or t.dropped:
            self._emit("events", skipped=t.no_customer, unsendable=t.unsendable, dropped=t.dropped)

    def _count_dry_page(self, page: list[EventRow], t: PageTriage, backfill: bool) -> None:
        rep = self.report
        rep.events_to_send += len(t.sendable)
        if backfill:
            rep.events_backfilled_for_new_persons += len(t.sendable)
        room = max(0, self.opt.sample_size - len(rep.sample["events"]))
        if room:
            rep.sample["events"].extend(json.loads(p) for i in t.sendable[:room] if (p := page[i].payload) is not None)
        self._emit("events", sent=len(t.sendable))

    def _send_batches(self, s: Stream, page: list[EventRow], t: PageTriage, backfill: bool) -> None:
        # (nothing is pruned while a backfill runs: its own deliveries are far behind the cursors)
        # delivered uuids are kept as long as the lateness contract: PostHog may hold one uuid in two
        # rows ingested far apart (an SDK retrying a batch much later), not just within the overlap (2)
        horizon = None if backfill else self.state.prune_horizon(max(self.overlap, self.lateness))
        plan = plan_batches(page, t)
        marked: list[tuple[str, str]] = []  # this batch's in-flight marks, written by the last checkpoint
        for k, b in enumerate(plan):
            if self.stop.is_set():
                # marked by the previous checkpoint but never sent: not in flight after all
                self.state.unmark_inflight([u for u, _ in marked if u not in self._inflight_before])
                raise _Stop()
            rows = [page[i] for i in b.rows]
            items = marked or [(r.uuid, r.created) for r in rows]
            nxt = [(page[i].uuid, page[i].created) for i in plan[k + 1].rows] if k + 1 < len(plan) else []
            skips = [(page[j].uuid, page[j].created) for j in b.skipped]
            self._deliver_events(s, rows, items, page[b.cursor], skips, horizon, premarked=bool(marked), mark_next=nxt)
            marked = nxt
        if not plan:
            last = page[-1]
            skips = [(page[j].uuid, page[j].created) for j in skipped_rows(page, t)]
            self.state.checkpoint(s, Cursor(last.created, last.uuid), skipped=skips, prune_before=horizon)

    def _deliver_events(
        self,
        s: Stream,
        batch: list[EventRow],
        items: list[tuple[str, str]],
        cursor_row: EventRow,
        skips: list[tuple[str, str]],
        horizon: str | None,
        *,
        premarked: bool = False,
        mark_next: list[tuple[str, str]] | None = None,
    ) -> None:
        """POST one tracker batch and checkpoint it. ``items``: its (uuid, created) pairs; already
        marked in flight when ``premarked`` (by the previous batch's checkpoint), which is also where
        ``mark_next``, the next batch's marks, are written: one commit per batch."""
        rep = self.report
        if not premarked:
            self.state.mark_inflight(items)  # (5): a crash from here to the checkpoint resends this batch
        try:
            accepted, rejected, doubled = self._send_rejecting(
                batch, lambda rows: self._sender().track_encoded([r.payload for r in rows]), "events"
            )
        except ApiError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                # refused outright (a revoked key, say): Customerscore applied nothing, so nothing of this
                # batch is in flight and the next run must not call it "resent after a crash"
                self.state.unmark_inflight([u for u, _ in items if u not in self._inflight_before])
            raise
        if self._inflight_before:
            rep.resent_after_crash += sum(1 for u, _ in items if u in self._inflight_before)
        rep.events_possibly_doubled += doubled
        rep.events_sent += len(accepted)
        if s.name.startswith(PERSONS_STREAM_PREFIX):
            rep.events_backfilled_for_new_persons += len(accepted)
        rep.events_rejected += len(rejected)
        cursor = Cursor(cursor_row.created, cursor_row.uuid)
        if mark_next:
            self.state.checkpoint(s, cursor, items, skipped=skips, prune_before=horizon, mark_next=mark_next)
        else:
            self.state.checkpoint(s, cursor, items, skipped=skips, prune_before=horizon)
        self._emit("events", sent=len(accepted), unsendable=len(rejected))

    def _send_rejecting(self, rows: list[Any], post: Callable[[list[Any]], Any],
                        what: str) -> tuple[list[Any], list[Any], int]:
        """POST ``rows``; when Customerscore rejects the batch as invalid (400), split it to find the
        items it refuses, so that one bad item cannot block the sync forever. Items are only ever
        given up when others of the same batch were accepted: if everything is refused, the error
        is raised (it is about the request, not an item)."""

        def go(part: list[Any]) -> tuple[list[Any], list[Any], int, BadRequestError | None]:
            try:
                d = post(part)
            except BadRequestError as exc:
                if len(part) == 1:
                    return [], part, 0, exc
                mid = len(part) // 2
                a_ok, a_bad, a_dbl, a_exc = go(part[:mid])
                b_ok, b_bad, b_dbl, b_exc = go(part[mid:])
                return a_ok + b_ok, a_bad + b_bad, a_dbl + b_dbl, a_exc or b_exc
            return part, [], (len(part) if d.ambiguous else 0), None

        ok, bad, doubled, exc = go(rows)
        if bad and not ok:
            assert exc is not None
            raise exc
        if exc is not None:
            self._reject_notes.append(exc.message)
            log.warning("Customerscore rejected %d %s: %s", len(bad), what, exc.message)
        return ok, bad, doubled

    # --- event counts ------------------------------------------------------------------------
    def _count(self, sql: str, values: dict[str, Any], name: str, modifiers: dict[str, Any] | None = None) -> int:
        res = self._query(sql, values, name, modifiers)
        rows = list(res.results)
        return int(rows[0][0]) if rows and rows[0] else 0

    def _count_events(
        self, events: list[str], *, floor: str, lo: str, lo_open: bool = False, hi: str | None = None,
        without_customer: bool, upto: tuple[str, str] | None = None, name: str = "cs-posthog sync count skipped",
        rows: bool = False,
    ) -> int:
        """Distinct selected events (rows, with ``rows``) ingested from ``lo`` (after it when
        ``lo_open``) to ``hi`` (inclusive; None: no bound) that have (or lack) a customer id on their
        Person now. A count
        PostHog finds too slow is split in two halves of ingestion time, like the pages (3); a uuid
        PostHog holds twice, its copies in different halves, is then counted in each (the count is
        a figure for the report, nothing is sent by it)."""
        floor_dt = parse_ts(floor)

        def one(lo_dt: datetime, lo_open: bool, hi_dt: datetime | None, hi_open: bool) -> int:
            ts_from = fmt_ts(max(floor_dt, lo_dt - self.overlap - self.lateness))
            before = (fmt_ts(hi_dt), fmt_ts(hi_dt + FUTURE_SLACK)) if hi_open and hi_dt is not None else None
            w = queries.EventsWindow(tuple(events), ts_from, created_from=None if lo_open else fmt_ts(lo_dt), upto=upto,
                               before=before, person_filters=self.person_filters)
            sql, values = queries.events_count(
                w, customer=self.customer, without_customer=without_customer,
                created_to=fmt_ts(hi_dt) if hi_dt is not None and not hi_open else None,
                created_after=fmt_ts(lo_dt) if lo_open else None, rows=rows)
            return self._count(sql, values, name, queries.EVENTS_MODIFIERS)

        return sum(self._in_halves(one, parse_ts(lo), lo_open, parse_ts(hi) if hi is not None else None))

    def _in_halves(self, one: Callable[[datetime, bool, datetime | None, bool], _T], lo: datetime, lo_open: bool,
                   hi: datetime | None, hi_open: bool = False) -> list[_T]:
        """``one(lo, lo_open, hi, hi_open)`` over a range of ingestion time (``hi`` None: up to now),
        or, when PostHog finds that too slow, over its two halves, each halved again as needed, like
        the pages' windows (3): the results in range order. Too slow at 2 * ``MIN_WINDOW``: raised."""
        try:
            return [one(lo, lo_open, hi, hi_open)]
        except QueryTooSlowError:
            top = hi if hi is not None else max(self.now, lo)
            if top - lo < 2 * MIN_WINDOW:
                raise
            mid = lo + (top - lo) / 2
            return self._in_halves(one, lo, lo_open, mid, True) + self._in_halves(one, mid, False, hi, hi_open)

    def _count_without_customer(self, events: list[str], floor: str, created_to: str, *,
                                after: str | None = None) -> int:
        """Selected events whose Person has no customer id, from the floor (or after ``after``) to
        ``created_to`` (6)."""
        try:
            return self._count_events(events, floor=floor, lo=after or floor, lo_open=after is not None,
                                      hi=created_to, without_customer=True)
        except CsPosthogError as exc:
            log.info("could not count skipped events: %s", exc)
            return 0

    def _count_main_skips(self, start: Cursor | None) -> None:
        """Events of Persons without the customer property are not read at all (the query asks only
        for those with it); they are counted once per run over the range this run covered, from a
        watermark kept in the state so that nothing is counted twice."""
        main = self._streams[-1]
        mark = None if self._ignore_state else self._skip_mark
        upto = fmt_ts(utcnow())
        after = mark or (start.created_at if start else None)
        try:
            n = self._count_events(main.events, floor=main.floor, lo=after or main.floor, lo_open=after is not None,
                                   hi=upto, without_customer=True)
        except CsPosthogError as exc:
            log.info("could not count skipped events: %s", exc)
            return
        self.report.events_skipped_no_customer += n
        self.report.events_read += n
        if n:
            self._emit("events", skipped=n)
        if not self.opt.dry_run:
            self.state.set_meta("skip_count_upto", upto)

    def _count_events_to_read(self) -> int | None:
        """What the events streams will account for (``events_read``), counted before reading them,
        for the progress bar: for each stream, the rows with a customer id it reads from where it
        stands (a re-read of the overlap counts only for rows no run handled), and the events
        without one, counted (not read) over the range ``_events`` and ``_count_main_skips`` count
        when the stream completes. The events of Persons who become attachable during this run (their
        backfill) are not known yet; they come on top."""
        main = self._streams[-1]
        total = 0
        try:
            for s in self._streams:
                if not s.events:
                    continue
                upto = None
                if not s.is_main:
                    if main.cursor is None:
                        continue
                    upto = (main.cursor.created_at, main.cursor.uuid)
                lo, lo_open = (s.floor, False) if s.cursor is None else (s.cursor.created_at, True)
                total += self._count_events(s.events, floor=s.floor, lo=lo, lo_open=lo_open, without_customer=False,
                                            upto=upto, rows=True, name="cs-posthog sync count events")
                if s.is_main:  # (by then the other streams' events have joined it)
                    events = list(dict.fromkeys(e for x in self._streams if x.events for e in x.events))
                    mark = None if self._ignore_state else self._skip_mark
                    after = mark or (s.cursor.created_at if s.cursor else None)
                    hi = None
                else:
                    events = s.events
                    after = self._resume_start.get(s.name, (None,))[0]
                    hi = upto[0]  # type: ignore[index]
                total += self._count_events(events, floor=s.floor, lo=after or s.floor, lo_open=after is not None,
                                            hi=hi, without_customer=True, name="cs-posthog sync count events")
        except CsPosthogError as exc:
            log.info("could not count events: %s", exc)
            return None
        return total

    # --- contacts ----------------------------------------------------------------------------
    def _contacts(self) -> None:
        """Every Person who may hold a customer id, keyset on id (8): in Person mode the Persons with
        the customer property; in group mode those with selected events of a group of the chosen
        type in the backfill window, whose customer is the group of their most recent such event.
        Those matching the saved filters become contacts; every attachable one (customer and
        contact id) is checked against ``persons_seen``, where the Persons new since the last
        complete scan wait for their backfill (6a)."""
        rep = self.report
        filters = self.cfg.all_filters()
        # the last column says whether the Person matches the filters, when there are any besides the locked one
        extra = queries.user_filters(filters, self.customer_prop)
        first_attr = queries.P_CONTACT + 1 if self.contact_prop is not None else queries.P_CONTACT
        flag_col = first_attr + len(self.attributes) if extra else None
        if self.opt.count_totals:
            try:
                if self.customer_prop is None:
                    w = self._groups_window(tuple(extra))
                    sql, values = queries.person_groups_count(w, customer=self.customer)
                    total = self._count(sql, values, "cs-posthog sync count persons", queries.EVENTS_MODIFIERS)
                else:
                    sql, values = queries.persons_count(filters, self.customer_prop)
                    total = self._count(sql, values, "cs-posthog sync count persons")
                self._set_total("contacts", total)
            except CsPosthogError as exc:
                log.info("could not count persons: %s", exc)

        self._contact_losers = self._duplicate_contact_losers(filters)
        ignore_fps = self._ignore_state or self._ignore_fingerprints
        can_seen = not self._ignore_state and (not self.opt.dry_run or self.state.persons_ready())
        pages = self._person_pages(filters, extra)
        with Prefetcher(pages, name="read-persons") as it:
            for rows in it:
                self._check_stop()
                self._emit("contacts", read=len(rows))
                contacts, attachable, outside = self._map_contacts(rows, flag_col, first_attr)
                rows.clear()  # (12)
                if can_seen:
                    self._note_attachable(attachable)
                    if outside and not self.opt.dry_run:
                        # their events are not sent now: should they match again (or the filters stop
                        # choosing the events), they are new, and their backfill window is sent (6a)
                        self.state.forget_persons(outside, self._start_cursor)
                existing = {} if ignore_fps else self.state.fingerprints([c.contact_id for c in contacts])
                changed = [c for c in contacts if existing.get(c.contact_id) != c.fp]
                unchanged = [c.contact_id for c in contacts if existing.get(c.contact_id) == c.fp]
                rep.contacts_unchanged += len(unchanged)
                if unchanged:
                    self._emit("contacts", unchanged=len(unchanged))
                if self.opt.dry_run:
                    rep.contacts_to_send += len(changed)
                    room = max(0, self.opt.sample_size - len(rep.sample["contacts"]))
                    rep.sample["contacts"].extend(json.loads(c.payload) for c in changed[:room])
                    self._emit("contacts", sent=len(changed))
                    continue
                self.state.touch_contacts(unchanged, self.run_id or 0)
                for batch in batched((c, c.payload) for c in changed):
                    self._check_stop()
                    part = [c for c, _ in batch]
                    ok, bad, _ = self._send_rejecting(
                        part, lambda cs: self._sender().upsert_contacts_encoded([c.payload for c in cs]), "contacts"
                    )
                    # rejected ones are recorded too: resending an unchanged invalid contact every
                    # run would only fail again; a change of its payload retries it
                    self.state.record_contacts([(c.contact_id, c.customer_id, c.fp) for c in ok + bad],
                                               self.run_id or 0)
                    rep.contacts_sent += len(ok)
                    rep.contacts_rejected += len(bad)
                    self._emit("contacts", sent=len(ok), skipped=len(bad))
        if not self.opt.dry_run and self._persons_init and can_seen:
            self.state.set_persons_ready()
        if can_seen:
            self._note_attachable_groups()
        if not self.opt.dry_run and self.run_id is not None:
            rep.contacts_no_longer_matching = self.state.contacts_not_seen_since(self.run_id)
        rep.customers_referenced = len(self._customers)

    def _person_pages(self, filters: list[Any], extra: list[Any]) -> Iterator[list[list[Any]]]:
        """The Persons scan's pages, each row ``id, customer (raw), email, name[, contact][,
        attributes...][, 1/0 matches the filters]``."""
        attrs = [prop for _, prop in self.attributes]
        if self.customer_prop is not None:
            prop = self.customer_prop

            def build(after: str | None) -> tuple[str, dict[str, Any]]:
                return queries.persons_page(filters, customer_property=prop, contact_property=self.contact_prop,
                                            after_id=after, attributes=attrs)

            yield from self._paged(build, lambda row: str(row[queries.P_ID]), self.opt.persons_page_size,
                                   "cs-posthog sync persons")
            return
        w = self._groups_window()
        size = self.opt.persons_page_size

        def build_groups(after: str | None) -> tuple[str, dict[str, Any]]:
            return queries.person_groups_page(w, customer=self.customer, after_id=after)

        last: str | None = None  # the last Person handed out: what follows is read after them
        try:
            # a smaller page scans as many events: PostHog's time limit is met by time slices instead
            for rows in self._paged(build_groups, lambda row: str(row[0]), size, "cs-posthog sync person groups",
                                    queries.EVENTS_MODIFIERS, min_page_size=size):
                group_of = {str(row[0]): str(row[1]) for row in rows}
                last = str(rows[-1][0])  # PostHog's order (ClickHouse's for UUIDs), which the keyset follows
                rows.clear()
                yield self._group_persons_page(group_of, extra, attrs)
            return
        except QueryTooSlowError as exc:
            log.info("PostHog too slow for the Persons' groups over the backfill window: reading it in time "
                     "slices (%s)", exc.message)
        for group_of in self._person_groups_by_slices(w, after=last):
            yield self._group_persons_page(group_of, extra, attrs)

    def _group_persons_page(self, group_of: dict[str, str], extra: list[Any], attrs: list[str]) -> list[list[Any]]:
        """Group mode: the Persons scan's rows for ``group_of`` (Person id -> their latest group's key)."""
        customers = self._group_customers(group_of)
        ids = list(group_of)
        page: list[list[Any]] = []
        for i in range(0, len(ids), IN_LIST):
            self._check_stop()
            sql, values = queries.persons_by_ids(ids[i : i + IN_LIST], extra, contact_property=self.contact_prop,
                                                 attributes=attrs)
            for prow in self._query(sql, values, "cs-posthog sync persons").results:
                page.append([prow[0], customers.get(str(prow[0])), *prow[1:]])
        return page

    def _person_groups_by_slices(self, w: queries.EventsWindow, *, after: str | None) -> Iterator[dict[str, str]]:
        """Group mode, when PostHog cannot aggregate the whole backfill window within its time limit:
        each Person's latest group over time slices of the window (halved on each too-slow answer, as
        the events pages' windows are), kept in a private temporary SQLite database (on disk when it
        grows: a Person a row) and handed out in Person id order, a page at a time. Only Persons
        after ``after`` (those before were handed out already)."""
        size = self.opt.persons_page_size
        db = sqlite3.connect("")  # a temporary database of this connection's own, deleted when closed
        try:
            db.execute("CREATE TABLE latest (person_id TEXT PRIMARY KEY, ts TEXT NOT NULL, grp TEXT NOT NULL)")

            def scan(lo: datetime, hi: datetime) -> None:
                sw = replace(w, timestamp_from=fmt_ts(lo))

                def build(key: str | None) -> tuple[str, dict[str, Any]]:
                    return queries.person_groups_page(sw, customer=self.customer, after_id=key or after,
                                                      until=fmt_ts(hi))

                for rows in self._paged(build, lambda row: str(row[0]), size, "cs-posthog sync person groups",
                                        queries.EVENTS_MODIFIERS, min_page_size=size):
                    db.executemany(
                        "INSERT INTO latest VALUES (?, ?, ?) ON CONFLICT(person_id) DO UPDATE SET ts = excluded.ts, "
                        "grp = excluded.grp WHERE excluded.ts > latest.ts",
                        [(str(pid), norm_ts(ts), str(key)) for pid, key, ts in rows])

            def go(lo: datetime, hi: datetime) -> None:
                if hi - lo < 2 * MIN_WINDOW:
                    scan(lo, hi)  # (too slow even so: the run fails, as the events pages do)
                    return
                mid = lo + (hi - lo) / 2
                self.report.query_windows_narrowed += 1
                for a, b in ((lo, mid), (mid, hi)):
                    try:
                        scan(a, b)
                    except QueryTooSlowError:
                        go(a, b)

            go(parse_ts(w.timestamp_from), self.now + FUTURE_SLACK)
            cur = db.execute("SELECT person_id, grp FROM latest ORDER BY person_id")
            while rows := cur.fetchmany(size):
                yield dict(rows)
        finally:
            db.close()

    def _groups_window(self, person_filters: tuple[Any, ...] = ()) -> queries.EventsWindow:
        """Group mode: the selected events of the backfill window, where a Person's group is found."""
        floor = fmt_ts(self.now - timedelta(days=self.cfg.sync.backfill_days))
        return queries.EventsWindow(tuple(self.cfg.events.selected), floor, person_filters=person_filters)

    def _group_customers(self, group_of: dict[str, str]) -> dict[str, str | None]:
        """Group mode: each Person's customer id as raw JSON text (what ``_map_contacts`` reads): the
        group key, or the group property (as the group is now; None when it has none)."""
        gi, prop = self.customer.group_index, self.customer.group_property
        if prop is None or gi is None:
            return {pid: json.dumps(key, ensure_ascii=False) for pid, key in group_of.items()}
        keys = sorted(set(group_of.values()))
        raw: dict[str, str] = {}
        for i in range(0, len(keys), IN_LIST):
            self._check_stop()
            sql, values = queries.group_customer_ids(gi, prop, keys[i : i + IN_LIST])
            raw.update((str(k), v) for k, v in self._query(sql, values, "cs-posthog sync group ids").results)
        return {pid: raw.get(key) for pid, key in group_of.items()}

    def _duplicate_contact_losers(self, filters: list[Any]) -> set[str]:
        """Persons to sync who share their contact id (a property: e.g. email) with another: the most
        recently created one (then the greatest id) is the contact, the others are skipped and counted,
        so that one contact is sent once and does not flip between customers from run to run."""
        if self.contact_prop is None:
            return set()
        try:
            sql, values = queries.duplicate_contact_ids(filters, customer_property=self.customer_prop,
                                                  contact_property=self.contact_prop)
            dups = [row[0] for row in self._query(sql, values, "cs-posthog sync duplicate contact ids").results]
            losers: set[str] = set()
            for i in range(0, len(dups), IN_LIST):
                sql, values = queries.persons_with_contact_ids(filters, dups[i : i + IN_LIST],
                                                         customer_property=self.customer_prop,
                                                         contact_property=self.contact_prop)
                best: dict[str, tuple[str, str]] = {}
                rows = self._query(sql, values, "cs-posthog sync duplicate contacts").results
                for pid, created, raw in rows:
                    cand = (norm_ts(created), str(pid))
                    if raw not in best or cand > best[raw]:
                        best[raw] = cand
                losers.update(str(pid) for pid, _, raw in rows if best[raw][1] != str(pid))
            return losers
        except CsPosthogError as exc:  # without it, contacts are sent as before: nothing is lost
            log.info("could not look for duplicate contact ids: %s", exc)
            return set()

    def _note_attachable(self, person_ids: list[str]) -> None:
        """Record the attachable Persons of one page: all of them while ``persons_seen`` is being
        filled (first sync, or a state from before it existed), else the new ones as pending."""
        if not person_ids:
            return
        if self._persons_init:
            if not self.opt.dry_run:
                self.state.add_persons(person_ids, pending=False)
            return
        new = self.state.persons_unseen(person_ids)
        if not new:
            return
        self.report.persons_became_attachable += len(new)
        if self.opt.dry_run:
            self._dry_new_persons.extend(new)
        else:
            self.state.add_persons(new, pending=True)

    def _note_attachable_groups(self) -> None:
        """Group-property mode (6d): the groups holding a customer id now, kept in ``persons_seen``
        beside the Persons (``queries.group_owner``): a group seen for the first time after the first
        complete scan is pending, and its events of the backfill window, skipped while it lacked the
        property, are sent once by the backfill of ``_backfill_new_persons``."""
        gi, prop = self.customer.group_index, self.customer.group_property
        if gi is None or prop is None:
            return
        init = self._persons_init or self.state.get_meta(GROUPS_READY_KEY) != "1"
        if init and self.opt.dry_run:
            return

        def build(after: str | None) -> tuple[str, dict[str, Any]]:
            return queries.attachable_groups_page(gi, prop, after)

        for rows in self._paged(build, lambda row: str(row[0]), self.opt.persons_page_size, "cs-posthog sync groups"):
            ids = [queries.group_owner(gi, str(row[0])) for row in rows]
            if init:
                self.state.add_persons(ids, pending=False)
                continue
            new = self.state.persons_unseen(ids)
            self.report.groups_became_attachable += len(new)
            if self.opt.dry_run:
                self._dry_new_persons.extend(new)
            else:
                self.state.add_persons(new, pending=True)
        if init:
            self.state.set_meta(GROUPS_READY_KEY, "1")

    def _map_contacts(self, rows: list[list[Any]], flag_col: int | None,
                      first_attr: int) -> tuple[list[_Contact], list[str], list[str]]:
        """(the contacts of the Persons matching the filters, the ids of every attachable Person, the ids
        of the Persons with a customer and a contact id whose events are not sent: outside the filters
        while they choose the events)."""
        rep = self.report
        out: dict[str, _Contact] = {}
        attachable: list[str] = []
        outside: list[str] = []
        skipped = 0
        for row in rows:
            matches = flag_col is None or bool(row[flag_col])
            if matches:
                rep.contacts_read += 1
            customer = raw_id(row[queries.P_CUSTOMER])
            if customer is None:
                if matches:
                    rep.contacts_skipped_no_customer += 1
                    skipped += 1
                continue
            contact = text_or_none(row[queries.P_ID]) if self.contact_prop is None else raw_id(row[queries.P_CONTACT])
            if contact is not None:
                if matches or not self.filter_events:
                    attachable.append(str(row[queries.P_ID]))
                else:
                    outside.append(str(row[queries.P_ID]))
            if flag_col is not None and not row[flag_col]:
                continue  # outside the filters: events only, no contact (nor a contacts_read)
            if contact is None:
                rep.contacts_skipped_no_contact_id += 1
                skipped += 1
                continue
            if self._contact_losers and str(row[queries.P_ID]) in self._contact_losers:
                rep.contacts_skipped_duplicate_id += 1
                skipped += 1
                continue
            if len(customer) > FIELD_MAX or len(contact) > FIELD_MAX:
                rep.contacts_skipped_invalid += 1
                skipped += 1
                continue
            email = text_or_none(raw_value(row[queries.P_EMAIL]))
            if email is not None and len(email) > FIELD_MAX:
                email = None
            name = text_or_none(raw_value(row[queries.P_NAME]))
            attributes = {code: attribute_value(row[first_attr + i]) for i, (code, _) in enumerate(self.attributes)}
            payload = contact_payload(customer=customer, contact=contact, name=name, email=email, attributes=attributes)
            self._customers.add(customer)
            if contact in out:  # two Persons of one page with one contact id (the duplicates query failed)
                rep.contacts_skipped_duplicate_id += 1
                skipped += 1
            out[contact] = _Contact(contact, customer, fingerprint(payload), encode(payload))
        if skipped:
            self._emit("contacts", skipped=skipped)
        return list(out.values()), attachable, outside

    # --- the end -----------------------------------------------------------------------------
    def _collect_stats(self) -> None:
        rep = self.report
        ph_stats = self.ph.stats
        cs_stats = self.cs.stats if self.cs is not None else Stats()  # (a dry run sends nothing)
        rep.posthog_requests = ph_stats.requests
        rep.customerscore_requests = cs_stats.requests
        rep.retries = ph_stats.retries + cs_stats.retries
        rep.throttled = ph_stats.throttled + cs_stats.throttled
        if rep.customers_referenced == 0:
            rep.customers_referenced = len(self._customers)
        if self._streams and self._streams[-1].cursor is not None:
            rep.cursor = self._streams[-1].cursor.as_dict()

    def _finish_run(self) -> None:
        if self.opt.dry_run or self.run_id is None:
            return
        try:
            self.state.finish_run(
                self.run_id, self.report.status, self.report.as_dict(), self.report.error, mode=self.report.mode
            )
        except Exception:  # never hide the run's own outcome behind a state error
            log.warning("could not record the run in the state database", exc_info=True)
