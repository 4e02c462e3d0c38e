"""Step 3: which Person property holds the customer's (company's) ID.

The property is typed with autocomplete from PostHog's Person property definitions (fetched in the
background as the user types); any custom name is accepted. Then the wizard says how many Persons
have it set: only those can be attached to a customer.
"""

from __future__ import annotations

from typing import Any

import questionary

from cs_posthog.config import Identification, Operator, PersonFilter
from cs_posthog.errors import CsPosthogError
from cs_posthog.wizard.context import StopWizard, WizardContext, esc
from cs_posthog.wizard.ui import PAUSE_AFTER_S, NameCompleter, add_footer, budget_of, busy, paused_text, threaded

SUPPORT_EMAIL = "support@customerscore.io"

# one line per paragraph or item: rich wraps them to the terminal's width (the caller says how to
# continue: connect resumes here)
NOT_SURE = (
    "Customerscore attaches each PostHog Person to one of your customers by an ID stored on the Person. "
    "Your options:\n"
    "  • Store the customer's (company's) ID in a Person property on every Person, e.g. "
    "posthog.identify(user_id, {\"company_id\": \"acme-42\"}) or posthog.setPersonProperties(...). "
    "Use the same ID as the customer's External ID in Customerscore.\n"
    f"  • Not sure how your PostHog is set up? Contact Customerscore support at {SUPPORT_EMAIL}."
)


def ask_identification_kind(default: str = "property") -> str:
    return questionary.select(
        "How are Persons tied to a customer?",  # with the answer, fits one line of 80 columns
        choices=[
            questionary.Choice("A Person property holds the customer's ID", value="property"),
            questionary.Choice("I'm not sure", value="unsure"),
        ],
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
    if ask_identification_kind() == "unsure":
        ctx.out.info(NOT_SURE)
        raise StopWizard()

    completer = property_completer(ctx)
    ctx.out.info("[dim]Type to search your Person properties (Tab completes); any name is accepted.[/dim]")
    default = ctx.prefill.customer_property or (prev.property if prev else "")
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
