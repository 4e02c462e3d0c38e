"""PostHog's private API, for cs-posthog. No terminal I/O anywhere in this package.

- ``regions``: US/EU hosts (env overrides), pasted project references. No httpx.
- ``client``: ``PostHogClient`` (pacing, retries, typed errors, definitions, HogQL, keyset pages).
- ``credentials``: ``check_credentials`` -> ``CredentialCheck``; ``raise_for_check``.
- ``hogql``: property references, Person filters, count/preview/event-volume queries. No httpx.

Import the modules themselves (nothing is re-exported here, so that importing the package stays cheap).
"""
