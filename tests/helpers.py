"""Small shared test helpers (no fixtures here: see conftest.py)."""

from __future__ import annotations

import secrets as _secrets
import string
import sys
from pathlib import Path
from unittest import mock

import typer.main
import typer.testing
from typer.testing import CliRunner

_commands: dict[int, tuple[object, object]] = {}


def _command_of(app):
    """Typer's click command for ``app``, built once: building it (every parameter of every command
    read from the signatures and type hints) costs several times more than most invocations, and a
    click command is made to be invoked many times (each invocation gets a context of its own)."""
    hit = _commands.get(id(app))
    if hit is None or hit[0] is not app:
        hit = _commands[id(app)] = (app, typer.main.get_command(app))
    return hit[1]


def fake_key(prefix: str = "phx_", n: int = 40) -> str:
    """A key of the right shape, made at run time (never write real-looking keys in code)."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(_secrets.choice(alphabet) for _ in range(n))


def run_cli(*args: str, input: str | None = None, env: dict | None = None):
    """Invoke the Typer app in-process with stdout and stderr kept apart."""
    from cs_posthog.cli import app

    with mock.patch.object(typer.testing, "_get_command", _command_of):
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


# --- the App a command would make, from the test's environment (as cli.py does) ------------------
def env_settings():
    """What the environment says now (``Settings.from_environ``), for in-process calls below the CLI."""
    import os

    from cs_posthog.settings import Settings

    return Settings.from_environ(os.environ)


def env_app(**kw):
    """The App a command would make now: the test's CS_POSTHOG_HOME, keys and overrides."""
    import os

    from cs_posthog.app import App

    return App.from_environ(os.environ, **kw)


def env_paths():
    """The files of the test's installation (its CS_POSTHOG_HOME)."""
    return env_app().paths


def env_store():
    """The secret store of the test's installation (a new one: it has seen nothing yet)."""
    return env_app().secrets


def sync_parts() -> dict:
    """What ``run_sync`` needs besides the config, from the test's environment."""
    app = env_app()
    return {"paths": app.paths, "secrets": app.secrets, "settings": app.settings}


def wizard_parts() -> dict:
    """What a ``WizardContext`` gets from the command's App, from the test's environment."""
    app = env_app()
    return {"paths": app.paths, "secrets": app.secrets, "env": app.settings}
