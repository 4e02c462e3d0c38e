"""The sandbox's HogQL engine: PostHog's own parser, a translation to SQLite, PostHog's semantics.

``execute(conn, query, values)`` answers like ``POST /api/projects/{id}/query/`` with a HogQLQuery,
``refresh: force_blocking`` and ``modifiers.convertToProjectTimezone: false``, made with a personal
API key. The server wraps the result (or ``HogQLError.body()`` with HTTP 400) in its response.

What was checked in PostHog's source (github.com/PostHog/posthog, read through the code index), and
where:

- Parsing: ``hogql_parser.parse_select_json(text, is_internal=True)`` (PyPI hogql-parser 1.3.88, the
  C++ parser PostHog itself calls from posthog/hogql/parser.py); syntax errors come back as JSON
  ``{"error": true, "type": "SyntaxError", "message": ...}`` and become 400 ``hogql_syntax_error``
  with that message (posthog/hogql/errors.py: SyntaxError.code_name; posthog/api/query.py turns
  ExposedHogQLError into ``ValidationError(str(e), e.code_name)``).
- Placeholders: posthog/hogql_queries/hogql_query_runner.py wraps each value in ``ast.Constant`` and
  posthog/hogql/placeholders.py evaluates ``{name}`` with the HogVM against them, so a list is an
  array constant and a missing name fails with HogVMException "Global variable not found: name"
  (posthog/hogql/test/test_placeholders.py). posthog/api/query.py maps HogVMException to
  ``ValidationError(str(e), None)``: DRF's default code, so the body's code is ``invalid``, not a
  hogql_* one. With values given this fails at parse time, before the OFFSET check; with no values
  at all, later, after it (HogQLQueryExecutor._process_placeholders).
- ``{filters}``: posthog/hogql/filters.py; with no filters sent it becomes ``true`` on events and on
  persons fails with "Cannot use 'filters' placeholder in a SELECT clause that does not select from
  the events, sessions, logs, traces or groups table." (hogql_query_error).
- OFFSET: posthog/hogql/user_query_validator.py rejects any OFFSET for personal-API-key queries with
  OFFSET_NOT_ALLOWED_MESSAGE (hogql_query_error), anywhere in the query, before execution.
- Limits: posthog/hogql/constants.py (DEFAULT_RETURNED_ROWS 100, MAX_SELECT_RETURNED_ROWS 50,000) and
  posthog/hogql_queries/insights/paginators.py (HogQLHasMorePaginator): without LIMIT the runner
  asks for 101 rows at OFFSET 0 and answers ``hasMore`` = more than 100, ``limit`` 100, ``offset`` 0;
  with a LIMIT there is no paginator, so ``hasMore``/``limit``/``offset`` are null and the LIMIT is
  capped at 50,000 silently.
- Properties: the printer reads ``replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, key),
  ''), 'null'), '^"|"$', '')`` (posthog/hogql/test/test_query.py test_property_access_with_arrays,
  test_null_properties): values are the raw JSON text minus the outer quotes, so 30 reads '30', true
  reads 'true', a JSON null or a missing key reads NULL, "" reads '', and escapes inside strings stay
  escaped (a value ``a"b`` reads ``a\\"b``). SQLite's ``->`` returns the same raw text.
- NULL rules: posthog/hogql/printer/clickhouse.py visit_compare_operation: ``=``/LIKE/ILIKE against
  a constant is ``ifNull(op, 0)`` (``isNull(x)`` against NULL), ``!=``/NOT LIKE/NOT ILIKE is
  ``ifNull(op, 1)``, ``<``/``>``... are ``ifNull(op, 0)``, two nullable non-constants compare equal when
  both are NULL; IN/NOT IN are printed bare and run with ``transform_null_in=1`` (NULL IN (NULL) is
  true). Non-nullable columns are compared bare, which keeps indexes usable.
- Column names: posthog/hogql/resolver.py gives a selected field a hidden alias (a column: its last
  name, ``person.id`` -> ``id``; a property: its key, ``person.properties.org`` -> ``org``) and
  posthog/hogql/query.py names columns by those aliases, else by the printed HogQL (``count()``).
- Types and JSON: events.timestamp/created_at are ``DateTime64(6, 'UTC')``; ClickHouse's
  person.created_at is ``DateTime64`` (millis, no zone: posthog/models/person/sql.py). With
  convertToProjectTimezone false no toTimeZone() is added (printer ``_get_timezone`` is UTC then), so
  clickhouse-driver (columns/datetimecolumn.py) returns aware datetimes for the first and naive ones
  for the second; posthog/renderers.py serialises with orjson OPT_UTC_Z: ``2024-01-02T03:04:05.123456Z``
  (the fraction dropped when zero) and ``2024-01-02T03:04:05.123000`` for persons.created_at.
  (Inferred from that chain, not observed on a live server.) NaN and infinities become null.
- Unknown table: the resolver's ``Unknown table "name".``; unknown field: ``Unable to resolve field:
  name``. Aggregates over no rows give ClickHouse defaults (max(timestamp) is 1970-01-01...), as
  PostHog users see.

Speed (1,000,000 events from data.py, 2 cores): the sync's keyset page query (event IN list,
created_at/timestamp bounds, (created_at, uuid) > cursor, person.properties join, ORDER BY
created_at, uuid) runs on the (created_at, uuid) index without a sort and returns a 50,000-row page
in 0.3-0.45 s; all 1M rows page through in 21 pages, 8.7 s. Parsing costs ~9 ms, so parsed queries
and compiled plans are cached (LRU, keyed by text and by the shape of the values).

Known differences: UUIDs sort as lowercase text (ClickHouse sorts UUIDs by their halves, so pages
come in another order than PostHog's, but consistently); property types from property definitions
(PostHog's PropertySwapper casting numeric properties) are not applied, so properties are always
strings and comparing them with numbers is refused; now()/today() are UTC.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import types
from collections import OrderedDict
from typing import Any

from .hogql_compile import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    SQL_FUNCTIONS,
    Compiler,
    Plan,
    env_now,
    value_signature,
)
from .hogql_errors import (
    HOGQL_ERROR,
    INVALID,
    OFFSET_NOT_ALLOWED_MESSAGE,
    SYNTAX_ERROR,
    HogQLError,
    query_error,
)

__all__ = ["HogQLError", "SCHEMA_SQL", "create_schema", "dump_properties", "execute",
           "explain_query_plan", "parse", "prepare_connection"]

SCHEMA_SQL = """
CREATE TABLE persons (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, properties TEXT NOT NULL,
  is_identified INTEGER NOT NULL);
CREATE TABLE person_distinct_ids (distinct_id TEXT PRIMARY KEY, person_id TEXT NOT NULL);
CREATE TABLE events (rowid_ INTEGER PRIMARY KEY, uuid TEXT NOT NULL, event TEXT NOT NULL,
  timestamp TEXT NOT NULL, created_at TEXT NOT NULL, distinct_id TEXT NOT NULL, person_id TEXT NOT NULL,
  properties TEXT NOT NULL);
CREATE INDEX events_created ON events(created_at, uuid);
CREATE INDEX events_ts ON events(timestamp);
"""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the sandbox tables (the data generator calls this; the schema lives only here)."""
    conn.executescript(SCHEMA_SQL)


def dump_properties(properties: dict) -> str:
    """Serialise a properties object the way PostHog stores it (UTF-8 kept, compact).

    Property keys are looked up by their raw JSON text, as ClickHouse does, so rows must be written
    with this (non-ASCII escaped as ``\\u00e9`` is still found, but read back escaped, as PostHog would).
    """
    return json.dumps(properties, ensure_ascii=False, separators=(",", ":"))


# --- the parser ----------------------------------------------------------------------------------
_parser_lock = threading.Lock()
_parser: Any = None


class _StandInError(Exception):
    """Stand-in for posthog.hogql.errors classes: hogql_parser only needs them to exist."""

    def __init__(self, message: str = "", *, start: Any = None, end: Any = None, **_: Any) -> None:
        super().__init__(message)
        self.message = message
        self.start = start
        self.end = end


def _load_parser() -> Any:
    global _parser
    if _parser is not None:
        return _parser
    with _parser_lock:
        if _parser is None:
            for name in ("posthog", "posthog.hogql", "posthog.hogql.errors"):
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
            errors = sys.modules["posthog.hogql.errors"]
            for cls in ("BaseHogQLError", "ExposedHogQLError", "InternalHogQLError", "SyntaxError",
                        "ParsingError", "NotImplementedError", "QueryError", "ResolutionError",
                        "ImpossibleASTError"):
                if not hasattr(errors, cls):
                    setattr(errors, cls, type(cls, (_StandInError,), {}))
            import hogql_parser

            _parser = hogql_parser
    return _parser


def parse(query: str) -> dict:
    """The hogql_parser JSON AST of a SELECT; HogQLError(hogql_syntax_error) when it does not parse."""
    result = json.loads(_load_parser().parse_select_json(query, is_internal=True))
    if isinstance(result, dict) and result.get("error"):
        kind = result.get("type")
        message = result.get("message") or "Syntax error"
        raise HogQLError(SYNTAX_ERROR if kind == "SyntaxError" else HOGQL_ERROR, message)
    return result


# --- caches --------------------------------------------------------------------------------------
class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


_ASTS = _LRU(512)
_PLANS = _LRU(512)


def _parsed(query: str) -> tuple[dict, list[str], bool]:
    """(AST, placeholder names in order, has OFFSET) for a query text, cached."""
    hit = _ASTS.get(query)
    if hit is None:
        ast = parse(query)  # syntax errors are not cached: they are cheap to re-find
        hit = (ast, _placeholder_names(ast), _has_offset(ast))
        _ASTS.put(query, hit)
    return hit


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _placeholder_names(ast: dict) -> list[str]:
    names = []
    for n in _walk(ast):
        if n.get("node") == "Placeholder":
            expr = n.get("expr") or {}
            if expr.get("node") == "Field" and expr["chain"] and expr["chain"][0] != "filters":
                names.append(str(expr["chain"][0]))
    return names


def _has_offset(ast: dict) -> bool:
    return any(n.get("node") in ("SelectQuery", "SelectSetQuery") and n.get("offset") is not None
               for n in _walk(ast))


def _prechecks(names: list[str], has_offset: bool, values: dict, personal_api_key: bool) -> None:
    """The errors PostHog raises before it resolves the query, in PostHog's order."""
    missing = [n for n in names if n not in values]
    if values and missing:  # hogql_query_runner.to_query: parse_select(..., placeholders=values)
        raise HogQLError(INVALID, f"Global variable not found: {missing[0]}")
    if personal_api_key and has_offset:  # validate_user_query
        raise query_error(OFFSET_NOT_ALLOWED_MESSAGE)
    if missing:  # HogQLQueryExecutor._process_placeholders, with no values at all
        raise HogQLError(INVALID, f"Global variable not found: {missing[0]}")


def _plan(query: str, ast: dict, values: dict) -> Plan:
    key = (query, tuple(sorted((k, value_signature(v)) for k, v in values.items())))
    plan = _PLANS.get(key)
    if plan is None:
        plan = Compiler(values).compile(ast)
        _PLANS.put(key, plan)
    return plan


def prepare_connection(conn: sqlite3.Connection) -> None:
    """Register the SQL functions the engine's SQL uses (``execute`` also does it, in ~2 µs)."""
    for name, nargs, fn in SQL_FUNCTIONS:
        conn.create_function(name, nargs, fn, deterministic=True)


_register_functions = prepare_connection


# --- execution -----------------------------------------------------------------------------------
def execute(
    conn: sqlite3.Connection,
    query: str,
    values: dict | None = None,
    *,
    personal_api_key: bool = True,
) -> dict:
    """Run a HogQL SELECT over the sandbox tables; the body of PostHog's /query/ response.

    Raises HogQLError (HTTP 400 in PostHog) for syntax errors, bad placeholders, OFFSET with a
    personal API key, unknown tables or fields, and anything the sandbox does not support.
    Safe to call from several threads, each with its own connection.
    """
    values = dict(values or {})
    ast, names, has_offset = _parsed(query)
    _prechecks(names, has_offset, values, personal_api_key)
    plan = _plan(query, ast, values)

    params = plan.bind(values, env_now())
    if plan.limit is None:
        limit, fetch, offset = DEFAULT_LIMIT, DEFAULT_LIMIT + 1, 0  # HogQLHasMorePaginator
    else:
        limit = None
        fetch = min(_const_value(plan.limit, values), MAX_LIMIT)
        offset = _const_value(plan.offset, values) if plan.offset is not None else 0
    params["__limit"] = fetch
    params["__offset"] = offset

    _register_functions(conn)
    rows = conn.execute(plan.sql, params).fetchall()

    has_more = None
    if plan.limit is None:
        has_more = len(rows) > DEFAULT_LIMIT
        rows = rows[:DEFAULT_LIMIT]
    renderers = plan.renderers
    if any(renderers):
        results = [[r(v) if r else v for r, v in zip(renderers, row)] for row in rows]
    else:
        results = [list(row) for row in rows]
    return {
        "results": results,
        "columns": list(plan.columns),
        "types": [list(t) for t in plan.types],
        "hasMore": has_more,
        "limit": limit,
        "offset": 0 if plan.limit is None else None,
        "hogql": query,
    }


def explain_query_plan(conn: sqlite3.Connection, query: str, values: dict | None = None) -> list[str]:
    """SQLite's EXPLAIN QUERY PLAN lines for the SQL a HogQL query runs as (to check index use)."""
    values = dict(values or {})
    plan = _plan(query, _parsed(query)[0], values)
    params = plan.bind(values, env_now())
    params["__limit"] = DEFAULT_LIMIT + 1 if plan.limit is None else min(_const_value(plan.limit, values), MAX_LIMIT)
    params["__offset"] = 0
    prepare_connection(conn)
    return [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + plan.sql, params).fetchall()]


def _const_value(c: Any, values: dict) -> int:
    kind, key = c.src
    v = values.get(key) if kind == "val" else key
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise query_error("LIMIT and OFFSET must be non-negative integers")
    return v
