"""Step 3: what names the customer (company): a Person property, or a PostHog group.

* Person property: typed with autocomplete from PostHog's Person property definitions (fetched in
  the background as the user types); any custom name is accepted. Then the wizard says how many
  Persons have it set: only those can be attached to a customer.
* PostHog group (group analytics, ``posthog.group('company', 'acme-42')``): the group type is picked
  from the project's group types (``/groups_types/``, Group (Read) scope; without it the indexes
  found in the ``groups`` table stand in, and the user is told why), then what holds the customer
  id: the group key (default) or a group property (autocomplete from its definitions). The wizard
  counts the groups with events and the Persons belonging to one, shows a few groups, and states
  the contacts rule: a Person belongs to the group of their most recent selected event in the
  backfill window.
* I'm not sure: both explained, with what this project has; then asked again.
"""

from __future__ import annotations

from typing import Any

import questionary
from rich.table import Table

from cs_posthog.config import DEFAULT_BACKFILL_DAYS, Identification, Operator, PersonFilter
from cs_posthog.errors import CsPosthogError, MissingScopesError
from cs_posthog.posthog.client import GROUP_SCOPE, GroupType
from cs_posthog.posthog.credentials import missing_scopes_sentence
from cs_posthog.posthog.hogql import GroupRef
from cs_posthog.wizard.context import StopWizard, WizardContext, esc
from cs_posthog.wizard.ui import (
    PAUSE_AFTER_S,
    NameCompleter,
    add_footer,
    budget_of,
    busy,
    paused_text,
    select,
    threaded,
)

SUPPORT_EMAIL = "support@customerscore.io"

# one line per paragraph or item: rich wraps them to the terminal's width (the caller says how to
# continue: connect resumes here)
NOT_SURE = (
    "Customerscore attaches each PostHog Person, and their events, to one of your customers (companies). "
    "Two ways:\n"
    "  • A Person property: every Person carries the company's ID, e.g. "
    "posthog.identify(user_id, {\"company_id\": \"acme-42\"}) or posthog.setPersonProperties(...). "
    "Use the same ID as the customer's External ID in Customerscore.\n"
    "  • A PostHog group: your app calls posthog.group('company', 'acme-42') (group analytics). Each event "
    "names its company; a Person belongs to the company of their most recent event.\n"
    f"  • Not sure how your PostHog is set up? Contact Customerscore support at {SUPPORT_EMAIL}."
)


def ask_identification_kind(default: str = "property", *, again: bool = False) -> str:
    """"property", "group", "unsure" (the first time) or "stop" (asked again after the explanation)."""
    choices = [
        questionary.Choice("A Person property holds the customer's ID", value="property"),
        questionary.Choice("A PostHog group (group analytics)", value="group"),
        questionary.Choice("Stop here", value="stop") if again else questionary.Choice("I'm not sure", value="unsure"),
    ]
    return select(
        "Which one, then?" if again else "How are Persons tied to a customer?",  # fits 80 columns
        choices=choices,
        default=default,
    ).unsafe_ask()


def property_completer(ctx: WizardContext) -> NameCompleter:
    def search(text: str) -> list[str]:
        return ctx.source().person_properties(text or None)

    return NameCompleter(search, min_prefix=1)


def ask_property_name(message: str, completer: NameCompleter, default: str = "", footer: Any = None) -> str:
    """A Person property name with autocomplete; any name is accepted."""
    q = questionary.text(
        message,
        default=default,
        completer=threaded(completer),
        complete_while_typing=True,
        validate=lambda t: True if t.strip() else "Enter a property name",
    )
    if footer is not None:
        add_footer(q, footer)
    return q.unsafe_ask().strip()


def ask_use_anyway(prop: str) -> bool:
    question = f"No Person has {esc(prop, markup=False)} set. Use it anyway?"
    return bool(questionary.confirm(question, default=False).unsafe_ask())


def has_value(prop: str) -> list[Any]:
    """The conditions for "``prop`` holds an id": set and not the empty string. The sync skips a
    Person whose customer (or contact) id is empty, so every count the wizard shows uses these,
    not the bare "is set" (which PostHog also answers for ``""``)."""
    return [PersonFilter(property=prop, operator=Operator.IS_SET),
            PersonFilter(property=prop, operator=Operator.NOT_EQUALS, value="")]


def count_coverage(ctx: WizardContext, prop: str) -> tuple[int | None, int | None]:
    """(Persons with a non-empty ``prop``, all Persons); None where PostHog could not say."""
    src = ctx.source()
    budget = budget_of(src)
    if budget is not None:
        wait, per_hour = budget()
        if wait > PAUSE_AFTER_S:  # the question does not wait for PostHog's query budget
            ctx.out.warn(f"could not count Persons now: {esc(paused_text('counts', wait, per_hour))}")
            return None, None
    try:
        with busy(ctx.out, "Counting Persons…"):
            with_prop = src.count_persons(has_value(prop))
            total = src.count_persons([])
    except CsPosthogError as exc:
        ctx.out.warn(f"could not count Persons: {esc(exc.message)}")
        return None, None
    return with_prop, total


def ask_identification(ctx: WizardContext, *, header: bool = True, only: bool = False) -> Identification:
    if header:
        ctx.step_header(3, only=only)
    prev = ctx.draft.identification
    group_given = ctx.prefill.customer_group is not None or ctx.prefill.customer_group_property is not None
    kind = "group" if group_given or (prev is not None and prev.is_group and not ctx.prefill.customer_property) \
        else "property"
    kind = ask_identification_kind(kind)
    while True:
        if kind == "unsure":
            ctx.out.info(NOT_SURE)
            try:
                types = project_group_types(ctx, quiet=True)
            except CsPosthogError:  # e.g. no key to ask PostHog with: the explanation stands alone
                types = None
            if types:
                ctx.out.info("This project has group types: " + esc(", ".join(
                    f"{t.name} (index {t.index})" for t in types)) + ".")
            elif types is not None:
                ctx.out.info("This project has no groups yet: a Person property is the way, or set up "
                             "group analytics in your app first.")
            kind = ask_identification_kind("group" if types else "property", again=True)
            continue
        if kind == "stop":
            raise StopWizard()
        if kind == "group":
            found = ask_group_identification(ctx, prev)
            if found is not None:
                return found
            kind = ask_identification_kind("property", again=True)  # no group type to pick
            continue
        return ask_person_property(ctx, prev)


def ask_person_property(ctx: WizardContext, prev: Identification | None) -> Identification:
    completer = property_completer(ctx)
    ctx.out.info("[dim]Type to search your Person properties (Tab completes); any name is accepted.[/dim]")
    default = ctx.prefill.customer_property or (prev.person_property if prev else None) or ""
    while True:
        prop = ask_property_name("Which Person property stores the customer identifier?", completer, default)
        with_prop, total = count_coverage(ctx, prop)
        if with_prop is None:
            return Identification(property=prop)
        if with_prop == 0:
            ctx.out.warn(f"no Person has {esc(prop)} set to a value" + (f" (of {total:,})" if total else "") + ".")
            if ask_use_anyway(prop):
                return Identification(property=prop)
            default = ""
            continue
        ctx.out.success(f"{with_prop:,} of {total:,} Persons have {esc(prop)} set, not empty.")
        if total and with_prop < total:
            ctx.out.warn(f"only Persons with {esc(prop)} set can be attached to a customer; "
                         f"the other {total - with_prop:,} are not synced.")
        else:
            ctx.out.info(f"  Only Persons with {esc(prop)} set can be attached to a customer.")
        return Identification(property=prop)


# --- a PostHog group -------------------------------------------------------------------------
def contacts_rule(label: str, days: int = DEFAULT_BACKFILL_DAYS) -> str:
    """The contacts rule of group mode, in one line."""
    return (f"A Person belongs to the {label} of the group on their most recent selected event in the last "
            f"{days} days; events without a {label} are not synced.")


def group_identification(index: int, name: str | None, prop: str | None) -> Identification:
    """A group identification; the fields left unset are not given (the model's name checks read only text)."""
    fields: dict[str, Any] = {"kind": "group", "group_type_index": index}
    if name is not None:
        fields["group_type"] = name
    if prop is not None:
        fields["property"] = prop
    return Identification(**fields)


def project_group_types(ctx: WizardContext, *, quiet: bool = False) -> list[GroupType] | None:
    """The project's group types. Without Group (Read) the scope is named and the indexes that have
    groups stand in (nameless: ``unnamed``); None when PostHog could not say."""
    src = ctx.source()
    try:
        with busy(ctx.out, "Listing group types…"):
            return src.group_types()
    except MissingScopesError:
        if not quiet:
            ctx.out.warn(f"{missing_scopes_sentence([GROUP_SCOPE])}, which lists the group types by name.")
            ctx.out.info("  [dim]Add it in PostHog (Settings → Personal API keys → edit the key) to see the "
                         "names; meanwhile the group types are found by their index (0 to 4) in the groups "
                         "PostHog holds.[/dim]")
    except CsPosthogError as exc:
        if not quiet:
            ctx.out.warn(f"could not list the group types: {esc(exc.message)}; looking for groups instead.")
    try:
        with busy(ctx.out, "Looking for groups…"):
            counts = src.group_indexes()
    except CsPosthogError as exc:
        if not quiet:
            ctx.out.warn(f"could not look for groups either: {esc(exc.message)}")
        return None
    return [unnamed(i) for i in sorted(counts)]


def unnamed(index: int) -> GroupType:
    """A group type known by its index only (the key cannot list the types' names)."""
    return GroupType(index=index, name=f"group type {index}", name_singular="")


def _named(t: GroupType) -> bool:
    return t.name_singular != ""


def find_group_type(types: list[GroupType], wanted: str) -> GroupType | None:
    """A group type by name (exact, then ignoring case) or by index ("0" to "4")."""
    text = wanted.strip()
    for t in types:
        if t.name == text:
            return t
    for t in types:
        if t.name.lower() == text.lower():
            return t
    if text.isdigit() and len(text) == 1:
        return next((t for t in types if t.index == int(text)), None)
    return None


def ask_group_type(types: list[GroupType], default: int | None) -> GroupType:
    choices = [questionary.Choice(esc(f"{t.name} (index {t.index})" if _named(t) else t.name, markup=False),
                                  value=t.index) for t in types]
    index = select(
        "Which group type is the customer?", choices=choices,
        default=next((c for c in choices if c.value == default), None),
    ).unsafe_ask()
    return next(t for t in types if t.index == index)


def ask_group_id_kind(label: str, default: str = "key") -> str:
    return select(
        f"What holds the customer's ID on a {label}?",
        choices=[
            questionary.Choice(esc(f"The group key (the ID in posthog.group('{label}', ID))", markup=False),
                               value="key"),
            questionary.Choice("A group property (e.g. a CRM ID)", value="property"),
        ],
        default=default,
    ).unsafe_ask()


def group_property_completer(ctx: WizardContext, index: int) -> NameCompleter:
    def search(text: str) -> list[str]:
        return ctx.source().group_properties(index, text or None)

    return NameCompleter(search, min_prefix=1)


def ask_group_identification(ctx: WizardContext, prev: Identification | None) -> Identification | None:
    """The group type and what holds the id, with the counts and a preview; None when the project has no
    group type to pick (the caller asks again)."""
    types = project_group_types(ctx)
    if types is None:
        types = []
        ctx.out.info("  [dim]Type the group type's index (0 to 4) below: it is the N of $group_N on "
                     "your events.[/dim]")
        types = [unnamed(i) for i in range(5)]
    if not types:
        ctx.out.warn("this project has no groups (PostHog creates them when your app calls "
                     "posthog.group(...)): choose a Person property, or stop here.")
        return None
    default_index = prev.group_type_index if prev is not None and prev.is_group else None
    wanted = ctx.prefill.customer_group
    if wanted is not None and (t := find_group_type(types, wanted)) is not None:
        default_index = t.index
    chosen = ask_group_type(types, default_index)
    label = chosen.name
    name = chosen.name if _named(chosen) else None
    prev_prop = ctx.prefill.customer_group_property or (
        prev.group_property if prev is not None and prev.group_type_index == chosen.index else None)
    prop: str | None = None
    while True:
        if ask_group_id_kind(label, "property" if prev_prop else "key") == "property":
            ctx.out.info(f"[dim]Type to search the {esc(label)} properties (Tab completes); any name is "
                         "accepted.[/dim]")
            prop = ask_property_name(f"Which {esc(label, markup=False)} property stores the customer identifier?",
                                     group_property_completer(ctx, chosen.index), prev_prop or "")
        ident = group_identification(chosen.index, name, prop)
        group = GroupRef(chosen.index, prop)
        shown = show_group_coverage(ctx, group, label, chosen.plural if _named(chosen) else f"groups of {label}")
        ctx.out.info(f"  {esc(contacts_rule(label))}")
        if shown is not None and shown == 0:
            what = f"{label} with {prop} set" if prop else label
            if not ask_group_anyway(what):
                prev_prop, prop = None, None
                continue
        show_group_preview(ctx, group, label)
        return ident


def ask_group_anyway(what: str) -> bool:
    question = f"No {esc(what, markup=False)} has events in the last {DEFAULT_BACKFILL_DAYS} days. Use it anyway?"
    return bool(questionary.confirm(question, default=False).unsafe_ask())


def show_group_coverage(ctx: WizardContext, group: GroupRef, label: str, plural: str) -> int | None:
    """"41 of 60 companies have events in the last 30 days; 1,912 of 2,400 Persons belong to one."
    Returns the groups with events (None: PostHog could not say)."""
    src = ctx.source()
    budget = budget_of(src)
    if budget is not None:
        wait, per_hour = budget()
        if wait > PAUSE_AFTER_S:
            ctx.out.warn(f"could not count the {esc(plural)} now: {esc(paused_text('counts', wait, per_hour))}")
            return None
    days = DEFAULT_BACKFILL_DAYS
    try:
        with busy(ctx.out, f"Counting {plural}…"):
            total = src.count_groups(GroupRef(group.index))
            with_prop = src.count_groups(group) if group.prop is not None else total
            with_events, persons = src.group_coverage(group, days)
            all_persons = src.count_persons([])
    except CsPosthogError as exc:
        ctx.out.warn(f"could not count the {esc(plural)}: {esc(exc.message)}")
        return None
    if group.prop is not None:
        ctx.out.info(f"{with_prop:,} of {total:,} {esc(plural)} have {esc(group.prop)} set, not empty; only "
                     "those can be customers.")
    line = (f"{with_events:,} of {total:,} {esc(plural)} "
            + (f"with {esc(group.prop)} " if group.prop is not None else "")
            + f"have events in the last {days} days; {persons:,} of {all_persons:,} Persons belong to one.")
    (ctx.out.success if with_events else ctx.out.warn)(line if with_events else line[:1].lower() + line[1:])
    return with_events


def show_group_preview(ctx: WizardContext, group: GroupRef, label: str) -> None:
    src = ctx.source()
    budget = budget_of(src)
    if budget is not None and budget()[0] > PAUSE_AFTER_S:
        return
    try:
        with busy(ctx.out, "Loading a preview…"):
            columns, rows = src.preview_groups(group)
    except CsPosthogError as exc:
        ctx.out.warn(f"no preview: {esc(exc.message)}")
        return
    if not rows or not ctx.out.human:
        return
    table = Table(title=f"Preview (the newest {esc(label)} groups)", title_justify="left")
    for c in columns:
        table.add_column(esc(c), overflow="ellipsis", max_width=36, no_wrap=True)
    for row in rows[:5]:
        table.add_row(*[esc("" if v is None else str(v)) for v in row[: len(columns)]])
    ctx.out.err.print(table)
