"""`make bench`: every benchmark once, with the figures the README and bench/RESULTS.md quote.

Not part of `make test`. Takes a few minutes on 2 cores (the 1,000,000-event sync dominates);
`--quick` uses smaller sizes.
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
    proc = subprocess.run(cmd, cwd=HERE)
    if proc.returncode != 0:
        raise SystemExit(f"bench/{script} failed (exit {proc.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a minute or so)")
    args = ap.parse_args()
    big = "100000" if args.quick else "1000000"
    run("startup.py")
    run("sync_throughput.py", "--events", "10000", "--events", big)
    run("pacing.py", "--events", "100000" if args.quick else "300000")
    run("chaos.py", "--kills", "20")


if __name__ == "__main__":
    main()
