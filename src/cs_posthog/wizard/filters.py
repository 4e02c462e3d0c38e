"""The ``--filter`` rule grammar, shared by ``connect --no-input`` and ``edit --no-input``.

    <property> = <value>       the Person property equals the value
    <property> != <value>      it does not equal the value (a Person without it matches too)
    <property> is set
    <property> is not set

Property names may contain spaces (``plan tier = gold``): the rule is split at the first `` = ``
or `` != `` (or, failing that, at the first ``=`` / ``!=``). Surrounding spaces are trimmed; put a
value (or a name) in double or single quotes to keep spaces at its ends (``tier = "Gold "``), to
match an empty string (``plan = ""``), or when a name contains `` = `` or starts with a quote.
Values are compared as text.
"""

from __future__ import annotations

import re

from cs_posthog.config import Operator, PersonFilter


class FilterSyntaxError(ValueError):
    """A rule that does not follow the grammar; the message says why."""


_SUFFIXES = ((" is not set", "is_not_set"), (" is set", "is_set"))
_QUOTES = ('"', "'")


def _unquote(text: str, what: str, rule: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] == text[0]:
        return text[1:-1]
    if text[:1] in _QUOTES:
        raise FilterSyntaxError(f"{rule!r}: the {what} opens a quote that is not closed")
    return text


def _split_quoted_name(rule: str) -> tuple[str, str] | None:
    """``"a = b" = c`` -> (``a = b``, `` = c``) when the rule starts with a quoted name."""
    if rule[:1] not in _QUOTES:
        return None
    end = rule.find(rule[0], 1)
    if end < 0:
        return None
    return rule[1:end], rule[end + 1 :]


def parse_filter(rule: str) -> PersonFilter:
    """One ``--filter`` rule as a ``PersonFilter``; ``FilterSyntaxError`` says what is wrong."""
    text = rule.strip()
    if not text:
        raise FilterSyntaxError("an empty rule")
    quoted = _split_quoted_name(text)
    lowered = text.lower()
    if lowered in ("is set", "is not set"):
        raise FilterSyntaxError(f"{rule!r}: the property name is missing")

    for suffix, op in _SUFFIXES:
        if lowered.endswith(suffix):
            name = text[: -len(suffix)]
            if quoted is not None and quoted[1].strip().lower() == suffix.strip():
                name = quoted[0]
            else:
                name = _unquote(name, "property name", rule)
            if not name.strip():
                raise FilterSyntaxError(f"{rule!r}: the property name is missing")
            return PersonFilter(property=name, operator=Operator(op))

    if quoted is not None:
        name, rest = quoted
        m = re.match(r"\s*(!=|=)(.*)$", rest, re.S)
        if not m:
            raise FilterSyntaxError(f"{rule!r}: expected = or != after the quoted property name")
        op_text, value = m.group(1), m.group(2)
    else:
        best: tuple[int, str] | None = None
        for token in (" != ", " = "):
            at = text.find(token)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, token)
        if best is None:  # no spaced operator: the first bare one
            for token in ("!=", "="):
                at = text.find(token)
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, token)
        if best is None:
            raise FilterSyntaxError(
                f"{rule!r}: no operator; use '<property> = <value>', '!=', 'is set' or 'is not set'"
            )
        at, token = best
        name, op_text, value = text[:at], token.strip(), text[at + len(token) :]
        name = _unquote(name, "property name", rule)
    if not name.strip():
        raise FilterSyntaxError(f"{rule!r}: the property name is missing")
    if not value.strip():
        raise FilterSyntaxError(f"{rule!r}: the value is missing (write \"\" to match an empty string)")
    value = _unquote(value, "value", rule)
    op = Operator.EQUALS if op_text == "=" else Operator.NOT_EQUALS
    return PersonFilter(property=name, operator=op, value=value)


def format_filter(f: PersonFilter) -> str:
    """The rule text that ``parse_filter`` reads back to the same filter."""
    name = f.property
    needs_quote = (
        name != name.strip() or " = " in name or " != " in name or name[:1] in _QUOTES
        or (not f.operator.needs_value and ("=" in name))
    )
    if needs_quote:
        q = "'" if '"' in name else '"'
        name = f"{q}{name}{q}"
    if not f.operator.needs_value:
        return f"{name} {f.operator.label}"
    value = f.value or ""
    ends_like_operator = (" " + value.lower()).endswith((" is set", " is not set"))
    if value != value.strip() or not value or value[:1] in _QUOTES or ends_like_operator:
        q = "'" if '"' in value else '"'
        value = f"{q}{value}{q}"
    return f"{name} {'=' if f.operator.value == 'equals' else '!='} {value}"


# --- conditions that leave no one ------------------------------------------------------------
def contradiction(f: PersonFilter, customer_property: str | None, contact_id: str = "person_id") -> str | None:
    """Why ``f`` ("it ...") cannot hold together with the locked conditions (the customer id, and the contact id
    when it is a Person property, set and not empty): no Person could match it. None when it can.
    ``customer_property`` None: the customer is a PostHog group, no Person property is locked."""
    locked = [(customer_property, "the customer id")] if customer_property is not None else []
    if contact_id != "person_id":
        locked.append((contact_id, "the contact id"))
    for prop, what in locked:
        if f.property != prop:
            continue
        op = f.operator.value
        if op == "is_not_set":
            return f"it contradicts the locked condition `{prop} is set` ({what}): no Person would be synced"
        if op == "equals" and not (f.value or "").strip():
            return (f"it contradicts the locked condition `{prop} is set, not empty` "
                    f"(an empty {what.removeprefix('the ')} names no one): no Person would be synced")
    return None


def conflict(a: PersonFilter, b: PersonFilter) -> bool:
    """Whether two conditions on one property exclude each other (no value matches both): set and
    not set, equal and not set, equal to two different values, equal and not equal to one value."""
    if a.property != b.property:
        return False
    pair = {a.operator.value, b.operator.value}
    if pair == {"is_set", "is_not_set"} or pair == {"equals", "is_not_set"}:
        return True
    if pair == {"equals"}:
        return a.value != b.value
    if pair == {"equals", "not_equals"}:
        return a.value == b.value
    return False


def refusal(new: PersonFilter, others: list[PersonFilter], customer_property: str | None,
            contact_id: str = "person_id") -> str | None:
    """Why ``new`` cannot be added to ``others`` (the user's conditions so far): it contradicts a
    locked condition, or one of ``others``. None when it can."""
    why = contradiction(new, customer_property, contact_id)
    if why is not None:
        return why
    for other in others:
        if conflict(new, other):
            return f"it excludes `{format_filter(other)}` (no value matches both): no Person would be synced"
    return None


def refusals(filters: list[PersonFilter], customer_property: str | None,
             contact_id: str = "person_id") -> list[tuple[PersonFilter, str]]:
    """``(filter, why)`` for each of ``filters`` that contradicts the locked conditions or one before it."""
    out = []
    for i, f in enumerate(filters):
        why = refusal(f, list(filters[:i]), customer_property, contact_id)
        if why is not None:
            out.append((f, why))
    return out
