"""Where the two API keys live, how they are shown, and how they are kept out of logs.

Lookup order: environment (``POSTHOG_PERSONAL_API_KEY``, ``CUSTOMERSCORE_API_KEY``) > OS keyring
(each call bounded by a timeout; a missing or broken keyring, as on headless Linux or under cron,
falls back without noise) > a 0600 file (``secrets.toml``) in the 0700 config dir.

Storing: the keyring when it works (``CS_POSTHOG_SECRET_STORE=auto``, the default), else the file;
``CS_POSTHOG_SECRET_STORE=file`` forces the file (servers where cron cannot reach the keyring),
``=keyring`` insists on the keyring. Keys are never accepted as flag values.

A ``SecretStore`` is one installation's keys: its file, its mode, the keys the environment gave
(read once by ``Settings.from_environ``), and what it learnt while running (a keyring that failed,
what it last read, the files it warned about). The App owns one (``app.py``); the demo's App has
its own, for its temporary home.

Redaction is process-wide on purpose: ``redact`` masks every key any store of this process has
seen, on every output channel (the Output's consoles, logging, the run reports stored in the state),
whichever App the text came from. A key is never "unknown" to a stream because another App read it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from cs_posthog.errors import ConfigError, FileError, MissingSecretError
from cs_posthog.fsutil import atomic_write_text
from cs_posthog.settings import CUSTOMERSCORE_KEY_ENV, POSTHOG_KEY_ENV, STORE_ENV

Name = Literal["posthog", "customerscore"]
Source = Literal["env", "keyring", "file"]

KEYRING_SERVICE = "cs-posthog"
KEYRING_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class SecretSpec:
    name: str
    env: str
    label: str
    keyring_user: str


SPECS: dict[Name, SecretSpec] = {
    "posthog": SecretSpec(
        "posthog", POSTHOG_KEY_ENV, "PostHog personal API key", "posthog-personal-api-key"),
    "customerscore": SecretSpec(
        "customerscore", CUSTOMERSCORE_KEY_ENV, "Customerscore API key", "customerscore-api-key"),
}


@dataclass(frozen=True)
class Found:
    value: str
    source: Source
    file: str = field(default="", compare=False)  # the store's key file: ``where`` names it for a key found there

    @property
    def where(self) -> str:
        return {"env": "environment", "keyring": "OS keyring", "file": self.file}[self.source]


class SecretStore:
    """The keys of one installation: ``file`` (its ``secrets.toml``), ``mode`` (auto, file or
    keyring: ``CS_POSTHOG_SECRET_STORE``) and ``env``, the keys the environment holds by name ("" or
    absent: none). Not thread-safe for writes; reads may come from any thread."""

    def __init__(self, file: Path, *, mode: str = "auto", env: Mapping[Name, str] | None = None) -> None:
        self.file = file
        self.mode = mode
        self.env: dict[Name, str] = {n: (v or "").strip() for n, v in (env or {}).items()}
        self._keyring_broken = False  # a keyring call failed or timed out: not asked again
        # what register_known() last read: ("file", stamp) -> values, ("keyring", user) -> value
        self._cache: dict[tuple[str, object], tuple[str, ...]] = {}
        self._warned: set[str] = set()  # files already warned about (one line each)

    # --- keyring, bounded and quiet ----------------------------------------------------------
    def _keyring_call(self, fn_name: str, *args: str) -> tuple[bool, str | None]:
        """Run a keyring function in a thread with a timeout. Returns (worked, result)."""
        if self._keyring_broken or self.mode == "file":
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
            self._keyring_broken = True
            logging.getLogger(__name__).debug("keyring unavailable: %s", box.get("err", "timed out"))
            return False, None
        res = box.get("res")
        return True, res if isinstance(res, str) else None

    # --- the file ----------------------------------------------------------------------------
    def _keep_private(self, path: Path) -> None:
        """A secrets file other users can read (or write) is a leak waiting to happen: made 0600 when
        it is ours, and said once on stderr (a warning, through logging: the core prints nothing)."""
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
        if str(path) not in self._warned:
            self._warned.add(str(path))
            log.warning("%s is readable by other users (mode %o) and could not be made 0600 (%s): "
                        "chmod 600 it", path, mode, reason)

    def read_file(self) -> dict[str, str]:
        """The keys in the file, by name ({} when there is none); ConfigError when unreadable."""
        path = self.file
        if not path.exists():
            return {}
        self._keep_private(path)
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"{path}: unreadable secrets file ({type(exc).__name__})",
                hint="Delete it and run `cs-posthog edit credentials` to store the keys again.",
            ) from None
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def write_file(self, data: dict[str, str]) -> None:
        """Replace the file with ``data`` (a new 0600 file, or none when ``data`` is empty)."""
        path = self.file
        if data:
            atomic_write_text(path, tomli_w.dumps(data))  # a new 0600 file replaces it (or its link's target)
        elif path.exists():
            try:
                path.unlink()
            except OSError as exc:
                raise FileError.from_os_error(exc, path, doing="remove") from None

    # --- lookups -----------------------------------------------------------------------------
    def env_value(self, name: Name) -> str:
        """The key the environment gives for ``name`` ("" when none)."""
        return self.env.get(name, "")

    def find(self, name: Name) -> Found | None:
        """The key and where it was found, or None. A key that cannot be sent (a stray accent, a
        zero-width space pasted with it) is a MissingSecretError naming the store (exit 78)."""
        spec = SPECS[name]
        env = self.env_value(name)
        if env:
            return self._usable(Found(env, "env"), spec)
        ok, value = self._keyring_call("get_password", KEYRING_SERVICE, spec.keyring_user)
        if ok and value:
            return self._usable(Found(value, "keyring"), spec)
        value = self.read_file().get(name)
        if value:
            return self._usable(Found(value, "file", str(self.file)), spec)
        return None

    def keyring_value(self, name: Name) -> str | None:
        """The key the OS keyring holds for ``name`` (bounded by the keyring timeout), or None."""
        ok, value = self._keyring_call("get_password", KEYRING_SERVICE, SPECS[name].keyring_user)
        return value if ok and value else None

    def stored_value(self, name: Name) -> str | None:
        """The key kept in the OS keyring or the key file (not the environment), or None."""
        return self.keyring_value(name) or self.read_file().get(name)

    def _usable(self, found: Found, spec: SecretSpec) -> Found:
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

    def get(self, name: Name) -> str:
        found = self.find(name)
        if found is None:
            spec = SPECS[name]
            raise MissingSecretError(
                f"no {spec.label} found (environment, keyring or {self.file})",
                hint=f"Set {spec.env}, or run `cs-posthog edit credentials` to store it.",
            )
        return found.value

    # --- changes -----------------------------------------------------------------------------
    def store(self, name: Name, value: str) -> Literal["keyring", "file"]:
        """Store a key; returns where. The other store is cleared so only one copy exists."""
        spec = SPECS[name]
        register_secret(value)
        if self.mode != "file":
            ok, _ = self._keyring_call("set_password", KEYRING_SERVICE, spec.keyring_user, value)
            if ok:
                data = self.read_file()
                if data.pop(name, None) is not None:
                    self.write_file(data)
                return "keyring"
            if self.mode == "keyring":
                raise ConfigError(
                    "the OS keyring is not available",
                    hint=f"Unset {STORE_ENV} (or set it to 'file') to keep keys in a 0600 file.",
                )
        data = self.read_file()
        data[name] = value
        self.write_file(data)
        return "file"

    def delete_all(self) -> list[str]:
        """Remove both keys from the keyring and the file. Returns where something was removed."""
        removed: list[str] = []
        for spec in SPECS.values():
            ok, value = self._keyring_call("get_password", KEYRING_SERVICE, spec.keyring_user)
            if ok and value and self._keyring_call("delete_password", KEYRING_SERVICE, spec.keyring_user)[0]:
                removed.append(f"keyring:{spec.name}")
        path = self.file
        if path.exists():
            path.unlink()
            removed.append(str(path))
        return removed

    # --- redaction ---------------------------------------------------------------------------
    def register_known(self) -> None:
        """Register every key this installation could use (environment, keyring, file) for
        redaction, usable or not, before anything is printed or stored: a key pasted into the wrong
        place (a config field, a server's error quoting the request headers) is masked even when no
        command has read the keys yet. Cheap to call again: the keyring is asked once per store, the
        file is read again only when it changed."""
        for name, spec in SPECS.items():
            register_secret(self.env_value(name))
            cached = self._cache.get(("keyring", spec.keyring_user))
            if cached is None:
                ok, value = self._keyring_call("get_password", KEYRING_SERVICE, spec.keyring_user)
                cached = (value,) if ok and value else ()
                self._cache[("keyring", spec.keyring_user)] = cached
            for value in cached:
                register_secret(value)
        path = self.file
        try:
            st = path.stat()
            stamp: object = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            return
        values = self._cache.get(("file", stamp))
        if values is None:
            try:
                stored = self.read_file()
            except Exception:  # an unreadable file is reported where it is used
                stored = {}
            values = tuple(v.strip() for v in stored.values())
            self._cache[("file", stamp)] = values
        for value in values:
            register_secret(value)


def key_problem(value: str) -> str | None:
    """Why ``value`` cannot be an API key, or None. Keys travel in an HTTP header, which carries
    printable ASCII only; the message never quotes the key."""
    for i, c in enumerate(value, start=1):
        if not "!" <= c <= "~":
            what = "a space" if c.isspace() else "not plain ASCII" if ord(c) > 127 else "a control character"
            return f"character {i} is {what}"
    return None


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


# --- redaction (process-wide: see the module's docstring) ---------------------------------------
_known: set[str] = set()  # every key this process has seen, from any store
_PHX = re.compile(r"phx_[A-Za-z0-9_-]{8,}")
_patterns: dict[str, re.Pattern[str]] = {}  # compiled per key: a cache


def register_secret(value: str) -> None:
    """Mask ``value`` on every output channel of this process from now on."""
    if value and len(value) >= 6:
        _known.add(value)


def forget_secrets() -> None:
    """Stop masking the keys registered so far (only ``phx_``-shaped text stays masked). For a
    process that runs installations one after another, as the test suite does."""
    _known.clear()


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
    keys registered (an App registers its store's keys, environment, keyring and file, when it is
    made), or anything shaped like a PostHog personal API key. The reason shows the key masked. None
    when it holds none."""
    if not isinstance(value, str) or len(value) < 6:
        return None
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


def no_key(v: str) -> str:
    """Refuse a config value that is, or holds, an API key (one of the stored keys, or anything
    shaped like a PostHog personal key): it would be printed by warnings and `status`, and sent to
    PostHog inside queries. The reason shows the key masked. Every text field goes through it."""
    if isinstance(v, str) and (why := key_in_value(v)) is not None:
        raise ValueError(why)
    return v
