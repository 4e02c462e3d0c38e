"""The sandbox PostHog's Cloud limits and policies over real HTTP: throttle tiers, per-team concurrency, the
query time limit, persons-on-events defaults, definition ordering and search, the personal-key policy.

Counts and states only, never timings: every limit is reached by counting requests or by holding slots.
"""

from __future__ import annotations

import json
import re

import pytest

from cs_posthog.sandbox.posthog_app import TIMEOUT_DEFAULT_DETAIL, api_timeout_detail
from cs_posthog.sandbox.runner import configure, get_json, http_request, post_json, start_sandbox

THROTTLED = re.compile(r"Request was throttled\. Expected available in (\d+) seconds?\.")
TASK_HEX = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def sb():
    # 20,000 events: the sandbox's default size, the one the time-limit figures are documented for
    with start_sandbox(events=20_000, persons=1000, customers=40, seed=21, rate_limits="fast") as proc:
        yield proc


@pytest.fixture
def cloud(sb):
    """Each test starts from Cloud's defaults and leaves them behind."""
    configure(sb.posthog_url, query_tier="current", query_time_limit=None, query_rows_per_second=1_000_000,
              poe_mode="stamped", org_denies_personal_keys=False, reset_throttles=True)
    post_json(sb.posthog_url + "/_sandbox/query_slots", {"release": 100})
    yield sb
    configure(sb.posthog_url, query_tier="current", query_time_limit=None, query_rows_per_second=1_000_000,
              poe_mode="stamped", org_denies_personal_keys=False, reset_throttles=True)
    post_json(sb.posthog_url + "/_sandbox/query_slots", {"release": 100})


def call(sb, path: str, *, key: str = "api_key", method: str = "GET", body=None):
    token = sb.info[key] if key in sb.info else key
    status, headers, payload = http_request(method, sb.posthog_url + path, body=body,
                                            headers={"Authorization": f"Bearer {token}"})
    return status, (json.loads(payload) if payload else None), headers


def query(sb, text: str, *, kind: str = "HogQLQuery", key: str = "api_key", **extra):
    body = {"query": {"kind": kind, "query": text, "modifiers": {"convertToProjectTimezone": False},
                      **extra.pop("query_fields", {})},
            "refresh": "force_blocking", **extra}
    return call(sb, f"/api/projects/{sb.info['project_id']}/query/", key=key, method="POST", body=body)


def stats(sb) -> dict:
    return get_json(sb.posthog_url + "/_sandbox/stats")


def engine_has(name: str) -> bool:
    from cs_posthog.sandbox import hogql, hogql_errors
    from cs_posthog.sandbox.posthog_app import accepts_kwarg

    if name == "max_cost":
        return accepts_kwarg(hogql.execute, "max_cost") and hasattr(hogql_errors, "QueryTimeLimit")
    return accepts_kwarg(hogql.execute, name)


# ---------------------------------------------------------------------------------------------
# The ready line
# ---------------------------------------------------------------------------------------------


def test_ready_line_names_the_cloud_settings(sb):
    info = sb.info
    assert (info["query_tier"], info["query_time_limit"], info["poe_mode"], info["org_denies_personal_keys"]) == (
        "current", 10.0, "stamped", False)
    assert info["id_type"] in ("mixed", "string")  # "string" only while the generator has no id types
    assert get_json(sb.posthog_url + "/_sandbox/config")["query_tier"] == "current"


# ---------------------------------------------------------------------------------------------
# Throttle tiers
# ---------------------------------------------------------------------------------------------


def test_legacy_tier_allows_120_hogql_queries_per_scaled_hour():
    with start_sandbox(events=50, persons=10, customers=3, seed=22, rate_limits="fast", query_tier="legacy") as proc:
        assert proc.info["query_tier"] == "legacy" and proc.info["query_time_limit"] == 60.0
        results = [query(proc, "SELECT 1") for _ in range(125)]
        statuses = [r[0] for r in results]
        assert (statuses.count(200), statuses.count(429)) == (120, 5)
        assert statuses[:120] == [200] * 120
        for status, body, headers in results[120:]:
            assert (body["type"], body["code"], body["attr"]) == ("throttled_error", "throttled", None)
            wait = int(THROTTLED.fullmatch(body["detail"]).group(1))
            assert 1 <= wait <= 60  # an hour scaled by 60: a wait of up to a minute, not 2 or 3 seconds
            assert "Retry-After" not in headers
        # other kinds are under ClickHouseBurst/SustainedRateThrottle there, not the 120/hour
        status, body, _ = query(proc, "SELECT 1", kind="EventsQuery")
        assert status == 400 and body["code"] == "unsupported_query_kind"
        # ...and other endpoints under the default throttles
        assert call(proc, f"/api/projects/{proc.info['project_id']}/")[0] == 200
        s = stats(proc)
        assert (s["hogql_queries"], s["throttled"]) == (120, 5)
        # the budget is per key
        assert query(proc, "SELECT 1", key="api_key_no_current")[0] == 200


def test_current_tier_allows_far_more_than_120(cloud):
    statuses = [query(cloud, "SELECT 1")[0] for _ in range(130)]
    assert statuses == [200] * 130


def test_switching_to_legacy_at_run_time(cloud):
    settings = configure(cloud.posthog_url, query_tier="legacy")
    assert (settings["query_tier"], settings["query_time_limit"]) == ("legacy", 60.0)
    statuses = [query(cloud, "SELECT 1")[0] for _ in range(121)]
    assert (statuses.count(200), statuses.count(429)) == (120, 1)


# ---------------------------------------------------------------------------------------------
# Concurrency: 3 per team
# ---------------------------------------------------------------------------------------------


def test_fourth_concurrent_query_of_a_team_is_throttled(cloud):
    pid = cloud.info["project_id"]
    assert post_json(cloud.posthog_url + "/_sandbox/query_slots", {"hold": 3}) == {"running": 3, "limit": 3}
    before = stats(cloud)["throttled"]
    status, body, headers = query(cloud, "SELECT 1")
    assert status == 429 and (body["type"], body["code"], body["attr"]) == ("throttled_error", "throttled", None)
    prefix = f"Exceeded maximum concurrency limit: 3 for key: api:query:per-team:{pid} and task: "
    assert body["detail"].startswith(prefix) and TASK_HEX.fullmatch(body["detail"][len(prefix):])
    assert "Retry-After" not in headers and "Expected available" not in body["detail"]
    # the task is the query's client_query_id when it has one
    status, body, _ = query(cloud, "SELECT 1", client_query_id="cs-posthog-page-7")
    assert (status, body["detail"]) == (429, prefix + "cs-posthog-page-7")
    assert stats(cloud)["throttled"] == before + 2
    # one slot frees: the next query runs
    assert post_json(cloud.posthog_url + "/_sandbox/query_slots", {"release": 1})["running"] == 2
    assert query(cloud, "SELECT 1")[0] == 200
    assert post_json(cloud.posthog_url + "/_sandbox/query_slots", {"release": 2})["running"] == 0


def test_legacy_teams_are_not_under_the_concurrency_limiter(cloud):
    configure(cloud.posthog_url, query_tier="legacy")
    post_json(cloud.posthog_url + "/_sandbox/query_slots", {"hold": 3})
    assert query(cloud, "SELECT 1")[0] == 200


# ---------------------------------------------------------------------------------------------
# Time limit
# ---------------------------------------------------------------------------------------------

# The engine's cost is the events inside the query's bounds on `timestamp` (LIMIT does not narrow a ClickHouse
# scan): an unbounded page of the 20,000 events costs 20,000 rows, a page over one day a few hundred.
PAGE = "SELECT uuid, event, created_at FROM events ORDER BY created_at, uuid LIMIT 10001"
DAY_PAGE = ("SELECT uuid, event, created_at FROM events WHERE timestamp >= {lo} AND timestamp < {hi} "
            "ORDER BY created_at, uuid LIMIT 10001")


def day_page(sb) -> dict:
    from datetime import datetime, timedelta

    end = datetime.fromisoformat(sb.info["data_now"].replace("Z", "+00:00")) - timedelta(days=9)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {"values": {"lo": (end - timedelta(days=1)).strftime(fmt), "hi": end.strftime(fmt)}}


@pytest.mark.skipif(not engine_has("max_cost"), reason="the HogQL engine has no cost model yet")
def test_query_over_the_time_limit_is_504_and_a_small_page_passes(cloud):
    assert query(cloud, PAGE)[0] == 200  # Cloud's 10 s: nothing realistic times out
    settings = configure(cloud.posthog_url, query_time_limit=0.005)  # 5,000 rows
    assert settings["query_time_limit"] == 0.005
    before = stats(cloud)["query_timeouts"]
    status, body, _ = query(cloud, PAGE)
    assert status == 504
    assert body == {"type": "server_error", "code": "error", "detail": api_timeout_detail(0.005), "attr": None}
    assert body["detail"].startswith("This query hit the 0.005-second time limit for queries run through the API. ")
    status, body, _ = query(cloud, DAY_PAGE, query_fields=day_page(cloud))
    assert status == 200 and 0 < len(body["results"]) < 5000
    assert stats(cloud)["query_timeouts"] == before + 1
    assert stats(cloud)["by_route_status"]["POST /api/projects/{id}/query/"]["504"] >= 1


@pytest.mark.skipif(not engine_has("max_cost"), reason="the HogQL engine has no cost model yet")
def test_time_limit_detail_per_tier(cloud):
    # the current tier names its 10 seconds
    configure(cloud.posthog_url, query_rows_per_second=100)  # 10 s = 1,000 rows
    status, body, _ = query(cloud, PAGE)
    assert (status, body["detail"]) == (504, api_timeout_detail(10))
    assert body["detail"].startswith("This query hit the 10-second time limit for queries run through the API. ")
    assert query(cloud, DAY_PAGE, query_fields=day_page(cloud))[0] == 200
    # a legacy team has no API ceiling: HogQL's 60 s and ClickHouseQueryTimeOut's default text
    configure(cloud.posthog_url, query_tier="legacy")  # 60 s = 6,000 rows
    status, body, _ = query(cloud, PAGE)
    assert (status, body) == (504, {"type": "server_error", "code": "error", "detail": TIMEOUT_DEFAULT_DETAIL,
                                    "attr": None})
    # an explicit limit is a per-team override: the API text again, on either tier
    configure(cloud.posthog_url, query_time_limit=20)  # 2,000 rows
    assert query(cloud, PAGE)[1]["detail"] == api_timeout_detail(20)


def test_time_limit_flag_is_printed_and_validated():
    with start_sandbox(events=50, persons=10, customers=3, seed=23, query_time_limit=0.25) as proc:
        assert proc.info["query_time_limit"] == 0.25
        assert get_json(proc.posthog_url + "/_sandbox/config")["query_time_limit_explicit"] is True
    from cs_posthog.sandbox.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--query-time-limit", "0"])


# ---------------------------------------------------------------------------------------------
# Persons on events: the team default under the query's modifiers
# ---------------------------------------------------------------------------------------------

NULL_COMPANY = "SELECT count() FROM events WHERE person.properties.organization_id IS NULL"
STAMPED = {"personsOnEventsMode": "person_id_override_properties_on_events"}
JOINED = {"personsOnEventsMode": "person_id_override_properties_joined"}


def test_project_reports_the_poe_mode(cloud):
    project = call(cloud, f"/api/projects/{cloud.info['project_id']}/")[1]
    assert project["default_modifiers"] == STAMPED
    configure(cloud.posthog_url, poe_mode="joined")
    project = call(cloud, f"/api/projects/{cloud.info['project_id']}/")[1]
    assert project["default_modifiers"] == JOINED


@pytest.mark.skipif(not engine_has("modifiers"), reason="the HogQL engine takes no modifiers yet")
def test_query_modifiers_override_the_team_default(cloud):
    def count(mods: dict | None) -> int:
        fields = {"modifiers": {"convertToProjectTimezone": False, **(mods or {})}}
        status, body, _ = query(cloud, NULL_COMPANY, query_fields=fields)
        assert status == 200, body
        return body["results"][0][0]

    stamped_default, stamped, joined = count(None), count(STAMPED), count(JOINED)
    assert stamped_default == stamped
    configure(cloud.posthog_url, poe_mode="joined")
    assert count(None) == joined and count(STAMPED) == stamped
    # stamped rows read the Person as it was at ingestion: events sent before the customer id was set
    assert stamped >= joined


# ---------------------------------------------------------------------------------------------
# Definitions: order and search as PostHog's SQL does them
# ---------------------------------------------------------------------------------------------


def definitions(sb, query_string: str) -> list[dict]:
    status, body, _ = call(sb, f"/api/projects/{sb.info['project_id']}/event_definitions/?{query_string}")
    assert status == 200, body
    return body["results"]


def test_event_definitions_default_order_is_last_seen_date_then_name(cloud):
    rows = definitions(cloud, "limit=500")
    assert len(rows) > 10
    keys = [(r["last_seen_at"][:10], r["name"]) for r in rows]
    assert keys == sorted(keys, key=lambda k: (-int(k[0].replace("-", "")), k[1]))
    by_name = [r["name"] for r in definitions(cloud, "limit=500&ordering=name")]
    assert by_name == sorted(by_name) and sorted(by_name) == sorted(k[1] for k in keys)
    assert [r["name"] for r in definitions(cloud, "limit=500&ordering=-name")] == by_name[::-1]
    seen = [r["last_seen_at"] for r in definitions(cloud, "limit=500&ordering=last_seen_at")]
    assert seen == sorted(seen)
    seen = [r["last_seen_at"] for r in definitions(cloud, "limit=500&ordering=-last_seen_at")]
    assert seen == sorted(seen, reverse=True)
    # unknown fields are dropped: the default order
    assert [r["name"] for r in definitions(cloud, "limit=500&ordering=event")] == [k[1] for k in keys]
    # pages of the default order are slices of it
    pages = [r["name"] for off in range(0, len(rows), 7) for r in definitions(cloud, f"limit=7&offset={off}")]
    assert pages == [k[1] for k in keys]


def test_an_event_definition_moves_between_pages_when_it_is_seen_again(cloud):
    before = [r["name"] for r in definitions(cloud, "limit=500")]
    by_name_before = [r["name"] for r in definitions(cloud, "limit=500&ordering=name")]
    oldest = before[-1]
    post_json(cloud.posthog_url + "/_sandbox/events", [{"event": oldest, "distinct_id": "late-visitor"}])
    after = [r["name"] for r in definitions(cloud, "limit=500")]
    assert sorted(after) == sorted(before)
    page_size = 10
    assert after.index(oldest) // page_size < before.index(oldest) // page_size  # it moved to an earlier page
    # ordering=name is what a client pages with: it does not move
    assert [r["name"] for r in definitions(cloud, "limit=500&ordering=name")] == by_name_before


def person_properties(sb, search: str) -> list[str]:
    status, body, _ = call(sb, f"/api/projects/{sb.info['project_id']}/property_definitions/"
                               f"?type=person&limit=500&search={search}")
    assert status == 200, body
    return [r["name"] for r in body["results"]]


def test_person_property_search_where_latest_means_not_initial(cloud):
    everything = person_properties(cloud, "")
    stored = [n for n in everything if not n.startswith("$virt_")]
    not_initial = [n for n in stored if "initial" not in n.lower()]
    assert any("initial" in n for n in stored) and len(not_initial) > 5
    # "test", "at", "e": substrings of "latest" match every stored name without "initial"
    for term in ("test", "at", "e"):
        found = person_properties(cloud, term)
        assert set(not_initial) <= set(found), term
        assert all(term in n.lower() for n in found if "initial" in n.lower() or n.startswith("$virt_"))
    assert person_properties(cloud, "email") == [n for n in stored if "email" in n.lower()]
    # ILIKE: "_" is any one character, "%" any run
    assert "organization_id" in person_properties(cloud, "organization%id")
    assert "organization_id" in person_properties(cloud, "organization_i_")
    # event properties have no such rule
    status, body, _ = call(cloud, f"/api/projects/{cloud.info['project_id']}/property_definitions/"
                                  "?type=event&limit=500&search=test")
    assert all("test" in r["name"].lower() for r in body["results"])


# ---------------------------------------------------------------------------------------------
# Organization policy: no personal API keys
# ---------------------------------------------------------------------------------------------


def test_organization_that_refuses_personal_api_keys(cloud):
    pid = cloud.info["project_id"]
    configure(cloud.posthog_url, org_denies_personal_keys=True)
    refused = {"type": "authentication_error", "code": "permission_denied",
               "detail": "Organization 'Sandbox Analytics' does not allow using personal API keys. "
                         "Contact an admin to enable personal API keys for this organization.", "attr": None}
    for path in (f"/api/projects/{pid}/", f"/api/projects/{pid}/event_definitions/",
                 f"/api/projects/{pid}/property_definitions/?type=person", "/api/projects/",
                 "/api/organizations/@current/"):
        assert call(cloud, path)[:2] == (403, refused), path
    assert query(cloud, "SELECT 1")[:2] == (403, refused)
    # the policy comes before the key's own project and scope checks
    assert call(cloud, f"/api/projects/{pid}/", key="api_key_other_project")[:2] == (403, refused)
    assert query(cloud, "SELECT 1", key="api_key_missing_scopes")[:2] == (403, refused)
    # views without an organization still answer, and say why
    assert call(cloud, "/api/personal_api_keys/@current/")[0] == 200
    status, me, _ = call(cloud, "/api/users/@me/")
    assert status == 200 and me["organizations"][0]["members_can_use_personal_api_keys"] is False
    assert me["organization"]["membership_level"] < 8  # an admin (8) would be exempt
    # a bad key is still a 401 first
    assert call(cloud, f"/api/projects/{pid}/", key="phx_" + "0" * 40)[0] == 401
    configure(cloud.posthog_url, org_denies_personal_keys=False)
    assert call(cloud, f"/api/projects/{pid}/")[0] == 200


def test_org_policy_flag():
    with start_sandbox(events=20, persons=5, customers=2, seed=24, org_denies_personal_keys=True) as proc:
        assert proc.info["org_denies_personal_keys"] is True
        status, body, _ = call(proc, f"/api/projects/{proc.info['project_id']}/")
        assert status == 403 and body["code"] == "permission_denied"
        assert "does not allow using personal API keys" in body["detail"]


def test_id_type_flag_is_printed_and_reaches_the_data():
    from cs_posthog.sandbox import data as D
    from cs_posthog.sandbox.posthog_app import accepts_kwarg
    from cs_posthog.sandbox.runner import get_jsonl

    if not accepts_kwarg(D.generate, "id_type"):
        pytest.skip("the data generator has no id types yet")
    with start_sandbox(events=200, persons=40, customers=6, seed=25, id_type="numeric") as proc:
        assert proc.info["id_type"] == "numeric"
        persons = get_jsonl(proc.posthog_url + "/_sandbox/dump/persons")
        ids = [p["properties"].get(proc.info["customer_property"]) for p in persons]
        assert any(isinstance(v, int) and not isinstance(v, bool) for v in ids)
