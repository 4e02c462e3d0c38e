"""PostHog private API client: key, project, definitions, HogQL queries and keyset paging.

No terminal I/O. Facts in ``docs/posthog-api.md`` and ``docs/posthog-semantics.md``; the points
checked in PostHog's source (github.com/PostHog/posthog) are named where they are used:

- Errors are drf-exceptions-hog bodies ``{"type", "code", "detail", "attr"}``; every answer maps to
  one of ``cs_posthog.errors`` (``classify``).
- 429: DRF's ``Throttled`` detail, "Request was throttled. Expected available in N seconds." (N is
  ``ceil(wait)``, "second" when 1); drf-exceptions-hog drops the ``Retry-After`` header, so the wait
  is read from the detail when the header is absent (``wait_from_detail``). The per-organization
  concurrency limit answers 429 "Exceeded maximum concurrency limit: 3 for key: ..." with no wait:
  the shared backoff applies.
- Query time limit (``posthog/errors.py`` ``wrap_clickhouse_query_error``, ``posthog/exceptions.py``):
  ClickHouse TIMEOUT_EXCEEDED becomes ``ClickHouseQueryTimeOut``, HTTP 504 "Query has hit the max
  execution time before completing. ..."; TOO_SLOW (ClickHouse's estimate says the query will not
  finish in time) becomes ``ClickHouseEstimatedQueryExecutionTimeTooLong``, HTTP 512 "Estimated query
  execution time (N seconds) is too long. Try reducing its scope by changing the time range."; a
  per-query memory limit, HTTP 513 code ``clickhouse_memory_limit_exceeded`` (older servers: 504
  "Query has reached the max memory limit ..."). ``posthog/api/query.py`` lets these APIExceptions
  through unchanged. Retrying the same query cannot help, so they are not retried but raised as
  ``QueryTooSlowError`` and ``iter_pages`` shrinks its page. (The transient cluster-memory variant,
  "We're under heavy load right now", is retried like any 5xx.)
- Any 504 from ``/query/`` is "too slow", whatever its text (the wording varies between versions, and a
  proxy's gateway timeout on a query means the same); a 504 elsewhere is an ordinary retried 5xx. The
  read timeout for ``/query/`` (``QUERY_TIMEOUT_S``, 90 s) is above PostHog's longest limit (60 s for
  teams on the legacy list, ``posthog/hogql_queries/hogql_query_runner.py``), so a read timeout there
  is a query PostHog did not finish either: ``iter_pages`` treats it as too slow.
- Throttle tiers (``posthog/api/query.py`` ``get_throttles``, ``posthog/rate_limit.py``): current teams
  get 240/minute and 2,400/hour for ``/query/``; teams on the legacy list 120/hour. See
  ``PostHogClient`` for how the legacy tier is recognised from a 429.
- Organization policy: "Organization 'X' does not allow using personal API keys." (403,
  ``posthog/permissions.py``, ``members_can_use_personal_api_keys``) is not a scope problem:
  ``PersonalKeysNotAllowedError``.
- JSON datetimes: ``posthog/renderers.py`` renders with orjson ``OPT_UTC_Z``: aware UTC datetimes as
  ``2024-01-02T03:04:05.123456Z`` (no fraction when it is zero), naive ones (persons.created_at) with
  no offset, other zones with ``+HH:MM``. ``parse_datetime`` reads all of them as aware UTC.
- Answers are read whole within a deadline and up to a size cap (``cs_posthog.http``): ``/query/``
  gets ``QUERY_DEADLINE_S`` (180 s, above its 90 s read timeout) and ``QUERY_MAX_RESPONSE_BYTES``
  (256 MB; a 49,999-row page of the sync's events query is about 15-25 MB); every other call
  ``DEADLINE_S`` (120 s) and ``MAX_RESPONSE_BYTES`` (8 MB; a page of 100 definitions is far less).
  A 2xx that does not even start like JSON is retried, then ``NotAcknowledgedError`` (69); one
  that does not parse is ``UnexpectedAnswerError`` (69).
- ``/query/``: ``{"query": {"kind": "HogQLQuery", "query", "values", "modifiers"}, "refresh",
  "name"}``; an explicit LIMIT is capped at 50,000 rows silently (``MAX_SELECT_RETURNED_ROWS``), so
  a keyset page asks for at most 50,000 rows: ``page + 1`` with ``page <= 49,999``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx

from cs_posthog import __version__
from cs_posthog.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    MissingScopesError,
    NotFoundError,
    PermissionDeniedError,
    PersonalKeysNotAllowedError,
    QueryError,
    RedirectedError,
    UnavailableError,
    UnexpectedAnswerError,
    UsageError,
)
from cs_posthog.http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DeadlineExceeded,
    Pacer,
    RetryPolicy,
    Stats,
    default_deadline,
    default_timeout,
    error_body,
    install_deadlines,
    rate_scale,
    retry_after_header,
    send,
    tls_context,
)
from cs_posthog.settings import Settings
from cs_posthog.timeutil import parse_optional_datetime
from cs_posthog.urls import check_base_url

SERVICE = "PostHog"

# PostHog's limits per personal API key (posthog/rate_limit.py; docs/posthog-semantics.md)
QUERY_PER_MINUTE = 240
QUERY_PER_HOUR = 2400
QUERY_CONCURRENCY = 3  # per organization
OTHER_PER_MINUTE = 480
OTHER_PER_HOUR = 4800
LEGACY_QUERY_PER_HOUR = 120  # teams on PostHog's legacy list (HogQLQueryThrottle)
QUERY_TIERS = ("current", "legacy")
TIER_BUDGETS = {"current": QUERY_PER_HOUR, "legacy": LEGACY_QUERY_PER_HOUR}
# Evidence for the legacy tier (see PostHogClient): the hour's budget ran out while we had sent fewer
# queries than this in the hour (a tenth of the current tier's 2,400).
LEGACY_EVIDENCE_MAX_QUERIES = 240
LEGACY_EVIDENCE_THROTTLES = 3

QUERY_TIMEOUT_S = 90.0  # read timeout for /query/: above PostHog's longest query limit (60 s, legacy)
QUERY_DEADLINE_S = 180.0  # a whole /query/ attempt, answer read to its last byte
DEADLINE_S = 120.0  # a whole attempt of any other call
QUERY_MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # well above a 49,999-row page (~15-25 MB)
MAX_RESPONSE_BYTES = DEFAULT_MAX_RESPONSE_BYTES  # 8 MB: definitions, projects, keys
QUERY_TIME_LIMIT_S = 10.0  # PostHog's limit for API queries on current teams
FAST_ANSWER_S = QUERY_TIME_LIMIT_S / 4  # a page answered this fast could take twice the rows

MAX_ROWS = 50_000  # posthog/hogql/constants.py MAX_SELECT_RETURNED_ROWS: an explicit LIMIT is capped here
MAX_PAGE_SIZE = MAX_ROWS - 1  # page + 1 rows must fit under the cap, or "more" could not be seen
MIN_PAGE_SIZE = 500
DEFINITIONS_PAGE = 100  # PostHog's default page; larger limits are accepted but slower to serve
MAX_DEFINITION_PAGES = 5000

# The scopes cs-posthog needs, with the names PostHog's key form shows for them
# (frontend PersonalAPIKeys.tsx: capitalizeFirstLetter(key.replace(/_/g, ' ')), from lib/scopes.tsx).
NEEDED_SCOPES = (
    "action:read",
    "event_definition:read",
    "organization:read",
    "project:read",
    "property_definition:read",
    "query:read",
)
# Needed only when a PostHog group is the customer (``identification.kind = "group"``): the group types'
# names (``/groups_types/``). Without it the type's index still works (HogQL reads ``$group_N`` and the
# ``groups`` table with query:read).
GROUP_SCOPE = "group:read"
GROUP_INDEXES = range(5)  # PostHog's five group type slots, $group_0 .. $group_4


_THROTTLE_RE = re.compile(r"Expected available in (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)
_SCOPE_RE = re.compile(r"missing required scope '([^']+)'")
_TOO_SLOW_RE = re.compile(
    r"max execution time|Estimated query execution time|max memory limit|ran out of memory", re.IGNORECASE
)

T = TypeVar("T")
Row = list[Any]


def _group_index(index: Any) -> int:
    if type(index) is not int or index not in GROUP_INDEXES:
        raise ValueError(f"a group type index is 0 to 4, not {index!r}")
    return index


def scope_label(scope: str) -> str:
    """PostHog's name for a scope's object, as its API key form shows it: ``event_definition:read``
    -> "Event definition"."""
    obj = scope.split(":", 1)[0].replace("_", " ")
    return obj[:1].upper() + obj[1:]




# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKeyInfo:
    """``/api/personal_api_keys/@current/``: the key that made the request."""

    id: str
    label: str
    mask_value: str
    scopes: tuple[str, ...]
    scoped_teams: tuple[int, ...]  # empty: not restricted to some projects
    scoped_organizations: tuple[str, ...]  # empty: not restricted to some organizations

    def has_scope(self, scope: str) -> bool:
        """``*`` grants everything; ``x:write`` implies ``x:read``."""
        if "*" in self.scopes or scope in self.scopes:
            return True
        obj, _, action = scope.partition(":")
        return action == "read" and f"{obj}:write" in self.scopes

    def missing(self, needed: Sequence[str] = NEEDED_SCOPES) -> list[str]:
        return [s for s in needed if not self.has_scope(s)]

    def can_access_project(self, project_id: int) -> bool:
        return not self.scoped_teams or project_id in self.scoped_teams


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    timezone: str
    uuid: str | None = None
    organization: str | None = None
    ingested_event: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EventDefinition:
    name: str
    last_seen_at: datetime | None = None
    created_at: datetime | None = None
    id: str | None = None


@dataclass(frozen=True)
class PropertyDefinition:
    name: str
    property_type: str | None = None  # "String", "Numeric", "Boolean", "DateTime", "Duration" or None
    is_numerical: bool = False


@dataclass(frozen=True)
class GroupType:
    """One of ``/groups_types/``: ``company`` at index 0 (its ``$group_0`` on events)."""

    index: int
    name: str
    name_singular: str | None = None
    name_plural: str | None = None

    @property
    def plural(self) -> str:
        """How counts name its groups: "companies", "projects" (the type's name in the plural)."""
        base = self.name
        if base.endswith("y") and base[-2:-1] not in ("a", "e", "i", "o", "u", ""):
            return base[:-1] + "ies"
        return base + ("es" if base.endswith(("s", "x", "ch", "sh")) else "s")


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]  # ClickHouse type of each column, e.g. "String", "DateTime64(6, 'UTC')"
    results: list[Row]
    has_more: bool | None  # only set by PostHog when the query had no LIMIT (then 100 rows at most)
    elapsed_s: float = field(default=0.0, compare=False)  # the answer's round trip (no pacing, no retries)

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.results]


class QueryTooSlowError(UnavailableError):
    """PostHog stopped a query at its time (or per-query memory) limit, or did not answer it within
    the read timeout (``timed_out``): ask for less and retry."""

    default_hint = "PostHog could not finish a query in time; try again later, or with a shorter time range."

    def __init__(self, message: str, *, timed_out: bool = False, page_size: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.timed_out = timed_out
        self.page_size = page_size  # iter_pages: the page that was still too slow at the smallest size


# ---------------------------------------------------------------------------------------------
# Error mapping
# ---------------------------------------------------------------------------------------------


def wait_from_detail(resp: httpx.Response) -> float | None:
    """Seconds named in a 429's detail ("Expected available in 37 seconds."), or None."""
    detail = error_body(resp).get("detail")
    if not isinstance(detail, str):
        return None
    m = _THROTTLE_RE.search(detail)
    return float(m.group(1)) if m else None


def is_query_path(path: str) -> bool:
    return path.rstrip("/").endswith("/query")


def _path_of(resp: httpx.Response) -> str:
    try:
        return resp.request.url.path
    except RuntimeError:  # a response made without its request (tests)
        return ""


def is_too_slow(resp: httpx.Response) -> bool:
    """A PostHog query time/memory limit answer: any 504 from ``/query/`` (whatever its text), and
    the 504/512/513 time and memory limit details elsewhere (not a transient overload)."""
    if resp.status_code not in (504, 512, 513):
        return False
    if resp.status_code == 504 and is_query_path(_path_of(resp)):
        return True
    body = error_body(resp)
    detail = body.get("detail")
    if not isinstance(detail, str):
        return False
    if "heavy load" in detail:  # ClickHouseClusterMemoryLimitExceeded: transient, retry
        return False
    return bool(_TOO_SLOW_RE.search(detail)) or body.get("code") == "clickhouse_memory_limit_exceeded"


def _detail_of(resp: httpx.Response) -> tuple[str, str | None]:
    body = error_body(resp)
    detail = body.get("detail")
    code = body.get("code")
    if not isinstance(detail, str) or not detail:
        if isinstance(detail, (dict, list)) and detail:
            detail = json.dumps(detail)[:300]
        else:
            text = resp.text.strip() if resp.content else ""
            detail = text[:200] if text and not text.startswith("<") else ""
    attr = body.get("attr")
    if isinstance(attr, str) and attr and detail:
        detail = f"{attr}: {detail}"
    return detail, code if isinstance(code, str) else None


def classify(resp: httpx.Response) -> ApiError:
    """A PostHog error answer as a typed error (every status, so that nothing escapes untyped)."""
    status = resp.status_code
    detail, code = _detail_of(resp)
    common: dict[str, Any] = {"service": SERVICE, "status": status, "code": code, "detail": detail or None}
    suffix = f": {detail}" if detail else ""
    path = _path_of(resp)
    if 300 <= status < 400:
        return _redirected(resp)
    if status == 401:
        if code == "not_authenticated":
            return AuthError("PostHog got no API key (401)", hint="Set the personal API key (phx_...).", **common)
        return AuthError(
            "PostHog rejected the personal API key (401): invalid, revoked, or from another region",
            hint="Check the key (PostHog → Settings → Personal API keys) and the region (US or EU): "
            "`cs-posthog edit credentials`.",
            **common,
        )
    if status == 403:
        m = _SCOPE_RE.search(detail or "")
        if m:
            scope = m.group(1)
            return MissingScopesError([scope], [scope_label(scope)], **common)
        if "does not allow using personal api keys" in (detail or "").lower():
            return PersonalKeysNotAllowedError(
                f"the PostHog organization does not allow personal API keys of members (an organization "
                f"policy, not a scope of the key){suffix}",
                **common,
            )
        if "scoped projects" in (detail or ""):
            return PermissionDeniedError(
                f"the API key is restricted to some projects and cannot call organization-level endpoints{suffix}",
                hint="Use a key with access to all projects of the organization, or the project's own endpoints.",
                **common,
            )
        if "does not have access to the requested project" in (detail or ""):
            return PermissionDeniedError(
                f"the API key is restricted to other projects{suffix}",
                hint="In PostHog: Settings → Personal API keys → edit the key and allow this project "
                "(or all projects), then retry.",
                **common,
            )
        if "organization" in (detail or "").lower():
            return PermissionDeniedError(
                f"the API key is restricted to other organizations{suffix}",
                hint="In PostHog: Settings → Personal API keys → edit the key and allow this organization.",
                **common,
            )
        return PermissionDeniedError(
            f"PostHog refused the request (403){suffix}",
            hint="Check the key's scopes and project access in PostHog → Settings → Personal API keys.",
            **common,
        )
    if status == 402:
        return PermissionDeniedError(
            f"PostHog refused the request: billing limit{suffix}",
            hint="Your PostHog organization reached a billing limit; raise it in PostHog → Billing.",
            **common,
        )
    if status == 404:
        m = re.search(r"/api/(?:projects|environments)/([^/]+)/", path)
        what = f"project {m.group(1)}" if m else path
        return NotFoundError(
            f"PostHog has no {what} for this key (404)",
            hint="Check the project id (PostHog → Settings → Project) and the region: `cs-posthog edit credentials`.",
            **common,
        )
    if is_too_slow(resp):
        return QueryTooSlowError(f"PostHog stopped the query at its limit ({status}){suffix}", **common)
    if status >= 500:
        return UnavailableError(f"PostHog failed (HTTP {status}){suffix}", **common)
    if status == 400 and (path.rstrip("/").endswith("/query") or (code or "").startswith("hogql")):
        return QueryError(f"PostHog rejected a HogQL query{suffix}", **common)
    return BadRequestError(f"PostHog rejected the request ({status}){suffix}", **common)


_STR_TYPES = frozenset({"String", "FixedString", "UUID", "Date", "Date32", "DateTime", "DateTime64", "Enum8",
                        "Enum16", "IPv4", "IPv6"})
_INT_TYPES = frozenset(f"{u}Int{n}" for u in ("", "U") for n in (8, 16, 32, 64, 128, 256))
_FLOAT_TYPES = frozenset({"Float32", "Float64"})


def _python_types(ch_type: str) -> frozenset[type] | None:
    """The JSON value types a ClickHouse column type arrives as (None also allowed: PostHog's types do
    not always say Nullable), or None when it is not checked (arrays, tuples, maps, decimals...)."""
    t = ch_type.strip()
    for wrapper in ("Nullable(", "LowCardinality("):
        while t.startswith(wrapper) and t.endswith(")"):
            t = t[len(wrapper):-1].strip()
    base = t.split("(", 1)[0]
    if base in _STR_TYPES:
        return frozenset({str, type(None)})
    if base in _INT_TYPES:
        return frozenset({int, type(None)})
    if base in _FLOAT_TYPES:
        return frozenset({int, float, type(None)})
    if base == "Bool":
        return frozenset({bool, int, type(None)})
    return None


def malformed_rows(results: list[Any], width: int, types: list[str]) -> str | None:
    """What is wrong with a query's result rows, or None: every row a list of ``width`` values (when
    the answer names its columns), each of the JSON type its column's ClickHouse type arrives as.
    Pages of text columns (every sync page) pass in one pass over the values."""
    if not set(map(type, results)) <= {list}:
        i, row = next((i, r) for i, r in enumerate(results) if type(r) is not list)
        return f"row {i + 1} is {type(row).__name__} {_shown(row)}, not a list of values"
    if width and set(map(len, results)) - {width}:
        i, row = next((i, r) for i, r in enumerate(results) if len(r) != width)
        return f"row {i + 1} has {len(row)} values for {width} columns: {_shown(row)}"
    if not results or len(types) != (width or len(results[0])):
        return None
    allowed = [_python_types(t) for t in types]
    seen = set(map(type, chain.from_iterable(results)))
    if all(a is None or seen <= a for a in allowed):
        return None
    for col, ok in enumerate(allowed):
        if ok is None or set(map(type, map(itemgetter(col), results))) <= ok:
            continue
        i, row = next((i, r) for i, r in enumerate(results) if type(r[col]) not in ok)
        return (f"row {i + 1}, column {col + 1} ({types[col]}) holds {type(row[col]).__name__} "
                f"{_shown(row[col])}")
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _redirected(resp: httpx.Response) -> ApiError:
    """A 3xx (the client follows none: the key must not travel to another host): the host to fix, 78."""
    return RedirectedError.from_response(resp, service=SERVICE, setting="PostHog host")


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


class PostHogClient:
    """One PostHog host and key (and, for project calls, one project). Thread-safe: one
    keep-alive HTTP/1.1 connection pool shared by every call.

    Pacing stays under PostHog's per-key limits: ``/query/`` at 240/minute and the query tier's
    hourly budget (2,400 on the current tier, 120 on the legacy one; ``query_budget_per_hour`` can
    only lower it) with at most 3 queries in flight; every other endpoint at 480/minute and
    4,800/hour. ``settings.rate_scale`` (CS_POSTHOG_RATE_SCALE; or ``pace=False``) adapts pacing to a sandbox's scaled
    clock.

    Query tier. ``query_tier`` is what the caller knows ("current", "legacy", or None: unknown,
    paced as current). A ``/query/`` 429 that names a wait (detail or Retry-After; the concurrency
    limit's 429 names none) reveals the legacy tier when fewer than 240 of our queries were
    answered in the last hour and either
      1. the wait is longer than a minute window could explain (> 60 s + 10 %, + 1 s): the hour's
         budget ran out after fewer than a tenth of 2,400 queries, or
      2. it is the third such 429 within the hour while we sent fewer than 120 queries in the last
         minute (short waits near the end of a legacy window; the 240/minute limit cannot be ours).
    Then the query pacer's hourly budget drops to 120 (what we already sent in the hour counts),
    ``query_tier`` becomes "legacy", ``query_tier_detected_at`` is set and ``on_tier_change("legacy")``
    is called once. Minutes and hours are scaled by ``settings.rate_scale`` like the pacing. A key
    also used heavily by someone else can look legacy by this rule; pacing at 120/hour is then
    still what is left of the budget.
    """

    def __init__(
        self,
        host: str,
        api_key: str,
        project_id: int | None = None,
        *,
        query_budget_per_hour: int = QUERY_PER_HOUR,
        query_tier: str | None = None,
        on_tier_change: Callable[[str], None] | None = None,
        timeout: httpx.Timeout | float | None = None,
        query_timeout: httpx.Timeout | float | None = None,
        transport: httpx.BaseTransport | None = None,
        policy: RetryPolicy | None = None,
        pace: bool | None = None,
        deadline: float | None = None,
        query_deadline: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        query_max_response_bytes: int = QUERY_MAX_RESPONSE_BYTES,
        settings: Settings,
    ) -> None:
        try:
            self.host = check_base_url(host)
        except ValueError as exc:
            raise UsageError(f"PostHog host: {exc}") from None
        if not api_key or any(c.isspace() for c in api_key.strip()):
            raise UsageError("the PostHog API key is empty or contains spaces")
        if query_tier is not None and query_tier not in QUERY_TIERS:
            raise UsageError(f"unknown PostHog query tier {query_tier!r} (one of {', '.join(QUERY_TIERS)})")
        self.project_id = project_id
        self.stats = Stats()
        self.policy = policy or RetryPolicy()
        self.query_tier: str | None = query_tier
        self.query_tier_detected_at: datetime | None = None  # set when this client found the tier out
        self.on_tier_change = on_tier_change
        self._budget_cap = max(1, min(int(query_budget_per_hour), QUERY_PER_HOUR))
        scale = rate_scale(settings) if pace is None else (1.0 if pace else None)
        self._minute_s, self._hour_s = 60.0 / (scale or 1.0), 3600.0 / (scale or 1.0)
        if scale is None:
            self.query_pacer = Pacer(concurrency=QUERY_CONCURRENCY)
            self.other_pacer: Pacer | None = None
        else:
            minute, hour = self._minute_s, self._hour_s
            margin = max(0.02, 0.05 / minute)  # at least 50 ms, so jitter cannot bounce off a 1 s window
            self.query_pacer = Pacer(
                [(QUERY_PER_MINUTE, minute), (self.query_budget_per_hour, hour)],
                concurrency=QUERY_CONCURRENCY,
                margin=margin,
            )
            self.other_pacer = Pacer([(OTHER_PER_MINUTE, minute), (OTHER_PER_HOUR, hour)], margin=margin)
        # what the tier rule looks at: our /query/ answers (not 429) and the 429s naming a wait
        self._tier_lock = threading.Lock()
        self._answered: deque[float] = deque()
        self._throttles: deque[float] = deque()
        base_timeout = timeout if timeout is not None else default_timeout(settings=settings)
        if query_timeout is not None:
            self._query_timeout: httpx.Timeout | float = query_timeout
        elif timeout is not None:
            self._query_timeout = timeout
        else:
            self._query_timeout = default_timeout(QUERY_TIMEOUT_S, settings=settings)
        self.deadline = deadline if deadline is not None else default_deadline(DEADLINE_S, settings=settings)
        self.query_deadline = (query_deadline if query_deadline is not None
                               else default_deadline(QUERY_DEADLINE_S, settings=settings))
        self.max_response_bytes = max_response_bytes
        self.query_max_response_bytes = query_max_response_bytes
        self._client = httpx.Client(
            timeout=base_timeout,
            transport=transport,
            http2=False,
            verify=tls_context(),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            headers={
                "Authorization": f"Bearer {api_key.strip()}",
                "Accept": "application/json",
                "User-Agent": f"cs-posthog/{__version__}",
            },
        )
        install_deadlines(self._client)
        self._closed = False
        self._lock = threading.Lock()

    # --- query budget --------------------------------------------------------------------------
    @property
    def query_budget_per_hour(self) -> int:
        """The hourly ``/query/`` budget paced to: the tier's, or the configured one when lower."""
        return min(self._budget_cap, TIER_BUDGETS.get(self.query_tier or "current", QUERY_PER_HOUR))

    def on_wait(self, hook: Callable[[], None] | None) -> None:
        """``hook()`` is called while a request waits for room in PostHog's rate limits or query
        budget (before each wait, at most 5 s apart); None removes it."""
        for pacer in (self.query_pacer, self.other_pacer):
            if pacer is not None:
                pacer.on_wait = hook

    def query_wait(self) -> float:
        """Seconds a query started now would wait for the budget (0: none). Never blocks."""
        return self.query_pacer.delay()

    def _observe_query_answer(self, resp: httpx.Response) -> None:
        now = time.monotonic()
        switched = False
        with self._tier_lock:
            hour_ago = now - self._hour_s
            for log in (self._answered, self._throttles):
                while log and log[0] <= hour_ago:
                    log.popleft()
            if resp.status_code != 429:
                self._answered.append(now)
                return
            wait = retry_after_header(resp)
            if wait is None:
                wait = wait_from_detail(resp)
            if wait is None or self.query_tier == "legacy":
                return  # the concurrency limit (no wait named), or nothing left to find out
            self._throttles.append(now)
            ours_hour = len(self._answered)
            if ours_hour >= LEGACY_EVIDENCE_MAX_QUERIES:
                return
            minute_ago = now - self._minute_s
            ours_minute = sum(1 for t in self._answered if t > minute_ago)
            beyond_minute = wait > self._minute_s * 1.1 + 1.0
            repeated = len(self._throttles) >= LEGACY_EVIDENCE_THROTTLES and ours_minute < QUERY_PER_MINUTE // 2
            if beyond_minute or repeated:
                self._set_tier("legacy")
                switched = True
        if switched and self.on_tier_change is not None:
            self.on_tier_change("legacy")

    def _set_tier(self, tier: str) -> None:
        self.query_tier = tier
        self.query_tier_detected_at = datetime.now(UTC)
        if self.query_pacer.windows:
            self.query_pacer.set_limit(1, self.query_budget_per_hour)

    # --- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._client.close()

    def __enter__(self) -> PostHogClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------
    def _pid(self, project_id: int | None) -> int:
        pid = project_id if project_id is not None else self.project_id
        if pid is None:
            raise ValueError("no project id: pass project_id to the client or to the call")
        return int(pid)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        query: bool = False,
        timeout_is_too_slow: bool = False,
    ) -> httpx.Response:
        """One paced, retried call; the 2xx answer or a typed error. ``path`` starts with /api/.

        ``query``: a ``/query/`` call (its pacer, its read timeout, tier detection). A read timeout
        there is retried like any; once the retries are used up (or at once with
        ``timeout_is_too_slow``) it is a ``QueryTooSlowError``."""
        kwargs: dict[str, Any] = {}
        if query:
            kwargs["timeout"] = self._query_timeout

            def on_exc(exc: Exception, final: bool) -> ApiError | None:
                if isinstance(exc, httpx.ReadTimeout) and (final or timeout_is_too_slow):
                    within = (f"{exc.seconds:g} s (overall deadline)" if isinstance(exc, DeadlineExceeded)
                              else f"{_seconds(self._query_timeout)} (read timeout)")
                    return QueryTooSlowError(
                        f"PostHog did not answer a query within {within}",
                        timed_out=True,
                        service=SERVICE,
                    )
                return None

            kwargs["on_exc"] = on_exc
            kwargs["on_response"] = self._observe_query_answer
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            kwargs["headers"] = {"Content-Type": "application/json"}
        sent = send(
            self._client,
            method,
            self.host + path,
            service=SERVICE,
            pacer=self.query_pacer if query else self.other_pacer,
            stats=self.stats,
            policy=self.policy,
            classify=classify,
            wait_from_body=wait_from_detail,
            give_up=is_too_slow,
            accept=_json_start_problem,
            deadline=self.query_deadline if query else self.deadline,
            max_bytes=self.query_max_response_bytes if query else self.max_response_bytes,
            **kwargs,
        )
        return sent.response

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return _json(self.request("GET", path, params=params))

    # --- identity ------------------------------------------------------------------------------
    def current_key(self) -> ApiKeyInfo:
        data = self.get("/api/personal_api_keys/@current/")
        scopes = data.get("scopes") or ["*"]  # PostHog: a key made before scopes existed has all of them
        return ApiKeyInfo(
            id=str(data.get("id") or ""),
            label=str(data.get("label") or ""),
            mask_value=str(data.get("mask_value") or ""),
            scopes=tuple(str(s) for s in scopes),
            scoped_teams=tuple(int(t) for t in (data.get("scoped_teams") or [])),
            scoped_organizations=tuple(str(o) for o in (data.get("scoped_organizations") or [])),
        )

    def me(self) -> dict[str, Any]:
        return _object(self.get("/api/users/@me/"))

    def project(self, project_id: int | None = None) -> Project:
        pid = self._pid(project_id)
        data = _object(self.get(f"/api/projects/{pid}/"))
        return Project(
            id=int(data.get("id", pid)),
            name=str(data.get("name") or ""),
            timezone=str(data.get("timezone") or "UTC"),
            uuid=data.get("uuid"),
            organization=data.get("organization"),
            ingested_event=data.get("ingested_event"),
            raw=data,
        )

    def organization(self) -> dict[str, Any]:
        return _object(self.get("/api/organizations/@current/"))

    def actions(self, project_id: int | None = None, *, limit: int = 1) -> dict[str, Any]:
        return _object(self.get(f"/api/projects/{self._pid(project_id)}/actions/", {"limit": limit}))

    # --- definitions ---------------------------------------------------------------------------
    def _all_pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list. Follows ``next`` until it is null or a page comes back
        short; ``count`` never decides the end (it is capped on huge projects, ``count_is_capped``).

        ``next``'s query string (offset, or a cursor) is applied to our own URL: an absolute
        ``next`` naming another origin (a proxy's internal name) must not receive the key. A page
        that brings nothing new (a server ignoring the paging parameters) ends the walk."""
        limit = int(params.get("limit") or DEFINITIONS_PAGE)
        page_params: dict[str, Any] = {k: v for k, v in {**params, "limit": limit, "offset": 0}.items()
                                       if v is not None}
        keep = {k: v for k, v in page_params.items() if k not in ("limit", "offset", "cursor")}
        asked: set[tuple[tuple[str, str], ...]] = set()
        seen: set[str] = set()
        for _ in range(MAX_DEFINITION_PAGES):
            asked.add(tuple(sorted((k, str(v)) for k, v in page_params.items())))
            data = self.get(path, page_params)
            results = [r for r in data.get("results") or [] if isinstance(r, dict)]
            new = 0
            for item in results:
                ident = str(item.get("id") if item.get("id") is not None else item.get("name"))
                if ident not in seen:
                    seen.add(ident)
                    new += 1
                    yield item
            nxt = data.get("next")
            if not nxt or len(results) < limit or new == 0:
                return
            qs = parse_qs(urlsplit(str(nxt)).query, keep_blank_values=True)
            # our filters and ordering stay, whatever ``next`` repeats of them; its paging wins
            page_params = {**keep, **{k: v[-1] for k, v in qs.items()}}
            try:
                limit = int(page_params.get("limit", limit))
            except ValueError:
                return
            if tuple(sorted((k, str(v)) for k, v in page_params.items())) in asked:
                return

    def event_definitions(self, search: str | None = None, project_id: int | None = None) -> list[EventDefinition]:
        """Every event definition (all pages), by name, ``search`` matching each whitespace-separated
        term. Asked with ``ordering=name``: PostHog's default order (last seen date, then name) can
        move a definition seen during the walk to another page, so that it is missed or repeated."""
        path = f"/api/projects/{self._pid(project_id)}/event_definitions/"
        out: dict[str, EventDefinition] = {}
        params = {"limit": DEFINITIONS_PAGE, "search": search or None, "ordering": "name"}
        for item in self._all_pages(path, params):
            name = item.get("name")
            if not isinstance(name, str) or name in out:
                continue
            out[name] = EventDefinition(
                name=name,
                last_seen_at=parse_optional_datetime(item.get("last_seen_at")),
                created_at=parse_optional_datetime(item.get("created_at")),
                id=str(item["id"]) if item.get("id") is not None else None,
            )
        return list(out.values())

    def event_names(self, search: str | None = None) -> list[str]:
        return [d.name for d in self.event_definitions(search)]

    def person_properties(
        self, search: str | None = None, project_id: int | None = None, *, one_page: bool = False
    ) -> list[PropertyDefinition]:
        """Every Person property definition (all pages), virtual ones (computed, not stored on
        persons) left out. ``one_page``: only PostHog's first page (``DEFINITIONS_PAGE`` entries,
        its ``next`` not followed), for autocomplete: a search term that is a substring of "latest"
        matches nearly every property there (``add_latest_means_not_initial``), so all pages of it
        would be the whole list."""
        return self._property_definitions({"type": "person"}, search, project_id, one_page=one_page)

    def group_properties(
        self, group_type_index: int, search: str | None = None, project_id: int | None = None, *,
        one_page: bool = False,
    ) -> list[PropertyDefinition]:
        """The property definitions of one group type (``type=group&group_type_index=N``), as
        ``person_properties`` reads the Person ones."""
        index = _group_index(group_type_index)
        return self._property_definitions({"type": "group", "group_type_index": index}, search, project_id,
                                          one_page=one_page)

    def _property_definitions(self, kind: dict[str, Any], search: str | None, project_id: int | None, *,
                              one_page: bool) -> list[PropertyDefinition]:
        path = f"/api/projects/{self._pid(project_id)}/property_definitions/"
        out: dict[str, PropertyDefinition] = {}
        params = {**kind, "limit": DEFINITIONS_PAGE, "search": search or None}
        if one_page:
            data = self.get(path, {k: v for k, v in params.items() if v is not None})
            results = data.get("results") if isinstance(data, dict) else None
            items: Iterator[dict[str, Any]] | list[dict[str, Any]] = [
                r for r in results or [] if isinstance(r, dict)
            ]
        else:
            items = self._all_pages(path, params)
        for item in items:
            name = item.get("name")
            if not isinstance(name, str) or name in out or item.get("virtual"):
                continue
            out[name] = PropertyDefinition(
                name=name,
                property_type=item.get("property_type") if isinstance(item.get("property_type"), str) else None,
                is_numerical=bool(item.get("is_numerical")),
            )
        return list(out.values())

    # --- groups --------------------------------------------------------------------------------
    def group_types(self, project_id: int | None = None) -> list[GroupType]:
        """The project's group types (``GET /api/projects/{id}/groups_types/``, scope ``group:read``),
        by index. PostHog answers a plain list; a paginated ``{"results": [...]}`` is read too. An
        entry without a usable index (0 to 4) or name is left out."""
        data = self.get(f"/api/projects/{self._pid(project_id)}/groups_types/")
        items = data.get("results") if isinstance(data, dict) else data
        out: dict[int, GroupType] = {}
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            index, name = item.get("group_type_index"), item.get("group_type")
            if type(index) is not int or index not in GROUP_INDEXES or not isinstance(name, str) or not name:
                continue

            def text(key: str, item: dict[str, Any] = item) -> str | None:
                v = item.get(key)
                return v if isinstance(v, str) and v else None

            out.setdefault(index, GroupType(index=index, name=name, name_singular=text("name_singular"),
                                            name_plural=text("name_plural")))
        return [out[i] for i in sorted(out)]

    # --- HogQL ---------------------------------------------------------------------------------
    def query(
        self,
        hogql: str,
        values: dict[str, Any] | None = None,
        *,
        name: str,
        project_id: int | None = None,
        refresh: str = "force_blocking",
        modifiers: dict[str, Any] | None = None,
        timeout_is_too_slow: bool = False,
    ) -> QueryResult:
        """Run one HogQL query. User text goes only through ``values`` (``{name}`` placeholders).

        Timestamps come back in UTC (``convertToProjectTimezone`` off); results are computed now
        (``refresh: force_blocking``), not read from PostHog's 6-hour cache.
        """
        query: dict[str, Any] = {
            "kind": "HogQLQuery",
            "query": hogql,
            "modifiers": {"convertToProjectTimezone": False, **(modifiers or {})},
        }
        if values:
            query["values"] = values
        body = {"query": query, "refresh": refresh, "name": name}
        resp = self.request("POST", f"/api/projects/{self._pid(project_id)}/query/", json_body=body, query=True,
                            timeout_is_too_slow=timeout_is_too_slow)
        code, content = resp.status_code, resp.content
        try:
            elapsed = resp.elapsed.total_seconds()
        except RuntimeError:  # a response that was never read through the client
            elapsed = 0.0
        # An httpx Response is a reference cycle (response <-> its stream): let it go while it is young,
        # before decoding a page allocates enough to promote it to the oldest GC generation, where it
        # (and a page's worth of bytes) would wait for a full collection.
        del resp
        data = _json_content(content, code)
        del content
        results = data.get("results")
        if not isinstance(results, list):
            status = data.get("query_status") or {}
            if isinstance(status, dict) and status.get("complete") is False:
                raise UnavailableError("PostHog queued the query instead of answering it", service=SERVICE,
                                       status=code)
            raise UnavailableError("PostHog answered a query without results", service=SERVICE, status=code)
        types = []
        for t in data.get("types") or []:
            if isinstance(t, (list, tuple)) and len(t) > 1:
                types.append(str(t[1]))
            else:
                types.append(str(t))
        columns = [str(c) for c in data.get("columns") or []]
        problem = malformed_rows(results, len(columns), types)
        if problem is not None:
            raise UnexpectedAnswerError(
                f"PostHog's answer to the query {name!r} is malformed: {problem}",
                hint="That is not how PostHog's query API answers (a proxy in between, or a change in PostHog?); "
                "try again later, and report it with --debug output if it persists.",
                service=SERVICE, status=code,
            )
        return QueryResult(
            columns=columns,
            types=types,
            results=[r if type(r) is list else list(r) for r in results],
            has_more=data.get("hasMore"),
            elapsed_s=elapsed,
        )

    def iter_pages(
        self,
        build: Callable[[Any], tuple[str, dict[str, Any]]],
        key_of: Callable[[Row], Any],
        page_size: int = MAX_PAGE_SIZE,
        *,
        name: str = "cs-posthog page",
        min_page_size: int = MIN_PAGE_SIZE,
        max_page_size: int | None = None,
        on_shrink: Callable[[int], None] | None = None,
        on_grow: Callable[[int], None] | None = None,
        modifiers: dict[str, Any] | None = None,
    ) -> Iterator[list[Row]]:
        """Keyset paging: ``build(key)`` returns ``(hogql, values)`` selecting the rows after ``key``
        (None: from the start) in key order, ending with its ORDER BY and *without* LIMIT; this adds
        ``LIMIT size + 1`` and yields pages of ``size`` rows while more exist.

        Sizes are capped at 49,999: PostHog caps an explicit LIMIT at 50,000 rows, so asking for
        50,001 would return 50,000 and hide that more exist.

        The page adapts, starting at ``page_size``:
        - too slow (``QueryTooSlowError``: any 504 from ``/query/``, PostHog's time or memory limit,
          a read timeout): the page is halved (not below ``min_page_size``), the same page asked
          again and ``on_shrink(new_size)`` told. At ``min_page_size`` a 504 or limit answer is
          raised as ``QueryTooSlowError`` (``page_size`` set): asking for a shorter time window is
          the caller's move; a read timeout there is retried like any failure first.
        - fast (a full page answered within ``FAST_ANSWER_S``, a quarter of PostHog's 10 s limit):
          after enough fast pages in a row the page doubles, up to ``max_page_size`` (default:
          ``page_size``, i.e. it only grows back after a shrink), and ``on_grow(new_size)`` is told.
          Enough is one page at first; after each too-slow answer twice as many as before (4, 8, ...
          64), so a size PostHog cannot serve is not tried again and again.
        Each re-asked page counts as a retry in ``stats``.

        The caller may empty a page (``rows.clear()``) once it has read it: nothing here looks at a
        page after yielding it, so its rows can be freed before the next one is fetched.
        """
        size = max(1, min(int(page_size), MAX_PAGE_SIZE))
        cap = max(size, min(int(max_page_size if max_page_size is not None else size), MAX_PAGE_SIZE))
        floor = max(1, min(int(min_page_size), size))
        need = 1  # fast full pages in a row before the page doubles
        fast = 0
        key: Any = None
        while True:
            sql, values = build(key)
            try:
                res = self.query(f"{sql.rstrip().rstrip(';')} LIMIT {size + 1}", values, name=name,
                                 modifiers=modifiers, timeout_is_too_slow=size > floor)
            except QueryTooSlowError as exc:
                if size <= floor:
                    raise QueryTooSlowError(
                        f"PostHog could not answer even a page of {size:,} rows in time: {exc.message}",
                        hint="Ask for a shorter time range; PostHog may also be busy: try again later.",
                        timed_out=exc.timed_out,
                        page_size=size,
                        service=SERVICE,
                        status=exc.status,
                        code=exc.code,
                        detail=exc.detail,
                    ) from exc
                size = max(floor, size // 2)
                fast, need = 0, min(64, max(4, need * 2))
                self.stats.add(retries=1, ambiguous_retries=int(exc.timed_out))
                if on_shrink is not None:
                    on_shrink(size)
                continue
            rows = res.results
            elapsed = res.elapsed_s
            del res
            more = len(rows) > size
            if more:
                del rows[size:]
            if not rows:
                return
            new_key = key_of(rows[-1]) if more else None  # before the caller sees (and may empty) the page
            grow_to = None
            if more and size < cap:
                fast = fast + 1 if elapsed < FAST_ANSWER_S else 0
                if fast >= need:
                    grow_to, fast = min(cap, size * 2), 0
            yield rows
            del rows
            if not more:
                return
            if key is not None and new_key == key:
                raise QueryError(
                    "keyset paging did not advance (the key of the last row repeats): the query's ORDER BY "
                    "must match its key",
                    service=SERVICE,
                )
            key = new_key
            if grow_to is not None:
                size = grow_to
                if on_grow is not None:
                    on_grow(size)


def _seconds(timeout: httpx.Timeout | float) -> str:
    value = timeout.read if isinstance(timeout, httpx.Timeout) else timeout
    return f"{value:g} s" if value is not None else "the time allowed"


def _json(resp: httpx.Response) -> Any:
    return _json_content(resp.content, resp.status_code)


def _json_start_problem(resp: httpx.Response) -> str | None:
    """A cheap look at a 2xx answer (the body is parsed later, once): None when it starts like
    JSON (an object or a list), else what it is."""
    head = resp.content[:512].lstrip()
    if head[:1] in (b"{", b"["):
        return None
    if resp.status_code == 204 or not head:
        return "an empty body"
    low = head.lower()
    if low.startswith((b"<!doctype", b"<html")) or b"<html" in low:
        return "an HTML page instead of PostHog's JSON (a proxy or captive portal in between?)"
    return "a body that is not JSON"


def _json_content(content: bytes, status: int) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        raise UnexpectedAnswerError(
            f"PostHog answered HTTP {status} with something that is not JSON "
            f"(a proxy or captive portal in between?): {content.decode('utf-8', 'replace')[:120]!r}",
            service=SERVICE,
            status=status,
        ) from None


def _object(data: Any) -> dict[str, Any]:
    """A JSON answer that must be an object (``/@me/``, a project, an organization)."""
    if not isinstance(data, dict):
        raise UnexpectedAnswerError(
            f"PostHog answered with JSON that is not an object: {str(data)[:120]!r}", service=SERVICE
        )
    return data
