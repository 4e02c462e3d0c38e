"""Errors of the sandbox HogQL engine, with PostHog's own codes and messages.

``HogQLError.code`` is the ``code`` PostHog puts in its 400 body (``type`` is always
``validation_error`` there). Where the messages come from is noted in ``hogql.py``'s docstring.
"""

from __future__ import annotations

# PostHog posthog/hogql/errors.py: ExposedHogQLError.code_name and its subclasses.
SYNTAX_ERROR = "hogql_syntax_error"
QUERY_ERROR = "hogql_query_error"
HOGQL_ERROR = "hogql_error"
# posthog/api/query.py turns HogVMException (an unknown placeholder) into
# ``ValidationError(str(e), getattr(e, "code_name", None))``: HogVMException has no code_name, so DRF
# falls back to ValidationError.default_code, "invalid".
INVALID = "invalid"
# ClickHouse errors PostHog passes through (posthog/errors.py: code_name = the ClickHouse error name).
CANNOT_PARSE_DATETIME = "cannot_parse_datetime"
# ClickHouse's CANNOT_PARSE_TEXT (code 6), e.g. a Float64 compared with '': posthog/errors.py keeps the
# parse/convert codes internal (posthog/test/test_errors.py test_codes_stay_internal: "embed the failing
# data value"), so posthog/api/query.py answers ``except InternalCHQueryError: raise
# APIException("ClickHouse error while executing query.")``: HTTP 500, DRF's default code "error".
CANNOT_PARSE_TEXT = "cannot_parse_text"
CLICKHOUSE_ERROR_DETAIL = "ClickHouse error while executing query."

# posthog/hogql/user_query_validator.py, OFFSET_NOT_ALLOWED_MESSAGE
OFFSET_NOT_ALLOWED_MESSAGE = (
    "OFFSET is not supported on queries made with a personal API key. "
    "For pagination, use keyset pagination on the `timestamp` column, e.g. "
    "`WHERE timestamp > :last_seen_timestamp ORDER BY timestamp LIMIT N`. "
    "For bulk data extraction, use batch exports: https://posthog.com/docs/cdp/batch-exports"
)

# posthog/hogql/filters.py, ReplaceFilters.visit_placeholder
FILTERS_WRONG_TABLE_MESSAGE = (
    "Cannot use 'filters' placeholder in a SELECT clause that does not select from the events, "
    "sessions, logs, traces or groups table."
)

SANDBOX_SUFFIX = "is not supported by the cs-posthog sandbox"


class HogQLError(Exception):
    """A query PostHog would answer with HTTP 400.

    ``code`` is the body's ``code`` (``hogql_syntax_error``, ``hogql_query_error``, ``hogql_error``, or
    ``invalid`` / a ClickHouse error name where PostHog itself uses those); ``detail`` its ``detail``.
    """

    status = 400

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

    def body(self) -> dict:
        """The JSON body PostHog sends with this error."""
        return {"type": "validation_error", "code": self.code, "detail": self.detail, "attr": None}

    def __repr__(self) -> str:
        return f"HogQLError({self.code!r}, {self.detail!r})"


class ClickHouseQueryError(HogQLError):
    """A query ClickHouse itself fails (not HogQL): PostHog answers HTTP 500.

    ``status`` 500 and ``body()`` ``{"type": "server_error", "code": "error", "detail": "ClickHouse
    error while executing query.", "attr": null}`` (posthog/api/query.py, InternalCHQueryError ->
    APIException; drf-exceptions-hog renders a 5xx APIException as type server_error). ``ch_message``
    keeps ClickHouse's own text (``Cannot parse string 'x' as Float64 ...``), which PostHog only logs.
    It subclasses HogQLError so that a server that only knows HogQLError still answers with an error.
    """

    status = 500

    def __init__(self, ch_code: str, ch_message: str) -> None:
        super().__init__(ch_code, CLICKHOUSE_ERROR_DETAIL)
        self.ch_message = ch_message

    def body(self) -> dict:
        return {"type": "server_error", "code": "error", "detail": CLICKHOUSE_ERROR_DETAIL, "attr": None}

    def __repr__(self) -> str:
        return f"ClickHouseQueryError({self.code!r}, {self.ch_message!r})"


def cannot_parse(value: object, type_name: str) -> ClickHouseQueryError:
    """ClickHouse converting a String constant to a number type that does not parse."""
    return ClickHouseQueryError(
        CANNOT_PARSE_TEXT,
        f"Code: 6. DB::Exception: Cannot parse string {value!r} as {type_name}: syntax error at begin of "
        f"string. Note: there are to{type_name}OrZero and to{type_name}OrNull functions, which returns "
        f"zero/NULL instead of throwing exception. (CANNOT_PARSE_TEXT)",
    )


def api_timeout_detail(max_execution_time: int | float) -> str:
    """posthog/hogql_queries/hogql_query_runner.py api_timeout_detail()."""
    seconds = int(max_execution_time) if float(max_execution_time).is_integer() else max_execution_time
    return (
        f"This query hit the {seconds}-second time limit for queries run through the API. "
        "Submit it as an async query to give it more time: "
        "https://posthog.com/docs/api/queries#asynchronous-queries. "
        "You can also narrow the date range or the filters so it scans less data: "
        "https://posthog.com/docs/api/queries#writing-performant-queries"
    )


class QueryTimeLimit(Exception):
    """A query whose modelled cost exceeds the time limit: PostHog answers HTTP 504.

    PostHog: HogQLQueryRunner._calculate sets ``max_execution_time`` (10 s for API-key queries on
    current teams, posthog/hogql_queries/hogql_query_runner.py api_query_max_execution_time) and turns
    ClickHouse's TIMEOUT_EXCEEDED into ``ClickHouseQueryTimeOut(detail=api_timeout_detail(10))``
    (posthog/exceptions.py: status_code 504). Not a HogQLError: it is no 400.

    ``cost`` is the modelled rows scanned (see hogql.query_cost), ``max_cost`` the limit it exceeded,
    ``seconds`` the time limit the message names.
    """

    status = 504

    def __init__(self, cost: int, max_cost: int, seconds: int | float = 10) -> None:
        self.cost = cost
        self.max_cost = max_cost
        self.seconds = seconds
        self.detail = api_timeout_detail(seconds)
        super().__init__(self.detail)

    def body(self) -> dict:
        return {"type": "server_error", "code": "error", "detail": self.detail, "attr": None}

    def __repr__(self) -> str:
        return f"QueryTimeLimit(cost={self.cost}, max_cost={self.max_cost})"


def query_error(detail: str) -> HogQLError:
    return HogQLError(QUERY_ERROR, detail)


def unsupported(what: str) -> HogQLError:
    """Something PostHog may well run but the sandbox does not: a clear 400, never a wrong answer."""
    return HogQLError(QUERY_ERROR, f"{what} {SANDBOX_SUFFIX}")
