"""Reliability suite, bad input: hypothesis throws broken config files and CLI arguments at the CLI.

Config files (broken TOML, wrong types, huge and unicode values, empty, binary, random valid TOML,
mutations of a valid config) make `status`, `sync` and `edit --no-input` exit 78 with exactly one
`error: <the file>...` line and one `hint:` line, nothing on stdout. CLI arguments (dates,
intervals, every `connect --no-input` flag, edit sections, unknown flags) end with 2, 78, or 75/77
where the network or a key is legitimately involved, as one `error:` line plus a `hint:` line:
never exit 1, never a traceback. No real network: a socket guard refuses anything but loopback,
the region hosts point at a closed loopback port and retries do not sleep.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from helpers import fake_key, run_cli, sample_config_dict

# RELIABILITY_SCALE=20 for a deep run (examples x20); the default keeps the file fast
SCALE = max(1, int(os.environ.get("RELIABILITY_SCALE", "1")))
SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALLOWED_FAILURES = {2, 75, 77, 78}


# --- environment -----------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_loopback(host: object) -> bool:
    return str(host).strip("[]") in ("127.0.0.1", "::1", "localhost") or str(host).startswith("127.")


class NetGuard:
    """Refuses every non-loopback name lookup and connection (records them); loopback passes."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def install(self, monkeypatch) -> None:
        real_getaddrinfo = socket.getaddrinfo
        real_connect = socket.socket.connect

        def getaddrinfo(host, *args, **kwargs):
            if host is not None and not _is_loopback(host if isinstance(host, str) else host.decode()):
                self.refused.append(f"lookup {host!r}")
                raise socket.gaierror(socket.EAI_NONAME, "network disabled in the reliability suite")
            return real_getaddrinfo(host, *args, **kwargs)

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
                self.refused.append(f"connect {address!r}")
                raise ConnectionRefusedError("network disabled in the reliability suite")
            return real_connect(sock, address)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No real network, no real crontab, no waiting between retries."""
    from cs_posthog.http import RetryPolicy

    guard = NetGuard()
    guard.install(monkeypatch)
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("CS_POSTHOG_US_HOST", dead)
    monkeypatch.setenv("CS_POSTHOG_EU_HOST", dead)
    monkeypatch.setenv("CS_POSTHOG_CRONTAB", str(tmp_path / "no-crontab-here"))
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.0)
    guard.dead = dead  # type: ignore[attr-defined]
    return guard


def reset_home(home: Path) -> None:
    """An empty home, and the secrets a new process knows (none yet): each example is one command
    of its own, as from a shell. (Without this, every key an earlier example put in the environment
    stays known, and redacting output gets slower with each example.)"""
    from cs_posthog import secrets

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(mode=0o700, parents=True)
    secrets.forget_secrets()


def assert_clean_failure(r, *, codes=ALLOWED_FAILURES, naming: str | None = None) -> list[str]:
    """Exit code among ``codes``; stderr ends with exactly one `error:` line then one `hint:` line
    (what the command said before, warnings or progress, may come first); no traceback, no
    "unexpected error"."""
    err = r.stderr
    assert r.exit_code in codes, (r.exit_code, err)
    assert "Traceback" not in err and "unexpected error" not in err, err
    lines = err.splitlines()
    assert len(lines) >= 2, err
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), err
    assert sum(ln.startswith(("error: ", "hint: ")) for ln in lines) == 2, err
    if naming is not None:
        assert naming in lines[-2], err
    return lines


# =============================================================================================
# Config files
# =============================================================================================
VALID = sample_config_dict()
VALID_TEXT = tomli_w.dumps(VALID)

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(),  # bigger than TOML's 64 bits too
    st.floats(),  # nan and inf included
    st.booleans(),
    st.text(max_size=30),
    st.text(max_size=3).map(lambda s: s * 20_000),  # huge
    st.datetimes(),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)


def leaf_paths(d: dict, prefix=()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out.extend(leaf_paths(v, (*prefix, k)))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                out.append((*prefix, k, i))
                if isinstance(item, dict):
                    out.extend(leaf_paths(item, (*prefix, k, i)))
    return out


PATHS = leaf_paths(VALID)


def _dumps(data: dict) -> str | None:
    try:
        return tomli_w.dumps(data)
    except (TypeError, ValueError):
        return None


@st.composite
def mutated_config(draw) -> str:
    import copy

    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            action = draw(st.sampled_from(["delete", "replace", "sibling"]))
            if action == "delete":
                del parent[last]
            elif action == "replace":
                parent[last] = draw(toml_values)
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=12))] = draw(toml_values)
        except (KeyError, IndexError, TypeError):
            continue
    text = _dumps(data)
    assume(text is not None)
    return text


@st.composite
def byte_mutated_config(draw) -> bytes:
    raw = bytearray(VALID_TEXT.encode())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(raw) - 1))
        kind = draw(st.sampled_from(["flip", "delete", "insert"]))
        if kind == "delete":
            del raw[pos]
        elif kind == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        else:
            raw[pos] = draw(st.integers(0, 255))
    return bytes(raw)


@st.composite
def random_valid_toml(draw) -> str:
    text = _dumps(draw(st.dictionaries(st.text(max_size=12), toml_values, max_size=6)))
    assume(text is not None)
    return text


config_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    mutated_config().map(str.encode),
    byte_mutated_config(),
    random_valid_toml().map(str.encode),
    # valid TOML cut anywhere
    st.integers(0, len(VALID_TEXT)).map(lambda n: VALID_TEXT[:n].encode()),
)


def config_is_valid(raw: bytes) -> bool:
    from cs_posthog.config import Config

    try:
        Config.model_validate(tomllib.loads(raw.decode("utf-8")))
    except Exception:
        return False
    return True


COMMANDS = (["status"], ["status", "--json"], ["sync"], ["sync", "--json"], ["edit", "--no-input"],
            ["edit", "events", "--no-input", "--event", "signup"])


@pytest.mark.slow
@settings(max_examples=150 * SCALE, **SETTINGS)
@given(raw=config_bytes)
@example(raw=b"")
@example(raw=b"\x00\xff\xfe binary")
@example(raw=b'"a\\nb" = 1\n')  # a key with a newline: the error must stay on one line
@example(raw=VALID_TEXT.replace("version = 1", "version = 99").encode())
@example(raw=VALID_TEXT.replace("project_id = 12345", "project_id = 123456789012345678901234567890").encode())
@example(raw=("\ufeff" + VALID_TEXT).encode())  # a byte order mark, as some editors save
def test_bad_config_files_are_one_line_errors(raw, home, offline):
    reset_home(home)
    path = home / "config.toml"
    path.write_bytes(raw)
    valid = config_is_valid(raw)
    for args in COMMANDS:
        r = run_cli(*args)
        if not valid:
            lines = assert_clean_failure(r, codes={78}, naming=str(path))
            assert len(lines) == 2 and r.stdout == "", (args, r.stderr)
        elif r.exit_code != 0:
            assert_clean_failure(r)
        else:
            assert args[0] == "status", (args, r.stderr)  # no keys: nothing else can succeed
            assert r.stdout
        assert not offline.refused, offline.refused


def test_the_config_strategies_reach_both_sides():
    """The generators produce invalid files and some valid ones (so the test above checks both)."""
    from hypothesis import find

    find(mutated_config().map(str.encode), config_is_valid, settings=settings(max_examples=500, deadline=None))
    find(config_bytes, lambda b: not config_is_valid(b), settings=settings(max_examples=50, deadline=None))


# =============================================================================================
# The other files a command reads: the state database and the key file
# =============================================================================================
def _valid_state_db() -> bytes:
    import tempfile

    from cs_posthog.sync.state import SyncState

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "state.sqlite3"
        SyncState(path).close()
        import sqlite3

        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        conn.close()
        return path.read_bytes()


VALID_DB = _valid_state_db()


@st.composite
def damaged_db(draw) -> bytes:
    """Truncated, overwritten, a bare header, or bytes of the 100-byte header changed. Not
    generated: random bytes changed inside the stored schema text, which can rename a column
    (about 0.3% of such flips end in "no such column", exit 1: a known gap, as rare on a real
    disk as it is costly to rule out on every open)."""
    raw = bytearray(VALID_DB)
    kind = draw(st.sampled_from(["cut", "flip", "garbage", "header"]))
    if kind == "cut":
        return bytes(raw[: draw(st.integers(0, len(raw) - 1))])
    if kind == "garbage":
        return draw(st.binary(max_size=2000))
    if kind == "header":
        return b"SQLite format 3\x00" + draw(st.binary(max_size=200))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, 99))
        raw[pos] = draw(st.integers(0, 255))
    return bytes(raw)


@pytest.mark.slow
@settings(max_examples=60 * SCALE, **SETTINGS)
@given(db=damaged_db(), secrets_file=st.one_of(st.none(), st.binary(max_size=80), random_valid_toml().map(str.encode)),
       ph_in_env=st.booleans())
@example(db=b"", secrets_file=None, ph_in_env=True)
@example(db=b"not a database at all" * 100, secrets_file=b"posthog = [", ph_in_env=True)
def test_damaged_state_and_key_files_are_one_line_errors(db, secrets_file, ph_in_env, home, offline, monkeypatch):
    reset_home(home)
    (home / "config.toml").write_text(tomli_w.dumps(dead_config(offline.dead)))
    (home / "state.sqlite3").write_bytes(db)
    if secrets_file is not None:
        (home / "secrets.toml").write_bytes(secrets_file)
    monkeypatch.setenv("CUSTOMERSCORE_API_KEY", fake_key("", 32))
    if ph_in_env:  # then the sync opens the state and goes on to PostHog (down: 75)
        monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", fake_key())
    else:  # from the damaged key file, or missing
        monkeypatch.delenv("POSTHOG_PERSONAL_API_KEY", raising=False)
    for args in (["status"], ["status", "--json"], ["sync"], ["sync", "--dry-run"]):
        r = run_cli(*args)
        event(f"{args[0]} exit {r.exit_code}")
        if r.exit_code != 0:
            assert_clean_failure(r)
        else:
            assert args[0] == "status"
    r = run_cli("disconnect", "--yes")  # always possible: the way out
    assert r.exit_code == 0, r.stderr
    assert not (home / "state.sqlite3").exists() and not (home / "secrets.toml").exists()


# =============================================================================================
# CLI arguments
# =============================================================================================
# argv cannot hold NUL; everything else may come from a shell
args_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
huge_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                    max_size=3).map(lambda s: s * 5000)
nasty = st.one_of(
    args_text,
    huge_text,
    st.sampled_from(["", " ", "\n", "\t", "-", "--", "=", "'", '"', "`", "{x}", "\\", "ünï 名 🎉", "\u202e",
                     "-1", "0", "9" * 40, "1e9", "nan", "--help"]),
)
dates = st.one_of(
    nasty,
    st.dates().map(str),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2024-02-30", "2024-13-01", "0001-01-01", "9999-12-31", "2999-01-01\n", " 2024-01-01 ",
                     "2024-01-01T00:00:00+25:00", "2024-01-01T99:00", "today", "yesterday"]),
)
intervals = st.one_of(nasty, st.sampled_from(["15m", "1h", "1d", "hourly", " 1H ", "2h\n", "0m", "-1h"]))


def urlish(dead: str) -> st.SearchStrategy[str]:
    return st.one_of(
        nasty,
        st.sampled_from([dead, dead + "/", dead + "/api/v1", "http://example.com", "https://example.com",
                         "https://eu.posthog.com", "https://us.posthog.com/project/1", "ftp://x", "https://",
                         "https://[::1", "http://[::1]:0", "https://user:pw@example.com", "https://exa mple.com",
                         "https://example.com:99999", "https://例え.jp", "javascript:alert(1)"]),
        st.builds(lambda s: "https://" + s, args_text),
        st.builds(lambda s: dead + "/" + s, args_text),
    )


projects = st.one_of(
    nasty,
    st.integers(min_value=-5, max_value=10**20).map(str),
    st.sampled_from(["#12", "12 ", "https://eu.posthog.com/project/12/insights",
                     "https://us.posthog.com/project/999999999999999999999", "https://example.com/project/12",
                     "/project/12", "project/12"]),
)
filters = st.one_of(
    nasty,
    st.builds(lambda a, op, b: f"{a}{op}{b}", args_text, st.sampled_from([" = ", " != ", "=", "!=", " == "]), args_text),
    st.builds(lambda a, s: a + s, args_text, st.sampled_from([" is set", " is not set", " IS SET"])),
    st.sampled_from(['plan = ""', "plan = '", '"a = b" = c', '" = x', "is set", "= x", "x =", "!= x"]),
)
tracker_keys = st.one_of(nasty, st.builds(lambda s: "CS-" + s, args_text), st.just("CS-ABCD1"))
UNKNOWN = st.builds(lambda s: "--zz" + s, args_text)  # never one of our options


CONNECT_OPTIONS = ("--project", "--host", "--cs-url", "--tracker-key", "--event", "--customer-property", "--filter",
                   "--contact-id")
SWITCHES = ("--all-events", "--no-sync", "--restart", "--api-key-stdin", "--cs-api-key-stdin")


def option_values(dead: str) -> dict[str, st.SearchStrategy[str]]:
    return {
        "--project": projects, "--host": urlish(dead), "--cs-url": urlish(dead), "--tracker-key": tracker_keys,
        "--event": nasty, "--customer-property": nasty, "--filter": filters, "--contact-id": nasty,
    }


@st.composite
def connect_args(draw, dead: str) -> list[str]:
    """Mostly a complete, valid set of flags with one to three of them made nasty (so the checks
    behind the first one are reached), sometimes anything at all."""
    values = option_values(dead)
    if draw(st.booleans()):
        flags = {"--project": "12", "--tracker-key": "CS-ABCD1", "--cs-url": dead, "--customer-property": "org",
                 "--event": "signup"}
        n = draw(st.sampled_from([0, 0, 1, 1, 2, 3]))
        for flag in draw(st.lists(st.sampled_from(CONNECT_OPTIONS), min_size=n, max_size=n, unique=True)):
            flags[flag] = draw(values[flag])
        args = ["connect", "--no-input"] + [x for kv in flags.items() for x in kv]
        if draw(st.booleans()):
            return args + ["--no-sync"]
    else:
        args = ["connect", "--no-input"]
        for flag in draw(st.lists(st.sampled_from(CONNECT_OPTIONS), max_size=8)):
            args += [flag, draw(values[flag])]
    return args + draw(st.lists(st.sampled_from(SWITCHES), max_size=3, unique=True))


@st.composite
def edit_args(draw, dead: str) -> list[str]:
    values = option_values(dead)
    args = ["edit"]
    if draw(st.booleans()):
        args.append(draw(st.one_of(st.sampled_from(["credentials", "identification", "events", "persons"]), nasty)))
    args.append("--no-input")
    for flag in draw(st.lists(st.sampled_from(CONNECT_OPTIONS), min_size=1, max_size=3)):
        args += [flag, draw(values[flag])]
    return args + draw(st.lists(st.sampled_from(["--all-events", "--api-key-stdin", "--cs-api-key-stdin"]),
                                max_size=2, unique=True))


some_key = st.one_of(
    st.builds(fake_key),
    st.builds(fake_key),
    st.builds(fake_key),
    st.builds(lambda k, s: k + s, st.builds(fake_key), st.sampled_from(["é", "\u200b", "\u00a0", "\n", "\x7f", " x"])),
    nasty.filter(lambda s: s.strip() != ""),
)
keys = st.one_of(st.none(), some_key, st.builds(fake_key))


@st.composite
def cli_case(draw, dead: str) -> tuple[list[str], str | None, tuple[str | None, str | None], bool]:
    """(argv, stdin, (PostHog key, Customerscore key) in the environment, a valid config present)."""
    kind = draw(st.sampled_from(["since", "every", "connect", "connect", "edit", "edit", "unknown", "edit-section"]))
    if kind == "since":
        args = ["sync", "--since", draw(dates), *draw(st.lists(st.sampled_from(["--json", "--dry-run", "--full",
                                                                              "--quiet"]), unique=True))]
    elif kind == "every":
        args = ["schedule", "--every", draw(intervals), *draw(st.lists(st.sampled_from(["--install", "--remove"]),
                                                                       unique=True))]
    elif kind == "connect":
        args = draw(connect_args(dead))
    elif kind == "edit":
        args = draw(edit_args(dead))
    elif kind == "edit-section":
        args = ["edit", draw(nasty)]
    else:
        cmd = draw(st.sampled_from(["sync", "status", "connect", "edit", "schedule", "disconnect", "demo"]))
        args = [cmd, draw(UNKNOWN), *draw(st.lists(nasty, max_size=2))]
    stdin = draw(st.one_of(st.none(), st.just(""), args_text,
                           st.builds(lambda: fake_key() + "\n" + fake_key("", 24)),
                           st.builds(lambda a, b: a + "\n" + b, some_key, some_key)))
    pair = draw(st.one_of(st.builds(lambda: (fake_key(), fake_key("", 32))), st.tuples(keys, keys)))  # canaries
    return args, stdin, pair, kind != "connect" and draw(st.booleans()) or kind == "edit"


def dead_config(dead: str) -> dict:
    cfg = sample_config_dict()
    cfg["posthog"].update(region="self-hosted", host=dead)
    cfg["customerscore"]["api_url"] = dead
    return cfg


def check_cli_case(case, home, offline, monkeypatch, note=lambda text: None) -> None:
    args, stdin, (ph_key, cs_key), connected = case
    reset_home(home)
    if connected:
        (home / "config.toml").write_text(tomli_w.dumps(dead_config(offline.dead)))
    for name, value in (("POSTHOG_PERSONAL_API_KEY", ph_key), ("CUSTOMERSCORE_API_KEY", cs_key)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    r = run_cli(*args, input=stdin)
    note(f"{args[0]} exit {r.exit_code}")
    if r.exit_code == 0:
        # success is possible for valid input (a schedule line, an edit that needs no network)
        assert args[0] in ("schedule", "edit") or "--help" in args, (args, r.stderr)
        assert "Traceback" not in r.stderr and "error:" not in r.stderr, r.stderr
    else:
        assert_clean_failure(r)
    blocked = [x for x in offline.refused if "posthog.com" in x or "customerscore.io" in x]
    offline.refused.clear()
    assert not blocked, blocked  # the region hosts and the config's URLs were used, never the defaults


@pytest.mark.slow
@settings(max_examples=250 * SCALE, **SETTINGS)
@given(data=st.data())
def test_bad_cli_arguments_are_one_line_errors(data, home, offline, monkeypatch):
    check_cli_case(data.draw(cli_case(offline.dead)), home, offline, monkeypatch, note=event)


@settings(max_examples=300 * SCALE, **SETTINGS)
@given(text=st.one_of(urlish("http://127.0.0.1:9"), st.builds(lambda a, b: f"https://{a}{b}", args_text, args_text),
                      st.builds(lambda s: "https://" + s, st.text(st.characters(codec="utf-8"), max_size=20))))
@example(text="https://\x1b")
@example(text="https://xn--zz.com")
@example(text="https://example.com:99999")
def test_every_url_the_config_accepts_is_one_the_http_client_can_use(text):
    """check_base_url (config, --host, --cs-url, the region variables) is the gate: what passes it
    must be a URL httpx can send to (else a crash in the client, exit 1, deep in a sync)."""
    import httpx

    from cs_posthog.urls import check_base_url

    try:
        base = check_base_url(text)
    except ValueError:
        event("refused")
        return
    event("accepted")
    httpx.Request("GET", base + "/api/projects/1/query/")


@pytest.mark.parametrize(("text", "why"), [
    ("https://api.customerscore.iohttp://127.0.0.1:8000", "two URLs run together"),  # a default not cleared
    ("https://api.customerscore.io/http://127.0.0.1:8000", "two URLs run together"),
    ("http://127.0.0.1:", "no empty port"),
    ("https://eu.posthog.com/?next=/project/1", "query"),
    ("https://eu.posthog.com/#top", "fragment"),
    ("https://admin:hunter2@eu.posthog.com", "no user name or password"),
])
def test_a_paste_gone_wrong_is_no_base_url(text, why):
    from cs_posthog.urls import check_base_url

    with pytest.raises(ValueError, match=why) as info:
        check_base_url(text)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("text", ["https://eu.posthog.com", "http://127.0.0.1:8000/", "https://ph.example.com/posthog",
                                  "http://[::1]:9000", "http://localhost:8010"])
def test_base_urls_with_a_path_prefix_or_a_port_are_kept(text):
    from cs_posthog.urls import check_base_url

    assert check_base_url(text) == text.rstrip("/")


NO_KEYS = (None, None)
KEYS = (fake_key(), fake_key("", 32))  # canaries, made at run time
FIXED_CASES = [
    (["sync", "--since", "2999-01-01\n"], None, NO_KEYS, True),
    (["sync", "--since", "2024-02-30"], None, NO_KEYS, True),
    (["sync", "--since", "2024-01-01T00:00:00+25:00"], None, NO_KEYS, True),
    (["sync", "--since", "2024-01-01"], None, KEYS, True),  # keys, config: PostHog down, 75
    (["sync", "--since", "2024-01-01"], None, (KEYS[0] + "é", KEYS[1]), True),  # a key no header can carry
    (["sync"], None, (KEYS[0], KEYS[1] + "\u200b"), True),
    (["schedule", "--every", "2h\n3h"], None, NO_KEYS, False),
    (["schedule", "--every", "1h", "--install"], None, NO_KEYS, False),  # no crontab program: 78
    (["edit", "everything\nelse"], None, NO_KEYS, True),
    (["connect", "--no-input", "--project", "12", "--tracker-key", "CS-ABCD1", "--customer-property", "org",
      "--event", "x"], None, KEYS, False),  # PostHog down: 75
    (["connect", "--no-input", "--project", "https://example.com/project/12", "--tracker-key", "CS-ABCD1",
      "--customer-property", "org", "--event", "x"], None, KEYS, False),  # self-hosted, unreachable: 75
    (["connect", "--no-input", "--project", "12", "--tracker-key", "CS-ABCD1", "--customer-property", "org",
      "--event", "x", "--api-key-stdin"], "phx_" + "é" * 30 + "\n", KEYS, False),
    (["connect", "--no-input", "--filter", "a\nb = c"], None, NO_KEYS, False),
    (["connect", "--no-input", "--api-key-stdin"], "", NO_KEYS, False),
    (["edit", "persons", "--no-input", "--filter", "plan = pro\nx"], None, NO_KEYS, True),
    (["edit", "credentials", "--no-input", "--api-key-stdin"], KEYS[0] + "\u00a0\n", NO_KEYS, True),
    (["sync", "--fr\nob"], None, NO_KEYS, False),
]


@pytest.mark.parametrize("case", FIXED_CASES, ids=lambda c: " ".join(c[0])[:60])
def test_fixed_bad_cli_arguments(case, home, offline, monkeypatch):
    check_cli_case(case, home, offline, monkeypatch)


# =============================================================================================
# Real processes: bytes a shell can pass that are not UTF-8
# =============================================================================================
def test_undecodable_input_in_a_real_process(home, tmp_path):
    """Bytes that are not UTF-8, in argv (they arrive as surrogate escapes), on stdin and in the key
    variables: refused with a one-line error (2 or 78), never a crash, and never saved."""
    dead = f"http://127.0.0.1:{closed_port()}"
    env = {**os.environ, "CS_POSTHOG_US_HOST": dead, "CS_POSTHOG_EU_HOST": dead,
           "CS_POSTHOG_CRONTAB": str(tmp_path / "none")}
    env = {k.encode(): v.encode("utf-8", "surrogateescape") for k, v in env.items()}
    ph, cs = fake_key().encode(), fake_key("", 32).encode()
    connect = [b"connect", b"--no-input", b"--project", b"12", b"--tracker-key", b"CS-ABCD1", b"--customer-property",
               b"org", b"--event", b"signup", b"--cs-url", dead.encode()]
    cases = [  # (argv, stdin, extra env, connected)
        ([b"sync", b"--since", b"2024-01-01\xff"], b"", {}, True),
        ([b"schedule", b"--every", b"\xff\xfe"], b"", {}, False),
        ([b"edit", b"\xffpersons"], b"", {}, True),
        ([b"edit", b"persons", b"--no-input", b"--filter", b"plan = \xff"], b"", {}, True),
        ([b"edit", b"identification", b"--no-input", b"--customer-property", b"org\xff"], b"", {}, True),
        ([*connect, b"--api-key-stdin", b"--cs-api-key-stdin"], ph + b"\xff\n" + cs + b"\n", {}, False),
        ([*connect, b"--cs-api-key-stdin"], b"\xff\xfe\x00\n", {b"POSTHOG_PERSONAL_API_KEY": ph}, False),
        (connect, b"", {b"POSTHOG_PERSONAL_API_KEY": ph + b"\xff", b"CUSTOMERSCORE_API_KEY": cs}, False),
        ([b"sync"], b"", {b"POSTHOG_PERSONAL_API_KEY": ph, b"CUSTOMERSCORE_API_KEY": b"\xc3" + cs}, True),
    ]
    # stdin as a UTF-8 desktop locale reads it (strict); C and C.UTF-8 read it with surrogateescape
    strict = {b"PYTHONIOENCODING": b"utf-8:strict"}
    for argv, stdin, extra, connected in cases + [(a, i, {**e, **strict}, c) for a, i, e, c in cases]:
        reset_home(home)
        if connected:
            (home / "config.toml").write_text(tomli_w.dumps(dead_config(dead)))
        before = (home / "config.toml").read_bytes() if connected else None
        proc = subprocess.run([sys.executable, "-m", "cs_posthog", *argv], capture_output=True, env={**env, **extra},
                              input=stdin, timeout=60)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode in (2, 78) and "Traceback" not in err, (argv, proc.returncode, err)
        lines = err.splitlines()
        assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), (argv, err)
        assert not lines[:-2] or all(ln.startswith("warning: ") for ln in lines[:-2]), (argv, err)
        after = (home / "config.toml").read_bytes() if (home / "config.toml").exists() else None
        assert after == before, argv  # nothing saved
        assert not (home / "secrets.toml").exists(), argv
