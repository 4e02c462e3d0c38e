"""PostHog's official Python SDK (the ``posthog`` package, unmodified, pinned in the test extra) feeds the
sandbox's capture endpoints (Persons, merges, groups); then ``sync`` delivers what README's rules say. The
sandbox starts empty (``--events 0``): every Person and event here was made by the SDK. Expectations are
written per event uuid (the uuid ``capture`` returns) from the sandbox's raw dumps, not from the sync's code.

Also the capture endpoints themselves, with what other SDKs send (posthog-js: gzip-js, base64 forms, GET
``data=``) and what PostHog's capture refuses (docs/posthog-ingestion.md)."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from posthog import Posthog

from cs_posthog.config import Config, save_config
from cs_posthog.sandbox.runner import configure, get_json, get_jsonl, http_request, start_sandbox
from helpers import env_paths, run_cli, sandbox_env
from sync_expected import Sandbox, bag, expected_group_contacts, expected_group_events, ms
from test_sync_engine import Received, make_config, sync

SELECTED = ["$pageview", "dashboard_viewed", "report_created", "invoice_paid"]


@pytest.fixture
def sb(monkeypatch) -> Iterator[Sandbox]:
    with start_sandbox(events=0, persons=0, customers=12, seed=5) as proc:
        box = Sandbox(proc.info)
        sandbox_env(monkeypatch, box.info)
        yield box


@contextmanager
def sdk(sb: Sandbox, **kw) -> Iterator[Posthog]:
    """The SDK as an app configures it: the project token and the sandbox as host. Leaving the block
    flushes and shuts it down (what an app does at exit)."""
    client = Posthog(sb.info["project_token"], host=sb.ph, **kw)
    try:
        yield client
    finally:
        client.flush()
        client.shutdown()


def dump(sb: Sandbox) -> tuple[dict[str, dict], list[dict]]:
    return sb.persons(), sb.events()


def person_of(persons: dict[str, dict], distinct_id: str) -> dict:
    found = [p for p in persons.values() if distinct_id in p["distinct_ids"]]
    assert len(found) == 1, (distinct_id, found)
    return found[0]


def by_uuid(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        out.setdefault(e["uuid"], []).append(e)
    return out


def payload(event: dict, person: dict, customer: str) -> dict:
    """What Customerscore gets for one stored event (customerscore-api.md): the Person as it is now."""
    email = person["properties"].get("email")
    return {"name": event["event"], "timestamp": ms(event["timestamp"]),
            "identification": {"customer": customer, "contact": person["id"]},
            "data": {"customer": {}, "contact": {"email": email} if email else {}}}


def customers(sb: Sandbox) -> list[str]:
    return sorted(sb.customers())


def test_anonymous_events_then_identify_then_the_customer_id_later(sb):
    c1 = customers(sb)[0]
    with sdk(sb) as ph:
        # a visitor browses anonymously, signs up ($identify, as posthog-js sends it) and uses the product
        anon = [ph.capture("$pageview", distinct_id="anon-ann", properties={"$current_url": "/pricing"}),
                ph.capture("$pageview", distinct_id="anon-ann", properties={"$current_url": "/signup"})]
        ph.capture("$identify", distinct_id="ann", properties={"$anon_distinct_id": "anon-ann",
                                                               "$set": {"email": "ann@example.com"}})
        before = [ph.capture("dashboard_viewed", distinct_id="ann")]
        # a returning user on a new device: a Person of their own until they log in there
        phone = [ph.capture("$pageview", distinct_id="anon-phone"),
                 ph.capture("report_created", distinct_id="anon-phone")]
    with sdk(sb) as ph:  # a later batch: ingested after the ones above
        ph.capture("$pageview", distinct_id="bob", properties={"$set": {"email": "bob@example.com",
                                                                        "organization_id": c1}})
    persons, events = dump(sb)
    ann = person_of(persons, "ann")
    assert sorted(ann["distinct_ids"]) == ["ann", "anon-ann"] and ann["is_identified"]
    assert ann["properties"] == {"email": "ann@example.com"}
    stored = by_uuid(events)
    assert {stored[u][0]["person_id"] for u in anon + before} == {ann["id"]}
    assert [stored[u][0]["person_properties"] for u in anon] == [{}, {}]  # stamped before the identify
    phone_person = person_of(persons, "anon-phone")
    bob_before = person_of(persons, "bob")
    assert phone_person["id"] != bob_before["id"]

    # no overlap: every event here is ingested within seconds, and the default 10-minute overlap would
    # read them all again; without it each run reads what was ingested since the last one
    cfg = make_config(sb, selected=SELECTED, filters=[], overlap_minutes=0)
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    # Bob's $pageview goes to c1; Ann (no customer id yet) and the phone (anonymous) are skipped
    bob_view = next(e for e in events if e["distinct_id"] == "bob")
    assert bag(got("events")) == bag([payload(bob_view, bob_before, c1)])
    assert report.events_skipped_no_customer == len(anon + before + phone)
    assert [c["contact_external_id"] for c in got("contacts")] == [bob_before["id"]]

    # Bob logs in on the phone: $identify merges the phone's Person into his, its events follow him
    # (person_id: PostHog's person overrides); Ann's company gets set on her Person later.
    with sdk(sb) as ph:
        ph.capture("$identify", distinct_id="bob", properties={"$anon_distinct_id": "anon-phone"})
        ph.set(distinct_id="ann", properties={"organization_id": c1, "name": "Ann"})
        after = [ph.capture("report_created", distinct_id="ann")]
    persons, events = dump(sb)
    bob = person_of(persons, "bob")
    assert bob["id"] == bob_before["id"] and sorted(bob["distinct_ids"]) == ["anon-phone", "bob"]
    assert phone_person["id"] not in persons
    stored = by_uuid(events)
    assert {stored[u][0]["person_id"] for u in phone} == {bob["id"]}
    ann = person_of(persons, "ann")
    assert ann["properties"] == {"email": "ann@example.com", "organization_id": c1, "name": "Ann"}

    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    # Ann became attachable: her events from before her customer id come once, as a backfill, with the
    # new one. The phone's events are Bob's now; the last run skipped them (no customer id) and Bob was
    # attachable already, so the overlap and Ann's kind of backfill would not bring them: the $identify
    # that merged the phone does (6e), and they go to Bob's customer.
    want = [payload(stored[u][0], ann, c1) for u in anon + before + after]
    want += [payload(stored[u][0], bob, c1) for u in phone]
    assert bag(got("events")) == bag(want)
    assert report.events_backfilled_for_new_persons == len(anon + before + phone)
    assert report.persons_became_attachable == 1
    assert report.distinct_ids_merged == 1
    assert {c["contact_external_id"]: c["customer_external_id"] for c in got("contacts")} == {ann["id"]: c1}

    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert got("events") == [] and report.events_sent == 0


def test_a_user_who_changes_company(sb):
    c1, c2 = customers(sb)[:2]
    with sdk(sb) as ph:
        ph.set(distinct_id="carla", properties={"email": "carla@example.com", "organization_id": c1})
        old = [ph.capture("invoice_paid", distinct_id="carla", properties={"amount": 49}),
               ph.capture("$pageview", distinct_id="carla")]
    cfg = make_config(sb, selected=SELECTED, filters=[])
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    persons, events = dump(sb)
    carla = person_of(persons, "carla")
    stored = by_uuid(events)
    assert bag(got("events")) == bag([payload(stored[u][0], carla, c1) for u in old])
    assert report.events_sent == 2

    with sdk(sb) as ph:  # she moves to c2
        ph.set(distinct_id="carla", properties={"organization_id": c2})
        new = [ph.capture("report_created", distinct_id="carla")]
    persons, events = dump(sb)
    carla = person_of(persons, "carla")
    stored = by_uuid(events)
    assert [stored[u][0]["person_properties"]["organization_id"] for u in old + new] == [c1, c1, c2]
    got = Received(sb)
    r = run_cli("sync", "--json")  # as a user runs it
    assert r.exit_code == 0, r.stderr
    # from now on under c2; what was delivered under c1 stays there, nothing is sent again (the overlap
    # re-reads the old events: already delivered, dropped)
    assert json.loads(r.stdout)["events_sent"] == 1
    assert bag(got("events")) == bag([payload(stored[u][0], carla, c2) for u in new])
    assert [(c["contact_external_id"], c["customer_external_id"]) for c in got("contacts")] == [(carla["id"], c2)]


def test_an_sdk_retry_stores_the_batch_twice_and_the_sync_sends_it_once(sb):
    c1 = customers(sb)[0]
    with sdk(sb) as ph:
        ph.set(distinct_id="dan", properties={"email": "dan@example.com", "organization_id": c1})
    # the next batch's first attempt fails with a 503 (nothing stored: the SDK retries), the second is
    # stored but its answer is lost (the SDK retries again): PostHog then holds that batch twice
    configure(sb.ph, ingest_faults=["503", "drop_after_store"])
    with sdk(sb, flush_at=50, flush_interval=120) as ph:  # one batch, however slow the machine
        sent = [ph.capture("dashboard_viewed", distinct_id="dan", properties={"n": i}) for i in range(5)]
    assert configure(sb.ph)["ingest_faults"] == []
    persons, events = dump(sb)
    dan = person_of(persons, "dan")
    stored = by_uuid(events)
    assert [len(stored[u]) for u in sent] == [2] * 5
    for u in sent:
        first, second = stored[u]
        # ingested again later; each attempt has its own sent_at, so the skew correction (timestamp - sent_at
        # + the time it arrived) may differ by the time the request took, as on PostHog
        assert first["created_at"] < second["created_at"] and first["event"] == second["event"]
    stats = get_json(sb.ph + "/_sandbox/stats")["by_route_status"]["POST /batch/"]
    assert stats == {"200": 2, "503": 1, "dropped": 1}

    cfg = make_config(sb, selected=SELECTED, filters=[], overlap_minutes=0)  # see the first test
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert bag(got("events")) == bag([payload(stored[u][0], dan, c1) for u in sent])
    assert report.events_duplicates_dropped == 5

    # the SDK sends the same events again much later (a retry after a restart: same uuids, same
    # timestamps): stored a third time, delivered uuids are dropped
    with sdk(sb) as ph:
        for u in sent:
            e = stored[u][0]
            ph.capture(e["event"], distinct_id="dan", uuid=u, properties=e["properties"],
                       timestamp=datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")))
    assert [len(v) for u, v in by_uuid(sb.events()).items() if u in sent] == [3] * 5
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert got("events") == [] and report.events_duplicates_dropped == 5


# ---------------------------------------------------------------------------------------------
# The capture endpoints as other clients use them
# ---------------------------------------------------------------------------------------------


def post(sb: Sandbox, path: str, raw: bytes, headers: dict | None = None) -> tuple[int, str]:
    status, _, body = http_request("POST", sb.ph + path, raw=raw, headers=headers or {})
    return status, body.decode()


def js_event(sb: Sandbox, name: str, distinct_id: str, **props) -> dict:
    return {"event": name, "properties": {"token": sb.info["project_token"], "distinct_id": distinct_id, **props}}


def test_posthog_js_encodings_are_ingested(sb):
    ok = (200, '{"status":"Ok"}')
    body = json.dumps([js_event(sb, "gzip-js", "web-1")]).encode()
    assert post(sb, "/e/?compression=gzip-js&ver=1.200.0", gzip.compress(body), {"Content-Type": "text/plain"}) == ok
    form = "data=" + base64.b64encode(json.dumps(js_event(sb, "form-b64", "web-2")).encode()).decode().replace(
        "+", "%2B").replace("=", "%3D")
    assert post(sb, "/capture/", form.encode(), {"Content-Type": "application/x-www-form-urlencoded"}) == ok
    data = base64.b64encode(json.dumps(js_event(sb, "get-b64", "web-3")).encode()).decode()
    status, _, answer = http_request("GET", sb.ph + "/i/v0/e/?data=" + data.replace("+", "%2B").replace("=", "%3D"))
    assert (status, answer.decode()) == ok
    batch = {"api_key": sb.info["project_token"], "batch": [{"event": "plain", "distinct_id": 42}]}
    assert post(sb, "/batch", json.dumps(batch).encode(), {"Content-Type": "application/json"}) == ok
    # labelled gzip but not: capture trusts the bytes, not the label
    body = json.dumps([js_event(sb, "mislabelled", "web-4")]).encode()
    labels = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert post(sb, "/e/?compression=gzip-js", body, labels) == ok
    stored = {e["event"]: e for e in sb.events()}
    assert sorted(stored) == ["form-b64", "get-b64", "gzip-js", "mislabelled", "plain"]
    assert stored["plain"]["distinct_id"] == "42"  # a number as its text
    assert {e["distinct_id"] for e in stored.values()} == {"web-1", "web-2", "web-3", "web-4", "42"}


@pytest.mark.parametrize(("body", "headers", "status", "text"), [
    (b'{"api_key": "phx_0123456789", "batch": [{"event": "e", "distinct_id": "d"}]}', {}, 401,
     "API key is not valid: personal_api_key"),
    (b'{"api_key": "", "batch": [{"event": "e", "distinct_id": "d"}]}', {}, 401, "API key is not valid: empty"),
    (b'{"event": "e", "distinct_id": "d"}', {}, 401, "event submitted without an api_key"),
    (b'[{"event": "e", "distinct_id": "d", "token": "phc_a"}, {"event": "e", "distinct_id": "d", "token": "phc_b"}]',
     {}, 401, "batch submitted with inconsistent api_key values"),
    (b'{"api_key": "TOKEN", "batch": []}', {}, 400, "request holds no event"),
    (b'{"api_key": "TOKEN", "batch": [{"event": "ok", "distinct_id": "d"}, {"distinct_id": "d"}]}', {}, 400,
     "event submitted with an empty event name"),
    (b'{"api_key": "TOKEN", "batch": [{"event": "ok", "distinct_id": "d"}, {"event": "e"}]}', {}, 400,
     "event submitted without a distinct_id"),
    (b'{"api_key": "TOKEN", "batch": [{"event": "e", "distinct_id": ""}]}', {}, 400,
     "event submitted with an empty distinct_id"),
    (b'{"api_key": "TOKEN", "batch": [{"event": "e", "distinct_id": "d", "uuid": "nope"}]}', {}, 400,
     "failed to parse request: "),
    (b'{"api_key": "TOKEN", "batch": [', {}, 400, "failed to parse request: "),
    (b"\x1f\x8b\x08garbage", {"Content-Encoding": "gzip"}, 400, "failed to decode request: "),
])
def test_capture_refuses_what_posthog_refuses_and_stores_nothing_of_it(sb, body, headers, status, text):
    got_status, got_text = post(sb, "/batch/", body.replace(b"TOKEN", sb.info["project_token"].encode()),
                                {"Content-Type": "application/json", **headers})
    assert got_status == status
    assert got_text.startswith(text) and (got_text == text or text.endswith(": "))
    assert sb.events() == [] and sb.persons() == {}


def test_a_token_no_project_has_is_accepted_and_dropped_and_the_other_project_gets_its_own(sb):
    for token, name in (("phc_" + "x" * 40, "nowhere"), (sb.info["other_project_token"], "staging")):
        status, text = post(sb, "/batch/", json.dumps({"api_key": token, "batch": [
            {"event": name, "distinct_id": "d"}]}).encode(), {"Content-Type": "application/json"})
        assert (status, text) == (200, '{"status":"Ok"}')
    assert sb.events() == []  # neither is the data project's
    stats = get_json(sb.ph + "/_sandbox/stats")
    assert stats["ingest_events_unknown_token"] == 1 and stats["ingest_events_stored"] == 1
    other = get_json(f"{sb.ph}/api/projects/{sb.info['other_project_id']}/event_definitions/",
                     headers={"Authorization": f"Bearer {sb.info['api_key_other_project']}"})
    assert [d["name"] for d in other["results"]] == ["staging"]


def _ingest_one(sb: Sandbox, event: dict, sent_at: str | None) -> dict:
    body = {"api_key": sb.info["project_token"], "batch": [{"distinct_id": "clock", **event}]}
    if sent_at is not None:
        body["sent_at"] = sent_at
    assert post(sb, "/batch/", json.dumps(body).encode(), {"Content-Type": "application/json"})[0] == 200
    return next(e for e in sb.events() if e["event"] == event["event"])


def test_timestamps_are_corrected_by_the_clients_clock_skew(sb):
    def gap(e: dict) -> timedelta:
        return datetime.fromisoformat(e["created_at"][:-1]) - datetime.fromisoformat(e["timestamp"][:-1])

    # a client whose clock is 3 hours behind sends an event it made 10 s before sending the batch
    client_now = datetime.now(UTC) - timedelta(hours=3)
    skewed = _ingest_one(sb, {"event": "skewed", "timestamp": (client_now - timedelta(seconds=10)).isoformat()},
                         client_now.isoformat())
    assert gap(skewed) == timedelta(seconds=10)
    # $ignore_sent_at keeps the client's timestamp as it is
    kept_ts = (client_now - timedelta(seconds=10)).isoformat()
    kept = _ingest_one(sb, {"event": "kept", "timestamp": kept_ts, "properties": {"$ignore_sent_at": True}},
                       client_now.isoformat())
    assert datetime.fromisoformat(kept["timestamp"].replace("Z", "+00:00")) == datetime.fromisoformat(kept_ts)
    # more than 23 hours in the future: ingestion time
    future = _ingest_one(sb, {"event": "future", "timestamp": (datetime.now(UTC) + timedelta(days=2)).isoformat()},
                         None)
    assert future["timestamp"] == future["created_at"]
    # no timestamp: ingestion time; offset (ms): that long before it
    assert (lambda e: e["timestamp"] == e["created_at"])(_ingest_one(sb, {"event": "untimed"}, None))
    assert gap(_ingest_one(sb, {"event": "offset", "offset": 1500}, None)) == timedelta(seconds=1.5)


def test_person_properties_and_definitions_follow_ingestion(sb):
    def definitions(kind: str) -> dict[str, str | None]:
        page = get_json(f"{sb.ph}/api/projects/{sb.info['project_id']}/property_definitions/?type={kind}&limit=500",
                        headers={"Authorization": f"Bearer {sb.info['api_key']}"})
        return {d["name"]: d["property_type"] for d in page["results"] if not d.get("virtual")}

    with sdk(sb) as ph:
        ph.set(distinct_id="eve", properties={"organization_id": 4711, "beta": True, "plan": "pro"})
        ph.set_once(distinct_id="eve", properties={"plan": "free", "signed_up_at": "2026-01-02T03:04:05Z"})
        ph.capture("report_created", distinct_id="eve", properties={"widgets": 3, "$unset": ["beta"]})
        ph.set(distinct_id="eve", properties={"organization_id": "org_later_a_string"})
    persons, events = dump(sb)
    eve = person_of(persons, "eve")
    assert eve["properties"] == {"organization_id": "org_later_a_string", "plan": "pro",
                                 "signed_up_at": "2026-01-02T03:04:05Z"}
    report = next(e for e in events if e["event"] == "report_created")
    assert report["person_properties"] == {"organization_id": 4711, "plan": "pro",
                                           "signed_up_at": "2026-01-02T03:04:05Z"}
    person_defs = definitions("person")
    # typed from the first value seen: a later string does not change Numeric
    assert person_defs["organization_id"] == "Numeric" and person_defs["beta"] == "Boolean"
    assert person_defs["signed_up_at"] == "DateTime" and person_defs["plan"] == "String"
    assert definitions("event")["widgets"] == "Numeric"
    page = get_json(f"{sb.ph}/api/projects/{sb.info['project_id']}/event_definitions/?limit=100",
                    headers={"Authorization": f"Bearer {sb.info['api_key']}"})
    last_seen = {d["name"]: d["last_seen_at"] for d in page["results"]}
    latest_set = max(e["created_at"] for e in events if e["event"] == "$set")
    assert last_seen["$set"].replace("+00:00", "Z") == latest_set
    assert sorted(last_seen) == ["$set", "$set_once", "report_created"]
    assert get_jsonl(sb.ph + "/_sandbox/dump/persons")[0]["is_identified"] is False


def test_merges_follow_posthogs_rules(sb):
    with sdk(sb) as ph:
        guest_view = ph.capture("$pageview", distinct_id="guest-1")
        ph.capture("$pageview", distinct_id="user-1", properties={"$set": {"email": "u1@example.com", "plan": "pro"}})
        ph.capture("$pageview", distinct_id="guest-1", properties={"$set": {"plan": "free", "seen_pricing": True}})
        # alias(previous_id, distinct_id): sent as previous_id with properties.alias; the alias's Person is
        # merged into the event's, the event's Person wins a conflict
        ph.alias(previous_id="user-1", distinct_id="guest-1")
        ph.capture("$pageview", distinct_id="user-2", properties={"$set": {"email": "u2@example.com"}})
        # user-1's Person is identified now: an $identify does not merge it away
        ph.capture("$identify", distinct_id="user-2", properties={"$anon_distinct_id": "user-1"})
        ph.capture("$pageview", distinct_id="anonymous")
        ph.capture("$identify", distinct_id="user-3", properties={"$anon_distinct_id": "anonymous"})  # illegal id
        bots = [ph.capture("$pageview", distinct_id="bot", properties={"$process_person_profile": False})
                for _ in range(2)]
        quiet = ph.capture("$pageview", distinct_id="user-2", properties={"$process_person_profile": False,
                                                                         "$set": {"plan": "ignored"}})
    persons, events = dump(sb)
    stored = {u: v[0] for u, v in by_uuid(events).items()}
    one = person_of(persons, "user-1")
    assert sorted(one["distinct_ids"]) == ["guest-1", "user-1"] and one["is_identified"]
    assert one["properties"] == {"email": "u1@example.com", "plan": "pro", "seen_pricing": True}
    assert stored[guest_view]["person_id"] == one["id"]
    two = person_of(persons, "user-2")
    assert two["distinct_ids"] == ["user-2"] and two["is_identified"]  # refused, but identified itself
    assert person_of(persons, "anonymous")["id"] != person_of(persons, "user-3")["id"]
    assert not any("bot" in p["distinct_ids"] for p in persons.values())
    assert stored[bots[0]]["person_id"] == stored[bots[1]]["person_id"] not in persons
    assert stored[bots[0]]["person_properties"] == {}
    assert (stored[quiet]["person_id"], stored[quiet]["person_properties"]) == (two["id"], two["properties"])
    stats = get_json(sb.ph + "/_sandbox/stats")
    assert (stats["ingest_persons_merged"], stats["ingest_merges_refused"]) == (1, 1)

    with sdk(sb) as ph:  # $merge_dangerously merges even an identified Person
        ph.capture("$merge_dangerously", distinct_id="user-2", properties={"alias": "user-1"})
    persons, events = dump(sb)
    merged = person_of(persons, "user-2")
    assert sorted(merged["distinct_ids"]) == ["guest-1", "user-1", "user-2"] and one["id"] not in persons
    assert merged["properties"] == {"email": "u2@example.com", "plan": "pro", "seen_pricing": True}
    assert {e["person_id"] for e in events if e["distinct_id"] in ("guest-1", "user-1", "user-2")} == {merged["id"]}


def test_groups_from_the_sdk_and_a_sync_in_group_mode(sb):
    c1, c2 = customers(sb)[:2]
    index = sb.info["group_type_index"]  # "company", made by the sandbox with its companies
    with sdk(sb) as ph:
        ph.group_identify("company", c1, {"name": "Acme Renamed", "employees": 15})
        ph.group_identify("team", "t-1", {"name": "Core", "size": 4})  # a group type PostHog has not seen yet
        ph.set(distinct_id="gus", properties={"email": "gus@example.com"})
        with_c1 = [ph.capture("report_created", distinct_id="gus", groups={"company": c1, "team": "t-1"}),
                   ph.capture("$pageview", distinct_id="gus", groups={"company": c1})]
        with_c2 = [ph.capture("dashboard_viewed", distinct_id="gus", groups={"company": c2})]
        without = [ph.capture("$pageview", distinct_id="gus")]
    types = get_json(f"{sb.ph}/api/projects/{sb.info['project_id']}/groups_types/",
                     headers={"Authorization": f"Bearer {sb.info['api_key']}"})
    team = next(t["group_type_index"] for t in types if t["group_type"] == "team")
    assert team == 2  # the lowest free index: company is 0, project 1
    groups = {(g["index"], g["key"]): g for g in get_jsonl(sb.ph + "/_sandbox/dump/groups")}
    assert groups[(index, c1)]["properties"]["name"] == "Acme Renamed"
    assert groups[(index, c1)]["properties"]["employees"] == 15
    assert groups[(team, "t-1")]["properties"] == {"name": "Core", "size": 4}
    stored = {u: v[0] for u, v in by_uuid(sb.events()).items()}
    assert [stored[u][f"$group_{index}"] for u in with_c1 + with_c2 + without] == [c1, c1, c2, ""]
    assert stored[with_c1[0]][f"$group_{team}"] == "t-1"
    assert stored[with_c1[0]]["properties"][f"$group_{team}"] == "t-1"
    group_defs = get_json(f"{sb.ph}/api/projects/{sb.info['project_id']}/property_definitions/?type=group"
                          f"&group_type_index={team}", headers={"Authorization": f"Bearer {sb.info['api_key']}"})
    assert {d["name"]: d["property_type"] for d in group_defs["results"]} == {"name": "String", "size": "Numeric"}

    cfg = Config.model_validate({
        "posthog": {"region": sb.info["region"], "host": sb.ph, "project_id": sb.info["project_id"]},
        "customerscore": {"api_url": sb.cs, "tracker_key": sb.info["tracker_key"]},
        "identification": {"kind": "group", "group_type": "company", "group_type_index": index},
        "events": {"selected": SELECTED},
    })
    save_config(cfg, env_paths().config_file)
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    gus = person_of(sb.persons(), "gus")
    want = [payload(stored[u], gus, c1) for u in with_c1] + [payload(stored[u], gus, c2) for u in with_c2]
    assert bag(got("events")) == bag(want)
    assert report.events_skipped_no_customer == len(without)
    # the same, written out independently by sync_expected's group rules
    since = datetime(2000, 1, 1, tzinfo=UTC)
    assert bag(want) == bag(expected_group_events(sb, selected=SELECTED, since=since, index=index)[0])
    contacts = got("contacts")
    assert contacts == expected_group_contacts(sb, selected=SELECTED, since=since, index=index, filters=[])
    assert [(c["contact_external_id"], c["customer_external_id"]) for c in contacts] == [(gus["id"], c2)]
