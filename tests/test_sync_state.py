"""The sync's SQLite state and run lock, without any network."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from cs_posthog.errors import ExitCode, LockHeldError
from cs_posthog.sync.mapping import contact_payload, fingerprint
from cs_posthog.sync.state import Cursor, RunLock, Stream, SyncState
from cs_posthog.timeutil import norm_ts, parse_ts, ts_ms


@pytest.fixture
def state(tmp_path):
    s = SyncState(tmp_path / "state" / "state.sqlite3")
    yield s
    s.close()


def test_timestamps_normalise_and_convert_exactly():
    assert norm_ts("2024-04-03 10:11:12.5") == "2024-04-03T10:11:12.500000Z"
    assert norm_ts("2024-04-03T12:11:12.123456+02:00") == "2024-04-03T10:11:12.123456Z"
    assert norm_ts("2024-04-03T10:11:12Z") == "2024-04-03T10:11:12.000000Z"
    # 1712123456.789 * 1000 in floats is 1712123456788.9998: the conversion must not truncate
    assert ts_ms("2024-04-03T05:50:56.789Z") == 1712123456789
    assert ts_ms("2024-04-03T05:50:56.789999Z") == 1712123456789
    assert ts_ms("1969-12-31T23:59:59.999500Z") == -1  # floor, like the integer division it replaces
    assert norm_ts("2024-04-03T10:11:12.123456Z") == "2024-04-03T10:11:12.123456Z"  # canonical: kept
    assert norm_ts("0999-01-02T03:04:05.000006Z") == "0999-01-02T03:04:05.000006Z"  # sortable
    with pytest.raises(ValueError):
        norm_ts("2024-13-03T10:11:12.123456Z")  # the canonical shape is not enough


def test_event_json_is_the_payload_encoded():
    """The hot path's template gives exactly the bytes json.dumps gives for event_payload."""
    import random

    from cs_posthog.customerscore.client import encode
    from cs_posthog.sync.mapping import event_json, event_payload

    rnd = random.Random(7)
    alphabet = 'ab"\\/\n\t\x00\x1f\x7fé€😀\u2028 '
    for _ in range(2000):
        kw = {k: "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 8))) for k in ("name", "customer", "contact")}
        kw["email"] = rnd.choice([None, "", "a@b.c", "ü\"@x"])
        kw["timestamp_ms"] = rnd.randint(-10**13, 10**13)
        assert event_json(**kw) == encode(event_payload(**kw))


def test_state_file_is_private(state):
    assert (state.path.stat().st_mode & 0o777) == 0o600
    assert (state.path.parent.stat().st_mode & 0o777) == 0o700


def test_checkpoint_moves_cursor_delivered_and_inflight_together(state):
    s = Stream("events", ["a", "b"], "2024-01-01T00:00:00.000000Z", None, "")
    state.save_stream(s)
    batch = [("u1", "2024-01-02T00:00:00.000000Z"), ("u2", "2024-01-02T00:05:00.000000Z")]
    state.mark_inflight(batch)
    assert state.inflight() == {"u1", "u2"}
    state.checkpoint(s, Cursor("2024-01-02T00:05:00.000000Z", "u2"), batch)
    assert state.inflight() == set()
    assert state.delivered_among(["u1", "u2", "u3"]) == {"u1", "u2"}
    again = SyncState(state.path)
    assert again.stream("events").cursor == Cursor("2024-01-02T00:05:00.000000Z", "u2")
    again.close()


def test_the_next_batch_is_marked_in_the_checkpoint_of_the_last(state):
    s = Stream("events", ["a"], "2024-01-01T00:00:00.000000Z", None, "")
    state.save_stream(s)
    first = [("u1", "2024-01-02T00:00:00.000000Z"), ("u2", "2024-01-02T00:01:00.000000Z")]
    second = [("u3", "2024-01-02T00:02:00.000000Z")]
    state.mark_inflight(first)
    state.checkpoint(s, Cursor(first[-1][1], "u2"), first, mark_next=second)
    assert state.inflight() == {"u3"}
    state.checkpoint(s, Cursor(second[-1][1], "u3"), second)
    assert state.inflight() == set()
    assert state.delivered_among(["u1", "u2", "u3"]) == {"u1", "u2", "u3"}


def test_marks_of_a_run_that_died_stay_until_delivered(state):
    """The batch in flight when a run died is reported by the next runs until it is delivered,
    even if one of them dies too before getting there."""
    s = Stream("events", ["a"], "2024-01-01T00:00:00.000000Z", None, "")
    state.save_stream(s)
    batch = [("u1", "2024-01-02T00:00:00.000000Z"), ("u2", "2024-01-02T00:01:00.000000Z")]
    state.mark_inflight(batch)
    state.close()  # died after sending
    expected = {"u1", "u2"}
    for i in range(2):  # the next runs die too, before resending it, each with a batch of its own
        again = SyncState(state.path)
        assert again.inflight() == expected
        again.start_run("incremental")
        assert again.inflight() == expected
        again.mark_inflight([(f"u9{i}", "2024-01-02T00:09:00.000000Z")])
        expected |= {f"u9{i}"}
        assert again.inflight() == expected
        again.close()
    last = SyncState(state.path)
    last.start_run("incremental")
    resent = batch + [("u90", "2024-01-02T00:09:00.000000Z"), ("u91", "2024-01-02T00:09:00.000000Z")]
    last.checkpoint(s, Cursor("2024-01-02T00:09:00.000000Z", "u91"), resent)
    assert last.inflight() == set()
    last.close()


def test_a_batch_never_acknowledged_keeps_its_marks(state):
    s = Stream("events", ["a"], "2024-01-01T00:00:00.000000Z", None, "")
    state.mark_inflight([("u1", "2024-01-02T00:00:00.000000Z")])  # its POST failed: no checkpoint
    state.mark_inflight([("u2", "2024-01-02T00:01:00.000000Z")])
    assert state.inflight() == {"u1", "u2"}
    state.checkpoint(s, Cursor("2024-01-02T00:01:00.000000Z", "u2"), [("u2", "2024-01-02T00:01:00.000000Z")])
    assert state.inflight() == {"u1"}
    state.unmark_inflight(["u1"])
    assert state.inflight() == set()
    ro = SyncState(state.path, readonly=True)
    state.mark_inflight([("u3", "2024-01-02T00:02:00.000000Z")])
    assert ro.inflight() == {"u3"}  # `status` sees the batch in flight
    ro.close()


def test_prune_keeps_only_the_overlap_window(state):
    s = Stream("events", ["a"], "2024-01-01T00:00:00.000000Z", None, "")
    old = [(f"old{i}", "2024-01-02T00:00:00.000000Z") for i in range(3)]
    recent = [(f"new{i}", "2024-01-02T00:55:00.000000Z") for i in range(3)]
    state.checkpoint(s, Cursor("2024-01-02T00:55:00.000000Z", "new2"), old + recent)
    horizon = state.prune_horizon(timedelta(minutes=10))
    assert horizon == "2024-01-02T00:45:00.000000Z"
    state.checkpoint(s, Cursor("2024-01-02T01:00:00.000000Z", "x"), [], prune_before=horizon)
    assert state.delivered_among([u for u, _ in old + recent]) == {u for u, _ in recent}


def test_failed_transaction_changes_nothing(state):
    s = Stream("events", ["a"], "2024-01-01T00:00:00.000000Z", None, "")
    state.save_stream(s)
    with pytest.raises(RuntimeError):
        with state.tx() as db:
            db.execute("INSERT INTO delivered (uuid, created_at) VALUES ('z', 'x')")
            raise RuntimeError("crash inside the transaction")
    assert state.delivered_count() == 0


def test_fingerprints_and_seen_runs(state):
    run = state.start_run("incremental")
    p = contact_payload(customer="org_1", contact="p1", name=None, email="a@x.io")
    state.record_contacts([("p1", "org_1", fingerprint(p))], run)
    assert state.fingerprints(["p1", "p2"]) == {"p1": fingerprint(p)}
    run2 = state.start_run("incremental")
    assert state.contacts_not_seen_since(run2) == 1
    state.touch_contacts(["p1"], run2)
    assert state.contacts_not_seen_since(run2) == 0
    state.clear_fingerprints()
    assert state.fingerprints(["p1"]) == {"p1": ""}  # never equal to a real fingerprint: resent
    assert state.contacts_count() == 1


def test_runs_history_marks_dead_runs_interrupted(state):
    r1 = state.start_run("incremental")  # never finished: its process died
    r2 = state.start_run("full")
    state.finish_run(r2, "ok", {"events_sent": 3})
    runs = state.last_runs(5)
    assert [(r.id, r.status) for r in runs] == [(r2, "ok"), (r1, "interrupted")]
    assert runs[0].summary == {"events_sent": 3} and runs[0].mode == "full"


def test_readonly_state_of_a_missing_db_is_empty_and_creates_nothing(tmp_path):
    path = tmp_path / "nothing" / "state.sqlite3"
    s = SyncState(path, readonly=True)
    assert s.streams() == [] and s.last_runs() == [] and s.inflight() == set()
    assert not path.exists() and not path.parent.exists()
    with pytest.raises(RuntimeError):
        s.save_stream(Stream("events", [], "x", None, ""))


def test_lock_second_holder_gets_exit_75(tmp_path):
    lock_path = tmp_path / "sync.lock"
    with RunLock(lock_path):
        with pytest.raises(LockHeldError) as ei:
            RunLock(lock_path).acquire()
        assert ei.value.exit_code == ExitCode.TEMPFAIL
        assert str(ei.value) == "another sync is running"
        assert RunLock(lock_path).held_elsewhere
        # and from another process
        code = (
            "import sys; from cs_posthog.sync.state import RunLock; from cs_posthog.errors import LockHeldError\n"
            f"try:\n    RunLock({str(lock_path)!r}).acquire()\nexcept LockHeldError:\n    sys.exit(75)\n"
        )
        assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 75
    # released: free again
    with RunLock(lock_path):
        pass
    assert not RunLock(lock_path).held_elsewhere


def test_lock_of_a_killed_process_is_free(tmp_path):
    lock_path = tmp_path / "sync.lock"
    code = (
        "import sys, time; from cs_posthog.sync.state import RunLock\n"
        f"lk = RunLock({str(lock_path)!r}).acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert RunLock(lock_path).held_elsewhere
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with RunLock(lock_path):
        pass


def test_fingerprint_ignores_key_order_and_tracks_content():
    a = {"customer_external_id": "c", "contact_external_id": "p", "contact_name": "n", "attributes": {"email": "e"}}
    b = dict(reversed(list(a.items())))
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "contact_name": "m"})


def test_parse_ts_naive_is_utc():
    assert parse_ts("2024-01-01 00:00:00").utcoffset() == timedelta(0)
    assert os.environ.get("CS_POSTHOG_HOME")  # hermetic fixture active
