"""The state database's schema versions (issue 13). Every earlier version, built as the release that
wrote it built it (its DDL copied from git history below), opens as the current schema with every
row kept; a real `cs-posthog sync` on a migrated state resends nothing; a state of a newer schema is
refused (78, with the way out) and left byte for byte as it was; a crash in the middle of a migration
leaves the old version; a file the migrations do not fit is refused without being touched."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cs_posthog.sandbox.runner import post_json, start_sandbox
from cs_posthog.sync.state import SCHEMA_VERSION, SyncState
from helpers import env_paths, run_cli, sandbox_env
from sync_expected import Sandbox
from test_sync_engine import Received, make_config, since_of

# =============================================================================================
# The earlier versions, as they were written
# =============================================================================================
# Schema 1: e70c1ea (the first state) to f3011d5. Its ``_SCHEMA``, run one statement at a time after
# ``PRAGMA journal_mode=WAL``, then meta 'schema' = '1'. No user_version (0).
SCHEMA_1_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    events TEXT NOT NULL,              -- JSON list of the event names this cursor covers
    floor TEXT NOT NULL,               -- no event with an earlier timestamp is read (backfill start)
    cursor_created_at TEXT,            -- last (created_at, uuid) delivered or skipped with all before it
    cursor_uuid TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (
    uuid TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_time ON delivered (created_at);
CREATE TABLE IF NOT EXISTS inflight (
    uuid TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    marked_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
    contact_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    seen_run INTEGER NOT NULL          -- last run whose complete Persons scan matched it
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,              -- running, ok, partial, failed, interrupted
    mode TEXT NOT NULL,                -- incremental, full
    pid INTEGER,
    summary TEXT,                      -- JSON of the report
    error TEXT
);
"""

# Schema 2: ed31b6f to 3b0992f, the last release before user_version: delivered.skipped and
# persons_seen. Still meta 'schema' = '1' and user_version 0. A new state got this ``_SCHEMA``...
SCHEMA_2_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    events TEXT NOT NULL,              -- JSON list of the event names this cursor covers
    floor TEXT NOT NULL,               -- no event with an earlier timestamp is read (backfill start)
    cursor_created_at TEXT,            -- last (created_at, uuid) delivered or skipped with all before it
    cursor_uuid TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (
    uuid TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    skipped INTEGER NOT NULL DEFAULT 0 -- 1: read and skipped (no customer/contact id), not sent
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_time ON delivered (created_at);
CREATE TABLE IF NOT EXISTS inflight (
    uuid TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    marked_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
    contact_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    seen_run INTEGER NOT NULL          -- last run whose complete Persons scan matched it
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS persons_seen (
    person_id TEXT PRIMARY KEY,        -- a Person whose events the sync can attach (customer + contact id)
    pending INTEGER NOT NULL           -- 1: became attachable, their backfill-window events not yet sent
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,              -- running, ok, partial, failed, interrupted
    mode TEXT NOT NULL,                -- incremental, full
    pid INTEGER,
    summary TEXT,                      -- JSON of the report
    error TEXT
);
"""
# ... and a schema-1 state opened by those releases got that ``_SCHEMA`` run over it (persons_seen is
# the only table it creates) and then this
SCHEMA_2_ALTER = "ALTER TABLE delivered ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0"

# Schema 2 as the releases with user_version write it (2186928 to e9353f1): steps 1 and 2 of
# ``MIGRATIONS`` in one transaction, then user_version 2 and meta 'schema' = '2'. Step 2's table:
SCHEMA_2_PERSONS_SEEN = (
    "CREATE TABLE IF NOT EXISTS persons_seen (\n"
    "    person_id TEXT PRIMARY KEY,        -- a Person whose events the sync can attach (customer + contact id)\n"
    "    pending INTEGER NOT NULL           -- 1: became attachable, their backfill-window events not yet sent\n"
    ") WITHOUT ROWID"
)

# Schema 3 (1245619 to the release before skipped_ids): steps 1 to 3 in one transaction, then
# user_version 3 and meta 'schema' = '3'. Step 3's table:
SCHEMA_3_PERSONS_LEFT = (
    "CREATE TABLE persons_left (\n"
    "    person_id TEXT PRIMARY KEY,        -- a Person whose events were sent, then no longer\n"
    "    created_at TEXT NOT NULL,          -- the main cursor before the run that found them outside\n"
    "    uuid TEXT NOT NULL\n"
    ") WITHOUT ROWID"
)


def _ddl(db: sqlite3.Connection, script: str) -> None:
    for stmt in script.split(";"):
        if stmt.strip():
            db.execute(stmt)


def build(path: Path, version: str, rows: dict[str, list[tuple]]) -> None:
    """A state file as the release of ``version`` left it: its DDL, its meta 'schema' row, ``rows``."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    if version == "1":
        _ddl(db, SCHEMA_1_DDL)
    elif version == "2":
        _ddl(db, SCHEMA_2_DDL)
    elif version in ("2 (user_version)", "3"):
        _ddl(db, SCHEMA_1_DDL)
        db.execute(SCHEMA_2_ALTER)
        db.execute(SCHEMA_2_PERSONS_SEEN)
        if version == "3":
            db.execute(SCHEMA_3_PERSONS_LEFT)
        db.execute(f"PRAGMA user_version = {version[0]}")
        db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (version[0],))
    else:  # "2 from 1": a schema-1 state the schema-2 releases opened
        _ddl(db, SCHEMA_1_DDL)
        db.execute("INSERT INTO meta (key, value) VALUES ('schema', '1')")
        _ddl(db, SCHEMA_2_DDL)
        db.execute(SCHEMA_2_ALTER)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '1')")
    for table, items in rows.items():
        for row in items:
            db.execute(f"INSERT OR REPLACE INTO {table} VALUES ({','.join('?' * len(row))})", row)
    db.close()


T = "2026-11-20T09:00:00.000000Z"
CURSOR = ("2026-11-20T09:59:59.123456Z", "0190a1b2-0000-7000-8000-00000000c0de")


def rows_1() -> dict[str, list[tuple]]:
    """What a schema-1 state held: cursors (the main stream and a catch-up), delivered uuids,
    in-flight marks in both their places (the inflight table before 50cbcf6, a meta row after),
    fingerprints, runs, and the meta keys of those releases."""
    return {
        "meta": [
            ("events_settings", "0123456789abcdef0123456789abcdef"),
            ("contacts_settings", "fedcba9876543210fedcba9876543210"),
            ("skip_count_upto", "2026-11-20T09:59:00.000000Z"),
            ("inflight_batch", json.dumps({"marked_at": T, "items": [["u-marked", "2026-11-20T09:58:00.000000Z"]]})),
        ],
        "streams": [
            ("events", '["$pageview", "invoice_paid"]', "2026-10-21T00:00:00.000000Z", *CURSOR, T),
            ("catchup:0a1b2c3d4e5f", '["report_created"]', "2026-10-21T00:00:00.000000Z",
             "2026-11-01T00:00:00.000000Z", "u-catchup", T),
        ],
        "delivered": [("u-1", "2026-11-20T09:10:00.000000Z"), ("u-2", "2026-11-20T09:20:00.000000Z"),
                      (CURSOR[1], CURSOR[0])],
        "inflight": [("u-old-mark", "2026-11-20T09:30:00.000000Z", "2026-11-20T09:31:00.000000Z")],
        "contacts": [("p-1", "cust-1", "fp-1", T, 3), ("p-2", "cust-2", "", T, 2)],
        "runs": [(1, "2026-11-19T09:00:00.000000Z", "2026-11-19T09:01:00.000000Z", "ok", "incremental", 4242,
                  '{"events_sent": 3}', None),
                 (3, T, None, "running", "incremental", 4243, None, None)],
    }


def rows_2() -> dict[str, list[tuple]]:
    """What a schema-2 state held on top: skipped rows, persons_seen, a backfill stream in progress
    and the meta keys of those releases (project identity, persons, dropped and resumed events)."""
    rows = rows_1()
    rows["delivered"] = [(*r, 0) for r in rows["delivered"]] + [("u-skipped", "2026-11-20T09:40:00.000000Z", 1)]
    rows["persons_seen"] = [("p-1", 0), ("p-2", 0), ("p-new", 1)]
    rows["streams"].append(("persons:00aa11bb22cc", '["$pageview", "invoice_paid"]', "2026-10-21T00:00:00.000000Z",
                            "2026-11-02T00:00:00.000000Z", "u-backfill", T))
    rows["meta"] += [
        ("events_project", "uuid:01234567-89ab-cdef-0123-456789abcdef"),
        ("persons_seen_ready", "1"),
        ("persons_backfill", json.dumps({"stream": "persons:00aa11bb22cc", "persons": ["p-new"],
                                         "upto": list(CURSOR)})),
        ("dropped_events", json.dumps({"dashboard_viewed": ["2026-11-10T00:00:00.000000Z", "u-dropped"]})),
        ("resume_start", "{}"),
    ]
    return rows


def rows_3() -> dict[str, list[tuple]]:
    """Schema 3 on top: where a Person's events stopped being sent (persons_left)."""
    rows = rows_2()
    rows["persons_left"] = [("p-new", *CURSOR)]
    return rows


VERSIONS = {"1": rows_1, "2": rows_2, "2 from 1": rows_2, "2 (user_version)": rows_2, "3": rows_3}
BUILT_VERSION = {"2 (user_version)": 2, "3": 3}  # the others: 0 (written before user_version was kept)


def shape(path: Path) -> dict:
    """Every table's columns (name, type, not null, default, primary key) and every index."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        out: dict = {t: [r[1:] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
        out["indexes"] = sorted(db.execute("SELECT name, tbl_name FROM sqlite_master WHERE type='index'"))
        return out
    finally:
        db.close()


def dump(path: Path) -> dict:
    """Everything a file holds: its version, schema text and rows."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict = {"user_version": db.execute("PRAGMA user_version").fetchone()[0],
                     "schema": sorted(db.execute("SELECT type, name, coalesce(sql, '') FROM sqlite_master"))}
        for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            out[t] = sorted(db.execute(f"SELECT * FROM {t}"), key=repr)
        return out
    finally:
        db.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def nothing_written(path: Path, listing: list[str]) -> bool:
    """No file beside ``path`` but those of ``listing``, and an empty WAL (a read-only connection
    leaves an empty -wal and -shm behind, as it always did)."""
    names = [n for n in sorted(os.listdir(path.parent)) if n not in (path.name + "-wal", path.name + "-shm")]
    wal = Path(str(path) + "-wal")
    return names == sorted(listing) and (not wal.exists() or wal.stat().st_size == 0)


def user_version(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


@pytest.fixture
def fresh_shape(tmp_path) -> dict:
    path = tmp_path / "fresh.sqlite3"
    SyncState(path).close()
    return shape(path)


# =============================================================================================
# Opening every earlier version
# =============================================================================================
def check_readers(st: SyncState, rows: dict[str, list[tuple]], version: str) -> None:
    """Everything ``rows`` held, through the state's own readers: cursors, delivered and skipped
    uuids, in-flight marks, fingerprints, runs, meta, Persons and the backfill in progress."""
    assert {s.name: (s.events, s.floor, s.cursor.as_dict()) for s in st.streams()} == {
        r[0]: (json.loads(r[1]), r[2], {"created_at": r[3], "uuid": r[4]}) for r in rows["streams"]}
    uuids = [r[0] for r in rows["delivered"]]
    assert st.delivered_among(uuids) == set(uuids) and st.delivered_count() == len(uuids)
    assert st.delivered_among(uuids, include_skipped=False) == set(uuids) - {"u-skipped"}
    assert st.inflight() == {"u-old-mark", "u-marked"}
    assert st.fingerprints(["p-1", "p-2"]) == {"p-1": "fp-1", "p-2": ""}
    assert [(r.id, r.status, r.summary) for r in st.last_runs(5)] == [
        (3, "running", None), (1, "ok", {"events_sent": 3})]
    assert st.time_meta("skip_count_upto") == "2026-11-20T09:59:00.000000Z"
    assert st.get_meta("events_settings") == "0123456789abcdef0123456789abcdef"
    if version == "1":
        assert not st.persons_ready() and st.pending_persons_count() == 0
    else:
        assert st.persons_ready() and st.pending_persons(10) == ["p-new"]
        stream, ids, upto = st.current_backfill()
        assert (stream.name, ids, upto) == ("persons:00aa11bb22cc", ["p-new"], CURSOR)
        assert st.get_meta("events_project") == "uuid:01234567-89ab-cdef-0123-456789abcdef"
        assert st.json_meta("dropped_events", {}) == {"dashboard_viewed": ["2026-11-10T00:00:00.000000Z", "u-dropped"]}
    if version == "3":
        assert st.left_points(["p-new", "p-1"]) == {"p-new": CURSOR}
    assert not st.has_skipped_ids()  # added by schema 4, empty
    assert st.get_meta("schema") == str(SCHEMA_VERSION)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_every_earlier_version_opens_as_the_current_schema_with_its_data(tmp_path, fresh_shape, version):
    path = tmp_path / "state.sqlite3"
    rows = VERSIONS[version]()
    build(path, version, rows)
    before, listing = digest(path), sorted(os.listdir(tmp_path))

    # `status` and dry runs first: read as the current schema (a copy migrated in memory), the file
    # left as it was
    with SyncState(path, readonly=True) as st:
        check_readers(st, rows, version)
        with pytest.raises(RuntimeError):
            st.set_meta("schema", "0")  # still read-only
    assert digest(path) == before and user_version(path) == BUILT_VERSION.get(version, 0)
    assert nothing_written(path, listing)

    # a sync: migrated in place
    with SyncState(path) as st:
        check_readers(st, rows, version)

    # the file: the current version, the same tables as a new state, every row kept
    assert user_version(path) == SCHEMA_VERSION
    assert shape(path) == fresh_shape
    after = dump(path)
    assert dict(after["meta"]) == {**dict(rows["meta"]), "schema": str(SCHEMA_VERSION)}
    for table, items in rows.items():
        if table == "meta":
            continue
        want = [(*r, 0) if table == "delivered" and len(r) == 2 else tuple(r) for r in items]
        assert after[table] == sorted(want, key=repr), table

    # opening it again changes nothing more
    SyncState(path).close()
    assert dump(path) == after


def test_a_crash_in_the_middle_of_a_migration_leaves_the_old_version(tmp_path, fresh_shape):
    """The process is killed (SIGKILL) after the second step changed the tables, before the commit:
    the file is still the schema-1 state it was, and the next open migrates it whole."""
    path = tmp_path / "state.sqlite3"
    build(path, "1", rows_1())
    before = dump(path)
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from cs_posthog.sync import state\n"
        "first, second, *later = state.MIGRATIONS\n"
        "def crash(db):\n"
        "    second(db)\n"
        "    assert 'skipped' in {r[1] for r in db.execute('PRAGMA table_info(delivered)')}\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "state.MIGRATIONS = (first, crash, *later)\n"
        "state.SyncState(Path(sys.argv[1]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert dump(path) == before  # no skipped column, no persons_seen, user_version 0, same rows

    with SyncState(path) as st:
        assert st.delivered_count() == len(rows_1()["delivered"])
    assert user_version(path) == SCHEMA_VERSION and shape(path) == fresh_shape


@pytest.mark.parametrize("setup, why", [
    # another program's database, with tables of our names
    ("CREATE TABLE delivered (order_id INTEGER PRIMARY KEY, address TEXT)", "not cs-posthog's schema 0"),
    ("CREATE TABLE runs (x TEXT)", "its runs table is not cs-posthog's (no error, finished_at"),
    # a version that lies: schema 1 says user_version, but there is nothing to migrate
    ("PRAGMA user_version = 1", "not cs-posthog's schema 1 (no such table: delivered)"),
    # an impossible version
    ("PRAGMA user_version = -3", "schema version is -3"),
])
def test_a_file_the_migrations_do_not_fit_is_refused_and_left_alone(tmp_path, setup, why):
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(setup)
    db.close()
    before = digest(path)
    for readonly in (False, True):
        with pytest.raises(Exception) as info:
            SyncState(path, readonly=readonly)
        assert getattr(info.value, "exit_code", None) == 78, info.value
        assert str(path) in str(info.value) and why in str(info.value)
        assert "mv " in info.value.hint
    assert digest(path) == before
    assert nothing_written(path, ["state.sqlite3"])


# =============================================================================================
# A real sync on a migrated state; a state from a newer cs-posthog
# =============================================================================================
@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=1500, persons=150, customers=20, seed=31) as proc:
        yield Sandbox(proc.info)


@pytest.fixture
def env(sandbox, monkeypatch, home):
    sandbox_env(monkeypatch, sandbox.info)
    return sandbox


def cli(*args: str) -> subprocess.CompletedProcess:
    """`cs-posthog ARGS`, in process (``run_cli``: the whole command, without a Python start-up each)."""
    r = run_cli(*args)
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)


def first_sync(sb: Sandbox):
    cfg = make_config(sb, filters=[])
    proc = cli("sync", "--json", "--since", since_of(sb).date().isoformat())
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["events_sent"] > 0 and doc["contacts_sent"] > 0
    return cfg


def rewrite_as(path: Path, version: str, cfg) -> None:
    """The state a real sync left, written again as the release of ``version`` would have kept it."""
    from cs_posthog.sync.mapping import contacts_settings_hash, legacy_events_settings_hash

    old = dump(path)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    rows = {t: old[t] for t in ("meta", "streams", "delivered", "inflight", "contacts", "persons_seen", "runs")}
    meta = dict(rows["meta"])
    assert meta.pop("schema") == str(SCHEMA_VERSION)
    for key in ("skipped_ids_upto", "merges_upto"):  # schema 4's
        meta.pop(key, None)
    if version == "1":  # no skipped column (skips were recorded as handled), no persons, no project identity
        rows["delivered"] = [r[:2] for r in rows["delivered"]]
        del rows["persons_seen"]
        for key in ("events_project", "persons_seen_ready", "persons_backfill", "dropped_events", "resume_start"):
            meta.pop(key, None)
        meta["events_settings"] = legacy_events_settings_hash(cfg)
        meta["contacts_settings"] = contacts_settings_hash(cfg)
    rows["meta"] = sorted(meta.items())
    build(path, version, rows)
    assert user_version(path) == BUILT_VERSION.get(version, 0)


@pytest.mark.parametrize("version", ["3", "2", "1"])
def test_a_sync_on_a_migrated_state_sends_only_what_is_new(env, version):
    sb = env
    cfg = first_sync(sb)
    path = env_paths().state_db
    rewrite_as(path, version, cfg)
    delivered_before = {r[0] for r in dump(path)["delivered"]}

    # two new events of attachable Persons, after the cursor
    prop = sb.info["customer_property"]
    customers = sb.customers()
    persons = [p for p in sb.persons().values() if p["properties"].get(prop) in customers][:2]
    now = datetime.now(UTC).isoformat()
    post_json(sb.ph + "/_sandbox/events", [{"event": "invoice_paid", "person_id": p["id"], "timestamp": now}
                                           for p in persons])
    got = Received(sb)
    proc = cli("sync", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["mode"] == "incremental"
    assert doc["events_sent"] == 2 and doc["resent_after_crash"] == 0
    assert sorted(e["identification"]["contact"] for e in got("events")) == sorted(p["id"] for p in persons)
    assert doc["contacts_sent"] == 0 and got("contacts") == []  # the fingerprints survived too
    assert doc["events_backfilled_for_new_persons"] == 0

    assert user_version(path) == SCHEMA_VERSION
    after = {r[0] for r in dump(path)["delivered"]}
    assert len(after - delivered_before) == 2  # the two new ones (older uuids are pruned as usual)


def test_a_state_of_a_newer_schema_is_refused_and_left_as_it_was(env):
    sb = env
    first_sync(sb)
    path = env_paths().state_db
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before, listing = digest(path), sorted(os.listdir(path.parent))
    got = Received(sb)

    for args in (["sync"], ["sync", "--json"], ["sync", "--dry-run"], ["status"], ["status", "--json"]):
        proc = cli(*args)
        assert proc.returncode == 78, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 2, proc.stderr
        assert str(path) in lines[0] and "written by a newer cs-posthog" in lines[0], lines[0]
        assert f"schema {SCHEMA_VERSION + 1}" in lines[0] and f"schema {SCHEMA_VERSION} and older" in lines[0]
        assert lines[1].startswith("hint: Upgrade cs-posthog") and f"mv {path} {path}.newer" in lines[1]
        assert "Traceback" not in proc.stderr

    assert digest(path) == before and nothing_written(path, listing)
    assert got("events") == [] and got("contacts") == []
