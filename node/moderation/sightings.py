"""Sightings back to the federation: a `seen` opinion the first time a signal matches here.

Off by default; ``[moderation] sightings`` lists the labels it is on for (``["*"]``: every
label). A hit qualifies (``wants_sighting``) when its signal is a federation signal (not a
local list's entry), contributed by another member, and carries one of those labels. The
first qualifying match of a signal queues one row in ``sightings`` (the primary key is the
signal, so a signal is queued once, however often it matches); a publisher takes at most
``sighting_batch`` of them every ``sighting_interval_s`` (the rate limit) and signs each as
an ``opinion`` with verdict ``seen`` through ``Node.author`` -- the authoring rules apply and
it gossips like any opinion.

A member's latest opinion on a signal replaces its earlier one (SPEC 8.3), so a sighting
would overwrite a confirm or a dispute: a signal this member already holds an opinion on is
``skipped`` instead (``member_opinion`` reads the store), as is one the authoring rules
refuse. A quarantined signal's sighting waits in ``held`` until the signal is released.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any, Final

from node.moderation.events import FEDERATION, MatchEvent

ALL_LABELS: Final = "*"
STATES: Final = ("pending", "held", "published", "skipped")


def wants_sighting(event: MatchEvent, labels: Collection[str], identity: str | None) -> bool:
    if not labels or identity is None or event.list_name != FEDERATION:
        return False
    if event.member in (None, identity):
        return False
    return ALL_LABELS in labels or any(label in labels for label in event.labels)


def enqueue(conn: sqlite3.Connection, rows: Sequence[tuple[int, str, int]]) -> int:
    """rows: (signal ref, state, now_ms); a signal already queued is left as it is."""
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO sightings (signal, state, first_ms) VALUES (?, ?, ?)", rows
    )
    return conn.total_changes - before


def due(conn: sqlite3.Connection, limit: int) -> list[tuple[int, str]]:
    """The oldest pending sightings: (ref, signal id)."""
    return [
        (int(ref), str(signal))
        for ref, signal in conn.execute(
            "SELECT g.signal, s.signal FROM sightings g JOIN signals s ON s.ref = g.signal "
            "WHERE g.state = 'pending' ORDER BY g.first_ms, g.signal LIMIT ?",
            (limit,),
        )
    ]


def done(
    conn: sqlite3.Connection, ref: int, state: str, now_ms: int, *, record: str | None = None,
    note: str | None = None,
) -> None:  # fmt: skip
    conn.execute(
        "UPDATE sightings SET state = ?, done_ms = ?, record = ?, note = ? WHERE signal = ?",
        (state, now_ms, record, note, ref),
    )


def hold(conn: sqlite3.Connection, refs: Collection[int]) -> None:
    conn.executemany(
        "UPDATE sightings SET state = 'held' WHERE signal = ? AND state = 'pending'",
        [(r,) for r in refs],
    )


def entries(conn: sqlite3.Connection, *, state: str | None, limit: int) -> list[dict[str, Any]]:
    where, params = ("WHERE g.state = ?", [state]) if state else ("", [])
    rows = conn.execute(
        "SELECT s.signal, g.state, g.first_ms, g.done_ms, g.record, g.note FROM sightings g "
        f"JOIN signals s ON s.ref = g.signal {where} ORDER BY g.first_ms DESC LIMIT ?",
        [*params, limit],
    )
    names = ("signal", "state", "first_ms", "done_ms", "record", "note")
    return [dict(zip(names, r, strict=True)) for r in rows]


def member_opinion(store: sqlite3.Connection, signal: str, identity: str) -> str | None:
    """The verdict of this member's latest stored opinion on signal, if any (reads the
    node's store: ``opinions`` rows name the member by its identity's key ref)."""
    try:
        sid = bytes.fromhex(signal)
    except ValueError:
        return None
    row = store.execute(
        "SELECT verdict FROM opinions WHERE signal = ? AND member = "
        "(SELECT ref FROM keys WHERE key = ?) ORDER BY gen DESC, seq DESC LIMIT 1",
        (sid, identity),
    ).fetchone()
    return None if row is None else str(row[0])
