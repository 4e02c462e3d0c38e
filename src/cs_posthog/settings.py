"""What the environment may change, read once: ``Settings.from_environ(os.environ)``.

The one place in cs-posthog that reads environment variables (``cli.py`` besides, for Click's
completion hook). ``App.from_environ`` (``app.py``) calls it once per invocation and hands the
values down: the home to ``paths``, the keys and the store's mode to the ``SecretStore``, the region
hosts, timeouts and pacing to the API clients, the page size to the engine. Nothing below reads
``os.environ``, so a second App in the same process (the demo's) changes nothing for the first.

Plain values, parsed leniently as before (an unreadable number is the default); the region hosts
stay raw text, checked where they are used so that a bad override fails only the commands that
reach PostHog, with the variable's name in the message. Light: no dependency imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HOME_ENV = "CS_POSTHOG_HOME"
STORE_ENV = "CS_POSTHOG_SECRET_STORE"
POSTHOG_KEY_ENV = "POSTHOG_PERSONAL_API_KEY"
CUSTOMERSCORE_KEY_ENV = "CUSTOMERSCORE_API_KEY"
US_HOST_ENV = "CS_POSTHOG_US_HOST"
EU_HOST_ENV = "CS_POSTHOG_EU_HOST"
# Pacing scale for sandboxes with a scaled clock (``--rate-limits fast`` is 60x); ``off`` (or 0)
# turns client-side pacing off. Both clients get it, so they always agree. Never needed for real APIs.
RATE_SCALE_ENV = "CS_POSTHOG_RATE_SCALE"
TIMEOUT_ENV = "CS_POSTHOG_TIMEOUT"
# Overall time allowed for one attempt (request sent, whole answer read). CS_POSTHOG_DEADLINE
# overrides every one; without it, CS_POSTHOG_TIMEOUT (when set) makes every deadline 4x that (5 s at least).
DEADLINE_ENV = "CS_POSTHOG_DEADLINE"
PAGE_SIZE_ENV = "CS_POSTHOG_PAGE_SIZE"
DEBUG_ENV = "CS_POSTHOG_DEBUG"
CRONTAB_ENV = "CS_POSTHOG_CRONTAB"
# Tests (and anyone curious) can run the demo against a sandbox they started themselves:
# the sandbox's JSON line in this variable; the demo then leaves that sandbox running.
DEMO_SANDBOX_ENV = "CS_POSTHOG_DEMO_SANDBOX"


@dataclass(frozen=True)
class Settings:
    """The environment's say, as values. ``Settings()`` is a plain installation (no variable set)."""

    home: str | None = None  # CS_POSTHOG_HOME: one directory for config, state and logs
    secret_store: str = "auto"  # CS_POSTHOG_SECRET_STORE: auto, file or keyring
    # the keys from POSTHOG_PERSONAL_API_KEY / CUSTOMERSCORE_API_KEY ("" when unset); never in a repr
    posthog_key: str = field(default="", repr=False)
    customerscore_key: str = field(default="", repr=False)
    us_host: str = ""  # CS_POSTHOG_US_HOST / _EU_HOST: region host overrides, raw (checked where used)
    eu_host: str = ""
    rate_scale: float | None = 1.0  # CS_POSTHOG_RATE_SCALE; None: no client-side pacing
    timeout_s: float | None = None  # CS_POSTHOG_TIMEOUT: every client timeout
    deadline_s: float | None = None  # CS_POSTHOG_DEADLINE: every attempt's overall deadline
    page_size: int | None = None  # CS_POSTHOG_PAGE_SIZE: rows per PostHog query (200 to 50,000)
    debug: bool = False  # CS_POSTHOG_DEBUG=1
    crontab: str = "crontab"  # CS_POSTHOG_CRONTAB: a program with crontab's interface
    demo_sandbox: str | None = None  # CS_POSTHOG_DEMO_SANDBOX: the demo attaches to this sandbox

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            home=env.get(HOME_ENV) or None,
            secret_store=env.get(STORE_ENV) or "auto",
            posthog_key=(env.get(POSTHOG_KEY_ENV) or "").strip(),
            customerscore_key=(env.get(CUSTOMERSCORE_KEY_ENV) or "").strip(),
            us_host=(env.get(US_HOST_ENV) or "").strip(),
            eu_host=(env.get(EU_HOST_ENV) or "").strip(),
            rate_scale=_rate_scale(env.get(RATE_SCALE_ENV)),
            timeout_s=_seconds(env.get(TIMEOUT_ENV)),
            deadline_s=_seconds(env.get(DEADLINE_ENV)),
            page_size=_page_size(env.get(PAGE_SIZE_ENV)),
            debug=env.get(DEBUG_ENV) == "1",
            crontab=env.get(CRONTAB_ENV) or "crontab",
            demo_sandbox=env.get(DEMO_SANDBOX_ENV) or None,
        )


def _rate_scale(raw: str | None) -> float | None:
    """``CS_POSTHOG_RATE_SCALE``: a multiplier (1 unset or unreadable); ``off``, ``none``, 0 or less: None."""
    text = (raw or "").strip().lower()
    if not text:
        return 1.0
    if text in ("off", "none", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        return 1.0
    return value if value > 0 else None


def _seconds(raw: str | None) -> float | None:
    """Seconds, at least 0.1; None when unset or unreadable."""
    if not raw:
        return None
    try:
        return max(0.1, float(raw))
    except ValueError:
        return None


def _page_size(raw: str | None) -> int | None:
    """``CS_POSTHOG_PAGE_SIZE``: rows per PostHog query (200 to 50,000; default 10,000). For tests and
    benchmarks that need many pages from little data; the default suits real projects."""
    text = (raw or "").strip()
    if not text:
        return None
    try:
        return max(200, min(50_000, int(text)))
    except ValueError:
        return None

