"""`cs-posthog demo`: the whole product on the embedded sandbox, nothing to sign up for.

Starts the sandbox (PostHog US/EU and Customerscore) on free loopback ports, makes its own App for a
fresh temporary home, the sandbox's region hosts, a key file and (without a terminal) the sandbox's
keys (a real configuration is never touched, and neither is ``os.environ``: the command's App and
any other in the process are unchanged), connects (the real wizard on a terminal, sensible choices
without one), runs the first sync, shows what Customerscore received, and prints the next steps. The
sandbox and the temporary files are removed on the way out, Ctrl-C included.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypedDict

from rich.table import Table

from cs_posthog.commands import connect
from cs_posthog.commands.sync import SUMMARY_FIELDS, execute
from cs_posthog.config import load_config
from cs_posthog.errors import CsPosthogError, ExitCode
from cs_posthog.output import count
from cs_posthog.sandbox.requirements import parser_problem
from cs_posthog.sandbox.runner import SandboxUnavailable, get_json, get_jsonl, start_sandbox
from cs_posthog.sync.engine import SyncOptions
from cs_posthog.wizard.noinput import Flags

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cs_posthog.app import App
    from cs_posthog.config import Config
    from cs_posthog.output import Output
    from cs_posthog.sync.engine import Report

# What the non-interactive demo connects with: the customer property comes from the sandbox.
DEMO_EVENTS = ["user_logged_in", "dashboard_viewed", "report_created", "invoice_paid", "subscription_upgraded"]
DEMO_FILTERS = ["plan != free"]


class _SandboxSize(TypedDict):
    """The size arguments of ``start_sandbox``."""

    events: int
    persons: int
    customers: int
    seed: int


DEMO_SIZE: _SandboxSize = {"events": 20_000, "persons": 1_000, "customers": 60, "seed": 7}



def run(app: App, *, no_input: bool = False, json_: bool = False, groups: bool = False) -> None:
    """``app`` is the command's; the demo runs in an App of its own (``demo_app``). Tests (and anyone
    curious) can attach the demo to a sandbox they started themselves: its JSON line in
    ``CS_POSTHOG_DEMO_SANDBOX`` (``app.settings.demo_sandbox``); the demo then leaves it running.
    ``groups``: the customer is the sandbox's PostHog group (``company``), not a Person property."""
    out = app.out
    if not app.settings.demo_sandbox:
        check_requirements()
    interactive = not no_input and not json_ and out.stdin_is_tty()
    with _sandbox(app) as info, demo_app(app, info, interactive=interactive) as demo:
        region = info["region"]
        out.info(f"[bold]Sandbox ready[/bold]: PostHog ({region.upper()}) at {info['posthog_' + region]}, "
                 f"Customerscore at {info['customerscore']}; temporary home {demo.settings.home}")
        cfg = _connect(demo, info, interactive=interactive, groups=groups)
        if cfg is None:  # the wizard was stopped before saving
            out.info("The demo stopped before the setup was saved: nothing was synced. "
                     "Run `cs-posthog demo` again to see the whole of it.")
            return
        report = _first_sync(demo, cfg)
        summary = summarize(info, report.as_dict())
        summary["customer"] = cfg.identification.describe()
        if json_:
            out.data(summary)
        else:
            render(out, summary)
            next_steps(out)
        if report.status != "ok":
            raise CsPosthogError(f"the demo sync ended with status {report.status!r}",
                                 hint="Re-run with --debug to see why.")


class DemoUnavailableError(CsPosthogError):
    """The demo cannot run on this installation (PostHog's HogQL parser is missing)."""

    exit_code = ExitCode.UNAVAILABLE


def check_requirements() -> None:
    """Before anything starts: the sandbox's PostHog needs PostHog's HogQL parser. Without it, one
    line naming what to install, exit 69 (not a sync that retries 500s and blames PostHog)."""
    problem = parser_problem("the demo")
    if problem is not None:
        raise DemoUnavailableError(problem[0], hint=problem[1])


@contextmanager
def _sandbox(app: App) -> Iterator[dict[str, Any]]:
    attached = app.settings.demo_sandbox
    if attached:
        yield json.loads(attached)
        return

    app.out.info("Starting a local PostHog (US and EU regions) and Customerscore…")
    try:
        sb = start_sandbox(**DEMO_SIZE, region="eu")
    except SandboxUnavailable as exc:  # the parser is there but does not load
        raise DemoUnavailableError(exc.message, hint=exc.hint) from None
    try:
        yield sb.info
    finally:
        sb.stop()


@contextmanager
def demo_app(app: App, info: dict[str, Any], *, interactive: bool) -> Iterator[App]:
    """The demo's own App: a fresh temporary home (removed afterwards), keys in a file there, the
    sandbox as PostHog's US and EU Cloud and, without a terminal, the sandbox's keys as if they were
    in the environment (the wizard asks for them on a terminal). Same output sink and other
    settings (timeouts, pacing) as ``app``, which is left as it was."""
    home = tempfile.mkdtemp(prefix="cs-posthog-demo-")
    try:
        changes: dict[str, Any] = dict(home=home, secret_store="file", us_host=info["posthog_us"],
                                       eu_host=info["posthog_eu"])
        if not interactive:
            changes.update(posthog_key=info["api_key"], customerscore_key=info["customerscore_api_key"])
        demo = app.with_settings(**changes)
        demo.know_keys()
        yield demo
    finally:
        shutil.rmtree(home, ignore_errors=True)


class _ConnectCommon(TypedDict):
    """The ``connect.run`` arguments both ways of connecting share."""

    restart: bool
    no_sync: bool
    caller_syncs: bool


def _connect(app: App, info: dict[str, Any], *, interactive: bool, groups: bool = False) -> Config | None:
    # the demo runs the first sync itself
    out = app.out
    common: _ConnectCommon = dict(restart=True, no_sync=True, caller_syncs=True)
    if interactive:
        out.info("\n[bold]The setup wizard[/bold], against the sandbox. Each question offers the sandbox's "
                 "answer: press Enter to take it, or type your own.")
        offered = Table.grid(padding=(0, 2))
        offered.add_column(no_wrap=True)
        offered.add_column()
        for label, value in (
            ("PostHog personal API key", info["api_key"]),
            ("Project ID", info["project_id"]),
            ("Customerscore API key", info["customerscore_api_key"]),
            ("Tracker key", info["tracker_key"]),
            ("Customerscore API URL", f"{info['customerscore']} (an advanced option)"),
            ("Customer", f"the PostHog group {info['group_type']} (its key)" if groups
             else f"the Person property {info['customer_property']}"),
            ("Events", ", ".join(DEMO_EVENTS)),
            ("Persons condition", DEMO_FILTERS[0]),
        ):
            offered.add_row(f"  {label}", str(value))
        if out.human:
            out.err.print(offered)
        connect.run(  # the URL is offered (demo_defaults), not given
            app, Flags(events=DEMO_EVENTS, filters=DEMO_FILTERS, customer_group=info["group_type"] if groups else None),
            no_input=False, demo_defaults=info, **common,
        )
    else:
        customer = (f"PostHog group {info['group_type']!r}" if groups
                    else f"customer property {info['customer_property']!r}")
        out.info(
            f"Connecting with: project {info['project_id']}, {customer}, events {', '.join(DEMO_EVENTS)}, "
            f"filter {DEMO_FILTERS[0]!r}"
        )
        flags = Flags(project=str(info["project_id"]),
                      customer_property=None if groups else info["customer_property"],
                      customer_group=info["group_type"] if groups else None,
                      events=DEMO_EVENTS, filters=DEMO_FILTERS, cs_url=info["customerscore"],
                      tracker_key=info["tracker_key"])
        connect.run(app, flags, no_input=True, **common)

    if not app.paths.config_file.exists():
        return None
    return load_config(app.paths.config_file)


def _first_sync(app: App, cfg: Config) -> Report:
    app.out.info("\n[bold]First sync[/bold] (30 days of events, then the Persons as Contacts)…")
    report, error = execute(app, cfg, SyncOptions())
    if error is not None:
        raise error
    return report


def summarize(info: dict, report: dict) -> dict:
    """What Customerscore received, per customer, from the sandbox's own hooks."""
    cs = info["customerscore"]
    events = get_jsonl(cs + "/_sandbox/received/events")
    contacts = get_jsonl(cs + "/_sandbox/received/contacts")
    stats = get_json(cs + "/_sandbox/stats")
    per_customer: dict[str, dict] = defaultdict(lambda: {"events": Counter(), "contacts": 0})
    for ev in events:
        per_customer[ev["identification"]["customer"]]["events"][ev["name"]] += 1
    for c in contacts:
        per_customer[c["customer_external_id"]]["contacts"] += 1
    customers = {
        cid: {"events": dict(sorted(v["events"].items())), "events_total": sum(v["events"].values()),
              "contacts": v["contacts"]}
        for cid, v in sorted(per_customer.items())
    }
    return {
        "sync": report,
        "received": {
            "events": len(events),
            "contacts": len(contacts),
            "customers": len(customers),
            "per_customer": customers,
        },
        "dropped": {
            "events_unknown_customer": _stat(stats, "events", "dropped"),
            "contacts_unknown_customer": _stat(stats, "contacts", "dropped"),
        },
    }


def _stat(stats: dict, kind: str, what: str) -> int:
    """Read e.g. stats["events"]["dropped"] or stats["events_dropped"], whichever the sandbox uses."""
    node = stats.get(kind)
    if isinstance(node, dict) and isinstance(node.get(what), int):
        return node[what]
    value = stats.get(f"{kind}_{what}")
    return value if isinstance(value, int) else 0


def render(out: Output, summary: dict, *, top: int = 12) -> None:
    rec = summary["received"]
    table = Table(title=f"What Customerscore received ({count(rec['customers'], 'customer')})", title_justify="left")
    table.add_column("customer")
    table.add_column("events", justify="right")
    table.add_column("by name")
    table.add_column("contacts", justify="right")
    ranked = sorted(rec["per_customer"].items(), key=lambda kv: -kv[1]["events_total"])
    for cid, row in ranked[:top]:
        names = ", ".join(f"{n} {c}" for n, c in sorted(row["events"].items(), key=lambda kv: -kv[1]))
        table.add_row(cid, f"{row['events_total']:,}", names, f"{row['contacts']:,}")
    if len(ranked) > top:
        rest = ranked[top:]
        table.add_row(f"… {len(rest)} more", f"{sum(r['events_total'] for _, r in rest):,}", "",
                      f"{sum(r['contacts'] for _, r in rest):,}")
    table.add_row("[bold]total[/bold]", f"[bold]{rec['events']:,}[/bold]", "", f"[bold]{rec['contacts']:,}[/bold]")
    out.print()
    out.print(table)

    s, d = summary["sync"], summary["dropped"]
    why = Table(title="Not on a timeline, and why", title_justify="left", show_header=True)
    why.add_column("count", justify="right")
    why.add_column("what")
    why.add_column("reason")
    group_mode = " group " in f" {summary.get('customer', '')} "
    why.add_row(f"{s.get('events_skipped_no_customer', 0):,}", "events skipped by cs-posthog",
                "they carry no group of the customer's type" if group_mode
                else "their Person has no customer id (the customer property is not set)")
    persons_skipped = sum(s.get(k, 0) or 0 for k in
                          ("contacts_skipped_no_customer", "contacts_skipped_no_contact_id",
                           "contacts_skipped_invalid"))
    why.add_row(f"{persons_skipped:,}", "Persons skipped by cs-posthog",
                "their customer id (or contact id) is empty, or too long to send")
    why.add_row(f"{d['events_unknown_customer']:,}", "events dropped by Customerscore",
                "their customer id is not a customer in Customerscore (silently ignored)")
    why.add_row(f"{d['contacts_unknown_customer']:,}", "contacts dropped by Customerscore",
                "same: no such customer")
    why.add_row("—", "events without a metric", "Customerscore keeps only events whose name matches a metric codename")
    out.print()
    out.print(why)

    figures = Table(title="Figures of `cs-posthog sync --json`", title_justify="left")  # narrower than the table
    figures.add_column("field")
    figures.add_column("value", justify="right")
    for k in SUMMARY_FIELDS:
        v = s.get(k)
        figures.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    out.print()
    out.print(figures)


def next_steps(out: Output) -> None:
    out.print(
        "\n[bold]Next steps[/bold] with your own PostHog project:\n"
        "  1. In PostHog: Settings → Personal API keys → Create, label \"Customerscore.io\", with the read "
        "scopes Action, Event definition, Organization, Project, Property definition and Query.\n"
        "  2. cs-posthog connect\n"
        "  3. cs-posthog schedule --install      (a sync every hour from cron)\n"
    )
