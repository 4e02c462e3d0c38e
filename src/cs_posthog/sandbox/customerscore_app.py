"""The sandbox Customerscore: contacts, customers and tracker endpoints, with the real API's silent drops.

Endpoints (``docs/customerscore-api.md``):

* ``POST /api/v1/contacts`` ``{"contacts": [...]}`` and ``POST /api/v1/customers``
  ``{"customers": [...]}`` (bulk upserts), ``POST /api/tracker/track``
  ``{"trackerKey": "CS-XXXXX", "events": [...]}``.
* Every request needs ``Content-Type: application/json`` and the header ``customerscore-key``.

The public docs name the limits but not the error bodies; the shapes chosen here are:

* success: 200 ``{"status": "ok", "processed": N}`` (N = items in the request, dropped ones included:
  drops are silent);
* errors: ``{"error": CODE, "message": TEXT}``, validation errors add
  ``"details": [{"field": "contacts[3].contact_name", "message": "..."}]``; a request with any invalid
  item is rejected whole (nothing stored):

  ====  =============================  ==============================================================
  401   ``unauthorized``               missing or wrong ``customerscore-key``
  401   ``invalid_tracker_key``        ``trackerKey`` is not this account's tracker key
  400   ``invalid_json``               body is not JSON
  400   ``validation_error``           missing/empty required field, a string over 255 characters,
                                       more than 100 items, an empty customers list, a bad type, more than 200
                                       metrics or a repeated/invalid metric ``date``, a timestamp that
                                       is not integer milliseconds
  413   ``payload_too_large``          body over 5 MB (5 * 1024 * 1024 bytes)
  415   ``unsupported_media_type``     ``Content-Type`` is not ``application/json``
  429   ``rate_limited``               over 500 REST or 200 tracker requests per minute and key
                                       (``fast``: per second); ``Retry-After`` header in seconds
  404   ``not_found`` / 405 ``method_not_allowed``
  ====  =============================  ==============================================================

Silent drops, as the real API: a contact or event whose customer (``customer_external_id`` /
``identification.customer``) does not exist is accepted with 200 and ignored; it is counted in
``/_sandbox/stats`` (``contacts_dropped``/``events_dropped``) and absent from ``/_sandbox/received/*``.
The customers are the PostHog sandbox's companies minus about one in ten, plus any posted to
``/api/v1/customers``. Event names are not checked against metric codenames (all are kept).

Contact attributes: Customerscore keeps an attribute only when its key is an attribute codename
defined in the account (``ATTRIBUTE_CODENAMES`` here, listed by ``GET /_sandbox/attributes``); any
other key is dropped silently, the contact kept. ``/_sandbox/received/contacts`` shows the contacts
as sent; ``?as_kept=1``, as Customerscore keeps them (those attributes left out); ``/_sandbox/stats``
counts ``attributes_dropped`` (keys).

Hooks: ``GET /_sandbox/stats``, ``GET /_sandbox/attributes``, ``GET /_sandbox/received/events``,
``GET /_sandbox/received/contacts``,
``GET /_sandbox/received/customers`` (JSON lines of every accepted item as sent, in arrival order,
duplicates included), ``GET /_sandbox/customers`` (JSON list of the customers that exist).
"""

from __future__ import annotations

import json
import os
import re
import threading

from cs_posthog.sandbox.data import Company
from cs_posthog.sandbox.server import (
    App,
    Request,
    Response,
    SlidingWindow,
    ceil_wait,
    json_response,
    jsonl_response,
    throttle_check,
)

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_ITEMS = 100
MAX_STR = 255
MAX_METRICS = 200
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# the contact attribute codenames the sandbox account defines (Customerscore: Settings → Attributes)
ATTRIBUTE_CODENAMES = ("email", "name", "phone", "plan", "role", "title", "seats", "signup_date", "country")

ROUTES = {
    "/api/v1/contacts": "contacts",
    "/api/v1/customers": "customers",
    "/api/tracker/track": "track",
}


class CSError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers

    def response(self) -> Response:
        body: dict = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return json_response(self.status, body, self.headers)


class _Validator:
    def __init__(self) -> None:
        self.details: list[dict] = []

    def add(self, field: str, message: str) -> None:
        if len(self.details) < 50:
            self.details.append({"field": field, "message": message})

    def string(self, obj: dict, key: str, where: str, *, required: bool) -> None:
        value = obj.get(key)
        if value is None:
            if required:
                self.add(f"{where}.{key}", "This field is required.")
            return
        if not isinstance(value, str):
            self.add(f"{where}.{key}", "Must be a string.")
        elif required and not value.strip():
            self.add(f"{where}.{key}", "This field may not be blank.")
        elif len(value) > MAX_STR:
            self.add(f"{where}.{key}", f"Ensure this field has no more than {MAX_STR} characters.")

    def attributes(self, obj: dict, where: str) -> None:
        attrs = obj.get("attributes")
        if attrs is None:
            return
        if not isinstance(attrs, dict):
            self.add(f"{where}.attributes", "Must be an object.")
            return
        for k, v in attrs.items():
            if isinstance(v, dict | list):
                self.add(f"{where}.attributes.{k}", "Must be a string, number, boolean or YYYY-MM-DD date.")

    def metrics(self, obj: dict, where: str) -> None:
        metrics = obj.get("metrics")
        if metrics is None:
            return
        if not isinstance(metrics, list):
            self.add(f"{where}.metrics", "Must be an array.")
            return
        if len(metrics) > MAX_METRICS:
            self.add(f"{where}.metrics", f"Ensure this array has no more than {MAX_METRICS} items.")
        dates: set[str] = set()
        for j, m in enumerate(metrics):
            if not isinstance(m, dict) or not isinstance(m.get("date"), str) or not _DATE.match(m["date"]):
                self.add(f"{where}.metrics[{j}].date", "A date in YYYY-MM-DD format is required.")
                continue
            if m["date"] in dates:
                self.add(f"{where}.metrics[{j}].date", "Dates must be unique within metrics.")
            dates.add(m["date"])

    def raise_if_any(self) -> None:
        if self.details:
            raise CSError(400, "validation_error", "The request is invalid.", self.details)


def items_of(body: object, key: str, *, allow_empty: bool = False) -> list:
    if not isinstance(body, dict):
        raise CSError(400, "validation_error", "The request is invalid.",
                      [{"field": key, "message": "The body must be a JSON object."}])
    items = body.get(key)
    if items is None:
        raise CSError(400, "validation_error", "The request is invalid.",
                      [{"field": key, "message": "This field is required."}])
    if not isinstance(items, list):
        raise CSError(400, "validation_error", "The request is invalid.",
                      [{"field": key, "message": "Must be an array."}])
    if not items and not allow_empty:
        raise CSError(400, "validation_error", "The request is invalid.",
                      [{"field": key, "message": "Ensure this array has at least 1 item."}])
    if len(items) > MAX_ITEMS:
        raise CSError(400, "validation_error", "The request is invalid.",
                      [{"field": key, "message": f"Ensure this array has no more than {MAX_ITEMS} items."}])
    return items


def _plain_events(items: list) -> bool:
    """Whether every event passes every check of ``_track`` (the common case), tested in one loop
    without building field paths; False sends the request through the detailed checks."""
    str_, int_, dict_ = str, int, dict
    for e in items:
        if type(e) is not dict_:
            return False
        ts = e.get("timestamp")
        name = e.get("name")
        ident = e.get("identification")
        data = e.get("data")
        if not (type(ts) is int_ and ts >= 100_000_000_000 and type(name) is str_ and len(name) <= MAX_STR
                and name.strip() and type(ident) is dict_):
            return False
        customer = ident.get("customer")
        if not (type(customer) is str_ and len(customer) <= MAX_STR and customer.strip()):
            return False
        if "contact" in ident:
            contact = ident["contact"]
            if not (type(contact) is str_ and len(contact) <= MAX_STR and contact.strip()):
                return False
        if data is not None and not (type(data) is dict_ and type(data.get("customer", data)) is dict_
                                     and type(data.get("contact", data)) is dict_):
            return False
    return True


class CustomerscoreApp(App):
    name = "customerscore"

    def __init__(self, *, api_key: str, tracker_key: str, customers: list[Company], store_dir: str,
                 rate_limits: str = "off", rate_scale: float | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.tracker_key = tracker_key
        self.rate_limits = rate_limits
        scale = (rate_scale or 60.0) if rate_limits == "fast" else 1.0
        self.windows = {"rest": [SlidingWindow(500, 60 / scale)], "track": [SlidingWindow(200, 60 / scale)]}
        self._lock = threading.Lock()
        self.customers: dict[str, dict] = {
            c.external_id: {"external_id": c.external_id, "name": c.name, "owner_email": c.owner_email}
            for c in customers}
        self.store_dir = store_dir
        os.makedirs(store_dir, exist_ok=True)
        # What was accepted is kept as the request bodies themselves (appended, buffered) plus, per
        # request, where its body lies and which of its items were kept; the JSON lines of
        # /_sandbox/received/* are made from them when read.
        self._files = {}
        self._records: dict[str, list[tuple[int, int, str, tuple | None]]] = {}
        for what in ("events", "contacts", "customers"):
            path = os.path.join(store_dir, f"received_{what}.bodies")
            self._files[what] = open(path, "ab", buffering=1 << 20)  # noqa: SIM115 - lives as long as the app
            self._records[what] = []
        for name in ("events_received", "events_dropped", "contacts_received", "contacts_dropped",
                     "customers_received", "attributes_dropped"):
            self.stats.extra[name] = 0

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()

    # -- framework hooks ----------------------------------------------------------------------

    def route_of(self, method: str, path: str) -> str:
        norm = path.rstrip("/")
        return f"{method} {norm if norm in ROUTES else '(unknown)'}"

    def fault_response(self, kind: str) -> Response:
        if kind == "500":
            return CSError(500, "internal_error", "Internal server error.").response()
        if kind == "429":
            return CSError(429, "rate_limited", "Too many requests. Retry after 1 seconds.",
                           headers=[("Retry-After", "1")]).response()
        return super().fault_response(kind)

    def too_large(self) -> Response:
        return CSError(413, "payload_too_large", "Request body exceeds 5 MB.").response()

    def handle(self, req: Request) -> Response:
        try:
            resp = self._handle(req)
        except CSError as exc:
            if exc.status == 429:
                self.stats.throttle()
            resp = exc.response()
        return resp

    def _handle(self, req: Request) -> Response:
        what = ROUTES.get(req.path.rstrip("/"))
        if what is None:
            raise CSError(404, "not_found", f"No endpoint {req.path}.")
        if req.method != "POST":
            raise CSError(405, "method_not_allowed", f"Method {req.method} not allowed.")
        if req.headers.get("customerscore-key") != self.api_key:
            raise CSError(401, "unauthorized", "Missing or invalid customerscore-key header.")
        if self.rate_limits != "off":
            wait = throttle_check(self.windows["track" if what == "track" else "rest"], self.api_key)
            if wait is not None:
                n = ceil_wait(wait)
                raise CSError(429, "rate_limited", f"Too many requests. Retry after {n} seconds.",
                              headers=[("Retry-After", str(n))])
        if len(req.body) > MAX_BODY_BYTES:
            raise CSError(413, "payload_too_large", "Request body exceeds 5 MB.")
        if "application/json" not in req.headers.get("content-type", "").lower():
            raise CSError(415, "unsupported_media_type", "Content-Type must be application/json.")
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CSError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
        return getattr(self, f"_{what}")(body, req.body)

    # -- endpoints ------------------------------------------------------------------------------

    def _contacts(self, body: object, raw: bytes = b"") -> Response:
        items = items_of(body, "contacts", allow_empty=True)
        if not items:  # an empty upsert: a key check, answered after the key, changes nothing
            return json_response(200, {"status": "ok", "processed": 0})
        v = _Validator()
        for i, c in enumerate(items):
            where = f"contacts[{i}]"
            if not isinstance(c, dict):
                v.add(where, "Must be an object.")
                continue
            for key in ("customer_external_id", "contact_external_id", "contact_name"):
                v.string(c, key, where, required=True)
            v.attributes(c, where)
            v.metrics(c, where)
        v.raise_if_any()
        with self._lock:
            kept = [c for c in items if c["customer_external_id"] in self.customers]
            self._append("contacts", raw, "contacts", items, kept)
            self.stats.incr("contacts_received", len(kept))
            self.stats.incr("contacts_dropped", len(items) - len(kept))
            self.stats.incr("attributes_dropped", sum(
                1 for c in kept for k in (c.get("attributes") or {}) if k not in ATTRIBUTE_CODENAMES))
        return json_response(200, {"status": "ok", "processed": len(items)})

    def _customers(self, body: object, raw: bytes = b"") -> Response:
        items = items_of(body, "customers")
        v = _Validator()
        for i, c in enumerate(items):
            where = f"customers[{i}]"
            if not isinstance(c, dict):
                v.add(where, "Must be an object.")
                continue
            v.string(c, "external_id", where, required=True)
            v.string(c, "name", where, required=True)
            v.string(c, "owner_email", where, required=False)
            v.attributes(c, where)
            v.metrics(c, where)
        v.raise_if_any()
        with self._lock:
            for c in items:
                self.customers[c["external_id"]] = {"external_id": c["external_id"], "name": c["name"],
                                                    "owner_email": c.get("owner_email")}
            self._append("customers", raw, "customers", items, items)
            self.stats.incr("customers_received", len(items))
        return json_response(200, {"status": "ok", "processed": len(items)})

    def _track(self, body: object, raw: bytes = b"") -> Response:
        if isinstance(body, dict) and body.get("trackerKey") != self.tracker_key:
            if body.get("trackerKey") is None:
                raise CSError(400, "validation_error", "The request is invalid.",
                              [{"field": "trackerKey", "message": "This field is required."}])
            raise CSError(401, "invalid_tracker_key", "Unknown trackerKey.")
        items = items_of(body, "events", allow_empty=True)
        if not items:  # an empty batch: a key check, answered after both keys, records nothing
            return json_response(200, {"status": "ok", "processed": 0})
        v = _Validator()
        for i, e in enumerate(() if _plain_events(items) else items):
            where = f"events[{i}]"
            if not isinstance(e, dict):
                v.add(where, "Must be an object.")
                continue
            v.string(e, "name", where, required=True)
            ts = e.get("timestamp")
            if ts is None:
                v.add(f"{where}.timestamp", "This field is required.")
            elif isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0:
                v.add(f"{where}.timestamp", "Must be a Unix timestamp in milliseconds (integer).")
            elif ts < 10**11:
                v.add(f"{where}.timestamp", "Must be in milliseconds, not seconds.")
            ident = e.get("identification")
            if not isinstance(ident, dict):
                v.add(f"{where}.identification", "This field is required and must be an object.")
            else:
                v.string(ident, "customer", f"{where}.identification", required=True)
                if "contact" in ident:
                    v.string(ident, "contact", f"{where}.identification", required=True)
            data = e.get("data")
            if data is not None:
                if not isinstance(data, dict):
                    v.add(f"{where}.data", "Must be an object.")
                else:
                    for part in ("customer", "contact"):
                        if part in data and not isinstance(data[part], dict):
                            v.add(f"{where}.data.{part}", "Must be an object.")
        v.raise_if_any()
        with self._lock:
            customers = self.customers
            kept = [e for e in items if e["identification"]["customer"] in customers]
            self._append("events", raw, "events", items, kept)
            self.stats.incr("events_received", len(kept))
            self.stats.incr("events_dropped", len(items) - len(kept))
        return json_response(200, {"status": "ok", "processed": len(items)})

    def _append(self, what: str, raw: bytes, key: str, items: list, kept: list) -> None:
        """Record the kept items of a request (called under the lock): its body once, and which items."""
        if not kept:
            return
        fh = self._files[what]
        offset = fh.tell()
        fh.write(raw)
        if len(kept) == len(items):
            picked = None
        else:
            ids = {id(x) for x in kept}
            picked = tuple(i for i, x in enumerate(items) if id(x) in ids)
        self._records[what].append((offset, len(raw), key, picked))

    # -- hooks ----------------------------------------------------------------------------------

    def handle_hook(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if req.method == "GET" and path == "/_sandbox/stats":
            snap = self.stats.snapshot()
            with self._lock:
                snap["customers"] = len(self.customers)
            return json_response(200, {"server": self.name, **snap})
        if req.method == "GET" and path == "/_sandbox/attributes":
            return json_response(200, list(ATTRIBUTE_CODENAMES))
        if req.method == "GET" and path == "/_sandbox/customers":
            with self._lock:
                return json_response(200, sorted(self.customers.values(), key=lambda c: c["external_id"]))
        m = re.fullmatch(r"/_sandbox/received/(events|contacts|customers)", path)
        if req.method == "GET" and m:
            return self._received(m.group(1), as_kept=req.param("as_kept") == "1")
        return json_response(404, {"error": "unknown sandbox hook", "path": req.path})

    def _received(self, what: str, *, as_kept: bool = False) -> Response:
        with self._lock:
            fh = self._files[what]
            fh.flush()
            records = list(self._records[what])
            path = fh.name

        def lines():
            with open(path, "rb") as rf:
                for offset, length, key, picked in records:
                    rf.seek(offset)
                    items = json.loads(rf.read(length).decode("utf-8"))[key]
                    for i in (range(len(items)) if picked is None else picked):
                        item = items[i]
                        if what == "contacts" and as_kept and isinstance(item.get("attributes"), dict):
                            item["attributes"] = {k: v for k, v in item["attributes"].items()
                                                  if k in ATTRIBUTE_CODENAMES}
                        yield json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n"

        return jsonl_response(lines())
