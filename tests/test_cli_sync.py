"""`cs-posthog sync` as a user and cron run it: a real process against the sandbox over HTTP.

Output modes, exit codes, the lock between two processes, SIGKILL in the middle of a run, and 10%
faults on both APIs. Expectations come from the sandbox's dumps (``sync_expected``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from cs_posthog.config import Config, save_config
from cs_posthog.sandbox.runner import start_sandbox
from cs_posthog.sync.state import RunLock
from helpers import env_paths
from sync_expected import Sandbox, bag, expected_contacts, expected_events

SELECTED = ["$pageview", "invoice_paid", "dashboard_viewed", "user_logged_in"]
FILTERS = [{"property": "plan", "operator": "not_equals", "value": "free"}]
PROP = "organization_id"


def configure(sb: Sandbox, monkeypatch, *, selected=SELECTED, filters=FILTERS) -> Config:
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", sb.info["api_key"])
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", sb.info["customerscore_api_key"])
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")
    cfg = Config.model_validate(
        {
            "posthog": {"region": sb.info["region"], "host": sb.ph, "project_id": sb.info["project_id"]},
            "customerscore": {"api_url": sb.cs, "tracker_key": sb.info["tracker_key"]},
            "identification": {"property": PROP},
            "events": {"selected": selected},
            "persons": {"filters": filters},
        }
    )
    save_config(cfg, env_paths().config_file)
    return cfg


def since_arg(sb: Sandbox, days: int = 30) -> str:
    now = datetime.fromisoformat(sb.info["data_now"].replace("Z", "+00:00"))
    return (now - timedelta(days=days)).strftime("%Y-%m-%d")


def since_dt(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)


def cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cs_posthog", *args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, **kw,
    )


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cs_posthog", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True,
    )


class Received:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.n = {w: len(sb.received(w)) for w in ("events", "contacts")}

    def __call__(self, what: str) -> list[dict]:
        return self.sb.received(what)[self.n[what] :]


# --- a quick sandbox: output modes and exit codes ------------------------------------------------
@pytest.fixture(scope="module")
def quick():
    with start_sandbox(events=1500, persons=200, customers=30, seed=11) as sb:
        yield Sandbox(sb.info)


def test_json_mode_prints_one_document_and_is_exact(quick, monkeypatch):
    sb = quick
    configure(sb, monkeypatch)
    since = since_arg(sb)
    got = Received(sb)
    proc = cli("sync", "--json", "--since", since)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    want, skipped = expected_events(sb, selected=SELECTED, since=since_dt(since), customer_property=PROP)
    assert bag(got("events")) == bag(want)
    assert bag(got("contacts")) == bag(expected_contacts(sb, customer_property=PROP, filters=FILTERS))
    assert doc["status"] == "ok" and doc["events_skipped_no_customer"] == skipped
    for key in ("events_sent", "contacts_sent", "contacts_unchanged", "posthog_requests",
                "customerscore_requests", "retries", "resent_after_crash", "duration_s", "events_possibly_doubled"):
        assert isinstance(doc[key], int | float), key
    # cron: quiet and nothing new prints nothing at all
    quiet = cli("sync", "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert got("events") and len(got("events")) == len(want)  # nothing more arrived


def test_human_summary_without_a_terminal_has_no_progress_bars(quick, monkeypatch):
    sb = quick
    configure(sb, monkeypatch, selected=["invoice_paid"])
    proc = cli("sync", "--since", since_arg(sb))
    assert proc.returncode == 0, proc.stderr
    assert "Sync ok" in proc.stdout and "events sent" in proc.stdout and "contacts sent" in proc.stdout
    assert "━" not in proc.stderr and "━" not in proc.stdout  # no bars off a terminal
    assert "\x1b[" not in proc.stdout + proc.stderr  # no colour either


def test_dry_run_shows_a_sample_and_sends_nothing(quick, monkeypatch):
    sb = quick
    configure(sb, monkeypatch, selected=["invoice_paid"])
    before = sb.stats()["total"]
    proc = cli("sync", "--dry-run", "--since", since_arg(sb))
    assert proc.returncode == 0, proc.stderr
    assert "Dry run: nothing was sent" in proc.stdout and "Sample events" in proc.stdout
    assert "invoice_paid" in proc.stdout
    assert sb.stats()["total"] == before
    doc = json.loads(cli("sync", "--dry-run", "--json").stdout)
    assert doc["dry_run"] is True and doc["events_sent"] == 0 and doc["events_to_send"] > 0
    assert len(doc["sample"]["events"]) == 5


def test_progress_bars_and_summary_on_a_terminal(quick, monkeypatch):
    pexpect = pytest.importorskip("pexpect")
    sb = quick
    configure(sb, monkeypatch, selected=["invoice_paid"])
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, ["-m", "cs_posthog", "sync", "--since", since_arg(sb)], env=env,
                          encoding="utf-8", timeout=60, dimensions=(30, 100))
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before
    assert child.exitstatus == 0, screen
    assert "events" in screen and "contacts" in screen and "━" in screen  # a bar per stream
    assert "Sync ok" in screen


def test_usage_and_credential_errors_have_their_exit_codes(quick, monkeypatch):
    sb = quick
    configure(sb, monkeypatch, selected=["invoice_paid"])
    bad_date = cli("sync", "--since", "yesterday")
    assert bad_date.returncode == 2 and "--since" in bad_date.stderr
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", "cs_not_the_key_0000")
    proc = cli("sync", "--json", "--since", since_arg(sb))
    assert proc.returncode == 77
    assert json.loads(proc.stdout)["status"] == "failed"
    assert "error: Customerscore rejected the API key" in proc.stderr and "hint:" in proc.stderr
    assert "cs_not_the_key_0000" not in proc.stderr + proc.stdout
    monkeypatch.delenv("CUSTOMERSCORE_API_KEY")
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "file")
    missing = cli("sync")
    assert missing.returncode == 78 and "Customerscore API key" in missing.stderr


def test_a_sync_while_another_holds_the_lock_exits_75_at_once(quick, monkeypatch):
    sb = quick
    configure(sb, monkeypatch, selected=["invoice_paid"])
    before = sb.stats()["total"]
    with RunLock(env_paths().lock_file):
        t0 = time.monotonic()
        proc = cli("sync")
        elapsed = time.monotonic() - t0
    assert proc.returncode == 75
    assert "another sync is running" in proc.stderr
    assert elapsed < 10 and sb.stats()["total"] == before


# --- a slow sandbox: concurrency and SIGKILL -----------------------------------------------------
@pytest.fixture(scope="module")
def slow():
    with start_sandbox(events=6000, persons=300, customers=30, seed=5, latency_ms=40) as sb:
        yield Sandbox(sb.info)


def wait_for(pred, timeout: float = 30.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def test_two_concurrent_syncs_one_exits_75(slow, monkeypatch):
    sb = slow
    configure(sb, monkeypatch)
    since = since_arg(sb, 60)
    got = Received(sb)
    first = spawn("sync", "--json", "--since", since)
    try:
        assert wait_for(lambda: RunLock(env_paths().lock_file).held_elsewhere)
        second = cli("sync", "--json", "--since", since)
        assert second.returncode == 75 and "another sync is running" in second.stderr
        assert second.stdout == ""
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    want, _ = expected_events(sb, selected=SELECTED, since=since_dt(since), customer_property=PROP)
    assert bag(got("events")) == bag(want)


def test_sigkill_mid_run_then_restart_loses_nothing(slow, monkeypatch):
    sb = slow
    cfg = configure(sb, monkeypatch)
    since = since_arg(sb, 60)
    want, _ = expected_events(sb, selected=SELECTED, since=since_dt(since), customer_property=PROP)
    assert len(want) > 1000
    got = Received(sb)
    kills = 0
    args = ["sync", "--json", "--since", since]
    # each run is killed while a tracker batch is held at the gate: in its middle, whatever the load
    # (waiting for a number of events instead let a fast run finish before it could be killed)
    for pass_first in (2, 4):
        with GatedCustomerscore(sb.cs, pass_first=pass_first) as gate:
            cfg.customerscore.api_url = gate.url
            save_config(cfg, env_paths().config_file)
            proc = spawn(*args)
            args = ["sync", "--json"]
            try:
                assert gate.held.wait(60), "the sync never sent the batch to hold"
                assert proc.poll() is None
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                proc.stdout.close()
                proc.stderr.close()
        # (leaving the gate releases the held batch: Customerscore may get it after its sender died)
        kills += 1
        # at most the batch in flight per kill came twice
        assert len(got("events")) <= len(want) + 100 * kills
    cfg.customerscore.api_url = sb.cs
    save_config(cfg, env_paths().config_file)
    final = cli(*args, timeout=120)
    assert final.returncode == 0, final.stderr
    doc = json.loads(final.stdout)
    received = bag(got("events"))
    dups = received - bag(want)
    assert received - dups == bag(want), "events were lost"
    assert sum(dups.values()) <= 100 * kills  # at most the batch in flight, per kill
    assert 0 <= doc["resent_after_crash"] <= 100
    # contacts are upserts (idempotent): whatever was resent, every expected one arrived
    assert set(bag(got("contacts"))) == set(bag(expected_contacts(sb, customer_property=PROP, filters=FILTERS)))
    # and the history says the killed runs were interrupted
    status = json.loads(cli("status", "--json").stdout)
    statuses = [r["status"] for r in status["last_runs"]]
    # (a kill can land after a run recorded itself "ok" and before its process ended: load decides)
    assert statuses[0] == "ok" and set(statuses) <= {"ok", "interrupted"}
    assert 1 <= statuses.count("interrupted") <= kills


class GatedCustomerscore:
    """A loopback proxy in front of the sandbox's Customerscore that forwards everything, except
    that the tracker requests after the first ``pass_first`` are held until ``release()``: a sync is
    then certainly in the middle of its run, a batch in flight, however loaded the machine."""

    def __init__(self, target: str, pass_first: int) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._tracked = 0
        gate = self
        host, port = urlsplit(target).hostname, urlsplit(target).port

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/api/tracker/track"):
                    with gate._lock:
                        gate._tracked += 1
                        hold = gate._tracked > pass_first
                    if hold:
                        gate.held.set()
                        gate._release.wait(60)
                conn = http.client.HTTPConnection(host, port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def release(self) -> None:
        self._release.set()

    def __enter__(self) -> GatedCustomerscore:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_after_the_batch_in_flight_and_loses_nothing(slow, monkeypatch, sig):
    sb = slow
    since = since_arg(sb, 60)
    want, _ = expected_events(sb, selected=["$pageview", "dashboard_viewed"], since=since_dt(since), customer_property=PROP)
    got = Received(sb)
    with GatedCustomerscore(sb.cs, pass_first=2) as gate:
        cfg = configure(sb, monkeypatch, selected=["$pageview", "dashboard_viewed"])
        cfg.customerscore.api_url = gate.url
        save_config(cfg, env_paths().config_file)
        proc = spawn("sync", "--json", "--since", since)
        try:
            # the third batch is held at the gate: the run is in its middle, that batch in flight
            assert gate.held.wait(60), "the sync never sent a third batch"
            assert proc.poll() is None
            proc.send_signal(sig)
            time.sleep(0.2)  # the signal is usually handled while the batch is still held; either is fine
            gate.release()
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        assert proc.returncode == 128 + sig, err  # 130 for Ctrl-C, 143 for SIGTERM
        doc = json.loads(out)
        assert doc["status"] == "interrupted" and doc["exit_code"] == 128 + sig  # the report says it too
        assert f"error: {'interrupted' if sig == signal.SIGINT else 'terminated'}" in err
        assert 0 < len(got("events")) < len(want)  # stopped in the middle
        final = cli("sync", "--json", timeout=120)  # through the gate, open now
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["resent_after_crash"] == 0  # a clean stop leaves nothing in flight
    assert bag(got("events")) == bag(want)  # nothing lost, nothing twice


# --- faults on both sides ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faulty():
    with start_sandbox(events=20000, persons=300, customers=30, seed=4, faults=0.1, stall_s=1.0) as sb:
        yield Sandbox(sb.info)


@pytest.mark.slow
def test_ten_percent_faults_on_both_sides_still_deliver_exactly(faulty, monkeypatch):
    from cs_posthog.sandbox.runner import get_json

    sb = faulty
    configure(sb, monkeypatch)
    monkeypatch.setenv("CS_POSTHOG_TIMEOUT", "0.5")  # a stall (1 s) is a timeout, retried
    monkeypatch.setenv("CS_POSTHOG_PAGE_SIZE", "200")  # many PostHog queries from little data
    since = since_arg(sb)
    got = Received(sb)
    proc = cli("sync", "--json", "--since", since, timeout=180)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    want, skipped = expected_events(sb, selected=SELECTED, since=since_dt(since), customer_property=PROP)
    # the sandbox never applies a faulted request, so retries must give exactly the expected set
    assert bag(got("events")) == bag(want)
    assert bag(got("contacts")) == bag(expected_contacts(sb, customer_property=PROP, filters=FILTERS))
    assert doc["events_skipped_no_customer"] == skipped
    ph_faults = sum(get_json(sb.ph + "/_sandbox/stats")["faults"].values())
    cs_faults = sum(sb.stats()["faults"].values())
    assert ph_faults > 0 and cs_faults > 0
    # each fault cost a retry (the run succeeded, so none was the last attempt); a loaded machine may
    # add retries of its own (an answer slower than the 0.5 s timeout), so not "exactly"
    assert doc["retries"] >= ph_faults + cs_faults
    assert doc["posthog_requests"] > 20
