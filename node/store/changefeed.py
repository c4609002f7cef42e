"""The node's change feed: an ordered, node-local log of signal-state changes.

Followers (the python-threatexchange exchange, HMA through it, read replicas, webhooks) keep
a copy of the active list without re-reading it: they remember a cursor and ask for what
changed after it (``GET /v1/changes?after=CURSOR``). Each entry names one signal and what
happened to it:

- ``active`` / ``inactive``: a merge made the signal active (it arrived, or its author's
  records count again) or inactive (retracted, its author frozen, arrived already expired);
- ``opinion``: an opinion on it arrived, so its tallies may have changed;
- ``expired``: its expiry time passed (entered by the read that first comes at or after
  that time, before it reads, so a reader never sees a signal as active after its expiry;
  the entry's ``ts`` is the expiry time).

An entry carries no state of its own: the reader is answered with the signal's state *now*
(status, labels, tallies), or ``null`` when the node no longer holds it (a frozen author's
records after its fork). Replaying the feed from any cursor therefore ends at the node's
current state, whatever the reader held before; several entries for one signal are
harmless.

Entries are written in the same transaction as the merge that caused them, so a crash loses
none. The cursor is SQLite's ``AUTOINCREMENT`` key (never reused). ``node_epoch`` is a
random id made with the database: a follower that sees another epoch (a new or restored
database) starts over; so does one whose cursor is beyond the last entry (a database
restored from an older copy).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from protocol.bodies import OpinionBody
from protocol.membership import Membership
from protocol.records import Record

EPOCH_KEY = "node_epoch"
SWEPT_KEY = "feed_swept_ms"
KINDS = ("active", "inactive", "opinion", "expired")
MAX_PAGE = 10_000

SCHEMA = """
CREATE TABLE changes (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    signal BLOB NOT NULL,
    kind TEXT NOT NULL
);
CREATE INDEX signals_expires ON signals (expires) WHERE expires IS NOT NULL;
"""


def create(conn: sqlite3.Connection) -> None:
    """Make the feed (a migration): an ``active`` entry for every signal held, so a reader
    starting at cursor 0 gets the whole list, and a new epoch. Nothing is swept yet: the
    first read enters every expiry that has passed."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT INTO changes (ts, signal, kind) SELECT ts, id, 'active' FROM signals ORDER BY row"
    )
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?), (?, ?)",
        (EPOCH_KEY, secrets.token_hex(8), SWEPT_KEY, "0"),
    )


@dataclass(frozen=True, slots=True)
class Change:
    ts: int
    signal: str  # the signal's record id
    kind: str
    expires: int | None = None  # of an "active" signal


def merge_changes(
    conn: sqlite3.Connection,
    ts: int,
    activations: Iterable[tuple[int, str, bool]],
    accepted: Sequence[Record],
    moved_keys: set[str],
) -> list[Change]:
    """The entries a merge makes: its signals' activations ((row, id, active)), the opinions
    it accepted, and, when it changed the membership (a vote, a rotation, a fork), the
    signals that the keys it moved (``moved_keys``) hold opinions on."""
    changes = []
    for row, signal, active in activations:
        expires = None
        if active:
            found = conn.execute("SELECT expires FROM signals WHERE row = ?", (row,)).fetchone()
            expires = found[0] if found is not None else None
        changes.append(Change(ts, signal, "active" if active else "inactive", expires))
    changes += [
        Change(ts, r.body.signal, "opinion") for r in accepted if isinstance(r.body, OpinionBody)
    ]
    if moved_keys:  # their opinions may have started or stopped counting: tallies changed
        changes += [Change(ts, signal, "opinion") for signal in _opined(conn, moved_keys)]
    return changes


def moved_keys(before: Membership, after: Membership) -> set[str]:
    """Keys whose counted records a membership change may have changed: a limit, owner or
    freeze that differs, and every key of an identity that changed (rotation, removal)."""
    keys = {
        k
        for k in before.limits.keys()
        | after.limits.keys()
        | before.owner.keys()
        | after.owner.keys()
        if before.limits.get(k) != after.limits.get(k)
        or before.owner.get(k) != after.owner.get(k)
        or before.freezes.get(k) != after.freezes.get(k)
    }
    for identity in before.members.keys() | after.members.keys():
        old, new = before.members.get(identity), after.members.get(identity)
        if old != new:
            keys.update(old.keys if old else (), new.keys if new else ())
    return keys


def _opined(conn: sqlite3.Connection, keys: set[str]) -> list[str]:
    """The signals that the stored opinion records of these keys are about, in order."""
    signals: set[str] = set()
    ordered = sorted(keys)
    for i in range(0, len(ordered), 500):
        chunk = ordered[i : i + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT r.raw FROM records r JOIN keys k ON k.ref = r.author "
            f"WHERE r.kind = 'opinion' AND k.key IN ({marks})",
            chunk,
        )
        for (raw,) in rows:
            signal = orjson.loads(raw)["body"]["signal"]
            if isinstance(signal, str):
                signals.add(signal)
    return sorted(signals)


def append(conn: sqlite3.Connection, changes: Sequence[Change]) -> None:
    """Enter a merge's changes. A signal that became active but whose expiry a sweep has
    already passed (the merge began before that read) is entered as expired at once."""
    swept = swept_ms(conn)
    rows = []
    for c in changes:
        rows.append((c.ts, bytes.fromhex(c.signal), c.kind))
        if c.kind == "active" and c.expires is not None and c.expires <= swept:
            rows.append((c.expires, bytes.fromhex(c.signal), "expired"))
    conn.executemany("INSERT INTO changes (ts, signal, kind) VALUES (?, ?, ?)", rows)


def swept_ms(conn: sqlite3.Connection) -> int:
    """The time up to which expiries are entered: a signal unretracted whose expiry is after
    it is active as far as the feed has said (a merge that drops it owes an entry)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (SWEPT_KEY,)).fetchone()
    return int(row[0]) if row is not None else 0


def sweep_expiries(conn: sqlite3.Connection, now_ms: int) -> int:
    """Enter an ``expired`` entry for every unretracted signal whose expiry passed since the
    last sweep (up to now_ms); the number entered."""
    last = swept_ms(conn)
    if now_ms <= last:
        return 0
    cursor = conn.execute(
        "INSERT INTO changes (ts, signal, kind) SELECT expires, id, 'expired' FROM signals "
        "WHERE expires > ? AND expires <= ? AND retracted_by IS NULL ORDER BY expires, row",
        (last, now_ms),
    )
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (SWEPT_KEY, str(now_ms)))
    return cursor.rowcount


def epoch(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (EPOCH_KEY,)).fetchone()
    return str(row[0]) if row is not None else ""


def last_cursor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(cursor) FROM changes").fetchone()
    return int(row[0] or 0)


def page(conn: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, int, str, str]]:
    """(cursor, ts, signal id, kind) of up to limit entries after the cursor, in order."""
    rows = conn.execute(
        "SELECT cursor, ts, signal, kind FROM changes WHERE cursor > ? ORDER BY cursor LIMIT ?",
        (after, min(limit, MAX_PAGE)),
    )
    return [(c, ts, bytes(signal).hex(), kind) for c, ts, signal, kind in rows]
