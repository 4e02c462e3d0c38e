"""``connect --no-input`` and ``edit --no-input``: the wizard's checks, no prompts.

Every missing or invalid flag is named in one error (exit 2). Credential problems exit 77
(PostHog unreachable: 75). Keys come from the environment or from stdin (``--api-key-stdin``,
``--cs-api-key-stdin``; with both, the PostHog key is the first line and the Customerscore key the
second). Unknown event or property names are warnings, not errors: PostHog may not have seen them yet.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from cs_posthog.config import (
    CUSTOMERSCORE_URL,
    DEFAULT_BACKFILL_DAYS,
    GROUP_INDEXES,
    Config,
    ContactAttribute,
    CustomerscoreSettings,
    Draft,
    EventsSettings,
    Identification,
    PersonsSettings,
    codename_problem,
    load_config,
    suggest_codename,
)
from cs_posthog.errors import (
    AuthError,
    CsPosthogError,
    MissingScopesError,
    PermissionDeniedError,
    UnavailableError,
    UsageError,
)
from cs_posthog.output import count
from cs_posthog.posthog.client import GROUP_SCOPE, GroupType
from cs_posthog.posthog.credentials import group_scope_error, missing_scopes_sentence, raise_for_check, region_note
from cs_posthog.posthog.hogql import GroupRef
from cs_posthog.posthog.regions import normalize_host
from cs_posthog.secrets import register_secret
from cs_posthog.settings import Settings
from cs_posthog.wizard import step_customerscore, step_posthog
from cs_posthog.wizard.context import WizardContext, esc
from cs_posthog.wizard.filters import FilterSyntaxError, format_filter, parse_filter, refusals
from cs_posthog.wizard.flow import (
    _keys_changed,
    _project_changed,
    describe_changes,
    identification_warning,
    save_and_sync,
    save_and_sync_edit,
)
from cs_posthog.wizard.step_identification import contacts_rule, find_group_type, group_identification, has_value
from cs_posthog.wizard.step_persons import (
    ATTRIBUTES_REMINDER,
    attributes_line,
    events_scope_line,
    persons_badge,
    sync_filters,
)
from cs_posthog.wizard.step_posthog import REGION_NAMES, check_ok, explain_failure

if TYPE_CHECKING:
    from collections.abc import Callable

    from cs_posthog.config import PersonFilter, PostHogSettings
    from cs_posthog.output import Output
    from cs_posthog.paths import Paths
    from cs_posthog.posthog.credentials import CredentialCheck
    from cs_posthog.secrets import SecretStore
    from cs_posthog.wizard.context import CheckCredentials, DataSource, MakeSource

KEYS_HINT = (
    "Keys come from POSTHOG_PERSONAL_API_KEY and CUSTOMERSCORE_API_KEY, or from stdin with "
    "--api-key-stdin / --cs-api-key-stdin (both: one key per line, PostHog first)."
)


@dataclass
class Flags:
    api_key_stdin: bool = False
    cs_api_key_stdin: bool = False
    project: str | None = None
    host: str | None = None
    customer_property: str | None = None
    events: list[str] = field(default_factory=list)
    all_events: bool = False
    filters: list[str] = field(default_factory=list)
    cs_url: str | None = None
    tracker_key: str | None = None
    contact_id: str | None = None
    filter_events: bool | None = None  # --filter-events / --no-filter-events; None: not given
    customer_group: str | None = None  # a group type's name or index
    customer_group_property: str | None = None
    contact_attributes: list[str] = field(default_factory=list)  # PROP[=CODENAME]
    no_filters: bool = False  # edit: remove every filter of the user's (the locked one stays)
    no_contact_attributes: bool = False  # edit: send no contact attribute

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Flags:
        """The flags among a command's parsed options (``locals()`` of cli's connect or edit): the
        one place their names are mapped, so the options are listed once, in cli.py's signatures.
        Typer names the repeatable ones in the singular (``event``, ``filter``)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            option = _SINGULAR.get(f.name, f.name)
            if option in options:
                values[f.name] = options[option]
        for name in _SINGULAR:
            values[name] = list(values.get(name) or [])
        return cls(**values)


# Flags field -> its repeatable option's name
_SINGULAR = {"events": "event", "filters": "filter", "contact_attributes": "contact_attribute"}


# flag -> edit section it belongs to
FLAG_SECTION = {
    "--api-key-stdin": "posthog",
    "--cs-api-key-stdin": "customerscore",
    "--project": "posthog",
    "--host": "posthog",
    "--cs-url": "customerscore",
    "--tracker-key": "customerscore",
    "--customer-property": "identification",
    "--customer-group": "identification",
    "--customer-group-property": "identification",
    "--contact-attribute": "persons",
    "--event": "events",
    "--all-events": "events",
    "--filter": "persons",
    "--contact-id": "persons",
    "--filter-events": "persons",
    "--no-filter-events": "persons",
    "--no-filters": "persons",
    "--no-contact-attributes": "persons",
}


def given_flags(f: Flags) -> list[str]:
    out = []
    for name, value in (
        ("--api-key-stdin", f.api_key_stdin), ("--cs-api-key-stdin", f.cs_api_key_stdin),
        ("--project", f.project), ("--host", f.host), ("--cs-url", f.cs_url), ("--tracker-key", f.tracker_key),
        ("--customer-property", f.customer_property), ("--event", f.events), ("--all-events", f.all_events),
        ("--filter", f.filters), ("--contact-id", f.contact_id),
        ("--customer-group", f.customer_group), ("--customer-group-property", f.customer_group_property),
        ("--contact-attribute", f.contact_attributes), ("--no-filters", f.no_filters),
        ("--no-contact-attributes", f.no_contact_attributes),
    ):
        if value not in (None, False, []):
            out.append(name)
    if f.filter_events is not None:
        out.append("--filter-events" if f.filter_events else "--no-filter-events")
    return out


# --- keys from stdin -------------------------------------------------------------------------
def read_stdin_keys(f: Flags, stdin: IO[str] | None = None) -> tuple[str | None, str | None]:
    """(PostHog key, Customerscore key) read from stdin as the flags ask; None where not asked."""
    if not (f.api_key_stdin or f.cs_api_key_stdin):
        return None, None
    stdin = stdin or sys.stdin
    flag = "--api-key-stdin" if f.api_key_stdin else "--cs-api-key-stdin"
    try:
        is_tty = stdin.isatty()
    except (AttributeError, ValueError):
        is_tty = False
    if is_tty:
        raise UsageError(f"{flag}: stdin is a terminal",
                         hint="Pipe the key in, e.g. `printenv KEY | cs-posthog connect --no-input ...`.")
    try:
        text = stdin.read()
    except UnicodeDecodeError:  # a UTF-8 locale reads stdin strictly
        raise UsageError(f"{flag}: stdin is not UTF-8 text", hint=KEYS_HINT) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    wanted = int(f.api_key_stdin) + int(f.cs_api_key_stdin)
    if len(lines) < wanted:
        what = "two lines (PostHog key, then Customerscore key)" if wanted == 2 else "the key"
        raise UsageError(f"{flag}: stdin holds {len(lines)} line(s), expected {what}", hint=KEYS_HINT)
    if len(lines) > wanted:
        raise UsageError(f"{flag}: stdin holds {len(lines)} lines, expected {wanted}", hint=KEYS_HINT)
    ph = lines[0] if f.api_key_stdin else None
    cs = lines[-1] if f.cs_api_key_stdin else None

    for key in (ph, cs):  # masked, and refused in a config field, from now on
        register_secret(key or "")
    return ph, cs


# --- checks ----------------------------------------------------------------------------------
class Problems:
    def __init__(self) -> None:
        self.missing: list[str] = []
        self.invalid: list[str] = []

    def raise_if_any(self, command: str) -> None:
        if not (self.missing or self.invalid):
            return
        parts = []
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        parts.extend(self.invalid)  # each names its flag and says what is wrong with it
        hint = f"See `cs-posthog {command} --help`."
        if any("key" in m for m in self.missing + self.invalid):
            hint += " " + KEYS_HINT
        raise UsageError("; ".join(parts), hint=hint)


def check_host(host: str, settings: Settings) -> str | None:
    """Why ``--host`` is unusable, or None (the client's own reading of a self-hosted address)."""
    try:
        normalize_host(host, settings)
    except UsageError as exc:
        return exc.message
    return None


def _verdict(result: bool | str) -> str | None:
    return None if result is True else (result or "invalid")


def check_filters(rules: list[str], problems: Problems) -> list[PersonFilter]:
    parsed = []
    for rule in rules:
        try:
            parsed.append(parse_filter(rule))
        except (FilterSyntaxError, ValueError) as exc:
            problems.invalid.append(f"--filter {rule!r}: {_first_line(exc)}")
    return parsed


def check_conditions(filters: list[PersonFilter], customer_property: str | None, contact_id: str, problems: Problems,
                     *, flag: str = "--filter") -> None:
    """Conditions no Person can match (``organization_id is not set`` beside the locked
    ``organization_id is set``; ``plan = a`` and ``plan = b``): refused like a syntax error.
    ``customer_property`` None: a group is the customer (no locked condition)."""
    if customer_property is not None and not customer_property.strip():
        return  # reported as missing or empty by the caller
    prop = customer_property.strip() if customer_property is not None else None
    for bad, why in refusals(filters, prop, (contact_id or "person_id").strip() or "person_id"):
        problems.invalid.append(f"{flag} {format_filter(bad)!r}: {why}")


def check_fields(f: Flags, problems: Problems) -> None:
    """Each name flag against the config field it fills (the model's own limits, e.g. 400
    characters), so a value the config cannot hold is a usage error naming the flag, not a crash."""
    events = [e.strip() for e in f.events if e.strip()]
    for flag, model, data in (
        ("--customer-property", Identification, {"property": (f.customer_property or "").strip()}),
        ("--customer-group-property", Identification,
         {"property": (f.customer_group_property or "").strip(), "kind": "group", "group_type_index": 0}),
        ("--customer-group", Identification,
         {"group_type": (f.customer_group or "").strip(), "kind": "group", "group_type_index": 0}),
        ("--contact-id", PersonsSettings, {"contact_id": (f.contact_id or "").strip()}),
        ("--event", EventsSettings, {"selected": events}),
    ):
        if not next(iter(data.values())):
            continue  # not given, or empty: reported by the caller
        try:
            model.model_validate(data)
        except ValidationError as exc:
            problems.invalid.append(f"{flag}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}")


def check_identification_flags(f: Flags, problems: Problems) -> None:
    """--customer-property and --customer-group exclude each other; a group is a name or an index 0-4."""
    if f.customer_property is not None and f.customer_group is not None:
        problems.invalid.append("--customer-property and --customer-group: pick one (a Person property or a "
                                "PostHog group names the customer)")
    if f.customer_group is not None:
        group = f.customer_group.strip()
        if not group:
            problems.invalid.append("--customer-group: empty")
        elif group.isdigit() and int(group) not in GROUP_INDEXES:
            problems.invalid.append(f"--customer-group {group!r}: a group type index is 0 to 4")
    if f.customer_group_property is not None and not f.customer_group_property.strip():
        problems.invalid.append("--customer-group-property: empty")


def check_attributes(rules: list[str], problems: Problems) -> list[ContactAttribute]:
    """``--contact-attribute PROP[=CODENAME]`` (split at the last ``=``; the codename defaults to the
    property's name in snake_case), each checked as a Customerscore attribute codename."""
    out: list[ContactAttribute] = []
    for rule in rules:
        prop, sep, code = rule.rpartition("=")
        if not sep:
            prop, code = rule, ""
        prop, code = prop.strip(), code.strip()
        if not prop:
            problems.invalid.append(f"--contact-attribute {rule!r}: no property name")
            continue
        codename = code or suggest_codename(prop)
        why = codename_problem(codename)
        if why is not None:
            problems.invalid.append(f"--contact-attribute {rule!r}: {why}")
            continue
        try:
            out.append(ContactAttribute(property=prop, codename=codename))
        except ValidationError as exc:
            problems.invalid.append(f"--contact-attribute {rule!r}: {_first_line(exc)}")
    try:
        PersonsSettings(attributes=out)
    except ValidationError as exc:
        problems.invalid.append(f"--contact-attribute: {_first_line(exc)}")
    return out


def resolve_group(out: Output, source: DataSource, wanted: str, prop: str | None) -> Identification:
    """``--customer-group TYPE`` (a name or an index) as the identification, checked against the
    project's group types. Without Group (Read): an index goes on, nameless, with a warning; a name
    cannot be found (exit 77, the scope named)."""
    text = wanted.strip()
    index = int(text) if text.isdigit() and len(text) == 1 else None
    try:
        types = source.group_types()
    except MissingScopesError:
        if index is None:
            raise group_scope_error(f"needed to find the group type {text!r} by its name") from None
        out.warn(f"{missing_scopes_sentence([GROUP_SCOPE])}: the name of group type {index} cannot be read; "
                 "saved by its index.")
        return group_identification(index, None, prop)
    except CsPosthogError as exc:
        if index is None:
            raise
        out.warn(f"could not list the group types: {esc(exc.message)}; saved by its index.")
        return group_identification(index, None, prop)
    found = find_group_type(types, text)
    if found is None:
        known = ", ".join(f"{t.name} ({t.index})" for t in types)
        if index is not None:
            out.warn(f"this project has no group type {index} yet" + (f" (it has {esc(known)})" if known else "")
                     + "; saved by its index.")
            return group_identification(index, None, prop)
        raise UsageError(f"--customer-group {text!r}: no such group type in this project",
                         hint=f"Its group types: {known}." if known else
                         "The project has no group types yet: PostHog creates them when your app calls "
                         "posthog.group(TYPE, KEY).")
    return group_identification(found.index, found.name, prop)


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    # pydantic's message: keep the reason, not the model dump
    if "validation error" in text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = lines[2] if len(lines) > 2 else lines[-1]
        text = text.replace("Value error, ", "").split(" [type=")[0]
    return text.splitlines()[0] if text else type(exc).__name__


def check_credentials_or_raise(check_fn: CheckCredentials, key: str, project: str,
                               host: str | None) -> CredentialCheck:
    """Run the PostHog check and turn a failure into the right error and exit code: a project the
    key cannot reach (absent, or not among the key's projects: PostHog does not tell which) names
    --project, 77 like the key's other problems; PostHog unreachable 75."""
    check = check_fn(key, project, host=host)
    if check_ok(check):
        return check
    if check.key_valid and not check.unreachable and check.project_found is False:
        raise PermissionDeniedError(
            f"--project {project}: {explain_failure(check, project, host)}",
            hint="Use the number in the project's URL (…/project/12345), or paste that URL; a key limited to "
                 "some projects must include this one (PostHog: Settings → Personal API keys).",
            service="PostHog",
        )
    raise_for_check(check)
    raise UnavailableError(explain_failure(check, project, host), service="PostHog")  # not ok, yet no reason


def check_cs_keys_or_raise(out: Output, url: str, cs_key: str, tracker_key: str,
                           env: Settings) -> None:
    """Check both Customerscore keys with requests that change nothing (step 2's check): a refused
    key exits 77 before anything is written; Customerscore unreachable is a warning."""
    verdict = step_customerscore.check_key(url, cs_key, settings=env)
    if verdict.status == "ok":
        verdict = step_customerscore.check_key(url, cs_key, tracker_key, settings=env)
        if verdict.status == "rejected":
            raise AuthError(
                f"--tracker-key: {verdict.reason}",
                hint="The tracker key (CS-…) is in the tracker settings of the Customerscore app. Nothing was saved.",
                service="Customerscore", status=401,
            )
    elif verdict.status == "rejected":
        raise AuthError(
            f"the Customerscore key: {verdict.reason}",
            hint="Check CUSTOMERSCORE_API_KEY (or the key given with --cs-api-key-stdin). Nothing was saved.",
            service="Customerscore", status=401,
        )
    if verdict.status == "ok":
        out.success("Customerscore accepted the API key and the tracker key")
    else:
        out.warn(f"the Customerscore keys were not checked: {esc(verdict.reason)}; they are saved as given "
                 "(the first sync will tell if Customerscore refuses them).")


def note_region(out: Output, check: CredentialCheck, settings: PostHogSettings) -> None:
    """One line when --project named the other Cloud than the key's: the config holds the key's."""
    if region_note(check) is None:
        return
    named = check.switched_from
    if named is None:  # (a note names the region it switched from)
        return
    named = REGION_NAMES.get(named, named)
    home = REGION_NAMES.get(settings.region.value, settings.region.value)
    out.warn(esc(f"--project is an address of {named}, but this key works in {home}: "
                 f"saving {home} ({settings.host})"))


@dataclass
class _Wanted:
    events: list[str]
    identification: Identification


def data_checks(out: Output, source: DataSource, wanted: _Wanted, *, all_events: bool) -> list[str] | None:
    """Warn about names PostHog does not know; return the event list for --all-events."""
    names: list[str] | None = None
    try:
        names = source.event_names()
    except CsPosthogError as exc:
        out.warn(f"could not list the events: {esc(exc.message)}")
    if all_events:
        if not names:
            raise UsageError(
                "--all-events: PostHog has no event definitions for this project yet",
                hint="Name the events with --event NAME (repeatable).",
            )
        return list(dict.fromkeys(names))
    if names is not None:
        unknown = [e for e in wanted.events if e not in names]
        if unknown:
            out.warn("not seen in PostHog yet (kept): " + esc(", ".join(unknown)))
    ident = wanted.identification
    if ident.is_group:
        _group_coverage(out, source, ident)
        return None
    prop = ident.property or ""
    try:
        with_prop = source.count_persons(has_value(prop))
        if with_prop == 0:
            out.warn(f"no Person has {esc(prop)} set to a value: nothing can be attached to a customer yet.")
        else:
            total = source.count_persons([])
            out.info(f"{with_prop:,} of {total:,} Persons have {esc(prop)} set, not empty; only those can be attached "
                     "to a customer.")
    except CsPosthogError as exc:
        out.warn(f"could not count Persons: {esc(exc.message)}")
    return None


def _group_coverage(out: Output, source: DataSource, ident: Identification) -> None:
    """"41 of 60 companies have events in the last 30 days; 1,912 of 2,400 Persons belong to one", and
    the contacts rule."""
    assert ident.group_type_index is not None  # (a group identification has its index)
    group = GroupRef(ident.group_type_index, ident.group_property)
    label = ident.group_label
    plural = GroupType(index=group.index, name=ident.group_type).plural if ident.group_type else f"groups of {label}"
    days = DEFAULT_BACKFILL_DAYS
    try:
        total = source.count_groups(GroupRef(group.index))
        with_events, persons = source.group_coverage(group, days)
        all_persons = source.count_persons([])
    except CsPosthogError as exc:
        out.warn(f"could not count the {esc(plural)}: {esc(exc.message)}")
    else:
        has = f"with {group.prop} " if group.prop is not None else ""
        line = (f"{with_events:,} of {total:,} {plural} {has}have events in the last {days} days; "
                f"{persons:,} of {all_persons:,} Persons belong to one.")
        if with_events:
            out.info(esc(line))
        else:
            out.warn(esc(line[:1].lower() + line[1:]) + " Nothing can be attached to a customer yet.")
    out.info(esc(contacts_rule(label)))


# --- connect ---------------------------------------------------------------------------------
def connect_no_input(
    out: Output, f: Flags, *, paths: Paths, secrets: SecretStore, env: Settings,
    no_sync: bool, check_fn: CheckCredentials | None = None,
    make_source: MakeSource | None = None, stdin: IO[str] | None = None, caller_syncs: bool = False,
    first_sync: Callable[[Output, Config], None] | None = None,
) -> Config:
    if paths.config_file.exists():
        raise UsageError(
            "already connected: a configuration exists",
            hint="Change it with `cs-posthog edit --no-input <flags>`, "
                 "or remove it with `cs-posthog disconnect --yes` first.",
        )
    ph_key, cs_key = _connect_keys(f, stdin, secrets)
    filters, attributes = _check_connect_flags(f, ph_key, cs_key, env)
    assert ph_key and cs_key and f.project and f.tracker_key and (f.customer_property or f.customer_group)
    register_secret(ph_key)
    register_secret(cs_key)

    check = check_credentials_or_raise(check_fn or functools.partial(step_posthog.default_check, settings=env),
                                       ph_key, f.project.strip(), f.host)
    posthog = step_posthog.settings_from_check(check)
    note_region(out, check, posthog)
    out.success(esc(step_posthog.describe_project(posthog)))

    customerscore = CustomerscoreSettings(api_url=f.cs_url or CUSTOMERSCORE_URL, tracker_key=f.tracker_key.strip())
    check_cs_keys_or_raise(out, customerscore.api_url, cs_key, customerscore.tracker_key, env)
    draft = Draft(posthog=posthog, customerscore=customerscore)
    ctx = WizardContext(out=out, draft=draft, paths=paths, secrets=secrets, env=env, mode="connect",
                        make_source=make_source, caller_syncs=caller_syncs, first_sync=first_sync)
    ctx.pending_secrets = {"posthog": ph_key, "customerscore": cs_key}
    source = ctx.source()
    if f.customer_group is not None:
        ident = resolve_group(out, source, f.customer_group, _stripped(f.customer_group_property))
    else:
        ident = Identification(property=(f.customer_property or "").strip())
    wanted = _Wanted(events=[e.strip() for e in f.events], identification=ident)
    events = data_checks(out, source, wanted, all_events=f.all_events) or wanted.events

    cfg = Config(
        posthog=posthog,
        customerscore=customerscore,
        identification=ident,
        events=EventsSettings(selected=events),
        # a new setup: the filters choose the events too unless --no-filter-events (config.PersonsSettings)
        persons=PersonsSettings(filters=filters, attributes=attributes,
                                contact_id=(f.contact_id or "person_id").strip(),
                                filter_events=True if f.filter_events is None else f.filter_events),
    )
    _report_persons(out, source, cfg)
    save_and_sync(ctx, cfg, no_sync=no_sync)
    return cfg


def _connect_keys(f: Flags, stdin: IO[str] | None, secrets: SecretStore) -> tuple[str | None, str | None]:
    """The two keys: from stdin when the flags say so, else from the environment or where they are stored."""
    ph_key, cs_key = read_stdin_keys(f, stdin)
    if ph_key is None and not f.api_key_stdin:
        found = secrets.find("posthog")
        ph_key = found.value if found else None
    if cs_key is None and not f.cs_api_key_stdin:
        found = secrets.find("customerscore")
        cs_key = found.value if found else None
    return ph_key, cs_key


def _check_connect_flags(f: Flags, ph_key: str | None, cs_key: str | None,
                         env: Settings) -> tuple[list[PersonFilter], list[ContactAttribute]]:
    """Every missing or invalid flag or key of a new setup, named in one error (exit 2); else the
    Person filters and contact attributes given."""

    p = Problems()
    if not ph_key:
        p.missing.append("the PostHog key")
    elif (v := _verdict(step_posthog.validate_posthog_key(ph_key, have_current=False))) is not None:
        p.invalid.append(f"the PostHog key: {v}")
    if not f.project:
        p.missing.append("--project")
    elif (v := _verdict(step_posthog.validate_project_ref(f.project, env))) is not None:
        p.invalid.append(f"--project {f.project!r}: {v}")
    if f.host is not None and (v := check_host(f.host, env)) is not None:
        p.invalid.append(f"--host: {v}")
    if not cs_key:
        p.missing.append("the Customerscore key")
    elif (v := _verdict(step_customerscore.validate_cs_key(cs_key, have_current=False))) is not None:
        p.invalid.append(f"the Customerscore key: {v}")
    if not f.tracker_key:
        p.missing.append("--tracker-key")
    elif (v := _verdict(step_customerscore.validate_tracker_key(f.tracker_key))) is not None:
        p.invalid.append(f"--tracker-key: {v}")
    if f.cs_url and (v := _verdict(step_customerscore.validate_cs_url(f.cs_url))) is not None:
        p.invalid.append(f"--cs-url: {v}")
    if not (f.customer_property or "").strip() and f.customer_group is None:
        p.missing.append("--customer-property (or --customer-group)")
    check_identification_flags(f, p)
    if f.customer_group_property is not None and f.customer_group is None:
        p.invalid.append("--customer-group-property: goes with --customer-group")
    if f.events and f.all_events:
        p.invalid.append("--event and --all-events: pick one")
    elif not f.events and not f.all_events:
        p.missing.append("--event (or --all-events)")
    elif any(not e.strip() for e in f.events):
        p.invalid.append("--event: an empty event name")
    check_fields(f, p)
    filters = check_filters(f.filters, p)
    if f.contact_id is not None and not f.contact_id.strip():
        p.invalid.append("--contact-id: empty")
    attributes = check_attributes(f.contact_attributes, p)
    check_conditions(filters, None if f.customer_group is not None else (f.customer_property or ""),
                     f.contact_id or "person_id", p)
    p.raise_if_any("connect")
    return filters, attributes


def _stripped(text: str | None) -> str | None:
    return text.strip() if text is not None else None


def _report_persons(out: Output, source: DataSource, cfg: Config) -> None:
    """The Persons the saved conditions select, and whose events are sent; a warning when no Person
    matches (saved all the same: a script may set up before the data arrives)."""
    ident = cfg.identification
    label = ident.group_label if ident.is_group else None
    shown = cfg.all_filters()
    conditions = esc(' AND '.join(x.describe() for x in shown)) if shown else f"every Person of a {esc(label)}"
    scope = events_scope_line(cfg.persons.filter_events, bool(cfg.persons.filters), label)
    expanded = sync_filters(cfg.all_filters(), ident.person_property, cfg.persons.contact_id)
    try:
        if ident.is_group and ident.group_type_index is not None:
            group = GroupRef(ident.group_type_index, ident.group_property)
            n = source.group_coverage(group, DEFAULT_BACKFILL_DAYS, cfg.events.selected, expanded)[1]
        else:
            n = source.count_persons(expanded)
    except CsPosthogError as exc:
        out.warn(f"could not count the Persons to sync: {esc(exc.message)}")
        out.info(f"{count(len(cfg.events.selected), 'event')}; Persons: {conditions}. {esc(scope)}")
        return
    if n == 0:
        out.warn(f"no Person matches {conditions}: no contact will be sent until one does "
                 "(saved all the same; change it with `cs-posthog edit persons`).")
    else:
        out.info(f"{count(len(cfg.events.selected), 'event')}; {esc(persons_badge(n, label))} ({conditions}).")
    out.info(esc(scope))
    if cfg.persons.attributes:
        out.info(esc(attributes_line(cfg.persons.attributes)) + ". " + esc(ATTRIBUTES_REMINDER))


# --- edit ------------------------------------------------------------------------------------
def edit_no_input(
    out: Output, f: Flags, *, paths: Paths, secrets: SecretStore, env: Settings,
    section: str | None, check_fn: CheckCredentials | None = None,
    make_source: MakeSource | None = None, stdin: IO[str] | None = None,
) -> Config:
    cfg = load_config(paths.config_file)
    _check_edit_scope(f, section)
    ph_key, cs_key = read_stdin_keys(f, stdin)
    filters, attributes = _check_edit_flags(f, cfg, ph_key, cs_key, env)

    draft = Draft.of(cfg)
    ctx = WizardContext(out=out, draft=draft, paths=paths, secrets=secrets, env=env, mode="edit",
                        make_source=make_source)
    if ph_key:
        register_secret(ph_key)
        ctx.pending_secrets["posthog"] = ph_key
    if cs_key:
        register_secret(cs_key)
        ctx.pending_secrets["customerscore"] = cs_key

    posthog_touched = ph_key is not None or f.project is not None or f.host is not None
    if posthog_touched:
        draft.posthog = _recheck_posthog(ctx, f, cfg, ph_key, check_fn)
    if cs_key is not None or f.tracker_key is not None or f.cs_url is not None:
        _recheck_customerscore(ctx, f, cfg, cs_key)
    _apply_edit_flags(draft, f, cfg, filters, attributes)
    group_flags = f.customer_group is not None or f.customer_group_property is not None
    if group_flags:
        draft.identification = _edited_group(out, ctx, f, cfg)
    if f.all_events or f.events or f.customer_property is not None or group_flags or posthog_touched:
        _edit_data_checks(out, ctx, draft, f)

    new = draft.to_config(cfg)
    changes = describe_changes(cfg, new, _keys_changed(ctx))
    if not changes:
        out.info("Nothing changed.")
        return cfg
    for line in changes:
        out.info(f"  • {esc(line)}")
    if cfg.identification != new.identification:
        out.warn(esc(identification_warning(cfg, new)))
    if (f.filters or f.customer_property is not None or group_flags or f.contact_id is not None
            or f.filter_events is not None or f.contact_attributes or f.no_filters or f.no_contact_attributes):
        _report_edited_persons(out, ctx, new)
    if _project_changed(cfg.posthog, new.posthog) and not (f.events or f.all_events):
        out.warn("the project changed but the events did not: check them (`cs-posthog edit events`).")
    save_and_sync_edit(ctx, new, previous=cfg)
    return new


def _check_edit_scope(f: Flags, section: str | None) -> None:
    """Some flag to change, each of them in ``section`` when one is named (else exit 2)."""
    given = given_flags(f)
    if not given:
        raise UsageError(
            "nothing to change: --no-input needs the flags to change",
            hint="For example `cs-posthog edit events --no-input --event signup --event invoice_paid`; see --help.",
        )
    if section is not None:
        inside = ("posthog", "customerscore") if section == "credentials" else (section,)
        outside = [g for g in given if FLAG_SECTION[g] not in inside]
        if outside:
            raise UsageError(
                f"{', '.join(outside)}: not part of the {section!r} section",
                hint="Drop the section argument to change several sections at once.",
            )


def _check_edit_flags(f: Flags, cfg: Config, ph_key: str | None, cs_key: str | None,
                      env: Settings) -> tuple[list[PersonFilter], list[ContactAttribute]]:
    """Every invalid flag or key of an edit, named in one error (exit 2); else the Person filters and
    contact attributes given."""

    p = Problems()
    if ph_key is not None and (v := _verdict(
            step_posthog.validate_posthog_key(ph_key, have_current=False))) is not None:
        p.invalid.append(f"the PostHog key: {v}")
    if cs_key is not None and (v := _verdict(
            step_customerscore.validate_cs_key(cs_key, have_current=False))) is not None:
        p.invalid.append(f"the Customerscore key: {v}")
    if f.project is not None and (v := _verdict(step_posthog.validate_project_ref(f.project, env))) is not None:
        p.invalid.append(f"--project {f.project!r}: {v}")
    if f.host is not None and (v := check_host(f.host, env)) is not None:
        p.invalid.append(f"--host: {v}")
    if f.tracker_key is not None and (v := _verdict(
            step_customerscore.validate_tracker_key(f.tracker_key))) is not None:
        p.invalid.append(f"--tracker-key: {v}")
    if f.cs_url is not None and (v := _verdict(step_customerscore.validate_cs_url(f.cs_url))) is not None:
        p.invalid.append(f"--cs-url: {v}")
    if f.customer_property is not None and not f.customer_property.strip():
        p.invalid.append("--customer-property: empty")
    check_identification_flags(f, p)
    if f.customer_group_property is not None and f.customer_group is None and (
            f.customer_property is not None or not cfg.identification.is_group):
        p.invalid.append(f"--customer-group-property: the customer is {cfg.identification.describe()}; "
                         "give --customer-group TYPE too")
    attributes = check_attributes(f.contact_attributes, p)
    if f.contact_attributes and f.no_contact_attributes:
        p.invalid.append("--contact-attribute and --no-contact-attributes: pick one")
    if f.filters and f.no_filters:
        p.invalid.append("--filter and --no-filters: pick one")
    if f.events and f.all_events:
        p.invalid.append("--event and --all-events: pick one")
    elif any(not e.strip() for e in f.events):
        p.invalid.append("--event: an empty event name")
    check_fields(f, p)
    filters = check_filters(f.filters, p)
    if f.contact_id is not None and not f.contact_id.strip():
        p.invalid.append("--contact-id: empty")
    if not p.invalid and (f.filters or f.customer_property is not None or f.customer_group is not None
                          or f.contact_id is not None):
        # the conditions as they would be saved: the new ones, or the saved ones under a new property
        customer_property = (None if f.customer_group is not None else f.customer_property
                             if f.customer_property is not None else cfg.identification.person_property)
        check_conditions(filters if f.filters else list(cfg.persons.filters), customer_property,
                         f.contact_id if f.contact_id is not None else cfg.persons.contact_id, p,
                         flag="--filter" if f.filters else "saved filter")
    p.raise_if_any("edit")
    return filters, attributes


def _recheck_posthog(ctx: WizardContext, f: Flags, cfg: Config, ph_key: str | None,
                     check_fn: CheckCredentials | None) -> PostHogSettings:
    """A new PostHog key, project or host: checked with PostHog (the stored key when none is given)."""
    out = ctx.out
    key = ph_key or (found.value if (found := ctx.secrets.find("posthog")) else None)
    if not key:
        raise UsageError("missing the PostHog key", hint=KEYS_HINT)
    project = (f.project or str(cfg.posthog.project_id)).strip()
    host = f.host or (cfg.posthog.host if cfg.posthog.region.value == "self-hosted" else None)
    check_fn = check_fn or functools.partial(step_posthog.default_check, settings=ctx.env)
    check = check_credentials_or_raise(check_fn, key, project, host)
    settings = step_posthog.settings_from_check(check)
    note_region(out, check, settings)
    out.success(esc(step_posthog.describe_project(settings)))
    return settings


def _recheck_customerscore(ctx: WizardContext, f: Flags, cfg: Config, cs_key: str | None) -> None:
    """A new Customerscore key, tracker key or URL: both keys checked (the stored key when none is given)."""
    url = f.cs_url or cfg.customerscore.api_url
    tracker = (f.tracker_key or cfg.customerscore.tracker_key).strip()
    key = cs_key or (found.value if (found := ctx.secrets.find("customerscore")) else None)
    if not key:
        raise UsageError("missing the Customerscore key", hint=KEYS_HINT)
    check_cs_keys_or_raise(ctx.out, url, key, tracker, ctx.env)


def _edited_group(out: Output, ctx: WizardContext, f: Flags, cfg: Config) -> Identification:
    """--customer-group (and --customer-group-property): the group type checked with PostHog; the
    property alone changes what holds the id on the saved group type."""
    prop = _stripped(f.customer_group_property)
    if f.customer_group is not None:
        return resolve_group(out, ctx.source(), f.customer_group, prop)
    saved = cfg.identification
    assert saved.group_type_index is not None  # (checked: the saved customer is a group)
    return group_identification(saved.group_type_index, saved.group_type, prop)


def _apply_edit_flags(draft: Draft, f: Flags, cfg: Config, filters: list[PersonFilter],
                      attributes: list[ContactAttribute]) -> None:
    """The sections the flags change, onto the draft (the saved values where a flag is not given)."""
    if f.tracker_key is not None or f.cs_url is not None:
        draft.customerscore = CustomerscoreSettings(
            api_url=f.cs_url or cfg.customerscore.api_url,
            tracker_key=(f.tracker_key or cfg.customerscore.tracker_key).strip(),
        )
    if f.customer_property is not None:
        draft.identification = Identification(property=f.customer_property.strip())
    if f.events:
        draft.events = EventsSettings(selected=[e.strip() for e in f.events])
    if (f.filters or f.contact_id is not None or f.filter_events is not None or f.contact_attributes
            or f.no_filters or f.no_contact_attributes):
        draft.persons = PersonsSettings(
            filters=filters if f.filters or f.no_filters else cfg.persons.filters,
            attributes=attributes if f.contact_attributes or f.no_contact_attributes else cfg.persons.attributes,
            contact_id=(f.contact_id or cfg.persons.contact_id).strip(),
            filter_events=cfg.persons.filter_events if f.filter_events is None else f.filter_events,
        )


def _edit_data_checks(out: Output, ctx: WizardContext, draft: Draft, f: Flags) -> None:
    """The edited events and customer property against PostHog's data (--all-events: its events)."""
    source = ctx.source()
    events, ident = draft.events, draft.identification
    assert events is not None and ident is not None  # (a draft of a saved config: every section is set)
    wanted = _Wanted(events=events.selected, identification=ident)
    names = data_checks(out, source, wanted, all_events=f.all_events)
    if names is not None:
        draft.events = EventsSettings(selected=names)


def _report_edited_persons(out: Output, ctx: WizardContext, new: Config) -> None:
    try:
        source = ctx.source()
    except CsPosthogError as exc:
        out.warn(f"could not count the Persons to sync: {esc(exc.message)}")
    else:
        _report_persons(out, source, new)
