"""Pure parts of the PostHog client: project references, region hosts, error mapping, datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from cs_posthog.errors import (
    AuthError,
    BadRequestError,
    ExitCode,
    MissingScopesError,
    NotFoundError,
    PermissionDeniedError,
    QueryError,
    UnavailableError,
    UsageError,
)
from cs_posthog.posthog.client import (
    NEEDED_SCOPES,
    ApiKeyInfo,
    QueryTooSlowError,
    classify,
    is_too_slow,
    scope_label,
    wait_from_detail,
)
from cs_posthog.posthog.regions import ProjectRef, normalize_host, parse_project_ref, region_hosts, region_of_host
from cs_posthog.timeutil import parse_datetime
from helpers import env_settings
from posthog_testlib import posthog_error

# --- project references ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12345", ProjectRef(12345)),
        ("  12345 \n", ProjectRef(12345)),
        ("#12345", ProjectRef(12345)),
        (12345, ProjectRef(12345)),
        ("https://eu.posthog.com/project/12345/insights", ProjectRef(12345, region="eu")),
        ("https://eu.posthog.com/project/12345", ProjectRef(12345, region="eu")),
        ("https://us.posthog.com/project/777/dashboard/3?x=1#frag", ProjectRef(777, region="us")),
        ("https://app.posthog.com/project/42/events", ProjectRef(42, region="us")),  # legacy name: US
        ("https://EU.PostHog.com/project/9/", ProjectRef(9, region="eu")),
        ("eu.posthog.com/project/12345/insights", ProjectRef(12345, region="eu")),
        ("https://eu.posthog.com/environments/555/web", ProjectRef(555, region="eu")),
        ("https://us.posthog.com/api/projects/31/event_definitions/", ProjectRef(31, region="us")),
        ("https://us.posthog.com/api/environments/31/query/", ProjectRef(31, region="us")),
        ("https://eu.i.posthog.com/project/8", ProjectRef(8, region="eu")),
        ("https://posthog.example.com/project/7/insights", ProjectRef(7, host="https://posthog.example.com")),
        ("https://example.com:8443/analytics/project/7/x", ProjectRef(7, host="https://example.com:8443/analytics")),
        ("http://localhost:8000/project/1/activity", ProjectRef(1, host="http://localhost:8000")),
        ("http://127.0.0.1:8010/project/3", ProjectRef(3, host="http://127.0.0.1:8010")),
        ("https://user:pw@posthog.example.com/project/5", ProjectRef(5, host="https://posthog.example.com")),
    ],
)
def test_project_refs(text, expected):
    assert parse_project_ref(text, settings=env_settings()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "0",
        "-5",
        "12 345",
        "99999999999999999999",
        "https://eu.posthog.com/",
        "https://eu.posthog.com/insights/abc",
        "https://eu.posthog.com/project/abc",
        "http://posthog.example.com/project/5",  # plain http off loopback
        "ftp://eu.posthog.com/project/5",
        "https://posthog.com/project/5",  # the marketing site is no app host
        "https://www.posthog.com/project/5",
        "hello/project/5",
        "https://eu.posthog.com:notaport/project/5",
        True,
    ],
)
def test_bad_project_refs_say_what_to_paste(text):
    with pytest.raises(UsageError) as info:
        parse_project_ref(text, settings=env_settings())
    assert info.value.exit_code == ExitCode.USAGE
    assert info.value.hint and ("project" in info.value.hint.lower() or "https" in info.value.hint)


def test_region_hosts_default_and_overrides(monkeypatch):
    assert region_hosts(settings=env_settings()) == {"us": "https://us.posthog.com", "eu": "https://eu.posthog.com"}
    monkeypatch.setenv("CS_POSTHOG_EU_HOST", "http://127.0.0.1:9999/")
    assert region_hosts(settings=env_settings()) == {"us": "https://us.posthog.com", "eu": "http://127.0.0.1:9999"}
    # a pasted URL on an overridden region host names that region
    assert parse_project_ref("http://127.0.0.1:9999/project/12/insights",
                             settings=env_settings()) == ProjectRef(12, region="eu")
    assert region_of_host("http://127.0.0.1:9999", settings=env_settings()) == "eu"
    assert region_of_host("https://app.posthog.com", settings=env_settings()) == "us"
    assert region_of_host("https://posthog.example.com", settings=env_settings()) is None
    monkeypatch.setenv("CS_POSTHOG_US_HOST", "http://proxy.example.com")
    with pytest.raises(UsageError) as info:
        region_hosts(settings=env_settings())
    assert "CS_POSTHOG_US_HOST" in str(info.value) and "https" in str(info.value)


def test_normalize_host():
    assert normalize_host("posthog.example.com/", settings=env_settings()) == "https://posthog.example.com"
    assert normalize_host("https://app.posthog.com", settings=env_settings()) == "https://us.posthog.com"
    assert normalize_host("eu.posthog.com", settings=env_settings()) == "https://eu.posthog.com"
    assert normalize_host("http://localhost:8000", settings=env_settings()) == "http://localhost:8000"
    for bad in ("", "http://posthog.example.com", "ftp://x.example.com"):
        with pytest.raises(UsageError):
            normalize_host(bad, settings=env_settings())


# --- scopes ------------------------------------------------------------------------------------


def test_scope_labels_are_posthogs():
    # PostHog's key form: capitalizeFirstLetter(key.replace(/_/g, ' '))
    assert [scope_label(s) for s in NEEDED_SCOPES] == [
        "Action", "Event definition", "Organization", "Project", "Property definition", "Query",
    ]


def test_key_scopes_star_write_implies_read_and_project_restriction():
    def key(scopes, teams=()):
        return ApiKeyInfo("1", "k", "phx_...abcd", tuple(scopes), tuple(teams), ())

    assert key(["*"]).missing() == []
    assert key(["query:write", "project:read"]).missing() == [
        "action:read", "event_definition:read", "organization:read", "property_definition:read",
    ]
    assert not key(["query:write"]).has_scope("query:delete")
    assert not key(["action:read"]).has_scope("action:write")  # read never implies write
    assert key(["*"], [5]).can_access_project(5) and not key(["*"], [5]).can_access_project(6)
    assert key(["*"]).can_access_project(6)


# --- 429 waits and error mapping ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("detail", "wait"),
    [
        ("Request was throttled. Expected available in 37 seconds.", 37.0),
        ("Request was throttled. Expected available in 1 second.", 1.0),
        ("Request was throttled.", None),
        ("Exceeded maximum concurrency limit: 3 for key: api:query:per-org:x and task: 0001", None),
    ],
)
def test_wait_is_read_from_the_throttle_detail(detail, wait):
    assert wait_from_detail(posthog_error(429, "throttled_error", "throttled", detail)) == wait


def _req(method="GET", path="/api/projects/12/"):
    return httpx.Request(method, "https://eu.posthog.com" + path)


def _classify(resp: httpx.Response, path="/api/projects/12/", method="GET"):
    resp.request = _req(method, path)
    return classify(resp)


def test_classify_maps_every_posthog_answer():
    bad_key = _classify(posthog_error(401, "authentication_error", "authentication_failed",
                                      "Personal API key found in request Authorization header is invalid."))
    assert isinstance(bad_key, AuthError) and bad_key.exit_code == ExitCode.NOPERM
    assert bad_key.status == 401 and bad_key.code == "authentication_failed" and "region" in bad_key.message

    scope = _classify(posthog_error(403, "authentication_error", "permission_denied",
                                    "API key missing required scope 'query:read'"))
    assert isinstance(scope, MissingScopesError) and scope.missing == ["query:read"] and scope.labels == ["Query"]
    assert "Query" in scope.hint

    other = _classify(posthog_error(403, "authentication_error", "permission_denied",
                                    "API key does not have access to the requested project: ID 12."))
    assert type(other) is PermissionDeniedError and "other projects" in other.message

    missing = _classify(posthog_error(404, "invalid_request", "not_found", "Not found."))
    assert isinstance(missing, NotFoundError) and "project 12" in missing.message
    assert missing.exit_code == ExitCode.CONFIG

    hogql = _classify(posthog_error(400, "validation_error", "hogql_syntax_error", "mismatched input"),
                      "/api/projects/12/query/", "POST")
    assert isinstance(hogql, QueryError) and "mismatched input" in hogql.message

    offset = _classify(posthog_error(400, "validation_error", "hogql_query_error",
                                     "OFFSET is not supported on queries made with a personal API key."),
                       "/api/projects/12/query/", "POST")
    assert isinstance(offset, QueryError)

    invalid = _classify(posthog_error(400, "validation_error", "min_value", "Ensure this value is greater than "
                                      "or equal to 1.", attr="limit"), "/api/projects/12/event_definitions/")
    assert type(invalid) is BadRequestError and "limit: Ensure" in invalid.message

    quota = _classify(posthog_error(402, "invalid_request", "api_queries_quota_exceeded", "Your organization ..."))
    assert isinstance(quota, PermissionDeniedError)

    html = httpx.Response(418, content=b"<html>teapot</html>")
    assert type(_classify(html)) is BadRequestError


def test_query_time_limits_are_not_retried_but_flagged():
    # posthog/exceptions.py: ClickHouseQueryTimeOut 504, ClickHouseEstimatedQueryExecutionTimeTooLong 512,
    # ClickHouseQueryMemoryLimitExceeded 513; ClickHouseClusterMemoryLimitExceeded (transient) also 513
    timeout = posthog_error(504, "server_error", "error", "Query has hit the max execution time before "
                            "completing. See our docs for how to improve your query performance. You may need to "
                            "materialize.")
    too_slow = posthog_error(512, "server_error", "error", "Estimated query execution time (34.5 seconds) is too "
                             "long. Try reducing its scope by changing the time range.")
    memory = posthog_error(513, "server_error", "clickhouse_memory_limit_exceeded", "This query ran out of memory ...")
    load = posthog_error(513, "server_error", "clickhouse_memory_limit_exceeded",
                         "We're under heavy load right now and couldn't finish this query. Please try again in a "
                         "few minutes.")
    proxy = httpx.Response(504, content=b"<html>Gateway Timeout</html>")
    for resp in (timeout, too_slow, memory):
        assert is_too_slow(resp)
        err = _classify(resp, "/api/projects/12/query/", "POST")
        assert isinstance(err, QueryTooSlowError) and isinstance(err, UnavailableError)
    for resp in (load, proxy):
        assert not is_too_slow(resp)
        assert type(_classify(resp)) is UnavailableError


# --- datetimes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05.123456Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),  # orjson drops a zero fraction
        ("2024-01-02T03:04:05.123000", datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)),  # naive: UTC
        ("2024-01-02T04:04:05+01:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02 03:04:05.5", datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
    ],
)
def test_parse_datetime(text, expected):
    got = parse_datetime(text)
    assert got == expected and got.utcoffset() == timedelta(0) and got.tzinfo is UTC


def test_parse_datetime_refuses_garbage():
    for bad in ("", "yesterday", "2024-13-01T00:00:00Z", None, 5):
        with pytest.raises(ValueError):
            parse_datetime(bad)
    assert parse_datetime("2024-06-01T12:00:00-04:00") == datetime(2024, 6, 1, 16, tzinfo=timezone.utc)
