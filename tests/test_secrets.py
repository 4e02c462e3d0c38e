from __future__ import annotations

import logging
import os
import stat
import time

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import NoKeyringError

from cs_posthog import secrets
from cs_posthog.errors import ExitCode, MissingSecretError
from cs_posthog.output import setup_logging
from helpers import env_store, fake_key


class MemoryKeyring(KeyringBackend):
    priority = 1

    def __init__(self):
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        self.store.pop((service, username), None)


class BrokenKeyring(MemoryKeyring):
    def get_password(self, service, username):
        raise NoKeyringError("no backend")

    set_password = get_password


class HangingKeyring(MemoryKeyring):
    def get_password(self, service, username):
        time.sleep(30)


@pytest.fixture
def fake_keyring(monkeypatch):
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "auto")
    previous = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(previous)


def test_file_store_is_0600_and_found(home):
    key = fake_key()
    assert env_store().store("posthog", key) == "file"
    path = home / "secrets.toml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    found = env_store().find("posthog")
    assert found.value == key and found.source == "file"
    assert env_store().find("customerscore") is None


def test_env_beats_keyring_beats_file(home, fake_keyring, monkeypatch):
    file_key, ring_key, env_key = fake_key(), fake_key(), fake_key()
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "file")
    env_store().store("posthog", file_key)
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "auto")
    fake_keyring.set_password("cs-posthog", "posthog-personal-api-key", ring_key)
    assert env_store().find("posthog") == secrets.Found(ring_key, "keyring")
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", env_key)
    assert env_store().find("posthog") == secrets.Found(env_key, "env")
    monkeypatch.delenv("POSTHOG_PERSONAL_API_KEY")
    fake_keyring.store.clear()
    assert env_store().find("posthog") == secrets.Found(file_key, "file")


def test_store_prefers_working_keyring_and_keeps_one_copy(home, fake_keyring, monkeypatch):
    old = fake_key()
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "file")
    env_store().store("posthog", old)
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "auto")
    new = fake_key()
    assert env_store().store("posthog", new) == "keyring"
    assert fake_keyring.store[("cs-posthog", "posthog-personal-api-key")] == new
    assert not (home / "secrets.toml").exists()  # the file held only that key


def test_broken_keyring_falls_back_to_file_silently(home, monkeypatch, caplog):
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "auto")
    previous = keyring.get_keyring()
    keyring.set_keyring(BrokenKeyring())
    try:
        key = fake_key()
        with caplog.at_level(logging.WARNING):
            assert env_store().store("customerscore", key) == "file"
            assert env_store().find("customerscore") == secrets.Found(key, "file")
        assert caplog.records == []  # no noise at the default level
    finally:
        keyring.set_keyring(previous)


def test_hanging_keyring_times_out(home, monkeypatch):
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "auto")
    monkeypatch.setattr(secrets, "KEYRING_TIMEOUT_S", 0.3)
    previous = keyring.get_keyring()
    keyring.set_keyring(HangingKeyring())
    try:
        key = fake_key()
        env_store().write_file({"posthog": key})
        t0 = time.monotonic()
        assert env_store().find("posthog") == secrets.Found(key, "file")
        assert time.monotonic() - t0 < 2
    finally:
        keyring.set_keyring(previous)


def test_missing_secret_is_a_config_error_with_hint(home):
    with pytest.raises(MissingSecretError) as exc:
        env_store().get("posthog")
    assert exc.value.exit_code == ExitCode.CONFIG
    assert "POSTHOG_PERSONAL_API_KEY" in exc.value.hint


def test_delete_removes_keyring_and_file(home, fake_keyring, monkeypatch):
    fake_keyring.set_password("cs-posthog", "customerscore-api-key", "cs_secret_value_1")
    env_store().write_file({"posthog": fake_key()})
    removed = env_store().delete_all()
    assert "keyring:customerscore" in removed and str(home / "secrets.toml") in removed
    assert fake_keyring.store == {} and not (home / "secrets.toml").exists()


@pytest.mark.parametrize(
    "value,shown",
    [("phx_" + "a" * 36 + "wxyz", "phx_****wxyz"), ("CS-ABCDE", "CS-****"), ("cskey_0123456789abcd", "****abcd"), ("", "(none)")],
)
def test_mask(value, shown):
    assert secrets.mask(value) == shown


def test_logs_mask_both_keys_everywhere(home, monkeypatch, capsys):
    ph, cs = fake_key(), fake_key("cs_", 30)
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", ph)
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", cs)
    env_store().get("posthog"), env_store().get("customerscore")
    setup_logging(debug=True)
    log = logging.getLogger("cs_posthog.test")
    log.warning("header Authorization: Bearer %s and %s", ph, cs)
    log.debug("in a dict: %r", {"key": cs})
    try:
        raise RuntimeError(f"failed with {ph}")
    except RuntimeError:
        log.exception("boom")
    unknown = fake_key()  # never registered: still masked by its shape
    log.error("pasted %s", unknown)
    err = capsys.readouterr().err
    for secret in (ph, cs, unknown):
        assert secret not in err
    assert secrets.mask(ph) in err and secrets.mask(cs) in err
    assert "RuntimeError" in err


def test_each_store_keeps_its_own_state(home, tmp_path, monkeypatch):
    """What a store learns (its keyring hung, the file it warned about) is its own: another store in
    the same process (the demo's App beside the command's) asks the keyring again and warns again."""
    monkeypatch.setattr(secrets, "KEYRING_TIMEOUT_S", 0.3)
    previous = keyring.get_keyring()
    keyring.set_keyring(HangingKeyring())
    try:
        first = secrets.SecretStore(home / "secrets.toml", mode="auto")
        assert first.keyring_value("posthog") is None  # timed out: this store stops asking
        ring = MemoryKeyring()
        ring.set_password("cs-posthog", "posthog-personal-api-key", "phx_" + "k" * 40)
        keyring.set_keyring(ring)
        assert first.keyring_value("posthog") is None
        second = secrets.SecretStore(tmp_path / "other" / "secrets.toml", mode="auto")
        assert second.keyring_value("posthog") == "phx_" + "k" * 40
    finally:
        keyring.set_keyring(previous)


def test_a_store_reads_its_own_file_and_environment(home, tmp_path):
    """Two stores, two installations: keys given to one (its environment, its file) are not the other's."""
    mine = secrets.SecretStore(home / "secrets.toml", mode="file", env={"posthog": " phx_" + "e" * 40 + " "})
    other = secrets.SecretStore(tmp_path / "elsewhere" / "secrets.toml", mode="file")
    assert mine.find("posthog") == secrets.Found("phx_" + "e" * 40, "env")
    assert other.find("posthog") is None
    key = fake_key()
    assert other.store("customerscore", key) == "file"
    found = other.find("customerscore")
    assert found == secrets.Found(key, "file") and found.where == str(tmp_path / "elsewhere" / "secrets.toml")
    assert mine.find("customerscore") is None and not (home / "secrets.toml").exists()
