"""How to attribute events to the Person as it is now: the two ways, measured on the sandbox.

(a) ``joined``: the events query asks PostHog to join the current Person
    (``personsOnEventsMode: person_id_override_properties_joined``) and reads the customer and contact
    ids on the event rows; only events whose Person has a customer id come back. What the sync does.
(b) ``resolve``: the events query reads ``person_id`` only (PostHog's default persons-on-events mode, no
    join), every selected event comes back, and the sync would map ``person_id`` to customer and
    contact from the Persons it reads itself (one more keyset scan of every Person with a customer id,
    kept in a local table).

Both need the Persons scan the sync makes every run for contacts (printed once). Both run a whole
first sync's events queries (the client's own builders, ``sync/queries.py``) through
the sandbox's HogQL engine in-process, over one database (``bench/sandbox_cpu.py`` generates it), and
print per way: queries, rows returned, the modelled rows scanned (``sandbox.hogql.query_cost``: what
PostHog's 10-second limit is about) and the engine's wall time.

    .venv/bin/python bench/attribution.py --events 1000000 --db /tmp/cs-posthog-sandbox-cpu.db
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sandbox_cpu import open_db  # noqa: E402

from cs_posthog.posthog.hogql import Params  # noqa: E402
from cs_posthog.sandbox import data as D  # noqa: E402
from cs_posthog.sandbox import hogql as H  # noqa: E402
from cs_posthog.sync import queries as Q  # noqa: E402

PAGE = 49_999


def run_pages(conn, build, key_of, modifiers) -> dict:
    n_q = rows = cost = 0
    seconds = 0.0
    key = None
    while True:
        sql, values = build(key)
        sql = f"{sql} LIMIT {PAGE + 1}"
        cost += H.query_cost(conn, sql, values, modifiers=modifiers)
        t0 = time.perf_counter()
        res = H.execute(conn, sql, values, modifiers=modifiers)
        seconds += time.perf_counter() - t0
        n_q += 1
        page = res["results"][:PAGE]
        rows += len(page)
        if len(res["results"]) <= PAGE:
            return {"queries": n_q, "rows": rows, "rows_scanned": cost, "seconds": round(seconds, 2)}
        key = key_of(page[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/cs-posthog-sandbox-cpu.db")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    conn = open_db(args.db, args.events, args.seed)
    H.prepare_connection(conn)
    names = tuple(r[0] for r in conn.execute("SELECT name FROM sbx_event_definitions ORDER BY name"))
    first = D.db_to_iso(conn.execute("SELECT min(created_at) FROM events").fetchone()[0])
    prop = D.CUSTOMER_PROPERTY

    def window(after):
        if after is None:
            return Q.EventsWindow(names, first, created_from=first)
        return Q.EventsWindow(names, first, after=(after[0], after[1]))

    def key_of(row):
        return (row[3], row[0])

    # (a) the current Person joined by PostHog
    def build_a(after):
        return Q.events_page(window(after), customer=Q.CustomerSource(person_property=prop), contact_property=None)

    a = run_pages(conn, build_a, key_of, Q.EVENTS_MODIFIERS)

    # (b) person_id only, Persons resolved by the client
    def build_b(after):
        p = Params()
        where = Q._event_where(window(after), p)
        return (f"SELECT uuid, event, timestamp, created_at, person_id FROM events WHERE {' AND '.join(where)} "
                "ORDER BY created_at, uuid", p.values)

    b = run_pages(conn, build_b, key_of, None)

    # both: the Persons scan every run makes anyway (contacts); (b) would also keep its ids in a table
    def build_persons(after):
        return Q.persons_page([], customer_property=prop, contact_property=None, after_id=after)

    persons = run_pages(conn, build_persons, lambda row: row[0], None)
    print(json.dumps({"events": args.events, "joined_events_queries": a, "resolve_events_queries": b,
                      "persons_scan_both": persons}))
    for way, r in (("joined", a), ("resolve", b), ("persons_scan", persons)):
        for k, v in r.items():
            print(f"{way}.{k}={v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
