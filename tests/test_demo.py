"""`cs-posthog demo --no-input`: the non-interactive path end to end, checked against the sandbox."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from urllib.parse import urlsplit

import pytest

from cs_posthog.sandbox.runner import get_json, get_jsonl, start_sandbox


def _demo(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cs_posthog", "demo", "--no-input", *args],
        env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
    )


@pytest.fixture
def demo_env(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "NO_COLOR": "1", "COLUMNS": "100"}
    for k in ("CS_POSTHOG_HOME", "POSTHOG_PERSONAL_API_KEY", "CUSTOMERSCORE_API_KEY"):
        env.pop(k, None)
    return env, tmpdir


def test_demo_summary_matches_what_the_sandbox_received(demo_env, tmp_path):
    env, tmpdir = demo_env
    with start_sandbox(events=4000, persons=400, customers=30, seed=5) as sb:
        env["CS_POSTHOG_DEMO_SANDBOX"] = json.dumps(sb.info)
        proc = _demo(env, "--json")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        cs = sb.info["customerscore"]
        events = get_jsonl(cs + "/_sandbox/received/events")
        contacts = get_jsonl(cs + "/_sandbox/received/contacts")
        stats = get_json(cs + "/_sandbox/stats")

    rec = summary["received"]
    assert rec["events"] == len(events) > 0
    assert rec["contacts"] == len(contacts) > 0
    per_customer = Counter(e["identification"]["customer"] for e in events)
    assert {c: v["events_total"] for c, v in rec["per_customer"].items() if v["events_total"]} == dict(per_customer)
    by_name = Counter((e["identification"]["customer"], e["name"]) for e in events)
    for cid, row in rec["per_customer"].items():
        for name, n in row["events"].items():
            assert by_name[(cid, name)] == n
    assert summary["dropped"] == {
        "events_unknown_customer": stats["events_dropped"],
        "contacts_unknown_customer": stats["contacts_dropped"],
    }
    sync = summary["sync"]
    assert sync["status"] == "ok"
    # everything the sync sent was either kept or silently dropped by Customerscore
    assert sync["events_sent"] == len(events) + stats["events_dropped"]
    assert sync["contacts_sent"] == len(contacts) + stats["contacts_dropped"]
    assert {e["name"] for e in events} <= set(
        ["user_logged_in", "dashboard_viewed", "report_created", "invoice_paid", "subscription_upgraded"]
    )
    assert list(tmpdir.iterdir()) == []  # the temporary home is gone


def test_demo_from_nothing_starts_and_stops_its_own_sandbox(demo_env):
    env, tmpdir = demo_env
    proc = _demo(env)
    assert proc.returncode == 0, proc.stderr
    assert "What Customerscore received" in proc.stdout
    assert "Not on a timeline, and why" in proc.stdout
    assert "cs-posthog connect" in proc.stdout and "cs-posthog schedule --install" in proc.stdout
    m = re.search(r"Customerscore at (http://[^\s;,]+)", proc.stderr)
    assert m, proc.stderr
    home = re.search(r"temporary home (\S+)", proc.stderr).group(1)
    assert not os.path.exists(home)
    assert list(tmpdir.iterdir()) == []
    parts = urlsplit(m.group(1))
    with pytest.raises(OSError):  # the sandbox is stopped
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()


@pytest.mark.parametrize("when", ["Starting a local PostHog", "Sandbox ready"])
def test_ctrl_c_cleans_up(demo_env, when):
    import signal
    import time

    env, tmpdir = demo_env
    proc = subprocess.Popen(
        [sys.executable, "-m", "cs_posthog", "demo", "--no-input"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    seen = ""
    deadline = time.monotonic() + 60
    while when not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    assert when in seen, seen
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode in (130, 0), rest  # 0 only if it had already finished
    # Temp home, sandbox database and logs removed. (A process stopped during its own start-up may
    # leave the empty file Python's tempfile creates to probe TMPDIR: not ours, so not counted.)
    left = [p for p in tmpdir.iterdir() if p.is_dir() or p.stat().st_size or p.name.startswith("cs-posthog")]
    assert left == []
    ports = re.findall(r"at http://127\.0\.0\.1:(\d+)", seen)
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()


def test_an_in_process_demo_leaves_the_environment_and_other_apps_alone(home, monkeypatch, tmp_path):
    """The demo runs in an App of its own (temporary home, sandbox hosts and keys): while it syncs and
    after it, os.environ is what it was, an App made from it meanwhile is this test's installation,
    and an App made before it keeps its home, hosts and (no) keys."""
    from cs_posthog.commands import demo as demo_cmd
    from helpers import env_app, run_cli

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile_dir = tempfile.tempdir
    tempfile.tempdir = None  # TMPDIR is read again: the demo's home goes under tmp_path
    try:
        with start_sandbox(events=1500, persons=200, customers=20, seed=5) as sb:
            monkeypatch.setenv("CS_POSTHOG_DEMO_SANDBOX", json.dumps(sb.info))
            before = dict(os.environ)
            outer = env_app()
            seen = {}
            execute = demo_cmd.execute

            def watching_execute(app, cfg, options):
                seen["environ"] = dict(os.environ)
                seen["meanwhile"] = env_app()
                seen["demo_home"] = app.paths.config_dir
                return execute(app, cfg, options)

            monkeypatch.setattr(demo_cmd, "execute", watching_execute)
            r = run_cli("demo", "--no-input", "--json")
            after = dict(os.environ)
    finally:
        tempfile.tempdir = tempfile_dir
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["sync"]["status"] == "ok"
    assert seen["environ"] == before and after == before  # never rewritten, not even for a while
    assert seen["demo_home"] != home and seen["demo_home"].parent == tmp_path
    meanwhile = seen["meanwhile"]
    for app in (meanwhile, outer, env_app()):
        assert app.paths.config_dir == home
        assert (app.settings.us_host, app.settings.eu_host) == ("", "")
        assert app.secrets.find("posthog") is None and app.secrets.find("customerscore") is None
    assert not home.exists() or not (home / "config.toml").exists()  # the demo wrote nothing here
    assert list(tmp_path.glob("cs-posthog-demo-*")) == []  # its temporary home is gone
