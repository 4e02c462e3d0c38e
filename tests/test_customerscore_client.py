"""Customerscore client: request shape, batching by count and size, retries, typed errors.

Transport-level behaviour is checked with httpx.MockTransport (exact control of each answer);
the sandbox tests (tests/test_sync*.py) exercise the same client over real HTTP.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from cs_posthog.customerscore.client import (
    MAX_BYTES,
    CustomerscoreClient,
    ItemTooLargeError,
    batched,
    encode,
)
from cs_posthog.errors import (
    AuthError,
    BadRequestError,
    ExitCode,
    NotFoundError,
    PermissionDeniedError,
    ThrottledError,
    UnavailableError,
    UnexpectedStatusError,
)
from cs_posthog.http import RetryPolicy, rate_scale
from helpers import env_settings, fake_key

FAST = RetryPolicy(max_attempts=4, backoff_base=0.001, backoff_cap=0.01, max_throttle_wait=5)


def ack(req: httpx.Request, status: int = 200) -> httpx.Response:
    """Customerscore's acknowledgement of ``req`` (the documented shape: the processed count)."""
    body = json.loads(req.content)
    items = body.get("events", body.get("contacts"))
    return httpx.Response(status, json={"status": "ok", "processed": len(items)})


def make(handler, **kw) -> tuple[CustomerscoreClient, str]:
    key = fake_key("csk_", 24)
    kw.setdefault("policy", FAST)
    kw.setdefault("pace", False)
    c = CustomerscoreClient("http://cs.test/api/v1", key, "CS-TEST1", transport=httpx.MockTransport(handler), **kw,
                            settings=env_settings())
    return c, key


def event(i: int) -> dict:
    return {
        "name": "invoice_paid",
        "timestamp": 1712123456789 + i,
        "identification": {"customer": f"cus_{i}", "contact": f"con_{i}"},
        "data": {"customer": {}, "contact": {"email": f"u{i}@example.com"}},
    }


def test_track_request_shape_and_headers():
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return ack(req)

    c, key = make(handler)
    d = c.track([event(1), event(2)])
    assert d.count == 2 and d.attempts == 1 and not d.ambiguous
    (req,) = seen
    assert req.method == "POST"
    assert str(req.url) == "http://cs.test/api/tracker/track"  # the REST suffix is not part of the origin
    assert req.headers["customerscore-key"] == key
    assert req.headers["content-type"] == "application/json"
    body = json.loads(req.content)
    assert body == {"trackerKey": "CS-TEST1", "events": [event(1), event(2)]}
    assert c.stats.requests == 1 and c.stats.retries == 0


def test_contacts_request_shape():
    seen = []

    def handler(req):
        seen.append(req)
        return ack(req)

    c, _ = make(handler)
    contact = {"customer_external_id": "cus_1", "contact_external_id": "p1", "contact_name": "Ann Ó", "attributes": {"email": "a@x.io"}}
    c.upsert_contacts([contact])
    assert str(seen[0].url) == "http://cs.test/api/v1/contacts"
    assert json.loads(seen[0].content) == {"contacts": [contact]}


def test_batched_splits_by_count_and_size():
    items = [(i, encode(event(i))) for i in range(250)]
    batches = list(batched(items))
    assert [len(b) for b in batches] == [100, 100, 50]
    assert [p[0] for b in batches for p in b] == list(range(250))  # order kept, nothing lost

    # 1 MB items: only four fit under 5 MB with the envelope
    big = [(i, b'"' + b"x" * 1_000_000 + b'"') for i in range(9)]
    sizes = [len(b) for b in batched(big)]
    assert sizes == [4, 4, 1]
    for b in batched(big):
        assert 256 + sum(len(p[1]) + 1 for p in b) <= MAX_BYTES

    with pytest.raises(ItemTooLargeError):
        list(batched([(0, b"x" * MAX_BYTES)]))


def test_client_refuses_oversized_request():
    c, _ = make(lambda r: httpx.Response(200))
    with pytest.raises(ValueError):
        c.track([event(i) for i in range(101)])


def test_429_waits_retry_after_then_succeeds():
    calls = []

    def handler(req):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"message": "Too many requests"})
        return ack(req)

    c, _ = make(handler, pace=True)  # with a pacer, the wait is enforced by blocking the pacer
    d = c.track([event(1)])
    assert d.attempts == 2 and not d.ambiguous
    assert calls[1] - calls[0] >= 0.95
    assert c.stats.throttled == 1 and c.stats.retries == 1


def test_429_with_a_long_wait_gives_up_as_throttled():
    c, _ = make(lambda r: httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(ThrottledError) as ei:
        c.track([event(1)])
    assert ei.value.exit_code == ExitCode.TEMPFAIL


def test_5xx_is_retried_and_not_ambiguous():
    answers = iter([500, 502, 200])

    def handler(req):
        return ack(req, next(answers))

    c, _ = make(handler)
    d = c.upsert_contacts([{"customer_external_id": "c", "contact_external_id": "p", "contact_name": "n"}])
    assert d.attempts == 3 and not d.ambiguous
    assert c.stats.retries == 2 and c.stats.ambiguous_retries == 0


def test_read_timeout_retry_is_reported_ambiguous():
    n = {"calls": 0}

    def handler(req):
        n["calls"] += 1
        if n["calls"] == 1:
            raise httpx.ReadTimeout("stalled", request=req)
        return ack(req)

    c, _ = make(handler)
    d = c.track([event(1), event(2)])
    assert d.ambiguous and d.attempts == 2
    assert c.stats.ambiguous_retries == 1


def test_connect_error_retry_is_not_ambiguous():
    n = {"calls": 0}

    def handler(req):
        n["calls"] += 1
        if n["calls"] == 1:
            raise httpx.ConnectError("refused", request=req)
        return ack(req)

    c, _ = make(handler)
    d = c.track([event(1)])
    assert not d.ambiguous and d.attempts == 2


def test_persistent_5xx_becomes_unavailable():
    c, _ = make(lambda r: httpx.Response(503))
    with pytest.raises(UnavailableError) as ei:
        c.track([event(1)])
    assert ei.value.exit_code == ExitCode.TEMPFAIL
    assert c.stats.requests == FAST.max_attempts


@pytest.mark.parametrize(
    "status,body,exc,code",
    [
        (401, {"message": "Invalid API key"}, AuthError, ExitCode.NOPERM),
        (403, {"message": "Forbidden"}, PermissionDeniedError, ExitCode.NOPERM),
        (404, {}, NotFoundError, ExitCode.CONFIG),
        # only a 400 naming the offending items is a per-item rejection (issue 11, item 4)
        (400, {"error": "validation_error", "message": "The request is invalid.",
               "details": [{"field": "events[0].name", "message": "This field is required."}]},
         BadRequestError, ExitCode.USAGE),
        (400, {"message": "contacts[0].contact_name is required"}, UnexpectedStatusError, ExitCode.UNAVAILABLE),
        (413, {"message": "Payload too large"}, UnexpectedStatusError, ExitCode.UNAVAILABLE),
        (422, {"errors": [{"message": "bad date"}]}, UnexpectedStatusError, ExitCode.UNAVAILABLE),
    ],
)
def test_4xx_are_typed_and_never_retried(status, body, exc, code):
    calls = []

    def handler(req):
        calls.append(1)
        return httpx.Response(status, json=body)

    c, key = make(handler)
    with pytest.raises(exc) as ei:
        c.track([event(1)])
    assert type(ei.value) is exc
    assert ei.value.exit_code == code and ei.value.status == status
    assert len(calls) == 1
    assert key not in str(ei.value)
    if body.get("message"):
        assert body["message"] in str(ei.value)


def test_pacer_keeps_under_the_per_minute_budget(monkeypatch):
    # 3 requests a minute, clock scaled 60x: 3 per second. Three go at once, the fourth waits ~1 s.
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "60")
    times = []

    def handler(req):
        times.append(time.monotonic())
        return ack(req)

    c, _ = make(handler, pace=None, tracker_per_minute=3)
    for i in range(4):
        c.track([event(i)])
    assert times[2] - times[0] < 0.5
    assert times[3] - times[0] >= 0.95
    assert c.stats.throttled == 0


def test_rate_scale_env(monkeypatch):
    monkeypatch.delenv("CS_POSTHOG_RATE_SCALE", raising=False)
    assert rate_scale(env_settings()) == 1.0
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "60")
    assert rate_scale(env_settings()) == 60.0
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")
    assert rate_scale(env_settings()) is None
    c, _ = make(lambda r: httpx.Response(200), pace=None)
    assert c.tracker_pacer is None and c.rest_pacer is None
