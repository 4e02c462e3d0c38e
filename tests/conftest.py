"""Hermetic tests: every test gets its own CS_POSTHOG_HOME, no colour, 80 columns, no real keys,
no keyring, and no PostHog region overrides leaking from the developer's shell."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Hypothesis draws the same examples on every run ("ci", the default: a failure in CI is one anybody
# can reproduce) unless HYPOTHESIS_PROFILE=random asks for new ones (a dev hunting for bugs; a
# failing example is printed with how to reproduce it). No deadline in either: a loaded machine is
# not a bug, and pytest-timeout bounds every test.
settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None, database=None,
                          print_blob=True)
settings.register_profile("random", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_CLEARED = (
    "POSTHOG_PERSONAL_API_KEY",
    "CUSTOMERSCORE_API_KEY",
    "CS_POSTHOG_US_HOST",
    "CS_POSTHOG_EU_HOST",
    "CS_POSTHOG_DEBUG",
    "CS_POSTHOG_TIMEOUT",
    "FORCE_COLOR",
    # what `make test` (CI: .ci/run) hands down: a make the tests run would print "Entering
    # directory" lines and see COVERAGE=1
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
    "COVERAGE",
)


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path, monkeypatch):
    home = tmp_path / "cs-home"
    monkeypatch.setenv("CS_POSTHOG_HOME", str(home))
    monkeypatch.setenv("CS_POSTHOG_SECRET_STORE", "file")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    from cs_posthog import secrets

    secrets.forget_secrets()  # redaction is process-wide; each test's App has its own store
    yield home


@pytest.fixture(autouse=True)
def _no_real_customerscore(monkeypatch):
    """The wizard and `connect --no-input` check the Customerscore keys where they are typed: never
    with the real Customerscore (a test that does not point --cs-url at a sandbox finds it "not
    checked", as when it is unreachable)."""
    from urllib.parse import urlsplit

    from cs_posthog.wizard import step_customerscore as S2

    real = getattr(S2, "check_key", None)
    if real is None:
        return

    def check_key(url, api_key, tracker_key=None, **kw):
        if (urlsplit(url).hostname or "").endswith("customerscore.io"):
            return S2.KeyCheck("unchecked", "Customerscore did not answer (tests are offline)", 75)
        return real(url, api_key, tracker_key, **kw)

    monkeypatch.setattr(S2, "check_key", check_key)


@pytest.fixture
def home(hermetic_env):
    return hermetic_env


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    """setup_logging() binds a handler to the current stderr; don't let it outlive the test."""
    yield
    import logging

    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_cs_posthog", False):
            root.removeHandler(h)


FAKE_CRONTAB = """#!/bin/sh
# a stand-in for crontab(1): -l prints the table, - replaces it from stdin
f="$FAKE_CRONTAB_FILE"
case "$1" in
  -l) if [ -f "$f" ]; then cat "$f"; else echo "no crontab for tester" >&2; exit 1; fi ;;
  -)  cat > "$f" ;;
  *)  echo "usage" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def crontab(tmp_path, monkeypatch):
    """A stand-in for crontab(1) on CS_POSTHOG_CRONTAB; returns the file that holds the table."""
    prog = tmp_path / "fake-crontab"
    prog.write_text(FAKE_CRONTAB)
    prog.chmod(0o755)
    table = tmp_path / "crontab.txt"
    monkeypatch.setenv("CS_POSTHOG_CRONTAB", str(prog))
    monkeypatch.setenv("FAKE_CRONTAB_FILE", str(table))
    return table
