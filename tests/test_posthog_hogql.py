"""HogQL builders: nasty property names and values, checked with PostHog's parser and, over real
HTTP, against a plain-Python evaluation of the same rules over the sandbox's persons dump."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from cs_posthog.config import Operator, PersonFilter
from cs_posthog.timeutil import parse_datetime
from cs_posthog.posthog.hogql import (
    compile_filters,
    count_persons,
    count_persons_query,
    event_volumes,
    event_volumes_query,
    persons_page_query,
    preview_persons,
    preview_persons_query,
    property_ref,
    quote_identifier,
    raw_id,
    raw_value,
)
from posthog_testlib import chains, raw_refs
from cs_posthog.sandbox.hogql import parse
from cs_posthog.sandbox.runner import get_jsonl, post_json

pytest_plugins = ["conftest_posthog"]

NASTY_NAMES = [
    "plan",
    "it's",
    'say "hi"',
    "back`tick",
    "``",
    "back\\slash",
    "ends with \\",
    "\\`",
    "{x}",
    "{f0}",
    "}{",
    "{{f1}}",
    "line\nbreak",
    "tab\tand\rcr",
    "bell\a",
    "-- comment",
    "/* not a comment */",
    "ünïcödé 名前 🎉",
    "$set_once",
    "$",
    "null",
    "NULL",
    "nan",
    "try",
    "a.b",
    " spaced ",
    "semi;colon",
    "'; DROP TABLE persons; --",
]
NASTY_VALUES = [
    "pro",
    "it's",
    'say "hi"',
    "back\\slash",
    "\\",
    "{x}",
    "{f0}",
    "line\nbreak",
    "-- x",
    "/* x */",
    "ünï 名 🎉",
    "$x",
    "",
    "null",
    "30",
    "true",
    "a`b",
    "'; DROP TABLE persons; --",
]
STORED_EXTRA = [None, 30, True, 1.5, {"nested": 'o"bj'}]  # JSON null, numbers, a boolean, an object


def read(props: dict, name: str):
    """What a person's property is, as plain Python sees it: a string, the JSON text of a number or
    boolean, an object (never equal to typed text), or None when missing or null."""
    if name not in props or props[name] is None:
        return None
    v = props[name]
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, int, float)):
        return json.dumps(v)
    return v  # object


def holds(f: dict, props: dict) -> bool:
    """cs-posthog's rules: a string equals the typed text; a number or boolean equals the text it is
    written as; objects and arrays equal nothing; missing and null are not set."""
    value = read(props, f["property"])
    op = f["operator"]
    if op == "is_set":
        return value is not None
    if op == "is_not_set":
        return value is None
    equal = isinstance(value, str) and value == f["value"]
    return equal if op == "equals" else not equal



@pytest.fixture(scope="module")
def persons(ph_sandbox):
    """150 more persons whose properties take the nasty names, values, nulls and non-strings."""
    rng = random.Random(42)
    rows = []
    for i in range(150):
        props = {}
        for name in NASTY_NAMES:
            if rng.random() < 0.6:
                props[name] = rng.choice(NASTY_VALUES + STORED_EXTRA)
        rows.append({"properties": props, "distinct_ids": [f"nasty-{i}"],
                     "created_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"})
    post_json(ph_sandbox.posthog_url + "/_sandbox/persons", rows)
    return get_jsonl(ph_sandbox.posthog_url + "/_sandbox/dump/persons")


def cases() -> list[list[dict]]:
    rng = random.Random(7)
    out = []
    for name in NASTY_NAMES:
        for value in rng.sample(NASTY_VALUES, 3):
            out.append([{"property": name, "operator": "equals", "value": value}])
        out.append([{"property": name, "operator": "not_equals", "value": rng.choice(NASTY_VALUES)}])
        out.append([{"property": name, "operator": "is_set"}])
        out.append([{"property": name, "operator": "is_not_set"}])
    for _ in range(12):  # ANDs of two to four conditions
        combo = []
        for name in rng.sample(NASTY_NAMES, rng.randint(2, 4)):
            op = rng.choice(["equals", "not_equals", "is_set", "is_not_set"])
            f = {"property": name, "operator": op}
            if op in ("equals", "not_equals"):
                f["value"] = rng.choice(NASTY_VALUES)
            combo.append(f)
        out.append(combo)
    return out


# --- pure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NASTY_NAMES)
@pytest.mark.parametrize("prefix", ["properties", "person.properties"])
def test_property_ref_parses_to_exactly_that_name(name, prefix):
    ref = property_ref(name, table_prefix=prefix)
    ast = parse(f"SELECT {ref} FROM events WHERE {ref} IS NOT NULL AND {ref} = {{v}}")
    assert chains(ast["select"]) == [prefix.split(".") + [name]]
    assert chains(ast["where"]) == [prefix.split(".") + [name]] * 2
    assert "\n" not in ref and "\r" not in ref  # control characters are escaped, not spliced


def test_quoting_follows_posthogs_escaping():
    # posthog/hogql/escape_sql.py: backslash escapes, backtick doubled; always quoted here
    assert quote_identifier("plan") == "`plan`"
    assert quote_identifier("back`tick") == "`back``tick`"
    assert quote_identifier("a\\b\nc\td") == "`a\\\\b\\nc\\td`"
    for bad in ("", None):
        with pytest.raises(ValueError):
            quote_identifier(bad)
    for bad_prefix in ("properties; DROP", "", "properties.`x`"):
        with pytest.raises(ValueError):
            property_ref("x", table_prefix=bad_prefix)


def test_compiled_filters_keep_user_text_in_values():
    where, values = compile_filters([
        PersonFilter(property="plan", operator=Operator.EQUALS, value="{f1}"),
        PersonFilter(property="{f1}", operator=Operator.NOT_EQUALS, value='x" OR 1=1 --'),
        PersonFilter(property="phone", operator=Operator.IS_SET),
        PersonFilter(property="fax", operator=Operator.IS_NOT_SET),
    ])
    assert where == ("(JSONExtractRaw(properties, {k0}) = {f1}) AND (JSONExtractRaw(properties, {k2}) != {f3}) AND "
                     "(JSONExtractRaw(properties, {k4}) NOT IN ('', 'null')) AND "
                     "(JSONExtractRaw(properties, {k5}) IN ('', 'null'))")
    assert values == {"k0": "plan", "f1": '"{f1}"', "k2": "{f1}", "f3": '"x\\" OR 1=1 --"', "k4": "phone", "k5": "fax"}
    assert compile_filters([]) == ("1 = 1", {})
    where, values = compile_filters([{"property": "a", "operator": "equals", "value": "5"}],
                                    prefix="person.properties", values_prefix="p")
    # a number may be stored as the number or as the string
    assert (where, values) == ("JSONExtractRaw(person.properties, {k0}) IN ({p1}, {p2})",
                               {"k0": "a", "p1": '"5"', "p2": "5"})
    with pytest.raises(ValueError):
        compile_filters([], values_prefix="f}")
    with pytest.raises(ValueError):
        compile_filters([{"property": "a", "operator": "equals"}])
    with pytest.raises(ValueError):
        compile_filters([{"property": "a", "operator": "contains", "value": "b"}])


@pytest.mark.parametrize("value", NASTY_VALUES + ["tab\there", "\u2028", "日本"])
def test_raw_strings_read_back_as_stored(value):
    raw = json.dumps(value, ensure_ascii=False)  # what JSONExtractRaw returns for a stored string
    assert raw_value(raw) == value
    assert raw_id(raw) == (value.strip() or None)


def test_raw_ids_are_exact_text():
    assert raw_id("4711") == "4711" and raw_id('"007"') == "007" and raw_id("9007199254740993") == "9007199254740993"
    assert raw_id("-1.5e3") == "-1.5e3" and raw_id('"  org 1 "') == "org 1"
    for none in ("", "null", "true", "false", '""', '"  "', "[1]", '{"a":1}', None, True):
        assert raw_id(none) is None, none
    assert raw_value("") is None and raw_value("null") is None and raw_value("true") is True
    assert raw_value("9007199254740993") == "9007199254740993" and raw_value('{"a":1}') == '{"a":1}'


def test_builders_parse():
    filters = [{"property": "it's", "operator": "equals", "value": "x"}, {"property": "{x}", "operator": "is_set"}]
    sql, values = count_persons_query(filters)
    assert sql.startswith("SELECT count() FROM persons WHERE ") and values == {"k0": "it's", "f1": '"x"', "k2": "{x}"}
    sql, values, labels = preview_persons_query(filters, ["country", "email", "plan", "extra"])
    assert labels == ["id", "email", "it's", "{x}", "country"]  # id, email, the filters', then extras; 5 max
    assert sql.endswith("ORDER BY created_at DESC, id LIMIT 5")
    page, page_values = persons_page_query(filters, ["email"], after="0189-abc")
    assert page.endswith("AND (id > toUUID({after3})) ORDER BY id") and page_values["after3"] == "0189-abc"
    assert persons_page_query([], ["email"]) == ("SELECT id, JSONExtractRaw(properties, {k0}) FROM persons ORDER BY id",
                                                 {"k0": "email"})
    for sql in (count_persons_query(filters)[0], preview_persons_query(filters)[0], page,
                event_volumes_query(30)[0]):
        parse(sql)
    with pytest.raises(ValueError):
        event_volumes_query(0)


# --- against the sandbox -----------------------------------------------------------------------


def test_filters_select_exactly_what_python_selects(ph_client, persons):
    by_id = {p["id"]: p["properties"] for p in persons}
    checked = 0
    nonempty = 0
    for filters in cases():
        where, values = compile_filters(filters)
        sql = f"SELECT id FROM persons WHERE {where} ORDER BY id LIMIT 50000"
        ast = parse(sql)
        names = set(raw_refs(ast["where"], values))
        assert names == {("properties", f["property"]) for f in filters}
        got = {row[0] for row in ph_client.query(sql, values, name="cs-posthog test filters").results}
        expected = {pid for pid, props in by_id.items() if all(holds(f, props) for f in filters)}
        assert got == expected, filters
        checked += 1
        nonempty += bool(expected) and len(expected) < len(by_id)
    assert checked == len(cases()) and nonempty > len(NASTY_NAMES) * 3  # the cases discriminate


def test_a_missing_property_never_equals_and_always_does_not_equal(ph_client, persons):
    name = "never set anywhere"
    assert count_persons(ph_client, [{"property": name, "operator": "equals", "value": ""}]) == 0
    assert count_persons(ph_client, [{"property": name, "operator": "not_equals", "value": "x"}]) == len(persons)
    assert count_persons(ph_client, [{"property": name, "operator": "is_not_set"}]) == len(persons)
    assert count_persons(ph_client, []) == len(persons)


def test_count_persons_with_config_filters(ph_client, persons):
    filters = [PersonFilter(property="it's", operator=Operator.IS_SET),
               PersonFilter(property="plan", operator=Operator.NOT_EQUALS, value="pro")]
    expected = sum(all(holds(f.model_dump(mode="json"), p["properties"]) for f in filters) for p in persons)
    assert 0 < count_persons(ph_client, filters) == expected < len(persons)


def test_preview_shows_the_first_matching_persons_with_stored_values(ph_client, persons):
    filters = [{"property": 'say "hi"', "operator": "is_set"}, {"property": "line\nbreak", "operator": "is_set"}]
    labels, rows = preview_persons(ph_client, filters, extra_columns=("back\\slash", "country"))
    assert labels == ["id", "email", 'say "hi"', "line\nbreak", "back\\slash"]
    matching = [p for p in persons if all(holds(f, p["properties"]) for f in filters)]
    matching.sort(key=lambda p: p["id"])
    matching.sort(key=lambda p: parse_datetime(p["created_at"]), reverse=True)
    assert [r[0] for r in rows] == [p["id"] for p in matching[:5]] and len(rows) == 5
    by_id = {p["id"]: p["properties"] for p in persons}
    for row in rows:
        props = by_id[row[0]]
        expected = [read(props, n) for n in labels[1:]]
        expected = [json.dumps(v, ensure_ascii=False, separators=(",", ":")) if isinstance(v, dict) else v
                    for v in expected]
        assert row[1:] == expected


def test_event_property_of_the_person_with_a_nasty_name(ph_client, ph_env, persons):
    """``person.properties`` on events, for the sync: events whose Person (as it is now: the joined
    persons-on-events mode) has "it's" set."""
    from cs_posthog.posthog.hogql import RAW_UNSET, Params, raw_ref
    from cs_posthog.sync.queries import EVENTS_MODIFIERS

    events = get_jsonl(ph_env.posthog_url + "/_sandbox/dump/events")
    props = {p["id"]: p["properties"] for p in persons}
    p = Params()
    ref = raw_ref("it's", p, "person.properties")
    res = ph_client.query(f"SELECT count() FROM events WHERE {ref} NOT IN {RAW_UNSET}", p.values, name="t",
                          modifiers=EVENTS_MODIFIERS)
    expected = sum(read(props.get(e["person_id"], {}), "it's") is not None for e in events)
    assert res.results[0][0] == expected > 0


def test_event_volumes_count_each_event_of_the_last_30_days(ph_client, ph_env):
    events = get_jsonl(ph_env.posthog_url + "/_sandbox/dump/events")
    start = datetime.now(UTC)
    volumes = event_volumes(ph_client, 30)
    end = datetime.now(UTC)

    def counts(since: datetime) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in events:
            if parse_datetime(e["timestamp"]) >= since:
                out[e["event"]] = out.get(e["event"], 0) + 1
        return out

    low, high = counts(end - timedelta(days=30)), counts(start - timedelta(days=30))
    assert set(volumes) == set(high) and len(volumes) >= 20
    for name, n in volumes.items():
        assert low.get(name, 0) <= n <= high[name], name
    assert list(volumes.values()) == sorted(volumes.values(), reverse=True)
    assert sum(volumes.values()) < len(events)  # the 60 days of data are cut at 30
