"""Invariant 6e: events skipped for want of a customer id, whose distinct id PostHog later merges into a
Person the sync already knew (a user logging in on a second device days later), are sent once, to that
Person's customer. The data is made by PostHog's own SDK (as in test_sdk_ingestion.py), the merges by
the sandbox's ingestion, which follows PostHog's rules; expectations are written per stored uuid.

Every sync here runs with ``overlap_minutes = 0``: the events are ingested seconds apart, and the
default ten-minute overlap would read them all again, hiding what this invariant is about."""

from __future__ import annotations

import json

import pytest

from cs_posthog.sync.state import SyncState
from helpers import env_paths, run_cli
from sync_expected import bag
from test_sdk_ingestion import SELECTED, by_uuid, customers, dump, payload, person_of, sb, sdk  # noqa: F401
from test_sync_engine import Received, make_config, sync


def uuids_of(events: list[dict], distinct_id: str) -> list[str]:
    return [e["uuid"] for e in events if e["distinct_id"] == distinct_id and e["event"] in SELECTED]


def known_bob(sb, c1: str) -> None:
    with sdk(sb) as ph:
        ph.set(distinct_id="bob", properties={"email": "bob@example.com", "organization_id": c1})
        ph.capture("dashboard_viewed", distinct_id="bob")


def later_event(sb, distinct_id: str = "bob") -> None:
    """An event delivered after the skipped ones: the main cursor passes them (skipped events are not
    read, so without one after them the next run would read them again anyway)."""
    with sdk(sb) as ph:
        ph.capture("dashboard_viewed", distinct_id=distinct_id)


def skipped_ids(st_path) -> dict[str, str]:
    st = SyncState(st_path, readonly=True)
    try:
        return {str(d): str(p) for d, p in st._read("SELECT distinct_id, person_id FROM skipped_ids")}
    finally:
        st.close()


def test_an_alias_brings_the_skipped_events_of_the_merged_id_once(sb):
    c1 = customers(sb)[0]
    known_bob(sb, c1)
    with sdk(sb) as ph:  # a second device, anonymous: no customer id
        for _ in range(3):
            ph.capture("report_created", distinct_id="tablet-7")
        ph.capture("$pageview", distinct_id="tablet-7")
    later_event(sb)
    cfg = make_config(sb, selected=SELECTED, filters=[], overlap_minutes=0)
    report, error = sync(cfg)
    assert error is None, error
    _, events = dump(sb)
    tablet = uuids_of(events, "tablet-7")
    assert report.events_skipped_no_customer == len(tablet) == 4
    assert set(skipped_ids(env_paths().state_db)) == {"tablet-7"}

    # posthog-python's alias(previous_id, distinct_id): sent as bob with properties.alias = the tablet,
    # whose Person is merged into Bob's
    with sdk(sb) as ph:
        ph.alias(previous_id="bob", distinct_id="tablet-7")
    persons, events = dump(sb)
    bob = person_of(persons, "bob")
    assert sorted(bob["distinct_ids"]) == ["bob", "tablet-7"]
    stored = {u: v[0] for u, v in by_uuid(events).items()}
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert bag(got("events")) == bag([payload(stored[u], bob, c1) for u in tablet])
    assert (report.distinct_ids_merged, report.events_backfilled_for_new_persons) == (1, 4)
    assert report.events_read == report.events_sent + report.events_skipped_no_customer
    assert skipped_ids(env_paths().state_db) == {}

    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert got("events") == [] and report.distinct_ids_merged == 0


def test_logins_do_not_send_again_what_a_persons_backfill_sent(sb):
    """Ann's own id was skipped (no customer id yet), then her Person became attachable and was
    backfilled (6a). Each later login names her id as the Person that stays, and her first device as
    merged away: neither sends her events again; only the new device's skipped events come."""
    c1 = customers(sb)[0]
    known_bob(sb, c1)
    with sdk(sb) as ph:
        ph.set(distinct_id="ann", properties={"email": "ann@example.com"})
        ph.capture("invoice_paid", distinct_id="ann")
        ph.capture("report_created", distinct_id="laptop-1")
    later_event(sb)
    cfg = make_config(sb, selected=SELECTED, filters=[], overlap_minutes=0)
    report, error = sync(cfg)
    assert error is None, error
    assert report.events_skipped_no_customer == 2

    with sdk(sb) as ph:  # her company is set: her Person is new to the sync, backfilled whole (6a)
        ph.set(distinct_id="ann", properties={"organization_id": c1})
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert len(got("events")) == 1 and report.persons_became_attachable == 1

    with sdk(sb) as ph:  # then she logs in on the laptop, twice (the second names her own id again)
        ph.capture("$identify", distinct_id="ann", properties={"$anon_distinct_id": "laptop-1"})
        ph.capture("$identify", distinct_id="ann", properties={"$anon_distinct_id": "ann"})
    persons, events = dump(sb)
    ann = person_of(persons, "ann")
    assert sorted(ann["distinct_ids"]) == ["ann", "laptop-1"]
    stored = {u: v[0] for u, v in by_uuid(events).items()}
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert bag(got("events")) == bag([payload(stored[u], ann, c1) for u in uuids_of(events, "laptop-1")])
    assert report.distinct_ids_merged == 1


def test_a_merge_refused_by_posthog_sends_nothing(sb):
    """PostHog does not merge an identified Person away with $identify (isMergeAllowed): the events of
    that id stay its own Person's, who has no customer id, and stay skipped."""
    c1 = customers(sb)[0]
    known_bob(sb, c1)
    with sdk(sb) as ph:
        ph.alias(previous_id="carol", distinct_id="carol-phone")  # carol: identified, no customer id
        ph.capture("report_created", distinct_id="carol")
    cfg = make_config(sb, selected=SELECTED, filters=[], overlap_minutes=0)
    report, error = sync(cfg)
    assert error is None, error
    with sdk(sb) as ph:
        ph.capture("$identify", distinct_id="bob", properties={"$anon_distinct_id": "carol"})
    persons, _ = dump(sb)
    assert person_of(persons, "carol")["id"] != person_of(persons, "bob")["id"]
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert got("events") == [] and report.events_sent == 0


def test_a_dry_run_shows_them_and_a_failed_run_loses_nothing(sb):
    c1 = customers(sb)[0]
    known_bob(sb, c1)
    with sdk(sb) as ph:
        ph.capture("invoice_paid", distinct_id="phone-3", properties={"amount": 12})
        ph.capture("invoice_paid", distinct_id="phone-3", properties={"amount": 13})
    later_event(sb)
    cfg = make_config(sb, selected=SELECTED, filters=[], overlap_minutes=0)
    report, error = sync(cfg)
    assert error is None, error
    with sdk(sb) as ph:
        ph.capture("$identify", distinct_id="bob", properties={"$anon_distinct_id": "phone-3"})
    persons, events = dump(sb)
    bob = person_of(persons, "bob")
    stored = {u: v[0] for u, v in by_uuid(events).items()}
    want = [payload(stored[u], bob, c1) for u in uuids_of(events, "phone-3")]

    got = Received(sb)
    report, error = sync(cfg, dry_run=True)
    assert error is None, error
    assert got("events") == [] and report.events_to_send == 2 and report.distinct_ids_merged == 1
    assert len(report.sample["events"]) == 2

    # the tracker refuses the key: the merge is noted, nothing is acknowledged; the next run sends them
    key = cfg.customerscore.tracker_key
    wrong = key[:-1] + ("x" if key[-1] != "x" else "y")
    refused = cfg.model_copy(update={"customerscore": cfg.customerscore.model_copy(update={"tracker_key": wrong})})
    got = Received(sb)
    report, error = sync(refused)
    assert error is not None and report.status == "failed" and report.events_sent == 0
    assert got("events") == []
    st = SyncState(env_paths().state_db, readonly=True)
    try:
        assert st.pending_persons(10) == ["d:phone-3"]
    finally:
        st.close()
    doc = json.loads(run_cli("status", "--json").stdout)
    assert (doc["merged_ids_waiting_for_backfill"], doc["persons_waiting_for_backfill"]) == (1, 0)
    shown = " ".join(run_cli("status").stdout.split())
    assert "1 anonymous id PostHog merged into known Persons since their events were skipped" in shown
    assert "became attachable" not in shown

    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert bag(got("events")) == bag(want)
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert got("events") == []


@pytest.mark.parametrize("reset", ["full", "identification"])
def test_a_full_sync_or_a_new_rule_forgets_the_skipped_ids(sb, reset):
    with sdk(sb) as ph:
        ph.capture("report_created", distinct_id="kiosk")
    cfg = make_config(sb, selected=SELECTED, filters=[], overlap_minutes=0)
    report, error = sync(cfg)
    assert error is None, error
    assert set(skipped_ids(env_paths().state_db)) == {"kiosk"}
    st = SyncState(env_paths().state_db)
    try:
        st.reset() if reset == "full" else st.reset_persons()
        assert st._read("SELECT key FROM meta WHERE key IN ('skipped_ids_upto', 'merges_upto')") == []
    finally:
        st.close()
    assert skipped_ids(env_paths().state_db) == {}
    assert json.dumps(report.as_dict())  # (the figure is in the report document)
