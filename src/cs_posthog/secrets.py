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
from pathlib import Path
from typing import Any, Literal

import tomli_w

from cs_posthog.errors import ConfigError, FileError, MissingSecretError
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


SPECS: dict[Name, SecretSpec] = {
    "posthog": SecretSpec(
        "posthog", "POSTHOG_PERSONAL_API_KEY", "PostHog personal API key", "posthog-personal-api-key"),
    "customerscore": SecretSpec(
        "customerscore", "CUSTOMERSCORE_API_KEY", "Customerscore API key", "customerscore-api-key"),
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
            # local: keyring costs ~80 ms to import (more than httpx) and reaches into the platform's
            # backends: loaded only here, inside the bounded thread, never when the file store is forced
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
    """For tests: forget that the keyring failed earlier in this process (and what it held)."""
    global _keyring_broken
    _keyring_broken = False
    _store_cache.clear()


# --- the file --------------------------------------------------------------------------------
_warned_modes: set[str] = set()  # files already warned about in this process (one line each)


def _keep_private(path: Path) -> None:
    """A secrets file other users can read (or write) is a leak waiting to happen: made 0600 when it
    is ours, and said once on stderr (a warning, through logging: the core prints nothing)."""
    try:
        st = path.stat()
    except OSError:
        return
    mode = st.st_mode & 0o777
    if not mode & 0o077:
        return
    log = logging.getLogger(__name__)
    if st.st_uid == os.geteuid():
        try:
            os.chmod(path, 0o600)
            log.warning("%s was readable by other users (mode %o): made it 0600; if others used this "
                        "machine, consider the keys in it exposed", path, mode)
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
    else:
        reason = f"owned by uid {st.st_uid}, not by this user"
    if str(path) not in _warned_modes:
        _warned_modes.add(str(path))
        log.warning("%s is readable by other users (mode %o) and could not be made 0600 (%s): "
                    "chmod 600 it", path, mode, reason)


def _read_file() -> dict[str, str]:
    path = get_paths().secrets_file
    if not path.exists():
        return {}
    _keep_private(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path}: unreadable secrets file ({type(exc).__name__})",
            hint="Delete it and run `cs-posthog edit credentials` to store the keys again.",
        ) from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _write_file(data: dict[str, str]) -> None:
    path = get_paths().secrets_file
    if data:
        atomic_write_text(path, tomli_w.dumps(data))  # a new 0600 file replaces it (or its link's target)
    elif path.exists():
        try:
            path.unlink()
        except OSError as exc:
            raise FileError.from_os_error(exc, path, doing="remove") from None


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


def keyring_value(name: Name) -> str | None:
    """The key the OS keyring holds for ``name`` (bounded by the keyring timeout), or None."""
    ok, value = _keyring_call("get_password", KEYRING_SERVICE, SPECS[name].keyring_user)
    return value if ok and value else None


def stored_value(name: Name) -> str | None:
    """The key kept in the OS keyring or the key file (not the environment), or None."""
    return keyring_value(name) or _read_file().get(name)


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
        if ok and value and _keyring_call("delete_password", KEYRING_SERVICE, spec.keyring_user)[0]:
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


# --- redaction ------------------------------------------------------------------------------
class _Known(set[str]):
    """The keys to mask (a set; ``clear()`` also forgets what was read from the stores)."""

    def clear(self) -> None:
        super().clear()
        _store_cache.clear()


_known: set[str] = _Known()
# what register_stored_secrets() last read: ("file", stamp) -> values, ("keyring", user) -> value
_store_cache: dict[tuple[str, object], tuple[str, ...]] = {}
_PHX = re.compile(r"phx_[A-Za-z0-9_-]{8,}")
_patterns: dict[str, re.Pattern[str]] = {}


def register_secret(value: str) -> None:
    if value and len(value) >= 6:
        _known.add(value)


def register_stored_secrets() -> None:
    """Register every key this installation could use (environment, keyring, file) for redaction,
    usable or not, before anything is printed or stored: a key pasted into the wrong place (a
    config field, a server's error quoting the request headers) is masked even when no command has
    read the keys yet. Cheap to call again: the keyring is asked once per process, the file is read
    again only when it changed."""
    for spec in SPECS.values():
        register_secret(os.environ.get(spec.env, "").strip())
        cached = _store_cache.get(("keyring", spec.keyring_user))
        if cached is None:
            ok, value = _keyring_call("get_password", KEYRING_SERVICE, spec.keyring_user)
            cached = (value,) if ok and value else ()
            _store_cache[("keyring", spec.keyring_user)] = cached
        for value in cached:
            register_secret(value)
    path = get_paths().secrets_file
    try:
        st = path.stat()
        stamp: object = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return
    values = _store_cache.get(("file", stamp))
    if values is None:
        try:
            stored = _read_file()
        except Exception:  # an unreadable file is reported where it is used
            stored = {}
        values = tuple(v.strip() for v in stored.values())
        _store_cache[("file", stamp)] = values
    for value in values:
        register_secret(value)


def _masked(value: str) -> str:
    """``mask`` with only plain characters: it may land inside a JSON string or a quoted value."""
    return re.sub(r"[^A-Za-z0-9_*-]", "*", mask(value))


def _pattern(value: str) -> re.Pattern[str]:
    """``value`` as it appears raw or escaped: each character itself (after any backslashes: JSON
    ``\\"``, ``\\/``, ``\\\\``, a Python repr), as ``\\u00XX`` (JSON with ensure_ascii, escaped once
    or more) or as ``%XX`` (a URL). So a key quoted inside a JSON string inside an error message,
    split by its escapes, is still found."""
    pat = _patterns.get(value)
    if pat is None:
        parts = []
        for c in value:
            def hexes(n: int, width: int) -> str:
                return "".join(f"[{h}{h.upper()}]" if h.isalpha() else h for h in f"{n:0{width}x}")

            alts = [f"\\\\*{re.escape(c)}", f"\\\\+u{hexes(ord(c), 4)}"]
            if ord(c) < 0x80:
                alts.append(f"%{hexes(ord(c), 2)}")
            parts.append("(?:" + "|".join(alts) + ")")
        pat = _patterns[value] = re.compile("".join(parts))
    return pat


def redact(text: str) -> str:
    """``text`` with every known key (raw or escaped) and anything shaped like a personal API key
    masked (``phx_****abcd``). The one redaction every output channel and stored report uses."""
    if not text:
        return text
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, _masked(value))
        if "\\" in text or "%" in text:
            text = _pattern(value).sub(_masked(value), text)
    return _PHX.sub(lambda m: _masked(m.group(0)), text)


def redact_data(obj: Any) -> Any:
    """``redact`` over a JSON-like value (dict keys and values, lists, strings); other values as
    they are."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_data(k): redact_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_data(v) for v in obj]
    return obj


def key_in_value(value: str) -> str | None:
    """Why ``value`` (a config field) cannot be saved because it is, or holds, an API key: one of the
    stored keys (environment, keyring, file), or anything shaped like a PostHog personal API key.
    The reason shows the key masked. None when it holds none."""
    if not isinstance(value, str) or len(value) < 6:
        return None
    try:
        register_stored_secrets()
    except Exception:
        pass
    for key in sorted(_known, key=len, reverse=True):
        if value == key or (len(key) >= 12 and key in value):
            return f"holds an API key ({_masked(key)}); keys are kept in the secret store, never in the config"
    m = _PHX.search(value)
    if m:
        return (f"looks like a PostHog personal API key ({_masked(m.group(0))}); keys are kept in the "
                "secret store, never in the config")
    return None


class RedactingFilter(logging.Filter):
    """Masks both keys (and anything shaped like a personal API key) in every record."""

    _registered = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._registered:  # the stored keys are known before the first record goes out
            self._registered = True
            try:
                register_stored_secrets()
            except Exception:
                pass
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def no_key(v: str) -> str:
    """Refuse a config value that is, or holds, an API key (one of the stored keys, or anything
    shaped like a PostHog personal key): it would be printed by warnings and `status`, and sent to
    PostHog inside queries. The reason shows the key masked. Every text field goes through it."""
    if isinstance(v, str) and (why := key_in_value(v)) is not None:
        raise ValueError(why)
    return v
