"""Shared pieces of the benchmarks: a sandbox, a config pointing at it, and a measured sync process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cs_posthog.sandbox.runner import SandboxProcess, get_json, start_sandbox  # noqa: E402


def cs_posthog_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "cs-posthog"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cs_posthog"]


@contextmanager
def sandbox(**kw) -> SandboxProcess:
    sb = start_sandbox(timeout=600, **kw)
    try:
        yield sb
    finally:
        sb.stop()


def all_event_names(info: dict) -> list[str]:
    """Every event name the sandbox's PostHog knows (what `connect --all-events` would pick)."""
    base = info[f"posthog_{info['region']}"]
    url = f"{base}/api/projects/{info['project_id']}/event_definitions/?limit=100"
    names: list[str] = []
    while url:
        page = get_json(url, headers={"Authorization": f"Bearer {info['api_key']}"})
        names += [r["name"] for r in page["results"]]
        url = page.get("next")
    return names


@contextmanager
def connected_home(info: dict, *, events: list[str] | None = None, filters: list[dict] | None = None):
    """A temporary CS_POSTHOG_HOME holding a config for the sandbox; yields the env for the sync (the
    home is in that env only: this process's environment is left alone)."""
    from cs_posthog.config import Config, save_config

    home = Path(tempfile.mkdtemp(prefix="cs-posthog-bench-"))
    env = {
        **os.environ,
        "CS_POSTHOG_HOME": str(home),
        "CS_POSTHOG_SECRET_STORE": "file",
        "POSTHOG_PERSONAL_API_KEY": info["api_key"],
        "CUSTOMERSCORE_API_KEY": info["customerscore_api_key"],
        "NO_COLOR": "1",
    }
    try:
        region = info["region"]
        cfg = Config.model_validate({
            "posthog": {"region": region, "host": info[f"posthog_{region}"], "project_id": info["project_id"],
                        "project_name": "Sandbox", "timezone": "UTC"},
            "customerscore": {"api_url": info["customerscore"], "tracker_key": info["tracker_key"]},
            "identification": {"property": info["customer_property"]},
            "events": {"selected": events or all_event_names(info)},
            "persons": {"filters": filters or []},
            "sync": {"backfill_days": 60},
        })
        save_config(cfg, home / "config.toml")
        yield env
    finally:
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout) if self.stdout.strip() else {}


def run_measured(args: list[str], env: dict) -> Measured:
    """Run one process; wall time, CPU time and peak RSS of that process only (from wait4)."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    # ru_maxrss is in KiB on Linux, bytes on macOS
    rss_kib = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return Measured(proc.returncode, wall, usage.ru_utime + usage.ru_stime, rss_kib / 1024,
                    out.read().decode(), err.read().decode())


def proc_cpu_s(pid: int) -> float | None:
    """user+system CPU seconds of a live process so far (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(info: dict, which: str) -> dict:
    url = info["customerscore"] if which == "customerscore" else info[f"posthog_{info['region']}"]
    return get_json(url + "/_sandbox/stats")


def machine() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
