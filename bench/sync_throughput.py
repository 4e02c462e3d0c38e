"""Throughput and memory of a first sync, end to end over loopback.

Starts the sandbox in its own process with N events and rate limits off, writes a config that selects
every event (60 days of backfill: all of the sandbox's data), runs `cs-posthog sync --json` as a
separate process, and prints one key=value line per figure. Client-side pacing is switched off
(CS_POSTHOG_RATE_SCALE=off) since the sandbox enforces no limits here: this measures our own cost.

    python bench/sync_throughput.py --events 1000000
    python bench/sync_throughput.py --events 10000 --events 1000000   # memory growth: prints the ratio
"""

from __future__ import annotations

import argparse

from common import connected_home, cs_posthog_cmd, machine, proc_cpu_s, run_measured, sandbox, stats


def one(n: int, persons: int, customers: int, seed: int, *, query_time_limit: float | None = None,
        query_tier: str | None = None, rate_limits: str = "off") -> dict:
    extra = []
    if query_time_limit is not None:
        extra += ["--query-time-limit", str(query_time_limit)]
    if query_tier is not None:
        extra += ["--query-tier", query_tier]
    with sandbox(events=n, persons=persons, customers=customers, seed=seed, rate_limits=rate_limits,
                 extra_args=extra) as sb:
        with connected_home(sb.info) as env:
            if rate_limits == "off":
                env["CS_POSTHOG_RATE_SCALE"] = "off"
            sb_cpu0 = proc_cpu_s(sb.proc.pid)
            m = run_measured([*cs_posthog_cmd(), "sync", "--json"], env)
            sb_cpu1 = proc_cpu_s(sb.proc.pid)
            if m.returncode != 0:
                raise SystemExit(f"sync failed (exit {m.returncode}):\n{m.stderr[-3000:]}")
            report = m.json()
            ph = stats(sb.info, "posthog")
            cs = stats(sb.info, "customerscore")
    sent = report.get("events_sent", 0)
    ph_requests = report.get("posthog_requests", 0)
    return {
        "events": n,
        "events_sent": sent,
        "events_skipped_no_customer": report.get("events_skipped_no_customer", 0),
        "contacts_sent": report.get("contacts_sent", 0),
        "wall_s": round(m.wall_s, 2),
        "sync_duration_s": report.get("duration_s"),
        "events_per_s": round(sent / m.wall_s) if m.wall_s else 0,
        "posthog_requests": ph_requests,
        "posthog_requests_per_million": round(ph_requests * 1_000_000 / n, 1) if n else 0,
        "posthog_hogql_queries": ph.get("hogql_queries", 0),
        "posthog_hogql_queries_per_million": round(ph.get("hogql_queries", 0) * 1_000_000 / n, 1) if n else 0,
        "posthog_timeouts_504": ph.get("timeouts", ph.get("query_timeouts", 0)),
        "throttled": report.get("throttled", 0),
        "query_tier": report.get("query_tier"),
        "customerscore_requests": report.get("customerscore_requests", 0),
        "customerscore_requests_seen_by_server": cs.get("total"),
        "peak_rss_mb": round(m.peak_rss_mb, 1),
        "cpu_s": round(m.cpu_s, 2),
        # the sandbox serving both APIs shares the machine: its CPU during the sync, for context
        "sandbox_cpu_s": round(sb_cpu1 - sb_cpu0, 2) if sb_cpu0 is not None and sb_cpu1 is not None else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="Sync throughput and peak RSS against the sandbox.")
    ap.add_argument("--events", type=int, action="append", help="N events in the sandbox (repeatable)")
    ap.add_argument("--persons", type=int, default=None, help="default: N/50, at least 1,000")
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--query-time-limit", type=float, default=None,
                    help="the sandbox's PostHog query time limit in seconds (low: forces pages to shrink)")
    ap.add_argument("--query-tier", choices=("current", "legacy"), default=None, help="the sandbox's throttle tier")
    ap.add_argument("--rate-limits", choices=("off", "real", "fast"), default="off")
    args = ap.parse_args()
    sizes = args.events or [100_000]
    print(f"machine={machine()}")
    results = []
    for n in sizes:
        persons = args.persons or max(1000, n // 50)
        r = one(n, persons, args.customers, args.seed, query_time_limit=args.query_time_limit,
                query_tier=args.query_tier, rate_limits=args.rate_limits)
        results.append(r)
        for k, v in r.items():
            print(f"{k}={v}" if len(sizes) == 1 else f"n{n}.{k}={v}")
    if len(results) >= 2:
        small, big = results[0], results[-1]
        print(f"peak_rss_ratio_n{big['events']}_vs_n{small['events']}={big['peak_rss_mb'] / small['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
