"""One sync run end to end: the lock, the clients (keys from the ``SecretStore``), the state, the engine.

The caller hands down what the run needs: the ``Paths`` (lock, state, config), the secret store and
the ``Settings`` (region hosts, timeouts, pacing, page size); nothing here reads the environment.

``run_sync`` returns the report and the error that ended the run (or None); the command decides
how to show them. No terminal I/O here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cs_posthog.config import save_query_tier
from cs_posthog.customerscore.client import CustomerscoreClient
from cs_posthog.errors import CsPosthogError
from cs_posthog.posthog.client import PostHogClient
from cs_posthog.settings import Settings
from cs_posthog.sync.engine import ProgressFn, Report, StreamProgress, SyncEngine, SyncOptions
from cs_posthog.sync.state import RunLock, SyncState

if TYPE_CHECKING:
    from pathlib import Path

    from cs_posthog.config import Config
    from cs_posthog.paths import Paths
    from cs_posthog.secrets import SecretStore


def make_posthog_client(cfg: Config, secrets: SecretStore, settings: Settings,
                        **kw: Any) -> PostHogClient:
    """The PostHog client of a config, paced to the stored query tier's budget."""
    return PostHogClient(
        cfg.posthog.host,
        secrets.get("posthog"),
        cfg.posthog.project_id,
        query_budget_per_hour=cfg.posthog.query_budget_per_hour,
        query_tier=getattr(cfg.posthog, "query_tier", None),
        settings=settings,
        **kw,
    )


def remember_query_tier(cfg: Config, client: PostHogClient, config_file: Path, report: Report | None = None) -> bool:
    """When ``client`` found out PostHog's query tier during the run (a 429 revealing the legacy
    tier), store it in the saved config so the next runs pace to it from their first query, and
    say so in the report's warnings. True when the config changed. Never raises: a config that
    cannot be written costs the next run one more throttled answer, not this run."""
    tier = getattr(client, "query_tier", None)
    when = getattr(client, "query_tier_detected_at", None)
    if tier is None or when is None or tier == getattr(cfg.posthog, "query_tier", None):
        return False

    saved = False
    try:
        saved = save_query_tier(tier, when, config_file)
    except (CsPosthogError, OSError) as exc:
        logging.getLogger(__name__).warning("could not store PostHog's query tier in the config: %s", exc)
    try:
        cfg.posthog.query_tier, cfg.posthog.query_tier_detected_at = tier, when
    except Exception:  # a caller's config object that refuses it: the saved file is what matters
        pass
    if report is not None and tier == "legacy":
        budget = getattr(client, "query_budget_per_hour", 120)
        report.warnings.append(
            f"PostHog limits this key to {budget} HogQL queries an hour (its legacy query tier); "
            + ("later syncs pace to that from the start (see `cs-posthog status`)" if saved
               else "this run paced to it once PostHog said so")
        )
    return saved


def make_customerscore_client(cfg: Config, secrets: SecretStore,
                              settings: Settings) -> CustomerscoreClient:
    return CustomerscoreClient(cfg.customerscore.api_url, secrets.get("customerscore"), cfg.customerscore.tracker_key,
                               settings=settings)


def with_heartbeat(progress: ProgressFn | None, lock: RunLock | None) -> ProgressFn | None:
    """``progress`` that also touches the lock's heartbeat: the engine reports after every page it
    reads and every batch it sends, so ``status`` can tell a sync that stopped making progress (a
    hung connection) from one that is working. No lock (dry run): ``progress`` unchanged."""
    if lock is None:
        return progress

    def report(snapshot: StreamProgress) -> None:
        lock.heartbeat()
        if progress is not None:
            progress(snapshot)

    return report


def run_sync(
    cfg: Config,
    *,
    paths: Paths,
    secrets: SecretStore,
    settings: Settings,
    options: SyncOptions | None = None,
    progress: ProgressFn | None = None,
    posthog: PostHogClient | None = None,
    customerscore: CustomerscoreClient | None = None,
) -> tuple[Report, BaseException | None]:
    """Run one sync. Raises ``LockHeldError`` (75) at once when another sync holds the lock, and
    configuration/secret errors (78) before anything is read; every later failure ends up in the
    report and the returned error (what was acknowledged before it is kept)."""
    options = options or SyncOptions()
    secrets.register_known()  # the run's report is stored with every key this installation has masked
    lock = None if options.dry_run else RunLock(paths.lock_file).acquire()
    own_ph = own_cs = False
    state = None
    try:
        if posthog is None:
            posthog, own_ph = make_posthog_client(cfg, secrets, settings), True
        if customerscore is None and not options.dry_run:
            customerscore, own_cs = make_customerscore_client(cfg, secrets, settings), True
        if lock is not None:  # waiting for the query budget is not being stuck (status reads the heartbeat)
            posthog.on_wait(lock.heartbeat)
        state = SyncState(paths.state_db, readonly=options.dry_run)
        engine = SyncEngine(cfg, posthog, customerscore, state, options=options,
                            progress=with_heartbeat(progress, lock))
        try:
            report = engine.run()
        finally:
            if not options.dry_run:
                remember_query_tier(cfg, posthog, paths.config_file, getattr(engine, "report", None))
        return report, engine.error
    finally:
        if state is not None:
            state.close()
        if lock is not None and posthog is not None:
            posthog.on_wait(None)
        for client, own in ((posthog, own_ph), (customerscore, own_cs)):
            if own and client is not None:
                try:
                    client.close()
                except Exception:
                    pass
        if lock is not None:
            lock.release()
