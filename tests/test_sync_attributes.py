"""Contact attributes (issue 14): Person properties sent as contact attributes under codenames, values
as Customerscore takes them; a change of attributes resends only the contacts whose payload changed.
Against the sandbox over real HTTP; the expectation is computed from the sandbox's dumps."""

from __future__ import annotations

import pytest
from helpers import env_paths, sandbox_env
from sync_expected import Sandbox, bag, expected_contacts
from test_sync_engine import SELECTED, Received, sync

from cs_posthog.config import Config, save_config
from cs_posthog.sandbox.runner import start_sandbox

FILTERS = [{"property": "plan", "operator": "is_set"}]


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=600, persons=200, customers=20, seed=41) as proc:
        yield Sandbox(proc.info)


@pytest.fixture
def env(sandbox, monkeypatch, home):
    sandbox_env(monkeypatch, sandbox.info)
    return sandbox


def config(sb: Sandbox, attributes: dict[str, str]) -> Config:
    cfg = Config.model_validate({
        "posthog": {"region": sb.info["region"], "host": sb.ph, "project_id": sb.info["project_id"]},
        "customerscore": {"api_url": sb.cs, "tracker_key": sb.info["tracker_key"]},
        "identification": {"property": sb.info["customer_property"]},
        "events": {"selected": SELECTED},
        "persons": {"filters": FILTERS,
                    "attributes": [{"property": p, "codename": c} for c, p in attributes.items()]},
        "sync": {"backfill_days": 3650},
    })
    save_config(cfg, env_paths().config_file)
    return cfg


def test_person_properties_arrive_as_contact_attributes_and_a_change_resends_only_what_changed(env):
    sb = env
    prop = sb.info["customer_property"]
    first = {"plan": "plan", "seats": "seats", "signup_date": "signed_up_at", "beta": "beta_user"}
    want = expected_contacts(sb, customer_property=prop, filters=FILTERS, attributes=first)
    # the data has every kind of value: text, numbers, booleans, dates, and Persons without them
    kinds = {type(v) for c in want for v in c["attributes"].values()}
    assert {str, int, bool} <= kinds, kinds
    assert any("beta" not in c["attributes"] for c in want) and any("beta" in c["attributes"] for c in want)
    assert all(len(c["attributes"]["signup_date"]) == 10 for c in want if "signup_date" in c["attributes"])

    got = Received(sb)
    report, error = sync(config(sb, first))
    assert error is None, error
    assert bag(got("contacts")) == bag(want)

    # another attribute: only the contacts whose payload changes (those with the property) are sent again
    second = {**first, "country": "country", "tier": "plan tier"}
    want2 = expected_contacts(sb, customer_property=prop, filters=FILTERS, attributes=second)
    changed = bag(want2) - bag(want)
    assert 0 < sum(changed.values()) < len(want2)  # some Persons have neither new property
    got = Received(sb)
    report, error = sync(config(sb, second))
    assert error is None, error
    assert bag(got("contacts")) == changed
    # (the counts include the contacts of customers Customerscore does not know, which it drops)
    every = expected_contacts(sb, customer_property=prop, filters=FILTERS, attributes=second, existing_only=False)
    every_changed = bag(every) - bag(expected_contacts(sb, customer_property=prop, filters=FILTERS, attributes=first,
                                                       existing_only=False))
    assert report.contacts_sent == sum(every_changed.values())
    assert report.contacts_unchanged == len(every) - sum(every_changed.values())
