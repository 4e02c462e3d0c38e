"""Start-up time of the CLI: median wall time of `cs-posthog --help` and `--version`, against
`python -c "import typer, rich, questionary, httpx, pydantic"` as a reference.

    python bench/startup.py [--runs 21]

Prints one key=value line per figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_wall(cmd: list[str], runs: int) -> float:
    env = {**os.environ, "NO_COLOR": "1"}
    subprocess.run(cmd, capture_output=True, env=env, check=True, timeout=60)  # warm the page cache
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=True, timeout=60)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    exe = shutil.which("cs-posthog", path=str(Path(sys.executable).parent)) or shutil.which("cs-posthog")
    cli = [exe] if exe else [sys.executable, "-m", "cs_posthog"]
    help_s = median_wall([*cli, "--help"], args.runs)
    version_s = median_wall([*cli, "--version"], args.runs)
    ref_s = median_wall([sys.executable, "-c", "import typer, rich, questionary, httpx, pydantic"], args.runs)
    print(f"runs={args.runs}")
    print(f"help_median_ms={help_s * 1000:.1f}")
    print(f"version_median_ms={version_s * 1000:.1f}")
    print(f"heavy_imports_median_ms={ref_s * 1000:.1f}")
    print(f"help_vs_heavy_imports_ratio={help_s / ref_s:.2f}")
    print(f"version_vs_heavy_imports_ratio={version_s / ref_s:.2f}")


if __name__ == "__main__":
    main()
