"""Base URLs: PostHog Cloud's two regions and the one check every configured address passes.

Below ``config`` and both API clients (they import it; it imports neither)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import httpx

from cs_posthog.secrets import no_key

US_HOST = "https://us.posthog.com"
EU_HOST = "https://eu.posthog.com"


def check_base_url(v: str) -> str:
    """An http(s) base URL (an origin, or an origin and a path prefix) without trailing slash; plain
    http only for loopback. Refused as well: what is no base URL but a paste gone wrong, which would
    otherwise pass as a host nobody can reach (``https://api.example.comhttp://127.0.0.1:8000`` is
    host ``api.example.comhttp`` and a path): a second scheme, an empty port, a query, a fragment,
    credentials."""
    v = no_key(v.strip().rstrip("/"))
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {v!r}")
    if "@" in parts.netloc:
        raise ValueError("a base URL carries no user name or password (not shown here)")
    if "://" in v[len(parts.scheme) + 3:]:
        raise ValueError(f"two URLs run together: {v!r}")
    if parts.netloc.endswith(":") or parts.query or parts.fragment or "?" in v or "#" in v:
        raise ValueError(f"a base URL has no empty port, query or fragment: {v!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"only https:// is allowed except on loopback: {v!r}")

    try:  # what the HTTP client will make of it: control characters, bad ports, IDNA hosts
        _ = parts.port  # raises ValueError for a port out of range
        httpx.Request("GET", httpx.URL(v).join("/api/"))
    except (httpx.InvalidURL, ValueError) as exc:  # idna's errors are ValueErrors
        raise ValueError(f"not a usable URL: {v!r} ({exc})") from None
    return v


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
