"""`cs-posthog edit [section]`: the wizard again, pre-filled from the saved config.

Nothing is written (keys included) until the user saves; the config is replaced atomically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cs_posthog.commands.connect import interactive_context
from cs_posthog.config import Draft, load_config
from cs_posthog.errors import NoTerminalError, UsageError
from cs_posthog.wizard.flow import run_edit
from cs_posthog.wizard.noinput import Flags, edit_no_input

if TYPE_CHECKING:
    from cs_posthog.output import Output
    from cs_posthog.wizard.context import CheckCredentials, MakeSource


def run(
    out: Output,
    *,
    section: str | None = None,
    no_input: bool = False,
    api_key_stdin: bool = False,
    cs_api_key_stdin: bool = False,
    project: str | None = None,
    host: str | None = None,
    customer_property: str | None = None,
    events: list[str] | None = None,
    all_events: bool = False,
    filters: list[str] | None = None,
    filter_events: bool | None = None,
    cs_url: str | None = None,
    tracker_key: str | None = None,
    contact_id: str | None = None,
    check_credentials: CheckCredentials | None = None,
    make_source: MakeSource | None = None,
) -> None:
    flags = Flags(
        api_key_stdin=api_key_stdin, cs_api_key_stdin=cs_api_key_stdin, project=project, host=host,
        customer_property=customer_property, events=list(events or []), all_events=all_events,
        filters=list(filters or []), cs_url=cs_url, tracker_key=tracker_key, contact_id=contact_id,
        filter_events=filter_events,
    )
    if no_input:
        edit_no_input(out, flags, section=section, check_fn=check_credentials, make_source=make_source)
        return
    cfg = load_config()  # not connected / invalid: exit 78 before any question
    if not out.stdin_is_tty():
        raise NoTerminalError("`cs-posthog edit` asks questions, and stdin is not a terminal")
    if api_key_stdin or cs_api_key_stdin:
        raise UsageError("--api-key-stdin and --cs-api-key-stdin go with --no-input",
                         hint="On a terminal the wizard asks for the keys.")

    ctx = interactive_context(out, flags, check_credentials=check_credentials, make_source=make_source, mode="edit")
    ctx.draft = Draft.of(cfg)
    run_edit(ctx, cfg, section=section)
