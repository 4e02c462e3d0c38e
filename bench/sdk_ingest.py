"""PostHog's official Python SDK feeds an empty sandbox, then a first sync: how fast the sandbox ingests
what the SDK's batching sends, and what the sync makes of data no generator of ours shaped.

The sandbox starts with no generated data (``--events 0``). Users are made the way an app makes them:
anonymous events, an ``$identify`` (as posthog-js sends it) with their email, their company's id set
with the identify for four in five of them and only at the end for the others (late-identified
Persons), then their events; one in ten then uses a second device, anonymously until an ``$identify``
merges its Person into theirs. Every event goes through one ``posthog.Posthog`` client with its defaults
(batches of 100, one sending thread, no gzip). Then ``cs-posthog sync --json`` runs as its own process
with every event name selected. Needs the test extra (``posthog``).

    python bench/sdk_ingest.py --events 100000
"""

from __future__ import annotations

import argparse
import random
import time

from common import connected_home, cs_posthog_cmd, machine, proc_cpu_s, run_measured, sandbox, stats
from posthog import Posthog

from cs_posthog.sandbox.runner import get_json

NAMES = [("$pageview", 40), ("dashboard_viewed", 20), ("report_created", 10), ("search_performed", 10),
         ("invoice_paid", 5), ("comment_added", 10), ("export_downloaded", 5)]
PER_USER = 50  # events per user, the identify and the $set included
ANON = 8  # of them anonymous, before the identify
PHONE_SHARE = 0.1  # users who also use a second device, anonymously first
PHONE = 4  # their events there before they log in (then an $identify merges the two Persons)


def feed(info: dict, n: int, seed: int) -> tuple[dict, list[tuple[str, str]]]:
    """Send ``n`` events through the SDK; returns the ingestion figures and the (user, company id) of the
    users whose company id is set only later."""
    rng = random.Random(seed)
    base = info[f"posthog_{info['region']}"]
    # the companies Customerscore knows (ids as text), else ids it does not know (events dropped there)
    ids = sorted(c["external_id"] for c in get_json(info["customerscore"] + "/_sandbox/customers")) or ["0"]
    names = [name for name, _ in NAMES]
    weights = [w for _, w in NAMES]
    users = max(1, n // PER_USER)
    late: list[tuple[str, str]] = []
    client = Posthog(info["project_token"], host=base, max_queue_size=n + 10)
    sent = 0
    t0 = time.perf_counter()
    for u in range(users):
        anon, user = f"anon-{u}", f"user-{u}"
        org = ids[rng.randrange(len(ids))]
        quota = min(PER_USER, n - sent)
        for _ in range(min(ANON, quota)):
            client.capture("$pageview", distinct_id=anon, properties={"$current_url": "/"})
        sent += min(ANON, quota)
        if sent >= n:
            break
        props = {"email": f"user{u}@example.com", "plan": rng.choice(["free", "pro", "enterprise"])}
        if rng.random() < 0.8:
            props["organization_id"] = org
        else:
            late.append((user, org))
        client.capture("$identify", distinct_id=user, properties={"$anon_distinct_id": anon, "$set": props})
        sent += 1
        phone = rng.random() < PHONE_SHARE and n - sent > PER_USER - ANON - 1
        for _ in range(min(PER_USER - ANON - 1 - (PHONE + 1 if phone else 0), n - sent)):
            client.capture(rng.choices(names, weights)[0], distinct_id=user, properties={"n": rng.randrange(100)})
            sent += 1
        if phone:  # a second device, anonymous until they log in there: two Persons merged
            for _ in range(PHONE):
                client.capture("$screen", distinct_id=f"phone-{u}", properties={"$screen_name": "Home"})
            client.capture("$identify", distinct_id=user, properties={"$anon_distinct_id": f"phone-{u}"})
            sent += PHONE + 1
        if sent >= n:
            break
    queued_s = time.perf_counter() - t0
    client.flush()
    client.shutdown()
    wall = time.perf_counter() - t0
    st = stats(info, "posthog")
    batch = st["by_route_status"].get("POST /batch/", {})
    return {"events_sent_by_sdk": sent, "ingest_wall_s": round(wall, 2), "sdk_enqueue_s": round(queued_s, 2),
            "ingest_events_per_s": round(sent / wall) if wall else 0, "batch_requests": sum(batch.values()),
            "batch_requests_ok": batch.get("200", 0), "ingest_events_stored": st.get("ingest_events_stored"),
            "persons_created": st.get("ingest_persons_created"), "persons_merged": st.get("ingest_persons_merged"),
            "late_identified_users": len(late), "users": users}, late


def run_sync(sb, env: dict) -> dict:
    s0 = proc_cpu_s(sb.proc.pid)
    m = run_measured([*cs_posthog_cmd(), "sync", "--json"], env)
    s1 = proc_cpu_s(sb.proc.pid)
    if m.returncode != 0:
        raise SystemExit(f"sync failed (exit {m.returncode}):\n{m.stderr[-3000:]}")
    report = m.json()
    sent = report.get("events_sent", 0)
    return {
        "events_sent": sent, "events_skipped_no_customer": report.get("events_skipped_no_customer", 0),
        "events_backfilled_for_new_persons": report.get("events_backfilled_for_new_persons", 0),
        "events_duplicates_dropped": report.get("events_duplicates_dropped", 0),
        "contacts_sent": report.get("contacts_sent", 0), "wall_s": round(m.wall_s, 2),
        "events_per_s": round(sent / m.wall_s) if m.wall_s else 0, "cpu_s": round(m.cpu_s, 2),
        "peak_rss_mb": round(m.peak_rss_mb, 1), "posthog_requests": report.get("posthog_requests", 0),
        "customerscore_requests": report.get("customerscore_requests", 0),
        "sandbox_cpu_s": round(s1 - s0, 2) if s0 is not None and s1 is not None else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="SDK ingestion into the sandbox, then a first sync.")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"machine={machine()}")
    with sandbox(events=0, persons=0, customers=args.customers, seed=args.seed) as sb:
        cpu0 = proc_cpu_s(sb.proc.pid)
        fed, late = feed(sb.info, args.events, args.seed)
        cpu1 = proc_cpu_s(sb.proc.pid)
        if cpu0 is not None and cpu1 is not None:
            fed["ingest_sandbox_cpu_s"] = round(cpu1 - cpu0, 2)
            fed["ingest_sandbox_cpu_us_per_event"] = round((cpu1 - cpu0) * 1e6 / max(1, fed["events_sent_by_sdk"]))
        for k, v in fed.items():
            print(f"{k}={v}")
        if fed["ingest_events_stored"] != fed["events_sent_by_sdk"]:
            raise SystemExit(f"the sandbox stored {fed['ingest_events_stored']} of {fed['events_sent_by_sdk']}")
        with connected_home(sb.info) as env:
            env["CS_POSTHOG_RATE_SCALE"] = "off"
            for k, v in run_sync(sb, env).items():  # every event of the identified users
                print(f"sync.{k}={v}")
            # the late users' company id arrives: the next sync backfills their events (and sends the $set)
            client = Posthog(sb.info["project_token"], host=sb.posthog_url)
            for user, org in late:
                client.set(distinct_id=user, properties={"organization_id": org})
            client.flush()
            client.shutdown()
            for k, v in run_sync(sb, env).items():
                print(f"late.{k}={v}")


if __name__ == "__main__":
    main()
