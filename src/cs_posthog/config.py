"""The integration's configuration: a pydantic model, saved as TOML (atomic, 0600 in a 0700 dir).

Secrets are not part of it (see ``secrets.py``). The wizard's draft is the same model with every
section optional, saved beside the config.
"""

from __future__ import annotations

import builtins
import errno
import os
import re
import tomllib
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from cs_posthog.errors import InvalidConfigError, NotConnectedError
from cs_posthog.fsutil import atomic_write_text
from cs_posthog.secrets import no_key
from cs_posthog.urls import check_base_url

# Still 1: fields added since (posthog.query_tier and its date) are optional, so every file written
# before them loads as it is. Bump it only for a change an older cs-posthog would misread.
CONFIG_VERSION = 1

CUSTOMERSCORE_URL = "https://api.customerscore.io"
# how far back the first sync reads events; the wizard's volumes and counts use the same window
DEFAULT_BACKFILL_DAYS = 30


class _Model(BaseModel):
    # No whitespace stripping: PostHog property and event names may carry leading or trailing spaces.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Region(StrEnum):
    US = "us"
    EU = "eu"
    SELF_HOSTED = "self-hosted"


class PostHogSettings(_Model):
    region: Region
    host: str = Field(description="Base URL of the PostHog API for this project")
    project_id: int = Field(gt=0, strict=True)  # strict: `true` is no project id
    project_name: str = ""
    timezone: str = "UTC"
    # Accounts still on PostHog's old limit of 120 HogQL queries an hour can lower this.
    query_budget_per_hour: int = Field(default=2400, gt=0, le=2400, strict=True)
    # PostHog's throttle tier for /query/, found out by a sync (a 429 that reveals the legacy tier,
    # 120 queries an hour): None is unknown, paced as "current" (2,400 an hour).
    query_tier: Literal["current", "legacy"] | None = None
    query_tier_detected_at: datetime | None = None

    @property
    def effective_query_budget(self) -> int:
        """The /query/ budget per hour a client paces to: the tier's, or the configured one when lower."""
        tier_budget = 120 if self.query_tier == "legacy" else 2400
        return min(self.query_budget_per_hour, tier_budget)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_base_url(v)


class CustomerscoreSettings(_Model):
    api_url: str = CUSTOMERSCORE_URL
    tracker_key: str = Field(min_length=1, max_length=255)

    @field_validator("api_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = check_base_url(v)
        # Accept the REST base as documented (…/api/v1) as well as the bare origin.
        return re.sub(r"/api/v1$", "", v)

    @field_validator("tracker_key")
    @classmethod
    def _tracker(cls, v: str) -> str:
        v = no_key(v.strip())
        if not v.startswith("CS-"):
            raise ValueError("a tracker key starts with 'CS-'")
        return v


def _queryable_name(v: str | None) -> str | None:
    """Property names reach HogQL as quoted identifiers, which cannot hold NUL (PostHog's parser
    drops it and reads another property). None (an optional name left out) passes."""
    if v is None:
        return v
    if "\0" in v:
        raise ValueError("a property name cannot contain a NUL character")
    return no_key(v)


GROUP_INDEXES = range(5)  # PostHog has five group type slots: $group_0 .. $group_4


class Identification(_Model):
    """What names an event's and a contact's customer.

    ``person_property``: a Person property holds the customer id (``property``). ``group``: PostHog
    group analytics; the event's group of type ``group_type_index`` (``$group_N``, named
    ``group_type``) is the customer, identified by the group key, or by the group property
    ``property`` when set. A Person's customer is then the group of their most recent selected event
    in the backfill window (PostHog keeps no Person-to-group link elsewhere)."""

    kind: Literal["person_property", "group"] = "person_property"
    property: str | None = Field(default=None, min_length=1, max_length=400)
    group_type: str | None = Field(default=None, min_length=1, max_length=400)
    group_type_index: int | None = Field(default=None, ge=0, le=4, strict=True)

    _name = field_validator("property")(_queryable_name)
    _type_name = field_validator("group_type")(no_key)

    @model_validator(mode="after")
    def _shape(self) -> Identification:
        if self.kind == "person_property":
            if self.property is None:
                raise ValueError("a person_property identification needs `property`")
            if self.group_type is not None or self.group_type_index is not None:
                raise ValueError("group_type and group_type_index belong to kind = \"group\"")
        elif self.group_type_index is None:
            raise ValueError("a group identification needs `group_type_index` (0 to 4)")
        return self

    @builtins.property  # (the field `property` hides the builtin in this class body)
    def is_group(self) -> bool:
        return self.kind == "group"

    @builtins.property
    def person_property(self) -> str | None:
        """The Person property holding the customer id; None in group mode."""
        return None if self.is_group else self.property

    @builtins.property
    def group_property(self) -> str | None:
        """The group property holding the customer id; None: the group key (or Person mode)."""
        return self.property if self.is_group else None

    @builtins.property
    def group_label(self) -> str:
        """``company`` (or ``group type 2`` when its name is unknown)."""
        return self.group_type or f"group type {self.group_type_index}"

    def describe(self) -> str:
        """For summaries: ``Person property organization_id``, ``company group key``,
        ``company group property crm_id``."""
        if not self.is_group:
            return f"Person property {self.property}"
        if self.property is None:
            return f"{self.group_label} group key"
        return f"{self.group_label} group property {self.property}"


class Operator(StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    IS_SET = "is_set"
    IS_NOT_SET = "is_not_set"

    @property
    def needs_value(self) -> bool:
        return self in (Operator.EQUALS, Operator.NOT_EQUALS)

    @property
    def label(self) -> str:
        return {
            "equals": "equals",
            "not_equals": "does not equal",
            "is_set": "is set",
            "is_not_set": "is not set",
        }[self.value]


class PersonFilter(_Model):
    property: str = Field(min_length=1, max_length=400)
    operator: Operator
    value: str | None = None

    _name = field_validator("property")(_queryable_name)
    _no_key = field_validator("value")(no_key)

    @model_validator(mode="after")
    def _value(self) -> PersonFilter:
        if self.operator.needs_value and self.value is None:
            raise ValueError(f"operator '{self.operator.value}' needs a value")
        if not self.operator.needs_value and self.value is not None:
            raise ValueError(f"operator '{self.operator.value}' takes no value")
        return self

    def describe(self) -> str:
        if self.operator.needs_value:
            return f"{self.property} {self.operator.label} {self.value!r}"
        return f"{self.property} {self.operator.label}"


class EventsSettings(_Model):
    selected: list[str] = Field(min_length=1)

    @field_validator("selected")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for name in v:
            if not name:
                raise ValueError("an event name is empty")
            no_key(name)
            if name not in out:
                out.append(name)
        return out


_CODENAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")


def suggest_codename(prop: str) -> str:
    """The attribute codename a Person property is sent as unless the user types another:
    ``$initial_referrer`` -> ``initial_referrer``, ``Plan Name`` -> ``plan_name``."""
    text = re.sub(r"[^a-z0-9]+", "_", prop.lower()).strip("_")
    if not text or not text[0].isalpha():
        text = "attr_" + text
    return text[:100].rstrip("_")


def codename_problem(codename: str) -> str | None:
    """Why ``codename`` cannot be a Customerscore attribute codename, or None. Customerscore drops an
    attribute whose key is no codename defined there, silently (docs/customerscore-api.md), so what
    cs-posthog sends is held to the shape codenames have: lower case letters, digits and
    underscores, starting with a letter."""
    if not _CODENAME_RE.match(codename):
        return ("an attribute codename is lower case letters, digits and underscores, starting with a "
                f"letter (for example {suggest_codename(codename) or 'plan'!s})")
    return None


class ContactAttribute(_Model):
    """A Person property sent as a contact attribute, under a Customerscore attribute codename."""

    property: str = Field(min_length=1, max_length=400)
    codename: str = Field(min_length=1, max_length=100)

    _name = field_validator("property")(_queryable_name)

    @field_validator("codename")
    @classmethod
    def _codename(cls, v: str) -> str:
        if (why := codename_problem(v)) is not None:
            raise ValueError(why)
        return v


class PersonsSettings(_Model):
    filters: list[PersonFilter] = Field(default_factory=list)
    # Person properties sent as contact attributes besides email (always sent, as `email`, when set)
    attributes: list[ContactAttribute] = Field(default_factory=list)
    # "person_id" (PostHog's person UUID) or the name of a Person property.
    contact_id: str = Field(default="person_id", min_length=1, max_length=400)
    # Whether the filters choose the events too: True, only the events of the Persons matching them are
    # sent; False, the events of every Person with a customer id (the filters choose the contacts only).
    # Absent (a config written before the option existed): False, so that an upgrade does not change
    # what a scheduled sync sends. New setups (the wizard, `connect --no-input`) write True unless told
    # otherwise (`--no-filter-events`): it is what a person who narrows the Persons most likely means.
    filter_events: bool = Field(default=False, strict=True)

    _name = field_validator("contact_id")(_queryable_name)

    @field_validator("attributes")
    @classmethod
    def _one_codename_each(cls, v: list[ContactAttribute]) -> list[ContactAttribute]:
        seen: dict[str, str] = {"email": "email"}  # email is always sent under its own name
        for a in v:
            if seen.get(a.codename, a.property) != a.property:
                raise ValueError(f"two properties are sent as the attribute {a.codename!r}")
            seen[a.codename] = a.property
        return v


class SyncSettings(_Model):
    backfill_days: int = Field(default=DEFAULT_BACKFILL_DAYS, ge=1, le=3650, strict=True)
    overlap_minutes: int = Field(default=10, ge=0, le=24 * 60, strict=True)
    max_lateness_days: int = Field(default=3, ge=1, le=90, strict=True)


class Config(_Model):
    version: int = CONFIG_VERSION
    posthog: PostHogSettings
    customerscore: CustomerscoreSettings
    identification: Identification
    events: EventsSettings
    persons: PersonsSettings = Field(default_factory=PersonsSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v > CONFIG_VERSION:
            raise ValueError(
                f"written by a newer cs-posthog (version {v}; this one reads up to {CONFIG_VERSION})"
            )
        if v < 1:
            raise ValueError("must be 1 or more")
        return v

    def all_filters(self) -> list[PersonFilter]:
        """The saved filters with the locked condition `{customer property} is set` first (Person
        mode; in group mode there is no locked condition: the customer comes from the events)."""
        prop = self.identification.person_property
        if prop is None:
            return list(self.persons.filters)
        locked = PersonFilter(property=prop, operator=Operator.IS_SET)
        rest = [f for f in self.persons.filters if f != locked]
        return [locked, *rest]


class Draft(_Model):
    """The wizard's progress: every section optional, same shapes as ``Config``."""

    version: int = CONFIG_VERSION
    posthog: PostHogSettings | None = None
    customerscore: CustomerscoreSettings | None = None
    identification: Identification | None = None
    events: EventsSettings | None = None
    persons: PersonsSettings | None = None

    @classmethod
    def of(cls, cfg: Config) -> Draft:
        """A saved configuration as a draft to edit (its sections shared, not copied)."""
        return cls(**{k: getattr(cfg, k) for k in _SECTIONS})

    def to_config(self, base: Config | None = None) -> Config:
        """The finished draft as a configuration (``base``: the one it replaces, whose version and
        sync settings it keeps). Raises pydantic's ValidationError when a section is missing."""
        data: dict[str, Any] = {k: getattr(self, k) for k in _SECTIONS}
        if base is not None:
            data.update(version=base.version, sync=base.sync)
        return Config.model_validate(data)


_SECTIONS = ("posthog", "customerscore", "identification", "events", "persons")


# --- TOML I/O --------------------------------------------------------------------------------
def _dump(model: BaseModel) -> str:
    data = model.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)


def save_config(cfg: Config, path: Path) -> Path:
    atomic_write_text(path, _dump(cfg))
    return path


def save_query_tier(tier: str, detected_at: datetime | None, path: Path) -> bool:
    """Record PostHog's query tier in the config at ``path`` (read fresh from disk, so that nothing
    else in it changes; atomic). False when there is no valid config to update or it already says so."""
    cfg = load_config(path)
    if cfg.posthog.query_tier == tier:
        return False
    cfg.posthog.query_tier = tier  # type: ignore[assignment]
    cfg.posthog.query_tier_detected_at = detected_at
    save_config(cfg, path)
    return True


def save_draft(draft: Draft, path: Path) -> Path:
    atomic_write_text(path, _dump(draft))
    return path


def load_config(path: Path) -> Config:
    """Load and validate the config at ``path`` (``Paths.config_file``). Raises NotConnectedError or
    InvalidConfigError (exit 78)."""
    if not _exists(path):
        raise NotConnectedError()
    return _load(path, Config)


def load_draft(path: Path) -> Draft | None:
    if not _exists(path):
        return None
    return _load(path, Draft)


def _exists(path: Path) -> bool:
    """Whether there is a file to read at ``path``. A symbolic link there that leads nowhere (its target
    is missing, or it loops) is not "no file": an InvalidConfigError naming the link (exit 78)."""
    if path.exists():
        return True
    if not path.is_symlink():
        return False
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidConfigError(
                f"{path}: a symbolic link that loops ({exc.strerror})",
                hint="Point the link at the real file (ln -sfn TARGET LINK), "
                     "or remove it and run `cs-posthog connect`.",
            ) from None
    raise InvalidConfigError(
        f"{path}: a symbolic link to {os.readlink(path)}, which does not exist",
        hint="Restore the file it points at, point the link elsewhere, or remove it and run `cs-posthog connect`.",
    )


_M = TypeVar("_M", bound=BaseModel)


def _load(path: Path, model: type[_M]) -> _M:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc).split(" (at ")[0]
        line = getattr(exc, "lineno", None) or _line_from_msg(str(exc))
        where = f", line {line}" if line else ""
        raise InvalidConfigError(f"{path}{where}: invalid TOML: {msg}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        key = _display_key(loc)
        line = find_key_line(text, loc)
        where = f", line {line}" if line else ""
        msg = _short_msg(err)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InvalidConfigError(f"{path}{where}: {key}: {msg}{more}") from None


def _line_from_msg(msg: str) -> int | None:
    m = re.search(r"line (\d+)", msg)
    return int(m.group(1)) if m else None


def _display_key(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(top level)"


def _short_msg(err: ErrorDetails) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err.get("msg", "invalid value")
    msg = re.sub(r"^Value error, ", "", msg)
    return msg


_TABLE_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")


def find_key_line(text: str, loc: list[str]) -> int | None:
    """Best-effort 1-based line of a dotted key in TOML text (for error messages).

    Finds the innermost table header or key assignment matching the tail of ``loc``; list
    indexes are skipped. Falls back to the line of the closest enclosing table.
    """
    names = [p for p in loc if not p.isdigit()]
    if not names:
        return None
    best: int | None = None
    table: list[str] = []
    for no, line in enumerate(text.splitlines(), start=1):
        m = _TABLE_RE.match(line)
        if m:
            table = [s.strip().strip("\"'") for s in m.group(1).split(".")]
            if table == names[: len(table)] and best is None and len(table) == len(names):
                return no
            if table == names[: len(table)]:
                best = best or no
            continue
        m = _KEY_RE.match(line)
        if m:
            key = [s.strip().strip("\"'") for s in m.group(1).split(".")]
            full = table + key
            if full == names or (full == names[: len(full)] and len(full) >= 1 and full[:1] == names[:1]):
                if full == names:
                    return no
                best = no
    return best
