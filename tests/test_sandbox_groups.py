"""PostHog groups in the sandbox, over real HTTP: generated groups and group keys on events, the
groups_types / groups / group property definition endpoints with their Group (Read) scope, the HogQL
the group mode of the sync sends (events.$group_N, events.group_N, the groups table, argMax), the dumps
and the Customerscore customers known by group key (and by crm_id with --crm-customers)."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter, defaultdict
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from cs_posthog.sandbox.runner import get_json, get_jsonl, http_request, start_sandbox

KEY_RE = re.compile(r"^phx_[A-Za-z0-9]{40}$")
GROUP_TYPE_FIELDS = {"group_type", "group_type_index", "name_singular", "name_plural", "detail_dashboard",
                     "default_columns", "created_at"}


def missing_scope(scope: str) -> dict:
    return {"type": "authentication_error", "code": "permission_denied",
            "detail": f"API key missing required scope '{scope}'", "attr": None}


@pytest.fixture(scope="module")
def sb():
    with start_sandbox(events=4000, persons=500, customers=60, seed=5, region="us") as proc:
        yield proc


@pytest.fixture(scope="module")
def dumps(sb):
    return {what: get_jsonl(sb.posthog_url + f"/_sandbox/dump/{what}") for what in ("events", "persons", "groups")}


def api(sb, path: str, key: str = "api_key", *, method: str = "GET", body=None):
    headers = {"Authorization": f"Bearer {sb.info[key]}"}
    status, _, payload = http_request(method, sb.posthog_url + path, body=body, headers=headers)
    return status, (json.loads(payload) if payload else None)


def project(sb) -> str:
    return f"/api/projects/{sb.info['project_id']}"


def hogql(sb, text: str, values: dict | None = None, key: str = "api_key"):
    query = {"kind": "HogQLQuery", "query": text, "modifiers": {"convertToProjectTimezone": False}}
    if values is not None:
        query["values"] = values
    return api(sb, project(sb) + "/query/", key, method="POST", body={"query": query, "refresh": "force_blocking"})


def ok(sb, text: str, values: dict | None = None) -> dict:
    status, body = hogql(sb, text, values)
    assert status == 200, body
    return body


def company_groups(dumps) -> dict[str, dict]:
    return {g["key"]: g for g in dumps["groups"] if g["index"] == 0}


# ---------------------------------------------------------------------------------------------
# Ready line, keys and scopes
# ---------------------------------------------------------------------------------------------

def test_ready_line_names_the_group_type_property_and_a_key_without_group_read(sb):
    info = sb.info
    assert (info["group_type"], info["group_type_index"], info["group_property"]) == ("company", 0, "crm_id")
    assert KEY_RE.match(info["api_key_no_group"])
    assert info["api_key_no_group"] not in {info[k] for k in ("api_key", "api_key_missing_scopes",
                                                               "api_key_other_project", "api_key_no_current")}
    assert info["company_groups"] == info["customers"] == 60
    assert info["crm_customers"] is False and info["customerscore_crm_customers"] == 0
    # @current describes the keys as they are: Group (Read) on api_key, not on api_key_no_group
    status, full = api(sb, "/api/personal_api_keys/@current/")
    assert status == 200 and "group:read" in full["scopes"]
    status, body = api(sb, "/api/personal_api_keys/@current/", "api_key_no_group")
    assert status == 200 and "group:read" not in body["scopes"]
    assert set(body["scopes"]) == set(full["scopes"]) - {"group:read"}


def test_groups_types_lists_the_types_in_posthogs_shape(sb):
    status, body = api(sb, project(sb) + "/groups_types/")
    assert status == 200 and isinstance(body, list)  # not paginated (pagination_class = None)
    assert [set(t) for t in body] == [GROUP_TYPE_FIELDS] * 2
    assert [(t["group_type_index"], t["group_type"], t["name_singular"], t["name_plural"]) for t in body] == [
        (0, "company", "company", "companies"), (1, "project", None, None)]
    # an environment URL and no trailing slash are the same thing
    assert api(sb, f"/api/environments/{sb.info['project_id']}/groups_types")[1] == body


def test_group_endpoints_need_group_read_and_nothing_else_does(sb):
    p = project(sb)
    for path in ("/groups_types/", "/groups/?group_type_index=0"):
        assert api(sb, p + path, "api_key_no_group") == (403, missing_scope("group:read"))
        # the key lacking query:read and property_definition:read has Group (Read)
        assert api(sb, p + path, "api_key_missing_scopes")[0] == 200
    # everything else the sync uses works without Group (Read), group property definitions included
    assert api(sb, p + "/property_definitions/?type=group&group_type_index=0", "api_key_no_group")[0] == 200
    assert hogql(sb, "SELECT count() FROM groups", key="api_key_no_group")[0] == 200
    assert api(sb, p + "/event_definitions/", "api_key_no_group")[0] == 200
    # keys exist only in their region
    other = sb.other_region_url
    status, _, _ = http_request("GET", other + p + "/groups_types/",
                                headers={"Authorization": f"Bearer {sb.info['api_key']}"})
    assert status == 401


def test_group_property_definitions_by_group_type_index(sb):
    p = project(sb) + "/property_definitions/"
    status, body = api(sb, p + "?type=group&group_type_index=0")
    assert status == 200 and body["count"] == 5 and body["next"] is None
    assert {(d["name"], d["property_type"], d["is_numerical"]) for d in body["results"]} == {
        ("name", "String", False), ("plan", "String", False), ("employees", "Numeric", True),
        ("created", "DateTime", False), ("crm_id", "String", False)}
    assert [d["name"] for d in body["results"]] == sorted(d["name"] for d in body["results"])
    status, body = api(sb, p + "?type=group&group_type_index=1")
    assert status == 200 and [d["name"] for d in body["results"]] == ["company", "name"]
    assert api(sb, p + "?type=group&group_type_index=2")[1]["results"] == []
    status, body = api(sb, p + "?type=group&group_type_index=0&search=crm")
    assert [d["name"] for d in body["results"]] == ["crm_id"]
    # group properties are not person or event properties
    person = {d["name"] for d in api(sb, p + "?type=person&limit=1000")[1]["results"]}
    assert "employees" not in person and "crm_id" not in person
    # PropertyDefinitionQuerySerializer.validate
    assert api(sb, p + "?type=group") == (400, {"type": "validation_error", "code": "invalid_input",
                                                "detail": "`group_type_index` must be set for `group` type",
                                                "attr": None})
    assert api(sb, p + "?type=person&group_type_index=0")[1]["detail"] == (
        "`group_type_index` can only set for `group` type")
    assert api(sb, p + "?type=group&group_type_index=7")[1]["detail"] == "Invalid value for `group_type_index`"
    status, body = api(sb, p + "?type=group&group_type_index=x")
    assert status == 400 and body["attr"] == "group_type_index"


def test_groups_list_pages_with_a_cursor_newest_first(sb, dumps):
    expected = sorted(((g["created_at"], g["key"]) for g in dumps["groups"] if g["index"] == 1), reverse=True)
    assert len(expected) > 100  # more than a page: 1 to 3 projects per company
    seen: list[dict] = []
    url = project(sb) + "/groups/?group_type_index=1"
    pages = 0
    while url:
        status, body = api(sb, url)
        assert status == 200 and body["previous"] is None
        assert len(body["results"]) <= 100
        seen += body["results"]
        pages += 1
        nxt = body["next"]
        if nxt:
            assert "cursor" in parse_qs(urlsplit(nxt).query)
            url = nxt[len(sb.posthog_url):]
        else:
            url = None
    assert pages == 2
    assert [(g["created_at"].replace("+00:00", "Z"), g["group_key"]) for g in seen] == expected
    assert {tuple(sorted(g)) for g in seen} == {("created_at", "group_key", "group_properties", "group_type_index")}
    by_key = {g["key"]: g["properties"] for g in dumps["groups"] if g["index"] == 1}
    assert all(g["group_properties"] == by_key[g["group_key"]] and g["group_type_index"] == 1 for g in seen)
    # search: the key or the name property, case-insensitive
    some = next(g for g in dumps["groups"] if g["index"] == 0)
    word = some["properties"]["name"].split()[0].upper()
    status, body = api(sb, project(sb) + f"/groups/?group_type_index=0&search={word}")
    assert status == 200 and some["key"] in {g["group_key"] for g in body["results"]}
    assert all(word.lower() in (g["group_properties"].get("name") or "").lower() or word.lower() in g["group_key"]
               for g in body["results"])
    # a cursor that does not decode restarts from the first page; no type is a 400
    first = api(sb, project(sb) + "/groups/?group_type_index=1")[1]["results"]
    assert api(sb, project(sb) + "/groups/?group_type_index=1&cursor=%%%")[1]["results"] == first
    bad = base64.urlsafe_b64encode(b"[1]").decode()
    assert api(sb, project(sb) + f"/groups/?group_type_index=1&cursor={bad}")[1]["results"] == first
    status, body = api(sb, project(sb) + "/groups/")
    assert status == 400 and body["attr"] == "group_type_index" and "/groups_types/" in body["detail"]


# ---------------------------------------------------------------------------------------------
# The generated data
# ---------------------------------------------------------------------------------------------

def test_one_company_group_per_company_keyed_by_the_customer_id(sb, dumps):
    companies = company_groups(dumps)
    assert len(companies) == sb.info["customers"]
    # the Persons' customer ids are the group keys (the exact text: 4711, "007", org_...)
    org_ids = {p["properties"].get("organization_id") for p in dumps["persons"]} - {None, ""}
    assert {str(v) for v in org_ids} <= set(companies)
    assert {"4711", "007"} <= set(companies)
    for g in companies.values():
        props = g["properties"]
        assert {"name", "plan", "employees", "created"} <= set(props) <= {"name", "plan", "employees", "created",
                                                                         "crm_id"}
        assert isinstance(props["employees"], int) and props["plan"] in ("free", "pro", "enterprise")
        assert props["created"] == g["created_at"][:10]
        datetime.fromisoformat(g["created_at"].replace("Z", "+00:00"))
    crm = [g["properties"]["crm_id"] for g in companies.values() if "crm_id" in g["properties"]]
    assert 0.75 * len(companies) <= len(crm) < len(companies)  # about 90%, not all
    assert len(set(crm)) == len(crm) and not set(crm) & set(companies)
    projects = [g for g in dumps["groups"] if g["index"] == 1]
    assert {g["properties"]["company"] for g in projects} == set(companies)
    assert {g["index"] for g in dumps["groups"]} == {0, 1}


def test_events_carry_their_company_group_on_most_but_not_all(dumps):
    companies = company_groups(dumps)
    project_of = {g["key"]: g["properties"]["company"] for g in dumps["groups"] if g["index"] == 1}
    with_company = without = 0
    uuids_groups: dict[str, set] = defaultdict(set)
    for e in dumps["events"]:
        g0, g1 = e["$group_0"], e["$group_1"]
        assert e["$group_2"] == e["$group_3"] == e["$group_4"] == ""
        uuids_groups[e["uuid"]].add((g0, g1))
        # $groups as the SDKs send it, exactly when the event has a company
        assert e["properties"].get("$groups") == ({"company": g0, **({"project": g1} if g1 else {})} if g0 else None)
        if g0:
            assert g0 in companies
            if g1:
                assert project_of[g1] == g0
        else:
            assert g1 == ""
        stamped = e["person_properties"].get("organization_id")
        if stamped not in (None, "") and str(stamped) in companies:
            with_company += 1
            without += g0 == ""
            # the company on the event is the one the Person had then (moved Persons included)
            assert g0 in ("", str(stamped))
    assert with_company > 1000
    assert 0.03 < without / with_company < 0.2  # about 10% of a company's events carry no group
    assert sum(1 for e in dumps["events"] if e["$group_1"]) > 0.2 * with_company
    # a duplicated uuid carries the same groups on both rows
    assert all(len(v) == 1 for v in uuids_groups.values())
    assert any(n > 1 for n in Counter(e["uuid"] for e in dumps["events"]).values())


def test_some_persons_change_company_over_time(dumps):
    by_person: dict[str, list] = defaultdict(list)
    for e in dumps["events"]:
        if e["$group_0"]:
            by_person[e["person_id"]].append((e["timestamp"], e["$group_0"]))
    moved = [sorted(v) for v in by_person.values() if len({g for _, g in v}) > 1]
    assert moved
    # their latest events name the company they moved to, not the first one
    assert any(v[0][1] != v[-1][1] for v in moved)


def test_customerscore_knows_the_companies_by_group_key(sb, dumps):
    companies = set(company_groups(dumps))
    known = {c["external_id"] for c in get_json(sb.customerscore_url + "/_sandbox/customers")}
    assert known <= companies and companies - known  # about one in ten missing, as for Person-property ids
    crm = {g["properties"].get("crm_id") for g in dumps["groups"]} - {None}
    assert not known & crm  # without --crm-customers


def test_crm_customers_flag_adds_the_crm_ids():
    with start_sandbox(events=300, persons=100, customers=30, seed=5, crm_customers=True) as proc:
        info = proc.info
        groups = get_jsonl(proc.posthog_url + "/_sandbox/dump/groups")
        known = {c["external_id"] for c in get_json(proc.customerscore_url + "/_sandbox/customers")}
    crm = {g["properties"]["crm_id"] for g in groups if g["index"] == 0 and "crm_id" in g["properties"]}
    keys = {g["key"] for g in groups if g["index"] == 0}
    assert info["crm_customers"] is True
    assert len(known) == info["customerscore_customers"] + info["customerscore_crm_customers"]
    assert len(known & crm) == info["customerscore_crm_customers"]
    assert crm - known and 0.7 * len(crm) <= len(known & crm) < len(crm)
    assert len(known & keys) == info["customerscore_customers"]


# ---------------------------------------------------------------------------------------------
# HogQL
# ---------------------------------------------------------------------------------------------

def test_event_page_with_group_key_and_the_groups_crm_id(sb, dumps):
    companies = company_groups(dumps)
    names = ["$pageview", "invoice_paid", "report_created"]
    body = ok(sb, "SELECT uuid, event, timestamp, created_at, person_id, `$group_0`, "
                  "JSONExtractRaw(group_0.properties, 'crm_id'), group_0.properties.crm_id FROM events "
                  "WHERE event IN {names} AND `$group_0` != '' ORDER BY created_at, uuid LIMIT 10000",
              {"names": names})
    assert body["columns"][5:] == ["$group_0", "JSONExtractRaw(group_0.properties, 'crm_id')", "crm_id"]
    assert [t[1] for t in body["types"][5:]] == ["String", "String", "Nullable(String)"]
    rows = body["results"]
    expected = [(e["uuid"], e["$group_0"]) for e in dumps["events"] if e["event"] in names and e["$group_0"]]
    assert Counter((r[0], r[5]) for r in rows) == Counter(expected)
    assert [(r[3], r[0]) for r in rows] == sorted((r[3], r[0]) for r in rows)
    for r in rows:
        crm = companies[r[5]]["properties"].get("crm_id")
        assert r[6] == (json.dumps(crm) if crm is not None else "")
        assert r[7] == crm


def test_latest_group_per_person_with_argmax(sb, dumps):
    body = ok(sb, "SELECT person_id, argMax(`$group_0`, timestamp) FROM events WHERE `$group_0` != '' "
                  "GROUP BY person_id ORDER BY person_id LIMIT 10000")
    assert body["types"][1][1] == "String"
    latest: dict[str, tuple] = {}
    at_latest: dict[str, set] = defaultdict(set)
    for e in dumps["events"]:
        if not e["$group_0"]:
            continue
        ts = e["timestamp"]
        pid = e["person_id"]
        if pid not in latest or ts > latest[pid][0]:
            latest[pid] = (ts, e["$group_0"])
            at_latest[pid] = {e["$group_0"]}
        elif ts == latest[pid][0]:
            at_latest[pid].add(e["$group_0"])
    assert [r[0] for r in body["results"]] == sorted(latest)
    assert all(r[1] in at_latest[r[0]] for r in body["results"])
    # argMin too, and NULLs are skipped: a person's latest event without a crm_id does not blank it
    body = ok(sb, "SELECT person_id, argMin(`$group_0`, timestamp), argMax(group_0.properties.crm_id, timestamp) "
                  "FROM events WHERE `$group_0` != '' GROUP BY person_id ORDER BY person_id LIMIT 10000")
    assert body["types"][2][1] == "Nullable(String)"
    crm_of = {k: g["properties"].get("crm_id") for k, g in company_groups(dumps).items()}
    for pid, first, crm in body["results"]:
        mine = sorted((e["timestamp"], e["$group_0"]) for e in dumps["events"]
                      if e["person_id"] == pid and e["$group_0"])
        assert first in {g for ts, g in mine if ts == mine[0][0]}
        with_crm = [(ts, crm_of[g]) for ts, g in mine if crm_of[g] is not None]
        assert crm in ({c for ts, c in with_crm if ts == with_crm[-1][0]} if with_crm else {None})


def test_groups_table_by_index_and_keys(sb, dumps):
    companies = company_groups(dumps)
    keys = [*sorted(companies)[:7], "no such group"]
    body = ok(sb, "SELECT key, properties.name, properties.crm_id FROM groups WHERE index = {gi} AND key IN {keys} "
                  "ORDER BY key LIMIT 100", {"gi": 0, "keys": keys})
    assert body["columns"] == ["key", "name", "crm_id"]
    assert body["results"] == [[k, companies[k]["properties"]["name"], companies[k]["properties"].get("crm_id")]
                               for k in sorted(companies)[:7]]
    assert ok(sb, "SELECT count() FROM groups WHERE index = {gi}", {"gi": 0})["results"] == [[len(companies)]]
    assert ok(sb, "SELECT count() FROM groups WHERE index = 1")["results"] == [
        [sum(1 for g in dumps["groups"] if g["index"] == 1)]]
    distinct = {e["$group_0"] for e in dumps["events"]} - {""}
    body = ok(sb, "SELECT count(DISTINCT `$group_0`) FROM events WHERE `$group_0` != ''")
    assert body["results"] == [[len(distinct)]]
    # the table's other fields, as PostHog types them (created_at DateTime64(3), updated_at DateTime: naive)
    body = ok(sb, "SELECT index, key, created_at, updated_at, properties FROM groups WHERE key = {k}",
              {"k": keys[0]})
    assert [t[1] for t in body["types"]] == ["UInt8", "String", "DateTime64(3)", "DateTime", "String"]
    index, key, created, updated, props = body["results"][0]
    assert (index, key, json.loads(props)) == (0, keys[0], companies[keys[0]]["properties"])
    assert created == companies[keys[0]]["created_at"].rstrip("Z") and updated == created[:19]


def test_group_properties_on_events_are_typed_by_their_definitions(sb, dumps):
    key, g = next((k, g) for k, g in company_groups(dumps).items()
                  if any(e["$group_0"] == k for e in dumps["events"]))
    body = ok(sb, "SELECT group_0.properties.employees, group_0.properties.created, group_0.properties.name, "
                  "group_0.key FROM events WHERE `$group_0` = {k} LIMIT 1", {"k": key})
    assert [t[1] for t in body["types"]] == ["Nullable(Float64)", "Nullable(DateTime64(6, 'UTC'))",
                                             "Nullable(String)", "String"]
    assert body["results"] == [[float(g["properties"]["employees"]), g["properties"]["created"] + "T00:00:00Z",
                                g["properties"]["name"], key]]
    big = sum(1 for e in dumps["events"] if e["$group_0"]
              and company_groups(dumps)[e["$group_0"]]["properties"]["employees"] > 200)
    assert ok(sb, "SELECT count() FROM events WHERE group_0.properties.employees > 200")["results"] == [[big]]
    # on the groups table itself the same property is a string (no group type in the query's context)
    body = ok(sb, "SELECT properties.employees FROM groups WHERE index = 0 AND key = {k}", {"k": key})
    assert body["types"][0][1] == "Nullable(String)" and body["results"] == [[str(g["properties"]["employees"])]]


def test_events_without_the_group_read_clickhouse_defaults(sb, dumps):
    n = sum(1 for e in dumps["events"] if not e["$group_0"])
    body = ok(sb, "SELECT group_0.key, group_0.created_at, group_0.properties.name, "
                  "JSONExtractRaw(group_0.properties, 'crm_id') FROM events WHERE `$group_0` = '' LIMIT 10000")
    assert len(body["results"]) == n > 0
    assert {tuple(r) for r in body["results"]} == {("", "1970-01-01T00:00:00", None, "")}
    project_rows = sum(1 for e in dumps["events"] if e["$group_1"])
    body = ok(sb, "SELECT count() FROM events WHERE group_1.properties.company = `$group_0`")
    assert body["results"] == [[project_rows]]


@pytest.mark.parametrize(("text", "status", "detail"), [
    ("SELECT team_id FROM groups", 400, "The groups field `team_id` is not supported"),
    ("SELECT key FROM raw_groups", 400, "The table `raw_groups` is not supported"),
    ("SELECT group_0 FROM events", 400, "Can't select a table when a column is expected: group_0"),
    ("SELECT group_5.key FROM events", 400, "Unable to resolve field: group_5"),
    ("SELECT `$group_5` FROM events", 400, "Unable to resolve field: $group_5"),
    ("SELECT group_0.nope FROM events", 400, "Unable to resolve field: nope"),
    ("SELECT argMax(event) FROM events", 400, "Function 'argMax' expects 2 arguments, found 1"),
])
def test_what_the_sandbox_does_not_model_is_a_400(sb, text, status, detail):
    code, body = hogql(sb, text)
    assert code == status and body["detail"].startswith(detail), body
