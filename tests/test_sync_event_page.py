"""Planning one page of events (``sync/event_page.py``), without a network or a state: which rows
are sent, skipped, dropped or read again, and the tracker batches with the stretch of the page each
checkpoint covers (invariants 5 and 6 of docs/sync-invariants.md)."""

from __future__ import annotations

import pytest

from cs_posthog.customerscore.client import ItemTooLargeError
from cs_posthog.sync.event_page import EventRow, plan_batches, skipped_rows, triage_page

START = "2024-05-01T00:00:00.000000Z"  # where the stream stood before this run
OLD = "2024-04-30T23:00:00.000000Z"  # read again through the overlap
NEW = "2024-05-01T01:00:00.000000Z"


def row(uuid: str, *, skip: str | None = None, created: str = NEW, size: int = 20) -> EventRow:
    payload = None if skip else b"{" + b"x" * (size - 2) + b"}"
    return EventRow(uuid=uuid, created=created, created_raw=created, payload=payload, skip=skip,
                    customer=None if skip == "no_customer" else "acme")


def test_triage_sorts_each_row_once():
    page = [
        row("a"),
        row("b", skip="no_customer"),
        row("c", skip="no_contact"),
        row("d", skip="invalid"),
        row("e", created=OLD),  # handled by an earlier run, read again through the overlap
        row("f"),  # handled by an earlier run, yet newer than the start: PostHog holds it twice
        row("a"),  # twice in this page: the second one is a duplicate
        row("g"),
    ]
    t = triage_page(page, {"e", "f"}, start_created=START, backfill=False)
    assert t.sendable == [0, 7]
    assert t.handled == [True, True, True, True, False, False, False, True]
    assert t.seen == {"a", "b", "c", "d", "g"}
    assert (t.no_customer, t.no_contact, t.invalid, t.unsendable) == (1, 1, 1, 2)
    assert (t.dropped, t.rereads) == (2, 1)


def test_in_a_backfill_every_repeat_is_a_reread():
    # a new Person's backfill meets the events the main stream sent since: nothing was duplicated
    page = [row("a"), row("b"), row("b")]
    t = triage_page(page, {"a"}, start_created=START, backfill=True)
    assert t.sendable == [1]
    assert (t.dropped, t.rereads) == (0, 2)


def test_batches_follow_the_item_limit_and_checkpoints_cover_the_page():
    page = [
        row("a"),
        row("b", skip="no_customer"),
        row("c"),
        row("d"),
        row("e", skip="no_contact"),
        row("b", skip="no_customer"),  # a duplicate: not handled here, so not recorded again
        row("f"),
        row("g", skip="invalid"),
    ]
    t = triage_page(page, set(), start_created=START, backfill=False)
    plan = plan_batches(page, t, max_items=2)
    assert [(b.rows, b.cursor, b.skipped) for b in plan] == [
        ([0, 2], 2, [1]),  # up to just before the next batch's first row
        ([3, 6], 7, [4, 7]),  # the last batch covers the rest of the page
    ]
    # together the checkpoints record every skipped row exactly once
    assert [j for b in plan for j in b.skipped] == skipped_rows(page, t) == [1, 4, 7]


def test_batches_follow_the_byte_limit():
    page = [row(u, size=20) for u in "abcde"]
    t = triage_page(page, set(), start_created=START, backfill=False)
    # 256 bytes of envelope, then each event and its comma: room for two 20-byte events in 300
    plan = plan_batches(page, t, max_items=100, max_bytes=300)
    assert [b.rows for b in plan] == [[0, 1], [2, 3], [4]]
    assert [b.cursor for b in plan] == [1, 3, 4]


def test_a_page_with_nothing_to_send_has_no_batch():
    page = [row("a", skip="no_customer"), row("b", skip="no_contact"), row("a", skip="no_customer")]
    t = triage_page(page, set(), start_created=START, backfill=False)
    assert plan_batches(page, t) == []
    assert skipped_rows(page, t) == [0, 1]  # what the page's own checkpoint records


def test_an_event_too_large_for_any_request_is_refused():
    page = [row("a", size=50), row("b", size=500)]
    t = triage_page(page, set(), start_created=START, backfill=False)
    with pytest.raises(ItemTooLargeError, match="500 bytes"):
        plan_batches(page, t, max_bytes=400)
