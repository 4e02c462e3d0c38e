"""Start the sandbox as a subprocess and talk to its hooks (for tests, the benchmarks and the demo).

    with start_sandbox(events=2000, seed=3) as sb:
        url = sb.info["posthog_eu"]
        rows = get_jsonl(url + "/_sandbox/dump/events")

Plain ``urllib`` only, so that tests of the HTTP clients do not depend on the client library.
"""

from __future__ import annotations

import email.message
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from cs_posthog.sandbox.requirements import PARSER_MISSING_EXIT


class SandboxError(RuntimeError):
    """The sandbox did not start (the message carries its stderr)."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot run on this installation (PostHog's HogQL parser is missing): its own
    ``error:`` and ``hint:`` lines, for the demo to show as they are."""

    def __init__(self, message: str, hint: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class SandboxProcess:
    def __init__(self, proc: subprocess.Popen, info: dict, workdir: str) -> None:
        self.proc = proc
        self.info = info
        self._workdir = workdir
        self._stderr_path = os.path.join(workdir, "stderr")

    @property
    def posthog_url(self) -> str:
        """Base URL of the region where the project lives."""
        return self.info[f"posthog_{self.info['region']}"]

    @property
    def other_region_url(self) -> str:
        return self.info["posthog_eu" if self.info["region"] == "us" else "posthog_us"]

    @property
    def customerscore_url(self) -> str:
        return self.info["customerscore"]

    def stderr(self) -> str:
        try:
            with open(self._stderr_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code. Its directory (the
        databases, the stderr file) goes whatever happens meanwhile, a SIGKILL or a second Ctrl-C
        included."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()
            shutil.rmtree(self._workdir, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sandbox(*, events: int = 2000, persons: int = 300, customers: int = 40, seed: int = 1,
                  rate_limits: str = "off", faults: float = 0.0, latency_ms: float = 0,
                  stall_s: float = 65.0, region: str = "eu", query_tier: str | None = None,
                  query_time_limit: float | None = None, poe_mode: str | None = None, id_type: str | None = None,
                  org_denies_personal_keys: bool = False, crm_customers: bool = False, extra_args: Sequence[str] = (),
                  timeout: float | None = None, env: dict[str, str] | None = None,
                  port_base: int = 0) -> SandboxProcess:
    """Launch ``python -m cs_posthog.sandbox --port-base 0 ...`` and wait for its JSON line.

    ``events=0, persons=0``: a sandbox with no generated data, for PostHog's SDKs to fill (its capture
    endpoints take the ready line's ``project_token``; ``info["project_token"]``, ``posthog_url``).
    ``port_base``: fixed ports (PostHog US, EU, Customerscore = BASE, BASE+1, BASE+2), so that an app's
    SDK configuration stays valid across restarts; 0 (default) picks free ones.

    ``query_tier``, ``query_time_limit``, ``poe_mode``, ``id_type`` and ``org_denies_personal_keys`` are the
    sandbox's ``--query-tier``, ``--query-time-limit``, ``--poe-mode``, ``--id-type`` and
    ``--org-denies-personal-keys`` (None / False: the sandbox's defaults, as on PostHog Cloud);
    ``crm_customers`` is ``--crm-customers`` (the sandbox Customerscore also knows the companies' crm_id).
    """
    cmd = [sys.executable, "-m", "cs_posthog.sandbox", "--port-base", str(port_base), "--events", str(events),
           "--persons", str(persons), "--customers", str(customers), "--seed", str(seed),
           "--rate-limits", rate_limits, "--faults", str(faults), "--latency-ms", str(latency_ms),
           "--stall-s", str(stall_s), "--region", region]
    for flag, value in (("--query-tier", query_tier), ("--query-time-limit", query_time_limit),
                        ("--poe-mode", poe_mode), ("--id-type", id_type)):
        if value is not None:
            cmd += [flag, str(value)]
    if org_denies_personal_keys:
        cmd.append("--org-denies-personal-keys")
    if crm_customers:
        cmd.append("--crm-customers")
    cmd += list(extra_args)
    # the sandbox's databases and its stderr in one directory of ours: removed here whatever the
    # sandbox manages to do itself (a SIGKILL after a slow SIGTERM leaves it no chance)
    workdir = tempfile.mkdtemp(prefix="cs-posthog-sandbox-")
    cmd += ["--workdir", workdir]
    stderr_path = os.path.join(workdir, "stderr")
    proc: subprocess.Popen | None = None
    try:
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})})
        return SandboxProcess(proc, _wait_ready(proc, cmd, stderr_path, timeout, events), workdir)
    except BaseException:  # not ready, or Ctrl-C while it starts: leave nothing behind
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _wait_ready(proc: subprocess.Popen, cmd: list[str], stderr_path: str, timeout: float | None,
                events: int) -> dict:
    timeout = timeout if timeout is not None else 60.0 + events / 20_000
    line: list[bytes] = []
    stdout = proc.stdout
    assert stdout is not None  # start_sandbox, the only caller, starts it with stdout=PIPE
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)

    def fail(reason: str) -> SandboxError:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        with open(stderr_path, encoding="utf-8", errors="replace") as fh:
            stderr = fh.read()
        return SandboxError(f"{reason}\ncommand: {' '.join(cmd)}\nexit code: {proc.returncode}\nstderr:\n{stderr}")

    if not line:
        raise fail(f"the sandbox printed no JSON line within {timeout:.0f} s")
    if not line[0]:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # stdout closed, still running: fail() kills it
            pass
        if proc.returncode == PARSER_MISSING_EXIT:
            said = dict.fromkeys(("error", "hint"))
            with open(stderr_path, encoding="utf-8", errors="replace") as fh:
                for text in fh:
                    kind, sep, rest = text.removeprefix("sandbox: ").partition(": ")
                    if sep and kind in said:
                        said[kind] = rest.strip()
            if said["error"]:
                raise SandboxUnavailable(said["error"], said["hint"])
        raise fail("the sandbox exited before it was ready")
    try:
        return json.loads(line[0])
    except ValueError:
        raise fail(f"the sandbox's first line is not JSON: {line[0][:200]!r}") from None


# ---------------------------------------------------------------------------------------------
# Small HTTP helpers (urllib)
# ---------------------------------------------------------------------------------------------


def http_request(method: str, url: str, *, body: Any = None, raw: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One request; returns ``(status, headers, body)`` for every status (errors included)."""
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return exc.code, dict(exc.headers.items()), payload


def _ok(method: str, url: str, **kw: Any) -> bytes:
    status, headers, payload = http_request(method, url, **kw)
    if status >= 400:
        hdrs = email.message.Message()
        for name, value in headers.items():
            hdrs[name] = value
        raise urllib.error.HTTPError(url, status, payload.decode("utf-8", "replace")[:500], hdrs, None)
    return payload


def get_json(url: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0) -> Any:
    return json.loads(_ok("GET", url, headers=headers, timeout=timeout))


def get_jsonl(url: str, *, headers: dict[str, str] | None = None, timeout: float = 120.0) -> list[Any]:
    return [json.loads(line) for line in _ok("GET", url, headers=headers, timeout=timeout).splitlines() if line]


def post_json(url: str, body: Any, *, headers: dict[str, str] | None = None, timeout: float = 30.0) -> Any:
    payload = _ok("POST", url, body=body, headers=headers, timeout=timeout)
    return json.loads(payload) if payload else None


def configure(base_url: str, **settings: Any) -> dict:
    """Change the sandbox PostHog's Cloud settings at run time (``POST /_sandbox/config``): ``query_tier``,
    ``query_time_limit`` (None: the tier's Cloud default), ``query_rows_per_second``, ``poe_mode``,
    ``org_denies_personal_keys``, ``reset_throttles``. Returns the settings now in force."""
    return post_json(base_url.rstrip("/") + "/_sandbox/config", settings)
