"""The sandbox's HogQL engine: real queries over a small SQLite database, checked by value."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid as uuidlib

import pytest

from cs_posthog.sandbox.hogql import (
    HogQLError,
    create_schema,
    dump_properties,
    execute,
    explain_query_plan,
    parse,
)
from cs_posthog.sandbox.hogql_errors import OFFSET_NOT_ALLOWED_MESSAGE

# Property names a customer-id or filter property can really have.
NASTY_KEYS = [
    "plain",
    "with space",
    "quote'single",
    'quote"double',
    "back`tick",
    "{braces}",
    "$dollar",
    "ünïcödé ключ",
    "dot.ted",
    "back\\slash",
]


def _uuid(i: int) -> str:
    return str(uuidlib.UUID(int=i))


def _add_person(conn, pid, created_at, props, identified=1):
    conn.execute("INSERT INTO persons VALUES (?, ?, ?, ?)", (pid, created_at, dump_properties(props), identified))


def _add_event(conn, i, event, ts, created, person_id, props, distinct_id="d"):
    conn.execute(
        "INSERT INTO events (uuid, event, timestamp, created_at, distinct_id, person_id, properties) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (_uuid(i) if isinstance(i, int) else i, event, ts, created, distinct_id, person_id, dump_properties(props)),
    )


PERSONS = {
    # id: properties
    "p-acme": {"org": "acme", "plan": "pro", "age": 30, "vip": True, "nothing": None, "empty": "",
               "nested": {"a": [1, "two"]}, **{k: f"v{i}" for i, k in enumerate(NASTY_KEYS)}},
    "p-beta": {"org": "beta", "plan": "free", "age": "31", "vip": False, "quoted": 'say "hi"'},
    "p-none": {"plan": "PRO"},
    "p-null": {"org": None, "plan": None},
    "p-empty": {"org": "", "plan": "pro"},
}


@pytest.fixture()
def db():
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    for n, (pid, props) in enumerate(sorted(PERSONS.items())):
        _add_person(conn, pid, f"2024-01-0{n + 1} 10:00:00.{123456 * (n % 2):06d}", props, identified=n % 2)
    # five events, sub-second apart; one belongs to a person that does not exist
    rows = [
        (1, "signup", "2024-03-01 12:00:00.000000", "2024-03-01 12:00:00.000000", "p-acme", {"n": 1}),
        (2, "$pageview", "2024-03-01 12:00:00.000001", "2024-03-01 12:00:01.000000", "p-acme", {"n": 2}),
        (3, "$pageview", "2024-03-01 12:00:00.000002", "2024-03-01 12:00:01.000000", "p-beta", {"n": 3}),
        (4, "purchase", "2024-03-02 00:00:00.500000", "2024-03-02 00:00:00.500000", "p-none", {"amount": "9.5"}),
        (5, "purchase", "2024-03-03 00:00:00.000000", "2024-03-03 00:00:00.000000", "p-gone", {"amount": "0.5"}),
    ]
    for i, ev, ts, created, pid, props in rows:
        _add_event(conn, i, ev, ts, created, pid, props)
    conn.commit()
    yield conn
    conn.close()


def q(conn, query, values=None, **kw):
    return execute(conn, query, values, **kw)


def col(conn, query, values=None, **kw):
    return [r[0] for r in q(conn, query, values, **kw)["results"]]


def err(conn, query, values=None, **kw) -> HogQLError:
    with pytest.raises(HogQLError) as exc:
        execute(conn, query, values, **kw)
    return exc.value


# --- schema and parsing ---------------------------------------------------------------------------
def test_create_schema_makes_the_tables_and_indexes_the_data_generator_fills(db):
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"persons", "person_distinct_ids", "events"} <= tables
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_created", "events_ts"} <= indexes
    assert [r[1] for r in db.execute("PRAGMA table_info(events)")] == [
        "rowid_", "uuid", "event", "timestamp", "created_at", "distinct_id", "person_id", "properties",
        "person_properties", "$group_0", "$group_1", "$group_2", "$group_3", "$group_4"]
    assert {"groups", "group_type_mapping"} <= tables


def test_parse_returns_posthogs_ast_and_maps_syntax_errors():
    ast = parse("SELECT event FROM events WHERE x = {v}")
    assert ast["node"] == "SelectQuery"
    assert ast["where"]["right"] == {"node": "Placeholder", "expr": {"node": "Field", "chain": ["v"]}} | {
        k: v for k, v in ast["where"]["right"].items() if k not in ("node", "expr")}
    with pytest.raises(HogQLError) as exc:
        parse("SELEC event FROM events")
    assert exc.value.code == "hogql_syntax_error"
    assert "SELEC" in exc.value.detail


def test_syntax_error_is_a_400_hogql_syntax_error(db):
    e = err(db, "SELECT event FROM events WHERE")
    assert e.code == "hogql_syntax_error"
    assert e.body() == {"type": "validation_error", "code": "hogql_syntax_error", "detail": e.detail, "attr": None}


# --- properties -----------------------------------------------------------------------------------
def test_property_values_read_as_posthog_reads_them(db):
    r = q(db, "SELECT properties.age, properties.vip, properties.nothing, properties.missing, properties.empty, "
              "properties.nested, properties.nested.a.2, properties['nested']['a'][1] FROM persons WHERE id = 'p-acme'")
    assert r["results"] == [["30", "true", None, None, "", '{"a":[1,"two"]}', "two", "1"]]
    # JSONExtractRaw minus the outer quotes: escapes inside a string stay escaped, as in PostHog
    assert col(db, "SELECT properties.quoted FROM persons WHERE id = 'p-beta'") == ['say \\"hi\\"']


@pytest.mark.parametrize("key", NASTY_KEYS)
def test_nasty_property_names_are_reachable_every_way_hogql_allows(db, key):
    backtick = "`" + key.replace("\\", "\\\\").replace("`", "``") + "`"
    string = "'" + key.replace("\\", "\\\\").replace("'", "\\'") + "'"
    for expr in (f"properties.{backtick}", f"properties[{string}]"):
        assert col(db, f"SELECT {expr} FROM persons ORDER BY id") == [
            PERSONS[p].get(key) for p in sorted(PERSONS)], expr
        assert col(db, f"SELECT id FROM persons WHERE {expr} = {{v}}", {"v": PERSONS["p-acme"][key]}) == ["p-acme"]
    # and through the events -> persons join
    value = PERSONS["p-acme"][key]
    assert col(db, f"SELECT person.properties.{backtick} FROM events ORDER BY created_at, uuid") == [
        value, value, None, None, None]


def test_double_quoted_identifiers_are_fields_and_single_quotes_are_strings(db):
    assert col(db, 'SELECT properties."plan" FROM persons WHERE properties."org" = \'acme\'') == ["pro"]


JOINED = {"personsOnEventsMode": "person_id_override_properties_joined"}


def test_person_properties_come_from_the_current_person_with_the_joined_modifier(db):
    r = q(db, "SELECT uuid, person.id, person.properties.org FROM events ORDER BY created_at, uuid", modifiers=JOINED)
    assert r["columns"] == ["uuid", "id", "org"]
    assert r["results"] == [
        [_uuid(1), "p-acme", "acme"],
        [_uuid(2), "p-acme", "acme"],
        [_uuid(3), "p-beta", "beta"],
        [_uuid(4), "p-none", None],
        # no such person: ClickHouse's LEFT JOIN gives default values, so the zero UUID and no properties
        [_uuid(5), "00000000-0000-0000-0000-000000000000", None],
    ]
    db.execute("UPDATE persons SET properties = ? WHERE id = 'p-acme'", (dump_properties({"org": "acme-2"}),))
    assert col(db, "SELECT person.properties.org FROM events WHERE uuid = {u}", {"u": _uuid(1)},
               modifiers=JOINED) == ["acme-2"]


def test_person_properties_on_events_are_stamped_at_ingestion_by_default(db):
    # person_id_override_properties_on_events (Cloud's default): events.person_properties
    r = q(db, "SELECT uuid, person.id, person.properties.org FROM events ORDER BY created_at, uuid")
    assert r["results"] == [
        [_uuid(1), "p-acme", "acme"],
        [_uuid(2), "p-acme", "acme"],
        [_uuid(3), "p-beta", "beta"],
        [_uuid(4), "p-none", None],
        [_uuid(5), "p-gone", None],  # person.id is events.person_id in this mode
    ]
    db.execute("UPDATE persons SET properties = ? WHERE id = 'p-acme'", (dump_properties({"org": "acme-2"}),))
    assert col(db, "SELECT person.properties.org FROM events WHERE uuid = {u}", {"u": _uuid(1)}) == ["acme"]
    # an event ingested now is stamped with the Person as it is now
    _add_event(db, 6, "later", "2024-03-04 00:00:00.000000", "2024-03-04 00:00:00.000000", "p-acme", {})
    assert col(db, "SELECT person.properties.org FROM events WHERE uuid = {u}", {"u": _uuid(6)}) == ["acme-2"]
    assert col(db, "SELECT person.properties.org FROM events WHERE uuid = {u}", {"u": _uuid(1)},
               poe_default="person_id_override_properties_joined") == ["acme-2"]


def test_non_ascii_keys_are_found_even_when_stored_escaped(db):
    db.execute("INSERT INTO persons VALUES ('p-esc', '2024-01-01 00:00:00.000000', ?, 0)",
               ('{"caf\\u00e9": "cr\\u00e8me"}',))
    # PostHog reads the raw JSON text of the value, so an escaped value stays escaped
    assert col(db, "SELECT properties.`café` FROM persons WHERE id = 'p-esc'") == ["cr\\u00e8me"]


# --- NULL semantics (printer: ifNull(equals(..), 0), ifNull(notEquals(..), 1)) ---------------------
def ids(conn, where, values=None):
    return col(conn, f"SELECT id FROM persons WHERE {where} ORDER BY id", values)


def test_equals_never_matches_null_and_not_equals_does(db):
    assert ids(db, "properties.org = 'acme'") == ["p-acme"]
    assert ids(db, "properties.org != 'acme'") == ["p-beta", "p-empty", "p-none", "p-null"]
    assert ids(db, "NOT (properties.org = 'acme')") == ["p-beta", "p-empty", "p-none", "p-null"]
    assert ids(db, "properties.org = ''") == ["p-empty"]  # "" is a value, not NULL


def test_is_null_and_is_not_null_as_written(db):
    assert ids(db, "properties.org IS NULL") == ["p-none", "p-null"]  # missing and JSON null alike
    assert ids(db, "properties.org IS NOT NULL") == ["p-acme", "p-beta", "p-empty"]
    assert ids(db, "isNull(properties.org)") == ["p-none", "p-null"]


def test_placeholder_none_compares_like_a_null_constant(db):
    assert ids(db, "properties.org = {v}", {"v": None}) == ["p-none", "p-null"]
    assert ids(db, "properties.org != {v}", {"v": None}) == ["p-acme", "p-beta", "p-empty"]
    # the same text with a string value compiles differently and still answers right
    assert ids(db, "properties.org = {v}", {"v": "beta"}) == ["p-beta"]


def test_two_nullable_sides_are_equal_when_both_are_null(db):
    assert ids(db, "properties.org = properties.missing") == ["p-none", "p-null"]
    assert ids(db, "properties.org != properties.missing") == ["p-acme", "p-beta", "p-empty"]


def test_ordering_comparisons_on_null_are_false_and_their_negation_true(db):
    assert ids(db, "properties.plan > 'a'") == ["p-acme", "p-beta", "p-empty"]  # 'PRO' < 'a' bytewise
    assert ids(db, "NOT (properties.plan > 'a')") == ["p-none", "p-null"]
    assert ids(db, "not(greater(properties.plan, 'a'))") == ["p-none", "p-null"]


@pytest.mark.parametrize("rule", ["exact", "is_not", "is_set", "is_not_set"])
@pytest.mark.parametrize("key", ["org", "plan", "quote'single", "ünïcödé ключ"])
def test_person_filters_select_what_a_plain_python_rule_selects(db, rule, key):
    value = {"org": "acme", "plan": "pro", "quote'single": "v2", "ünïcödé ключ": "nope"}[key]
    field = "properties.`" + key + "`"
    where, values = {
        "exact": (f"{field} = {{v}}", {"v": value}),
        "is_not": (f"{field} != {{v}}", {"v": value}),
        "is_set": (f"{field} IS NOT NULL", {}),
        "is_not_set": (f"{field} IS NULL", {}),
    }[rule]

    def expected(props):
        v = props.get(key)
        return {"exact": v == value, "is_not": v != value, "is_set": v is not None, "is_not_set": v is None}[rule]

    assert ids(db, where, values) == sorted(p for p, props in PERSONS.items() if expected(props))


def test_like_is_case_sensitive_ilike_is_not_and_not_like_matches_null(db):
    assert ids(db, "properties.plan LIKE 'pr%'") == ["p-acme", "p-empty"]
    assert ids(db, "properties.plan ILIKE 'pr_'") == ["p-acme", "p-empty", "p-none"]
    assert ids(db, "properties.plan NOT LIKE 'pr%'") == ["p-beta", "p-none", "p-null"]
    assert ids(db, "properties.plan LIKE 'pr\\\\%'") == []  # HogQL 'pr\\%': a literal %


# --- placeholders ---------------------------------------------------------------------------------
def test_placeholders_are_constants_of_every_simple_type(db):
    assert ids(db, "properties.plan = {p} AND is_identified = {i}", {"p": "pro", "i": 0}) == ["p-acme", "p-empty"]
    assert ids(db, "is_identified = {b}", {"b": True}) == ["p-beta", "p-none"]
    assert col(db, "SELECT {s}, {n}, {f}, {z}", {"s": "it's", "n": 7, "f": 1.5, "z": None}) == ["it's"]
    assert q(db, "SELECT {s}, {n}, {f}, {z}", {"s": "it's", "n": 7, "f": 1.5, "z": None})["results"] == [
        ["it's", 7, 1.5, None]]


def test_list_placeholders_are_tuples_for_in_and_not_in(db):
    assert col(db, "SELECT uuid FROM events WHERE event IN {e} ORDER BY uuid", {"e": ["signup", "purchase"]}) == [
        _uuid(1), _uuid(4), _uuid(5)]
    assert col(db, "SELECT uuid FROM events WHERE event NOT IN {e} ORDER BY uuid", {"e": ["signup", "purchase"]}) == [
        _uuid(2), _uuid(3)]
    assert col(db, "SELECT uuid FROM events WHERE event IN {e}", {"e": []}) == []
    # NULL in the list matches NULL (ClickHouse runs with transform_null_in = 1)
    assert ids(db, "properties.org IN {v}", {"v": ["beta", None]}) == ["p-beta", "p-none", "p-null"]
    assert ids(db, "properties.org NOT IN {v}", {"v": ["beta"]}) == ["p-acme", "p-empty", "p-none", "p-null"]
    assert ids(db, "properties.org IN ('acme', 'beta')") == ["p-acme", "p-beta"]


def test_uuid_constants_compare_case_insensitively_like_parsed_uuids(db):
    assert col(db, "SELECT event FROM events WHERE uuid = {u}", {"u": _uuid(3).upper()}) == ["$pageview"]
    assert col(db, "SELECT event FROM events WHERE uuid IN {u}", {"u": [_uuid(1).upper()]}) == ["signup"]


def test_a_placeholder_without_a_value_fails_with_posthogs_message(db):
    e = err(db, "SELECT event FROM events WHERE event = {missing}", {"other": 1})
    # HogVMException -> ValidationError(str(e), None): DRF's default code "invalid"
    assert (e.code, e.detail) == ("invalid", "Global variable not found: missing")
    e = err(db, "SELECT event FROM events WHERE event = {missing}")
    assert (e.code, e.detail) == ("invalid", "Global variable not found: missing")


def test_placeholder_and_offset_errors_come_in_posthogs_order(db):
    query = "SELECT event FROM events WHERE event = {missing} LIMIT 1 OFFSET 1"
    assert err(db, query, {"other": 1}).detail == "Global variable not found: missing"  # at parse time
    assert err(db, query).detail == OFFSET_NOT_ALLOWED_MESSAGE  # no values: replaced after validation


def test_filters_placeholder_is_true_on_events_and_refused_on_persons(db):
    assert len(col(db, "SELECT uuid FROM events WHERE {filters}")) == 5
    e = err(db, "SELECT id FROM persons WHERE {filters}")
    assert e.code == "hogql_query_error"
    assert e.detail.startswith("Cannot use 'filters' placeholder in a SELECT clause that does not select from")


# --- keyset paging --------------------------------------------------------------------------------
def _paging_db(n=257):
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    rows = []
    for i in range(n):
        created = f"2024-05-01 00:00:{i // 10:02d}.{(i % 3) * 7:06d}"  # many ties on created_at
        rows.append((str(uuidlib.uuid4()), "e", created, created, "d", "p", "{}"))
    conn.executemany("INSERT INTO events (uuid, event, timestamp, created_at, distinct_id, person_id, properties) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return conn, sorted((r[3], r[0]) for r in rows)


KEYSET = ("SELECT uuid, created_at FROM events WHERE created_at >= {a} AND (created_at, uuid) > ({c}, {u}) "
          "ORDER BY created_at, uuid LIMIT {n}")


def test_keyset_paging_on_created_at_uuid_loses_and_repeats_nothing():
    conn, expected = _paging_db()
    page, got = 20, []
    cursor = ("2024-05-01T00:00:00Z", "")
    while True:
        r = q(conn, KEYSET, {"a": "2024-01-01 00:00:00", "c": cursor[0], "u": cursor[1], "n": page + 1})
        assert r["hasMore"] is None and r["limit"] is None
        rows = r["results"][:page]
        got += [row[0] for row in rows]
        if len(r["results"]) <= page:
            break
        cursor = (rows[-1][1], rows[-1][0])  # the ISO text PostHog returned goes back in as a cursor
    assert got == [u for _, u in expected]
    assert len(set(got)) == len(got) == 257


def test_tuple_comparison_is_lexicographic_with_microsecond_precision():
    conn, expected = _paging_db(30)
    created, u = expected[10]
    after = col(conn, "SELECT uuid FROM events WHERE (created_at, uuid) > ({c}, {u}) ORDER BY created_at, uuid",
                {"c": created, "u": u})
    assert after == [x for _, x in expected[11:]]


def test_the_keyset_page_query_uses_the_created_at_index():
    conn, _ = _paging_db(50)
    plan = explain_query_plan(
        conn,
        "SELECT uuid, event, timestamp, created_at, person_id, person.properties.organization_id FROM events "
        "WHERE event IN {events} AND created_at >= {a} AND timestamp >= {b} AND (created_at, uuid) > ({c}, {u}) "
        "ORDER BY created_at, uuid LIMIT 50001",
        {"events": ["e"], "a": "2024-01-01 00:00:00", "b": "2024-01-01 00:00:00", "c": "2024-01-01", "u": ""},
    )
    assert any("USING INDEX events_created" in line for line in plan), plan
    assert not any("TEMP B-TREE" in line for line in plan), plan  # no sort: the index gives the order


# --- limits ---------------------------------------------------------------------------------------
def _many_persons(n):
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    conn.executemany("INSERT INTO persons VALUES (?, '2024-01-01 00:00:00.000000', '{}', 0)",
                     ((f"{i:08d}",) for i in range(n)))
    return conn


def test_no_limit_means_100_rows_and_has_more():
    conn = _many_persons(101)
    r = q(conn, "SELECT id FROM persons ORDER BY id")
    assert (len(r["results"]), r["hasMore"], r["limit"], r["offset"]) == (100, True, 100, 0)
    conn.execute("DELETE FROM persons WHERE id = '00000100'")
    r = q(conn, "SELECT id FROM persons ORDER BY id")
    assert (len(r["results"]), r["hasMore"], r["limit"], r["offset"]) == (100, False, 100, 0)


def test_explicit_limit_is_capped_at_50000_silently():
    conn = _many_persons(50_010)
    t0 = time.perf_counter()
    r = q(conn, "SELECT id FROM persons ORDER BY id LIMIT 50005")
    assert time.perf_counter() - t0 < 5
    assert len(r["results"]) == 50_000
    assert (r["hasMore"], r["limit"], r["offset"]) == (None, None, None)
    assert r["results"][-1] == ["00049999"]
    assert len(q(conn, "SELECT id FROM persons LIMIT 7")["results"]) == 7


def test_offset_is_refused_for_personal_api_keys_and_works_otherwise(db):
    e = err(db, "SELECT id FROM persons ORDER BY id LIMIT 2 OFFSET 1")
    assert (e.code, e.detail) == ("hogql_query_error", OFFSET_NOT_ALLOWED_MESSAGE)
    r = q(db, "SELECT id FROM persons ORDER BY id LIMIT 2 OFFSET 1", personal_api_key=False)
    assert r["results"] == [["p-beta"], ["p-empty"]]


# --- aggregation ----------------------------------------------------------------------------------
def test_count_group_by_having_order(db):
    r = q(db, "SELECT event, count() AS c FROM events GROUP BY event HAVING c > 1 ORDER BY c DESC, event")
    assert r["columns"] == ["event", "c"]
    assert r["types"] == [["event", "String"], ["c", "UInt64"]]
    assert r["results"] == [["$pageview", 2], ["purchase", 2]]
    assert q(db, "SELECT count(), count(DISTINCT person_id), uniq(event), countIf(event = 'purchase') FROM events"
             )["results"] == [[5, 4, 3, 2]]
    assert q(db, "SELECT count() FROM persons WHERE properties.org = {o}", {"o": "acme"})["columns"] == ["count()"]


def test_sum_avg_min_max_over_converted_properties(db):
    r = q(db, "SELECT sum(toFloat(properties.amount)), avg(toFloat(properties.amount)), min(timestamp), "
              "max(toInt(properties.n)) FROM events")
    assert r["results"] == [[10.0, 5.0, "2024-03-01T12:00:00Z", 3]]
    # ClickHouse answers aggregates over no rows with the type's default, not NULL
    assert q(db, "SELECT count(), max(timestamp) FROM events WHERE event = 'nope'")["results"] == [
        [0, "1970-01-01T00:00:00Z"]]


def test_a_column_neither_grouped_nor_aggregated_is_refused_not_guessed(db):
    e = err(db, "SELECT event, uuid, count() FROM events GROUP BY event")
    assert e.code == "not_an_aggregate"
    assert "uuid" in e.detail


def test_distinct(db):
    assert sorted(col(db, "SELECT DISTINCT event FROM events")) == ["$pageview", "purchase", "signup"]


# --- dates ----------------------------------------------------------------------------------------
def test_datetimes_render_like_posthogs_json(db):
    r = q(db, "SELECT timestamp, created_at FROM events ORDER BY created_at, uuid LIMIT 2")
    assert r["types"] == [["timestamp", "DateTime64(6, 'UTC')"], ["created_at", "DateTime64(6, 'UTC')"]]
    assert r["results"] == [["2024-03-01T12:00:00Z", "2024-03-01T12:00:00Z"],
                            ["2024-03-01T12:00:00.000001Z", "2024-03-01T12:00:01Z"]]
    # persons.created_at is DateTime64(3) without a zone in ClickHouse: millis, no "Z"
    r = q(db, "SELECT created_at FROM persons WHERE id IN ('p-acme', 'p-beta') ORDER BY id")
    assert r["types"] == [["created_at", "DateTime64(3)"]]
    assert r["results"] == [["2024-01-01T10:00:00"], ["2024-01-02T10:00:00.123000"]]


@pytest.mark.parametrize("bound", [
    "2024-03-01 12:00:00.000001",
    "2024-03-01T12:00:00.000001Z",
    "2024-03-01T14:00:00.000001+02:00",
    "2024-03-01T12:00:00.000001",
])
def test_datetime_columns_compare_with_strings_in_every_usual_format(db, bound):
    assert col(db, "SELECT uuid FROM events WHERE timestamp >= {b} ORDER BY uuid", {"b": bound}) == [
        _uuid(2), _uuid(3), _uuid(4), _uuid(5)]
    assert col(db, "SELECT uuid FROM events WHERE timestamp > toDateTime({b}) ORDER BY uuid", {"b": bound}) == [
        _uuid(3), _uuid(4), _uuid(5)]


def test_microseconds_are_kept_in_comparisons(db):
    assert col(db, "SELECT uuid FROM events WHERE timestamp = '2024-03-01 12:00:00.000002'") == [_uuid(3)]
    assert col(db, "SELECT uuid FROM events WHERE timestamp < '2024-03-01T12:00:00.000001Z'") == [_uuid(1)]


def test_date_functions(db):
    r = q(db, "SELECT toUnixTimestamp64Milli(timestamp), toStartOfDay(timestamp), toDate(timestamp), "
              "toString(timestamp) FROM events WHERE uuid = {u}", {"u": _uuid(4)})
    assert r["results"] == [[1709337600500, "2024-03-02T00:00:00Z", "2024-03-02", "2024-03-02 00:00:00.500000"]]
    assert r["types"][1] == ["toStartOfDay(timestamp)", "DateTime('UTC')"]
    assert col(db, "SELECT dateDiff('day', toDateTime('2024-03-01 23:59:59'), timestamp) FROM events "
                   "WHERE uuid = {u}", {"u": _uuid(5)}) == [2]


def test_now_minus_interval_and_today(db):
    recent = "2999-01-01 00:00:00.000000"
    _add_event(db, 9, "future", recent, recent, "p-acme", {})
    assert col(db, "SELECT event FROM events WHERE timestamp > now() - INTERVAL 30 DAY") == ["future"]
    assert col(db, "SELECT event FROM events WHERE timestamp > today()") == ["future"]
    assert col(db, "SELECT count() FROM events WHERE timestamp < now() - INTERVAL 1 YEAR") == [5]


def test_an_unparsable_datetime_string_is_a_400(db):
    e = err(db, "SELECT uuid FROM events WHERE timestamp > {b}", {"b": "yesterday-ish"})
    assert e.code == "cannot_parse_datetime"


# --- scalar functions -----------------------------------------------------------------------------
def test_string_and_null_functions(db):
    r = q(db, "SELECT lower(properties.plan), upper(properties.org), length(properties.`ünïcödé ключ`), "
              "coalesce(properties.missing, properties.org, 'x'), ifNull(properties.missing, '-'), "
              "toString(properties.age), isNotNull(properties.vip), concat(properties.org, '/', properties.plan) "
              "FROM persons WHERE id = 'p-acme'")
    assert r["results"] == [["pro", "ACME", len("v7"), "acme", "-", "30", 1, "acme/pro"]]
    assert col(db, "SELECT toInt(properties.age) + 1 FROM persons WHERE id IN ('p-acme', 'p-beta') ORDER BY id") == [
        31, 32]


def test_columns_are_named_like_posthog_names_them(db):
    r = q(db, "SELECT uuid, person.properties.org, properties.n AS num, count() FROM events e "
              "WHERE e.event != 'x' GROUP BY uuid, person.properties.org, properties.n LIMIT 1")
    assert r["columns"] == ["uuid", "org", "num", "count()"]
    assert [t for _, t in r["types"]] == ["UUID", "Nullable(String)", "Nullable(String)", "UInt64"]
    assert r["hogql"].startswith("SELECT uuid")


# --- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("query", [
    "SELECT * FROM events",
    "SELECT e.event FROM events e JOIN persons p ON p.id = e.person_id",
    "SELECT event FROM (SELECT event FROM events)",
    "SELECT 1 UNION ALL SELECT 2",
    "SELECT arrayJoin([1, 2])",
    "SELECT row_number() OVER (ORDER BY timestamp) FROM events",
    "SELECT quantile(0.5)(toFloat(properties.n)) FROM events",
    "SELECT elements_chain FROM events",
    "SELECT count() FROM sessions",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "SELECT event FROM events WHERE properties.n = 1",
])
def test_unsupported_constructs_are_a_clear_400_not_a_wrong_answer(db, query):
    e = err(db, query)
    assert e.code == "hogql_query_error"
    assert e.detail.endswith("is not supported by the cs-posthog sandbox"), e.detail


def test_unknown_tables_and_fields_get_posthogs_messages(db):
    assert err(db, "SELECT 1 FROM nowhere").detail == 'Unknown table "nowhere".'
    e = err(db, "SELECT nope FROM events")
    assert (e.code, e.detail) == ("hogql_query_error", "Unable to resolve field: nope")
    assert err(db, "SELECT events.event FROM events e").detail == "Unable to resolve field: events"


# --- concurrency and caching ----------------------------------------------------------------------
def test_several_threads_with_their_own_connections(tmp_path):
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    create_schema(conn)
    for i in range(200):
        _add_event(conn, i, f"e{i % 4}", "2024-01-01 00:00:00.000000", "2024-01-01 00:00:00.000000", "p", {"i": i})
    conn.commit()
    conn.close()
    failures: list = []

    def worker(k: int) -> None:
        c = sqlite3.connect(path)
        try:
            for _ in range(20):
                got = c.execute("SELECT 1").fetchone() and execute(
                    c, "SELECT count() FROM events WHERE event = {e}", {"e": f"e{k % 4}"})["results"]
                if got != [[50]]:
                    failures.append(got)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
