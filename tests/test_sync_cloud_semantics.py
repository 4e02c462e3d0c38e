"""The sync against a sandbox that behaves like PostHog Cloud: typed customer ids (numbers, numbers
above 2^53, zero-padded strings), person properties stamped on events at ingestion (persons on
events), Persons who get their customer id after their first events, and filters on Numeric and
Boolean properties. Expectations come from the sandbox's raw dumps (``sync_expected``): the Person
as it is now, ids as the exact text of the stored JSON value."""

from __future__ import annotations

import json

import pytest

from cs_posthog.sandbox.runner import get_jsonl, post_json, start_sandbox
from helpers import env_paths, env_settings, env_store, sandbox_env
from sync_expected import Sandbox, bag, expected_contacts, expected_events, ms, parse
from test_sync_engine import SELECTED, Received, make_config, since_of, sync

BIG = 2**53


def _start(**kw):
    extra = []
    for flag in ("id_type", "poe_mode"):
        if flag in kw:
            extra += ["--" + flag.replace("_", "-"), kw.pop(flag)]
    return start_sandbox(events=2500, persons=250, customers=30, extra_args=extra, **kw)


def _env(monkeypatch, sb: Sandbox) -> Sandbox:
    sandbox_env(monkeypatch, sb.info)
    return sb


def _raw_ids(sb: Sandbox, prop: str) -> list[object]:
    return [p["properties"].get(prop) for p in sb.persons().values() if p["properties"].get(prop) is not None]


@pytest.mark.parametrize("id_type", ["numeric", "mixed", "string"])
def test_customer_ids_are_exact_whatever_the_property_type(id_type, monkeypatch):
    with _start(seed=11, id_type=id_type) as proc:
        sb = _env(monkeypatch, Sandbox(proc.info))
        prop = sb.info["customer_property"]
        ids = _raw_ids(sb, prop)
        if id_type == "numeric":
            assert any(isinstance(v, int) and v > BIG for v in ids), "the sandbox must store ids above 2^53"
        if id_type == "mixed":
            assert any(isinstance(v, str) and v.startswith("0") and v.isdigit() for v in ids)
            assert any(isinstance(v, int) for v in ids)
        cfg = make_config(sb, filters=[])
        since = since_of(sb)
        report, error = sync(cfg, since=since)
        assert error is None, error
        want, skipped = expected_events(sb, selected=SELECTED, since=since, customer_property=prop)
        got = sb.received("events")
        assert bag(got) == bag(want)
        assert report.events_skipped_no_customer == skipped
        assert bag(sb.received("contacts")) == bag(expected_contacts(sb, customer_property=prop, filters=[]))
        customers = {e["identification"]["customer"] for e in got}
        if id_type == "numeric":
            assert any(c.isdigit() and int(c) > BIG for c in customers)  # every digit kept
            assert not any(c.endswith(".0") for c in customers)
        if id_type == "mixed":
            assert any(c.startswith("0") for c in customers)  # "007" stays 007


@pytest.mark.parametrize("poe_mode", ["stamped", "joined"])
def test_events_land_on_the_customer_the_person_belongs_to_now(poe_mode, monkeypatch):
    with _start(seed=12, poe_mode=poe_mode) as proc:
        sb = _env(monkeypatch, Sandbox(proc.info))
        prop = sb.info["customer_property"]
        persons = sb.persons()
        since = since_of(sb)
        # the data must hold events whose stamped Person differs from the Person now
        differs = [e for e in sb.events() if e["event"] in SELECTED and parse(e["timestamp"]) >= since
                   and (e.get("person_properties") or {}).get(prop) != persons[e["person_id"]]["properties"].get(prop)]
        assert differs, "the sandbox must have Persons whose customer id changed after some of their events"
        cfg = make_config(sb, filters=[])
        report, error = sync(cfg, since=since)
        assert error is None, error
        want, skipped = expected_events(sb, selected=SELECTED, since=since, customer_property=prop)
        assert bag(sb.received("events")) == bag(want)
        assert report.events_skipped_no_customer == skipped


@pytest.fixture(scope="module")
def cloud():
    with _start(seed=13) as proc:
        yield Sandbox(proc.info)


def _person_without_customer(sb: Sandbox, prop: str, since) -> tuple[str, list[dict]]:
    persons = sb.persons()
    by_person: dict[str, list[dict]] = {}
    for e in sb.events():
        if e["event"] in SELECTED and parse(e["timestamp"]) >= since:
            by_person.setdefault(e["person_id"], []).append(e)
    for pid, evs in sorted(by_person.items(), key=lambda kv: -len(kv[1])):
        if persons[pid]["properties"].get(prop) is None and len({e["uuid"] for e in evs}) >= 3:
            return pid, evs
    raise AssertionError("no Person without a customer id has selected events")


def _identify(sb: Sandbox, pid: str, customer: str) -> None:
    """PostHog: ``$set`` on the Person; the events already ingested keep the properties stamped then."""
    prop = sb.info["customer_property"]
    person = sb.persons()[pid]
    post_json(sb.ph + "/_sandbox/persons", [{"id": pid, "properties": {**person["properties"], prop: customer}}])


def _synced_then_a_person_without_customer(sb: Sandbox):
    """A first sync without filters, then a Person without a customer id who has selected events:
    (config, since, person id, their events)."""
    since = since_of(sb)
    cfg = make_config(sb, filters=[])
    report, error = sync(cfg, since=since)
    assert error is None, error
    pid, evs = _person_without_customer(sb, sb.info["customer_property"], since)
    return cfg, since, pid, evs


def _times(evs: list[dict]) -> list[int]:
    return sorted(ms(e["timestamp"]) for e in {e["uuid"]: e for e in evs}.values())


def test_a_person_who_gets_a_customer_id_brings_their_recent_events_once(cloud, monkeypatch):
    sb = _env(monkeypatch, cloud)
    cfg, since, pid, evs = _synced_then_a_person_without_customer(sb)
    customer = sorted(sb.customers())[0]
    _identify(sb, pid, customer)
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    mine = [e for e in got("events") if e["identification"]["contact"] == pid]
    assert sorted(e["timestamp"] for e in mine) == _times(evs)
    assert {e["identification"]["customer"] for e in mine} == {customer}
    assert report.events_backfilled_for_new_persons == len(mine) > 0
    assert report.persons_became_attachable == 1
    assert [c["contact_external_id"] for c in got("contacts")] == [pid]
    # nothing twice: a third run sends nothing of theirs, a new event of theirs arrives once
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert got("events") == [] and report.events_backfilled_for_new_persons == 0
    post_json(sb.ph + "/_sandbox/events", [{"event": SELECTED[0], "person_id": pid}])
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert [e["identification"]["contact"] for e in got("events")] == [pid]


def test_an_interrupted_backfill_resumes_without_resending(cloud, monkeypatch):
    """A dry run counts a new Person's backfill and changes nothing; a run stopped in the middle of
    the backfill keeps its place; the next run finishes it: each event exactly once overall."""
    from cs_posthog.sync.engine import SyncEngine, SyncOptions
    from cs_posthog.sync.runner import make_customerscore_client, make_posthog_client
    from cs_posthog.sync.state import SyncState
    from helpers import env_paths

    sb = _env(monkeypatch, cloud)
    cfg, since, pid, evs = _synced_then_a_person_without_customer(sb)
    _identify(sb, pid, sorted(sb.customers())[1])
    got = Received(sb)
    n = len({e["uuid"] for e in evs})
    report, error = sync(cfg, dry_run=True)
    assert error is None, error
    assert report.events_backfilled_for_new_persons == n
    assert got("events") == []
    with SyncState(env_paths().state_db) as st:
        assert st.pending_persons_count() == 0  # the dry run wrote nothing

    store, settings = env_store(), env_settings()
    ph, cs = make_posthog_client(cfg, store, settings), make_customerscore_client(cfg, store, settings)
    try:
        with SyncState(env_paths().state_db) as st:
            engine = SyncEngine(cfg, ph, cs, st, options=SyncOptions(events_page_size=1, events_page_max=1),
                                progress=lambda p: engine.report.events_backfilled_for_new_persons and engine.stop.set())
            report = engine.run()  # (engine.stop is what Ctrl-C sets: the run ends between batches)
            assert 0 < report.events_backfilled_for_new_persons < n
            assert st.current_backfill() is not None
    finally:
        ph.close()
        cs.close()
    from helpers import run_cli

    r = run_cli("status", "--json")
    assert json.loads(r.stdout)["persons_waiting_for_backfill"] == 1
    monkeypatch.setenv("COLUMNS", "200")
    assert "1 Person became attachable since the last sync: the next sync sends their events of the last 30 days" \
        in run_cli("status").stdout
    report, error = sync(cfg)
    assert error is None, error
    mine = [e for e in got("events") if e["identification"]["contact"] == pid]
    assert sorted(e["timestamp"] for e in mine) == _times(evs)  # each once
    with SyncState(env_paths().state_db) as st:
        assert st.pending_persons_count() == 0 and st.current_backfill() is None


@pytest.mark.parametrize(
    "filters",
    [
        [{"property": "seats", "operator": "equals", "value": "5"}],
        [{"property": "seats", "operator": "not_equals", "value": "5"}],
        [{"property": "beta_user", "operator": "equals", "value": "true"}],
        [{"property": "signed_up_at", "operator": "is_set"}],
    ],
)
def test_filters_on_numeric_and_boolean_properties(cloud, monkeypatch, filters):
    from cs_posthog.config import PersonFilter
    from cs_posthog.posthog.client import PostHogClient
    from cs_posthog.posthog.hogql import count_persons
    from sync_expected import matches

    sb = _env(monkeypatch, cloud)
    prop = sb.info["customer_property"]
    defs = {d["name"]: d.get("property_type") for d in _definitions(sb)}
    assert defs.get(filters[0]["property"]) in ("Numeric", "Boolean", "DateTime")
    with PostHogClient(sb.ph, sb.info["api_key"], sb.info["project_id"], settings=env_settings()) as client:
        n = count_persons(client, [PersonFilter.model_validate(f) for f in filters])
    assert n == sum(all(matches(p["properties"], f) for f in filters) for p in sb.persons().values())
    assert n > 0
    cfg = make_config(sb, filters=filters)
    got = Received(sb)
    report, error = sync(cfg, full=True)
    assert error is None, error
    assert bag(got("contacts")) == bag(expected_contacts(sb, customer_property=prop, filters=filters))


def _definitions(sb: Sandbox) -> list[dict]:
    from cs_posthog.sandbox.runner import get_json

    url = f"{sb.ph}/api/projects/{sb.info['project_id']}/property_definitions/?type=person&limit=500"
    return get_json(url, headers={"Authorization": f"Bearer {sb.info['api_key']}"})["results"]


def test_dump_rows_carry_the_stamped_person_properties(cloud):
    rows = get_jsonl(cloud.ph + "/_sandbox/dump/events")
    assert all("person_properties" in r for r in rows[:50])
    json.dumps(rows[0])


def test_queries_over_the_time_limit_are_read_in_shorter_windows(monkeypatch):
    """PostHog stops a query at its time limit whatever its LIMIT (the scan is the events of its
    timestamp range): the sync narrows the time window instead of failing, and is still exact."""
    from cs_posthog.sandbox.runner import get_json

    # ~100 events a day: the 30-day first page scans ~6,000 rows (joined Person included), over the
    # 3,000-row limit; a window of a few days (plus max_lateness) stays under it
    with start_sandbox(events=6000, persons=200, customers=30, seed=14, query_time_limit=0.003) as proc:
        sb = _env(monkeypatch, Sandbox(proc.info))
        prop = sb.info["customer_property"]
        cfg = make_config(sb, filters=[])
        since = since_of(sb)
        report, error = sync(cfg, since=since)
        assert error is None, error
        assert get_json(sb.ph + "/_sandbox/stats").get("query_timeouts", 0) > 0  # the limit was hit
        assert report.query_windows_narrowed > 0
        want, skipped = expected_events(sb, selected=SELECTED, since=since, customer_property=prop)
        assert bag(sb.received("events")) == bag(want)
        # the count is split in windows too; a uuid whose two copies fall in different windows may be
        # counted in each (PostHog holds a few uuids twice, ingested apart)
        from collections import Counter

        twice = sum(1 for n in Counter(e["uuid"] for e in sb.events()).values() if n > 1)
        assert skipped <= report.events_skipped_no_customer <= skipped + twice
        got = Received(sb)
        report, error = sync(cfg)  # an incremental run reads a short range: nothing new, nothing twice
        assert error is None, error
        assert got("events") == []


@pytest.mark.slow
def test_a_sync_that_meets_the_legacy_tier_completes_paced_and_remembers_it(monkeypatch):
    """``--query-tier legacy --rate-limits fast``: 120 queries a (scaled) hour, and a wizard session
    has already spent 119 of them. The sync's first 429 reveals the tier: it waits for the budget
    instead of ending throttled, is exact, and the config and ``status`` remember the tier."""
    import httpx

    from cs_posthog.config import load_config
    from cs_posthog.sandbox.runner import get_json
    from helpers import run_cli

    # the limits' clock 600 times faster: an hour is 6 s
    with start_sandbox(events=1500, persons=100, customers=20, seed=16, rate_limits="fast",
                       query_tier="legacy", extra_args=["--rate-scale", "600"]) as proc:
        sb = _env(monkeypatch, Sandbox(proc.info))
        monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "600")  # the client paces on the sandbox's clock
        url = f"{sb.ph}/api/projects/{sb.info['project_id']}/query/"
        body = {"query": {"kind": "HogQLQuery", "query": "SELECT 1"}, "refresh": "force_blocking"}
        with httpx.Client(headers={"Authorization": f"Bearer {sb.info['api_key']}"}) as http:
            for _ in range(119):
                assert http.post(url, json=body).status_code == 200
        cfg = make_config(sb, filters=[])
        assert cfg.posthog.query_tier is None
        since = since_of(sb)
        report, error = sync(cfg, since=since)
        assert error is None, error
        want, _ = expected_events(sb, selected=SELECTED, since=since, customer_property=sb.info["customer_property"])
        assert bag(sb.received("events")) == bag(want)
        # the 429 that told the tier, and at most the other queries already on their way (the events
        # and Persons readers): none started after the switch
        throttled = get_json(sb.ph + "/_sandbox/stats")["throttled"]
        assert 1 <= throttled <= 3 and report.throttled == throttled
    assert load_config(env_paths().config_file).posthog.query_tier == "legacy"
    monkeypatch.setenv("COLUMNS", "200")
    r = run_cli("status")
    assert "120/hour (legacy tier" in r.stdout, r.stdout


def test_connect_counts_a_numeric_customer_id_and_filter_then_syncs_them(cloud, monkeypatch, home):
    """The customer property is Numeric in PostHog (ids sent as JSON numbers): the wizard's coverage
    line and count ("set, not empty") and a filter on a Numeric property work, and the count is what
    the sync then sends."""
    import re

    from helpers import run_cli
    from sync_expected import customer_id, matches

    sb = _env(monkeypatch, cloud)
    prop = sb.info["customer_property"]
    assert {d["name"]: d.get("property_type") for d in _definitions(sb)}[prop] == "Numeric"
    r = run_cli("connect", "--no-input", "--no-sync", "--project", str(sb.info["project_id"]),
                "--tracker-key", sb.info["tracker_key"], "--cs-url", sb.info["customerscore"],
                "--customer-property", prop, "--event", SELECTED[0], "--filter", "seats = 5")
    assert r.exit_code == 0, r.stderr
    persons = sb.persons().values()
    with_id = sum(customer_id(p["properties"].get(prop)) is not None for p in persons)
    assert f"{with_id:,} of {len(persons):,} Persons have {prop} set" in r.stdout + r.stderr
    n = sum(customer_id(p["properties"].get(prop)) is not None
            and matches(p["properties"], {"property": "seats", "operator": "equals", "value": "5"}) for p in persons)
    assert n > 0 and re.search(rf"\b{n:,} persons? will be synced", r.stdout + r.stderr), r.stdout + r.stderr
    got = Received(sb)
    r = run_cli("sync", "--json")
    assert r.exit_code == 0, r.stderr
    assert len(got("contacts")) == json.loads(r.stdout)["contacts_sent"]
    assert {c["contact_external_id"] for c in got("contacts")} <= {p["id"] for p in persons}
    want = expected_contacts(sb, customer_property=prop, filters=[{"property": "seats", "operator": "equals", "value": "5"}],
                             existing_only=False)
    assert bag(got("contacts")) == bag(want) and len(want) == n
