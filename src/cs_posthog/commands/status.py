"""`cs-posthog status`: what is connected, with which keys (masked), what is synced, how the last
runs went, where the cursors are, and whether a schedule is installed. Offline: no API call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from cs_posthog import __version__
from cs_posthog.commands.schedule import installed_line
from cs_posthog.config import load_config
from cs_posthog.output import count, esc
from cs_posthog.secrets import SPECS, mask
from cs_posthog.sync.state import WRITER_KEY, RunLock, SyncState

if TYPE_CHECKING:
    from cs_posthog.app import App
    from cs_posthog.config import Config
    from cs_posthog.output import Output


def collect(app: App, config: Config | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` document)."""
    paths = app.paths
    cfg = config if config is not None else load_config(paths.config_file)
    keys: dict[str, Any] = {}
    for name in ("posthog", "customerscore"):
        try:
            found = app.secrets.find(name)
        except Exception:
            found = None
        keys[name] = {
            "label": SPECS[name].label,
            "masked": mask(found.value) if found else None,
            "stored_in": found.where if found else None,
        }
    state = SyncState(paths.state_db, readonly=True)
    try:
        runs = [r.as_dict() for r in state.last_runs(5)]
        streams = state.streams()
        cursors = [
            {
                "stream": s.name,
                "events": s.events,
                "backfill_from": s.floor,
                "created_at": s.cursor.created_at if s.cursor else None,
                "uuid": s.cursor.uuid if s.cursor else None,
                "updated_at": s.updated_at,
            }
            for s in streams
        ]
        inflight = len(state.inflight())
        contacts_known = state.contacts_count()
        persons_pending = state.pending_persons_count()
        merged_pending = state.pending_merged_count()
        written_by = state.get_meta(WRITER_KEY)
    finally:
        state.close()
    running = RunLock(paths.lock_file).held_elsewhere if paths.lock_file.exists() else False
    # who holds the lock and when it last made progress (its heartbeat): a stuck sync keeps the lock
    holder = RunLock(paths.lock_file).holder() if running else None
    last_ok = next((r for r in runs if r["status"] == "ok"), None)
    not_matching = None
    if last_ok and last_ok.get("summary"):
        not_matching = last_ok["summary"].get("contacts_no_longer_matching")
    line = installed_line(app)
    return {
        "posthog": {
            "host": cfg.posthog.host,
            "region": cfg.posthog.region.value,
            "project_id": cfg.posthog.project_id,
            "project_name": cfg.posthog.project_name,
            "timezone": cfg.posthog.timezone,
            "query_budget_per_hour": cfg.posthog.effective_query_budget,
            "query_tier": cfg.posthog.query_tier,
            "query_tier_detected_at": (
                cfg.posthog.query_tier_detected_at.isoformat().replace("+00:00", "Z")
                if cfg.posthog.query_tier_detected_at else None
            ),
        },
        "customerscore": {"api_url": cfg.customerscore.api_url, "tracker_key": cfg.customerscore.tracker_key},
        "keys": keys,
        "customer_property": cfg.identification.person_property,  # None when a group is the customer
        "identification": {**cfg.identification.model_dump(mode="json"),
                           "describe": cfg.identification.describe()},
        "contact_attributes": [a.model_dump(mode="json") for a in cfg.persons.attributes],
        "events": list(cfg.events.selected),
        "filters": [f.describe() for f in cfg.all_filters()],
        "filter_events": cfg.persons.filter_events,
        "contact_id": cfg.persons.contact_id,
        "sync_settings": {
            "backfill_days": cfg.sync.backfill_days,
            "overlap_minutes": cfg.sync.overlap_minutes,
            "max_lateness_days": cfg.sync.max_lateness_days,
        },
        "running": running,
        "running_sync": holder,
        "persons_waiting_for_backfill": persons_pending,
        "merged_ids_waiting_for_backfill": merged_pending,
        "last_runs": runs,
        "cursors": cursors,
        "batch_in_flight": inflight,
        "contacts_known": contacts_known,
        "contacts_no_longer_matching": not_matching,
        "schedule": {"installed": line is not None, "line": line},
        "version": __version__,
        "state_written_by": written_by,
        "paths": {"config": str(paths.config_file), "state": str(paths.state_db), "log": str(paths.log_file)},
    }


def run(app: App, *, config: Config | None = None, json_: bool = False) -> None:
    out = app.out
    data = collect(app, config)
    if json_:
        out.data(data)
        return
    render(out, data)


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return iso[:19].replace("T", " ") + " UTC"


def _run_counts(r: dict[str, Any]) -> str:
    s = r.get("summary") or {}
    if not s:
        return ""
    parts = [count(s.get("events_sent", 0), "event"), count(s.get("contacts_sent", 0), "contact")]
    if s.get("events_skipped_no_customer"):
        parts.append(f"{s['events_skipped_no_customer']:,} skipped")
    if s.get("resent_after_crash"):
        parts.append(f"{s['resent_after_crash']:,} resent")
    if s.get("duration_s") is not None:
        parts.append(f"{s['duration_s']:.1f} s")
    return ", ".join(parts)


def query_budget_line(ph: dict[str, Any]) -> str:
    """The "PostHog query budget" row: ``120/hour (legacy tier, detected 2026-05-01)``."""
    budget = f"{ph['query_budget_per_hour']:,}/hour"
    tier = ph.get("query_tier")
    if tier == "legacy":
        when = ph.get("query_tier_detected_at")
        return f"{budget} (legacy tier" + (f", detected {when[:10]})" if when else ")")
    if tier == "current":
        return f"{budget} (current tier)"
    return budget


def running_line(holder: dict[str, Any] | None) -> str:
    """The "a sync is running" line; when its heartbeat is old, how long it has made no progress."""
    if not holder:
        return "a sync is running now"
    pid = f"pid {holder['pid']}" if holder.get("pid") else "pid unknown"
    since = _when(holder.get("started_at"))
    if not holder.get("stalled"):
        return f"a sync is running now (since {since}, {pid})"
    minutes = int(holder.get("idle_s", 0) // 60)
    kill = f"`kill {holder['pid']}`" if holder.get("pid") else "stop it"
    return (
        f"a sync has been running since {since} and made no progress for {minutes} minutes ({pid}): it may be "
        f"stuck on a connection (waiting for PostHog's query budget counts as progress). If it stays so, {kill}: "
        "the next run "
        "resumes from its last checkpoint"
    )


def render(out: Output, d: dict[str, Any]) -> None:
    """The human view. Every name or value from PostHog, the config or the state goes through
    ``esc`` (control characters visible; an event name is anyone's to choose)."""
    def show(value: Any) -> str:
        return esc(value, markup=False)

    ph = d["posthog"]
    t = Table(show_header=False, box=None, pad_edge=False, title="Connection", title_justify="left")
    t.add_column("key", style="bold")
    t.add_column("value")
    name = f" ({show(ph['project_name'])})" if ph["project_name"] else ""
    t.add_row("PostHog", Text(f"project {ph['project_id']}{name}, {ph['region']} — {show(ph['host'])}"))
    t.add_row("PostHog query budget", Text(query_budget_line(ph)))
    cs = d["customerscore"]
    t.add_row("Customerscore", Text(f"{show(cs['api_url'])}, tracker key {show(cs['tracker_key'])}"))
    for k in d["keys"].values():
        val = f"{show(k['masked'])} (in {show(k['stored_in'])})" if k["masked"] else "missing"
        t.add_row(k["label"], Text(val, style="" if k["masked"] else "red"))
    ident = d.get("identification") or {}
    t.add_row("Customer", Text(show(ident.get("describe") or f"Person property {d['customer_property']}")))
    if ident.get("kind") == "group":
        t.add_row("Contacts", Text("each Person belongs to the group on their most recent selected event in the last "
                                   f"{d['sync_settings']['backfill_days']} days"))
    t.add_row("Contact id", Text(show(d["contact_id"])))
    attrs = d.get("contact_attributes") or []
    t.add_row("Contact attributes", Text(", ".join(["email", *(
        show(a["property"]) if a["property"] == a["codename"] else f"{show(a['property'])} as {show(a['codename'])}"
        for a in attrs)])))
    t.add_row("Events", Text(", ".join(map(show, d["events"]))))
    scope = ("they choose the events too" if d.get("filter_events")
             else "contacts only: the events of every Person with a customer id are sent"
             ) if len(d["filters"]) > 1 else ""
    t.add_row("Person filters", Text((" AND ".join(map(show, d["filters"])) or "none")
                                     + (f" ({scope})" if scope else "")))
    s = d["sync_settings"]
    t.add_row(
        "Sync",
        Text(
            f"backfill {s['backfill_days']} days, overlap {s['overlap_minutes']} min; events ingested more than "
            f"{s['max_lateness_days']} days after they happened are not synced"
        ),
    )
    out.print(t)

    runs = Table(title="Last runs", title_justify="left")
    for col in ("started", "mode", "result", "counts"):
        runs.add_column(col, overflow="fold")  # a narrow terminal breaks a long word, never cuts it short
    for r in d["last_runs"]:
        style = {"ok": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}.get(r["status"], "")
        result = show(r["status"]) + (f": {show(r['error'])}" if r.get("error") else "")
        runs.add_row(Text(_when(r["started_at"])), Text(show(r["mode"])), Text(result, style=style),
                     Text(_run_counts(r)))
    if d["last_runs"]:
        out.print(runs)
    else:
        out.print(Text("No sync has run yet: `cs-posthog sync`."))

    if d.get("persons_waiting_for_backfill"):
        n = d["persons_waiting_for_backfill"]
        out.print(Text(f"{n:,} Person{'s' if n != 1 else ''} became attachable since the last sync: the next sync "
                       f"sends their events of the last {s['backfill_days']} days."))
    if d.get("merged_ids_waiting_for_backfill"):
        n = d["merged_ids_waiting_for_backfill"]
        out.print(Text(f"{count(n, 'anonymous id')} PostHog merged into known Persons since their events were "
                       "skipped: the next sync sends those events."))
    if d["cursors"]:
        c = Table(title="Event cursors", title_justify="left")
        for col in ("stream", "events", "read up to (ingestion time)", "since"):
            c.add_column(col)
        for cur in d["cursors"]:
            c.add_row(Text(show(cur["stream"])), Text(", ".join(map(show, cur["events"]))),
                      Text(_when(cur["created_at"])),
                      Text(show(cur["backfill_from"])[:10]))
        out.print(c)
    extra = []
    if d["running"]:
        extra.append(running_line(d.get("running_sync")))
    if d["batch_in_flight"]:
        n = d["batch_in_flight"]
        it = "it" if n == 1 else "them"
        if d["last_runs"] and d["last_runs"][0]["status"] == "failed":
            # a clean failure (Customerscore unreachable, 5xx after retries): no crash, nothing stopped;
            # the batch may have been applied all the same, so it is sent again
            extra.append(f"{count(n, 'event')} {'was' if n == 1 else 'were'} being sent when the last sync "
                         f"failed (Customerscore may have {it} already): the next run sends {it} again")
        else:
            extra.append(f"{count(n, 'event')} {'was' if n == 1 else 'were'} in flight when a sync stopped: "
                         f"the next run resends {it}")
    extra.append(f"{count(d['contacts_known'], 'contact')} sent so far")
    if d["contacts_no_longer_matching"]:
        extra.append(
            f"{d['contacts_no_longer_matching']:,} of them no longer match the filters (kept in Customerscore)"
        )
    sched = d["schedule"]
    extra.append(f"schedule: {show(sched['line'])}" if sched["installed"]
                 else "not scheduled: `cs-posthog schedule --install`")
    extra.append(writer_line(d))
    for line in extra:
        out.print(Text("• " + line))


def writer_line(d: dict[str, Any]) -> str:
    """Which cs-posthog wrote the sync state last (for bug reports): the running one, another, or one
    from before versions were recorded."""
    this = d["version"]
    written_by = d.get("state_written_by")
    if written_by is None:
        if not d["last_runs"]:
            return f"cs-posthog {this}; no sync has written the state yet"
        return (f"cs-posthog {this}; the state was last written by an earlier cs-posthog, "
                "which did not record its version")
    if written_by == this:
        return f"cs-posthog {this}, which also wrote the state last"
    return f"cs-posthog {this}; the state was last written by cs-posthog {esc(written_by, markup=False)}"
