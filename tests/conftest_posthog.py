"""Fixtures for the PostHog client tests (``pytest_plugins = ["conftest_posthog"]`` in a module).

One sandbox per test module (module scope); the region hosts point at it for each test.
"""

from __future__ import annotations

import pytest

from cs_posthog.sandbox.runner import start_sandbox
from helpers import env_settings
from posthog_testlib import FAST_RETRIES


@pytest.fixture(scope="module")
def ph_sandbox():
    with start_sandbox(events=2000, persons=300, customers=40, seed=5, region="eu") as proc:
        yield proc


@pytest.fixture
def ph_env(ph_sandbox, monkeypatch):
    """Region hosts at the sandbox, no client-side pacing (the sandbox runs without limits)."""
    monkeypatch.setenv("CS_POSTHOG_US_HOST", ph_sandbox.info["posthog_us"])
    monkeypatch.setenv("CS_POSTHOG_EU_HOST", ph_sandbox.info["posthog_eu"])
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")
    return ph_sandbox


@pytest.fixture
def ph_client(ph_env):
    from cs_posthog.posthog.client import PostHogClient

    info = ph_env.info
    with PostHogClient(ph_env.posthog_url, info["api_key"], info["project_id"], policy=FAST_RETRIES,
                       settings=env_settings()) as client:
        yield client
