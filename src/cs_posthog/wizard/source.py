"""The wizard's data source on a real PostHog project (``PostHogClient`` + ``posthog.hogql``).

One client per project and key, shared by the prompts' background threads (the client is
thread-safe). Property searches are cached by the completer, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cs_posthog.config import PersonFilter, PostHogSettings


class PostHogSource:
    def __init__(self, settings: PostHogSettings, api_key: str) -> None:
        from cs_posthog.posthog.client import PostHogClient

        self.client = PostHogClient(
            settings.host, api_key, settings.project_id, query_budget_per_hour=settings.query_budget_per_hour
        )

    def close(self) -> None:
        self.client.close()

    def event_names(self) -> list[str]:
        return [d.name for d in self.client.event_definitions()]

    def event_volumes(self, days: int = 30) -> dict[str, int]:
        from cs_posthog.posthog.hogql import event_volumes

        return event_volumes(self.client, days)

    def person_properties(self, search: str | None = None) -> list[str]:
        return [p.name for p in self.client.person_properties(search)]

    def count_persons(self, filters: list[PersonFilter]) -> int:
        from cs_posthog.posthog.hogql import count_persons

        return count_persons(self.client, filters)

    def preview_persons(
        self, filters: list[PersonFilter], extra_columns: tuple[str, ...] = ()
    ) -> tuple[list[str], list[list[Any]]]:
        from cs_posthog.posthog.hogql import preview_persons

        return preview_persons(self.client, filters, extra_columns)
