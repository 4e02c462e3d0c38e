"""Issue 14 in the wizard, driven through piped keys with a fake data source: a PostHog group as the
customer (step 3), step 5 without the locked condition in group mode, contact attributes and their
codenames. The same against the sandbox: test_groups_cli.py."""

from __future__ import annotations

import pytest
from helpers import env_app, wizard_parts
from wizard_fakes import CTRL_U, DOWN, ENTER, group_source, piped_keys

from cs_posthog.config import ContactAttribute, Draft, EventsSettings, Identification, PostHogSettings, Region
from cs_posthog.errors import MissingScopesError
from cs_posthog.output import Output
from cs_posthog.posthog.hogql import GroupRef
from cs_posthog.wizard.context import StopWizard, WizardContext

GROUP = DOWN + ENTER  # "A PostHog group (group analytics)" (the second answer)


def ctx_for(src, **draft) -> WizardContext:
    settings = PostHogSettings(region=Region.EU, host="https://eu.posthog.com", project_id=101, project_name="Acme")
    ctx = WizardContext(out=Output(), draft=Draft(posthog=settings, **draft),
                        make_source=lambda settings, key: src, **wizard_parts())
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    return ctx


def words(text: str) -> str:
    return " ".join(text.split())


# --- step 3 ----------------------------------------------------------------------------------
def test_group_key_is_the_customer_with_counts_preview_and_the_contacts_rule(home, capsys):
    from cs_posthog.wizard.step_identification import ask_identification, contacts_rule

    src = group_source()
    with piped_keys() as keys:
        keys.send_text(GROUP + ENTER + ENTER)  # group; company (first); the group key (default)
        ident = ask_identification(ctx_for(src))
    assert ident == Identification(kind="group", group_type="company", group_type_index=0)
    companies = len([g for g in src.groups if g["index"] == 0])
    with_events, persons = src.group_coverage(GroupRef(0))
    assert 0 < with_events < companies and 0 < persons < len(src.persons)  # the data tells them apart
    err = words(capsys.readouterr().err)
    assert (f"{with_events} of {companies} companies have events in the last 30 days; "
            f"{persons} of {len(src.persons)} Persons belong to one.") in err
    assert words(contacts_rule("company")) in err
    assert "most recent selected event in the last 30 days" in err
    assert "Preview (the newest company groups)" in err and "acme-8" in err and "Company 8" in err


def test_a_group_property_holds_the_id(home, capsys):
    from cs_posthog.wizard.step_identification import ask_identification

    src = group_source()
    with piped_keys() as keys:
        # group; company; "A group property"; crm_id
        keys.send_text(GROUP + ENTER + DOWN + ENTER + "crm_id" + ENTER)
        ident = ask_identification(ctx_for(src))
    assert ident == Identification(kind="group", group_type="company", group_type_index=0, property="crm_id")
    assert ident.describe() == "company group property crm_id"
    with_crm = len([g for g in src.groups if g["index"] == 0 and "crm_id" in g["properties"]])
    with_events, _ = src.group_coverage(GroupRef(0, "crm_id"))
    err = words(capsys.readouterr().err)
    assert f"{with_crm} of 9 companies have crm_id set, not empty; only those can be customers." in err
    assert f"{with_events} of 9 companies with crm_id have events in the last 30 days" in err
    # the names offered come from the group type's property definitions
    from cs_posthog.wizard.step_identification import group_property_completer

    assert group_property_completer(ctx_for(src), 0).names("cr", wait=5) == ["crm_id"]
    assert ("group_properties", 0, "cr") in src.calls


def test_the_second_group_type(home, capsys):
    from cs_posthog.wizard.step_identification import ask_identification

    src = group_source()
    with piped_keys() as keys:
        keys.send_text(GROUP + DOWN + ENTER + ENTER)  # project (index 1), its key
        ident = ask_identification(ctx_for(src))
    assert (ident.group_type, ident.group_type_index, ident.property) == ("project", 1, None)
    assert "of 3 projects have events" in words(capsys.readouterr().err)


def test_without_group_read_the_scope_is_named_and_indexes_stand_in(home, capsys):
    from cs_posthog.wizard.step_identification import ask_identification

    src = group_source(types=MissingScopesError(["group:read"], ["Group"], service="PostHog", status=403))
    with piped_keys() as keys:
        keys.send_text(GROUP + ENTER + ENTER)
        ident = ask_identification(ctx_for(src))
    assert ident == Identification(kind="group", group_type=None, group_type_index=0)
    assert ident.describe() == "group type 0 group key"
    err = words(capsys.readouterr().err)
    assert "the API key is missing read access to: Group (group:read), which lists the group types by name" in err
    assert "found by their index (0 to 4)" in err
    assert ("group_indexes",) in src.calls


def test_a_project_without_groups_asks_again(home, capsys):
    from cs_posthog.wizard.step_identification import ask_identification

    src = group_source(groups=[], types=[])
    with piped_keys() as keys:
        # group -> none: asked again (Person property offered) -> organization_id
        keys.send_text(GROUP + ENTER + "organization_id" + ENTER)
        ident = ask_identification(ctx_for(src))
    assert ident == Identification(property="organization_id")
    assert "this project has no groups" in words(capsys.readouterr().err)


def test_not_sure_explains_both_says_what_the_project_has_and_asks_again(home, capsys):
    from cs_posthog.wizard.step_identification import NOT_SURE, ask_identification

    src = group_source()
    with piped_keys() as keys:
        # I'm not sure -> explained; asked again with the group offered first (the project has groups)
        keys.send_text(DOWN + DOWN + ENTER + ENTER + ENTER + ENTER)
        ident = ask_identification(ctx_for(src))
    assert ident.is_group and ident.group_type == "company"
    err = words(capsys.readouterr().err)
    assert words(NOT_SURE) in err
    assert "posthog.group('company', 'acme-42')" in err
    assert "This project has group types: company (index 0), project (index 1)." in err

    with piped_keys() as keys, pytest.raises(StopWizard):
        keys.send_text(DOWN + DOWN + ENTER + DOWN + DOWN + ENTER)  # not sure, then "Stop here"
        ask_identification(ctx_for(group_source(groups=[], types=[])))
    assert "This project has no groups yet" in words(capsys.readouterr().err)


def test_edit_switches_back_to_the_saved_group_by_default(home):
    from cs_posthog.wizard.step_identification import ask_identification

    prev = Identification(kind="group", group_type="project", group_type_index=1, property="name")
    ctx = ctx_for(group_source(), identification=prev)
    with piped_keys() as keys:
        keys.send_text(ENTER + ENTER + ENTER + ENTER)  # group (as saved), project (as saved), property, name
        ident = ask_identification(ctx)
    assert ident == prev


# --- step 5 in group mode --------------------------------------------------------------------
def group_ctx(src, **kw):
    ident = Identification(kind="group", group_type="company", group_type_index=0)
    return ctx_for(src, identification=ident, events=EventsSettings(selected=["invoice_paid"]), **kw)


def test_persons_in_group_mode_have_no_locked_condition_and_count_group_members(home, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    src = group_source()
    with piped_keys() as keys:
        keys.send_text(ENTER)  # save
        settings = ask_persons(group_ctx(src))
    assert settings.filters == [] and settings.attributes == []
    _, members = src.group_coverage(GroupRef(0), 30, ["invoice_paid"], [])
    err = words(capsys.readouterr().err)
    assert "locked" not in err
    assert "A Person's customer is the company of the group on their most recent selected event" in err
    assert f"{members} persons of a company will be synced." in err
    assert "Events: those of every company are sent." in err
    # counted over the selected events, with no Person property condition
    assert ("group_coverage", 0, None, ("invoice_paid",), ()) in src.calls
    # the preview shows Persons of a company (as the sync attaches them), with the company's key
    assert any(c[0] == "preview_persons" and c[-1] == 0 for c in src.calls)
    member = src._members(GroupRef(0), ["invoice_paid"], [])[0]
    assert "company" in err and member["groups"][0] in err


def test_a_person_property_condition_that_was_locked_is_free_in_group_mode(home, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    src = group_source()
    with piped_keys() as keys:
        # add: organization_id is not set (refused in Person-property mode), save
        keys.send_text(DOWN + ENTER + "organization_id" + ENTER + DOWN * 3 + ENTER + ENTER)
        settings = ask_persons(group_ctx(src))
    assert [f.describe() for f in settings.filters] == ["organization_id is not set"]
    expected = src.group_coverage(GroupRef(0), 30, ["invoice_paid"], settings.filters)[1]
    assert f"{expected} persons of a company will be synced." in words(capsys.readouterr().err)


# --- contact attributes ----------------------------------------------------------------------
ATTRIBUTES = DOWN * 3 + ENTER  # "Contact attributes to send" (no condition yet: Save, Add, Contact, Attributes)


def test_attributes_with_their_codenames_and_the_rule_said_once(home, capsys):
    from cs_posthog.wizard.step_persons import ATTRIBUTES_REMINDER, ask_persons

    src = group_source()
    seq = (ATTRIBUTES
           + ENTER + "plan" + ENTER + ENTER                                   # plan, as plan (suggested)
           + ENTER + "plan tier" + ENTER + CTRL_U + "Plan Tier" + ENTER       # refused: not a codename
           + CTRL_U + "tier" + ENTER                                           # as tier
           + DOWN * 2 + ENTER                                                  # Done
           + ATTRIBUTES + DOWN * 2 + ENTER                                     # again: Done
           + ENTER)                                                            # save
    with piped_keys() as keys:
        keys.send_text(seq)
        settings = ask_persons(group_ctx(src))
    assert settings.attributes == [ContactAttribute(property="plan", codename="plan"),
                                   ContactAttribute(property="plan tier", codename="tier")]
    err = capsys.readouterr().err
    assert words(err).count(words(ATTRIBUTES_REMINDER)) == 1
    assert "Contact attributes: email, plan, plan tier as tier" in err
    # the preview shows the attributes' properties
    assert any(c[0] == "preview_persons" and "plan tier" in c[2] for c in src.calls)


def test_a_codename_taken_by_another_property_is_refused(home, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    src = group_source()
    seq = (ATTRIBUTES
           + ENTER + "plan" + ENTER + CTRL_U + "email" + ENTER                # email is email's
           + CTRL_U + "tier" + ENTER
           + ENTER + "plan tier" + ENTER + CTRL_U + "tier" + ENTER             # tier is plan's now
           + CTRL_U + "plan_tier" + ENTER
           + DOWN + ENTER + ENTER                                              # remove the first (plan)
           + DOWN * 2 + ENTER + ENTER)                                         # Done, save
    with piped_keys() as keys:
        keys.send_text(seq)
        settings = ask_persons(group_ctx(src))
    assert settings.attributes == [ContactAttribute(property="plan tier", codename="plan_tier")]


def test_suggested_codenames():
    from cs_posthog.config import codename_problem, suggest_codename

    assert suggest_codename("$initial_referrer") == "initial_referrer"
    assert suggest_codename("Plan Tier") == "plan_tier"
    assert codename_problem("Plan") is not None and codename_problem("plan_2") is None


def test_group_type_names_from_posthog_are_shown_escaped(home, capsys):
    """A group type's name is anyone's to choose in PostHog: control characters and rich markup in it are
    shown as text in step 3 (questions, counts, rule, preview) and in step 5 (rule, badge, scope line)."""
    from cs_posthog.posthog.client import GroupType
    from cs_posthog.wizard.step_identification import ask_identification
    from cs_posthog.wizard.step_persons import ask_persons

    name = "co\x1b]0;PWNED\x07[bold]x[/bold]\x9b2J"
    src = group_source(types=[GroupType(0, name)])
    with piped_keys() as keys:
        keys.send_text(GROUP + ENTER + ENTER)
        ident = ask_identification(ctx_for(src))
    assert ident.group_type == name  # the real name is what is saved
    with piped_keys() as keys:
        keys.send_text(ENTER)
        ask_persons(ctx_for(src, identification=ident, events=EventsSettings(selected=["invoice_paid"])))
    err = capsys.readouterr().err
    assert not any(c in err for c in ("\x1b", "\x07", "\x9b")), repr(err)
    shown = "co\\x1b]0;PWNED\\x07[bold]x[/bold]\\x9b2J"
    assert f"A Person belongs to the {shown} of the group" in words(err)
    assert f"persons of a {shown} will be synced" in err


# --- the whole wizard --------------------------------------------------------------------------
def test_interactive_connect_in_group_mode_saves_the_group_and_attributes(home, monkeypatch, capsys):
    """`cs-posthog connect` on a terminal (piped keys, fake PostHog): step 3 a group with a property,
    step 5 an attribute; the saved configuration holds both. `--customer-group` on a terminal is the answer
    offered, and with `--customer-property` too it is a usage error naming both."""
    import tomllib

    from helpers import fake_key
    from wizard_fakes import TAB, FakeCheck

    from cs_posthog.commands import connect
    from cs_posthog.errors import UsageError
    from cs_posthog.wizard.noinput import Flags

    monkeypatch.setattr(Output, "stdin_is_tty", staticmethod(lambda: True))
    check, src = FakeCheck(), group_source()
    cs_key = fake_key("", 32)
    keys_text = (check.good + ENTER + "101" + ENTER                          # step 1
                 + cs_key + ENTER + "CS-AB12C" + ENTER + "n"                 # step 2
                 + ENTER + ENTER + DOWN + ENTER + "crm_id" + ENTER           # group, company (both offered); crm_id
                 + "invoice" + TAB + ENTER                                   # step 4
                 + DOWN * 3 + ENTER + ENTER + "plan" + ENTER + ENTER + DOWN * 2 + ENTER  # attribute plan; Done
                 + ENTER)                                                    # save
    with piped_keys() as keys:
        keys.send_text(keys_text)
        connect.run(env_app(), Flags(customer_group="Company"), no_sync=True, check_credentials=check,
                    make_source=lambda s, k: src)
    cfg = tomllib.loads((home / "config.toml").read_text())
    assert cfg["identification"] == {"kind": "group", "group_type": "company", "group_type_index": 0,
                                     "property": "crm_id"}
    assert cfg["persons"]["attributes"] == [{"property": "plan", "codename": "plan"}]
    assert cfg["events"]["selected"] == ["invoice_paid"]
    err = capsys.readouterr().err
    assert "Configuration saved to" in err

    with pytest.raises(UsageError, match="--customer-property and --customer-group: pick one"):
        connect.run(env_app(), Flags(customer_group="0", customer_property="organization_id"), restart=True,
                    check_credentials=check, make_source=lambda s, k: src)
