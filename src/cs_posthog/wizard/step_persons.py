"""Step 5: which Persons become Customerscore contacts, with a live count and a preview.

The locked condition ``{customer property} is set`` is always first and cannot be removed (none
when the customer is a PostHog group: a Person's customer is then the group of their most recent
selected event in the backfill window, and the counts are of the Persons belonging to one). Further
conditions: a property (autocomplete), an operator (equals, does not equal, is set, is not set) and
a value for the first two. The badge under every prompt of this step ("1,248 persons will be
synced") is counted in the background, debounced, and follows the value as it is typed; under it,
the selected events of the last 30 days that would be sent, which follow the choice below. Counts
and the preview stay inside PostHog's query budget: when it is spent they say "paused" instead of
making the prompt wait.

The conditions choose the contacts; one line says whether they choose the events too
(``persons.filter_events``: "Also sync only these Persons' events?", yes for a new setup), and the
menu offers the choice once there is a condition. A condition no Person can match (the customer
property "is not set" or equal to "", or two that exclude each other) is refused where it is typed;
saving when no Person matches asks first.

Contact attributes: Person properties sent with each contact besides email, each under a
Customerscore attribute codename (suggested from the property's name, editable). Customerscore drops
an attribute whose key is no codename defined there, silently: the step says so once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import questionary
from rich.table import Table

from cs_posthog.config import (
    DEFAULT_BACKFILL_DAYS,
    ContactAttribute,
    Identification,
    Operator,
    PersonFilter,
    PersonsSettings,
    codename_problem,
    suggest_codename,
)
from cs_posthog.errors import CsPosthogError
from cs_posthog.posthog.hogql import GroupRef
from cs_posthog.wizard.context import StopWizard, WizardContext, esc
from cs_posthog.wizard.filters import format_filter, refusal, refusals
from cs_posthog.wizard.step_identification import ask_property_name, has_value, property_completer
from cs_posthog.wizard.ui import (
    PAUSE_AFTER_S,
    LiveCount,
    NameCompleter,
    add_footer,
    budget_of,
    busy,
    paused_text,
    select,
)

PREVIEW_ROWS = 5
PREVIEW_COLUMNS = 5


def sync_filters(filters: list[PersonFilter], customer_property: str | None, contact_id: str) -> list[PersonFilter]:
    """The Persons the sync really sends: those matching ``filters`` whose customer id (a Person
    property; None: a group, found on the events), and contact id when it is a property, are set and
    not empty (the sync skips the others)."""
    needed = has_value(customer_property) if customer_property is not None else []
    if contact_id != "person_id":
        needed += has_value(contact_id)
    return [*filters, *(f for f in needed if f not in filters)]


def persons_badge(n: int, group_label: str | None = None) -> str:
    """"1,248 persons will be synced" (group mode: "persons of a company")."""
    of = f" of a {group_label}" if group_label else ""
    return f"{n:,} person{'s' if n != 1 else ''}{of} will be synced"


EVENT_DAYS = DEFAULT_BACKFILL_DAYS


def _everyone(group_label: str | None) -> str:
    return f"of every {group_label}" if group_label else "of every Person with a customer id"


def events_badge(n: int, filter_events: bool, group_label: str | None = None) -> str:
    whose = "of these Persons" if filter_events else _everyone(group_label)
    return f"{n:,} selected event{'s' if n != 1 else ''} {whose} in the last {EVENT_DAYS} days"


def events_scope_line(filter_events: bool, has_filters: bool, group_label: str | None = None) -> str:
    """The one line that says what the conditions cover."""
    if not has_filters:
        return f"Events: those {_everyone(group_label)} are sent."
    if filter_events:
        return "Events: only these Persons' events are sent."
    return (f"Events: those {_everyone(group_label)} are sent, also outside these conditions "
            "(the conditions choose the contacts only).")


ATTRIBUTES_REMINDER = (
    "Customerscore keeps a contact attribute only when its key is an attribute codename defined in "
    "Customerscore (Settings → Attributes); any other is dropped silently. Check that each codename "
    "below exists there, or type the one that does. email is always sent."
)


def attributes_line(attributes: list[ContactAttribute]) -> str:
    """"Contact attributes: email, plan, signed_up_at as signup_date"."""
    parts = ["email"] + [a.property if a.property == a.codename else f"{a.property} as {a.codename}"
                         for a in attributes]
    return "Contact attributes: " + ", ".join(parts)


class Badges:
    """The step's footer: the Persons count and, when the source can count them, the events that
    would be sent; both follow the conditions as they are typed (``request``)."""

    def __init__(self, persons: LiveCount, events: LiveCount | None) -> None:
        self.persons = persons
        self.events = events

    def request(self, filters: list[PersonFilter]) -> None:
        self.persons.request(filters)
        if self.events is not None:
            self.events.request(filters)

    def text(self) -> list[tuple[str, str]]:
        out = list(self.persons.text())
        if self.events is not None:
            out += [("", "\n"), *self.events.text()]
        return out

    def wait(self, timeout: float = 30.0) -> int | None:
        return self.persons.wait(timeout)

    def wait_events(self, timeout: float = 15.0) -> int | None:
        return None if self.events is None else self.events.wait(timeout)

    def cancel(self) -> None:
        self.persons.cancel()
        if self.events is not None:
            self.events.cancel()


# --- the questions ---------------------------------------------------------------------------
def ask_persons_action(live: Any, *, can_remove: bool, contact_label: str, mode: str,
                       resumable: bool = True, filter_events: bool | None = None,
                       attributes: int | None = None) -> str:
    """``filter_events``: None, no choice about the events (no condition yet); else its current value."""
    choices = [
        questionary.Choice("Save configuration", value="save"),
        questionary.Choice("Add a condition", value="add"),
    ]
    if can_remove:
        choices.append(questionary.Choice("Remove a condition", value="remove"))
    choices.append(questionary.Choice(f"Change how contacts are identified (now: {esc(contact_label, markup=False)})",
                                      value="contact"))
    if filter_events is not None:
        choices.append(questionary.Choice(
            f"Also sync only these Persons' events? (now: {'yes' if filter_events else 'no'}; Enter changes it)",
            value="events"))
    if attributes is not None:
        more = f"email and {attributes} more" if attributes else "email only"
        choices.append(questionary.Choice(f"Contact attributes to send (now: {more})", value="attributes"))
    choices.append(
        questionary.Choice(
            "Quit without saving" if mode == "edit"
            else "Stop here (resume later with `cs-posthog connect`)" if resumable
            else "Stop here (nothing is saved)",
            value="quit",
        )
    )
    q = select("Persons to sync:", choices=choices)
    add_footer(q, live.text, index=2)
    return q.unsafe_ask()


def ask_operator(live: Any, prop: str, refuse: Callable[[Any], str | None] = lambda f: None) -> Any:
    """The operator; one that needs no value and leaves no Person (``refuse``) is shown disabled."""
    def disabled(op: Operator) -> str | None:
        if op.needs_value:
            return None  # the value decides (refused where it is typed)
        return "no Person would match: it contradicts another condition" if refuse(
            PersonFilter(property=prop, operator=op)) is not None else None

    q = select(
        f"Condition on {esc(prop, markup=False)}:",
        choices=[questionary.Choice(op.label, value=op, disabled=disabled(op)) for op in Operator],
    )
    add_footer(q, live.text, index=2)
    return q.unsafe_ask()


def ask_value(live: Any, base: list[PersonFilter], prop: str, op: Any,
              refuse: Callable[[Any], str | None] = lambda f: None) -> str:
    """The value, with the badge following what is typed (debounced); a value that leaves no Person
    (``refuse``) is refused there, with the reason."""
    def validate(text: str) -> bool | str:
        try:
            why = refuse(PersonFilter(property=prop, operator=op, value=read_value(text)))
        except ValueError:  # a value the config refuses (an API key): left to the condition's own check
            return True
        return True if why is None else esc(why[:1].upper() + why[1:], markup=False)

    q = questionary.text(f"{esc(prop, markup=False)} {op.label}:",
                         instruction='(as text; "quote it" to keep end spaces)', validate=validate)
    add_footer(q, live.text)

    def changed(buffer: Any) -> None:
        live.request([*base, PersonFilter(property=prop, operator=op, value=read_value(buffer.text))])

    buffer = q.application.layout.current_buffer
    if buffer is not None:  # (a text prompt's layout has its buffer focused)
        buffer.on_text_changed.add_handler(changed)
    live.request([*base, PersonFilter(property=prop, operator=op, value="")])
    return read_value(q.unsafe_ask())


def read_value(text: str) -> str:
    """A typed value: spaces around it are trimmed, unless it is quoted (``"Gold "`` keeps its
    space, ``""`` is the empty string), as in ``--filter``. A lone quote is part of the value."""
    t = text.strip()
    if len(t) >= 2 and t[0] in "\"'" and t[-1] == t[0]:
        return t[1:-1]
    return t


def ask_remove(filters: list[PersonFilter]) -> int | None:
    q = select(
        "Remove which condition?",
        choices=[questionary.Choice(esc(f.describe(), markup=False), value=i) for i, f in enumerate(filters)]
        + [questionary.Choice("(keep them all)", value=-1)],
    )
    idx = q.unsafe_ask()
    return None if idx == -1 else idx


def ask_contact_kind(current: str) -> str:
    return select(
        "What identifies a contact in Customerscore?",
        choices=[
            questionary.Choice("The PostHog person ID (always present)", value="person_id"),
            questionary.Choice("A Person property (e.g. email or your own user ID)", value="property"),
        ],
        default="person_id" if current == "person_id" else "property",
    ).unsafe_ask()


def ask_attribute_action(has_any: bool) -> str:
    choices = [questionary.Choice("Add a Person property", value="add")]
    if has_any:
        choices.append(questionary.Choice("Remove one", value="remove"))
    choices.append(questionary.Choice("Done", value="done"))
    return select("Contact attributes:", choices=choices).unsafe_ask()


def ask_codename(prop: str, taken: dict[str, str]) -> str:
    """The codename ``prop`` is sent as: suggested from its name, editable, checked as typed
    (``taken``: codename -> the property already sent under it)."""
    def validate(text: str) -> bool | str:
        t = text.strip()
        why = codename_problem(t)
        if why is not None:
            return esc(why[:1].upper() + why[1:], markup=False)
        if taken.get(t, prop) != prop:
            return esc(f"{taken[t]} is already sent as {t}", markup=False)
        return True

    return questionary.text(f"Send {esc(prop, markup=False)} as the attribute codename:",
                            default=suggest_codename(prop), validate=validate).unsafe_ask().strip()


def ask_attributes(ctx: WizardContext, completer: NameCompleter,
                   attributes: list[ContactAttribute]) -> list[ContactAttribute]:
    """Add or remove contact attributes until Done; returns the new list."""
    attrs = list(attributes)
    while True:
        ctx.out.info(esc(attributes_line(attrs)))
        action = ask_attribute_action(bool(attrs))
        if action == "done":
            return attrs
        if action == "remove":
            q = select("Remove which attribute?", choices=[
                questionary.Choice(esc(f"{a.property} (as {a.codename})", markup=False), value=i)
                for i, a in enumerate(attrs)] + [questionary.Choice("(keep them all)", value=-1)])
            idx = q.unsafe_ask()
            if idx != -1:
                attrs.pop(idx)
            continue
        prop = ask_property_name("Person property to send:", completer)
        if any(a.property == prop for a in attrs):
            ctx.out.info(f"  [dim]{esc(prop)} is already sent.[/dim]")
            continue
        taken = {"email": "email", **{a.codename: a.property for a in attrs}}
        codename = ask_codename(prop, taken)
        attrs.append(ContactAttribute(property=prop, codename=codename))


# --- showing ---------------------------------------------------------------------------------
def show_conditions(ctx: WizardContext, locked: PersonFilter | None, filters: list[PersonFilter],
                    contact_id: str = "person_id", filter_events: bool | None = None,
                    identification: Identification | None = None) -> None:
    ctx.out.info("Conditions (a Person must match all of them):")
    start = 1
    if locked is not None:
        ctx.out.info(f"  {start}. {esc(locked.describe())}, not empty [dim](locked: needed to find the customer)[/dim]")
        start += 1
    elif identification is not None and identification.is_group:
        ctx.out.info(f"  [dim]A Person's customer is the {esc(identification.group_label)} of the group on their "
                     f"most recent selected event in the last {EVENT_DAYS} days.[/dim]")
    if contact_id != "person_id":
        ctx.out.info(f"  {start}. {esc(contact_id)} is set, not empty [dim](locked: the contact id)[/dim]")
        start += 1
    for i, f in enumerate(filters, start=start):
        ctx.out.info(f"  {i}. {esc(f.describe())}")
    if locked is None and start == 1 and not filters:
        ctx.out.info("  (none)")
    if filter_events is not None:
        group_label = identification.group_label if identification is not None and identification.is_group else None
        ctx.out.info(esc(events_scope_line(filter_events, bool(filters), group_label)))


def preview_columns(all_filters: list[PersonFilter], contact_id: str,
                    attributes: list[ContactAttribute] | None = None) -> tuple[str, ...]:
    """The properties shown beside the id/email: those in the conditions first, then the contact's,
    then the attributes'."""
    cols: list[str] = []
    for f in all_filters:
        if f.property not in cols:
            cols.append(f.property)
    if contact_id != "person_id" and contact_id not in cols:
        cols.append(contact_id)
    for a in attributes or []:
        if a.property not in cols:
            cols.append(a.property)
    return tuple(cols)


def show_preview(ctx: WizardContext, all_filters: list[PersonFilter], contact_id: str,
                 attributes: list[ContactAttribute] | None = None, *, group: GroupRef | None = None,
                 group_label: str = "group", events: Sequence[str] = ()) -> None:
    """Up to 5 Persons the conditions select (group mode: only Persons who belong to a group of the
    type, with their group's key, as the sync attaches them)."""
    extra = preview_columns(all_filters, contact_id, attributes)
    budget = budget_of(ctx.source())
    if budget is not None:
        wait, per_hour = budget()
        if wait > PAUSE_AFTER_S:  # the prompt does not wait for PostHog's query budget
            ctx.out.info(f"  [dim]{esc(paused_text('preview', wait, per_hour))}; it is shown again "
                         f"when the conditions change.[/dim]")
            return
    try:
        with busy(ctx.out, "Loading a preview…"):
            if group is None:
                columns, rows = ctx.source().preview_persons(all_filters, extra)
            else:
                columns, rows = ctx.source().preview_persons(all_filters, extra, group=group, group_label=group_label,
                                                             events=events, days=EVENT_DAYS)
    except CsPosthogError as exc:
        ctx.out.warn(f"no preview: {esc(exc.message)}")
        return
    if not rows:
        ctx.out.info("  [dim]No Person matches these conditions.[/dim]")
        return
    columns = list(columns)[:PREVIEW_COLUMNS]
    cells = [["" if v is None else str(v) for v in list(row)[: len(columns)]] for row in list(rows)[:PREVIEW_ROWS]]
    widths = preview_widths(columns, cells, ctx.out.err.width)
    table = Table(title=f"Preview (up to {PREVIEW_ROWS} matching Persons)", title_justify="left", show_lines=False)
    for c, w in zip(columns, widths, strict=True):
        table.add_column(esc(c), overflow="ellipsis", max_width=w, no_wrap=True)
    for row in cells:
        table.add_row(*[esc(v) for v in row])
    if ctx.out.human:
        ctx.out.err.print(table)


def preview_widths(columns: list[str], cells: list[list[str]], width: int, cap: int = 36) -> list[int]:
    """Column widths for the preview: the person id (36 characters of UUID) gives way first, so the
    properties in the conditions, the ones the person wants to check, are not cut short."""
    natural = [min(cap, max([len(c), *(len(r[i]) for r in cells if i < len(r))])) for i, c in enumerate(columns)]
    over = sum(natural) + 3 * len(columns) + 1 - width
    if over > 0 and columns and columns[0] == "id":
        natural[0] = max(8, natural[0] - over)
    return natural


# --- the step --------------------------------------------------------------------------------
def ask_condition(ctx: WizardContext, live: Any, completer: NameCompleter, base: list[PersonFilter],
                  refuse: Callable[[Any], str | None] = lambda f: None) -> PersonFilter:
    prop = ask_property_name("Property:", completer, footer=live.text)
    op = ask_operator(live, prop, refuse)
    if op.needs_value:
        value = ask_value(live, base, prop, op, refuse)
        return PersonFilter(property=prop, operator=op, value=value)
    return PersonFilter(property=prop, operator=op)


def ask_contact_id(ctx: WizardContext, completer: NameCompleter, current: str) -> str:
    if ask_contact_kind(current) == "person_id":
        return "person_id"
    default = "" if current == "person_id" else current
    return ask_property_name("Which Person property identifies a contact?", completer, default)


def contact_label(contact_id: str) -> str:
    return "PostHog person ID" if contact_id == "person_id" else f"Person property {contact_id}"


def ask_save_nobody() -> bool:
    return bool(questionary.confirm("No Person matches these conditions: no contact would be sent. Save anyway?",
                                    default=False).unsafe_ask())


def ask_persons(ctx: WizardContext, *, header: bool = True, only: bool = False) -> PersonsSettings:
    """Loop over the conditions until the user saves; returns the settings to save."""
    if header:
        ctx.step_header(5, only=only)
    ident = ctx.draft.identification
    if ident is None:
        raise RuntimeError("the identification step is not done")
    customer_property = ident.person_property  # None: a group is the customer
    group = GroupRef(ident.group_type_index, ident.group_property) \
        if ident.is_group and ident.group_type_index is not None else None
    # shown in the prompt's footer (no markup) and by rich (escaped there): control characters visible
    label = esc(ident.group_label, markup=False) if group is not None else None
    locked = PersonFilter(property=customer_property, operator=Operator.IS_SET) if customer_property else None
    prev = ctx.draft.persons
    filters = [f for f in (ctx.prefill.filters or (prev.filters if prev else [])) if f != locked]
    contact_id = ctx.prefill.contact_id or (prev.contact_id if prev else "person_id")
    attributes = list(ctx.prefill.attributes or (prev.attributes if prev else []))
    # a new setup: yes (what a person who narrows the Persons most likely means); edit: as saved
    filter_events = ctx.prefill.filter_events if ctx.prefill.filter_events is not None else (
        prev.filter_events if prev is not None else True)
    src = ctx.source()
    selected = list(ctx.draft.events.selected) if ctx.draft.events is not None else []

    def expand(fs: list[PersonFilter]) -> list[PersonFilter]:
        return sync_filters(fs, customer_property, contact_id)  # the contact id as chosen by then

    def events_of(fs: list[PersonFilter]) -> list[PersonFilter]:
        """The Persons whose events are sent: those of the conditions, or every one with the ids."""
        return expand(fs if filter_events else ([locked] if locked is not None else []))

    def refuse(new: PersonFilter) -> str | None:
        return refusal(new, filters, customer_property, contact_id)

    def count_persons(fs: list[PersonFilter]) -> int:
        if group is None:
            return src.count_persons(expand(fs))
        return src.group_coverage(group, EVENT_DAYS, selected, expand(fs))[1]  # Persons of a group

    persons_live = LiveCount(count_persons, render=lambda n: persons_badge(n, label), budget=budget_of(src),
                             key=lambda fs: repr(expand(fs)))
    events_live = None
    if selected and hasattr(src, "count_events"):
        def count_events(fs: list[PersonFilter]) -> int:
            if group is None:
                return src.count_events(selected, events_of(fs), EVENT_DAYS)
            return src.count_events(selected, events_of(fs), EVENT_DAYS, group=group)

        events_live = LiveCount(count_events, render=lambda n: events_badge(n, filter_events, label),
                                budget=budget_of(src), key=lambda fs: repr((filter_events, events_of(fs))))
    live = Badges(persons_live, events_live)
    completer = property_completer(ctx)
    reminded = False
    try:
        changed = True
        while True:
            all_filters = [locked, *filters] if locked is not None else list(filters)
            if changed:
                live.request(all_filters)
                show_conditions(ctx, locked, filters, contact_id, filter_events, ident)
                if attributes:
                    ctx.out.info(esc(attributes_line(attributes)))
                show_preview(ctx, expand(all_filters), contact_id, attributes, group=group,
                             group_label=ident.group_label, events=selected)
            changed = False
            action = ask_persons_action(live, can_remove=bool(filters), contact_label=contact_label(contact_id),
                                        mode=ctx.mode, resumable=ctx.resumable,
                                        filter_events=filter_events if filters else None,
                                        attributes=len(attributes))
            if action == "save":
                bad = refusals(filters, customer_property, contact_id)
                if bad:  # e.g. given with --filter, or a contact id chosen after a condition on it
                    for f, why in bad:
                        ctx.out.warn(f"{esc(format_filter(f))}: {esc(why)}. Remove it to save.")
                    continue
                n = live.wait(30)
                if n == 0:  # the question says so: no warning line above it saying it again
                    if not ask_save_nobody():
                        continue
                elif n is not None:
                    ctx.out.success(esc(persons_badge(n, label)) + ".")
                    ev = live.wait_events()
                    if ev is not None:
                        ctx.out.info(f"  {esc(events_badge(ev, filter_events, label))}.")
                return PersonsSettings(filters=filters, attributes=attributes, contact_id=contact_id,
                                       filter_events=filter_events)
            if action == "quit":
                raise StopWizard()
            if action == "events":
                filter_events = not filter_events
                changed = True
            elif action == "attributes":
                if not reminded:
                    ctx.out.info(esc(ATTRIBUTES_REMINDER))
                    reminded = True
                new_attributes = ask_attributes(ctx, completer, attributes)
                changed = new_attributes != attributes
                attributes = new_attributes
            elif action == "add":
                new = ask_condition(ctx, live, completer, all_filters, refuse)
                refused = refuse(new)
                if new == locked or new in filters:
                    ctx.out.info(f"  [dim]{esc(new.describe())} is already a condition.[/dim]")
                elif refused is not None:
                    ctx.out.warn(f"{esc(format_filter(new))} is not added: {esc(refused)}.")
                else:
                    filters.append(new)
                changed = True
            elif action == "remove":
                idx = ask_remove(filters)
                if idx is not None:
                    filters.pop(idx)
                    changed = True
            elif action == "contact":
                new_contact = ask_contact_id(ctx, completer, contact_id)
                changed = new_contact != contact_id
                contact_id = new_contact
            if not changed:
                live.request(all_filters)  # the value typed may have moved the badge: show the real count again
    finally:
        live.cancel()
