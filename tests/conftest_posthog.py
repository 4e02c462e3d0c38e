"""Fixtures for the PostHog client tests (``pytest_plugins = ["conftest_posthog"]`` in a module).

One sandbox per test module (module scope); the region hosts point at it for each test.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from cs_posthog.http import RetryPolicy
from cs_posthog.sandbox.runner import get_json, start_sandbox

FAST_RETRIES = RetryPolicy(max_attempts=6, backoff_base=0.02, backoff_cap=0.1)


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
    with PostHogClient(ph_env.posthog_url, info["api_key"], info["project_id"], policy=FAST_RETRIES) as client:
        yield client


def sandbox_stats(url: str) -> dict:
    return get_json(url + "/_sandbox/stats")


def route_count(stats: dict, route: str, status: str | None = None) -> int:
    by = stats.get("by_route_status", {}).get(route, {})
    return sum(by.values()) if status is None else by.get(status, 0)


def dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def posthog_error(status: int, type_: str, code: str, detail: str, attr=None, headers=None) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps({"type": type_, "code": code, "detail": detail, "attr": attr}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


class Intercept(httpx.BaseTransport):
    """Real HTTP to the sandbox, except for requests ``rule(request)`` answers itself (a fault the
    sandbox cannot produce)."""

    def __init__(self, rule) -> None:
        self.rule = rule
        self.inner = httpx.HTTPTransport()
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.rule(request)
        if answer is not None:
            return answer
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
