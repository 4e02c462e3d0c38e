"""Small shared test helpers (no fixtures here: see conftest.py)."""

from __future__ import annotations

import secrets as _secrets
import string
import sys
from pathlib import Path

from typer.testing import CliRunner


def fake_key(prefix: str = "phx_", n: int = 40) -> str:
    """A key of the right shape, made at run time (never write real-looking keys in code)."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(_secrets.choice(alphabet) for _ in range(n))


def run_cli(*args: str, input: str | None = None, env: dict | None = None):
    """Invoke the Typer app in-process with stdout and stderr kept apart."""
    from cs_posthog.cli import app

    return CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)


def sample_config_dict() -> dict:
    return {
        "version": 1,
        "posthog": {
            "region": "eu",
            "host": "https://eu.posthog.com",
            "project_id": 12345,
            "project_name": "Acme",
            "timezone": "Europe/Prague",
        },
        "customerscore": {"api_url": "https://api.customerscore.io", "tracker_key": "CS-ABCD1"},
        "identification": {"kind": "person_property", "property": "organization_id"},
        "events": {"selected": ["$pageview", "invoice_paid"]},
        "persons": {
            "contact_id": "person_id",
            "filters": [
                {"property": "plan", "operator": "equals", "value": "pro"},
                {"property": "phone", "operator": "is_not_set"},
            ],
        },
    }


def sandbox_env(monkeypatch, info: dict, *, keys: bool = True) -> dict:
    """The sandbox stands in for PostHog US and EU, no client-side pacing (it runs without limits) and,
    with ``keys``, its keys in the environment. Returns ``info``."""
    monkeypatch.setenv("CS_POSTHOG_US_HOST", info["posthog_us"])
    monkeypatch.setenv("CS_POSTHOG_EU_HOST", info["posthog_eu"])
    monkeypatch.setenv("CS_POSTHOG_RATE_SCALE", "off")
    if keys:
        monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", info["api_key"])
        monkeypatch.setenv("CUSTOMERSCORE_API_KEY", info["customerscore_api_key"])
    return info


def cs_posthog_cmd() -> list[str]:
    """The installed console script (as a user runs it), else ``python -m cs_posthog``."""
    script = Path(sys.executable).parent / "cs-posthog"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cs_posthog"]
