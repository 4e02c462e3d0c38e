"""A first sync on PostHog's legacy query tier (120 HogQL queries an hour per key).

The sandbox runs with ``--query-tier legacy --rate-limits fast`` (every window divided by 60: 120
queries a minute) and the client paces on the same clock (``CS_POSTHOG_RATE_SCALE=60``). Two runs of
`cs-posthog sync --json` as its own process, each on a new sandbox:

* ``after_wizard``: a wizard session has already spent 118 of the key's 120 queries this hour; the
  sync's first 429 reveals the tier.
* ``small_pages``: ``CS_POSTHOG_PAGE_SIZE=500``, so that the sync alone needs more than 120 queries
  and has to pace across several windows.

Printed per run: exit code, events sent, PostHog queries, 429s the sandbox sent (the ones that told
the tier, and any later), the tier the config remembers, wall time.

    python bench/legacy_tier.py --events 100000
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import httpx
from common import connected_home, cs_posthog_cmd, machine, run_measured, sandbox, stats


def one(n: int, *, spent: int, page_size: int | None, seed: int, scale: int = 60) -> dict:
    with sandbox(events=n, persons=max(1000, n // 50), customers=200, seed=seed, rate_limits="fast",
                 query_tier="legacy", extra_args=["--rate-scale", str(scale)]) as sb:
        info = sb.info
        base = info[f"posthog_{info['region']}"]
        with httpx.Client(headers={"Authorization": f"Bearer {info['api_key']}"}, timeout=30) as http:
            body = {"query": {"kind": "HogQLQuery", "query": "SELECT 1"}, "refresh": "force_blocking"}
            for _ in range(spent):
                http.post(f"{base}/api/projects/{info['project_id']}/query/", json=body).raise_for_status()
        with connected_home(info) as env:
            env["CS_POSTHOG_RATE_SCALE"] = str(scale)
            if page_size:
                env["CS_POSTHOG_PAGE_SIZE"] = str(page_size)
            m = run_measured([*cs_posthog_cmd(), "sync", "--json"], env)
            report = m.json()
            from cs_posthog.config import load_config

            tier = load_config(Path(env["CS_POSTHOG_HOME"]) / "config.toml").posthog.query_tier
        ph = stats(info, "posthog")
    return {
        "exit_code": m.returncode,
        "events_sent": report.get("events_sent"),
        "posthog_hogql_queries": ph.get("hogql_queries", 0),
        "throttled_by_sandbox": ph.get("throttled", 0),
        "throttled_seen_by_sync": report.get("throttled"),
        "query_tier_stored": tier,
        "wall_s": round(m.wall_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=("after_wizard", "small_pages"), default=None)
    ap.add_argument("--rate-scale", type=int, default=60,
                    help="how many times faster the limits' clock runs, for the sandbox and the client (default 60: "
                         "120 queries a minute; 3600: a second, for a quick smoke run)")
    args = ap.parse_args()
    os.environ.pop("CS_POSTHOG_PAGE_SIZE", None)
    print(f"machine={machine()}")
    for name, kw in (("after_wizard", {"spent": 118, "page_size": None}),
                     ("small_pages", {"spent": 0, "page_size": 500})):
        if args.only and name != args.only:
            continue
        r = one(args.events, seed=args.seed, scale=args.rate_scale, **kw)
        for k, v in r.items():
            print(f"{name}.{k}={json.dumps(v)}")


if __name__ == "__main__":
    main()
