"""The PostHog client against the sandbox over real HTTP (and MockTransport for faults the sandbox
cannot produce: query time limits, capped counts, foreign ``next`` links)."""

from __future__ import annotations

import json
import math
import re
import threading
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from cs_posthog.errors import (
    AuthError,
    MissingScopesError,
    NotFoundError,
    PermissionDeniedError,
    QueryError,
    ThrottledError,
    UnavailableError,
)
from cs_posthog.http import Pacer, RetryPolicy
from cs_posthog.posthog.client import MAX_PAGE_SIZE, PostHogClient, QueryTooSlowError
from cs_posthog.sandbox.runner import get_jsonl, http_request, post_json, start_sandbox
from cs_posthog.timeutil import parse_datetime
from helpers import env_settings
from posthog_testlib import FAST_RETRIES, Intercept, posthog_error, route_count, sandbox_stats

pytest_plugins = ["conftest_posthog"]

EVENTS_ROUTE = "GET /api/projects/{id}/event_definitions/"
PROPS_ROUTE = "GET /api/projects/{id}/property_definitions/"
QUERY_ROUTE = "POST /api/projects/{id}/query/"


def raw_list(sb, path: str, **params) -> dict:
    """One big page straight from the sandbox (no client), to compare with."""
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    status, _, payload = http_request(
        "GET", f"{sb.posthog_url}/api/projects/{sb.info['project_id']}/{path}/?{qs}",
        headers={"Authorization": f"Bearer {sb.info['api_key']}"},
    )
    assert status == 200
    return json.loads(payload)


# --- identity and project ------------------------------------------------------------------------


def test_key_user_and_project(ph_client, ph_env):
    info = ph_env.info
    key = ph_client.current_key()
    assert key.mask_value.startswith("phx_") and key.mask_value.endswith(info["api_key"][-4:])
    assert "query:read" in key.scopes and key.scoped_teams == () and key.missing() == []
    assert ph_client.me()["email"] == "sandra.box@example.com"
    project = ph_client.project()
    assert (project.id, project.name, project.timezone) == (info["project_id"], "Sandbox web app", "Europe/Prague")
    assert ph_client.project(info["other_project_id"]).name == "Sandbox staging"
    assert ph_client.stats.requests == 4 and ph_client.stats.retries == 0


def test_typed_errors_for_bad_key_unknown_project_and_scopes(ph_env):
    info = ph_env.info
    url = ph_env.posthog_url
    with PostHogClient(url, info["api_key_missing_scopes"], info["project_id"], policy=FAST_RETRIES,
                       settings=env_settings()) as c:
        with pytest.raises(MissingScopesError) as miss:
            c.query("SELECT 1", name="t")
        assert miss.value.missing == ["query:read"] and miss.value.labels == ["Query"]
        assert c.stats.requests == 1  # 4xx are never retried
    with PostHogClient(url, info["api_key"], 424242, policy=FAST_RETRIES, settings=env_settings()) as c:
        with pytest.raises(NotFoundError) as nf:
            c.project()
        assert "424242" in str(nf.value) and nf.value.status == 404
    with PostHogClient(url, info["api_key_other_project"], info["project_id"], policy=FAST_RETRIES,
                       settings=env_settings()) as c:
        with pytest.raises(PermissionDeniedError, match="other projects"):
            c.event_definitions()
    with PostHogClient(ph_env.other_region_url, info["api_key"], info["project_id"], policy=FAST_RETRIES,
                       settings=env_settings()) as c:
        with pytest.raises(AuthError) as auth:
            c.project()
        assert auth.value.status == 401 and auth.value.code == "authentication_failed"


# --- definitions ---------------------------------------------------------------------------------


def test_event_definitions_follow_every_page_and_search(ph_client, ph_env):
    # 130 more names than the generator's: the list spans two of PostHog's 100-row pages
    rows = [{"event": f"cs test event {i:03d}", "distinct_id": "paging-tester", "timestamp": "2026-01-01T00:00:00Z"}
            for i in range(130)]
    post_json(ph_env.posthog_url + "/_sandbox/events", rows)
    expected = [d["name"] for d in raw_list(ph_env, "event_definitions", limit=1000, ordering="name")["results"]]
    assert len(expected) > 150

    before = sandbox_stats(ph_env.posthog_url)
    defs = ph_client.event_definitions()
    after = sandbox_stats(ph_env.posthog_url)
    assert [d.name for d in defs] == expected  # by name (stable paging), nothing lost or repeated
    assert route_count(after, EVENTS_ROUTE) - route_count(before, EVENTS_ROUTE) == math.ceil(len(expected) / 100)
    assert all(d.last_seen_at is not None and d.last_seen_at.tzinfo is not None for d in defs)

    found = [d.name for d in ph_client.event_definitions(search="TEST event 01")]
    terms = ["test", "event", "01"]
    assert found == [n for n in expected if all(t in n.lower() for t in terms)]
    assert found[:2] == ["cs test event 001", "cs test event 010"] and "cs test event 101" in found
    assert len(found) == 12  # 001, 010-019, 101


def test_event_definitions_with_small_pages(ph_client, ph_env, monkeypatch):
    import cs_posthog.posthog.client as client_mod

    monkeypatch.setattr(client_mod, "DEFINITIONS_PAGE", 7)
    expected = [d["name"] for d in raw_list(ph_env, "event_definitions", limit=1000, ordering="name")["results"]]
    before = ph_client.stats.requests
    assert ph_client.event_names() == expected
    pages = ph_client.stats.requests - before
    # a full last page is followed by one more only if PostHog still gives a ``next`` link
    assert pages == math.ceil(len(expected) / 7)


def test_person_properties_drop_virtual_ones(ph_client, ph_env):
    raw = raw_list(ph_env, "property_definitions", type="person", limit=1000)["results"]
    virtual = [p["name"] for p in raw if p.get("virtual")]
    assert virtual, "the sandbox lists virtual person properties on its last page"
    props = ph_client.person_properties()
    names = [p.name for p in props]
    assert names == [p["name"] for p in raw if not p.get("virtual")]
    assert not set(virtual) & set(names)
    types = {p.name: p.property_type for p in props}
    assert types.get("email") == "String"
    found = [p.name for p in ph_client.person_properties(search="MAIL")]
    assert found and all("mail" in n.lower() for n in found) and "email" in found


# --- queries -------------------------------------------------------------------------------------


def test_query_sends_values_refresh_utc_and_name(ph_env):
    info = ph_env.info
    intercept = Intercept(lambda request: None)
    with PostHogClient(ph_env.posthog_url, info["api_key"], info["project_id"], transport=intercept,
                       policy=FAST_RETRIES, settings=env_settings()) as client:
        before = sandbox_stats(ph_env.posthog_url)["hogql_queries"]
        sql = "SELECT uuid, event, timestamp FROM events WHERE event = {ev} ORDER BY timestamp DESC LIMIT 3"
        first = client.query(sql, {"ev": "$pageview"}, name="cs-posthog test")
        second = client.query(sql, {"ev": "$pageview"}, name="cs-posthog test")
        assert sandbox_stats(ph_env.posthog_url)["hogql_queries"] - before == 2  # never served from cache
    body = json.loads(intercept.seen[0].content)
    assert body == {
        "query": {"kind": "HogQLQuery", "query": sql, "modifiers": {"convertToProjectTimezone": False},
                  "values": {"ev": "$pageview"}},
        "refresh": "force_blocking",
        "name": "cs-posthog test",
    }
    assert intercept.seen[0].headers["authorization"] == f"Bearer {info['api_key']}"
    assert first.columns == ["uuid", "event", "timestamp"] and first.results == second.results
    assert first.types[2].startswith("DateTime64") and len(first.results) == 3 and first.has_more is None
    for _, event, ts in first.results:
        assert event == "$pageview" and ts.endswith("Z")  # UTC, although the project is in Europe/Prague
        assert parse_datetime(ts).utcoffset().total_seconds() == 0


def test_query_errors_are_typed(ph_client):
    with pytest.raises(QueryError) as syntax:
        ph_client.query("SELEC 1", name="t")
    assert syntax.value.code == "hogql_syntax_error" and syntax.value.status == 400
    with pytest.raises(QueryError, match="OFFSET"):
        ph_client.query("SELECT id FROM persons ORDER BY id LIMIT 10 OFFSET 10", name="t")
    res = ph_client.query("SELECT id FROM persons", name="t")  # no LIMIT: PostHog's 100 rows and hasMore
    assert len(res.results) == 100 and res.has_more is True


def test_iter_pages_across_the_50000_row_cap():
    """52,000 events: PostHog caps LIMIT at 50,000, so pages are 49,999 rows + 1 to see more."""
    with start_sandbox(events=52_000, persons=200, customers=10, seed=21) as sb:
        dump = get_jsonl(sb.posthog_url + "/_sandbox/dump/events")
        info = sb.info

        def build(key):
            sql = "SELECT uuid, created_at FROM events"
            if key is None:
                return sql + " ORDER BY created_at, uuid", {}
            return sql + " WHERE (created_at, uuid) > ({c}, {u}) ORDER BY created_at, uuid", {"c": key[0], "u": key[1]}

        def key_of(row):
            return parse_datetime(row[1]).strftime("%Y-%m-%d %H:%M:%S.%f"), row[0]

        with PostHogClient(sb.posthog_url, info["api_key"], info["project_id"], pace=False,
                           timeout=60, settings=env_settings()) as client:
            pages = [[r[0] for r in page] for page in client.iter_pages(build, key_of)]
            assert [len(p) for p in pages] == [MAX_PAGE_SIZE, len(dump) - MAX_PAGE_SIZE]
            assert client.stats.requests == 2
            seen = [u for p in pages for u in p]
            assert sorted(seen) == sorted(e["uuid"] for e in dump)  # none lost, none repeated

            before = sandbox_stats(sb.posthog_url)["hogql_queries"]
            sizes = [len(p) for p in client.iter_pages(build, key_of, page_size=20_000)]
            assert sizes == [20_000, 20_000, len(dump) - 40_000]
            assert sandbox_stats(sb.posthog_url)["hogql_queries"] - before == 3


# --- limits, retries and faults ----------------------------------------------------------------


class RecordingPacer(Pacer):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.blocks: list[float] = []

    def block_for(self, seconds: float) -> None:
        self.blocks.append(seconds)
        super().block_for(seconds)


class DetailTransport(httpx.BaseTransport):
    """Real HTTP; remembers the ``detail`` of every 429 the server sends."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.details: list[str] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if resp.status_code != 429:
            return resp
        body = resp.read()
        resp.close()
        with self._lock:
            self.details.append(json.loads(body)["detail"])
        return httpx.Response(429, headers=resp.headers, content=body, request=request)

    def close(self) -> None:
        self.inner.close()


def test_throttled_requests_wait_what_the_detail_says(monkeypatch):
    """PostHog's real limit (480 requests a minute per key, ``--rate-limits real``) and 880 calls
    from 4 threads: the calls past 480 meet a 429 "Expected available in N seconds." (no
    Retry-After), each caller waits exactly the N its detail names, and every call finishes.

    Nothing here depends on how fast the machine is: the 480 allowed calls are made well inside the
    server's minute, and the waits pass on the client's pacer clock, which a sleep moves forward at
    once while telling the sandbox that the time went by (its throttle windows are emptied)."""
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "1000")  # the client alone would never pace this
    with start_sandbox(events=100, persons=20, customers=5, seed=8, rate_limits="real") as sb:
        info = sb.info
        clock_lock = threading.Lock()
        now = [0.0]

        def clock() -> float:
            with clock_lock:
                return now[0]

        def sleep(seconds: float) -> None:
            with clock_lock:
                now[0] += seconds
            post_json(sb.posthog_url + "/_sandbox/config", {"reset_throttles": True})

        transport = DetailTransport()
        with PostHogClient(sb.posthog_url, info["api_key"], info["project_id"], transport=transport,
                           settings=env_settings()) as client:
            client.other_pacer = RecordingPacer(clock=clock, sleep=sleep)
            done: list[int] = []

            def work():
                for _ in range(220):
                    done.append(len(client.current_key().scopes))

            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        stats = sandbox_stats(sb.posthog_url)
    assert len(done) == 880
    assert client.stats.throttled >= 1 and stats["throttled"] == client.stats.throttled
    assert client.stats.requests == 880 + client.stats.throttled
    assert len(transport.details) == client.stats.throttled
    detail = re.compile(r"Request was throttled\. Expected available in (\d+) seconds?\.")
    named = [detail.fullmatch(d) for d in transport.details]
    assert all(named), transport.details
    # each wait is the detail's N (whole seconds up to the minute), not a jittered backoff
    assert sorted(client.other_pacer.blocks) == sorted(float(m.group(1)) for m in named)
    assert all(1 <= b <= 60 for b in client.other_pacer.blocks)
    assert clock() >= max(client.other_pacer.blocks)  # and nothing went on before it had passed


def test_5xx_timeouts_and_dropped_connections_are_retried():
    with start_sandbox(events=300, persons=40, customers=5, seed=12, faults=0.3, stall_s=0.4) as sb:
        info = sb.info
        policy = RetryPolicy(max_attempts=8, backoff_base=0.02, backoff_cap=0.1)
        with PostHogClient(sb.posthog_url, info["api_key"], info["project_id"], policy=policy, pace=False,
                           timeout=0.3, settings=env_settings()) as client:
            names = {client.project().name for _ in range(24)}
            counts = [client.query("SELECT count() FROM persons", name="t").results[0][0] for _ in range(8)]
        stats = sandbox_stats(sb.posthog_url)
    assert names == {"Sandbox web app"} and set(counts) == {40}
    faults = stats["faults"]
    assert sum(faults.values()) >= 5 and faults["500"] + faults["502"] >= 1
    assert client.stats.retries == sum(faults.values())  # each fault cost exactly one retry
    assert client.stats.throttled == faults["429"]
    assert client.stats.ambiguous_retries == faults["stall"] + faults["drop"]
    assert client.stats.requests == stats["total"] == 32 + sum(faults.values())


def test_5xx_that_outlive_the_retries_and_4xx_that_are_never_retried():
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/query/"):
            return posthog_error(502, "server_error", "error", "Bad gateway")
        return posthog_error(400, "validation_error", "invalid_input", "A valid integer is required.", attr="limit")

    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       policy=FAST_RETRIES, pace=False, settings=env_settings()) as client:
        with pytest.raises(UnavailableError) as info:
            client.query("SELECT 1", name="t")
        assert info.value.status == 502 and len(calls) == FAST_RETRIES.max_attempts
        calls.clear()
        with pytest.raises(Exception) as bad:
            client.event_definitions()
        assert type(bad.value).__name__ == "BadRequestError" and len(calls) == 1


def test_a_long_throttle_gives_up_at_once():
    calls = []

    def handler(request):
        calls.append(request)
        return posthog_error(429, "throttled_error", "throttled",
                             "Request was throttled. Expected available in 3500 seconds.")

    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       pace=False, settings=env_settings()) as client:
        with pytest.raises(ThrottledError) as info:
            client.query("SELECT 1", name="t")
        # no waiting and no second try: the first answer ends the call
        assert info.value.retry_after == 3500 and len(calls) == 1
        assert client.query_pacer.delay() == 0


# --- query time limit: shrink the page -----------------------------------------------------------

TIMEOUT_DETAIL = ("Query has hit the max execution time before completing. See our docs for how to improve your "
                  "query performance. You may need to materialize.")


def keyset_server(n_rows: int, max_limit: int, status: int = 504, detail: str = TIMEOUT_DETAIL):
    """A /query/ that serves ``SELECT k ... WHERE k > {after} ORDER BY k LIMIT n`` over 0..n_rows-1 and
    fails like PostHog at its time limit when asked for more than ``max_limit`` rows."""
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        limit = int(re.search(r"LIMIT (\d+)$", body["query"]["query"]).group(1))
        asked.append(limit)
        if limit > max_limit:
            return posthog_error(status, "server_error", "error", detail)
        after = body["query"].get("values", {}).get("after", -1)
        rows = [[k] for k in range(after + 1, min(n_rows, after + 1 + min(limit, 50_000)))]
        return httpx.Response(200, json={"results": rows, "columns": ["k"], "types": [["k", "Int64"]],
                                         "hasMore": None})

    return handler, asked


def build_k(key):
    if key is None:
        return "SELECT k FROM t ORDER BY k", {}
    return "SELECT k FROM t WHERE k > {after} ORDER BY k", {"after": key}


def test_iter_pages_halves_the_page_when_posthog_times_out():
    handler, asked = keyset_server(2_500, max_limit=1_000)
    shrinks: list[int] = []
    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       policy=FAST_RETRIES, pace=False, settings=env_settings()) as client:
        pages = list(client.iter_pages(build_k, lambda r: r[0], on_shrink=shrinks.append))
    assert shrinks == [24_999, 12_499, 6_249, 3_124, 1_562, 781]  # halved each time
    # each too-slow answer asked once (not retried as it was), then the same page smaller
    assert asked[:7] == [50_000, 25_000, 12_500, 6_250, 3_125, 1_563, 782]
    assert all(n <= 1_001 for n in asked[7:])  # never the failing size again in so few pages
    assert [k for p in pages for k in (r[0] for r in p)] == list(range(2_500))


def test_iter_pages_grows_back_while_answers_are_fast():
    """Slow for the first few queries (a busy moment), then fast: the page halves, then doubles back
    to the caller's size; with ``max_page_size`` it grows from a small start."""
    slow = {"left": 2}
    inner, asked = keyset_server(20_000, max_limit=10**9)

    def handler(request):
        if slow["left"] > 0:
            slow["left"] -= 1
            return posthog_error(504, "server_error", "error", "This query hit the 10-second time limit ...")
        return inner(request)

    shrinks: list[int] = []
    grows: list[int] = []
    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       policy=FAST_RETRIES, pace=False, settings=env_settings()) as client:
        pages = list(client.iter_pages(build_k, lambda r: r[0], page_size=2_000, min_page_size=100,
                                       on_shrink=shrinks.append, on_grow=grows.append))
    assert shrinks == [1_000, 500]
    assert grows == [1_000, 2_000]  # back to the caller's size, never above it
    assert max(len(p) for p in pages) == 2_000
    assert [k for p in pages for k in (r[0] for r in p)] == list(range(20_000))

    handler2, asked2 = keyset_server(5_000, max_limit=10**9)
    grows.clear()
    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(handler2),
                       policy=FAST_RETRIES, pace=False, settings=env_settings()) as client:
        sizes = [len(p) for p in client.iter_pages(build_k, lambda r: r[0], page_size=100, max_page_size=800,
                                                    on_grow=grows.append)]
    assert grows == [200, 400, 800]
    assert sizes == [100, 200, 400, 800, 800, 800, 800, 800, 300]


def test_iter_pages_gives_up_at_the_smallest_page():
    handler, asked = keyset_server(100, max_limit=10, status=512,
                                   detail="Estimated query execution time (40.1 seconds) is too long. Try reducing "
                                          "its scope by changing the time range.")
    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       policy=FAST_RETRIES, pace=False, settings=env_settings()) as client:
        with pytest.raises(QueryTooSlowError) as info:
            list(client.iter_pages(build_k, lambda r: r[0], page_size=2_000, min_page_size=500))
    assert asked == [2_001, 1_001, 501] and info.value.status == 512
    assert info.value.page_size == 500 and "500 rows" in info.value.message
    assert info.value.exit_code == 75


def test_any_504_from_query_shrinks_and_a_504_elsewhere_is_retried():
    """A proxy's gateway timeout page on /query/ means the query took too long: shrink. The same
    answer from another endpoint is an ordinary 5xx, retried."""
    asked: list[int] = []
    project_calls: list[int] = []

    def handler(request):
        if request.url.path.endswith("/query/"):
            limit = int(re.search(r"LIMIT (\d+)$", json.loads(request.content)["query"]["query"]).group(1))
            asked.append(limit)
            if limit > 6:
                return httpx.Response(504, content=b"<html><body>504 Gateway Time-out</body></html>")
            return httpx.Response(200, json={"results": [[1]], "columns": ["k"], "types": [["k", "Int64"]]})
        project_calls.append(1)
        if len(project_calls) < 3:
            return httpx.Response(504, content=b"<html><body>504 Gateway Time-out</body></html>")
        return httpx.Response(200, json={"id": 1, "name": "P", "timezone": "UTC"})

    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       policy=FAST_RETRIES, pace=False, settings=env_settings()) as client:
        pages = list(client.iter_pages(build_k, lambda r: r[0], page_size=10, min_page_size=2))
        assert pages == [[[1]]] and asked == [11, 6]
        assert client.project().name == "P" and len(project_calls) == 3


# --- definitions: capped counts, foreign next links ---------------------------------------------


def test_definitions_ignore_a_capped_count_and_never_follow_next_to_another_host():
    names = [f"event_{i:03d}" for i in range(250)]
    hosts: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.add(request.url.host)
        qs = parse_qs(urlsplit(str(request.url)).query)
        limit, offset = int(qs["limit"][0]), int(qs.get("offset", ["0"])[0])
        page = names[offset:offset + limit]
        nxt = None
        if offset + limit < len(names):
            nxt = f"http://internal-posthog:8000{request.url.path}?limit={limit}&offset={offset + limit}"
        return httpx.Response(200, json={"count": 100, "count_is_capped": True, "next": nxt, "previous": None,
                                         "results": [{"id": n, "name": n, "last_seen_at": None} for n in page]})

    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(handler),
                       pace=False, settings=env_settings()) as client:
        assert client.event_names() == names
        assert client.stats.requests == 3
    assert hosts == {"eu.posthog.com"}


def test_definitions_follow_a_cursor_and_stop_when_paging_is_ignored():
    names = [f"prop_{i:03d}" for i in range(150)]
    asked: list[dict] = []

    def cursor_handler(request: httpx.Request) -> httpx.Response:
        qs = {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}
        asked.append(qs)
        start = int(qs.get("cursor", "0"))
        page = names[start:start + 100]
        nxt = f"https://eu.posthog.com{request.url.path}?cursor={start + 100}&limit=100&type=person" \
            if start + 100 < len(names) else None
        return httpx.Response(200, json={"next": nxt, "results": [{"name": n} for n in page]})

    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(cursor_handler),
                       pace=False, settings=env_settings()) as client:
        assert [p.name for p in client.person_properties()] == names
    assert asked[1] == {"cursor": "100", "limit": "100", "type": "person"}

    def ignoring_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"next": str(request.url) + "&page=2",
                                         "results": [{"name": n} for n in names[:100]]})

    with PostHogClient("https://eu.posthog.com", "phx_test", 1, transport=httpx.MockTransport(ignoring_handler),
                       pace=False, settings=env_settings()) as client:
        assert [p.name for p in client.person_properties()] == names[:100]
        assert client.stats.requests == 2  # the second page brought nothing new: stop
