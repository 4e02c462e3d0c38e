"""The wizard's data source on a real PostHog project (``PostHogClient`` + ``posthog.hogql``).

One client per project and key, shared by the prompts' background threads (the client is
thread-safe). Property searches are cached by the completer, not here.

Query budget: the client paces ``/query/`` to the key's hourly budget (the stored tier's, and the
legacy tier's 120 as soon as a 429 reveals it). The live count and the preview ask ``query_wait()``
first and say "paused" instead of blocking a prompt behind the pacer (``wizard.ui.LiveCount``). A
tier found out here is kept in the settings being edited, so it is saved with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cs_posthog.config import DEFAULT_BACKFILL_DAYS
from cs_posthog.posthog.client import PostHogClient
from cs_posthog.posthog.hogql import (
    GroupRef,
    count_events,
    count_groups,
    count_persons,
    event_volumes,
    group_coverage,
    group_indexes,
    preview_group_persons,
    preview_groups,
    preview_persons,
)
from cs_posthog.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cs_posthog.config import PersonFilter, PostHogSettings
    from cs_posthog.posthog.client import GroupType


class PostHogSource:
    def __init__(self, settings: PostHogSettings, api_key: str, *, env: Settings) -> None:
        self.settings = settings
        self.client = PostHogClient(
            settings.host,
            api_key,
            settings.project_id,
            query_budget_per_hour=settings.query_budget_per_hour,
            query_tier=settings.query_tier,
            on_tier_change=self._tier_found,
            settings=env,
        )

    def _tier_found(self, tier: str) -> None:
        try:
            self.settings.query_tier = tier  # type: ignore[assignment]
            self.settings.query_tier_detected_at = self.client.query_tier_detected_at
        except Exception:  # the settings refuse it: pacing already follows the client
            pass

    def close(self) -> None:
        self.client.close()

    # --- the query budget ----------------------------------------------------------------------
    def query_wait(self) -> float:
        """Seconds a query started now would wait for PostHog's query budget (0: none)."""
        return self.client.query_wait()

    def query_budget(self) -> int:
        """The hourly /query/ budget paced to (2,400, or 120 on PostHog's legacy tier)."""
        return self.client.query_budget_per_hour

    # --- data ----------------------------------------------------------------------------------
    def event_names(self) -> list[str]:
        return [d.name for d in self.client.event_definitions()]

    def event_volumes(self, days: int = DEFAULT_BACKFILL_DAYS) -> dict[str, int]:
        return event_volumes(self.client, days)

    def person_properties(self, search: str | None = None) -> list[str]:
        """One page of PostHog's search (100 names; its ``next`` is not followed): the names typed
        so far narrow it, and short terms (substrings of "latest") match nearly everything."""
        return [p.name for p in self.client.person_properties(search, one_page=True)]

    def count_persons(self, filters: list[PersonFilter]) -> int:
        return count_persons(self.client, filters)

    def count_events(self, events: list[str], filters: list[PersonFilter], days: int = DEFAULT_BACKFILL_DAYS,
                     group: GroupRef | None = None) -> int:
        return count_events(self.client, events, filters, days, group=group)

    def preview_persons(
        self, filters: list[PersonFilter], extra_columns: tuple[str, ...] = (), *, group: GroupRef | None = None,
        group_label: str = "group", events: Sequence[str] = (), days: int = DEFAULT_BACKFILL_DAYS,
    ) -> tuple[list[str], list[list[Any]]]:
        """Up to 5 matching Persons; with ``group``, only those who belong to a group of the type
        (``events`` in the last ``days`` days carrying one), with its key."""
        if group is not None:
            return preview_group_persons(self.client, group, group_label, events, filters, extra_columns, days)
        return preview_persons(self.client, filters, extra_columns)

    # --- groups --------------------------------------------------------------------------------
    def group_types(self) -> list[GroupType]:
        """The project's group types; MissingScopesError when the key lacks Group (Read)."""
        return self.client.group_types()

    def group_indexes(self) -> dict[int, int]:
        """Group type index -> number of groups (HogQL: no Group scope needed)."""
        return group_indexes(self.client)

    def group_properties(self, index: int, search: str | None = None) -> list[str]:
        """One page of PostHog's search of the group type's property definitions."""
        return [p.name for p in self.client.group_properties(index, search, one_page=True)]

    def count_groups(self, group: GroupRef) -> int:
        return count_groups(self.client, group)

    def group_coverage(self, group: GroupRef, days: int = DEFAULT_BACKFILL_DAYS, events: Sequence[str] = (),
                       filters: Sequence[PersonFilter] = ()) -> tuple[int, int]:
        """(groups with events, Persons belonging to one) in the last ``days`` days."""
        return group_coverage(self.client, group, days, events, filters)

    def preview_groups(self, group: GroupRef) -> tuple[list[str], list[list[Any]]]:
        return preview_groups(self.client, group)
