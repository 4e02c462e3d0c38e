"""One sync run end to end: the lock, the clients (keys from ``secrets``), the state, the engine.

``run_sync`` returns the report and the error that ended the run (or None); the command decides
how to show them. No terminal I/O here.
"""

from __future__ import annotations

from typing import Any

from cs_posthog.sync.engine import ProgressFn, Report, SyncEngine, SyncOptions


def make_posthog_client(cfg: Any) -> Any:
    from cs_posthog.posthog.client import PostHogClient
    from cs_posthog.secrets import get_secret

    return PostHogClient(
        cfg.posthog.host,
        get_secret("posthog"),
        cfg.posthog.project_id,
        query_budget_per_hour=cfg.posthog.query_budget_per_hour,
    )


def make_customerscore_client(cfg: Any) -> Any:
    from cs_posthog.customerscore.client import CustomerscoreClient
    from cs_posthog.secrets import get_secret

    return CustomerscoreClient(cfg.customerscore.api_url, get_secret("customerscore"), cfg.customerscore.tracker_key)


def run_sync(
    cfg: Any = None,
    *,
    options: SyncOptions | None = None,
    progress: ProgressFn | None = None,
    posthog: Any = None,
    customerscore: Any = None,
) -> tuple[Report, BaseException | None]:
    """Run one sync. Raises ``LockHeldError`` (75) at once when another sync holds the lock, and
    configuration/secret errors (78) before anything is read; every later failure ends up in the
    report and the returned error (what was acknowledged before it is kept)."""
    from cs_posthog.config import load_config
    from cs_posthog.paths import get_paths
    from cs_posthog.sync.state import RunLock, SyncState

    options = options or SyncOptions()
    cfg = cfg or load_config()
    paths = get_paths()
    lock = None if options.dry_run else RunLock(paths.lock_file).acquire()
    own_ph = own_cs = False
    state = None
    try:
        if posthog is None:
            posthog, own_ph = make_posthog_client(cfg), True
        if customerscore is None and not options.dry_run:
            customerscore, own_cs = make_customerscore_client(cfg), True
        state = SyncState(paths.state_db, readonly=options.dry_run)
        engine = SyncEngine(cfg, posthog, customerscore, state, options=options, progress=progress)
        report = engine.run()
        return report, engine.error
    finally:
        if state is not None:
            state.close()
        for client, own in ((posthog, own_ph), (customerscore, own_cs)):
            if own and client is not None:
                try:
                    client.close()
                except Exception:
                    pass
        if lock is not None:
            lock.release()
