"""What every wizard step gets: the output sink, the setup so far, and how to reach PostHog.

The command hands down what the App holds for it: the installation's ``Paths``, its
``SecretStore`` and the ``Settings`` read from the environment (region hosts, timeouts).

The data source (event definitions, Person properties, counts, preview) and the credential check
are passed in, so each step can be driven in tests with a fake or against the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cs_posthog.config import DEFAULT_BACKFILL_DAYS
from cs_posthog.errors import MissingSecretError
from cs_posthog.output import esc
from cs_posthog.secrets import SPECS, Name, register_secret
from cs_posthog.settings import Settings
from cs_posthog.wizard.source import PostHogSource

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cs_posthog.config import Config, ContactAttribute, Draft, PersonFilter, PostHogSettings
    from cs_posthog.output import Output
    from cs_posthog.paths import Paths
    from cs_posthog.posthog.client import GroupType
    from cs_posthog.posthog.credentials import CredentialCheck
    from cs_posthog.posthog.hogql import GroupRef
    from cs_posthog.secrets import SecretStore


class DataSource(Protocol):
    """The few things the wizard reads from a PostHog project."""

    def event_names(self) -> list[str]: ...

    def event_volumes(self, days: int = DEFAULT_BACKFILL_DAYS) -> dict[str, int]: ...

    def person_properties(self, search: str | None = None) -> list[str]: ...

    def count_persons(self, filters: list[PersonFilter]) -> int: ...

    def count_events(self, events: list[str], filters: list[PersonFilter], days: int = DEFAULT_BACKFILL_DAYS,
                     group: GroupRef | None = None) -> int:
        """The selected events of the last ``days`` days whose Person (as now) matches ``filters``
        (and, with ``group``, that carry a group naming a customer)."""
        ...

    def preview_persons(
        self, filters: list[PersonFilter], extra_columns: tuple[str, ...] = (), *, group: GroupRef | None = None,
        group_label: str = "group", events: Sequence[str] = (), days: int = DEFAULT_BACKFILL_DAYS,
    ) -> tuple[list[str], list[list[Any]]]: ...

    # group analytics (identification by a PostHog group)
    def group_types(self) -> list[GroupType]: ...

    def group_indexes(self) -> dict[int, int]: ...

    def group_properties(self, index: int, search: str | None = None) -> list[str]: ...

    def count_groups(self, group: GroupRef) -> int: ...

    def group_coverage(self, group: GroupRef, days: int = DEFAULT_BACKFILL_DAYS, events: Sequence[str] = (),
                       filters: Sequence[PersonFilter] = ()) -> tuple[int, int]:
        """(groups with events, Persons belonging to one) in the last ``days`` days."""
        ...

    def preview_groups(self, group: GroupRef) -> tuple[list[str], list[list[Any]]]: ...


# (api_key, project_ref, host=...) -> CredentialCheck (cs_posthog.posthog.credentials.check_credentials)
CheckCredentials = Callable[..., "CredentialCheck"]
# (PostHogSettings, api_key) -> DataSource
MakeSource = Callable[["PostHogSettings", str], DataSource]


@dataclass
class Prefill:
    """Defaults from flags (``connect --project 123`` on a terminal, the demo): they win over the
    draft or the saved config as the answers offered."""

    project: str | None = None
    tracker_key: str | None = None
    cs_url: str | None = None
    cs_url_given: bool = False  # --cs-url answers the advanced question; the demo only offers its URL
    customer_property: str | None = None
    customer_group: str | None = None  # --customer-group: a group type's name or index
    customer_group_property: str | None = None
    events: list[str] = field(default_factory=list)
    all_events: bool = False
    filters: list[PersonFilter] = field(default_factory=list)
    contact_id: str | None = None
    attributes: list[ContactAttribute] = field(default_factory=list)  # --contact-attribute
    filter_events: bool | None = None  # --filter-events / --no-filter-events
    # name -> (value, where it comes from), offered as "Enter to keep"
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)


class StopWizard(Exception):
    """The user chose to stop for now (e.g. "I'm not sure"): progress is kept, exit 0."""


TOTAL_STEPS = 5
STEP_TITLES = {
    1: "PostHog credentials",
    2: "Customerscore credentials",
    3: "Customer identification",
    4: "Events to track",
    5: "Persons to sync",
}
SECTION_OF_STEP = {1: "posthog", 2: "customerscore", 3: "identification", 4: "events", 5: "persons"}


@dataclass
class WizardContext:
    out: Output
    draft: Draft
    paths: Paths  # where the config, the draft and the key file are
    secrets: SecretStore
    env: Settings  # region hosts, timeouts: what the environment said
    mode: Literal["connect", "edit"] = "connect"
    check_credentials: CheckCredentials | None = None
    make_source: MakeSource | None = None
    host: str | None = None  # --host: self-hosted PostHog
    # edit: keys are stored only when the user saves; connect: as soon as they validate
    pending_secrets: dict[Name, str] = field(default_factory=dict)
    prefill: Prefill = field(default_factory=Prefill)
    # the caller (the demo) runs the first sync itself: say nothing about `cs-posthog sync` or
    # `schedule` after saving
    caller_syncs: bool = False
    # (out, config) -> None: runs the first sync after connect saves (given by the command layer,
    # which owns `sync`; the wizard does not import commands)
    first_sync: Callable[[Output, Config], None] | None = None
    # False when the home is thrown away afterwards (the demo): no "`cs-posthog connect` resumes"
    resumable: bool = True
    _stored: dict[str, str] = field(default_factory=dict)
    _source: DataSource | None = None
    _source_for: tuple[Any, ...] | None = None

    # --- keys --------------------------------------------------------------------------------
    def current_secret(self, name: Literal["posthog", "customerscore"]) -> tuple[str, str] | None:
        """``(value, where)`` of the key to offer as the default: this session's, else the stored one."""
        if name in self.pending_secrets:
            return self.pending_secrets[name], "entered above"
        if name in self.prefill.secrets:
            return self.prefill.secrets[name]

        found = self.secrets.find(name)
        if found is None:
            return None
        return found.value, {"env": "environment", "keyring": "OS keyring", "file": "key file"}[found.source]

    def keep_secret(self, name: Literal["posthog", "customerscore"], value: str) -> None:
        """connect: store now (the draft never holds keys); edit: store on save."""
        register_secret(value)
        self.pending_secrets[name] = value
        if self.mode == "connect":
            self.store_pending(quiet=False)

    def store_pending(self, *, quiet: bool = True) -> None:
        """Store the keys entered in this session (a key taken from the environment too, so that
        cron, which has no such environment, can sync)."""
        for name, value in list(self.pending_secrets.items()):
            if self._stored.get(name) == value:
                continue
            self._stored[name] = value
            spec = SPECS[name]
            if self.secrets.stored_value(name) != value:  # a key kept with Enter is not stored (nor announced) again
                where = self.secrets.store(name, value)
                if not quiet:
                    place = "the OS keyring" if where == "keyring" else str(self.secrets.file)
                    self.out.info(f"  [dim]{spec.label} stored in {esc(place)}.[/dim]")
            env = self.secrets.env_value(name)
            if env and env != value:
                self.out.warn(f"{spec.env} is set in the environment and wins over the stored key; "
                              "unset it or update it.")

    def posthog_key(self) -> str:
        cur = self.current_secret("posthog")
        if cur is None:
            raise MissingSecretError("no PostHog personal API key found")
        return cur[0]

    # --- PostHog data ------------------------------------------------------------------------
    def source(self) -> DataSource:
        if self.draft.posthog is None:
            raise RuntimeError("the PostHog step is not done")
        key = self.posthog_key()
        ident = (self.draft.posthog.host, self.draft.posthog.project_id, key)
        if self._source is None or self._source_for != ident:
            if self.make_source is None:
                self._source = PostHogSource(self.draft.posthog, key, env=self.env)
            else:
                self._source = self.make_source(self.draft.posthog, key)
            self._source_for = ident
        return self._source

    def step_header(self, step: int, *, only: bool = False) -> None:
        title = STEP_TITLES[step]
        label = title if only else f"Step {step} of {TOTAL_STEPS} · {title}"
        self.out.info("")
        self.out.info(f"[bold]{label}[/bold]")
