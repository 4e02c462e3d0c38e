"""Issue 12 item 4 (and item 10's "nothing new"): the progress bars of `cs-posthog sync` on a terminal.

The real program in a pseudo-terminal (pexpect) against the sandbox. The last frame Rich drew is
read back from what the terminal received; its numbers are compared with the summary printed
under it and with the report the run stored (``events_read`` / ``contacts_read``, what
``--json`` prints). A bar's total is what the stream will account for, it ends there on success
with a green tick, and a stream that fails ends with a red cross and its bar short of the end."""

from __future__ import annotations

import os
import re
import sys

import pytest

from cs_posthog.sandbox.runner import post_json, start_sandbox
from cs_posthog.sync.state import SyncState
from helpers import env_paths, run_cli, sandbox_env
from sync_expected import Sandbox
from test_sync_engine import FILTERS, SELECTED, make_config, since_of

pexpect = pytest.importorskip("pexpect")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# one stream's line of a frame: mark, name, bar, done/total, details, elapsed time
BAR = re.compile(r"(?P<mark>\S) (?P<name>events|contacts)\s+[━╸╺\-]*\s+(?P<done>[\d,]+)/(?P<total>[\d,]+|\?)"
                 r" +(?P<detail>[^\r\n]*?) +\d+:\d\d:\d\d")


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2500, persons=200, customers=30, seed=21, id_type="string") as proc:
        yield Sandbox(proc.info)


@pytest.fixture
def env(sandbox, monkeypatch):
    sandbox_env(monkeypatch, sandbox.info)
    monkeypatch.setenv("CS_POSTHOG_PAGE_SIZE", "200")  # several pages, so a failure can come mid-way
    return sandbox


def term_sync(*args: str, encoding: str = "utf-8", columns: int = 140) -> tuple[int, str]:
    """`cs-posthog sync ARGS` in a colour terminal (140 columns): (exit code, everything it wrote)."""
    env = {**os.environ, "TERM": "xterm", "COLUMNS": str(columns), "PYTHONIOENCODING": encoding}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, ["-m", "cs_posthog", "sync", *args], env=env, encoding=encoding,
                          codec_errors="strict", timeout=120, dimensions=(30, columns))
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before


def final_bars(screen: str) -> dict[str, dict]:
    """Each stream's line in the last frame drawn: mark, done, total, and its details by name."""
    text = ANSI.sub("", screen)
    bars: dict[str, dict] = {}
    for m in BAR.finditer(text):
        detail: dict[str, int | str] = {}
        for part in m["detail"].split(" · " if " · " in m["detail"] else " - "):
            words = part.rsplit(" ", 1)
            if len(words) == 2 and words[1].replace(",", "").isdigit():
                detail[words[0]] = int(words[1].replace(",", ""))
            else:
                detail[part] = part
        bars[m["name"]] = {"name": m["name"], "mark": m["mark"], "done": int(m["done"].replace(",", "")),
                           "total": None if m["total"] == "?" else int(m["total"].replace(",", "")),
                           "detail": detail}
    assert set(bars) == {"events", "contacts"}, text[-3000:]
    return bars


def totals_shown(screen: str, name: str) -> list[int]:
    """Every total a stream's bar showed, frame after frame (repeats dropped): the count made before
    reading, when it is right, is the only one."""
    seen: list[int] = []
    for m in BAR.finditer(ANSI.sub("", screen)):
        if m["name"] == name and m["total"] != "?":
            total = int(m["total"].replace(",", ""))
            if not seen or seen[-1] != total:
                seen.append(total)
    return seen


def summary_row(screen: str, label: str) -> int | None:
    """The figure of a summary row (``events sent   506``), None when the row is absent."""
    m = re.search(rf"^{re.escape(label)} +([\d,]+)\b", ANSI.sub("", screen), re.M)
    return int(m[1].replace(",", "")) if m else None


def last_report() -> dict:
    with SyncState(env_paths().state_db) as st:
        return st.last_runs(1)[0].summary


def assert_complete(bar: dict, read: int, screen: str) -> None:
    """A tick, and a bar that ends at what the stream read: the total it showed from the start."""
    assert bar["mark"] == "✓", bar
    assert bar["done"] == bar["total"] == read, bar
    assert totals_shown(screen, bar["name"]) == [read]


# --- a first sync: skipped events, duplicates, contacts ---------------------------------------------
def test_a_first_sync_ends_its_bars_at_the_summary_figures(env, home):
    sb = env
    make_config(sb, filters=FILTERS)
    code, screen = term_sync("--since", since_of(sb).date().isoformat())
    assert code == 0, screen
    bars, rep = final_bars(screen), last_report()
    ev, co = bars["events"], bars["contacts"]
    assert rep["events_skipped_no_customer"] > 0 and rep["events_sent"] > 0  # the data exercises it
    assert_complete(ev, rep["events_read"], screen)
    assert ev["detail"]["sent"] == rep["events_sent"] == summary_row(screen, "events sent")
    assert ev["detail"]["skipped"] == rep["events_skipped_no_customer"] == summary_row(screen, "events skipped")
    assert ev["detail"].get("duplicates", 0) == rep["events_duplicates_dropped"] == (summary_row(screen, "duplicates dropped") or 0)
    assert ev["done"] == ev["detail"]["sent"] + ev["detail"]["skipped"] + ev["detail"].get("duplicates", 0) \
        + ev["detail"].get("not sendable", 0)
    assert_complete(co, rep["contacts_read"], screen)
    assert co["detail"]["sent"] == rep["contacts_sent"] == summary_row(screen, "contacts sent") > 0
    assert co["detail"]["unchanged"] == rep["contacts_unchanged"] == 0
    assert co["detail"].get("skipped", 0) == (summary_row(screen, "persons skipped") or 0)
    assert co["done"] == co["detail"]["sent"] + co["detail"].get("skipped", 0)
    assert "✗" not in ANSI.sub("", screen)


# --- an event selected again: its resume stream's skips reach the bar ---------------------------------
def test_a_reselected_event_resumes_and_its_skips_reach_the_bar(env, home):
    sb = env
    gone = SELECTED[1]
    make_config(sb, filters=[])
    assert run_cli("sync", "--json", "--since", since_of(sb).date().isoformat()).exit_code == 0
    make_config(sb, filters=[], selected=[e for e in SELECTED if e != gone])
    assert run_cli("sync", "--json").exit_code == 0
    # while it is not selected, three of it arrive: one of a Person with a customer id, two without one
    person = next(p for p in sb.persons().values() if p["properties"].get(sb.info["customer_property"]))
    post_json(sb.ph + "/_sandbox/events", [{"event": gone, "person_id": person["id"]},
                                           {"event": gone, "distinct_id": "nobody-yet-1"},
                                           {"event": gone, "distinct_id": "nobody-yet-2"}])
    make_config(sb, filters=[])
    code, screen = term_sync()
    assert code == 0, screen
    bars, rep = final_bars(screen), last_report()
    ev, co = bars["events"], bars["contacts"]
    assert rep["events_sent"] == 1 and rep["events_skipped_no_customer"] == 2 and rep["events_read"] == 3, rep
    assert_complete(ev, 3, screen)
    assert ev["detail"] == {"sent": 1, "skipped": 2}
    assert summary_row(screen, "events sent") == 1 and summary_row(screen, "events skipped") == 2
    assert_complete(co, rep["contacts_read"], screen)
    assert co["detail"]["unchanged"] == rep["contacts_unchanged"] == co["done"] > 0


def test_a_newly_selected_event_brings_its_history_and_skips_to_the_bar(env, home):
    """An event never selected before is read from the backfill start by a catch-up stream: its
    events without a customer id, counted when it completes, are on the bar from its total on."""
    sb = env
    added = SELECTED[2]
    make_config(sb, filters=[], selected=[e for e in SELECTED if e != added])
    assert run_cli("sync", "--json", "--since", since_of(sb).date().isoformat()).exit_code == 0
    make_config(sb, filters=[])
    code, screen = term_sync()
    assert code == 0, screen
    bars, rep = final_bars(screen), last_report()
    ev = bars["events"]
    assert rep["events_sent"] > 0 and rep["events_skipped_no_customer"] > 0, rep
    assert_complete(ev, rep["events_read"], screen)
    assert ev["detail"]["sent"] == rep["events_sent"] == summary_row(screen, "events sent")
    assert ev["detail"]["skipped"] == rep["events_skipped_no_customer"] == summary_row(screen, "events skipped")


# --- a stream that fails: a red cross, never a tick ----------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_a_failing_stream_ends_with_a_cross_and_an_unfilled_bar(env, home, encoding):
    """The tracker key is refused at the first batch of events: the events stream fails after
    reading its first page, the contacts stream (another key) completes."""
    sb = env
    cfg = make_config(sb, filters=FILTERS)
    from cs_posthog.config import save_config

    save_config(cfg.model_copy(update={"customerscore": cfg.customerscore.model_copy(update={"tracker_key": "CS-WRONGKEY"})}),
                env_paths().config_file)
    code, screen = term_sync("--since", since_of(sb).date().isoformat(), encoding=encoding)
    assert code == 77, screen
    bars, rep = final_bars(screen), last_report()
    ev, co = bars["events"], bars["contacts"]
    cross, tick = ("✗", "✓") if encoding == "utf-8" else ("x", "+")
    assert ev["mark"] == cross and ev["detail"].get("failed") == "failed", ev
    assert ev["total"] is not None and ev["done"] < ev["total"], ev  # the bar stops short
    assert totals_shown(screen, "events") == [ev["total"]]  # of the count made before reading
    assert ev["detail"]["sent"] == 0 == rep["events_sent"]
    assert rep["status"] == "failed"
    assert co["mark"] == tick
    assert co["done"] == co["total"] == rep["contacts_read"]
    # the cross is red, and no frame after the last one ever ticked the events
    marks = re.findall(r"\x1b\[(\d+)m(.)\x1b\[0m events", screen)
    assert marks and marks[-1] == ("31", cross), marks[-3:]
    assert all(mark != tick for _, mark in marks)


def test_at_60_columns_the_numbers_and_the_time_stay_whole(env, home):
    """A dry run's details are long ("to send 506 · skipped 333 · duplicates 7"): on a narrow
    terminal the bar gives way and a detail continues on the next line, while the mark, the name,
    the counts and the time stay whole (they were cut to "eve…" and lost)."""
    sb = env
    make_config(sb, filters=FILTERS)
    code, screen = term_sync("--dry-run", "--since", since_of(sb).date().isoformat(), columns=60)
    assert code == 0, screen
    text = ANSI.sub("", screen)
    rows = re.findall(r"(\S) (events|contacts) +\S* *(\d+)/(\d+) (.*?) (\d+:\d\d:\d\d)", text)
    last = {name: (mark, int(done), int(total), detail) for mark, name, done, total, detail, _ in rows}
    assert set(last) == {"events", "contacts"}, text[-3000:]
    for name in ("events", "contacts"):
        mark, done, total, detail = last[name]
        assert mark == "✓" and done == total > 0 and detail.strip().startswith("to send"), last
    assert last["events"][2] == summary_row(text, "events to send") + summary_row(text, "events skipped") + (
        summary_row(text, "duplicates dropped") or 0), text[-3000:]


def test_a_run_that_fails_before_reading_crosses_both_bars(env, home):
    sb = env
    make_config(sb, filters=FILTERS)
    from cs_posthog.config import load_config, save_config

    cfg = load_config(env_paths().config_file)
    save_config(cfg.model_copy(update={"posthog": cfg.posthog.model_copy(update={"project_id": sb.info["project_id"] + 999})}),
                env_paths().config_file)
    code, screen = term_sync("--since", since_of(sb).date().isoformat())
    assert code != 0, screen
    bars = final_bars(screen)
    for bar in bars.values():
        assert bar["mark"] == "✗" and bar["done"] == 0, bar
    assert "✓" not in ANSI.sub("", screen)


# --- issue 12 item 10: a second sync with nothing new says so ------------------------------------------
def test_a_second_sync_with_nothing_new_says_so_plainly(env, home):
    sb = env
    make_config(sb, filters=FILTERS)
    assert run_cli("sync", "--json", "--since", since_of(sb).date().isoformat()).exit_code == 0
    first = last_report()
    code, screen = term_sync()
    assert code == 0, screen
    bars, rep = final_bars(screen), last_report()
    assert rep["events_read"] == 0 and rep["contacts_sent"] == 0 and rep["contacts_unchanged"] == first["contacts_sent"]
    ev, co = bars["events"], bars["contacts"]
    assert (ev["mark"], ev["done"], ev["total"]) == ("✓", 0, 0) and totals_shown(screen, "events") == [0]
    assert ev["detail"] == {"nothing new": "nothing new"}
    assert_complete(co, rep["contacts_read"], screen)
    assert co["detail"]["sent"] == 0 and co["detail"]["unchanged"] == rep["contacts_unchanged"]
    text = ANSI.sub("", screen)
    with SyncState(env_paths().state_db) as st:
        previous = st.last_runs(2)[1].finished_at
    line = (f"Nothing new since the last sync ({previous[:16].replace('T', ' ')} UTC): no new events, "
            f"{rep['contacts_unchanged']:,} contacts unchanged.")
    assert line in text, text[-1500:]
    assert "customer id(s)" not in text and "events sent" not in text and "Sync ok" not in text
    # plain output too (no terminal): the same sentence
    r = run_cli("sync")
    assert r.exit_code == 0 and "Nothing new since the last sync (" in r.stdout and "customer id" not in r.stdout + r.stderr


# --- a sync stopped by SIGTERM: its bars stop where it stopped --------------------------------------
@pytest.fixture(scope="module")
def slow_sandbox():
    with start_sandbox(events=1500, persons=100, customers=20, seed=5, latency_ms=150) as proc:
        yield Sandbox(proc.info)


def test_a_stopped_sync_crosses_its_bars_and_never_ticks_them(slow_sandbox, monkeypatch, home):
    sb = slow_sandbox
    sandbox_env(monkeypatch, sb.info)
    monkeypatch.setenv("CS_POSTHOG_PAGE_SIZE", "200")
    make_config(sb, filters=[])
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "140"}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, ["-m", "cs_posthog", "sync", "--since", since_of(sb).date().isoformat()],
                          env=env, encoding="utf-8", timeout=120, dimensions=(30, 140))
    child.expect(r"events[^\r\n]*sent [1-9]")  # its first batch is acknowledged: stop it mid-way
    screen = child.before + child.after
    child.kill(15)
    child.expect(pexpect.EOF)
    child.close()
    screen += child.before
    assert child.exitstatus == 143, screen
    bars, rep = final_bars(screen), last_report()
    ev = bars["events"]
    assert rep["status"] == "interrupted"
    assert ev["mark"] == "✗" and ev["detail"].get("stopped") == "stopped", ev
    assert ev["total"] is not None and ev["done"] < ev["total"], ev
    assert ev["detail"]["sent"] == rep["events_sent"] > 0
    marks = re.findall(r"\x1b\[(\d+)m(.)\x1b\[0m events", screen)
    assert marks[-1] == ("33", "✗") and "✓" not in {m for _, m in marks}, marks[-3:]
    co = bars["contacts"]
    assert co["mark"] in ("✓", "✗") and (co["mark"] == "✗" or co["done"] == co["total"] == rep["contacts_read"]), co
