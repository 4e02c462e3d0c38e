"""HogQL builders: property references, Person filters, the wizard's counts and previews.

No httpx, no pydantic at import time: pure string building (the helpers at the end take a client).

User text never reaches the query text: values and property names travel in ``values``
(``{name}`` placeholders, which PostHog turns into constants before it resolves the query). Where a
name must be an identifier (``property_ref``, kept for callers that want PostHog's typed reading) it
is always backtick-quoted.

Why ``property_ref`` always backtick-quotes
-------------------------------------------
PostHog's own ``escape_hogql_identifier`` (posthog/hogql/escape_sql.py) leaves names matching
``^[A-Za-z_$][A-Za-z0-9_$]*$`` bare and backtick-quotes the rest, escaping ``\\b \\f \\r \\n \\t \\0
\\a \\v`` and backslash with a backslash and a backtick by doubling it ("The HogQL/ClickHouse parsers
only accept a doubled backtick inside a quoted identifier, not a backslash-escaped one"; hogql-parser
1.3.88 indeed refuses ``\\```). Bare names are not always safe, though: PostHog's parser refuses
``properties.null``, ``.nan``, ``.inf``, ``.infinity``, ``.try``, ``.catch``, ``.fn``, ``.let``,
``.while``, ``.except``, ``.intersect``... (keywords of the Hog language; the list grows with the
grammar). A backtick-quoted name is always one identifier token, whatever it contains (quotes,
braces and ``{x}``, which is not a placeholder inside backticks, ``--`` and ``/*``, newlines,
unicode, ``$``), so every name is quoted. The other safe form, ``properties[{p0}]`` with the name as
a value, needs the values dict threaded through every column list; quoting keeps ``property_ref`` a
pure ``str -> str`` function. The test suite checks both parse and selection for a table of nasty
names with PostHog's parser.

How the sync and the wizard read a property: the raw JSON text
---------------------------------------------------------------
``properties.x`` is not what was stored. PostHog wraps a property with a typed definition before it
reaches ClickHouse (``posthog/hogql/transforms/property_types.py``, ``PropertySwapper``): a ``Numeric``
one is read through ``toFloat`` (``"007"`` -> 7.0, 2^53+1 rounded, non-numeric text -> NULL, and a
comparison with a non-numeric string constant such as ``!= ''`` fails the whole query), a ``Boolean``
one through ``toBool``, a ``DateTime`` one through ``toDateTime``; materialized properties read ``""``
and ``"null"`` as NULL (``nullIf(nullIf(col, ''), 'null')``). PostHog sets a definition's type from
the first values it sees, so a customer id sent as ``company_id: 4711`` is ``Numeric``.

So every read and every condition here goes through ``JSONExtractRaw(<json column>, {key})``, the
raw JSON text of the value, which no type or materialization touches: ``4711`` for a number,
``"007"`` (quotes included) for a string, ``true``, ``null`` for a JSON null, and ``''`` when the key
is missing. The property name travels as a ``values`` placeholder (``{k0}``): no quoting at all.
``raw_id`` turns that text into an external id exactly (``4711`` stays ``4711``, ``"007"`` stays
``007``, 9007199254740993 keeps every digit; ``true``, ``null``, objects and arrays are no id), and
``raw_value`` into a Python value for display.

Conditions (PostHog's property filter semantics, on the raw text):

* is set: ``JSONExtractRaw(...) NOT IN ('', 'null')`` (present and not JSON null; ``""`` is set);
* is not set: ``JSONExtractRaw(...) IN ('', 'null')``;
* equals ``v``: the raw text is ``v`` as a JSON string (``"v"``), or, when ``v`` is itself a JSON
  number or ``true``/``false``, ``v`` as that literal: ``plan_seats = 5`` matches the number 5 and the
  string "5", as PostHog's untyped comparison does, and works on a Numeric property where
  ``properties.plan_seats = '5'`` would be cast; ``is_paying = true`` matches the boolean;
* does not equal: the negation (a missing property "does not equal" any value).

Values are compared as the text they are stored as: ``5`` does not equal a stored ``5.0``.
Several filters are ANDed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cs_posthog.posthog.client import PostHogClient

# posthog/hogql/escape_sql.py: escape_chars_map, with the backtick doubled (backquote_escape_chars_map)
_IDENT_ESCAPES = {
    "\b": "\\b",
    "\f": "\\f",
    "\r": "\\r",
    "\n": "\\n",
    "\t": "\\t",
    "\0": "\\0",
    "\a": "\\a",
    "\v": "\\v",
    "\\": "\\\\",
    "`": "``",
}
_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PLACEHOLDER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TRUE_CONDITION = "1 = 1"
# PostHog's persons-on-events mode that reads the current Person on the events table
# (posthog/schema.py PersonsOnEventsMode; posthog/hogql/database/schema/events.py): with it,
# ``person.properties`` in an events query is the Person as it is now, not as stamped at ingestion.
JOINED_PERSONS_MODIFIERS: dict[str, Any] = {"personsOnEventsMode": "person_id_override_properties_joined"}
PREVIEW_COLUMNS = 5
PREVIEW_ROWS = 5
MAX_EVENT_NAMES = 50_000


def quote_identifier(name: str) -> str:
    """A HogQL backtick-quoted identifier for any text but NUL (PostHog's escaping, always quoted).

    PostHog escapes NUL as ``\\0``, and its parser drops it: ```a\\0b``` names ``ab``, another
    property. A name with NUL cannot be written in HogQL, so it is refused rather than misread."""
    if not isinstance(name, str) or name == "":
        raise ValueError("a property name must be a non-empty string")
    if "\0" in name:
        raise ValueError(f"a property name with a NUL character cannot be queried: {name!r}")
    return "`" + "".join(_IDENT_ESCAPES.get(c, c) for c in name) + "`"


def property_ref(name: str, table_prefix: str = "properties") -> str:
    """A HogQL expression reading property ``name`` of ``table_prefix`` (``properties`` on persons,
    ``person.properties`` or ``properties`` on events), safe for any name."""
    if not _PREFIX_RE.match(table_prefix):
        raise ValueError(f"not a table prefix: {table_prefix!r}")
    return f"{table_prefix}.{quote_identifier(name)}"


class Params:
    """``values`` for one query, with a placeholder per distinct value of each kind: ``add("k",
    "plan")`` returns ``{k0}`` and the same text again for the same name."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = dict(values or {})
        self._seen: dict[tuple[str, str], str] = {}

    def add(self, stem: str, value: Any, *, reuse: bool = True) -> str:
        if not _PLACEHOLDER_RE.match(stem):
            raise ValueError(f"not a placeholder prefix: {stem!r}")
        key = (stem, json.dumps(value, sort_keys=True, default=str))
        if reuse and key in self._seen:
            return self._seen[key]
        i = len(self.values)
        while f"{stem}{i}" in self.values:
            i += 1
        name = f"{stem}{i}"
        self.values[name] = value
        ref = "{" + name + "}"
        self._seen[key] = ref
        return ref


def raw_ref(name: str, params: Params, source: str = "properties") -> str:
    """``JSONExtractRaw(source, {kN})``: the raw JSON text of property ``name`` of ``source``
    (``properties`` on persons, ``person.properties`` or ``properties`` on events); ``''`` when it is
    missing. The name is a ``values`` placeholder, checked as ``quote_identifier`` checks it."""
    quote_identifier(name)  # the same names are refused (NUL, empty) everywhere
    if not _PREFIX_RE.match(source):
        raise ValueError(f"not a table prefix: {source!r}")
    return f"JSONExtractRaw({source}, {params.add('k', name)})"


# The raw text of a property with no usable value: missing (''), JSON null, and (for ids) "".
RAW_UNSET = "('', 'null')"
RAW_NO_ID = "('', 'null', '\"\"')"



def has_id(name: str, params: Params, source: str = "properties") -> str:
    """The condition "property ``name`` may hold an id": present, not JSON null, not ``""``."""
    return f"{raw_ref(name, params, source)} NOT IN {RAW_NO_ID}"


_JSON_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def raw_forms(value: str) -> list[str]:
    """The raw texts a property equal to the typed ``value`` may have: the JSON string, and the bare
    literal when ``value`` is a JSON number or boolean."""
    forms = [json.dumps(value, ensure_ascii=False)]
    if value in ("true", "false") or _JSON_NUMBER_RE.fullmatch(value):
        forms.append(value)
    return forms


def raw_value(raw: Any) -> Any:
    """What ``JSONExtractRaw`` returned, as a Python value: None for a missing key (``''``) or a JSON
    null; the string for a JSON string; numbers as their exact text (no float rounding); booleans;
    objects and arrays as their JSON text."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        return raw
    c = raw[0]
    if c == '"':
        if "\\" not in raw and raw.endswith('"') and len(raw) > 1:
            return raw[1:-1]
        try:
            v = json.loads(raw)
        except ValueError:
            return raw
        return v if isinstance(v, str) else raw
    if raw == "null":
        return None
    if raw == "true":
        return True
    if raw == "false":
        return False
    return raw  # a number (exact text), an object or an array


def raw_display(raw: Any) -> Any:
    """``raw_value`` for showing: a string as itself, ``true``/``false`` as text, None when unset."""
    v = raw_value(raw)
    return ("true" if v else "false") if isinstance(v, bool) else v


def raw_id(raw: Any) -> str | None:
    """An external id from ``JSONExtractRaw``'s text, exactly: strings trimmed (``"007"`` -> ``007``),
    numbers as written (``4711``, ``9007199254740993``); None for a missing or null value, an empty
    string, booleans, objects and arrays."""
    if raw is None or isinstance(raw, bool):
        return None
    if not isinstance(raw, str):
        return str(raw) if isinstance(raw, int) else None
    if not raw:
        return None
    c = raw[0]
    if c == '"':
        if "\\" not in raw and raw.endswith('"') and len(raw) > 1:
            text = raw[1:-1]
        else:
            try:
                v = json.loads(raw)
            except ValueError:
                return None
            if not isinstance(v, str):
                return None
            text = v
        return text.strip() or None
    if (c == "-" or "0" <= c <= "9") and _JSON_NUMBER_RE.fullmatch(raw):
        return raw
    return None


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


def _parts(f: Any) -> tuple[str, str, str | None]:
    """(property, operator value, value) of a PersonFilter, or of a dict with the same keys."""
    if isinstance(f, dict):
        prop, op, value = f.get("property"), f.get("operator"), f.get("value")
    else:
        prop, op, value = getattr(f, "property", None), getattr(f, "operator", None), getattr(f, "value", None)
    op = getattr(op, "value", op)
    if not isinstance(prop, str) or not prop:
        raise ValueError(f"a filter needs a property name: {f!r}")
    if op not in ("equals", "not_equals", "is_set", "is_not_set"):
        raise ValueError(f"unknown filter operator: {op!r}")
    if op in ("equals", "not_equals"):
        if value is None:
            raise ValueError(f"operator {op!r} needs a value")
        value = str(value)
    return prop, op, value


def compile_filters(
    filters: Iterable[Any], *, prefix: str = "properties", values_prefix: str = "f",
    params: Params | None = None,
) -> tuple[str, dict[str, Any]]:
    """The AND of the filters as a HogQL condition on the raw JSON text (see the module docstring)
    and its ``values``; ``1 = 1`` when empty. Values go to ``params`` when given (so several compiled
    parts share one query), else to a new one; names start with ``values_prefix``."""
    if not _PLACEHOLDER_RE.match(values_prefix):
        raise ValueError(f"not a placeholder prefix: {values_prefix!r}")
    p = params if params is not None else Params()
    conds: list[str] = []
    for f in filters:
        prop, op, value = _parts(f)
        ref = raw_ref(prop, p, prefix)
        if op == "is_set":
            conds.append(f"{ref} NOT IN {RAW_UNSET}")
        elif op == "is_not_set":
            conds.append(f"{ref} IN {RAW_UNSET}")
        else:
            forms = [p.add(values_prefix, form, reuse=False) for form in raw_forms(value or "")]
            neg = op != "equals"
            if len(forms) == 1:
                conds.append(f"{ref} {'!=' if neg else '='} {forms[0]}")
            else:
                conds.append(f"{ref} {'NOT IN' if neg else 'IN'} ({', '.join(forms)})")
    if not conds:
        return TRUE_CONDITION, p.values
    if len(conds) == 1:
        return conds[0], p.values
    return " AND ".join(f"({c})" for c in conds), p.values


def count_persons_query(filters: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    where, values = compile_filters(filters, prefix="properties", values_prefix="f")
    return f"SELECT count() FROM persons WHERE {where}", values


def preview_columns(filters: Sequence[Any], extra_columns: Sequence[str] = (), *,
                    limit: int = PREVIEW_COLUMNS) -> list[str]:
    """The preview's Person properties: email, then the filters' properties, then the extra ones,
    without repeats, so that with ``id`` first the table has at most ``limit`` columns."""
    names: list[str] = []
    for name in ["email", *(_parts(f)[0] for f in filters), *extra_columns]:
        if name and name not in names:
            names.append(name)
    return names[: max(0, limit - 1)]


def preview_persons_query(
    filters: Sequence[Any], columns: Sequence[str] = (), limit: int = PREVIEW_ROWS
) -> tuple[str, dict[str, Any], list[str]]:
    """``(hogql, values, labels)``: the first ``limit`` matching persons (newest first) with ``id``
    and up to 4 properties (raw JSON text): email, the filters' properties, then ``columns``."""
    props = preview_columns(filters, columns)
    p = Params()
    where, _ = compile_filters(filters, params=p)
    cols = ["id", *(raw_ref(name, p) for name in props)]
    sql = (
        f"SELECT {', '.join(cols)} FROM persons WHERE {where} "
        f"ORDER BY created_at DESC, id LIMIT {max(1, int(limit))}"
    )
    return sql, p.values, ["id", *props]


def persons_page_query(
    filters: Iterable[Any], columns: Sequence[str] = (), after: str | None = None,
    *, flag_filters: Sequence[Any] = (), id_property: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Persons matching ``filters`` after ``after`` (a person id) in id order, for keyset paging
    (``PostHogClient.iter_pages`` adds the LIMIT). Columns: ``id``, the raw JSON text of each property
    of ``columns``, then, when ``flag_filters`` are given, 1 or 0: whether the Person matches those too.
    ``id_property``: only Persons whose property may hold an id (``has_id``)."""
    p = Params()
    where, _ = compile_filters(filters, params=p)
    conds = [where] if where != TRUE_CONDITION else []
    if id_property is not None:
        conds.insert(0, has_id(id_property, p))
    if after is not None:
        conds.append(f"id > toUUID({p.add('after', str(after))})")
    cols = ["id", *(raw_ref(c, p) for c in columns)]
    flag_filters = list(flag_filters)
    if flag_filters:
        flag, _ = compile_filters(flag_filters, params=p, values_prefix="g")
        cols.append(f"if({flag}, 1, 0)")
    sql = f"SELECT {', '.join(cols)} FROM persons"
    if conds:
        sql += " WHERE " + " AND ".join(f"({c})" for c in conds)
    return sql + " ORDER BY id", p.values


def event_volumes_query(days: int = 30) -> tuple[str, dict[str, Any]]:
    """One query: how many events of each name in the last ``days`` days, most frequent first."""
    days = int(days)
    if days < 1:
        raise ValueError("days must be 1 or more")
    sql = (
        "SELECT event, count() AS volume FROM events "
        f"WHERE timestamp >= now() - INTERVAL {days} DAY "
        f"GROUP BY event ORDER BY volume DESC, event LIMIT {MAX_EVENT_NAMES}"
    )
    return sql, {}


def count_events_query(events: Sequence[str], filters: Iterable[Any], days: int = 30, *,
                       group: GroupRef | None = None) -> tuple[str, dict[str, Any]]:
    """How many of ``events`` in the last ``days`` days belong to a Person matching ``filters`` (on
    ``person.properties``: run it with ``JOINED_PERSONS_MODIFIERS``, so they are the Person's current
    properties, as the sync reads them). Events, not rows: PostHog may hold one uuid twice.
    ``group``: only the events of a group that names a customer (``group_condition``)."""
    days = _days(days)
    if not events:
        raise ValueError("no events to count")
    p = Params()
    names = [p.add("e", name, reuse=False) for name in events]
    where, _ = compile_filters(filters, prefix="person.properties", params=p)
    sql = (f"SELECT count(DISTINCT uuid) FROM events WHERE event IN ({', '.join(names)}) "
           f"AND timestamp >= now() - INTERVAL {days} DAY AND ({where})")
    if group is not None:
        sql += f" AND {group_condition(group, p)}"
    return sql, p.values


def _days(days: int) -> int:
    days = int(days)
    if days < 1:
        raise ValueError("days must be 1 or more")
    return days


# ---------------------------------------------------------------------------------------------
# Groups (PostHog group analytics: ``$group_N`` on events, the ``groups`` table)
# ---------------------------------------------------------------------------------------------


class GroupRef:
    """A group type as the customer: its index (``$group_N``) and, when the customer id is a group
    property rather than the group key, that property's name."""

    def __init__(self, index: int, prop: str | None = None) -> None:
        if type(index) is not int or not 0 <= index <= 4:
            raise ValueError(f"a group type index is 0 to 4, not {index!r}")
        if prop is not None:
            quote_identifier(prop)  # the same names are refused (NUL, empty) everywhere
        self.index = index
        self.prop = prop

    @property
    def column(self) -> str:
        """The events column holding the group key of this type: ``$group_0``."""
        return f"$group_{self.index}"

    def __repr__(self) -> str:
        return f"GroupRef({self.index}, {self.prop!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupRef) and (self.index, self.prop) == (other.index, other.prop)

    def __hash__(self) -> int:
        return hash((self.index, self.prop))


def group_condition(group: GroupRef, params: Params) -> str:
    """On events: the event carries a group of this type (``$group_N`` not empty) and, when the
    customer id is a group property, that group has it (``group_N.properties``, PostHog's join of
    the event's group)."""
    cond = f"{group.column} != ''"
    if group.prop is not None:
        cond += f" AND {has_id(group.prop, params, f'group_{group.index}.properties')}"
    return cond


def count_groups_query(group: GroupRef) -> tuple[str, dict[str, Any]]:
    """How many groups of the type there are (with the customer-id property, when there is one)."""
    p = Params()
    sql = f"SELECT count() FROM groups WHERE index = {p.add('gi', group.index)}"
    if group.prop is not None:
        sql += f" AND {has_id(group.prop, p)}"
    return sql, p.values


def _group_events_where(group: GroupRef, days: int, events: Sequence[str], filters: Iterable[Any],
                        p: Params) -> list[str]:
    """The events of the last ``days`` days (``events`` only, when given) that carry a group of the
    type naming a customer, of Persons matching ``filters`` on ``person.properties`` (queries with
    them run with ``JOINED_PERSONS_MODIFIERS``)."""
    conds = [f"timestamp >= now() - INTERVAL {_days(days)} DAY", group_condition(group, p)]
    if events:
        conds.append(f"event IN ({', '.join(p.add('e', name, reuse=False) for name in events)})")
    where, _ = compile_filters(filters, prefix="person.properties", params=p)
    if where != TRUE_CONDITION:
        conds.append(f"({where})")
    return conds


def group_coverage_query(group: GroupRef, days: int = 30, events: Sequence[str] = (),
                         filters: Iterable[Any] = ()) -> tuple[str, dict[str, Any]]:
    """Two counts over the last ``days`` days of events (``events`` only, when given) that carry a
    group of the type naming a customer: the distinct groups, and the distinct Persons (matching
    ``filters`` on ``person.properties``: run it with ``JOINED_PERSONS_MODIFIERS``). A Person counted
    belongs to a group: the sync attaches them to the group of their most recent such event."""
    p = Params()
    conds = _group_events_where(group, days, events, filters, p)
    sql = (f"SELECT count(DISTINCT {group.column}), count(DISTINCT person_id) FROM events "
           f"WHERE {' AND '.join(conds)}")
    return sql, p.values


def preview_group_persons_query(group: GroupRef, label: str, events: Sequence[str], filters: Sequence[Any],
                                columns: Sequence[str] = (), days: int = 30,
                                limit: int = PREVIEW_ROWS) -> tuple[str, dict[str, Any], list[str]]:
    """``(hogql, values, labels)``: up to ``limit`` Persons who belong to a group of the type (events of
    ``events`` in the last ``days`` days carrying one) and match ``filters`` on ``person.properties``
    (run it with ``JOINED_PERSONS_MODIFIERS``): ``id``, the key of the group of their most recent such
    event (labelled ``label``), then the properties ``preview_persons_query`` shows."""
    props = preview_columns(filters, columns)
    p = Params()
    conds = _group_events_where(group, days, events, filters, p)
    cols = ["person_id", f"argMax({group.column}, timestamp)",
            *(f"argMax({raw_ref(name, p, 'person.properties')}, timestamp)" for name in props)]
    sql = (f"SELECT {', '.join(cols)} FROM events WHERE {' AND '.join(conds)} "
           f"GROUP BY person_id ORDER BY person_id LIMIT {max(1, int(limit))}")
    return sql, p.values, ["id", label, *props]


def preview_groups_query(group: GroupRef, limit: int = PREVIEW_ROWS) -> tuple[str, dict[str, Any], list[str]]:
    """``(hogql, values, labels)``: the newest ``limit`` groups of the type: key, name, and the
    customer-id property when there is one (raw JSON text)."""
    p = Params()
    props = ["name"] + ([group.prop] if group.prop is not None and group.prop != "name" else [])
    cols = ["key", *(raw_ref(name, p) for name in props)]
    sql = (f"SELECT {', '.join(cols)} FROM groups WHERE index = {p.add('gi', group.index)} "
           f"ORDER BY created_at DESC, key LIMIT {max(1, int(limit))}")
    return sql, p.values, ["key", *props]


def group_indexes_query() -> tuple[str, dict[str, Any]]:
    """How many groups each group type index has (the ``groups`` table, no Group scope needed)."""
    return "SELECT index, count() FROM groups GROUP BY index ORDER BY index", {}


# ---------------------------------------------------------------------------------------------
# With a client
# ---------------------------------------------------------------------------------------------


def count_persons(client: PostHogClient, filters: Iterable[Any]) -> int:
    sql, values = count_persons_query(filters)
    res = client.query(sql, values, name="cs-posthog count persons")
    return int(res.results[0][0]) if res.results and res.results[0] else 0


def preview_persons(
    client: PostHogClient, filters: Sequence[Any], extra_columns: Sequence[str] = ()
) -> tuple[list[str], list[list[Any]]]:
    """``(column labels, rows)`` of up to 5 matching persons; property values as stored (numbers as
    their exact text)."""
    filters = list(filters)
    sql, values, labels = preview_persons_query(filters, extra_columns)
    res = client.query(sql, values, name="cs-posthog preview persons")
    rows = [[row[0], *(raw_display(v) for v in row[1:])] for row in res.results]
    return labels, rows


def preview_group_persons(
    client: PostHogClient, group: GroupRef, label: str, events: Sequence[str], filters: Sequence[Any],
    extra_columns: Sequence[str] = (), days: int = 30,
) -> tuple[list[str], list[list[Any]]]:
    """``preview_persons`` when the customer is a group: Persons who belong to one, with its key."""
    sql, values, labels = preview_group_persons_query(group, label, events, list(filters), extra_columns, days)
    res = client.query(sql, values, name="cs-posthog preview group persons", modifiers=JOINED_PERSONS_MODIFIERS)
    rows = [[row[0], row[1], *(raw_display(v) for v in row[2:])] for row in res.results]
    return labels, rows


def count_events(client: PostHogClient, events: Sequence[str], filters: Iterable[Any], days: int = 30, *,
                 group: GroupRef | None = None) -> int:
    sql, values = count_events_query(events, filters, days, group=group)
    res = client.query(sql, values, name=f"cs-posthog count events ({int(days)} days)",
                       modifiers=JOINED_PERSONS_MODIFIERS)
    return int(res.results[0][0]) if res.results and res.results[0] else 0


def event_volumes(client: PostHogClient, days: int = 30) -> dict[str, int]:
    """Event name -> number of events in the last ``days`` days, most frequent first."""
    sql, values = event_volumes_query(days)
    res = client.query(sql, values, name=f"cs-posthog event volumes ({int(days)} days)")
    return {str(name): int(count) for name, count in res.results}


def count_groups(client: PostHogClient, group: GroupRef) -> int:
    sql, values = count_groups_query(group)
    res = client.query(sql, values, name="cs-posthog count groups")
    return int(res.results[0][0]) if res.results and res.results[0] else 0


def group_coverage(client: PostHogClient, group: GroupRef, days: int = 30, events: Sequence[str] = (),
                   filters: Iterable[Any] = ()) -> tuple[int, int]:
    """(groups with events, Persons belonging to one) over the last ``days`` days."""
    sql, values = group_coverage_query(group, days, events, filters)
    res = client.query(sql, values, name=f"cs-posthog group coverage ({int(days)} days)",
                       modifiers=JOINED_PERSONS_MODIFIERS)
    row = res.results[0] if res.results else [0, 0]
    return int(row[0] or 0), int(row[1] or 0)


def preview_groups(client: PostHogClient, group: GroupRef) -> tuple[list[str], list[list[Any]]]:
    sql, values, labels = preview_groups_query(group)
    res = client.query(sql, values, name="cs-posthog preview groups")
    return labels, [[row[0], *(raw_display(v) for v in row[1:])] for row in res.results]


def group_indexes(client: PostHogClient) -> dict[int, int]:
    """Group type index -> number of groups, for the indexes that have any."""
    sql, values = group_indexes_query()
    res = client.query(sql, values, name="cs-posthog group type indexes")
    return {int(i): int(n) for i, n in res.results if n}
