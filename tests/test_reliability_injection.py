"""Reliability suite, injection: hypothesis-generated Person filters whose property names and values
hold quotes ' " `, backslashes, braces, ``{x}`` placeholders, newlines, ``--`` and ``/*`` comment
markers and unicode. Every query the builders make (the compiled filters, the count, the preview,
the persons page and the sync's events and persons pages) must parse with PostHog's parser to
exactly the intended property names, and select exactly the persons a plain-Python evaluation of
PostHog's rules selects. In process: the sandbox's HogQL engine over an in-memory SQLite.

The plain-Python rules (PostHog's, written out from its printer; see ``cs_posthog.posthog.hogql``'s
docstring and ``sync_expected.matches``): a property reads as its stored JSON text without the
outer quotes (``replaceRegexpAll(JSONExtractRaw(...), '^"|"$', '')``), a missing key or a JSON null
reads NULL. "equals v" holds when the property reads exactly as a property holding the string v
would; it never holds for NULL. "does not equal" is its negation, so NULL always "does not equal".
"is set" is not NULL. Several filters are ANDed.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from cs_posthog.posthog.hogql import (
    compile_filters,
    count_persons_query,
    persons_page_query,
    preview_persons_query,
    raw_value,
)
from posthog_testlib import chains, raw_refs
from cs_posthog.sandbox.hogql import _parsed, create_schema, dump_properties, execute, parse
from cs_posthog.sync.queries import CustomerSource, EventsWindow, events_page, persons_page

SCALE = max(1, int(os.environ.get("RELIABILITY_SCALE", "1")))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- strategies --------------------------------------------------------------------------------
PIECES = ["'", '"', "`", "``", "\\", "\\\\", "{", "}", "{x}", "{f0}", "{after_id}", "{{f1}}", "\n", "\r", "\t",
          "--", "/*", "*/", "#", ";", " ", "$", ".", "null", "NULL", "try", "ünï", "名前", "🎉", "\u2028", "\x00",
          "\x1b", "\\u0041", "%s", "?", ":name", "@x", "properties", "`a`.`b`", "' OR 1=1 --", "\"; DROP TABLE x"]
# NUL: in values (JSON carries it), not in names (HogQL cannot name it: see the test at the end)
NAME_PIECES = [p for p in PIECES if p != "\x00"]


def nasty_text(pieces: list[str], min_size: int) -> st.SearchStrategy[str]:
    # any character PostHog's JSON can hold (no lone surrogates); NUL only where pieces allow it
    chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="" if "\x00" in pieces else "\x00")
    piece = st.one_of(st.sampled_from(pieces), st.text(chars, max_size=3))
    return st.lists(piece, min_size=min_size, max_size=5).map("".join).filter(lambda s: len(s) >= min_size)


names = nasty_text(NAME_PIECES, 1)
values = nasty_text(PIECES, 0)
OPERATORS = ("equals", "not_equals", "is_set", "is_not_set")


@st.composite
def scenario(draw):
    """(persons' properties, filters, extra columns): names and values drawn from small pools so
    that filters hit stored properties, plus numbers, booleans, nulls and nested values."""
    pool_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    pool_values = draw(st.lists(values, min_size=1, max_size=4))
    stored = st.one_of(
        st.sampled_from(pool_values),
        st.sampled_from(pool_values),
        st.none(),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.booleans(),
        st.lists(st.one_of(st.integers(0, 9), st.sampled_from(pool_values)), max_size=2),
        st.dictionaries(st.sampled_from(pool_names), st.sampled_from(pool_values), max_size=1),
    )
    persons = []
    for _ in range(draw(st.integers(1, 10))):
        props = {}
        for name in pool_names:
            if draw(st.integers(0, 3)):
                props[name] = draw(stored)
        persons.append(props)
    filt = []
    for _ in range(draw(st.sampled_from([1, 1, 2, 2, 3, 4]))):
        op = draw(st.sampled_from(OPERATORS))
        known = st.sampled_from(pool_names)
        f = {"property": draw(st.one_of(known, known, known, names)), "operator": op}
        if op in ("equals", "not_equals"):
            stored_text = st.sampled_from(pool_values)
            f["value"] = draw(st.one_of(stored_text, stored_text, stored_text, values,
                                        st.sampled_from(["30", "true", "false", "1.5", "[1,2]", "null", ""])))
        filt.append(f)
    columns = draw(st.lists(st.one_of(st.sampled_from(pool_names), names), max_size=3))
    return persons, filt, columns


# --- the independent evaluation -----------------------------------------------------------------
def reads(stored):
    """What PostHog's untyped ``properties.x`` returns for a stored JSON value (None for missing/null)."""
    if stored is None:
        return None
    raw = json.dumps(stored, ensure_ascii=False, separators=(",", ":"))
    return re.sub(r'^"|"$', "", raw)


def holds(f: dict, props: dict) -> bool:
    """cs-posthog's filter rules, on the stored value: set = present and not null; equals = the stored
    string is the typed text, or the stored number/boolean is written exactly as the typed text;
    arrays and objects equal nothing."""
    v = props.get(f["property"])
    op = f["operator"]
    if op == "is_set":
        return v is not None
    if op == "is_not_set":
        return v is None
    if isinstance(v, str):
        equal = v == f["value"]
    elif isinstance(v, (bool, int, float)):
        equal = json.dumps(v) == f["value"]
    else:
        equal = False
    return equal if op == "equals" else not equal



def placeholders(ast) -> set[str]:
    out = set()
    if isinstance(ast, dict):
        if ast.get("node") == "Placeholder":
            out.add(ast["expr"]["chain"][0])
        for v in ast.values():
            out |= placeholders(v)
    elif isinstance(ast, list):
        for v in ast:
            out |= placeholders(v)
    return out


# --- the database -------------------------------------------------------------------------------
def database(persons: list[dict]) -> tuple[sqlite3.Connection, list[dict]]:
    """Persons with ids and created_at (newest first differs from id order), one event each."""
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    rows = []
    for i, props in enumerate(persons):
        pid = str(uuid.UUID(int=(i * 7919) % 1000 + 1))
        created = f"2026-01-01 00:00:{(i * 37) % 60:02d}.000000"
        rows.append({"id": pid, "created_at": created, "properties": props, "uuid": str(uuid.UUID(int=10**6 + i))})
        conn.execute("INSERT INTO persons(id, created_at, properties, is_identified) VALUES (?, ?, ?, 1)",
                     (pid, created, dump_properties(props)))
        conn.execute("INSERT INTO person_distinct_ids(distinct_id, person_id) VALUES (?, ?)", (f"d{i}", pid))
        conn.execute(
            "INSERT INTO events(uuid, event, timestamp, created_at, distinct_id, person_id, properties) "
            "VALUES (?, 'e', '2026-01-02 00:00:00.000000', ?, ?, ?, '{}')",
            (rows[-1]["uuid"], f"2026-01-02 00:00:{i:02d}.000000", f"d{i}", pid),
        )
    conn.commit()
    return conn, rows


def run(conn, sql: str, vals: dict) -> list[list]:
    return execute(conn, sql, vals)["results"]


def assert_names(sql: str, vals: dict, expected: set[tuple]) -> dict:
    """The query parses; the properties it reads (``JSONExtractRaw`` with the name as a value) are
    exactly ``expected``; no property is spliced into the text as an identifier; its placeholders
    are exactly the values given (no user text became a placeholder). The AST is PostHog's parser's,
    from the engine's cache: the very tree ``run`` executes next, and each text parsed once (the
    parser is most of this file's time)."""
    ast = _parsed(sql)[0]
    got = set(raw_refs(ast, vals))
    assert got == expected, (sql, got, expected)
    assert not [c for c in chains(ast) if c[0] in ("properties", "person") and len(c) > 1 + (c[0] == "person")], sql
    assert placeholders(ast) == set(vals), (sql, vals)
    return ast


# --- the test -----------------------------------------------------------------------------------
NASTY_EXAMPLE = (
    [{"it's": "a\"b", "{f0}": "{f1}", "x\n--": None}, {"it's": 30, "{f0}": "\\"}, {"`": ["q\"", 1]}],
    [{"property": "it's", "operator": "not_equals", "value": "a\"b"},
     {"property": "{f0}", "operator": "is_set"},
     {"property": "x\n--", "operator": "is_not_set"}],
    ["`", "/* c */"],
)


@pytest.mark.slow
@settings(max_examples=120 * SCALE, **SETTINGS)
@given(case=scenario())
@example(case=NASTY_EXAMPLE)
@example(case=([{"n": 30}, {"n": "30"}, {"n": True}, {"n": "true"}, {"n": [1, 2]}, {"n": ""}, {"n": None}, {}],
               [{"property": "n", "operator": "equals", "value": v} for v in ["30"]], []))
def test_every_builder_parses_and_selects_what_python_selects(case):
    persons, filters, columns = case
    conn, rows = database(persons)
    expected = {r["id"] for r in rows if all(holds(f, r["properties"]) for f in filters)}
    event("matches: " + ("none" if not expected else "all" if len(expected) == len(rows) else "some"))
    props = {("properties", f["property"]) for f in filters}

    # the bare condition
    where, vals = compile_filters(filters)
    sql = f"SELECT id FROM persons WHERE {where} ORDER BY id LIMIT 50000"
    assert_names(sql, vals, props)
    assert {r[0] for r in run(conn, sql, vals)} == expected, (filters, persons)

    # the count
    sql, vals = count_persons_query(filters)
    assert_names(sql, vals, props)
    assert run(conn, sql, vals) == [[len(expected)]]

    # the preview: newest first, then id; the columns read back as stored
    sql, vals, labels = preview_persons_query(filters, columns)
    assert_names(sql, vals, props | {("properties", c) for c in labels[1:]})
    want = sorted((r for r in rows if r["id"] in expected), key=lambda r: r["id"])
    want.sort(key=lambda r: r["created_at"], reverse=True)
    got = run(conn, sql, vals)
    assert [g[0] for g in got] == [r["id"] for r in want[:5]]
    for g, r in zip(got, want):
        for label, raw in zip(labels[1:], g[1:]):
            stored = r["properties"].get(label)
            if isinstance(stored, (str, bool)) or stored is None:
                assert raw_value(raw) == stored, (label, raw, stored)
            else:
                assert raw == json.dumps(stored, ensure_ascii=False, separators=(",", ":")), (label, raw, stored)

    # the persons page after a cursor (keyset on id), as the sync asks for it
    after = sorted(r["id"] for r in rows)[len(rows) // 2]
    sql, vals = persons_page_query(filters, columns, after=after)
    sql += " LIMIT 1000"
    assert_names(sql, vals, props | {("properties", c) for c in columns})
    assert [g[0] for g in run(conn, sql, vals)] == sorted(i for i in expected if i > after)

    # the sync's own pages: persons (locked customer condition first) and events by person property
    customer = filters[0]["property"]
    contact = columns[0] if columns else None
    sync_filters = [{"property": customer, "operator": "is_set"}, *filters]
    sql, vals = persons_page(sync_filters, customer_property=customer, contact_property=contact, after_id=None)
    sql += " LIMIT 1000"
    want_ids = sorted(r["id"] for r in rows if r["properties"].get(customer) not in (None, ""))
    assert_names(sql, vals, props | {("properties", n) for n in [customer, "email", "name"] + ([contact] if contact else [])})
    got = run(conn, sql, vals)
    assert [g[0] for g in got] == want_ids  # every Person who may hold a customer id
    if filters[1:]:  # the last column: whether the Person matches the filters
        assert {g[0] for g in got if g[-1]} == {i for i in want_ids if i in expected}

    window = EventsWindow(events=("e",), timestamp_from="2025-01-01T00:00:00Z", created_from="2025-01-01T00:00:00Z")
    sql, vals = events_page(window, customer=CustomerSource(person_property=customer), contact_property=contact)
    sql += " LIMIT 1000"
    assert_names(sql, vals, {("person", "properties", n) for n in [customer, "email"] + ([contact] if contact else [])})
    got = run(conn, sql, vals)
    by_uuid = {r["uuid"]: r for r in rows}
    assert {g[0] for g in got} == {r["uuid"] for r in rows if r["properties"].get(customer) not in (None, "")}
    for g in got:
        stored = by_uuid[g[0]]["properties"].get(customer)
        assert g[5] == json.dumps(stored, ensure_ascii=False, separators=(",", ":"))  # the raw JSON text
    conn.close()


def test_the_evaluation_is_not_trivially_satisfied():
    """The rules above distinguish what they should (a broken rule would change these answers)."""
    assert reads("a\"b") == 'a\\"b' and reads(30) == "30" and reads(True) == "true" and reads("") == ""
    assert reads([1, 2]) == "[1,2]" and reads('"x') == '\\"x' and reads(None) is None
    assert holds({"property": "p", "operator": "equals", "value": "30"}, {"p": 30})
    assert holds({"property": "p", "operator": "equals", "value": "true"}, {"p": True})
    assert not holds({"property": "p", "operator": "equals", "value": "30.0"}, {"p": 30})
    assert not holds({"property": "p", "operator": "equals", "value": "[1,2]"}, {"p": [1, 2]})
    assert not holds({"property": "p", "operator": "equals", "value": "x"}, {})
    assert holds({"property": "p", "operator": "not_equals", "value": "x"}, {"p": None})
    assert not holds({"property": "p", "operator": "equals", "value": '["a"]'}, {"p": ["a"]})  # PostHog's reading
    assert holds({"property": "p", "operator": "is_set"}, {"p": ""})


def test_a_name_with_nul_is_refused_not_misread():
    """PostHog escapes NUL in an identifier as \\0 and its parser drops it, so the query would read
    another property (`a\\0b` is `ab`). The builders refuse such a name; the config does too."""
    import pytest

    from cs_posthog.config import Identification, PersonFilter, PersonsSettings
    from cs_posthog.posthog.hogql import property_ref

    assert parse("SELECT properties.`a\\0b` FROM persons")["select"][0]["chain"] == ["properties", "ab"]
    with pytest.raises(ValueError):
        property_ref("a\x00b")
    with pytest.raises(ValueError):
        compile_filters([{"property": "a\x00b", "operator": "is_set"}])
    for make in (lambda: PersonFilter(property="a\x00b", operator="is_set"),
                 lambda: Identification(property="org\x00"), lambda: PersonsSettings(contact_id="\x00")):
        with pytest.raises(ValueError, match="NUL"):
            make()
