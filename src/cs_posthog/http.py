"""HTTP plumbing shared by the PostHog and Customerscore clients: pacing, retries, counters.

No terminal I/O. ``send`` is the one place that decides what is retried:

- 429: wait what the server names (``Retry-After`` header, else a number of seconds read from the
  body by ``wait_from_body``), block the pacer for that long, retry. A wait longer than
  ``max_throttle_wait`` gives up at once with ``ThrottledError`` (cron retries later).
- 5xx, timeouts, dropped connections: retry with exponential backoff and full jitter.
- Other 4xx: never retried; ``classify`` turns them into typed errors.

- 408: the server gave up waiting for our request: retried like a 5xx.
- A 2xx the caller does not recognise as the API's answer (``accept``; an HTML page from a captive
  portal, unrelated JSON, an empty body): retried like a 5xx, then ``NotAcknowledgedError`` (69).

A failure after the request may have reached the server (read timeout, connection dropped while
waiting for the answer) is *ambiguous*: the server may have applied it. Those retries are counted
apart so a caller that has no idempotency key can say what may have been doubled.

Every attempt has an overall *deadline* (``deadline`` seconds, from sending the request to the
last byte of the answer), not only a per-read timeout: an answer that drips a byte a second never
trips a read timeout. It is enforced twice: each socket read and write waits at most until the
deadline (``install_deadlines``, for httpx's own transports), and the body is read in chunks with
the clock checked after each one (any transport). A deadline that passes is a retried, ambiguous
failure (``DeadlineExceeded``, a ``ReadTimeout``).

Every answer body is read up to a *cap* (``max_bytes``): an endless or absurdly large answer stops
there and fails the request at once with ``ResponseTooLargeError`` (69), instead of growing the
process to gigabytes. Defaults: ``DEFAULT_DEADLINE_S`` and ``DEFAULT_MAX_RESPONSE_BYTES``; the
clients choose theirs per kind of request (PostHog's ``/query/``: longer and much larger).
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from cs_posthog.errors import (
    ApiError,
    NotAcknowledgedError,
    ResponseTooLargeError,
    ThrottledError,
    UnavailableError,
)
from cs_posthog.settings import Settings

DEFAULT_TIMEOUT_S = 30.0

_tls: list[ssl.SSLContext] = []
_tls_lock = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """What httpx verifies a new client's TLS connections with (``httpx.create_ssl_context()``:
    certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as httpx reads them), loaded once per
    process and shared by the clients (``httpx.Client(verify=tls_context())``). httpx loads the bundle
    again for every client made, about 20 ms of CPU: one or two per command, hundreds in the suite."""
    with _tls_lock:
        if not _tls:
            _tls.append(httpx.create_ssl_context())
        return _tls[0]
# Overall time allowed for one attempt (request sent, whole answer read). ``Settings.deadline_s``
# (CS_POSTHOG_DEADLINE) overrides every one; without it, ``Settings.timeout_s`` (CS_POSTHOG_TIMEOUT)
# makes every deadline 4x that (5 s at least).
DEFAULT_DEADLINE_S = 120.0
DEADLINE_PER_TIMEOUT = 4.0
DEADLINE_FLOOR_S = 5.0  # ...but never under this (a loaded machine with a tiny test timeout)
# Largest answer body read for a request that names no cap of its own (PostHog's /query/ does).
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024


def rate_scale(settings: Settings) -> float | None:
    """The pacing multiplier (``CS_POSTHOG_RATE_SCALE``); None means no client-side pacing."""
    return settings.rate_scale


def default_timeout(seconds: float = DEFAULT_TIMEOUT_S, *, settings: Settings) -> httpx.Timeout:
    """Client timeout of ``seconds`` (30 by default; PostHog's ``/query/`` asks for more);
    ``settings.timeout_s`` (CS_POSTHOG_TIMEOUT) overrides every one of them (tests, slow proxies)."""
    total = settings.timeout_s if settings.timeout_s is not None else seconds
    return httpx.Timeout(total, connect=min(10.0, total))


def default_deadline(seconds: float = DEFAULT_DEADLINE_S, *, settings: Settings) -> float:
    """Overall seconds for one attempt: ``seconds``, or ``settings.deadline_s`` (CS_POSTHOG_DEADLINE),
    or 4x ``settings.timeout_s`` (at least 5 s) when only that is set (so a small timeout also bounds
    a dripping answer)."""
    if settings.deadline_s is not None:
        return settings.deadline_s
    if settings.timeout_s is not None:
        return max(DEADLINE_FLOOR_S, DEADLINE_PER_TIMEOUT * settings.timeout_s)
    return seconds


# --- the deadline at the socket: a wrapper around httpcore's network backend ----------------------
_local = threading.local()


def _clamp(timeout: float | None, exc: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of this thread's current deadline (none: unchanged)."""
    end: float | None = getattr(_local, "deadline", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise exc("the request's overall deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout))
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(
            host, port, _clamp(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(
            path, _clamp(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install_deadlines(client: httpx.Client) -> httpx.Client:
    """Make every socket read and write of ``client``'s own transports (proxies from the
    environment included) wait at most until the current request's deadline, so that headers
    dripping in a byte at a time are bounded too. Custom transports (tests' mocks) are left alone:
    ``send`` still checks the deadline between body chunks. Returns ``client``."""
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for t in transports:
        pool = getattr(t, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if pool is not None and backend is not None and not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)
    return client


class DeadlineExceeded(httpx.ReadTimeout):
    """One attempt outlived its overall deadline (a dripping or stalled answer)."""

    def __init__(self, seconds: float, request: httpx.Request | None = None) -> None:
        super().__init__(f"no complete answer within {seconds:g} s", request=request)
        self.seconds = seconds


class _TooLarge(Exception):
    def __init__(self, size: int, cap: int) -> None:
        super().__init__(size, cap)
        self.size, self.cap = size, cap


def _exchange(client: httpx.Client, method: str, url: str | httpx.URL, *, deadline: float, max_bytes: int,
              **kwargs: Any) -> httpx.Response:
    """One attempt: send, then read the whole body within ``deadline`` seconds and ``max_bytes``."""
    end = time.monotonic() + deadline
    outer = getattr(_local, "deadline", None)
    _local.deadline = end if outer is None else min(outer, end)
    try:
        request = client.build_request(method, url, **kwargs)
        try:
            resp = client.send(request, stream=True)
            try:
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes and "content-encoding" not in resp.headers:
                    raise _TooLarge(int(declared), max_bytes)
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise _TooLarge(size, max_bytes)
                    chunks.append(chunk)
                    if time.monotonic() > end:
                        raise DeadlineExceeded(deadline, request)
                # what Response.read() does, with the cap and the deadline on the way
                resp._content = b"".join(chunks)
            finally:
                resp.close()
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            if not isinstance(exc, DeadlineExceeded) and time.monotonic() >= end - 0.01:
                raise DeadlineExceeded(deadline, request) from exc
            raise
        return resp
    finally:
        _local.deadline = outer


_IN_FLIGHT = float("inf")


class Pacer:
    """Client-side sliding-window rate limiter, thread-safe, with an optional concurrency cap.

    ``windows`` is a list of ``(max_requests, period_seconds)``; a request may start only when every
    window has room.

    A request made through ``slot()`` counts in our windows from the moment it starts, and is dated
    by the moment its answer came back: the server dated it somewhere in between, so our count of
    any window is never lower than the server's, whatever the latency and its jitter (a request
    dated by its start could arrive late and be counted in the server's next window). What that
    costs is about one round trip per window. ``margin`` widens each period a little more, for the
    difference between our clock's rate and the server's. ``acquire()`` alone dates by the start.
    """

    def __init__(
        self,
        windows: list[tuple[int, float]] | None = None,
        *,
        concurrency: int | None = None,
        margin: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.windows = [(n, p * (1 + margin)) for n, p in (windows or [])]
        # per window, [time] entries in the order requests started; a request in flight is dated
        # +inf (never expires) until it completes
        self._logs: list[deque[list[float]]] = [deque() for _ in self.windows]
        self._lock = threading.Lock()
        self._sem = threading.BoundedSemaphore(concurrency) if concurrency else None
        self._blocked_until = 0.0
        self._clock = clock
        self._sleep = sleep
        # called before each wait for room (at most 5 s apart while waiting): the sync touches its
        # heartbeat there, so that `status` does not call a sync waiting for its budget stalled
        self.on_wait: Callable[[], None] | None = None

    def _room_in(self, now: float) -> float:
        """Seconds to wait before a request may start (0 if now)."""
        wait = max(0.0, self._blocked_until - now)
        for (limit, period), log in zip(self.windows, self._logs, strict=False):
            while log and log[0][0] <= now - period:
                log.popleft()
            if len(log) >= limit:
                # dates are in order except where requests in flight together finished out of order
                times = [e[0] for e in log]
                if any(times[i] > times[i + 1] for i in range(len(times) - 1)):
                    times.sort()
                until = times[len(times) - limit] + period
                # too many in flight to tell when: look again shortly
                wait = max(wait, until - now if until != _IN_FLIGHT else min(0.01, period))
        return wait

    def _start(self, stamp: float | None) -> tuple[float, list[list[float]]]:
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._room_in(now)
                if wait <= 0:
                    entries = [[now if stamp is None else stamp] for _ in self._logs]
                    for log, entry in zip(self._logs, entries, strict=False):
                        log.append(entry)
                    return waited, entries
            wait = min(wait, 5.0)
            if self.on_wait is not None:
                self.on_wait()
            self._sleep(wait)
            waited += wait

    def delay(self) -> float:
        """Seconds a request starting now would wait for room (0: none), without waiting or
        recording anything. Not counting the concurrency cap."""
        with self._lock:
            return self._room_in(self._clock())

    def set_limit(self, index: int, limit: int) -> None:
        """Change the number of requests the ``index``-th window allows (e.g. a lower hourly budget
        found out while running); what was already recorded counts against it at once."""
        with self._lock:
            _, period = self.windows[index]
            self.windows[index] = (max(1, int(limit)), period)

    def limit(self, index: int) -> int:
        return self.windows[index][0]

    def acquire(self) -> float:
        """Block until a request may start; record it, dated now. Returns the seconds waited."""
        return self._start(None)[0]

    def block_for(self, seconds: float) -> None:
        """The server said "come back in N s": nobody starts before then."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for room, run the request, date it by its end (see the class docstring)."""
        if self._sem is not None:
            self._sem.acquire()
        try:
            _, entries = self._start(_IN_FLIGHT)
            try:
                yield
            finally:
                with self._lock:
                    end = self._clock()
                    for entry in entries:
                        entry[0] = end
        finally:
            if self._sem is not None:
                self._sem.release()


@dataclass
class Stats:
    """Counters of one client, for the sync summary. Thread-safe increments."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    ambiguous_retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "throttled": self.throttled,
            "ambiguous_retries": self.ambiguous_retries,
        }


@dataclass
class RetryPolicy:
    max_attempts: int = 6  # for 5xx and network failures
    max_throttled: int = 20  # 429s tolerated in one call
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    max_throttle_wait: float = 300.0  # longer waits give up (exit 75) instead of hanging cron

    def backoff(self, attempt: int) -> float:
        return random.uniform(self.backoff_base / 2, min(self.backoff_cap, self.backoff_base * 2**attempt))


@dataclass
class Sent:
    response: httpx.Response
    attempts: int
    ambiguous: bool  # a retry happened after a failure that the server may have applied


_AMBIGUOUS = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.RemoteProtocolError)
_RETRYABLE = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def retry_after_header(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def send(
    client: httpx.Client,
    method: str,
    url: str | httpx.URL,
    *,
    service: str,
    pacer: Pacer | None = None,
    stats: Stats | None = None,
    policy: RetryPolicy | None = None,
    classify: Callable[[httpx.Response], ApiError],
    wait_from_body: Callable[[httpx.Response], float | None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    give_up: Callable[[httpx.Response], bool] | None = None,
    on_exc: Callable[[Exception, bool], ApiError | None] | None = None,
    on_response: Callable[[httpx.Response], None] | None = None,
    accept: Callable[[httpx.Response], str | None] | None = None,
    deadline: float,
    max_bytes: int | None = None,
    **kwargs: Any,
) -> Sent:
    """Send one request with pacing and retries; return the 2xx answer or raise a typed error.

    ``give_up(resp)`` returning True for a 5xx answer means "retrying the same request cannot help"
    (e.g. PostHog's query time limit): ``classify`` turns it into an error at once.
    ``on_exc(exc, final)`` sees each transport failure (``final``: the retries are used up) and may
    return the error to raise now instead of retrying (or instead of the generic one).
    ``on_response(resp)`` sees every answer, before it is acted on (429s included).
    ``accept(resp)`` judges a 2xx answer: None when it is the API's answer, else what is wrong with
    it (retried like a 5xx, then ``NotAcknowledgedError``, exit 69).
    ``deadline``: overall seconds per attempt (``default_deadline(settings=...)``); ``max_bytes``: the
    largest answer body read (default ``DEFAULT_MAX_RESPONSE_BYTES``).
    """
    policy = policy or RetryPolicy()
    max_bytes = DEFAULT_MAX_RESPONSE_BYTES if max_bytes is None else max_bytes
    stats = stats if stats is not None else Stats()
    failures = 0
    throttled = 0
    ambiguous = False
    attempts = 0
    last_problem = ""
    while True:
        attempts += 1
        stats.add(requests=1)
        try:
            if pacer is not None:
                with pacer.slot():
                    resp = _exchange(client, method, url, deadline=deadline, max_bytes=max_bytes, **kwargs)
            else:
                resp = _exchange(client, method, url, deadline=deadline, max_bytes=max_bytes, **kwargs)
        except _TooLarge as exc:
            raise ResponseTooLargeError(
                f"{service} sent an answer larger than {_size(exc.cap)} to {method} {_path(url)}; "
                "reading stopped there and the request failed",
                service=service,
            ) from None
        except _RETRYABLE as exc:
            failures += 1
            was_ambiguous = isinstance(exc, _AMBIGUOUS)
            last_problem = _describe(exc)
            final = failures >= policy.max_attempts
            if on_exc is not None:
                err = on_exc(exc, final)
                if err is not None:
                    raise err from exc
            if final:
                raise UnavailableError(
                    f"{service} did not answer after {attempts} attempts ({last_problem})",
                    service=service,
                ) from exc
            ambiguous = ambiguous or was_ambiguous
            stats.add(retries=1, ambiguous_retries=int(was_ambiguous))
            sleep(policy.backoff(failures))
            continue

        if on_response is not None:
            on_response(resp)
        status = resp.status_code
        if status < 300:
            problem = accept(resp) if accept is not None else None
            if problem is None:
                return Sent(resp, attempts, ambiguous)
            # something answered 2xx, but not the API: a captive portal, a proxy, a website. It may
            # still have passed the request on, so a retry is counted as ambiguous.
            failures += 1
            last_problem = problem
            if failures >= policy.max_attempts:
                raise NotAcknowledgedError(
                    f"{service} did not acknowledge the request: HTTP {status} with {problem} "
                    f"({attempts} attempts)",
                    service=service,
                    status=status,
                )
            ambiguous = True
            stats.add(retries=1, ambiguous_retries=1)
            sleep(policy.backoff(failures))
            continue
        if status == 429:
            throttled += 1
            stats.add(throttled=1)
            wait = retry_after_header(resp)
            if wait is None and wait_from_body is not None:
                wait = wait_from_body(resp)
            if wait is None:
                wait = policy.backoff(throttled)
            if wait > policy.max_throttle_wait or throttled > policy.max_throttled:
                raise ThrottledError(
                    f"{service} rate limit reached (retry in {wait:.0f} s)",
                    retry_after=wait,
                    service=service,
                    status=429,
                )
            if pacer is not None:
                pacer.block_for(wait)
                stats.add(retries=1)
            else:
                stats.add(retries=1)
                sleep(wait)
            continue
        if status >= 500 and give_up is not None and give_up(resp):
            raise classify(resp)
        if status >= 500 or status == 408:
            failures += 1
            last_problem = f"HTTP {status}"
            if failures >= policy.max_attempts:
                raise UnavailableError(
                    f"{service} is unavailable (HTTP {status} after {attempts} attempts)",
                    service=service,
                    status=status,
                )
            stats.add(retries=1)
            sleep(policy.backoff(failures))
            continue
        raise classify(resp)


def _describe(exc: Exception) -> str:
    if isinstance(exc, DeadlineExceeded):
        return f"no complete answer within {exc.seconds:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    return "connection dropped"


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


def _path(url: str | httpx.URL) -> str:
    try:
        return httpx.URL(url).path
    except Exception:
        return "?"


def error_body(resp: httpx.Response) -> dict[str, Any]:
    """The JSON error body, or {} when the answer is not JSON (a proxy's HTML page)."""
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
