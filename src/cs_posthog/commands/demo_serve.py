"""`cs-posthog demo --serve`: a local PostHog and Customerscore that stay up for your own app.

The sandbox starts with no events and no Persons (the Customerscore side knows a few customers), on
fixed loopback ports so that an app's SDK configuration survives a restart. Point PostHog's SDK at
the printed host with the printed project token: what it sends is ingested as PostHog ingests it
(``docs/posthog-ingestion.md``). Every ``--every`` seconds the demo syncs, selecting every event name
PostHog knows by then (a name seen for the first time is a newly selected event: the sync catches it
up from the backfill start; PostHog's bookkeeping events such as ``$set`` and ``$identify`` are left
out), and says what reached Customerscore. Ctrl-C stops it and removes the
sandbox and the temporary home.

With ``--json``: one JSON line when ready (``serving``: hosts, project token, customer ids
Customerscore knows), then one per sync that sent or skipped something (``sync``: the report).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text

from cs_posthog.commands.demo import DemoUnavailableError, check_requirements, demo_app
from cs_posthog.config import Config, save_config
from cs_posthog.errors import Interrupted, UsageError
from cs_posthog.output import count
from cs_posthog.posthog.client import PostHogClient
from cs_posthog.sandbox.runner import SandboxError, SandboxUnavailable, get_json, start_sandbox
from cs_posthog.sync.engine import SyncOptions
from cs_posthog.sync.runner import run_sync

if TYPE_CHECKING:
    from cs_posthog.app import App
    from cs_posthog.sync.engine import Report

DEFAULT_PORT = 8010  # PostHog US, EU and Customerscore on 8010, 8011, 8012
DEFAULT_EVERY = 10.0
SERVE_CUSTOMERS = 12
# PostHog's bookkeeping events (Persons, groups): not what a customer did, so not synced here
BOOKKEEPING = {"$set", "$identify", "$groupidentify", "$create_alias", "$merge_dangerously"}


def serve(app: App, *, every: float = DEFAULT_EVERY, port: int = DEFAULT_PORT, groups: bool = False,
          json_: bool = False, cycles: int | None = None) -> None:
    """Run until Ctrl-C (or ``cycles`` syncs, for tests). ``port`` 0: free ports."""
    if every <= 0:
        raise UsageError(f"--every must be a positive number of seconds, not {every:g}")
    check_requirements()
    out = app.out
    if not json_:
        out.info("Starting a local PostHog (US and EU regions) and Customerscore, with no events yet…")
    try:
        sb = start_sandbox(events=0, persons=0, customers=SERVE_CUSTOMERS, seed=7, region="eu", port_base=port)
    except SandboxUnavailable as exc:
        raise DemoUnavailableError(exc.message, hint=exc.hint) from None
    except SandboxError as exc:
        busy = "Address already in use" in str(exc) or "address already in use" in str(exc)
        raise DemoUnavailableError(  # (69, as when the demo cannot run here at all)
            f"the local PostHog could not start on ports {port}-{port + 2}" if busy
            else "the local PostHog and Customerscore did not start",
            hint="Choose other ports with --port N (or --port 0 for any free ones)." if busy
            else "Re-run with --debug to see the sandbox's own error.",
        ) from exc
    try:
        info = sb.info
        with demo_app(app, info, interactive=False) as demo:
            # a sync every few seconds for hours: no pacing to PostHog Cloud's hourly query budget,
            # which a local sandbox does not have (it would slow the syncs down after an hour or so)
            demo = demo.with_settings(rate_scale=None)
            _announce(app, info, json_=json_, groups=groups)
            _loop(demo, info, every=every, groups=groups, json_=json_, cycles=cycles)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cs_posthog.interrupts): the way to stop it, exit 0
        if not json_:
            out.info("\nStopped: the local PostHog and Customerscore are gone, with everything they held.")
    finally:
        sb.stop()


def _announce(app: App, info: dict[str, Any], *, json_: bool, groups: bool) -> None:
    region = info["region"]
    host = info[f"posthog_{region}"]
    customers = sorted(c["external_id"] for c in get_json(info["customerscore"] + "/_sandbox/customers"))
    if json_:
        app.out.data({"serving": {"host": host, "project_token": info["project_token"],
                                  "customerscore": info["customerscore"], "customer_ids": customers,
                                  "customer_property": info["customer_property"],
                                  "group_type": info["group_type"] if groups else None}}, line=True)
        return
    out = app.out
    who = (f"the PostHog group [bold]{info['group_type']}[/bold]: `posthog.group_identify('{info['group_type']}', "
           "'<customer id>')` and `groups={...}` on capture" if groups else
           f"the Person property [bold]{info['customer_property']}[/bold]: `posthog.set(...)` it on a user")
    out.info(f"\n[bold]Local PostHog ready[/bold] at [bold]{host}[/bold], project token "
             f"[bold]{info['project_token']}[/bold] (Customerscore at {info['customerscore']}).")
    out.info(f"The customer is {who}. Customerscore knows these customer ids (others are dropped, as "
             f"Customerscore does): {', '.join(customers[:6])}" + (" …" if len(customers) > 6 else ""))
    out.print(Text("\nWith PostHog's Python SDK (pip install posthog):\n\n"
              "    from posthog import Posthog\n"
              f"    posthog = Posthog(\"{info['project_token']}\", host=\"{host}\")\n"
              f"    posthog.set(distinct_id=\"ann@example.com\", properties={{\"email\": \"ann@example.com\", "
              f"\"{info['customer_property']}\": \"{customers[0] if customers else 'acme'}\"}})\n"
              "    posthog.capture(\"report_created\", distinct_id=\"ann@example.com\")\n"
              "    posthog.shutdown()\n"))
    out.info("Every event name PostHog sees (but its $set, $identify… bookkeeping) is synced. "
             "Waiting for events… (Ctrl-C to stop)")


def _loop(demo: App, info: dict[str, Any], *, every: float, groups: bool, json_: bool, cycles: int | None) -> None:
    known: list[str] = []
    cfg: Config | None = None
    n = 0
    while cycles is None or n < cycles:
        n += 1
        names = _event_names(demo, info)
        if names and names != known:
            cfg = _config(info, names, groups=groups)
            save_config(cfg, demo.paths.config_file)
            if known and not json_:
                new = [x for x in names if x not in known]
                demo.out.info(f"{_now()}  new event {count(len(new), 'name')} to sync: {', '.join(new[:5])}")
            known = names
        if cfg is not None:
            report, error = run_sync(cfg, paths=demo.paths, secrets=demo.secrets, settings=demo.settings,
                                     options=SyncOptions(check_definitions=False))
            if isinstance(error, Interrupted):  # Ctrl-C (or SIGTERM) during the sync: it checkpointed; stop
                raise KeyboardInterrupt
            _tell(demo, report, error, json_=json_)
        if cycles is None or n < cycles:
            time.sleep(every)


def _event_names(demo: App, info: dict[str, Any]) -> list[str]:
    host = info[f"posthog_{info['region']}"]
    with PostHogClient(host, info["api_key"], int(info["project_id"]), settings=demo.settings) as ph:
        return sorted(d.name for d in ph.event_definitions() if d.name not in BOOKKEEPING)


def _config(info: dict[str, Any], events: list[str], *, groups: bool) -> Config:
    ident: dict[str, Any] = (
        {"kind": "group", "group_type": info["group_type"], "group_type_index": info["group_type_index"]}
        if groups else {"property": info["customer_property"]})
    region = info["region"]
    return Config.model_validate({
        "posthog": {"region": region, "host": info[f"posthog_{region}"], "project_id": info["project_id"]},
        "customerscore": {"api_url": info["customerscore"], "tracker_key": info["tracker_key"]},
        "identification": ident,
        "events": {"selected": events},
        "persons": {"filter_events": False},
    })


def _tell(demo: App, report: Report, error: BaseException | None, *, json_: bool) -> None:
    out = demo.out
    d = report.as_dict()
    skipped = sum(v for k, v in d.items() if k.startswith("events_skipped_") and isinstance(v, int))
    busy = d["events_sent"] or d["contacts_sent"] or skipped or error is not None
    if not busy:
        return
    if json_:
        out.data({"sync": d}, line=True)
        return
    if error is not None:
        out.warn(f"{_now()}  the sync failed: {getattr(error, 'message', error)}")
        return
    parts = [f"{count(d['events_sent'], 'event')} sent ({count(d['customers_referenced'], 'customer')})",
             count(d["contacts_sent"], "contact")]
    if skipped:
        parts.append(f"{count(skipped, 'event')} skipped (no customer id)")
    out.info(f"{_now()}  " + ", ".join(parts))


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")
