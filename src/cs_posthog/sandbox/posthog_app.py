"""The sandbox PostHog: the private API surface cs-posthog uses, with PostHog's shapes, errors and limits.

Shapes follow PostHog's source (``posthog/auth.py``, ``permissions.py``, ``rate_limit.py``,
``api/query.py``, ``api/event_definition.py``, ``api/property_definition.py``, ``api/routing.py``,
``clickhouse/client/limit.py``, ``hogql_queries/hogql_query_runner.py``, ``exceptions.py``,
drf-exceptions-hog). Every Cloud behaviour below is on by default and can be switched (``--query-tier``,
``--query-time-limit``, ``--poe-mode``, ``--org-denies-personal-keys``; at run time ``POST /_sandbox/config``).

* Errors are always ``{"type", "code", "detail", "attr"}``.
* Auth, in DRF's order: 401 (no key: ``not_authenticated``; unknown key, a ``phc_`` token, or a key
  of the other region: ``authentication_failed``, "Personal API key found in request
  Authorization header is invalid."), then permissions (403 ``permission_denied``; first the
  organization's policy when it refuses personal API keys (``APIScopePermission.
  _check_organization_personal_api_key_restrictions``: "Organization 'Sandbox Analytics' does not allow
  using personal API keys. Contact an admin to enable personal API keys for this organization.", on every
  project and organization endpoint, not on ``@current``, ``/users/@me/`` or the organizations list;
  the sandbox user is then a member, since admins are exempt), then a key scoped to other projects, "API
  key does not have access to the requested project: ID N.", or on listing endpoints "API keys with scoped
  projects are only supported on project-based endpoints."; then "API key missing required scope
  'x:read'"; ``x:write`` satisfies ``x:read``, ``*`` everything), then throttles (429
  ``throttled_error``, "Request was throttled. Expected available in N seconds.", no ``Retry-After``
  header: drf-exceptions-hog drops it).
* Scopes per endpoint: ``@current`` none (a key may read itself; the ``api_key_no_current`` key is
  refused as older servers did, "API key missing required scope 'personal_api_key:read'"),
  ``/api/users/@me/`` user:read, organizations organization:read, projects project:read, event
  definitions event_definition:read, property definitions property_definition:read (``type=group`` too),
  ``/groups_types/`` and ``/groups/`` group:read (``api_key_no_group`` lacks it), ``/query/`` and
  the legacy ``/events/`` query:read, legacy ``/persons/`` person:read, ``/actions/`` action:read.
* Rate limits per personal API key (DRF's sliding windows and wait formula). ``/query/`` has its own
  (``QueryViewSet.get_throttles`` replaces the default ones there): on the ``current`` tier
  APIQueriesBurst/SustainedThrottle, 240/minute and 2,400/hour; on the ``legacy`` tier (teams on
  API_QUERIES_LEGACY_TEAM_LIST) HogQLQueryThrottle, 120 HogQL queries/hour (other query kinds:
  ClickHouseBurst/SustainedRateThrottle, 240/minute and 1,200/hour). Every other endpoint
  480/minute and 4,800/hour (Burst/SustainedRateThrottle). ``fast`` divides every window by 60 (legacy:
  120 per minute, waits of up to 60 s); the waits named in ``detail`` are real seconds.
* Concurrency (``get_api_team_rate_limiter``): 3 ``/query/`` at once per team (project), current tier
  only (legacy teams are outside that limiter), when rate limits are on. A 4th retries with PostHog's
  backoff for up to 30 s (scaled), then 429 ``throttled_error`` "Exceeded maximum concurrency limit: 3 for
  key: api:query:per-team:<project id> and task: <client_query_id or a uuid7 hex>" (``Throttled(detail=
  str(ConcurrencyLimitExceeded))``: no wait). ``POST /_sandbox/query_slots`` holds or frees slots.
* Time limit (``HogQLQueryRunner._calculate``): a personal-API-key query may run 10 s on the current
  tier (API_QUERIES_MAX_EXECUTION_TIME), 60 s on the legacy tier (HogQLGlobalSettings'
  max_execution_time: no API ceiling); ``--query-time-limit`` is a per-team override
  (API_QUERIES_MAX_EXECUTION_TIME_PER_TEAM). Modelled as rows scanned (the engine's ``max_cost``, see
  ``QUERY_ROWS_PER_SECOND``). Over it: 504 ``{"type": "server_error", "code": "error", "detail": "This
  query hit the 10-second time limit for queries run through the API. Submit it as an async query ...",
  "attr": null}`` (ClickHouseQueryTimeOut with api_timeout_detail); a legacy team without an override
  gets ClickHouseQueryTimeOut's default detail ("Query has hit the max execution time before
  completing. ..."). Counted in stats as ``query_timeouts``.
* ``/query/`` runs ``HogQLQuery`` only (``values``, ``modifiers``, ``refresh``) through
  ``cs_posthog.sandbox.hogql``; the team's persons-on-events mode (``--poe-mode``: ``stamped`` =
  ``person_id_override_properties_on_events``, Cloud's default, or ``joined``) applies unless the
  query's ``modifiers.personsOnEventsMode`` names one (``create_default_modifiers_for_team``), and is
  the project's ``default_modifiers``. Results are cached 6 hours per (query, values, effective
  modifiers) unless ``refresh`` is ``force_blocking``/``force_async``/``true``; DateTime columns come
  back in the project's timezone unless ``modifiers.convertToProjectTimezone`` is false (PostHog's
  default); async refresh modes are answered synchronously; unknown kinds are refused like pydantic
  would (400 ``parse_error``), other known kinds with a clear 400; what ClickHouse itself fails is a
  500 "ClickHouse error while executing query.".
* Event definitions (``EventDefinitionViewSet``): default order ``last_seen_at::date DESC, name`` with
  limit/offset, so a definition seen again moves to an earlier page while a client pages;
  ``ordering=`` takes ``name``, ``last_seen_at``, ``last_seen_at::date``, ``created_at``,
  ``created_at::date`` (``-`` for descending, comma-joined or repeated; others dropped; ``name``
  appended as the tiebreaker; NULLS FIRST ascending, LAST descending); a search without ordering
  sorts by ``length(name)`` first. Not modelled: large projects (over NAME_ORDER_MIN_DEFINITIONS)
  defaulting to name order, ``count_is_capped``.
* Property definitions (``PropertyDefinitionViewSet``): ordered by name (``is_seen_on_filtered_events
  DESC`` first, NULL without ``event_names``); search terms are ``name ILIKE '%term%'`` each
  (``posthog/filters.py``: ``_`` and ``%`` are wildcards); for ``type=person`` a term that is a
  substring of "latest" also matches every name without "initial" (``add_latest_means_not_initial``),
  so such a search returns nearly everything; virtual person properties come last, on the last page.
  Not modelled: PROPERTY_NAME_ALIASES.
* Page order (documentation only): PostHog returns rows of equal sort key in no fixed order, and
  sorts names by the database's collation (on Cloud likely a linguistic one that ignores ``$`` and
  case at first); the sandbox is deterministic (SQLite code-point order for names, ties in
  definitions broken by name, HogQL ties by SQLite's plan), so a client must not rely on an order
  beyond the keys it asks for.
* Groups (``posthog/api/group.py``): ``/groups_types/`` a plain list (no pagination) of the group types;
  ``/groups/?group_type_index=N`` newest first, 100 a page with a forward-only ``cursor``, ``search`` on the
  key or the name. Group property definitions (``type=group&group_type_index=N``) with
  PropertyDefinitionQuerySerializer's validation.
* Legacy ``/persons/`` (limit/offset, newest first) and ``/events/`` (``after`` defaults to 24 hours
  ago, ``before``, ``event``, ``distinct_id``, ``person_id``, ``orderBy``; ``next`` moves ``before``
  to the last timestamp as PostHog does; offsets over 50,000 refused), both capped at 1,000 rows.
* Unknown project id: 404 ``not_found`` ("Not found." on the project itself, "Project not found."
  under it).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from cs_posthog.sandbox import data as D
from cs_posthog.sandbox import hogql_errors
from cs_posthog.sandbox.hogql import HogQLError
from cs_posthog.sandbox.ingest import Capture, capture_label, is_capture_path
from cs_posthog.sandbox.server import (
    App,
    DBPool,
    Request,
    Response,
    SlidingWindow,
    ceil_wait,
    json_response,
    jsonl_response,
    throttle_check,
)

# ---------------------------------------------------------------------------------------------
# Identity: organization, projects, keys
# ---------------------------------------------------------------------------------------------

READ_SCOPES = [
    "action:read",
    "event_definition:read",
    "group:read",
    "organization:read",
    "person:read",
    "project:read",
    "property_definition:read",
    "query:read",
    "user:read",
]


@dataclass
class ApiKey:
    id: str
    label: str
    value: str
    scopes: list[str]
    scoped_teams: list[int] | None = None
    scoped_organizations: list[str] | None = None
    refuse_current: bool = False
    created_at: str = ""

    @property
    def mask_value(self) -> str:
        return f"{self.value[:4]}...{self.value[-4:]}"


@dataclass
class Project:
    id: int
    uuid: str
    name: str
    timezone: str
    api_token: str
    created_at: str
    pool: DBPool | None = None


@dataclass
class Organization:
    id: str
    name: str
    slug: str
    created_at: str


@dataclass
class User:
    uuid: str
    distinct_id: str
    first_name: str
    last_name: str
    email: str
    date_joined: str


@dataclass
class Identity:
    region: str
    organization: Organization
    user: User
    project: Project  # the one with the data
    other_project: Project  # same organization, no data; api_key_other_project is scoped to it
    keys: dict[str, ApiKey] = field(default_factory=dict)
    named_keys: dict[str, str] = field(default_factory=dict)  # JSON-line name -> key value


def make_key(rng, label: str, scopes: list[str], created: str, **kw) -> ApiKey:
    return ApiKey(id=D.uuid4_from(rng), label=label, value="phx_" + D.random_token(rng, 40), scopes=scopes,
                  created_at=created, **kw)


def build_identity(seed: int, region: str, anchor_us: int) -> Identity:
    rng = random.Random(f"{seed}:identity")
    created = D.db_to_iso(D.fmt_db(anchor_us - 400 * D.DAY_US))
    project_id = rng.randrange(10_000, 99_000)
    tz = "Europe/Prague" if region == "eu" else "America/New_York"
    org = Organization(id=D.uuid4_from(rng), name="Sandbox Analytics", slug="sandbox-analytics", created_at=created)
    user = User(uuid=D.uuid4_from(rng), distinct_id=D.random_token(rng, 32), first_name="Sandra",
                last_name="Box", email="sandra.box@example.com", date_joined=created)
    project = Project(id=project_id, uuid=D.uuid4_from(rng), name="Sandbox web app", timezone=tz,
                      api_token="phc_" + D.random_token(rng, 43), created_at=created)
    other = Project(id=project_id + 1, uuid=D.uuid4_from(rng), name="Sandbox staging", timezone=tz,
                    api_token="phc_" + D.random_token(rng, 43), created_at=created)
    ident = Identity(region=region, organization=org, user=user, project=project, other_project=other)
    main = make_key(rng, "cs-posthog", list(READ_SCOPES), created)
    missing = make_key(rng, "cs-posthog (too few scopes)",
                       [s for s in READ_SCOPES if s not in ("query:read", "property_definition:read")], created)
    other_key = make_key(rng, "staging only", ["*"], created, scoped_teams=[other.id])
    no_current = make_key(rng, "cs-posthog (older server)", list(READ_SCOPES), created, refuse_current=True)
    no_group = make_key(rng, "cs-posthog (no Group read)", [s for s in READ_SCOPES if s != "group:read"], created)
    for name, key in (("api_key", main), ("api_key_missing_scopes", missing),
                      ("api_key_other_project", other_key), ("api_key_no_current", no_current),
                      ("api_key_no_group", no_group)):
        ident.keys[key.value] = key
        ident.named_keys[name] = key.value
    return ident


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, type_: str, code: str, detail: str, attr: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.type, self.code, self.detail, self.attr = status, type_, code, detail, attr

    def response(self) -> Response:
        return json_response(self.status, {"type": self.type, "code": self.code, "detail": self.detail,
                                           "attr": self.attr})


def not_found(detail: str = "Not found.") -> ApiError:
    return ApiError(404, "invalid_request", "not_found", detail)


def denied(detail: str) -> ApiError:
    return ApiError(403, "authentication_error", "permission_denied", detail)


def validation(detail: str, code: str = "invalid_input", attr: str | None = None) -> ApiError:
    return ApiError(400, "validation_error", code, detail, attr)


def parse_error(detail: str) -> ApiError:
    return ApiError(400, "invalid_request", "parse_error", detail)


def throttled_detail(wait: float) -> str:
    n = ceil_wait(wait)
    return f"Request was throttled. Expected available in {n} second{'' if n == 1 else 's'}."


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------

P = r"/api/(?:projects|environments)/(?P<pid>[^/]+)"


@dataclass
class Route:
    pattern: re.Pattern[str]
    label: str
    methods: tuple[str, ...]
    scope: str | None  # None: special handling
    kind: str  # "project" (nested under a project), "detail" (the project itself), "org", "user", "key"
    handler: str
    throttle: str = "default"


def _r(regex: str, label: str, methods: tuple[str, ...], scope: str | None, kind: str, handler: str,
       throttle: str = "default") -> Route:
    return Route(re.compile("^" + regex + "/?$"), label, methods, scope, kind, handler, throttle)


ROUTES = [
    _r(r"/api/personal_api_keys/(?P<kid>[^/]+)", "/api/personal_api_keys/{id}/", ("GET",), None, "key",
       "h_personal_key"),
    _r(r"/api/users/(?P<uid>[^/]+)", "/api/users/{id}/", ("GET",), "user:read", "user", "h_user"),
    _r(r"/api/organizations", "/api/organizations/", ("GET",), "organization:read", "org", "h_orgs"),
    _r(r"/api/organizations/(?P<oid>[^/]+)", "/api/organizations/{id}/", ("GET",), "organization:read", "org",
       "h_org"),
    _r(r"/api/(?:projects|environments)", "/api/projects/", ("GET",), "project:read", "org", "h_projects"),
    _r(P, "/api/projects/{id}/", ("GET",), "project:read", "detail", "h_project"),
    _r(P + r"/event_definitions", "/api/projects/{id}/event_definitions/", ("GET",), "event_definition:read",
       "project", "h_event_definitions"),
    _r(P + r"/property_definitions", "/api/projects/{id}/property_definitions/", ("GET",),
       "property_definition:read", "project", "h_property_definitions"),
    _r(P + r"/groups_types", "/api/projects/{id}/groups_types/", ("GET",), "group:read", "project",
       "h_groups_types"),
    _r(P + r"/groups", "/api/projects/{id}/groups/", ("GET",), "group:read", "project", "h_groups"),
    _r(P + r"/query", "/api/projects/{id}/query/", ("POST",), "query:read", "project", "h_query", "query"),
    _r(P + r"/query/(?P<qkind>[A-Z][A-Za-z]*)", "/api/projects/{id}/query/{kind}/", ("POST",), "query:read",
       "project", "h_query", "query"),
    _r(P + r"/persons", "/api/projects/{id}/persons/", ("GET",), "person:read", "project", "h_persons"),
    _r(P + r"/events", "/api/projects/{id}/events/", ("GET",), "query:read", "project", "h_events"),
    _r(P + r"/actions", "/api/projects/{id}/actions/", ("GET",), "action:read", "project", "h_actions"),
]

KNOWN_QUERY_KINDS = {
    "EventsNode", "ActionsNode", "PersonsNode", "DataWarehouseNode", "EventsQuery", "ActorsQuery",
    "GroupsQuery", "InsightActorsQuery", "HogQuery", "HogQLQuery", "HogQLMetadata", "HogQLAutocomplete",
    "HogQLASTQuery", "SessionsTimelineQuery", "SessionsQuery", "RecordingsQuery", "DatabaseSchemaQuery",
    "TrendsQuery", "FunnelsQuery", "RetentionQuery", "PathsQuery", "StickinessQuery", "LifecycleQuery",
    "WebOverviewQuery", "WebStatsTableQuery", "ErrorTrackingQuery", "DataTableNode", "DataVisualizationNode",
    "InsightVizNode", "SavedInsightNode", "TracesQuery",
}
FORCE_REFRESH = {"force_blocking", "force_async", "force_cache_async"}
GROUPS_PAGE_SIZE = 100  # GroupsViewSet.list: list_groups' page
CACHE_TTL_S = 6 * 3600
CACHE_MAX_ROWS = 120_000

# Throttle tiers of /query/ (posthog/api/query.py QueryViewSet.get_throttles, posthog/rate_limit.py).
QUERY_TIERS = ("current", "legacy")
# personsOnEventsMode values of the sandbox's --poe-mode (posthog/schema.py PersonsOnEventsMode).
POE_MODES = {"stamped": "person_id_override_properties_on_events",
             "joined": "person_id_override_properties_joined"}
# max_execution_time of a personal-API-key query: 10 s on current teams (API_QUERIES_MAX_EXECUTION_TIME, once
# hard-coded in hogql_query_runner.py), none of its own on legacy teams, so HogQLGlobalSettings' 60 s
# (posthog/hogql/constants.py).
CLOUD_API_TIME_LIMIT_S = 10.0
LEGACY_TIME_LIMIT_S = 60.0
# The time-limit model: a query "runs" for cost / QUERY_ROWS_PER_SECOND seconds, cost being the rows the engine
# models as scanned (hogql.execute's max_cost, hogql.query_cost): the events inside the query's bounds on
# `timestamp` (PostHog's events table is sorted by toDate(timestamp); LIMIT, keysets on created_at/uuid and
# event filters do not narrow the scan), plus the persons table and one row per event when the current Person
# is joined (personsOnEventsMode joined), or every Person for a persons query. 1M rows/s is a conservative
# ClickHouse figure for JSON property reads: at Cloud's 10 s (10M rows) nothing the sync sends times out even at
# 1M events; with the default 20,000-event sandbox, --query-time-limit 0.005 (5,000 rows) makes an unbounded
# page time out and a page over a few days' window pass.
QUERY_ROWS_PER_SECOND = 1_000_000
# ClickHouseQueryTimeOut.default_detail (posthog/exceptions.py): what a timeout says without an API ceiling.
TIMEOUT_DEFAULT_DETAIL = ("Query has hit the max execution time before completing. See our docs for how to improve "
                          "your query performance. You may need to materialize.")


def api_timeout_detail(limit_s: float) -> str:
    """posthog/hogql_queries/hogql_query_runner.py api_timeout_detail (the limit printed as an integer there)."""
    n = int(limit_s) if float(limit_s).is_integer() else f"{limit_s:g}"
    return (f"This query hit the {n}-second time limit for queries run through the API. "
            "Submit it as an async query to give it more time: "
            "https://posthog.com/docs/api/queries#asynchronous-queries. "
            "You can also narrow the date range or the filters so it scans less data: "
            "https://posthog.com/docs/api/queries#writing-performant-queries")


def org_denies_keys_detail(org_name: str) -> str:
    """posthog/permissions.py APIScopePermission._check_organization_personal_api_key_restrictions."""
    return (f"Organization '{org_name}' does not allow using personal API keys. "
            "Contact an admin to enable personal API keys for this organization.")


def like_matcher(term: str) -> Callable[[str], bool]:
    """``name ILIKE '%term%'`` (posthog/filters.py term_search_filter_sql): ``_`` and ``%`` are wildcards."""
    if "%" not in term and "_" not in term:
        low = term.lower()
        return lambda name: low in name.lower()
    rx = re.compile(".*".join(".".join(re.escape(p) for p in part.split("_")) for part in term.split("%")),
                    re.IGNORECASE | re.DOTALL)
    return lambda name: rx.search(name) is not None


def accepts_kwarg(fn: Callable | None, name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (the engine gains parameters while the sandbox is developed)."""
    if fn is None:
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def page_url(req: Request, **updates: object) -> str:
    """DRF's replace/remove_query_param on the absolute request URL (parameters sorted)."""
    params = {k: list(v) for k, v in req.query.items()}
    for key, value in updates.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = [str(value)]
    qs = urlencode(sorted(params.items()), doseq=True)
    return f"{req.base_url}{req.path}" + (f"?{qs}" if qs else "")


def int_param(req: Request, name: str, default: int, minimum: int) -> int:
    raw = req.param(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation("A valid integer is required.", "invalid_input", name) from None
    if value < minimum:
        raise validation(f"Ensure this value is greater than or equal to {minimum}.", "min_value", name)
    return value


def paginate(req: Request, items: list, limit: int, offset: int) -> dict:
    count = len(items)
    nxt = None if offset + limit >= count else page_url(req, limit=limit, offset=offset + limit)
    if offset <= 0:
        prev = None
    elif offset - limit <= 0:
        prev = page_url(req, limit=limit, offset=None)
    else:
        prev = page_url(req, limit=limit, offset=offset - limit)
    return {"count": count, "next": nxt, "previous": prev, "results": items[offset:offset + limit]}


def search_terms(req: Request) -> list[str]:
    return [t.lower() for t in (req.param("search") or "").split()]


def iso_offset(db_value: str | None) -> str | None:
    """DB text -> ``2024-01-01T10:00:00.123456+00:00`` (how DRF renders aware datetimes here)."""
    if db_value is None:
        return None
    text = str(db_value)
    if "." not in text:
        text += ".000000"
    return text.replace(" ", "T", 1) + "+00:00"


def to_timezone(result: dict, tz_name: str) -> dict:
    """What ``convertToProjectTimezone`` (PostHog's default) does: DateTime columns in the project's zone.

    The engine answers in UTC (``...Z``, or naive for persons.created_at); PostHog wraps such columns
    in ``toTimeZone(x, tz)`` and renders aware datetimes with their offset.
    """
    types = result.get("types") or []
    idx = [i for i, t in enumerate(types) if isinstance(t, list | tuple) and len(t) > 1 and "DateTime" in str(t[1])]
    if not idx:
        return result
    zone = ZoneInfo(tz_name)

    def conv(value: object) -> object:
        if not isinstance(value, str) or len(value) < 19:
            return value
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.astimezone(zone).isoformat()

    rows = [list(r) for r in result["results"]]
    for row in rows:
        for i in idx:
            row[i] = conv(row[i])
    new_types = [list(t) for t in types]
    for i in idx:
        new_types[i][1] = re.sub(r"'[^']*'", f"'{tz_name}'", new_types[i][1]) if "'" in new_types[i][1] \
            else new_types[i][1].replace(")", f", '{tz_name}')") if "(" in new_types[i][1] \
            else f"DateTime('{tz_name}')"
    return {**result, "results": rows, "types": new_types}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------


class PostHogApp(App):
    def __init__(self, *, name: str, identity: Identity | None, data_pool: DBPool, rate_limits: str = "off",
                 hogql_execute: Callable | None = None, seed: int = 0, query_tier: str = "current",
                 query_time_limit: float | None = None, poe_mode: str = "stamped",
                 org_denies_personal_keys: bool = False, query_rows_per_second: float = QUERY_ROWS_PER_SECOND,
                 rate_scale: float | None = None) -> None:
        super().__init__()
        if query_tier not in QUERY_TIERS:
            raise ValueError(f"query_tier must be one of {QUERY_TIERS}")
        if poe_mode not in POE_MODES:
            raise ValueError(f"poe_mode must be one of {tuple(POE_MODES)}")
        self.name = name
        self.identity = identity  # None: the region where the project does not live (every key is unknown)
        self.data_pool = data_pool
        self.rate_limits = rate_limits
        self._execute = hogql_execute
        self._execute_kwargs = {k for k in ("modifiers", "poe_default", "max_cost", "time_limit_s", "json_rows")
                                if accepts_kwarg(hogql_execute, k)}
        self.seed = seed
        scale = (rate_scale or 60.0) if rate_limits == "fast" else 1.0  # --rate-scale: how much faster
        self.scale = scale
        self.query_tier = query_tier
        self.query_time_limit = query_time_limit  # None: as on Cloud for the tier (10 s current, 60 s legacy)
        self.query_rows_per_second = query_rows_per_second
        self.poe_mode = poe_mode
        self.org_denies_personal_keys = org_denies_personal_keys
        self._make_windows()
        self.max_concurrent_queries = 3
        self._running: dict[int, int] = {}  # project id -> queries holding a slot
        self._running_lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._hook_rng = random.Random(f"{seed}:hooks:{name}")
        self._task_rng = random.Random(f"{seed}:tasks:{name}")
        self.stats.extra["hogql_queries"] = 0
        self.stats.extra["query_timeouts"] = 0
        # capture (/batch/, /e/, ...): the projects' public tokens; the other region knows none
        projects = {p.api_token: (p.pool, p.id) for p in (identity.project, identity.other_project)
                    if p.pool is not None} if identity is not None else {}
        self.capture = Capture(projects, self.stats, seed)

    def _make_windows(self) -> None:
        """One DRF throttle (scope) per window; each keeps its own history per key, as DRF's cache keys do."""
        scale = self.scale
        self.windows = {
            # BurstRateThrottle 480/minute, SustainedRateThrottle 4800/hour (DEFAULT_THROTTLE_CLASSES)
            "default": [SlidingWindow(480, 60 / scale), SlidingWindow(4800, 3600 / scale)],
            # APIQueriesBurstThrottle 240/minute, APIQueriesSustainedThrottle 2400/hour (current teams)
            "query": [SlidingWindow(240, 60 / scale), SlidingWindow(2400, 3600 / scale)],
            # HogQLQueryThrottle 120/hour: a HogQLQuery from a team on API_QUERIES_LEGACY_TEAM_LIST
            "query_legacy_hogql": [SlidingWindow(120, 3600 / scale)],
            # ClickHouseBurstRateThrottle 240/minute, ClickHouseSustainedRateThrottle 1200/hour: other kinds there
            "query_legacy_other": [SlidingWindow(240, 60 / scale), SlidingWindow(1200, 3600 / scale)],
        }

    def effective_time_limit(self) -> float:
        if self.query_time_limit is not None:
            return self.query_time_limit
        return CLOUD_API_TIME_LIMIT_S if self.query_tier == "current" else LEGACY_TIME_LIMIT_S

    def configure(self, **changes: object) -> dict:
        """Change Cloud settings at run time (the ``/_sandbox/config`` hook); returns the settings now."""
        if "query_tier" in changes:
            tier = changes["query_tier"]
            if tier not in QUERY_TIERS:
                raise ValueError(f"query_tier must be one of {QUERY_TIERS}")
            self.query_tier = str(tier)
        if "query_time_limit" in changes:
            limit = changes["query_time_limit"]
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0):
                raise ValueError("query_time_limit must be a positive number of seconds or null")
            self.query_time_limit = None if limit is None else float(limit)
        if "query_rows_per_second" in changes:
            rps = changes["query_rows_per_second"]
            if isinstance(rps, bool) or not isinstance(rps, int | float) or rps <= 0:
                raise ValueError("query_rows_per_second must be a positive number")
            self.query_rows_per_second = float(rps)
        if "poe_mode" in changes:
            if changes["poe_mode"] not in POE_MODES:
                raise ValueError(f"poe_mode must be one of {tuple(POE_MODES)}")
            self.poe_mode = str(changes["poe_mode"])
        if "org_denies_personal_keys" in changes:
            self.org_denies_personal_keys = bool(changes["org_denies_personal_keys"])
        if changes.get("reset_throttles"):
            self._make_windows()
        if "ingest_faults" in changes:
            self.capture.set_faults(changes["ingest_faults"])
        unknown = set(changes) - {"query_tier", "query_time_limit", "query_rows_per_second", "poe_mode",
                                  "org_denies_personal_keys", "reset_throttles", "ingest_faults"}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        with self._cache_lock:  # answers computed under other settings must not be served
            self._cache.clear()
        return self.settings()

    def settings(self) -> dict:
        return {"query_tier": self.query_tier, "query_time_limit": self.effective_time_limit(),
                "query_time_limit_explicit": self.query_time_limit is not None,
                "query_rows_per_second": self.query_rows_per_second, "poe_mode": self.poe_mode,
                "org_denies_personal_keys": self.org_denies_personal_keys,
                "rate_limits": self.rate_limits, "ingest_faults": self.capture.pending_faults()}

    # -- framework hooks ----------------------------------------------------------------------

    def route_of(self, method: str, path: str) -> str:
        if is_capture_path(path):
            return f"{method} {capture_label(path)}"
        for route in ROUTES:
            if route.pattern.match(path):
                return f"{method} {route.label}"
        return f"{method} (unknown)"

    def fault_response(self, kind: str) -> Response:
        if kind == "500":
            return ApiError(500, "server_error", "error", "A server error occurred.").response()
        if kind == "429":
            return ApiError(429, "throttled_error", "throttled", throttled_detail(1)).response()
        return super().fault_response(kind)

    def too_large(self) -> Response:
        return ApiError(413, "invalid_request", "request_too_large", "Request body too large.").response()

    def handle(self, req: Request) -> Response:
        if is_capture_path(req.path):
            return self.capture.handle(req)
        try:
            return self._handle(req)
        except ApiError as exc:
            if exc.status == 429:
                self.stats.throttle()
            return exc.response()

    def _handle(self, req: Request) -> Response:
        for route in ROUTES:
            m = route.pattern.match(req.path)
            if m:
                break
        else:
            raise not_found()
        key = self.authenticate(req)
        if req.method not in route.methods:
            raise ApiError(405, "invalid_request", "method_not_allowed", f'Method "{req.method}" not allowed.')
        project = self.authorize(req, route, m.groupdict(), key)
        wait = (throttle_check(self._throttle_windows(route, req), key.value) if self.rate_limits != "off"
                else None)
        if wait is not None:
            raise ApiError(429, "throttled_error", "throttled", throttled_detail(wait))
        return getattr(self, route.handler)(req, key, project, m.groupdict())

    def _throttle_windows(self, route: Route, req: Request) -> list[SlidingWindow]:
        """QueryViewSet.get_throttles: it replaces the default throttles, so burst/sustained never apply there."""
        if route.throttle != "query":
            return self.windows[route.throttle]
        if self.query_tier == "current":
            return self.windows["query"]
        try:
            body = json.loads(req.body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError):
            body = None
        query = body.get("query") if isinstance(body, dict) else None
        if isinstance(query, dict) and query.get("kind") == "HogQLQuery":
            return self.windows["query_legacy_hogql"]
        return self.windows["query_legacy_other"]

    # -- auth ---------------------------------------------------------------------------------

    def authenticate(self, req: Request) -> ApiKey:
        token = source = None
        auth = req.headers.get("authorization")
        if auth:
            m = re.match(r"^Bearer\s+(\S.+)$", auth)
            if m:
                token = m.group(1).strip()
                source = "Authorization header"
                if token.startswith("pha_"):  # OAuth tokens go to another authenticator
                    token = source = None
        if token is None and req.body and req.headers.get("content-type", "").startswith("application/json"):
            try:
                body = json.loads(req.body)
            except ValueError:
                body = None
            if isinstance(body, dict) and "personal_api_key" in body:
                token, source = str(body["personal_api_key"]), "body"
        if token is None and req.param("personal_api_key") is not None:
            token, source = req.param("personal_api_key"), "query string"
        if token is None:
            raise ApiError(401, "authentication_error", "not_authenticated",
                           "Authentication credentials were not provided.")
        key = self.identity.keys.get(token) if self.identity else None
        if key is None:
            raise ApiError(401, "authentication_error", "authentication_failed",
                           f"Personal API key found in request {source} is invalid.")
        return key

    def _ident(self) -> Identity:
        """The identity, for what runs after ``authenticate`` (authorization, serialisers, handlers)."""
        ident = self.identity
        assert ident is not None  # without an identity authenticate finds no key: no request gets past it
        return ident

    def project_by_ref(self, ref: str, detail_404: str) -> Project:
        ident = self._ident()
        if ref == "@current":
            return ident.project
        try:
            pid = int(ref)
        except ValueError:
            raise not_found(detail_404) from None
        for project in (ident.project, ident.other_project):
            if project.id == pid:
                return project
        raise not_found(detail_404)

    def authorize(self, req: Request, route: Route, groups: dict, key: ApiKey) -> Project | None:
        ident = self._ident()
        project = None
        if route.kind in ("project", "detail"):
            project = self.project_by_ref(groups["pid"], "Not found." if route.kind == "detail"
                                          else "Project not found.")
        if route.kind == "key":
            if key.refuse_current and groups.get("kid") == "@current":
                raise denied("API key missing required scope 'personal_api_key:read'")
            return None
        if self.org_denies_personal_keys and (route.kind in ("project", "detail")
                                              or (route.kind == "org" and route.handler != "h_orgs")):
            # APIScopePermission.check_team_and_org_permissions: the organization's policy comes before the
            # key's project and scope checks; views without an organization (the organizations list,
            # @current, /users/@me/) are not checked. Admins are exempt: the sandbox user is a member then.
            raise denied(org_denies_keys_detail(ident.organization.name))
        if route.kind != "user" and key.scoped_teams:
            if project is None:
                raise denied("API keys with scoped projects are only supported on project-based endpoints.")
            if project.id not in key.scoped_teams:
                raise denied(f"API key does not have access to the requested project: ID {project.id}.")
        if (route.kind != "user" and key.scoped_organizations
                and ident.organization.id not in key.scoped_organizations):
            raise denied(f"API key does not have access to the requested organization: ID "
                         f"{ident.organization.id}.")
        if "*" in key.scopes or route.scope is None:
            return project
        obj = route.scope.split(":", 1)[0]
        if route.scope not in key.scopes and f"{obj}:write" not in key.scopes:
            raise denied(f"API key missing required scope '{route.scope}'")
        return project

    # -- serialisers ----------------------------------------------------------------------------

    def _org_json(self) -> dict:
        org = self._ident().organization
        return {"id": org.id, "name": org.name, "slug": org.slug, "logo_media_id": None,
                "created_at": org.created_at, "updated_at": org.created_at,
                "membership_level": 1 if self.org_denies_personal_keys else 15,
                "members_can_use_personal_api_keys": not self.org_denies_personal_keys,
                "plugins_access_level": 9, "teams": [self._project_basic(p) for p in self._projects()],
                "projects": [{"id": p.id, "name": p.name, "organization_id": org.id} for p in self._projects()],
                "available_product_features": [], "is_member_join_email_enabled": True, "metadata": {},
                "customer_id": None, "enforce_2fa": None, "member_count": 1}

    def _projects(self) -> list[Project]:
        ident = self._ident()
        return [ident.project, ident.other_project]

    def _project_basic(self, p: Project) -> dict:
        ident = self._ident()
        org = ident.organization
        return {"id": p.id, "uuid": p.uuid, "organization": org.id, "project_id": p.id, "api_token": p.api_token,
                "name": p.name, "completed_snippet_onboarding": True, "has_completed_onboarding_for": {
                    "product_analytics": True}, "ingested_event": p is ident.project, "is_demo": False,
                "timezone": p.timezone, "access_control": False}

    def _project_full(self, p: Project) -> dict:
        return {**self._project_basic(p), "created_at": p.created_at, "updated_at": p.created_at,
                "anonymize_ips": False, "app_urls": [], "slack_incoming_webhook": None,
                "test_account_filters": [], "test_account_filters_default_checked": False, "path_cleaning_filters": [],
                "data_attributes": ["data-attr"], "person_display_name_properties": ["email", "name", "username"],
                "correlation_config": {}, "autocapture_opt_out": False, "session_recording_opt_in": False,
                "week_start_day": 1, "primary_dashboard": None, "live_events_columns": None,
                "recording_domains": [], "person_on_events_querying_enabled": True, "modifiers": {},
                "default_modifiers": {"personsOnEventsMode": POE_MODES[self.poe_mode]},
                "effective_membership_level": 1 if self.org_denies_personal_keys else 15,
                "access_control_version": "v2"}

    # -- handlers -------------------------------------------------------------------------------

    def h_personal_key(self, req: Request, key: ApiKey, project, groups: dict) -> Response:
        kid = groups["kid"]
        if kid not in ("@current", key.id):
            raise not_found()
        return json_response(200, {
            "id": key.id, "label": key.label, "value": None, "mask_value": key.mask_value,
            "created_at": key.created_at, "last_used_at": now_iso(), "user_id": 1,
            "scopes": key.scopes or ["*"], "scoped_teams": key.scoped_teams or [],
            "scoped_organizations": key.scoped_organizations or [], "last_rolled_at": None})

    def h_user(self, req: Request, key: ApiKey, project, groups: dict) -> Response:
        ident = self._ident()
        if groups["uid"] not in ("@me", ident.user.uuid):
            raise not_found()
        u = ident.user
        org = self._org_json()
        return json_response(200, {
            "date_joined": u.date_joined, "uuid": u.uuid, "distinct_id": u.distinct_id,
            "first_name": u.first_name, "last_name": u.last_name, "email": u.email, "pending_email": None,
            "is_email_verified": True, "notification_settings": {}, "anonymize_data": False,
            "toolbar_mode": "toolbar", "has_password": True, "is_staff": False, "is_impersonated": False,
            "team": self._project_basic(ident.project), "organization": org,
            "organizations": [{"id": org["id"], "name": org["name"], "slug": org["slug"],
                               "membership_level": org["membership_level"],
                               "members_can_use_personal_api_keys": not self.org_denies_personal_keys}],
            "is_2fa_enabled": False, "has_social_auth": False, "scene_personalisation": []})

    def h_orgs(self, req: Request, key: ApiKey, project, groups: dict) -> Response:
        limit = int_param(req, "limit", 100, 1)
        offset = int_param(req, "offset", 0, 0)
        return json_response(200, paginate(req, [self._org_json()], limit, offset))

    def h_org(self, req: Request, key: ApiKey, project, groups: dict) -> Response:
        if groups["oid"] not in ("@current", self._ident().organization.id):
            raise not_found("Organization not found.")
        return json_response(200, self._org_json())

    def h_projects(self, req: Request, key: ApiKey, project, groups: dict) -> Response:
        limit = int_param(req, "limit", 100, 1)
        offset = int_param(req, "offset", 0, 0)
        return json_response(200, paginate(req, [self._project_basic(p) for p in self._projects()], limit, offset))

    def h_project(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        return json_response(200, self._project_full(project))

    def h_actions(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        limit = int_param(req, "limit", 100, 1)
        offset = int_param(req, "offset", 0, 0)
        return json_response(200, paginate(req, [], limit, offset))

    # -- definitions ------------------------------------------------------------------------------

    def h_event_definitions(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        limit = int_param(req, "limit", 100, 1)
        offset = int_param(req, "offset", 0, 0)
        event_type = req.param("event_type", "event")
        if event_type not in ("event", "event_custom", "event_posthog", "all", "action_event"):
            raise validation("Not a valid event type. Use one of: event, event_custom, event_posthog.",
                             attr="event_type")
        rows = []
        if project.pool is not None:
            with project.pool.conn() as conn:
                rows = conn.execute("SELECT name, id, created_at, last_seen_at FROM sbx_event_definitions").fetchall()
        terms = search_terms(req)
        matchers = [like_matcher(t) for t in terms]
        names_filter = {n for v in req.query.get("names", []) for n in v.split(",") if n}
        items = []
        for name, did, created, last_seen in rows:
            if event_type == "event_custom" and name.startswith("$"):
                continue
            if event_type == "event_posthog" and not name.startswith("$"):
                continue
            if matchers and not all(m(name) for m in matchers):
                continue
            if names_filter and name not in names_filter:
                continue
            items.append((name, did, created, last_seen))
        items.sort(key=lambda r: r[0])
        orderings = [o for raw in req.query.get("ordering", []) for o in raw.split(",") if o]
        orderings = [o for o in orderings if o.lstrip("-") in ("name", "last_seen_at", "created_at",
                                                              "last_seen_at::date", "created_at::date")]
        if not orderings:
            orderings = ["-last_seen_at::date", "name"]
            if terms:
                orderings = ["length(name)", *orderings]
        elif "name" not in [o.lstrip("-") for o in orderings]:
            orderings.append("name")
        for spec in reversed(orderings):
            desc = spec.startswith("-")
            fieldname = spec.lstrip("-")
            if fieldname == "length(name)":
                items.sort(key=lambda r: len(r[0]), reverse=desc)
            elif fieldname == "name":
                items.sort(key=lambda r: r[0], reverse=desc)
            else:  # NULLS FIRST ascending, NULLS LAST descending (create_event_definitions_sql)
                idx = 3 if fieldname.startswith("last_seen_at") else 2
                cut = 10 if fieldname.endswith("::date") else 26

                def nulls_first(r: tuple[Any, ...], i: int = idx, c: int = cut) -> tuple[bool, str]:
                    return r[i] is not None, (r[i] or "")[:c]

                items.sort(key=nulls_first, reverse=desc)
        results = [{
            "id": did, "name": name, "created_at": iso_offset(created), "last_seen_at": iso_offset(last_seen),
            "last_updated_at": iso_offset(last_seen), "tags": [], "enforcement_mode": "allow",
            "primary_property": None, "is_action": False, "action_id": None, "is_calculating": False,
            "last_calculated_at": None, "created_by": None, "post_to_slack": False,
        } for name, did, created, last_seen in items]
        return json_response(200, paginate(req, results, limit, offset))

    def h_property_definitions(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        limit = int_param(req, "limit", 100, 1)
        offset = int_param(req, "offset", 0, 0)
        ptype = req.param("type", "event")
        if ptype not in ("event", "person", "group", "session"):
            raise validation(f'"{ptype}" is not a valid choice.', "invalid_choice", "type")
        group_index = self._group_type_index_param(req, ptype)
        rows = []
        if project.pool is not None and ptype in ("event", "person"):
            with project.pool.conn() as conn:
                rows = conn.execute("SELECT name, id, property_type FROM sbx_property_definitions WHERE type = ? "
                                    "ORDER BY name", (ptype,)).fetchall()
        elif project.pool is not None and ptype == "group":
            with project.pool.conn() as conn:
                rows = conn.execute("SELECT name, id, property_type FROM sbx_group_property_definitions "
                                    "WHERE group_type_index = ? ORDER BY name", (group_index,)).fetchall()
        terms = search_terms(req)
        matchers = [like_matcher(t) for t in terms]
        # add_latest_means_not_initial (posthog/api/property_definition.py), person properties only: a search
        # word that is a substring of "latest" ("a", "at", "test", ...) also matches every name without
        # "initial" in it, so such a search returns nearly everything.
        latest = ptype == "person" and any(t in "latest" for t in terms)
        wanted = {n for n in (req.param("properties") or "").split(",") if n}
        numerical = req.param("is_numerical") == "true"

        def keep(name: str, prop_type: str | None, virtual: bool = False) -> bool:
            if virtual:  # filtered in Python: plain substrings, no "latest" rule (_filter_virtual_property)
                if not all(t in name.lower() for t in terms):
                    return False
            elif matchers and not all(m(name) for m in matchers) and not (latest and "initial" not in name.lower()):
                return False
            if wanted and name not in wanted:
                return False
            return not (numerical and prop_type != "Numeric")

        results = [{"id": pid, "name": name, "is_numerical": prop_type == "Numeric", "property_type": prop_type,
                    "tags": [], "is_seen_on_filtered_events": None}
                   for name, pid, prop_type in rows if keep(name, prop_type)]
        if ptype == "person" and project.pool is not None:
            for name in D.VIRTUAL_PERSON_PROPERTIES:
                prop_type = D.VIRTUAL_PROPERTY_TYPES[name]
                if keep(name, prop_type, virtual=True):
                    results.append({"id": name, "name": name, "is_numerical": prop_type == "Numeric",
                                    "property_type": prop_type, "tags": [], "is_seen_on_filtered_events": None,
                                    "virtual": True})
        return json_response(200, paginate(req, results, limit, offset))

    @staticmethod
    def _group_type_index_param(req: Request, ptype: str) -> int | None:
        """PropertyDefinitionQuerySerializer (posthog/api/property_definition.py): ``group_type_index`` is an
        integer, required with ``type=group``, refused with any other type, and 0..4 (GROUP_TYPES_LIMIT)."""
        raw = req.param("group_type_index")
        if raw is None or raw == "":
            if ptype == "group":
                raise validation("`group_type_index` must be set for `group` type")
            return None
        try:
            index = int(raw)
        except ValueError:
            raise validation("A valid integer is required.", "invalid_input", "group_type_index") from None
        if ptype != "group":
            raise validation("`group_type_index` can only set for `group` type")
        if index and not 0 <= index < 5:
            raise validation("Invalid value for `group_type_index`")
        return index

    # -- groups -----------------------------------------------------------------------------------

    def h_groups_types(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        """GroupsTypesViewSet.list (posthog/api/group.py): every group type of the project by index, not
        paginated (a plain JSON list), each as _group_type_row_to_response shapes it."""
        rows = []
        if project.pool is not None:
            with project.pool.conn() as conn:
                rows = conn.execute("SELECT group_type_index, group_type, name_singular, name_plural "
                                    "FROM group_type_mapping ORDER BY group_type_index").fetchall()
        return json_response(200, [
            {"group_type": gtype, "group_type_index": index, "name_singular": singular, "name_plural": plural,
             "detail_dashboard": None, "default_columns": None, "created_at": project.created_at}
            for index, gtype, singular, plural in rows])

    def h_groups(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        """GroupsViewSet.list (posthog/api/group.py): the groups of one type, newest first (created_at, then
        group_key, descending), GROUPS_PAGE_SIZE a page with a forward-only ``cursor`` in ``next``;
        ``previous`` is always null. ``search`` matches the key or the ``name`` property, ``group_key``
        the key (case-insensitive substrings)."""
        raw = req.param("group_type_index")
        if not raw:
            raise ApiError(400, "validation_error", "invalid_input",
                           "You must pass ?group_type_index= in this URL. To get a list of valid group types, "
                           "call /api/:project_id/groups_types/.", "group_type_index")
        try:
            index = int(raw)
        except ValueError:
            raise validation("A valid integer is required.", "invalid_input", "group_type_index") from None
        search = (req.param("search") or "").lower()
        key_part = (req.param("group_key") or "").lower()
        after: tuple[str, str] | None = None
        cursor = req.param("cursor")
        if cursor:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
                after = (D.fmt_db(int(decoded["c"])), str(decoded["k"]))
            except (ValueError, KeyError, TypeError, UnicodeError):
                after = None  # an invalid cursor restarts from the first page, as PostHog does
        rows = []
        if project.pool is not None:
            with project.pool.conn() as conn:
                rows = conn.execute("SELECT group_key, properties, created_at FROM groups WHERE group_type_index = ? "
                                    "ORDER BY created_at DESC, group_key DESC", (index,)).fetchall()
        picked = []
        for gkey, props_text, created in rows:
            if after is not None and (created, gkey) >= after:
                continue
            props = json.loads(props_text or "{}")
            name = props.get("name")
            if search and search not in gkey.lower() and not (isinstance(name, str) and search in name.lower()):
                continue
            if key_part and key_part not in gkey.lower():
                continue
            picked.append((gkey, props, created))
            if len(picked) > GROUPS_PAGE_SIZE:
                break
        page = picked[:GROUPS_PAGE_SIZE]
        nxt = None
        if len(picked) > GROUPS_PAGE_SIZE:
            last_key, _, last_created = page[-1]
            token = base64.urlsafe_b64encode(json.dumps(
                {"c": D.parse_time(last_created), "k": last_key}).encode()).decode()
            params = {"group_type_index": index, "cursor": token}
            if req.param("search"):
                params["search"] = req.param("search")
            if req.param("group_key"):
                params["group_key"] = req.param("group_key")
            nxt = f"{req.base_url}{req.path}?{urlencode(params)}"
        return json_response(200, {"next": nxt, "previous": None, "results": [
            {"group_type_index": index, "group_key": gkey, "group_properties": props, "created_at": iso_offset(created)}
            for gkey, props, created in page]})

    # -- query ----------------------------------------------------------------------------------

    def _acquire_query_slot(self, project: Project, task: str) -> bool:
        """``get_api_team_rate_limiter`` (posthog/clickhouse/client/limit.py): 3 queries per team at once.

        A query that finds no free slot retries with PostHog's backoff (0.134 s growing 1.5x up to 1.714 s,
        scaled like the other limits) for up to 30 s, then is refused with ``ConcurrencyLimitExceeded``, which
        posthog/api/query.py answers as DRF ``Throttled(detail=str(e))``: 429 with that text and no wait.
        The limiter applies to current-tier teams only (``__applicable``: a team on
        API_QUERIES_LEGACY_TEAM_LIST is exempt) and, in the sandbox, only when rate limits are on.
        Returns whether a slot was taken (release it with ``_release_query_slot``).
        """
        if self.rate_limits == "off" or self.query_tier != "current":
            return False
        deadline = time.monotonic() + 30.0 / self.scale
        delay = 0.134 / self.scale
        while True:
            with self._running_lock:
                if self._running.get(project.id, 0) < self.max_concurrent_queries:
                    self._running[project.id] = self._running.get(project.id, 0) + 1
                    return True
            if time.monotonic() >= deadline or self.stop_event.is_set():
                raise ApiError(429, "throttled_error", "throttled",
                               f"Exceeded maximum concurrency limit: {self.max_concurrent_queries} for key: "
                               f"api:query:per-team:{project.id} and task: {task}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.714 / self.scale)

    def _release_query_slot(self, project: Project) -> None:
        with self._running_lock:
            self._running[project.id] = max(0, self._running.get(project.id, 0) - 1)

    def _new_task_id(self) -> str:
        """The query id a slot is held under: ``client_query_id`` or ``uuid7().hex`` (posthog/api/query.py)."""
        with self._running_lock:
            ms = int(time.time() * 1000)
            rand = self._task_rng.getrandbits(74)
        value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
        return f"{value:032x}"

    def h_query(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        try:
            body = json.loads(req.body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise parse_error(f"JSON parse error - {exc}") from None
        path_kind = groups.get("qkind")
        if not isinstance(body, dict):
            raise parse_error("JSON parse error - 1 validation error for QueryRequest\n  Input should be a valid "
                              "dictionary or instance of QueryRequest [type=model_type]")
        query = body.get("query")
        if path_kind:
            body_kind = query.get("kind") if isinstance(query, dict) else None
            if path_kind != body_kind:
                raise validation(f'Query kind mismatch: path kind "{path_kind}" does not match body kind '
                                 f'"{body_kind}".')
        if not isinstance(query, dict):
            raise parse_error("JSON parse error - 1 validation error for QueryRequest\nquery\n  Field required "
                              "[type=missing, input_type=dict]")
        kind = query.get("kind")
        if kind not in KNOWN_QUERY_KINDS:
            raise parse_error(f"JSON parse error - 1 validation error for QueryRequest\nquery\n  Input tag "
                              f"'{kind}' found using 'kind' does not match any of the expected tags "
                              f"[type=union_tag_invalid, input_type=dict]")
        if kind != "HogQLQuery":
            raise validation(f"The sandbox PostHog runs HogQLQuery only; {kind} is not supported here.",
                             "unsupported_query_kind")
        text = query.get("query")
        if not isinstance(text, str):
            raise parse_error("JSON parse error - 1 validation error for QueryRequest\nquery.HogQLQuery.query\n  "
                              "Field required [type=missing, input_type=dict]")
        values = query.get("values")
        if values is not None and not isinstance(values, dict):
            raise parse_error("JSON parse error - 1 validation error for QueryRequest\nquery.HogQLQuery.values\n  "
                              "Input should be a valid dictionary [type=dict_type]")
        modifiers = query.get("modifiers") or {}
        if not isinstance(modifiers, dict):
            raise parse_error("JSON parse error - 1 validation error for QueryRequest\nquery.HogQLQuery.modifiers\n"
                              "  Input should be a valid dictionary or instance of HogQLQueryModifiers "
                              "[type=model_type]")
        # The team's default modifiers under the query's own (create_default_modifiers_for_team).
        effective = {"personsOnEventsMode": POE_MODES[self.poe_mode], **modifiers}
        refresh = body.get("refresh", "blocking")
        force = refresh is True or refresh in FORCE_REFRESH
        cache_key = "cache_" + hashlib.sha256(json.dumps(
            [project.id, text, values, effective], sort_keys=True, default=str).encode()).hexdigest()[:32]
        if not force:
            with self._cache_lock:
                hit = self._cache.get(cache_key)
            if hit is not None and time.time() - hit[0] < CACHE_TTL_S:
                return json_response(200, {**hit[1], "is_cached": True})
        if self._execute is None:
            raise ApiError(500, "server_error", "error", "A server error occurred.")
        client_id = body.get("client_query_id")
        task = client_id if isinstance(client_id, str) and client_id else self._new_task_id()
        held = self._acquire_query_slot(project, task)
        try:
            time_limit_error = getattr(hogql_errors, "QueryTimeLimit", None)
            kwargs: dict = {}
            if "modifiers" in self._execute_kwargs:
                if "poe_default" in self._execute_kwargs:  # the team's mode, under the query's own modifiers
                    kwargs["modifiers"] = modifiers
                    kwargs["poe_default"] = POE_MODES[self.poe_mode]
                else:
                    kwargs["modifiers"] = effective
            limit_s = self.effective_time_limit()
            if "max_cost" in self._execute_kwargs:
                kwargs["max_cost"] = max(1, int(limit_s * self.query_rows_per_second))
                if "time_limit_s" in self._execute_kwargs:
                    kwargs["time_limit_s"] = limit_s
            if "json_rows" in self._execute_kwargs and modifiers.get("convertToProjectTimezone", True) is False:
                kwargs["json_rows"] = True  # rows encoded by SQLite, written as they are (no time zones to convert)
            assert project.pool is not None
            with project.pool.conn() as conn:
                try:
                    result = self._execute(conn, text, values, personal_api_key=True, **kwargs)
                except Exception as exc:
                    if time_limit_error is not None and isinstance(exc, time_limit_error):  # before HogQLError
                        self.stats.incr("query_timeouts")
                        self.stats.incr("query_timeout_cost", int(getattr(exc, "cost", 0) or 0))
                        raise self.timeout_error(limit_s) from None
                    if isinstance(exc, HogQLError):  # 400, or 500 for what ClickHouse itself fails
                        body = exc.body() if hasattr(exc, "body") else {}
                        raise ApiError(int(getattr(exc, "status", 400)), body.get("type", "validation_error"),
                                       body.get("code", getattr(exc, "code", "hogql_error")),
                                       body.get("detail", getattr(exc, "detail", str(exc))),
                                       body.get("attr")) from None
                    raise
        finally:
            if held:
                self._release_query_slot(project)
        self.stats.incr("hogql_queries")
        if modifiers.get("convertToProjectTimezone", True) is not False:
            result = to_timezone(result, project.timezone)
        refreshed = now_iso()
        envelope = {
            **result,
            "clickhouse": None, "timings": [], "modifiers": modifiers, "query": text, "error": None,
            "explain": None, "metadata": None, "is_cached": False, "cache_key": cache_key,
            "cache_target_age": None, "calculation_trigger": None, "last_refresh": refreshed,
            "next_allowed_client_refresh": refreshed, "query_status": None,
        }
        with self._cache_lock:  # bounded by rows, so that syncs paging 50k-row answers do not pile up
            self._cache[cache_key] = (time.time(), envelope)
            self._cache.move_to_end(cache_key)
            while len(self._cache) > 1 and (len(self._cache) > 256 or sum(
                    len(v[1]["results"]) for v in self._cache.values()) > CACHE_MAX_ROWS):
                self._cache.popitem(last=False)
        return json_response(200, envelope)

    def timeout_error(self, limit_s: float) -> ApiError:
        """ClickHouseQueryTimeOut (posthog/exceptions.py: APIException, 504, code ``error``; drf-exceptions-hog
        types a non-DRF APIException ``server_error``). HogQLQueryRunner._calculate rewrites the detail with
        api_timeout_detail when an API ceiling bound the query (current teams, or a per-team override: an
        explicit ``--query-time-limit``); a legacy team without one keeps the default detail."""
        detail = (api_timeout_detail(limit_s) if self.query_tier == "current" or self.query_time_limit is not None
                  else TIMEOUT_DEFAULT_DETAIL)
        return ApiError(504, "server_error", "error", detail)

    # -- legacy list endpoints --------------------------------------------------------------------

    def h_persons(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        limit = min(int_param(req, "limit", 100, 1), 1000)
        offset = int_param(req, "offset", 0, 0)
        where, args = [], []
        if req.param("distinct_id"):
            where.append("p.id IN (SELECT person_id FROM person_distinct_ids WHERE distinct_id = ?)")
            args.append(req.param("distinct_id"))
        if req.param("email"):
            where.append("json_extract(p.properties, '$.email') = ?")
            args.append(req.param("email"))
        search = req.param("search")
        if search:
            term = f"%{search.lower()}%"
            where.append("(lower(json_extract(p.properties, '$.email')) LIKE ? OR "
                         "lower(json_extract(p.properties, '$.name')) LIKE ? OR p.id IN "
                         "(SELECT person_id FROM person_distinct_ids WHERE lower(distinct_id) LIKE ?))")
            args += [term, term, term]
        if req.param("properties"):
            raise validation("The sandbox does not filter the legacy persons list by properties; use HogQL.",
                             attr="properties")
        sql = ("SELECT p.id, p.created_at, p.properties, p.is_identified FROM persons p"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY p.created_at DESC, p.id DESC LIMIT ? OFFSET ?")
        results = []
        if project.pool is not None:
            with project.pool.conn() as conn:
                rows = conn.execute(sql, [*args, limit + 1, offset]).fetchall()
                ids = [r[0] for r in rows[:limit]]
                dids: dict[str, list[str]] = {i: [] for i in ids}
                for chunk_start in range(0, len(ids), 500):
                    chunk = ids[chunk_start:chunk_start + 500]
                    marks = ",".join("?" * len(chunk))
                    for did, pid in conn.execute(
                            f"SELECT distinct_id, person_id FROM person_distinct_ids WHERE person_id IN ({marks}) "
                            "ORDER BY distinct_id", chunk):
                        dids[pid].append(did)
        else:
            rows = []
        for pid, created, props_text, ident in rows[:limit]:
            props = json.loads(props_text or "{}")
            ds = dids.get(pid, [])
            name = props.get("email") or props.get("name") or props.get("username") or (ds[0] if ds else pid)
            results.append({"id": int(pid.replace("-", "")[:12], 16), "uuid": pid, "name": name, "type": "person",
                            "distinct_ids": ds, "properties": props, "created_at": iso_offset(created),
                            "is_identified": bool(ident), "last_seen_at": None})
        nxt = page_url(req, limit=limit, offset=offset + limit) if len(rows) > limit else None
        prev = None if offset <= 0 else page_url(req, limit=limit, offset=max(offset - limit, 0) or None)
        return json_response(200, {"results": results, "next": nxt, "previous": prev})

    def h_events(self, req: Request, key: ApiKey, project: Project, groups: dict) -> Response:
        limit = min(int_param(req, "limit", 100, 1), 1000)
        offset = int_param(req, "offset", 0, 0)
        if offset > 50_000:
            raise validation("Offset values larger than 50000 are not supported. Use before and after to page.",
                             attr="offset")
        if req.param("properties") or req.param("action_id"):
            raise validation("The sandbox does not filter the legacy events list by properties or actions; "
                             "use HogQL.", attr="properties")
        now = D.now_us()

        def bound(name: str, default_us: int) -> str:
            raw = req.param(name)
            if not raw:
                return D.fmt_db(default_us)
            rel = re.fullmatch(r"-(\d+)([hdwm])", raw.strip())
            if rel:
                n, unit = int(rel.group(1)), rel.group(2)
                span = {"h": D.HOUR_US, "d": D.DAY_US, "w": 7 * D.DAY_US, "m": 30 * D.DAY_US}[unit]
                return D.fmt_db(now - n * span)
            try:
                return D.fmt_db(D.parse_time(raw))
            except ValueError:
                raise validation(f"Invalid datetime: {raw}", attr=name) from None

        after = bound("after", now - D.DAY_US)
        before = bound("before", now + 5 * D.US)
        try:
            order = json.loads(req.param("orderBy") or '["-timestamp"]')
        except ValueError:
            order = ["-timestamp"]
        desc = not order or order[0] != "timestamp"
        where = ["e.timestamp > ?", "e.timestamp < ?"]
        args: list = [after, before]
        for name in ("event", "distinct_id", "person_id"):
            if req.param(name):
                where.append(f"e.{name} = ?")
                args.append(req.param(name))
        sql = ("SELECT e.uuid, e.event, e.timestamp, e.distinct_id, e.person_id, e.properties FROM events e WHERE "
               + " AND ".join(where) + f" ORDER BY e.timestamp {'DESC' if desc else 'ASC'} LIMIT ? OFFSET ?")
        rows = []
        persons: dict[str, tuple] = {}
        if project.pool is not None:
            with project.pool.conn() as conn:
                rows = conn.execute(sql, [*args, limit + 1, offset]).fetchall()
                pids = sorted({r[4] for r in rows[:limit] if r[4]})
                for s in range(0, len(pids), 500):
                    chunk = pids[s:s + 500]
                    marks = ",".join("?" * len(chunk))
                    for pid, props_text, ident in conn.execute(
                            f"SELECT id, properties, is_identified FROM persons WHERE id IN ({marks})", chunk):
                        persons[pid] = (json.loads(props_text or "{}"), bool(ident))
        results = []
        for u, ev, ts, did, pid, props_text in rows[:limit]:
            person = None
            if pid in persons:
                pprops, ident = persons[pid]
                person = {"is_identified": ident, "distinct_ids": [did],
                          "properties": {k: pprops[k] for k in ("email", "name", "username") if k in pprops}}
            results.append({"id": u, "distinct_id": did, "properties": json.loads(props_text or "{}"), "event": ev,
                            "timestamp": iso_offset(ts), "person": person, "elements": [], "elements_chain": ""})
        nxt = None
        if len(rows) > limit:
            last_ts = iso_offset(rows[limit - 1][2])
            nxt = page_url(req, **({"before": last_ts} if desc else {"after": last_ts}))
        return json_response(200, {"next": nxt, "results": results})

    # -- hooks ----------------------------------------------------------------------------------

    def handle_hook(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if req.method == "GET" and path == "/_sandbox/stats":
            return json_response(200, {"server": self.name, **self.stats.snapshot()})
        if req.method == "GET" and path in ("/_sandbox/dump/events", "/_sandbox/dump/persons",
                                            "/_sandbox/dump/groups"):
            return self._dump(path.rsplit("/", 1)[1])
        if req.method == "POST" and path == "/_sandbox/events":
            return self._post_events(req)
        if req.method == "POST" and path == "/_sandbox/persons":
            return self._post_persons(req)
        if path == "/_sandbox/config" and req.method in ("GET", "POST"):
            if req.method == "GET":
                return json_response(200, self.settings())
            try:
                changes = req.json()
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object")
                return json_response(200, self.configure(**changes))
            except ValueError as exc:
                return json_response(400, {"error": str(exc)})
        if req.method == "POST" and path == "/_sandbox/query_slots":
            return self._hold_query_slots(req)
        return json_response(404, {"error": "unknown sandbox hook", "path": req.path})

    def _hold_query_slots(self, req: Request) -> Response:
        """Occupy (``{"hold": n}``) or free (``{"release": n}``) /query/ concurrency slots of the data project,
        as long-running queries would, so that tests reach the concurrency limit without slow queries."""
        try:
            body = req.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not all(isinstance(body.get(k, 0), int) for k in ("hold", "release")):
            return json_response(400, {"error": 'body must be {"hold": n} or {"release": n}'})
        if self.identity is None:
            return json_response(404, {"error": "no project in this region"})
        pid = self.identity.project.id
        with self._running_lock:
            running = self._running.get(pid, 0) + int(body.get("hold", 0))
            running = max(0, running - int(body.get("release", 0)))
            self._running[pid] = running
        return json_response(200, {"running": running, "limit": self.max_concurrent_queries})
        return json_response(404, {"error": "unknown sandbox hook", "path": req.path})

    def _dump(self, what: str) -> Response:
        pool = self.data_pool

        def lines():
            with pool.conn() as conn:
                dump = {"events": D.iter_event_dump, "persons": D.iter_person_dump, "groups": D.iter_group_dump}[what]
                yield from dump(conn)

        return jsonl_response(lines())

    def _rows(self, req: Request) -> list[dict]:
        try:
            rows = req.json()
        except ValueError as exc:
            raise ValueError(f"body is not JSON: {exc}") from None
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("body must be a JSON list of objects")
        return rows

    def _post_events(self, req: Request) -> Response:
        try:
            rows = self._rows(req)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        keep_created = req.param("keep_created_at") in ("1", "true")
        pool = self.data_pool
        inserted = replaced = created_persons = 0
        uuids = []
        with pool.write_lock, pool.conn() as conn:
            try:
                now = D.now_us()
                names: list[tuple[str, str]] = []
                props_seen: list[tuple[str, object]] = []
                for i, row in enumerate(rows):
                    event = row.get("event")
                    if not isinstance(event, str) or not event:
                        raise ValueError(f"row {i}: 'event' is required")
                    ts = D.parse_time(row["timestamp"]) if row.get("timestamp") is not None else now
                    created = (D.parse_time(row["created_at"]) if keep_created and row.get("created_at") is not None
                               else now)
                    props = row.get("properties") or {}
                    if not isinstance(props, dict):
                        raise ValueError(f"row {i}: 'properties' must be an object")
                    distinct_id = row.get("distinct_id")
                    person_id = row.get("person_id")
                    if distinct_id is None and person_id is None:
                        raise ValueError(f"row {i}: 'distinct_id' or 'person_id' is required")
                    if distinct_id is None:
                        found = conn.execute("SELECT distinct_id FROM person_distinct_ids WHERE person_id = ? "
                                             "ORDER BY distinct_id LIMIT 1", (person_id,)).fetchone()
                        if not found:
                            raise ValueError(f"row {i}: person {person_id} has no distinct id")
                        distinct_id = found[0]
                    distinct_id = str(distinct_id)
                    if person_id is None:
                        found = conn.execute("SELECT person_id FROM person_distinct_ids WHERE distinct_id = ?",
                                             (distinct_id,)).fetchone()
                        person_id = found[0] if found else None
                    if person_id is None or conn.execute("SELECT 1 FROM persons WHERE id = ?",
                                                         (person_id,)).fetchone() is None:
                        person_id = person_id or D.uuid4_from(self._hook_rng)
                        conn.execute("INSERT INTO persons(id, created_at, properties, is_identified) "
                                     "VALUES (?, ?, '{}', 0)", (person_id, D.fmt_db(min(ts, now))))
                        created_persons += 1
                    if conn.execute("SELECT 1 FROM person_distinct_ids WHERE distinct_id = ?",
                                    (distinct_id,)).fetchone() is None:
                        conn.execute("INSERT INTO person_distinct_ids(distinct_id, person_id) VALUES (?, ?)",
                                     (distinct_id, person_id))
                    u = row.get("uuid") or D.uuid7_from(self._hook_rng, ts)
                    cur = conn.execute("DELETE FROM events WHERE uuid = ?", (u,))
                    if cur.rowcount:
                        replaced += 1
                    else:
                        inserted += 1
                    conn.execute("INSERT INTO events(uuid, event, timestamp, created_at, distinct_id, person_id, "
                                 "properties) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (u, event, D.fmt_db(ts), D.fmt_db(created), distinct_id, person_id,
                                  D.dump_json(props)))
                    uuids.append(u)
                    names.append((event, D.fmt_db(created)))
                    props_seen.extend(props.items())
                D.record_definitions(conn, event_names=names, event_props=props_seen, rng=self._hook_rng)
                conn.commit()
            except (ValueError, KeyError, TypeError) as exc:
                conn.rollback()
                return json_response(400, {"error": str(exc)})
        return json_response(200, {"inserted": inserted, "replaced": replaced, "persons_created": created_persons,
                                   "uuids": uuids})

    def _post_persons(self, req: Request) -> Response:
        try:
            rows = self._rows(req)
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        pool = self.data_pool
        inserted = updated = 0
        ids = []
        with pool.write_lock, pool.conn() as conn:
            try:
                now = D.now_us()
                props_seen: list[tuple[str, object]] = []
                for i, row in enumerate(rows):
                    pid = row.get("id") or D.uuid4_from(self._hook_rng)
                    existing = conn.execute("SELECT created_at, properties, is_identified FROM persons WHERE id = ?",
                                            (pid,)).fetchone()
                    props = row.get("properties")
                    if props is not None and not isinstance(props, dict):
                        raise ValueError(f"row {i}: 'properties' must be an object")
                    dids = row.get("distinct_ids") or []
                    if not isinstance(dids, list):
                        raise ValueError(f"row {i}: 'distinct_ids' must be a list")
                    if existing is None:
                        created = D.fmt_db(D.parse_time(row["created_at"])) if row.get("created_at") else D.fmt_db(now)
                        conn.execute("INSERT INTO persons(id, created_at, properties, is_identified) VALUES (?,?,?,?)",
                                     (pid, created, D.dump_json(props or {}),
                                      int(bool(row.get("is_identified", False)))))
                        inserted += 1
                    else:
                        created = (D.fmt_db(D.parse_time(row["created_at"])) if row.get("created_at")
                                   else existing[0])
                        new_props = D.dump_json(props) if props is not None else existing[1]
                        ident = int(bool(row["is_identified"])) if "is_identified" in row else existing[2]
                        conn.execute("UPDATE persons SET created_at = ?, properties = ?, is_identified = ? "
                                     "WHERE id = ?", (created, new_props, ident, pid))
                        updated += 1
                    for did in dids:
                        conn.execute("DELETE FROM person_distinct_ids WHERE distinct_id = ?", (str(did),))
                        conn.execute("INSERT INTO person_distinct_ids(distinct_id, person_id) VALUES (?, ?)",
                                     (str(did), pid))
                    ids.append(pid)
                    props_seen.extend((props or {}).items())
                D.record_definitions(conn, person_props=props_seen, rng=self._hook_rng)
                conn.commit()
            except (ValueError, KeyError, TypeError) as exc:
                conn.rollback()
                return json_response(400, {"error": str(exc)})
        return json_response(200, {"inserted": inserted, "updated": updated, "ids": ids})
