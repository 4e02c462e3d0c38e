"""The HogQL the sync sends. Every value goes through ``values`` placeholders; property names go
through ``cs_posthog.posthog.hogql.property_ref`` (quoting of odd names is the PostHog client's).

Events are read in keyset order on ingestion time ``(created_at, uuid)``. Each query is also bounded
on ``timestamp`` (PostHog stores events by timestamp and gives an API query 10 s), by the
``max_lateness`` contract: an event ingested more than ``max_lateness`` after it happened may be
missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cs_posthog.posthog.hogql import compile_filters, persons_page_query, property_ref

# Column positions in the events query
EV_UUID, EV_EVENT, EV_TIMESTAMP, EV_CREATED, EV_PERSON, EV_CUSTOMER, EV_EMAIL, EV_CONTACT = range(8)
# ... and in the persons query
P_ID, P_CUSTOMER, P_EMAIL, P_NAME, P_CONTACT = range(5)


def ch_time(iso: str) -> str:
    """Our canonical ISO form as ClickHouse's basic DateTime64 text (UTC, no 'T', no 'Z'): the form
    a String constant compared with a DateTime64(6, 'UTC') column is parsed in."""
    return iso.replace("T", " ").rstrip("Z")


@dataclass(frozen=True)
class EventsWindow:
    """One page's bounds: strictly after ``after`` (or from ``created_from``), not past ``upto``."""

    events: tuple[str, ...]
    timestamp_from: str  # ISO UTC
    created_from: str | None = None  # first page of a run: created_at >= this
    after: tuple[str, str] | None = None  # later pages: (created_at, uuid) > this
    upto: tuple[str, str] | None = None  # catch-up streams: (created_at, uuid) <= this


def _event_values(w: EventsWindow) -> tuple[list[str], dict[str, Any]]:
    values: dict[str, Any] = {}
    names = []
    for i, name in enumerate(w.events):
        values[f"e{i}"] = name
        names.append(f"{{e{i}}}")
    where = [f"event IN ({', '.join(names)})", "timestamp >= {ts_from}"]
    values["ts_from"] = ch_time(w.timestamp_from)
    if w.after is not None:
        where.append("(created_at, uuid) > ({after_c}, {after_u})")
        values["after_c"], values["after_u"] = ch_time(w.after[0]), w.after[1]
    elif w.created_from is not None:
        where.append("created_at >= {created_from}")
        values["created_from"] = ch_time(w.created_from)
    if w.upto is not None:
        where.append("(created_at, uuid) <= ({upto_c}, {upto_u})")
        values["upto_c"], values["upto_u"] = ch_time(w.upto[0]), w.upto[1]
    return where, values


def events_page(
    w: EventsWindow, *, customer_property: str, contact_property: str | None
) -> tuple[str, dict[str, Any]]:
    """Selected events whose Person has the customer property set, in keyset order, without LIMIT
    (``PostHogClient.iter_pages`` asks for page+1 rows)."""
    where, values = _event_values(w)
    customer = property_ref(customer_property, table_prefix="person.properties")
    where.append(f"{customer} IS NOT NULL")
    cols = [
        "uuid",
        "event",
        "timestamp",
        "created_at",
        "person_id",
        customer,
        property_ref("email", table_prefix="person.properties"),
    ]
    if contact_property is not None:
        cols.append(property_ref(contact_property, table_prefix="person.properties"))
    sql = f"SELECT {', '.join(cols)} FROM events WHERE {' AND '.join(where)} ORDER BY created_at, uuid"
    return sql, values


def events_count(
    w: EventsWindow, *, customer_property: str, without_customer: bool, created_to: str | None = None
) -> tuple[str, dict[str, Any]]:
    """How many selected events in a window have (or lack) the customer property."""
    where, values = _event_values(w)
    customer = property_ref(customer_property, table_prefix="person.properties")
    where.append(f"{customer} IS NULL" if without_customer else f"{customer} IS NOT NULL")
    if created_to is not None:
        where.append("created_at <= {created_to}")
        values["created_to"] = ch_time(created_to)
    # PostHog may hold one uuid in two rows: count events, not rows
    return f"SELECT count(DISTINCT uuid) FROM events WHERE {' AND '.join(where)}", values


def persons_page(
    filters: list[Any], *, customer_property: str, contact_property: str | None, after_id: str | None
) -> tuple[str, dict[str, Any]]:
    """Persons matching the saved filters (locked condition included), keyset on id, without LIMIT.
    Columns: id, customer property, email, name[, contact property]."""
    columns = [customer_property, "email", "name"]
    if contact_property is not None:
        columns.append(contact_property)
    return persons_page_query(filters, columns, after=after_id)


def persons_count(filters: list[Any]) -> tuple[str, dict[str, Any]]:
    from cs_posthog.posthog.hogql import count_persons_query

    return count_persons_query(filters)
