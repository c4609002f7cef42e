"""``HOME/moderation.db``: the match log, quarantine, webhook deliveries and sightings.

A file of its own, not tables in ``hashmesh.db``: the log is written far more often than
records arrive and can grow to millions of rows, and none of it is signed or gossiped, so
it must neither compete with merges for the store's one writer nor bloat its backups. It
is node-local state; deleting it loses the log, the quarantine list and the queued
deliveries, never a record. WAL with ``synchronous=FULL`` (a queued delivery that was
committed survives power loss), built and upgraded by ``sqlite_utils``' ``Migrations``
(set ``hashmesh-moderation``), marked by ``PRAGMA application_id``.

Tables:

- ``signals``: one row per signal that ever matched here -- ``ref`` (a small integer the
  other tables use instead of the 64-character id), id, type, list, and the lifetime count
  with the first and last match;
- ``matches``: the log, one row per hit; ``id`` is ``ts_ms * 1024 + n`` (``match_id``), so
  the primary key orders by time and a time bound is a key bound (no second index);
  ``matches_signal (signal, id)`` serves a signal's page;
- ``buckets``: matches per signal per quarter flood window, the flood rule's history;
- ``quarantine``: a row per quarantined (or released) signal;
- ``deliveries``: the durable webhook queue (``state``: held, pending, delivered, dead);
- ``sightings``: a row per signal a `seen` opinion was (or will be) published for.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

import sqlite_utils
from sqlite_utils.migrations import Migrations

from node.errors import StoreRefusedError

DB_FILE: Final = "moderation.db"
APPLICATION_ID: Final = 0x484D4D44  # "HMMD"
MIGRATIONS = Migrations("hashmesh-moderation")
BUSY_TIMEOUT_MS: Final = 10_000
ID_SHIFT: Final = 1024  # match ids per millisecond before the id runs ahead of the clock

_INITIAL: Final = """
CREATE TABLE signals (
    ref INTEGER PRIMARY KEY,
    signal TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    list TEXT NOT NULL,
    total INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL
);
CREATE TABLE matches (
    id INTEGER PRIMARY KEY,
    signal INTEGER NOT NULL,
    caller TEXT NOT NULL,
    query_type TEXT NOT NULL,
    query_value TEXT NOT NULL,
    distance INTEGER,
    quarantined INTEGER NOT NULL
);
CREATE INDEX matches_signal ON matches (signal, id);
CREATE TABLE buckets (
    signal INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (signal, start_ms)
) WITHOUT ROWID;
CREATE INDEX buckets_start ON buckets (start_ms);
CREATE TABLE quarantine (
    signal INTEGER PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('quarantined', 'released')),
    since_ms INTEGER NOT NULL,
    recent INTEGER NOT NULL,
    baseline INTEGER NOT NULL,
    held INTEGER NOT NULL DEFAULT 0,
    held_dropped INTEGER NOT NULL DEFAULT 0,
    released_ms INTEGER,
    released_by TEXT
);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    rule TEXT NOT NULL,
    signal INTEGER NOT NULL,
    match INTEGER,
    body BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    done_ms INTEGER,
    last_status INTEGER,
    last_error TEXT
);
CREATE INDEX deliveries_due ON deliveries (state, next_ms);
CREATE TABLE sightings (
    signal INTEGER PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'held', 'published', 'skipped')),
    first_ms INTEGER NOT NULL,
    done_ms INTEGER,
    record TEXT,
    note TEXT
);
CREATE INDEX sightings_state ON sightings (state, first_ms);
"""


@MIGRATIONS(name="0001_initial")
def _initial(db: sqlite_utils.Database) -> None:
    db.executescript(_INITIAL)


def open_db(home: Path) -> sqlite3.Connection:
    """The moderation database of a node home, created or upgraded as needed. The caller
    uses the connection from one thread at a time (it may be handed between threads)."""
    path = home / DB_FILE
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StoreRefusedError(f"{path}: cannot open as SQLite: {e}") from e
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
        conn.close()
        raise StoreRefusedError(f"{path}: not a hashmesh moderation database")
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
        conn.close()
        raise StoreRefusedError(f"{path}: cannot switch to WAL mode")
    conn.execute("PRAGMA synchronous = FULL")
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    known = {m.name for m in MIGRATIONS.pending(_empty())}
    unknown = [m.name for m in MIGRATIONS.applied(db) if m.name not in known]
    if unknown:
        conn.close()
        raise StoreRefusedError(f"{path}: written by a newer hashmesh (migration {unknown[0]!r})")
    with db.atomic():
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        MIGRATIONS.apply(db)
    return conn


def _empty() -> sqlite_utils.Database:
    return sqlite_utils.Database(memory=True, execute_plugins=False, recursive_triggers=False)


def match_id(ts_ms: int, last_id: int) -> int:
    """The id of a match logged at ts_ms after the match last_id: ``ts_ms * ID_SHIFT`` and
    up, never at or below last_id (more than ID_SHIFT matches in one millisecond, or a clock
    set back, run the ids ahead of the clock until it catches up)."""
    return max(ts_ms * ID_SHIFT, last_id + 1)


def ts_of(match: int) -> int:
    """The time (ms) a match id stands for."""
    return match // ID_SHIFT


class Transaction:
    """``with Transaction(conn):`` -- BEGIN IMMEDIATE, then COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
