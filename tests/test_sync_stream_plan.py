"""Which event streams a sync runs (``sync/stream_plan.py``), from the events selected now and the
streams a state holds: no state, no network (the engine's use of it: tests/test_sync_engine.py)."""

from __future__ import annotations

from cs_posthog.sync.state import MAIN_STREAM, Cursor, Stream
from cs_posthog.sync.stream_plan import CATCHUP_PREFIX, RESUME_PREFIX, plan_event_streams

FLOOR = "2024-04-01T00:00:00.000000Z"  # this run's backfill start
MAIN_FLOOR = "2024-03-01T00:00:00.000000Z"  # where the main stream started
AT = Cursor("2024-05-01T00:00:00.000000Z", "u-main")
EARLIER = ["2024-04-15T00:00:00.000000Z", "u-old"]


def main_stream(*events: str) -> Stream:
    return Stream(MAIN_STREAM, list(events), MAIN_FLOOR, AT, "")


def test_a_deselected_event_leaves_the_main_stream_and_is_noted_where_it_stopped():
    main = main_stream("signup", "invoice_paid")
    plan = plan_event_streams(["signup"], main, {}, {}, FLOOR)
    assert main.events == ["signup"]
    assert plan.streams == [] and plan.deleted == []
    assert plan.dropped == {"invoice_paid": [AT.created_at, AT.uuid]}


def test_an_event_selected_again_where_main_stands_rejoins_it():
    main = main_stream("signup")
    plan = plan_event_streams(["signup", "invoice_paid"], main, {}, {"invoice_paid": [AT.created_at, AT.uuid]}, FLOOR)
    assert main.events == ["signup", "invoice_paid"]
    assert plan.streams == [] and plan.dropped == {} and plan.resume_start == {}


def test_an_event_selected_again_later_resumes_strictly_after_where_it_stopped():
    main = main_stream("signup")
    dropped = {"invoice_paid": list(EARLIER), "gone": ["2024-04-02T00:00:00.000000Z", "u-x"]}
    plan = plan_event_streams(["signup", "invoice_paid"], main, {}, dropped, FLOOR)
    [resume] = plan.streams
    assert resume.name.startswith(RESUME_PREFIX)
    assert (resume.events, resume.floor, resume.cursor) == (["invoice_paid"], MAIN_FLOOR, Cursor(*EARLIER))
    assert plan.resume_start == {resume.name: tuple(EARLIER)}
    assert plan.dropped == {"gone": ["2024-04-02T00:00:00.000000Z", "u-x"]}  # still deselected: kept
    assert dropped["invoice_paid"] == EARLIER  # the caller's copy is left alone
    assert main.events == ["signup"]


def test_a_new_event_gets_a_catch_up_stream_from_the_backfill_start():
    main = main_stream("signup")
    plan = plan_event_streams(["signup", "report_created", "invoice_paid"], main, {}, {}, FLOOR)
    [catchup] = plan.streams
    assert catchup.name.startswith(CATCHUP_PREFIX)
    assert (catchup.events, catchup.floor, catchup.cursor) == (["report_created", "invoice_paid"], FLOOR, None)
    # the same events give the same name (a stream interrupted is found again by the next run)
    again = plan_event_streams(["signup", "report_created", "invoice_paid"], main_stream("signup"), {}, {}, FLOOR)
    assert again.streams[0].name == catchup.name


def test_catch_up_streams_keep_their_selected_events_and_go_when_none_is_left():
    midway = Cursor("2024-04-20T00:00:00.000000Z", "u-mid")
    kept = Stream(CATCHUP_PREFIX + "a", ["report_created", "page_viewed"], FLOOR, midway, "")
    emptied = Stream(CATCHUP_PREFIX + "b", ["invoice_paid"], FLOOR, None, "")
    main = main_stream("signup")
    plan = plan_event_streams(["signup", "report_created"], main, {kept.name: kept, emptied.name: emptied}, {}, FLOOR)
    assert plan.streams == [kept] and kept.events == ["report_created"]
    assert plan.deleted == [emptied.name]
    # where the catch-up stream stopped is where a deselected event of it resumes later
    assert plan.dropped == {"page_viewed": [midway.created_at, midway.uuid]}
