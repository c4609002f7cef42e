"""Local lists: a member's private named lists of hashes, kept in ``HOME/lists.db``.

A local list is this member's own: hashes under review, a list imported from another source
(a *match* list), or hashes known to be false positives here (a *safelist*: a logo, a meme, a
blank frame), which suppresses federation matches on this node. Nothing here is ever signed,
gossiped, exported as records or shown to a peer: the lists live in a file of their own,
beside the node database but apart from it, so that no code path that reads, audits, exports
or syncs records can reach them, and backing up or deleting them is one file.

The file is a SQLite database marked by ``PRAGMA application_id`` ("HMLS"), built by
``sqlite_utils`` migrations of its own set (``hashmesh-lists``), in WAL mode with
``synchronous=FULL``: a change that has returned survives a crash or power loss. Tables:

- ``lists``: name (``LIST_NAME``), kind (``match`` or ``safelist``), enabled, note, who
  created it and when;
- ``entries``: per list, each (type, value) once, in its canonical form, with a note, who
  added it (``token`` for the bearer token, ``ui:NAME`` for a web UI user, ``cli`` for an
  offline command) and when. ``row`` keys an entry in the list's match index.

``ListStore`` is synchronous and serialises its calls with a lock of its own: the node calls
it from worker threads (never on the event loop), an offline CLI command directly.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import sqlite_utils
from sqlite_utils.migrations import Migrations

from node.errors import InputError, StoreError, StoreRefusedError
from node.matchpolicy import LIST_NAME
from protocol.errors import RemoteProtocolError
from protocol.signal_types import SIGNAL_TYPES, canonical_value, is_featureless

LISTS_FILE: Final = "lists.db"
APPLICATION_ID: Final = 0x484D4C53  # "HMLS"
KINDS: Final = ("match", "safelist")
# a video's vPDQ frames are matched by node.net.matching's frame search, which lists do not join
UNSUPPORTED_TYPES: Final = frozenset({"vpdq"})
MAX_NOTE_CHARS: Final = 1000
MAX_BY_CHARS: Final = 100
BUSY_TIMEOUT_MS: Final = 10_000
_PAGE_ROWS: Final = 10_000
_MAX_PARAMS: Final = 500

MIGRATIONS = Migrations("hashmesh-lists")


@MIGRATIONS(name="0001_lists")
def _initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE lists (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('match', 'safelist')),
            enabled INTEGER NOT NULL DEFAULT 1,
            note TEXT,
            created_by TEXT NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE entries (
            row INTEGER PRIMARY KEY,
            list INTEGER NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
            type TEXT NOT NULL,
            value TEXT NOT NULL,
            note TEXT,
            added_by TEXT NOT NULL,
            added_ms INTEGER NOT NULL,
            UNIQUE (list, type, value)
        );
        """
    )


@dataclass(frozen=True, slots=True)
class LocalList:
    id: int
    name: str
    kind: str
    enabled: bool
    note: str | None
    created_by: str
    created_ms: int
    entries: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "enabled": self.enabled,
                "note": self.note, "created_by": self.created_by,
                "created_ms": self.created_ms, "entries": self.entries}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Entry:
    row: int
    list: str
    type: str
    value: str
    note: str | None
    added_by: str
    added_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"list": self.list, "type": self.type, "value": self.value, "note": self.note,
                "added_by": self.added_by, "added_ms": self.added_ms}  # fmt: skip


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to add, checked (``check_entry``): canonical value, bounded note."""

    type: str
    value: str
    note: str | None = None


def no_such_list(name: str) -> InputError:
    return InputError(f"no local list named {name!r} (see 'hashmesh lists')", status=404,
                      title="no such list", fields={"list": name})  # fmt: skip


def check_name(name: object) -> str:
    if not isinstance(name, str) or LIST_NAME.fullmatch(name) is None:
        raise InputError(
            f"{name!r} is not a list name: lowercase letters, digits, '.', '_' and '-', "
            "1 to 64 of them, starting with a letter or digit", title="invalid list name",
        )  # fmt: skip
    return name


def check_note(note: object, what: str = "note") -> str | None:
    if note is None or note == "":
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise InputError(f"{what} must be a string of at most {MAX_NOTE_CHARS} characters",
                         title=f"invalid {what}")  # fmt: skip
    return note


def check_entry(
    kind: object, value: object, note: object, *, safelist: bool, radius: int
) -> NewEntry:
    """An entry in canonical form. A match list refuses a featureless value (within the
    list's radius of a blank image's hash: it would match every near-blank upload); a
    safelist takes one (it suppresses federation signals near a blank frame)."""
    if kind in UNSUPPORTED_TYPES:
        raise InputError(f"{kind} entries are not supported in local lists yet: list the "
                         "video's md5 or sha256 instead", title="invalid entry")  # fmt: skip
    if not isinstance(kind, str) or kind not in SIGNAL_TYPES:
        raise InputError(f"type must be one of {', '.join(SIGNAL_TYPES)}, got {str(kind)[:40]!r}",
                         title="invalid entry")  # fmt: skip
    if not isinstance(value, str):
        raise InputError("an entry's value must be a string", title="invalid entry")
    try:
        canonical = canonical_value(kind, value)
    except RemoteProtocolError as e:
        raise InputError(f"invalid {kind} value: {e}", title="invalid entry") from e
    if not safelist and is_featureless(kind, canonical, radius):
        raise InputError(
            f"{kind}:{canonical[:64]} is featureless (within {radius} bits of a blank image's "
            "hash): in a match list it would match every near-blank upload",
            title="featureless entry",
        )  # fmt: skip
    return NewEntry(kind, canonical, check_note(note))


class ListStore:
    """The local lists file, as one writer (module docstring)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> ListStore:
        """Open (creating or upgrading) a local lists file; refuse any other kind of file."""
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot open as SQLite: {e}") from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _prepare(conn, path)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreRefusedError(f"{path}: not a local lists file, or damaged: {e}") from e
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> ListStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # ---- lists ------------------------------------------------------------------------------

    def lists(self) -> list[LocalList]:
        with self._lock:
            return [_local_list(r) for r in self.conn.execute(_LISTS + " ORDER BY l.name")]

    def get(self, name: str) -> LocalList:
        with self._lock:
            return self._get(name)

    def _get(self, name: str) -> LocalList:
        row = self.conn.execute(_LISTS + " WHERE l.name = ?", (name,)).fetchone()
        if row is None:
            raise no_such_list(name)
        return _local_list(row)

    def create(self, name: str, kind: str, note: str | None, *, by: str, now_ms: int) -> LocalList:
        check_name(name)
        if kind not in KINDS:
            raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}",
                             title="invalid kind")  # fmt: skip
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM lists WHERE name = ?", (name,)).fetchone():
                raise InputError(f"a local list named {name!r} exists already", status=409,
                                 title="list exists", fields={"list": name})  # fmt: skip
            conn.execute(
                "INSERT INTO lists (name, kind, note, created_by, created_ms) VALUES (?,?,?,?,?)",
                (name, kind, check_note(note), by[:MAX_BY_CHARS], now_ms),
            )
            return self._get(name)

    def delete(self, name: str) -> LocalList:
        with self._write() as conn:
            found = self._get(name)
            conn.execute("DELETE FROM entries WHERE list = ?", (found.id,))
            conn.execute("DELETE FROM lists WHERE id = ?", (found.id,))
            return found

    def set_enabled(self, name: str, enabled: bool) -> LocalList:
        with self._write() as conn:
            found = self._get(name)
            conn.execute("UPDATE lists SET enabled = ? WHERE id = ?", (int(enabled), found.id))
            return self._get(name)

    # ---- entries ----------------------------------------------------------------------------

    def add_entries(
        self, name: str, entries: Sequence[NewEntry], *, by: str, now_ms: int
    ) -> tuple[LocalList, list[Entry], int]:
        """Add entries (checked ones, ``check_entry``); one already in the list is skipped.
        Returns the list, the entries added and how many were skipped."""
        added: list[Entry] = []
        with self._write() as conn:
            found = self._get(name)
            for e in entries:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO entries (list, type, value, note, added_by, added_ms) "
                    "VALUES (?,?,?,?,?,?)",
                    (found.id, e.type, e.value, e.note, by[:MAX_BY_CHARS], now_ms),
                )
                if cursor.rowcount:
                    row = int(cursor.lastrowid or 0)
                    added.append(Entry(row, name, e.type, e.value, e.note, by[:MAX_BY_CHARS],
                                       now_ms))  # fmt: skip
            return self._get(name), added, len(entries) - len(added)

    def remove_entries(
        self, name: str, wanted: Sequence[tuple[str, str]]
    ) -> tuple[LocalList, list[Entry], list[tuple[str, str]]]:
        """Remove entries by (type, canonical value): the list, those removed, those absent."""
        removed: list[Entry] = []
        missing: list[tuple[str, str]] = []
        with self._write() as conn:
            found = self._get(name)
            for kind, value in wanted:
                entry = self._find(found, kind, value)
                if entry is None:
                    missing.append((kind, value))
                    continue
                conn.execute("DELETE FROM entries WHERE row = ?", (entry.row,))
                removed.append(entry)
            return self._get(name), removed, missing

    def find(self, name: str, kind: str, value: str) -> tuple[LocalList, Entry | None]:
        with self._lock:
            found = self._get(name)
            return found, self._find(found, kind, value)

    def _find(self, found: LocalList, kind: str, value: str) -> Entry | None:
        row = self.conn.execute(
            _ENTRIES + " WHERE e.list = ? AND e.type = ? AND e.value = ?",
            (found.id, kind, value),
        ).fetchone()
        return None if row is None else Entry(*row)

    def entries(self, name: str, *, limit: int, offset: int) -> tuple[LocalList, list[Entry]]:
        """A page of a list's entries, newest first."""
        with self._lock:
            found = self._get(name)
            rows = self.conn.execute(
                _ENTRIES + " WHERE e.list = ? ORDER BY e.row DESC LIMIT ? OFFSET ?",
                (found.id, limit, offset),
            ).fetchall()
            return found, [Entry(*r) for r in rows]

    def index_rows(self, name: str) -> Iterator[tuple[int, str, str]]:
        """(row, type, value) of every entry of a list, in row order, read in pages."""
        after = 0
        while True:
            with self._lock:
                found = self._get(name)
                rows = self.conn.execute(
                    "SELECT row, type, value FROM entries WHERE list = ? AND row > ? "
                    "ORDER BY row LIMIT ?",
                    (found.id, after, _PAGE_ROWS),
                ).fetchall()
            yield from rows
            if len(rows) < _PAGE_ROWS:
                return
            after = rows[-1][0]

    def entries_by_row(self, rows: Sequence[int]) -> dict[int, Entry]:
        found: dict[int, Entry] = {}
        wanted = list(dict.fromkeys(rows))
        with self._lock:
            for i in range(0, len(wanted), _MAX_PARAMS):
                chunk = wanted[i : i + _MAX_PARAMS]
                marks = ",".join("?" * len(chunk))
                for r in self.conn.execute(_ENTRIES + f" WHERE e.row IN ({marks})", chunk):
                    found[r[0]] = Entry(*r)
        return found


_LISTS: Final = (
    "SELECT l.id, l.name, l.kind, l.enabled = 1, l.note, l.created_by, l.created_ms, "
    "(SELECT count(*) FROM entries e WHERE e.list = l.id) FROM lists l"
)
_ENTRIES: Final = (
    "SELECT e.row, l.name, e.type, e.value, e.note, e.added_by, e.added_ms "
    "FROM entries e JOIN lists l ON l.id = e.list"
)


def _local_list(row: tuple[Any, ...]) -> LocalList:
    id_, name, kind, enabled, note, by, created_ms, entries = row
    return LocalList(id_, name, kind, bool(enabled), note, by, created_ms, entries)


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise StoreRefusedError(f"{path}: not a hashmesh local lists file "
                                f"(application_id {app_id:#x})")  # fmt: skip
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"{path}: cannot switch to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    empty = sqlite_utils.Database(memory=True, execute_plugins=False, recursive_triggers=False)
    known = {m.name for m in MIGRATIONS.pending(empty)}
    unknown = [m.name for m in MIGRATIONS.applied(db) if m.name not in known]
    if unknown:
        raise StoreRefusedError(f"{path}: written by a newer hashmesh (migration {unknown[0]!r} "
                                "is unknown here)")  # fmt: skip
    if MIGRATIONS.pending(db):
        with db.atomic():
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            MIGRATIONS.apply(db)
