"""PostHog's limits that end a query or a run, and how the client stays inside them: time limits
(504 from /query/, read timeouts) shrink the page; the legacy query tier (120/hour) is recognised from
a 429 and paced to; the organization policy on personal API keys; definitions paging.

Over real HTTP on loopback: the sandbox where it models the behaviour, else a tiny fake server here.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from cs_posthog.errors import ExitCode, PermissionDeniedError, PersonalKeysNotAllowedError, ThrottledError
from cs_posthog.http import RetryPolicy
from cs_posthog.posthog.client import PostHogClient, QueryTooSlowError
from cs_posthog.sandbox.runner import start_sandbox
from helpers import env_paths, env_settings, env_store, run_cli, sample_config_dict
from posthog_testlib import FAST_RETRIES, sandbox_stats


# --- a tiny PostHog stand-in --------------------------------------------------------------------
class FakePostHog:
    """A threaded HTTP server on loopback; ``handle(method, path, query, body) -> (status, json, delay_s)``.
    Every request is recorded as ``(method, path, query dict, body)``."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.requests: list[tuple[str, str, dict, dict | None]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one segment (no delayed-ACK stall per request)

            def log_message(self, *a):  # quiet
                pass

            def _do(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                outer.requests.append((method, parts.path, query, body))
                status, payload, delay = outer.handle(method, parts.path, query, body)
                if delay:
                    time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (read timeout)
                    pass

            def do_GET(self):
                self._do("GET")

            def do_POST(self):
                self._do("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def queries(self) -> list[dict]:
        return [b for m, p, q, b in self.requests if p.endswith("/query/")]


def limit_of(body: dict) -> int:
    return int(re.search(r"LIMIT (\d+)$", body["query"]["query"]).group(1))


def keyset_rows(body: dict, n_rows: int) -> list[list[int]]:
    after = (body["query"].get("values") or {}).get("after", -1)
    return [[k] for k in range(after + 1, min(n_rows, after + 1 + limit_of(body)))]


def build_k(key):
    if key is None:
        return "SELECT k FROM t ORDER BY k", {}
    return "SELECT k FROM t WHERE k > {after} ORDER BY k", {"after": key}


def ok_rows(rows):
    return 200, {"results": rows, "columns": ["k"], "types": [["k", "Int64"]], "hasMore": None}, 0


def throttled(seconds: int):
    unit = "second" if seconds == 1 else "seconds"
    return 429, {"type": "throttled_error", "code": "throttled",
                 "detail": f"Request was throttled. Expected available in {seconds} {unit}.", "attr": None}, 0


# --- time limits ----------------------------------------------------------------------------------
def test_a_read_timeout_on_query_halves_the_page_and_the_run_goes_on():
    """PostHog takes longer than the read timeout for pages over 300 rows: each such page is asked
    again at half the size (not retried as it was), and every row arrives once, in order."""

    def handle(method, path, query, body):
        if limit_of(body) > 301:
            return 200, {"results": []}, 1.0  # answers after the client stopped waiting
        return ok_rows(keyset_rows(body, 1_000))

    with FakePostHog(handle) as ph:
        shrinks: list[int] = []
        with PostHogClient(ph.url, "phx_test", 1, pace=False, policy=FAST_RETRIES, query_timeout=0.3,
                           settings=env_settings()) as client:
            pages = list(client.iter_pages(build_k, lambda r: r[0], page_size=1_000, min_page_size=100,
                                           on_shrink=shrinks.append))
        asked = [limit_of(b) for b in ph.queries()]
    assert shrinks == [500, 250]
    assert asked[:3] == [1_001, 501, 251]  # each slow size asked once
    assert [k for p in pages for (k,) in p] == list(range(1_000))


def test_a_plain_query_that_keeps_timing_out_is_too_slow_not_down():
    def handle(method, path, query, body):
        return 200, {"results": []}, 0.6

    with FakePostHog(handle) as ph:
        with PostHogClient(ph.url, "phx_test", 1, pace=False, policy=FAST_RETRIES, query_timeout=0.2,
                           settings=env_settings()) as client:
            with pytest.raises(QueryTooSlowError) as info:
                client.query("SELECT count() FROM events", name="t")
            assert client.project is not None
    assert info.value.timed_out and "read timeout" in info.value.message
    assert info.value.exit_code == ExitCode.TEMPFAIL
    assert len(ph.queries()) == FAST_RETRIES.max_attempts  # a lone query is retried first (it cannot shrink)


def test_query_read_timeout_is_above_posthogs_longest_limit(monkeypatch):
    from cs_posthog.http import default_timeout
    from cs_posthog.posthog.client import QUERY_TIMEOUT_S

    monkeypatch.delenv("CS_POSTHOG_TIMEOUT", raising=False)
    assert QUERY_TIMEOUT_S > 60 and default_timeout(QUERY_TIMEOUT_S, settings=env_settings()).read == QUERY_TIMEOUT_S
    assert default_timeout(settings=env_settings()).read == 30  # other endpoints keep theirs
    monkeypatch.setenv("CS_POSTHOG_TIMEOUT", "2")  # tests and slow proxies set every timeout
    assert default_timeout(QUERY_TIMEOUT_S, settings=env_settings()).read == 2


def test_the_sandbox_time_limit_is_too_slow_and_gives_up_at_the_smallest_page():
    """The sandbox's 504 ("This query hit the N-second time limit ...") is a QueryTooSlowError; a query
    whose time window is too wide fails at every size and, at the smallest page, says so (exit 75,
    the engine's cue to narrow the window); a narrow window passes."""
    with start_sandbox(events=20_000, persons=200, customers=10, seed=31, query_time_limit=0.005) as sb:
        info = sb.info

        def build(key):
            sql = "SELECT uuid, created_at FROM events"
            if key is None:
                return sql + " ORDER BY created_at, uuid", {}
            return (sql + " WHERE (created_at, uuid) > ({c}, toUUID({u})) ORDER BY created_at, uuid",
                    {"c": key[0], "u": key[1]})

        shrinks: list[int] = []
        with PostHogClient(sb.posthog_url, info["api_key"], info["project_id"], pace=False,
                           policy=FAST_RETRIES, settings=env_settings()) as client:
            with pytest.raises(QueryTooSlowError) as too_slow:
                list(client.iter_pages(build, lambda r: r, page_size=4_000, min_page_size=1_000,
                                       on_shrink=shrinks.append))
            narrow = client.query("SELECT count() FROM events WHERE timestamp >= toDateTime('2000-01-01') "
                                  "AND timestamp < toDateTime('2000-01-02')", name="t")
        stats = sandbox_stats(sb.posthog_url)
    assert shrinks == [2_000, 1_000]
    assert too_slow.value.status == 504 and too_slow.value.page_size == 1_000
    assert "1,000 rows" in too_slow.value.message and "time limit" in too_slow.value.message
    assert too_slow.value.exit_code == ExitCode.TEMPFAIL
    assert narrow.results[0][0] >= 0
    assert sum(v for k, v in stats["faults"].items()) == 0


# --- throttle tiers -------------------------------------------------------------------------------
def test_legacy_tier_is_recognised_from_the_first_429_on_the_sandbox(monkeypatch):
    """``--query-tier legacy --rate-limits fast``: 120 HogQL queries a (scaled) hour. Paced as current,
    the client meets one 429 whose wait is far longer than a minute: it switches to 120/hour at once,
    tells its callback, and from then on holds queries back itself instead of being throttled."""
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "60")
    changes: list[str] = []
    with start_sandbox(events=200, persons=20, customers=5, seed=32, rate_limits="fast", query_tier="legacy") as sb:
        info = sb.info
        # a person waiting (the credential check's policy): a wait of a minute ends the call at once
        policy = RetryPolicy(max_attempts=3, backoff_base=0.02, backoff_cap=0.1, max_throttle_wait=5)
        with PostHogClient(sb.posthog_url, info["api_key"], info["project_id"], on_tier_change=changes.append,
                           policy=policy, settings=env_settings()) as client:
            assert client.query_tier is None and client.query_budget_per_hour == 2_400
            for _ in range(120):
                client.query("SELECT 1", name="t")
            with pytest.raises(ThrottledError) as throttled_error:
                client.query("SELECT 1", name="t")
            assert throttled_error.value.retry_after > 30
            assert changes == ["legacy"] and client.query_tier == "legacy"
            assert client.query_budget_per_hour == 120 and client.query_tier_detected_at is not None
            assert client.query_wait() > 20  # the budget is spent: the pacer waits, PostHog need not say so
        stats = sandbox_stats(sb.posthog_url)
    assert stats["throttled"] == 1


def test_current_tier_is_not_mistaken_for_legacy(monkeypatch):
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "60")
    with start_sandbox(events=200, persons=20, customers=5, seed=33, rate_limits="fast") as sb:
        info = sb.info
        with PostHogClient(sb.posthog_url, info["api_key"], info["project_id"], policy=FAST_RETRIES,
                           settings=env_settings()) as client:
            for _ in range(300):  # more than 240 a (scaled) minute: paced, never throttled
                client.query("SELECT 1", name="t")
            assert client.query_tier is None and client.query_budget_per_hour == 2_400
        assert sandbox_stats(sb.posthog_url)["throttled"] == 0


class LegacyServer:
    """/query/ limited like PostHog's legacy tier, 120 queries per ``window`` seconds per key, with
    DRF's detail (ceil of the wait); counts the 429s it sends after each time point."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.accepted: list[float] = []
        self.throttled_at: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, method, path, query, body):
        if not path.endswith("/query/"):
            return 200, {"id": 1, "name": "P", "timezone": "UTC"}, 0
        now = time.monotonic()
        with self.lock:
            self.accepted = [t for t in self.accepted if t > now - self.window]
            if len(self.accepted) >= 120:
                self.throttled_at.append(now)
                return throttled(math.ceil(self.accepted[0] + self.window - now))
            self.accepted.append(now)
        return ok_rows([[1]])


@pytest.mark.slow
def test_after_the_switch_no_query_is_throttled_again(monkeypatch):
    """A legacy tier of 120 per 3 s (clock scaled 1,200x): 135 queries from 3 threads; after the 429
    that revealed the tier the client's own pacing keeps below 120 a window."""
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "1200")  # an hour is 3 s, a minute 50 ms
    server = LegacyServer(window=3.0)
    switched_at: list[float] = []
    with FakePostHog(server) as ph:
        with PostHogClient(ph.url, "phx_test", 1, policy=FAST_RETRIES,
                           on_tier_change=lambda t: switched_at.append(time.monotonic()),
                           settings=env_settings()) as client:
            def work():
                for _ in range(45):
                    assert client.query("SELECT 1", name="t").results == [[1]]

            threads = [threading.Thread(target=work) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert client.query_tier == "legacy" and len(switched_at) == 1
    # the 429 that revealed the tier, and at most the other queries already on their way (3 in
    # flight at most): none started after the switch is throttled
    assert 1 <= len(server.throttled_at) <= 3
    assert all(t < switched_at[0] + 0.5 for t in server.throttled_at)
    assert client.stats.throttled == len(server.throttled_at)


def test_a_stored_legacy_tier_paces_from_the_first_query(monkeypatch, home):
    from cs_posthog.config import Config, save_config
    from cs_posthog.sync.runner import make_posthog_client

    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "1200")
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", "phx_" + "a" * 40)
    server = LegacyServer(window=3.0)
    with FakePostHog(server) as ph:
        data = sample_config_dict()
        data["posthog"].update(host=ph.url, region="self-hosted", query_tier="legacy")
        cfg = Config.model_validate(data)
        save_config(cfg, env_paths().config_file)
        with make_posthog_client(cfg, policy=FAST_RETRIES, secrets=env_store(), settings=env_settings()) as client:
            assert client.query_tier == "legacy" and client.query_budget_per_hour == 120
            for _ in range(120):
                client.query("SELECT 1", name="t")
            assert client.query_wait() > 1  # the 121st waits for the window: paced, not throttled
    assert server.throttled_at == []


def test_the_detected_tier_is_stored_and_shown_by_status(monkeypatch, home):
    from cs_posthog.config import Config, load_config, save_config
    from cs_posthog.sync.runner import make_posthog_client, remember_query_tier

    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "1200")
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", "phx_" + "b" * 40)
    server = LegacyServer(window=3.0)
    with FakePostHog(server) as ph:
        data = sample_config_dict()
        data["posthog"].update(host=ph.url, region="self-hosted")
        cfg = Config.model_validate(data)
        save_config(cfg, env_paths().config_file)
        before = (home / "config.toml").read_text()
        assert "query_tier" not in before  # an old config, without the field, loads as it is
        policy = RetryPolicy(max_attempts=3, backoff_base=0.02, backoff_cap=0.1, max_throttle_wait=0.5)
        with make_posthog_client(cfg, policy=policy, secrets=env_store(), settings=env_settings()) as client:
            for _ in range(120):
                client.query("SELECT 1", name="t")
            with pytest.raises(ThrottledError):  # the run ends here (a wait too long), the tier is known
                client.query("SELECT 1", name="t")

        class Report:
            warnings: list[str] = []

        report = Report()
        assert remember_query_tier(cfg, client, env_paths().config_file, report) is True
    saved = load_config(env_paths().config_file)
    assert saved.posthog.query_tier == "legacy" and saved.posthog.query_tier_detected_at is not None
    assert saved.model_dump(exclude={"posthog"}) == cfg.model_dump(exclude={"posthog"})  # nothing else changed
    assert "120 HogQL queries an hour" in report.warnings[0]
    assert remember_query_tier(saved, client, env_paths().config_file) is False  # already stored

    monkeypatch.setenv("COLUMNS", "200")
    r = run_cli("status")
    assert r.exit_code == 0, r.stderr
    day = saved.posthog.query_tier_detected_at.strftime("%Y-%m-%d")
    assert re.search(rf"PostHog query budget +120/hour \(legacy tier, detected {day}\)", r.stdout), r.stdout
    r = run_cli("status", "--json")
    d = json.loads(r.stdout)["posthog"]
    assert d["query_tier"] == "legacy" and d["query_budget_per_hour"] == 120


def test_config_query_tier_values(home):
    from cs_posthog.config import save_query_tier

    (home / "config.toml").parent.mkdir(parents=True, exist_ok=True)
    from cs_posthog.config import Config, save_config

    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)
    r = run_cli("status")
    assert r.exit_code == 0 and "2,400/hour" in r.stdout
    text = (home / "config.toml").read_text().replace("[posthog]\n", "[posthog]\nquery_tier = \"slow\"\n")
    (home / "config.toml").write_text(text)
    r = run_cli("status")
    assert r.exit_code == 78 and "posthog.query_tier" in r.stderr
    (home / "config.toml").write_text(text.replace('"slow"', '"current"'))
    assert save_query_tier("legacy", None, env_paths().config_file) is True
    assert 'query_tier = "legacy"' in (home / "config.toml").read_text()


# --- organization policy --------------------------------------------------------------------------
def test_org_that_refuses_personal_api_keys_is_its_own_error(monkeypatch, home):
    from cs_posthog.posthog.credentials import check_credentials, raise_for_check

    with start_sandbox(events=200, persons=20, customers=5, seed=34, org_denies_personal_keys=True) as sb:
        info = sb.info
        monkeypatch.setenv("CS_POSTHOG_US_HOST", info["posthog_us"])
        monkeypatch.setenv("CS_POSTHOG_EU_HOST", info["posthog_eu"])
        monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")
        with PostHogClient(sb.posthog_url, info["api_key"], info["project_id"], policy=FAST_RETRIES,
                           settings=env_settings()) as client:
            with pytest.raises(PersonalKeysNotAllowedError) as denied:
                client.query("SELECT 1", name="t")
        assert isinstance(denied.value, PermissionDeniedError) and denied.value.exit_code == ExitCode.NOPERM
        assert "organization policy" in denied.value.message
        assert "Members can use personal API keys" in denied.value.hint

        check = check_credentials(info["api_key"], str(info["project_id"]), settings=env_settings())
        assert not check.ok and check.org_policy and "does not allow using personal API keys" in check.org_policy
        assert check.missing_scopes == [] and "organization" in check.problem and "scope" not in check.problem.replace(
            "not a scope", "")
        with pytest.raises(PersonalKeysNotAllowedError):
            raise_for_check(check)

        monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", info["api_key"])
        monkeypatch.setenv("CUSTOMERSCORE_API_KEY", info["customerscore_api_key"])
        r = run_cli("connect", "--no-input", "--no-sync", "--project", str(info["project_id"]),
                    "--tracker-key", info["tracker_key"], "--cs-url", info["customerscore"],
                    "--customer-property", "organization_id", "--event", "x")
    assert r.exit_code == 77
    assert "does not allow personal API keys" in r.stderr and "Members can use personal API keys" in r.stderr
    assert "missing" not in r.stderr


# --- definitions ----------------------------------------------------------------------------------
def test_definitions_paging_asks_by_name_and_property_search_asks_one_page():
    names = [f"prop_{i:03d}" for i in range(250)]

    def handle(method, path, query, body):
        limit, offset = int(query.get("limit", 100)), int(query.get("offset", 0))
        page = names[offset:offset + limit]
        nxt = f"http://x{path}?limit={limit}&offset={offset + limit}" if offset + limit < len(names) else None
        return 200, {"next": nxt, "results": [{"id": n, "name": n} for n in page]}, 0

    with FakePostHog(handle) as ph:
        with PostHogClient(ph.url, "phx_test", 1, pace=False, settings=env_settings()) as client:
            assert [d.name for d in client.event_definitions()] == names
            events = [q for m, p, q, b in ph.requests if p.endswith("/event_definitions/")]
            assert len(events) == 3 and all(q.get("ordering") == "name" for q in events)

            from cs_posthog.wizard.source import PostHogSource

            source = PostHogSource.__new__(PostHogSource)
            source.client = client
            found = source.person_properties("la")  # a substring of "latest": PostHog matches nearly all
            props = [q for m, p, q, b in ph.requests if p.endswith("/property_definitions/")]
    assert found == names[:100]
    assert len(props) == 1 and props[0]["limit"] == "100" and props[0]["search"] == "la"
