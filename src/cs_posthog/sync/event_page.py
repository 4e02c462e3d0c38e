"""One page of events, planned: which rows are sent, skipped or dropped, and the tracker batches
with what each batch's checkpoint covers. Pure functions, no I/O: the engine does the sending and
the checkpoints (``docs/sync-invariants.md`` 5, 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cs_posthog.customerscore.client import MAX_BYTES, MAX_ITEMS, batched


@dataclass(slots=True)
class EventRow:
    """One PostHog event row, mapped: its tracker payload, or the reason it is skipped."""

    uuid: str
    created: str  # canonical
    created_raw: Any  # as PostHog returned it (for the next keyset query)
    payload: bytes | None
    skip: str | None  # "no_customer", "no_contact", "invalid"
    customer: str | None


@dataclass
class PageTriage:
    """What a page holds, row by row (indexes into the page)."""

    seen: set[str] = field(default_factory=set)  # the uuids handled by this page
    sendable: list[int] = field(default_factory=list)  # rows to send, in page order
    handled: list[bool] = field(default_factory=list)  # per row: sent or skipped here (not a duplicate)
    no_customer: int = 0  # skipped: no customer id (6)
    no_contact: int = 0  # skipped: no contact id
    invalid: int = 0  # skipped: not a valid tracker event
    dropped: int = 0  # duplicates of rows handled before, newer than the stream's start (PostHog's duplicates)
    rereads: int = 0  # rows handled before: the overlap read again (2), or already sent in a backfill

    @property
    def unsendable(self) -> int:
        return self.no_contact + self.invalid


def triage_page(page: list[EventRow], already: set[str], *, start_created: str, backfill: bool) -> PageTriage:
    """Sort a page's rows. ``already``: the uuids handled before (delivered or skipped by earlier
    pages or runs); a uuid seen twice in the page counts once. A repeat newer than ``start_created``
    (where the stream stood before this run) is a duplicate PostHog holds, dropped; older ones are
    the overlap read again, as are, in a new Person's backfill (``backfill``), the events the main
    stream sent since the Person became attachable."""
    t = PageTriage(handled=[False] * len(page))
    for i, r in enumerate(page):
        if r.uuid in already or r.uuid in t.seen:
            if r.created > start_created and not backfill:
                t.dropped += 1
            else:
                t.rereads += 1
            continue
        t.seen.add(r.uuid)
        t.handled[i] = True
        if r.skip is None:
            t.sendable.append(i)
        elif r.skip == "no_customer":
            t.no_customer += 1
        elif r.skip == "no_contact":
            t.no_contact += 1
        else:
            t.invalid += 1
    return t


@dataclass(frozen=True)
class PlannedBatch:
    """One tracker batch of a page and the checkpoint after it (indexes into the page)."""

    rows: list[int]  # the rows to POST, in page order
    cursor: int  # the last row the checkpoint covers: just before the next batch's first row, or the page's last
    skipped: list[int]  # the rows up to ``cursor`` (from the previous batch's) skipped here, recorded as handled


def plan_batches(
    page: list[EventRow], triage: PageTriage, *, max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES
) -> list[PlannedBatch]:
    """The tracker batches of a page (Customerscore's limits: ``max_items`` events, ``max_bytes`` a
    request), each with the stretch of the page its checkpoint covers, so that the cursor moves past
    skipped rows as batches are acknowledged. No sendable row: no batch (the caller checkpoints the
    whole page). Raises ``ItemTooLargeError`` for a payload over ``max_bytes`` alone."""
    payloads = ((i, p) for i in triage.sendable if (p := page[i].payload) is not None)  # (every sendable one has)
    groups = [[i for i, _ in b] for b in batched(payloads, max_items=max_items, max_bytes=max_bytes)]
    out: list[PlannedBatch] = []
    lo = 0
    for k, rows in enumerate(groups):
        end = groups[k + 1][0] - 1 if k + 1 < len(groups) else len(page) - 1
        skipped = [j for j in range(lo, end + 1) if triage.handled[j] and page[j].skip]
        out.append(PlannedBatch(rows=rows, cursor=end, skipped=skipped))
        lo = end + 1
    return out


def skipped_rows(page: list[EventRow], triage: PageTriage) -> list[int]:
    """The rows of the page skipped here (handled, not sent): what a page without a batch records."""
    return [j for j, r in enumerate(page) if triage.handled[j] and r.skip]
