"""PostHog rows -> Customerscore payloads. Pure functions, no I/O.

One place decides what a customer id and a contact id are, so that a tracker event and the
contact it belongs to always agree.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from json.encoder import encode_basestring as _json_str  # json.dumps's own (C) string escaping, ensure_ascii=False
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cs_posthog.customerscore.client import FIELD_MAX
from cs_posthog.posthog.hogql import raw_value

if TYPE_CHECKING:
    from cs_posthog.config import Config

PERSON_ID = "person_id"


def text_or_none(value: Any) -> str | None:
    """A display value (email, name) as text, trimmed; None for nothing, booleans and JSON containers."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def clip(text: str, limit: int = FIELD_MAX) -> str:
    return text if len(text) <= limit else text[:limit]


def event_payload(
    *, name: str, timestamp_ms: int, customer: str, contact: str, email: str | None
) -> dict[str, Any]:
    """One tracker event (customerscore-api.md)."""
    contact_data: dict[str, Any] = {"email": email} if email else {}
    return {
        "name": name,
        "timestamp": timestamp_ms,
        "identification": {"customer": customer, "contact": contact},
        "data": {"customer": {}, "contact": contact_data},
    }


def event_json(*, name: str, timestamp_ms: int, customer: str, contact: str, email: str | None) -> bytes:
    """``encode(event_payload(...))`` byte for byte, without building the dict: the per-event hot path
    of a sync. UnicodeEncodeError when a string holds a lone surrogate (no UTF-8 for it)."""
    contact_data = '"email":' + _json_str(email) if email else ""
    return (
        f'{{"name":{_json_str(name)},"timestamp":{int(timestamp_ms)},"identification":{{"customer":'
        f'{_json_str(customer)},"contact":{_json_str(contact)}}},"data":{{"customer":{{}},"contact":{{{contact_data}}}}}}}'
    ).encode()


def contact_payload(*, customer: str, contact: str, name: str | None, email: str | None,
                    attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """One contact for the bulk upsert: name, else email, else the id; email and the chosen Person
    properties (``attributes``: codename -> value, see ``attribute_value``) as attributes."""
    attrs: dict[str, Any] = {}
    if email:
        attrs["email"] = email
    if attributes:
        attrs.update((k, v) for k, v in attributes.items() if v is not None and k not in attrs)
    return {
        "customer_external_id": customer,
        "contact_external_id": contact,
        "contact_name": clip(name or email or contact),
        "attributes": attrs,
    }


_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")


def attribute_value(raw: Any) -> str | int | float | bool | None:
    """A Person property (``JSONExtractRaw``'s text) as Customerscore takes an attribute value: a
    string (at most 255 characters), a number, a boolean, or ``YYYY-MM-DD`` for a date or a date and
    time (PostHog's DateTime properties are ISO text); None (not sent) for a missing or null value or
    an empty string; objects and arrays as their JSON text."""
    v = raw_value(raw)
    if v is None or isinstance(v, bool):
        return v
    if not isinstance(v, str):
        return v if isinstance(v, int | float) else None
    if isinstance(raw, str) and raw[:1] not in ('"', ""):  # a bare JSON literal: a number, an object
        if raw[0] in "{[":
            return clip(raw)
        try:
            n = json.loads(raw)
        except ValueError:
            return None
        return n if isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n) else None
    text = v.strip()
    if not text:
        return None
    m = _DATE_RE.match(text)
    if m is not None:
        return m.group(1)
    return clip(text)


def fingerprint(payload: dict[str, Any]) -> str:
    """Hash of a contact payload: equal payloads, equal fingerprints (key order irrelevant)."""
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def project_identity(cfg: Config, project_uuid: str | None) -> str:
    """What the state's cursors and fingerprints belong to: PostHog's own uuid of the project when the
    key may read it (the same project through another host name is the same project), else the host
    in its normalised form and the project id."""
    if project_uuid:
        return f"uuid:{str(project_uuid).strip().lower()}"
    return f"host:{normalised_host(cfg.posthog.host)}|{int(cfg.posthog.project_id)}"


def normalised_host(url: str) -> str:
    """``HTTPS://Example.com:443/`` -> ``https://example.com``; loopback names -> 127.0.0.1."""
    parts = urlsplit(str(url).strip())
    scheme = (parts.scheme or "https").lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if host in ("localhost", "::1", "ip6-localhost") or host.startswith("127."):
        host = "127.0.0.1"
    port = parts.port
    default = {"https": 443, "http": 80}.get(scheme)
    netloc = host if port in (None, default) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


def contacts_settings_hash(cfg: Config, project: str | None = None) -> str:
    """What makes stored fingerprints meaningful: the identification (customer property, or group
    type and property), filters, contact identity, the Customerscore account and the PostHog project
    (``project_identity``; None: the form of states written before it, host and id as configured). A
    change of any of them (``edit``) invalidates the fingerprints (invariant 9)."""
    ident = cfg.identification
    data: dict[str, Any] = {
        "customer_property": ident.property,
        "filters": [f.model_dump(mode="json") for f in cfg.all_filters()],
        "contact_id": cfg.persons.contact_id,
        "api_url": cfg.customerscore.api_url,
        "project": project if project is not None else [cfg.posthog.host, cfg.posthog.project_id],
    }
    if ident.is_group:  # (absent in Person mode: the hashes stored before groups existed stay valid)
        data["group"] = [ident.group_type_index, ident.group_property]
    raw = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def legacy_events_settings_hash(cfg: Config) -> str:
    """How states written before ``project_identity`` named their project (host and id as configured)."""
    data = {"project": [cfg.posthog.host, cfg.posthog.project_id]}
    raw = json.dumps(data, sort_keys=True)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
