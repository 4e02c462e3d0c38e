"""HogQL builders: property references, Person filters, the wizard's counts and previews.

No httpx, no pydantic at import time: pure string building (the helpers at the end take a client).

User text never reaches the query text except as a quoted identifier: values always travel in
``values`` (``{name}`` placeholders, which PostHog turns into constants before it resolves the
query), property names always go through ``property_ref``.

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

How PostHog reads a property, and why values are JSON-escaped
-------------------------------------------------------------
PostHog reads ``properties.x`` as ``replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, 'x'),
''), 'null'), '^"|"$', '')``: the raw JSON text of the value without its outer quotes. A missing key
or a JSON null reads NULL; a number 30 reads '30', true reads 'true'; a string keeps its JSON
escapes: a stored ``a"b`` reads ``a\\"b`` and a stored newline reads ``\\n``. So to select the
persons whose property *is* the string the user typed, ``equals``/``does not equal`` compare with
the JSON-escaped text of the value (``json_text``), which is what PostHog reads for that string.
Persons store JSON as PostHog's ingestion writes it (non-ASCII kept as UTF-8). ``property_value``
turns what a query returns back into the stored text.

Conditions (PostHog's property filter semantics): equals ``=`` (never matches a missing property),
does not equal ``!=`` (PostHog prints ``ifNull(notEquals(x, v), 1)``: a missing property "does not
equal" any value), is set ``IS NOT NULL``, is not set ``IS NULL``. Several filters are ANDed.
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


def json_text(value: str) -> str:
    """What PostHog reads for a property holding the string ``value``: its JSON text without the
    outer quotes (``a"b`` -> ``a\\"b``; non-ASCII kept, as PostHog's ingestion stores it)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def property_value(raw: Any) -> Any:
    """Undo ``json_text`` on a property read by a query: ``a\\"b`` -> ``a"b``. Text that is not the
    inside of a JSON string (a nested object's raw JSON, say) is returned unchanged, as is None."""
    if not isinstance(raw, str) or "\\" not in raw:
        return raw
    try:
        decoded = json.loads('"' + raw + '"')
    except ValueError:
        return raw
    return decoded if isinstance(decoded, str) else raw


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
    filters: Iterable[Any], *, prefix: str = "properties", values_prefix: str = "f"
) -> tuple[str, dict[str, Any]]:
    """The AND of the filters as a HogQL condition and its ``values``; ``1 = 1`` when empty.

    Values are named ``{values_prefix}0``, ``{values_prefix}1``... so that several compiled parts can
    share one query.
    """
    if not _PLACEHOLDER_RE.match(values_prefix):
        raise ValueError(f"not a placeholder prefix: {values_prefix!r}")
    conds: list[str] = []
    values: dict[str, Any] = {}
    for f in filters:
        prop, op, value = _parts(f)
        ref = property_ref(prop, table_prefix=prefix)
        if op == "is_set":
            conds.append(f"{ref} IS NOT NULL")
        elif op == "is_not_set":
            conds.append(f"{ref} IS NULL")
        else:
            name = f"{values_prefix}{len(values)}"
            values[name] = json_text(value or "")
            conds.append(f"{ref} {'=' if op == 'equals' else '!='} {{{name}}}")
    if not conds:
        return TRUE_CONDITION, {}
    if len(conds) == 1:
        return conds[0], values
    return " AND ".join(f"({c})" for c in conds), values


def count_persons_query(filters: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    where, values = compile_filters(filters, prefix="properties", values_prefix="f")
    return f"SELECT count() FROM persons WHERE {where}", values


def preview_columns(filters: Sequence[Any], extra_columns: Sequence[str] = (), *, limit: int = PREVIEW_COLUMNS) -> list[str]:
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
    and up to 4 properties: email, the filters' properties, then ``columns``."""
    props = preview_columns(filters, columns)
    where, values = compile_filters(filters, prefix="properties", values_prefix="f")
    cols = ["id", *(property_ref(p) for p in props)]
    sql = (
        f"SELECT {', '.join(cols)} FROM persons WHERE {where} "
        f"ORDER BY created_at DESC, id LIMIT {max(1, int(limit))}"
    )
    return sql, values, ["id", *props]


def persons_page_query(
    filters: Iterable[Any], columns: Sequence[str] = (), after: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Persons matching the filters after ``after`` (a person id) in id order, for keyset paging
    (``PostHogClient.iter_pages`` adds the LIMIT). Columns: ``id`` then each property of ``columns``."""
    where, values = compile_filters(filters, prefix="properties", values_prefix="f")
    conds = [where] if where != TRUE_CONDITION else []
    if after is not None:
        conds.append("id > {after_id}")
        values["after_id"] = str(after)
    cols = ["id", *(property_ref(c) for c in columns)]
    sql = f"SELECT {', '.join(cols)} FROM persons"
    if conds:
        sql += " WHERE " + " AND ".join(f"({c})" for c in conds)
    return sql + " ORDER BY id", values


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
    """``(column labels, rows)`` of up to 5 matching persons; property values as stored."""
    filters = list(filters)
    sql, values, labels = preview_persons_query(filters, extra_columns)
    res = client.query(sql, values, name="cs-posthog preview persons")
    rows = [[row[0], *(property_value(v) for v in row[1:])] for row in res.results]
    return labels, rows


def event_volumes(client: PostHogClient, days: int = 30) -> dict[str, int]:
    """Event name -> number of events in the last ``days`` days, most frequent first."""
    sql, values = event_volumes_query(days)
    res = client.query(sql, values, name=f"cs-posthog event volumes ({int(days)} days)")
    return {str(name): int(count) for name, count in res.results}
