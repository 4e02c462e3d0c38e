"""PostHog rows -> Customerscore payloads. Pure functions, no I/O.

One place decides what a customer id and a contact id are, so that a tracker event and the
contact it belongs to always agree.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring as _json_str  # json.dumps's own (C) string escaping, ensure_ascii=False
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cs_posthog.customerscore.client import FIELD_MAX

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


def contact_payload(*, customer: str, contact: str, name: str | None, email: str | None) -> dict[str, Any]:
    """One contact for the bulk upsert: name, else email, else the id; email as an attribute."""
    attributes: dict[str, Any] = {}
    if email:
        attributes["email"] = email
    return {
        "customer_external_id": customer,
        "contact_external_id": contact,
        "contact_name": clip(name or email or contact),
        "attributes": attributes,
    }


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
    """What makes stored fingerprints meaningful: customer property, filters, contact identity, the
    Customerscore account and the PostHog project (``project_identity``; None: the form of states
    written before it, host and id as configured). A change of any of them (``edit``) invalidates the
    fingerprints (invariant 9)."""
    data = {
        "customer_property": cfg.identification.property,
        "filters": [f.model_dump(mode="json") for f in cfg.all_filters()],
        "contact_id": cfg.persons.contact_id,
        "api_url": cfg.customerscore.api_url,
        "project": project if project is not None else [cfg.posthog.host, cfg.posthog.project_id],
    }
    raw = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def legacy_events_settings_hash(cfg: Config) -> str:
    """How states written before ``project_identity`` named their project (host and id as configured)."""
    data = {"project": [cfg.posthog.host, cfg.posthog.project_id]}
    raw = json.dumps(data, sort_keys=True)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
