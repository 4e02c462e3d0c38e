"""Which event streams a sync runs, given the events selected now and the streams the state holds.
Pure: the engine reads the state before and writes the plan after (``docs/sync-invariants.md``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cs_posthog.sync.state import Cursor, Stream

RESUME_PREFIX = "resume:"  # catch-up streams of events selected again, from where they stopped
CATCHUP_PREFIX = "catchup:"  # catch-up streams of newly selected events, from the backfill start


@dataclass
class StreamPlan:
    streams: list[Stream] = field(default_factory=list)  # to run before the main stream, in order
    deleted: list[str] = field(default_factory=list)  # streams left without a selected event
    resume_start: dict[str, tuple[str, str]] = field(default_factory=dict)  # resume stream -> its start
    dropped: dict[str, list[str]] = field(default_factory=dict)  # event -> [created_at, uuid] where it stopped


def plan_event_streams(
    selected: list[str], main: Stream, existing: dict[str, Stream], dropped: dict[str, list[str]], floor: str
) -> StreamPlan:
    """The streams to run when the main stream has a cursor. ``existing``: the other event streams
    of the state; ``dropped``: where each event no longer selected stopped (from the state);
    ``floor``: the backfill start. Events deselected since are left out of every stream (and noted
    in ``dropped``, so that selecting one again resumes there instead of resending its history);
    an event selected again resumes where it stopped (in the main stream if nothing happened since),
    a new one gets a catch-up stream from ``floor``. ``main`` and ``existing`` keep only their
    selected events (changed in place)."""
    assert main.cursor is not None  # (the other case is a first sync: the main stream alone)
    plan = StreamPlan(dropped=dict(dropped))
    covered = _keep_selected(selected, main, existing, plan)
    new = [e for e in selected if e not in covered]
    resume: dict[tuple[str, str], list[str]] = {}
    for e in [e for e in new if e in plan.dropped]:
        created_at, uuid = plan.dropped.pop(e)
        resume.setdefault((created_at, uuid), []).append(e)
    for (c, u), evs in resume.items():
        if (c, u) == (main.cursor.created_at, main.cursor.uuid):
            main.events += evs  # nothing happened since it was left out
            continue
        name = RESUME_PREFIX + hashlib.sha256("\0".join([c, u, *evs]).encode()).hexdigest()[:12]
        plan.streams.append(Stream(name, evs, main.floor, Cursor(c, u), ""))
        plan.resume_start[name] = (c, u)
    resumed = {x for evs in resume.values() for x in evs}
    fresh = [e for e in new if e not in resumed]
    if fresh:
        name = CATCHUP_PREFIX + hashlib.sha256("\0".join(fresh).encode()).hexdigest()[:12]
        plan.streams.append(Stream(name, fresh, floor, None, ""))
    return plan


def _keep_selected(selected: list[str], main: Stream, existing: dict[str, Stream], plan: StreamPlan) -> set[str]:
    """Leave the deselected events out of the streams (noting where each stopped), the streams left
    without one out of the plan; the events the streams still cover."""
    for s in [main, *existing.values()]:
        if s.cursor is not None:
            for e in s.events:
                if e not in selected:
                    plan.dropped[e] = [s.cursor.created_at, s.cursor.uuid]
    main.events = [e for e in main.events if e in selected]
    covered = set(main.events)
    for s in existing.values():
        s.events = [e for e in s.events if e in selected]
        if not s.events:
            plan.deleted.append(s.name)
            continue
        covered.update(s.events)
        plan.streams.append(s)
    return covered
