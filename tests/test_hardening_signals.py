"""Hardening (issue 11, items 16 and 18): Ctrl-C and SIGTERM, whenever they come, end with one
``error:`` line, one ``hint:`` line and exit 130 (SIGINT) or 143 (SIGTERM): never a traceback, never
death by the signal (-2, -15), and never files left behind by the demo.

Real processes and real signals. "Start-up" is made slow, not guessed at: a stand-in ``typer`` on
PYTHONPATH announces its import and sleeps, so the signal lands while the CLI is importing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import cs_posthog_cmd

SIGNALS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
IDS = ["sigint", "sigterm"]


def assert_one_stop_line(stderr: str, what: str) -> None:
    assert "Traceback" not in stderr and "Aborted" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines[-2].startswith(f"error: {what}"), stderr
    assert lines[-1].startswith("hint: "), stderr
    assert sum(ln.startswith("error:") for ln in lines) == 1, stderr


def read_until(stream, marker: str, timeout: float = 60) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
    assert marker in seen, seen
    return seen


@pytest.fixture
def slow_typer(tmp_path) -> dict:
    """An environment where ``import typer`` says so on stderr, then takes a minute."""
    fake = tmp_path / "slow-imports" / "typer"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import sys, time\nsys.stderr.write('importing typer\\n')\nsys.stderr.flush()\ntime.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")])),
           "CS_POSTHOG_HOME": str(tmp_path / "home")}
    return env


@pytest.mark.parametrize("how", ["console-script", "python-m"])
@pytest.mark.parametrize("sig,code,what", SIGNALS, ids=IDS)
def test_a_signal_while_starting_up_is_one_line_and_128_plus_the_signal(slow_typer, how, sig, code, what):
    cmd = [sys.executable, "-m", "cs_posthog"] if how == "python-m" else cs_posthog_cmd()
    if how == "console-script" and cmd[0] == sys.executable:
        pytest.skip("no console script installed")
    proc = subprocess.Popen([*cmd, "status"], env=slow_typer, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        read_until(proc.stderr, "importing typer")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert out == ""
    assert_one_stop_line(err, what)


def test_sigterm_at_a_wizard_prompt_is_one_line_and_143(home):
    pexpect = pytest.importorskip("pexpect")
    cmd = cs_posthog_cmd()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTHOG_", "CUSTOMERSCORE_"))}
    env.update(CS_POSTHOG_HOME=str(home), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color")
    child = pexpect.spawn(cmd[0], [*cmd[1:], "connect"], env=env, dimensions=(30, 100), encoding="utf-8",
                          timeout=90)  # generous: a loaded machine starts slowly
    child.expect("PostHog personal API key")
    time.sleep(0.5)  # the prompt is drawn and waiting for keys
    child.kill(signal.SIGTERM)
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus is None and child.exitstatus == 143, (child.signalstatus, child.before)
    text = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\r", "", child.before or "")
    assert "error: terminated" in text and "hint: " in text and "Traceback" not in text, text


# --- 18: the demo stopped by SIGTERM leaves nothing behind ------------------------------------------
@pytest.fixture
def demo_env(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "NO_COLOR": "1", "COLUMNS": "100"}
    for k in ("CS_POSTHOG_HOME", "POSTHOG_PERSONAL_API_KEY", "CUSTOMERSCORE_API_KEY"):
        env.pop(k, None)
    return env, tmpdir


@pytest.mark.parametrize("when", ["Starting a local PostHog", "Sandbox ready"])
def test_sigterm_stops_the_demo_cleanly_and_leaves_no_files(demo_env, when):
    env, tmpdir = demo_env
    proc = subprocess.Popen([sys.executable, "-m", "cs_posthog", "demo", "--no-input"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        seen = read_until(proc.stderr, when)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode in (143, 0), rest  # 0 only if it had already finished
    if proc.returncode == 143:
        assert_one_stop_line(rest, "terminated")
    # a process stopped during its own start-up may leave the empty probe file tempfile makes in TMPDIR
    left = [p for p in tmpdir.iterdir() if p.is_dir() or p.stat().st_size or p.name.startswith("cs-posthog")]
    assert left == []
    for port in re.findall(r"at http://127\.0\.0\.1:(\d+)", seen):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
