"""The node database's schema, its migrations, and the checks made before a file is used.

One SQLite file holds a node's whole view of its federation. It is marked as a hashmesh file by
``PRAGMA application_id`` and names its federation in ``meta``; the schema is built and upgraded
by ``sqlite_utils.migrations.Migrations`` (set ``hashmesh``), and a file that records a migration
this code does not know comes from a newer hashmesh and is refused rather than guessed at.

Tables (``row`` is always the ``records.row`` of the record a materialised row comes from):

- ``records``: every stored record's exact bytes, with author, seq, kind and the record id
  (``id8``, its first 8 bytes as an integer, is indexed: smaller than the 32-byte id, and a
  lookup compares the full id). ``records_log (author, seq)`` serves logs and ranges.
- ``keys``: every author and member key as an integer ``ref``, with the author's frontier
  (``head_seq``, ``head_id``) and the seq of its first fork, if any.
- ``pending``: verified records that arrived ahead of a gap in their author's log.
- ``forks``: per forked author, the two conflicting record texts (smaller id first).
- ``counted``: per key, through which seq its records are materialised, and as which member
  identity and key generation -- the frontier of the materialised state.
- ``signals`` (+ ``signal_labels``), ``retractions``, ``opinions``, ``announces``: the effects
  of every counted record of those kinds (an announce's ``types``: migration 0004);
  ``members`` and ``freezes``: the derived membership.
  A signal row repeats its record's id, author and seq, so that answering a lookup never reads
  the (large) ``records`` rows.
- ``peers`` and ``meta``: the federation layer's peer list and key/value settings.
- ``ui_users``, ``ui_sessions``, ``ui_actions``: the web UI's local accounts, sessions and
  action log (``node.store.users``; node-local, never gossiped).

Signals are found by ``vkey``, a 64-bit keyed BLAKE2b of (type, value) with a per-file random
salt (``meta.lookup_salt``): an 8-byte index instead of one over 70-byte strings, and no member
can publish values that crowd one index key. A lookup also compares type and value.

Durability: WAL with ``synchronous=FULL`` -- every commit fsyncs the WAL, so a merge that has
returned survives power loss; NORMAL would only survive a killed process. Opening reads the
header, ``application_id``, schema, migrations and ``meta``, which refuses foreign, newer,
misdirected and visibly corrupt files cheaply; damage deep inside a large file shows when that
page is read, or at open with ``Store.open(..., check=True)`` (``PRAGMA quick_check``, which
reads every page).
"""

from __future__ import annotations

import functools
import secrets
import sqlite3
from pathlib import Path
from typing import Final

import sqlite_utils
from sqlite_utils.migrations import Migrations

from node.errors import StoreError, StoreRefusedError
from node.store import changefeed, replica_tokens, users
from protocol import Federation
from protocol.errors import RemoteProtocolError
from protocol.federation import parse_genesis

APPLICATION_ID: Final = 0x484D5348  # "HMSH"
SCHEMA_VERSION: Final = 1
SQLITE_HEADER: Final = b"SQLite format 3\x00"
MIGRATION_SET: Final = "hashmesh"
WRITER_CACHE_KIB: Final = 128 * 1024
READER_CACHE_KIB: Final = 16 * 1024
READER_MMAP_BYTES: Final = 2**31
BUSY_TIMEOUT_MS: Final = 10_000
# 16 KiB pages: a merge writes the raw records in fewer, larger WAL frames; measured ~1.4x the
# insert rate of 4 KiB pages at 400k records, and a smaller file.
PAGE_SIZE: Final = 16384
WAL_CHECKPOINT_PAGES: Final = 1000  # pages: ~16 MB of WAL between checkpoints

MIGRATIONS = Migrations(MIGRATION_SET)

_INITIAL: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE keys (
    ref INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    head_seq INTEGER NOT NULL DEFAULT 0,
    head_id BLOB,
    fork_seq INTEGER
);
CREATE TABLE records (
    row INTEGER PRIMARY KEY,
    id8 INTEGER NOT NULL,
    id BLOB NOT NULL,
    author INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    raw BLOB NOT NULL
);
CREATE INDEX records_id ON records (id8);
CREATE INDEX records_log ON records (author, seq);
CREATE INDEX records_membership ON records (kind) WHERE kind IN ('vote', 'rotate');
CREATE TABLE pending (
    id BLOB PRIMARY KEY,
    author INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    raw BLOB NOT NULL
);
CREATE INDEX pending_log ON pending (author, seq);
CREATE TABLE forks (
    author INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    first TEXT NOT NULL,
    second TEXT NOT NULL
);
CREATE TABLE counted (
    key INTEGER PRIMARY KEY,
    member INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    through INTEGER NOT NULL
);
CREATE TABLE members (
    identity TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    keys TEXT NOT NULL,
    admitted_by TEXT NOT NULL,
    removed INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE freezes (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE signals (
    row INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    author INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    member INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    vkey INTEGER NOT NULL,
    labels TEXT NOT NULL,
    note TEXT,
    expires INTEGER,
    retracted_by BLOB
);
CREATE INDEX signals_lookup ON signals (vkey);
CREATE TABLE signal_labels (
    label TEXT NOT NULL,
    row INTEGER NOT NULL,
    PRIMARY KEY (label, row)
) WITHOUT ROWID;
CREATE TABLE retractions (
    row INTEGER PRIMARY KEY,
    member INTEGER NOT NULL,
    signal BLOB NOT NULL,
    gen INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    orphan INTEGER NOT NULL
);
CREATE INDEX retractions_signal ON retractions (signal);
CREATE INDEX retractions_orphan ON retractions (signal) WHERE orphan;
CREATE TABLE opinions (
    row INTEGER PRIMARY KEY,
    signal BLOB NOT NULL,
    member INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    labels TEXT NOT NULL
);
CREATE INDEX opinions_signal ON opinions (signal, member, gen, seq);
CREATE TABLE announces (
    row INTEGER PRIMARY KEY,
    member INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    urls TEXT NOT NULL,
    tls TEXT
);
CREATE INDEX announces_member ON announces (member, gen, seq);
CREATE TABLE peers (url TEXT PRIMARY KEY, fields TEXT NOT NULL) WITHOUT ROWID;
"""


@MIGRATIONS(name="0001_initial")
def _initial(db: sqlite_utils.Database) -> None:
    db.executescript(_INITIAL)
    db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")


@MIGRATIONS(name="0002_change_feed")
def _change_feed(db: sqlite_utils.Database) -> None:
    changefeed.create(db.conn)


@MIGRATIONS(name="0003_ui_users")
def _ui_users(db: sqlite_utils.Database) -> None:
    """The web UI's accounts, sessions and action log (node.users)."""
    for statement in users.TABLES:
        db.execute(statement)


@MIGRATIONS(name="0004_announced_types")
def _announced_types(db: sqlite_utils.Database) -> None:
    """The signal types each announce lists (JSON, NULL: none), for the type gate (SPEC 11).
    Older nodes stored no announce with types (they reject one), so NULL is right for every
    row already materialised."""
    db.execute("ALTER TABLE announces ADD COLUMN types TEXT")


@MIGRATIONS(name="0005_replica_tokens")
def _replica_tokens(db: sqlite_utils.Database) -> None:
    """The read-only tokens of match replicas, hashed (node.store.replica_tokens)."""
    for statement in replica_tokens.TABLES:
        db.execute(statement)


@functools.cache
def known_migrations() -> tuple[str, ...]:
    """Every migration this version knows, in order."""
    empty = sqlite_utils.Database(memory=True, execute_plugins=False, recursive_triggers=False)
    return tuple(m.name for m in MIGRATIONS.pending(empty))


def connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    """A connection in explicit-transaction mode with the node's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cache = WRITER_CACHE_KIB if writer else READER_CACHE_KIB
    conn.execute(f"PRAGMA cache_size = -{cache}")
    conn.execute("PRAGMA temp_store = MEMORY")
    if not writer:  # lookups read pages through the mapping, not a read() call each
        conn.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
    return conn


def open_database(
    path: Path, federation: Federation, *, create: bool, writer: bool
) -> sqlite3.Connection:
    """Open path as this federation's node database, creating or upgrading it if allowed.

    Raises ``StoreRefusedError`` for a file that is not SQLite, is corrupt, belongs to another
    application or federation, or comes from a newer hashmesh; ``StoreError`` if it is missing.
    """
    # Only a writer reads the header with Python: opening and closing any descriptor of the
    # file drops every POSIX lock this process holds on it, including those of the node's live
    # connections -- and then another process closing its connection deletes the WAL.
    fresh = _check_file(path, create=create) if writer else _check_exists(path)
    try:
        conn = connect(path, writer=writer)
    except sqlite3.Error as e:
        raise StoreRefusedError(f"{path}: cannot open as SQLite: {e}") from e
    try:
        _prepare(conn, path, federation, fresh=fresh, writer=writer)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreRefusedError(f"{path}: database is corrupt: {e}") from e
    except BaseException:
        conn.close()
        raise
    if not writer:
        conn.execute("PRAGMA query_only = ON")
    return conn


def _check_exists(path: Path) -> bool:
    if not path.exists():
        raise StoreError(f"{path}: no node database here (create it with create=True)")
    return False


def _check_file(path: Path, *, create: bool) -> bool:
    """True if path is to become a new database; refuses files that are not SQLite at all."""
    if not path.exists():
        if not create:
            raise StoreError(f"{path}: no node database here (create it with create=True)")
        return True
    with path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if not header:
        if create:
            return True
        raise StoreRefusedError(f"{path}: empty file, not a hashmesh database")
    if header != SQLITE_HEADER:
        raise StoreRefusedError(
            f"{path}: not an SQLite database (corrupt, or some other kind of file)"
        )
    return False


def _prepare(
    conn: sqlite3.Connection, path: Path, federation: Federation, *, fresh: bool, writer: bool
) -> None:
    tables = _identify(conn, path, fresh=fresh)
    if writer:
        _configure_writer(conn, new=not tables)
        _migrate(conn, path, federation, new=not tables)
    elif _pending_migrations(conn, path):
        raise StoreError(f"{path}: schema is out of date; open it for writing first to upgrade")
    _check_meta(conn, path, federation)


def _identify(conn: sqlite3.Connection, path: Path, *, fresh: bool) -> list[str]:
    """The file's tables; refuses SQLite files that belong to something else."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if app_id == APPLICATION_ID:
        return tables
    if app_id != 0 or tables:
        names = ", ".join(sorted(tables)[:5]) or "none"
        raise StoreRefusedError(
            f"{path}: not a hashmesh database (application_id {app_id:#x}, tables: {names})"
        )
    if not fresh:
        raise StoreRefusedError(f"{path}: empty SQLite file, not a hashmesh database")
    return tables


def _configure_writer(conn: sqlite3.Connection, *, new: bool) -> None:
    if new:  # only possible before the first table, and before WAL
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    # WAL lets readers run beside the one writer. synchronous=FULL fsyncs the WAL at every
    # commit, so an acknowledged merge survives power loss, not only a killed process.
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"cannot switch the database to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")


def _migrate(conn: sqlite3.Connection, path: Path, federation: Federation, *, new: bool) -> None:
    """Apply pending migrations; a new file is also stamped, all in one transaction."""
    if not _pending_migrations(conn, path):
        return
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    with db.atomic():
        if new:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        MIGRATIONS.apply(db)
        if new:
            rows = [
                ("federation_id", federation.id),
                ("federation", federation.to_bytes().decode()),
                ("lookup_salt", secrets.token_hex(16)),
            ]
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)


def _pending_migrations(conn: sqlite3.Connection, path: Path) -> list[str]:
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    applied = [m.name for m in MIGRATIONS.applied(db)]
    known = known_migrations()
    unknown = [name for name in applied if name not in known]
    if unknown:
        raise StoreRefusedError(
            f"{path}: written by a newer hashmesh (schema migration {unknown[0]!r} is unknown "
            f"here; this version knows up to {known[-1]!r})"
        )
    return [name for name in known if name not in applied]


def _check_meta(conn: sqlite3.Connection, path: Path, federation: Federation) -> None:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise StoreRefusedError(
            f"{path}: written by a newer hashmesh (schema version {version}, "
            f"this version reads up to {SCHEMA_VERSION})"
        )
    stored = meta.get("federation_id")
    if stored != federation.id:
        raise StoreRefusedError(
            f"{path}: belongs to federation {stored}, not to {federation.name!r} ({federation.id})"
        )


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """SQLite's structural check of the whole file: [] if it is sound, else the problems."""
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as e:
        return [str(e)]
    return [] if rows == ["ok"] else rows


def database_federation(path: Path) -> Federation:
    """The federation a node database names, read without trusting the file to be one."""
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot open as SQLite: {e}") from e
    try:
        conn.execute("PRAGMA query_only = ON")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise StoreError(f"{path}: not a hashmesh database (application_id {app_id:#x})")
        row = conn.execute("SELECT value FROM meta WHERE key = 'federation'").fetchone()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a hashmesh database, or damaged: {e}") from e
    finally:
        conn.close()
    if row is None:
        raise StoreError(f"{path}: a hashmesh database without a federation document")
    try:
        return parse_genesis(str(row[0]).encode())
    except RemoteProtocolError as e:
        raise StoreError(f"{path}: its federation document is invalid: {e}") from e
