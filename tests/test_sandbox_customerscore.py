"""The sandbox Customerscore over real HTTP: auth, validation, limits, silent drops, hooks, faults."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import pytest

from cs_posthog.sandbox.runner import get_json, get_jsonl, http_request, start_sandbox

UNAUTHORIZED = {"error": "unauthorized", "message": "Missing or invalid customerscore-key header."}


@pytest.fixture(scope="module")
def sb():
    with start_sandbox(events=300, persons=200, customers=30, seed=3) as proc:
        yield proc


def cs(sb, path: str, body=None, *, key: str | None = "default", raw: bytes | None = None,
       content_type: str = "application/json"):
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["customerscore-key"] = sb.info["customerscore_api_key"] if key == "default" else key
    data = raw if raw is not None else json.dumps(body).encode()
    status, resp_headers, payload = http_request("POST", sb.customerscore_url + path, raw=data, headers=headers)
    return status, (json.loads(payload) if payload else None), resp_headers


def customers(sb) -> set[str]:
    return {c["external_id"] for c in get_json(sb.customerscore_url + "/_sandbox/customers")}


def received(sb, what: str, *, as_kept: bool = False) -> list:
    return get_jsonl(sb.customerscore_url + f"/_sandbox/received/{what}" + ("?as_kept=1" if as_kept else ""))


def contact(customer: str, cid: str, **kw) -> dict:
    return {"customer_external_id": customer, "contact_external_id": cid, "contact_name": f"Name {cid}", **kw}


def event(sb, customer: str, name: str = "invoice_paid", ts: int = 1_712_123_456_789, **kw) -> dict:
    return {"name": name, "timestamp": ts, "identification": {"customer": customer, "contact": "c1"}, **kw}


def track(sb, events: list, tracker_key: str | None = None, **kw):
    return cs(sb, "/api/tracker/track", {"trackerKey": tracker_key or sb.info["tracker_key"], "events": events}, **kw)


def test_customers_are_the_companies_minus_about_one_in_ten(sb):
    persons = get_jsonl(sb.posthog_url + "/_sandbox/dump/persons")
    orgs = {p["properties"].get("organization_id") for p in persons} - {None, ""}
    existing = customers(sb)
    assert existing and sb.info["customerscore_customers"] == len(existing)
    assert orgs - existing and existing & orgs  # some companies of the data are unknown to Customerscore
    assert 0.75 * sb.info["customers"] <= len(existing) < sb.info["customers"]
    listed = get_json(sb.customerscore_url + "/_sandbox/customers")
    assert all(c["name"] for c in listed)


def test_bad_or_missing_key_is_401(sb):
    c = contact(sorted(customers(sb))[0], "k1")
    assert cs(sb, "/api/v1/contacts", {"contacts": [c]}, key=None)[:2] == (401, UNAUTHORIZED)
    assert cs(sb, "/api/v1/contacts", {"contacts": [c]}, key="wrong")[:2] == (401, UNAUTHORIZED)
    assert track(sb, [event(sb, "x")], key=None)[:2] == (401, UNAUTHORIZED)
    status, body, _ = track(sb, [event(sb, sorted(customers(sb))[0])], tracker_key="CS-WRONG")
    assert status == 401 and body["error"] == "invalid_tracker_key"
    assert "k1" not in {x["contact_external_id"] for x in received(sb, "contacts")}


def test_accepted_items_are_recorded_in_order_with_duplicates(sb):
    cust = sorted(customers(sb))
    batch = [contact(cust[0], "ord-1", attributes={"email": "a@example.com", "seats": 3, "vip": True,
                                                    "since": "2024-01-31"}),
             contact(cust[1], "ord-2", metrics=[{"date": "2024-05-01", "logins": 3}])]
    status, body, _ = cs(sb, "/api/v1/contacts", {"contacts": batch})
    assert (status, body) == (200, {"status": "ok", "processed": 2})
    assert cs(sb, "/api/v1/contacts/", {"contacts": batch[:1]})[0] == 200  # trailing slash tolerated
    got = [c for c in received(sb, "contacts") if c["contact_external_id"].startswith("ord-")]
    assert got == [batch[0], batch[1], batch[0]]
    evs = [event(sb, cust[0], "ord_event", 1_712_000_000_000 + i) for i in range(3)]
    assert track(sb, evs)[:2] == (200, {"status": "ok", "processed": 3})
    assert track(sb, evs[:1])[0] == 200
    got = [e for e in received(sb, "events") if e["name"] == "ord_event"]
    assert got == [*evs, evs[0]]


def test_attributes_that_are_no_defined_codename_are_dropped_silently(sb):
    """Customerscore keeps an attribute only under a codename defined in the account: the others are
    dropped, the contact kept, the answer the same 200."""
    defined = get_json(sb.customerscore_url + "/_sandbox/attributes")
    assert {"email", "plan", "signup_date"} <= set(defined) and "signed_up_at" not in defined
    cust = sorted(customers(sb))[0]
    before = get_json(sb.customerscore_url + "/_sandbox/stats")["attributes_dropped"]
    sent = contact(cust, "attr-1", attributes={"email": "a@example.com", "plan": "pro", "signed_up_at": "2024-01-31",
                                               "Plan": "x", "signup_date": "2024-01-31"})
    assert cs(sb, "/api/v1/contacts", {"contacts": [sent]})[:2] == (200, {"status": "ok", "processed": 1})
    [kept] = [c for c in received(sb, "contacts", as_kept=True) if c["contact_external_id"] == "attr-1"]
    assert kept["attributes"] == {"email": "a@example.com", "plan": "pro", "signup_date": "2024-01-31"}
    assert [c for c in received(sb, "contacts") if c["contact_external_id"] == "attr-1"] == [sent]
    assert get_json(sb.customerscore_url + "/_sandbox/stats")["attributes_dropped"] == before + 2


def test_unknown_customers_are_dropped_silently(sb):
    existing = customers(sb)
    persons = get_jsonl(sb.posthog_url + "/_sandbox/dump/persons")
    # customer ids may be JSON numbers on the Persons (--id-type mixed): their text is the external id
    ids = {p["properties"].get("organization_id") for p in persons} - {None, ""}
    missing = sorted({v if isinstance(v, str) else json.dumps(v) for v in ids} - existing)
    assert missing, "the data should hold a company unknown to Customerscore"
    before = get_json(sb.customerscore_url + "/_sandbox/stats")
    known = sorted(existing)[0]
    batch = [contact(missing[0], "drop-1"), contact("org_nonexistent", "drop-2"), contact(known, "keep-1")]
    assert cs(sb, "/api/v1/contacts", {"contacts": batch})[:2] == (200, {"status": "ok", "processed": 3})
    evs = [event(sb, missing[0], "drop_event"), event(sb, known, "keep_event")]
    assert track(sb, evs)[:2] == (200, {"status": "ok", "processed": 2})
    ids = {c["contact_external_id"] for c in received(sb, "contacts")}
    assert "keep-1" in ids and not {"drop-1", "drop-2"} & ids
    names = {e["name"] for e in received(sb, "events")}
    assert "keep_event" in names and "drop_event" not in names
    after = get_json(sb.customerscore_url + "/_sandbox/stats")
    assert after["contacts_dropped"] - before["contacts_dropped"] == 2
    assert after["contacts_received"] - before["contacts_received"] == 1
    assert after["events_dropped"] - before["events_dropped"] == 1
    assert after["events_received"] - before["events_received"] == 1
    # a customer created through the API makes its contacts stick
    status, _, _ = cs(sb, "/api/v1/customers", {"customers": [{"external_id": missing[0], "name": "Late Co"}]})
    assert status == 200 and missing[0] in customers(sb)
    assert cs(sb, "/api/v1/contacts", {"contacts": [contact(missing[0], "drop-1b")]})[0] == 200
    assert "drop-1b" in {c["contact_external_id"] for c in received(sb, "contacts")}


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c.pop("customer_external_id"), "contacts[0].customer_external_id"),
    (lambda c: c.pop("contact_external_id"), "contacts[0].contact_external_id"),
    (lambda c: c.update(contact_name=""), "contacts[0].contact_name"),
    (lambda c: c.update(contact_name="x" * 256), "contacts[0].contact_name"),
    (lambda c: c.update(contact_external_id=12), "contacts[0].contact_external_id"),
    (lambda c: c.update(attributes=[1]), "contacts[0].attributes"),
    (lambda c: c.update(attributes={"nested": {"a": 1}}), "contacts[0].attributes.nested"),
    (lambda c: c.update(metrics=[{"date": "2024-01-01"}, {"date": "2024-01-01"}]), "contacts[0].metrics[1].date"),
    (lambda c: c.update(metrics=[{"date": "01/02/2024"}]), "contacts[0].metrics[0].date"),
    (lambda c: c.update(metrics=[{"date": f"2024-01-{i % 28 + 1:02d}"} for i in range(201)]), "contacts[0].metrics"),
])
def test_contact_validation(sb, mutate, field):
    c = contact(sorted(customers(sb))[0], "invalid-1")
    mutate(c)
    status, body, _ = cs(sb, "/api/v1/contacts", {"contacts": [c, contact(sorted(customers(sb))[0], "invalid-2")]})
    assert status == 400 and body["error"] == "validation_error"
    assert field in [d["field"] for d in body["details"]]
    ids = {x["contact_external_id"] for x in received(sb, "contacts")}
    assert not {"invalid-1", "invalid-2"} & ids  # the whole request is rejected


def test_255_characters_are_allowed(sb):
    c = contact(sorted(customers(sb))[0], "y" * 255)
    c["contact_name"] = "n" * 255
    assert cs(sb, "/api/v1/contacts", {"contacts": [c]})[0] == 200


def test_batch_limits_and_body_limits(sb):
    cust = sorted(customers(sb))[0]
    status, body, _ = cs(sb, "/api/v1/contacts", {"contacts": [contact(cust, f"m{i}") for i in range(101)]})
    assert status == 400 and body["details"][0]["field"] == "contacts"
    assert cs(sb, "/api/v1/contacts", {"contacts": [contact(cust, f"m{i}") for i in range(100)]})[0] == 200
    assert cs(sb, "/api/v1/customers", {"customers": []})[0] == 400
    assert cs(sb, "/api/v1/contacts", {"people": []})[0] == 400
    assert cs(sb, "/api/v1/contacts", [1, 2])[0] == 400
    big = [contact(cust, f"big{i}", attributes={"blob": "z" * 53_000}) for i in range(100)]
    raw = json.dumps({"contacts": big}).encode()
    assert len(raw) > 5 * 1024 * 1024
    status, body, _ = cs(sb, "/api/v1/contacts", raw=raw)
    assert status == 413 and body["error"] == "payload_too_large"
    status, body, _ = cs(sb, "/api/v1/contacts", raw=b"{nope")
    assert status == 400 and body["error"] == "invalid_json"
    status, body, _ = cs(sb, "/api/v1/contacts", {"contacts": [contact(cust, "ct")]}, content_type="text/plain")
    assert status == 415 and body["error"] == "unsupported_media_type"
    assert "big0" not in {x["contact_external_id"] for x in received(sb, "contacts")}


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.pop("name"), "events[0].name"),
    (lambda e: e.update(name="n" * 256), "events[0].name"),
    (lambda e: e.update(timestamp=1_712_123_456), "events[0].timestamp"),  # seconds, not ms
    (lambda e: e.update(timestamp="2024-01-01"), "events[0].timestamp"),
    (lambda e: e.update(timestamp=1.5e12), "events[0].timestamp"),
    (lambda e: e.pop("identification"), "events[0].identification"),
    (lambda e: e["identification"].pop("customer"), "events[0].identification.customer"),
    (lambda e: e["identification"].update(contact="c" * 256), "events[0].identification.contact"),
    (lambda e: e.update(data={"contact": "x"}), "events[0].data.contact"),
])
def test_event_validation(sb, mutate, field):
    e = event(sb, sorted(customers(sb))[0], "invalid_event")
    mutate(e)
    status, body, _ = track(sb, [e])
    assert status == 400 and field in [d["field"] for d in body["details"]]
    assert "invalid_event" not in {x["name"] for x in received(sb, "events")}


def test_tracker_batch_limits(sb):
    cust = sorted(customers(sb))[0]
    assert track(sb, [event(sb, cust, "many") for _ in range(101)])[0] == 400
    assert cs(sb, "/api/tracker/track", {"events": [event(sb, cust)]})[0] == 400  # no trackerKey
    assert track(sb, [])[0] == 200  # an empty batch: how the keys are checked, records nothing


def test_unknown_route_and_method(sb):
    assert cs(sb, "/api/v1/nothing", {})[0] == 404
    status, _, _ = http_request("GET", sb.customerscore_url + "/api/v1/contacts",
                                headers={"customerscore-key": sb.info["customerscore_api_key"]})
    assert status == 405


def test_stats_count_requests_by_route_and_status(sb):
    before = get_json(sb.customerscore_url + "/_sandbox/stats")
    cust = sorted(customers(sb))[0]
    cs(sb, "/api/v1/contacts", {"contacts": [contact(cust, "st-1")]})
    cs(sb, "/api/v1/contacts", {"contacts": [contact(cust, "st-2")]}, key="bad")
    after = get_json(sb.customerscore_url + "/_sandbox/stats")
    route = "POST /api/v1/contacts"
    assert after["requests"][route] - before["requests"].get(route, 0) == 2
    assert after["by_route_status"][route]["401"] - before["by_route_status"].get(route, {}).get("401", 0) == 1
    assert after["statuses"]["200"] - before["statuses"].get("200", 0) == 1
    assert {"throttled", "faults", "events_received", "events_dropped", "contacts_received",
            "contacts_dropped", "customers"} <= set(after)


def _track_burst(proc, cust: str, n_threads: int, per_thread: int) -> list[tuple[int, dict]]:
    body = json.dumps({"trackerKey": proc.info["tracker_key"],
                       "events": [{"name": "x", "timestamp": 1_712_000_000_000,
                                   "identification": {"customer": cust}}]}).encode()
    headers = {"Content-Type": "application/json", "customerscore-key": proc.info["customerscore_api_key"]}
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection(urlsplit(proc.customerscore_url).netloc, timeout=30)
        for _ in range(per_thread):
            conn.request("POST", "/api/tracker/track", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            with lock:
                results.append((resp.status, dict(resp.getheaders())))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_real_rate_limit_is_exact_with_retry_after():
    with start_sandbox(events=50, persons=20, customers=5, seed=21, rate_limits="real") as proc:
        cust = get_json(proc.customerscore_url + "/_sandbox/customers")[0]["external_id"]
        t0 = time.monotonic()
        results = _track_burst(proc, cust, n_threads=3, per_thread=70)
        elapsed = time.monotonic() - t0
        assert elapsed < 50
        statuses = [s for s, _ in results]
        assert (statuses.count(200), statuses.count(429)) == (200, 10)  # 200 tracker requests a minute
        limited = [h for s, h in results if s == 429]
        assert all(60 - elapsed - 2 <= int(h["Retry-After"]) <= 60 for h in limited)
        stats = get_json(proc.customerscore_url + "/_sandbox/stats")
        assert stats["throttled"] == 10 and stats["events_received"] == 200
        # the REST budget (500/minute) is separate from the tracker's
        headers = {"Content-Type": "application/json", "customerscore-key": proc.info["customerscore_api_key"]}
        contacts = {"contacts": [{"customer_external_id": cust, "contact_external_id": "r", "contact_name": "R"}]}
        assert http_request("POST", proc.customerscore_url + "/api/v1/contacts", body=contacts,
                            headers=headers)[0] == 200


def test_fast_rate_limit_answers_429_with_retry_after():
    with start_sandbox(events=50, persons=20, customers=5, seed=21, rate_limits="fast") as proc:
        cust = get_json(proc.customerscore_url + "/_sandbox/customers")[0]["external_id"]
        limited: list = []
        deadline = time.monotonic() + 20
        while not limited and time.monotonic() < deadline:  # 200 per second: burst until refused
            limited = [h for s, h in _track_burst(proc, cust, n_threads=4, per_thread=70) if s == 429]
        assert limited, "never limited at 200 tracker requests per (scaled) minute"
        assert all(h["Retry-After"] == "1" for h in limited)
        time.sleep(1.1)
        assert _track_burst(proc, cust, n_threads=1, per_thread=1)[0][0] == 200


def test_faulted_requests_are_never_applied():
    with start_sandbox(events=50, persons=20, customers=5, seed=22, faults=0.5, stall_s=0.3) as proc:
        cust = get_json(proc.customerscore_url + "/_sandbox/customers")[0]["external_id"]
        headers = {"Content-Type": "application/json", "customerscore-key": proc.info["customerscore_api_key"]}
        host = urlsplit(proc.customerscore_url).netloc
        applied, outcomes = [], {}
        for i in range(60):
            body = json.dumps({"contacts": [{"customer_external_id": cust, "contact_external_id": f"f{i}",
                                             "contact_name": f"F {i}"}]})
            conn = http.client.HTTPConnection(host, timeout=5)
            try:
                conn.request("POST", "/api/v1/contacts", body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                kind = str(resp.status)
                if resp.status == 200:
                    applied.append(f"f{i}")
                elif resp.status == 429:
                    assert resp.getheader("Retry-After") == "1"
                    assert json.loads(payload)["error"] == "rate_limited"
                elif resp.status == 500:
                    assert json.loads(payload)["error"] == "internal_error"
            except (http.client.RemoteDisconnected, ConnectionResetError):
                kind = "lost"
            finally:
                conn.close()
            outcomes[kind] = outcomes.get(kind, 0) + 1
        assert {"200", "500", "502", "429", "lost"} <= set(outcomes), outcomes
        got = [c["contact_external_id"] for c in get_jsonl(proc.customerscore_url + "/_sandbox/received/contacts")]
        assert got == applied
        stats = get_json(proc.customerscore_url + "/_sandbox/stats")
        assert sum(stats["faults"].values()) == 60 - len(applied)
