"""Group mode (issue 14): companies as PostHog groups. An event lands on the customer named by its
group of the chosen type (the key, or a property of the group as it is now); a Person is a contact of
the group of their most recent selected event in the backfill window. Against the sandbox over real
HTTP; what Customerscore must receive is computed from the sandbox's dumps by ``sync_expected``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from helpers import env_paths, run_cli, sandbox_env
from sync_expected import Sandbox, bag, expected_contacts, expected_group_contacts, expected_group_events
from test_sync_engine import SELECTED, Received, sync

from cs_posthog.config import Config, save_config
from cs_posthog.sandbox.runner import get_json, start_sandbox

FILTERS = [{"property": "plan", "operator": "is_set"}]
EVERYTHING = datetime(2000, 1, 1, tzinfo=UTC)  # backfill_days = 3650: every event of the sandbox


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=3000, persons=250, customers=30, seed=43, crm_customers=True) as proc:
        yield Sandbox(proc.info)


@pytest.fixture
def env(sandbox, monkeypatch, home):
    sandbox_env(monkeypatch, sandbox.info)
    return sandbox


def config(sb: Sandbox, *, prop: str | None = None, person_mode: bool = False, filters=FILTERS,
           filter_events: bool = False) -> Config:
    if person_mode:
        ident: dict = {"property": sb.info["customer_property"]}
    else:
        ident = {"kind": "group", "group_type": sb.info["group_type"], "group_type_index": sb.info["group_type_index"]}
        if prop is not None:
            ident["property"] = prop
    cfg = Config.model_validate({
        "posthog": {"region": sb.info["region"], "host": sb.ph, "project_id": sb.info["project_id"]},
        "customerscore": {"api_url": sb.cs, "tracker_key": sb.info["tracker_key"]},
        "identification": ident,
        "events": {"selected": SELECTED},
        "persons": {"filters": filters, "filter_events": filter_events},
        "sync": {"backfill_days": 3650},
    })
    save_config(cfg, env_paths().config_file)
    return cfg


def want(sb: Sandbox, prop: str | None = None, existing_only: bool = True, filters=None):
    return expected_group_events(sb, selected=SELECTED, since=EVERYTHING, index=sb.info["group_type_index"],
                                 prop=prop, existing_only=existing_only, filters=filters)


def want_contacts(sb: Sandbox, prop: str | None = None, existing_only: bool = True):
    return expected_group_contacts(sb, selected=SELECTED, since=EVERYTHING, index=sb.info["group_type_index"],
                                   prop=prop, filters=FILTERS, existing_only=existing_only)


def adds_up(d: dict) -> None:
    skipped = sum(v for k, v in d.items() if k.startswith("events_skipped_"))
    assert d["events_read"] == d["events_sent"] + skipped + d["events_duplicates_dropped"] + d["events_rejected"], d


@pytest.mark.parametrize("prop", [None, "crm_id"], ids=["group key", "group property"])
def test_group_mode_sends_each_event_to_its_group_and_each_person_to_their_latest_group(env, prop):
    sb = env
    events, skipped = want(sb, prop)
    sent, _ = want(sb, prop, existing_only=False)
    contacts = want_contacts(sb, prop)
    assert len(events) > 300 and skipped > 0  # the data exercises it: events without a group
    got = Received(sb)
    report, error = sync(config(sb, prop=prop), full=True)
    assert error is None, error
    assert bag(got("events")) == bag(events)
    assert bag(got("contacts")) == bag(contacts)
    assert report.events_sent == len(sent) and report.events_skipped_no_customer == skipped
    adds_up(report.as_dict())

    got = Received(sb)
    report, error = sync(config(sb, prop=prop))
    assert error is None, error
    assert got("events") == [] and got("contacts") == []
    assert report.events_sent == 0 and report.contacts_sent == 0


def test_persons_who_changed_company_are_contacts_of_the_latest(env):
    """A Person with events of two companies is attached to the company of their most recent one,
    while each of their events goes to its own company."""
    sb = env
    events, _ = want(sb, existing_only=False)
    contacts = {c["contact_external_id"]: c["customer_external_id"] for c in want_contacts(sb, existing_only=False)}
    companies: dict[str, set[str]] = {}
    for e in events:
        companies.setdefault(e["identification"]["contact"], set()).add(e["identification"]["customer"])
    movers = [pid for pid, cs in companies.items() if len(cs) > 1 and pid in contacts]
    assert movers, "the sandbox has Persons who changed company"
    got = Received(sb)
    report, error = sync(config(sb), full=True)
    assert error is None, error
    received = {c["contact_external_id"]: c["customer_external_id"] for c in got("contacts")}
    checked = [pid for pid in movers if pid in received]  # (Customerscore drops unknown customers)
    assert checked
    assert {pid: received[pid] for pid in checked} == {pid: contacts[pid] for pid in checked}


def test_switching_identification_resends_contacts_and_no_events(env):
    sb = env
    got = Received(sb)
    report, error = sync(config(sb, person_mode=True), full=True)
    assert error is None, error
    person_contacts = expected_contacts(sb, customer_property=sb.info["customer_property"], filters=FILTERS)
    assert bag(got("contacts")) == bag(person_contacts)

    got = Received(sb)
    report, error = sync(config(sb))  # now by the company group's key
    assert error is None, error
    assert got("events") == []
    assert bag(got("contacts")) == bag(want_contacts(sb))
    assert report.events_sent == 0 and report.events_backfilled_for_new_persons == 0

    got = Received(sb)
    report, error = sync(config(sb, person_mode=True))  # and back
    assert error is None, error
    assert got("events") == [] and bag(got("contacts")) == bag(person_contacts)


def test_filter_events_in_group_mode_sends_only_the_events_of_matching_persons(env):
    sb = env
    inside, skipped = want(sb, filters=FILTERS)
    everything, _ = want(sb)
    assert 0 < len(inside) < len(everything)
    got = Received(sb)
    report, error = sync(config(sb, filter_events=True), full=True)
    assert error is None, error
    assert bag(got("events")) == bag(inside)
    assert report.events_skipped_no_customer == skipped
    adds_up(report.as_dict())


def test_group_mode_dry_run_and_json_figures(env):
    sb = env
    config(sb)
    r = run_cli("sync", "--dry-run", "--full", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    sent, skipped = want(sb, existing_only=False)
    assert doc["events_to_send"] == len(sent) and doc["events_skipped_no_customer"] == skipped
    assert doc["contacts_to_send"] == len(want_contacts(sb, existing_only=False))


# --- faults and a SIGKILL -------------------------------------------------------------------------
def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cs_posthog", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def faulty():
    with start_sandbox(events=6000, persons=250, customers=30, seed=44, faults=0.1, stall_s=1.0,
                       latency_ms=5) as proc:
        yield Sandbox(proc.info)


@pytest.mark.slow
def test_group_mode_under_faults_and_a_sigkill_delivers_exactly(faulty, monkeypatch, home):
    sb = faulty
    sandbox_env(monkeypatch, sb.info)
    # (no short client timeout here: on a loaded machine a slow answer would be a timeout after the
    # request was applied, retried and applied twice (counted in events_possibly_doubled); the faults
    # the sandbox injects are never applied, and the kill below is the one source of doubles)
    monkeypatch.setenv("CS_POSTHOG_PAGE_SIZE", "300")  # many PostHog queries from little data
    config(sb)
    events, skipped = want(sb)
    assert len(events) > 500
    got = Received(sb)
    proc = subprocess.Popen([sys.executable, "-m", "cs_posthog", "sync", "--json"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    end = time.monotonic() + 60
    while time.monotonic() < end and len(got("events")) < 200 and proc.poll() is None:
        time.sleep(0.01)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    final = cli("sync", "--json")
    assert final.returncode == 0, final.stderr
    doc = json.loads(final.stdout)
    received = bag(got("events"))
    dups = received - bag(events)
    assert received - dups == bag(events), "events were lost"
    assert sum(dups.values()) <= (100 if killed else 0)  # at most the batch in flight at the kill
    # contacts are upserts: whatever was resent, every expected one arrived, to the latest company
    assert set(bag(got("contacts"))) == set(bag(want_contacts(sb)))
    faults = sum(sb.stats()["faults"].values()) + sum(get_json(sb.ph + "/_sandbox/stats")["faults"].values())
    assert faults > 0
    assert doc["status"] == "ok"


def test_connect_no_input_with_a_group_then_its_first_sync_delivers_exactly(env, home):
    """`connect --no-input --customer-group company` and the first sync it runs (30 days back): the
    events to the group they carry, the contacts to the group of their latest event."""
    from datetime import timedelta

    sb = env
    args = ["connect", "--no-input", "--project", str(sb.info["project_id"]), "--tracker-key", sb.info["tracker_key"],
            "--cs-url", sb.cs, "--customer-group", "company", "--filter", "plan is set"]
    for name in SELECTED:
        args += ["--event", name]
    got = Received(sb)
    before = datetime.now(UTC)
    r = run_cli(*args)
    after = datetime.now(UTC)
    assert r.exit_code == 0, r.stderr

    def window(at: datetime):
        since = at - timedelta(days=30)
        events, _ = expected_group_events(sb, selected=SELECTED, since=since, index=0, filters=FILTERS)
        contacts = expected_group_contacts(sb, selected=SELECTED, since=since, index=0, filters=FILTERS)
        return bag(events), bag(contacts)

    wide, narrow = window(before), window(after)  # (an event at the window's edge may fall either side)
    events, contacts = bag(got("events")), bag(got("contacts"))
    assert narrow[0] <= events <= wide[0] and len(narrow[0]) > 100
    assert set(narrow[1]) <= set(contacts) <= set(wide[1]) | set(narrow[1])


def test_a_group_that_gets_its_customer_property_later_has_its_skipped_events_sent_once(env):
    """6d: in group-property mode the events of a group read while it lacked the property were skipped;
    when it gets the property (here from an SDK's $groupidentify, through capture), the next sync sends
    them once, and the one after sends nothing."""
    from cs_posthog.sandbox.runner import post_json

    sb = env
    report, error = sync(config(sb, prop="crm_id"))  # a first sync: every group with crm_id is seen
    assert error is None, error
    groups, customers, events = sb.groups(), sb.customers(), sb.events()
    late = next(key for (i, key), props in sorted(groups.items())
                if i == 0 and props.get("crm_id") in (None, "") and key in customers
                and sum(1 for e in events if e["$group_0"] == key and e["event"] in SELECTED) >= 3)
    post_json(sb.ph + "/batch/", {"api_key": sb.info["project_token"], "batch": [{
        "event": "$groupidentify", "distinct_id": "crm-sync", "properties": {
            "$group_type": "company", "$group_key": late, "$group_set": {"crm_id": late}}}]})
    assert sb.groups()[(0, late)]["crm_id"] == late

    expected, _ = want(sb, "crm_id")
    of_late = [e for e in expected if e["identification"]["customer"] == late]
    assert of_late
    got = Received(sb)
    report, error = sync(config(sb, prop="crm_id"))
    assert error is None, error
    assert report.groups_became_attachable == 1
    assert bag(got("events")) == bag(of_late)
    assert report.events_backfilled_for_new_persons == len(of_late)

    got = Received(sb)
    report, error = sync(config(sb, prop="crm_id"))
    assert error is None, error
    assert got("events") == [] and report.groups_became_attachable == 0


def test_group_mode_meets_posthogs_time_limit_with_time_slices(monkeypatch, home):
    """PostHog stops a query at its time limit whatever its LIMIT: the Persons scan's aggregation
    over the backfill window (each Person's latest group) is read in time slices, each Person's latest
    kept over them, and the sync stays exact (it failed: "could not answer even a page of 500 rows")."""
    with start_sandbox(events=6000, persons=200, customers=30, seed=14, query_time_limit=0.003) as proc:
        sb = Sandbox(proc.info)
        sandbox_env(monkeypatch, sb.info)
        got = Received(sb)
        report, error = sync(config(sb), full=True)
        assert error is None, error
        assert get_json(sb.ph + "/_sandbox/stats").get("query_timeouts", 0) > 0  # the limit was hit
        assert report.query_windows_narrowed > 0
        assert bag(got("events")) == bag(want(sb)[0])
        assert bag(got("contacts")) == bag(want_contacts(sb))
        adds_up(report.as_dict())


def test_group_mode_meeting_the_time_limit_mid_scan_reads_the_rest_in_slices(env, monkeypatch):
    """The limit comes after the first page of Persons (PostHog busier, say): those already handed out
    are not read again, the others come from time slices; each contact is sent once."""
    from cs_posthog.sandbox.runner import configure
    from cs_posthog.sync import queries

    sb = env
    limit = configure(sb.ph)["query_time_limit"]
    asked: list[str | None] = []
    page_query = queries.person_groups_page

    def second_page_meets_the_limit(w, *, customer, after_id, until=None):
        if until is None:  # the whole window, page by page
            asked.append(after_id)
            if len(asked) == 2:  # just before PostHog is asked for the second page
                configure(sb.ph, query_time_limit=0.001)  # 1,000 rows: the window holds 3,000 events
        return page_query(w, customer=customer, after_id=after_id, until=until)

    monkeypatch.setattr(queries, "person_groups_page", second_page_meets_the_limit)
    got = Received(sb)
    try:
        report, error = sync(config(sb), full=True, persons_page_size=40)
    finally:
        configure(sb.ph, query_time_limit=limit)
    assert error is None, error
    assert len(asked) == 2 and asked[0] is None and report.query_windows_narrowed > 0
    contacts = got("contacts")
    assert len({c["contact_external_id"] for c in contacts}) == len(contacts)  # none sent twice
    assert bag(contacts) == bag(want_contacts(sb))
    assert report.contacts_unchanged == 0  # (nobody read twice: a full run has no unchanged contact)
