"""``persons.filter_events`` (issue 12, 3): whether the Person filters choose the events too. Against the
sandbox over real HTTP; what Customerscore must receive is computed from the sandbox's dumps by
``sync_expected``, the filters applied in plain Python."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cs_posthog.config import Config, load_config, save_config
from cs_posthog.sandbox.runner import post_json, start_sandbox
from helpers import env_paths, run_cli, sandbox_env
from sync_expected import Sandbox, bag, expected_contacts, expected_events, matches
from test_sync_engine import SELECTED, Received, sync

FILTERS = [{"property": "plan", "operator": "equals", "value": "pro"}]
EVERYTHING = datetime(2000, 1, 1, tzinfo=UTC)  # backfill_days = 3650: every event of the sandbox


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=2500, persons=250, customers=30, seed=31) as proc:
        yield Sandbox(proc.info)


@pytest.fixture
def env(sandbox, monkeypatch, home):
    sandbox_env(monkeypatch, sandbox.info)
    return sandbox


def config(sb: Sandbox, *, filter_events: bool | None, filters=FILTERS) -> Config:
    persons: dict = {"filters": filters}
    if filter_events is not None:
        persons["filter_events"] = filter_events
    cfg = Config.model_validate({
        "posthog": {"region": sb.info["region"], "host": sb.ph, "project_id": sb.info["project_id"]},
        "customerscore": {"api_url": sb.cs, "tracker_key": sb.info["tracker_key"]},
        "identification": {"property": sb.info["customer_property"]},
        "events": {"selected": SELECTED},
        "persons": persons,
        "sync": {"backfill_days": 3650},
    })
    save_config(cfg, env_paths().config_file)
    return cfg


def want(sb: Sandbox, filters=None, existing_only: bool = True) -> tuple[list[dict], int]:
    return expected_events(sb, selected=SELECTED, since=EVERYTHING, customer_property=sb.info["customer_property"],
                           filters=filters, existing_only=existing_only)


def adds_up(d: dict) -> None:
    skipped = sum(v for k, v in d.items() if k.startswith("events_skipped_"))
    sent = d["events_to_send"] if d["dry_run"] else d["events_sent"]
    assert d["events_read"] == sent + skipped + d["events_duplicates_dropped"] + d["events_rejected"], d


def test_filter_events_sends_only_the_events_of_the_persons_matching_the_filters(env):
    sb = env
    inside, skipped_inside = want(sb, FILTERS)
    everything, skipped_all = want(sb)
    sent_inside, _ = want(sb, FILTERS, existing_only=False)
    assert 0 < len(inside) < len(everything) and 0 < skipped_inside < skipped_all  # the data tells them apart
    got = Received(sb)
    report, error = sync(config(sb, filter_events=True))
    assert error is None, error
    assert bag(got("events")) == bag(inside)
    assert report.events_sent == len(sent_inside)
    assert report.events_skipped_no_customer == skipped_inside  # a filtered-out event is not "skipped"
    adds_up(report.as_dict())
    # the contacts are the same whichever way the events go
    assert bag(got("contacts")) == bag(expected_contacts(sb, customer_property=sb.info["customer_property"],
                                                         filters=FILTERS))


def test_no_filter_events_sends_the_events_of_every_person_with_a_customer_id(env):
    sb = env
    everything, skipped_all = want(sb)
    got = Received(sb)
    report, error = sync(config(sb, filter_events=False))
    assert error is None, error
    assert bag(got("events")) == bag(everything)
    assert report.events_skipped_no_customer == skipped_all
    adds_up(report.as_dict())


def test_a_config_from_before_the_option_keeps_sending_every_persons_events(env):
    from helpers import env_paths

    sb = env
    config(sb, filter_events=None)
    path = env_paths().config_file
    path.write_text("".join(line for line in path.read_text().splitlines(True) if not line.startswith("filter_events")))
    assert "filter_events" not in path.read_text()
    assert load_config(env_paths().config_file).persons.filter_events is False
    got = Received(sb)
    _, error = sync(load_config(env_paths().config_file))
    assert error is None, error
    assert bag(got("events")) == bag(want(sb)[0])


def _person(sb: Sandbox, *, inside: bool) -> str:
    prop = sb.info["customer_property"]
    for pid, p in sorted(sb.persons().items()):
        props = p["properties"]
        if props.get(prop) and isinstance(props[prop], str) and props[prop].strip() in sb.customers() \
                and matches(props, FILTERS[0]) == inside:
            return pid
    raise AssertionError("no such Person in the sandbox")


def test_turning_filter_events_off_sends_the_events_left_out_once_and_on_again_stops_them(env):
    """Off after on: the events of the Persons outside the filters, in the backfill window, are sent
    once (like the events of a Person who becomes attachable); on again: theirs stop; off again: the
    ones they had in the meantime are sent, and nothing twice."""
    sb = env
    inside, _ = want(sb, FILTERS)
    everything, _ = want(sb)
    cfg = config(sb, filter_events=True)
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert bag(got("events")) == bag(inside)

    # off (what `edit --no-input --no-filter-events` writes)
    r = run_cli("edit", "persons", "--no-input", "--no-filter-events")
    assert r.exit_code == 0, r.stderr
    cfg = load_config(env_paths().config_file)
    assert cfg.persons.filter_events is False
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert bag(got("events")) == bag(everything) - bag(inside)  # exactly the ones left out
    assert report.events_backfilled_for_new_persons == report.events_sent > 0
    adds_up(report.as_dict())
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert got("events") == []

    # on again: a new event of a Person outside the filters is not sent, one of a Person inside is
    out_pid, in_pid = _person(sb, inside=False), _person(sb, inside=True)
    r = run_cli("edit", "persons", "--no-input", "--filter-events")
    assert r.exit_code == 0, r.stderr
    cfg = load_config(env_paths().config_file)
    assert cfg.persons.filter_events is True
    post_json(sb.ph + "/_sandbox/events", [{"event": SELECTED[0], "person_id": out_pid},
                                           {"event": SELECTED[1], "person_id": in_pid}])
    got = Received(sb)
    report, error = sync(cfg)
    assert error is None, error
    assert [(e["name"], e["identification"]["contact"]) for e in got("events")] == [(SELECTED[1], in_pid)]
    adds_up(report.as_dict())

    # off again: the one left out meanwhile is sent, once; nothing else again
    r = run_cli("edit", "persons", "--no-input", "--no-filter-events")
    assert r.exit_code == 0, r.stderr
    got = Received(sb)
    # a dry run backfills them from where they left too, not their whole window again (their older
    # events were sent long ago: no delivered uuid remembers them)
    report, error = sync(load_config(env_paths().config_file), dry_run=True)
    assert error is None, error
    assert report.events_backfilled_for_new_persons == 1 and got("events") == []
    report, error = sync(load_config(env_paths().config_file))
    assert error is None, error
    assert [(e["name"], e["identification"]["contact"]) for e in got("events")] == [(SELECTED[0], out_pid)]
    assert report.events_sent == 1
    got = Received(sb)
    report, error = sync(load_config(env_paths().config_file))
    assert error is None, error
    assert got("events") == []


def test_json_figures_add_up_with_filter_events(env):
    sb = env
    config(sb, filter_events=True)
    runs = [run_cli("sync", "--json", "--dry-run"), run_cli("sync", "--json")]
    out_pid, in_pid = _person(sb, inside=False), _person(sb, inside=True)
    post_json(sb.ph + "/_sandbox/events", [{"event": SELECTED[0], "person_id": out_pid},
                                           {"event": SELECTED[0], "person_id": in_pid},
                                           {"event": SELECTED[0], "distinct_id": "nobody-yet"}])
    runs.append(run_cli("sync", "--json"))
    docs = []
    for r in runs:
        assert r.exit_code == 0, r.stderr
        docs.append(json.loads(r.stdout))
    for d in docs:
        adds_up(d)
    _, skipped_inside = want(sb, FILTERS)
    assert docs[1]["events_skipped_no_customer"] == skipped_inside
    # the new three: one sent (inside), none for the Person outside, and the Person without a
    # customer id (no plan: outside the filters too) is neither read nor skipped
    assert (docs[2]["events_read"], docs[2]["events_sent"], docs[2]["events_skipped_no_customer"]) == (1, 1, 0)
    assert docs[0]["events_to_send"] == docs[1]["events_sent"] == len(want(sb, FILTERS, existing_only=False)[0]) - 1
