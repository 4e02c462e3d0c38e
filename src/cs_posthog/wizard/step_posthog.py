"""Step 1: the PostHog personal API key and the project, checked against US and EU at once.

An address of the other Cloud than the key's (a US Cloud URL with an EU key) is not an error: the
check finds the key in the other region and the step goes on there, saying so.

On failure only what failed is asked again: the key (invalid in both regions), the project (not
found, or not accessible to this key), or nothing (missing scopes: add them in PostHog and check
again; PostHog unreachable: try again).
"""

from __future__ import annotations

import functools
from typing import Any

import questionary

from cs_posthog.config import PostHogSettings, Region
from cs_posthog.errors import PersonalKeysNotAllowedError, UnavailableError, UsageError
from cs_posthog.posthog.credentials import check_credentials, region_note
from cs_posthog.posthog.regions import parse_project_ref
from cs_posthog.secrets import key_problem, mask
from cs_posthog.settings import Settings
from cs_posthog.wizard.context import WizardContext, esc
from cs_posthog.wizard.ui import busy, select

SCOPE_LABELS = ("Action", "Event definition", "Organization", "Project", "Property definition", "Query")

# one line per item or paragraph: rich wraps them to the terminal's width, between words
INSTRUCTIONS = """\
Create a personal API key for Customerscore in PostHog:
  1. Settings → Personal API Keys → Create personal API key.
  2. Label: [bold]Customerscore.io[/bold]. Access: this project (or its organization).
  3. Scopes, [bold]Read[/bold] only: {scopes}
Then paste the key (it stays hidden) and the project ID, or the address of any page of the project \
(e.g. https://eu.posthog.com/project/12345/insights).\
"""


def scope_lines() -> str:
    """The scope names, on one line (rich wraps it to the terminal); Group only for group mode."""
    return ", ".join(SCOPE_LABELS) + " (and Group, if your customers are PostHog groups)."

REGION_NAMES = {"us": "PostHog US Cloud", "eu": "PostHog EU Cloud", "self-hosted": "self-hosted PostHog"}


# --- the questions ---------------------------------------------------------------------------
def validate_posthog_key(text: str, *, have_current: bool) -> bool | str:
    t = text.strip()
    if not t:
        return True if have_current else "Paste the personal API key (it starts with phx_)"
    if t.startswith("phc_"):
        return "That is the project API key (phc_…); a personal API key starts with phx_"
    if any(c.isspace() for c in t):
        return "A key has no spaces in it"
    if (why := key_problem(t)) is not None:
        return f"A key is plain ASCII ({why})"
    if len(t) < 12:
        return "That looks too short for a personal API key"
    return True


def ask_posthog_key(current: tuple[str, str] | None) -> str:
    """Hidden input. Empty keeps ``current`` (this session's key, the stored one or the env's)."""
    instruction = f"(Enter to keep {mask(current[0])} from the {current[1]})" if current else None
    answer = questionary.password(
        "PostHog personal API key:",
        validate=lambda t: validate_posthog_key(t, have_current=current is not None),
        instruction=instruction,
    ).unsafe_ask()
    answer = (answer or "").strip()
    return answer or (current[0] if current else "")


def validate_project_ref(text: str, settings: Settings) -> bool | str:
    if not text.strip():
        return "Enter the project ID (a number) or paste a URL of the project"
    try:
        parse_project_ref(text.strip(), settings)
    except UsageError as exc:
        return exc.message[:1].upper() + exc.message[1:]
    return True


def ask_project(settings: Settings, default: str = "") -> str:
    return str(questionary.text(
        "Project ID or project URL:",
        default=default,
        validate=lambda text: validate_project_ref(text, settings),
    ).unsafe_ask()).strip()


def ask_after_missing_scopes() -> str:
    return select(
        "What now?",
        choices=[
            questionary.Choice("Check again (I added the scopes to the key)", value="retry"),
            questionary.Choice("Use a different key", value="key"),
        ],
    ).unsafe_ask()


def ask_after_no_access() -> str:
    return select(
        "What now?",
        choices=[
            questionary.Choice("Enter another project", value="project"),
            questionary.Choice("Use a different key", value="key"),
            questionary.Choice("Check again (I gave the key access to the project)", value="retry"),
        ],
    ).unsafe_ask()


def ask_after_org_policy() -> str:
    return select(
        "What now?",
        choices=[
            questionary.Choice("Check again (an admin allowed personal API keys)", value="retry"),
            questionary.Choice("Use a different key (an organization admin's or owner's)", value="key"),
            questionary.Choice("Stop here (your progress is kept)", value="stop"),
        ],
    ).unsafe_ask()


def ask_after_unreachable() -> str:
    return select(
        "What now?",
        choices=[
            questionary.Choice("Try again", value="retry"),
            questionary.Choice("Change the key or the project", value="both"),
            questionary.Choice("Stop here (your progress is kept)", value="stop"),
        ],
    ).unsafe_ask()


# --- the step --------------------------------------------------------------------------------
def default_check(api_key: str, project_ref: str, *, host: str | None = None,
                  settings: Settings) -> Any:
    return check_credentials(api_key, project_ref, host=host, settings=settings)


def describe_project(settings: PostHogSettings) -> str:
    region = REGION_NAMES.get(settings.region.value, settings.region.value)
    where = f"{region} ({settings.host})" if settings.region.value == "self-hosted" else region
    name = f'"{settings.project_name}" ' if settings.project_name else ""
    return f"{where} · project {name}(id {settings.project_id}) · timezone {settings.timezone}"


def settings_from_check(check: Any) -> PostHogSettings:
    region = check.region.value if hasattr(check.region, "value") else str(check.region)
    return PostHogSettings(
        region=Region(region),
        host=check.host,
        project_id=int(check.project_id),
        project_name=check.project_name or "",
        timezone=check.timezone or "UTC",
    )


def explain_failure(check: Any, project_ref: str, host: str | None) -> str:
    """The one-line reason a check failed (the check's own sentence). Also used by --no-input."""
    if check.problem:
        return check.problem
    if check.unreachable:
        return "could not reach PostHog"
    if not check.key_valid:
        return f"{host} refused this key" if host else "PostHog US and EU both refused this key"
    if check.missing_scopes:
        return "the API key is missing scopes: " + ", ".join(check.missing_scopes)
    if check.project_found is False:
        return f"project {project_ref} was not found with this key"
    return f"this key cannot read project {project_ref}"


def parse_region(project_ref: str, settings: Settings) -> str | None:
    """``"us"``/``"eu"`` when the pasted reference is an address of a PostHog Cloud region."""
    try:
        return parse_project_ref(project_ref, settings).region
    except UsageError:
        return None


def check_ok(check: Any) -> bool:
    return bool(check.ok and check.project_id)


def ask_posthog(ctx: WizardContext, *, header: bool = True, only: bool = False) -> PostHogSettings:
    """Ask until the key and project check out; store the key (connect) and return the settings."""
    if header:
        ctx.step_header(1, only=only)
    ctx.out.info(INSTRUCTIONS.format(scopes=scope_lines()))
    prev = ctx.draft.posthog
    host = ctx.host or (prev.host if prev is not None and prev.region.value == "self-hosted" else None)
    check_fn = ctx.check_credentials or functools.partial(default_check, settings=ctx.env)

    key = ask_posthog_key(ctx.current_secret("posthog"))
    project = ask_project(ctx.env, ctx.prefill.project or (str(prev.project_id) if prev is not None else ""))
    while True:
        where = host or "PostHog US and EU"
        with busy(ctx.out, f"Checking the key and project with {where}…"):
            check = check_fn(key, project, host=host)
        if check.key_valid and (note := region_note(check)) is not None:
            ctx.out.info(esc(note[:1].upper() + note[1:]) + ".")  # the address was of the other Cloud
        if check_ok(check):
            settings = settings_from_check(check)
            ctx.out.success(esc(describe_project(settings)))
            ctx.keep_secret("posthog", key)
            return settings

        ctx.out.error(explain_failure(check, project, host))  # error() escapes
        if check.unreachable:
            choice = ask_after_unreachable()
            if choice == "stop":
                raise UnavailableError(
                    explain_failure(check, project, host),
                    hint="Run `cs-posthog connect` again later; the finished steps are kept.",
                    service="PostHog",
                )
            if choice == "both":
                key = ask_posthog_key((key, "entered above"))
                project = ask_project(ctx.env, project)
        elif not check.key_valid:
            where = host or "PostHog US or EU Cloud"  # an address's region refusing it has the other asked too
            ctx.out.info("  Check that you copied the whole key (it starts with phx_) and that it is from "
                         + esc(where) + ".")
            key = ask_posthog_key(None)
            if parse_region(project, ctx.env) is not None:  # the region in the address may be the mistake
                project = ask_project(ctx.env, project)
        elif getattr(check, "org_policy", None):
            ctx.out.info("  " + esc(PersonalKeysNotAllowedError.default_hint or ""))
            choice = ask_after_org_policy()
            if choice == "stop":
                raise PersonalKeysNotAllowedError(explain_failure(check, project, host), service="PostHog",
                                                  status=403, detail=check.org_policy)
            if choice == "key":
                key = ask_posthog_key(None)
        elif check.project_found is False:
            project = ask_project(ctx.env, "")
        elif not check.project_accessible:
            ctx.out.info("  In PostHog: Settings → Personal API Keys → edit the key → allow this project "
                         "under Organization & project access, or use another project.")
            choice = ask_after_no_access()
            if choice == "project":
                project = ask_project(ctx.env, "")
            elif choice == "key":
                key = ask_posthog_key(None)
        elif check.missing_scopes:
            labels = list(getattr(check, "missing_labels", None) or check.missing_scopes)
            ctx.out.info(
                "  In PostHog: Settings → Personal API Keys → edit the key → give [bold]Read[/bold] access to "
                + esc(", ".join(labels)) + ", save, then check again."
            )
            if ask_after_missing_scopes() == "key":
                key = ask_posthog_key(None)
        else:  # an unexpected answer: let the user try again or change things
            if ask_after_unreachable() == "stop":
                raise UnavailableError(explain_failure(check, project, host), service="PostHog")
            key = ask_posthog_key((key, "entered above"))
            project = ask_project(ctx.env, project)
