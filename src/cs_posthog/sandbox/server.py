"""HTTP plumbing shared by the sandbox servers: threaded HTTP/1.1 server, faults, limits, stats, DB pool.

Stdlib only. Each server runs a :class:`ThreadingHTTPServer` on 127.0.0.1 (one thread per
connection, keep-alive honoured, every response with a correct ``Content-Length`` or chunked
transfer encoding for streamed dumps). An *app* (PostHog or Customerscore) turns a
:class:`Request` into a :class:`Response`; this module adds what sits in front of a real API:

* ``--latency-ms``: a delay before every API request;
* ``--faults P``: that share of API requests, drawn by a seeded RNG, fail before the app sees them
  (so a faulted request is never applied): 500 (the app's own error body), 502 (an HTML page, as a
  load balancer sends), 429 (the app's throttle body; Customerscore's with ``Retry-After: 1``), a
  stall of ``--stall-s`` followed by a dropped connection, or a connection dropped at once without
  a response; the kinds are equally likely;
* request statistics per route and status.

Paths under ``/_sandbox/`` are test hooks: never delayed, faulted or rate limited, not counted.
"""

from __future__ import annotations

import email.parser
import http.client
import json
import math
import queue
import random
import re
import secrets
import socket
import sqlite3
import threading
import time
import traceback
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOOK_PREFIX = "/_sandbox/"
MAX_BODY = 64 * 1024 * 1024  # beyond this a request is refused unread and the connection closed

FAULT_KINDS = ("500", "502", "429", "stall", "drop")


# ---------------------------------------------------------------------------------------------
# Requests and responses
# ---------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    host: str  # value of the Host header, for absolute URLs
    raw_query: str = ""

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> object:
        return json.loads(self.body.decode("utf-8"))

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"


@dataclass
class Response:
    status: int
    body: bytes | Iterable[bytes] = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    action: str | None = None  # "drop": close without answering; "stall": hang, then drop
    close: bool = False


_SPLICE = json.dumps(f"\x00{secrets.token_hex(12)}\x00")  # a JSON string no payload holds


def json_response(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> Response:
    """``payload`` as compact UTF-8 JSON. A top-level value with a ``json_text`` attribute (the HogQL
    engine's pre-encoded result rows, hogql.JSONRows) is written as that text."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if hasattr(value, "json_text"):
                head, tail = json.dumps({**payload, key: json.loads(_SPLICE)}, ensure_ascii=False,
                                        separators=(",", ":"), default=str).split(_SPLICE, 1)
                body = b"".join((head.encode("utf-8"), value.json_text.encode("utf-8"), tail.encode("utf-8")))
                return Response(status, body, headers or [])
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    return Response(status, body, headers or [])


def jsonl_response(lines: Iterator[str]) -> Response:
    def gen() -> Iterator[bytes]:
        buf: list[str] = []
        size = 0
        for line in lines:
            buf.append(line)
            size += len(line)
            if size >= 64 * 1024:
                yield "".join(buf).encode("utf-8")
                buf.clear()
                size = 0
        if buf:
            yield "".join(buf).encode("utf-8")

    return Response(200, gen(), content_type="application/x-ndjson")


class App:
    """What a sandbox server serves. Subclasses implement ``handle`` and ``route_of``."""

    name = "app"

    def __init__(self) -> None:
        self.stats = Stats()
        self.faults: FaultInjector | None = None
        self.latency_s = 0.0
        self.stall_s = 65.0
        self.stop_event = threading.Event()

    def handle(self, req: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def handle_hook(self, req: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def route_of(self, method: str, path: str) -> str:
        return path

    def fault_response(self, kind: str) -> Response:
        if kind == "502":
            return Response(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                            content_type="text/html")
        return json_response(int(kind), {"error": kind})

    def max_body(self) -> int:
        return MAX_BODY


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.by_route_status: dict[str, Counter[str]] = defaultdict(Counter)
        self.faults: Counter[str] = Counter()
        self.throttled = 0
        self.extra: Counter[str] = Counter()

    def record(self, route: str, status: str) -> None:
        with self._lock:
            self.requests[route] += 1
            self.statuses[status] += 1
            self.by_route_status[route][status] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def throttle(self) -> None:
        with self._lock:
            self.throttled += 1

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.extra[name] += n

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "total": sum(self.requests.values()),
                "requests": dict(sorted(self.requests.items())),
                "statuses": dict(sorted(self.statuses.items())),
                "by_route_status": {k: dict(sorted(v.items())) for k, v in sorted(self.by_route_status.items())},
                "throttled": self.throttled,
                "faults": {k: self.faults.get(k, 0) for k in FAULT_KINDS},
                **dict(self.extra),
            }


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


class FaultInjector:
    """Decides, with a seeded RNG, which requests fail and how."""

    def __init__(self, probability: float, seed: object) -> None:
        self.probability = max(0.0, min(1.0, probability))
        self._rng = random.Random(f"faults:{seed}")
        self._lock = threading.Lock()

    def draw(self) -> str | None:
        if self.probability <= 0:
            return None
        with self._lock:
            if self._rng.random() >= self.probability:
                return None
            return self._rng.choice(FAULT_KINDS)


# ---------------------------------------------------------------------------------------------
# Rate limits
# ---------------------------------------------------------------------------------------------


class SlidingWindow:
    """DRF's SimpleRateThrottle: a history of request times per ident, ``num`` per ``duration``."""

    def __init__(self, num: int, duration: float) -> None:
        self.num = num
        self.duration = duration
        self._hist: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, ident: str, now: float | None = None) -> float | None:
        """Record and return None if allowed; else the wait in seconds (DRF's formula)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hist = self._hist[ident]
            while hist and hist[0] <= now - self.duration:
                hist.popleft()
            if len(hist) >= self.num:
                remaining = self.duration - (now - hist[0])
                available = self.num - len(hist) + 1
                return max(remaining / available, 0.0)
            hist.append(now)
            return None


def throttle_check(windows: Iterable[SlidingWindow], ident: str) -> float | None:
    """Check every window (as DRF does: each allowing one records); the longest wait, or None."""
    now = time.monotonic()
    waits = [w for w in (win.allow(ident, now) for win in windows) if w is not None]
    return max(waits) if waits else None


def ceil_wait(wait: float) -> int:
    return max(1, math.ceil(wait))


# ---------------------------------------------------------------------------------------------
# SQLite pool
# ---------------------------------------------------------------------------------------------


class DBPool:
    """Connections to one SQLite file, handed out one per request; writes serialised by a lock."""

    def __init__(self, path: str, *, prepare: Callable[[sqlite3.Connection], None] | None = None,
                 keep: int = 16) -> None:
        self.path = path
        self.prepare = prepare
        self.write_lock = threading.RLock()
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._keep = keep
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-32768")
        if self.prepare is not None:
            self.prepare(conn)
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def conn(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._open()
        try:
            yield conn
        except BaseException:
            try:
                conn.rollback()
            except sqlite3.Error:
                pass
            raise
        finally:
            if self._idle.qsize() < self._keep:
                self._idle.put(conn)
            else:
                with self._lock:
                    if conn in self._all:
                        self._all.remove(conn)
                conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass


# ---------------------------------------------------------------------------------------------
# The HTTP server
# ---------------------------------------------------------------------------------------------


_MAX_HEADER_LINE = 65536  # http.client's _MAXLINE and _MAXHEADERS
_MAX_HEADERS = 100
_PLAIN_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r?\n\Z")


def parse_headers(fp, _class: type = http.client.HTTPMessage) -> http.client.HTTPMessage:
    """``http.client.parse_headers`` (same limits, errors and message), with the common case -- every
    line a plain ``Name: value`` -- stored directly as the email package's compat32 parser stores it
    (name up to the first colon, value without leading blanks and the line end) instead of going
    through its feed parser, a third of a request's CPU. Anything else (folded or malformed lines, a
    missing blank line) goes through the email parser as before."""
    headers = []
    while True:
        line = fp.readline(_MAX_HEADER_LINE + 1)
        if len(line) > _MAX_HEADER_LINE:
            raise http.client.LineTooLong("header line")
        headers.append(line)
        if len(headers) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    if headers[-1] and all(_PLAIN_HEADER.match(h) for h in headers[:-1]):
        msg = _class()
        for h in headers[:-1]:
            name, _, value = h.decode("iso-8859-1").partition(":")
            msg._headers.append((name, value.lstrip(" \t").rstrip("\r\n")))  # Message.set_raw
        msg.set_payload("")
        return msg
    return email.parser.Parser(_class=_class).parsestr(b"".join(headers).decode("iso-8859-1"))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cs-posthog-sandbox"
    sys_version = ""
    timeout = 600  # idle keep-alive connections are closed after this
    wbufsize = 1 << 16  # headers and body leave in one segment (no Nagle/delayed-ACK stalls)
    rbufsize = 1 << 16  # a request body of a tracker batch arrives in one or two reads, not eight
    app: App  # set on the subclass made per server
    server: SandboxHTTPServer  # the only server class that makes these handlers
    raw_requestline: bytes  # set by BaseHTTPRequestHandler.handle_one_request before parse_request

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:
        return

    _date: tuple[int, str] = (0, "")

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())  # the Date header has whole seconds: formatted once a second
        cached = _Handler._date
        if cached[0] != now:
            cached = _Handler._date = (now, super().date_time_string(now))
        return cached[1]

    def parse_request(self) -> bool:
        """BaseHTTPRequestHandler.parse_request (Python 3.11), reading the headers with the faster
        ``parse_headers`` above."""
        # set in case of error on the first line (CPython sets None; send_error, its only reader before
        # it is set below, only compares it with "HEAD")
        self.command = ""
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1")
        requestline = requestline.rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if len(words) == 0:
            return False

        if len(words) >= 3:  # Enough to determine protocol version
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                version_parts = base_version_number.split(".")
                if len(version_parts) != 2:
                    raise ValueError
                if any(not component.isdigit() for component in version_parts):
                    raise ValueError("non digit in http version")
                if any(len(component) > 10 for component in version_parts):
                    raise ValueError("unreasonable length http version")
                version_number = int(version_parts[0]), int(version_parts[1])
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if version_number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if version_number >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                                f"Invalid HTTP version ({base_version_number})")
                return False
            self.request_version = version

        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path

        # gh-87389: The purpose of replacing '//' with '/' is to protect
        # against open redirect attacks possibly triggered if the path starts
        # with '//' because http clients treat //path as an absolute URI
        # without scheme (similar to http://path) rather than a path.
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")  # Reduce to a single /

        try:
            self.headers = parse_headers(self.rfile, _class=self.MessageClass)
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err))
            return False

        conntype = self.headers.get("Connection", "")
        if conntype.lower() == "close":
            self.close_connection = True
        elif conntype.lower() == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "")
        wants_continue = (expect.lower() == "100-continue" and self.protocol_version >= "HTTP/1.1"
                          and self.request_version >= "HTTP/1.1")
        return self.handle_expect_100() if wants_continue else True

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def do_HEAD(self) -> None:
        self._serve(head=True)

    # -- body ---------------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The request body; None when it is too large to read (connection will be closed)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    # -- dispatch -----------------------------------------------------------------------------

    def _serve(self, head: bool = False) -> None:
        app = self.app
        split = urlsplit(self.path)
        path = split.path
        body = self._read_body()
        req = Request(
            method=self.command,
            path=path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body or b"",
            host=self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}",
            raw_query=split.query,
        )
        if path.startswith(HOOK_PREFIX):
            try:
                resp = app.handle_hook(req)
            except Exception as exc:  # a hook bug must show, not hang the test
                resp = json_response(500, {"error": "hook_failed", "detail": repr(exc)})
            self._send(resp, head)
            return

        route = app.route_of(self.command, path)
        if app.latency_s > 0 and app.stop_event.wait(app.latency_s):
            self.close_connection = True
            return
        kind = app.faults.draw() if app.faults else None
        if kind is not None:
            app.stats.fault(kind)
            if kind == "drop":
                app.stats.record(route, "dropped")
                self._drop()
                return
            if kind == "stall":
                app.stats.record(route, "stalled")
                app.stop_event.wait(app.stall_s)
                self._drop()
                return
            resp = app.fault_response(kind)
            app.stats.record(route, str(resp.status))
            self._send(resp, head)
            return
        if body is None:
            resp = app.too_large() if hasattr(app, "too_large") else json_response(413, {"error": "too_large"})
            resp.close = True
        else:
            try:
                resp = app.handle(req)
            except Exception as exc:  # an emulator bug: answer like a server error, keep serving
                traceback.print_exc()
                resp = app.fault_response("500")
                resp.headers.append(("X-Sandbox-Error", repr(exc)[:200].replace("\n", " ")))
        if resp.action == "drop":
            app.stats.record(route, "dropped")
            self._drop()
            return
        app.stats.record(route, str(resp.status))
        self._send(resp, head)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, resp: Response, head: bool = False) -> None:
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type + ("; charset=utf-8" if "json" in resp.content_type
                                                                    else ""))
            for name, value in resp.headers:
                self.send_header(name, value)
            if resp.close:
                self.send_header("Connection", "close")
                self.close_connection = True
            if isinstance(resp.body, bytes | bytearray):
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                if not head:
                    self.wfile.write(resp.body)
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if not head:
                    for chunk in resp.body:
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            close = getattr(resp.body, "close", None)
            if close is not None:  # a streamed dump: release its DB connection now
                close()


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, port: int, app: App) -> None:
        handler = type(f"{app.name}Handler", (_Handler,), {"app": app})
        super().__init__(("127.0.0.1", port), handler)
        self.app = app
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> None:
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                       name=f"sandbox-{self.app.name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.app.stop_event.set()
        self.shutdown()
        self.server_close()
