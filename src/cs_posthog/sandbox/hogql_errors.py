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


def query_error(detail: str) -> HogQLError:
    return HogQLError(QUERY_ERROR, detail)


def unsupported(what: str) -> HogQLError:
    """Something PostHog may well run but the sandbox does not: a clear 400, never a wrong answer."""
    return HogQLError(QUERY_ERROR, f"{what} {SANDBOX_SUFFIX}")
