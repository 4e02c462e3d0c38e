"""Translate a hogql_parser JSON AST into one SQLite statement over the sandbox tables.

The rules (NULL handling, property extraction, column names, types) follow PostHog's printer and
resolver; ``hogql.py``'s docstring lists the sources. Everything not handled here raises a 400
``HogQLError`` instead of guessing, so the sandbox never returns a wrong answer silently.

A compiled ``Plan`` depends on the query text and on the *shape* of ``values`` (which placeholders
are NULL, strings, numbers, lists...), because PostHog's printer decides on constants (``x = {v}``
with ``v`` None prints ``isNull(x)``). The values themselves are bound as SQLite parameters, so one
plan serves every call with the same shape.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from .hogql_errors import (
    CANNOT_PARSE_DATETIME,
    FILTERS_WRONG_TABLE_MESSAGE,
    INVALID,
    ClickHouseQueryError,
    HogQLError,
    cannot_parse,
    query_error,
    unsupported,
)

DT6 = "DateTime64(6, 'UTC')"  # events.timestamp / created_at, now(), toDateTime(...)
DT3 = "DateTime64(3)"  # ClickHouse person.created_at: `created_at DateTime64` (no zone, millis)
DT0 = "DateTime('UTC')"  # toStartOfDay(...)
DTN = "DateTime"  # groups.updated_at: ClickHouse groups._timestamp, `DateTime` (seconds, no zone)
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
EPOCH = "1970-01-01 00:00:00.000000"

DEFAULT_LIMIT = 100  # posthog/hogql/constants.py DEFAULT_RETURNED_ROWS
MAX_LIMIT = 50_000  # posthog/hogql/constants.py MAX_SELECT_RETURNED_ROWS

# Fields PostHog has on these tables that the sandbox does not model: a clear 400, not "unknown".
_EVENTS_ELSEWHERE = {
    "elements_chain", "$session_id", "$window_id", "session", "pdi", "poe", "goe_0", "goe_1", "goe_2",
    "goe_3", "goe_4", "override", "event_person_id", "person_mode", "inserted_at",
    "elements_chain_href", "elements_chain_texts", "elements_chain_ids", "elements_chain_elements",
    "$session_id_uuid", "team_id", "_timestamp", "_offset",
}
_PERSONS_ELSEWHERE = {"pdi", "team_id", "is_deleted", "version", "last_seen_at", "$virt_initial_channel_type"}
_GROUPS_ELSEWHERE = {"team_id"}
# events.$group_N and events.group_N (posthog/hogql/database/schema/events.py): N = 0..4 (GROUP_TYPES_LIMIT)
GROUP_INDEXES = range(5)
_GROUP_COLUMNS = {f"$group_{i}": i for i in GROUP_INDEXES}
_GROUP_JOINS = {f"group_{i}": i for i in GROUP_INDEXES}
_OTHER_TABLES = {
    "person_distinct_ids", "person_distinct_id_overrides", "sessions", "raw_sessions",
    "cohort_people", "static_cohort_people", "session_replay_events", "raw_session_replay_events",
    "log_entries", "query_log", "heatmaps", "exchange_rate", "raw_persons", "raw_person_distinct_ids",
    "raw_groups", "numbers", "logs", "error_tracking_issues", "persons_revenue_analytics",
}

_SELECT_KEYS = {
    "node", "select", "select_from", "where", "group_by", "having", "order_by", "limit", "offset",
    "distinct", "start", "end",
}
_CLAUSE_LABELS = {
    "ctes": "WITH (CTEs)", "prewhere": "PREWHERE", "qualify": "QUALIFY", "array_join_op": "ARRAY JOIN",
    "array_join_list": "ARRAY JOIN", "window_exprs": "WINDOW", "limit_by": "LIMIT BY",
    "limit_with_ties": "LIMIT ... WITH TIES", "settings": "SETTINGS", "view_name": "Views",
    "limit_percent": "LIMIT ... PERCENT",
}


# --- values --------------------------------------------------------------------------------------
def value_signature(v: Any) -> str:
    """What of a placeholder value changes the compiled SQL (its type and NULL-ness, not its content)."""
    if v is None:
        return "N"
    if isinstance(v, bool):
        return "b"
    if isinstance(v, int):
        return "i"
    if isinstance(v, float):
        return "f"
    if isinstance(v, str):
        return "s"
    if isinstance(v, (list, tuple)):
        return "L(" + "".join(sorted({value_signature(x) for x in v})) + ")"
    return "X" + type(v).__name__


_DT_RE = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?\s*$"
)
_UNIX_RE = re.compile(r"^\s*(\d{9,10})(?:\.(\d+))?\s*$")


def parse_datetime(text: str) -> datetime | None:
    """Best-effort parse of a date-time string into a naive UTC datetime, or None.

    Covers what callers send: ISO 8601 with ``T`` or a space, optional fraction (more than six digits
    truncated), ``Z``/``UTC``/``±HH:MM`` offsets (no offset means UTC), a bare date, unix seconds.
    """
    if not isinstance(text, str):
        return None
    m = _DT_RE.match(text)
    if m:
        y, mo, d, h, mi, s, frac, tz = m.groups()
        try:
            dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                          int((frac or "0")[:6].ljust(6, "0")))
        except ValueError:
            return None
        if tz and tz not in ("Z", "z", "UTC"):
            sign = 1 if tz[0] == "+" else -1
            digits = tz[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            dt = dt - sign * offset
        return dt
    m = _UNIX_RE.match(text)
    if m:
        micros = int((m.group(2) or "0")[:6].ljust(6, "0"))
        return datetime(1970, 1, 1) + timedelta(seconds=int(m.group(1)), microseconds=micros)
    return None


def canon(dt: datetime) -> str:
    """The sandbox's stored form: fixed-width UTC text, so text order is time order."""
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond:06d}"


def _dt_converter(type_name: str) -> Callable[[Any], str]:
    """Like ClickHouse converting a String constant to the column's DateTime type (truncating)."""

    def conv(v: Any) -> str:
        dt = parse_datetime(v) if isinstance(v, str) else None
        if dt is None:
            raise HogQLError(CANNOT_PARSE_DATETIME, f"Cannot parse string {v!r} as {type_name}")
        if type_name == DT3:
            dt = dt.replace(microsecond=dt.microsecond // 1000 * 1000)
        elif type_name in (DT0, DTN):
            dt = dt.replace(microsecond=0)
        return canon(dt)

    return conv


def _date_converter(v: Any) -> str:
    dt = parse_datetime(v) if isinstance(v, str) else None
    if dt is None:
        raise HogQLError(CANNOT_PARSE_DATETIME, f"Cannot parse string {v!r} as Date")
    return dt.strftime("%Y-%m-%d")


def _uuid_converter(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


_UUID_RE = re.compile(
    r"^\{?([0-9a-fA-F]{8})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{12})\}?$"
)


def _strict_uuid_converter(v: Any) -> Any:
    """toUUID('...'): ClickHouse parses the text or fails the query (CANNOT_PARSE_UUID, kept internal)."""
    m = _UUID_RE.match(v) if isinstance(v, str) else None
    if m is None:
        raise ClickHouseQueryError("cannot_parse_uuid", f"Code: 376. DB::Exception: Cannot parse uuid {v!r}: "
                                                        f"Cannot parse UUID from String. (CANNOT_PARSE_UUID)")
    return "-".join(m.groups()).lower()


def _num_converter(type_name: str) -> Callable[[Any], Any]:
    """ClickHouse converting a String constant to the other side's number type, or failing the query.

    ``toFloat(properties.x) != ''`` fails in ClickHouse (CANNOT_PARSE_TEXT); ``= '5'`` compares as 5.
    """
    is_float = not (type_name.startswith("Int") or type_name.startswith("UInt"))
    label = "Float64" if is_float else type_name

    def conv(v: Any) -> Any:
        if isinstance(v, str):
            out = _to_float(v) if is_float else _to_int(v)
            if out is None:
                raise cannot_parse(v, label)
            return out
        return v

    return conv


def _bool_converter(v: Any) -> Any:
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("true", "1"):
            return 1
        if low in ("false", "0"):
            return 0
        raise cannot_parse(v, "Bool")
    return v


def _converter_for(x: X) -> Callable[[Any], Any] | None:
    """How a String constant becomes comparable with ``x`` (None: it cannot)."""
    if x.kind == "dt":
        return _dt_converter(x.t)
    if x.kind == "date":
        return _date_converter
    if x.kind == "uuid":
        return _uuid_converter
    if x.kind == "bool":
        return _bool_converter
    if x.kind == "num":
        return _num_converter(x.t)
    return None

# --- compiled expressions ------------------------------------------------------------------------
@dataclass(frozen=True)
class Const:
    src: tuple  # ("lit", value) | ("val", name) | ("env", "now"/"today")
    value: Any  # the value at compile time: only its type and NULL-ness are relied on


@dataclass(frozen=True)
class X:
    sql: str
    t: str  # ClickHouse type, without Nullable()
    nullable: bool
    kind: str  # str num bool dt date uuid null interval list tuple
    const: Const | None = None
    agg: bool = False
    free: frozenset = frozenset()  # column expressions used outside an aggregate
    items: tuple = ()  # tuple elements
    name: str | None = None  # the column name PostHog gives it when selected bare

    @property
    def ch_type(self) -> str:
        if self.kind == "null":
            return "Nullable(Nothing)"
        return f"Nullable({self.t})" if self.nullable else self.t


def _num_type(v: int | float) -> str:
    if isinstance(v, float):
        return "Float64"
    if v >= 0:
        for bits in (8, 16, 32, 64):
            if v < 2**bits:
                return f"UInt{bits}"
        return "UInt64"
    for bits in (8, 16, 32, 64):
        if v >= -(2 ** (bits - 1)):
            return f"Int{bits}"
    return "Int64"


@dataclass(frozen=True)
class Param:
    name: str
    src: tuple
    conv: Callable | None
    as_list: bool
    fixed: Any = None  # pre-computed value for literals
    has_fixed: bool = False


POE_STAMPED = "stamped"  # person.properties on events: events.person_properties, as ingested
POE_JOINED = "joined"  # person.properties on events: the current Person, through a join
# posthog/schema.py PersonsOnEventsMode -> how the sandbox reads person.properties on events
POE_MODES = {
    "disabled": POE_JOINED,
    "person_id_no_override_properties_on_events": POE_STAMPED,
    "person_id_override_properties_on_events": POE_STAMPED,
    "person_id_override_properties_joined": POE_JOINED,
}
# Person properties the sandbox treats as materialized columns (PostHog materializes popular ones; a
# non-nullable materialized string prints as nullIf(nullIf(mat_col, ''), 'null')).
MATERIALIZED_PERSON_PROPERTIES = frozenset({"email", "name"})
MATERIALIZED_EVENT_PROPERTIES: frozenset = frozenset()


@dataclass(frozen=True)
class Semantics:
    """What of PostHog Cloud's behaviour a plan is compiled with (part of the plan cache key).

    ``types``: sorted ``(kind, name, property_type)`` of typed property definitions ('event' /
    'person'; only Numeric, Boolean and DateTime change anything); ``poe``: POE_STAMPED or POE_JOINED;
    ``materialized``: whether MATERIALIZED_* properties read '' and 'null' as NULL.
    """

    types: tuple = ()
    poe: str = POE_STAMPED
    materialized: bool = True


@dataclass(frozen=True)
class PersonSource:
    """What a joined-mode events query reads of the current Person (``pj``), precomputed per Person.

    The join used to parse each Person's properties JSON once per *event row* and extracted key
    (three times a row for the sync's page query); a temporary table holding ``id``, the persons
    columns the query reads and one column per extracted JSON path (``x0``, ``x1``...: the same SQL
    expressions over ``persons.properties``) gives the same values for a lookup. hogql.py builds it
    once per connection and database version (see ``hogql._person_table``). ``fallback`` is the same
    relation as a subquery over ``persons``, for a connection that cannot create temporary tables.
    """

    name: str  # the temporary table's name: a digest of what it holds
    create_sql: str
    fill_sql: str
    fallback: str


# The persons columns a joined query may read through ``pj`` (with their declared types, so that
# comparisons apply the same affinity as on ``persons`` itself).
_PERSON_COLUMNS = (("created_at", "TEXT"), ("is_identified", "INTEGER"), ("properties", "TEXT"))
_PJ_COLUMN_RE = re.compile(r"\bpj\.(created_at|is_identified|properties)\b")


def person_source(sql: str, extracts: list[str]) -> PersonSource:
    """The PersonSource for a plan whose SQL reads ``pj.<column>`` and ``pj.x<i>`` = ``extracts[i]``."""
    used = set(_PJ_COLUMN_RE.findall(sql))
    cols = [(c, t) for c, t in _PERSON_COLUMNS if c in used]
    select = ", ".join(["id", *(c for c, _ in cols), *(f"{e} AS x{i}" for i, e in enumerate(extracts))])
    spec = json.dumps([cols, extracts])
    name = "sbx_pj_" + hashlib.sha1(spec.encode("utf-8")).hexdigest()[:20]
    decl = ", ".join(["id TEXT PRIMARY KEY", *(f"{c} {t}" for c, t in cols), *(f"x{i}" for i in range(len(extracts)))])
    return PersonSource(
        name=name,
        create_sql=f"CREATE TEMP TABLE {name} ({decl}) WITHOUT ROWID",
        fill_sql=f"INSERT INTO temp.{name} SELECT {select} FROM main.persons WHERE id IS NOT NULL",
        fallback=f"(SELECT {select} FROM main.persons)",
    )


@dataclass(frozen=True)
class Plan:
    sql: str
    params: tuple
    columns: tuple
    types: tuple
    renderers: tuple
    limit: Const | None  # None: no LIMIT (PostHog's paginator: 100 rows + hasMore)
    offset: Const | None
    table: str | None = None  # the FROM table: "events", "persons", "groups" or None
    joins_persons: bool = False  # an events query that reads the current Person through a join
    ts_bounds: tuple = ()  # ((op, param name, timestamp on the left), ...): top-level bounds on timestamp
    # The current Person's columns the joined modes read, as a per-connection temporary table (see
    # PersonSource); ``sql`` joins it by name. None: the plan reads no Person through a join.
    person_source: PersonSource | None = None
    # The same query answering one JSON array text per row (``json_array(...)``): only for plans whose
    # columns are all text that json.dumps would print the same (strings, UUIDs, SQL-rendered times).
    json_sql: str | None = None

    def bind(self, values: dict, env: dict) -> dict:
        out: dict[str, Any] = {}
        for p in self.params:
            if p.has_fixed:
                out[p.name] = p.fixed
                continue
            kind, key = p.src
            raw = values.get(key) if kind == "val" else env[key] if kind == "env" else key
            out[p.name] = _apply(p, raw)
        return out


def _apply(p: Param, raw: Any) -> Any:
    if p.as_list:
        items = [x for x in raw if x is not None]
        if p.conv:
            items = [p.conv(x) for x in items]
        return json.dumps(items)
    if isinstance(raw, bool):
        return int(raw)
    return p.conv(raw) if p.conv and raw is not None else raw


# --- HogQL text of an expression (PostHog names unaliased columns by printing them) --------------
_IDENT_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_CMP_FUNCS = {
    "==": "equals", "!=": "notEquals", "<": "less", "<=": "lessOrEquals", ">": "greater",
    ">=": "greaterOrEquals", "like": "like", "not like": "notLike", "ilike": "ilike",
    "not ilike": "notILike", "in": "in", "not in": "notIn",
}
_ARITH_FUNCS = {"+": "plus", "-": "minus", "*": "multiply", "/": "divide", "%": "modulo"}


def _ident(x: Any) -> str:
    if isinstance(x, int):
        return str(x)
    if _IDENT_RE.match(x):
        return x
    return "`" + x.replace("\\", "\\\\").replace("`", "``") + "`"


def _string_literal(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def print_hogql(n: dict | None, values: dict) -> str:
    if n is None:
        return "NULL"
    k = n.get("node")
    if k == "Constant" or (k == "Placeholder" and n["expr"].get("node") == "Field"):
        v = n.get("value") if k == "Constant" else values.get(n["expr"]["chain"][0])
        if v is None:
            return "NULL"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return _string_literal(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(print_hogql({"node": "Constant", "value": x}, values) for x in v) + "]"
        return str(v)
    if k == "Field":
        return ".".join(_ident(c) for c in n["chain"])
    if k == "Alias":
        return print_hogql(n["expr"], values)
    if k == "Call":
        args = ", ".join(print_hogql(a, values) for a in n.get("args") or [])
        return f"{n['name']}({'DISTINCT ' if n.get('distinct') else ''}{args})"
    if k == "CompareOperation":
        name = _CMP_FUNCS.get(n["op"], n["op"])
        return f"{name}({print_hogql(n['left'], values)}, {print_hogql(n['right'], values)})"
    if k == "ArithmeticOperation":
        name = _ARITH_FUNCS.get(n["op"], n["op"])
        return f"{name}({print_hogql(n['left'], values)}, {print_hogql(n['right'], values)})"
    if k in ("And", "Or"):
        return f"{k.lower()}({', '.join(print_hogql(e, values) for e in n['exprs'])})"
    if k == "Not":
        return f"not({print_hogql(n['expr'], values)})"
    if k == "Tuple":
        return f"tuple({', '.join(print_hogql(e, values) for e in n['exprs'])})"
    if k == "Array":
        return f"[{', '.join(print_hogql(e, values) for e in n['exprs'])}]"
    if k == "ArrayAccess":
        return f"{print_hogql(n['array'], values)}[{print_hogql(n['property'], values)}]"
    if k == "TupleAccess":
        return f"{print_hogql(n['tuple'], values)}.{n['index']}"
    return k or "?"


# --- the compiler --------------------------------------------------------------------------------
_AGGREGATES = {"count", "countIf", "min", "max", "sum", "avg", "uniq", "minIf", "maxIf", "sumIf", "avgIf",
               "uniqIf", "argMax", "argMin"}
_CASE_INSENSITIVE = {"count", "sum", "min", "max", "avg", "coalesce", "lower", "upper", "length", "if",
                     "now", "today", "isnull", "isnotnull", "ifnull"}
_INTERVALS = {
    "toIntervalSecond": "second", "toIntervalMinute": "minute", "toIntervalHour": "hour",
    "toIntervalDay": "day", "toIntervalWeek": "week", "toIntervalMonth": "month",
    "toIntervalQuarter": "quarter", "toIntervalYear": "year",
}
_NUMERIC = {"num", "bool"}
_COMPARE_FORMS = {v: k for k, v in _CMP_FUNCS.items()}  # equals(a, b) is a = b, and so on
_ARITH_FORMS = {v: k for k, v in _ARITH_FUNCS.items()}


class Compiler:
    def __init__(self, values: dict, semantics: Semantics | None = None) -> None:
        self.values = values
        self.sem = semantics or Semantics()
        self.ptypes = {(k, n): t for k, n, t in self.sem.types}
        self._capture = False
        self.ts_bounds: list[tuple] = []
        self.params: list[Param] = []
        self._param_index: dict[tuple, str] = {}
        self.table: str | None = None
        self.qualifier: str | None = None
        self.uses_person = False
        self.person_extracts: list[str] = []  # JSON extractions over persons.properties (pj.x<i>)
        self.group_joins: set[int] = set()  # events.group_N read: groups of type N joined as gN
        self.aliases: dict[str, dict] = {}
        self.alias_stack: list[str] = []
        self.allow_agg = False
        self.in_agg = False
        self.group_sqls: set[str] = set()

    # parameters
    def bind(self, src: tuple, conv: Callable | None = None, as_list: bool = False) -> str:
        key = (src, conv, as_list)
        if key in self._param_index:
            return self._param_index[key]
        name = f"p{len(self.params)}"
        p = Param(name, src, conv, as_list)
        if src[0] == "lit":
            p = replace(p, fixed=_apply(p, src[1]), has_fixed=True)  # literal conversion errors surface now
        self.params.append(p)
        self._param_index[key] = ":" + name
        return ":" + name

    def mk(self, sql: str, t: str, nullable: bool, kind: str, *parts: X, **kw: Any) -> X:
        free: frozenset = frozenset()
        for p in parts:
            free |= p.free
        agg = kw.pop("agg", False) or any(p.agg for p in parts)
        if sql in self.group_sqls:
            free = frozenset()
        return X(sql, t, nullable, kind, agg=agg, free=free, **kw)

    # entry point
    def compile(self, ast: dict) -> Plan:
        if ast.get("node") == "SelectSetQuery":
            raise unsupported("UNION, INTERSECT and EXCEPT")
        if ast.get("node") != "SelectQuery":
            raise unsupported(f"A {ast.get('node')} statement")
        for key, val in ast.items():
            if key not in _SELECT_KEYS and val not in (None, False, [], {}):
                raise unsupported(_CLAUSE_LABELS.get(key, f"The {key} clause"))
        from_sql = self._from(ast.get("select_from"))

        for item in ast.get("select") or []:
            if item.get("node") == "Alias":
                if item["alias"] in self.aliases:
                    raise query_error(f"Cannot redefine an alias with the name: {item['alias']}")
                self.aliases[item["alias"]] = item["expr"]

        group_x: list[X] = []
        self.allow_agg = False
        for g in ast.get("group_by") or []:
            gx = self.ex(g)
            if gx.kind in ("tuple", "list", "interval"):
                raise unsupported("GROUP BY on a tuple or interval")
            group_x.append(gx)
        self.group_sqls = {g.sql for g in group_x}

        self.allow_agg = True
        select: list[tuple[X, str]] = []
        for item in ast.get("select") or []:
            if item.get("node") == "Field" and item["chain"][-1] == "*":
                raise unsupported("SELECT *")
            x = self.ex(item["expr"] if item.get("node") == "Alias" else item)
            if x.kind in ("tuple", "list", "interval"):
                raise unsupported("Tuples, arrays and intervals in the result")
            if item.get("node") == "Alias":
                name = item["alias"]
            elif x.name is not None:
                name = x.name
            else:
                name = print_hogql(item, self.values)
            select.append((x, name))
        if not select:
            raise query_error("No columns selected")

        self.allow_agg = False
        where_sql = None
        if ast.get("where") is not None:
            # top-level conjuncts one by one, so that bounds on timestamp are seen (the cost model)
            w = ast["where"]
            conjuncts = w["exprs"] if w.get("node") == "And" else [w]
            parts = []
            for c in conjuncts:
                self._capture = self.table == "events"
                try:
                    x = self.ex(c)
                finally:
                    self._capture = False
                parts.append(self._truth(x))
            where_sql = parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

        self.allow_agg = True
        having_sql = None
        having_x = None
        if ast.get("having") is not None:
            having_x = self.ex(ast["having"])
            having_sql = self._truth(having_x)
        order: list[tuple[X, str, str]] = []
        for o in ast.get("order_by") or []:
            if o.get("node") != "OrderExpr":
                raise unsupported(f"ORDER BY {o.get('node')}")
            if o.get("with_fill"):
                raise unsupported("ORDER BY ... WITH FILL")
            ox = self.ex(o["expr"])
            if ox.kind in ("tuple", "list", "interval"):
                raise unsupported("ORDER BY on a tuple")
            order.append((ox, "DESC" if o.get("order") == "DESC" else "ASC", print_hogql(o["expr"], self.values)))

        grouped = bool(group_x) or any(x.agg for x, _ in select) or (having_x is not None)
        if grouped:
            for x, name in select + [(ox, label) for ox, _, label in order]:
                if x.free - self.group_sqls:
                    raise HogQLError(
                        "not_an_aggregate",
                        f"Column `{name}` is not under aggregate function and not in GROUP BY",
                    )

        limit = self._int_clause(ast.get("limit"), "LIMIT")
        offset = self._int_clause(ast.get("offset"), "OFFSET")

        outputs = [_output_sql(x) for x, _ in select]
        head = "SELECT " + ("DISTINCT " if ast.get("distinct") else "")
        sql = []
        source = None
        if from_sql:
            sql.append(" FROM " + from_sql)
            for i in sorted(self.group_joins):
                # join_with_group_n_table: LEFT JOIN the groups of type N ON $group_N = key (a missing
                # group reads ClickHouse's defaults: '' and 1970-01-01, see _group_join_field)
                sql.append(f" LEFT JOIN groups AS g{i} ON g{i}.group_type_index = {i} "
                           f'AND g{i}.group_key = t."$group_{i}"')
            if self.uses_person:
                sql.append(" LEFT JOIN \x00pj\x00 AS pj ON pj.id = t.person_id")
        if where_sql:
            sql.append(" WHERE " + where_sql)
        if group_x:
            sql.append(" GROUP BY " + ", ".join(g.sql for g in group_x))
        if having_sql:
            sql.append(" HAVING " + having_sql)
        if order:
            keys = []
            for ox, direction, _ in order:
                keys.append(f"{ox.sql} {direction}" + (" NULLS LAST" if ox.nullable else ""))
            sql.append(" ORDER BY " + ", ".join(keys))
        sql.append(" LIMIT :__limit OFFSET :__offset")
        rest = "".join(sql)
        row_sql = head + ", ".join(f"{o} AS c{i}" for i, o in enumerate(outputs)) + rest
        json_sql = None
        if not ast.get("distinct") and all(x.kind in ("str", "uuid") or o != x.sql
                                           for (x, _), o in zip(select, outputs, strict=False)):
            # `->` answers text with SQLite's JSON subtype, which json_array() would embed as JSON
            # (COALESCE and CAST keep it); `|| ''` makes it plain text again.
            parts = [f"({o} || '')" if "->" in o else o for o in outputs]
            json_sql = "SELECT json_array(" + ", ".join(parts) + ")" + rest
        if from_sql and self.uses_person:
            source = person_source(row_sql, self.person_extracts)
            row_sql = row_sql.replace("\x00pj\x00", "temp." + source.name, 1)
            if json_sql is not None:
                json_sql = json_sql.replace("\x00pj\x00", "temp." + source.name, 1)

        return Plan(
            sql=row_sql,
            params=tuple(self.params),
            columns=tuple(name for _, name in select),
            types=tuple((name, x.ch_type) for x, name in select),
            renderers=tuple(None if o != x.sql else _renderer(x) for (x, _), o in zip(select, outputs, strict=False)),
            limit=limit,
            offset=offset,
            table=self.table,
            joins_persons=bool(from_sql) and self.uses_person,
            ts_bounds=tuple(self.ts_bounds),
            person_source=source,
            json_sql=json_sql,
        )

    def _truth(self, x: X) -> str:
        if x.kind in ("tuple", "list", "interval"):
            raise query_error("Illegal type of a filter: a filter must be a boolean expression")
        return x.sql

    def _int_clause(self, n: dict | None, label: str) -> Const | None:
        if n is None:
            return None
        x = self.ex(n)
        if x.const is None or isinstance(x.const.value, bool) or not isinstance(x.const.value, int):
            raise unsupported(f"A {label} that is not an integer constant")
        if x.const.value < 0:
            raise query_error(f"{label} must not be negative")
        return x.const

    # FROM
    def _from(self, j: dict | None) -> str | None:
        if j is None:
            return None
        if j.get("node") != "JoinExpr":
            raise unsupported(f"FROM {j.get('node')}")
        if j.get("next_join") is not None or j.get("join_type") or j.get("constraint") is not None:
            raise unsupported("JOIN")
        for key in ("sample", "table_final", "table_args", "column_aliases"):
            if j.get(key):
                raise unsupported(f"FROM ... {key.replace('_', ' ').upper()}")
        table = j.get("table") or {}
        if table.get("node") in ("SelectQuery", "SelectSetQuery"):
            raise unsupported("Subqueries")
        if table.get("node") == "Placeholder":
            raise unsupported("A placeholder as the table")
        if table.get("node") != "Field":
            raise unsupported(f"FROM {table.get('node')}")
        name = ".".join(str(c) for c in table["chain"])
        if name in ("events", "persons", "groups"):
            self.table = name
            self.qualifier = j.get("alias") or name
            return f"{name} AS t"
        if name in _OTHER_TABLES or name.startswith(("system.", "raw_")):
            raise unsupported(f"The table `{name}`")
        raise query_error(f'Unknown table "{name}".')

    # expressions
    def ex(self, n: dict) -> X:
        k = n.get("node")
        if k == "Constant":
            return self.const(("lit", n.get("value")), n.get("value"))
        if k == "Placeholder":
            return self.placeholder(n)
        if k == "Field":
            return self.field(list(n["chain"]))
        if k == "Alias":
            return self.ex(n["expr"])
        if k in ("ArrayAccess", "TupleAccess"):
            return self.access(n)
        if k == "Call":
            return self.call(n)
        if k == "CompareOperation":
            return self.compare(n)
        if k in ("And", "Or"):
            parts = [self.ex(e) for e in n["exprs"]]
            for p in parts:
                self._truth(p)
            glue = " AND " if k == "And" else " OR "
            return self.mk("(" + glue.join(p.sql for p in parts) + ")", "UInt8",
                           any(p.nullable for p in parts), "num", *parts)
        if k == "Not":
            inner = self.ex(n["expr"])
            self._truth(inner)
            return self.mk(f"(NOT {inner.sql})", "UInt8", inner.nullable, "num", inner)
        if k == "ArithmeticOperation":
            return self.arithmetic(n)
        if k == "BetweenExpr":
            return self.between(n)
        if k == "Tuple":
            items = tuple(self.ex(e) for e in n["exprs"])
            return self.mk("(" + ", ".join(i.sql for i in items) + ")", "Tuple", False, "tuple", *items,
                           items=items)
        if k == "Array":
            raise unsupported("Array literals outside IN (...)")
        if k in ("SelectQuery", "SelectSetQuery"):
            raise unsupported("Subqueries")
        if k == "Lambda":
            raise unsupported("Lambdas")
        raise unsupported(f"{k} expressions")

    def const(self, src: tuple, v: Any) -> X:
        c = Const(src, v)
        literal = src[0] == "lit"
        if v is None:
            return X("NULL", "Nothing", True, "null", const=c)
        if isinstance(v, bool):
            return X(("1" if v else "0") if literal else self.bind(src), "Bool", False, "bool", const=c)
        if isinstance(v, (int, float)):
            sql = str(v) if literal and isinstance(v, int) else self.bind(src)
            return X(sql, _num_type(v), False, "num", const=c)
        if isinstance(v, str):
            return X(self.bind(src), "String", False, "str", const=c)
        if isinstance(v, (list, tuple)):
            for item in v:
                if item is not None and not isinstance(item, (str, int, float, bool)):
                    raise unsupported(f"A list placeholder holding {type(item).__name__} values")
            return X("", "Array", False, "list", const=c)
        raise unsupported(f"A placeholder value of type {type(v).__name__}")

    def placeholder(self, n: dict) -> X:
        e = n.get("expr") or {}
        if e.get("node") != "Field":
            raise unsupported("Placeholder expressions such as {1 + 2}")
        chain = e["chain"]
        if chain[0] == "filters":
            if len(chain) > 1:
                raise unsupported("{filters.…} placeholders")
            if self.table not in ("events", "groups"):
                raise query_error(FILTERS_WRONG_TABLE_MESSAGE)
            return self.const(("lit", True), True)  # no filters are sent with the query: `true`
        if len(chain) != 1:
            raise unsupported("Placeholders with a dotted name")
        name = chain[0]
        if name not in self.values:
            raise HogQLError(INVALID, f"Global variable not found: {name}")
        return self.const(("val", name), self.values[name])

    # fields
    def field(self, chain: list, printed_name: str | None = None) -> X:
        if len(chain) == 1 and isinstance(chain[0], str) and chain[0] in self.aliases:
            alias = chain[0]
            if alias in self.alias_stack:
                raise query_error(f"Cyclic alias: {alias}")
            self.alias_stack.append(alias)
            try:
                return replace(self.ex(self.aliases[alias]), name=alias)
            finally:
                self.alias_stack.pop()
        if self.table is None:
            raise query_error(f"Unable to resolve field: {chain[0]}")
        if len(chain) > 1 and chain[0] == self.qualifier:
            chain = chain[1:]
        head = chain[0]
        if self.table == "events":
            x = self._events_field(chain)
        elif self.table == "groups":
            x = self._groups_field(chain)
        else:
            x = self._persons_field(chain, "t")
        if x is None:
            where = {"events": _EVENTS_ELSEWHERE, "groups": _GROUPS_ELSEWHERE}.get(self.table, _PERSONS_ELSEWHERE)
            if head in where or (isinstance(head, str) and head.startswith("$virt_")):
                raise unsupported(f"The {self.table} field `{head}`")
            raise query_error(f"Unable to resolve field: {head}")
        if printed_name is not None:
            x = replace(x, name=printed_name)
        return x

    def _col(self, sql: str, t: str, kind: str, name: str, nullable: bool = False) -> X:
        return X(sql, t, nullable, kind, free=frozenset({sql}), name=name)

    def _plain(self, chain: list, x: X) -> X:
        if len(chain) > 1:
            raise query_error(f"Unable to resolve field: {'.'.join(str(c) for c in chain)}")
        return x

    def _events_field(self, chain: list) -> X | None:
        head = chain[0]
        simple = {
            "uuid": ("t.uuid", "UUID", "uuid"),
            "event": ("t.event", "String", "str"),
            "distinct_id": ("t.distinct_id", "String", "str"),
            "person_id": ("t.person_id", "UUID", "uuid"),
            "timestamp": ("t.timestamp", DT6, "dt"),
            "created_at": ("t.created_at", DT6, "dt"),
        }
        if head in simple:
            sql, t, kind = simple[head]
            return self._plain(chain, self._col(sql, t, kind, head))
        if head in _GROUP_COLUMNS:  # StringDatabaseField(nullable=False): '' when the event has no such group
            return self._plain(chain, self._col(f't."{head}"', "String", "str", head))
        if head in _GROUP_JOINS:
            return self._group_join_field(_GROUP_JOINS[head], chain)
        if head == "properties":
            if len(chain) == 1:
                return self._col("t.properties", "String", "str", "properties")
            return self._property("t.properties", chain[1:], "event")
        if head == "person":
            if len(chain) == 1:
                raise query_error("Can't select a table when a column is expected: person")
            sub = chain[1]
            stamped = self.sem.poe == POE_STAMPED
            if sub == "id":
                if stamped:  # PoE: person.id is events.person_id (after overrides)
                    return self._plain(chain[1:], self._col("t.person_id", "UUID", "uuid", "id"))
                self.uses_person = True
                return self._plain(chain[1:], self._col(f"COALESCE(pj.id, '{ZERO_UUID}')", "UUID", "uuid", "id"))
            if sub == "properties":
                base = self._person_properties_base()
                if len(chain) > 2:
                    return self._property(base, chain[2:], "person")
                return self._col(f"COALESCE({base}, '')", "String", "str", "properties")
            self.uses_person = True
            if sub == "created_at":
                return self._plain(chain[1:], self._col(
                    f"COALESCE(substr(pj.created_at, 1, 23) || '000', '{EPOCH}')", DT3, "dt", "created_at"))
            if sub == "is_identified":
                return self._plain(chain[1:], self._col("COALESCE(pj.is_identified, 0)", "Int8", "num",
                                                        "is_identified"))
            if sub in _PERSONS_ELSEWHERE or (isinstance(sub, str) and sub.startswith("$virt_")):
                raise unsupported(f"The persons field `{sub}`")
            raise query_error(f"Unable to resolve field: {sub}")
        return None

    def _persons_field(self, chain: list, t: str) -> X | None:
        head = chain[0]
        if head == "id":
            return self._plain(chain, self._col(f"{t}.id", "UUID", "uuid", "id"))
        if head == "created_at":
            return self._plain(chain, self._col(f"(substr({t}.created_at, 1, 23) || '000')", DT3, "dt",
                                                "created_at"))
        if head == "is_identified":
            return self._plain(chain, self._col(f"{t}.is_identified", "Int8", "num", "is_identified"))
        if head == "properties":
            if len(chain) == 1:
                return self._col(f"{t}.properties", "String", "str", "properties")
            return self._property(f"{t}.properties", chain[1:], "person")
        return None

    def _groups_field(self, chain: list) -> X | None:
        """The groups table (posthog/hogql/database/schema/groups.py GROUPS_TABLE_FIELDS): index, key,
        created_at, updated_at, properties. ``properties.x`` is not typed here: PostHog's PropertyFinder
        types a groups-table property only with a ``group_id`` global, which API queries never have."""
        head = chain[0]
        if head == "index":
            return self._plain(chain, self._col("t.group_type_index", "UInt8", "num", "index"))
        if head == "key":
            return self._plain(chain, self._col("t.group_key", "String", "str", "key"))
        if head == "created_at":
            return self._plain(chain, self._col("(substr(t.created_at, 1, 23) || '000')", DT3, "dt", "created_at"))
        if head == "updated_at":
            return self._plain(chain, self._col("(substr(t.created_at, 1, 19) || '.000000')", DTN, "dt",
                                                "updated_at"))
        if head == "properties":
            if len(chain) == 1:
                return self._col("t.properties", "String", "str", "properties")
            return self._property("t.properties", chain[1:], "groups")
        return None

    def _group_join_field(self, index: int, chain: list) -> X:
        """events.group_N: PostHog's LazyJoin to the groups of type N on ``$group_N = key`` (the group's
        current properties). ClickHouse's LEFT JOIN fills a missing group with its types' defaults, so
        ``key`` reads '', ``created_at`` 1970-01-01 and every property NULL (JSONExtractRaw of '').
        ``properties.x`` is typed by the group type's property definitions (PropertySwapper's
        group_properties, keyed by group type index)."""
        if len(chain) == 1:
            raise query_error(f"Can't select a table when a column is expected: {chain[0]}")
        self.group_joins.add(index)
        g = f"g{index}"
        sub = chain[1]
        if sub == "key":
            return self._plain(chain[1:], self._col(f"COALESCE({g}.group_key, '')", "String", "str", "key"))
        if sub == "index":
            return self._plain(chain[1:], self._col(f"COALESCE({g}.group_type_index, 0)", "UInt8", "num", "index"))
        if sub == "created_at":
            return self._plain(chain[1:], self._col(
                f"COALESCE(substr({g}.created_at, 1, 23) || '000', '{EPOCH}')", DT3, "dt", "created_at"))
        if sub == "updated_at":
            return self._plain(chain[1:], self._col(
                f"COALESCE(substr({g}.created_at, 1, 19) || '.000000', '{EPOCH}')", DTN, "dt", "updated_at"))
        if sub == "properties":
            if len(chain) > 2:
                return self._property(f"{g}.properties", chain[2:], f"group_{index}")
            return self._col(f"COALESCE({g}.properties, '')", "String", "str", "properties")
        if sub in _GROUPS_ELSEWHERE:
            raise unsupported(f"The groups field `{sub}`")
        raise query_error(f"Unable to resolve field: {sub}")

    def _raw_json(self, base: str, keys: list) -> str:
        """_raw_json, with an extraction from the joined Person's properties read from its PersonSource
        column (computed once per Person instead of once per event row)."""
        sql = _raw_json(base, keys)
        if base != "pj.properties" or sql == "NULL":
            return sql
        expr = _raw_json("properties", keys)
        if expr not in self.person_extracts:
            self.person_extracts.append(expr)
        return f"pj.x{self.person_extracts.index(expr)}"

    def _person_properties_base(self) -> str:
        """The SQL of the JSON text ``person.properties`` reads on the events table, per PoE mode."""
        if self.sem.poe == POE_STAMPED:
            return "t.person_properties"
        self.uses_person = True
        return "pj.properties"

    def _property(self, base: str, keys: list, kind: str) -> X:
        """replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(base, keys...), ''), 'null'), '^"|"$', ''),
        then PropertySwapper's cast for a typed top-level property (posthog/hogql/transforms/
        property_types.py _field_type_to_property_call): Numeric -> toFloat (accurateCastOrNull to
        Float64), Boolean -> toBool(transform(toString(x), ['true', 'false'], [1, 0], NULL)),
        DateTime -> toDateTime (parseDateTime64BestEffortOrNull). A materialized property reads
        nullIf(nullIf(mat_col, ''), 'null') (PostHog's printer, materialized property access).
        """
        name = "__".join(str(k) for k in keys)
        raw = self._raw_json(base, keys)
        materialized = self.sem.materialized and len(keys) == 1 and keys[0] in (
            MATERIALIZED_PERSON_PROPERTIES if kind == "person" else MATERIALIZED_EVENT_PROPERTIES)
        sql = f"ph_unq_mat({raw})" if materialized else f"ph_unq({raw})"
        ptype = self.ptypes.get((kind, keys[0])) if len(keys) == 1 else None
        if ptype == "Numeric":
            sql = f"ph_to_float({sql})"
            return X(sql, "Float64", True, "num", free=frozenset({sql}), name=name)
        if ptype == "Boolean":
            sql = f"(CASE {sql} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
            return X(sql, "Bool", True, "bool", free=frozenset({sql}), name=name)
        if ptype == "DateTime":
            sql = f"ph_parse_dt({sql})"
            return X(sql, DT6, True, "dt", free=frozenset({sql}), name=name)
        return X(sql, "String", True, "str", free=frozenset({sql}), name=name)

    def access(self, n: dict) -> X:
        keys: list = []
        node = n
        while node.get("node") in ("ArrayAccess", "TupleAccess"):
            if node["node"] == "TupleAccess":
                keys.insert(0, node["index"])
                node = node["tuple"]
            else:
                prop = node.get("property") or {}
                value = prop.get("value") if prop.get("node") == "Constant" else None
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    raise unsupported("Array access with a non-constant key")
                keys.insert(0, value)
                node = node["array"]
        if node.get("node") != "Field":
            raise unsupported("Array and tuple access on expressions")
        chain = list(node["chain"])
        bare = chain[1:] if len(chain) > 1 and chain[0] == self.qualifier else chain
        owner = bare[:1] if bare[:1] == ["properties"] else bare[:2]
        if owner not in (["properties"], ["person", "properties"]) and not (
                self.table == "events" and len(owner) == 2 and owner[0] in _GROUP_JOINS and owner[1] == "properties"):
            raise unsupported("Array and tuple access outside properties")
        full = chain + keys
        return self.field(full, printed_name=".".join(_ident(c) for c in full))

    # comparisons
    def _coerce(self, lhs: X, r: X, what: str) -> tuple[X, X]:
        """Make both sides comparable in SQLite the way ClickHouse compares them, or refuse."""
        if lhs.kind == "null" or r.kind == "null":
            return lhs, r
        if lhs.kind in _NUMERIC and r.kind in _NUMERIC:
            return lhs, r
        if lhs.kind == r.kind and lhs.kind in ("str", "uuid", "date", "dt"):
            return lhs, r  # datetimes are all stored as fixed-width UTC text with six decimals
        for a, b, flip in ((lhs, r, False), (r, lhs, True)):
            nb = None
            if a.kind == "dt" and b.kind == "date":
                nb = replace(b, sql=f"({b.sql} || ' 00:00:00.000000')", kind="dt", t=DT0)
            elif b.kind == "str" and b.const is not None and a.kind in ("dt", "date", "uuid", "num", "bool"):
                nb = replace(b, sql=self.bind(b.const.src, _converter_for(a)), kind=a.kind, t=a.t)
            if nb is not None:
                return (nb, a) if flip else (a, nb)
        raise unsupported(f"{what} between {lhs.ch_type} and {r.ch_type}")

    def _nullwrap(self, op: str, lhs: X, r: X, core: str) -> str:
        # posthog/hogql/printer/clickhouse.py visit_compare_operation
        if not lhs.nullable and not r.nullable:
            return core
        lnull = lhs.kind == "null"
        rnull = r.kind == "null"
        if op in ("==", "like", "ilike"):
            if r.const is not None:
                return f"({lhs.sql} IS NULL)" if rnull else f"COALESCE({core}, 0)"
            if lhs.const is not None:
                return f"({r.sql} IS NULL)" if lnull else f"COALESCE({core}, 0)"
            return f"COALESCE({core}, ({lhs.sql} IS NULL AND {r.sql} IS NULL))"
        if op in ("!=", "not like", "not ilike"):
            if r.const is not None:
                return f"({lhs.sql} IS NOT NULL)" if rnull else f"COALESCE({core}, 1)"
            if lhs.const is not None:
                return f"({r.sql} IS NOT NULL)" if lnull else f"COALESCE({core}, 1)"
            return f"COALESCE({core}, ({lhs.sql} IS NOT NULL OR {r.sql} IS NOT NULL))"
        if lnull or rnull:
            return "0"
        return f"COALESCE({core}, 0)"

    def compare(self, n: dict) -> X:
        op = n["op"]
        if op in ("in", "not in"):
            return self.compare_in(n)
        if op not in ("==", "!=", "<", "<=", ">", ">=", "like", "not like", "ilike", "not ilike"):
            raise unsupported(f"The operator {op.upper()}")
        capture, self._capture = self._capture, False
        lhs = self.ex(n["left"])
        r = self.ex(n["right"])
        if lhs.kind == "tuple" or r.kind == "tuple":
            return self.compare_tuple(op, lhs, r)
        if "list" in (lhs.kind, r.kind) or "interval" in (lhs.kind, r.kind):
            raise unsupported(f"Comparing {lhs.ch_type} with {r.ch_type}")
        if op in ("like", "not like", "ilike", "not ilike"):
            for side in (lhs, r):
                if side.kind not in ("str", "null"):
                    raise unsupported(f"{op.upper()} on {side.ch_type}")
            fn = "ph_ilike" if "ilike" in op else "ph_like"
            core = f"{fn}({lhs.sql}, {r.sql})"
            if op.startswith("not"):
                core = f"(NOT {core})"
        else:
            lhs, r = self._coerce(lhs, r, "Comparison")
            sqlop = "=" if op == "==" else op
            core = f"({lhs.sql} {sqlop} {r.sql})"
            if capture and op in ("==", "<", "<=", ">", ">="):
                for a, b, left in ((lhs, r, True), (r, lhs, False)):
                    if a.sql == "t.timestamp" and re.fullmatch(r":p\d+", b.sql):
                        self.ts_bounds.append((op, b.sql[1:], left))
        return self.mk(self._nullwrap(op, lhs, r, core), "UInt8", False, "num", lhs, r)

    def compare_tuple(self, op: str, lhs: X, r: X) -> X:
        if lhs.kind != "tuple" or r.kind != "tuple" or len(lhs.items) != len(r.items):
            raise query_error("Tuples of different sizes cannot be compared")
        if op not in ("==", "!=", "<", "<=", ">", ">="):
            raise unsupported(f"{op.upper()} on tuples")
        pairs = [self._coerce(a, b, "Tuple comparison") for a, b in zip(lhs.items, r.items, strict=False)]
        if any(a.nullable or b.nullable for a, b in pairs):
            raise unsupported("Tuple comparisons on nullable values")
        sqlop = "=" if op == "==" else op
        left = "(" + ", ".join(a.sql for a, _ in pairs) + ")"
        right = "(" + ", ".join(b.sql for _, b in pairs) + ")"
        return self.mk(f"({left} {sqlop} {right})", "UInt8", False, "num", lhs, r)

    def compare_in(self, n: dict) -> X:
        negate = n["op"] == "not in"
        lhs = self.ex(n["left"])
        if lhs.kind in ("tuple", "list", "interval"):
            raise unsupported("IN with a tuple on the left")
        rn = n["right"]
        if rn.get("node") in ("SelectQuery", "SelectSetQuery"):
            raise unsupported("IN (subquery)")
        parts: list[X] = [lhs]
        items = [self.ex(e) for e in rn["exprs"]] if rn.get("node") in ("Tuple", "Array") else [self.ex(rn)]
        has_null = False
        if len(items) == 1 and items[0].kind == "list":
            lst = items[0].const
            # a "list" X is only ever built from a list placeholder, which always carries its Const
            assert lst is not None
            sig = value_signature(lst.value)
            has_null = "N" in sig
            elem_kinds = {c for c in sig[2:-1] if c != "N"}
            conv = None
            if elem_kinds:
                probe_kind = {"s": "str", "i": "num", "f": "num", "b": "num"}
                probes = {probe_kind[c] for c in elem_kinds}
                if len(probes) > 1:
                    raise unsupported("A list placeholder mixing strings and numbers")
                probe = probes.pop()
                if probe == "str" and lhs.kind in ("dt", "date", "uuid", "num", "bool"):
                    conv = _converter_for(lhs)
                elif not ((probe == "num" and lhs.kind in _NUMERIC) or probe == lhs.kind == "str"):
                    raise unsupported(f"IN between {lhs.ch_type} and a list of {probe} values")
            core = f"({lhs.sql} IN (SELECT value FROM json_each({self.bind(lst.src, conv, as_list=True)})))"
        else:
            kept = []
            for it in items:
                if it.kind == "null":
                    has_null = True
                    continue
                if it.kind in ("tuple", "list", "interval"):
                    raise unsupported("Nested tuples or lists in IN (...)")
                _, it2 = self._coerce(lhs, it, "IN")
                kept.append(it2)
                parts.append(it2)
            core = f"({lhs.sql} IN ({', '.join(i.sql for i in kept)}))" if kept else "0"
        # ClickHouse runs PostHog's queries with transform_null_in=1: NULL IN (..., NULL) is true.
        if lhs.nullable or any(p.nullable for p in parts[1:]):
            core = f"COALESCE({core}, {1 if has_null else 0})" if lhs.nullable else f"COALESCE({core}, 0)"
        sql = f"(NOT {core})" if negate else core
        return self.mk(sql, "UInt8", False, "num", *parts)

    def between(self, n: dict) -> X:
        e, lo, hi = self.ex(n["expr"]), self.ex(n["low"]), self.ex(n["high"])
        e1, lo = self._coerce(e, lo, "BETWEEN")
        _e2, hi = self._coerce(e, hi, "BETWEEN")
        word = "NOT BETWEEN" if n.get("negated") else "BETWEEN"
        core = f"({e1.sql} {word} {lo.sql} AND {hi.sql})"
        if e.nullable or lo.nullable or hi.nullable:
            core = f"COALESCE({core}, 0)"
        return self.mk(core, "UInt8", False, "num", e, lo, hi)

    def arithmetic(self, n: dict) -> X:
        op = n["op"]
        lhs, r = self.ex(n["left"]), self.ex(n["right"])
        if op in ("+", "-") and r.kind == "interval" and lhs.kind == "dt":
            return self._dt_add(lhs, r, -1 if op == "-" else 1)
        if op == "+" and lhs.kind == "interval" and r.kind == "dt":
            return self._dt_add(r, lhs, 1)
        if lhs.kind not in _NUMERIC | {"null"} or r.kind not in _NUMERIC | {"null"}:
            raise unsupported(f"Arithmetic ({op}) on {lhs.ch_type} and {r.ch_type}")
        nullable = lhs.nullable or r.nullable
        if op == "/":
            return self.mk(f"(CAST({lhs.sql} AS REAL) / {r.sql})", "Float64", True, "num", lhs, r)
        if op == "%":
            return self.mk(f"({lhs.sql} % {r.sql})", "Int64", nullable, "num", lhs, r)
        is_float = "Float" in lhs.t or "Float" in r.t
        return self.mk(f"({lhs.sql} {op} {r.sql})", "Float64" if is_float else "Int64", nullable, "num", lhs, r)

    def _dt_add(self, dt: X, interval: X, sign: int) -> X:
        unit = interval.t
        amount = interval.sql if sign > 0 else f"(-({interval.sql}))"
        return self.mk(f"ph_dt_add({dt.sql}, {amount}, '{unit}')", dt.t, dt.nullable or interval.nullable,
                       "dt", dt, interval)

    # functions
    def call(self, n: dict) -> X:
        name = n["name"]
        if n.get("over_expr") is not None or n.get("over_identifier") is not None:
            raise unsupported("Window functions")
        if n.get("params"):
            raise unsupported(f"The parametric function {name}(...)(...)")
        if n.get("filter_expr") is not None or n.get("order_by") or n.get("within_group"):
            raise unsupported(f"{name}(...) with FILTER, ORDER BY or WITHIN GROUP")
        if name.lower() in ("not", "and", "or"):
            args = n.get("args") or []
            if name.lower() == "not":
                self._arity(name, args, 1)
                return self.ex({"node": "Not", "expr": args[0]})
            self._arity(name, args, 2, 1000)
            return self.ex({"node": name.lower().capitalize(), "exprs": args})
        if name in _COMPARE_FORMS or name in _ARITH_FORMS:
            args = n.get("args") or []
            self._arity(name, args, 2)
            if name in _COMPARE_FORMS:
                return self.ex({"node": "CompareOperation", "op": _COMPARE_FORMS[name], "left": args[0],
                                "right": args[1]})
            return self.ex({"node": "ArithmeticOperation", "op": _ARITH_FORMS[name], "left": args[0],
                            "right": args[1]})
        key = name.lower() if name.lower() in _CASE_INSENSITIVE else name
        key = {"isnull": "isNull", "isnotnull": "isNotNull", "ifnull": "ifNull"}.get(key, key)
        if key in _AGGREGATES:
            return self.aggregate(key, n)
        if n.get("distinct"):
            raise query_error(f"DISTINCT is only allowed in aggregate functions, not in {name}()")
        args_n = n.get("args") or []
        if key in _INTERVALS:
            self._arity(name, args_n, 1)
            a = self.ex(args_n[0])
            if a.kind not in _NUMERIC:
                raise unsupported(f"{name}() on {a.ch_type}")
            return self.mk(a.sql, _INTERVALS[key], a.nullable, "interval", a)
        handler = getattr(self, "fn_" + key, None)
        if handler is None:
            raise unsupported(f"The function {name}()")
        return handler(name, args_n)

    @staticmethod
    def _arity(name: str, args: list, lo: int, hi: int | None = None) -> None:
        hi = lo if hi is None else hi
        if not lo <= len(args) <= hi:
            expected = str(lo) if lo == hi else f"{lo} to {hi}"
            raise query_error(f"Function '{name}' expects {expected} argument{'s' if hi != 1 else ''}, "
                              f"found {len(args)}")

    def aggregate(self, key: str, n: dict) -> X:
        name = n["name"]
        if not self.allow_agg:
            raise HogQLError("illegal_aggregation", f"Aggregate function {name}() is found in WHERE or GROUP BY")
        if self.in_agg:
            raise HogQLError("illegal_aggregation",
                             f"Aggregate function {name}() is found inside another aggregate function")
        self.in_agg = True
        try:
            args = [self.ex(a) for a in n.get("args") or []]
        finally:
            self.in_agg = False
        distinct = bool(n.get("distinct"))
        for a in args:
            if a.kind in ("tuple", "list", "interval"):
                raise unsupported(f"{name}() on a tuple, list or interval")

        def out(sql: str, t: str, nullable: bool, kind: str) -> X:
            return X(sql, t, nullable, kind, agg=True)

        if key == "count":
            if not args:
                return out("COUNT(*)", "UInt64", False, "num")
            if len(args) > 1:
                raise unsupported("count() with several arguments")
            return out(f"COUNT({'DISTINCT ' if distinct else ''}{args[0].sql})", "UInt64", False, "num")
        if distinct:
            raise unsupported(f"{name}(DISTINCT ...)")
        if key in ("argMax", "argMin"):
            # ClickHouse argMax(arg, val): arg of the row with the largest val; rows whose arg or val is NULL
            # are skipped ("both skip Null"); over no rows NULL, or the type's default when arg is not
            # nullable. Ties: the first row met (ClickHouse: any of them).
            self._arity(name, args, 2)
            value, by = args
            if by.kind == "null":
                raise unsupported(f"{name}() by NULL")
            sql = f"{'ph_argmax' if key == 'argMax' else 'ph_argmin'}({value.sql}, {by.sql})"
            if not value.nullable:
                default = {"dt": f"'{EPOCH}'", "date": "'1970-01-01'", "uuid": f"'{ZERO_UUID}'",
                           "str": "''"}.get(value.kind, "0")
                sql = f"COALESCE({sql}, {default})"
            return X(sql, value.t, value.nullable, value.kind, agg=True)
        if key == "uniq":
            self._arity(name, args, 1)
            return out(f"COUNT(DISTINCT {args[0].sql})", "UInt64", False, "num")
        if key.endswith("If"):
            base = key[:-2]
            if base == "count":
                self._arity(name, args, 1)
                return out(f"COUNT(CASE WHEN {args[0].sql} THEN 1 END)", "UInt64", False, "num")
            self._arity(name, args, 2)
            value, cond = args
            picked = replace(value, sql=f"(CASE WHEN {cond.sql} THEN {value.sql} END)")
            if base == "uniq":
                return out(f"COUNT(DISTINCT {picked.sql})", "UInt64", False, "num")
            return self._simple_agg(base, name, picked, value.nullable)
        self._arity(name, args, 1)
        return self._simple_agg(key, name, args[0], args[0].nullable)

    def _simple_agg(self, key: str, name: str, a: X, nullable: bool) -> X:
        if key in ("min", "max"):
            sql = f"{key.upper()}({a.sql})"
            if not nullable:  # ClickHouse returns the type's default over no rows, not NULL
                default = {"dt": f"'{EPOCH}'", "date": "'1970-01-01'", "uuid": f"'{ZERO_UUID}'",
                           "str": "''"}.get(a.kind, "0")
                sql = f"COALESCE({sql}, {default})"
            return X(sql, a.t, nullable, a.kind, agg=True)
        if a.kind not in _NUMERIC:
            raise unsupported(f"{name}() on {a.ch_type} (convert it with toFloat() or toInt())")
        if key == "sum":
            t = "Float64" if "Float" in a.t else "UInt64" if a.t.startswith("UInt") or a.t == "Bool" else "Int64"
            sql = f"SUM({a.sql})" if nullable else f"COALESCE(SUM({a.sql}), 0)"
            return X(sql, t, nullable, "num", agg=True)
        if key == "avg":
            return X(f"AVG({a.sql})", "Float64", nullable, "num", agg=True)
        raise unsupported(f"The function {name}()")

    def _args(self, name: str, args_n: list, lo: int, hi: int | None = None) -> list[X]:
        self._arity(name, args_n, lo, hi)
        return [self.ex(a) for a in args_n]

    def fn_toString(self, name: str, args_n: list) -> X:
        (a,) = self._args(name, args_n, 1)
        if a.kind in ("str", "uuid", "date") or (a.kind == "dt" and a.t == DT6):
            sql = a.sql
        elif a.kind == "dt":
            sql = f"substr({a.sql}, 1, {23 if a.t == DT3 else 19})"
        elif a.kind == "bool":
            sql = f"(CASE WHEN {a.sql} THEN 'true' ELSE 'false' END)"
        elif a.kind == "num":
            sql = f"ph_num_str({a.sql})"
        elif a.kind == "null":
            sql = "NULL"
        else:
            raise unsupported(f"toString() on {a.ch_type}")
        return self.mk(sql, "String", a.nullable, "str", a)

    def _cast(self, name: str, args_n: list, fn: str, t: str) -> X:
        (a,) = self._args(name, args_n, 1)
        if a.kind not in ("str", "num", "bool", "null"):
            raise unsupported(f"{name}() on {a.ch_type}")
        return self.mk(f"{fn}({a.sql})", t, True, "num", a)

    def fn_toInt(self, name: str, args_n: list) -> X:
        return self._cast(name, args_n, "ph_to_int", "Int64")  # accurateCastOrNull(x, 'Int64')

    def fn_toFloat(self, name: str, args_n: list) -> X:
        return self._cast(name, args_n, "ph_to_float", "Float64")  # accurateCastOrNull(x, 'Float64')

    def _string_fn(self, name: str, args_n: list, sql_fn: str, t: str = "String", kind: str = "str") -> X:
        (a,) = self._args(name, args_n, 1)
        if a.kind not in ("str", "null"):
            raise unsupported(f"{name}() on {a.ch_type}")
        return self.mk(sql_fn.format(a.sql), t, a.nullable, kind, a)

    def fn_lower(self, name: str, args_n: list) -> X:
        return self._string_fn(name, args_n, "lower({})")  # ASCII only, like ClickHouse lower()

    def fn_upper(self, name: str, args_n: list) -> X:
        return self._string_fn(name, args_n, "upper({})")

    def fn_length(self, name: str, args_n: list) -> X:
        return self._string_fn(name, args_n, "length(CAST({} AS BLOB))", "UInt64", "num")  # bytes

    def _common(self, name: str, args: list[X]) -> tuple[str, str]:
        kinds = {a.kind for a in args if a.kind != "null"}
        if len(kinds - _NUMERIC) > 1 or (kinds & _NUMERIC and kinds - _NUMERIC):
            raise unsupported(f"{name}() mixing {', '.join(a.ch_type for a in args)}")
        first = next((a for a in args if a.kind != "null"), args[0])
        return first.kind, first.t

    def fn_coalesce(self, name: str, args_n: list) -> X:
        args = self._args(name, args_n, 1, 100)
        kind, t = self._common(name, args)
        return self.mk(f"COALESCE({', '.join(a.sql for a in args)})", t, all(a.nullable for a in args), kind,
                       *args)

    def fn_ifNull(self, name: str, args_n: list) -> X:
        args = self._args(name, args_n, 2)
        kind, t = self._common(name, args)
        return self.mk(f"IFNULL({args[0].sql}, {args[1].sql})", t, args[0].nullable and args[1].nullable, kind,
                       *args)

    def fn_isNull(self, name: str, args_n: list) -> X:
        (a,) = self._args(name, args_n, 1)
        return self.mk(f"({a.sql} IS NULL)", "UInt8", False, "num", a)

    def fn_isNotNull(self, name: str, args_n: list) -> X:
        (a,) = self._args(name, args_n, 1)
        return self.mk(f"({a.sql} IS NOT NULL)", "UInt8", False, "num", a)

    def fn_if(self, name: str, args_n: list) -> X:
        c, a, b = self._args(name, args_n, 3)
        kind, t = self._common(name, [a, b])
        return self.mk(f"(CASE WHEN {c.sql} THEN {a.sql} ELSE {b.sql} END)", t, a.nullable or b.nullable, kind,
                       c, a, b)

    def fn_concat(self, name: str, args_n: list) -> X:
        args = self._args(name, args_n, 2, 100)
        parts = []
        for a in args:
            if a.kind == "str":
                parts.append(f"COALESCE({a.sql}, '')")
            elif a.kind == "null":
                parts.append("''")
            else:
                parts.append(f"COALESCE({_to_string_sql(a)}, '')")
        return self.mk("(" + " || ".join(parts) + ")", "String", False, "str", *args)

    def fn_now(self, name: str, args_n: list) -> X:
        self._arity(name, args_n, 0)
        return X(self.bind(("env", "now")), DT6, False, "dt")

    fn_now64 = fn_now

    def fn_today(self, name: str, args_n: list) -> X:
        self._arity(name, args_n, 0)
        return X(self.bind(("env", "today")), "Date", False, "date")

    def fn_toDateTime(self, name: str, args_n: list) -> X:
        args = self._args(name, args_n, 1, 2)
        if len(args) == 2 and not (args[1].kind == "str" and args[1].const is not None
                                   and args[1].const.value in ("UTC", "Etc/UTC")):
            raise unsupported(f"{name}() with a time zone other than 'UTC'")
        a = args[0]
        if a.kind == "dt":
            return a
        if a.kind == "date":
            return self.mk(f"({a.sql} || ' 00:00:00.000000')", DT6, a.nullable, "dt", a)
        if a.kind == "str" and a.const is not None:
            return X(self.bind(a.const.src, _dt_converter(DT6)), DT6, False, "dt")
        if a.kind == "str":
            return self.mk(f"ph_parse_dt({a.sql})", DT6, True, "dt", a)
        if a.kind == "num":
            return self.mk(f"ph_dt_from_unix({a.sql})", DT6, a.nullable, "dt", a)
        if a.kind == "null":
            return X("NULL", DT6, True, "dt")
        raise unsupported(f"{name}() on {a.ch_type}")

    fn_parseDateTimeBestEffort = fn_toDateTime
    fn_parseDateTime64BestEffortOrNull = fn_toDateTime
    fn_parseDateTimeBestEffortOrNull = fn_toDateTime

    def fn_toDateTime64(self, name: str, args_n: list) -> X:
        """toDateTime64(value, 6[, 'UTC']): the events' own type, so a keyset bound stays on the index."""
        if len(args_n) == 1:
            return self.fn_toDateTime(name, args_n)
        self._arity(name, args_n, 2, 3)
        precision = self.ex(args_n[1])
        if precision.const is None or precision.const.value != 6:
            raise unsupported(f"{name}() with a precision other than 6")
        return self.fn_toDateTime(name, [args_n[0], *args_n[2:]])

    def fn_toUUID(self, name: str, args_n: list) -> X:
        (a,) = self._args(name, args_n, 1)
        if a.kind == "uuid":
            return a
        if a.kind == "str" and a.const is not None:
            return X(self.bind(a.const.src, _strict_uuid_converter), "UUID", False, "uuid")
        raise unsupported(f"{name}() on {a.ch_type} other than a constant")

    def fn_JSONExtractRaw(self, name: str, args_n: list) -> X:
        """ClickHouse JSONExtractRaw(json, key...): the value's raw JSON text ('"007"', '4711', 'true',
        'null', '{...}'), '' when a key is missing. On a properties column it reads the stored JSON, so
        neither property types nor materialized columns change it (PostHog's PropertySwapper only
        rewrites JSONExtractString/JSONExtract to materialized columns). Keys are string or integer
        constants or placeholders (whose values are compiled in: see hogql.json_key_placeholders)."""
        self._arity(name, args_n, 1, 100)
        base = self._json_base(args_n[0])
        keys: list = []
        for k in args_n[1:]:
            if k.get("node") == "Constant":
                v = k.get("value")
            elif k.get("node") == "Placeholder" and (k.get("expr") or {}).get("node") == "Field":
                key_name = k["expr"]["chain"][0]
                if key_name not in self.values:
                    raise HogQLError(INVALID, f"Global variable not found: {key_name}")
                v = self.values[key_name]
            else:
                raise unsupported(f"{name}() with a key that is not a constant")
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise query_error(f"Illegal type of argument of function {name}: keys must be strings or integers")
            keys.append(v)
        sql = f"COALESCE({self._raw_json(base, keys)}, '')" if keys else f"COALESCE({base}, '')"
        return X(sql, "String", False, "str", free=frozenset({sql}))

    def _json_base(self, n: dict) -> str:
        """The SQL of a whole properties column given to a JSON function (typing and materialization
        apply to property access only)."""
        if n.get("node") == "Alias":
            n = n["expr"]
        if n.get("node") == "Field":
            chain = list(n["chain"])
            if len(chain) > 1 and chain[0] == self.qualifier:
                chain = chain[1:]
            if self.table is not None and chain == ["properties"]:
                return "t.properties"
            if self.table == "events" and chain == ["person", "properties"]:
                return self._person_properties_base()
            if self.table == "events" and len(chain) == 2 and chain[0] in _GROUP_JOINS and chain[1] == "properties":
                index = _GROUP_JOINS[chain[0]]
                self.group_joins.add(index)
                return f"g{index}.properties"
        raise unsupported("JSON functions on anything but a properties column")

    def fn_toDate(self, name: str, args_n: list) -> X:
        (a,) = self._args(name, args_n, 1)
        if a.kind == "date":
            return a
        if a.kind == "dt":
            return self.mk(f"substr({a.sql}, 1, 10)", "Date", a.nullable, "date", a)
        if a.kind == "str" and a.const is not None:
            return X(self.bind(a.const.src, _date_converter), "Date", False, "date")
        if a.kind == "str":
            return self.mk(f"substr(ph_parse_dt({a.sql}), 1, 10)", "Date", True, "date", a)
        raise unsupported(f"{name}() on {a.ch_type}")

    def fn_toStartOfDay(self, name: str, args_n: list) -> X:
        (a,) = self._args(name, args_n, 1)
        if a.kind == "str":
            a = self.fn_toDateTime("toDateTime", args_n)
        if a.kind not in ("dt", "date"):
            raise unsupported(f"{name}() on {a.ch_type}")
        return self.mk(f"(substr({a.sql}, 1, 10) || ' 00:00:00.000000')", DT0, a.nullable, "dt", a)

    def fn_toUnixTimestamp64Milli(self, name: str, args_n: list) -> X:
        (a,) = self._args(name, args_n, 1)
        if a.kind != "dt":
            raise unsupported(f"{name}() on {a.ch_type}")
        sql = (f"(CAST(strftime('%s', substr({a.sql}, 1, 19)) AS INTEGER) * 1000 "
               f"+ CAST(substr({a.sql}, 21, 3) AS INTEGER))")
        return self.mk(sql, "Int64", a.nullable, "num", a)

    def fn_toUnixTimestamp(self, name: str, args_n: list) -> X:
        (a,) = self._args(name, args_n, 1)
        if a.kind != "dt":
            raise unsupported(f"{name}() on {a.ch_type}")
        return self.mk(f"CAST(strftime('%s', substr({a.sql}, 1, 19)) AS INTEGER)", "UInt32", a.nullable, "num", a)

    def fn_dateDiff(self, name: str, args_n: list) -> X:
        unit, a, b = self._args(name, args_n, 3)
        if unit.kind != "str" or unit.const is None or unit.const.value not in _DIFF_UNITS:
            raise unsupported(f"{name}() with a unit other than {', '.join(sorted(_DIFF_UNITS))}")
        for side in (a, b):
            if side.kind not in ("dt", "date"):
                raise unsupported(f"{name}() on {side.ch_type}")
        u = _DIFF_UNITS[unit.const.value]
        return self.mk(f"ph_date_diff('{u}', {a.sql}, {b.sql})", "Int64", a.nullable or b.nullable, "num",
                       a, b)

    fn_date_diff = fn_dateDiff


def _to_string_sql(a: X) -> str:
    if a.kind in ("str", "uuid", "date") or (a.kind == "dt" and a.t == DT6):
        return a.sql
    if a.kind == "dt":
        return f"substr({a.sql}, 1, {23 if a.t == DT3 else 19})"
    if a.kind == "bool":
        return f"(CASE WHEN {a.sql} THEN 'true' ELSE 'false' END)"
    return f"ph_num_str({a.sql})"


_DIFF_UNITS = {
    "second": "second", "seconds": "second", "minute": "minute", "minutes": "minute", "hour": "hour",
    "hours": "hour", "day": "day", "days": "day", "week": "week", "weeks": "week", "month": "month",
    "months": "month", "quarter": "quarter", "quarters": "quarter", "year": "year", "years": "year",
}


def _sql_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _raw_json(base: str, keys: list) -> str:
    """SQLite `->` returns the raw JSON text of the value, like ClickHouse JSONExtractRaw.

    SQLite matches a quoted path label against the key's raw (escaped) text in the stored JSON, and a
    label cannot contain `"`: such keys go through a Python fallback.
    """
    paths = ["$", "$"]
    for k in keys:
        if isinstance(k, int):
            if k == 0:
                return "NULL"  # ClickHouse JSON indexes start at 1; 0 finds nothing
            step = f"[{k - 1}]" if k > 0 else f"[#{k}]"
            paths = [p + step for p in paths]
            continue
        raw = json.dumps(k, ensure_ascii=False)[1:-1]
        ascii_ = json.dumps(k)[1:-1]
        if '"' in raw:
            return f"ph_rawx({base}, {_sql_literal(json.dumps(keys))})"
        paths = [paths[0] + f'."{raw}"', paths[1] + f'."{ascii_}"']
    if paths[0] == paths[1]:
        return f"({base} -> {_sql_literal(paths[0])})"
    return f"COALESCE({base} -> {_sql_literal(paths[0])}, {base} -> {_sql_literal(paths[1])})"


# --- rendering (posthog/renderers.py: orjson with OPT_UTC_Z) -------------------------------------
def _render_dt_utc(v: Any) -> Any:
    # DateTime64(6, 'UTC'): clickhouse-driver returns an aware datetime; orjson prints RFC 3339 with
    # "Z" and drops the fraction when the microseconds are zero.
    if v is None:
        return None
    frac = v[19:26]
    return v[:10] + "T" + v[11:19] + ("" if frac == ".000000" else frac) + "Z"


def _render_dt_naive(v: Any) -> Any:
    # DateTime64(3) without a zone: clickhouse-driver returns a naive datetime (server and client both
    # in UTC), which orjson prints without an offset.
    if v is None:
        return None
    frac = v[19:26]
    return v[:10] + "T" + v[11:19] + ("" if frac == ".000000" else frac)


def _render_float(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None  # orjson serialises NaN and infinities as null
    return v


def _render_bool(v: Any) -> Any:
    return None if v is None else bool(v)


def _render_date(v: Any) -> Any:
    return None if v is None else v[:10]


_COLUMN_RE = re.compile(r"^t\.[a-z_]+$")


def _output_sql(x: X) -> str:
    """The SQL of a selected value, rendered in SQLite where that is cheap (a DateTime64(6, 'UTC')
    column: the same text as _render_dt_utc, without a Python call per row)."""
    if x.kind == "dt" and x.t == DT6 and _COLUMN_RE.match(x.sql):
        v = x.sql
        # substr(v, 12, 8) || substr(v, 20, 7) is substr(v, 12, 15), whatever v's length: one call fewer
        return (f"(substr({v}, 1, 10) || 'T' || substr({v}, 12, CASE WHEN substr({v}, 20, 7) = '.000000' "
                f"THEN 8 ELSE 15 END) || 'Z')")
    return x.sql


def _renderer(x: X) -> Callable | None:
    if x.kind == "dt":
        return _render_dt_naive if x.t in (DT3, DTN) else _render_dt_utc
    if x.kind == "date":
        return _render_date
    if x.kind == "bool":
        return _render_bool
    if x.t.startswith("Float"):
        return _render_float
    return None


# --- SQLite functions ----------------------------------------------------------------------------
def _unq(r: Any) -> Any:
    if r is None or r == "" or r == "null":
        return None
    start = 1 if r[0] == '"' else 0
    end = len(r) - 1 if r[-1] == '"' and len(r) > start else len(r)
    return r[start:end]


def _unq_mat(r: Any) -> Any:
    # a materialized column holds the unquoted text; PostHog reads nullIf(nullIf(col, ''), 'null')
    v = _unq(r)
    return None if v == "" or v == "null" else v


def _rawx(doc: Any, keys_json: str) -> Any:
    if doc is None:
        return None
    try:
        value: Any = json.loads(doc)
    except ValueError:
        return None
    for k in json.loads(keys_json):
        if isinstance(k, int):
            idx = k - 1 if k > 0 else k
            if not isinstance(value, list) or k == 0 or not -len(value) <= idx < len(value):
                return None
            value = value[idx]
        else:
            if not isinstance(value, dict) or k not in value:
                return None
            value = value[k]
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@lru_cache(maxsize=1024)
def _like_regex(pattern: str, flags: int) -> re.Pattern:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), flags | re.DOTALL)


def _like(s: Any, p: Any) -> Any:
    if s is None or p is None:
        return None
    return int(_like_regex(p, 0).fullmatch(s) is not None)


def _ilike(s: Any, p: Any) -> Any:
    if s is None or p is None:
        return None
    return int(_like_regex(p, re.IGNORECASE).fullmatch(s) is not None)


def _dt_add(v: Any, amount: Any, unit: str) -> Any:
    if v is None or amount is None:
        return None
    try:
        dt = datetime.fromisoformat(v)
        n = int(amount)
        if unit in ("month", "quarter", "year"):
            months = n * {"month": 1, "quarter": 3, "year": 12}[unit]
            total = dt.year * 12 + dt.month - 1 + months
            y, m = divmod(total, 12)
            last = (date(y + (m == 11), (m + 1) % 12 + 1, 1) - timedelta(days=1)).day
            dt = dt.replace(year=y, month=m + 1, day=min(dt.day, last))
        else:
            seconds = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}[unit]
            dt = dt + timedelta(seconds=n * seconds)
        return canon(dt)
    except (ValueError, OverflowError):
        return None


def _parse_dt_sql(v: Any) -> Any:
    dt = parse_datetime(v) if isinstance(v, str) else None
    return canon(dt) if dt else None


def _dt_from_unix(v: Any) -> Any:
    if v is None:
        return None
    try:
        return canon(datetime(1970, 1, 1) + timedelta(seconds=float(v)))
    except (ValueError, OverflowError):
        return None


_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)$", re.IGNORECASE)


def _to_int(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and abs(v) < 2**63 else None
    if isinstance(v, str) and _INT_RE.match(v):
        n = int(v)
        return n if -(2**63) <= n < 2**63 else None
    return None


def _to_float(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and _FLOAT_RE.match(v):
        return float(v)
    return None


def _num_str(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == int(v) and abs(v) < 1e21:
            return str(int(v))
        return repr(v)
    return str(v)


def _date_diff(unit: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    try:
        x, y = datetime.fromisoformat(a), datetime.fromisoformat(b)
    except ValueError:
        return None
    epoch = datetime(1970, 1, 1)

    def rel(dt: datetime) -> int:
        secs = int((dt - epoch).total_seconds() // 1)
        if unit == "second":
            return secs
        if unit == "minute":
            return secs // 60
        if unit == "hour":
            return secs // 3600
        days = (dt.date() - epoch.date()).days
        if unit == "day":
            return days
        if unit == "week":
            return (days + 3) // 7  # ClickHouse toRelativeWeekNum: weeks start on Monday
        months = dt.year * 12 + dt.month - 1
        if unit == "month":
            return months
        if unit == "quarter":
            return dt.year * 4 + (dt.month - 1) // 3
        return dt.year

    return rel(y) - rel(x)


SQL_FUNCTIONS: tuple = (
    ("ph_unq", 1, _unq),
    ("ph_unq_mat", 1, _unq_mat),
    ("ph_rawx", 2, _rawx),
    ("ph_like", 2, _like),
    ("ph_ilike", 2, _ilike),
    ("ph_dt_add", 3, _dt_add),
    ("ph_parse_dt", 1, _parse_dt_sql),
    ("ph_dt_from_unix", 1, _dt_from_unix),
    ("ph_to_int", 1, _to_int),
    ("ph_to_float", 1, _to_float),
    ("ph_num_str", 1, _num_str),
    ("ph_date_diff", 3, _date_diff),
)


def _sqlite_order(v: Any) -> tuple:
    """A sort key ordering values as SQLite does across types: numbers, then text, then BLOBs."""
    if isinstance(v, (int, float)):
        return (0, v)
    if isinstance(v, str):
        return (1, v)
    return (2, bytes(v))


class _ArgBest:
    """argMax / argMin as a SQLite aggregate: the first argument of the row whose second is the
    largest (smallest); rows where either is NULL are skipped; the first row met wins ties."""

    sign = 1

    def __init__(self) -> None:
        self.best: tuple | None = None
        self.value: Any = None

    def step(self, value: Any, by: Any) -> None:
        if by is None or value is None:
            return
        k = _sqlite_order(by)
        if self.best is None or (k > self.best if self.sign > 0 else k < self.best):
            self.best = k
            self.value = value

    def finalize(self) -> Any:
        return self.value


class _ArgMin(_ArgBest):
    sign = -1


SQL_AGGREGATES: tuple = (
    ("ph_argmax", 2, _ArgBest),
    ("ph_argmin", 2, _ArgMin),
)


def env_now() -> dict:
    now = datetime.now(UTC).replace(tzinfo=None)
    return {"now": canon(now), "today": now.strftime("%Y-%m-%d")}
