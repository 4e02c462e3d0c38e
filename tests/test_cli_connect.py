"""`connect` and `edit` as whole flows (piped keys, fake PostHog): the draft after each step,
resume, Ctrl-C, an existing config, edit's "nothing is written until you save", no terminal."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from cs_posthog.output import Output
from cs_posthog.wizard.noinput import Flags
from helpers import env_app, env_paths, env_store, run_cli, sample_config_dict
from wizard_fakes import CTRL_C, CTRL_U, DOWN, ENTER, TAB, FakeCheck, piped_keys, sample_source

FLAG_FIELDS = {f.name for f in dataclasses.fields(Flags)}

CS_KEY = "cs_" + "k" * 30


@pytest.fixture
def tty(monkeypatch):
    monkeypatch.setattr(Output, "stdin_is_tty", staticmethod(lambda: True))


@pytest.fixture
def fakes():
    return FakeCheck(), sample_source()


def connect(fakes, keys, text, **kw):
    from cs_posthog.commands import connect as cmd

    check, src = fakes
    keys.send_text(text)
    kw.setdefault("no_sync", True)
    flags = Flags(**{k: kw.pop(k) for k in list(kw) if k in FLAG_FIELDS})
    cmd.run(env_app(), flags, check_credentials=check, make_source=lambda s, k: src, **kw)


def step1(check):
    return check.good + ENTER + "101" + ENTER


STEP2 = CS_KEY + ENTER + "CS-AB12C" + ENTER + "n"
STEP3 = ENTER + "organization_id" + ENTER
STEP4 = "invoice" + TAB + ENTER  # filter to invoice_paid, toggle, confirm
STEP5 = ENTER  # Save configuration


def read_toml(path):
    return tomllib.loads(path.read_text())


def test_full_wizard_writes_a_private_config_and_drops_the_draft(home, tty, fakes, capsys):
    check, _ = fakes
    with piped_keys() as keys:
        connect(fakes, keys, step1(check) + STEP2 + STEP3 + STEP4 + STEP5)
    cfg = read_toml(home / "config.toml")
    assert cfg["posthog"] == {"region": "eu", "host": "https://eu.posthog.com", "project_id": 101,
                              "project_name": "Acme", "timezone": "Europe/Prague", "query_budget_per_hour": 2400}
    assert cfg["customerscore"] == {"api_url": "https://api.customerscore.io", "tracker_key": "CS-AB12C"}
    assert cfg["identification"]["property"] == "organization_id"
    assert cfg["events"]["selected"] == ["invoice_paid"]
    assert cfg["persons"] == {"filters": [], "attributes": [], "contact_id": "person_id", "filter_events": True}
    assert (home / "config.toml").stat().st_mode & 0o777 == 0o600
    assert not (home / "draft.toml").exists()
    assert read_toml(home / "secrets.toml") == {"posthog": check.good, "customerscore": CS_KEY}
    text = (home / "config.toml").read_text()
    assert check.good not in text and CS_KEY not in text
    err = capsys.readouterr().err
    for n, title in enumerate(["PostHog credentials", "Customerscore credentials", "Customer identification",
                               "Events to track", "Persons to sync"], start=1):
        assert f"Step {n} of 5 · {title}" in err
    assert "Configuration saved to" in err
    assert "cs-posthog sync" in err and "cs-posthog schedule" in err


def test_ctrl_c_at_step_2_says_step_1_is_kept(home, tty, fakes, capsys):
    check, _ = fakes
    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, step1(check) + CTRL_C)
    assert "Stopped at step 2: step 1 is kept, and `cs-posthog connect` resumes at step 2." in capsys.readouterr().err


def test_ctrl_c_keeps_the_draft_then_resume_at_step_4(home, tty, fakes, capsys):
    check, _ = fakes
    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, step1(check) + STEP2 + STEP3 + "inv" + CTRL_C)
    assert not (home / "config.toml").exists()
    draft = read_toml(home / "draft.toml")
    assert set(draft) == {"version", "posthog", "customerscore", "identification"}
    assert (home / "draft.toml").stat().st_mode & 0o777 == 0o600
    assert check.good not in (home / "draft.toml").read_text()
    assert "Stopped at step 4: steps 1 to 3 are kept, and `cs-posthog connect` resumes at step 4." in capsys.readouterr().err

    calls_before = len(check.calls)
    with piped_keys() as keys:
        connect(fakes, keys, ENTER + STEP4 + STEP5)  # Enter: "Resume at step 4 of 5"
    err = capsys.readouterr().err
    assert "Resuming at step 4 of 5: Events to track" in err
    assert "Step 1 of 5" not in err
    assert len(check.calls) == calls_before  # the key was not checked again
    cfg = read_toml(home / "config.toml")
    assert cfg["events"]["selected"] == ["invoice_paid"] and cfg["posthog"]["project_id"] == 101
    assert not (home / "draft.toml").exists()


def test_resume_can_start_over_and_restart_flag_ignores_the_draft(home, tty, fakes, capsys):
    check, _ = fakes
    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, step1(check) + STEP2 + CTRL_C)
    assert set(read_toml(home / "draft.toml")) == {"version", "posthog", "customerscore"}

    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, DOWN + ENTER + CTRL_C)  # "Start over", then stop at the first question
    assert "Step 1 of 5" in capsys.readouterr().err
    assert not (home / "draft.toml").exists()

    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, step1(check) + CTRL_C)
    assert set(read_toml(home / "draft.toml")) == {"version", "posthog"}
    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, CTRL_C, restart=True)  # no resume question: straight to step 1
    err = capsys.readouterr().err
    assert "Resum" not in err and "Step 1 of 5" in err
    assert not (home / "draft.toml").exists()


def test_not_sure_stops_with_progress_kept(home, tty, fakes, capsys):
    check, _ = fakes
    with piped_keys() as keys:
        # "I'm not sure": explained, asked again; "Stop here"
        connect(fakes, keys, step1(check) + STEP2 + DOWN + DOWN + ENTER + DOWN + DOWN + ENTER)
    assert not (home / "config.toml").exists()
    assert set(read_toml(home / "draft.toml")) == {"version", "posthog", "customerscore"}
    err = capsys.readouterr().err
    assert "support@customerscore.io" in err
    assert err.count("cs-posthog connect") == 1 and "Stopped at step 3; the finished steps are kept" in err
    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, CTRL_C)
    # the resume question names step 3; Ctrl-C on it changes nothing
    assert set(read_toml(home / "draft.toml")) == {"version", "posthog", "customerscore"}


def test_resume_goes_back_to_step_1_when_the_stored_key_is_gone(home, tty, fakes, capsys):
    check, _ = fakes
    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, step1(check) + STEP2 + CTRL_C)
    (home / "secrets.toml").unlink()
    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        connect(fakes, keys, ENTER + CTRL_C)
    assert "Resuming at step 1 of 5: PostHog credentials" in capsys.readouterr().err


def test_existing_config_is_left_alone_or_edited(home, tty, fakes, capsys):
    from cs_posthog.config import Config, save_config

    check, _ = fakes
    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)
    before = (home / "config.toml").read_bytes()
    with piped_keys() as keys:
        connect(fakes, keys, DOWN + DOWN + ENTER)  # "Nothing: leave it as it is"
    assert (home / "config.toml").read_bytes() == before
    err = capsys.readouterr().err
    assert 'Already connected: PostHog project "Acme" (id 12345, eu)' in err
    assert "cs-posthog edit" in err


def test_no_terminal_exits_2_with_a_hint(home):
    r = run_cli("connect")
    assert r.exit_code == 2
    assert "stdin is not a terminal" in r.stderr and "--no-input" in r.stderr
    r = run_cli("edit")
    assert r.exit_code == 78  # not connected comes first
    assert not (home / "config.toml").exists()


# --- edit (interactive) ------------------------------------------------------------------------
def saved_config(home, check):
    from cs_posthog.config import Config, save_config

    data = sample_config_dict()
    data["posthog"]["project_id"] = 101
    data["events"]["selected"] = ["invoice_paid", "report_created"]
    save_config(Config.model_validate(data), env_paths().config_file)
    env_store().store("posthog", check.good)
    env_store().store("customerscore", CS_KEY)
    return (home / "config.toml").read_bytes(), (home / "secrets.toml").read_bytes()


def edit(fakes, keys, text, **kw):
    from cs_posthog.commands import edit as cmd

    check, src = fakes
    keys.send_text(text)
    flags = Flags(**{k: kw.pop(k) for k in list(kw) if k in FLAG_FIELDS})
    cmd.run(env_app(), flags, check_credentials=check, make_source=lambda s, k: src, **kw)


def test_edit_events_prefilled_and_saved(home, tty, fakes, capsys):
    check, _ = fakes
    saved_config(home, check)
    with piped_keys() as keys:
        # saved events are checked; add user_signed_up via search; confirm; "Save these changes?" yes
        edit(fakes, keys, "signed" + TAB + ENTER + "y", section="events")
    cfg = read_toml(home / "config.toml")
    assert sorted(cfg["events"]["selected"]) == ["invoice_paid", "report_created", "user_signed_up"]
    assert cfg["persons"]["filters"][0] == {"property": "plan", "operator": "equals", "value": "pro"}  # untouched
    err = capsys.readouterr().err
    assert "events: + user_signed_up" in err
    assert "Configuration saved" in err


def test_edit_ctrl_c_or_no_changes_nothing(home, tty, fakes, capsys):
    check, _ = fakes
    cfg_before, secrets_before = saved_config(home, check)
    new_key = "phx_" + "n" * 30
    with piped_keys() as keys, pytest.raises(KeyboardInterrupt):
        # a new key is entered but the user quits at the next question: the old key stays
        edit(fakes, keys, new_key + ENTER + CTRL_C, section="credentials")
    assert (home / "config.toml").read_bytes() == cfg_before
    assert (home / "secrets.toml").read_bytes() == secrets_before

    with piped_keys() as keys:
        edit(fakes, keys, "signed" + TAB + ENTER + "n", section="events")  # declines to save
    assert (home / "config.toml").read_bytes() == cfg_before
    assert not (home / "draft.toml").exists()


def test_edit_credentials_stores_the_new_key_only_on_save(home, tty, fakes, capsys):

    check, _ = fakes
    saved_config(home, check)
    other_good = check.good
    check.good = "phx_" + "m" * 30  # a new, valid key
    with piped_keys() as keys:
        # new key, project kept (Enter), CS key kept (Enter), tracker changed, no advanced, save
        edit(fakes, keys, check.good + ENTER + ENTER + ENTER + CTRL_U + "CS-NEW42" + ENTER + "n" + "y",
             section="credentials")
    assert env_store().get("posthog") == check.good != other_good
    assert env_store().get("customerscore") == CS_KEY
    cfg = read_toml(home / "config.toml")
    assert cfg["customerscore"]["tracker_key"] == "CS-NEW42"
    err = capsys.readouterr().err
    assert "PostHog personal API key: replaced" in err and "tracker key: CS-ABCD1 → CS-NEW42" in err
    assert "PostHog personal API key stored in" in err
    assert "Customerscore API key stored in" not in err  # kept with Enter: not stored again


def test_edit_keeping_both_keys_does_not_store_or_announce_them(home, tty, fakes, capsys):
    check, _ = fakes
    _, secrets_before = saved_config(home, check)
    with piped_keys() as keys:
        # keys kept (Enter), project kept, tracker changed, no advanced, save
        edit(fakes, keys, ENTER + ENTER + ENTER + CTRL_U + "CS-NEW42" + ENTER + "n" + "y", section="credentials")
    assert read_toml(home / "config.toml")["customerscore"]["tracker_key"] == "CS-NEW42"
    assert (home / "secrets.toml").read_bytes() == secrets_before
    err = capsys.readouterr().err
    assert "Configuration saved" in err and "stored in" not in err and "replaced" not in err


def test_edit_persons_section(home, tty, fakes, capsys):
    check, _ = fakes
    saved_config(home, check)
    with piped_keys() as keys:
        # conditions: organization_id is set (locked), plan = pro, phone is not set -> remove "plan = pro"; save
        edit(fakes, keys, DOWN + DOWN + ENTER + ENTER + ENTER, section="persons")
    cfg = read_toml(home / "config.toml")
    assert cfg["persons"]["filters"] == [{"property": "phone", "operator": "is_not_set"}]
    assert "Persons to sync" in capsys.readouterr().err


def test_flags_on_a_terminal_are_the_offered_answers(home, tty, fakes):
    check, _ = fakes
    with piped_keys() as keys:
        # key; Enter keeps each offered answer: project, tracker, (no advanced), kind, property,
        # the checklist with --event checked, and save with the --filter condition
        connect(fakes, keys, check.good + ENTER + ENTER + CS_KEY + ENTER + ENTER + "n" + ENTER + ENTER
                + ENTER + ENTER,
                project="101", tracker_key="CS-FLAG1", customer_property="organization_id",
                events=["report_created", "purchase"], filters=["plan = pro"], contact_id="email")
    cfg = read_toml(home / "config.toml")
    assert cfg["posthog"]["project_id"] == 101
    assert cfg["customerscore"]["tracker_key"] == "CS-FLAG1"
    assert sorted(cfg["events"]["selected"]) == ["purchase", "report_created"]
    assert cfg["persons"] == {"filters": [{"property": "plan", "operator": "equals", "value": "pro"}],
                              "attributes": [], "contact_id": "email", "filter_events": True}


def test_bad_filter_flag_on_a_terminal_is_a_usage_error(home, tty, fakes):
    from cs_posthog.errors import UsageError

    with piped_keys() as keys, pytest.raises(UsageError, match="--filter 'plan'"):
        connect(fakes, keys, "", filters=["plan"])


def test_edit_changing_the_contact_id_warns_about_duplicate_contacts(home, tty, fakes, capsys):
    check, _ = fakes
    saved_config(home, check)
    with piped_keys() as keys:
        # "Change how contacts are identified" -> a Person property -> email; save
        edit(fakes, keys, DOWN * 3 + ENTER + DOWN + ENTER + "email" + ENTER + ENTER, section="persons")
    assert read_toml(home / "config.toml")["persons"]["contact_id"] == "email"
    err = " ".join(capsys.readouterr().err.split())
    assert ("warning: contacts are identified by Person property email instead of PostHog person ID: the contacts "
            "already in Customerscore keep the old id, and the next sync sends every Person again as a new "
            "contact") in err

    with piped_keys() as keys:  # other changes: no such warning
        edit(fakes, keys, "signed" + TAB + ENTER + "y", section="events")
    assert "contacts are identified by" not in capsys.readouterr().err


def test_caller_syncs_keeps_connect_quiet_about_the_sync(home, tty, fakes, capsys):
    """The demo runs the first sync itself right after connect: connect must not tell the user to
    run `cs-posthog sync` (nor run it), nor talk about scheduling."""
    check, _ = fakes
    with piped_keys() as keys:
        connect(fakes, keys, step1(check) + STEP2 + STEP3 + STEP4 + STEP5, caller_syncs=True)
    assert (home / "config.toml").exists()
    err = capsys.readouterr().err
    assert "Configuration saved" in err
    assert "cs-posthog sync" not in err and "schedule" not in err and "First sync" not in err

    (home / "config.toml").unlink()
    with piped_keys() as keys:  # without it, the hint is there
        connect(fakes, keys, step1(check) + STEP2 + STEP3 + STEP4 + STEP5)
    err = capsys.readouterr().err
    assert "Run the first sync with `cs-posthog sync`." in err and "cs-posthog schedule --install" in err


def test_edit_without_a_section_asks_what_to_change(home, tty, fakes, capsys):
    check, _ = fakes
    cfg_before, _ = saved_config(home, check)
    with piped_keys() as keys:
        # the menu: PostHog, Customerscore, identification, events (4th) -> the events step only
        edit(fakes, keys, DOWN * 3 + ENTER + "signed" + TAB + ENTER + "y")
    err = capsys.readouterr().err
    assert "Events to track" in err
    assert "Step 1 of" not in err and "PostHog personal API key" not in err  # only the events step ran
    assert sorted(read_toml(home / "config.toml")["events"]["selected"]) == [
        "invoice_paid", "report_created", "user_signed_up"]

    saved_config(home, check)
    with piped_keys() as keys:
        edit(fakes, keys, DOWN * 6 + ENTER)  # "Nothing: leave it as it is"
    assert "Nothing changed." in capsys.readouterr().err
    assert (home / "config.toml").read_bytes() == cfg_before


def test_edit_customerscore_section_runs_only_step_2(home, tty, fakes, capsys):
    check, _ = fakes
    _, secrets_before = saved_config(home, check)
    with piped_keys() as keys:
        # CS key kept (Enter), tracker changed, no advanced, save
        edit(fakes, keys, ENTER + CTRL_U + "CS-NEW42" + ENTER + "n" + "y", section="customerscore")
    assert read_toml(home / "config.toml")["customerscore"]["tracker_key"] == "CS-NEW42"
    assert (home / "secrets.toml").read_bytes() == secrets_before
    err = capsys.readouterr().err
    assert "PostHog personal API key" not in err
    assert "Checking the keys changed nothing in Customerscore." in err and "first sync" not in err  # syncs ran before


def test_cs_url_flag_answers_the_advanced_question(home, tty, fakes, capsys):
    check, _ = fakes
    with piped_keys() as keys:
        # no "Change advanced options?" answer in the keys: --cs-url gave it
        connect(fakes, keys, step1(check) + CS_KEY + ENTER + "CS-AB12C" + ENTER + STEP3 + STEP4 + STEP5,
                cs_url="https://eu.api.customerscore.io")
    cfg = read_toml(home / "config.toml")
    assert cfg["customerscore"] == {"api_url": "https://eu.api.customerscore.io", "tracker_key": "CS-AB12C"}
    assert cfg["identification"]["property"] == "organization_id"
    assert "no data is sent before the first sync" in capsys.readouterr().err
