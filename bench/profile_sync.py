"""Profile one first sync against the sandbox (rate limits off), like sync_throughput.py does.

Runs `cs-posthog sync --json` under a profiler and prints where the sync process spends its time,
plus the CPU the sandbox spent while serving it (the two share the machine's cores).

    python bench/profile_sync.py --events 300000                      # cProfile, top 40 by own time
    python bench/profile_sync.py --events 300000 --py-spy PATH/py-spy # sampled flame graph (SVG)

py-spy is not a dependency: install it anywhere (`pip install py-spy`) and pass its path.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
import time

from common import connected_home, machine, proc_cpu_s, sandbox


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--py-spy", dest="py_spy", help="path of a py-spy executable (else cProfile)")
    ap.add_argument("--out", help="profile output (default: a temporary file)")
    ap.add_argument("--format", default="flamegraph", help="py-spy output format: flamegraph, raw, speedscope")
    ap.add_argument("--idle", action="store_true", help="py-spy: include idle (waiting) samples")
    ap.add_argument("--gil", action="store_true", help="py-spy: only the thread holding the GIL (Python CPU)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--sort", default="tottime")
    args = ap.parse_args()
    print(f"machine={machine()}")
    n = args.events
    with sandbox(events=n, persons=max(1000, n // 50), customers=200, seed=args.seed, rate_limits="off") as sb:
        with connected_home(sb.info) as env:
            env["CS_POSTHOG_RATE_SCALE"] = "off"
            sync = [sys.executable, "-m", "cs_posthog", "sync", "--json"]
            if args.py_spy:
                out = args.out or tempfile.mktemp(prefix="cs-posthog-sync-", suffix=".svg")
                cmd = [args.py_spy, "record", "--threads", "--rate", "200", "--format", args.format, "-o", out,
                       *(["--idle"] if args.idle else []), *(["--gil"] if args.gil else []), "--", *sync]
            else:
                out = args.out or tempfile.mktemp(prefix="cs-posthog-sync-", suffix=".prof")
                cmd = [sys.executable, "-m", "cProfile", "-o", out, "-m", "cs_posthog", "sync", "--json"]
            sb_cpu0 = proc_cpu_s(sb.proc.pid)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
            wall = time.perf_counter() - t0
            sb_cpu = proc_cpu_s(sb.proc.pid) - sb_cpu0
    if proc.returncode != 0:
        raise SystemExit(f"sync failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"wall_s={wall:.2f}")
    print(f"sandbox_cpu_s={sb_cpu:.2f}")
    print(f"profile={out}")
    if not args.py_spy:
        pstats.Stats(out).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
