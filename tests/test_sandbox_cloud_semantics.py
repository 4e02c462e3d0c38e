"""The sandbox HogQL engine behaves like PostHog Cloud where that changes what a query returns.

Typed properties (PropertySwapper), JSONExtractRaw, persons on events (stamped vs joined),
materialized columns, the time limit's cost model, and the generator's id types and Person
histories. Every check runs through ``execute()`` on a database from ``data.generate``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from cs_posthog.sandbox import data as D
from cs_posthog.sandbox.hogql import (
    ClickHouseQueryError,
    HogQLError,
    QueryTimeLimit,
    dump_properties,
    execute,
    explain_query_plan,
    max_cost_for_seconds,
    query_cost,
)

ANCHOR = D.parse_time("2024-06-01T00:00:00Z")
ORG = D.CUSTOMER_PROPERTY
JOINED = {"personsOnEventsMode": "person_id_override_properties_joined"}
ZERO = "00000000-0000-0000-0000-000000000000"
MAX = "ffffffff-ffff-ffff-ffff-ffffffffffff"

# the client's shapes (issue 10)
EVENTS_PAGE = (
    "SELECT uuid, event, timestamp, created_at, person_id, JSONExtractRaw(person.properties, {pk0}), "
    "JSONExtractRaw(person.properties, {pk1}) FROM events WHERE event IN ({e0}, {e1}) "
    "AND timestamp >= toDateTime64({ts_from}, 6, 'UTC') "
    "AND (created_at, uuid) > (toDateTime64({after_c}, 6, 'UTC'), toUUID({after_u})) "
    "AND (created_at, uuid) <= (toDateTime64({upto_c}, 6, 'UTC'), toUUID({upto_u})) "
    "AND JSONExtractRaw(person.properties, {pk0}) NOT IN ('', 'null', '\"\"') AND person_id IN {pids} "
    "ORDER BY created_at, uuid LIMIT 10001"
)
EVENTS_COUNT = (
    "SELECT count(DISTINCT uuid) FROM events WHERE event IN ({e0}, {e1}) "
    "AND created_at >= toDateTime64({created_from}, 6, 'UTC') "
    "AND timestamp >= toDateTime64({ts_from}, 6, 'UTC') "
    "AND JSONExtractRaw(person.properties, {pk0}) NOT IN ('', 'null', '\"\"') AND person_id IN {pids}"
)
PERSONS_PAGE = (
    "SELECT id, JSONExtractRaw(properties, {pk0}), JSONExtractRaw(properties, {pk1}) FROM persons "
    "WHERE (JSONExtractRaw(properties, {f0k}) IN ({f0a}, {f0b})) AND (JSONExtractRaw(properties, {f1k}) "
    "NOT IN ('', 'null')) AND (id > toUUID({after_id})) ORDER BY id LIMIT 10001"
)


def _generate(id_type: str, events: int = 6000, persons: int = 400) -> tuple[sqlite3.Connection, D.Dataset]:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    D.create_schema(conn)
    ds = D.generate(conn, seed=11, events=events, persons=persons, customers=40, anchor_us=ANCHOR, id_type=id_type)
    D.create_indexes(conn)
    conn.execute("ANALYZE")
    conn.commit()
    return conn, ds


@pytest.fixture(scope="module", params=["string", "numeric", "mixed"])
def gen(request):
    conn, ds = _generate(request.param)
    yield request.param, conn, ds
    conn.close()


@pytest.fixture(scope="module")
def mixed():
    conn, ds = _generate("mixed")
    yield conn, ds
    conn.close()


def persons_now(conn) -> dict[str, dict]:
    return {json.loads(line)["id"]: json.loads(line) for line in D.iter_person_dump(conn)}


def events_dump(conn) -> list[dict]:
    return [json.loads(line) for line in D.iter_event_dump(conn)]


def raw_text(raw: str) -> str | None:
    """What the client makes of JSONExtractRaw's text: a JSON string's content, a number as written."""
    if raw in ("", "null"):
        return None
    return json.loads(raw) if raw.startswith('"') else raw


# --- ids through JSONExtractRaw -------------------------------------------------------------------
def test_ids_read_through_json_extract_raw_are_exact_whatever_the_id_type(gen):
    id_type, conn, ds = gen
    r = execute(conn, "SELECT id, JSONExtractRaw(properties, {k}) FROM persons WHERE JSONExtractRaw(properties, {k}) "
                      "NOT IN ('', 'null', '\"\"') ORDER BY id LIMIT 10000", {"k": ORG})
    got = {pid: raw_text(raw) for pid, raw in r["results"]}
    want = {pid: p["properties"][ORG] for pid, p in persons_now(conn).items() if p["properties"].get(ORG) not in (None, "")}
    assert set(got) == set(want)
    external_ids = {c.external_id for c in ds.companies}
    for pid, text in got.items():
        assert text == str(want[pid])  # the JSON value's own text: 4711, "007", 9007199254740993
        assert text in external_ids  # the Customerscore company is found by that exact text
    texts = set(got.values())
    if id_type == "string":
        assert all(t.startswith("org_") for t in texts)
    if id_type == "numeric":
        assert all(t.isdigit() and not t.startswith("0") for t in texts)
        assert any(int(t) > 2**53 for t in texts)
    if id_type == "mixed":
        kinds = {type(v).__name__ for v in want.values()}
        assert kinds == {"int", "str"}
        assert any(t.startswith("0") and t.isdigit() for t in texts)  # zero-padded strings
        assert any(t.startswith("org_") for t in texts)


def test_json_extract_raw_returns_raw_json_text_and_empty_when_missing(mixed):
    conn, _ = mixed
    conn.execute("INSERT INTO persons VALUES ('p-raw', '2024-01-01 00:00:00.000000', ?, 1)", (dump_properties(
        {"s": "007", "n": 4711, "big": 9007199254740993, "b": True, "z": None, "o": {"a": [1, "x"]}, "e": ""}),))
    r = execute(conn, "SELECT JSONExtractRaw(properties, 's'), JSONExtractRaw(properties, {n}), "
                      "JSONExtractRaw(properties, 'big'), JSONExtractRaw(properties, 'b'), JSONExtractRaw(properties, 'z'), "
                      "JSONExtractRaw(properties, 'o'), JSONExtractRaw(properties, 'e'), JSONExtractRaw(properties, 'nope'), "
                      "JSONExtractRaw(properties, 'o', 'a', 2) FROM persons WHERE id = 'p-raw'", {"n": "n"})
    assert r["results"] == [['"007"', "4711", "9007199254740993", "true", "null", '{"a":[1,"x"]}', '""', "", '"x"']]
    assert [t for _, t in r["types"]] == ["String"] * 9
    conn.execute("DELETE FROM persons WHERE id = 'p-raw'")


# --- typed properties -----------------------------------------------------------------------------
def test_a_numeric_customer_property_is_cast_to_float_like_posthog(mixed):
    conn, _ = mixed
    assert conn.execute("SELECT property_type FROM sbx_property_definitions WHERE type = 'person' AND name = ?",
                        (ORG,)).fetchone() == ("Numeric",)
    r = execute(conn, "SELECT id, properties.organization_id, JSONExtractRaw(properties, 'organization_id') "
                      "FROM persons WHERE properties.organization_id IS NOT NULL ORDER BY id LIMIT 10000")
    assert r["types"][1] == ["organization_id", "Nullable(Float64)"]
    pairs = {raw: value for _, value, raw in r["results"]}
    assert pairs['"007"'] == 7.0  # the zero-padded string reads as the number 7
    assert pairs["4711"] == 4711.0 and isinstance(pairs["4711"], float)  # JSON: 4711.0
    big = next(raw for raw in pairs if raw.isdigit() and int(raw) > 2**53)
    assert pairs[big] == float(int(big)) and int(pairs[big]) != int(big)  # above 2^53: digits lost
    # a non-numeric string id reads NULL, so `IS NOT NULL` misses those Persons entirely
    strings = [raw for _, _, raw in execute(conn, "SELECT id, 1, JSONExtractRaw(properties, 'organization_id') FROM "
                                                  "persons WHERE JSONExtractRaw(properties, 'organization_id') LIKE '\"org_%' "
                                                  "LIMIT 10000")["results"]]
    assert strings and not set(strings) & set(pairs)
    # person.properties on events is cast the same way
    r = execute(conn, "SELECT person.properties.organization_id FROM events WHERE person.properties.organization_id "
                      "IS NOT NULL LIMIT 5")
    assert r["types"] == [["organization_id", "Nullable(Float64)"]]
    assert all(isinstance(v, float) for (v,) in r["results"])


def test_comparing_a_numeric_property_with_a_non_numeric_string_fails_like_clickhouse(mixed):
    conn, _ = mixed
    for query, values in [
        ("SELECT count() FROM persons WHERE properties.organization_id != ''", {}),
        ("SELECT count() FROM events WHERE person.properties.organization_id != {v}", {"v": ""}),
        ("SELECT count() FROM persons WHERE properties.organization_id = {v}", {"v": "org_x"}),
        ("SELECT count() FROM persons WHERE properties.organization_id IN {v}", {"v": ["4711", "abc"]}),
    ]:
        with pytest.raises(ClickHouseQueryError) as exc:
            execute(conn, query, values)
        e = exc.value
        assert isinstance(e, HogQLError) and e.status == 500
        assert e.body() == {"type": "server_error", "code": "error",
                            "detail": "ClickHouse error while executing query.", "attr": None}
        assert "as Float64" in e.ch_message and "CANNOT_PARSE_TEXT" in e.ch_message
    # a numeric string or a number compares numerically ("007" is 7)
    n_4711 = execute(conn, "SELECT count() FROM persons WHERE properties.organization_id = '4711'")["results"]
    assert n_4711 == execute(conn, "SELECT count() FROM persons WHERE properties.organization_id = 4711")["results"]
    assert n_4711[0][0] > 0
    n7 = execute(conn, "SELECT count() FROM persons WHERE properties.organization_id = {v}", {"v": "7"})["results"]
    raw7 = execute(conn, "SELECT count() FROM persons WHERE JSONExtractRaw(properties, 'organization_id') IN "
                         "('7', '\"007\"', '\"07\"', '\"0007\"')")["results"]
    assert n7 == raw7 and n7[0][0] > 0
    # with typing off (or through JSONExtractRaw) the property is text again
    assert execute(conn, "SELECT count() FROM persons WHERE properties.organization_id != ''",
                   typed_properties=False)["results"][0][0] > 0
    assert execute(conn, "SELECT properties.organization_id FROM persons WHERE JSONExtractRaw(properties, "
                         "'organization_id') = '\"007\"' LIMIT 1", typed_properties=False)["results"] == [["007"]]


def test_boolean_and_datetime_properties_are_cast_too(mixed):
    conn, _ = mixed
    r = execute(conn, "SELECT properties.beta_user, properties.signed_up_at, properties.seats FROM persons "
                      "WHERE properties.beta_user IS NOT NULL AND properties.signed_up_at IS NOT NULL "
                      "AND properties.seats IS NOT NULL LIMIT 20")
    assert r["types"] == [["beta_user", "Nullable(Bool)"], ["signed_up_at", "Nullable(DateTime64(6, 'UTC'))"],
                          ["seats", "Nullable(Float64)"]]
    assert {type(b) for b, _, _ in r["results"]} == {bool}
    assert all(s.endswith("Z") and "T" in s for _, s, _ in r["results"])
    assert execute(conn, "SELECT count() FROM persons WHERE properties.beta_user = true")["results"] == \
        execute(conn, "SELECT count() FROM persons WHERE JSONExtractRaw(properties, 'beta_user') = 'true'")["results"]
    # explicit types win over the definitions table
    r = execute(conn, "SELECT properties.beta_user FROM persons WHERE properties.beta_user IS NOT NULL LIMIT 1",
                property_types={("person", "beta_user"): "String"})
    assert r["results"][0][0] in ("true", "false")


# --- persons on events ----------------------------------------------------------------------------
def _history_person(ds_conn, history):
    conn, ds = ds_conn
    now = persons_now(conn)
    for e in events_dump(conn):
        p = now.get(e["person_id"])
        if p and e["person_properties"].get(ORG) != p["properties"].get(ORG):
            if history == "late_set" and ORG not in e["person_properties"]:
                return e, p
            if history == "moved" and e["person_properties"].get(ORG) not in (None, ""):
                return e, p
    raise AssertionError(f"no {history} person in the generated data")


@pytest.mark.parametrize("history", ["late_set", "moved"])
def test_person_properties_on_events_are_stamped_by_default_and_current_when_joined(mixed, history):
    conn, _ = mixed
    event, person = _history_person(mixed, history)
    query = ("SELECT person.properties.organization_id, JSONExtractRaw(person.properties, 'organization_id'), "
             "person.id, person_id FROM events WHERE uuid = {u} LIMIT 1")
    stamped = execute(conn, query, {"u": event["uuid"]}, typed_properties=False)["results"][0]
    joined = execute(conn, query, {"u": event["uuid"]}, modifiers=JOINED, typed_properties=False)["results"][0]
    old = event["person_properties"].get(ORG)
    now = person["properties"][ORG]
    assert stamped[:2] == [None if old is None else str(old), "" if old is None else json.dumps(old)]
    assert joined[:2] == [str(now), json.dumps(now)]
    assert stamped[2:] == joined[2:] == [person["id"], person["id"]]
    # the server's default can be switched, and the query's modifier still wins
    assert execute(conn, query, {"u": event["uuid"]}, typed_properties=False,
                   poe_default="person_id_override_properties_joined")["results"][0] == joined
    assert execute(conn, query, {"u": event["uuid"]}, typed_properties=False,
                   poe_default="person_id_override_properties_joined",
                   modifiers={"personsOnEventsMode": "person_id_override_properties_on_events"})["results"][0] == stamped


def test_the_generator_has_late_identified_and_moved_persons_and_signup_events_before_the_id(mixed):
    conn, ds = mixed
    assert ds.n_late_set > 10 and ds.n_moved > 3
    missing = execute(conn, "SELECT event, count() FROM events WHERE JSONExtractRaw(person.properties, {k}) = '' "
                            "AND JSONExtractRaw(person.properties, 'company_name') = '' AND person_id IN "
                            "{ids} GROUP BY event ORDER BY count() DESC LIMIT 100",
                      {"k": ORG, "ids": [pid for pid, p in persons_now(conn).items()
                                         if "company_name" in p["properties"]]})["results"]
    assert dict(missing).get("user_signed_up", 0) > 0  # signup/onboarding events without the id


def test_dumps_carry_stamped_person_properties_and_persons_as_they_are_now(mixed):
    conn, _ = mixed
    now = persons_now(conn)
    rows = events_dump(conn)
    assert all(isinstance(e["person_properties"], dict) for e in rows)
    differs = [e for e in rows if e["person_properties"] != now[e["person_id"]]["properties"]]
    assert 0 < len(differs) < len(rows) // 2


def test_an_unknown_persons_on_events_mode_is_refused(mixed):
    conn, _ = mixed
    with pytest.raises(HogQLError):
        execute(conn, "SELECT 1", modifiers={"personsOnEventsMode": "sometimes"})


# --- materialized columns -------------------------------------------------------------------------
def test_materialized_email_reads_empty_and_null_text_as_null(mixed):
    conn, _ = mixed
    for pid, email in (("p-mat-empty", ""), ("p-mat-null", "null"), ("p-mat-ok", "a@example.com")):
        conn.execute("INSERT INTO persons VALUES (?, '2024-01-01 00:00:00.000000', ?, 1)",
                     (pid, dump_properties({"email": email, "plan": email})))
    try:
        query = ("SELECT id, properties.email, properties.plan, JSONExtractRaw(properties, 'email') FROM persons "
                 "WHERE id IN ('p-mat-empty', 'p-mat-null', 'p-mat-ok') ORDER BY id")
        assert execute(conn, query)["results"] == [
            ["p-mat-empty", None, "", '""'], ["p-mat-null", None, "null", '"null"'],
            ["p-mat-ok", "a@example.com", "a@example.com", '"a@example.com"']]
        assert execute(conn, query, materialized=False)["results"][0][1:3] == ["", ""]
        assert execute(conn, "SELECT count() FROM persons WHERE id IN ('p-mat-empty', 'p-mat-null', 'p-mat-ok') "
                       "AND properties.email IS NULL"
                       )["results"] == [[2]]
        # on events too (stamped: an event ingested now carries the Person as now)
        conn.execute("INSERT INTO events (uuid, event, timestamp, created_at, distinct_id, person_id, properties) "
                     "VALUES ('00000000-0000-0000-0000-00000000beef', 'x', '2024-05-01 00:00:00.000000', "
                     "'2024-05-01 00:00:00.000000', 'd', 'p-mat-empty', '{}')")
        assert execute(conn, "SELECT person.properties.email, JSONExtractRaw(person.properties, 'email') FROM events "
                             "WHERE event = 'x'")["results"] == [[None, '""']]
    finally:
        conn.execute("DELETE FROM persons WHERE id LIKE 'p-mat-%'")
        conn.execute("DELETE FROM events WHERE event = 'x'")


# --- the client's query shapes, their answers and their indexes ------------------------------------
def _events_values(conn, ds):
    pids = sorted(persons_now(conn))[:150]
    return {"pk0": ORG, "pk1": "email", "e0": "$pageview", "e1": "user_signed_up",
            "ts_from": D.db_to_iso(D.fmt_db(ANCHOR - 30 * D.DAY_US)), "created_from": "2024-05-01T00:00:00Z",
            "after_c": "2024-05-01T00:00:00Z", "after_u": ZERO, "upto_c": D.db_to_iso(D.fmt_db(ANCHOR)),
            "upto_u": MAX, "pids": pids}


@pytest.mark.parametrize("modifiers", [None, JOINED])
def test_the_events_page_and_count_shapes_answer_what_python_computes(mixed, modifiers):
    conn, ds = mixed
    v = _events_values(conn, ds)
    now = persons_now(conn)
    want = []
    for e in events_dump(conn):
        props = now[e["person_id"]]["properties"] if modifiers else e["person_properties"]
        raw = json.dumps(props[ORG]) if ORG in props else ""
        if (e["event"] in (v["e0"], v["e1"]) and e["timestamp"] >= v["ts_from"] and e["person_id"] in v["pids"]
                and raw not in ("", "null", '""') and D.parse_time(e["created_at"]) > D.parse_time(v["after_c"])):
            want.append((e["created_at"], e["uuid"], raw))
    want.sort()
    r = execute(conn, EVENTS_PAGE, v, modifiers=modifiers)
    assert [(row[3], row[0], row[5]) for row in r["results"]] == want
    assert want
    n = execute(conn, EVENTS_COUNT, v, modifiers=modifiers)["results"][0][0]
    assert n == len({u for _, u, _ in want})


def test_the_keyset_shapes_use_the_indexes(mixed):
    conn, ds = mixed
    plan = explain_query_plan(conn, EVENTS_PAGE, _events_values(conn, ds))
    assert any("USING INDEX events_created ((created_at,uuid)>(?,?)" in line for line in plan), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan
    pv = {"pk0": ORG, "pk1": "email", "f0k": "plan", "f0a": '"pro"', "f0b": '"free"', "f1k": ORG, "after_id": ZERO}
    plan = explain_query_plan(conn, PERSONS_PAGE, pv)
    assert any("(id>?)" in line for line in plan), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan


def test_the_persons_shapes_answer_what_python_computes(mixed):
    conn, _ = mixed
    now = persons_now(conn)
    pv = {"pk0": ORG, "pk1": "email", "f0k": "plan", "f0a": '"pro"', "f0b": '"free"', "f1k": ORG, "after_id": ZERO}

    def raw(props, k):
        return json.dumps(props[k], ensure_ascii=False) if k in props else ""

    want = [[pid, raw(p["properties"], ORG), raw(p["properties"], "email")] for pid, p in sorted(now.items())
            if raw(p["properties"], "plan") in ('"pro"', '"free"') and raw(p["properties"], ORG) not in ("", "null")]
    assert execute(conn, PERSONS_PAGE, pv)["results"] == want
    half = want[len(want) // 2][0]
    assert execute(conn, PERSONS_PAGE, {**pv, "after_id": half.upper()})["results"] == want[len(want) // 2 + 1:]
    count = PERSONS_PAGE.replace("SELECT id, JSONExtractRaw(properties, {pk0}), JSONExtractRaw(properties, {pk1})",
                                 "SELECT count()").replace(" ORDER BY id LIMIT 10001", "")
    assert execute(conn, count, pv)["results"] == [[len(want)]]
    latest = execute(conn, "SELECT id, created_at FROM persons WHERE (JSONExtractRaw(properties, {f1k}) NOT IN "
                           "('', 'null')) ORDER BY created_at DESC, id LIMIT 5", pv)["results"]
    assert [r[0] for r in latest] == [pid for _, pid in sorted(
        ((p["created_at"], pid) for pid, p in now.items() if raw(p["properties"], ORG) not in ("", "null")),
        key=lambda t: (-D.parse_time(t[0]), t[1]))[:5]]


def test_explicit_casts_parse_or_fail_and_plain_strings_still_convert(mixed):
    conn, _ = mixed
    with pytest.raises(ClickHouseQueryError) as exc:
        execute(conn, "SELECT id FROM persons WHERE id > toUUID({u})", {"u": "not-a-uuid"})
    assert exc.value.status == 500
    with pytest.raises(HogQLError) as exc2:
        execute(conn, "SELECT uuid FROM events WHERE created_at > toDateTime64({c}, 6, 'UTC')", {"c": "soon"})
    assert exc2.value.code == "cannot_parse_datetime"
    q = "SELECT count() FROM events WHERE (created_at, uuid) > ({c}, {u})"
    explicit = "SELECT count() FROM events WHERE (created_at, uuid) > (toDateTime64({c}, 6, 'UTC'), toUUID({u}))"
    v = {"c": "2024-05-15T00:00:00Z", "u": ZERO}
    assert execute(conn, q, v)["results"] == execute(conn, explicit, v)["results"]


# --- the time limit ---------------------------------------------------------------------------------
def test_the_cost_model_counts_rows_in_the_timestamp_range_and_the_join(mixed):
    conn, ds = mixed
    n_events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    n_persons = conn.execute("SELECT count(*) FROM persons").fetchone()[0]
    assert query_cost(conn, "SELECT count() FROM events") == n_events
    assert query_cost(conn, "SELECT count() FROM persons") == n_persons
    assert query_cost(conn, "SELECT 1") == 0
    since = D.fmt_db(ANCHOR - 10 * D.DAY_US)
    exact = conn.execute("SELECT count(*) FROM events WHERE timestamp >= ?", (since,)).fetchone()[0]
    cost = query_cost(conn, "SELECT uuid FROM events WHERE timestamp >= {t} AND (created_at, uuid) > ({t}, {u})",
                      {"t": since, "u": ZERO})
    assert abs(cost - exact) <= max(5, exact // 50)  # the created_at keyset does not narrow the scan
    joined = query_cost(conn, "SELECT uuid FROM events WHERE timestamp >= {t}", {"t": since}, modifiers=JOINED)
    assert query_cost(conn, "SELECT person.properties.email FROM events WHERE timestamp >= {t}", {"t": since},
                      modifiers=JOINED) == cost * 2 + n_persons
    assert joined == cost  # no person.* read: no join
    assert query_cost(conn, "SELECT uuid FROM events WHERE timestamp >= {t} AND timestamp < {t}", {"t": since}) == 0


def test_a_query_over_the_limit_raises_query_time_limit_with_posthogs_504(mixed):
    conn, _ = mixed
    n_events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert execute(conn, "SELECT count() FROM events", max_cost=n_events)["results"] == [[n_events]]
    with pytest.raises(QueryTimeLimit) as exc:
        execute(conn, "SELECT count() FROM events", max_cost=n_events - 1)
    e = exc.value
    assert not isinstance(e, HogQLError)
    assert (e.status, e.cost, e.max_cost) == (504, n_events, n_events - 1)
    assert e.body()["detail"].startswith("This query hit the 10-second time limit for queries run through the API.")
    # a narrower time window fits
    since = D.fmt_db(ANCHOR - 2 * D.DAY_US)
    execute(conn, "SELECT count() FROM events WHERE timestamp > {t}", {"t": since}, max_cost=n_events // 2)
    assert max_cost_for_seconds(10) == 10_000_000 and max_cost_for_seconds(0.5) == 500_000


# --- the generator ----------------------------------------------------------------------------------
def test_generation_is_deterministic_by_seed_and_id_type():
    def digest(id_type):
        conn, ds = _generate(id_type, events=1500, persons=100)
        h = hashlib.sha256()
        for line in D.iter_event_dump(conn):
            h.update(line.encode())
        for line in D.iter_person_dump(conn):
            h.update(line.encode())
        conn.close()
        return h.hexdigest(), [c.external_id for c in ds.customerscore_customers]

    assert digest("mixed") == digest("mixed")
    assert digest("mixed") != digest("string")


def test_company_external_ids_are_the_exact_text_of_the_person_values():
    companies, customers = D.make_companies(3, 30, "mixed")
    for c in companies:
        assert c.external_id == str(c.id_value)
    assert {"4711", "9007199254740993", "007"} <= {c.external_id for c in companies}
    assert {type(c.id_value) for c in companies} == {int, str}
    numeric, _ = D.make_companies(3, 30, "numeric")
    assert all(isinstance(c.id_value, int) for c in numeric)
    assert [c.external_id for c in D.make_companies(3, 30, "string")[0]] == [
        c.external_id for c in D.make_companies(3, 30)[0]]
    with pytest.raises(ValueError):
        D.make_companies(3, 3, "hex")
