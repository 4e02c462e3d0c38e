"""Reliability suite, secrets: every key used (the sandbox's real keys, and canary keys made at run
time with ``fake_key``) must appear nowhere but in ``secrets.toml`` (mode 0600, in a 0700 dir):
not on stdout or stderr (``--debug`` tracebacks included), not in config.toml or draft.toml, not in
the SQLite state database read as raw bytes, not in the log file cron would write.

The commands run as real processes (``python -m cs_posthog``), as cron runs them: their stdout and
stderr are also appended to the log file the schedule line names, and every file under
``CS_POSTHOG_HOME`` is scanned afterwards.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from helpers import fake_key

from cs_posthog.sandbox.runner import start_sandbox

SECRET_FILE = "secrets.toml"


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(events=800, persons=80, customers=15, seed=21, region="eu") as sb:
        yield sb


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runner:
    """Runs `cs-posthog` as cron would and remembers every output and every key it was given."""

    def __init__(self, home: Path, sandbox, tmp_path: Path) -> None:
        self.home = home
        self.info = sandbox.info
        # every key this test may hand to a command: the sandbox's (real) ones count as secrets too
        self.secrets = {v for k, v in sandbox.info.items() if "api_key" in k and isinstance(v, str)}
        self.env = {
            **os.environ,
            "CS_POSTHOG_US_HOST": sandbox.info["posthog_us"],
            "CS_POSTHOG_EU_HOST": sandbox.info["posthog_eu"],
            "CS_POSTHOG_RATE_SCALE": "off",
            "CS_POSTHOG_CRONTAB": str(tmp_path / "no-crontab"),
        }
        self.outputs: list[tuple[list[str], str, str]] = []

    def canary(self, prefix: str = "phx_") -> str:
        key = fake_key(prefix, 40)
        self.secrets.add(key)
        return key

    def run(self, *args: str, stdin: str = "", env: dict | None = None, code: int | None = 0) -> subprocess.CompletedProcess:
        env = {**self.env, **(env or {})}
        for k, v in (env or {}).items():
            if k in ("POSTHOG_PERSONAL_API_KEY", "CUSTOMERSCORE_API_KEY") and v:
                self.secrets.add(v)
        proc = subprocess.run([sys.executable, "-m", "cs_posthog", *args], input=stdin, capture_output=True,
                              text=True, env=env, timeout=120)
        self.outputs.append((list(args), proc.stdout, proc.stderr))
        # what cron's `>> sync.log 2>&1` would have kept
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "sync.log", "a", encoding="utf-8") as log:
            log.write(proc.stdout + proc.stderr)
        if code is not None:
            assert proc.returncode == code, (args, proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
        return proc

    def assert_no_leak(self) -> None:
        """No key in any output or any file but secrets.toml (0600 in a 0700 dir)."""
        keys = sorted(self.secrets)
        assert len(keys) >= 3
        for args, out, err in self.outputs:
            for key in keys:
                assert key not in out, (args, "stdout")
                assert key not in err, (args, "stderr")
        scanned = 0
        for path in self.home.rglob("*"):
            if not path.is_file():
                continue
            raw = path.read_bytes()
            scanned += 1
            if path.name == SECRET_FILE:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
                continue
            for key in keys:
                for form in {key.encode(), key.encode("utf-16-le")}:
                    assert form not in raw, (path.name, "holds a key")
        assert scanned >= 1
        if (self.home / SECRET_FILE).exists():
            assert stat.S_IMODE(self.home.stat().st_mode) == 0o700

    def stored(self) -> dict:
        return tomllib.loads((self.home / SECRET_FILE).read_text())


@pytest.fixture
def cli(home, sandbox, tmp_path):
    return Runner(home, sandbox, tmp_path)


def connect_args(info, *extra: str) -> list[str]:
    return ["connect", "--no-input", "--project", str(info["project_id"]), "--tracker-key", info["tracker_key"],
            "--cs-url", info["customerscore"], "--customer-property", info["customer_property"],
            "--event", "invoice_paid", "--event", "$pageview", "--filter", "plan != free", *extra]


def since(info) -> str:
    return info["data_now"][:4] + "-01-01" if info["data_now"][5:7] != "01" else info["data_now"][:10]


# --- the whole life of an installation with the sandbox's real keys -----------------------------
@pytest.mark.slow
def test_real_keys_stay_in_the_secrets_file_through_every_command(cli):
    info = cli.info
    ph, cs = info["api_key"], info["customerscore_api_key"]
    cli.run(*connect_args(info, "--no-sync", "--api-key-stdin", "--cs-api-key-stdin"), stdin=f"{ph}\n{cs}\n")
    assert cli.stored() == {"posthog": ph, "customerscore": cs}

    cli.run("sync", "--dry-run")
    cli.run("sync", "--dry-run", "--json")
    cli.run("-v", "sync", "--since", since(info))  # the first sync: events and contacts sent
    cli.run("--debug", "sync", "--json")
    cli.run("--debug", "-v", "sync", "--full", "--since", since(info))
    cli.run("sync", "--quiet")
    for args in (["status"], ["status", "--json"], ["--debug", "status"]):
        proc = cli.run(*args)
        assert "****" in proc.stdout  # keys are shown masked
    cli.run("--debug", "edit", "events", "--no-input", "--event", "invoice_paid", "--event", "dashboard_viewed")
    cli.run("edit", "credentials", "--no-input", "--api-key-stdin", "--cs-api-key-stdin", stdin=f"{ph}\n{cs}\n")
    cli.run("schedule")
    assert (cli.home / "state.sqlite3").stat().st_size > 0
    cli.assert_no_leak()  # with state, config and log in place

    cli.run("--debug", "disconnect", "--yes")
    assert not (cli.home / SECRET_FILE).exists()
    cli.assert_no_leak()


# --- error paths with canary keys, --debug tracebacks included ---------------------------------
@pytest.mark.slow
def test_invalid_keys_and_their_error_paths_print_no_key(cli):
    info = cli.info
    bad_ph, bad_cs = cli.canary(), cli.canary("")
    env_bad = {"POSTHOG_PERSONAL_API_KEY": bad_ph, "CUSTOMERSCORE_API_KEY": bad_cs}

    # connect: 401 from PostHog, from env and from stdin, with and without --debug
    cli.run(*connect_args(info, "--no-sync"), env=env_bad, code=77)
    cli.run("--debug", *connect_args(info, "--no-sync"), env=env_bad, code=77)
    cli.run("--debug", "-v", *connect_args(info, "--no-sync", "--api-key-stdin", "--cs-api-key-stdin"),
            stdin=f"{bad_ph}\n{bad_cs}\n", code=77)
    # a key with the wrong shape on stdin, or both keys swapped: refused before any request
    cli.run(*connect_args(info, "--api-key-stdin", "--cs-api-key-stdin"), stdin=f"{bad_cs}\n{bad_ph}\n", code=2)
    cli.run("--debug", *connect_args(info, "--api-key-stdin"), stdin=f"{bad_ph} {bad_ph}\n", code=2)
    # the sandbox's other keys: missing scopes, another project (403s, 77)
    for other in ("api_key_missing_scopes", "api_key_other_project"):
        cli.run("--debug", *connect_args(info, "--no-sync"),
                env={"POSTHOG_PERSONAL_API_KEY": info[other], "CUSTOMERSCORE_API_KEY": bad_cs}, code=None)
    assert not (cli.home / "config.toml").exists()

    # not connected: sync and status with keys in the environment (78)
    for args in (["sync"], ["--debug", "sync", "--json"], ["--debug", "status", "--json"]):
        cli.run(*args, env=env_bad, code=78)

    # connected with the real keys stored, then invalid keys from the environment (they win)
    ph, cs = info["api_key"], info["customerscore_api_key"]
    cli.run(*connect_args(info, "--no-sync", "--api-key-stdin", "--cs-api-key-stdin"), stdin=f"{ph}\n{cs}\n")
    cli.run("sync", env=env_bad, code=77)
    cli.run("--debug", "sync", "--json", env=env_bad, code=77)
    cli.run("--debug", "-v", "sync", "--dry-run", env=env_bad, code=77)
    # PostHog accepts, Customerscore refuses its key (401 on the first batch, 77)
    cli.run("--debug", "sync", "--since", since(info), env={"CUSTOMERSCORE_API_KEY": bad_cs}, code=77)
    cli.run("--debug", "-v", "sync", "--json", env={"CUSTOMERSCORE_API_KEY": bad_cs}, code=77)
    cli.run("--debug", "status", env=env_bad)
    cli.run("--debug", "edit", "credentials", "--no-input", "--api-key-stdin", stdin=bad_ph + "\n", code=77)
    assert cli.stored() == {"posthog": ph, "customerscore": cs}  # nothing replaced by a refused key

    # a broken config, with keys everywhere
    (cli.home / "config.toml").write_text("[posthog\nregion = 'eu'\n")
    for args in (["--debug", "sync"], ["--debug", "status", "--json"], ["--debug", "edit", "--no-input", "--event", "x"]):
        cli.run(*args, env=env_bad, code=78)
    cli.run("--debug", "disconnect", "--yes", env=env_bad)
    cli.assert_no_leak()


def test_canary_keys_stored_then_used_against_a_dead_service(cli, monkeypatch, capsys):
    """Keys stored in the file by a successful connect, then PostHog unreachable (75) with --debug:
    the retry and connection errors and their tracebacks name no key. In process, so that the
    retries need not wait (the backoff is patched to 0); output captured as the process's."""
    from cs_posthog.http import RetryPolicy
    from helpers import run_cli

    info = cli.info
    ph, cs = info["api_key"], info["customerscore_api_key"]
    cli.run(*connect_args(info, "--no-sync", "--api-key-stdin", "--cs-api-key-stdin"), stdin=f"{ph}\n{cs}\n")
    cfg = tomllib.loads((cli.home / "config.toml").read_text())
    cfg["posthog"]["host"] = f"http://127.0.0.1:{closed_port()}"
    (cli.home / "config.toml").write_text(tomli_w.dumps(cfg))
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.0)
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")
    for args, env in ((["--debug", "-v", "sync", "--json"], {"POSTHOG_PERSONAL_API_KEY": cli.canary(),
                                                             "CUSTOMERSCORE_API_KEY": cli.canary("")}),
                      (["--debug", "sync"], {}), (["-v", "sync", "--dry-run"], {})):
        for name in ("POSTHOG_PERSONAL_API_KEY", "CUSTOMERSCORE_API_KEY"):
            if name in env:
                monkeypatch.setenv(name, env[name])
            else:
                monkeypatch.delenv(name, raising=False)
        r = run_cli(*args)
        logged = capsys.readouterr()
        assert r.exit_code == 75, (args, r.stderr)
        cli.outputs.append((args, r.stdout + logged.out, r.stderr + logged.err))
        if "--debug" in args:
            assert "Traceback" in r.stderr  # --debug shows it: the scan below reads it
    cli.assert_no_leak()


def test_a_key_pasted_into_the_config_is_not_echoed(cli):
    """Someone pastes a key into the wrong field of config.toml: the "invalid config" error quotes
    the field's value, but never the key (stored in the file, or set in the environment; a
    PostHog personal key is recognised by its shape even when it is neither)."""
    info = cli.info
    ph, cs = info["api_key"], info["customerscore_api_key"]
    cli.run(*connect_args(info, "--no-sync", "--api-key-stdin", "--cs-api-key-stdin"), stdin=f"{ph}\n{cs}\n")
    good = tomllib.loads((cli.home / "config.toml").read_text())
    bad_ph, env_cs = cli.canary(), cli.canary("")
    for section, field, key, env in (("posthog", "host", bad_ph, {}),
                                     ("customerscore", "api_url", env_cs, {"CUSTOMERSCORE_API_KEY": env_cs}),
                                     ("customerscore", "api_url", cs, {}), ("posthog", "host", ph, {})):
        cfg = tomllib.loads(tomli_w.dumps(good))
        cfg[section][field] = key
        (cli.home / "config.toml").write_text(tomli_w.dumps(cfg))
        for args in (["sync"], ["--debug", "status"]):
            proc = cli.run(*args, code=78, env=env)
            assert "config.toml" in proc.stderr and "****" in proc.stderr  # quoted, masked
        outputs = [o for o in cli.outputs if o[0] in (["sync"], ["--debug", "status"])]
        for _, out, err in outputs:
            assert key not in out + err
    cli.outputs = [o for o in cli.outputs if o[0][0] != "connect"]
    (cli.home / "config.toml").unlink()  # the file scan: only the output matters here
    cli.assert_no_leak()
