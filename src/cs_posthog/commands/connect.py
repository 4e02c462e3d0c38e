"""`cs-posthog connect`: the setup wizard on a terminal, or `--no-input` with flags.

The steps live in ``cs_posthog.wizard``; this module only picks the mode. ``cli.py``
imports it only when the command runs, so ``cs-posthog --help`` does not pay for its imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from cs_posthog.commands import sync
from cs_posthog.config import Draft
from cs_posthog.errors import NoTerminalError, UsageError
from cs_posthog.wizard.context import Prefill, WizardContext
from cs_posthog.wizard.filters import FilterSyntaxError, parse_filter
from cs_posthog.wizard.flow import run_connect
from cs_posthog.wizard.noinput import (
    Flags,
    Problems,
    check_attributes,
    check_host,
    check_identification_flags,
    connect_no_input,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from cs_posthog.app import App
    from cs_posthog.config import Config
    from cs_posthog.output import Output
    from cs_posthog.wizard.context import CheckCredentials, MakeSource


def run(
    app: App,
    flags: Flags | None = None,
    *,
    no_input: bool = False,
    restart: bool = False,
    no_sync: bool = False,
    caller_syncs: bool = False,
    demo_defaults: dict[str, Any] | None = None,
    check_credentials: CheckCredentials | None = None,
    make_source: MakeSource | None = None,
) -> None:
    """``check_credentials`` and ``make_source`` replace the PostHog check and data source (tests).

    ``caller_syncs``: the caller runs the first sync itself right after (the demo); connect then
    neither runs it nor tells the user to (no "Run the first sync with `cs-posthog sync`", no
    schedule hint). ``demo_defaults``: the sandbox's JSON line; its keys, project, tracker key and
    customer property are the answers offered, and the setup is not resumable (the demo's home is
    thrown away), so nothing says "`cs-posthog connect` resumes"."""
    flags = flags or Flags()
    out = app.out
    if no_input:
        connect_no_input(out, flags, paths=app.paths, secrets=app.secrets, env=app.settings, no_sync=no_sync,
                         check_fn=check_credentials, make_source=make_source, caller_syncs=caller_syncs,
                         first_sync=first_sync(app))
        return
    if not out.stdin_is_tty():
        raise NoTerminalError("`cs-posthog connect` asks questions, and stdin is not a terminal")
    if flags.api_key_stdin or flags.cs_api_key_stdin:
        raise UsageError("--api-key-stdin and --cs-api-key-stdin go with --no-input",
                         hint="On a terminal the wizard asks for the keys.")
    ctx = interactive_context(app, flags, demo_defaults=demo_defaults, check_credentials=check_credentials,
                              make_source=make_source)
    ctx.caller_syncs = caller_syncs
    ctx.first_sync = first_sync(app)
    ctx.resumable = not demo_defaults

    run_connect(ctx, restart=restart, no_sync=no_sync)


def first_sync(app: App) -> Callable[[Output, Config], None]:
    """The sync connect runs after saving: `cs-posthog sync` with the config just saved."""

    def run_first(out: Output, cfg: Config) -> None:
        sync.run(app, config=cfg)

    return run_first


def interactive_context(app: App, flags: Flags, *, demo_defaults: dict[str, Any] | None = None,
                        check_credentials: CheckCredentials | None = None, make_source: MakeSource | None = None,
                        mode: Literal["connect", "edit"] = "connect") -> WizardContext:
    """The wizard's context; flags given on a terminal are the answers offered."""
    if flags.host is not None and (why := check_host(flags.host, app.settings)) is not None:
        raise UsageError(f"--host: {why}", hint="Give the base URL of your PostHog, e.g. https://posthog.example.com.")
    parsed = []
    for rule in flags.filters:
        try:
            parsed.append(parse_filter(rule))
        except (FilterSyntaxError, ValueError) as exc:
            raise UsageError(f"--filter {rule!r}: {exc}") from None
    problems = Problems()
    check_identification_flags(flags, problems)
    attributes = check_attributes(flags.contact_attributes, problems)
    problems.raise_if_any(mode)
    prefill = Prefill(
        project=flags.project, tracker_key=flags.tracker_key, cs_url=flags.cs_url,
        cs_url_given=flags.cs_url is not None, customer_property=flags.customer_property,
        customer_group=flags.customer_group, customer_group_property=flags.customer_group_property,
        events=list(flags.events), all_events=flags.all_events, filters=parsed,
        contact_id=flags.contact_id, attributes=attributes, filter_events=flags.filter_events,
    )
    if demo_defaults:
        prefill.project = prefill.project or str(demo_defaults.get("project_id") or "") or None
        prefill.tracker_key = prefill.tracker_key or demo_defaults.get("tracker_key")
        prefill.cs_url = prefill.cs_url or demo_defaults.get("customerscore")
        prefill.customer_property = prefill.customer_property or demo_defaults.get("customer_property")
        if demo_defaults.get("api_key"):
            prefill.secrets["posthog"] = (demo_defaults["api_key"], "sandbox")
        if demo_defaults.get("customerscore_api_key"):
            prefill.secrets["customerscore"] = (demo_defaults["customerscore_api_key"], "sandbox")
    return WizardContext(
        out=app.out, draft=Draft(), paths=app.paths, secrets=app.secrets, env=app.settings, mode=mode,
        check_credentials=check_credentials, make_source=make_source,
        host=flags.host, prefill=prefill,
    )
