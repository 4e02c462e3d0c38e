"""What the sync needs of each API client, as ``Protocol``s: the engine is typed against these, and
``PostHogClient`` / ``CustomerscoreClient`` are the implementations (tests may hand in others)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cs_posthog.customerscore.client import Delivery
    from cs_posthog.http import Stats
    from cs_posthog.posthog.client import EventDefinition, Project, QueryResult, Row


class PostHogReader(Protocol):
    """The PostHog side of a sync: HogQL queries (one, or keyset pages), the project, its events."""

    @property
    def stats(self) -> Stats: ...

    def project(self) -> Project: ...

    def event_definitions(self) -> list[EventDefinition]: ...

    def query(
        self,
        hogql: str,
        values: dict[str, Any] | None = None,
        *,
        name: str,
        modifiers: dict[str, Any] | None = None,
    ) -> QueryResult: ...

    def iter_pages(
        self,
        build: Callable[[Any], tuple[str, dict[str, Any]]],
        key_of: Callable[[Row], Any],
        page_size: int = ...,
        *,
        name: str = ...,
        min_page_size: int = ...,
        max_page_size: int | None = None,
        on_shrink: Callable[[int], None] | None = None,
        on_grow: Callable[[int], None] | None = None,
        modifiers: dict[str, Any] | None = None,
    ) -> Iterator[list[Row]]: ...


class CustomerscoreSender(Protocol):
    """The Customerscore side of a sync: tracker events and contacts, already encoded as JSON."""

    @property
    def stats(self) -> Stats: ...

    def track_encoded(self, parts: Sequence[bytes]) -> Delivery: ...

    def upsert_contacts_encoded(self, parts: Sequence[bytes]) -> Delivery: ...
