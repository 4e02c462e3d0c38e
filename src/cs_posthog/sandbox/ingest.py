"""PostHog's capture endpoints and ingestion, for the sandbox: what the official SDKs send lands as PostHog
would store it. Sources and what is left out: docs/posthog-ingestion.md.

Capture (``rust/capture``: ``payload/analytics.rs``, ``v0_request.rs``, ``api.rs``, ``token.rs``):

* ``POST`` (or ``GET`` with ``data=``) on ``/batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/``, ``/track/``. The body
  is JSON, gzip (recognised by its magic bytes, whatever ``Content-Encoding`` or ``?compression=gzip-js``
  say, as capture does), a form ``data=...`` (``application/x-www-form-urlencoded``, with ``compression`` in the form or
  the query) and base64 (``compression=base64``, or a body that is base64 rather than JSON). It holds a
  batch ``{"api_key"|"token", "batch": [...], "sent_at", "historical_migration"}``, a list of events, or
  one event.
* The token is the batch's ``api_key``/``token`` or every event's own (``token``, ``api_key``, ``$token``,
  ``properties.token``). Its shape is checked (empty, over 64 characters, not ASCII, a personal API key
  ``phx_...``, a NUL: 401 "API key is not valid: <reason>"; none: 401 "event submitted without an api_key";
  two different ones: 401 "batch submitted with inconsistent api_key values"), not whether a project has
  it: capture answers 200 to any well-formed token and ingestion drops the events of a token no project
  has (counted in ``/_sandbox/stats`` as ``ingest_events_unknown_token``).
* Bad payloads: 400 "failed to decode request: ..." (gzip, base64, form), "failed to parse request: ..."
  (JSON, a wrong field type, an invalid uuid), "request holds no event", "event submitted with an empty
  event name", "event submitted without a distinct_id", "event submitted with an empty distinct_id". The
  whole request is refused: nothing of it is stored. Error bodies are plain text, as axum writes them;
  success is ``{"status": "Ok"}``.

Ingestion (plugin-server ``worker/ingestion/``: ``person-state.ts``, ``timestamps.ts``, ``utils/event.ts``
``normalizeEvent``; ``property-defs``), per event, in the order of the request:

* ``$set`` / ``$set_once`` given at the top level of an event move into its properties (normalizeEvent).
* ``timestamp`` = now + (timestamp - sent_at) when the batch has ``sent_at`` (the client's clock skew),
  unless ``properties.$ignore_sent_at``; ``offset`` (ms) = now - offset; none: now; more than 23 hours in
  the future: now. ``created_at`` is the ingestion time.
* Persons: ``$identify`` with ``$anon_distinct_id`` and ``$create_alias`` with ``alias`` merge the other
  distinct id into the event's: neither has a Person, one is created with both; one has, the other id
  joins it; two Persons, the other one is merged into the event's Person unless it is identified
  (``cannot_merge_already_identified``; ``$merge_dangerously`` merges anyway): properties of both (the
  event's Person wins a conflict), the older created_at, its distinct ids, and its events, whose
  ``person_id`` becomes the surviving Person's (PostHog's person overrides); the merged Person is gone.
  Illegal ids (``anonymous``, ``null``, ``0``, ...) never merge. Any other event makes a Person for an
  unknown distinct id (created_at = the event's timestamp). Then ``$set_once``, ``$set``, ``$unset`` of
  the event's properties update the Person. ``$process_person_profile: false`` events touch no Person:
  their ``person_id`` is the existing Person's, or one derived from the distinct id.
* ``person_properties`` of the event: its Person's properties after the event (persons on events).
* Groups (``groups.ts``, ``group-type-manager.ts``): ``$groupidentify`` (``$group_type``, ``$group_key``,
  ``$group_set``) creates the group (created_at = the event's timestamp) or updates its properties; a
  group type not seen before takes the lowest free index, and none when all 5 are taken;
  ``properties.$groups`` ``{type: key}`` on any event fills its ``$group_N`` (columns and properties).
  Group property definitions are typed from the first value, as the others.
* Definitions: an event definition per name (created, ``last_seen_at`` = ingestion time); event and person
  property definitions typed from the first value seen (``data.infer_property_type``).
* A batch sent twice (an SDK retrying after a lost answer) is stored twice, same uuids: PostHog does not
  deduplicate there.

Writes hold the project pool's ``write_lock`` (as the ``/_sandbox`` hooks do), one transaction per request.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import random
import re
import sqlite3
import threading
import uuid as uuid_mod
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from cs_posthog.sandbox import data as D
from cs_posthog.sandbox.server import DBPool, Request, Response, json_response

# the capture routes (``router.rs``): path without its trailing slash -> the label stats count it under
CAPTURE_PATHS = {"/batch": "/batch/", "/capture": "/capture/", "/e": "/e/", "/i/v0/e": "/i/v0/e/",
                 "/track": "/track/"}
GZIP_MAGIC = b"\x1f\x8b\x08"
FUTURE_CUTOFF_US = 23 * D.HOUR_US  # FUTURE_EVENT_HOURS_CUTOFF: later timestamps become "now"
MAX_DISTINCT_ID = 200  # capture truncates longer distinct ids
# person-state.ts: ids that SDKs send by mistake, never merged
ILLEGAL_IDS_ANY_CASE = {"anonymous", "guest", "distinctid", "distinct_id", "id", "not_authenticated", "email",
                        "undefined", "true", "false"}
ILLEGAL_IDS = {"[object Object]", "NaN", "None", "none", "null", "0", "undefined"}
MAX_GROUP_TYPES = 5  # group_type_index 0..4: events have $group_0..$group_4
INGEST_FAULTS = ("503", "drop_after_store")


class CaptureError(Exception):
    """What capture refuses a request with: a status and axum's plain-text body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return Response(self.status, self.message.encode("utf-8"), content_type="text/plain; charset=utf-8")


def decode_error(detail: str) -> CaptureError:
    return CaptureError(400, f"failed to decode request: {detail}")


def parse_error(detail: str) -> CaptureError:
    return CaptureError(400, f"failed to parse request: {detail}")


def is_capture_path(path: str) -> bool:
    return path.rstrip("/") in CAPTURE_PATHS


def capture_label(path: str) -> str:
    return CAPTURE_PATHS.get(path.rstrip("/"), path)


# ---------------------------------------------------------------------------------------------
# Decoding a request
# ---------------------------------------------------------------------------------------------


def _b64(text: str) -> bytes:
    cleaned = text.strip().replace(" ", "+")  # a form's '+' read as a space
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise decode_error(f"invalid base64: {exc}") from None


def _gunzip(raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise decode_error(f"invalid gzip data: {exc}") from None


_BASE64_TEXT = re.compile(r"^[A-Za-z0-9+/= \r\n]+$")


def decode_payload(req: Request) -> object:
    """The JSON value a capture request carries (``extract_payload_bytes`` + ``RawRequest::from_bytes``)."""
    body = req.body
    compression = (req.param("compression") or "").strip().lower()
    ctype = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if req.method == "GET" or ctype == "application/x-www-form-urlencoded":
        if req.method == "GET":
            fields = req.query
        else:
            try:
                fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError as exc:
                raise decode_error(f"form is not UTF-8: {exc}") from None
        data = (fields.get("data") or [""])[-1]
        if not data:
            raise decode_error("no data field in the form or query")
        compression = ((fields.get("compression") or [""])[-1].strip().lower() or compression)
        body = data.encode("utf-8")
    if compression == "lz64":
        raise decode_error("lz64 compression is not supported by the sandbox (posthog-js sends gzip-js)")
    if compression in ("gzip", "gzip-js") and not body.startswith(GZIP_MAGIC) and _BASE64_TEXT.match(
            body[:64].decode("latin-1")):
        body = _b64(body.decode("latin-1"))  # a form's gzip data arrives base64-encoded
    if body.startswith(GZIP_MAGIC):  # capture peeks at the bytes rather than trust a label (v0_request.rs)
        body = _gunzip(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise decode_error(f"payload is not UTF-8: {exc}") from None
    stripped = text.lstrip()
    if compression == "base64" or (stripped and stripped[0] not in "{[" and _BASE64_TEXT.match(stripped)):
        decoded = _b64(stripped)
        if decoded.startswith(GZIP_MAGIC):
            decoded = _gunzip(decoded)
        try:
            text = decoded.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise decode_error(f"base64 payload is not UTF-8: {exc}") from None
    if not text.strip():
        raise CaptureError(400, "request holds no event")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise parse_error(str(exc)) from None


@dataclass
class CaptureBatch:
    events: list[dict]
    token: str | None  # the batch's own token (None: each event's)
    sent_at: str | None
    historical_migration: bool = False


def split_payload(payload: object) -> CaptureBatch:
    """``RawRequest``: a batch object, a list of events, or one event."""
    if isinstance(payload, list):
        batch = CaptureBatch(payload, None, None)
    elif isinstance(payload, dict) and "batch" in payload:
        token = payload.get("api_key", payload.get("token"))
        if token is not None and not isinstance(token, str):
            raise parse_error("api_key: invalid type, expected a string")
        sent_at = payload.get("sent_at")
        if sent_at is not None and not isinstance(sent_at, str):
            raise parse_error("sent_at: invalid type, expected a string")
        if not isinstance(payload["batch"], list):
            raise parse_error("batch: invalid type, expected a sequence")
        batch = CaptureBatch(payload["batch"], token, sent_at, bool(payload.get("historical_migration")))
    elif isinstance(payload, dict):
        batch = CaptureBatch([payload], None, None)
    else:
        raise parse_error("data did not match any variant of untagged enum RawRequest")
    if not batch.events:
        raise CaptureError(400, "request holds no event")
    for i, ev in enumerate(batch.events):
        if not isinstance(ev, dict):
            raise parse_error(f"event {i}: invalid type, expected a map")
        props = ev.get("properties")
        if props is not None and not isinstance(props, dict):
            raise parse_error(f"event {i}: properties: invalid type, expected a map")
        u = ev.get("uuid")
        if u is not None:
            try:
                uuid_mod.UUID(str(u))
            except ValueError:
                raise parse_error(f"event {i}: uuid: invalid UUID {str(u)[:60]!r}") from None
    return batch


def _event_token(ev: dict) -> object:
    props = ev.get("properties") or {}
    for value in (ev.get("token"), ev.get("api_key"), ev.get("$token"), props.get("token"), props.get("$token")):
        if value is not None:
            return value
    return None


def validate_token(token: object) -> str:
    """``token.rs`` validate_token: the shape only."""
    if not isinstance(token, str):
        raise CaptureError(401, "event submitted without an api_key")
    token = token.strip()
    reason = None
    if not token:
        reason = "empty"
    elif len(token) > 64:
        reason = "too_long"
    elif not token.isascii():
        reason = "not_ascii"
    elif token.startswith("phx_"):
        reason = "personal_api_key"
    elif "\0" in token:
        reason = "null_byte"
    if reason:
        raise CaptureError(401, f"API key is not valid: {reason}")
    return token


def batch_token(batch: CaptureBatch) -> str:
    """``extract_and_verify_token``: the batch's token, else the one token all its events carry."""
    if batch.token is not None:
        return validate_token(batch.token)
    tokens = [_event_token(ev) for ev in batch.events]
    if any(t is None for t in tokens):
        raise CaptureError(401, "event submitted without an api_key")
    if len({str(t) for t in tokens}) > 1:
        raise CaptureError(401, "batch submitted with inconsistent api_key values")
    return validate_token(tokens[0])


def event_distinct_id(ev: dict) -> str:
    props = ev.get("properties") or {}
    for value in (ev.get("distinct_id"), ev.get("$distinct_id"), props.get("distinct_id"), props.get("$distinct_id")):
        if value is None:
            continue
        if isinstance(value, str):
            if not value:
                raise CaptureError(400, "event submitted with an empty distinct_id")
            return value[:MAX_DISTINCT_ID]
        if isinstance(value, dict | list):
            raise parse_error("distinct_id: invalid type")
        text = json.dumps(value)  # numbers and booleans as their JSON text
        return text[:MAX_DISTINCT_ID]
    raise CaptureError(400, "event submitted without a distinct_id")


def validate_events(batch: CaptureBatch) -> None:
    for ev in batch.events:
        name = ev.get("event")
        if not isinstance(name, str) or not name:
            raise CaptureError(400, "event submitted with an empty event name")
        event_distinct_id(ev)


# ---------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------


def _time_or_none(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return D.parse_time(value)
    except (ValueError, TypeError, OverflowError):
        return None


def event_timestamp(ev: dict, sent_at_us: int | None, now: int) -> int:
    """``parseEventTimestamp``: the client's clock skew taken out with ``sent_at``; ``offset``; future cut."""
    props = ev.get("properties") or {}
    if props.get("$ignore_sent_at") is True:
        sent_at_us = None
    ts = now
    raw = _time_or_none(ev.get("timestamp"))
    if raw is not None:
        ts = now + (raw - sent_at_us) if sent_at_us is not None else raw
    offset = ev.get("offset")
    if isinstance(offset, int | float) and not isinstance(offset, bool):
        ts = now - int(offset * 1000)
    if ts - now > FUTURE_CUTOFF_US:
        ts = now
    if not -62_135_596_800 * D.US <= ts <= 253_402_300_799 * D.US:  # outside years 1..9999
        ts = 0
    return ts


# ---------------------------------------------------------------------------------------------
# Persons and definitions
# ---------------------------------------------------------------------------------------------


def is_illegal_id(distinct_id: str) -> bool:
    text = distinct_id.strip()
    return text.lower() in ILLEGAL_IDS_ANY_CASE or text in ILLEGAL_IDS


def group_key(value: object) -> str | None:
    """A group key as PostHog stores it (text), None for what is no key."""
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class _Person:
    id: str
    created_at: str
    properties: dict
    identified: bool
    dirty: bool = False


def apply_updates(props: dict, event_props: dict) -> bool:
    """``applyEventPropertyUpdates``: $set_once, then $set, then $unset; whether anything changed."""
    changed = False
    set_once = event_props.get("$set_once")
    if isinstance(set_once, dict):
        for key, value in set_once.items():
            if key not in props:
                props[key] = value
                changed = True
    set_ = event_props.get("$set")
    if isinstance(set_, dict):
        for key, value in set_.items():
            if key not in props or props[key] != value or type(props[key]) is not type(value):
                props[key] = value
                changed = True
    unset = event_props.get("$unset")
    keys = list(unset) if isinstance(unset, list | dict) else []
    for key in keys:
        if isinstance(key, str) and key in props:
            del props[key]
            changed = True
    return changed


@dataclass
class _Definitions:
    """What the project's definitions already hold, so that a batch writes only what is new."""

    event_last_seen: dict[str, str] = field(default_factory=dict)
    property_types: dict[tuple[str, str], str | None] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> _Definitions:
        defs = cls()
        for name, last in conn.execute("SELECT name, last_seen_at FROM sbx_event_definitions"):
            defs.event_last_seen[name] = last
        for kind, name, ptype in conn.execute("SELECT type, name, property_type FROM sbx_property_definitions"):
            defs.property_types[(kind, name)] = ptype
        for index, name, ptype in conn.execute("SELECT group_type_index, name, property_type "
                                               "FROM sbx_group_property_definitions"):
            defs.property_types[(f"group_{index}", name)] = ptype
        return defs


@dataclass
class IngestResult:
    stored: int = 0
    persons_created: int = 0
    persons_merged: int = 0
    merges_refused: int = 0


class ProjectIngestion:
    """Ingestion into one project's database. ``ingest`` holds the pool's write lock for a whole request."""

    def __init__(self, pool: DBPool, team_id: int, rng: random.Random) -> None:
        self.pool = pool
        self.team_id = team_id
        self.rng = rng
        self._defs: _Definitions | None = None
        self._person_index = False

    # -- persons ------------------------------------------------------------------------------

    def _person_of(self, conn: sqlite3.Connection, distinct_id: str) -> _Person | None:
        row = conn.execute("SELECT p.id, p.created_at, p.properties, p.is_identified FROM person_distinct_ids d "
                           "JOIN persons p ON p.id = d.person_id WHERE d.distinct_id = ?", (distinct_id,)).fetchone()
        if row is None:
            return None
        return _Person(row[0], row[1], json.loads(row[2] or "{}"), bool(row[3]))

    def _create_person(self, conn: sqlite3.Connection, distinct_ids: list[str], ts: int, props: dict,
                       identified: bool, result: IngestResult) -> _Person:
        created = D.fmt_db(ts - ts % 1000)  # persons.created_at is DateTime64(3)
        person = _Person(D.uuid4_from(self.rng), created, props, identified)
        conn.execute("INSERT INTO persons(id, created_at, properties, is_identified) VALUES (?, ?, ?, ?)",
                     (person.id, created, D.dump_json(props), int(identified)))
        for did in distinct_ids:
            conn.execute("INSERT OR REPLACE INTO person_distinct_ids(distinct_id, person_id) VALUES (?, ?)",
                         (did, person.id))
        result.persons_created += 1
        return person

    def _save(self, conn: sqlite3.Connection, person: _Person) -> None:
        conn.execute("UPDATE persons SET created_at = ?, properties = ?, is_identified = ? WHERE id = ?",
                     (person.created_at, D.dump_json(person.properties), int(person.identified), person.id))
        person.dirty = False

    def _merge(self, conn: sqlite3.Connection, other_id: str, into_id: str, ts: int, event_props: dict,
               force: bool, result: IngestResult) -> None:
        """``merge`` / ``mergeWithoutValidation`` / ``mergePeople`` of person-state.ts."""
        if other_id == into_id or is_illegal_id(other_id) or is_illegal_id(into_id):
            return
        other = self._person_of(conn, other_id)
        into = self._person_of(conn, into_id)
        if other is None and into is None:
            props: dict = {}
            apply_updates(props, event_props)
            self._create_person(conn, [into_id, other_id], ts, props, True, result)
            return
        if into is None:
            assert other is not None
            conn.execute("INSERT INTO person_distinct_ids(distinct_id, person_id) VALUES (?, ?)", (into_id, other.id))
            other.identified = True
            self._save(conn, other)
            return
        if other is None:
            conn.execute("INSERT INTO person_distinct_ids(distinct_id, person_id) VALUES (?, ?)", (other_id, into.id))
            into.identified = True
            self._save(conn, into)
            return
        if other.id == into.id:
            if not into.identified:
                into.identified = True
                self._save(conn, into)
            return
        if other.identified and not force:  # cannot_merge_already_identified
            result.merges_refused += 1
            if not into.identified:
                into.identified = True
                self._save(conn, into)
            return
        into.properties = {**other.properties, **into.properties}
        apply_updates(into.properties, event_props)
        into.created_at = min(into.created_at, other.created_at)
        into.identified = True
        self._save(conn, into)
        conn.execute("UPDATE person_distinct_ids SET person_id = ? WHERE person_id = ?", (into.id, other.id))
        if not self._person_index:  # the first merge: the override below then reads an index
            conn.execute("CREATE INDEX IF NOT EXISTS sbx_events_person ON events(person_id)")
            self._person_index = True
        # PostHog's person overrides: the merged Person's events read as the surviving Person's
        conn.execute("UPDATE events SET person_id = ? WHERE person_id = ?", (into.id, other.id))
        conn.execute("DELETE FROM persons WHERE id = ?", (other.id,))
        result.persons_merged += 1

    def _personless_id(self, distinct_id: str) -> str:
        """``uuidFromDistinctId``: the person id of a personless event whose distinct id has no Person."""
        return str(uuid_mod.uuid5(uuid_mod.NAMESPACE_URL, f"posthog:{self.team_id}:{distinct_id}"))

    # -- groups --------------------------------------------------------------------------------

    def _group_index(self, conn: sqlite3.Connection, group_type: str) -> int | None:
        """``GroupTypeManager.fetchGroupTypeIndex``: the type's index, a new type the lowest free one (None
        when the 5 are taken)."""
        row = conn.execute("SELECT group_type_index FROM group_type_mapping WHERE group_type = ?",
                           (group_type,)).fetchone()
        if row is not None:
            return int(row[0])
        used = {r[0] for r in conn.execute("SELECT group_type_index FROM group_type_mapping")}
        free = [i for i in range(MAX_GROUP_TYPES) if i not in used]
        if not free:
            return None
        conn.execute("INSERT INTO group_type_mapping(group_type_index, group_type, name_singular, name_plural) "
                     "VALUES (?, ?, NULL, NULL)", (free[0], group_type))
        return free[0]

    def _group_identify(self, conn: sqlite3.Connection, defs: _Definitions, props: dict, ts: int) -> None:
        """``upsertGroup``: the group of ``$group_type`` / ``$group_key`` with ``$group_set`` on top."""
        group_type, key = props.get("$group_type"), group_key(props.get("$group_key"))
        if not isinstance(group_type, str) or not group_type or key is None:
            return
        index = self._group_index(conn, group_type)
        if index is None:
            return
        updates = props.get("$group_set")
        updates = updates if isinstance(updates, dict) else {}
        created = D.fmt_db(ts - ts % 1000)
        row = conn.execute("SELECT created_at, properties FROM groups WHERE group_type_index = ? AND group_key = ?",
                           (index, key)).fetchone()
        if row is None:
            conn.execute("INSERT INTO groups(group_type_index, group_key, created_at, properties) VALUES (?, ?, ?, ?)",
                         (index, key, created, D.dump_json(updates)))
        else:
            old = json.loads(row[1] or "{}")
            merged = {**old, **updates}
            if merged != old or created < row[0]:
                conn.execute("UPDATE groups SET created_at = ?, properties = ? WHERE group_type_index = ? AND "
                             "group_key = ?", (min(created, row[0]), D.dump_json(merged), index, key))
        self._define(conn, defs, f"group_{index}", updates)

    def _group_columns(self, conn: sqlite3.Connection, props: dict) -> dict[str, str]:
        """``addGroupProperties``: ``$groups`` {type: key} -> ``$group_N`` (also written into the properties)."""
        groups = props.get("$groups")
        out: dict[str, str] = {}
        if not isinstance(groups, dict):
            return out
        for group_type, raw in groups.items():
            key = group_key(raw)
            if not isinstance(group_type, str) or not group_type or key is None:
                continue
            index = self._group_index(conn, group_type)
            if index is not None:
                out[f"$group_{index}"] = key
        props.update(out)
        return out

    # -- definitions ---------------------------------------------------------------------------

    def _define(self, conn: sqlite3.Connection, defs: _Definitions, kind: str, items: dict) -> None:
        """Property definitions of ``kind`` (``event``, ``person``, ``group_N``) for names not typed yet."""
        for name, value in items.items():
            if not isinstance(name, str) or name in D.HIDDEN_PROPERTY_DEFINITIONS:
                continue
            key = (kind, name)
            known = key in defs.property_types
            if known and defs.property_types[key] is not None:
                continue
            ptype = D.infer_property_type(value)
            if kind.startswith("group_"):
                index = int(kind[6:])
                if not known:
                    conn.execute("INSERT OR IGNORE INTO sbx_group_property_definitions(group_type_index, name, id, "
                                 "property_type) VALUES (?, ?, ?, ?)", (index, name, D.uuid4_from(self.rng), ptype))
                elif ptype is not None:
                    conn.execute("UPDATE sbx_group_property_definitions SET property_type = ? WHERE "
                                 "group_type_index = ? AND name = ? AND property_type IS NULL", (ptype, index, name))
            elif not known:
                conn.execute("INSERT OR IGNORE INTO sbx_property_definitions(type, name, id, property_type) "
                             "VALUES (?, ?, ?, ?)", (kind, name, D.uuid4_from(self.rng), ptype))
            elif ptype is not None:
                conn.execute("UPDATE sbx_property_definitions SET property_type = ? WHERE type = ? AND name = ? "
                             "AND property_type IS NULL", (ptype, kind, name))
            if not known or ptype is not None:
                defs.property_types[key] = ptype

    def _define_event(self, conn: sqlite3.Connection, defs: _Definitions, name: str, created: str) -> None:
        last = defs.event_last_seen.get(name)
        if last is None:
            conn.execute("INSERT OR IGNORE INTO sbx_event_definitions(name, id, created_at, last_seen_at) "
                         "VALUES (?, ?, ?, ?)", (name, D.uuid4_from(self.rng), created, created))
            conn.execute("UPDATE sbx_event_definitions SET last_seen_at = max(last_seen_at, ?) WHERE name = ?",
                         (created, name))
            defs.event_last_seen[name] = created
        elif created > last:
            conn.execute("UPDATE sbx_event_definitions SET last_seen_at = max(last_seen_at, ?) WHERE name = ?",
                         (created, name))
            defs.event_last_seen[name] = created

    # -- events --------------------------------------------------------------------------------

    def ingest(self, events: list[dict], *, sent_at_us: int | None, now: int) -> IngestResult:
        """Store ``events`` (validated by ``validate_events``) as ingestion would, in one transaction."""
        result = IngestResult()
        created = D.fmt_db(now)
        with self.pool.write_lock, self.pool.conn() as conn:
            try:
                if self._defs is None:
                    self._defs = _Definitions.load(conn)
                defs = self._defs
                for ev in events:
                    self._ingest_one(conn, defs, ev, sent_at_us, now, created, result)
                conn.commit()
            except BaseException:
                conn.rollback()
                self._defs = None  # what it cached of the rolled-back transaction is void
                raise
        return result

    def _ingest_one(self, conn: sqlite3.Connection, defs: _Definitions, ev: dict, sent_at_us: int | None, now: int,
                    created: str, result: IngestResult) -> None:
        name = str(ev["event"])
        distinct_id = event_distinct_id(ev)
        props: dict[str, Any] = dict(ev.get("properties") or {})
        for key in ("$set", "$set_once"):  # normalizeEvent: top-level $set / $set_once join the properties
            top = ev.get(key)
            if isinstance(top, dict) and top:
                inner = props.get(key)
                props[key] = {**(inner if isinstance(inner, dict) else {}), **top}
        ts = event_timestamp(ev, sent_at_us, now)
        u = str(uuid_mod.UUID(str(ev["uuid"]))) if ev.get("uuid") is not None else D.uuid7_from(self.rng, ts)
        if props.get("$process_person_profile") is False:
            person = self._person_of(conn, distinct_id)
            person_id = person.id if person else self._personless_id(distinct_id)
            stamped = D.dump_json(person.properties) if person else "{}"
        else:
            if name == "$identify" and props.get("$anon_distinct_id") not in (None, ""):
                self._merge(conn, str(props["$anon_distinct_id"]), distinct_id, ts, props, False, result)
            elif name in ("$create_alias", "$merge_dangerously") and props.get("alias") not in (None, ""):
                self._merge(conn, str(props["alias"]), distinct_id, ts, props, name == "$merge_dangerously", result)
            person = self._person_of(conn, distinct_id)
            if person is None:
                start: dict = {}
                apply_updates(start, props)
                person = self._create_person(conn, [distinct_id], ts, start, False, result)
            elif apply_updates(person.properties, props):
                self._save(conn, person)
            person_id = person.id
            stamped = D.dump_json(person.properties)
            for key in ("$set", "$set_once"):
                if isinstance(props.get(key), dict):
                    self._define(conn, defs, "person", props[key])
        if name == "$groupidentify":
            self._group_identify(conn, defs, props, ts)
        groups = self._group_columns(conn, props)
        columns = ["uuid", "event", "timestamp", "created_at", "distinct_id", "person_id", "properties",
                   "person_properties", *(f'"{c}"' for c in groups)]
        values = [u, name, D.fmt_db(ts), created, distinct_id, person_id, D.dump_json(props), stamped,
                  *groups.values()]
        conn.execute(f"INSERT INTO events({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values)
        self._define_event(conn, defs, name, created)
        self._define(conn, defs, "event", props)
        result.stored += 1


# ---------------------------------------------------------------------------------------------
# The endpoint
# ---------------------------------------------------------------------------------------------


class Capture:
    """The capture endpoints of one sandbox PostHog region: tokens -> projects, faults, stats."""

    def __init__(self, projects: dict[str, tuple[DBPool, int]], stats: Any, seed: int) -> None:
        # one random stream per project: each is used under its own project's write lock
        self.projects = {token: ProjectIngestion(pool, team_id, random.Random(f"{seed}:ingest:{team_id}"))
                         for token, (pool, team_id) in projects.items() if pool is not None}
        self.stats = stats
        self._faults: list[str] = []
        self._faults_lock = threading.Lock()
        for name in ("ingest_requests", "ingest_events_stored", "ingest_events_unknown_token", "ingest_persons_created",
                     "ingest_persons_merged", "ingest_merges_refused"):
            stats.extra[name] = 0

    def set_faults(self, faults: object) -> None:
        """The next capture requests fail, one per entry: ``503`` (refused before anything is stored, as
        capture does when Kafka is down) or ``drop_after_store`` (stored, then the connection dropped
        without an answer: the SDK retries and the batch is stored twice)."""
        if not isinstance(faults, list) or not all(f in INGEST_FAULTS for f in faults):
            raise ValueError(f"ingest_faults must be a list of {', '.join(INGEST_FAULTS)}")
        with self._faults_lock:
            self._faults = list(faults)

    def pending_faults(self) -> list[str]:
        with self._faults_lock:
            return list(self._faults)

    def _next_fault(self) -> str | None:
        with self._faults_lock:
            return self._faults.pop(0) if self._faults else None

    def handle(self, req: Request) -> Response:
        cors = [("Access-Control-Allow-Origin", req.headers.get("origin") or "*"),
                ("Access-Control-Allow-Credentials", "true")]
        if req.method == "OPTIONS":
            return Response(200, b"", headers=[*cors, ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                                              ("Access-Control-Allow-Headers", "*")])
        if req.method not in ("GET", "POST"):
            return Response(405, b"", headers=cors)
        self.stats.incr("ingest_requests")
        try:
            batch = split_payload(decode_payload(req))
            token = batch_token(batch)
            validate_events(batch)
        except CaptureError as exc:
            resp = exc.response()
            resp.headers.extend(cors)
            return resp
        fault = self._next_fault()
        if fault == "503":
            resp = CaptureError(503, "transient error, please retry").response()
            resp.headers.extend(cors)
            return resp
        project = self.projects.get(token)
        if project is None:  # capture does not know the teams: ingestion drops what no project owns
            self.stats.incr("ingest_events_unknown_token", len(batch.events))
        else:
            now = D.now_us()
            sent_at = _time_or_none(batch.sent_at)
            if sent_at is None:
                sent_ms = req.param("_")  # posthog-js: sent_at in ms in the query
                if sent_ms and sent_ms.isdigit() and int(sent_ms) > 1_577_836_800_000:  # after 2020
                    sent_at = int(sent_ms) * 1000
            result = project.ingest(batch.events, sent_at_us=sent_at, now=now)
            self.stats.incr("ingest_events_stored", result.stored)
            self.stats.incr("ingest_persons_created", result.persons_created)
            self.stats.incr("ingest_persons_merged", result.persons_merged)
            self.stats.incr("ingest_merges_refused", result.merges_refused)
        if fault == "drop_after_store":
            return Response(200, b"", action="drop")
        return json_response(200, {"status": "Ok"}, headers=cors)
