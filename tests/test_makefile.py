"""Issue 12 item 11: `make demo` installs only what the demo needs (the package and its sandbox
extra); `make test` adds the test tools to the same venv and still builds everything from nothing
(CI: .ci/run). Checked with `make -n` (what would run) on a copy of the Makefile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def checkout(tmp_path) -> Path:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def dry_run(where: Path, target: str) -> str:
    r = subprocess.run(["make", "-n", target], cwd=where, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def installs(plan: str) -> list[str]:
    return [line for line in plan.splitlines() if re.search(r"pip\b.* install\b", line)]


def test_demo_from_nothing_installs_the_package_with_its_sandbox_extra_only(checkout):
    plan = dry_run(checkout, "demo")
    assert "-m venv" in plan
    lines = installs(plan)
    assert any("'.[sandbox]'" in line for line in lines), plan
    assert not any("[test]" in line or "pytest" in line or "pexpect" in line for line in lines), plan
    assert "cs-posthog demo" in plan


def test_test_from_nothing_builds_everything(checkout):
    plan = dry_run(checkout, "test")
    assert "-m venv" in plan
    assert any("'.[test]'" in line for line in installs(plan)), plan
    assert "-m pytest" in plan


def stamps(checkout: Path) -> list[Path]:
    return sorted((checkout / ".venv").glob(".installed*"))


def test_test_after_demo_adds_only_the_test_level(checkout):
    """After `make demo`, `make test` installs the test tools (one venv), and `make demo` after
    that installs nothing again."""
    plan = dry_run(checkout, "demo")
    demo_stamp = next(line.split()[-1] for line in plan.splitlines() if line.startswith("touch "))
    (checkout / ".venv/bin").mkdir(parents=True)
    time.sleep(0.01)
    stamp = checkout / demo_stamp
    stamp.touch()
    later = time.time() + 1
    os.utime(stamp, (later, later))
    again = dry_run(checkout, "demo")
    assert not installs(again) and "cs-posthog demo" in again
    plan = dry_run(checkout, "test")
    assert any("'.[test]'" in line for line in installs(plan)), plan
    assert "-m pytest" in plan


def test_readme_says_how_long_the_demo_takes_from_a_fresh_clone():
    quick_start = (ROOT / "README.md").read_text().split("## ")[0]
    line = next(line for line in quick_start.splitlines() if line.startswith("make demo"))
    assert re.search(r"\b\d+ s from a fresh clone", line), line


def test_ci_runs_the_tests_then_installs_the_wheel_as_users_do():
    """Issue 15: CI builds the wheel, installs it with no extras into a fresh virtualenv and runs the
    demo from it (`make wheel-check`, after `make test`)."""
    steps = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
             if line.strip().startswith("make ")]
    assert steps == ["make lint", "make test", "make wheel-check", "make test-lowest"]


def test_wheel_check_uses_the_test_venv_to_build_and_a_fresh_one_to_run(checkout):
    plan = dry_run(checkout, "wheel-check")
    assert "'.[sandbox]'" in plan and "[test]" not in plan  # builds with the demo-level venv
    line = plan.splitlines()[-1]
    assert line == "BUILD_PYTHON=.venv/bin/python PYTHON=python3 .ci/wheel-check", plan
    script = (ROOT / ".ci/wheel-check").read_text()
    assert os.access(ROOT / ".ci/wheel-check", os.X_OK)
    for needed in ('-m pip wheel', '--no-deps', '-m venv "$work/venv"', 'pip install -q --disable-pip-version-check "$wheel"',
                   'env -u PYTHONPATH', 'demo --no-input', '"$wheel[sandbox]"',
                   '"$work/venv/bin/python" -I "$checkout/.ci/check-imports" "$(dirname "$where")"'):
        assert needed in script, needed


def test_test_runs_in_parallel_bounded_and_without_coverage_by_default(checkout):
    plan = dry_run(checkout, "test")
    line = next(line for line in plan.splitlines() if "-m pytest" in line)
    assert " -n 4 " in line and "--dist loadfile" in line, line
    assert "coverage" not in plan, plan
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^timeout = \d+$", pyproject, re.M)  # pytest-timeout: no test hangs the suite
    for tool in ("pytest-xdist", "pytest-timeout", "coverage"):
        assert f'"{tool}' in pyproject.split("[project.optional-dependencies]")[1].split("[project.scripts]")[0]


def test_ci_measures_coverage_in_every_process_and_prints_it(checkout):
    steps = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert steps.index("export COVERAGE=1") < steps.index("make test")
    r = subprocess.run(["make", "-n", "test"], cwd=checkout, capture_output=True, text=True, timeout=30,
                       env={**os.environ, "COVERAGE": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    run_line = next(i for i, line in enumerate(lines) if "-m coverage run -m pytest" in line)
    assert any("rm -f .coverage" in line for line in lines[:run_line])  # no data from an earlier run
    assert any("-m coverage combine" in line and "-m coverage report" in line for line in lines[run_line + 1:])
    assert 'patch = ["subprocess"]' in (ROOT / "pyproject.toml").read_text()  # the CLI and sandbox children too


def test_the_lowest_constraints_are_the_floors_of_pyproject():
    """`make test-lowest` (CI) installs .ci/lowest-constraints.txt: each pin must be its package's
    floor in pyproject.toml, and every floored dependency must be pinned there."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in map(Requirement, deps):
        lows = [s.version for s in dep.specifier if s.operator == ">="]
        if lows:
            floors[dep.name.replace("_", "-").lower()] = Version(lows[0])
    pins = {}
    for line in (ROOT / ".ci/lowest-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().replace("_", "-").lower()] = Version(version.strip())
    assert pins == floors


def test_lint_and_the_lowest_versions_run_in_ci(checkout):
    (checkout / ".ci").mkdir()
    shutil.copy(ROOT / ".ci/lowest-constraints.txt", checkout / ".ci")
    plan = dry_run(checkout, "lint")
    assert "-m ruff check src" in plan and "-m mypy" in plan, plan
    plan = dry_run(checkout, "test-lowest")
    assert "-c .ci/lowest-constraints.txt" in plan and ".venv-lowest/bin/python -m pytest" in plan, plan
