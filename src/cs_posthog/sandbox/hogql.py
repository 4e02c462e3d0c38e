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
- Groups: events ``$group_0``..``$group_4`` are non-nullable strings, '' without a group
  (posthog/hogql/database/schema/events.py); ``group_N`` is a LazyJoin to the groups of type N on
  ``$group_N = key`` (schema/groups.py join_with_group_n_table), a LEFT JOIN whose misses read
  ClickHouse's defaults ('' , 1970-01-01, NULL properties); the ``groups`` table has ``index``, ``key``,
  ``created_at``, ``updated_at`` (``_timestamp``; the sandbox keeps no update time: created_at at
  seconds), ``properties``. ``argMax``/``argMin`` skip rows where either argument is NULL (ClickHouse).
- Unknown table: the resolver's ``Unknown table "name".``; unknown field: ``Unable to resolve field:
  name``. Aggregates over no rows give ClickHouse defaults (max(timestamp) is 1970-01-01...), as
  PostHog users see.

Cloud semantics (each switchable through execute()'s keywords; defaults as on PostHog Cloud):

- Typed properties: posthog/hogql/transforms/property_types.py (build_property_swapper,
  PropertySwapper._field_type_to_property_call) wraps a top-level property whose definition
  (PropertyDefinition, type event for ``properties.x`` on events, person for ``person.properties.x``
  and persons' ``properties.x``, group of index N for ``group_N.properties.x`` on events) is Numeric
  in ``toFloat`` (accurateCastOrNull(x, 'Float64'):
  "007" -> 7.0, non-numeric text -> NULL, integers above 2^53 rounded; clickhouse-driver gives a
  Python float and orjson prints it as ``4711.0``), Boolean in ``toBool(transform(toString(x),
  ['true', 'false'], [1, 0], NULL))``, DateTime in ``toDateTime`` (parseDateTime64BestEffortOrNull).
  The sandbox reads the types from sbx_property_definitions (data.py sets them from the first value
  seen, as PostHog's ingestion does). A String constant compared with a number is converted by
  ClickHouse, so ``= '5'`` compares as 5 and ``!= ''`` fails with CANNOT_PARSE_TEXT: posthog/errors.py
  keeps that code internal (posthog/test/test_errors.py test_codes_stay_internal) and
  posthog/api/query.py answers ``APIException("ClickHouse error while executing query.")``: HTTP 500,
  raised here as ClickHouseQueryError. Same for ``toUUID('garbage')`` (CANNOT_PARSE_UUID).
- JSONExtractRaw(json, key...): ClickHouse's raw JSON text of the value ('"007"', '4711', 'true',
  'null', '{...}'), '' when the key is missing; on ``properties``/``person.properties`` it bypasses
  typing and materialized columns (PropertySwapper only rewrites JSONExtractString/JSONExtract to
  materialized columns: _try_rewrite_json_extract_to_mat_column). Keys may be placeholders.
- Persons on events: Cloud's default personsOnEventsMode is person_id_override_properties_on_events
  (posthog/models/team/team.py; posthog/hogql/database/schema/events.py ``poe``): on the events table
  ``person.properties`` reads events.person_properties, stamped at ingestion (plugin-server), and
  ``person.id`` is events.person_id. ``modifiers.personsOnEventsMode`` =
  person_id_override_properties_joined (or disabled) joins the current Person instead. The table
  ``events`` has a ``person_properties`` column; a trigger stamps rows inserted without it (the
  /_sandbox hooks) with the Person as it is at that moment.
- Materialized columns: person properties in MATERIALIZED_PERSON_PROPERTIES (email, name) read like
  PostHog's non-nullable materialized columns, ``nullIf(nullIf(mat_col, ''), 'null')``
  (PostHog's printer for a materialized property outside the LEGACY_NULL_AS_STRING mode, as its
  materialized-column tests expect): "" and the text "null" are NULL.
- Time limit: posthog/hogql_queries/hogql_query_runner.py gives personal-API-key queries
  ``max_execution_time`` 10 s (api_query_max_execution_time) and rewrites ClickHouse's timeout as
  ClickHouseQueryTimeOut (posthog/exceptions.py, HTTP 504) with api_timeout_detail(10): "This query
  hit the 10-second time limit for queries run through the API...". The sandbox models the time as
  a cost in rows scanned (see ``_plan_cost``); ``execute(max_cost=...)`` raises QueryTimeLimit.

Speed (1,000,000 events from data.py, 2 cores; bench/sandbox_cpu.py): the events are stored in
ingestion order (created_at, uuid), so the sync's keyset page query (event IN list, timestamp
bound, (created_at, uuid) > cursor, JSONExtractRaw on the stamped person_properties, ORDER BY
created_at, uuid) runs on the (created_at, uuid) index without a sort and reads the table
sequentially; the database is memory-mapped (prepare_connection). A whole first sync's queries
(77 at LIMIT 10001, 750k rows) cost 5.9 s of CPU in execute(), 13 s before. Parsing costs 10-140 ms,
so parsed queries and compiled plans are cached (LRU, keyed by text, the shape of the values, the
values of JSON-key placeholders and the Semantics); texts that differ only in a trailing ``LIMIT n``
share one parse. In the joined persons-on-events modes, what a query reads of the current Person
(its JSON extractions, ``pj.x0``...) comes from a per-connection temporary table built once per
database version (``_person_relation``) instead of parsing the Person's JSON once per event row and
key. The server asks for ``json_rows``: SQLite encodes each row with json_array() and the answer is
spliced into the response, for queries whose columns are all text (strings, UUIDs, date-times). With
both, the joined mode's sync queries at 1M events cost ~5.5 s of CPU including the response's
encoding (bench/sandbox_cpu.py --joined), 11 s before.

Known differences: UUIDs sort as lowercase text (ClickHouse sorts UUIDs by their halves, so pages
come in another order than PostHog's, but consistently); now()/today() are UTC; PostHog also
rewrites property access inside toFloatOrZero() etc. differently (not modelled); the cost model
ignores the event filter's narrowing of ClickHouse's sort key.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
import sqlite3
import sys
import threading
import types
from collections import OrderedDict
from typing import Any

from .hogql_compile import (
    DEFAULT_LIMIT,
    MATERIALIZED_PERSON_PROPERTIES,
    MAX_LIMIT,
    POE_MODES,
    SQL_AGGREGATES,
    SQL_FUNCTIONS,
    Compiler,
    PersonSource,
    Plan,
    Semantics,
    env_now,
    value_signature,
)
from .hogql_errors import (
    HOGQL_ERROR,
    INVALID,
    OFFSET_NOT_ALLOWED_MESSAGE,
    SYNTAX_ERROR,
    ClickHouseQueryError,
    HogQLError,
    QueryTimeLimit,
    query_error,
)

__all__ = [
    "DEFAULT_POE_MODE",
    "MATERIALIZED_PERSON_PROPERTIES",
    "ROWS_PER_SECOND",
    "SCHEMA_SQL",
    "ClickHouseQueryError",
    "HogQLError",
    "JSONRows",
    "QueryTimeLimit",
    "create_schema",
    "dump_properties",
    "execute",
    "explain_query_plan",
    "max_cost_for_seconds",
    "parse",
    "prepare_connection",
    "query_cost",
]

# PostHog Cloud's default persons-on-events mode (posthog/models/team/team.py).
DEFAULT_POE_MODE = "person_id_override_properties_on_events"
JOINED_POE_MODE = "person_id_override_properties_joined"

SCHEMA_SQL = """
CREATE TABLE persons (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, properties TEXT NOT NULL,
  is_identified INTEGER NOT NULL);
CREATE TABLE person_distinct_ids (distinct_id TEXT PRIMARY KEY, person_id TEXT NOT NULL);
CREATE TABLE events (rowid_ INTEGER PRIMARY KEY, uuid TEXT NOT NULL, event TEXT NOT NULL,
  timestamp TEXT NOT NULL, created_at TEXT NOT NULL, distinct_id TEXT NOT NULL, person_id TEXT NOT NULL,
  properties TEXT NOT NULL, person_properties TEXT, "$group_0" TEXT NOT NULL DEFAULT '',
  "$group_1" TEXT NOT NULL DEFAULT '', "$group_2" TEXT NOT NULL DEFAULT '', "$group_3" TEXT NOT NULL DEFAULT '',
  "$group_4" TEXT NOT NULL DEFAULT '');
CREATE INDEX events_created ON events(created_at, uuid);
CREATE INDEX events_ts ON events(timestamp);
CREATE TABLE groups (group_type_index INTEGER NOT NULL, group_key TEXT NOT NULL, created_at TEXT NOT NULL,
  properties TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (group_type_index, group_key));
CREATE TABLE group_type_mapping (group_type_index INTEGER PRIMARY KEY, group_type TEXT NOT NULL UNIQUE,
  name_singular TEXT, name_plural TEXT);
""" + """
CREATE TRIGGER IF NOT EXISTS events_stamp_person_properties AFTER INSERT ON events
WHEN NEW.person_properties IS NULL BEGIN
  UPDATE events SET person_properties = COALESCE((SELECT properties FROM persons WHERE id = NEW.person_id), '{}')
  WHERE rowid_ = NEW.rowid_;
END;
"""
# The trigger is ingestion's stamping: an event inserted without person_properties (the /_sandbox
# hooks, tests) gets its Person's properties as they are at that moment, as PostHog's plugin-server
# writes events.person_properties at ingestion. The data generator writes them itself.


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


def load_parser() -> Any:
    """PostHog's parser module, imported once (ImportError when it is not installed)."""
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
            # local: an optional dependency (ImportError when absent), and it needs the stand-in
            # posthog.hogql.errors above in sys.modules before it loads
            import hogql_parser

            _parser = hogql_parser
    return _parser


def parse(query: str) -> dict:
    """The hogql_parser JSON AST of a SELECT; HogQLError(hogql_syntax_error) when it does not parse."""
    result = json.loads(load_parser().parse_select_json(query, is_internal=True))
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


_TRAILING_LIMIT = re.compile(r"(?i)\bLIMIT\s+(\d{1,9})\s*$")
_LIMIT_STANDIN = 987_654_321


def _parsed(query: str) -> tuple[dict, list[str], bool, tuple]:
    """(AST, placeholder names in order, has OFFSET, JSON-key placeholder names) for a query, cached.

    Paged queries differ only in their trailing ``LIMIT n`` (the sync grows its pages): such a text
    is parsed once with a stand-in number and the AST's top-level LIMIT constant set to ``n``."""
    hit = _ASTS.get(query)
    if hit is not None:
        return hit
    m = _TRAILING_LIMIT.search(query)
    if m is not None:
        shape = query[:m.start(1)] + str(_LIMIT_STANDIN) + query[m.end(1):]
        base = _ASTS.get(shape)
        if base is None:
            try:
                base = _parse_entry(shape)
            except HogQLError:
                base = None  # the original's own error (positions, text) comes from parsing it below
            else:
                _ASTS.put(shape, base)
        lim = base[0].get("limit") if base is not None and base[0].get("node") == "SelectQuery" else None
        if isinstance(lim, dict) and lim.get("node") == "Constant" and lim.get("value") == _LIMIT_STANDIN:
            hit = ({**base[0], "limit": {**lim, "value": int(m.group(1))}}, *base[1:])
            _ASTS.put(query, hit)
            return hit
    hit = _parse_entry(query)  # syntax errors are not cached: they are cheap to re-find
    _ASTS.put(query, hit)
    return hit


def _parse_entry(query: str) -> tuple[dict, list[str], bool, tuple]:
    ast = parse(query)
    return (ast, _placeholder_names(ast), _has_offset(ast), json_key_placeholders(ast))


def json_key_placeholders(ast: dict) -> tuple:
    """Names of placeholders used as keys of JSON functions: their values are compiled into the SQL
    (a path), so they are part of the plan cache key, unlike other values (bound as parameters)."""
    names = set()
    for n in _walk(ast):
        if n.get("node") == "Call" and str(n.get("name", "")).startswith("JSONExtract"):
            for a in (n.get("args") or [])[1:]:
                e = (a.get("expr") or {}) if isinstance(a, dict) and a.get("node") == "Placeholder" else {}
                if e.get("node") == "Field" and e.get("chain"):
                    names.add(str(e["chain"][0]))
    return tuple(sorted(names))


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


def _plan(query: str, ast: dict, values: dict, sem: Semantics, json_keys: tuple = ()) -> Plan:
    key = (query, tuple(sorted((k, value_signature(v)) for k, v in values.items())),
           tuple(_hashable(values.get(k)) for k in json_keys), sem)
    plan = _PLANS.get(key)
    if plan is None:
        plan = Compiler(values, sem).compile(ast)
        _PLANS.put(key, plan)
    return plan


def _hashable(v: Any) -> Any:
    return (type(v).__name__, tuple(v) if isinstance(v, list) else v)


# --- Cloud semantics: property types, persons-on-events mode -------------------------------------
_TYPED = ("Numeric", "Boolean", "DateTime")


def load_property_types(conn: sqlite3.Connection) -> tuple:
    """Sorted ``(kind, name, property_type)`` of the typed definitions in sbx_property_definitions
    (the data generator's table; no table: no types). Only Numeric, Boolean and DateTime cast."""
    try:
        rows = conn.execute(
            "SELECT type, name, property_type FROM sbx_property_definitions "
            "WHERE property_type IN ('Numeric', 'Boolean', 'DateTime') ORDER BY type, name").fetchall()
    except sqlite3.OperationalError:
        return ()
    try:  # group properties, by group type index: kind 'group_N' (events.group_N.properties.x)
        rows += conn.execute(
            "SELECT 'group_' || group_type_index, name, property_type FROM sbx_group_property_definitions "
            "WHERE property_type IN ('Numeric', 'Boolean', 'DateTime')").fetchall()
    except sqlite3.OperationalError:
        pass
    return tuple(sorted(rows))


def _types_tuple(property_types: dict) -> tuple:
    return tuple(sorted((k, n, t) for (k, n), t in property_types.items() if t in _TYPED))


def resolve_poe_mode(modifiers: dict | None, poe_default: str = DEFAULT_POE_MODE) -> str:
    """POE_STAMPED or POE_JOINED from the query's ``modifiers.personsOnEventsMode`` (or the default)."""
    mode = (modifiers or {}).get("personsOnEventsMode") or poe_default
    if mode not in POE_MODES:
        # PostHog validates modifiers with pydantic (posthog/schema.py PersonsOnEventsMode)
        raise HogQLError(INVALID, f"Input should be {', '.join(repr(m) for m in POE_MODES)}: "
                                  f"personsOnEventsMode={mode!r}")
    return POE_MODES[mode]


def semantics(conn: sqlite3.Connection, *, modifiers: dict | None = None, property_types: dict | None = None,
              typed_properties: bool = True, materialized: bool = True,
              poe_default: str = DEFAULT_POE_MODE) -> Semantics:
    if not typed_properties:
        types: tuple = ()
    elif property_types is not None:
        types = _types_tuple(property_types)
    else:
        types = load_property_types(conn)
    return Semantics(types=types, poe=resolve_poe_mode(modifiers, poe_default), materialized=materialized)


MMAP_SIZE = 4 << 30  # memory-mapped reads: the keyset scans read pages without a copy (half the CPU)


def _register_functions(conn: sqlite3.Connection) -> None:
    for name, nargs, fn in SQL_FUNCTIONS:
        conn.create_function(name, nargs, fn, deterministic=True)
    for name, nargs, cls in SQL_AGGREGATES:
        conn.create_aggregate(name, nargs, cls)


def prepare_connection(conn: sqlite3.Connection) -> None:
    """Register the SQL functions the engine's SQL uses (``execute`` also does it, in ~2 µs) and
    memory-map the database file (reads only; a no-op for in-memory databases)."""
    _register_functions(conn)
    conn.execute(f"PRAGMA mmap_size={MMAP_SIZE}")


# --- per-connection memo: what is known about the database while it does not change --------------
# A connection sees the database unchanged while ``PRAGMA data_version`` (commits by other
# connections) and its own ``total_changes`` (its own writes, committed or not) stay the same. What
# the engine derives from the data per connection (the joined modes' Person tables, the cost
# model's version) is kept until then. A connection is recognised by a marker table in its own
# temporary schema (a new connection that happens to get a closed one's id() has none).
class _ConnState:
    __slots__ = ("key", "marker", "tables", "version")

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.key: tuple | None = None
        self.version: tuple | None = None  # _table_stats' version of the database
        self.tables: set[str] = set()  # PersonSource tables built since `key`


_CONN_STATES: dict[int, _ConnState] = {}
_CONN_LOCK = threading.Lock()
_MARKERS = itertools.count(1)
_MAX_PERSON_TABLES = 8  # per connection; more distinct shapes: the oldest are dropped


def _temp_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM temp.sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _conn_state(conn: sqlite3.Connection) -> _ConnState:
    """This connection's memo, emptied when the database may have changed since it was filled."""
    st = _CONN_STATES.get(id(conn))
    if st is not None and not _temp_exists(conn, st.marker):
        st = None
    if st is None:
        st = _ConnState(f"sbx_conn_{next(_MARKERS)}")
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {st.marker} (x)")
        with _CONN_LOCK:
            if len(_CONN_STATES) > 1024:
                _CONN_STATES.clear()
            _CONN_STATES[id(conn)] = st
    key = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
    if st.key != key:
        st.key = key
        st.version = None
        st.tables.clear()
    return st


def _person_relation(conn: sqlite3.Connection, source: PersonSource) -> str:
    """What ``pj`` is joined to: the connection's temporary table of ``source`` (built now if the
    database changed since), or the equivalent subquery when it cannot be built."""
    table = "temp." + source.name
    try:
        st = _conn_state(conn)
        if source.name in st.tables and _temp_exists(conn, source.name):
            return table
        was_in_transaction = conn.in_transaction
        if len(st.tables) >= _MAX_PERSON_TABLES:
            for old in list(st.tables):
                conn.execute(f"DROP TABLE IF EXISTS temp.{old}")
            st.tables.clear()
        conn.execute(f"DROP TABLE IF EXISTS temp.{source.name}")
        conn.execute(source.create_sql)
        conn.execute(source.fill_sql)
        if not was_in_transaction and conn.in_transaction:
            conn.commit()  # only the temporary table was written; do not hold a read snapshot open
        # the tables built since `key` stay valid: only this connection's own temporary writes happened
        assert st.key is not None  # _conn_state always leaves the connection's current key set
        st.key = (st.key[0], conn.total_changes)
        st.tables.add(source.name)
        return table
    except sqlite3.Error:
        return source.fallback


class JSONRows:
    """Result rows already encoded as one JSON array of arrays (``execute(json_rows=True)``);
    ``server.json_response`` writes ``json_text`` in place. ``len()`` is the number of rows."""

    __slots__ = ("count", "json_text")

    def __init__(self, json_text: str, count: int) -> None:
        self.json_text = json_text
        self.count = count

    def __len__(self) -> int:
        return self.count

    def rows(self) -> list:
        return json.loads(self.json_text)


def _run(conn: sqlite3.Connection, plan: Plan, sql: str, params: dict) -> list:
    if plan.person_source is not None:
        rel = _person_relation(conn, plan.person_source)
        if rel != "temp." + plan.person_source.name:
            sql = sql.replace("temp." + plan.person_source.name, rel, 1)
    return conn.execute(sql, params).fetchall()


# --- execution -----------------------------------------------------------------------------------
def execute(
    conn: sqlite3.Connection,
    query: str,
    values: dict | None = None,
    *,
    personal_api_key: bool = True,
    modifiers: dict | None = None,
    poe_default: str = DEFAULT_POE_MODE,
    property_types: dict | None = None,
    typed_properties: bool = True,
    materialized: bool = True,
    max_cost: int | None = None,
    time_limit_s: int | float = 10,
    json_rows: bool = False,
) -> dict:
    """Run a HogQL SELECT over the sandbox tables; the body of PostHog's /query/ response.

    Cloud semantics, each switchable (defaults as on PostHog Cloud):

    - ``modifiers``: the query's HogQL modifiers; ``personsOnEventsMode`` picks how
      ``person.properties`` reads on events (stamped at ingestion, or the current Person for
      ``person_id_override_properties_joined`` / ``disabled``). ``poe_default`` is the mode when the
      modifiers do not name one (PostHog Cloud: ``person_id_override_properties_on_events``).
    - ``property_types``: ``{(kind, name): property_type}`` with kind 'event', 'person' or 'group_N';
      None reads them from sbx_property_definitions and sbx_group_property_definitions.
      ``typed_properties=False`` turns the casts off.
    - ``materialized=False``: MATERIALIZED_PERSON_PROPERTIES read like any other property.
    - ``max_cost``: rows the query may scan (``query_cost``); more raises QueryTimeLimit (HTTP 504,
      its message naming ``time_limit_s``). None: no limit.

    ``json_rows=True`` (the server's fast path): ``results`` may be a :class:`JSONRows`, the rows
    already encoded by SQLite as the JSON json.dumps would give (for queries whose columns are all
    strings, UUIDs or date-times; others answer lists as usual).

    Raises HogQLError (HTTP 400 in PostHog) for syntax errors, bad placeholders, OFFSET with a
    personal API key, unknown tables or fields, and anything the sandbox does not support;
    ClickHouseQueryError (a HogQLError with ``status`` 500 and its own ``body()``) for what ClickHouse
    fails at run time (a Numeric property compared with '', an unparsable toUUID()).
    Safe to call from several threads, each with its own connection.
    """
    values = dict(values or {})
    ast, names, has_offset, json_keys = _parsed(query)
    _prechecks(names, has_offset, values, personal_api_key)
    sem = semantics(conn, modifiers=modifiers, property_types=property_types, typed_properties=typed_properties,
                    materialized=materialized, poe_default=poe_default)
    plan = _plan(query, ast, values, sem, json_keys)

    params = plan.bind(values, env_now())
    if max_cost is not None:
        cost = _plan_cost(conn, plan, params)
        if cost > max_cost:
            raise QueryTimeLimit(cost, max_cost, time_limit_s)
    if plan.limit is None:
        limit, fetch, offset = DEFAULT_LIMIT, DEFAULT_LIMIT + 1, 0  # HogQLHasMorePaginator
    else:
        limit = None
        fetch = min(_const_value(plan.limit, values), MAX_LIMIT)
        offset = _const_value(plan.offset, values) if plan.offset is not None else 0
    params["__limit"] = fetch
    params["__offset"] = offset

    _register_functions(conn)
    if json_rows and plan.json_sql is not None:
        try:
            texts = [r[0] for r in _run(conn, plan, plan.json_sql, params)]
        except sqlite3.OperationalError:  # a value JSON cannot hold (a BLOB): the general path
            texts = None
        if texts is not None:
            has_more = None
            if plan.limit is None:
                has_more = len(texts) > DEFAULT_LIMIT
                texts = texts[:DEFAULT_LIMIT]
            return _answer(plan, query, JSONRows("[" + ",".join(texts) + "]", len(texts)), has_more, limit)
    rows = _run(conn, plan, plan.sql, params)

    has_more = None
    if plan.limit is None:
        has_more = len(rows) > DEFAULT_LIMIT
        rows = rows[:DEFAULT_LIMIT]
    renderers = plan.renderers
    if any(renderers):
        results = [[r(v) if r else v for r, v in zip(renderers, row, strict=False)] for row in rows]
    else:
        results = [list(row) for row in rows]
    return _answer(plan, query, results, has_more, limit)


def _answer(plan: Plan, query: str, results: Any, has_more: bool | None, limit: int | None) -> dict:
    return {
        "results": results,
        "columns": list(plan.columns),
        "types": [list(t) for t in plan.types],
        "hasMore": has_more,
        "limit": limit,
        "offset": 0 if plan.limit is None else None,
        "hogql": query,
    }


def explain_query_plan(conn: sqlite3.Connection, query: str, values: dict | None = None, **kw: Any) -> list[str]:
    """SQLite's EXPLAIN QUERY PLAN lines for the SQL a HogQL query runs as (to check index use).

    ``kw``: execute()'s semantics keywords (modifiers, poe_default, property_types, ...)."""
    values = dict(values or {})
    ast, _, _, json_keys = _parsed(query)
    plan = _plan(query, ast, values, semantics(conn, **kw), json_keys)
    params = plan.bind(values, env_now())
    params["__limit"] = DEFAULT_LIMIT + 1 if plan.limit is None else min(_const_value(plan.limit, values), MAX_LIMIT)
    params["__offset"] = 0
    prepare_connection(conn)
    sql = plan.sql
    if plan.person_source is not None:
        sql = sql.replace("temp." + plan.person_source.name, _person_relation(conn, plan.person_source), 1)
    return [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]


def _const_value(c: Any, values: dict) -> int:
    kind, key = c.src
    v = values.get(key) if kind == "val" else key
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise query_error("LIMIT and OFFSET must be non-negative integers")
    return v


# --- the time limit's cost model -----------------------------------------------------------------
# Modelled cost = rows the query would scan in ClickHouse:
#   events:  E = events whose timestamp lies within the query's top-level bounds on `timestamp`
#            (PostHog's events table is sorted by toDate(timestamp) (posthog/models/event/sql.py
#            ORDER BY team_id, toDate(timestamp), event, ...), so only a timestamp range narrows the
#            scan; the (created_at, uuid) keyset, person_id and event filters do not: they are
#            evaluated on every row of the range). No bound: every event.
#            + P + E * JOIN_COST_PER_EVENT when the query reads the current Person through a join
#            (personsOnEventsMode person_id_override_properties_joined, or person.created_at /
#            is_identified): ClickHouse reads the whole persons table and joins every event row.
#   persons: P = every Person (persons is not narrowed by any filter the sync uses).
#   no FROM: 0.
# ROWS_PER_SECOND converts the API's time limit into rows: 10 s is 10M rows, far above what the
# sandbox holds, so the limit is only hit when the server scales it down (max_cost_for_seconds).
ROWS_PER_SECOND = 1_000_000
JOIN_COST_PER_EVENT = 1
_HIST_LOCK = threading.Lock()
_HISTOGRAMS: dict = {}


def max_cost_for_seconds(seconds: float, rows_per_second: int = ROWS_PER_SECOND) -> int:
    """The max_cost that models a time limit of ``seconds``."""
    return max(0, int(seconds * rows_per_second))


def _db_key(conn: sqlite3.Connection) -> tuple:
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    return (path or f"memory:{id(conn)}",)


def _table_stats(conn: sqlite3.Connection) -> tuple[list, list, int]:
    """(hour starts, cumulative event counts per hour, persons count), cached per database until an
    event or person is added (max rowid changes). Building it reads the timestamp index once."""
    db = _db_key(conn)
    try:
        st: _ConnState | None = _conn_state(conn)
    except sqlite3.Error:
        st = None
    version = st.version if st is not None else None
    if version is None:  # counting the events reads an index: once per change of the database
        version = conn.execute("SELECT (SELECT max(rowid_) FROM events), (SELECT count(*) FROM events), "
                               "(SELECT max(rowid) FROM persons)").fetchone()
        if st is not None:
            st.version = version
    with _HIST_LOCK:
        hit = _HISTOGRAMS.get(db)
    if hit is not None and hit[0] == version:
        return hit[1]
    hours, cum = _hour_counts(conn, version[1])
    persons = conn.execute("SELECT count(*) FROM persons").fetchone()[0]
    stats = (hours, cum, persons)
    with _HIST_LOCK:
        if len(_HISTOGRAMS) > 64:
            _HISTOGRAMS.clear()
        _HISTOGRAMS[db] = (version, stats)
    return stats


def _hour_counts(conn: sqlite3.Connection, n_events: int | None) -> tuple[list, list]:
    """(hours 'YYYY-MM-DD HH' in order, cumulative event counts) from the timestamp index: one
    range count per hour present and one seek to the next (no sort of every row)."""
    hours: list[str] = []
    cum: list[int] = []
    total = 0
    ts = conn.execute("SELECT min(timestamp) FROM events").fetchone()[0]
    while isinstance(ts, str) and len(ts) >= 13:
        hour = ts[:13]
        upper = hour + "\U0010ffff"  # above every text starting with `hour`
        total += conn.execute("SELECT count(*) FROM events WHERE timestamp >= ? AND timestamp < ?",
                              (hour, upper)).fetchone()[0]
        hours.append(hour)
        cum.append(total)
        ts = conn.execute("SELECT min(timestamp) FROM events WHERE timestamp >= ?", (upper,)).fetchone()[0]
    if ts is None and total == n_events:
        return hours, cum
    # texts shorter than an hour or not text: what GROUP BY makes of them
    hours, cum, total = [], [], 0
    for hour, n in conn.execute("SELECT substr(timestamp, 1, 13), count(*) FROM events GROUP BY 1 ORDER BY 1"):
        total += n
        hours.append(hour)
        cum.append(total)
    return hours, cum


def _events_before(hours: list, cum: list, ts: str) -> float:
    """Estimated events with timestamp < ts (canonical text), interpolating inside an hour."""
    hour = ts[:13]
    i = bisect.bisect_left(hours, hour)
    before = cum[i - 1] if i > 0 else 0
    if i < len(hours) and hours[i] == hour:
        in_hour = cum[i] - before
        frac = (int(ts[14:16]) * 60 + int(ts[17:19])) / 3600
        return before + in_hour * frac
    return before


def _plan_cost(conn: sqlite3.Connection, plan: Plan, params: dict) -> int:
    if plan.table is None:
        return 0
    if plan.table == "groups":  # every group (the table is not narrowed by any filter the sync uses)
        return conn.execute("SELECT count(*) FROM groups").fetchone()[0]
    hours, cum, persons = _table_stats(conn)
    if plan.table == "persons":
        return persons
    total = cum[-1] if cum else 0
    lo, hi = "", "9999"
    for op, name, ts_left in plan.ts_bounds:
        v = params.get(name)
        if not isinstance(v, str):
            continue
        if not ts_left:  # const OP timestamp: flip it
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        if op in (">", ">=", "=="):
            lo = max(lo, v)
        if op in ("<", "<=", "=="):
            hi = min(hi, v)
    if hi <= lo and (lo, hi) != ("", "9999"):
        events = 0.0
    else:
        events = (_events_before(hours, cum, hi) if hi != "9999" else total) - (
            _events_before(hours, cum, lo) if lo else 0)
    events = max(0.0, events)
    cost = events
    if plan.joins_persons:
        cost += persons + events * JOIN_COST_PER_EVENT
    return round(cost)


def query_cost(conn: sqlite3.Connection, query: str, values: dict | None = None, **kw: Any) -> int:
    """The modelled cost (rows scanned, see above) of a query; ``kw`` as execute()'s semantics
    keywords (modifiers, poe_default, property_types, typed_properties, materialized)."""
    values = dict(values or {})
    ast, _, _, json_keys = _parsed(query)
    plan = _plan(query, ast, values, semantics(conn, **kw), json_keys)
    return _plan_cost(conn, plan, plan.bind(values, env_now()))
