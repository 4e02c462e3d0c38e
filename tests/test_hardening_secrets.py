"""Hardening (issue 11, item 7): keys in reports.

A server that quotes the request headers in its error body (a proxy, a debugging gateway) hands our
keys back to us. They must come out masked on every channel: `sync --json`, the state database
(`runs.error`, `runs.summary`), `status` and `status --json`, and the log cron keeps (stdout and
stderr appended). The keys are canaries made at run time; the Customerscore one carries a `/`, a `"`
and a `\\`, so that the JSON the server writes (and the JSON we write around it) splits it with
escapes. Its random halves must appear nowhere (the mask shows the last four characters only).

And a key pasted into a config field is refused, as a flag (exit 2) and in config.toml (exit 78),
without being printed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import tomli_w

from cs_posthog.sandbox.runner import start_sandbox
from helpers import env_app, fake_key, run_cli


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=300, persons=40, customers=8, seed=11, region="eu") as sb:
        yield sb


class _Key:
    """A canary key: prefix + two random halves around characters JSON escapes."""

    def __init__(self, prefix: str, middle: str = "") -> None:
        self.a = fake_key("", 20)
        self.b = fake_key("", 20)
        self.value = prefix + self.a + middle + self.b

    def leaks(self, text: str) -> list[str]:
        """What of the key is in ``text``: the whole key, or a random half (the mask keeps 4)."""
        return [part for part in (self.value, self.a, self.b[:16]) if part in text]


class EchoServer:
    """A fake API on loopback that refuses every request with a JSON error quoting the request
    headers, the way a debugging proxy does (403: not retried, the run stops at once)."""

    def __init__(self, status: int = 403, field: str = "message") -> None:
        echo_status, echo_field = status, field

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                quoted = json.dumps({k: v for k, v in self.headers.items()})
                body = json.dumps({"error": "forbidden", echo_field: f"request refused; headers were {quoted}"}).encode()
                self.send_response(echo_status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EchoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Cli:
    """`cs-posthog` as cron runs it: a real process, its output appended to the log."""

    def __init__(self, home: Path, info: dict, tmp_path: Path) -> None:
        self.home = home
        self.info = info
        self.env = {
            **os.environ,
            "CS_POSTHOG_US_HOST": info["posthog_us"],
            "CS_POSTHOG_EU_HOST": info["posthog_eu"],
            "CS_POSTHOG_RATE_SCALE": "off",
            "CS_POSTHOG_CRONTAB": str(tmp_path / "no-crontab"),
        }
        self.log = home / "sync.log"

    def run(self, *args: str, stdin: str = "", env: dict | None = None, code: int | None = 0):
        proc = subprocess.run([sys.executable, "-m", "cs_posthog", *args], input=stdin, capture_output=True,
                              text=True, env={**self.env, **(env or {})}, timeout=120)
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(proc.stdout + proc.stderr)
        if code is not None:
            assert proc.returncode == code, (args, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc

    def run_here(self, *args: str, stdin: str = "", env: dict | None = None,
                 code: int = 0) -> subprocess.CompletedProcess:
        """The command in this process (``run_cli``), started as a new process starts: no key known
        beforehand (redaction is process-wide; the command's App registers what its store holds).
        For refusals of what was typed, where a process of its own adds nothing to check."""
        from cs_posthog import secrets

        secrets.forget_secrets()
        r = run_cli(*args, input=stdin, env={**self.env, **(env or {})})
        assert r.exit_code == code, (args, r.exit_code, r.stdout[-2000:], r.stderr[-2000:])
        return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)

    def runs(self) -> list[tuple[str, str | None, str | None]]:
        db = sqlite3.connect(self.home / "state.sqlite3")
        try:
            return db.execute("SELECT status, error, summary FROM runs ORDER BY id").fetchall()
        finally:
            db.close()


@pytest.fixture
def cli(home, sandbox, tmp_path):
    return Cli(home, sandbox.info, tmp_path)


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def connect_args(info: dict, cs_url: str, *extra: str) -> list[str]:
    return ["connect", "--no-input", "--no-sync", "--project", str(info["project_id"]),
            "--tracker-key", info["tracker_key"], "--cs-url", cs_url,
            "--customer-property", info["customer_property"], "--event", "invoice_paid", *extra]


def since(info: dict) -> str:
    return info["data_now"][:4] + "-01-01" if info["data_now"][5:7] != "01" else info["data_now"][:10]


def assert_masked_everywhere(cli: Cli, key: _Key, outputs: list[str]) -> None:
    for text in outputs:
        assert not key.leaks(text), key.leaks(text)
    runs = cli.runs()
    assert runs and runs[-1][0] == "failed", runs
    for status, error, summary in runs:
        assert not key.leaks(error or ""), ("runs.error", error)
        assert not key.leaks(summary or ""), ("runs.summary", summary)
    raw = (cli.home / "state.sqlite3").read_bytes()
    for part in key.leaks(raw.decode("latin-1")):
        pytest.fail(f"the state database holds {part!r}")
    assert not key.leaks(cli.log.read_text("utf-8")), "the log"


# --- a Customerscore that quotes our headers ---------------------------------------------------
@pytest.mark.parametrize("store", ["env", "file"])
def test_customerscore_echoing_its_key_is_masked_in_json_state_status_and_log(cli, store):
    info = cli.info
    cs_key = _Key("cs_", '/"\\')
    with EchoServer() as cs:
        env: dict[str, str] = {}
        # connect checks the key (the echo server refuses it: 77), so connect where nothing answers
        # (the key is "not checked"), then point the config at the echo server
        dead = f"http://127.0.0.1:{_closed_port()}"
        if store == "env":
            cli.run(*connect_args(info, dead, "--api-key-stdin"), stdin=info["api_key"] + "\n",
                    env={"CUSTOMERSCORE_API_KEY": cs_key.value})
            env = {"CUSTOMERSCORE_API_KEY": cs_key.value}
        else:
            cli.run(*connect_args(info, dead, "--api-key-stdin", "--cs-api-key-stdin"),
                    stdin=f"{info['api_key']}\n{cs_key.value}\n")
            assert tomllib.loads((cli.home / "secrets.toml").read_text())["customerscore"] == cs_key.value
        # edit checks the key there too: refused (77), with the echo masked, and nothing saved ...
        refused = cli.run("edit", "--no-input", "--cs-url", cs.url, env=env, code=77)
        assert "headers were" in refused.stderr and not cs_key.leaks(refused.stderr + refused.stdout)
        # ... so the config is pointed at the echo server by hand
        config = cli.home / "config.toml"
        config.write_text(config.read_text().replace(dead, cs.url))
        sync = cli.run("sync", "--json", "--since", since(info), env=env, code=77)
        report = json.loads(sync.stdout)
        assert report["status"] == "failed" and "headers were" in report["error"]
        assert "****" in report["error"]  # the key is quoted, masked
        status = cli.run("status", env=env)
        status_json = cli.run("status", "--json", env=env)
        last = json.loads(status_json.stdout)["last_runs"][0]
        assert "****" in last["error"]
        debug = cli.run("--debug", "-v", "sync", "--json", env=env, code=77)
    assert_masked_everywhere(cli, cs_key, [sync.stdout, sync.stderr, status.stdout, status.stderr,
                                           status_json.stdout, debug.stdout, debug.stderr])


# --- a PostHog that quotes our headers ---------------------------------------------------------
def test_posthog_echoing_the_authorization_header_is_masked(cli):
    """Keys in secrets.toml only (no command read them before the error): the Authorization header
    quoted in PostHog's `detail`."""
    info = cli.info
    ph_key = _Key("phx_")
    cs_key = _Key("cs_", '/"\\')
    with EchoServer(status=403, field="detail") as ph, EchoServer() as cs:
        cli.home.mkdir(parents=True, exist_ok=True)
        os.chmod(cli.home, 0o700)
        secrets = cli.home / "secrets.toml"
        secrets.write_text(tomli_w.dumps({"posthog": ph_key.value, "customerscore": cs_key.value}))
        os.chmod(secrets, 0o600)
        cfg = {
            "version": 1,
            "posthog": {"region": "self-hosted", "host": ph.url, "project_id": 5},
            "customerscore": {"api_url": cs.url, "tracker_key": info["tracker_key"]},
            "identification": {"property": "organization_id"},
            "events": {"selected": ["invoice_paid"]},
        }
        (cli.home / "config.toml").write_text(tomli_w.dumps(cfg))
        sync = cli.run("sync", "--json", code=None)
        assert sync.returncode not in (0, 1), (sync.returncode, sync.stderr)
        assert "Authorization" in sync.stdout + sync.stderr
        status = cli.run("status")
        status_json = cli.run("status", "--json")
        debug = cli.run("--debug", "sync", code=None)
    assert_masked_everywhere(cli, ph_key, [sync.stdout, sync.stderr, status.stdout, status_json.stdout,
                                           debug.stdout, debug.stderr])


# --- a key pasted into a config field ----------------------------------------------------------
def test_a_key_given_as_a_field_flag_is_refused_without_being_printed(cli):
    info = cli.info
    cs_key = _Key("cs_")
    env = {"CUSTOMERSCORE_API_KEY": cs_key.value, "POSTHOG_PERSONAL_API_KEY": info["api_key"]}
    stranger = fake_key("phx_", 40)  # not stored anywhere: recognised by its shape
    cases = [
        ["--customer-property", cs_key.value],
        ["--customer-property", info["customer_property"], "--contact-id", info["api_key"]],
        ["--customer-property", info["customer_property"], "--filter", f"plan = {cs_key.value}"],
        ["--customer-property", info["customer_property"], "--filter", f"{stranger} is set"],
        ["--customer-property", info["customer_property"], "--event", stranger],
    ]
    for extra in cases:
        args = ["connect", "--no-input", "--no-sync", "--project", str(info["project_id"]),
                "--tracker-key", info["tracker_key"], "--cs-url", info["customerscore"], "--event", "invoice_paid",
                *extra]
        proc = cli.run_here(*args, env=env, code=2)
        assert "API key" in proc.stderr and "****" in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 2 and not proc.stdout
        for secret in (cs_key.value, info["api_key"], stranger):
            assert secret not in proc.stderr
        assert not (cli.home / "config.toml").exists()

    # connected, then an edit that would put the key in a filter value or the customer property
    cli.run_here("connect", "--no-input", "--no-sync", "--project", str(info["project_id"]),
            "--tracker-key", info["tracker_key"], "--cs-url", info["customerscore"], "--event", "invoice_paid",
            "--customer-property", info["customer_property"],
            env={**env, "CUSTOMERSCORE_API_KEY": info["customerscore_api_key"]})  # a key Customerscore accepts
    before = (cli.home / "config.toml").read_text()
    for extra in (["--filter", f"plan != {cs_key.value}"], ["--customer-property", cs_key.value]):
        proc = cli.run_here("edit", "--no-input", *extra, env=env, code=2)
        assert cs_key.value not in proc.stderr and "****" in proc.stderr
    assert (cli.home / "config.toml").read_text() == before


def test_a_key_in_config_toml_is_refused_by_sync_and_status(cli):
    """The key stored in secrets.toml, pasted into config.toml by hand: 78 naming the file and
    the field, the key masked; nothing is sent to PostHog (the sync stops at the config)."""
    info = cli.info
    ph, cs = info["api_key"], info["customerscore_api_key"]
    cli.run_here(*connect_args(info, info["customerscore"], "--api-key-stdin", "--cs-api-key-stdin"), stdin=f"{ph}\n{cs}\n")
    good = tomllib.loads((cli.home / "config.toml").read_text())
    for where, value in ((("identification", "property"), cs),
                         (("persons", "contact_id"), ph),
                         (("persons", "filters"), [{"property": "plan", "operator": "equals", "value": cs}]),
                         (("events", "selected"), ["invoice_paid", cs])):
        cfg = json.loads(json.dumps(good))
        cfg.setdefault(where[0], {})[where[1]] = value
        (cli.home / "config.toml").write_text(tomli_w.dumps(cfg))
        for args in (["sync"], ["status"], ["status", "--json"]):
            proc = cli.run_here(*args, code=78)
            assert "config.toml" in proc.stderr and where[1] in proc.stderr, proc.stderr
            assert "API key" in proc.stderr and "****" in proc.stderr
            assert cs not in proc.stdout + proc.stderr and ph not in proc.stdout + proc.stderr
    assert not (cli.home / "state.sqlite3").exists() or not cli.runs()


# --- the redaction itself, in process ------------------------------------------------------------
def test_redact_finds_a_key_split_by_escapes():
    from cs_posthog import secrets

    key = _Key("cs_", '/"\\')
    secrets.register_secret(key.value)
    once = json.dumps({"customerscore-key": key.value})
    twice = json.dumps({"detail": once})
    ascii_escaped = json.dumps(key.value).replace(key.a[:1], "\\u%04x" % ord(key.a[0]), 1)
    for text in (key.value, once, twice, json.dumps(twice), repr(key.value), ascii_escaped,
                 json.dumps(key.value).replace("/", "\\/"), "k=" + key.value.replace("/", "%2F").replace('"', "%22")):
        masked = secrets.redact(text)
        assert not key.leaks(masked), (text, masked)
        assert "****" + key.b[-4:] in masked
    data = secrets.redact_data({"error": twice, key.value: [key.value, 3]})
    assert not key.leaks(json.dumps(data))


def test_every_store_is_registered_before_anything_is_written(home, monkeypatch, capsys):
    """Keys in the environment, the keyring and the file are masked by every channel of the output
    sink before any command read them: the App, as cli.py makes it, knows them all."""
    from rich.table import Table

    from cs_posthog import secrets

    env_key, ring_key, file_key = _Key("cs_"), _Key("kr_"), _Key("f_", '"')
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", env_key.value)
    home.mkdir(parents=True, exist_ok=True)
    (home / "secrets.toml").write_text(tomli_w.dumps({"customerscore": file_key.value}))
    os.chmod(home / "secrets.toml", 0o600)
    ring = {"posthog-personal-api-key": ring_key.value}
    monkeypatch.setattr(secrets.SecretStore, "_keyring_call",
                        lambda self, fn, service, user, *a: (True, ring.get(user)) if fn == "get_password"
                        else (False, None))
    keys = (env_key, ring_key, file_key)
    text = " ".join(k.value for k in keys)
    app = env_app()
    app.know_keys()
    out = app.out
    out.warn(text)
    out.info(text)
    out.error(text)
    table = Table("field", "value")
    table.add_row("error", json.dumps({"headers": text}))  # wrapped over several lines at 80 columns
    out.print(table)
    out.data({"error": text, "nested": [{"k": json.dumps(text)}]})
    got = capsys.readouterr()
    for key in keys:
        assert not key.leaks(got.out + got.err), key.value


def test_finish_run_stores_the_report_masked(home):
    from cs_posthog import secrets
    from cs_posthog.sync.state import SyncState

    key = _Key("cs_", '"')
    secrets.register_secret(key.value)
    home.mkdir(parents=True, exist_ok=True)
    state = SyncState(home / "state.sqlite3")
    try:
        run_id = state.start_run("incremental")
        state.finish_run(run_id, "failed", {"error": f"refused: {json.dumps(key.value)}", "warnings": [key.value]},
                         error=f"headers {json.dumps({'k': key.value})}")
        run = state.last_runs(1)[0]
    finally:
        state.close()
    assert not key.leaks(json.dumps(run.as_dict()))
    assert not key.leaks((home / "state.sqlite3").read_bytes().decode("latin-1"))
