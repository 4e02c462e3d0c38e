"""`make bench`: every benchmark once, with the figures the README and bench/RESULTS.md quote.

Takes a few minutes on 2 cores (the 1,000,000-event sync dominates); `--quick` uses smaller sizes.
`make test` runs `--smoke` (tiny sizes, seconds: tests/test_bench_smoke.py) so that no script rots.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> None:
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"\n$ python bench/{script} {' '.join(args)}".rstrip(), flush=True)
    proc = subprocess.run(cmd, cwd=HERE, timeout=3600)  # the 1,000,000-event runs take a minute or two
    if proc.returncode != 0:
        raise SystemExit(f"bench/{script} failed (exit {proc.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes (a minute or so)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny sizes: every script runs and prints its figures, which mean little (seconds)")
    args = ap.parse_args()
    if args.smoke:
        run("startup.py", "--runs", "1")
        run("sync_throughput.py", "--events", "2000", "--events", "4000")
        run("pacing.py", "--events", "2000")
        run("chaos.py", "--kills", "2", "--events", "2000")
        return
    big = "100000" if args.quick else "1000000"
    run("startup.py")
    run("sync_throughput.py", "--events", "10000", "--events", big)
    run("pacing.py", "--events", "100000" if args.quick else "300000")
    run("chaos.py", "--kills", "20")


if __name__ == "__main__":
    main()
