"""The API clients share one TLS context per process (``http.tls_context``): the CA bundle is loaded
once, not for every client made, and what they verify with is what httpx would have given them."""

from __future__ import annotations

import ssl

import httpx

from cs_posthog.customerscore.client import CustomerscoreClient
from cs_posthog.http import tls_context
from cs_posthog.posthog.client import PostHogClient
from cs_posthog.settings import Settings


def _context_of(client: httpx.Client) -> ssl.SSLContext:
    return client._transport._pool._ssl_context  # httpx's HTTPTransport over an httpcore pool


def test_every_client_verifies_with_the_one_context_httpx_would_make():
    ph = [PostHogClient("https://eu.posthog.com", "phx_" + "a" * 40, project_id=1, settings=Settings())
          for _ in range(2)]
    cs = CustomerscoreClient("https://api.customerscore.io", "k" * 32, "CS-ABCD1", settings=Settings())
    try:
        used = {id(_context_of(c._client)) for c in (*ph, cs)}
        assert used == {id(tls_context())}
        ctx, fresh = tls_context(), httpx.create_ssl_context()
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert ctx.minimum_version == fresh.minimum_version and ctx.options == fresh.options
        assert ctx.cert_store_stats() == fresh.cert_store_stats() and ctx.cert_store_stats()["x509_ca"] > 0
    finally:
        for c in (*ph, cs):
            c.close()
