"""PostHog Cloud regions and the project reference a user pastes (an id or a project URL).

No network, no httpx: the wizard and the CLI import this cheaply.

US and EU Cloud are separate databases behind separate hosts; a key sent to the wrong one gets the
same 401 as a bad key. Users often paste the address of any page of their project, e.g.
``https://eu.posthog.com/project/12345/insights``, which names both the region and the project id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cs_posthog.errors import UsageError
from cs_posthog.settings import EU_HOST_ENV, US_HOST_ENV, Settings
from cs_posthog.urls import EU_HOST, US_HOST, check_base_url, is_loopback

US = "us"
EU = "eu"
SELF_HOSTED = "self-hosted"
REGIONS = (US, EU)
HOST_ENV = {US: US_HOST_ENV, EU: EU_HOST_ENV}  # named in the message when an override is unusable
_DEFAULT_HOSTS = {US: US_HOST, EU: EU_HOST}

# Host names (lower case) of PostHog Cloud pages and APIs, by region. app.posthog.com is the
# legacy name of US Cloud (it redirects; never call the API through it). The *.i.posthog.com
# ingestion hosts are what SDK snippets show, so people paste them too.
_CLOUD_NAMES = {
    "us.posthog.com": US,
    "app.posthog.com": US,
    "us.i.posthog.com": US,
    "eu.posthog.com": EU,
    "eu.i.posthog.com": EU,
}

_ID_RE = re.compile(r"^#?\s*(\d{1,18})$")
# /project/123, /projects/123, /environments/123, optionally under /api/
_PROJECT_PATH_RE = re.compile(r"(?P<prefix>.*?)(?:/api)?/(?:project|projects|environments)/(?P<id>\d{1,18})(?:/|$)")
_PROJECT_HINT = (
    "Paste the project's numeric id (PostHog → Settings → Project → Project ID) or the address of any "
    "page of the project, e.g. https://eu.posthog.com/project/12345/insights."
)


@dataclass(frozen=True)
class ProjectRef:
    """What a pasted reference says: the project id, and where it lives when the text says so.

    ``region`` is "us" or "eu" when the text names a Cloud region (or one of the overridden region
    hosts); ``host`` is the base URL of a self-hosted instance (``region`` is then None). A bare id
    says neither.
    """

    id: int
    region: str | None = None
    host: str | None = None


def region_hosts(settings: Settings) -> dict[str, str]:
    """Base URL of each Cloud region: ``{"us": ..., "eu": ...}``.

    ``settings.us_host`` / ``eu_host`` (``CS_POSTHOG_US_HOST`` / ``CS_POSTHOG_EU_HOST``) override them
    (a proxy, or the sandbox in tests). Raises UsageError when an override is not an https URL (http
    only on loopback).
    """
    out: dict[str, str] = {}
    overrides = {US: settings.us_host, EU: settings.eu_host}
    for region in REGIONS:
        env = HOST_ENV[region]
        raw = overrides[region].strip()
        if not raw:
            out[region] = _DEFAULT_HOSTS[region]
            continue
        try:
            out[region] = check_base_url(raw)
        except ValueError as exc:
            raise UsageError(f"{env}: {exc}", hint=f"Set {env} to an https:// base URL, or unset it.") from None
    return out


def region_of_host(host: str, settings: Settings) -> str | None:
    """"us"/"eu" for a base URL that is one of the region hosts (overrides included), else None."""
    base = host.strip().rstrip("/").lower()
    for region, url in region_hosts(settings).items():
        if url.lower() == base:
            return region
    name = urlsplit(base if "://" in base else "https://" + base).hostname or ""
    return _CLOUD_NAMES.get(name)


def normalize_host(host: str, settings: Settings) -> str:
    """A user-given PostHog base URL (``--host``) checked and normalised; UsageError when unfit.

    A scheme-less host gets ``https://``. A Cloud page name maps to its region's API host
    (``app.posthog.com`` is US Cloud).
    """
    text = (host or "").strip()
    if not text:
        raise UsageError("the PostHog host is empty", hint="Give the base URL, e.g. https://posthog.example.com.")
    if "://" not in text:
        text = "https://" + text
    try:
        base = check_base_url(text)
    except ValueError as exc:
        raise UsageError(
            f"not a usable PostHog address: {exc}",
            hint="Give the base URL of your PostHog, e.g. https://posthog.example.com (https only, except localhost).",
        ) from None
    parts = urlsplit(base)
    region = _CLOUD_NAMES.get((parts.hostname or "").lower())
    if region is not None:
        return region_hosts(settings)[region]
    return base


def parse_project_ref(text: str | int, settings: Settings) -> ProjectRef:
    """Read a bare project id or a pasted PostHog URL; UsageError (with a hint) for anything else.

    Accepted: ``12345``; ``https://eu.posthog.com/project/12345/...`` (also ``us.``, legacy
    ``app.posthog.com`` = US, ``/environments/12345``, ``/api/projects/12345/``); the same without
    ``https://``; a self-hosted URL (``https://ph.example.com/project/7``, a path prefix kept), whose
    origin becomes ``host``. Only https, except on loopback.
    """
    if isinstance(text, bool):
        raise UsageError("a project id must be a number", hint=_PROJECT_HINT)
    if isinstance(text, int):
        return ProjectRef(_check_id(text))
    raw = (text or "").strip()
    if not raw:
        raise UsageError("no project given", hint=_PROJECT_HINT)
    m = _ID_RE.match(raw)
    if m:
        return ProjectRef(_check_id(int(m.group(1))))
    if any(c.isspace() for c in raw):
        raise UsageError(f"not a project id or a PostHog URL: {_show(raw)}", hint=_PROJECT_HINT)
    url = raw if "://" in raw else "https://" + raw
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"not a project id or a PostHog URL: {_show(raw)}", hint=_PROJECT_HINT) from None
    hostname = (parts.hostname or "").lower()
    dotless = "." not in hostname and not is_loopback(hostname)
    if parts.scheme not in ("http", "https") or not hostname or (dotless and "://" not in raw):
        raise UsageError(f"not a project id or a PostHog URL: {_show(raw)}", hint=_PROJECT_HINT)
    if parts.scheme == "http" and not is_loopback(hostname):
        raise UsageError(
            f"only https:// PostHog addresses are accepted (except localhost): {_show(raw)}",
            hint="Use the https:// address of your PostHog.",
        )
    path = re.sub(r"/{2,}", "/", parts.path or "")
    pm = _PROJECT_PATH_RE.match(path)
    if pm is None:
        raise UsageError(f"no project id in this address: {_show(raw)}", hint=_PROJECT_HINT)
    project_id = _check_id(int(pm.group("id")))
    netloc = hostname if port is None else f"{hostname}:{port}"
    if ":" in hostname:  # IPv6 literal
        netloc = f"[{hostname}]" if port is None else f"[{hostname}]:{port}"
    origin = f"{parts.scheme}://{netloc}"
    prefix = pm.group("prefix").rstrip("/")
    # an overridden region host (proxy, sandbox) first, then the Cloud names
    for region, base in region_hosts(settings).items():
        if base.lower() in (origin, origin + prefix):
            return ProjectRef(project_id, region=region)
    cloud = _CLOUD_NAMES.get(hostname)
    if cloud is not None:
        return ProjectRef(project_id, region=cloud)
    if hostname == "posthog.com" or hostname.endswith(".posthog.com"):
        raise UsageError(
            f"{hostname} is not a PostHog Cloud app address",
            hint="PostHog Cloud projects live on https://us.posthog.com or https://eu.posthog.com. " + _PROJECT_HINT,
        )
    return ProjectRef(project_id, host=origin + prefix)


def _check_id(value: int) -> int:
    if value <= 0 or value >= 2**63:
        raise UsageError(f"not a valid project id: {value}", hint=_PROJECT_HINT)
    return value


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
