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
    from cs_posthog.app import App
    from cs_posthog.wizard.context import CheckCredentials, MakeSource


def run(
    app: App,
    flags: Flags | None = None,
    *,
    section: str | None = None,
    no_input: bool = False,
    check_credentials: CheckCredentials | None = None,
    make_source: MakeSource | None = None,
) -> None:
    flags = flags or Flags()
    if no_input:
        edit_no_input(app.out, flags, paths=app.paths, secrets=app.secrets, env=app.settings, section=section,
                      check_fn=check_credentials, make_source=make_source)
        return
    cfg = load_config(app.paths.config_file)  # not connected / invalid: exit 78 before any question
    if not app.out.stdin_is_tty():
        raise NoTerminalError("`cs-posthog edit` asks questions, and stdin is not a terminal")
    if flags.api_key_stdin or flags.cs_api_key_stdin:
        raise UsageError("--api-key-stdin and --cs-api-key-stdin go with --no-input",
                         hint="On a terminal the wizard asks for the keys.")

    ctx = interactive_context(app, flags, check_credentials=check_credentials, make_source=make_source, mode="edit")
    ctx.draft = Draft.of(cfg)
    run_edit(ctx, cfg, section=section)
