"""Step 2: the Customerscore API key, the tracker key and (advanced) the API base URL.

Only what can be checked without side effects is checked: the shapes of the keys and the URL.
Nothing is sent to Customerscore before the first sync.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cs_posthog.secrets import key_problem
from cs_posthog.wizard.context import WizardContext, esc

if TYPE_CHECKING:
    from cs_posthog.config import CustomerscoreSettings

TRACKER_RE = re.compile(r"^CS-[A-Za-z0-9]{3,64}$")

INSTRUCTIONS = """\
From Customerscore you need two keys:
  • an [bold]API key[/bold]: in the Customerscore app, API settings → create a token;
  • the public [bold]tracker key[/bold] (CS-…): in the tracker settings of the app.\
"""


def validate_cs_key(text: str, *, have_current: bool) -> bool | str:
    t = text.strip()
    if not t:
        return True if have_current else "Paste the Customerscore API key"
    if any(c.isspace() for c in t):
        return "A key has no spaces in it"
    if (why := key_problem(t)) is not None:
        return f"A key is plain ASCII ({why})"
    if t.startswith(("phx_", "phc_")):
        return "That is a PostHog key; paste the Customerscore API key"
    if t.startswith("CS-"):
        return "That is the tracker key (CS-…); the API key comes first"
    if len(t) < 8:
        return "That looks too short for an API key"
    return True


def validate_tracker_key(text: str) -> bool | str:
    t = text.strip()
    if not t:
        return "Paste the tracker key (it starts with CS-)"
    if not t.startswith("CS-"):
        return "A tracker key starts with CS- (for example CS-AB12C)"
    if not TRACKER_RE.match(t):
        return "A tracker key is CS- followed by letters and digits only"
    return True


def validate_cs_url(text: str) -> bool | str:
    from cs_posthog.config import check_base_url

    try:
        check_base_url(text)
    except ValueError as exc:
        return str(exc)
    return True


def ask_cs_key(current: tuple[str, str] | None) -> str:
    import questionary

    from cs_posthog.secrets import mask

    instruction = f"(Enter to keep {mask(current[0])} from the {current[1]})" if current else None
    answer = questionary.password(
        "Customerscore API key:",
        validate=lambda t: validate_cs_key(t, have_current=current is not None),
        instruction=instruction,
    ).unsafe_ask()
    answer = (answer or "").strip()
    return answer or (current[0] if current else "")


def ask_tracker_key(default: str = "") -> str:
    import questionary

    return questionary.text("Tracker key (CS-…):", default=default, validate=validate_tracker_key).unsafe_ask().strip()


def ask_advanced(default: bool = False) -> bool:
    import questionary

    return bool(questionary.confirm("Change advanced options (API base URL)?", default=default).unsafe_ask())


def ask_cs_url(default: str) -> str:
    import questionary

    return questionary.text("Customerscore API base URL:", default=default, validate=validate_cs_url).unsafe_ask().strip()


def ask_customerscore(ctx: WizardContext, *, header: bool = True, only: bool = False) -> CustomerscoreSettings:
    from cs_posthog.config import CUSTOMERSCORE_URL, CustomerscoreSettings

    if header:
        ctx.step_header(2, only=only)
    ctx.out.info(INSTRUCTIONS)
    prev = ctx.draft.customerscore
    key = ask_cs_key(ctx.current_secret("customerscore"))
    tracker = ask_tracker_key(ctx.prefill.tracker_key or (prev.tracker_key if prev else ""))
    url = ctx.prefill.cs_url or (prev.api_url if prev else CUSTOMERSCORE_URL)
    if ask_advanced(default=url != CUSTOMERSCORE_URL):
        url = ask_cs_url(url)
    settings = CustomerscoreSettings(api_url=url, tracker_key=tracker)
    ctx.out.success(f"Customerscore at {esc(settings.api_url)} · tracker key {esc(settings.tracker_key)}")
    ctx.keep_secret("customerscore", key)  # "stored in …" under the ✓ line, as in step 1
    ctx.out.info("  [dim]Nothing is sent to Customerscore before the first sync.[/dim]")
    return settings
