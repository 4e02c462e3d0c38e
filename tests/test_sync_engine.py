"""The sync engine against the sandbox over real HTTP (in-process runs; the CLI and crash tests are
in test_cli_sync.py). Every expectation is computed from the sandbox's raw dumps by
``sync_expected`` (plain Python, independent of the engine)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cs_posthog.config import Config, save_config
from cs_posthog.errors import AuthError, BadRequestError, ExitCode, UsageError
from cs_posthog.sandbox.runner import post_json, start_sandbox
from cs_posthog.sync.engine import SyncEngine, SyncOptions
from cs_posthog.sync.runner import run_sync
from cs_posthog.sync.state import SyncState
from helpers import env_paths, env_settings, sync_parts
from sync_expected import Sandbox, bag, expected_contacts, expected_events

SELECTED = ["$pageview", "invoice_paid", "report_created", "dashboard_viewed"]
FILTERS = [{"property": "plan", "operator": "not_equals", "value": "free"}]


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=3000, persons=300, customers=40, seed=7) as sb:
        yield Sandbox(sb.info)


@pytest.fixture
def env(sandbox, monkeypatch):
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", sandbox.info["api_key"])
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", sandbox.info["customerscore_api_key"])
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")  # the sandbox runs without limits here
    return sandbox


def make_config(sb: Sandbox, *, selected=SELECTED, filters=FILTERS, **sync) -> Config:
    cfg = Config.model_validate(
        {
            "posthog": {"region": sb.info["region"], "host": sb.ph, "project_id": sb.info["project_id"]},
            "customerscore": {"api_url": sb.cs, "tracker_key": sb.info["tracker_key"]},
            "identification": {"property": sb.info["customer_property"]},
            "events": {"selected": selected},
            "persons": {"filters": filters},
            "sync": sync,
        }
    )
    save_config(cfg, env_paths().config_file)
    return cfg


def since_of(sb: Sandbox) -> datetime:
    now = datetime.fromisoformat(sb.info["data_now"].replace("Z", "+00:00"))
    return datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=30)


class Received:
    """What Customerscore received from the moment it is created (the sandbox is shared)."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.n = {w: len(sb.received(w)) for w in ("events", "contacts")}

    def __call__(self, what: str) -> list[dict]:
        return self.sb.received(what)[self.n[what] :]


def sync(cfg, **opts):
    report, error = run_sync(cfg, options=SyncOptions(**opts), **sync_parts())
    return report, error


def test_first_sync_is_exact_and_a_second_sends_nothing(env):
    sb = env
    cfg = make_config(sb)
    since = since_of(sb)
    got = Received(sb)
    report, error = sync(cfg, since=since)
    assert error is None, error
    want_events, skipped = expected_events(sb, selected=SELECTED, since=since, customer_property="organization_id")
    sent_events, _ = expected_events(sb, selected=SELECTED, since=since, customer_property="organization_id", existing_only=False)
    want_contacts = expected_contacts(sb, customer_property="organization_id", filters=FILTERS)
    all_contacts = expected_contacts(sb, customer_property="organization_id", filters=FILTERS, existing_only=False)
    assert len(want_events) > 300 and skipped > 0 and len(sent_events) > len(want_events)  # the data exercises it all
    assert bag(got("events")) == bag(want_events)
    assert bag(got("contacts")) == bag(want_contacts)
    assert report.status == "ok" and report.mode == "first"
    assert report.events_sent == len(sent_events)
    assert report.events_skipped_no_customer == skipped
    assert report.contacts_sent == len(all_contacts)
    assert report.resent_after_crash == 0 and report.events_possibly_doubled == 0
    assert report.customerscore_requests == -(-len(sent_events) // 100) + -(-len(all_contacts) // 100)
    assert report.posthog_requests >= 3
    doc = report.as_dict()
    for key in ("status", "events_sent", "events_skipped_no_customer", "contacts_sent", "contacts_unchanged",
                "posthog_requests", "customerscore_requests", "retries", "resent_after_crash", "duration_s",
                "events_possibly_doubled"):
        assert key in doc

    got2 = Received(sb)
    report2, error2 = sync(cfg)
    assert error2 is None
    assert got2("events") == [] and got2("contacts") == []
    assert report2.events_sent == 0 and report2.contacts_sent == 0 and report2.customerscore_requests == 0
    assert report2.contacts_unchanged == len(all_contacts)
    assert report2.events_skipped_no_customer == 0  # counted once, not again on the next run
    assert report2.mode == "incremental"
    state = SyncState(SyncState_path())
    assert [(r.mode, r.status) for r in state.last_runs(5)] == [("incremental", "ok"), ("first", "ok")]
    state.close()


def test_late_events_arrive_on_the_next_run_and_only_once(env):
    sb = env
    cfg = make_config(sb, selected=["invoice_paid"], filters=[])
    report, _ = sync(cfg, since=since_of(sb))
    state = SyncState(SyncState_path())
    cursor = state.stream("events").cursor
    state.close()
    persons = [p for p in sb.persons().values() if p["properties"].get("organization_id") in sb.customers()]
    anon = next(p for p in sb.persons().values() if p["properties"].get("organization_id") is None)
    p1, p2 = persons[0], persons[1]
    now = datetime.now(UTC)
    cur_created = datetime.fromisoformat(cursor.created_at.replace("Z", "+00:00"))
    rows = [
        {"event": "invoice_paid", "person_id": p1["id"], "timestamp": (now - timedelta(minutes=3)).isoformat()},
        # happened two days ago, ingested now: a late arrival by timestamp
        {"event": "invoice_paid", "person_id": p2["id"], "timestamp": (now - timedelta(days=2)).isoformat()},
        {"event": "report_created", "person_id": p1["id"], "timestamp": now.isoformat()},  # not selected
        {"event": "invoice_paid", "person_id": anon["id"], "timestamp": now.isoformat()},  # no customer
    ]
    post_json(sb.ph + "/_sandbox/events", rows)
    # ingested out of order: created_at 5 minutes before the cursor, inside the overlap window
    out_of_order = {
        "event": "invoice_paid",
        "person_id": p2["id"],
        "timestamp": (cur_created - timedelta(minutes=30)).isoformat(),
        "created_at": (cur_created - timedelta(minutes=5)).isoformat(),
    }
    post_json(sb.ph + "/_sandbox/events?keep_created_at=1", [out_of_order])
    got = Received(sb)
    report2, error = sync(cfg)
    assert error is None
    names = sorted((e["identification"]["contact"], e["timestamp"] // 1000) for e in got("events"))
    want = sorted(
        (p["id"], int(datetime.fromisoformat(r["timestamp"]).timestamp()))
        for p, r in ((p1, rows[0]), (p2, rows[1]), (p2, out_of_order))
    )
    assert names == want
    assert report2.events_sent == 3
    assert report2.events_skipped_no_customer == 1
    got3 = Received(sb)
    report3, _ = sync(cfg)
    assert got3("events") == [] and report3.events_sent == 0


def SyncState_path():
    from helpers import env_paths

    return env_paths().state_db


def test_dry_run_sends_nothing_and_moves_nothing(env):
    sb = env
    cfg = make_config(sb)
    since = since_of(sb)
    got = Received(sb)
    before = sb.stats()["total"]
    report, error = sync(cfg, since=since, dry_run=True)
    assert error is None
    assert got("events") == [] and got("contacts") == [] and sb.stats()["total"] == before
    assert not SyncState_path().exists()  # not even a state database
    sent_events, _ = expected_events(sb, selected=SELECTED, since=since, customer_property="organization_id", existing_only=False)
    all_contacts = expected_contacts(sb, customer_property="organization_id", filters=FILTERS, existing_only=False)
    assert report.dry_run and report.events_sent == 0 and report.contacts_sent == 0
    assert report.events_to_send == len(sent_events)
    assert report.contacts_to_send == len(all_contacts)
    assert len(report.sample["events"]) == 5 and len(report.sample["contacts"]) == 5
    assert all(e["name"] in SELECTED for e in report.sample["events"])
    # after a real sync, a dry run has nothing left to send
    sync(cfg, since=since)
    report2, _ = sync(cfg, dry_run=True)
    assert report2.events_to_send == 0 and report2.contacts_to_send == 0


def test_full_resends_everything_and_since_needs_full(env):
    sb = env
    cfg = make_config(sb, selected=["invoice_paid"])
    since = since_of(sb)
    first, _ = sync(cfg, since=since)
    got0 = Received(sb)
    refused, error0 = sync(cfg, since=since)
    assert isinstance(error0, UsageError) and error0.exit_code == ExitCode.USAGE
    assert "--full" in error0.hint and got0("events") == []
    got = Received(sb)
    full, error = sync(cfg, full=True, since=since)
    assert error is None and full.mode == "full"
    assert full.events_sent == first.events_sent and full.contacts_sent == first.contacts_sent
    want, _ = expected_events(sb, selected=["invoice_paid"], since=since, customer_property="organization_id")
    assert bag(got("events")) == bag(want)


def test_full_sends_once_what_posthog_holds_twice_in_different_pages(env):
    """PostHog holds a few uuids twice, the second copy ingested minutes to days later: in pages of 50
    rows the copies are read in different pages. A --full run dropped only copies within one page (it
    read the state as if empty all along, its own deliveries included) and sent the others twice."""
    sb = env
    selected = [*SELECTED, "search_performed", "$pageleave"]  # the data's three uuids held twice
    cfg = make_config(sb, selected=selected, filters=[])
    since = since_of(sb) - timedelta(days=60)
    got = Received(sb)
    report, error = sync(cfg, full=True, since=since, events_page_size=50, events_page_max=50)
    assert error is None, error
    want, skipped = expected_events(sb, selected=selected, since=since, customer_property="organization_id")
    assert bag(got("events")) == bag(want)
    assert report.events_duplicates_dropped > 0 and report.events_skipped_no_customer == skipped


def test_a_newly_selected_event_is_backfilled_alone(env):
    sb = env
    since = since_of(sb)
    cfg = make_config(sb, selected=["invoice_paid"], filters=[])
    sync(cfg, since=since)
    cfg2 = make_config(sb, selected=["invoice_paid", "report_created"], filters=[])
    got = Received(sb)
    report, error = sync(cfg2)
    assert error is None
    want, _ = expected_events(sb, selected=["report_created"], since=since, customer_property="organization_id")
    assert len(want) > 20
    assert bag(got("events")) == bag(want)
    state = SyncState(SyncState_path())
    assert [(s.name, sorted(s.events)) for s in state.streams()] == [("events", ["invoice_paid", "report_created"])]
    state.close()
    got2 = Received(sb)
    sync(cfg2)
    assert got2("events") == []


def test_a_filter_change_resends_contacts(env):
    sb = env
    cfg = make_config(sb, selected=["invoice_paid"], filters=[])
    first, _ = sync(cfg, since=since_of(sb))
    again, _ = sync(cfg)
    assert again.contacts_sent == 0
    cfg2 = make_config(sb, selected=["invoice_paid"], filters=FILTERS)
    got = Received(sb)
    changed, _ = sync(cfg2)
    want = expected_contacts(sb, customer_property="organization_id", filters=FILTERS)
    assert bag(got("contacts")) == bag(want)
    assert changed.contacts_sent == len(expected_contacts(sb, customer_property="organization_id", filters=FILTERS, existing_only=False))
    assert changed.contacts_no_longer_matching == first.contacts_sent - changed.contacts_sent


def test_a_changed_person_is_sent_again(env):
    sb = env
    cfg = make_config(sb, selected=["invoice_paid"], filters=[])
    sync(cfg, since=since_of(sb))
    person = next(p for p in sb.persons().values() if p["properties"].get("organization_id") in sb.customers())
    post_json(sb.ph + "/_sandbox/persons", [{"id": person["id"], "properties": {**person["properties"], "name": "Renamed Ŕ"}}])
    got = Received(sb)
    report, _ = sync(cfg)
    assert report.contacts_sent == 1
    (c,) = got("contacts")
    assert c["contact_external_id"] == person["id"] and c["contact_name"] == "Renamed Ŕ"


def test_crash_between_ack_and_checkpoint_resends_that_batch_once(env, monkeypatch):
    """Invariant 5 without timing luck: the process 'dies' right after Customerscore acknowledged
    the third tracker batch, before the checkpoint."""
    sb = env
    cfg = make_config(sb, selected=SELECTED)
    since = since_of(sb)
    got = Received(sb)
    real = SyncState.checkpoint
    calls = {"n": 0}

    class Died(BaseException):
        pass

    def dying_checkpoint(self, stream, cursor, delivered=(), **kw):
        if delivered:
            calls["n"] += 1
            if calls["n"] == 3:
                raise Died()
        return real(self, stream, cursor, delivered, **kw)

    monkeypatch.setattr(SyncState, "checkpoint", dying_checkpoint)
    report, error = sync(cfg, since=since)
    assert isinstance(error, Died) and report.status == "failed"
    monkeypatch.setattr(SyncState, "checkpoint", real)
    after, error2 = sync(cfg)
    assert error2 is None
    want, _ = expected_events(sb, selected=SELECTED, since=since, customer_property="organization_id")
    received = got("events")
    dups = bag(received) - bag(want)
    assert bag(received) - dups == bag(want)  # nothing lost
    assert sum(dups.values()) <= 100  # at most the one batch in flight
    assert after.resent_after_crash == 100  # and it says so (a full batch was in flight)


def test_bad_customerscore_key_fails_with_77_and_keeps_the_cursor(env, monkeypatch):
    sb = env
    cfg = make_config(sb, selected=["invoice_paid"], filters=[])
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", "cs_wrong_key_000000")
    report, error = sync(cfg, since=since_of(sb))
    assert isinstance(error, AuthError) and error.exit_code == ExitCode.NOPERM
    assert report.status == "failed" and report.exit_code == 77 and report.events_sent == 0
    state = SyncState(SyncState_path())
    assert state.stream("events").cursor is None
    assert state.last_runs(1)[0].status == "failed"
    state.close()


def test_another_posthog_project_starts_the_events_over(env):
    sb = env
    cfg = make_config(sb, selected=["invoice_paid"], filters=[])
    first, _ = sync(cfg, since=since_of(sb))
    # another project of the organization (no data): old cursors mean nothing there
    other = cfg.model_copy(update={"posthog": cfg.posthog.model_copy(update={"project_id": sb.info["other_project_id"]})})
    save_config(other, env_paths().config_file)
    report, error = sync(other)
    assert error is None, error
    assert any("start over" in w for w in report.warnings)
    assert report.events_sent == 0 and report.mode == "first"
    # and back: the first project's events are sent again from its backfill start
    save_config(cfg, env_paths().config_file)
    report, error = sync(cfg, since=since_of(sb))
    assert error is None, error
    assert report.events_sent == first.events_sent and report.mode == "first"


def test_posthog_down_fails_with_75_and_changes_nothing(env):
    import socket

    from cs_posthog.errors import UnavailableError
    from cs_posthog.http import RetryPolicy
    from cs_posthog.posthog.client import PostHogClient

    sb = env
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    cfg = make_config(sb, selected=["invoice_paid"], filters=[])
    ph = PostHogClient(f"http://127.0.0.1:{port}", sb.info["api_key"], sb.info["project_id"],
                       policy=RetryPolicy(backoff_base=0.01, backoff_cap=0.02), pace=False, settings=env_settings())
    got = Received(sb)
    report, error = run_sync(cfg, options=SyncOptions(since=since_of(sb)), posthog=ph, **sync_parts())
    assert isinstance(error, UnavailableError) and error.exit_code == ExitCode.TEMPFAIL
    assert report.status == "failed" and report.exit_code == 75 and "PostHog" in report.error
    assert got("events") == [] and got("contacts") == []
    state = SyncState(SyncState_path())
    assert state.stream("events") is None  # nothing was planned: PostHog never answered for the project
    state.close()


def test_unknown_selected_event_is_warned_about(env):
    sb = env
    cfg = make_config(sb, selected=["invoice_paid", "no_such_event_anywhere"], filters=[])
    report, error = sync(cfg, since=since_of(sb))
    assert error is None
    assert any("no_such_event_anywhere" in w for w in report.warnings)
    assert not any("invoice_paid" in w for w in report.warnings)


def test_one_invalid_item_does_not_block_the_sync():
    """Customerscore rejecting a batch for one bad item: the item is isolated and skipped, the
    rest delivered; a batch refused whole is an error (nothing skipped)."""

    class Delivered:
        ambiguous = False

    eng = SyncEngine.__new__(SyncEngine)
    eng._reject_notes = []
    posted = []

    def post(rows):
        posted.append(list(rows))
        if "bad" in rows:
            raise BadRequestError("events[0].name: invalid", service="Customerscore", status=400)
        return Delivered()

    ok, bad, doubled = eng._send_rejecting(["a", "b", "bad", "c", "d"], post, "events")
    assert ok == ["a", "b", "c", "d"] and bad == ["bad"] and doubled == 0
    assert eng._reject_notes
    with pytest.raises(BadRequestError):
        eng._send_rejecting(["bad"], post, "events")


def test_memory_is_one_page_plus_one_in_flight():
    """The reader runs at most one page ahead of the sender (invariant 12)."""
    import threading
    import time

    from cs_posthog.sync.prefetch import Prefetcher

    produced = []
    lock = threading.Lock()

    def source():
        for i in range(20):
            with lock:
                produced.append(i)
            yield i

    consumed = 0
    ahead = []
    with Prefetcher(source()) as it:
        for _ in it:
            consumed += 1
            time.sleep(0.01)  # the sender is slower than the reader
            with lock:
                ahead.append(len(produced) - consumed)
    assert consumed == 20
    assert max(ahead) <= 1


def test_prefetch_forwards_errors():
    from cs_posthog.sync.prefetch import Prefetcher

    def source():
        yield 1
        raise httpx.ConnectError("boom")

    it = Prefetcher(source())
    assert next(it) == 1
    with pytest.raises(httpx.ConnectError):
        next(it)
