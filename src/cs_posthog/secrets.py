"""Where the two API keys live, how they are shown, and how they are kept out of logs.

Lookup order: environment (``POSTHOG_PERSONAL_API_KEY``, ``CUSTOMERSCORE_API_KEY``) > OS keyring
(each call bounded by a timeout; a missing or broken keyring, as on headless Linux or under cron,
falls back without noise) > a 0600 file (``secrets.toml``) in the 0700 config dir.

Storing: the keyring when it works (``CS_POSTHOG_SECRET_STORE=auto``, the default), else the file;
``CS_POSTHOG_SECRET_STORE=file`` forces the file (servers where cron cannot reach the keyring),
``=keyring`` insists on the keyring. Keys are never accepted as flag values.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import tomllib
from dataclasses import dataclass
from typing import Literal

from cs_posthog.errors import ConfigError, MissingSecretError
from cs_posthog.fsutil import atomic_write_text
from cs_posthog.paths import get_paths

Name = Literal["posthog", "customerscore"]

KEYRING_SERVICE = "cs-posthog"
KEYRING_TIMEOUT_S = 3.0
STORE_ENV = "CS_POSTHOG_SECRET_STORE"


@dataclass(frozen=True)
class SecretSpec:
    name: str
    env: str
    label: str
    keyring_user: str


SPECS: dict[str, SecretSpec] = {
    "posthog": SecretSpec("posthog", "POSTHOG_PERSONAL_API_KEY", "PostHog personal API key", "posthog-personal-api-key"),
    "customerscore": SecretSpec("customerscore", "CUSTOMERSCORE_API_KEY", "Customerscore API key", "customerscore-api-key"),
}


@dataclass(frozen=True)
class Found:
    value: str
    source: Literal["env", "keyring", "file"]

    @property
    def where(self) -> str:
        return {"env": "environment", "keyring": "OS keyring", "file": str(get_paths().secrets_file)}[self.source]


# --- keyring, bounded and quiet --------------------------------------------------------------
_keyring_broken = False


def _keyring_call(fn_name: str, *args: str) -> tuple[bool, str | None]:
    """Run a keyring function in a thread with a timeout. Returns (worked, result)."""
    global _keyring_broken
    if _keyring_broken or os.environ.get(STORE_ENV, "auto") == "file":
        return False, None
    box: dict[str, object] = {}

    def run() -> None:
        try:
            import keyring
            from keyring.backends import fail

            backend = keyring.get_keyring()
            if isinstance(backend, fail.Keyring) or type(backend).__name__ in ("NullKeyring",):
                box["err"] = "no keyring"
                return
            box["res"] = getattr(keyring, fn_name)(*args)
        except Exception as exc:  # NoKeyringError, dbus errors, locked keychains ...
            box["err"] = exc

    t = threading.Thread(target=run, daemon=True, name="keyring")
    t.start()
    t.join(KEYRING_TIMEOUT_S)
    if t.is_alive() or "err" in box:
        _keyring_broken = True
        logging.getLogger(__name__).debug("keyring unavailable: %s", box.get("err", "timed out"))
        return False, None
    res = box.get("res")
    return True, res if isinstance(res, str) else None


def _reset_keyring_state() -> None:
    """For tests: forget that the keyring failed earlier in this process."""
    global _keyring_broken
    _keyring_broken = False


# --- the file --------------------------------------------------------------------------------
def _read_file() -> dict[str, str]:
    path = get_paths().secrets_file
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path}: unreadable secrets file ({type(exc).__name__})",
            hint="Delete it and run `cs-posthog edit credentials` to store the keys again.",
        ) from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _write_file(data: dict[str, str]) -> None:
    import tomli_w

    path = get_paths().secrets_file
    if data:
        atomic_write_text(path, tomli_w.dumps(data))
    elif path.exists():
        path.unlink()


# --- public API ------------------------------------------------------------------------------
def key_problem(value: str) -> str | None:
    """Why ``value`` cannot be an API key, or None. Keys travel in an HTTP header, which carries
    printable ASCII only; the message never quotes the key."""
    for i, c in enumerate(value, start=1):
        if not "!" <= c <= "~":
            what = "a space" if c.isspace() else "not plain ASCII" if ord(c) > 127 else "a control character"
            return f"character {i} is {what}"
    return None


def find_secret(name: Name) -> Found | None:
    """The key and where it was found, or None. A key that cannot be sent (a stray accent, a
    zero-width space pasted with it) is a MissingSecretError naming the store (exit 78)."""
    spec = SPECS[name]
    env = os.environ.get(spec.env, "").strip()
    if env:
        return _usable(Found(env, "env"), spec)
    ok, value = _keyring_call("get_password", KEYRING_SERVICE, spec.keyring_user)
    if ok and value:
        return _usable(Found(value, "keyring"), spec)
    value = _read_file().get(name)
    if value:
        return _usable(Found(value, "file"), spec)
    return None


def _usable(found: Found, spec: SecretSpec) -> Found:
    register_secret(found.value)
    problem = key_problem(found.value)
    if problem is None:
        return found
    where = f"${spec.env}" if found.source == "env" else found.where
    hint = (
        f"Set {spec.env} to the key exactly as shown where it was created."
        if found.source == "env"
        else "Store it again with `cs-posthog edit credentials`."
    )
    raise MissingSecretError(f"the {spec.label} in {where} cannot be used: {problem}", hint=hint)


def get_secret(name: Name) -> str:
    found = find_secret(name)
    if found is None:
        spec = SPECS[name]
        raise MissingSecretError(
            f"no {spec.label} found (environment, keyring or {get_paths().secrets_file})",
            hint=f"Set {spec.env}, or run `cs-posthog edit credentials` to store it.",
        )
    return found.value


def store_secret(name: Name, value: str) -> Literal["keyring", "file"]:
    """Store a key; returns where. The other store is cleared so only one copy exists."""
    spec = SPECS[name]
    register_secret(value)
    mode = os.environ.get(STORE_ENV, "auto")
    if mode != "file":
        ok, _ = _keyring_call("set_password", KEYRING_SERVICE, spec.keyring_user, value)
        if ok:
            data = _read_file()
            if data.pop(name, None) is not None:
                _write_file(data)
            return "keyring"
        if mode == "keyring":
            raise ConfigError(
                "the OS keyring is not available",
                hint=f"Unset {STORE_ENV} (or set it to 'file') to keep keys in a 0600 file.",
            )
    data = _read_file()
    data[name] = value
    _write_file(data)
    return "file"


def delete_secrets() -> list[str]:
    """Remove both keys from the keyring and the file. Returns where something was removed."""
    removed: list[str] = []
    for spec in SPECS.values():
        ok, value = _keyring_call("get_password", KEYRING_SERVICE, spec.keyring_user)
        if ok and value:
            if _keyring_call("delete_password", KEYRING_SERVICE, spec.keyring_user)[0]:
                removed.append(f"keyring:{spec.name}")
    path = get_paths().secrets_file
    if path.exists():
        path.unlink()
        removed.append(str(path))
    return removed


def mask(value: str | None) -> str:
    """``phx_****abcd``: the kind of key and its last four characters, nothing more."""
    if not value:
        return "(none)"
    prefix = ""
    m = re.match(r"^(phx_|phc_|CS-)", value)
    if m:
        prefix = m.group(1)
    if len(value) < 12:
        return prefix + "****"
    return f"{prefix}****{value[-4:]}"


# --- log redaction ---------------------------------------------------------------------------
_known: set[str] = set()
_PHX = re.compile(r"phx_[A-Za-z0-9_-]{8,}")


def register_secret(value: str) -> None:
    if value and len(value) >= 6:
        _known.add(value)


def register_stored_secrets() -> None:
    """Register every key this installation could use (environment, keyring, file) for redaction,
    usable or not. For error output: a key pasted into the wrong place (a config field an error
    quotes) is masked even when no command has read the keys yet."""
    for spec in SPECS.values():
        register_secret(os.environ.get(spec.env, "").strip())
        ok, value = _keyring_call("get_password", KEYRING_SERVICE, spec.keyring_user)
        if ok and value:
            register_secret(value)
    try:
        stored = _read_file()
    except ConfigError:
        stored = {}
    for value in stored.values():
        register_secret(value.strip())


def redact(text: str) -> str:
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, mask(value))
    return _PHX.sub(lambda m: mask(m.group(0)), text)


class RedactingFilter(logging.Filter):
    """Masks both keys (and anything shaped like a personal API key) in every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
