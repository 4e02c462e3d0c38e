"""The pacer's arithmetic, on a fake clock (no sleeping, no timing assertions)."""

from __future__ import annotations

import threading

from cs_posthog.http import Pacer, retry_after_header


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def make(windows, **kw):
    clock = FakeClock()
    return Pacer(windows, clock=clock, sleep=clock.sleep, margin=0.0, **kw), clock


def test_requests_within_budget_start_at_once():
    pacer, clock = make([(3, 60.0)])
    assert [pacer.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert clock.slept == []


def test_fourth_request_waits_for_the_window_to_slide():
    pacer, clock = make([(3, 60.0)])
    for _ in range(3):
        pacer.acquire()
        clock.now += 1.0
    # requests at t=1000, 1001, 1002; now 1003: the 4th may start at 1060
    waited = pacer.acquire()
    assert abs(clock.now - 1060.0) < 1e-9
    assert abs(waited - 57.0) < 1e-9


def test_every_window_is_honoured():
    pacer, clock = make([(240, 60.0), (2400, 3600.0)])
    starts = []
    for _ in range(2401):
        pacer.acquire()
        starts.append(clock.now)
    # never more than 240 in any 60 s, and the 2401st waits for the hour window
    j = 0
    for i, t in enumerate(starts):
        while starts[j] <= t - 60.0:
            j += 1
        assert i - j + 1 <= 240
    assert starts[-1] - starts[0] >= 3600.0


def test_block_for_delays_everyone():
    pacer, clock = make([(100, 60.0)])
    pacer.acquire()
    pacer.block_for(37.0)
    pacer.acquire()
    assert abs(clock.now - 1037.0) < 1e-9


def test_margin_widens_the_period():
    clock = FakeClock()
    pacer = Pacer([(1, 10.0)], clock=clock, sleep=clock.sleep, margin=0.1)
    pacer.acquire()
    pacer.acquire()
    assert abs(clock.now - 1011.0) < 1e-9


def test_concurrency_cap():
    pacer = Pacer([], concurrency=2)
    inside = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=5)

    def work():
        nonlocal inside, peak
        with pacer.slot():
            with lock:
                inside += 1
                peak = max(peak, inside)
            try:
                gate.wait(timeout=0.2)
            except threading.BrokenBarrierError:
                pass
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2


def test_retry_after_header_forms():
    import httpx

    assert retry_after_header(httpx.Response(429, headers={"Retry-After": "12"})) == 12.0
    assert retry_after_header(httpx.Response(429)) is None
    assert retry_after_header(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    date = "Wed, 21 Oct 2015 07:28:00 GMT"  # in the past: no wait
    assert retry_after_header(httpx.Response(429, headers={"Retry-After": date})) == 0.0


def test_a_slot_is_dated_by_its_end():
    """A request made through slot() counts from the moment its answer came back: the server dated
    it somewhere before that, so a slow answer cannot make our window end before the server's."""
    pacer, clock = make([(2, 10.0)])
    for _ in range(2):
        with pacer.slot():
            clock.now += 3.0  # the round trip
    # started at 1000 and 1003, answered at 1003 and 1006: the third may start at 1013
    with pacer.slot():
        pass
    assert abs(clock.now - 1013.0) < 1e-9


def test_a_request_in_flight_never_leaves_the_window():
    pacer, clock = make([(1, 1.0)])
    started = threading.Event()
    release = threading.Event()
    entered: list[float] = []

    def slow():
        with pacer.slot():
            started.set()
            release.wait(5)

    t = threading.Thread(target=slow)
    t.start()
    started.wait(5)
    clock.now += 100.0  # long past the period, but still in flight: no room

    def second():
        with pacer.slot():
            entered.append(clock.now)

    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(0.3)
    assert entered == [] and t2.is_alive()
    release.set()
    t.join(5)
    t2.join(5)
    assert entered and entered[0] >= 1101.0  # a full period after the first one's end


def test_a_request_waiting_for_room_calls_on_wait_before_each_wait_and_none_without_waiting():
    pacer, clock = make([(1, 60.0)])
    seen: list[float] = []
    pacer.on_wait = lambda: seen.append(clock.now)
    pacer.acquire()
    assert seen == []  # room at once: no wait, no call
    pacer.acquire()  # a minute to wait, in slices of at most 5 s: called before each of them
    assert len(seen) == len(clock.slept) == 12 and all(s <= 5.0 for s in clock.slept)
    assert seen == [1000.0 + 5.0 * i for i in range(12)]
