"""Fakes for the wizard's two seams: the PostHog credential check and the data source.

The fake source evaluates Person filters with PostHog's NULL rules (missing or null = NULL; `=`
never matches NULL; `!=` does), so counts asserted in tests are worked out, not hard-coded.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any

from helpers import env_settings, fake_key


def matches(props: dict, f: Any) -> bool:
    value = props.get(f.property)
    op = f.operator.value
    if op == "is_set":
        return value is not None
    if op == "is_not_set":
        return value is None
    text = None if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    if op == "equals":
        return text is not None and text == f.value
    return text is None or text != f.value


class FakeSource:
    def __init__(self, *, events: list[str], volumes: dict[str, int] | None, persons: list[dict],
                 properties: list[str] | None = None, volume_error: Exception | None = None,
                 count_delay: float = 0.0) -> None:
        self.events = events
        self.volumes = volumes
        self.persons = persons
        self.properties = properties if properties is not None else sorted(
            {k for p in persons for k in p["properties"]})
        self.volume_error = volume_error
        self.count_delay = count_delay
        self.calls: list[tuple] = []
        self._lock = threading.Lock()

    def _log(self, *call: Any) -> None:
        with self._lock:
            self.calls.append(call)

    def event_names(self) -> list[str]:
        self._log("event_names")
        return list(self.events)

    def event_volumes(self, days: int = 30) -> dict[str, int]:
        self._log("event_volumes", days)
        if self.volume_error is not None:
            raise self.volume_error
        return dict(self.volumes or {})

    def person_properties(self, search: str | None = None) -> list[str]:
        self._log("person_properties", search)
        terms = (search or "").lower().split()
        return [p for p in self.properties if all(t in p.lower() for t in terms)]

    def matching(self, filters: list) -> list[dict]:
        return [p for p in self.persons if all(matches(p["properties"], f) for f in filters)]

    def count_persons(self, filters: list) -> int:
        self._log("count_persons", tuple(f.describe() for f in filters))
        if self.count_delay:
            import time

            time.sleep(self.count_delay)
        return len(self.matching(filters))

    def count_events(self, events: list[str], filters: list, days: int = 30) -> int:
        """A Person's events are ``{"events": {name: n}}`` in their dict (none by default)."""
        self._log("count_events", tuple(events), tuple(f.describe() for f in filters), days)
        return sum(n for p in self.matching(filters) for e, n in p.get("events", {}).items() if e in events)

    def group_types(self) -> list:  # a project without group analytics (FakeGroupSource has some)
        self._log("group_types")
        return []

    def group_indexes(self) -> dict[int, int]:
        self._log("group_indexes")
        return {}

    def preview_persons(self, filters: list, extra_columns: tuple[str, ...] = ()) -> tuple[list[str], list[list]]:
        self._log("preview_persons", tuple(f.describe() for f in filters), tuple(extra_columns))
        cols = ["id", "email", *[c for c in extra_columns if c != "email"]][:5]
        rows = []
        for p in self.matching(filters)[:5]:
            rows.append([p["id"] if c == "id" else p["properties"].get(c) for c in cols])
        return cols, rows


def sample_persons(n: int = 40) -> list[dict]:
    """Deterministic Persons: every 4th has no org, plans cycle pro/free/None, some emails."""
    persons = []
    plans = ["pro", "free", None, "pro"]
    for i in range(n):
        props: dict = {}
        if i % 4 != 0:
            props["organization_id"] = f"org_{i % 7}"
        if plans[i % 4] is not None:
            props["plan"] = plans[i % 4]
        if i % 3 != 0:
            props["email"] = f"user{i}@example.com"
        if i % 5 == 0:
            props["plan tier"] = "gold"
        persons.append({"id": f"00000000-0000-0000-0000-{i:012d}", "properties": props})
    return persons


def sample_source(**kw: Any) -> FakeSource:
    events = ["$pageview", "invoice_paid", "report_created", "user_signed_up", "purchase", "purchase_refund"]
    volumes = {"$pageview": 5000, "invoice_paid": 120, "report_created": 300, "user_signed_up": 40, "purchase": 7}
    kw.setdefault("events", events)
    kw.setdefault("volumes", volumes)
    kw.setdefault("persons", sample_persons())
    return FakeSource(**kw)


# --- credential check ------------------------------------------------------------------------
class FakeCheck:
    """Keys made at run time. ``good`` works for project 101 in EU; the others fail one way each."""

    PROJECT = 101

    def __init__(self) -> None:
        self.good = fake_key()
        self.scoped = fake_key()
        self.other = fake_key()
        self.down = 0  # how many of the next checks find PostHog unreachable
        self.calls: list[tuple] = []

    def __call__(self, api_key: str, project_ref: str, *, host: str | None = None) -> Any:
        """A real ``CredentialCheck``, with the sentences the real check writes."""
        from cs_posthog.posthog import credentials as C
        from cs_posthog.posthog.regions import parse_project_ref

        self.calls.append((api_key, project_ref, host))
        ref = parse_project_ref(project_ref, settings=env_settings())
        pid = ref.id
        # every key here is an EU Cloud key: an address of US Cloud has US asked first, which refuses
        # it, then EU, where a known key goes on (``switched_from``), as the real check does
        tried = ["eu"] if ref.region == "eu" and host is None and api_key in (self.good, self.scoped, self.other) \
            else ["eu", "us"] if ref.region == "eu" and host is None else ["us", "eu"]
        check = C.CredentialCheck(key_valid=False, project_id=pid, tried=tried)
        if self.down:
            self.down -= 1
            check.unreachable = True
            check.region, check.host = "eu", "https://eu.posthog.com"
            check.problem = "could not check the key with PostHog EU Cloud: connection refused"
            return check
        if api_key not in (self.good, self.scoped, self.other):
            check.problem = C._invalid_key_problem(api_key, tried, [])
            return check
        check.key_valid, check.region, check.host = True, "eu", host or "https://eu.posthog.com"
        if ref.region == "us" and host is None:
            check.switched_from = "us"
        if api_key == self.scoped:
            check.project_found = pid == self.PROJECT
            check.project_accessible = check.project_found
            check.missing_scopes = ["property_definition:read", "query:read"]
            check.missing_labels = ["Property definition", "Query"]
        elif api_key == self.other:
            check.project_found, check.project_accessible = None, False
        elif pid != self.PROJECT:
            check.project_found, check.project_accessible = False, False
        else:
            check.project_found, check.project_accessible = True, True
            check.project_name, check.timezone = "Acme", "Europe/Prague"
        check.problem = C._problem(check)
        return check


@contextmanager
def piped_keys():
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        yield inp


DOWN = "\x1b[B"
UP = "\x1b[A"
ENTER = "\r"
CTRL_U = "\x15"  # clears a pre-filled text answer
CTRL_A = "\x01"
TAB = "\t"  # toggles the checklist row at the pointer (Space types a space while searching)
CTRL_C = "\x03"


# --- groups ----------------------------------------------------------------------------------
def sample_groups() -> list[dict]:
    """Companies (index 0) and projects (index 1); every third company lacks crm_id."""
    groups = []
    for i in range(9):
        props = {"name": f"Company {i}", "plan": "pro" if i % 2 else "free"}
        if i % 3 != 2:
            props["crm_id"] = f"crm-{i}"
        groups.append({"index": 0, "key": f"acme-{i}", "properties": props, "created_at": i})
    for i in range(3):
        groups.append({"index": 1, "key": f"proj-{i}", "properties": {"name": f"Project {i}"}, "created_at": i})
    return groups


class FakeGroupSource(FakeSource):
    """A FakeSource with group analytics: ``groups`` (index, key, properties) and each Person's
    ``{"groups": {index: key}}`` (the group their events carry; their events are ``{"events": ...}``).
    ``types``: what ``/groups_types/`` answers, or an exception it raises."""

    def __init__(self, *, groups: list[dict] | None = None, types: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        from cs_posthog.posthog.client import GroupType

        self.groups = groups if groups is not None else sample_groups()
        self.types = types if types is not None else [GroupType(0, "company"), GroupType(1, "project")]
        self.group_props = {0: ["crm_id", "name", "plan"], 1: ["name"]}

    def group_types(self) -> list:
        self._log("group_types")
        if isinstance(self.types, Exception):
            raise self.types
        return list(self.types)

    def group_indexes(self) -> dict[int, int]:
        self._log("group_indexes")
        out: dict[int, int] = {}
        for g in self.groups:
            out[g["index"]] = out.get(g["index"], 0) + 1
        return out

    def group_properties(self, index: int, search: str | None = None) -> list[str]:
        self._log("group_properties", index, search)
        terms = (search or "").lower().split()
        return [p for p in self.group_props.get(index, []) if all(t in p.lower() for t in terms)]

    def _customer_groups(self, group: Any) -> set[str]:
        return {g["key"] for g in self.groups if g["index"] == group.index
                and (group.prop is None or g["properties"].get(group.prop) not in (None, ""))}

    def count_groups(self, group: Any) -> int:
        self._log("count_groups", group.index, group.prop)
        return len(self._customer_groups(group))

    def _members(self, group: Any, events: Any, filters: list) -> list[dict]:
        ok = self._customer_groups(group)
        return [p for p in self.matching(list(filters)) if p.get("groups", {}).get(group.index) in ok
                and (not events or any(e in events for e in p.get("events", {})))]

    def preview_persons(self, filters: list, extra_columns: tuple[str, ...] = (), *, group: Any = None,
                        group_label: str = "group", events: Any = (), days: int = 30) -> tuple[list[str], list[list]]:
        if group is None:
            return super().preview_persons(filters, extra_columns)
        self._log("preview_persons", tuple(f.describe() for f in filters), tuple(extra_columns), group.index)
        cols = ["id", group_label, "email", *[c for c in extra_columns if c != "email"]][:5]
        rows = []
        for p in self._members(group, events, list(filters))[:5]:
            rows.append([p["id"] if c == "id" else p["groups"][group.index] if c == group_label
                         else p["properties"].get(c) for c in cols])
        return cols, rows

    def group_coverage(self, group: Any, days: int = 30, events: Any = (), filters: Any = ()) -> tuple[int, int]:
        self._log("group_coverage", group.index, group.prop, tuple(events), tuple(f.describe() for f in filters))
        members = self._members(group, events, list(filters))
        return len({p["groups"][group.index] for p in members}), len(members)

    def count_events(self, events: list[str], filters: list, days: int = 30, group: Any = None) -> int:
        if group is None:
            return super().count_events(events, filters, days)
        self._log("count_events", tuple(events), tuple(f.describe() for f in filters), days, group.index)
        return sum(n for p in self._members(group, events, filters) for e, n in p.get("events", {}).items()
                   if e in events)

    def preview_groups(self, group: Any) -> tuple[list[str], list[list]]:
        self._log("preview_groups", group.index, group.prop)
        props = ["name"] + ([group.prop] if group.prop and group.prop != "name" else [])
        rows = sorted((g for g in self.groups if g["index"] == group.index), key=lambda g: -g["created_at"])[:5]
        return ["key", *props], [[g["key"], *(g["properties"].get(p) for p in props)] for g in rows]


def group_persons(n: int = 40) -> list[dict]:
    """``sample_persons`` whose events carry a company: every 5th none; company i % 7 (acme-7 and
    acme-8 have no member); each Person has 2 invoice_paid events and 1 $pageview."""
    persons = sample_persons(n)
    for i, p in enumerate(persons):
        p["events"] = {"invoice_paid": 2, "$pageview": 1}
        if i % 5 != 0:
            p["groups"] = {0: f"acme-{i % 7}", 1: f"proj-{i % 3}"}
    return persons


def group_source(**kw: Any) -> FakeGroupSource:
    kw.setdefault("events", ["$pageview", "invoice_paid", "report_created"])
    kw.setdefault("volumes", {"$pageview": 5000, "invoice_paid": 120})
    kw.setdefault("persons", group_persons())
    return FakeGroupSource(**kw)
