"""`cs-posthog demo --serve` (issue 16): a local PostHog and Customerscore that stay up while an app
sends events with PostHog's official SDK (unmodified); each sync says what reached Customerscore.
The real process, its JSON lines read as they come; the README's snippet is what the app runs."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time

import pytest
from helpers import cs_posthog_cmd, run_cli
from posthog import Posthog

from cs_posthog.sandbox.runner import get_jsonl


class Served:
    """`cs-posthog demo --serve --json` in the background, its stdout lines in a queue."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen([*cs_posthog_cmd(), "demo", "--serve", "--json", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next(self, key: str, timeout: float = 90) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                doc = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"demo --serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
                continue
            if key in doc:
                return doc[key]
        raise AssertionError(f"no {key!r} line within {timeout} s")

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode, self.proc.stderr.read()


@pytest.mark.slow
def test_an_app_with_the_sdk_sends_events_and_each_sync_delivers_them():
    served = Served("--port", "0", "--every", "0.5")
    try:
        ready = served.next("serving")
        host, token = ready["host"], ready["project_token"]
        assert token.startswith("phc_") and host.startswith("http://127.0.0.1:")
        customer = ready["customer_ids"][0]

        # the README's snippet: an identified user with a customer id, an event
        posthog = Posthog(token, host=host)
        posthog.set(distinct_id="ann@example.com",
                    properties={"email": "ann@example.com", ready["customer_property"]: customer})
        uuid = posthog.capture("report_created", distinct_id="ann@example.com")
        posthog.capture("report_created", distinct_id="no-customer")  # a Person without a customer id
        posthog.shutdown()

        sent: dict = {}
        while sent.get("events_sent", 0) < 1 or sent.get("contacts_sent", 0) < 1:  # (possibly over two syncs)
            report = served.next("sync")
            for k in ("events_sent", "contacts_sent", "events_skipped_no_customer"):
                sent[k] = sent.get(k, 0) + report[k]
        got = get_jsonl(ready["customerscore"] + "/_sandbox/received/events")
        report_created = [e for e in got if e["name"] == "report_created"]
        assert len(report_created) == 1 and report_created[0]["identification"]["customer"] == customer
        contacts = get_jsonl(ready["customerscore"] + "/_sandbox/received/contacts")
        assert [c["customer_external_id"] for c in contacts] == [customer]
        assert contacts[0]["attributes"] == {"email": "ann@example.com"}
        assert uuid  # (the SDK's own uuid for it)

        # a new event name later: picked up by the next syncs, nothing sent twice
        posthog = Posthog(token, host=host)
        posthog.capture("invoice_paid", distinct_id="ann@example.com")
        posthog.shutdown()
        while True:
            report = served.next("sync")
            if report["events_sent"]:
                break
        got = get_jsonl(ready["customerscore"] + "/_sandbox/received/events")
        assert sorted(e["name"] for e in got) == ["invoice_paid", "report_created"]  # ($set: bookkeeping)
    finally:
        code, err = served.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_the_human_banner_has_the_host_token_and_the_sdk_snippet():
    served = subprocess.Popen([*cs_posthog_cmd(), "demo", "--serve", "--port", "0", "--every", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        out: list[str] = []
        end = time.monotonic() + 90
        assert served.stderr is not None
        while time.monotonic() < end:
            line = served.stderr.readline()
            out.append(line)
            if "Waiting for events" in line or not line:
                break
        text = "".join(out)
        assert "Local PostHog ready at http://127.0.0.1:" in text and "project token phc_" in text
        served.send_signal(signal.SIGTERM)  # a service manager's stop: clean, exit 0
        rest_out, rest_err = served.communicate(timeout=30)
    finally:
        if served.poll() is None:
            served.kill()
            served.wait(5)
    snippet = rest_out + text
    assert "from posthog import Posthog" in snippet and "posthog.capture(" in snippet
    assert served.returncode == 0, rest_err
    assert "Stopped" in rest_err


def test_serve_options_are_checked():
    r = run_cli("demo", "--every", "5")
    assert r.exit_code == 2 and "--every and --port go with --serve" in r.stderr
    r = run_cli("demo", "--serve", "--every", "0")
    assert r.exit_code == 2 and "--every must be a positive number" in r.stderr


@pytest.mark.slow
def test_serve_with_groups_sends_events_to_the_company_they_carry():
    served = Served("--port", "0", "--every", "0.5", "--groups")
    try:
        ready = served.next("serving")
        assert ready["group_type"] == "company"
        customer = ready["customer_ids"][-1]
        posthog = Posthog(ready["project_token"], host=ready["host"])
        posthog.group_identify("company", customer, {"name": "Acme"})
        posthog.capture("report_created", distinct_id="bob", groups={"company": customer})
        posthog.capture("report_created", distinct_id="bob")  # no group: skipped, counted
        posthog.shutdown()
        skipped = 0
        while True:
            report = served.next("sync")
            skipped += report["events_skipped_no_customer"]
            if report["events_sent"]:
                break
        got = get_jsonl(ready["customerscore"] + "/_sandbox/received/events")
        assert [(e["name"], e["identification"]["customer"]) for e in got] == [("report_created", customer)]
    finally:
        code, err = served.stop()
    assert code == 0, err


def test_ports_in_use_are_one_line_and_a_hint():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([*cs_posthog_cmd(), "demo", "--serve", "--port", str(port)], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=90)
    assert r.returncode == 69, r.stderr
    assert f"could not start on ports {port}-{port + 2}" in r.stderr and "--port 0" in r.stderr
    assert "Traceback" not in r.stderr
