"""The HogQL the sync sends. Every value and every property name goes through ``values``
placeholders (``cs_posthog.posthog.hogql.Params``); nothing the user typed is spliced into the text.

Events are read in keyset order on ingestion time ``(created_at, uuid)``. Each query is also bounded
on ``timestamp`` (PostHog stores events by timestamp and gives an API query 10 s), by the
``max_lateness`` contract: an event ingested more than ``max_lateness`` after it happened may be
missed. Keyset constants are cast explicitly (``toDateTime64(.., 6, 'UTC')``, ``toUUID(..)``) instead
of relying on ClickHouse converting a string inside a tuple comparison.

Attribution (docs/posthog-semantics.md): on PostHog Cloud ``person.properties`` on the events table
is the Person *as stamped on the event at ingestion* (persons-on-events). The sync wants the Person
as it is now (the rule the wizard counted with), so every events query runs with the modifier
``EVENTS_MODIFIERS`` (``person_id_override_properties_joined``: PostHog joins the current Person).
Properties are read as raw JSON text (``JSONExtractRaw``), so ids keep their exact text whatever
type PostHog gave the property.

Groups (``identification.kind = "group"``, ``CustomerSource``): an event's customer is its group of the
chosen type (``$group_N``: the key PostHog stamped at ingestion, ``''`` for none), or a property of
that group as the group is now (``group_N.properties``, PostHog's join to the ``groups`` table). A
Person's customer is the group of their most recent selected event in the backfill window
(``person_groups_page``); their Person row is then read by id (``persons_by_ids``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cs_posthog.config import Identification, Operator, PersonFilter
from cs_posthog.posthog.hogql import (
    JOINED_PERSONS_MODIFIERS,
    RAW_NO_ID,
    GroupRef,
    Params,
    compile_filters,
    group_condition,
    has_id,
    persons_page_query,
    quote_identifier,
    raw_ref,
)
from cs_posthog.sync.state import DEVICE_OWNER_PREFIX

# Column positions in the events query
EV_UUID, EV_EVENT, EV_TIMESTAMP, EV_CREATED, EV_PERSON, EV_CUSTOMER, EV_EMAIL, EV_CONTACT = range(8)
# ... and in the persons query (then 1/0, whether the Person matches the filters, when there are any)
P_ID, P_CUSTOMER, P_EMAIL, P_NAME, P_CONTACT = range(5)

# PostHog's persons-on-events mode that reads the current Person on the events table
EVENTS_MODIFIERS: dict[str, Any] = JOINED_PERSONS_MODIFIERS


@dataclass(frozen=True)
class CustomerSource:
    """Where an event's customer id is read on the events table: a Person property (the Person as it
    is now), or a group type (``GroupRef``): the key of the event's group of that type, or a property
    of that group (as it is now).

    ``raw``: the column is ``JSONExtractRaw``'s text (parse it with ``raw_id``); a group key is
    plain text (``''``: the event has no group of that type)."""

    person_property: str | None = None
    group: GroupRef | None = None

    @classmethod
    def of(cls, ident: Identification) -> CustomerSource:
        if ident.is_group and ident.group_type_index is not None:
            return cls(group=GroupRef(ident.group_type_index, ident.group_property))
        return cls(person_property=ident.person_property)

    @property
    def group_index(self) -> int | None:
        return None if self.group is None else self.group.index

    @property
    def group_property(self) -> str | None:
        return None if self.group is None else self.group.prop

    @property
    def raw(self) -> bool:
        return self.group is None or self.group.prop is not None

    def group_column(self) -> str:
        """``$group_N`` (quoted): the event's group key of the chosen type."""
        if self.group is None:
            raise ValueError("not a group customer")
        return quote_identifier(self.group.column)

    def ref(self, p: Params) -> str:
        """The customer id column of an events query."""
        if self.group is None:
            if self.person_property is None:
                raise ValueError("no customer property")
            return raw_ref(self.person_property, p, "person.properties")
        if self.group.prop is None:
            return self.group_column()
        return raw_ref(self.group.prop, p, f"group_{self.group.index}.properties")

    def has(self, p: Params) -> str:
        """The condition "the event may hold a customer id"."""
        if self.group is not None:
            return group_condition(self.group, p)
        return f"{self.ref(p)} NOT IN {RAW_NO_ID}"

    def lacks(self, p: Params) -> str:
        if self.group is not None and self.group.prop is None:
            return f"{self.group_column()} = ''"
        return f"{self.ref(p)} IN {RAW_NO_ID}"


def ch_time(iso: str) -> str:
    """Our canonical ISO form as ClickHouse's basic DateTime64 text (UTC, no 'T', no 'Z')."""
    return iso.replace("T", " ").rstrip("Z")


def _dt(p: Params, stem: str, iso: str) -> str:
    return f"toDateTime64({p.add(stem, ch_time(iso), reuse=False)}, 6, 'UTC')"


@dataclass(frozen=True)
class EventsWindow:
    """One page's bounds: strictly after ``after`` (or from ``created_from``), not past ``upto``,
    before ``before`` when PostHog needs a shorter time window; only the events of ``persons`` when
    given (a backfill of Persons who became attachable: their ids, and ``group_owner`` ids for groups
    that did, whose events carry them); only the events of Persons (as they are now) matching
    ``person_filters`` when given (the saved filters, with ``persons.filter_events``)."""

    events: tuple[str, ...]
    timestamp_from: str  # ISO UTC
    created_from: str | None = None  # first page of a run: created_at >= this
    after: tuple[str, str] | None = None  # later pages: (created_at, uuid) > this
    upto: tuple[str, str] | None = None  # catch-up streams: (created_at, uuid) <= this
    persons: tuple[str, ...] = ()
    before: tuple[str, str] | None = None  # a time window: (created_at <, timestamp <)
    person_filters: tuple[Any, ...] = ()  # the user's Person filters, on person.properties


def _event_where(w: EventsWindow, p: Params) -> list[str]:
    names = [p.add("e", name, reuse=False) for name in w.events]
    where = [f"event IN ({', '.join(names)})", f"timestamp >= {_dt(p, 'ts', w.timestamp_from)}"]
    if w.after is not None:
        where.append(f"(created_at, uuid) > ({_dt(p, 'ac', w.after[0])}, toUUID({p.add('au', w.after[1])}))")
    elif w.created_from is not None:
        where.append(f"created_at >= {_dt(p, 'cf', w.created_from)}")
    if w.upto is not None:
        where.append(f"(created_at, uuid) <= ({_dt(p, 'uc', w.upto[0])}, toUUID({p.add('uu', w.upto[1])}))")
    if w.before is not None:
        where.append(f"created_at < {_dt(p, 'bc', w.before[0])}")
        where.append(f"timestamp < {_dt(p, 'bt', w.before[1])}")
    if w.persons:
        where.append(_owners(w.persons, p))
    if w.person_filters:
        sql = compile_filters(w.person_filters, prefix="person.properties", values_prefix="f", params=p)[0]
        where.append("(" + sql + ")")
    return where


_GROUP_OWNER_RE = re.compile(r"^g([0-4]):")


def device_owner(distinct_id: str) -> str:
    """The id under which a distinct id whose events were skipped, then merged into an attachable
    Person, waits for its backfill in ``persons_seen`` (invariant 6e; a Person id is a UUID, a group
    owner ``g<N>:...``: never ``d:...``)."""
    return DEVICE_OWNER_PREFIX + distinct_id


def group_owner(group_index: int, key: str) -> str:
    """The id under which a group (of type ``group_index``, its ``key``) is kept beside the Persons in
    the state's ``persons_seen`` (a Person id is a UUID: never ``g0:...``)."""
    return f"g{int(group_index)}:{key}"


def _owners(ids: Sequence[str], p: Params) -> str:
    """The events of the Persons ``ids``, of the groups among them (``group_owner``) and of the
    distinct ids among them (``device_owner``)."""
    persons: list[str] = []
    devices: list[str] = []
    groups: dict[int, list[str]] = {}
    for x in ids:
        m = _GROUP_OWNER_RE.match(x)
        if m is not None:
            groups.setdefault(int(m.group(1)), []).append(p.add("g", x[m.end():], reuse=False))
        elif x.startswith(DEVICE_OWNER_PREFIX):
            devices.append(p.add("d", x[len(DEVICE_OWNER_PREFIX):], reuse=False))
        else:
            persons.append(p.add("p", x, reuse=False))
    conds = [f"person_id IN ({', '.join(persons)})"] if persons else []
    conds += [f"distinct_id IN ({', '.join(devices)})"] if devices else []
    conds += [f"{quote_identifier(f'$group_{gi}')} IN ({', '.join(keys)})" for gi, keys in sorted(groups.items())]
    return conds[0] if len(conds) == 1 else "(" + " OR ".join(conds) + ")"


def attachable_groups_page(group_index: int, group_property: str, after_key: str | None) -> tuple[str, dict[str, Any]]:
    """Group-property mode: the keys of the groups of type ``group_index`` that hold a customer id in
    ``group_property`` now, keyset on key, without LIMIT."""
    p = Params()
    conds = [f"index = {p.add('gi', int(group_index))}", has_id(group_property, p)]
    if after_key is not None:
        conds.append(f"key > {p.add('after', str(after_key))}")
    return f"SELECT key FROM groups WHERE {' AND '.join(conds)} ORDER BY key", p.values


def events_page(
    w: EventsWindow, *, customer: CustomerSource, contact_property: str | None
) -> tuple[str, dict[str, Any]]:
    """Selected events that may hold a customer id (on their Person as it is now, or their group), in
    keyset order, without LIMIT (``PostHogClient.iter_pages`` asks for page+1 rows). Run with
    ``EVENTS_MODIFIERS``."""
    p = Params()
    where = _event_where(w, p)
    where.append(customer.has(p))
    cols = [
        "uuid",
        "event",
        "timestamp",
        "created_at",
        "person_id",
        customer.ref(p),
        raw_ref("email", p, "person.properties"),
    ]
    if contact_property is not None:
        cols.append(raw_ref(contact_property, p, "person.properties"))
    sql = f"SELECT {', '.join(cols)} FROM events WHERE {' AND '.join(where)} ORDER BY created_at, uuid"
    return sql, p.values


def events_count(
    w: EventsWindow, *, customer: CustomerSource, without_customer: bool, created_to: str | None = None,
    created_after: str | None = None, rows: bool = False,
) -> tuple[str, dict[str, Any]]:
    """How many selected events in a window have (or lack) a customer id (on their current Person, or
    their group); with ``rows``, how many rows (what ``events_page`` reads: PostHog may hold one uuid
    in two). Run with ``EVENTS_MODIFIERS``."""
    p = Params()
    where = _event_where(w, p)
    where.append(customer.lacks(p) if without_customer else customer.has(p))
    if created_to is not None:
        where.append(f"created_at <= {_dt(p, 'ct', created_to)}")
    if created_after is not None:
        where.append(f"created_at > {_dt(p, 'ca', created_after)}")
    # PostHog may hold one uuid in two rows: count events, not rows (unless asked for rows)
    what = "count()" if rows else "count(DISTINCT uuid)"
    return f"SELECT {what} FROM events WHERE {' AND '.join(where)}", p.values


def skipped_ids_page(
    w: EventsWindow, *, customer: CustomerSource, created_to: str | None = None, created_after: str | None = None,
    after: tuple[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Person mode (invariant 6e): the distinct ids whose selected events in ``w`` (bounded like
    ``events_count``) lack a customer id on their Person now, each with that Person and the latest
    timestamp of those events. Keyset on ``(distinct_id, person_id)``, without LIMIT. Run
    with ``EVENTS_MODIFIERS``."""
    p = Params()
    where = _event_where(w, p)
    where.append(customer.lacks(p))
    if created_to is not None:
        where.append(f"created_at <= {_dt(p, 'ct', created_to)}")
    if created_after is not None:
        where.append(f"created_at > {_dt(p, 'ca', created_after)}")
    if after is not None:
        where.append(f"(distinct_id, person_id) > ({p.add('ad', after[0])}, toUUID({p.add('ap', after[1])}))")
    sql = (f"SELECT distinct_id, person_id, max(timestamp) FROM events WHERE {' AND '.join(where)} "
           "GROUP BY distinct_id, person_id ORDER BY distinct_id, person_id")
    return sql, p.values


# The events by which PostHog merges one Person into another (docs/posthog-ingestion.md): $identify
# merges properties.$anon_distinct_id into the event's distinct id, $create_alias and
# $merge_dangerously merge properties.alias into it.
MERGE_EVENTS = ("$identify", "$create_alias", "$merge_dangerously")
MERGE_ID_PROPERTIES = ("$anon_distinct_id", "alias")


def merge_events_page(
    *, timestamp_from: str, created_after: str | None, created_to: str, after: tuple[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The merge events (``MERGE_EVENTS``) ingested in (``created_after``, ``created_to``], keyset on
    ``(created_at, uuid)``, without LIMIT. Columns: created_at, uuid, distinct_id, then the raw JSON
    text of each of ``MERGE_ID_PROPERTIES``."""
    p = Params()
    names = ", ".join(p.add("m", name, reuse=False) for name in MERGE_EVENTS)
    where = [f"event IN ({names})", f"timestamp >= {_dt(p, 'ts', timestamp_from)}",
             f"created_at <= {_dt(p, 'ct', created_to)}"]
    if after is not None:
        where.append(f"(created_at, uuid) > ({_dt(p, 'ac', after[0])}, toUUID({p.add('au', after[1])}))")
    elif created_after is not None:
        where.append(f"created_at > {_dt(p, 'ca', created_after)}")
    cols = ["created_at", "uuid", "distinct_id", *(raw_ref(name, p) for name in MERGE_ID_PROPERTIES)]
    sql = f"SELECT {', '.join(cols)} FROM events WHERE {' AND '.join(where)} ORDER BY created_at, uuid"
    return sql, p.values


def user_filters(filters: Sequence[Any], customer_property: str | None) -> list[Any]:
    """The saved filters without the locked one (``customer property is set``), which every query here
    states itself, in its stricter form (``has_id``). Group mode (None) has no locked filter."""
    if customer_property is None:
        return list(filters)
    locked = PersonFilter(property=customer_property, operator=Operator.IS_SET)
    return [f for f in filters if f != locked]


def person_columns(contact_property: str | None, attributes: Sequence[str]) -> list[str]:
    """The Person properties a contact is made of, after ``id`` and the customer column: email, name,
    the contact id property (when it is one), the attribute properties."""
    cols = ["email", "name"]
    if contact_property is not None:
        cols.append(contact_property)
    return cols + list(attributes)


def persons_page(
    filters: Sequence[Any], *, customer_property: str, contact_property: str | None, after_id: str | None,
    attributes: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """Every Person who may hold a customer id, keyset on id, without LIMIT. Columns: id, customer,
    email, name[, contact][, attributes...], then 1/0: whether the Person matches ``filters`` (the
    saved filters; only those become contacts, while every Person with a customer id has their events
    sent)."""
    extra = user_filters(filters, customer_property)
    columns = [customer_property, *person_columns(contact_property, attributes)]
    return persons_page_query([], columns, after=after_id, flag_filters=extra, id_property=customer_property)


def person_groups_page(
    w: EventsWindow, *, customer: CustomerSource, after_id: str | None, until: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Group mode: each Person with selected events of a group of the chosen type in ``w`` (the
    backfill window; with ``until``, only its events before that timestamp), with the key of the
    group of their most recent such event and that event's timestamp; keyset on ``person_id``,
    without LIMIT. Run with ``EVENTS_MODIFIERS`` (the Person as it is now: merged Persons are one).
    A time slice of the window (``timestamp_from`` .. ``until``) is what PostHog answers within its
    time limit when the whole window is too much: the engine keeps each Person's latest over slices."""
    p = Params()
    where = _event_where(w, p)
    col = customer.group_column()
    where.append(f"{col} != ''")
    if until is not None:
        where.append(f"timestamp < {_dt(p, 'tu', until)}")
    if after_id is not None:
        where.append(f"person_id > toUUID({p.add('after', str(after_id))})")
    sql = (f"SELECT person_id, argMax({col}, timestamp), max(timestamp) FROM events WHERE {' AND '.join(where)} "
           "GROUP BY person_id ORDER BY person_id")
    return sql, p.values


def person_groups_count(w: EventsWindow, *, customer: CustomerSource) -> tuple[str, dict[str, Any]]:
    """Group mode: how many Persons ``person_groups_page`` lists (matching ``w.person_filters``)."""
    p = Params()
    where = _event_where(w, p)
    where.append(f"{customer.group_column()} != ''")
    return f"SELECT count(DISTINCT person_id) FROM events WHERE {' AND '.join(where)}", p.values


def group_customer_ids(group_index: int, group_property: str, keys: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Group mode with a group property: the raw text of that property for each of ``keys`` (groups
    of type ``group_index``, as they are now)."""
    p = Params()
    ref = raw_ref(group_property, p)
    keys_sql = ", ".join(p.add("g", k, reuse=False) for k in keys)
    sql = (f"SELECT key, {ref} FROM groups WHERE index = {p.add('gi', int(group_index))} AND key IN ({keys_sql}) "
           f"ORDER BY key LIMIT {len(keys) + 1}")
    return sql, p.values


def persons_by_ids(
    ids: Sequence[str], filters: Sequence[Any], *, contact_property: str | None, attributes: Sequence[str] = ()
) -> tuple[str, dict[str, Any]]:
    """Group mode: the Persons ``ids`` (at most a few hundred), in id order. Columns: id, email,
    name[, contact][, attributes...], then 1/0 (whether the Person matches ``filters``) when there are
    filters."""
    p = Params()
    cols = ["id", *(raw_ref(c, p) for c in person_columns(contact_property, attributes))]
    if filters:
        flag, _ = compile_filters(list(filters), params=p, values_prefix="g")
        cols.append(f"if({flag}, 1, 0)")
    id_list = ", ".join(f"toUUID({p.add('p', str(i), reuse=False)})" for i in ids)
    sql = f"SELECT {', '.join(cols)} FROM persons WHERE id IN ({id_list}) ORDER BY id LIMIT {len(ids) + 1}"
    return sql, p.values


def persons_count(filters: Sequence[Any], customer_property: str) -> tuple[str, dict[str, Any]]:
    """How many Persons who may hold a customer id match ``filters`` (the saved filters): those of
    ``persons_page`` whose flag is 1, the ones that make contacts (``contacts_read``)."""
    p = Params()
    conds = [has_id(customer_property, p)]
    extra = user_filters(filters, customer_property)
    if extra:
        conds.append(compile_filters(extra, params=p)[0])
    return f"SELECT count() FROM persons WHERE {' AND '.join(f'({c})' for c in conds)}", p.values


def _contact_conditions(filters: Sequence[Any], customer_property: str | None, contact_property: str,
                        p: Params) -> list[str]:
    extra = user_filters(filters, customer_property)
    conds = [has_id(contact_property, p)]
    if customer_property is not None:  # (group mode: every Person with the contact id)
        conds.insert(0, has_id(customer_property, p))
    if extra:
        conds.append(compile_filters(extra, params=p)[0])
    return conds


def duplicate_contact_ids(
    filters: Sequence[Any], *, customer_property: str | None, contact_property: str
) -> tuple[str, dict[str, Any]]:
    """The contact ids (raw JSON text) that more than one of the Persons to sync holds (group mode:
    of the Persons matching the filters)."""
    p = Params()
    ref = raw_ref(contact_property, p)
    conds = _contact_conditions(filters, customer_property, contact_property, p)
    sql = (f"SELECT {ref} AS c FROM persons WHERE {' AND '.join(f'({c})' for c in conds)} "
           "GROUP BY c HAVING count() > 1 ORDER BY c LIMIT 50000")
    return sql, p.values


def persons_with_contact_ids(
    filters: Sequence[Any], raw_ids: Sequence[str], *, customer_property: str | None, contact_property: str
) -> tuple[str, dict[str, Any]]:
    """id, created_at and contact id (raw) of the Persons to sync holding one of ``raw_ids``."""
    p = Params()
    ref = raw_ref(contact_property, p)
    conds = _contact_conditions(filters, customer_property, contact_property, p)
    conds.append(f"{ref} IN ({', '.join(p.add('c', v, reuse=False) for v in raw_ids)})")
    sql = (f"SELECT id, created_at, {ref} FROM persons WHERE {' AND '.join(f'({c})' for c in conds)} "
           "ORDER BY id LIMIT 50000")
    return sql, p.values
