"""Customerscore API client: contacts bulk upsert and tracker events. No terminal I/O.

Facts (``docs/customerscore-api.md``): header ``customerscore-key``, JSON bodies of at most
100 items and 5 MB, REST 500 requests/minute, tracker 200 requests/minute, 429 with ``Retry-After``
over the limit. No idempotency key: a batch applied twice is counted twice, so each call says whether
a retry followed a failure the server may have applied (``Delivery.ambiguous``).

Items are JSON-encoded once (``encode``) and batches are assembled from the encoded bytes, so the
size limit is checked on exactly what goes on the wire.

What counts as an answer (``customerscore_app.py`` models the bodies the public docs leave out):

- A batch is acknowledged only by a 2xx whose body is Customerscore's: a JSON object with the
  integer ``processed`` count, equal to the items sent (``status``, when present, is ``"ok"``).
  Anything else on a 2xx (an HTML page from a captive portal or a website, unrelated JSON, an empty
  body) is not a delivery: retried like a 5xx, then ``NotAcknowledgedError`` (exit 69). The sync
  checkpoints only after a call returns, so its cursor stays.
- Only a 400 whose body names offending items (``details: [{"field": "events[3].timestamp", ...}]``)
  is ``BadRequestError``, the per-item rejection the sync splits a batch on. A 408 is retried. Any
  other 4xx (a 400 naming no item, 405, 413, 415, 418...) is ``UnexpectedStatusError`` (69): the
  request failed, nothing is dropped. 401/403 are ``AuthError``/``PermissionDeniedError`` (77), 404
  ``NotFoundError`` (78: the URL).
- Each attempt must be answered completely within ``DEADLINE_S`` (120 s) and in at most
  ``MAX_RESPONSE_BYTES`` (1 MB; an acknowledgement is a few dozen bytes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from cs_posthog import __version__
from cs_posthog.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RedirectedError,
    UnexpectedStatusError,
)
from cs_posthog.http import (
    Pacer,
    RetryPolicy,
    Stats,
    default_deadline,
    default_timeout,
    error_body,
    install_deadlines,
    rate_scale,
    send,
    tls_context,
)
from cs_posthog.settings import Settings

SERVICE = "Customerscore"
MAX_ITEMS = 100
# The docs say 5 MB; stay under the smaller reading of it (10^6 or 2^20) with room for the envelope.
MAX_BYTES = 5_000_000
REST_PER_MINUTE = 500
TRACKER_PER_MINUTE = 200
FIELD_MAX = 255
DEADLINE_S = 120.0  # one attempt, request sent to answer read (``CS_POSTHOG_DEADLINE`` overrides)
MAX_RESPONSE_BYTES = 1024 * 1024  # Customerscore's answers are tiny; a larger one is not its answer
# Pacing scale: tests and benchmarks run against a sandbox whose clock is scaled (``--rate-limits
# fast`` is 60x: the same counts per second instead of per minute) or has no limits at all.
# ``CS_POSTHOG_RATE_SCALE=60`` divides the pacing windows by 60; ``off`` (or 0) turns client-side
# pacing off. Never needed against the real API.

T = TypeVar("T")




def encode(item: Any) -> bytes:
    """Compact JSON of one item, as it will appear inside the request body."""
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class ItemTooLargeError(BadRequestError):
    """One item alone is over the request size limit: it can never be sent."""


def batched(
    items: Iterable[tuple[T, bytes]],
    *,
    max_items: int = MAX_ITEMS,
    max_bytes: int = MAX_BYTES,
    envelope: int = 256,
) -> Iterator[list[tuple[T, bytes]]]:
    """Group ``(item, encoded)`` pairs, in order, into batches of at most ``max_items`` items whose
    assembled body stays within ``max_bytes`` (``envelope`` covers the keys around the list)."""
    batch: list[tuple[T, bytes]] = []
    size = envelope
    for pair in items:
        n = len(pair[1]) + 1  # the comma
        if envelope + n > max_bytes:
            raise ItemTooLargeError(
                f"one item is {len(pair[1])} bytes, over Customerscore's {max_bytes} byte request limit",
                service=SERVICE,
            )
        if batch and (len(batch) >= max_items or size + n > max_bytes):
            yield batch
            batch, size = [], envelope
        batch.append(pair)
        size += n
    if batch:
        yield batch


@dataclass(frozen=True)
class Delivery:
    """One acknowledged request."""

    count: int  # items in the request
    attempts: int  # HTTP attempts it took
    ambiguous: bool  # a retry followed a failure the server may have applied: items may be doubled
    bytes: int


class CustomerscoreClient:
    """Thread-safe (one ``httpx.Client`` underneath): the sync sends contacts and events from two
    threads at once, each paced by its own budget."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        tracker_key: str,
        *,
        timeout: httpx.Timeout | float | None = None,
        rest_per_minute: int = REST_PER_MINUTE,
        tracker_per_minute: int = TRACKER_PER_MINUTE,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        pace: bool | None = None,
        deadline: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        settings: Settings,
    ) -> None:
        base = api_url.rstrip("/")
        if base.endswith("/api/v1"):
            base = base[: -len("/api/v1")]
        self.api_url = base
        self.contacts_url = f"{base}/api/v1/contacts"
        self.track_url = f"{base}/api/tracker/track"
        # parsed once: httpx parses and validates a URL string on every request (~20 us each)
        self._urls = {u: httpx.URL(u) for u in (self.contacts_url, self.track_url)}
        self.tracker_key = tracker_key
        self._tracker_key_json = json.dumps(tracker_key).encode()
        self.stats = Stats()
        self.policy = policy or RetryPolicy()
        self.deadline = deadline if deadline is not None else default_deadline(DEADLINE_S, settings=settings)
        self.max_response_bytes = max_response_bytes
        scale = rate_scale(settings) if pace is None else (1.0 if pace else None)
        if scale is None:
            self.rest_pacer = self.tracker_pacer = None
        else:
            # scale the clock, not the count: the sandbox's "fast" mode allows 200 per second, not
            # 12,000 per minute in one burst
            period = 60.0 / scale
            # the pacer dates each request by its answer, after the server dated it: latency and
            # its jitter cannot make our count of a window lower than the server's; 1% more covers
            # clock rates (a 2% / 50 ms margin on start times kept the tracker at 95% of its limit)
            margin = 0.01
            self.rest_pacer = Pacer([(rest_per_minute, period)], margin=margin)
            self.tracker_pacer = Pacer([(tracker_per_minute, period)], margin=margin)
        self._client = httpx.Client(
            timeout=timeout if timeout is not None else default_timeout(settings=settings),
            transport=transport,
            verify=tls_context(),
            headers={
                "customerscore-key": api_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"cs-posthog/{__version__}",
            },
        )
        install_deadlines(self._client)

    # --- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> CustomerscoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- contacts ----------------------------------------------------------------------------
    def upsert_contacts(self, contacts: Sequence[dict[str, Any]]) -> Delivery:
        """One bulk upsert of at most 100 contacts (see ``batched`` to split)."""
        return self.upsert_contacts_encoded([encode(c) for c in contacts])

    def upsert_contacts_encoded(self, parts: Sequence[bytes]) -> Delivery:
        body = b'{"contacts":[' + b",".join(parts) + b"]}"
        return self._post(self.contacts_url, body, len(parts), self.rest_pacer)

    # --- tracker -----------------------------------------------------------------------------
    def track(self, events: Sequence[dict[str, Any]]) -> Delivery:
        """One tracker request of at most 100 events (see ``batched`` to split)."""
        return self.track_encoded([encode(e) for e in events])

    def track_encoded(self, parts: Sequence[bytes]) -> Delivery:
        body = b'{"trackerKey":' + self._tracker_key_json + b',"events":[' + b",".join(parts) + b"]}"
        return self._post(self.track_url, body, len(parts), self.tracker_pacer)

    # --- key checks (requests that change nothing) -------------------------------------------
    def check_api_key(self) -> None:
        """Check the API key with an empty contacts upsert, which changes nothing. Returns when
        Customerscore accepted the key; raises ``AuthError`` (401) or ``PermissionDeniedError``
        (403) when it refused it, ``UnavailableError``/``ThrottledError``/``NotAcknowledgedError``
        when it could not be asked, another ``ApiError`` (e.g. ``NotFoundError``: the URL) else."""
        self._check(self.contacts_url, b'{"contacts":[]}')

    def check_tracker_key(self) -> None:
        """Check the tracker key (and the API key, which the tracker needs too) with an empty
        tracker batch, which records nothing. Same outcomes as ``check_api_key``; a refused tracker
        key is an ``AuthError`` whose ``code`` is ``invalid_tracker_key``."""
        self._check(self.track_url, b'{"trackerKey":' + self._tracker_key_json + b',"events":[]}')

    def _check(self, url: str, body: bytes) -> None:
        # The public docs do not say how an empty batch is answered: a 2xx acknowledgement (of 0
        # items) or a validation error about the empty list. Either comes after the keys were
        # accepted (keys are checked first: a wrong one is a 401 whatever the body), so both mean
        # "accepted". 5xx, timeouts and connection errors are retried briefly: a person is waiting.
        try:
            send(
                self._client,
                "POST",
                self._urls.get(url, url),
                service=SERVICE,
                stats=self.stats,
                policy=CHECK_POLICY,
                classify=_check_classify,
                accept=_check_acknowledgement,
                deadline=min(self.deadline, CHECK_DEADLINE_S),
                max_bytes=self.max_response_bytes,
                content=body,
            )
        except _EmptyBatchRefused:
            return

    # --- plumbing ----------------------------------------------------------------------------
    def _post(self, url: str, body: bytes, count: int, pacer: Pacer | None) -> Delivery:
        if count == 0:
            return Delivery(0, 0, False, 0)
        if count > MAX_ITEMS:
            raise ValueError(f"{count} items in one request; Customerscore takes at most {MAX_ITEMS}")
        if len(body) > MAX_BYTES:
            raise ValueError(f"request body of {len(body)} bytes; Customerscore takes at most {MAX_BYTES}")
        sent = send(
            self._client,
            "POST",
            self._urls.get(url, url),
            service=SERVICE,
            pacer=pacer,
            stats=self.stats,
            policy=self.policy,
            classify=classify,
            accept=lambda resp: acknowledgement_problem(resp, count),
            deadline=self.deadline,
            max_bytes=self.max_response_bytes,
            content=body,
        )
        return Delivery(count, sent.attempts, sent.ambiguous, len(body))


# a key check is one request a person waits for: a few quick retries, then "not checked"
CHECK_POLICY = RetryPolicy(max_attempts=3, max_throttled=2, backoff_base=0.3, backoff_cap=1.0, max_throttle_wait=5.0)
CHECK_DEADLINE_S = 20.0


class _EmptyBatchRefused(ApiError):
    """A validation error about the empty batch of a key check: the keys passed."""


def _check_acknowledgement(resp: httpx.Response) -> str | None:
    """None when a 2xx answer to a key check is Customerscore's JSON (``{"status": "ok",
    "processed": 0}``, or any object with its ``status``/``processed``), else what it is instead."""
    try:
        data = json.loads(resp.content)
    except ValueError:
        data = None
    if isinstance(data, dict) and ("processed" in data or "status" in data) and data.get("status", "ok") == "ok":
        return None
    return acknowledgement_problem(resp, 0) or "an answer that is not Customerscore's"


def _check_classify(resp: httpx.Response) -> ApiError:
    if resp.status_code in (400, 422):
        body = error_body(resp)
        fields = [d.get("field") for d in body.get("details", []) if isinstance(d, dict)] \
            if isinstance(body.get("details"), list) else []
        if not any(isinstance(f, str) and f.lower() == "trackerkey" for f in fields):
            return _EmptyBatchRefused("the empty batch was refused", service=SERVICE, status=resp.status_code)
    return classify(resp)


def _html_title(text: str) -> str:
    m = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    title = " ".join(m.group(1).split())[:60] if m else ""
    return "".join(c if c.isprintable() else "?" for c in title)


def acknowledgement_problem(resp: httpx.Response, count: int) -> str | None:
    """None when a 2xx answer is Customerscore's acknowledgement of ``count`` items
    (``{"status": "ok", "processed": count}``), else what it is instead. The body is described,
    never quoted (it could be anything, keys echoed by a proxy included)."""
    content = resp.content
    ctype = resp.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    if not content.strip():
        return f"an empty body ({ctype})"
    try:
        data = json.loads(content)
    except ValueError:
        head = content[:2048].decode("utf-8", "replace")
        if "<html" in head.lower() or "<!doctype" in head.lower():
            title = _html_title(head)
            return "an HTML page" + (f" titled {title!r}" if title else "") + " instead of Customerscore's JSON"
        return f"a body that is not JSON ({ctype}, {len(content):,} bytes)"
    if not isinstance(data, dict):
        return f"JSON that is not Customerscore's answer (a {type(data).__name__}, not an object)"
    processed = data.get("processed")
    if type(processed) is not int:
        return "JSON that is not Customerscore's answer (no processed count)"
    status = data.get("status")
    if status is not None and status != "ok":
        return f"status {str(status)[:40]!r} instead of \"ok\""
    if processed != count:
        return f"processed {processed} of the {count} items sent"
    return None


_ITEM_FIELD = re.compile(r"^(events|contacts|customers)\[\d+\]")


def names_items(resp: httpx.Response) -> bool:
    """True when an error body names the offending items: ``details`` (or ``errors``) with a
    ``field`` such as ``events[3].timestamp``: Customerscore's validation answer."""
    body = error_body(resp)
    for key in ("details", "errors"):
        items = body.get(key)
        if isinstance(items, list) and any(
            isinstance(d, dict) and isinstance(d.get("field"), str) and _ITEM_FIELD.match(d["field"])
            for d in items
        ):
            return True
    return False


def _detail(resp: httpx.Response) -> str:
    body = error_body(resp)
    details = body.get("details")
    first = ""
    if isinstance(details, list) and details and isinstance(details[0], dict):
        d = details[0]
        first = f"{d.get('field', '')}: {d.get('message', '')}".strip(": ")
        if len(details) > 1:
            first += f" (and {len(details) - 1} more)"
    for key in ("message", "detail", "error"):
        val = body.get(key)
        if isinstance(val, str) and val:
            return f"{val} {first}".strip() if first else val
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0]
        if isinstance(first, dict):
            return str(first.get("message") or first.get("detail") or first)
        return str(first)
    if isinstance(errors, dict) and errors:
        return "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:3])
    text = resp.text.strip()
    return text[:200] if text and not text.startswith("<") else ""


def _redirected(resp: httpx.Response) -> ApiError:
    """A 3xx (the client follows none: the key must not travel to another host): the URL to fix, 78."""

    return RedirectedError.from_response(resp, service=SERVICE, setting="Customerscore API URL")


def classify(resp: httpx.Response) -> ApiError:
    """A non-2xx, non-429, non-5xx Customerscore answer as a typed error."""
    status = resp.status_code
    detail = _detail(resp)
    suffix = f": {detail}" if detail else ""
    code = error_body(resp).get("error")
    common: dict[str, Any] = {"service": SERVICE, "status": status, "detail": detail or None,
              "code": code if isinstance(code, str) else None}
    if 300 <= status < 400:
        return _redirected(resp)
    if status == 401 and common["code"] == "invalid_tracker_key":
        return AuthError(
            f"Customerscore rejected the tracker key (401){suffix}",
            hint="Check the tracker key (CS-..., in Customerscore's settings): `cs-posthog edit customerscore`.",
            **common,
        )
    if status == 401:
        return AuthError(
            f"Customerscore rejected the API key (401){suffix}",
            hint="Check the Customerscore API key (env CUSTOMERSCORE_API_KEY, or `cs-posthog edit customerscore`).",
            **common,
        )
    if status == 403:
        return PermissionDeniedError(
            f"Customerscore refused the request (403){suffix}",
            hint="Check the Customerscore API key and tracker key (`cs-posthog edit customerscore`).",
            **common,
        )
    if status == 404:
        return NotFoundError(
            f"Customerscore has no such endpoint: {resp.request.url} (404)",
            hint="Check the Customerscore API base URL (`cs-posthog edit customerscore`).",
            **common,
        )
    if status == 400 and names_items(resp):
        return BadRequestError(f"Customerscore rejected the request ({status}){suffix}", **common)
    body = error_body(resp)
    ours = isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
    return UnexpectedStatusError(
        f"Customerscore refused the request (HTTP {status}){suffix}; nothing was dropped",
        hint=(
            "Customerscore refused the whole request without naming an item: the next run sends it again. "
            "If it persists, report it (`cs-posthog sync -v` shows the request)."
            if ours else None
        ),
        **common,
    )
