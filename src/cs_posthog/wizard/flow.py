"""The wizard as a whole: steps in order, the draft after each one, resume, save, first sync.

* ``connect``: each finished step goes into the draft (``draft.toml``, 0600) at once, keys into the
  secret store; running ``connect`` again offers to resume at the first unfinished step. The config
  is written once, atomically, when the user saves; Ctrl-C anywhere leaves the draft and never a
  half-written config.
* ``edit``: the same steps pre-filled from the config (or only one section); nothing is written,
  keys included, until the user saves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import questionary

from cs_posthog.config import Draft, load_config, load_draft, save_config, save_draft
from cs_posthog.errors import InvalidConfigError
from cs_posthog.secrets import SPECS, Name
from cs_posthog.wizard import step_customerscore, step_events, step_identification, step_persons, step_posthog
from cs_posthog.wizard.context import SECTION_OF_STEP, STEP_TITLES, TOTAL_STEPS, StopWizard, WizardContext, esc
from cs_posthog.wizard.step_persons import attributes_line, contact_label
from cs_posthog.wizard.ui import select, use_stream_glyphs

if TYPE_CHECKING:
    from cs_posthog.config import Config, PostHogSettings
    from cs_posthog.secrets import SecretStore

# edit's sections -> the steps they run ("credentials" is both services' keys; "posthog" and
# "customerscore" one each; None is every step in order)
EDIT_SECTIONS: dict[str | None, tuple[int, ...]] = {
    None: (1, 2, 3, 4, 5),
    "credentials": (1, 2),
    "posthog": (1,),
    "customerscore": (2,),
    "identification": (3,),
    "events": (4,),
    "persons": (5,),
}
SECTION_NAMES = tuple(s for s in EDIT_SECTIONS if s is not None)


def step_function(step: int) -> Callable[..., Any]:
    return {
        1: step_posthog.ask_posthog,
        2: step_customerscore.ask_customerscore,
        3: step_identification.ask_identification,
        4: step_events.ask_events,
        5: step_persons.ask_persons,
    }[step]


def first_unfinished(draft: Draft) -> int:
    """1..5, or 6 when every section is there."""
    for step in range(1, TOTAL_STEPS + 1):
        if getattr(draft, SECTION_OF_STEP[step]) is None:
            return step
    return TOTAL_STEPS + 1


def resume_point(draft: Draft, secrets: SecretStore) -> int:
    """The first unfinished step, moved back when a key the finished steps need is gone."""
    step = first_unfinished(draft)
    if step > 2 and draft.customerscore is not None and secrets.find("customerscore") is None:
        step = 2
    if step > 1 and draft.posthog is not None and secrets.find("posthog") is None:
        step = 1
    # never resume at step 5 (the save) without 1-4: sections are kept in order
    return step


def clear_from(draft: Draft, step: int) -> None:
    """Forget the sections of ``step`` and after (they are asked again)."""
    for s in range(step, TOTAL_STEPS + 1):
        setattr(draft, SECTION_OF_STEP[s], None)


def draft_to_config(draft: Draft, base: Config | None = None) -> Config:
    return draft.to_config(base)


# --- connect ---------------------------------------------------------------------------------
def ask_resume(step: int) -> str:
    return select(
        "A setup is in progress. Continue it?",
        choices=[
            questionary.Choice(f"Resume at step {step} of {TOTAL_STEPS}: {STEP_TITLES[step]}", value="resume"),
            questionary.Choice("Start over", value="restart"),
        ],
    ).unsafe_ask()


def ask_existing_config() -> str:
    return select(
        "What do you want to do?",
        choices=[
            questionary.Choice("Edit the saved setup (same as `cs-posthog edit`)", value="edit"),
            questionary.Choice("Start over (the saved setup is replaced only when you save)", value="restart"),
            questionary.Choice("Nothing: leave it as it is", value="cancel"),
        ],
    ).unsafe_ask()


def ask_edit_section(cfg: Config) -> str | None:
    """`edit` without a section: which part to change (one step), or every step in order.

    Returns the section name, "all" for every step, or None when the user leaves."""
    ph, cs = cfg.posthog, cfg.customerscore
    project = f'"{ph.project_name}" ({ph.project_id})' if ph.project_name else f"project {ph.project_id}"
    filters = len(cfg.persons.filters)
    events = len(cfg.events.selected)
    choices = [
        ("posthog", f"PostHog key and project · now {project}, {ph.region.value}"),
        ("customerscore", f"Customerscore keys · tracker key {cs.tracker_key}"),
        ("identification", f"How customers are identified · {cfg.identification.describe()}"),
        ("events", f"Events to sync · {events} selected"),
        ("persons", f"Persons sent as contacts · {filters} filter{'s' if filters != 1 else ''}, "
                    f"id: {contact_label(cfg.persons.contact_id)}"),
        ("all", "Everything, step by step"),
        ("quit", "Nothing: leave it as it is"),
    ]
    answer = select(
        "What do you want to change?",
        choices=[questionary.Choice(esc(title, markup=False), value=value) for value, title in choices],
    ).unsafe_ask()
    return None if answer == "quit" else answer


def describe_config(cfg: Config) -> str:
    ph = cfg.posthog
    name = f'"{ph.project_name}" ' if ph.project_name else ""
    return (f"PostHog project {name}(id {ph.project_id}, {ph.region.value}) "
            f"→ Customerscore ({cfg.customerscore.api_url})")


def run_connect(ctx: WizardContext, *, restart: bool, no_sync: bool) -> None:
    """The interactive ``connect``. ``ctx.draft`` is replaced by the saved draft unless restarting."""
    use_stream_glyphs()
    out = ctx.out
    paths = ctx.paths
    existing: Config | None = None
    if paths.config_file.exists():
        try:
            cfg = load_config(paths.config_file)
            out.info(f"Already connected: {esc(describe_config(cfg))}.")
        except InvalidConfigError as exc:
            cfg = None
            out.warn(f"the saved configuration is not valid ({esc(exc.message)}).")
        existing = cfg
        choice = ask_existing_config() if cfg is not None else "restart"
        if choice == "cancel":
            out.info("Nothing changed. To change the setup later: `cs-posthog edit`.")
            return
        if choice == "edit" and cfg is not None:
            ctx.mode = "edit"
            ctx.draft = Draft.of(cfg)
            run_edit(ctx, cfg, section=None, no_sync=no_sync)
            return
        restart = True

    draft: Draft | None = None
    if restart:
        paths.draft_file.unlink(missing_ok=True)
    else:
        try:
            draft = load_draft(paths.draft_file)
        except InvalidConfigError as exc:
            out.warn(f"the saved progress cannot be read ({esc(exc.message)}); starting over.")
            paths.draft_file.unlink(missing_ok=True)
    draft = draft or Draft()
    start = resume_point(draft, ctx.secrets)
    if first_unfinished(draft) > 1:  # there is progress to resume
        if start < first_unfinished(draft):
            out.info("A key that the finished steps need is no longer stored: it is asked again.")
        if start > TOTAL_STEPS:  # everything was answered but not saved: revisit the last step
            start = TOTAL_STEPS
        if ask_resume(start) == "restart":
            draft = Draft()
            paths.draft_file.unlink(missing_ok=True)
            start = 1
        else:
            out.info(f"Resuming at step {start} of {TOTAL_STEPS}: {STEP_TITLES[start]}")
    ctx.draft = draft
    ctx.mode = "connect"

    step = start
    try:
        for step in range(start, TOTAL_STEPS + 1):
            section = step_function(step)(ctx)
            if step == 1 and draft.posthog is not None and _project_changed(draft.posthog, section):
                clear_from(draft, 2)
            setattr(draft, SECTION_OF_STEP[step], section)
            if step < TOTAL_STEPS:
                save_draft(draft, paths.draft_file)
    except StopWizard:
        clear_from(draft, step)
        if step > 1:
            save_draft(draft, paths.draft_file)
        if ctx.resumable:
            out.info(f"Stopped at step {step}; the finished steps are kept: `cs-posthog connect` resumes there.")
        else:
            out.info(f"Stopped at step {step}.")
        return
    except KeyboardInterrupt:
        # the draft holds every finished step already; say so before the "interrupted" line
        if ctx.resumable and step > 1:
            kept = "step 1 is kept" if step == 2 else f"steps 1 to {step - 1} are kept"
            out.info(f"\nStopped at step {step}: {kept}, and `cs-posthog connect` resumes at step {step}.")
        raise

    cfg = draft_to_config(draft, base=existing)
    save_and_sync(ctx, cfg, no_sync=no_sync, previous=existing)


def _project_changed(old: PostHogSettings, new: PostHogSettings) -> bool:
    return (old.host, old.project_id) != (new.host, new.project_id)


def save_and_sync(ctx: WizardContext, cfg: Config, *, no_sync: bool, previous: Config | None = None) -> None:
    """Write the config (atomic, 0600), drop the draft, run the first sync unless ``no_sync``."""
    out = ctx.out
    ctx.store_pending(quiet=False)
    path = save_config(cfg, ctx.paths.config_file)
    ctx.paths.draft_file.unlink(missing_ok=True)
    out.success(f"Configuration saved to {esc(path)}")
    if previous is not None and _project_changed(previous.posthog, cfg.posthog):
        out.info("  [dim]Another PostHog project: the sync starts its events afresh "
                 f"({cfg.sync.backfill_days} days back).[/dim]")
    if ctx.caller_syncs:  # e.g. the demo, which runs the first sync right after this
        return
    if no_sync:
        out.info("Run the first sync with `cs-posthog sync`.")
    else:
        run_first_sync(ctx, cfg)
    out.info("Sync on a schedule: `cs-posthog schedule --install` (hourly by default).")


def run_first_sync(ctx: WizardContext, cfg: Config) -> None:
    out = ctx.out
    if ctx.first_sync is None:  # a caller that gave no way to sync
        out.info("Run the first sync with `cs-posthog sync`.")
        return
    out.info("")
    out.info(f"[bold]First sync[/bold]: the last {cfg.sync.backfill_days} days of the selected events, "
             "then the Persons.")
    try:
        ctx.first_sync(out, cfg)
    except KeyboardInterrupt:
        out.info("The configuration is saved; `cs-posthog sync` continues where this one stopped.")
        raise
    except Exception:
        out.info("The configuration is saved; fix the problem below and run `cs-posthog sync`.")
        raise


# --- edit ------------------------------------------------------------------------------------
def ask_save_changes(changes: list[str]) -> bool:
    return bool(questionary.confirm("Save these changes?", default=True).unsafe_ask())


def describe_changes(old: Config, new: Config, keys_changed: list[Name]) -> list[str]:
    lines: list[str] = []
    if _project_changed(old.posthog, new.posthog):
        lines.append(f"PostHog project: {old.posthog.project_id} → {new.posthog.project_id} ({new.posthog.host})")
    for name in keys_changed:
        lines.append(f"{SPECS[name].label}: replaced")
    if old.customerscore != new.customerscore:
        if old.customerscore.tracker_key != new.customerscore.tracker_key:
            lines.append(f"tracker key: {old.customerscore.tracker_key} → {new.customerscore.tracker_key}")
        if old.customerscore.api_url != new.customerscore.api_url:
            lines.append(f"Customerscore URL: {old.customerscore.api_url} → {new.customerscore.api_url}")
    if old.identification != new.identification:
        lines.append(f"customer: {old.identification.describe()} → {new.identification.describe()}")
    if old.events != new.events:
        added = [e for e in new.events.selected if e not in old.events.selected]
        removed = [e for e in old.events.selected if e not in new.events.selected]
        parts = []
        if added:
            parts.append("+ " + ", ".join(added))
        if removed:
            parts.append("- " + ", ".join(removed))
        lines.append("events: " + ("; ".join(parts) or "reordered"))
    same_but = {"filter_events": new.persons.filter_events, "attributes": new.persons.attributes}
    if old.persons.model_copy(update=same_but) != new.persons:
        lines.append(
            "Persons: " + (" AND ".join(f.describe() for f in new.all_filters()) or "every Person of a group")
            + f"; contact id: {new.persons.contact_id}"
        )
    if old.persons.attributes != new.persons.attributes:
        lines.append(attributes_line(new.persons.attributes).replace("Contact attributes: ", "contact attributes: ")
                     + " (the next sync sends the contacts whose attributes changed)")
    if old.persons.filter_events != new.persons.filter_events:
        lines.append(filter_events_change(new.persons.filter_events))
    return lines


def filter_events_change(now_on: bool) -> str:
    """What turning ``persons.filter_events`` on or off does to the next syncs (docs/sync-invariants.md, 6c)."""
    if now_on:
        return ("events: only those of the Persons matching the filters from the next sync on "
                "(what was sent stays in Customerscore)")
    return ("events: those of every Person with a customer id; the next sync also sends, once, the events "
            "of the backfill window left out while the filters chose them")


def run_edit(ctx: WizardContext, cfg: Config, *, section: str | None, no_sync: bool = True) -> None:
    """The interactive ``edit``: the chosen steps pre-filled; nothing is written until saved."""
    use_stream_glyphs()
    out = ctx.out
    ctx.mode = "edit"
    out.info(f"Editing: {esc(describe_config(cfg))}.")
    if section is None:
        try:
            chosen = ask_edit_section(cfg)
        except StopWizard:
            chosen = None
        if chosen is None:
            out.info("Nothing changed.")
            return
        section = None if chosen == "all" else chosen
    steps = EDIT_SECTIONS[section]
    try:
        for i, step in enumerate(steps, start=1):
            if len(steps) > 1:
                ctx.out.info("")
                ctx.out.info(f"[bold]Step {i} of {len(steps)} · {STEP_TITLES[step]}[/bold]")
                result = step_function(step)(ctx, header=False)
            else:
                result = step_function(step)(ctx, only=True)
            setattr(ctx.draft, SECTION_OF_STEP[step], result)
    except StopWizard:
        out.info("Nothing changed.")
        return

    new = draft_to_config(ctx.draft, base=cfg)
    keys_changed = _keys_changed(ctx)
    changes = describe_changes(cfg, new, keys_changed)
    if not changes:
        out.info("Nothing changed.")
        return
    out.info("Changes:")
    for line in changes:
        out.info(f"  • {esc(line)}")
    if cfg.persons.contact_id != new.persons.contact_id:
        out.warn(contact_id_warning(cfg.persons.contact_id, new.persons.contact_id))
    if cfg.identification != new.identification:
        out.warn(esc(identification_warning(cfg, new)))
    if steps[-1] != 5 and not ask_save_changes(changes):
        out.info("Nothing changed.")
        return
    if section in ("credentials", "posthog") and _project_changed(cfg.posthog, new.posthog):
        out.warn("the project changed: check the events and Persons too (`cs-posthog edit`).")
    save_and_sync_edit(ctx, new, previous=cfg)


def identification_warning(old: Config, new: Config) -> str:
    """What a new identification does: contacts are attached another way, and all are sent again."""
    o, n = old.identification, new.identification
    days = new.sync.backfill_days
    if n.is_group and not o.is_group:
        how = (f"contacts are attached to the {n.group_label} of the group on their most recent selected event "
               f"(last {days} days) instead of by the Person property {o.property}, and events to the group "
               "they carry")
    elif o.is_group and not n.is_group:
        how = (f"contacts and events are attached by the Person property {n.property} instead of by the "
               f"{o.group_label} group")
    else:
        how = f"contacts and events are attached by the {n.describe()} instead of the {o.describe()}"
    return (f"{how}: the next sync sends every contact again; events already sent stay with the customer they "
            "were sent to.")


def contact_id_warning(old: str, new: str) -> str:
    """Contacts are keyed by their id in Customerscore: a new kind of id makes new contacts."""
    return (f"contacts are identified by {esc(contact_label(new))} instead of {esc(contact_label(old))}: "
            "the contacts already in Customerscore keep the old id, and the next sync sends every "
            "Person again as a new contact (delete the old ones in Customerscore if you do not want both).")


def save_and_sync_edit(ctx: WizardContext, cfg: Config, *, previous: Config) -> None:
    ctx.store_pending(quiet=False)
    path = save_config(cfg, ctx.paths.config_file)
    ctx.out.success(f"Configuration saved to {esc(path)}; the next `cs-posthog sync` uses it.")
    if _project_changed(previous.posthog, cfg.posthog):
        ctx.out.info("  [dim]Another PostHog project: the next sync starts its events afresh "
                     f"({cfg.sync.backfill_days} days back).[/dim]")


def _keys_changed(ctx: WizardContext) -> list[Name]:
    changed: list[Name] = []
    for name, value in ctx.pending_secrets.items():
        found = ctx.secrets.find(name)
        if found is None or found.value != value:
            changed.append(name)
    return changed
