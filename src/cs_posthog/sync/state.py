"""The sync's own state, in SQLite under the state dir: cursors, delivered uuids within the overlap
window, the in-flight marker, contact fingerprints and the history of runs. Plus the run lock.

Durability: WAL with ``synchronous=NORMAL``. A killed process (SIGKILL, OOM, Ctrl-C) loses no
committed transaction; a power cut may lose the last few, which the next run then resends (the
cursor and the delivered set always move together, so nothing is ever skipped).

One connection shared by the worker threads, serialised by a lock: every transaction here is small.

Schema versions: ``PRAGMA user_version``, brought up to ``SCHEMA_VERSION`` by the ordered
``MIGRATIONS`` when the file is opened (one transaction); a newer version is refused (78). How to
add a migration: the comment above ``_SCHEMA_1``, and docs/state.md.

Rows are written with multi-row statements (``INSERT ... VALUES (?, ?), (?, ?), ...``), not
``executemany``: the sqlite3 module releases the GIL around every ``sqlite3_step``, and a thread that
gives the GIL up a hundred times per checkpoint waits up to a switch interval (5 ms) to get it back
each time while the reader thread is decoding a page. One statement per table per checkpoint keeps
the sending thread's checkpoints short.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from filelock import FileLock, Timeout

from cs_posthog import __version__
from cs_posthog.errors import ConfigError, CsPosthogError, FileError, LockHeldError, NewerStateError
from cs_posthog.fsutil import atomic_write_text
from cs_posthog.paths import ensure_private_dir
from cs_posthog.secrets import redact, redact_data
from cs_posthog.timeutil import fmt_ts, norm_ts, parse_ts, utcnow

MAIN_STREAM = "events"
_CHUNK = 500  # parameters per IN (...) query
_MAX_PARAMS = 900  # per multi-row statement: under SQLite's historical 999-variable limit
_INFLIGHT_KEY = "inflight_batch"  # meta row: the batch in flight (see SyncState.mark_inflight)
DEVICE_OWNER_PREFIX = "d:"  # persons_seen ids of distinct ids merged into a Person, awaiting their backfill (6e)
PERSONS_STREAM_PREFIX = "persons:"  # event streams that backfill Persons who became attachable
GROUPS_READY_KEY = "groups_seen_ready"  # meta: persons_seen holds every attachable group of a complete scan
_PERSONS_READY_KEY = "persons_seen_ready"  # meta: persons_seen holds every attachable Person of a complete scan
_BACKFILL_KEY = "persons_backfill"  # meta: the new-person backfill in progress (stream, person ids, upto)
SKIPPED_IDS_KEY = "skipped_ids_upto"  # meta: skipped_ids holds the skips of events ingested up to this time
MERGES_KEY = "merges_upto"  # meta: the merge events ingested up to this time were looked at (6e)
WRITER_KEY = "written_by"  # meta: the cs-posthog version of the last sync that wrote the state (absent before)

# --- the schema and its migrations -------------------------------------------------------------
# The version of a state's schema is SQLite's ``PRAGMA user_version``: ``MIGRATIONS[n - 1]`` brings
# a state from version n - 1 to version n, and a new file is made by running all of them from 0, so
# a new state and a migrated one are the same tables by construction. ``SyncState`` runs the steps a
# file lacks in one transaction when it opens it (a crash leaves the old version as it was), and
# refuses a file of a version above ``SCHEMA_VERSION`` (written by a newer cs-posthog: 78).
#
# Adding a migration (docs/state.md says the same, with the reasons):
#   1. Write ``_schema_<n>(db)``: the change from version n - 1, as plain SQL statements on ``db``
#      (CREATE TABLE, ALTER TABLE ... ADD COLUMN, UPDATE/INSERT to fill them). It runs inside the
#      caller's transaction: no ``executescript`` (it commits), no COMMIT, no PRAGMA that cannot run
#      in a transaction (journal_mode). It may assume exactly version n - 1's tables: only steps 1
#      and 2 meet files from before user_version, which older releases may have left half-created.
#   2. Append it to ``MIGRATIONS`` (``SCHEMA_VERSION`` follows) and change the readers and writers
#      below in the same commit. Never edit, reorder or remove a released step.
#   3. In tests/test_sync_state_migrations.py, add version n - 1 as this release writes it (its DDL
#      copied from the code, with rows in every table) to the fixtures: the tests open every
#      earlier version and compare it with a new state, data included.
_SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    events TEXT NOT NULL,              -- JSON list of the event names this cursor covers
    floor TEXT NOT NULL,               -- no event with an earlier timestamp is read (backfill start)
    cursor_created_at TEXT,            -- last (created_at, uuid) delivered or skipped with all before it
    cursor_uuid TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (
    uuid TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_time ON delivered (created_at);
CREATE TABLE IF NOT EXISTS inflight (
    uuid TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    marked_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
    contact_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    seen_run INTEGER NOT NULL          -- last run whose complete Persons scan matched it
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,              -- running, ok, partial, failed, interrupted
    mode TEXT NOT NULL,                -- incremental, full
    pid INTEGER,
    summary TEXT,                      -- JSON of the report
    error TEXT
)
"""


def _schema_1(db: sqlite3.Connection) -> None:
    """The first schema: meta, event cursors (streams), delivered uuids, in-flight marks that
    outlived their batch, contact fingerprints, runs. ``IF NOT EXISTS``: releases before
    user_version created these tables one statement at a time, and a crash could stop in between."""
    for stmt in _SCHEMA_1.split(";\n"):
        if stmt.strip():
            db.execute(stmt)


def _schema_2(db: sqlite3.Connection) -> None:
    """Skips told from deliveries (``delivered.skipped``: 1 = read and skipped for want of a
    customer or contact id, never sent) and the Persons who become attachable (``persons_seen``,
    invariant 6a). Tolerant like step 1: the release that added them did so outside a transaction."""
    if "skipped" not in {r[1] for r in db.execute("PRAGMA table_info(delivered)")}:
        db.execute("ALTER TABLE delivered ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "CREATE TABLE IF NOT EXISTS persons_seen (\n"
        "    person_id TEXT PRIMARY KEY,        -- a Person whose events the sync can attach (customer + contact id)\n"
        "    pending INTEGER NOT NULL           -- 1: became attachable, their backfill-window events not yet sent\n"
        ") WITHOUT ROWID"
    )


def _schema_3(db: sqlite3.Connection) -> None:
    """Where the events of a Person stopped being sent when they left the Person filters while the
    filters choose the events (``persons_left``, invariant 6c): back inside, their backfill starts
    strictly after that point instead of the backfill floor."""
    db.execute(
        "CREATE TABLE persons_left (\n"
        "    person_id TEXT PRIMARY KEY,        -- a Person whose events were sent, then no longer\n"
        "    created_at TEXT NOT NULL,          -- the main cursor before the run that found them outside\n"
        "    uuid TEXT NOT NULL\n"
        ") WITHOUT ROWID"
    )


def _schema_4(db: sqlite3.Connection) -> None:
    """The distinct ids whose selected events were skipped for want of a customer id (``skipped_ids``,
    invariant 6e): when PostHog merges one of them into a Person (``$identify``, ``$create_alias``,
    ``$merge_dangerously``), its skipped events of the backfill window are sent once."""
    db.execute(
        "CREATE TABLE skipped_ids (\n"
        "    distinct_id TEXT PRIMARY KEY,      -- whose selected events lacked a customer id\n"
        "    person_id TEXT NOT NULL,           -- their Person then\n"
        "    last_ts TEXT NOT NULL              -- the latest timestamp of those events (kept while in the window)\n"
        ") WITHOUT ROWID"
    )
    db.execute("CREATE INDEX skipped_ids_by_person ON skipped_ids (person_id)")
    db.execute("CREATE INDEX skipped_ids_by_time ON skipped_ids (last_ts)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_schema_1, _schema_2, _schema_3, _schema_4)
SCHEMA_VERSION = len(MIGRATIONS)  # the PRAGMA user_version of every state this cs-posthog writes


def _legacy_version(db: sqlite3.Connection) -> int:
    """The version of a state whose user_version reads 0: new, or from before user_version was kept.
    Those releases created their tables and then wrote meta 'schema' = '1' whatever the tables were,
    so the tables tell: version 2 added ``delivered.skipped`` and ``persons_seen`` together; a file
    with both is 2, with neither or one of them 1 (step 2 completes it). Without that meta row it is
    new, or was left half-created, or is not ours: 0 (step 1 completes ours; the column check
    refuses the others)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables or "delivered" not in tables:
        return 0
    try:
        if db.execute("SELECT 1 FROM meta WHERE key='schema'").fetchone() is None:
            return 0
    except sqlite3.OperationalError:  # a meta table that is not ours
        return 0
    cols = {r[1] for r in db.execute("PRAGMA table_info(delivered)")}
    return 2 if "skipped" in cols and "persons_seen" in tables else 1


@functools.cache
def _expected_columns() -> dict[str, frozenset[str]]:
    """Table -> columns of the current schema, from the migrations run on an empty database."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for step in MIGRATIONS:
            step(db)
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: frozenset(r[1] for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        db.close()


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# --- records ---------------------------------------------------------------------------------
@dataclass
class Cursor:
    created_at: str  # canonical form (fmt_ts)
    uuid: str

    def as_dict(self) -> dict[str, str]:
        return {"created_at": self.created_at, "uuid": self.uuid}


@dataclass
class Stream:
    name: str
    events: list[str]
    floor: str
    cursor: Cursor | None
    updated_at: str

    @property
    def is_main(self) -> bool:
        return self.name == MAIN_STREAM


@dataclass
class RunRecord:
    id: int
    started_at: str
    finished_at: str | None
    status: str
    mode: str
    pid: int | None
    summary: dict[str, Any] | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "mode": self.mode,
            "summary": self.summary,
            "error": self.error,
        }


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], width: int) -> None:
    """``head`` (``INSERT ... VALUES``) for every row, as few statements as the variable limit allows."""
    one = "(" + ",".join("?" * width) + ")"
    for part in _chunks(rows, _MAX_PARAMS // width):
        db.execute(head + ",".join([one] * len(part)), [v for row in part for v in row])


def _delete_keys(db: sqlite3.Connection, head: str, keys: Sequence[Any]) -> None:
    """``head`` (``DELETE ... WHERE key IN``) for every key, in as few statements as possible."""
    for part in _chunks(keys, _MAX_PARAMS):
        db.execute(f"{head} ({','.join('?' * len(part))})", part)


def unusable_state_error(exc: BaseException, path: Path | str, *,
                         opening: bool = False) -> CsPosthogError | None:
    """The error to report for an SQLite error that says the state file itself is the problem, or None
    (then it is a bug).

    The file system first: the disk full (SQLITE_FULL), an I/O error (SQLITE_IOERR), a file or
    directory that cannot be written or opened (SQLITE_READONLY, SQLITE_CANTOPEN: a read-only home)
    are a ``FileError`` naming the file and what the OS says (74, or 73): never called damaged, since
    moving a healthy state away would resend everything. Then the file's content: opening it, any
    other error but "busy/locked" (not a database, damaged, unsupported format); later, only SQLite's
    "corrupt" and "not a database": a ConfigError (78) suggesting to move it away. ``cli.py`` applies
    it to errors that escape a command too."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if isinstance(exc, sqlite3.DatabaseError) and (name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) or (
        name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) and _os_reason(Path(path)) is not None
    )):
        return _state_file_error(exc, Path(path), name)
    # read-only or unopenable while the file system would allow it: the file's own header says so
    # (a newer or damaged format), so it is the content, like "corrupt"
    if opening:
        if not isinstance(exc, (sqlite3.DatabaseError, UnicodeDecodeError)) or name.startswith(
            ("SQLITE_BUSY", "SQLITE_LOCKED")
        ):
            return None
    elif not (isinstance(exc, sqlite3.DatabaseError) and name.startswith(
            ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_READONLY", "SQLITE_CANTOPEN"))):
        return None
    return ConfigError(
        f"{path}: the sync state cannot be used ({exc})",
        hint=f"If it is damaged, move it away (mv {path} {path}.damaged): the next sync then starts as a "
        "first sync and sends the backfill window and every contact again.",
    )


def _state_file_error(exc: BaseException, path: Path, name: str) -> CsPosthogError:
    """A FileError for SQLite's file-system errors, with the OS's own reason when it can be found
    (SQLite does not pass errno on): a read-only file system, no permission, the disk full."""
    doing = "open" if name.startswith("SQLITE_CANTOPEN") else "write"
    if name.startswith("SQLITE_FULL"):
        return FileError.from_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path)
    reason = _os_reason(path)
    if reason is None:  # SQLite's own words, e.g. "disk I/O error"
        reason = OSError(errno.EIO, str(exc))
    return FileError.from_os_error(reason, path, doing=doing)


def _os_reason(path: Path) -> OSError | None:
    """Why the OS would not let SQLite write ``path`` (or create its journal beside it), or None."""
    def err(code: int) -> OSError:
        return OSError(code, os.strerror(code))

    try:
        for target in (path, path.parent):
            if not target.exists():
                continue
            if os.statvfs(target).f_flag & os.ST_RDONLY:
                return err(errno.EROFS)
            if not os.access(target, os.W_OK):
                return err(errno.EACCES)
        if path.is_dir():
            return err(errno.EISDIR)
        if not path.parent.is_dir():
            return err(errno.ENOTDIR if path.parent.exists() else errno.ENOENT)
    except OSError as exc:
        return exc
    return None


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection (status, dry runs). In a read-only home SQLite cannot create the WAL
    index beside the file and fails the first read; nothing can be writing the file there either, so
    it is then read as it is (``immutable``) instead of failing."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError as exc:
        name = str(getattr(exc, "sqlite_errorname", ""))
        if not name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")) or _os_reason(path) is None:
            db.close()
            raise
    db.close()

    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True, check_same_thread=False,
                           isolation_level=None)


def _check_schema(db: sqlite3.Connection) -> None:
    """Read the header and the schema text: a file that is not a database, or whose schema is
    damaged, fails here (DatabaseError, UnicodeDecodeError) rather than in the middle of a run."""
    for (sql,) in db.execute("SELECT CAST(sql AS BLOB) FROM sqlite_master"):
        if sql is not None:
            bytes(sql).decode("utf-8")


class SyncState:
    """Open (and create) the state database, migrated to ``SCHEMA_VERSION``. ``readonly`` never
    creates or writes anything (dry runs, status): a missing database then reads as empty, and one of
    an earlier version is read through a migrated copy in memory (the file stays as it is until the
    next sync migrates it)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._pending: dict[str, str] | None = None  # the marks this instance wrote in the meta row
        self._spilled_marks: bool | None = None  # whether the inflight table may hold marks (None: look)
        try:
            self._open()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # not a database, damaged, unwritable
            self.close()
            err = unusable_state_error(exc, self.path, opening=True)
            if err is None:
                raise
            raise err from None
        except BaseException:  # refused (damaged, too new): nothing stays open
            self.close()
            raise

    def _open(self) -> None:
        if self.readonly:
            if self.path.exists():
                self._db = _connect_readonly(self.path)
                _check_schema(self._db)
                if self._version(self._db) < SCHEMA_VERSION:
                    copy = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
                    self._db.backup(copy)
                    self._db.close()
                    self._db = copy
                    with _transaction(copy):
                        self._migrate(copy)
                else:
                    self._check_columns(self._db)
            return

        ensure_private_dir(self.path.parent)
        new = not self.path.exists()
        if new:  # create it private: it names persons and customers
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        _check_schema(self._db)
        # a newer or foreign file is refused before anything is written to it, WAL mode included
        if self._version(self._db) < SCHEMA_VERSION:
            with self.tx() as db:
                self._migrate(db)
        else:
            self._check_columns(self._db)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")

    def _version(self, db: sqlite3.Connection) -> int:
        """``db``'s ``user_version``: ``SCHEMA_VERSION`` when it is up to date, less when it needs
        migrating (0: new, or from before user_version was kept). A version this cs-posthog does not
        know is refused here, before anything is written."""
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise NewerStateError(self.path, version, SCHEMA_VERSION)
        if version < 0:
            raise self.damaged(f"its schema version is {version}")
        return int(version)

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring ``db`` to ``SCHEMA_VERSION`` inside the caller's transaction (its version is read
        there: another process may have migrated it meanwhile): the steps it lacks, the check that its
        tables are ours, then the new version (``user_version``, mirrored in meta 'schema' for people
        reading the file). A file the steps do not fit (SQL errors: a table that is not ours, a
        version that lies) is a damaged state, and the rollback leaves it as it was."""
        version = self._version(db) or _legacy_version(db)
        for number in range(version + 1, SCHEMA_VERSION + 1):
            try:
                MIGRATIONS[number - 1](db)
            except sqlite3.OperationalError as exc:
                if not str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_ERROR"):
                    raise  # the disk, not the content: unusable_state_error says which
                raise self.damaged(f"its tables are not cs-posthog's schema {number - 1} ({exc})") from None
        self._check_columns(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def _check_columns(self, db: sqlite3.Connection) -> None:
        """A database whose tables are not ours (another program's file, or a schema from elsewhere)
        or lack one is refused at once, naming the file, instead of failing in the middle of a run."""
        for table, needed in _expected_columns().items():
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            if not have:
                raise self.damaged(f"it has no {table} table")
            if not needed <= have:
                missing = ", ".join(sorted(needed - have))
                raise self.damaged(f"its {table} table is not cs-posthog's (no {missing})")

    # --- plumbing ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> SyncState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), serialised across threads."""
        if self.readonly or self._db is None:
            raise RuntimeError("state opened read-only")
        with self._lock, _transaction(self._db) as db:
            yield db

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._db is None:
            return []
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if self.readonly and "no such table" in str(exc):
                    return []
                raise

    # --- meta --------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- streams (event cursors) -------------------------------------------------------------
    def streams(self) -> list[Stream]:
        """The event cursors. A row that cannot be one (events not a JSON list of names, a floor or
        cursor that is not a time) makes the whole state unusable: exit 78 naming the file, rather
        than a guess that could skip or resend events."""
        try:
            rows = self._read(
                "SELECT name, events, floor, cursor_created_at, cursor_uuid, updated_at FROM streams ORDER BY name"
            )
        except sqlite3.OperationalError as exc:  # a foreign schema: no such column
            raise self.damaged(f"the streams table is not cs-posthog's ({exc})") from None
        out = []
        for name, events, floor, cc, cu, updated in rows:
            try:
                names = json.loads(events)
                if not isinstance(names, list) or not all(isinstance(e, str) for e in names):
                    raise ValueError("events is not a list of names")
                floor = norm_ts(floor)
                cursor = Cursor(norm_ts(cc), str(cu)) if cc else None
                if cursor is not None and not cu:
                    raise ValueError("a cursor without its uuid")
            except (ValueError, TypeError, OverflowError) as exc:
                raise self.damaged(f"event stream {str(name)!r} is damaged ({exc})") from None
            out.append(Stream(str(name), names, floor, cursor, updated))
        return out

    def damaged(self, what: str) -> Exception:
        """The ConfigError (78) for a state database whose content cs-posthog cannot trust."""
        return ConfigError(
            f"{self.path}: the sync state cannot be used: {what}",
            hint=f"If it is damaged, move it away (mv {self.path} {self.path}.damaged): the next sync then starts "
            "as a first sync and sends the backfill window and every contact again.",
        )

    def json_meta(self, key: str, default: Any) -> Any:
        """A JSON value kept in ``meta`` (``default`` when absent); damaged JSON is a damaged state."""
        raw = self.get_meta(key)
        if raw is None:
            return default
        try:
            value = json.loads(raw)
        except ValueError:
            raise self.damaged(f"meta {key!r} is not JSON") from None
        if not isinstance(value, type(default)):
            raise self.damaged(f"meta {key!r} is not a {type(default).__name__}")
        return value

    def time_meta(self, key: str) -> str | None:
        """A time kept in ``meta`` in the canonical form; anything else is a damaged state."""
        raw = self.get_meta(key)
        if raw is None:
            return None
        try:
            return norm_ts(raw)
        except (ValueError, TypeError, OverflowError):
            raise self.damaged(f"meta {key!r} is not a time") from None

    def stream(self, name: str) -> Stream | None:
        for s in self.streams():
            if s.name == name:
                return s
        return None

    def save_stream(self, stream: Stream) -> None:
        with self.tx() as db:
            self._save_stream(db, stream)

    @staticmethod
    def _save_stream(db: sqlite3.Connection, s: Stream) -> None:
        db.execute(
            "INSERT OR REPLACE INTO streams (name, events, floor, cursor_created_at, cursor_uuid, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                s.name,
                json.dumps(s.events),
                s.floor,
                s.cursor.created_at if s.cursor else None,
                s.cursor.uuid if s.cursor else None,
                fmt_ts(utcnow()),
            ),
        )

    def merge_stream(self, catchup: Stream, main: Stream) -> Stream:
        """A catch-up stream reached the main cursor: its events join the main stream (one tx)."""
        events = main.events + [e for e in catchup.events if e not in main.events]
        merged = Stream(main.name, events, main.floor, main.cursor, "")
        with self.tx() as db:
            db.execute("DELETE FROM streams WHERE name=?", (catchup.name,))
            self._save_stream(db, merged)
        return merged

    def delete_stream(self, name: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM streams WHERE name=?", (name,))

    # --- delivered uuids and the in-flight marker --------------------------------------------
    def delivered_among(self, uuids: Sequence[str], *, include_skipped: bool = True) -> set[str]:
        """Which of ``uuids`` were handled: delivered, or (``include_skipped``) read and skipped."""
        found: set[str] = set()
        only_sent = "" if include_skipped else " AND skipped = 0"
        for part in _chunks(list(uuids)):
            marks = ",".join("?" * len(part))
            sql = f"SELECT uuid FROM delivered WHERE uuid IN ({marks}){only_sent}"
            found.update(r[0] for r in self._read(sql, part))
        return found

    def delivered_count(self) -> int:
        rows = self._read("SELECT count(*) FROM delivered")
        return rows[0][0] if rows else 0

    # The batch in flight is one JSON row in ``meta`` (``_INFLIGHT_KEY``), written in the transaction
    # of the checkpoint before it: one row instead of a row per uuid inserted and deleted again, for
    # every batch. Marks that outlive their batch (a run that died, or a batch that failed) move to
    # the ``inflight`` table, where each one stays until its uuid is delivered or pruned.
    def _may_hold_spilled_marks(self, db: sqlite3.Connection) -> bool:
        """Whether the ``inflight`` table may hold marks (then deliveries must clear them)."""
        if self._spilled_marks is None:
            self._spilled_marks = db.execute("SELECT 1 FROM inflight LIMIT 1").fetchone() is not None
        return self._spilled_marks

    @staticmethod
    def _spill(db: sqlite3.Connection, marks: Sequence[tuple[str, str]], marked_at: str) -> None:
        _insert_rows(db, "INSERT OR REPLACE INTO inflight (uuid, created_at, marked_at) VALUES ",
                     [(u, c, marked_at) for u, c in marks], 3)

    def _write_marks(self, db: sqlite3.Connection, items: Sequence[tuple[str, str]]) -> dict[str, str]:
        now = fmt_ts(utcnow())
        if self._pending:  # a batch never acknowledged: its marks must stay
            self._spill(db, list(self._pending.items()), now)
            self._spilled_marks = True
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   (_INFLIGHT_KEY, json.dumps({"marked_at": now, "items": [[u, c] for u, c in items]})))
        return dict(items)

    def mark_inflight(self, items: Sequence[tuple[str, str]]) -> None:
        """Before a tracker POST: these (uuid, created_at) may be applied without our knowing."""
        with self.tx() as db:
            pending = self._write_marks(db, items)
        self._pending = pending

    def unmark_inflight(self, uuids: Sequence[str]) -> None:
        """Marks of a batch that was never sent after all (the run stopped first)."""
        if not uuids:
            return
        drop = set(uuids)
        with self.tx() as db:
            rest = {u: c for u, c in (self._pending or {}).items() if u not in drop}
            if rest:
                db.execute("UPDATE meta SET value=? WHERE key=?", (
                    json.dumps({"marked_at": fmt_ts(utcnow()), "items": [[u, c] for u, c in rest.items()]}),
                    _INFLIGHT_KEY))
            else:
                db.execute("DELETE FROM meta WHERE key=?", (_INFLIGHT_KEY,))
            if self._may_hold_spilled_marks(db):
                _delete_keys(db, "DELETE FROM inflight WHERE uuid IN", list(drop))
        self._pending = rest or None

    def _marks_row(self) -> list[tuple[str, str]]:
        rows = self._read("SELECT value FROM meta WHERE key=?", (_INFLIGHT_KEY,))
        if not rows:
            return []
        try:
            return [(str(u), str(c)) for u, c in json.loads(rows[0][0])["items"]]
        except (ValueError, TypeError, KeyError):
            return []

    def inflight(self) -> set[str]:
        """Every uuid marked in flight: the batch of the last run if it died sending, and older
        marks not yet delivered again."""
        return {r[0] for r in self._read("SELECT uuid FROM inflight")} | {u for u, _ in self._marks_row()}

    def checkpoint(
        self,
        stream: Stream,
        cursor: Cursor,
        delivered: Sequence[tuple[str, str]] = (),
        *,
        skipped: Sequence[tuple[str, str]] = (),
        prune_before: str | None = None,
        mark_next: Sequence[tuple[str, str]] = (),
    ) -> None:
        """After an acknowledgement: record the batch as delivered, clear its in-flight marks, move
        the stream's cursor, and prune delivered uuids older than the overlap window, atomically.

        ``mark_next``: the in-flight marks of the batch about to be sent, written in the same
        transaction (one commit per batch instead of two; ``mark_inflight`` is the same thing).
        ``skipped``: rows read and skipped (no id): recorded so that re-reads count them once, but
        never taken for deliveries (a Person who becomes attachable still has them sent)."""
        stream.cursor = cursor
        pending = self._pending
        with self.tx() as db:
            if skipped:
                _insert_rows(db, "INSERT OR IGNORE INTO delivered (uuid, created_at, skipped) VALUES ",
                             [(u, c, 1) for u, c in skipped], 3)
            if delivered:
                _insert_rows(db, "INSERT OR REPLACE INTO delivered (uuid, created_at, skipped) VALUES ",
                             [(u, c, 0) for u, c in delivered], 3)
                if self._may_hold_spilled_marks(db):
                    _delete_keys(db, "DELETE FROM inflight WHERE uuid IN", [u for u, _ in delivered])
                if pending:
                    done = {u for u, _ in delivered}
                    rest = [(u, c) for u, c in pending.items() if u not in done]
                    if rest:  # (not the batch this acknowledges: keep what it did not deliver)
                        self._spill(db, rest, fmt_ts(utcnow()))
                        self._spilled_marks = True
                    if not mark_next:
                        db.execute("DELETE FROM meta WHERE key=?", (_INFLIGHT_KEY,))
                    pending = None
            self._save_stream(db, stream)
            if prune_before is not None:
                db.execute("DELETE FROM delivered WHERE created_at < ?", (prune_before,))
                if self._may_hold_spilled_marks(db):
                    db.execute("DELETE FROM inflight WHERE created_at < ?", (prune_before,))
            if mark_next:
                saved, self._pending = self._pending, pending
                try:
                    pending = self._write_marks(db, mark_next)
                finally:
                    self._pending = saved
        self._pending = pending

    def prune_horizon(self, overlap: timedelta) -> str | None:
        """Delivered uuids older than (the earliest cursor - overlap) can never be re-read."""
        rows = self._read("SELECT min(cursor_created_at) FROM streams WHERE cursor_created_at IS NOT NULL")
        if not rows or rows[0][0] is None:
            return None
        return fmt_ts(parse_ts(rows[0][0]) - overlap)

    # --- contacts ----------------------------------------------------------------------------
    def fingerprints(self, contact_ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in _chunks(list(contact_ids)):
            marks = ",".join("?" * len(part))
            sql = f"SELECT contact_id, fingerprint FROM contacts WHERE contact_id IN ({marks})"
            for cid, fp in self._read(sql, part):
                out[cid] = fp
        return out

    def record_contacts(self, rows: Sequence[tuple[str, str, str]], run_id: int) -> None:
        """After an acknowledgement: (contact_id, customer_id, fingerprint) of the batch."""
        now = fmt_ts(utcnow())
        with self.tx() as db:
            _insert_rows(
                db,
                "INSERT OR REPLACE INTO contacts (contact_id, customer_id, fingerprint, sent_at, seen_run) VALUES ",
                [(cid, cust, fp, now, run_id) for cid, cust, fp in rows],
                5,
            )

    def touch_contacts(self, contact_ids: Iterable[str], run_id: int) -> None:
        ids = list(contact_ids)
        if not ids:
            return
        with self.tx() as db:
            for part in _chunks(ids, _MAX_PARAMS):
                db.execute(f"UPDATE contacts SET seen_run=? WHERE contact_id IN ({','.join('?' * len(part))})",
                           [run_id, *part])

    def contacts_count(self) -> int:
        rows = self._read("SELECT count(*) FROM contacts")
        return rows[0][0] if rows else 0

    def contacts_not_seen_since(self, run_id: int) -> int:
        rows = self._read("SELECT count(*) FROM contacts WHERE seen_run < ?", (run_id,))
        return rows[0][0] if rows else 0

    def clear_fingerprints(self) -> None:
        """Every contact is sent again on the next run; the rows stay, so contacts that no longer
        match the filters can still be counted."""
        with self.tx() as db:
            db.execute("UPDATE contacts SET fingerprint=''")

    # --- Persons who become attachable (invariant 6a) -----------------------------------------
    def persons_ready(self) -> bool:
        """Whether a complete Persons scan has filled ``persons_seen`` (before that, every Person
        looks new and none is backfilled: the first sync's backfill window covers them)."""
        return self.get_meta(_PERSONS_READY_KEY) == "1"

    def set_persons_ready(self) -> None:
        self.set_meta(_PERSONS_READY_KEY, "1")

    def persons_unseen(self, person_ids: Sequence[str]) -> list[str]:
        """The ids of ``person_ids`` not in ``persons_seen``, in their order."""
        known: set[str] = set()
        for part in _chunks(list(person_ids)):
            marks = ",".join("?" * len(part))
            sql = f"SELECT person_id FROM persons_seen WHERE person_id IN ({marks})"
            known.update(r[0] for r in self._read(sql, part))
        return [p for p in person_ids if p not in known]

    def add_persons(self, person_ids: Sequence[str], *, pending: bool) -> None:
        if not person_ids:
            return
        with self.tx() as db:
            _insert_rows(db, "INSERT OR IGNORE INTO persons_seen (person_id, pending) VALUES ",
                         [(p, int(pending)) for p in person_ids], 2)

    def forget_persons(self, person_ids: Sequence[str], left_at: tuple[str, str] | None) -> None:
        """Drop ``person_ids`` from ``persons_seen``: their events are no longer sent, so the scan that
        sees them attachable again finds them new (pending a backfill). For those whose events were
        being sent (seen, not pending), ``left_at`` (the main cursor before this run) is kept in
        ``persons_left`` unless an earlier one is: their backfill starts strictly after it, as
        everything before it was sent then. None (a first sync): nothing was sent."""
        if not person_ids:
            return
        with self.tx() as db:
            for part in _chunks(list(person_ids), _MAX_PARAMS - 2):
                marks = ",".join("?" * len(part))
                if left_at is not None:
                    db.execute("INSERT OR IGNORE INTO persons_left (person_id, created_at, uuid) "
                               "SELECT person_id, ?, ? "
                               f"FROM persons_seen WHERE pending = 0 AND person_id IN ({marks})", [*left_at, *part])
                db.execute(f"DELETE FROM persons_seen WHERE person_id IN ({marks})", list(part))

    def left_points(self, person_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``persons_left``'s point of each of ``person_ids`` that has one."""
        out: dict[str, tuple[str, str]] = {}
        for part in _chunks(list(person_ids)):
            marks = ",".join("?" * len(part))
            for pid, c, u in self._read("SELECT person_id, created_at, uuid FROM persons_left "
                                        f"WHERE person_id IN ({marks})", list(part)):
                out[str(pid)] = (str(c), str(u))
        return out

    def pending_group(self, limit: int) -> tuple[list[str], tuple[str, str] | None]:
        """Up to ``limit`` pending Persons who share where their backfill starts: (ids, the point of
        ``persons_left`` they start strictly after, or None: the backfill floor). Persons back from
        the same run come together; those who never had their events sent come first."""
        rows = self._read(
            "SELECT s.person_id, l.created_at, l.uuid FROM persons_seen s LEFT JOIN persons_left l "
            "ON l.person_id = s.person_id WHERE s.pending = 1 "
            "ORDER BY l.created_at IS NOT NULL, l.created_at, l.uuid, s.person_id LIMIT ?", (int(limit),))
        if not rows:
            return [], None
        after = None if rows[0][1] is None else (str(rows[0][1]), str(rows[0][2]))
        ids = [str(r[0]) for r in rows if (None if r[1] is None else (str(r[1]), str(r[2]))) == after]
        return ids, after

    def pending_persons(self, limit: int) -> list[str]:
        return [r[0] for r in self._read(
            "SELECT person_id FROM persons_seen WHERE pending = 1 ORDER BY person_id LIMIT ?", (int(limit),))]

    def pending_persons_count(self) -> int:
        """Persons (and groups) waiting for their backfill; not the merged distinct ids (6e)."""
        rows = self._read("SELECT count(*) FROM persons_seen WHERE pending = 1 AND substr(person_id, 1, ?) != ?",
                          (len(DEVICE_OWNER_PREFIX), DEVICE_OWNER_PREFIX))
        return rows[0][0] if rows else 0

    def pending_merged_count(self) -> int:
        """Distinct ids merged into a known Person whose skipped events wait for their backfill (6e)."""
        rows = self._read("SELECT count(*) FROM persons_seen WHERE pending = 1 AND substr(person_id, 1, ?) = ?",
                          (len(DEVICE_OWNER_PREFIX), DEVICE_OWNER_PREFIX))
        return rows[0][0] if rows else 0

    def current_backfill(self) -> tuple[Stream, list[str], tuple[str, str]] | None:
        """The new-person backfill in progress: its stream, its Persons and its upper bound."""
        raw = self.get_meta(_BACKFILL_KEY)
        if raw is None:
            return None
        try:
            d = json.loads(raw)
            stream = self.stream(str(d["stream"]))
            ids = [str(p) for p in d["persons"]]
            upto = (str(d["upto"][0]), str(d["upto"][1]))
        except (ValueError, TypeError, KeyError, IndexError):
            stream = None
        if stream is None:
            with self.tx() as db:
                db.execute("DELETE FROM meta WHERE key=?", (_BACKFILL_KEY,))
            return None
        return stream, ids, upto

    def start_backfill(self, stream: Stream, person_ids: Sequence[str], upto: tuple[str, str],
                       after: tuple[str, str] | None = None) -> None:
        """``after``: the Persons' events up to this point were sent before (``pending_group``)."""
        d: dict[str, Any] = {"stream": stream.name, "persons": list(person_ids), "upto": list(upto)}
        if after is not None:
            d["after"] = list(after)
        with self.tx() as db:
            self._save_stream(db, stream)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_BACKFILL_KEY, json.dumps(d)))

    def backfill_after(self) -> tuple[str, str] | None:
        """The ``after`` of the backfill in progress (``start_backfill``), or None."""
        try:
            after = json.loads(self.get_meta(_BACKFILL_KEY) or "{}").get("after")
            return None if after is None else (str(after[0]), str(after[1]))
        except (ValueError, TypeError, AttributeError, IndexError):
            return None

    def finish_backfill(self, stream: Stream, person_ids: Sequence[str]) -> None:
        """The backfill reached its bound: its Persons are attachable like any other from now on."""
        with self.tx() as db:
            db.execute("DELETE FROM streams WHERE name=?", (stream.name,))
            db.execute("DELETE FROM meta WHERE key=?", (_BACKFILL_KEY,))
            for part in _chunks(list(person_ids), _MAX_PARAMS):
                db.execute(f"UPDATE persons_seen SET pending = 0 WHERE person_id IN ({','.join('?' * len(part))})",
                           list(part))
                db.execute(f"DELETE FROM persons_left WHERE person_id IN ({','.join('?' * len(part))})", list(part))
            # a merged distinct id is done with: its events are the surviving Person's from now on
            db.execute("DELETE FROM persons_seen WHERE pending = 0 AND substr(person_id, 1, ?) = ?",
                       (len(DEVICE_OWNER_PREFIX), DEVICE_OWNER_PREFIX))

    def reset_persons(self) -> None:
        """Forget which Persons are attachable (and any backfill of new ones in progress): the next
        Persons scan fills ``persons_seen`` again without backfilling, as a first sync does. For a
        change of what identifies the customer (Person property, group): the Persons attachable by
        the new rule are not "new", and their past events stay as they were sent or skipped."""
        backfill = self.current_backfill()
        with self.tx() as db:
            if backfill is not None:
                db.execute("DELETE FROM streams WHERE name=?", (backfill[0].name,))
            for table in ("persons_seen", "persons_left", "skipped_ids"):
                db.execute(f"DELETE FROM {table}")
            db.execute("DELETE FROM meta WHERE key IN (?, ?, ?, ?, ?)", (
                _PERSONS_READY_KEY, GROUPS_READY_KEY, _BACKFILL_KEY, SKIPPED_IDS_KEY, MERGES_KEY))

    # --- skipped distinct ids and merges (invariant 6e) ------------------------------------
    def record_skipped_ids(self, rows: Sequence[tuple[str, str, str]], *, keep_from: str) -> None:
        """Note ``(distinct_id, person_id, last_ts)`` of skipped events (the latest timestamp, in our
        canonical form), and forget the ids whose latest skipped event is before ``keep_from`` (the
        backfill floor: a backfill would not reach them)."""
        with self.tx() as db:
            db.executemany(
                "INSERT INTO skipped_ids (distinct_id, person_id, last_ts) VALUES (?, ?, ?) "
                "ON CONFLICT(distinct_id) DO UPDATE SET person_id = excluded.person_id, "
                "last_ts = max(last_ts, excluded.last_ts)", rows)
            db.execute("DELETE FROM skipped_ids WHERE last_ts < ?", (keep_from,))

    def has_skipped_ids(self) -> bool:
        return bool(self._read("SELECT 1 FROM skipped_ids LIMIT 1"))

    def skipped_ids_merged(self, distinct_ids: Sequence[str]) -> list[str]:
        """The skipped distinct ids a merge of ``distinct_ids`` into another Person brings back: those
        among them, and the other skipped ids of the same Persons (a Person merged away takes all its
        ids along). Not those of a Person who became attachable since (``persons_seen``): their
        events were sent by that Person's backfill."""
        persons: set[str] = set()
        for part in _chunks(sorted(set(distinct_ids))):
            marks = ",".join("?" * len(part))
            persons.update(str(r[0]) for r in self._read(
                f"SELECT person_id FROM skipped_ids WHERE distinct_id IN ({marks}) "
                "AND person_id NOT IN (SELECT person_id FROM persons_seen)", part))
        found: set[str] = set()
        for part in _chunks(sorted(persons)):
            marks = ",".join("?" * len(part))
            found.update(str(r[0]) for r in self._read(
                f"SELECT distinct_id FROM skipped_ids WHERE person_id IN ({marks})", part))
        return sorted(found)

    def mark_merged(self, distinct_ids: Sequence[str], owners: Sequence[str]) -> None:
        """The skipped ``distinct_ids`` were merged into another Person: their events wait for a
        backfill under ``owners`` (their ``persons_seen`` ids, pending again even if a backfill sent
        them once before), and they are no longer kept as skipped."""
        with self.tx() as db:
            _insert_rows(db, "INSERT OR REPLACE INTO persons_seen (person_id, pending) VALUES ",
                         [(o, 1) for o in owners], 2)
            _delete_keys(db, "DELETE FROM skipped_ids WHERE distinct_id IN", list(distinct_ids))

    # --- --full ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget cursors, delivered uuids, in-flight marks and fingerprints (a full re-sync)."""
        with self.tx() as db:
            for table in ("streams", "delivered", "inflight", "persons_seen", "persons_left", "skipped_ids"):
                db.execute(f"DELETE FROM {table}")
            db.execute("DELETE FROM meta WHERE key IN "
                       "('skip_count_upto', 'dropped_events', 'resume_start', ?, ?, ?, ?, ?, ?)",
                       (_INFLIGHT_KEY, _PERSONS_READY_KEY, GROUPS_READY_KEY, _BACKFILL_KEY, SKIPPED_IDS_KEY,
                        MERGES_KEY))
            db.execute("UPDATE contacts SET fingerprint=''")
        self._pending, self._spilled_marks = None, False

    # --- runs --------------------------------------------------------------------------------
    def start_run(self, mode: str) -> int:
        leftover = self._marks_row()
        with self.tx() as db:
            # a run still marked "running" belongs to a process that died (we hold the lock)
            db.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
            if leftover:  # the batch it had in flight: marked until delivered again
                self._spill(db, leftover, fmt_ts(utcnow()))
                db.execute("DELETE FROM meta WHERE key=?", (_INFLIGHT_KEY,))
                self._spilled_marks = True
            cur = db.execute(
                "INSERT INTO runs (started_at, status, mode, pid) VALUES (?, 'running', ?, ?)",
                (fmt_ts(utcnow()), mode, os.getpid()),
            )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (WRITER_KEY, __version__))
            assert cur.lastrowid is not None  # an INSERT's row
            return cur.lastrowid

    def finish_run(
        self, run_id: int, status: str, summary: dict[str, Any], error: str | None = None, mode: str | None = None
    ) -> None:
        """Record how a run ended. The summary and the error are stored with every key masked (a
        server's error may quote the request headers; `status` shows them later)."""
        stored_summary = json.dumps(redact_data(json.loads(json.dumps(summary, default=str))))
        stored_error = redact(error) if error is not None else None
        with self.tx() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, status=?, summary=?, error=?, mode=coalesce(?, mode) WHERE id=?",
                (fmt_ts(utcnow()), status, stored_summary, stored_error, mode, run_id),
            )
            # keep the history bounded
            db.execute("DELETE FROM runs WHERE id <= (SELECT max(id) FROM runs) - 200")

    def last_completed_at(self) -> str | None:
        """When the last run that completed (status ok) finished; None before the first."""
        rows = self._read("SELECT finished_at FROM runs WHERE status='ok' AND finished_at IS NOT NULL "
                          "ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else None

    def last_runs(self, n: int = 5) -> list[RunRecord]:
        rows = self._read(
            "SELECT id, started_at, finished_at, status, mode, pid, summary, error FROM runs ORDER BY id DESC LIMIT ?",
            (n,),
        )
        return [RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], _summary(r[6]), r[7]) for r in rows]


def _summary(raw: Any) -> dict[str, Any] | None:
    """A run's stored report; one that is not a JSON object reads as none (status shows the run)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


# --- the lock --------------------------------------------------------------------------------
class RunLock:
    """One sync at a time: a non-blocking file lock; the second run gets ``LockHeldError`` (75).

    The OS releases it when the process dies, so a killed sync never leaves a stale lock. A process
    that is alive but stuck (a hung connection, a stopped process) keeps it, though: the holder
    writes a *heartbeat* file next to the lock (``<lock>.heartbeat``: its pid and start time; its
    mtime is the last progress, touched by ``heartbeat()`` after each page and batch), and
    ``holder()`` lets ``status`` say for how long it has made no progress.
    """

    HEARTBEAT_EVERY_S = 1.0  # touches closer together than this are skipped (cheap, thread-safe enough)
    STALE_AFTER_S = 15 * 60.0  # no progress for this long: ``status`` calls the holder stalled

    def __init__(self, path: Path) -> None:
        ensure_private_dir(Path(path).parent)
        self.path = Path(path)
        self.heartbeat_path = self.path.with_name(self.path.name + ".heartbeat")
        self._lock = FileLock(str(path), timeout=0)
        self._last_beat = 0.0

    def acquire(self) -> RunLock:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise LockHeldError() from None
        self._write_heartbeat()
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                self.heartbeat_path.unlink()
            except OSError:
                pass
            self._lock.release()

    def _write_heartbeat(self) -> None:
        doc = {"pid": os.getpid(), "started_at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        try:
            atomic_write_text(self.heartbeat_path, json.dumps(doc) + "\n")
        except OSError:  # a status detail: never a reason to fail the sync
            pass
        self._last_beat = time.monotonic()

    def heartbeat(self) -> None:
        """The holder made progress (a page read, a batch sent): touch the heartbeat file.
        Never raises; at most one touch a second."""
        now = time.monotonic()
        if not self._lock.is_locked or now - self._last_beat < self.HEARTBEAT_EVERY_S:
            return
        self._last_beat = now
        try:
            os.utime(self.heartbeat_path)
        except FileNotFoundError:
            self._write_heartbeat()
        except OSError:
            pass

    def holder(self) -> dict[str, Any] | None:
        """What the heartbeat file says about the process holding the lock: ``pid``,
        ``started_at``, ``progress_at`` (ISO, UTC), ``idle_s`` (seconds since its last progress) and
        ``stalled`` (idle longer than ``STALE_AFTER_S``); None when there is no readable file. Does
        not check the lock itself: see ``held_elsewhere``."""
        try:
            st = self.heartbeat_path.stat()
            doc = json.loads(self.heartbeat_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        pid = doc.get("pid")
        started = doc.get("started_at")
        idle = max(0.0, time.time() - st.st_mtime)
        progress = datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z")
        return {
            "pid": pid if type(pid) is int else None,
            "started_at": started if isinstance(started, str) else None,
            "progress_at": progress,
            "idle_s": round(idle, 1),
            "stalled": idle >= self.STALE_AFTER_S,
        }

    @property
    def held_elsewhere(self) -> bool:
        """True when another process holds the lock (for ``status``); never blocks."""
        probe = FileLock(str(self.path), timeout=0)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
