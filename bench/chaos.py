"""Chaos: faults on both APIs and a sync killed with SIGKILL at random moments, then the ledger.

The sandbox runs with `--faults 0.1` (500, 502, 429, stalls past the client timeout, dropped
connections on both PostHog and Customerscore). `cs-posthog sync` runs as a separate process and is
killed with SIGKILL at a random moment, at least --kills times, then restarted until a run completes.
Finally what Customerscore received is compared with what a plain-Python evaluation of PostHog's
raw data expects.

    python bench/chaos.py [--kills 20] [--events 30000] [--seed 3]

Prints expected=, received_unique=, lost=, duplicates=, kills=, and the figures behind them.
Lost must be 0; duplicates at most one batch (100 events) per kill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, connected_home, cs_posthog_cmd, machine, sandbox

sys.path.insert(0, str(ROOT / "tests"))
from sync_expected import Sandbox, bag, expected_contacts, expected_events  # noqa: E402

EVENTS = ["$pageview", "user_logged_in", "dashboard_viewed", "report_created", "invoice_paid", "comment_added"]
FILTERS = [{"property": "plan", "operator": "not_equals", "value": "free"}]
BATCH = 100


def main() -> None:
    ap = argparse.ArgumentParser(description="Kill the sync at random under faults; count lost and doubled events.")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--latency-ms", type=int, default=30, help="per API request, so a run lasts long enough to be killed mid-way")
    ap.add_argument("--faults", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--max-runs", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"machine={machine()}")
    with sandbox(events=args.events, persons=1500, customers=80, seed=args.seed, faults=args.faults,
                 stall_s=1.5, latency_ms=args.latency_ms) as sb:
        with connected_home(sb.info, events=EVENTS, filters=FILTERS) as env:
            env.update(CS_POSTHOG_TIMEOUT="1", CS_POSTHOG_RATE_SCALE="off")
            home = Path(env["CS_POSTHOG_HOME"])
            kills = completed = failed_runs = runs = 0
            kills_mid_run = 0  # kills after which the next run still had events to send
            resent = 0
            started = time.perf_counter()
            while runs < args.max_runs:
                runs += 1
                proc = subprocess.Popen([*cs_posthog_cmd(), "sync", "--json"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                if kills < args.kills:
                    try:
                        proc.wait(timeout=rng.uniform(0.2, 1.5))
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait(timeout=30)
                        kills += 1
                        continue
                out, err = proc.communicate(timeout=3600)
                if proc.returncode == 0:
                    report = json.loads(out)
                    resent += report.get("resent_after_crash", 0)
                    if report.get("events_sent", 0) and kills:
                        kills_mid_run = kills
                    if kills >= args.kills:
                        completed = 1
                        break
                else:
                    failed_runs += 1  # e.g. exit 75 when retries ran out under faults: cron would retry
            elapsed = time.perf_counter() - started
            # the backfill floor that the first run fixed for the stream, as `status --json` shows it
            st = json.loads(subprocess.run([*cs_posthog_cmd(), "status", "--json"], env=env,
                                           capture_output=True, text=True, check=True, timeout=60).stdout)
            floor = next(c["backfill_from"] for c in st["cursors"] if c["stream"] == "events")
            backfill = datetime.fromisoformat(floor.replace("Z", "+00:00")).astimezone(UTC)
            box = Sandbox(sb.info)
            want, skipped = expected_events(box, selected=EVENTS, since=backfill,
                                            customer_property=sb.info["customer_property"])
            got = bag(box.received("events"))
            want_bag = bag(want)
            want_contacts = bag(expected_contacts(box, customer_property=sb.info["customer_property"], filters=FILTERS))
            got_contacts = Counter(set(bag(box.received("contacts"))))
            stats = box.stats()
    lost = sum((want_bag - got).values())
    dups = sum((got - want_bag).values())
    unexpected = sum(1 for k in got if k not in want_bag)
    print(f"expected={sum(want_bag.values())}")
    print(f"received_unique={sum((want_bag & got).values())}")
    print(f"lost={lost}")
    print(f"duplicates={dups}")
    print(f"unexpected_payloads={unexpected}")
    print(f"kills={kills}")
    print(f"kills_before_the_last_event_was_sent={kills_mid_run}")
    print(f"duplicates_allowed={kills * BATCH}")
    print(f"resent_after_crash_reported={resent}")
    print(f"runs={runs}")
    print(f"runs_failed_retryable={failed_runs}")
    print(f"completed={completed}")
    print(f"contacts_expected={sum(want_contacts.values())}")
    print(f"contacts_missing={sum((want_contacts - got_contacts).values())}")
    print(f"faults_injected_customerscore={sum(stats['faults'].values())}")
    print(f"elapsed_s={elapsed:.1f}")
    ok = lost == 0 and dups <= kills * BATCH and completed and unexpected == 0
    print(f"verdict={'PASS' if ok else 'FAIL'}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()
