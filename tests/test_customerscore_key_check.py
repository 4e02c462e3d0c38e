"""Issue 12, item 1: both Customerscore keys are checked where they are typed, with requests that
change nothing (an empty contacts upsert, an empty tracker batch): the client and the sandbox, the
wizard's step 2 (a refused key is asked again; Customerscore unreachable is "not checked") and
`connect --no-input` (a refused key exits 77 before any file is written)."""

from __future__ import annotations

import socket

import httpx
import pytest

from cs_posthog.customerscore.client import CustomerscoreClient
from cs_posthog.errors import AuthError, UnavailableError
from cs_posthog.sandbox.runner import get_json, get_jsonl, start_sandbox
from helpers import env_settings, env_store, fake_key, run_cli, sandbox_env, wizard_parts
from wizard_fakes import CTRL_U, ENTER, piped_keys

PROP = "organization_id"


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=300, persons=100, customers=20, seed=4, region="eu") as sb:
        yield sb


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cs_client(url: str, key: str, tracker: str) -> CustomerscoreClient:
    return CustomerscoreClient(url, key, tracker, pace=False, settings=env_settings())


def received_nothing(sb) -> None:
    url = sb.customerscore_url
    stats = get_json(url + "/_sandbox/stats")
    assert stats["contacts_received"] == stats["contacts_dropped"] == 0
    assert stats["events_received"] == stats["events_dropped"] == 0
    assert get_jsonl(url + "/_sandbox/received/contacts") == []
    assert get_jsonl(url + "/_sandbox/received/events") == []


# --- the client against the sandbox ----------------------------------------------------------
def test_good_keys_pass_and_nothing_is_recorded(sandbox):
    info = sandbox.info
    with cs_client(info["customerscore"], info["customerscore_api_key"], info["tracker_key"]) as c:
        c.check_api_key()
        c.check_tracker_key()
        assert c.stats.requests == 2
    received_nothing(sandbox)


def test_a_wrong_api_key_is_a_401(sandbox):
    info = sandbox.info
    with cs_client(info["customerscore"], fake_key("csk_", 24), info["tracker_key"]) as c, \
            pytest.raises(AuthError) as exc:
        c.check_api_key()
    assert exc.value.status == 401 and exc.value.code == "unauthorized"
    assert "rejected the API key" in exc.value.message


def test_a_wrong_tracker_key_is_the_trackers_401(sandbox):
    info = sandbox.info
    with cs_client(info["customerscore"], info["customerscore_api_key"], "CS-WRONG9") as c:
        c.check_api_key()  # the API key alone is fine
        with pytest.raises(AuthError) as exc:
            c.check_tracker_key()
    assert exc.value.status == 401 and exc.value.code == "invalid_tracker_key"
    assert "rejected the tracker key" in exc.value.message
    received_nothing(sandbox)


def test_unreachable_is_unavailable_after_quick_retries():
    with cs_client(f"http://127.0.0.1:{closed_port()}", fake_key("csk_", 24), "CS-ABCD1") as c:
        for check in (c.check_api_key, c.check_tracker_key):
            with pytest.raises(UnavailableError):
                check()
        assert c.stats.requests == 6  # 3 attempts each, then "not checked"


@pytest.mark.parametrize("answer", [
    httpx.Response(200, json={"status": "ok", "processed": 0}),
    httpx.Response(200, json={"status": "ok"}),
    # the docs do not say an empty list is allowed: a validation error comes after the key passed
    httpx.Response(400, json={"error": "validation_error", "message": "The request is invalid.",
                              "details": [{"field": "contacts", "message": "at least 1 item"}]}),
    httpx.Response(422, json={"error": "validation_error", "message": "events: empty"}),
])
def test_the_empty_batch_answers_the_real_api_may_give_are_accepted(answer):
    transport = httpx.MockTransport(lambda req: answer)
    with CustomerscoreClient("http://cs.test", fake_key("csk_", 24), "CS-ABCD1", pace=False,
                             transport=transport, settings=env_settings()) as c:
        c.check_api_key()
        c.check_tracker_key()


def test_5xx_after_retries_and_a_web_page_are_not_acceptance():
    transport = httpx.MockTransport(lambda req: httpx.Response(503, text="down"))
    with CustomerscoreClient("http://cs.test", fake_key("csk_", 24), "CS-ABCD1", pace=False,
                             transport=transport, settings=env_settings()) as c, pytest.raises(UnavailableError):
        c.check_api_key()
    page = httpx.MockTransport(lambda req: httpx.Response(200, html="<html><title>Wi-Fi login</title></html>"))
    with CustomerscoreClient("http://cs.test", fake_key("csk_", 24), "CS-ABCD1", pace=False,
                             transport=page, settings=env_settings()) as c, pytest.raises(Exception) as exc:
        c.check_tracker_key()
    assert not isinstance(exc.value, AuthError) and "HTML page" in str(exc.value)


# --- connect --no-input ----------------------------------------------------------------------
@pytest.fixture
def env(sandbox, monkeypatch):
    return sandbox_env(monkeypatch, sandbox.info)


def connect_args(info, *, tracker: str | None = None, cs_url: str | None = None) -> list[str]:
    return ["connect", "--no-input", "--no-sync", "--project", str(info["project_id"]),
            "--tracker-key", tracker or info["tracker_key"], "--cs-url", cs_url or info["customerscore"],
            "--customer-property", PROP, "--event", "invoice_paid"]


def files_in(home) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) if home.exists() else []


def test_connect_no_input_wrong_api_key_exits_77_writing_nothing(home, env, monkeypatch):
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", fake_key("csk_", 24))
    r = run_cli(*connect_args(env))
    assert r.exit_code == 77, r.stderr
    assert "the Customerscore key: Customerscore rejected the API key (401)" in r.stderr
    assert "CUSTOMERSCORE_API_KEY" in r.stderr
    assert files_in(home) == []


def test_connect_no_input_wrong_tracker_key_exits_77_writing_nothing(home, env):
    r = run_cli(*connect_args(env, tracker="CS-WRONG9"))
    assert r.exit_code == 77, r.stderr
    assert "--tracker-key: Customerscore rejected the tracker key (401)" in r.stderr
    assert files_in(home) == []


def test_connect_no_input_good_keys_say_so(home, env):
    r = run_cli(*connect_args(env))
    assert r.exit_code == 0, r.stderr
    assert "✓ Customerscore accepted the API key and the tracker key" in r.stderr
    assert (home / "config.toml").exists()


def test_connect_no_input_customerscore_unreachable_warns_and_goes_on(home, env):
    r = run_cli(*connect_args(env, cs_url=f"http://127.0.0.1:{closed_port()}"))
    assert r.exit_code == 0, r.stderr
    assert "warning: the Customerscore keys were not checked: Customerscore did not answer" in r.stderr
    assert (home / "config.toml").exists()


# --- the wizard's step 2 ---------------------------------------------------------------------
def make_ctx(cs_url: str):
    from cs_posthog.config import Draft
    from cs_posthog.output import Output
    from cs_posthog.wizard.context import Prefill, WizardContext

    return WizardContext(out=Output(), draft=Draft(), mode="connect", prefill=Prefill(cs_url=cs_url), **wizard_parts())


def test_wizard_asks_again_for_a_refused_api_key_and_tracker_key(home, sandbox, capsys):
    from cs_posthog.wizard.step_customerscore import ask_customerscore

    info = sandbox.info
    wrong = "csk_" + "w" * 24
    with piped_keys() as keys:
        keys.send_text(wrong + ENTER  # refused: asked again
                       + info["customerscore_api_key"] + ENTER
                       + "CS-WRONG9" + ENTER  # refused: asked again
                       + info["tracker_key"] + ENTER
                       + "n")  # no advanced options: the sandbox's URL stays
        keys.close()  # all typed: a prompt left waiting ends (EOFError) instead of hanging
        settings = ask_customerscore(make_ctx(info["customerscore"]))
    assert settings.tracker_key == info["tracker_key"] and settings.api_url == info["customerscore"]
    err = capsys.readouterr().err
    assert "error: Customerscore rejected the API key (401): Missing or invalid customerscore-key header." in err
    assert "error: Customerscore rejected the tracker key (401): Unknown trackerKey." in err
    assert "both keys accepted" in err and "✓ Customerscore at" in err

    assert env_store().find("customerscore").value == info["customerscore_api_key"]  # the accepted one
    received_nothing(sandbox)


def test_wizard_says_not_checked_when_customerscore_is_unreachable(home, capsys):
    from cs_posthog.wizard.step_customerscore import ask_customerscore

    url = f"http://127.0.0.1:{closed_port()}"
    key = "csk_" + "k" * 24
    with piped_keys() as keys:
        keys.send_text(key + ENTER + "CS-AB12C" + ENTER + "n")
        keys.close()  # all typed: a prompt left waiting ends (EOFError) instead of hanging
        settings = ask_customerscore(make_ctx(url))
    assert settings.tracker_key == "CS-AB12C" and settings.api_url == url
    err = capsys.readouterr().err
    assert "keys not checked" in err and "Customerscore did not answer after 3 attempts" in err
    assert "✓ Customerscore at" not in err


def test_wizard_rechecks_at_a_new_url(home, sandbox, capsys):
    """The keys are checked at the URL known when typed; a URL changed under advanced options checks
    them again there (here: a wrong key for the sandbox, found only at the sandbox)."""
    from cs_posthog.wizard.step_customerscore import ask_customerscore

    info = sandbox.info
    dead = f"http://127.0.0.1:{closed_port()}"
    with piped_keys() as keys:
        keys.send_text("csk_" + "w" * 24 + ENTER + info["tracker_key"] + ENTER
                       + "y" + CTRL_U + info["customerscore"] + ENTER
                       + info["customerscore_api_key"] + ENTER)  # asked again after the 401 there
        keys.close()  # all typed: a prompt left waiting ends (EOFError) instead of hanging
        settings = ask_customerscore(make_ctx(dead))
    assert settings.api_url == info["customerscore"]
    err = capsys.readouterr().err
    assert "rejected the API key (401)" in err and "both keys accepted" in err
