"""Issue 15: cs-posthog installed as a command-line tool (pipx / uv tool / pip into a virtualenv).

- The demo's sandbox needs PostHog's HogQL parser: a dependency where it ships wheels (the marker in
  pyproject.toml), and where it is missing the demo says so in one line and exits 69 before starting
  anything; the sandbox refuses to start (69) rather than answer queries with 500.
- ``cs-posthog completion bash|zsh|fish`` prints a completion script; bash's is sourced in a real
  bash and asked for candidates the way bash asks (COMP_WORDS / COMP_CWORD).
- ``--version`` names the Python and the platform (test_cli_basics), ``status`` the version that
  wrote the sync state.

The wheel itself (built, installed into a fresh virtualenv without the source tree, demo run) is
checked by ``make wheel-check``, which CI runs (.ci/run): too slow for a unit test. Its check that every
module the code imports is installed (.ci/check-imports: a dependency left out of pyproject.toml that no
command's run would notice, such as keyring) is tested here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cs_posthog import __version__
from cs_posthog.config import Config, save_config
from cs_posthog.sandbox import requirements
from cs_posthog.sync.state import WRITER_KEY, SyncState
from helpers import env_paths, run_cli, sample_config_dict

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["posthog", "customerscore", "credentials", "identification", "events", "persons"]
COMMANDS = ["connect", "edit", "sync", "status", "disconnect", "schedule", "demo", "completion"]


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cs_posthog", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env, timeout=120, **kw)


# --- completion ------------------------------------------------------------------------------------
@pytest.fixture
def on_path(tmp_path) -> dict:
    """An environment whose PATH has a ``cs-posthog`` running this checkout (the scripts call it)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "cs-posthog"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cs_posthog "$@"\n')
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}


BASH_ASK = r"""
source "$1"
complete -p cs-posthog
read -ra COMP_WORDS <<< "$2"
if [[ -z "$2" || "$2" == *" " ]]; then COMP_WORDS+=(""); fi
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$2"
COMPREPLY=()
_cs_posthog_completion cs-posthog "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def bash_complete(env: dict, tmp_path: Path, line: str) -> list[str]:
    """Source the generated script in a real bash and call its function as bash's completion does
    when Tab is pressed after ``line``."""
    gen = _cli("completion", "bash", env=env)
    assert gen.returncode == 0, gen.stderr
    script = tmp_path / "cs-posthog.bash"
    script.write_text(gen.stdout)
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", BASH_ASK, "bash", str(script), line],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    registered, *candidates = proc.stdout.splitlines()
    assert registered == "complete -o default -F _cs_posthog_completion cs-posthog"
    return [c for c in candidates if c]


def test_bash_completes_a_command_from_its_start(on_path, tmp_path):
    assert bash_complete(on_path, tmp_path, "cs-posthog ed") == ["edit"]


def test_bash_completes_the_sections_of_edit(on_path, tmp_path):
    assert bash_complete(on_path, tmp_path, "cs-posthog edit ") == SECTIONS
    assert bash_complete(on_path, tmp_path, "cs-posthog edit i") == ["identification"]


def test_bash_completes_commands_options_and_choices(on_path, tmp_path):
    assert bash_complete(on_path, tmp_path, "cs-posthog ") == COMMANDS
    assert bash_complete(on_path, tmp_path, "cs-posthog completion ") == ["bash", "zsh", "fish"]
    assert bash_complete(on_path, tmp_path, "cs-posthog sync --dr") == ["--dry-run"]
    assert bash_complete(on_path, tmp_path, "cs-posthog schedule --every 1") == ["15m", "1h", "12h", "1d"]


def test_zsh_and_fish_scripts_ask_cs_posthog_for_the_candidates(on_path):
    zsh = _cli("completion", "zsh", env=on_path)
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef cs-posthog\n")
    assert "_CS_POSTHOG_COMPLETE=complete_zsh cs-posthog" in zsh.stdout
    assert "compdef _cs_posthog_completion cs-posthog" in zsh.stdout
    fish = _cli("completion", "fish", env=on_path)
    assert fish.returncode == 0 and fish.stdout.startswith("complete --command cs-posthog ")
    assert "_CS_POSTHOG_COMPLETE=complete_fish" in fish.stdout

    # what the scripts' calls get back
    asked = _cli(env={**on_path, "_CS_POSTHOG_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "cs-posthog ed"})
    assert asked.returncode == 0 and asked.stdout.startswith("_arguments '*: :((\"edit\":\"Change the saved setup")
    asked = _cli(env={**on_path, "_CS_POSTHOG_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                      "_TYPER_COMPLETE_ARGS": "cs-posthog edit "})
    assert asked.returncode == 0 and asked.stdout.split() == SECTIONS


def test_completion_help_says_how_to_install_it():
    r = run_cli("completion", "--help")
    assert r.exit_code == 0
    out = r.stdout
    assert 'eval "$(cs-posthog completion bash)"' in out and "~/.bashrc" in out
    assert 'eval "$(cs-posthog completion zsh)"' in out and "~/.zshrc" in out
    assert "cs-posthog completion fish | source" in out and "~/.config/fish/config.fish" in out


def test_completion_for_an_unknown_shell_is_a_usage_error():
    r = run_cli("completion", "ksh")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.splitlines() == ["error: no completion for 'ksh'", "hint: Choose one of: bash, zsh, fish."]


# --- the parser: a dependency where it ships wheels -------------------------------------------------
def _parser_marker() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (dep,) = [d for d in deps if d.replace(" ", "").startswith(requirements.PARSER_REQUIREMENT + ";")]
    return dep.split(";", 1)[1].strip()


def test_pyproject_marker_is_the_one_the_demo_knows():
    from packaging.markers import Marker

    assert Marker(_parser_marker()) == Marker(requirements.PARSER_MARKER)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["sandbox"] == [requirements.PARSER_REQUIREMENT]  # still asked for explicitly elsewhere


@pytest.mark.parametrize(
    ("impl", "version", "plat", "machine", "expected"),
    [
        ("CPython", (3, 11), "linux", "x86_64", True),
        ("CPython", (3, 14), "linux", "aarch64", True),
        ("CPython", (3, 12), "darwin", "arm64", True),
        ("CPython", (3, 12), "darwin", "x86_64", False),  # Intel Macs: the extra (wheel needs macOS 15)
        ("CPython", (3, 15), "linux", "x86_64", False),
        ("CPython", (3, 12), "win32", "AMD64", False),
        ("CPython", (3, 12), "linux", "armv7l", False),
        ("PyPy", (3, 11), "linux", "x86_64", False),
    ],
)
def test_marker_and_platform_check_agree(monkeypatch, impl, version, plat, machine, expected):
    from packaging.markers import Marker

    env = {"platform_python_implementation": impl, "python_version": "%d.%d" % version,
           "python_full_version": "%d.%d.0" % version, "sys_platform": plat, "platform_machine": machine}
    assert Marker(_parser_marker()).evaluate(env) is expected
    monkeypatch.setattr(requirements.platform, "python_implementation", lambda: impl)
    monkeypatch.setattr(requirements.platform, "machine", lambda: machine)
    monkeypatch.setattr(requirements.sys, "version_info", (*version, 0, "final", 0))
    monkeypatch.setattr(requirements.sys, "platform", plat)
    assert requirements.platform_has_wheel() is expected


def test_the_hint_names_the_command_for_the_environment(monkeypatch, tmp_path):
    """pipx and uv leave their mark in the virtualenvs they make (as pipx 1.18 and uv 0.13 write them)."""
    pipx = tmp_path / "pipx/venvs/cs-posthog"
    pipx.mkdir(parents=True)
    (pipx / "pipx_metadata.json").write_text("{}")
    monkeypatch.setattr(requirements.sys, "prefix", str(pipx))
    assert requirements.install_command() == "pipx inject cs-posthog hogql-parser==1.3.88"

    uv = tmp_path / "uv/tools/cs-posthog"
    uv.mkdir(parents=True)
    receipt = uv / "uv-receipt.toml"
    receipt.write_text('[tool]\nrequirements = [{ name = "cs-posthog", path = "/home/ann/dl/cs_posthog-0.1.0-py3-none-any.whl" }]\n')
    monkeypatch.setattr(requirements.sys, "prefix", str(uv))
    assert requirements.install_command() == (
        "uv tool install --force --with hogql-parser==1.3.88 /home/ann/dl/cs_posthog-0.1.0-py3-none-any.whl")
    receipt.write_text('[tool]\nrequirements = [{ name = "cs-posthog", directory = "/home/ann/src/cs posthog" }]\n')
    assert requirements.install_command() == (
        "uv tool install --force --with hogql-parser==1.3.88 '/home/ann/src/cs posthog'")
    receipt.write_text("not toml [")
    assert requirements.install_command().endswith(" <the wheel or directory you installed cs-posthog from>")

    monkeypatch.setattr(requirements.sys, "prefix", str(tmp_path / "srv-venv"))
    monkeypatch.setattr(requirements.sys, "executable", "/srv/venv/bin/python")
    assert requirements.install_command() == "/srv/venv/bin/python -m pip install 'hogql-parser==1.3.88'"


# --- without the parser: one line, exit 69, nothing started -----------------------------------------
ABSENT = "import sys\nsys.modules['hogql_parser'] = None  # as if it were not installed\n"
BROKEN = '''import importlib.abc, importlib.machinery, sys

class _Broken(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("libantlr4-runtime.so.4.13.1: cannot open shared object file")

class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hogql_parser":
            return importlib.machinery.ModuleSpec(name, _Broken())
        return None

sys.meta_path.insert(0, _Finder())
'''


def without_parser(tmp_path: Path, how: str) -> dict:
    """An environment whose Python (and the sandbox it starts) cannot import hogql_parser."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(how)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "TMPDIR": str(tmpdir), "NO_COLOR": "1"}
    env.pop("CS_POSTHOG_DEMO_SANDBOX", None)
    return env


def test_demo_without_the_parser_says_what_to_install_and_exits_69(tmp_path):
    env = without_parser(tmp_path, ABSENT)
    proc = _cli("demo", "--no-input", env=env)
    assert proc.returncode == 69, proc.stderr
    assert proc.stdout == ""
    error, hint = proc.stderr.splitlines()  # nothing else: no sandbox started, no retries
    assert error == ("error: the demo cannot run: it needs PostHog's HogQL parser (hogql-parser==1.3.88), "
                     "which is not installed")
    assert hint == f"hint: Install it with: {sys.executable} -m pip install 'hogql-parser==1.3.88'"
    assert list((tmp_path / "tmp").iterdir()) == []  # no temporary home, no sandbox files


def test_demo_json_without_the_parser_prints_no_document(tmp_path):
    proc = _cli("demo", "--json", env=without_parser(tmp_path, ABSENT))
    assert proc.returncode == 69 and proc.stdout == ""
    assert proc.stderr.startswith("error: the demo cannot run: it needs PostHog's HogQL parser")


def test_demo_with_a_parser_that_does_not_load_exits_69_without_a_500(tmp_path):
    proc = _cli("demo", "--no-input", env=without_parser(tmp_path, BROKEN))
    assert proc.returncode == 69, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[-2] == ("error: the sandbox cannot run: PostHog's HogQL parser (hogql-parser==1.3.88) does not "
                         "load (libantlr4-runtime.so.4.13.1: cannot open shared object file)")
    assert lines[-1].startswith("hint: Install it with: ")
    assert "500" not in proc.stderr and "unavailable" not in proc.stderr
    assert list((tmp_path / "tmp").iterdir()) == []  # the sandbox's stderr file and database are gone


def test_sandbox_without_the_parser_refuses_to_start(tmp_path):
    env = without_parser(tmp_path, ABSENT)
    proc = subprocess.run([sys.executable, "-m", "cs_posthog.sandbox", "--port-base", "0", "--events", "50"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == requirements.PARSER_MISSING_EXIT == 69
    assert proc.stdout == ""  # no JSON line: no server ever listened
    assert proc.stderr.splitlines() == [
        "sandbox: error: the sandbox cannot run: it needs PostHog's HogQL parser (hogql-parser==1.3.88), "
        "which is not installed",
        f"sandbox: hint: Install it with: {sys.executable} -m pip install 'hogql-parser==1.3.88'",
    ]


def test_start_sandbox_raises_sandbox_unavailable_with_its_lines(tmp_path, monkeypatch):
    from cs_posthog.sandbox.runner import SandboxUnavailable, start_sandbox

    env = without_parser(tmp_path, BROKEN)
    with pytest.raises(SandboxUnavailable) as exc:
        start_sandbox(events=50, env={"PYTHONPATH": env["PYTHONPATH"]})
    assert exc.value.message.startswith("the sandbox cannot run: PostHog's HogQL parser")
    assert "does not load" in exc.value.message
    assert exc.value.hint.startswith("Install it with: ")


# --- status: which cs-posthog wrote the state --------------------------------------------------------
@pytest.fixture
def connected(home):
    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)


def _state_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("• cs-posthog "))


def test_status_names_the_version_that_wrote_the_state(connected):
    st = SyncState(env_paths().state_db)
    st.finish_run(st.start_run("first"), "ok", {"events_sent": 1, "contacts_sent": 0})
    assert st.get_meta(WRITER_KEY) == __version__
    st.close()
    d = json.loads(run_cli("status", "--json").stdout)
    assert d["version"] == __version__ and d["state_written_by"] == __version__
    r = run_cli("status")
    assert r.exit_code == 0, r.stderr
    assert _state_line(r.stdout) == f"• cs-posthog {__version__}, which also wrote the state last"


def test_status_names_another_writer_and_an_old_state(connected):
    st = SyncState(env_paths().state_db)
    st.finish_run(st.start_run("first"), "ok", {"events_sent": 1, "contacts_sent": 0})
    st.set_meta(WRITER_KEY, "0.0.9")
    st.close()
    assert json.loads(run_cli("status", "--json").stdout)["state_written_by"] == "0.0.9"
    assert _state_line(run_cli("status").stdout) == (
        f"• cs-posthog {__version__}; the state was last written by cs-posthog 0.0.9")

    st = SyncState(env_paths().state_db)  # a state file from before the version was recorded
    with st.tx() as db:
        db.execute("DELETE FROM meta WHERE key=?", (WRITER_KEY,))
    st.close()
    assert json.loads(run_cli("status", "--json").stdout)["state_written_by"] is None
    assert _state_line(run_cli("status").stdout) == (
        f"• cs-posthog {__version__}; the state was last written by an earlier cs-posthog, which did not "
        "record its version")


def test_status_before_any_sync_has_no_writer(connected):
    r = run_cli("status")
    assert r.exit_code == 0
    assert _state_line(r.stdout) == f"• cs-posthog {__version__}; no sync has written the state yet"
    assert json.loads(run_cli("status", "--json").stdout)["state_written_by"] is None


# --- .ci/check-imports: what wheel-check runs in the fresh virtualenv --------------------------------
CHECK_IMPORTS = ROOT / ".ci" / "check-imports"


def _check_imports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", str(CHECK_IMPORTS), *args], capture_output=True, text=True,
                          timeout=60)


def test_check_imports_names_each_module_not_installed_where_it_is_first_imported(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import os\nfrom pkg.sub import helper\nfrom . import sub\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "helper.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import httpx\n"
        "if TYPE_CHECKING:\n"
        "    import cs_absent_typing_only\n"
        "\n"
        "\n"
        "def store(key):\n"
        "    import cs_absent_keychain.backends  # loaded only when called, as cs-posthog loads keyring\n"
        "    from cs_absent_other import thing\n"
        "    import cs_absent_keychain\n")
    r = _check_imports(str(pkg))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "not installed: cs_absent_keychain (imported at pkg/sub/helper.py:9)",
        "not installed: cs_absent_other (imported at pkg/sub/helper.py:10)",
    ]
    r = _check_imports(str(pkg), "--optional", "cs_absent_keychain", "--optional", "cs_absent_other")
    assert (r.returncode, r.stderr) == (0, "")
    assert _check_imports(str(pkg), "--optional").returncode == 2
    assert _check_imports(str(tmp_path / "nowhere")).returncode == 2


def test_check_imports_finds_every_module_cs_posthog_imports_in_the_test_environment():
    import cs_posthog

    r = _check_imports(str(Path(cs_posthog.__file__).parent))
    assert (r.returncode, r.stderr) == (0, "")
