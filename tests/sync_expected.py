"""What Customerscore should receive, computed in plain Python from the sandbox's raw dumps.

Deliberately independent of ``cs_posthog.sync``: the rules are written out again here from the
issue and ``customerscore-api.md`` (selected events whose Person has the customer property set,
deduplicated by uuid, from the backfill start, and, when the filters choose the events too
(``persons.filter_events``), only those whose Person matches them now; every Person matching the
filters becomes a contact;
customers that do not exist in Customerscore are dropped there silently).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from cs_posthog.sandbox.runner import get_json, get_jsonl


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


def ms(ts: str) -> int:
    d = parse(ts) - datetime(1970, 1, 1, tzinfo=UTC)
    return d.days * 86_400_000 + d.seconds * 1000 + d.microseconds // 1000


def customer_id(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def matches(props: dict, flt: dict) -> bool:
    """PostHog's semantics: missing and JSON null are NULL; = never matches NULL, != always does."""
    v = props.get(flt["property"])
    op = flt["operator"]
    if op == "is_set":
        return v is not None
    if op == "is_not_set":
        return v is None
    if v is None:
        return op == "not_equals"
    sv = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return (sv == flt["value"]) if op == "equals" else (sv != flt["value"])


class Sandbox:
    """The dumps and the received items of one running sandbox."""

    def __init__(self, info: dict) -> None:
        self.info = info
        self.ph = info[f"posthog_{info['region']}"]
        self.cs = info["customerscore"]

    def persons(self) -> dict[str, dict]:
        return {p["id"]: p for p in get_jsonl(self.ph + "/_sandbox/dump/persons")}

    def events(self) -> list[dict]:
        return list(get_jsonl(self.ph + "/_sandbox/dump/events"))

    def groups(self) -> dict[tuple[int, str], dict]:
        """(group type index, key) -> the group's properties, as they are now."""
        return {(g["index"], g["key"]): g["properties"] for g in get_jsonl(self.ph + "/_sandbox/dump/groups")}

    def customers(self) -> set[str]:
        return {c["external_id"] for c in get_json(self.cs + "/_sandbox/customers")}

    def received(self, what: str) -> list[dict]:
        return list(get_jsonl(self.cs + f"/_sandbox/received/{what}"))

    def stats(self) -> dict:
        return get_json(self.cs + "/_sandbox/stats")


def expected_events(
    sb: Sandbox, *, selected: list[str], since: datetime, customer_property: str | None = None,
    existing_only: bool = True, filters: list[dict] | None = None, group: tuple[int, str | None] | None = None,
) -> tuple[list[dict], int]:
    """(payloads Customerscore keeps, number of selected events skipped for lack of a customer id).
    ``filters``: only the events of Persons matching them (as they are now). The customer: the
    Person's ``customer_property`` (as the Person is now), or with ``group`` = (index, property or
    None) the event's group of that type (``$group_N``, stamped at ingestion), by key or by the
    group's property as the group is now (issue 14)."""
    persons = sb.persons()
    groups = sb.groups() if group is not None else {}
    customers = sb.customers()
    out: list[dict] = []
    skipped = 0
    seen: set[str] = set()
    for e in sb.events():
        if e["uuid"] in seen:
            continue
        seen.add(e["uuid"])
        if e["event"] not in selected or parse(e["timestamp"]) < since:
            continue
        person = persons.get(e["person_id"])
        props = person["properties"] if person else {}
        if filters is not None and not all(matches(props, f) for f in filters):
            continue  # outside the filters: not read at all, so neither sent nor skipped
        if group is not None:
            cust = group_customer(groups, group[0], e.get(f"$group_{group[0]}") or "", group[1])
        else:
            assert customer_property is not None
            cust = customer_id(props.get(customer_property))
        if cust is None:
            skipped += 1
            continue
        if existing_only and cust not in customers:
            continue
        email = props.get("email")
        out.append(
            {
                "name": e["event"],
                "timestamp": ms(e["timestamp"]),
                "identification": {"customer": cust, "contact": e["person_id"]},
                "data": {"customer": {}, "contact": {"email": email} if email else {}},
            }
        )
    return out, skipped


def attribute(value: Any) -> Any:
    """A Person property as a contact attribute (issue 14): strings trimmed (empty: left out), ISO dates
    and date-times as YYYY-MM-DD, numbers and booleans as they are, null and missing left out."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)[:255]
    text = str(value).strip()
    if len(text) >= 10 and text[4] == "-" and text[7] == "-" and text[:4].isdigit():
        try:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
            return text[:10]
        except ValueError:
            pass
    return text[:255] or None


def expected_contacts(sb: Sandbox, *, customer_property: str, filters: list[dict], existing_only: bool = True,
                      attributes: dict[str, str] | None = None) -> list[dict]:
    """``attributes``: codename -> Person property, sent besides email."""
    customers = sb.customers()
    rules = [{"property": customer_property, "operator": "is_set"}, *filters]
    out = []
    for p in sb.persons().values():
        props = p["properties"]
        if not all(matches(props, r) for r in rules):
            continue
        cust = customer_id(props.get(customer_property))
        if cust is None or (existing_only and cust not in customers):
            continue
        email = props.get("email") or None
        name = props.get("name") or None
        attrs = {"email": email} if email else {}
        for code, prop in (attributes or {}).items():
            v = attribute(props.get(prop))
            if v is not None and code not in attrs:
                attrs[code] = v
        out.append(
            {
                "customer_external_id": cust,
                "contact_external_id": p["id"],
                "contact_name": (name or email or p["id"])[:255],
                "attributes": attrs,
            }
        )
    return out


def bag(items: list[dict]) -> Counter:
    """A multiset of payloads (order-free, duplicates counted)."""
    return Counter(json.dumps(i, sort_keys=True, ensure_ascii=False) for i in items)


def group_customer(sb_groups: dict[tuple[int, str], dict], index: int, key: str, prop: str | None) -> str | None:
    """Group mode: the customer id of group ``key`` of type ``index``: the key, or its property ``prop``."""
    if not key:
        return None
    if prop is None:
        return key.strip() or None
    props = sb_groups.get((index, key))
    return customer_id(props.get(prop)) if props is not None else None


def expected_group_events(
    sb: Sandbox, *, selected: list[str], since: datetime, index: int, prop: str | None = None,
    existing_only: bool = True, filters: list[dict] | None = None,
) -> tuple[list[dict], int]:
    """Group mode (issue 14): ``expected_events`` with the customer from the event's group of type
    ``index``, by key or by the group's property ``prop``."""
    return expected_events(sb, selected=selected, since=since, existing_only=existing_only, filters=filters,
                           group=(index, prop))


def expected_group_contacts(
    sb: Sandbox, *, selected: list[str], since: datetime, index: int, prop: str | None = None,
    filters: list[dict], existing_only: bool = True,
) -> list[dict]:
    """Group mode: a Person belongs to the group of their most recent selected event since ``since``
    that has a group of type ``index``; the Person filters apply."""
    persons = sb.persons()
    groups = sb.groups()
    customers = sb.customers()
    latest: dict[str, tuple[datetime, str]] = {}
    for e in sb.events():
        key = e.get(f"$group_{index}") or ""
        if e["event"] not in selected or not key:
            continue
        ts = parse(e["timestamp"])
        if ts < since:
            continue
        pid = e["person_id"]
        if pid not in latest or ts > latest[pid][0]:
            latest[pid] = (ts, key)
    out = []
    for pid, (_, key) in latest.items():
        p = persons.get(pid)
        if p is None:
            continue
        props = p["properties"]
        if not all(matches(props, f) for f in filters):
            continue
        cust = group_customer(groups, index, key, prop)
        if cust is None or (existing_only and cust not in customers):
            continue
        email = props.get("email") or None
        name = props.get("name") or None
        out.append({
            "customer_external_id": cust,
            "contact_external_id": pid,
            "contact_name": (name or email or pid)[:255],
            "attributes": {"email": email} if email else {},
        })
    return out
