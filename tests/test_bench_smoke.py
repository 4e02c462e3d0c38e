"""Every script in bench/ runs at a tiny size, exits 0 and prints its figures (key=value lines): the
benchmarks are not part of the product, but a script that no longer runs is found here, not on the
day somebody needs its numbers. The figures at these sizes mean nothing; only that they are there.

Each script runs as its own process with this checkout's sources first on the path (bench/common.py
puts ``src`` there itself), in a temporary working directory and home.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# script -> (tiny arguments, figures it must print); run_all.py --smoke runs the four scripts of
# `make bench` at tiny sizes, the others run here themselves
RUN_ALL_FIGURES = [
    "help_median_ms", "version_vs_heavy_imports_ratio",  # startup.py
    "n2000.events_per_s", "n4000.peak_rss_mb", "peak_rss_ratio_n4000_vs_n2000",  # sync_throughput.py
    "utilization", "achieved_requests_per_min",  # pacing.py
    "lost", "duplicates", "kills",  # chaos.py
]
SMOKE: dict[str, tuple[list[str], list[str]]] = {
    "run_all.py": (["--smoke"], RUN_ALL_FIGURES),
    "profile_sync.py": (["--events", "2000", "--top", "5"], ["wall_s", "sandbox_cpu_s", "profile"]),
    "legacy_tier.py": (["--events", "2000", "--rate-scale", "3600"],
                       ["after_wizard.exit_code", "after_wizard.posthog_hogql_queries", "small_pages.exit_code",
                        "small_pages.events_sent"]),
    "attribution.py": (["--events", "2000", "--db", "{tmp}/attribution.db"],
                       ["joined.queries", "resolve.rows", "persons_scan.rows_scanned"]),
    "sandbox_cpu.py": (["--events", "2000", "--db", "{tmp}/sandbox_cpu.db"], []),
    "sdk_ingest.py": (["--events", "2000", "--customers", "20"],
                      ["ingest_events_per_s", "ingest_events_stored", "sync.events_sent", "late.events_sent"]),
}
# run by run_all.py --smoke; common.py is their shared module, not a script
COVERED_BY_RUN_ALL = {"startup.py", "sync_throughput.py", "pacing.py", "chaos.py"}


def figures(stdout: str) -> dict[str, str]:
    return dict(m.groups() for m in re.finditer(r"^([\w.]+)=(.*)$", stdout, re.M))


def test_every_bench_script_has_a_smoke_run():
    scripts = {p.name for p in BENCH.glob("*.py")} - {"common.py"}
    assert scripts == set(SMOKE) | COVERED_BY_RUN_ALL


@pytest.mark.slow
@pytest.mark.timeout(300)  # run_all.py --smoke is four scripts in a row; a loaded machine stretches it
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_bench_script_runs_at_a_tiny_size(script, tmp_path):
    args, wanted = SMOKE[script]
    args = [a.format(tmp=tmp_path) for a in args]
    env = {**os.environ, "CS_POSTHOG_HOME": str(tmp_path / "home"), "NO_COLOR": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    got = figures(proc.stdout)
    missing = [k for k in wanted if k not in got]
    assert not missing, (missing, proc.stdout[-3000:])
    if script == "run_all.py":
        assert got["verdict"] == "PASS" and got["lost"] == "0", proc.stdout[-3000:]
    if script == "sandbox_cpu.py":  # one JSON line
        assert '"queries":' in proc.stdout and '"cpu_s":' in proc.stdout, proc.stdout
