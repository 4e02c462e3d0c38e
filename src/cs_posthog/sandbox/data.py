"""Deterministic sample data for the sandbox PostHog and the sandbox Customerscore.

Everything here is a pure function of ``seed`` and of the anchor time ``now`` (by default the
current time floored to the hour, so that two runs a few seconds apart produce identical data):

* companies (the Customerscore customers) whose ids are stored on Persons per ``id_type``:
  ``string`` (``org_k3x9q2mb``), ``numeric`` (JSON numbers, some above 2^53 such as
  9007199254740993) or ``mixed`` (the default: JSON numbers, zero-padded numeric strings such as
  ``"007"``, and ``org_...`` strings); ``Company.external_id`` is always the exact text of the id
  (``"4711"``, ``"007"``), which is what the sandbox Customerscore knows;
* persons: identified ones (an anonymous distinct id plus an email or user id, sometimes a second
  device) and anonymous ones; most identified persons carry the company id under
  ``organization_id`` (a few carry ``""``, some none at all); email, name, plan, country, a numeric,
  a boolean and a datetime property, JSON nulls, and odd names (``plan tier``, ``it's``,
  ``back`tick``, ``{brace}``, ``ünïcode``, ``$initial_os``). Persons have a history
  (``Person.versions``): about 20% of the company persons got their customer id (with company_name
  and seats) only 30 minutes to 5 days after their first events, and about 7% moved from another
  company during the window. The ``organization_id`` definition's type is that of the first value
  seen (Numeric with ``numeric`` and ``mixed``, as PostHog sets it);
* events: 25+ names over the 60 days before the anchor; ingestion time ``created_at`` a few
  milliseconds to seconds after ``timestamp``, hours later for about 3% ("late" events);
  a few uuids stored twice (two rows, the second ingested later), as ClickHouse really holds them:
  half of the second copies within seconds to 10 minutes, half 15 minutes to 2 days later (an SDK
  retrying a batch much later: more than the sync's overlap, within its lateness contract).
  ``timestamp <= created_at <= now`` always. Each event carries ``person_properties``: its Person
  as it was at the event's ingestion (so a late-identified Person's signup events lack the customer
  id, and a moved Person's old events carry the old company). Events are stored in ingestion order.
* groups (PostHog group analytics, from their own random generators so that everything above is the
  same with or without them): group type ``company`` at index 0 with one group per company, keyed by
  the company's id text (``Company.external_id``: what Persons carry, what Customerscore knows), with
  ``name``, ``plan``, ``employees``, ``created`` and, on about 90%, ``crm_id`` (Customerscore's
  customers by CRM id: ``Dataset.crm_customers``, those minus about one in ten); type ``project`` at
  index 1 with one to three groups per company. An event of a Person in a company carries that
  company's key in ``$group_0`` (the company of the Person version stamped on it, so a moved Person's
  later events name the new company; before a late customer id, the final one) on about 90% of its
  events (``''`` on the rest), one of its projects in ``$group_1`` on half of those, and ``$groups``
  (``{"company": key, "project": key}``) in its properties as the SDKs send it.

Rows are written with ``executemany`` in chunks into a staging table (on disk) and copied sorted by
(created_at, uuid), so 1,000,000 events need no more memory than one chunk plus SQLite's sorter.
Timestamps are stored as UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (the schema of
``cs_posthog.sandbox.hogql``); the dumps render them as ISO 8601 with ``Z``.
"""

from __future__ import annotations

import bisect
import json
import random
import sqlite3
import string
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import overload

US = 1_000_000  # microseconds per second
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
WINDOW_DAYS = 60
CHUNK = 20_000

CUSTOMER_PROPERTY = "organization_id"

# ---------------------------------------------------------------------------------------------
# Time helpers (timestamps are integers of microseconds since the epoch while generating)
# ---------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_date_cache: dict[int, str] = {}


def fmt_db(ts_us: int) -> str:
    """Microseconds since the epoch -> ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC)."""
    day, rest = divmod(ts_us, DAY_US)
    date = _date_cache.get(day)
    if date is None:
        date = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
        _date_cache[day] = date
    secs, micro = divmod(rest, US)
    h, secs = divmod(secs, 3600)
    m, s = divmod(secs, 60)
    return f"{date} {h:02d}:{m:02d}:{s:02d}.{micro:06d}"


@overload
def db_to_iso(value: str) -> str: ...
@overload
def db_to_iso(value: None) -> None: ...
def db_to_iso(value: str | None) -> str | None:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    if value is None:
        return None
    value = str(value)
    if "." not in value:
        value += ".000000"
    return value.replace(" ", "T", 1) + "Z"


def parse_time(value: object) -> int:
    """ISO 8601 text (``Z``, offsets, or none = UTC), DB text, or epoch seconds/ms -> microseconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        return round(seconds * US)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def now_us() -> int:
    return int(time.time() * US)


def default_anchor(now: int | None = None) -> int:
    """The data anchor: current time floored to the hour (stable across runs within the hour)."""
    now = now_us() if now is None else now
    return now - now % HOUR_US


# ---------------------------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


def random_token(rng: random.Random, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(rng.choices(alphabet, k=n))


def uuid4_from(rng: random.Random) -> str:
    return str(uuid_mod.UUID(int=rng.getrandbits(128), version=4))


def uuid7_from(rng: random.Random, ts_us: int) -> str:
    """A UUIDv7 (what PostHog's SDKs send) with the event's own time in its first 48 bits."""
    ms = ts_us // 1000
    rand = rng.getrandbits(74)
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & (1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

FIRST = ["Anna", "Ben", "Clara", "David", "Eva", "Filip", "Greta", "Hugo", "Ines", "Jakub", "Klara",
         "Lukas", "Marta", "Noah", "Olga", "Petr", "Quinn", "Rosa", "Simon", "Tereza", "Uma", "Viktor",
         "Wanda", "Xavier", "Yara", "Zdeněk", "Zoë", "O'Brien", "José", "Åsa"]
LAST = ["Novák", "Smith", "Müller", "Dvořák", "García", "Rossi", "Kowalski", "Jansen", "Dubois", "Svoboda",
        "Brown", "Schmidt", "Černý", "Lopez", "Bianchi", "Nowak", "de Vries", "Martin", "Horák", "Taylor"]
COMPANY_A = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent",
             "Tyrell", "Cyberdyne", "Aperture", "Oscorp", "Wonka", "Gringotts", "Monarch", "Nakatomi",
             "Pied Piper", "Dunder", "Prestige", "Bluth", "Krusty", "Sterling", "Massive", "Virtucon"]
COMPANY_B = ["Corp", "Labs", "s.r.o.", "GmbH", "Inc.", "Ltd", "Analytics", "Systems", "Cloud", "& Sons",
             "Partners", "Group", "Software", "Holdings"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example", "firma.example"]
COUNTRIES = ["CZ", "DE", "US", "GB", "FR", "NL", "PL", "ES", "IT", "SE", "SK", "AT"]
PLANS = ["free", "pro", "enterprise"]
OSES = ["Mac OS X", "Windows", "iOS", "Android", "Linux", "Chrome OS"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "Opera"]
DEVICES = ["Desktop", "Mobile", "Tablet"]
REFERRERS = ["$direct", "google.com", "duckduckgo.com", "news.ycombinator.com", "linkedin.com", "t.co"]
UTM = ["newsletter", "google", "linkedin", "partner", "podcast"]
PATHS = ["/", "/dashboard", "/reports", "/reports/new", "/settings", "/billing", "/invoices", "/team",
         "/integrations", "/search", "/onboarding", "/projects/42", "/pricing", "/docs/getting-started"]

# name -> (weight, kind); kind picks the property template
EVENT_NAMES: list[tuple[str, float, str]] = [
    ("$pageview", 30.0, "pageview"),
    ("$autocapture", 18.0, "autocapture"),
    ("$pageleave", 9.0, "pageleave"),
    ("$identify", 1.5, "identify"),
    ("$screen", 3.0, "screen"),
    ("$rageclick", 0.6, "autocapture"),
    ("$feature_flag_called", 2.0, "flag"),
    ("$exception", 0.5, "exception"),
    ("$web_vitals", 1.5, "vitals"),
    ("user_signed_up", 0.8, "signup"),
    ("user_logged_in", 4.0, "custom"),
    ("dashboard_viewed", 5.0, "custom"),
    ("report_created", 2.0, "report"),
    ("report_shared", 0.8, "report"),
    ("invoice_paid", 1.2, "invoice"),
    ("invoice_failed", 0.3, "invoice"),
    ("subscription_upgraded", 0.3, "plan_change"),
    ("subscription_cancelled", 0.15, "plan_change"),
    ("project_created", 1.0, "custom"),
    ("export_downloaded", 1.0, "custom"),
    ("comment_added", 2.0, "custom"),
    ("file_uploaded", 1.5, "custom"),
    ("integration_connected", 0.4, "custom"),
    ("invite_sent", 0.6, "custom"),
    ("search_performed", 3.0, "search"),
    ("settings_updated", 0.8, "custom"),
    ("Checkout Completed", 0.4, "invoice"),
    ("plan changed (v2)", 0.2, "plan_change"),
    ("legacy_report_exported", 0.3, "custom"),  # only ever seen 40-60 days ago
]
OLD_ONLY_EVENTS = {"legacy_report_exported"}

# Person property name -> PostHog property_type, for every name the generator may write.
PERSON_PROPERTY_TYPES: dict[str, str] = {
    "email": "String",
    "name": "String",
    CUSTOMER_PROPERTY: "String",
    "company_name": "String",
    "plan": "String",
    "country": "String",
    "seats": "Numeric",
    "beta_user": "Boolean",
    "signed_up_at": "DateTime",
    "phone": "String",
    "plan tier": "String",
    "it's": "String",
    "back`tick": "String",
    "{brace}": "String",
    "ünïcode": "String",
    "$initial_os": "String",
    "$initial_browser": "String",
    "$initial_referring_domain": "String",
    "$initial_utm_source": "String",
    "$geoip_country_code": "String",
    "username": "String",
}

# Virtual person properties that PostHog appends to the last page of person property definitions.
VIRTUAL_PERSON_PROPERTIES = [
    "$virt_initial_channel_type",
    "$virt_initial_referring_domain_type",
    "$virt_revenue",
    "$virt_revenue_last_30_days",
]
VIRTUAL_PROPERTY_TYPES = {
    "$virt_initial_channel_type": "String",
    "$virt_initial_referring_domain_type": "String",
    "$virt_revenue": "Numeric",
    "$virt_revenue_last_30_days": "Numeric",
}

# Never listed as property definitions (PostHog hides them).
HIDDEN_PROPERTY_DEFINITIONS = {"distinct_id", "$set", "$set_once", "$groups", "$group_type", "$group_key",
                               "$group_set", *(f"$group_{i}" for i in range(5))}


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------

_FALLBACK_SCHEMA = """
CREATE TABLE IF NOT EXISTS persons (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, properties TEXT NOT NULL DEFAULT '{}',
    is_identified INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS person_distinct_ids (distinct_id TEXT PRIMARY KEY, person_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    rowid_ INTEGER PRIMARY KEY, uuid TEXT NOT NULL, event TEXT NOT NULL, timestamp TEXT NOT NULL,
    created_at TEXT NOT NULL, distinct_id TEXT NOT NULL, person_id TEXT, properties TEXT NOT NULL DEFAULT '{}',
    person_properties TEXT, "$group_0" TEXT NOT NULL DEFAULT '', "$group_1" TEXT NOT NULL DEFAULT '',
    "$group_2" TEXT NOT NULL DEFAULT '', "$group_3" TEXT NOT NULL DEFAULT '', "$group_4" TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS events_created ON events(created_at, uuid);
CREATE INDEX IF NOT EXISTS events_ts ON events(timestamp);
CREATE TABLE IF NOT EXISTS groups (
    group_type_index INTEGER NOT NULL, group_key TEXT NOT NULL, created_at TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (group_type_index, group_key));
CREATE TABLE IF NOT EXISTS group_type_mapping (
    group_type_index INTEGER PRIMARY KEY, group_type TEXT NOT NULL UNIQUE, name_singular TEXT, name_plural TEXT);
"""

SANDBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS sbx_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sbx_event_definitions (
    name TEXT PRIMARY KEY, id TEXT NOT NULL, created_at TEXT NOT NULL, last_seen_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sbx_property_definitions (
    type TEXT NOT NULL, name TEXT NOT NULL, id TEXT NOT NULL, property_type TEXT,
    PRIMARY KEY (type, name));
CREATE TABLE IF NOT EXISTS sbx_group_property_definitions (
    group_type_index INTEGER NOT NULL, name TEXT NOT NULL, id TEXT NOT NULL, property_type TEXT,
    PRIMARY KEY (group_type_index, name));
"""

# What the hooks and the legacy endpoints look up, besides the engine's own indexes.
INDEXES = """
CREATE INDEX IF NOT EXISTS sbx_events_uuid ON events(uuid);
CREATE INDEX IF NOT EXISTS sbx_pdi_person ON person_distinct_ids(person_id);
"""


def dump_json(obj: object) -> str:
    """Properties as PostHog stores them: compact, UTF-8 kept (``hogql.dump_properties``)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def create_schema(conn: sqlite3.Connection) -> None:
    """The HogQL engine's tables (from ``hogql.create_schema`` when available) plus the sandbox's."""
    try:  # local: the data layer stands without the HogQL engine (ImportError: the fallback schema)
        from cs_posthog.sandbox.hogql import create_schema as hogql_create_schema
    except ImportError:  # the engine is optional for the data layer; same table shapes
        conn.executescript(_FALLBACK_SCHEMA)
    else:
        hogql_create_schema(conn)
    conn.executescript(SANDBOX_SCHEMA)
    conn.commit()


def create_indexes(conn: sqlite3.Connection) -> None:
    conn.executescript(INDEXES)
    conn.commit()


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


@dataclass
class Company:
    external_id: str  # the id's exact text: what Customerscore knows the company by ("4711", "007")
    name: str
    plan: str
    owner_email: str
    seats: int
    value: object = None  # the JSON value Persons carry (4711 or "007"); None: external_id itself

    @property
    def id_value(self) -> object:
        return self.external_id if self.value is None else self.value


@dataclass
class Person:
    id: str
    created_us: int
    properties: dict  # as the Person is now
    distinct_ids: list[str]
    identified: bool
    weight: float
    plan: str | None
    # (from_us, properties) the Person had from that ingestion time on, oldest first; the last is
    # ``properties``. Events are stamped with the version current at their created_at.
    versions: list[tuple[int, dict]] = field(default_factory=list)
    org_set_us: int | None = None  # when the customer property got its current value (late set: after signup)
    history: str = ""  # "", "late_set" or "moved"


@dataclass
class Dataset:
    seed: int
    anchor_us: int
    companies: list[Company]
    customerscore_customers: list[Company]
    n_persons: int = 0
    n_events: int = 0
    n_duplicate_rows: int = 0
    n_late: int = 0
    generation_s: float = 0.0
    event_names: list[str] = field(default_factory=list)
    id_type: str = "string"
    n_late_set: int = 0  # Persons whose customer id was set after their first events
    n_moved: int = 0  # Persons who changed company
    groups: list[Group] = field(default_factory=list)  # every group of every type (groups table)
    crm_customers: list[Company] = field(default_factory=list)  # Customerscore customers by crm_id
    n_group_events: int = 0  # event rows with a $group_0 (company) key, duplicates included


ID_TYPES = ("string", "numeric", "mixed")
DEFAULT_ID_TYPE = "mixed"
BIG_ID = 2**53 + 1  # 9007199254740993: the first integer a Float64 cannot hold


def _company_values(seed: int, n: int, id_type: str) -> list[object | None]:
    """The JSON value each company's id has on Persons (None: the ``org_...`` string as before).

    ``numeric``: JSON numbers, about one in six above 2^53 (the first of those 9007199254740993);
    ``mixed``: by company index, half JSON numbers (as ``numeric``), a quarter zero-padded numeric
    strings (the first ``"007"``), a quarter plain ``org_...`` strings.
    """
    if id_type not in ID_TYPES:
        raise ValueError(f"id_type must be one of {', '.join(ID_TYPES)}, not {id_type!r}")
    if id_type == "string":
        return [None] * n
    rng = random.Random(f"{seed}:ids")
    used: set[str] = set()
    out: list[object | None] = []
    big = padded = 0
    for i in range(n):
        kind = "int" if id_type == "numeric" else ("int", "int", "padded", "string")[i % 4]
        value: object | None = None
        while value is None or str(value) in used:
            if kind == "string":
                value = None
                break
            if kind == "padded":
                value = "007" if padded == 0 else "0" * rng.randint(1, 3) + str(rng.randrange(1, 99_999))
            elif rng.random() < 1 / 6 or (i == 0 and id_type == "numeric"):
                value = BIG_ID if big == 0 else BIG_ID + 2 * rng.randrange(1, 10**6)  # odd: not a Float64
            else:
                value = 4711 if i == 0 else rng.randrange(1, 10**7)
        if isinstance(value, int) and value > 2**53:
            big += 1
        if kind == "padded":
            padded += 1
        if value is not None:
            used.add(str(value))
        out.append(value)
    return out


def make_companies(seed: int, n: int, id_type: str = "string") -> tuple[list[Company], list[Company]]:
    """Companies, and the Customerscore customers: the same minus about one in ten."""
    values = _company_values(seed, n, id_type)
    rng = random.Random(f"{seed}:companies")
    companies: list[Company] = []
    used: set[str] = set()
    for i in range(n):
        ext = "org_" + random_token(rng, 8, _LOWER_ALNUM)
        while ext in used:
            ext = "org_" + random_token(rng, 8, _LOWER_ALNUM)
        used.add(ext)
        name = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)}"
        if i >= len(COMPANY_A):
            name += f" {i}"
        plan = rng.choices(PLANS, weights=[5, 4, 2])[0]
        owner = f"owner{i}@{rng.choice(DOMAINS)}"
        seats = rng.choice([1, 3, 5, 10, 25, 50, 200])
        if values[i] is not None:
            ext = str(values[i])
        companies.append(Company(ext, name, plan, owner, seats, values[i]))
    missing = [c for c in companies if rng.random() < 0.1]
    if not missing and len(companies) >= 5:
        missing = [companies[-1]]
    missing_ids = {c.external_id for c in missing}
    return companies, [c for c in companies if c.external_id not in missing_ids]


# ---------------------------------------------------------------------------------------------
# Groups (PostHog group analytics)
# ---------------------------------------------------------------------------------------------

# GroupTypeMapping rows: (group_type_index, group_type, name_singular, name_plural)
GROUP_TYPES: list[tuple[int, str, str | None, str | None]] = [
    (0, "company", "company", "companies"),
    (1, "project", None, None),  # never named in the UI: PostHog keeps null names then
]
COMPANY_GROUP_TYPE = "company"
COMPANY_GROUP_INDEX = 0
PROJECT_GROUP_INDEX = 1
GROUP_PROPERTY = "crm_id"  # the company group property holding the CRM's id of the company
GROUP_KEY_SHARE = 0.90  # events of a company's Person that carry $group_0 (the others: '')
PROJECT_SHARE = 0.50  # of those, the events that also carry $group_1
CRM_ID_SHARE = 0.90  # companies whose group has a crm_id
GROUP_PROPERTY_TYPES: dict[int, dict[str, str]] = {
    COMPANY_GROUP_INDEX: {"name": "String", "plan": "String", "employees": "Numeric", "created": "DateTime",
                          GROUP_PROPERTY: "String"},
    PROJECT_GROUP_INDEX: {"name": "String", "company": "String"},
}


@dataclass
class Group:
    index: int  # group_type_index
    key: str
    created_us: int
    properties: dict


def make_groups(seed: int, companies: list[Company], anchor: int) -> tuple[list[Group], dict[str, list[str]],
                                                                        list[Company]]:
    """The groups (one ``company`` group per company, keyed by the company's customer id text, and one
    to three ``project`` groups each), the project keys per company key, and the Customerscore
    customers known by ``crm_id`` (the companies that have one, minus about one in ten).

    Drawn from their own random generator, so that the rest of the data does not change with them."""
    rng = random.Random(f"{seed}:groups")
    groups: list[Group] = []
    projects: dict[str, list[str]] = {}
    crm_of: dict[str, str] = {}
    used: set[str] = set()
    for c in companies:
        created = anchor - WINDOW_DAYS * DAY_US - rng.randrange(0, 400 * DAY_US)
        created -= created % 1000  # groups.created_at is DateTime64(3) in PostHog
        props: dict = {"name": c.name, "plan": c.plan, "employees": c.seats * rng.randint(2, 40),
                       "created": fmt_db(created)[:10]}
        if rng.random() < CRM_ID_SHARE:
            crm = "001" + random_token(rng, 15)
            while crm in used:
                crm = "001" + random_token(rng, 15)
            used.add(crm)
            props[GROUP_PROPERTY] = crm
            crm_of[c.external_id] = crm
        groups.append(Group(COMPANY_GROUP_INDEX, c.external_id, created, props))
        keys = []
        for j in range(rng.randint(1, 3)):
            key = "proj_" + random_token(rng, 10, _LOWER_ALNUM)
            while key in used:
                key = "proj_" + random_token(rng, 10, _LOWER_ALNUM)
            used.add(key)
            pcreated = created + rng.randrange(0, 30 * DAY_US)
            pcreated -= pcreated % 1000
            groups.append(Group(PROJECT_GROUP_INDEX, key, pcreated,
                                {"name": f"{c.name} project {j + 1}", "company": c.external_id}))
            keys.append(key)
        projects[c.external_id] = keys
    with_crm = [c for c in companies if c.external_id in crm_of]
    missing = {c.external_id for c in with_crm if rng.random() < 0.1}
    if not missing and len(with_crm) >= 5:
        missing = {with_crm[-1].external_id}
    crm_customers = [Company(crm_of[c.external_id], c.name, c.plan, c.owner_email, c.seats)
                     for c in with_crm if c.external_id not in missing]
    return groups, projects, crm_customers


def _company_key(props: dict, keys: set[str]) -> str:
    """The company group key of a Person version: its customer id's text when it names a company."""
    v = props.get(CUSTOMER_PROPERTY)
    if v is None or v == "" or isinstance(v, bool | dict | list):
        return ""
    text = str(v)
    return text if text in keys else ""


LATE_SET_SHARE = 0.20  # company Persons whose customer id was set hours to days after their first events
MOVED_SHARE = 0.07  # company Persons who moved from another company during the window
_COMPANY_KEYS = (CUSTOMER_PROPERTY, "company_name", "seats")


def make_persons(seed: int, n: int, companies: list[Company], anchor: int) -> list[Person]:
    """Persons as they are now, each with the versions of their properties over time (``versions``).

    Of the identified Persons with a company, LATE_SET_SHARE got the customer property (with
    company_name and seats) only 30 minutes to 5 days after they were created, so their signup and
    onboarding events were stamped without it; MOVED_SHARE belonged to another company until a point
    between 30% and 70% of their life, so their old events carry the old company.
    """
    hrng = random.Random(f"{seed}:history")
    rng = random.Random(f"{seed}:persons")
    start = anchor - WINDOW_DAYS * DAY_US
    # company popularity: a few big customers, a long tail
    company_weights = [rng.paretovariate(1.2) for _ in companies]
    persons: list[Person] = []
    for i in range(n):
        pid = uuid4_from(rng)
        # more persons created early (an existing user base) than late
        created = start + int((rng.random() ** 1.6) * (WINDOW_DAYS * DAY_US - 2 * HOUR_US))
        created -= created % 1000  # persons.created_at is DateTime64(3) in PostHog
        identified = rng.random() < 0.65
        anon = uuid7_from(rng, created)
        props: dict = {}
        distinct_ids = [anon]
        plan: str | None = None
        if rng.random() < 0.9:
            props["$initial_os"] = rng.choice(OSES)
            props["$initial_browser"] = rng.choice(BROWSERS)
        if rng.random() < 0.6:
            props["$initial_referring_domain"] = rng.choice(REFERRERS)
        if rng.random() < 0.2:
            props["$initial_utm_source"] = rng.choice(UTM)
        props["$geoip_country_code"] = rng.choice(COUNTRIES)
        if identified:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
            email = f"{local}{i}@{rng.choice(DOMAINS)}"
            props["email"] = email
            if rng.random() < 0.85:
                props["name"] = f"{first} {last}"
            if rng.random() < 0.5:
                props["username"] = f"{first.lower()}{i}"
            props["country"] = rng.choice(COUNTRIES)
            props["signed_up_at"] = db_to_iso(fmt_db(created + rng.randrange(0, HOUR_US)))
            distinct_ids.append(email if rng.random() < 0.5 else f"user_{i:06d}")
            if rng.random() < 0.25:  # second device, merged in later
                distinct_ids.append(uuid7_from(rng, created + rng.randrange(0, 10 * DAY_US)))
            r = rng.random()
            if companies and r < 0.80:
                company = rng.choices(companies, weights=company_weights)[0]
                props[CUSTOMER_PROPERTY] = company.id_value
                props["company_name"] = company.name
                props["seats"] = company.seats
                plan = company.plan
            elif r < 0.83:
                props[CUSTOMER_PROPERTY] = ""  # set, but empty: is set, yet no customer
                plan = "free"
            else:
                plan = rng.choice(["free", "free", "pro"])
        else:
            if companies and rng.random() < 0.08:  # anonymous visitor tagged via a group call
                company = rng.choices(companies, weights=company_weights)[0]
                props[CUSTOMER_PROPERTY] = company.id_value
                plan = company.plan
        if plan is not None and rng.random() < 0.95:
            props["plan"] = plan
        elif plan is not None:
            props["plan"] = None  # JSON null reads as NULL in HogQL
        if rng.random() < 0.3:
            props["beta_user"] = rng.random() < 0.5
        if rng.random() < 0.05:
            props["phone"] = None
        if rng.random() < 0.4:
            props["plan tier"] = rng.choice(["gold", "silver", "bronze", "Gold "])
        if rng.random() < 0.3:
            props["it's"] = rng.choice(["yes", "no", "it's complicated"])
        if rng.random() < 0.2:
            props["back`tick"] = rng.choice(["`x`", "plain", "a`b"])
        if rng.random() < 0.2:
            props["{brace}"] = rng.choice(["{x}", "{filters}", "}{"])
        if rng.random() < 0.2:
            props["ünïcode"] = rng.choice(["ßüñ", "日本語", "Ωmega", "café"])
        weight = rng.paretovariate(1.3) * (2.0 if identified else 0.5)
        person = Person(pid, created, props, distinct_ids, identified, weight, plan, versions=[(0, props)])
        if CUSTOMER_PROPERTY in props and props[CUSTOMER_PROPERTY] != "":
            person.org_set_us = created
        if identified and "company_name" in props:
            h = hrng.random()
            if h < LATE_SET_SHARE:
                set_at = min(created + hrng.randrange(30 * 60 * US, 5 * DAY_US), anchor - HOUR_US)
                if set_at > created:
                    before = {k: v for k, v in props.items() if k not in _COMPANY_KEYS}
                    person.versions = [(0, before), (set_at, props)]
                    person.org_set_us, person.history = set_at, "late_set"
            elif h < LATE_SET_SHARE + MOVED_SHARE and len(companies) > 1:
                old = companies[hrng.randrange(len(companies))]
                if old.external_id != str(props[CUSTOMER_PROPERTY]):
                    switch = created + int((anchor - created) * hrng.uniform(0.3, 0.7))
                    before = {**props, CUSTOMER_PROPERTY: old.id_value, "company_name": old.name,
                              "seats": old.seats}
                    person.versions = [(0, before), (switch, props)]
                    person.history = "moved"
        persons.append(person)
    return persons


def customer_property_type(persons: list[Person], companies: list[Company], id_type: str) -> str | None:
    """The customer property's definition type: PostHog sets it from the first value it sees.

    The first non-empty value by the time it was set decides. With ``mixed`` ids the generator makes
    that first value a JSON number (it gives that Person an int-id company, all versions alike), as
    when a product sends numbers from the start: the definition is then Numeric."""
    first: tuple[int, Person] | None = None
    for p in persons:
        v = p.versions[0][1].get(CUSTOMER_PROPERTY)
        t = p.created_us if v not in (None, "") else p.org_set_us
        if t is not None and (first is None or t < first[0]):
            first = (t, p)
    if first is None:
        return None
    p = first[1]
    version = next(props for _, props in p.versions if props.get(CUSTOMER_PROPERTY) not in (None, ""))
    if id_type == "mixed" and not isinstance(version[CUSTOMER_PROPERTY], int):
        ints = [c for c in companies if isinstance(c.value, int)]
        if ints:
            c = ints[0]
            update = {CUSTOMER_PROPERTY: c.value, "company_name": c.name, "seats": c.seats}
            version.update({k: v for k, v in update.items() if k in version})
    v = version[CUSTOMER_PROPERTY]
    return infer_property_type(v)


# ---------------------------------------------------------------------------------------------
# Event properties
# ---------------------------------------------------------------------------------------------


def _event_props(kind: str, rng: random.Random, person: Person, distinct_id: str) -> dict:
    rnd = rng.random
    if kind == "pageview":
        path = PATHS[int(rnd() * len(PATHS))]
        return {"$current_url": "https://app.example.com" + path, "$pathname": path,
                "$browser": BROWSERS[int(rnd() * 5)], "$os": OSES[int(rnd() * 6)],
                "$device_type": DEVICES[int(rnd() * 3)], "$lib": "web"}
    if kind == "autocapture":
        return {"$event_type": "click", "$el_text": rng.choice(["Save", "Export", "Next", "Buy now", "Close"]),
                "$pathname": PATHS[int(rnd() * len(PATHS))], "$lib": "web"}
    if kind == "pageleave":
        return {"$pathname": PATHS[int(rnd() * len(PATHS))], "$prev_pageview_duration": round(rnd() * 300, 1),
                "$lib": "web"}
    if kind == "identify":
        return {"$anon_distinct_id": person.distinct_ids[0], "$lib": "web",
                "$set": {"email": person.properties.get("email")}}
    if kind == "screen":
        return {"$screen_name": rng.choice(["Home", "Reports", "Settings", "Detail"]), "$lib": "posthog-ios",
                "$os": "iOS"}
    if kind == "flag":
        return {"$feature_flag": rng.choice(["new-nav", "beta-reports", "pricing-v2"]),
                "$feature_flag_response": rnd() < 0.5, "$lib": "web"}
    if kind == "exception":
        return {"$exception_type": rng.choice(["TypeError", "ValueError"]), "$exception_message": "boom",
                "$lib": "web"}
    if kind == "vitals":
        return {"$web_vitals_LCP_value": round(rnd() * 4000, 1), "$lib": "web"}
    if kind == "signup":
        return {"signup_method": rng.choice(["email", "google", "github"]), "$lib": "posthog-node"}
    if kind == "report":
        return {"report_type": rng.choice(["funnel", "trend", "table"]), "widgets": int(rnd() * 12),
                "$lib": "posthog-python"}
    if kind == "invoice":
        return {"amount": round(5 + rnd() * 995, 2), "currency": rng.choice(["EUR", "USD", "CZK"]),
                "invoice_id": "inv_" + random_token(rng, 10, _LOWER_ALNUM), "plan": person.plan,
                "$lib": "posthog-python"}
    if kind == "plan_change":
        return {"from plan": rng.choice(PLANS), "to plan": rng.choice(PLANS), "$lib": "posthog-python"}
    if kind == "search":
        return {"query": rng.choice(["invoice", "report q3", "ünïcode", "it's", "{x}"]),
                "results": int(rnd() * 50), "$lib": "web"}
    return {"$lib": rng.choice(["web", "posthog-python", "posthog-node"])}


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def generate(conn: sqlite3.Connection, *, seed: int, events: int, persons: int, customers: int,
             anchor_us: int | None = None, progress: Callable[[str], None] | None = None,
             id_type: str = DEFAULT_ID_TYPE) -> Dataset:
    """Fill an empty database (schema already created) and return what was generated.

    ``id_type`` (``string``, ``numeric`` or ``mixed``, default ``mixed``): how the companies' ids are
    stored under CUSTOMER_PROPERTY on Persons (see ``_company_values``); ``Company.external_id`` is
    always the id's exact text, which is what the sandbox Customerscore knows the company by.
    """
    t0 = time.perf_counter()
    anchor = default_anchor() if anchor_us is None else anchor_us
    companies, cs_customers = make_companies(seed, customers, id_type)
    people = make_persons(seed, persons, companies, anchor)
    org_type = customer_property_type(people, companies, id_type)
    ds = Dataset(seed=seed, anchor_us=anchor, companies=companies, customerscore_customers=cs_customers,
                 n_persons=len(people), id_type=id_type)
    ds.groups, projects, ds.crm_customers = make_groups(seed, companies, anchor)

    dumps = dump_json
    conn.executemany(
        "INSERT INTO persons(id, created_at, properties, is_identified) VALUES (?, ?, ?, ?)",
        [(p.id, fmt_db(p.created_us), dumps(p.properties), int(p.identified))
         for p in people])
    conn.executemany("INSERT INTO person_distinct_ids(distinct_id, person_id) VALUES (?, ?)",
                     [(d, p.id) for p in people for d in p.distinct_ids])
    conn.commit()

    person_prop_names: set[str] = set()
    for p in people:
        for _, props in p.versions:
            person_prop_names.update(props)
        ds.n_late_set += p.history == "late_set"
        ds.n_moved += p.history == "moved"
    # the properties each event is stamped with (events.person_properties), per Person version
    stamps = {p.id: ([start for start, _ in p.versions], [dumps(props) for _, props in p.versions])
              for p in people}
    # the company group key of each Person version: the company of the customer id it carries; a
    # version without one (a late-identified Person's first hours) is in the Person's final company,
    # which the app's group() call names from the signup on
    company_keys = {c.external_id for c in companies}
    version_keys: dict[str, list[str]] = {}
    for p in people:
        final = _company_key(p.properties, company_keys)
        version_keys[p.id] = [_company_key(props, company_keys) or final for _, props in p.versions]
    grng = random.Random(f"{seed}:group-events")
    grnd = grng.random

    # events: generated in random order into a staging table, then stored in ingestion order
    # (created_at, uuid), as ClickHouse receives them: the sync's keyset scan then reads the table
    # sequentially (5x less CPU than random row access). The table's indexes are dropped during the
    # bulk load and rebuilt after (2x faster).
    event_indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' "
                                 "AND sql IS NOT NULL").fetchall()
    for name, _ in event_indexes:
        conn.execute(f'DROP INDEX "{name}"')
    conn.execute("DROP TABLE IF EXISTS temp.sbx_events_load")
    conn.execute("CREATE TEMP TABLE sbx_events_load (uuid TEXT, event TEXT, timestamp TEXT, created_at TEXT, "
                 "distinct_id TEXT, person_id TEXT, properties TEXT, person_properties TEXT, g0 TEXT, g1 TEXT)")
    rng = random.Random(f"{seed}:events")
    old_cutoff = anchor - 40 * DAY_US
    names = [n for n, _, _ in EVENT_NAMES]
    kinds = [k for _, _, k in EVENT_NAMES]
    name_cum: list[float] = []
    acc = 0.0
    for _, w, _ in EVENT_NAMES:
        acc += w
        name_cum.append(acc)
    total_w = acc
    person_cum: list[float] = []
    acc = 0.0
    for p in people:
        acc += p.weight
        person_cum.append(acc)
    n_dups = 0 if events < 10 else max(3, events // 1000)
    dup_positions = set(rng.sample(range(1, events), n_dups)) if n_dups else set()

    event_first: dict[str, int] = {}
    event_last: dict[str, int] = {}
    event_prop_types: dict[str, str | None] = {}  # None: no type inferred (PostHog stores NULL)
    insert = ("INSERT INTO temp.sbx_events_load(uuid, event, timestamp, created_at, distinct_id, person_id, "
              "properties, person_properties, g0, g1) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    rows: list[tuple] = []
    last_row: tuple | None = None
    last_created = 0
    rnd = rng.random
    seen_kinds: set[str] = set()
    for i in range(events):
        if not people:
            break
        if i in dup_positions and last_row is not None:
            gap = rng.randrange(US, 600 * US)
            if ds.n_duplicate_rows % 2:  # every other copy much later: an SDK retrying a batch (15 min .. 2 days)
                gap = 900 * US + gap * 288
            created = min(last_created + gap, anchor)
            row = (last_row[0], last_row[1], last_row[2], fmt_db(created), last_row[4], last_row[5], last_row[6],
                   last_row[7], last_row[8], last_row[9])
            rows.append(row)
            ds.n_duplicate_rows += 1
            ds.n_group_events += bool(row[8])
        else:
            p = people[bisect.bisect_left(person_cum, rnd() * person_cum[-1])]
            k = bisect.bisect_left(name_cum, rnd() * total_w)
            name, kind = names[k], kinds[k]
            if name in OLD_ONLY_EVENTS and p.created_us >= old_cutoff - DAY_US:
                name, kind = "$pageview", "pageview"
            if kind == "identify" and not p.identified:
                name, kind = "$pageview", "pageview"
            if name in OLD_ONLY_EVENTS:
                lo, hi = p.created_us, old_cutoff
            else:
                lo, hi = p.created_us, anchor - US
            ts = lo + int((rnd() ** 0.8) * (hi - lo))
            if kind == "identify":
                distinct_id = p.distinct_ids[1]
            elif len(p.distinct_ids) == 1:
                distinct_id = p.distinct_ids[0]
            else:
                distinct_id = p.distinct_ids[int(rnd() * len(p.distinct_ids))]
            if rnd() < 0.03:
                lag = rng.randrange(HOUR_US, 30 * HOUR_US)
                ds.n_late += 1
            else:
                lag = 20_000 + int(rng.expovariate(1 / 900_000))
            created = min(ts + lag, anchor)
            # a "late_set" person always has org_set_us (set together in make_persons)
            late_set_at = p.org_set_us if p.history == "late_set" else None
            if late_set_at is not None and created < late_set_at and kind not in ("identify", "signup") \
                    and rnd() < 0.25:
                name, kind = "user_signed_up", "signup"  # signup and onboarding, before the customer id
            starts, texts = stamps[p.id]
            vi = 0 if len(texts) == 1 else bisect.bisect_right(starts, created) - 1
            stamped = texts[vi]
            props = _event_props(kind, rng, p, distinct_id)
            if kind not in seen_kinds:
                seen_kinds.add(kind)
                for key, value in props.items():
                    event_prop_types.setdefault(key, infer_property_type(value))
            g0 = g1 = ""
            gkey = version_keys[p.id][vi]
            if gkey and grnd() < GROUP_KEY_SHARE:  # the SDK's group() call made: $groups on the event
                g0 = gkey
                if grnd() < PROJECT_SHARE:
                    keys = projects[gkey]
                    g1 = keys[int(grnd() * len(keys))]
                props["$groups"] = {COMPANY_GROUP_TYPE: g0, **({"project": g1} if g1 else {})}
                ds.n_group_events += 1
            row = (uuid7_from(rng, ts), name, fmt_db(ts), fmt_db(created), distinct_id, p.id,
                   dumps(props), stamped, g0, g1)
            rows.append(row)
            last_row, last_created = row, created
            if created < event_first.get(name, 1 << 62):
                event_first[name] = created
            if created > event_last.get(name, -1):
                event_last[name] = created
        if len(rows) >= CHUNK:
            conn.executemany(insert, rows)
            rows.clear()
            if progress and (i + 1) % 200_000 < CHUNK:
                progress(f"{i + 1:,} events")
    if rows:
        conn.executemany(insert, rows)
    columns = "uuid, event, timestamp, created_at, distinct_id, person_id, properties, person_properties"
    conn.execute(f'INSERT INTO events({columns}, "$group_0", "$group_1") SELECT {columns}, g0, g1 '
                 "FROM temp.sbx_events_load ORDER BY created_at, uuid")
    conn.execute("DROP TABLE temp.sbx_events_load")
    for _, sql in event_indexes:
        conn.execute(sql)
    conn.commit()
    ds.n_events = events if people else 0

    # definitions
    drng = random.Random(f"{seed}:definitions")
    conn.executemany(
        "INSERT INTO sbx_event_definitions(name, id, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
        [(name, uuid4_from(drng), fmt_db(event_first[name]), fmt_db(event_last[name]))
         for name in sorted(event_first)])
    ds.event_names = sorted(event_first)
    conn.executemany(
        "INSERT INTO sbx_property_definitions(type, name, id, property_type) VALUES ('person', ?, ?, ?)",
        [(name, uuid4_from(drng), org_type if name == CUSTOMER_PROPERTY else PERSON_PROPERTY_TYPES.get(name, "String"))
         for name in sorted(person_prop_names) if name not in HIDDEN_PROPERTY_DEFINITIONS])
    conn.executemany(
        "INSERT INTO sbx_property_definitions(type, name, id, property_type) VALUES ('event', ?, ?, ?)",
        [(name, uuid4_from(drng), ptype) for name, ptype in sorted(event_prop_types.items())
         if name not in HIDDEN_PROPERTY_DEFINITIONS])
    write_groups(conn, ds.groups, seed)
    conn.executemany("INSERT OR REPLACE INTO sbx_meta(key, value) VALUES (?, ?)", [
        ("seed", str(seed)), ("anchor", fmt_db(anchor)), ("events", str(events)), ("persons", str(persons)),
        ("customers", str(customers)), ("id_type", id_type)])
    conn.commit()
    ds.generation_s = time.perf_counter() - t0
    return ds


def write_groups(conn: sqlite3.Connection, groups: list[Group], seed: int) -> None:
    """The group types (group_type_mapping), the groups and their property definitions (type group,
    by group type index: sbx_group_property_definitions)."""
    conn.executemany("INSERT INTO group_type_mapping(group_type_index, group_type, name_singular, name_plural) "
                     "VALUES (?, ?, ?, ?)", GROUP_TYPES)
    conn.executemany("INSERT INTO groups(group_type_index, group_key, created_at, properties) VALUES (?, ?, ?, ?)",
                     [(g.index, g.key, fmt_db(g.created_us), dump_json(g.properties)) for g in groups])
    seen: dict[int, set[str]] = {}
    for g in groups:
        seen.setdefault(g.index, set()).update(g.properties)
    rng = random.Random(f"{seed}:group-definitions")
    conn.executemany(
        "INSERT INTO sbx_group_property_definitions(group_type_index, name, id, property_type) VALUES (?, ?, ?, ?)",
        [(index, name, uuid4_from(rng), GROUP_PROPERTY_TYPES.get(index, {}).get(name, "String"))
         for index in sorted(seen) for name in sorted(seen[index])])


def infer_property_type(value: object) -> str | None:
    """PostHog's property type detection, roughly: bool, number, ISO datetime, else string."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Numeric"
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 10 and text[4:5] == "-" and text[7:8] == "-" and text[:4].isdigit():
            try:
                parse_time(text)
            except ValueError:
                return "String"
            return "DateTime"
        return "String"
    return "String"


def record_definitions(conn: sqlite3.Connection, *, event_names: Iterable[tuple[str, str]] = (),
                       person_props: Iterable[tuple[str, object]] = (),
                       event_props: Iterable[tuple[str, object]] = (), rng: random.Random | None = None) -> None:
    """Add definitions for names seen in rows posted through the hooks (as ingestion would)."""
    rng = rng or random.Random()
    for name, created in event_names:
        row = conn.execute("SELECT created_at, last_seen_at FROM sbx_event_definitions WHERE name = ?",
                           (name,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO sbx_event_definitions(name, id, created_at, last_seen_at) VALUES (?,?,?,?)",
                         (name, uuid4_from(rng), created, created))
        elif created > row[1]:
            conn.execute("UPDATE sbx_event_definitions SET last_seen_at = ? WHERE name = ?", (created, name))
    for kind, items in (("person", person_props), ("event", event_props)):
        for name, value in items:
            if name in HIDDEN_PROPERTY_DEFINITIONS:
                continue
            ptype = infer_property_type(value)
            row = conn.execute("SELECT property_type FROM sbx_property_definitions WHERE type = ? AND name = ?",
                               (kind, name)).fetchone()
            if row is None:
                conn.execute("INSERT INTO sbx_property_definitions(type, name, id, property_type) VALUES (?,?,?,?)",
                             (kind, name, uuid4_from(rng), ptype))
            elif row[0] is None and ptype is not None:
                conn.execute("UPDATE sbx_property_definitions SET property_type = ? WHERE type = ? AND name = ?",
                             (ptype, kind, name))


# ---------------------------------------------------------------------------------------------
# Dumps (streamed)
# ---------------------------------------------------------------------------------------------


def iter_event_dump(conn: sqlite3.Connection, batch: int = 5000) -> Iterator[str]:
    """One JSON line per stored event row, in storage order (duplicates included).

    The stored properties texts are spliced in as they are (compact JSON already): no re-parsing.
    ``person_properties`` is the Person as stamped on the event at ingestion (``{}`` when none).
    """
    cur = conn.execute('SELECT uuid, event, timestamp, created_at, distinct_id, person_id, properties, '
                       'person_properties, "$group_0", "$group_1", "$group_2", "$group_3", "$group_4" '
                       'FROM events ORDER BY rowid_')
    q = json.dumps
    while True:
        chunk = cur.fetchmany(batch)
        if not chunk:
            return
        for u, ev, ts, created, did, pid, props, pprops, g0, g1, g2, g3, g4 in chunk:
            yield (f'{{"uuid":{q(u)},"event":{q(ev, ensure_ascii=False)},"timestamp":"{db_to_iso(ts)}",'
                   f'"created_at":"{db_to_iso(created)}","distinct_id":{q(did, ensure_ascii=False)},'
                   f'"person_id":{q(pid)},"properties":{props or "{}"},"person_properties":{pprops or "{}"},'
                   f'"$group_0":{q(g0, ensure_ascii=False)},"$group_1":{q(g1, ensure_ascii=False)},'
                   f'"$group_2":{q(g2, ensure_ascii=False)},"$group_3":{q(g3, ensure_ascii=False)},'
                   f'"$group_4":{q(g4, ensure_ascii=False)}}}\n')


def iter_group_dump(conn: sqlite3.Connection, batch: int = 2000) -> Iterator[str]:
    """One JSON line per group, by group type index and key: ``index``, ``key``, ``properties`` (the
    group's current properties) and ``created_at`` (ISO 8601, ``Z``)."""
    cur = conn.execute("SELECT group_type_index, group_key, properties, created_at FROM groups "
                       "ORDER BY group_type_index, group_key")
    dumps = json.dumps
    while True:
        chunk = cur.fetchmany(batch)
        if not chunk:
            return
        for index, key, props, created in chunk:
            yield dumps({"index": index, "key": key, "properties": json.loads(props or "{}"),
                         "created_at": db_to_iso(created)}, ensure_ascii=False) + "\n"


def iter_person_dump(conn: sqlite3.Connection, batch: int = 2000) -> Iterator[str]:
    """One JSON line per person, ordered by id, with its distinct ids (sorted)."""
    cur = conn.execute(
        "SELECT p.id, p.created_at, p.properties, p.is_identified, "
        "(SELECT json_group_array(distinct_id) FROM "
        " (SELECT distinct_id FROM person_distinct_ids d WHERE d.person_id = p.id ORDER BY distinct_id)) "
        "FROM persons p ORDER BY p.id")
    dumps = json.dumps
    while True:
        chunk = cur.fetchmany(batch)
        if not chunk:
            return
        for pid, created, props, ident, dids in chunk:
            yield dumps({"id": pid, "created_at": db_to_iso(created), "properties": json.loads(props or "{}"),
                         "distinct_ids": json.loads(dids or "[]"), "is_identified": bool(ident)},
                        ensure_ascii=False) + "\n"
