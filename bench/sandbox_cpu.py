"""CPU the sandbox's HogQL engine spends serving a whole sync's queries at 1M events.

Generates (or reuses, --db) a sandbox database, then runs the client's query shapes through
``hogql.execute()`` the way a first sync pages them: the events keyset pages (LIMIT 10001) and their
count, and the persons pages, and prints the process CPU seconds spent (cpu_s) in execute() and in
encoding each answer the way the server does (``server.json_response``; also timed apart as
json_encode_s). As the server asks: ``json_rows=True`` (rows encoded as JSON by SQLite, spliced
into the response); ``--lists``: rows as Python lists encoded by json.dumps (what tests get).

    .venv/bin/python bench/sandbox_cpu.py --events 1000000 --db /tmp/sbx/1m.db [--joined] [--lists] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cs_posthog.sandbox import data as D  # noqa: E402
from cs_posthog.sandbox import hogql as H  # noqa: E402
from cs_posthog.sandbox.server import json_response  # noqa: E402

ZERO = "00000000-0000-0000-0000-000000000000"
MAX = "ffffffff-ffff-ffff-ffff-ffffffffffff"
EVENTS_PAGE = (
    "SELECT uuid, event, timestamp, created_at, person_id, JSONExtractRaw(person.properties, {pk0}), "
    "JSONExtractRaw(person.properties, {pk1}) FROM events WHERE event IN {events} "
    "AND timestamp >= toDateTime64({ts_from}, 6, 'UTC') "
    "AND (created_at, uuid) > (toDateTime64({after_c}, 6, 'UTC'), toUUID({after_u})) "
    "AND (created_at, uuid) <= (toDateTime64({upto_c}, 6, 'UTC'), toUUID({upto_u})) "
    "AND JSONExtractRaw(person.properties, {pk0}) NOT IN ('', 'null', '\"\"') "
    "ORDER BY created_at, uuid LIMIT {n}"
)
EVENTS_COUNT = (
    "SELECT count(DISTINCT uuid) FROM events WHERE event IN {events} AND timestamp >= toDateTime64({ts_from}, 6, 'UTC') "
    "AND (created_at, uuid) <= (toDateTime64({upto_c}, 6, 'UTC'), toUUID({upto_u})) "
    "AND JSONExtractRaw(person.properties, {pk0}) NOT IN ('', 'null', '\"\"')"
)
PERSONS_PAGE = (
    "SELECT id, JSONExtractRaw(properties, {pk0}), JSONExtractRaw(properties, {pk1}) FROM persons "
    "WHERE (JSONExtractRaw(properties, {f1k}) NOT IN ('', 'null')) AND (id > toUUID({after_id})) "
    "ORDER BY id LIMIT {n}"
)


def cpu() -> float:
    return time.process_time()  # user + system CPU of this process


def open_db(path: str, events: int, seed: int) -> sqlite3.Connection:
    if not os.path.exists(path):
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        D.create_schema(conn)
        t0 = time.perf_counter()
        ds = D.generate(conn, seed=seed, events=events, persons=min(50_000, max(50, events // 20)), customers=60,
                        anchor_us=D.parse_time("2024-06-01T00:00:00Z"))
        D.create_indexes(conn)
        conn.execute("ANALYZE")
        conn.commit()
        conn.close()
        print(f"generated {events:,} events in {time.perf_counter() - t0:.1f} s "
              f"({ds.n_late_set} late-set, {ds.n_moved} moved persons)", file=sys.stderr)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA cache_size=-32768")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def _rows(r: dict) -> list:
    res = r["results"]
    return res.rows() if isinstance(res, H.JSONRows) else res


def sync_queries(conn: sqlite3.Connection, page: int, modifiers: dict | None,
                 json_rows: bool = True) -> tuple[int, int, float]:
    """Run one sync's queries; (queries, rows, seconds spent JSON-encoding the answers)."""
    names = [r[0] for r in conn.execute("SELECT name FROM sbx_event_definitions ORDER BY name")]
    upto = conn.execute("SELECT max(created_at) FROM events").fetchone()[0]
    upto_iso = D.db_to_iso(upto)
    base = {"pk0": D.CUSTOMER_PROPERTY, "pk1": "email", "events": names, "ts_from": "2024-03-01T00:00:00Z",
            "upto_c": upto_iso, "upto_u": MAX}
    n_q = n_rows = 0
    enc = 0.0
    r = H.execute(conn, EVENTS_COUNT, base, modifiers=modifiers, json_rows=json_rows)
    json_response(200, r)
    n_q += 1
    cursor = ("2024-03-01T00:00:00Z", ZERO)
    while True:
        r = H.execute(conn, EVENTS_PAGE, {**base, "after_c": cursor[0], "after_u": cursor[1], "n": page + 1},
                      modifiers=modifiers, json_rows=json_rows)
        n_q += 1
        t0 = time.perf_counter()
        json_response(200, r)
        enc += time.perf_counter() - t0
        t_out = cpu()  # reading the page back (the client's side) is not the sandbox's cost
        rows = _rows(r)[:page]
        n_rows += len(rows)
        if len(r["results"]) <= page:
            break
        cursor = (rows[-1][3], rows[-1][0])
        untimed[0] += cpu() - t_out
    after = ZERO
    pv = {"pk0": D.CUSTOMER_PROPERTY, "pk1": "email", "f1k": D.CUSTOMER_PROPERTY}
    while True:
        r = H.execute(conn, PERSONS_PAGE, {**pv, "after_id": after, "n": page + 1}, json_rows=json_rows)
        json_response(200, r)
        n_q += 1
        t_out = cpu()
        rows = _rows(r)[:page]
        n_rows += len(rows)
        if len(r["results"]) <= page:
            break
        after = rows[-1][0]
        untimed[0] += cpu() - t_out
    return n_q, n_rows, enc


untimed = [0.0]  # CPU seconds spent reading answers back (the client's side), taken off cpu_s and wall_s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/cs-posthog-sandbox-cpu.db")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--page", type=int, default=10_000)
    ap.add_argument("--joined", action="store_true", help="personsOnEventsMode person_id_override_properties_joined")
    ap.add_argument("--lists", action="store_true", help="rows as Python lists (json_rows=False), as tests get them")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    conn = open_db(args.db, args.events, args.seed)
    H.prepare_connection(conn)
    modifiers = {"personsOnEventsMode": "person_id_override_properties_joined"} if args.joined else None
    prof = cProfile.Profile() if args.profile else None
    c0, w0 = cpu(), time.perf_counter()
    if prof:
        prof.enable()
    n_q, n_rows, enc = sync_queries(conn, args.page, modifiers, json_rows=not args.lists)
    if prof:
        prof.disable()
    c1, w1 = cpu(), time.perf_counter()
    print(json.dumps({"events": args.events, "mode": "joined" if args.joined else "stamped",
                      "rows_as": "lists" if args.lists else "json", "queries": n_q, "rows": n_rows,
                      "cpu_s": round(c1 - c0 - untimed[0], 2), "wall_s": round(w1 - w0 - untimed[0], 2),
                      "json_encode_s": round(enc, 2)}))
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
