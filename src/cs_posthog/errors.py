"""One error hierarchy. Each error carries its exit code and a hint; ``cli.py`` renders them.

Exit codes (README, ``--help``), in the style of BSD's sysexits.h where one fits:
  0 success (also "nothing new")      1 unexpected bug
  2 usage or bad input                69 a service answered, but not as its API does (or the
                                         demo cannot run here: its HogQL parser is missing)
  73 cannot create or write a file    74 input/output error (disk full, I/O error)
  75 try again later (lock held, throttled, down)
  77 not allowed (401, 403, scopes)   78 not connected or invalid config
  130 interrupted (Ctrl-C)            143 terminated (SIGTERM)
"""

from __future__ import annotations

import errno
import os
from enum import IntEnum
from typing import Any
from urllib.parse import urljoin, urlsplit


class ExitCode(IntEnum):
    OK = 0
    BUG = 1
    USAGE = 2
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a service answered, but not with its API's answer; the demo's parser missing
    CANTCREAT = 73  # EX_CANTCREAT: a file cannot be created or written (read-only, not allowed)
    IOERR = 74  # EX_IOERR: the disk is full, or an I/O error
    TEMPFAIL = 75
    NOPERM = 77
    CONFIG = 78
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


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


# --- config ----------------------------------------------------------------------------------
class ConfigError(CsPosthogError):
    exit_code = ExitCode.CONFIG


class NotConnectedError(ConfigError):
    default_hint = "Run `cs-posthog connect` to set up the integration."

    def __init__(self, message: str = "not connected: no configuration found", **kw: Any) -> None:
        super().__init__(message, **kw)


class InvalidConfigError(ConfigError):
    default_hint = "Fix the file by hand, or run `cs-posthog edit` (or `cs-posthog connect --restart`)."


class MissingSecretError(ConfigError):
    default_hint = "Set it in the environment, or run `cs-posthog edit credentials`."


class NewerStateError(ConfigError):
    """The sync state's schema is newer than this cs-posthog knows: a newer release wrote it (a
    downgrade, or two installations sharing one state). Nothing is read from it or written to it."""

    def __init__(self, path: str | os.PathLike[str], version: int, known: int) -> None:
        super().__init__(
            f"{path}: the sync state was written by a newer cs-posthog (schema {version}; this one knows "
            f"schema {known} and older)",
            hint="Upgrade cs-posthog (or run the newer one that wrote it). Or, to go on with this one, move the "
            f"state away (mv {path} {path}.newer): the next sync then starts as a first sync and sends the "
            "backfill window and every contact again.",
        )
        self.version = version
        self.known = known


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
    def __init__(self, missing: list[str], labels: list[str] | None = None, **kw: Any) -> None:
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
    default_hint = "The API rate limit was reached; try again later (a scheduled sync retries on its own)."

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class UnavailableError(ApiError):
    """5xx, timeouts and dropped connections that outlived the retries."""

    exit_code = ExitCode.TEMPFAIL
    default_hint = "The service is down or unreachable; try again later (a scheduled sync retries on its own)."


class RedirectedError(ApiError):
    """A 3xx: the configured URL is not where the API lives (an http->https move, a moved host, a
    login page). The client does not follow redirects (a key must not travel to another host):
    the URL in the config is what to fix, exit 78."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, *, location: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.location = location

    @classmethod
    def from_response(cls, resp: Any, *, service: str, setting: str) -> RedirectedError:
        """From an httpx 3xx response: where it points, and the base URL to configure instead when
        the redirect keeps the API path (a moved host, http -> https)."""
        status = resp.status_code
        try:
            url = str(resp.request.url)
        except RuntimeError:  # a response made without its request (tests)
            url = ""
        location = (resp.headers.get("location") or "").strip()
        target = urljoin(url, location) if location else ""
        req_path, new = urlsplit(url).path, urlsplit(target)
        base = ""
        if target and new.scheme in ("http", "https") and req_path and new.path.endswith(req_path):
            base = f"{new.scheme}://{new.netloc}{new.path[: len(new.path) - len(req_path)]}".rstrip("/")
        where = f" for {url}" if url else ""
        if not target:
            message = f"{service} answered with a redirect ({status}){where} without saying where to"
        else:
            message = f"{service} answered with a redirect ({status}){where} to {target}"
        if base:
            hint = f"The {setting} has moved: use {base} (`cs-posthog edit credentials`)."
        else:
            hint = (f"The {setting} does not lead straight to {service}'s API (a login page, a proxy?): "
                    "check it (`cs-posthog edit credentials`).")
        return cls(message, hint=hint, location=target or None, service=service, status=status)


class UnexpectedAnswerError(ApiError):
    """A service answered 2xx with something that is not its API's answer (a malformed result row, a
    proxy's page): exit 69 (EX_UNAVAILABLE), nothing taken from it."""

    exit_code = ExitCode.UNAVAILABLE


class _NotTheApiHint:
    default_hint: str | None = (
        "Something other than the API may be answering at that URL (a proxy, a captive portal, a "
        "website): check the URL and the network. Nothing was lost: the next run resends from the same point."
    )


class NotAcknowledgedError(_NotTheApiHint, UnexpectedAnswerError):
    """A 2xx whose body is not the API's documented answer (an HTML page, unrelated JSON, an empty
    body), after the retries: what the request carried does not count as delivered."""


class ResponseTooLargeError(_NotTheApiHint, UnexpectedAnswerError):
    """An answer body over the size cap for its kind of request: reading stopped there."""


class UnexpectedStatusError(_NotTheApiHint, UnexpectedAnswerError):
    """A 4xx the API does not explain (not 401/403/404/408/429, not a 400 naming the offending
    items). Not a per-item rejection: the request failed and nothing is dropped."""


# --- sync ------------------------------------------------------------------------------------
class LockHeldError(CsPosthogError):
    exit_code = ExitCode.TEMPFAIL
    default_hint = "Wait for it to finish; a scheduled sync runs again at its next time."

    def __init__(self, message: str = "another sync is running", **kw: Any) -> None:
        super().__init__(message, **kw)


class Interrupted(CsPosthogError):
    """Ctrl-C (SIGINT): exit 130."""

    exit_code = ExitCode.INTERRUPTED
    default_hint = "Run it again to continue: a sync picks up where it stopped, nothing is lost."

    def __init__(self, message: str = "interrupted", **kw: Any) -> None:
        super().__init__(message, **kw)


class Terminated(Interrupted):
    """SIGTERM (a service manager, `kill`, a container stopping): exit 143. Stops like Ctrl-C."""

    exit_code = ExitCode.TERMINATED

    def __init__(self, message: str = "terminated (SIGTERM)", **kw: Any) -> None:
        super().__init__(message, **kw)


# --- files -----------------------------------------------------------------------------------
class FileError(CsPosthogError):
    """A file of ours that cannot be written, created or read: the file and the OS's reason.

    73 (EX_CANTCREAT) when it cannot be created or written at all (a read-only file system, no
    permission, a path that is not a directory); 74 (EX_IOERR) when the disk is full or failing.
    """

    exit_code = ExitCode.IOERR

    def __init__(self, message: str, *, hint: str | None = None, errno_: int | None = None,
                 path: object = None) -> None:
        super().__init__(message, hint=hint)
        self.errno = errno_
        self.path = path

    @classmethod
    def from_os_error(cls, exc: OSError, path: object = None, *, doing: str = "write") -> FileError:
        where = path if path is not None else exc.filename
        name = errno.errorcode.get(exc.errno or 0, "")
        reason = exc.strerror or str(exc)
        if name and name not in reason:
            reason = f"{reason} ({name})"
        message = f"cannot {doing} {where}: {reason}" if where is not None else f"cannot {doing} a file: {reason}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            err = cls(message, hint="Free some space on that disk (or raise the quota), then run it again.",
                      errno_=exc.errno, path=where)
        elif exc.errno in _CANTCREAT:
            parent = os.path.dirname(str(where)) if where is not None else "the directory"
            err = cls(message, hint=f"Make {parent} writable by this user, or point CS_POSTHOG_HOME at a "
                      "directory that is (keeping its files).", errno_=exc.errno, path=where)
            err.exit_code = ExitCode.CANTCREAT
        else:
            err = cls(message, hint="Check the disk and that path, then run it again.", errno_=exc.errno, path=where)
        return err


def _cantcreat_errnos() -> frozenset[int]:
    names = ("EROFS", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EEXIST", "ELOOP", "ENAMETOOLONG", "ETXTBSY")
    return frozenset(getattr(errno, n) for n in names if hasattr(errno, n))


_CANTCREAT = _cantcreat_errnos()


def file_errno_error(exc: BaseException) -> FileError | None:
    """The FileError for an OSError about a file (not a network error), or None."""
    if not isinstance(exc, OSError) or isinstance(exc, (ConnectionError, TimeoutError)):
        return None
    if exc.errno in _CANTCREAT or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EMLINK):
        return FileError.from_os_error(exc, doing="use")
    return None
