"""Pacing: does the sync keep Customerscore's tracker budget busy without bouncing off 429s?

The sandbox runs with `--rate-limits fast` (the real limits with the clock scaled 60x: the tracker's
200 requests a minute become 200 a second) and the sync paces itself on the same scale
(CS_POSTHOG_RATE_SCALE=60). The sync must be large enough to meet the limit for a while. The stats
hook is sampled every 50 ms to find the window in which tracker requests were being made.

    python bench/pacing.py [--events 300000]

Figures are per sandbox minute (one real second at this scale).
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time

from common import connected_home, cs_posthog_cmd, machine, sandbox, stats

TRACKER = "POST /api/tracker/track"
SCALE = 60
TRACKER_PER_MIN = 200


def main() -> None:
    ap = argparse.ArgumentParser(description="Tracker pacing against the sandbox's scaled limits.")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(f"machine={machine()}")
    with sandbox(events=args.events, persons=max(1000, args.events // 50), customers=200, seed=args.seed,
                 rate_limits="fast") as sb:
        with connected_home(sb.info) as env:
            env["CS_POSTHOG_RATE_SCALE"] = str(SCALE)
            samples: list[tuple[float, int, int]] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    s = stats(sb.info, "customerscore")
                    samples.append((time.perf_counter(), s["requests"].get(TRACKER, 0), s["throttled"]))
                    time.sleep(0.05)

            t = threading.Thread(target=sample, daemon=True)
            t.start()
            proc = subprocess.run([*cs_posthog_cmd(), "sync", "--json"], env=env, capture_output=True, text=True,
                                  timeout=3600)
            done.set()
            t.join()
            if proc.returncode != 0:
                raise SystemExit(f"sync failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            final = stats(sb.info, "customerscore")
            # a small sync may end between two samples: the final count, dated now, closes the window
            samples.append((time.perf_counter(), final["requests"].get(TRACKER, 0), final["throttled"]))
    active = [s for s in samples if s[1] > 0]
    if not active:
        raise SystemExit("the sync sent no tracker requests: nothing to measure")
    first = active[0]
    last = next(s for s in samples if s[1] == final["requests"].get(TRACKER, 0))
    window_s = max(last[0] - first[0], 1e-9)
    n = last[1] - first[1]
    achieved = n / window_s * 60 / SCALE
    print(f"tracker_requests={final['requests'].get(TRACKER, 0)}")
    print(f"events_received={final['events_received']}")
    print(f"window_s={window_s:.2f}")
    print(f"allowed_requests_per_min={TRACKER_PER_MIN}")
    print(f"achieved_requests_per_min={achieved:.1f}")
    print(f"utilization={achieved / TRACKER_PER_MIN:.3f}")
    print(f"throttled={final['throttled']}")
    print(f"samples={len(active)}")


if __name__ == "__main__":
    main()
