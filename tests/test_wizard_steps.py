"""Each wizard step driven through piped keys, with a fake credential check and data source.

The same steps run against the sandbox in test_wizard_sandbox.py and in a real terminal in
test_e2e_connect.py; here every error path is cheap to reach.
"""

from __future__ import annotations

import tomllib

import pytest

from cs_posthog.config import Draft, EventsSettings, Identification, Operator, PersonFilter, PostHogSettings, Region
from cs_posthog.output import Output
from cs_posthog.wizard.context import StopWizard, WizardContext
from helpers import env_settings, env_store, wizard_parts
from wizard_fakes import CTRL_A, CTRL_U, DOWN, ENTER, FakeCheck, piped_keys, sample_source


def make_ctx(check=None, source=None, mode="connect", draft=None) -> WizardContext:
    return WizardContext(
        out=Output(), draft=draft or Draft(), mode=mode, check_credentials=check,
        make_source=(lambda settings, key: source) if source is not None else None, **wizard_parts()
    )


def posthog_settings() -> PostHogSettings:
    return PostHogSettings(region=Region.EU, host="https://eu.posthog.com", project_id=101, project_name="Acme",
                           timezone="Europe/Prague")


def stored_secrets(home) -> dict:
    path = home / "secrets.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


# --- step 1 ----------------------------------------------------------------------------------
def test_posthog_step_success_stores_the_key_not_the_draft(home, capsys):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    ctx = make_ctx(check)
    with piped_keys() as keys:
        keys.send_text(check.good + ENTER + "https://eu.posthog.com/project/101/insights" + ENTER)
        settings = ask_posthog(ctx)
    assert settings.region == Region.EU and settings.project_id == 101
    assert settings.project_name == "Acme" and settings.timezone == "Europe/Prague"
    assert check.calls == [(check.good, "https://eu.posthog.com/project/101/insights", None)]
    assert stored_secrets(home) == {"posthog": check.good}
    assert (home / "secrets.toml").stat().st_mode & 0o777 == 0o600
    err = capsys.readouterr().err
    assert "Step 1 of 5 · PostHog credentials" in err
    assert "Customerscore.io" in err and "Event definition" in err and "Property definition" in err
    assert 'PostHog EU Cloud · project "Acme" (id 101) · timezone Europe/Prague' in err
    assert check.good not in err


def test_posthog_step_bad_key_asks_only_the_key_again(home, capsys):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    bad = "phx_" + "x" * 30
    with piped_keys() as keys:
        keys.send_text(bad + ENTER + "101" + ENTER + check.good + ENTER)
        settings = ask_posthog(make_ctx(check))
    assert settings.project_id == 101
    assert [c[:2] for c in check.calls] == [(bad, "101"), (check.good, "101")]
    err = capsys.readouterr().err
    assert "the API key is not valid in PostHog US or EU Cloud (mistyped, revoked, or from another PostHog)" in err
    assert stored_secrets(home) == {"posthog": check.good}  # the bad key was never stored


def test_posthog_step_rejects_a_project_token_before_any_request(home, capsys):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    with piped_keys() as keys:
        # the phc_ key fails validation in the prompt; Ctrl-U clears it, then the right key
        keys.send_text("phc_" + "a" * 30 + ENTER + CTRL_U + check.good + ENTER + "101" + ENTER)
        ask_posthog(make_ctx(check))
    assert [c[0] for c in check.calls] == [check.good]


def test_posthog_step_missing_scopes_are_listed_then_another_key(home, capsys):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    with piped_keys() as keys:
        # scoped key -> "What now?": down to "Use a different key" -> good key; project not re-asked
        keys.send_text(check.scoped + ENTER + "101" + ENTER + DOWN + ENTER + check.good + ENTER)
        settings = ask_posthog(make_ctx(check))
    assert settings.project_id == 101
    assert [c[:2] for c in check.calls] == [(check.scoped, "101"), (check.good, "101")]
    err = capsys.readouterr().err
    assert ("the API key is missing read access to: Property definition (property_definition:read), "
            "Query (query:read)") in err
    assert "give Read access to Property definition, Query" in err


def test_posthog_step_missing_scopes_check_again_keeps_the_key(home):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()

    def fixed_after_first(api_key, project_ref, *, host=None):
        # the user adds the scopes in PostHog: the same key passes the second time
        return check(check.good if len(check.calls) else api_key, project_ref, host=host)

    with piped_keys() as keys:
        keys.send_text(check.scoped + ENTER + "101" + ENTER + ENTER)  # "Check again" is the default
        ask_posthog(make_ctx(fixed_after_first))
    assert len(check.calls) == 2


def test_posthog_step_project_of_another_key(home, capsys):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    with piped_keys() as keys:
        # key limited to another project -> "Use a different key" (2nd choice)
        keys.send_text(check.other + ENTER + "101" + ENTER + DOWN + ENTER + check.good + ENTER)
        ask_posthog(make_ctx(check))
    err = capsys.readouterr().err
    assert "the API key is restricted to other projects and cannot read project 101" in err
    assert [c[0] for c in check.calls] == [check.other, check.good]


def test_posthog_step_address_of_the_other_region_goes_on_there(home, capsys):
    """An EU key with a US Cloud address: the key works in EU Cloud, so the step says so and goes on
    there (no "not valid in PostHog US Cloud", no question asked again)."""
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    with piped_keys() as keys:
        keys.send_text(check.good + ENTER + "https://us.posthog.com/project/101/insights" + ENTER)
        settings = ask_posthog(make_ctx(check))
    assert settings.region == Region.EU and settings.project_id == 101
    assert settings.host == "https://eu.posthog.com"
    assert [c[:2] for c in check.calls] == [(check.good, "https://us.posthog.com/project/101/insights")]
    err = capsys.readouterr().err
    assert ("This key works in PostHog EU Cloud (the address is on PostHog US Cloud): going on with "
            "PostHog EU Cloud.") in " ".join(err.split())
    assert "not valid" not in err and "error:" not in err
    assert stored_secrets(home) == {"posthog": check.good}


def test_posthog_step_bad_key_with_an_address_offers_the_address_again(home, capsys):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    bad = "phx_" + "y" * 30
    with piped_keys() as keys:
        # the key is unknown everywhere (both regions asked): asked again, and the address is offered
        # again (Enter keeps it)
        keys.send_text(bad + ENTER + "https://eu.posthog.com/project/101" + ENTER + check.good + ENTER + ENTER)
        settings = ask_posthog(make_ctx(check))
    assert settings.project_id == 101
    assert [c[:2] for c in check.calls] == [
        (bad, "https://eu.posthog.com/project/101"), (check.good, "https://eu.posthog.com/project/101"),
    ]
    err = capsys.readouterr().err
    assert "not valid in PostHog US or EU Cloud" in err
    assert "it is from PostHog US or EU Cloud." in err and "this key works in" not in err.lower()


def test_posthog_step_unknown_project_asks_only_the_project_again(home, capsys):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    with piped_keys() as keys:
        keys.send_text(check.good + ENTER + "999" + ENTER + "101" + ENTER)
        settings = ask_posthog(make_ctx(check))
    assert settings.project_id == 101
    assert [c[:2] for c in check.calls] == [(check.good, "999"), (check.good, "101")]
    assert "project 999 does not exist in PostHog EU Cloud" in capsys.readouterr().err


def test_posthog_step_unreachable_try_again_then_stop(home, capsys):
    from cs_posthog.errors import UnavailableError
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    check.down = 1
    with piped_keys() as keys:
        keys.send_text(check.good + ENTER + "101" + ENTER + ENTER)  # "Try again"
        ask_posthog(make_ctx(check))
    assert "could not check the key with PostHog EU Cloud: connection refused" in capsys.readouterr().err
    assert len(check.calls) == 2

    check.down = 5
    with piped_keys() as keys, pytest.raises(UnavailableError) as exc:
        keys.send_text(check.good + ENTER + "101" + ENTER + DOWN + DOWN + ENTER)  # "Stop here"
        ask_posthog(make_ctx(check))
    assert exc.value.exit_code == 75


def test_posthog_step_enter_keeps_the_stored_key(home, monkeypatch):
    from cs_posthog.wizard.step_posthog import ask_posthog

    check = FakeCheck()
    env_store().store("posthog", check.good)
    with piped_keys() as keys:
        keys.send_text(ENTER + "101" + ENTER)
        ask_posthog(make_ctx(check))
    assert check.calls[0][0] == check.good


def test_posthog_step_invalid_project_text_is_refused_in_the_prompt(home):
    from cs_posthog.wizard.step_posthog import ask_posthog, validate_project_ref

    assert validate_project_ref("12345", env_settings()) is True
    assert validate_project_ref("https://eu.posthog.com/project/7/insights", env_settings()) is True
    assert "project" in str(validate_project_ref("hello world", env_settings())).lower()
    check = FakeCheck()
    with piped_keys() as keys:
        keys.send_text(check.good + ENTER + "not a project" + ENTER + CTRL_U + "101" + ENTER)
        ask_posthog(make_ctx(check))
    assert [c[1] for c in check.calls] == ["101"]


# --- step 2 ----------------------------------------------------------------------------------
def test_customerscore_step_checks_shapes_and_stores_the_key(home, capsys):
    from cs_posthog.wizard.step_customerscore import ask_customerscore

    cs_key = "cs_" + "k" * 30
    with piped_keys() as keys:
        # a tracker key without CS- is refused in place; then advanced options: a custom URL
        keys.send_text(cs_key + ENTER + "AB12C" + ENTER + CTRL_U + "CS-AB12C" + ENTER + "y"
                       + CTRL_U + "http://127.0.0.1:9/api/v1" + ENTER)
        settings = ask_customerscore(make_ctx())
    assert settings.tracker_key == "CS-AB12C"
    assert settings.api_url == "http://127.0.0.1:9"
    assert stored_secrets(home) == {"customerscore": cs_key}
    err = capsys.readouterr().err
    assert "Step 2 of 5 · Customerscore credentials" in err
    assert "Checking the keys changed nothing in Customerscore" in err
    assert "keys not checked" in err  # nothing listens on 127.0.0.1:9
    # as in step 1: the ✓ line, then where the key went
    assert err.index("! Customerscore at http://127.0.0.1:9") < err.index("Customerscore API key stored in")


def test_customerscore_step_default_url_without_advanced(home):
    from cs_posthog.wizard.step_customerscore import ask_customerscore

    with piped_keys() as keys:
        keys.send_text("cs_" + "k" * 30 + ENTER + "CS-XY9" + ENTER + "n")
        settings = ask_customerscore(make_ctx())
    assert settings.api_url == "https://api.customerscore.io"


def test_customerscore_validators():
    from cs_posthog.wizard.step_customerscore import validate_cs_key, validate_cs_url, validate_tracker_key

    assert validate_tracker_key("CS-AB12C") is True
    assert "CS-" in validate_tracker_key("AB12C")
    assert validate_tracker_key("CS-AB 12") is not True
    assert validate_cs_key("", have_current=True) is True
    assert validate_cs_key("", have_current=False) is not True
    assert "PostHog" in validate_cs_key("phx_" + "a" * 20, have_current=False)
    assert "tracker" in validate_cs_key("CS-ABCDE123", have_current=False)
    assert validate_cs_url("http://example.com") is not True  # plain http only on loopback
    assert validate_cs_url("https://api.customerscore.io") is True


# --- step 3 ----------------------------------------------------------------------------------
def test_identification_counts_persons_with_the_property(home, capsys):
    from cs_posthog.wizard.step_identification import ask_identification

    src = sample_source()
    ctx = make_ctx(source=src, draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        keys.send_text(ENTER + "organization_id" + ENTER)
        ident = ask_identification(ctx)
    assert ident == Identification(property="organization_id")
    with_org = len(src.matching([PersonFilter(property="organization_id", operator=Operator.IS_SET)]))
    err = capsys.readouterr().err
    assert f"{with_org} of {len(src.persons)} Persons have organization_id set, not empty." in err
    assert f"the other {len(src.persons) - with_org} are not synced" in err


def test_identification_not_sure_explains_and_stops(home, capsys):
    from cs_posthog.wizard.step_identification import SUPPORT_EMAIL, ask_identification

    ctx = make_ctx(source=sample_source(), draft=Draft(posthog=posthog_settings()))
    with piped_keys() as keys, pytest.raises(StopWizard):
        keys.send_text(DOWN + DOWN + ENTER + DOWN + DOWN + ENTER)  # I'm not sure; then "Stop here"
        ask_identification(ctx)
    err = capsys.readouterr().err
    assert SUPPORT_EMAIL in err and "company" in err
    assert "connect" not in err  # how to go on is the caller's to say (connect resumes; the demo does not)


def test_identification_unknown_property_needs_a_yes(home, capsys):
    from cs_posthog.wizard.step_identification import ask_identification

    ctx = make_ctx(source=sample_source(), draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        # a name nobody has: "use anyway?" no -> asked again -> a custom name, yes
        keys.send_text(ENTER + "company_uuid" + ENTER + "n" + "acct" + ENTER + "y")
        ident = ask_identification(ctx)
    assert ident.property == "acct"
    assert "no Person has company_uuid set" in capsys.readouterr().err


# --- step 4 ----------------------------------------------------------------------------------
def test_events_checklist_with_volumes_search_and_select(home, capsys):
    from cs_posthog.wizard.step_events import ask_events

    src = sample_source()
    ctx = make_ctx(source=src, draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        # search "purch", pointer to purchase_refund, toggle; Enter
        keys.send_text("purch" + DOWN + " " + ENTER)
        settings = ask_events(ctx)
    assert settings == EventsSettings(selected=["purchase_refund"])
    err = capsys.readouterr().err
    assert "We found 6 events in your account." in err
    assert "metric codename" in err and "(e.g. report_created)" in err  # the busiest custom event
    assert ("event_volumes", 30) in src.calls


def test_events_already_checked_come_first(home):
    """In `edit events` (or with --event, or in the demo) the checked events are the first rows,
    not scattered below the 12 visible ones."""
    from cs_posthog.wizard.step_events import ask_events

    src = sample_source()
    ctx = make_ctx(source=src, draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    ctx.prefill.events = ["purchase", "user_signed_up"]
    with piped_keys() as keys:
        keys.send_text(" " + ENTER)  # Space on the first row: the busier checked one, user_signed_up
        settings = ask_events(ctx)
    assert settings.selected == ["purchase"]


def test_events_need_at_least_one_and_ctrl_a_selects_all(home):
    from cs_posthog.wizard.step_events import ask_events

    src = sample_source()
    ctx = make_ctx(source=src, draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        keys.send_text(ENTER + CTRL_A + ENTER)  # empty submit is refused; then all
        settings = ask_events(ctx)
    assert sorted(settings.selected) == sorted(src.events)


def test_events_without_volumes_still_work_and_keep_saved_ones(home, capsys):
    from cs_posthog.errors import QueryError
    from cs_posthog.wizard.step_events import ask_events

    src = sample_source(volume_error=QueryError("too slow"))
    draft = Draft(posthog=posthog_settings(), events=EventsSettings(selected=["invoice_paid", "gone_event"]))
    ctx = make_ctx(source=src, draft=draft)
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        keys.send_text(ENTER)
        settings = ask_events(ctx)
    assert settings.selected == ["invoice_paid", "gone_event"]
    err = capsys.readouterr().err
    assert "30-day volumes are not available" in err
    assert "not among PostHog's event definitions, kept checked: gone_event" in err


def test_events_order_and_titles():
    from cs_posthog.wizard.step_events import event_title, order_events

    assert order_events(["b", "a", "c", "a"], {"c": 5, "a": 1}) == ["c", "a", "b"]
    assert order_events(["b", "A", "c"], None) == ["A", "b", "c"]
    assert event_title("invoice_paid", 1234, 14) == "invoice_paid         1,234"
    assert event_title("x" * 50, 1, 10).startswith("x" * 9 + "…")


# --- step 5 ----------------------------------------------------------------------------------
def persons_ctx(src, **draft):
    d = Draft(posthog=posthog_settings(), identification=Identification(property="organization_id"), **draft)
    ctx = make_ctx(source=src, draft=d)
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    return ctx


def test_persons_save_with_only_the_locked_condition(home, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    src = sample_source()
    with piped_keys() as keys:
        keys.send_text(ENTER)  # "Save configuration"
        settings = ask_persons(persons_ctx(src))
    assert settings.filters == [] and settings.contact_id == "person_id"
    n = len(src.matching([PersonFilter(property="organization_id", operator=Operator.IS_SET)]))
    err = capsys.readouterr().err
    assert "1. organization_id is set, not empty (locked" in err
    assert f"{n} persons will be synced." in err
    assert "Preview (up to 5 matching Persons)" in err


def test_persons_add_equals_and_is_not_set_then_remove(home, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    src = sample_source()
    seq = (
        DOWN + ENTER + "plan" + ENTER + ENTER + "pro" + ENTER       # add: plan equals pro
        + DOWN + ENTER + "plan tier" + ENTER + DOWN * 3 + ENTER      # add: plan tier is not set
        + DOWN + DOWN + ENTER + ENTER                                # remove the first added (plan = pro)
        + ENTER                                                      # save
    )
    with piped_keys() as keys:
        keys.send_text(seq)
        settings = ask_persons(persons_ctx(src))
    assert settings.filters == [PersonFilter(property="plan tier", operator=Operator.IS_NOT_SET)]
    expected = len(src.matching([PersonFilter(property="organization_id", operator=Operator.IS_SET), *settings.filters]))
    err = capsys.readouterr().err
    assert "2. plan equals 'pro'" in err
    assert "3. plan tier is not set" in err
    assert f"{expected} persons will be synced." in err
    # the preview asked for the condition properties first
    previews = [c for c in src.calls if c[0] == "preview_persons"]
    assert previews[-1][2][:2] == ("organization_id", "plan tier")


def test_persons_contact_id_from_a_property_and_quit(home, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    src = sample_source()
    with piped_keys() as keys:
        # "Change how contacts are identified" (3rd when nothing to remove) -> a property -> email; save
        keys.send_text(DOWN + DOWN + ENTER + DOWN + ENTER + "email" + ENTER + ENTER)
        settings = ask_persons(persons_ctx(src))
    assert settings.contact_id == "email"
    with piped_keys() as keys, pytest.raises(StopWizard):
        keys.send_text(DOWN * 4 + ENTER)  # "Stop here" (after "Contact attributes to send")
        ask_persons(persons_ctx(src))


def test_names_and_values_with_brackets_are_shown_as_text(home, capsys):
    from cs_posthog.wizard.step_identification import ask_identification
    from cs_posthog.wizard.step_persons import ask_persons
    from wizard_fakes import FakeSource

    people = [{"id": f"p{i}", "properties": {"[org]": f"[/x] {i}", "email": f"[b]{i}@x.test"}} for i in range(3)]
    src = FakeSource(events=["e"], volumes={}, persons=people)
    ctx = make_ctx(source=src, draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        keys.send_text(ENTER + "[org]" + ENTER)
        ctx.draft.identification = ask_identification(ctx)
    with piped_keys() as keys:
        keys.send_text(ENTER)
        ask_persons(ctx)
    err = capsys.readouterr().err
    assert "3 of 3 Persons have [org] set, not empty." in err
    assert "[/x] 0" in err and "[b]0@x.test" in err  # preview cells, not markup


def test_counts_leave_out_persons_with_an_empty_customer_or_contact_id(home, capsys):
    """The sync skips a Person whose customer id (or contact id property) is empty or missing, so the
    coverage line and the badge must not count them: the wizard used to promise 55 Persons and the
    first sync sent 51."""
    from cs_posthog.wizard.step_identification import ask_identification
    from cs_posthog.wizard.step_persons import ask_persons
    from wizard_fakes import FakeSource

    people = (
        [{"id": f"a{i}", "properties": {"organization_id": f"org_{i}", "email": f"a{i}@x.test"}} for i in range(6)]
        + [{"id": f"b{i}", "properties": {"organization_id": f"org_{i}"}} for i in range(3)]  # no email
        + [{"id": f"c{i}", "properties": {"organization_id": "", "email": f"c{i}@x.test"}} for i in range(4)]
        + [{"id": "d0", "properties": {"email": "d0@x.test"}}]
    )
    src = FakeSource(events=["e"], volumes={}, persons=people)
    ctx = make_ctx(source=src, draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        keys.send_text(ENTER + "organization_id" + ENTER)
        ctx.draft.identification = ask_identification(ctx)
    err = capsys.readouterr().err
    assert "9 of 14 Persons have organization_id set, not empty." in err  # not 13: four are ""
    assert "the other 5 are not synced" in err

    with piped_keys() as keys:
        keys.send_text(ENTER)  # save, contact id = the PostHog person id
        ask_persons(ctx)
    err = capsys.readouterr().err
    assert "✓ 9 persons will be synced." in err
    assert "1. organization_id is set, not empty (locked: needed to find the customer)" in err

    with piped_keys() as keys:
        # contact id: the email property -> the 3 Persons without an email are skipped too; save
        keys.send_text(DOWN + DOWN + ENTER + DOWN + ENTER + "email" + ENTER + ENTER)
        settings = ask_persons(ctx)
    assert settings.contact_id == "email"
    err = capsys.readouterr().err
    assert "2. email is set, not empty (locked: the contact id)" in err
    assert "✓ 6 persons will be synced." in err


def test_persons_value_in_quotes_keeps_its_spaces(home, capsys):
    """PostHog holds "Gold " (a trailing space) apart from "gold": a quoted value keeps its ends,
    an unquoted one is trimmed, as with --filter."""
    from cs_posthog.wizard.step_persons import ask_persons, read_value
    from wizard_fakes import FakeSource

    people = ([{"id": f"g{i}", "properties": {"organization_id": "o", "plan tier": "Gold "}} for i in range(3)]
              + [{"id": f"h{i}", "properties": {"organization_id": "o", "plan tier": "Gold"}} for i in range(2)])
    src = FakeSource(events=["e"], volumes={}, persons=people)
    add = DOWN + ENTER + "plan tier" + ENTER + ENTER  # Add a condition, property, "equals"
    # (the second "does not equal": equal to "Gold " and to "Gold" at once would be refused)
    add_not = DOWN + ENTER + "plan tier" + ENTER + DOWN + ENTER
    with piped_keys() as keys:
        keys.send_text(add + '  "Gold " ' + ENTER + add_not + "  Gold  " + ENTER + DOWN + DOWN + ENTER + DOWN + ENTER
                       + ENTER)
        settings = ask_persons(persons_ctx(src))  # the second condition is removed again, then save
    assert settings.filters == [PersonFilter(property="plan tier", operator=Operator.EQUALS, value="Gold ")]
    err = capsys.readouterr().err
    assert "2. plan tier equals 'Gold '" in err and "3. plan tier does not equal 'Gold'" in err
    assert "✓ 3 persons will be synced." in err
    assert read_value(' "" ') == "" and read_value("it's") == "it's" and read_value("'a b '") == "a b "


def test_preview_gives_the_id_column_way_to_the_conditions(home, capsys, monkeypatch):
    """On a 100-column terminal a UUID, an email and two condition columns do not fit: the id is
    shortened, the value of the condition stays whole."""
    from cs_posthog.wizard.step_persons import ask_persons, preview_widths
    from wizard_fakes import FakeSource

    monkeypatch.setenv("COLUMNS", "100")
    people = [{"id": f"22f204e1-a708-488e-8d58-d78a07d2c{i:03d}",
               "properties": {"organization_id": "org_f0odusd8", "email": f"filip.taylor{i}@firma.example",
                              "it's": "it's complicated"}} for i in range(3)]
    src = FakeSource(events=["e"], volumes={}, persons=people)
    with piped_keys() as keys:
        keys.send_text(DOWN + ENTER + "it's" + ENTER + ENTER + "it's complicated" + ENTER + ENTER)
        ask_persons(persons_ctx(src))
    table = capsys.readouterr().err.split("Preview (up to 5 matching Persons)")[-1]
    assert "it's complicated" in table and "filip.taylor0@firma.example" in table and "org_f0odusd8" in table
    assert "22f204e1-a708-488e-8d58-d78a07d2c000" not in table and "22f204e1" in table
    assert all(len(line) <= 100 for line in table.splitlines())
    assert preview_widths(["id", "email"], [["a" * 36, "b@x.test"]], 100) == [36, 8]  # room enough: untouched


def test_events_codename_line_after_the_list_once_for_odd_names_only(home, capsys):
    """Issue 12 item 7: ticked names a codename is unlikely to be spelled as ($-prefixed here) get
    one line after the list; snake_case ones none."""
    from cs_posthog.wizard.step_events import ask_events

    ctx = make_ctx(source=sample_source(), draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        keys.send_text(" " + DOWN + " " + ENTER)  # $pageview (the busiest) and report_created
        settings = ask_events(ctx)
    assert settings.selected == ["$pageview", "report_created"]
    err = " ".join(capsys.readouterr().err.split())
    assert err.count('Customerscore keeps "') == 1  # one line (the general reminder aside)
    assert ('warning: Customerscore keeps "$pageview" only if a metric\'s codename is exactly the event name, '
            "spaces, capitals and $ included.") in err

    ctx = make_ctx(source=sample_source(), draft=Draft(posthog=posthog_settings()))
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    with piped_keys() as keys:
        keys.send_text(DOWN + " " + ENTER)  # report_created alone
        settings = ask_events(ctx)
    assert settings.selected == ["report_created"]
    assert "Customerscore keeps \"" not in capsys.readouterr().err
