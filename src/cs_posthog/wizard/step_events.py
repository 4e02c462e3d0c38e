"""Step 4: which events to send, from a searchable checklist of every event definition.

The 30-day volume beside each event comes from one HogQL query run alongside the definitions;
when it fails or is slow, the list is shown without it.
"""

from __future__ import annotations

import concurrent.futures

import questionary

from cs_posthog.config import DEFAULT_BACKFILL_DAYS, EventsSettings
from cs_posthog.errors import CsPosthogError
from cs_posthog.wizard.context import WizardContext, esc
from cs_posthog.wizard.ui import PAUSE_AFTER_S, budget_of, busy, checklist, paused_text

VOLUME_TIMEOUT_S = 15.0
REMINDER = (
    "Customerscore keeps only events whose name matches a metric codename: for each "
    "event you pick, define a metric with that codename (e.g. [bold]{example}[/bold]); "
    "other events are dropped there without an error."
)


def unlikely_codename(name: str) -> bool:
    """A name a Customerscore metric codename is unlikely to be spelled as (codenames are usually
    like ``invoice_paid``): one with a space, a leading ``$`` (PostHog's own events) or a capital."""
    return name.startswith("$") or any(c.isspace() or c.isupper() for c in name)


def codename_note(selected: list[str], *, markup: bool = False) -> str | None:
    """One line for the ticked events whose names are unlikely metric codenames, None when there
    are none. The rule (docs/customerscore-api.md): the codename must be exactly the event name."""
    odd = [n for n in selected if unlikely_codename(n)]
    if not odd:
        return None
    shown = ", ".join(f'"{esc(n, markup=markup)}"' for n in odd[:2])
    if len(odd) > 2:
        shown += f" and {len(odd) - 2} more"
    return (f"Customerscore keeps {shown} only if a metric's codename is exactly the event name, "
            "spaces, capitals and $ included.")


def load_events(ctx: WizardContext) -> tuple[list[str], dict[str, int] | None]:
    """Event definitions and (if cheap enough) their 30-day volumes, fetched at the same time."""
    src = ctx.source()
    budget = budget_of(src)
    wait, per_hour = budget() if budget is not None else (0.0, 0)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="events")
    try:
        with busy(ctx.out, "Loading your events from PostHog…"):
            names_f = pool.submit(src.event_names)
            vol_f = pool.submit(src.event_volumes, 30) if wait <= PAUSE_AFTER_S else None
            names = names_f.result()
            volumes: dict[str, int] | None = None
            if vol_f is None:  # the list does not wait for PostHog's query budget
                paused = esc(paused_text("volumes", wait, per_hour))
                ctx.out.warn(f"{DEFAULT_BACKFILL_DAYS}-day volumes are not available ({paused}).")
            else:
                try:
                    volumes = vol_f.result(timeout=VOLUME_TIMEOUT_S)
                except (CsPosthogError, concurrent.futures.TimeoutError) as exc:
                    ctx.out.warn(
                        f"{DEFAULT_BACKFILL_DAYS}-day volumes are not available "
                        f"({esc(getattr(exc, 'message', None) or 'too slow')})."
                    )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return names, volumes


def order_events(names: list[str], volumes: dict[str, int] | None) -> list[str]:
    """Busiest first (when volumes are known), then by name; no duplicates."""
    unique = list(dict.fromkeys(n for n in names if n))
    if volumes:
        return sorted(unique, key=lambda n: (-volumes.get(n, 0), n.lower()))
    return sorted(unique, key=str.lower)


def event_title(name: str, volume: int | None, width: int) -> str:
    """The checklist label of an event: its name with control characters visible (``esc``; anyone
    with the project's public token can name an event), and its 30-day volume."""
    name = esc(name, markup=False)
    if volume is None:
        return name
    shown = name if len(name) <= width else name[: width - 1] + "…"
    return f"{shown.ljust(width)}  {volume:>10,}"


def ask_events_checklist(
    names: list[str], volumes: dict[str, int] | None, preselected: list[str]
) -> list[str]:
    width = min(40, max((len(esc(n, markup=False)) for n in names), default=10))
    choices = [
        (n, event_title(n, (volumes or {}).get(n, 0) if volumes is not None else None, width), n in preselected)
        for n in names
    ]
    q = checklist(
        "Events to send:",
        choices,
        noun="events selected",
        validate=lambda sel: True if sel else "Pick at least one event (Tab toggles, Ctrl-A selects all)",
        note=codename_note,
    )
    return list(q.unsafe_ask())


def ask_event_names_typed(default: list[str]) -> list[str]:
    """When PostHog has no event definitions yet: type the names (comma separated)."""
    answer = questionary.text(
        "Event names to send (comma separated):",
        default=", ".join(default),
        validate=lambda t: True if [p for p in t.split(",") if p.strip()] else "Enter at least one event name",
    ).unsafe_ask()
    return [p.strip() for p in answer.split(",") if p.strip()]


def ask_events(ctx: WizardContext, *, header: bool = True, only: bool = False) -> EventsSettings:
    if header:
        ctx.step_header(4, only=only)
    prev = ctx.draft.events
    preselected = list(ctx.prefill.events) or (list(prev.selected) if prev else [])
    names, volumes = load_events(ctx)
    names = order_events(names, volumes)
    if ctx.prefill.all_events:
        preselected = list(names)
    # events saved earlier but no longer defined stay visible (and checked) so they are not lost silently
    missing = [n for n in preselected if n not in names]
    names = names + missing
    # the checked ones first (edit, the demo, --event): all in view, not some below the scroll
    names = [n for n in names if n in preselected] + [n for n in names if n not in preselected]

    n = len(names) - len(missing)
    ctx.out.info(f"We found {n:,} event{'s' if n != 1 else ''} in your account."
                 + (f" On the right: how many in the last {DEFAULT_BACKFILL_DAYS} days."
                    if volumes is not None else ""))
    example = next((x for x in names if not x.startswith("$")), names[0] if names else "invoice_paid")
    ctx.out.info(REMINDER.format(example=esc(example)))
    if missing:
        ctx.out.warn("not among PostHog's event definitions, kept checked: " + esc(", ".join(missing)))

    if not names:
        ctx.out.warn("PostHog has no event definitions for this project yet.")
        selected = ask_event_names_typed(preselected)
    else:
        selected = ask_events_checklist(names, volumes, preselected)
    ctx.out.success(f"{len(selected)} event{'s' if len(selected) != 1 else ''} selected: " + esc(_short_list(selected)))
    note = codename_note(selected, markup=True)
    if note:  # said once under the list while ticking; kept on screen once the list is gone
        ctx.out.warn(note)
    return EventsSettings(selected=selected)


def _short_list(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
