"""One error hierarchy. Each error carries its exit code and a hint; ``cli.py`` renders them.

Exit codes (README, ``--help``):
  0 success (also "nothing new")      1 unexpected bug
  2 usage or bad input                75 try again later (lock held, throttled, down)
  77 not allowed (401, 403, scopes)   78 not connected or invalid config
  130 interrupted
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    BUG = 1
    USAGE = 2
    TEMPFAIL = 75
    NOPERM = 77
    CONFIG = 78
    INTERRUPTED = 130


class CsPosthogError(Exception):
    """Base of every error the CLI knows how to render as one line plus a hint."""

    exit_code: ExitCode = ExitCode.BUG
    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


# --- usage and input -------------------------------------------------------------------------
class UsageError(CsPosthogError):
    exit_code = ExitCode.USAGE


class NoTerminalError(UsageError):
    default_hint = "Run it on a terminal, or pass --no-input with flags (see --help)."


class NotBuiltError(CsPosthogError):
    """A command whose issue is still open: says so instead of pretending."""

    exit_code = ExitCode.BUG


# --- config ----------------------------------------------------------------------------------
class ConfigError(CsPosthogError):
    exit_code = ExitCode.CONFIG


class NotConnectedError(ConfigError):
    default_hint = "Run `cs-posthog connect` to set up the integration."

    def __init__(self, message: str = "not connected: no configuration found", **kw) -> None:
        super().__init__(message, **kw)


class InvalidConfigError(ConfigError):
    default_hint = "Fix the file by hand, or run `cs-posthog edit` (or `cs-posthog connect --restart`)."


class MissingSecretError(ConfigError):
    default_hint = "Set it in the environment, or run `cs-posthog edit credentials`."


# --- remote APIs -----------------------------------------------------------------------------
class ApiError(CsPosthogError):
    """Something a remote API said. ``service`` is "PostHog" or "Customerscore"."""

    exit_code = ExitCode.TEMPFAIL

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        service: str = "",
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.service = service
        self.status = status
        self.code = code
        self.detail = detail


class AuthError(ApiError):
    """401: the key is invalid, revoked, or belongs to another region."""

    exit_code = ExitCode.NOPERM


class PermissionDeniedError(ApiError):
    """403: a scope is missing or the key cannot see this project."""

    exit_code = ExitCode.NOPERM


class MissingScopesError(PermissionDeniedError):
    def __init__(self, missing: list[str], labels: list[str] | None = None, **kw) -> None:
        self.missing = list(missing)
        self.labels = list(labels or missing)
        kw.setdefault(
            "hint",
            "In PostHog: Settings → Personal API keys → edit the key, add the read scopes "
            + ", ".join(self.labels)
            + ", then retry.",
        )
        super().__init__("the API key is missing scopes: " + ", ".join(self.missing), **kw)


class PersonalKeysNotAllowedError(PermissionDeniedError):
    """403 "Organization 'X' does not allow using personal API keys": an organization policy set by an
    admin (PostHog's ``members_can_use_personal_api_keys``), not a scope of the key."""

    default_hint = (
        "An organization admin can allow them in PostHog: Settings → Organization → Members → Security "
        "settings → \"Members can use personal API keys\" (keys of admins and owners always work)."
    )


class NotFoundError(ApiError):
    """404: the project (or another object) does not exist for this key."""

    exit_code = ExitCode.CONFIG


class BadRequestError(ApiError):
    """A 4xx that retrying cannot fix (validation, bad query)."""

    exit_code = ExitCode.USAGE


class QueryError(BadRequestError):
    """PostHog rejected a HogQL query (400 hogql_*). A bug on our side when it happens in sync."""

    exit_code = ExitCode.BUG


class ThrottledError(ApiError):
    exit_code = ExitCode.TEMPFAIL
    default_hint = "The API rate limit was reached; try again later (cron will)."

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class UnavailableError(ApiError):
    """5xx, timeouts and dropped connections that outlived the retries."""

    exit_code = ExitCode.TEMPFAIL
    default_hint = "The service is down or unreachable; try again later (cron will)."


# --- sync ------------------------------------------------------------------------------------
class LockHeldError(CsPosthogError):
    exit_code = ExitCode.TEMPFAIL
    default_hint = "Wait for it to finish; cron will run the next one on schedule."

    def __init__(self, message: str = "another sync is running", **kw) -> None:
        super().__init__(message, **kw)


class Interrupted(CsPosthogError):
    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str = "interrupted", **kw) -> None:
        super().__init__(message, **kw)
