"""The command line. Parses, makes the App, calls the command, renders errors; nothing else.

Each command makes the invocation's ``App`` (``app.py``: output, paths, secret store, the settings
read from the environment once) and hands it to its module in ``commands/``. What the root options
say (--debug, -v) and the App once made live on Click's context of this invocation, not in module
state.

Heavy modules (httpx, pydantic, questionary, prompt_toolkit) are imported inside command bodies so
that ``cs-posthog --help`` and ``--version`` stay fast (a test guards it).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from cs_posthog import interrupts

if TYPE_CHECKING:
    from cs_posthog.app import App
    from cs_posthog.config import Config
    from cs_posthog.wizard.noinput import Flags

if os.path.basename(sys.argv[0] if sys.argv else "") == "cs-posthog":  # the console script: SIGTERM
    interrupts.install()  # while the heavy imports below run stops like Ctrl-C (``main`` does it for others)
try:  # Ctrl-C while starting up: one line and 130, not a traceback
    import typer

    from cs_posthog import __version__
    from cs_posthog._private_apis import (
        ClickUsageError,
        NoArgsIsHelpError,
        TyperArgument,
        TyperCommand,
        TyperGroup,
        get_current_context,
    )
    from cs_posthog.errors import CsPosthogError, ExitCode, Interrupted, UsageError, file_errno_error
except KeyboardInterrupt as _exc:
    interrupts.exit_now(_exc)

EXIT_CODES_HELP = (
    "Exit codes: 0 success (also nothing new), 1 unexpected bug, 2 usage or bad input, "
    "69 a service answered, but not as its API does (or the demo cannot run here), "
    "73 a file cannot be created or written (read-only, no permission), 74 disk full or I/O error, "
    "75 try again later (another sync running, API throttled or down), 77 not allowed "
    "(invalid key, missing scopes), 78 not connected or invalid config, 130 interrupted (Ctrl-C), "
    "143 terminated (SIGTERM)."
)


class _UsageErrorsAsOneLine(TyperGroup):
    """Click's own usage errors (unknown option, missing value, bad choice) rendered like ours:
    ``error: ...`` then ``hint: Try 'cs-posthog sync -h' for help.``, exit 2. The help screen
    shown for no arguments is left alone."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        for arg in args:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as surrogate escapes
                shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                _render_error(f"an argument is not UTF-8 text: {shown}",
                              "Check the encoding of your terminal or script (names and values are UTF-8).",
                              with_traceback=False)
                raise typer.Exit(int(ExitCode.USAGE)) from None
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickUsageError as exc:
            _usage_error_exit(exc, info_name or "cs-posthog")
        except KeyboardInterrupt as exc:  # Click would print "Aborted!" and exit 1
            _interrupted_exit(exc)

    def resolve_command(self, ctx: Any, args: Any) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta["cs_posthog.command"] = name
        return name, cmd, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ClickUsageError as exc:
            _usage_error_exit(exc, " ".join(filter(None, [ctx.command_path, ctx.meta.get("cs_posthog.command")])))
        except KeyboardInterrupt as exc:  # outside a command's own handling (the root callback)
            _interrupted_exit(exc)


def _interrupted_exit(exc: BaseException | None = None) -> None:
    err = interrupts.error_for(exc)
    _render_error(err.message, err.hint, with_traceback=False)
    raise typer.Exit(int(err.exit_code)) from None


def _usage_error_exit(exc: Any, command_path: str) -> None:
    if isinstance(exc, NoArgsIsHelpError):
        raise exc
    if exc.ctx is not None:
        command_path = exc.ctx.command_path
    # Typer validates through pydantic, whose messages start "Value error, "
    message = exc.format_message().replace("Value error, ", "")
    _render_error(message, f"Try '{command_path} -h' for help.", with_traceback=False)
    raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="cs-posthog",
    help=(
        "Connect a PostHog project to Customerscore and keep it in sync.\n\n"
        "Start with `cs-posthog connect` (or `cs-posthog demo` to try it on a local sandbox), "
        "then run `cs-posthog sync` from cron (`cs-posthog schedule --install`).\n\n"
        "Config, state and logs live in one directory per user; set CS_POSTHOG_HOME to move them.\n\n"
        + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    cls=_UsageErrorsAsOneLine,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Invocation:
    """This invocation's root options, and its App once a command made it (``ctx.obj``)."""

    debug: bool = False  # --debug
    verbose: int = 0
    app: App | None = None


def _invocation() -> Invocation:
    """The Invocation of the running command (an empty one outside a Click context)."""
    ctx = get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Invocation) else Invocation()

F = TypeVar("F", bound=Callable[..., Any])


def version_lines() -> list[str]:
    """``--version``: cs-posthog's version, then the Python and the platform it runs on (with the
    C library, which decides which binary wheels install), for bug reports."""
    import platform

    return [
        f"cs-posthog {__version__}",
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}",
    ]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo("\n".join(version_lines()))
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version_callback, is_eager=True,
                     help="Show the version, with the Python and platform it runs on, and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Debug logging, and tracebacks on errors.")] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, show_default=False, help="More log output (-v: info).")
    ] = 0,
) -> None:
    ctx.obj = Invocation(debug=debug, verbose=verbose)


def _command(name: str) -> Any:
    """``cs_posthog.commands.<name>``, imported when its command runs (not for ``--help``)."""
    import importlib

    return importlib.import_module(f"cs_posthog.commands.{name}")


def _flags(options: dict[str, Any]) -> Flags:
    """The connect/edit flags among a command's parsed options (its ``locals()``)."""
    from cs_posthog.wizard.noinput import Flags

    return Flags.from_options(options)


def _app(*, json_mode: bool = False, quiet: bool = False) -> App:
    """The invocation's App, made here once: the environment read (``App.from_environ``), logging
    set up, and every key the installation could use registered for redaction before anything is
    printed or a config value is checked."""
    from cs_posthog.app import App
    from cs_posthog.output import setup_logging

    inv = _invocation()
    app = App.from_environ(os.environ, debug=inv.debug, json_mode=json_mode, quiet=quiet)
    setup_logging(verbose=inv.verbose, debug=app.debug)
    app.know_keys()
    inv.app = app
    return app


def handle_errors(fn: F) -> F:
    """Render known errors as one stderr line plus a hint, with their exit code; never a traceback
    unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except CsPosthogError as exc:
            if isinstance(exc, Interrupted) and interrupts.terminated():  # the sync's stop, after SIGTERM
                exc = interrupts.error_for()
            hint = exc.hint
            if hint is None and exc.exit_code == ExitCode.USAGE:
                hint = f"See `cs-posthog {fn.__name__} --help`."
            _render_error(exc.message, hint)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt as exc:  # Ctrl-C (130), or SIGTERM (143) turned into one by ``interrupts``
            _interrupted_exit(exc)
        except Exception as exc:  # a bug: say so, point at --debug
            if type(exc).__module__ == "sqlite3":  # the state file damaged, full or read-only mid-run
                from cs_posthog.sync.state import unusable_state_error

                err = unusable_state_error(exc, _current_app().paths.state_db)
                if err is not None:
                    _render_error(err.message, err.hint)
                    raise typer.Exit(int(err.exit_code)) from None
            ferr = file_errno_error(exc)  # a file of ours: disk full (74), read-only or not allowed (73)
            if ferr is not None:
                _render_error(ferr.message, ferr.hint)
                raise typer.Exit(int(ferr.exit_code)) from None
            _render_error(
                f"unexpected error: {type(exc).__name__}: {exc}",
                "This is a bug in cs-posthog. Re-run with --debug for the traceback and report it.",
            )
            raise typer.Exit(int(ExitCode.BUG)) from None

    return wrapper  # type: ignore[return-value]


def _current_app() -> App:
    """The App the command made, or (an error before it did) one made now from the environment."""
    inv = _invocation()
    if inv.app is None:
        from cs_posthog.app import App

        inv.app = App.from_environ(os.environ, debug=inv.debug)
    return inv.app


def _render_error(message: str, hint: str | None, *, with_traceback: bool = True) -> None:
    from cs_posthog.secrets import redact

    debug = False
    try:
        app = _current_app()
        debug = app.debug
        app.know_keys()  # errors may quote a key before any command read it (a pasted one)
    except Exception:  # rendering an error must not fail
        pass

    if debug and with_traceback:
        import traceback

        from cs_posthog.output import esc

        sys.stderr.write(esc(redact(traceback.format_exc()), markup=False, keep="\n\t"))
    width = _terminal_width(sys.stderr)
    sys.stderr.write(_wrapped("error: ", _one_line(redact(message)), width))
    if hint:
        sys.stderr.write(_wrapped("hint: ", _one_line(redact(hint)), width))
    sys.stderr.flush()


def _terminal_width(stream: object) -> int | None:
    """The columns of the terminal ``stream`` writes to; None off a terminal (a log, a pipe, cron),
    where an error stays one line."""
    try:
        if not stream.isatty():  # type: ignore[attr-defined]
            return None
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            return int(columns)
        return os.get_terminal_size(stream.fileno()).columns  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def _wrapped(prefix: str, text: str, width: int | None) -> str:
    """``prefix`` and ``text`` as one line, or on a terminal broken between words at its width, the
    lines after the first starting under the text (the terminal would cut words at column 0)."""
    if width is None or len(prefix) + len(text) <= width or width < 2 * len(prefix) + 10:
        return f"{prefix}{text}\n"
    import textwrap

    lines = textwrap.wrap(text, width=width, initial_indent=prefix, subsequent_indent=" " * len(prefix),
                          break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    """Messages quote user input (flags, config keys) and what servers said: line breaks and other
    control characters are shown escaped (``\\n``, ``\\x1b``) by ``output.esc``, the one function
    that does it everywhere, so an error is always one line and cannot drive the terminal."""
    from cs_posthog.output import esc

    return esc(text, markup=False, keep="\t")


# --- options shared by connect and edit --------------------------------------------------------
NoInput = Annotated[
    bool, typer.Option("--no-input", help="Never prompt: take everything from flags and env (scripts, CI).")
]
ApiKeyStdin = Annotated[
    bool,
    typer.Option(
        "--api-key-stdin",
        help="Read the PostHog personal API key from stdin (else env POSTHOG_PERSONAL_API_KEY). "
        "With --cs-api-key-stdin too: PostHog key on the first line, Customerscore key on the second.",
    ),
]
CsApiKeyStdin = Annotated[
    bool,
    typer.Option("--cs-api-key-stdin",
                 help="Read the Customerscore API key from stdin (else env CUSTOMERSCORE_API_KEY)."),
]
Project = Annotated[
    str | None,
    typer.Option("--project", metavar="ID|URL", help="PostHog project id, or its URL (the region is read from it)."),
]
Host = Annotated[
    str | None, typer.Option("--host", metavar="URL", help="Self-hosted PostHog base URL (instead of US/EU Cloud).")
]
CustomerProperty = Annotated[
    str | None,
    typer.Option("--customer-property", metavar="NAME", help="Person property holding the customer (company) id."),
]
CustomerGroup = Annotated[
    str | None,
    typer.Option("--customer-group", metavar="TYPE",
                 help="The customer is a PostHog group of this type (its name, e.g. company, or its index 0-4); "
                 "events go to the group they carry, a Person to the group of their most recent selected event. "
                 "Not with --customer-property."),
]
CustomerGroupProperty = Annotated[
    str | None,
    typer.Option("--customer-group-property", metavar="NAME",
                 help="With --customer-group: the group property holding the customer id (default: the group key)."),
]
ContactAttributes = Annotated[
    list[str] | None,
    typer.Option("--contact-attribute", metavar="PROP[=CODENAME]",
                 help="A Person property sent as a contact attribute (repeatable), under the Customerscore attribute "
                 "codename CODENAME (default: the name in snake_case; split at the last =). Customerscore drops, "
                 "silently, an attribute whose codename it does not define. In edit: the new list."),
]
Events = Annotated[list[str] | None, typer.Option("--event", metavar="NAME", help="An event to sync (repeatable).")]
AllEvents = Annotated[bool, typer.Option("--all-events", help="Sync every event PostHog knows.")]
Filters = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        metavar="RULE",
        help='Person filter (repeatable): "plan = pro", "plan != free", "email is set", "phone is not set". '
        'Names may contain spaces (split at the first " = " or " != "); quote a value to keep spaces at its '
        'ends or to match an empty string (plan = ""), and a name that contains " = ". Values compare as text.',
    ),
]
FilterEvents = Annotated[
    bool | None,
    typer.Option(
        "--filter-events/--no-filter-events",
        help="Send only the events of the Persons matching the filters (a new setup's default), or the events "
        "of every Person with a customer id (the filters then choose the contacts only).",
        show_default=False,
    ),
]
CsUrl = Annotated[
    str | None,
    typer.Option("--cs-url", metavar="URL",
                 help="Customerscore API base URL (default https://api.customerscore.io)."),
]
TrackerKey = Annotated[
    str | None, typer.Option("--tracker-key", metavar="CS-...", help="Customerscore public tracker key.")
]
ContactId = Annotated[
    str | None,
    typer.Option("--contact-id", metavar="person_id|PROPERTY",
                 help="What identifies a contact: the PostHog person id (default) or a Person property."),
]
NoSync = Annotated[bool, typer.Option("--no-sync", help="Save the configuration without running the first sync.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")]


@app.command()
@handle_errors
def connect(
    no_input: NoInput = False,
    restart: Annotated[bool, typer.Option("--restart", help="Ignore a saved draft and start over.")] = False,
    api_key_stdin: ApiKeyStdin = False,
    cs_api_key_stdin: CsApiKeyStdin = False,
    project: Project = None,
    host: Host = None,
    customer_property: CustomerProperty = None,
    customer_group: CustomerGroup = None,
    customer_group_property: CustomerGroupProperty = None,
    event: Events = None,
    all_events: AllEvents = False,
    filter: Filters = None,
    filter_events: FilterEvents = None,
    cs_url: CsUrl = None,
    tracker_key: TrackerKey = None,
    contact_id: ContactId = None,
    contact_attribute: ContactAttributes = None,
    no_sync: NoSync = False,
) -> None:
    """Set up the integration (interactive wizard, or --no-input).

    On a terminal, a five-step wizard that validates as it goes and resumes where it was left.
    With --no-input, every choice comes from flags and the keys from env or stdin.
    """
    flags = _flags(locals())
    app = _app()
    _command("connect").run(app, flags, no_input=no_input, restart=restart, no_sync=no_sync)


EDIT_SECTIONS = ("posthog", "customerscore", "credentials", "identification", "events", "persons")


def _complete_section(incomplete: str) -> list[str]:
    return [s for s in EDIT_SECTIONS if s.startswith(incomplete)]


def _complete_interval(incomplete: str) -> list[str]:
    from cs_posthog.commands.schedule import INTERVALS

    return [i for i in INTERVALS if i.startswith(incomplete)]


class _ArgumentsWithoutTypes(TyperCommand):
    """Typer writes an argument's Python type beside it in --help (``SECTION <str>``): the help text
    says what the argument takes, and a type name says nothing to a user."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                # a per-instance override on purpose: Typer has no setting for it
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]


@app.command(cls=_ArgumentsWithoutTypes)
@handle_errors
def edit(
    section: Annotated[
        str | None,
        typer.Argument(
            metavar="SECTION",
            help=f"Only this part: {', '.join(EDIT_SECTIONS)} (credentials: both services' keys). "
                 "Without it, a menu asks what to change.",
            show_default=False,
            autocompletion=_complete_section,
        ),
    ] = None,
    no_input: NoInput = False,
    api_key_stdin: ApiKeyStdin = False,
    cs_api_key_stdin: CsApiKeyStdin = False,
    project: Project = None,
    host: Host = None,
    customer_property: CustomerProperty = None,
    customer_group: CustomerGroup = None,
    customer_group_property: CustomerGroupProperty = None,
    event: Events = None,
    all_events: AllEvents = False,
    filter: Filters = None,
    filter_events: FilterEvents = None,
    cs_url: CsUrl = None,
    tracker_key: TrackerKey = None,
    contact_id: ContactId = None,
    contact_attribute: ContactAttributes = None,
    no_filters: Annotated[
        bool, typer.Option("--no-filters", help="With --no-input: remove every Person filter (the customer id "
                           "condition stays).")] = False,
    no_contact_attributes: Annotated[
        bool, typer.Option("--no-contact-attributes", help="With --no-input: send no contact attribute "
                           "(email and name only).")] = False,
) -> None:
    """Change the saved setup (the wizard again, pre-filled).

    With a SECTION, only that part. Leaving without saving changes nothing. With --no-input, the
    flags given are the changes.
    """
    flags = _flags(locals())
    app = _app()
    if section is not None and section not in EDIT_SECTIONS:
        raise UsageError(
            f"{section!r} is not a section of the setup",
            hint=f"Choose one of: {', '.join(EDIT_SECTIONS)} (or none: a menu asks).",
        )
    _command("edit").run(app, flags, section=section, no_input=no_input)


@app.command()
@handle_errors
def sync(
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and map everything, send nothing, move no cursor.")
    ] = False,
    full: Annotated[bool, typer.Option("--full", help="Ignore cursors and fingerprints: a full re-sync.")] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="DATE",
                     help="Backfill events from this date (YYYY-MM-DD) on a first or --full sync."),
    ] = None,
) -> None:
    """Send new events and changed Persons to Customerscore.

    Incremental and safe to run from cron: a second run while one is going exits 75 at once.
    """
    app = _app(json_mode=json_, quiet=quiet)
    cfg = _require_config(app)
    _command("sync").run(app, config=cfg, json_=json_, quiet=quiet, dry_run=dry_run, full=full, since=since)


@app.command()
@handle_errors
def status(json_: JsonOpt = False) -> None:
    """Show the connection, keys (masked), last runs and schedule."""
    app = _app(json_mode=json_)
    cfg = _require_config(app)
    _command("status").run(app, config=cfg, json_=json_)


@app.command()
@handle_errors
def disconnect(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove the integration from this machine.

    Deletes the config, the draft, the stored keys and the sync state. Data already sent to
    Customerscore stays there.
    """
    _command("disconnect").run(_app(), yes=yes)


@app.command()
@handle_errors
def schedule(
    every: Annotated[str, typer.Option("--every", metavar="INTERVAL",
                                       help="15m, 30m, 1h (default), 2h, 3h, 6h, 12h or 1d.",
                                       autocompletion=_complete_interval)] = "1h",
    install: Annotated[bool, typer.Option("--install", help="Add the line to your crontab (never twice).")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Take the line out of your crontab.")] = False,
) -> None:
    """Print or install the crontab line for regular syncs.

    The line runs `cs-posthog sync --quiet` and appends to a log file.
    """
    app = _app()
    if install and remove:
        raise UsageError("--install and --remove cannot be used together", hint="Pick one.")
    _command("schedule").run(app, every=every, install=install, remove=remove)


@app.command()
@handle_errors
def demo(
    no_input: NoInput = False,
    json_: Annotated[
        bool, typer.Option("--json", help="Print what Customerscore received as one JSON document.")
    ] = False,
    groups: Annotated[
        bool, typer.Option("--groups", help="The customer is a PostHog group (the sandbox's company), not a "
                                            "Person property.")
    ] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep a local PostHog and Customerscore running for your own app: "
                                           "point PostHog's SDK at the printed host and project token; every "
                                           "event name it sends is synced every --every seconds. Ctrl-C stops.")
    ] = False,
    every: Annotated[
        float, typer.Option("--every", metavar="SECONDS", help="With --serve: seconds between syncs.")
    ] = 10.0,
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", min=0, max=65533,
                          help="With --serve: PostHog US, EU and Customerscore on PORT, PORT+1, PORT+2 "
                               "(fixed, so an app's SDK settings survive a restart); 0 picks free ports.")
    ] = 8010,
) -> None:
    """Try everything on a local sandbox: nothing to sign up for.

    Starts a local PostHog and Customerscore in a temporary home (your own configuration is never
    touched), connects, runs the first sync, shows what Customerscore received, and cleans up.
    On a terminal the real wizard runs with the sandbox's credentials offered as defaults.

    With --serve, the local PostHog starts empty and stays up: send it events from your app with
    PostHog's SDK and watch them reach Customerscore (README: "Try it with your own app").
    """
    if serve:
        _command("demo_serve").serve(_app(json_mode=json_), every=every, port=port, groups=groups, json_=json_)
        return
    if every != 10.0 or port != 8010:
        raise UsageError("--every and --port go with --serve")
    _command("demo").run(_app(json_mode=json_), no_input=no_input, json_=json_, groups=groups)


SHELLS = ("bash", "zsh", "fish")


def _complete_shell(incomplete: str) -> list[str]:
    return [s for s in SHELLS if s.startswith(incomplete)]


COMPLETE_VAR = "_CS_POSTHOG_COMPLETE"  # what the completion scripts set when they ask for candidates


@app.command(cls=_ArgumentsWithoutTypes, epilog=(
    "Install it, then open a new shell:\n\n"
    "\b\n"
    "bash: add to ~/.bashrc\n"
    "  eval \"$(cs-posthog completion bash)\"\n"
    "zsh: add to ~/.zshrc, after compinit\n"
    "  eval \"$(cs-posthog completion zsh)\"\n"
    "fish: add to ~/.config/fish/config.fish\n"
    "  cs-posthog completion fish | source\n"
    "or save it (loaded on first use) with\n"
    "  cs-posthog completion fish \\\n"
    "    > ~/.config/fish/completions/cs-posthog.fish"
))
@handle_errors
def completion(
    shell: Annotated[str, typer.Argument(metavar="bash|zsh|fish", help="The shell to complete in.", show_default=False,
                                         autocompletion=_complete_shell)],
) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Completes commands, options and their choices; the script calls cs-posthog itself for the
    candidates, so it follows upgrades without being installed again.
    """
    if shell not in SHELLS:
        raise UsageError(f"no completion for {shell!r}", hint="Choose one of: bash, zsh, fish.")
    from cs_posthog._private_apis import completion_script

    typer.echo(completion_script(prog_name="cs-posthog", complete_var=COMPLETE_VAR, shell=shell))


def _require_config(app: App) -> Config:
    """The validated config for `sync` and `status`: "not connected" or a one-line error, exit 78."""
    from cs_posthog.config import load_config

    return load_config(app.paths.config_file)


def main() -> None:
    interrupts.install()
    from cs_posthog.output import install_stream_fallbacks

    install_stream_fallbacks()  # a latin-1 or ascii stream gets ASCII stand-ins, never a UnicodeEncodeError
    if os.environ.get(COMPLETE_VAR):  # a completion script asks for candidates (`cs-posthog completion`)
        from cs_posthog._private_apis import register_completion_shells

        register_completion_shells()
    try:
        app(prog_name="cs-posthog")
    except KeyboardInterrupt as exc:  # between Click's handling and ours: still one line, 130 / 143
        interrupts.exit_now(exc)


if __name__ == "__main__":
    main()
