"""Helpers shared by the PostHog client tests (fixtures are in ``conftest_posthog.py``)."""

from __future__ import annotations

import json
import socket

import httpx

from cs_posthog.http import RetryPolicy
from cs_posthog.sandbox.runner import get_json

FAST_RETRIES = RetryPolicy(max_attempts=6, backoff_base=0.02, backoff_cap=0.1)


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


def chains(ast) -> list[list]:
    """Field chains of a HogQL AST (placeholders' own names left out)."""
    out = []
    if isinstance(ast, dict):
        if ast.get("node") == "Placeholder":
            return out
        if ast.get("node") == "Field":
            out.append(ast["chain"])
        for v in ast.values():
            out.extend(chains(v))
    elif isinstance(ast, list):
        for v in ast:
            out.extend(chains(v))
    return out


def raw_refs(ast, values: dict) -> list[tuple]:
    """The properties a HogQL AST reads through ``JSONExtractRaw(<source>, {placeholder})``: one
    ``(*source chain, property name)`` per call, the name taken from ``values``."""
    out = []
    if isinstance(ast, dict):
        if ast.get("node") == "Call" and ast.get("name") == "JSONExtractRaw":
            source, key = ast["args"]
            assert source["node"] == "Field" and key["node"] == "Placeholder", ast
            out.append((*source["chain"], values[key["expr"]["chain"][0]]))
        for v in ast.values():
            out.extend(raw_refs(v, values))
    elif isinstance(ast, list):
        for v in ast:
            out.extend(raw_refs(v, values))
    return out
