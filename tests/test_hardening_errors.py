"""Hardening (issue 11, items 11, 14-17): what an adversarial run broke, each as one line plus a hint
with its own exit code instead of "This is a bug in cs-posthog" (exit 1) or a traceback.

- 17: an impossible ``--since`` is a usage error naming the flag (2); a redirect from an API is the
  URL to fix (78, naming where it points); a malformed PostHog result row names PostHog's answer (69).
- 11: disk full (74) and a read-only home (73) name the file and the OS error; ``status`` on a
  read-only home never calls the state damaged.
- 14: ``edit`` writes through a symlinked config.toml; a dangling or looping link is named (78).
- 15: a secrets.toml readable by others is warned about (one line) and made 0600.
- 16: Ctrl-C and SIGTERM anywhere: one line, a hint, 130 / 143, never a traceback.

Fake servers are plain ``http.server`` threads on loopback: the sandbox cannot misbehave these ways.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from cs_posthog import errors
from cs_posthog.config import Config, save_config
from cs_posthog.http import RetryPolicy
from helpers import env_paths, env_settings, fake_key, run_cli, sample_config_dict

FAST = RetryPolicy(max_attempts=2, backoff_base=0.001, backoff_cap=0.01, max_throttle_wait=1)

Answer = tuple[int, dict[str, str], bytes]


@contextmanager
def fake_server(answer: Callable[[str, str, bytes], Answer]) -> Iterator[str]:
    """A loopback HTTP server answering every request with ``answer(method, path, body)``."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            status, headers, body = answer(self.command, self.path, self.rfile.read(n) if n else b"")
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def connect_to(home, monkeypatch, posthog: str, customerscore: str = "https://api.customerscore.io") -> Config:
    data = sample_config_dict()
    data["posthog"].update(region="self-hosted", host=posthog)
    data["customerscore"]["api_url"] = customerscore
    cfg = Config.model_validate(data)
    save_config(cfg, env_paths().config_file)
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", fake_key())
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", fake_key("csk_", 24))
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")
    return cfg


def one_error(stderr: str) -> tuple[str, str]:
    """The ``error:`` and ``hint:`` lines ending stderr, no traceback (warnings may come before)."""
    lines = stderr.splitlines()
    assert len(lines) >= 2 and lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), stderr
    assert sum(ln.startswith("error: ") for ln in lines) == 1, stderr
    lines = lines[-2:]
    assert "Traceback" not in stderr and "bug in cs-posthog" not in stderr, stderr
    return lines[0], lines[1]


# --- 17: --since, redirects, malformed rows --------------------------------------------------------
@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "0001-01-01", "1969-12-31T23:59:59Z",
                                   "9999-12-31T23:30:00-01:00"])
def test_an_impossible_since_is_a_usage_error_naming_the_flag(home, since):
    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)
    r = run_cli("sync", "--since", since)
    assert r.exit_code == 2, r.stderr
    error, _ = one_error(r.stderr)
    assert "--since" in error


def test_a_redirect_from_posthog_names_where_it_points_and_exits_78(home, monkeypatch):
    def answer(method: str, path: str, body: bytes) -> Answer:
        return 302, {"Location": "https://posthog.example.com" + path}, b""

    with fake_server(answer) as url:
        connect_to(home, monkeypatch, url)
        r = run_cli("sync")
    assert r.exit_code == 78, r.stderr
    error, hint = one_error(r.stderr)
    assert "redirect" in error and "302" in error and "https://posthog.example.com/api/" in error
    assert "https://posthog.example.com " in hint + " " and "edit credentials" in hint


def test_a_redirect_to_a_login_page_says_the_url_does_not_lead_to_the_api():
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/login?next=/api/"})

    from cs_posthog.posthog.client import PostHogClient

    with PostHogClient("https://ph.example.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       policy=FAST, pace=False,
                       settings=env_settings()) as client, pytest.raises(getattr(errors, 'RedirectedError', ())) as info:
        client.query("SELECT 1", name="t")
    assert info.value.exit_code == 78
    assert "https://ph.example.com/login?next=/api/" in info.value.message
    assert "does not lead straight" in info.value.hint


def test_a_redirect_from_customerscore_is_the_api_url_to_fix():
    from cs_posthog.customerscore.client import CustomerscoreClient

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://api2.customerscore.io" + req.url.path})

    c = CustomerscoreClient("https://api.customerscore.io", fake_key("csk_", 24), "CS-TEST1",
                            transport=httpx.MockTransport(handler), policy=FAST, pace=False, settings=env_settings())
    with pytest.raises(getattr(errors, 'RedirectedError', ())) as info:
        c.track([{"name": "x", "timestamp": 1, "identification": {"customer": "c"}, "data": {}}])
    assert info.value.exit_code == 78 and info.value.status == 301
    assert "use https://api2.customerscore.io " in info.value.hint + " "
    assert "Customerscore API URL" in info.value.hint


QUERY_PAGES = {
    "too few columns": {"columns": ["a", "b"], "types": [["a", "String"], ["b", "String"]], "results": [["x", "y"], ["x"]]},
    "not a list": {"columns": ["a"], "types": [["a", "String"]], "results": ["x"]},
    "wrong type": {"columns": ["a", "n"], "types": [["a", "UUID"], ["n", "UInt64"]], "results": [[{"x": 1}, 1]]},
    "text for a number": {"columns": ["n"], "types": [["n", "UInt64"]], "results": [["12"]]},
}


@pytest.mark.parametrize("page", list(QUERY_PAGES), ids=list(QUERY_PAGES))
def test_a_malformed_result_row_is_posthogs_answer_not_a_bug(page):
    from cs_posthog.posthog.client import PostHogClient

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=QUERY_PAGES[page])

    with PostHogClient("https://ph.example.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       policy=FAST, pace=False,
                       settings=env_settings()) as client, pytest.raises(getattr(errors, 'UnexpectedAnswerError', ())) as info:
        client.query("SELECT 1", name="probe")
    assert info.value.exit_code == 69
    assert "PostHog's answer to the query 'probe' is malformed: row" in info.value.message


def test_a_well_formed_answer_passes_untouched():
    from cs_posthog.posthog.client import PostHogClient

    page = {"columns": ["u", "n", "f", "b", "s"],
            "types": [["u", "UUID"], ["n", "Nullable(Int64)"], ["f", "Float64"], ["b", "Bool"], ["s", "Nullable(String)"]],
            "results": [["0190", 1, 1.5, True, None], ["0191", None, 2, False, "x"]]}

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page)

    with PostHogClient("https://ph.example.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       policy=FAST, pace=False, settings=env_settings()) as client:
        assert client.query("SELECT 1", name="t").results == page["results"]


def test_sync_on_a_malformed_page_exits_69_naming_posthogs_answer(home, monkeypatch):
    """Everything else answers as PostHog does; the events page has rows one column short."""

    def answer(method: str, path: str, body: bytes) -> Answer:
        if path.endswith("/query/"):
            q = json.loads(body)["query"]["query"]
            if "FROM events" in q and "LIMIT" in q:  # a page of events: one column short
                row = ["0190aaaa-0000-7000-8000-000000000001", "$pageview", "2024-03-01T00:00:00Z"]
                return 200, {"Content-Type": "application/json"}, json.dumps(
                    {"columns": ["uuid", "event", "timestamp", "created_at"], "types": [], "results": [row]}).encode()
            return 200, {"Content-Type": "application/json"}, json.dumps({"columns": [], "types": [], "results": []}).encode()
        return 200, {"Content-Type": "application/json"}, b'{"results": [], "next": null}'

    with fake_server(answer) as url:
        connect_to(home, monkeypatch, url)
        r = run_cli("sync")
    assert r.exit_code == 69, r.stderr
    error, _ = one_error(r.stderr)
    assert "PostHog's answer" in error and "malformed" in error and "row 1 has 3 values for 4 columns" in error
