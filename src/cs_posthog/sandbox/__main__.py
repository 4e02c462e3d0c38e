"""``python -m cs_posthog.sandbox``: a local PostHog (US and EU) and Customerscore on loopback.

Generates the data (deterministic by ``--seed``), starts three HTTP servers on 127.0.0.1, prints
exactly one JSON line on stdout when they are ready::

    {"posthog_us": URL, "posthog_eu": URL, "region": "us"|"eu", "project_id": N, "other_project_id": N,
     "api_key": "phx_...", "api_key_missing_scopes": "phx_...", "api_key_other_project": "phx_...",
     "api_key_no_current": "phx_...", "api_key_no_group": "phx_...", "customer_property": "organization_id",
     "group_type": "company", "group_type_index": 0, "group_property": "crm_id",
     "customerscore": URL, "customerscore_api_key": KEY, "tracker_key": "CS-XXXXX",
     "project_token": "phc_...", "other_project_token": "phc_...", ...}

and serves until SIGTERM or Ctrl-C (exit 0). Progress and figures go to stderr.

PostHog's SDKs send to the region's URL with ``project_token`` as their API key (``/batch/``, ``/capture/``,
``/e/``, ``/i/v0/e/``): the events are ingested into the project as PostHog would (cs_posthog.sandbox.ingest,
docs/posthog-ingestion.md); ``other_project_token`` feeds the other project. ``--events 0`` starts with no
generated events and, unless ``--persons`` says otherwise, no Persons: only what SDKs send (the companies,
and so the Customerscore customers, are still made, by ``--customers``).

``api_key`` has every read scope cs-posthog needs; ``api_key_missing_scopes`` lacks ``query:read`` and
``property_definition:read``; ``api_key_other_project`` is scoped to ``other_project_id`` (same
organization, no data); ``api_key_no_current`` has the scopes of ``api_key`` but its
``/api/personal_api_keys/@current/`` is refused with 403, as some servers do, so scope probing can
be tested; ``api_key_no_group`` has the scopes of ``api_key`` but ``group:read`` (Group (Read)). Keys
exist only in ``region``: the other region answers 401 to all of them.

Groups (PostHog group analytics): group type ``group_type`` (``company``) at ``group_type_index`` 0, one
group per company keyed by the company's customer id text (what Persons carry under
``customer_property``, and what the sandbox Customerscore knows its customers by), with the properties
name, plan, employees, created and ``group_property`` (``crm_id``, on about 90% of them); a second type
``project`` at index 1. ``--crm-customers``: the sandbox Customerscore also knows the companies by their
``crm_id`` (those that have one, minus about one in ten; ``customerscore_crm_customers`` in the line).

PostHog Cloud's behaviour is the default; each part can be switched (and is echoed in the JSON line):

* ``--query-tier current|legacy`` (``query_tier``): current = APIQueriesBurst/SustainedThrottle,
  240/minute and 2,400/hour per key, 3 concurrent ``/query/`` per team; legacy = HogQLQueryThrottle,
  120 HogQL queries/hour per key, no per-team concurrency limiter (posthog/api/query.py
  ``get_throttles``, posthog/rate_limit.py, posthog/clickhouse/client/limit.py). Scaled by
  ``--rate-limits fast`` like every limit (legacy + fast = 120 per minute).
* ``--query-time-limit S`` (``query_time_limit``): a query's max_execution_time; default as on Cloud,
  10 s on the current tier, 60 s on the legacy one (posthog/hogql_queries/hogql_query_runner.py).
  Modelled as rows scanned at 1M rows per second (posthog_app.QUERY_ROWS_PER_SECOND); over it
  ``/query/`` answers 504. With the default 20,000 events, 0.005 makes an unbounded page time out and a
  page over one day pass.
* ``--poe-mode stamped|joined`` (``poe_mode``): the team's persons-on-events mode, ``stamped`` (Cloud's
  default: ``person.properties`` on events as stamped at ingestion) or ``joined`` (the Person now);
  a query's ``modifiers.personsOnEventsMode`` overrides it.
* ``--id-type string|numeric|mixed`` (``id_type``): how generated Persons store customer ids (JSON
  strings, JSON numbers some above 2^53, or both with zero-padded strings); ``string`` is printed when
  the data generator has no id types.
* ``--org-denies-personal-keys`` (``org_denies_personal_keys``): the organization refuses personal API
  keys (403 "Organization '...' does not allow using personal API keys. ..."; posthog/permissions.py).

``POST /_sandbox/config`` with ``{"query_tier", "query_time_limit", "query_rows_per_second",
"poe_mode", "org_denies_personal_keys", "reset_throttles"}`` changes these at run time;
``POST /_sandbox/query_slots`` ``{"hold": n}`` / ``{"release": n}`` occupies concurrency slots.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time

from cs_posthog.sandbox import data as D


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cs_posthog.sandbox", description=__doc__.split("\n\n")[0])
    p.add_argument("--port-base", type=int, default=0,
                   help="0: free ports; else PostHog US = BASE, EU = BASE+1, Customerscore = BASE+2")
    p.add_argument("--events", type=int, default=20_000, help="number of event rows (default 20,000)")
    p.add_argument("--persons", type=int, default=None,
                   help="number of persons (default events/20, 50..50,000; 0 with --events 0)")
    p.add_argument("--customers", type=int, default=60, help="number of companies (default 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate-limits", choices=("off", "real", "fast"), default="off",
                   help="fast: PostHog's and Customerscore's limits with the clock scaled 60x")
    p.add_argument("--rate-scale", type=float, default=None,
                   help="with --rate-limits fast: how many times faster the limits' clock runs (default 60)")
    p.add_argument("--faults", type=float, default=0.0, help="share of API requests that fail (0..1)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every API request")
    p.add_argument("--stall-s", type=float, default=65.0, help="how long a 'stall' fault hangs before dropping")
    p.add_argument("--region", choices=("us", "eu"), default=None,
                   help="where the project lives (default: from the seed, odd = eu)")
    p.add_argument("--db", default=None, help="SQLite file to generate into and keep (default: temp, deleted)")
    p.add_argument("--workdir", default=None,
                   help="directory for the databases (default: a temporary one, deleted at exit); its owner "
                        "removes it (the test runner does, even when the sandbox had to be killed)")
    p.add_argument("--now", default=None,
                   help="anchor time of the data, ISO 8601 (default: current time floored to the hour)")
    p.add_argument("--query-tier", choices=("current", "legacy"), default="current",
                   help="/query/ throttles: current = 240/minute and 2,400/hour per key, 3 concurrent per team; "
                        "legacy = HogQLQueryThrottle, 120 HogQL queries/hour per key (default: current)")
    p.add_argument("--query-time-limit", type=float, default=None, metavar="S",
                   help="max_execution_time of a /query/ in seconds, on a cost model of "
                        "1M scanned rows per second (default: as on Cloud, 10 current, 60 legacy)")
    p.add_argument("--poe-mode", choices=("stamped", "joined"), default="stamped",
                   help="the team's persons-on-events mode: stamped = person properties as stamped on each "
                        "event at ingestion (Cloud's default), joined = the current Person (default: stamped)")
    p.add_argument("--id-type", choices=("string", "numeric", "mixed"), default="mixed",
                   help="how the generated Persons store customer ids (default: mixed)")
    p.add_argument("--crm-customers", action="store_true",
                   help="the sandbox Customerscore also knows the companies by the crm_id property of their "
                        "PostHog group (about 90%% of those that have one)")
    p.add_argument("--org-denies-personal-keys", action="store_true",
                   help="the organization refuses personal API keys (403 on every project and organization "
                        "endpoint)")
    args = p.parse_args(argv)
    if args.rate_scale is not None and not (args.rate_scale > 0 and args.rate_limits == "fast"):
        p.error("--rate-scale needs --rate-limits fast and a number above 0")
    if args.query_time_limit is not None and not args.query_time_limit > 0:
        p.error("--query-time-limit must be > 0")
    if not 0 <= args.faults <= 1:
        p.error("--faults must be between 0 and 1")
    if args.events < 0 or args.customers < 0:
        p.error("--events and --customers must be >= 0")
    if args.persons is not None and args.persons < 0:
        p.error("--persons must be >= 0")
    if args.persons is None:
        args.persons = 0 if args.events == 0 else min(50_000, max(50, args.events // 20))
    if args.region is None:
        args.region = "eu" if args.seed % 2 else "us"
    return args


def log(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    serving = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        if not serving.is_set():  # still generating: abandon at once
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # local: the sandbox's own start-up path; these (http.server, the HogQL engine) would cost
    # `python -m cs_posthog.sandbox --help` ~0.1 s
    from cs_posthog.sandbox import hogql, requirements
    from cs_posthog.sandbox.customerscore_app import CustomerscoreApp
    from cs_posthog.sandbox.posthog_app import PostHogApp, accepts_kwarg, build_identity
    from cs_posthog.sandbox.server import DBPool, FaultInjector, SandboxHTTPServer

    # PostHog's parser is loaded now, not at the first query: without it the sandbox refuses to start
    # (an error and a hint line, exit 69) rather than answer every HogQL query with 500.
    try:
        hogql.load_parser()
    except (ImportError, OSError) as exc:  # absent, or its shared library does not load
        detail = None if isinstance(exc, ModuleNotFoundError) and exc.name == requirements.PARSER_MODULE else str(exc)
        message, hint = requirements.missing_parser_error("the sandbox", detail)
        log(f"error: {message}")
        log(f"hint: {hint}")
        return requirements.PARSER_MISSING_EXIT
    prepare = hogql.prepare_connection
    execute = hogql.execute

    own_workdir = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="cs-posthog-sandbox-") if own_workdir else args.workdir
    servers: list[SandboxHTTPServer] = []
    pools: list[DBPool] = []
    apps = []
    try:
        anchor = D.default_anchor() if args.now is None else D.parse_time(args.now)
        db_path = os.path.abspath(args.db) if args.db else os.path.join(workdir, "posthog.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db_path + suffix):
                os.remove(db_path + suffix)
        conn = sqlite3.connect(db_path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        D.create_schema(conn)
        t0 = time.perf_counter()
        gen_kw = {}
        if accepts_kwarg(D.generate, "id_type"):
            gen_kw["id_type"] = args.id_type
        elif args.id_type != "mixed":
            log(f"this data generator has no id types; --id-type {args.id_type} ignored")
        ds = D.generate(conn, seed=args.seed, events=args.events, persons=args.persons, customers=args.customers,
                        anchor_us=anchor, progress=log, **gen_kw)
        D.create_indexes(conn)
        conn.execute("ANALYZE")
        conn.commit()
        conn.close()
        gen_s = time.perf_counter() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log(f"generated {args.events:,} events ({ds.n_duplicate_rows} duplicate rows, {ds.n_late} late), "
            f"{ds.n_persons:,} persons, {len(ds.companies)} companies in {gen_s:.2f} s; max RSS {rss_mb:.0f} MB")

        other_path = os.path.join(workdir, "other-project.db")
        oconn = sqlite3.connect(other_path)
        oconn.execute("PRAGMA journal_mode=WAL")
        D.create_schema(oconn)
        oconn.close()

        identity = build_identity(args.seed, args.region, anchor)
        data_pool = DBPool(db_path, prepare=prepare)
        other_pool = DBPool(other_path, prepare=prepare)
        pools += [data_pool, other_pool]
        identity.project.pool = data_pool
        identity.other_project.pool = other_pool

        krng = random.Random(f"{args.seed}:customerscore")
        cs_key = "cs_sbx_" + D.random_token(krng, 32)
        tracker_key = "CS-" + D.random_token(krng, 5, D.string.ascii_uppercase + D.string.digits)

        ph = {}
        for region in ("us", "eu"):
            ph[region] = PostHogApp(name=f"posthog-{region}", identity=identity if region == args.region else None,
                                    data_pool=data_pool, rate_limits=args.rate_limits, hogql_execute=execute,
                                    rate_scale=args.rate_scale,
                                    seed=args.seed, query_tier=args.query_tier, query_time_limit=args.query_time_limit,
                                    poe_mode=args.poe_mode, org_denies_personal_keys=args.org_denies_personal_keys)
        crm_customers = list(getattr(ds, "crm_customers", [])) if args.crm_customers else []
        cs = CustomerscoreApp(api_key=cs_key, tracker_key=tracker_key,
                              customers=ds.customerscore_customers + crm_customers,
                              store_dir=os.path.join(workdir, "customerscore"), rate_limits=args.rate_limits,
                              rate_scale=args.rate_scale)
        apps = [ph["us"], ph["eu"], cs]
        for i, app in enumerate(apps):
            app.latency_s = args.latency_ms / 1000
            app.stall_s = args.stall_s
            if args.faults > 0:
                app.faults = FaultInjector(args.faults, f"{args.seed}:{app.name}")
            server = SandboxHTTPServer(args.port_base + i if args.port_base else 0, app)
            server.start()
            servers.append(server)

        info = {
            "posthog_us": servers[0].url,
            "posthog_eu": servers[1].url,
            "region": args.region,
            "project_id": identity.project.id,
            "other_project_id": identity.other_project.id,
            **identity.named_keys,
            "customer_property": D.CUSTOMER_PROPERTY,
            "group_type": D.COMPANY_GROUP_TYPE,
            "group_type_index": D.COMPANY_GROUP_INDEX,
            "group_property": D.GROUP_PROPERTY,
            "project_token": identity.project.api_token,
            "other_project_token": identity.other_project.api_token,
            "customerscore": servers[2].url,
            "customerscore_api_key": cs_key,
            "tracker_key": tracker_key,
            "seed": args.seed,
            "events": args.events,
            "persons": ds.n_persons,
            "customers": len(ds.companies),
            "customerscore_customers": len(ds.customerscore_customers),
            "crm_customers": args.crm_customers,
            "customerscore_crm_customers": len(crm_customers),
            "company_groups": len([g for g in ds.groups if g.index == D.COMPANY_GROUP_INDEX]),
            "data_now": D.db_to_iso(D.fmt_db(anchor)),
            "rate_limits": args.rate_limits,
            "faults": args.faults,
            "query_tier": args.query_tier,
            "query_time_limit": ph[args.region].effective_time_limit(),
            "poe_mode": args.poe_mode,
            "id_type": args.id_type if "id_type" in gen_kw else "string",
            "org_denies_personal_keys": args.org_denies_personal_keys,
            "generation_s": round(gen_s, 3),
            "rss_mb": round(rss_mb, 1),
            "db": db_path,
        }
        serving.set()
        if stop.is_set():
            return 0
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
        log("stopping")
        return 0
    except KeyboardInterrupt:
        log("interrupted before the servers were ready")
        return 0
    finally:
        for app in apps:
            app.stop_event.set()
        for server in servers:
            try:
                server.stop()
            except Exception:
                pass
        for app in apps:
            if hasattr(app, "close"):
                app.close()
        for pool in pools:
            pool.close()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
