"""Step 2: the Customerscore API key, the tracker key and (advanced) the API base URL.

The shapes of the keys and the URL are checked as typed; then each key is checked with Customerscore
by a request that changes nothing (an empty contacts upsert for the API key, an empty tracker batch
for the tracker key). A refused key is asked again, with Customerscore's reason; where Customerscore
cannot be reached, the key is "not checked" (yellow) and the wizard goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import questionary

from cs_posthog.config import CUSTOMERSCORE_URL, CustomerscoreSettings
from cs_posthog.customerscore.client import CustomerscoreClient
from cs_posthog.errors import AuthError, CsPosthogError, PermissionDeniedError
from cs_posthog.secrets import key_problem, mask
from cs_posthog.settings import Settings
from cs_posthog.urls import check_base_url
from cs_posthog.wizard.context import WizardContext, esc
from cs_posthog.wizard.ui import busy

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
    try:
        check_base_url(text)
    except ValueError as exc:
        return str(exc)
    return True


@dataclass
class KeyCheck:
    """What Customerscore said of a key: ``ok``, ``rejected`` (401/403: ask again) or
    ``unchecked`` (unreachable, 5xx after retries, an unexpected answer: go on, say so)."""

    status: Literal["ok", "rejected", "unchecked"]
    reason: str = ""
    exit_code: int = 0


def check_key(url: str, api_key: str, tracker_key: str | None = None, *,
              settings: Settings) -> KeyCheck:
    """Check the API key (``tracker_key`` None: an empty contacts upsert) or the tracker key (an
    empty tracker batch, sent with the API key) with Customerscore at ``url``. Changes nothing."""
    try:
        with CustomerscoreClient(url, api_key, tracker_key or "CS-CHECK", pace=False, settings=settings) as client:
            if tracker_key is None:
                client.check_api_key()
            else:
                client.check_tracker_key()
    except (AuthError, PermissionDeniedError) as exc:
        return KeyCheck("rejected", exc.message, int(exc.exit_code))
    except CsPosthogError as exc:
        return KeyCheck("unchecked", exc.message, int(exc.exit_code))
    except Exception as exc:
        return KeyCheck("unchecked", f"{type(exc).__name__}: {exc}")
    return KeyCheck("ok")


def _checked_api_key(ctx: WizardContext, url: str, key: str) -> tuple[str, KeyCheck]:
    """Check ``key`` at ``url``; while Customerscore refuses it, say why and ask again."""
    while True:
        with busy(ctx.out, "Checking the API key with Customerscore…"):
            verdict = check_key(url, key, settings=ctx.env)
        if verdict.status != "rejected":
            return key, verdict
        ctx.out.error(verdict.reason)  # error() escapes
        ctx.out.info("  Check that you copied the whole API key, from Customerscore's API settings.")
        key = ask_cs_key(None)


def _checked_tracker_key(ctx: WizardContext, url: str, key: str, tracker: str) -> tuple[str, KeyCheck]:
    while True:
        with busy(ctx.out, "Checking the tracker key with Customerscore…"):
            verdict = check_key(url, key, tracker, settings=ctx.env)
        if verdict.status != "rejected":
            return tracker, verdict
        ctx.out.error(verdict.reason)
        ctx.out.info("  The tracker key (CS-…) is in the tracker settings of the Customerscore app.")
        tracker = ask_tracker_key("")


def ask_cs_key(current: tuple[str, str] | None) -> str:
    instruction = f"(Enter to keep {mask(current[0])} from the {current[1]})" if current else None
    answer = questionary.password(
        "Customerscore API key:",
        validate=lambda t: validate_cs_key(t, have_current=current is not None),
        instruction=instruction,
    ).unsafe_ask()
    answer = (answer or "").strip()
    return answer or (current[0] if current else "")


def ask_tracker_key(default: str = "") -> str:
    answer = questionary.text("Tracker key (CS-...):", default=default, validate=validate_tracker_key).unsafe_ask()
    return str(answer).strip()


def ask_advanced(default: bool = False) -> bool:
    return bool(questionary.confirm("Change advanced options (API base URL)?", default=default).unsafe_ask())


def ask_cs_url(default: str) -> str:
    answer = questionary.text("Customerscore API base URL:", default=default, validate=validate_cs_url).unsafe_ask()
    return str(answer).strip()


def ask_customerscore(ctx: WizardContext, *, header: bool = True, only: bool = False) -> CustomerscoreSettings:
    if header:
        ctx.step_header(2, only=only)
    ctx.out.info(INSTRUCTIONS)
    prev = ctx.draft.customerscore
    url = ctx.prefill.cs_url or (prev.api_url if prev else CUSTOMERSCORE_URL)
    key, key_check = _checked_api_key(ctx, url, ask_cs_key(ctx.current_secret("customerscore")))
    tracker = ask_tracker_key(ctx.prefill.tracker_key or (prev.tracker_key if prev else ""))
    tracker_check = KeyCheck("unchecked", key_check.reason)
    if key_check.status == "ok":
        tracker, tracker_check = _checked_tracker_key(ctx, url, key, tracker)
    # --cs-url answered the advanced question already
    if not ctx.prefill.cs_url_given and ask_advanced(default=url != CUSTOMERSCORE_URL):
        new_url = ask_cs_url(url)
        if new_url.rstrip("/") != url.rstrip("/"):  # the keys were checked elsewhere: again, here
            url = new_url
            key, key_check = _checked_api_key(ctx, url, key)
            tracker_check = KeyCheck("unchecked", key_check.reason)
            if key_check.status == "ok":
                tracker, tracker_check = _checked_tracker_key(ctx, url, key, tracker)
        url = new_url
    settings = CustomerscoreSettings(api_url=url, tracker_key=tracker)
    which = "next" if ctx.mode == "edit" else "first"
    where = f"Customerscore at {esc(settings.api_url)} · tracker key {esc(settings.tracker_key)}"
    if key_check.status == "ok" and tracker_check.status == "ok":
        ctx.out.success(f"{where} · both keys accepted")
    else:
        what = "keys not checked" if key_check.status != "ok" else "API key accepted, tracker key not checked"
        reason = key_check.reason if key_check.status != "ok" else tracker_check.reason
        ctx.out.info(f"[yellow]![/yellow] {where} · [yellow]{what}[/yellow]: {esc(reason)}")
        ctx.out.info(f"  [dim]They are used as typed; the {which} sync will tell if Customerscore refuses them.[/dim]")
    ctx.keep_secret("customerscore", key)  # "stored in …" under the ✓ line, as in step 1
    if ctx.mode == "edit":
        ctx.out.info("  [dim]Checking the keys changed nothing in Customerscore.[/dim]")
    else:
        ctx.out.info("  [dim]Checking the keys changed nothing in Customerscore; no data is sent before the "
                     "first sync.[/dim]")
    return settings
