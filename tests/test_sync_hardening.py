"""What an adversarial run broke in the sync's state (issue 11): a failed run that reset the cursors,
a re-added event that resent its history, a uuid stored twice far apart, two Persons sharing a
contact id, a damaged state database. Against the sandbox over real HTTP; expectations from its dumps."""

from __future__ import annotations

import json
import sqlite3
import tomllib

import pytest
import tomli_w

from cs_posthog.sandbox.runner import post_json, start_sandbox
from cs_posthog.sync.state import MAIN_STREAM, SyncState
from helpers import env_paths, run_cli, sandbox_env
from sync_expected import Sandbox, bag, expected_events
from test_sync_engine import SELECTED, Received, make_config, since_of, sync


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2500, persons=200, customers=30, seed=21, id_type="string") as proc:
        yield Sandbox(proc.info)


@pytest.fixture
def env(sandbox, monkeypatch):
    sandbox_env(monkeypatch, sandbox.info)
    return sandbox


def _state() -> tuple[dict, int, int]:
    with SyncState(env_paths().state_db) as st:
        main = st.stream(MAIN_STREAM)
        return (main.cursor.as_dict() if main and main.cursor else {}), st.delivered_count(), st.contacts_count()


def _edit_config(**posthog) -> None:
    path = env_paths().config_file
    data = tomllib.loads(path.read_text())
    data["posthog"].update(posthog)
    path.write_text(tomli_w.dumps(data))


def first_sync(sb: Sandbox) -> None:
    """A config without filters and a first sync through the CLI, from 30 days back."""
    make_config(sb, filters=[])
    r = run_cli("sync", "--json", "--since", since_of(sb).date().isoformat())
    assert r.exit_code == 0, r.stderr


# --- 2. a failed run resets nothing -----------------------------------------------------------------
def test_a_mistyped_project_fails_before_anything_is_reset(env, home):
    sb = env
    first_sync(sb)
    before = _state()
    assert before[0] and before[1] > 0 and before[2] > 0

    _edit_config(project_id=sb.info["project_id"] + 999)  # a project PostHog does not have
    r = run_cli("sync", "--json")
    assert r.exit_code != 0
    assert _state() == before  # cursors, delivered uuids, fingerprints: untouched

    _edit_config(project_id=sb.info["project_id"])
    got = Received(sb)
    r = run_cli("sync", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert got("events") == [] and got("contacts") == []
    assert report["contacts_sent"] == 0 and report["mode"] == "incremental"


def test_the_same_project_through_another_host_name_is_not_a_new_project(env, home):
    sb = env
    first_sync(sb)
    before = _state()
    _edit_config(host=sb.ph.replace("127.0.0.1", "localhost") + "/")
    got = Received(sb)
    r = run_cli("sync", "--json")
    assert r.exit_code == 0, r.stderr
    assert got("events") == [] and got("contacts") == []
    assert "project changed" not in r.stdout
    after = _state()
    assert after[0]["created_at"] >= before[0]["created_at"] and after[2] == before[2]  # nothing started over


def test_a_boolean_is_no_project_id(env, home):
    make_config(env, filters=[])
    path = env_paths().config_file
    path.write_text(path.read_text().replace(f"project_id = {env.info['project_id']}", "project_id = true"))
    r = run_cli("sync", "--json")
    assert r.exit_code == 78
    assert "project_id" in r.stderr and "integer" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") <= 2  # one line and a hint


# --- 3. a re-added event resumes where it stopped -----------------------------------------------
def test_a_deselected_then_reselected_event_resumes_where_it_stopped(env, home):
    sb = env
    since = since_of(sb)
    everything = Received(sb)
    cfg = make_config(sb, filters=[])
    report, error = sync(cfg, since=since)
    assert error is None, error
    gone = SELECTED[1]
    cfg = make_config(sb, filters=[], selected=[e for e in SELECTED if e != gone])
    report, error = sync(cfg)
    assert error is None, error
    # while it is not selected, two more of it arrive, and one of another event
    person = next(p for p in sb.persons().values() if p["properties"].get(sb.info["customer_property"]))
    post_json(sb.ph + "/_sandbox/events", [{"event": gone, "person_id": person["id"]},
                                           {"event": gone, "person_id": person["id"]}])
    cfg = make_config(sb, filters=[])
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert [e["name"] for e in got("events")] == [gone, gone]  # only what it missed, once
    want, _ = expected_events(sb, selected=SELECTED, since=since, customer_property=sb.info["customer_property"])
    assert bag(everything("events")) == bag(want)


# --- 5. one uuid in two rows far apart -----------------------------------------------------------
def test_a_uuid_ingested_again_hours_later_is_not_sent_twice(monkeypatch, home):
    """An SDK retrying a batch long after: PostHog stores the same uuid again, ingested hours later
    (more than the overlap, within max_lateness_days). (Its own sandbox: it ingests events in the
    future of the others.)"""
    proc = start_sandbox(events=800, persons=80, customers=10, seed=23, id_type="string")
    with proc:
        sb = Sandbox(proc.info)
        _uuid_twice(sb, monkeypatch)


def _uuid_twice(sb: Sandbox, monkeypatch) -> None:
    from datetime import UTC, datetime, timedelta

    sandbox_env(monkeypatch, sb.info)
    cfg = make_config(sb, filters=[])
    report, error = sync(cfg, since=since_of(sb))
    assert error is None, error
    person = next(p for p in sb.persons().values() if p["properties"].get(sb.info["customer_property"]))
    now = datetime.now(UTC)

    def post(created: datetime, **kw) -> str:
        row = {"event": SELECTED[0], "person_id": person["id"], "timestamp": now.isoformat(),
               "created_at": created.isoformat(), **kw}
        return post_json(sb.ph + "/_sandbox/events?keep_created_at=1", [row])["uuids"][0]

    uuid = post(now)
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert len(got("events")) == 1
    for hours in (1, 2):  # two more runs: the cursor moves on, hours past the first copy
        post(now + timedelta(hours=hours))
        report, error = sync(cfg)
        assert error is None, error
    # the same uuid again, ingested 3 hours after the first copy (the overlap is 10 minutes)
    post(now + timedelta(hours=3), uuid=uuid)
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert got("events") == [] and report.events_duplicates_dropped == 1


# --- 6. two Persons, one contact id ----------------------------------------------------------------
def test_persons_sharing_a_contact_id_send_one_contact_once(env, home):
    sb = env
    prop = sb.info["customer_property"]
    customers = sorted(sb.customers())
    email = "shared.inbox@example.com"
    older, newer = post_json(sb.ph + "/_sandbox/persons", [
        {"properties": {prop: customers[0], "email": email, "name": "Old"}, "created_at": "2026-01-01T00:00:00Z"},
        {"properties": {prop: customers[1], "email": email, "name": "New"}, "created_at": "2026-02-01T00:00:00Z"},
    ])["ids"]
    cfg = make_config(sb, filters=[])
    cfg = cfg.model_copy(update={"persons": cfg.persons.model_copy(update={"contact_id": "email"})})
    from cs_posthog.config import save_config

    save_config(cfg, env_paths().config_file)
    got = Received(sb)
    # pages of one Person: the two are never in the same page
    report, error = sync(cfg, since=since_of(sb), persons_page_size=1)
    assert error is None, error
    mine = [c for c in got("contacts") if c["contact_external_id"] == email]
    assert mine == [{"customer_external_id": customers[1], "contact_external_id": email, "contact_name": "New",
                     "attributes": {"email": email}}]
    assert report.contacts_skipped_duplicate_id >= 1
    got = Received(sb)
    report, error = sync(cfg, persons_page_size=1)
    assert error is None, error
    assert [c for c in got("contacts") if c["contact_external_id"] == email] == []  # not flipping back
    post_json(sb.ph + "/_sandbox/persons", [{"id": older, "properties": {}}, {"id": newer, "properties": {}}])


# --- 12. a damaged state database -------------------------------------------------------------------
@pytest.mark.parametrize("damage", [
    "UPDATE streams SET events = 'not json'",
    "UPDATE streams SET events = '{\"a\": 1}'",
    "UPDATE streams SET cursor_created_at = 'yesterday'",
    "UPDATE streams SET floor = '2026-13-45'",
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('dropped_events', '{bad')",
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('skip_count_upto', 'soon')",
    "DROP TABLE contacts; CREATE TABLE contacts (x TEXT)",
])
def test_a_damaged_state_is_one_line_naming_the_file(env, home, damage):
    sb = env
    first_sync(sb)
    db = env_paths().state_db
    with sqlite3.connect(db) as conn:
        conn.executescript(damage)
    got = Received(sb)
    r = run_cli("sync")
    assert r.exit_code == 78, (r.exit_code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert str(db) in lines[0] and "cannot be used" in lines[0] and lines[1].startswith("hint:"), r.stderr
    assert "Traceback" not in r.stderr
    assert got("events") == [] and got("contacts") == []


def test_status_shows_a_run_whose_summary_is_damaged(env, home):
    sb = env
    first_sync(sb)
    with sqlite3.connect(env_paths().state_db) as conn:
        conn.execute("UPDATE runs SET summary = '{not json'")
    r = run_cli("status")
    assert r.exit_code == 0, r.stderr
    assert "ok" in r.stdout
    r = run_cli("status", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["last_runs"][0]["summary"] is None


def test_generated_copies_hours_apart_are_sent_once_across_pages(monkeypatch, home):
    """The sandbox stores some uuids twice, the second copy up to 2 days later; read in many small
    pages (checkpoints, pruning between them), each event still arrives once."""
    with start_sandbox(events=20000, persons=400, customers=30, seed=22, id_type="string") as proc:
        sb = Sandbox(proc.info)
        sandbox_env(monkeypatch, sb.info)
        prop = sb.info["customer_property"]
        persons = sb.persons()
        since = since_of(sb)
        names = sorted({e["event"] for e in sb.events()})
        firsts: dict[str, dict] = {}
        far = 0
        for e in sb.events():
            first = firsts.setdefault(e["uuid"], e)
            if first is not e and persons[e["person_id"]]["properties"].get(prop) and \
                    (parse_iso(e["created_at"]) - parse_iso(first["created_at"])).total_seconds() > 3600 and \
                    parse_iso(first["timestamp"]) >= since:
                far += 1
        assert far > 0, "the sandbox must hold copies of sent events more than the overlap apart"
        cfg = make_config(sb, filters=[], selected=names)
        report, error = sync(cfg, since=since, events_page_size=200, events_page_max=200)
        assert error is None, error
        want, _ = expected_events(sb, selected=names, since=since, customer_property=prop)
        assert bag(sb.received("events")) == bag(want)


def parse_iso(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- issue 12, 5: a plain refusal is no crash ---------------------------------------------------
def test_a_refused_batch_is_not_in_flight_nor_resent_after_a_crash(env, home):
    """The tracker key is refused (401) at the first batch: the run fails cleanly (77), nothing is
    left in flight, status does not speak of a stopped sync, and the run after the key is fixed
    reports no "resent after crash"."""
    sb = env
    cfg = make_config(sb, filters=[])
    bad = cfg.model_copy(update={"customerscore": cfg.customerscore.model_copy(update={"tracker_key": "CS-WRONGKEY"})})
    from cs_posthog.config import save_config

    save_config(bad, env_paths().config_file)
    r = run_cli("sync", "--json", "--since", since_of(sb).date().isoformat())
    assert r.exit_code == 77, r.stderr
    with SyncState(env_paths().state_db) as st:
        assert st.inflight() == set()
    r = run_cli("status", "--json")
    assert json.loads(r.stdout).get("batch_in_flight", 0) == 0
    assert "in flight when a sync stopped" not in run_cli("status").stdout
    save_config(cfg, env_paths().config_file)
    r = run_cli("sync", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["resent_after_crash"] == 0


def test_a_batch_left_unanswered_by_a_failing_run_is_not_called_a_crash(env, home, monkeypatch):
    """Customerscore unreachable after the retries (exit 75): the batch stays in flight (it may have
    been applied), but that run failed cleanly: status says so, not "a sync stopped", and the run
    that sends the batch again does not call it "resent after crash"."""
    from cs_posthog.customerscore.client import CustomerscoreClient
    from cs_posthog.errors import UnavailableError

    sb = env
    make_config(sb, filters=[])

    def unreachable(self, parts):
        raise UnavailableError("Customerscore did not answer after 6 attempts (connection refused or unreachable)",
                               service="Customerscore")

    with monkeypatch.context() as m:
        m.setattr(CustomerscoreClient, "track_encoded", unreachable)
        r = run_cli("sync", "--since", since_of(sb).date().isoformat())
    assert r.exit_code == 75, r.stderr
    status = run_cli("status")
    inflight = json.loads(run_cli("status", "--json").stdout)["batch_in_flight"]
    assert inflight > 0  # kept: the next run sends it again
    assert "stopped" not in status.stdout
    assert f"{inflight:,} events were being sent when the last sync failed" in status.stdout
    r = run_cli("sync")
    assert r.exit_code == 0, r.stderr
    assert "crash" not in r.stdout + r.stderr
    assert "sent again" in r.stdout and "the batch in flight when the last run ended" in r.stdout


# --- issue 12, 4: the numbers add up ----------------------------------------------------------------
def accounts(d: dict) -> None:
    """What a completed run read is what it sent, skipped, dropped or had rejected: no row unaccounted."""
    sent_e = d["events_to_send"] if d["dry_run"] else d["events_sent"]
    sent_c = d["contacts_to_send"] if d["dry_run"] else d["contacts_sent"]
    skipped_e = sum(v for k, v in d.items() if k.startswith("events_skipped_"))
    skipped_c = sum(v for k, v in d.items() if k.startswith("contacts_skipped_"))
    assert d["events_read"] == sent_e + skipped_e + d["events_duplicates_dropped"] + d["events_rejected"], d
    assert d["contacts_read"] == sent_c + d["contacts_unchanged"] + skipped_c + d["contacts_rejected"], d


def test_events_and_contacts_read_add_up(env, home):
    from test_sync_engine import FILTERS

    sb = env
    make_config(sb, filters=FILTERS)
    runs = [run_cli("sync", "--json", "--dry-run", "--since", since_of(sb).date().isoformat()),
            run_cli("sync", "--json", "--since", since_of(sb).date().isoformat())]
    person = next(p for p in sb.persons().values() if p["properties"].get(sb.info["customer_property"]))
    post_json(sb.ph + "/_sandbox/events", [{"event": SELECTED[0], "person_id": person["id"]},
                                           {"event": SELECTED[0], "distinct_id": "nobody-yet"}])
    runs += [run_cli("sync", "--json"), run_cli("sync", "--json")]
    docs = []
    for r in runs:
        assert r.exit_code == 0, r.stderr
        docs.append(json.loads(r.stdout))
    for d in docs:
        accounts(d)
    first = docs[1]
    assert first["events_read"] > first["events_sent"] > 0 and first["events_skipped_no_customer"] > 0
    assert first["contacts_read"] > 0
    assert docs[2]["events_read"] == 2 and docs[2]["events_sent"] == 1  # the new pair: one sent, one skipped
    assert docs[3]["events_read"] == 0 and docs[3]["events_sent"] == 0
