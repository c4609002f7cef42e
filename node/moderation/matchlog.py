"""The match log: every hit the node answered, counted per signal, kept for a while.

``append`` writes a batch of events (one row per hit) and bumps each signal's lifetime count;
``page`` reads the log newest first, for a signal or for all, from a time on, in pages
that continue below a cursor (the last id shown); ``counts`` is a signal's lifetime count.
``prune`` deletes what is older than ``keep_ms`` or beyond ``max_rows``, a chunk at a time
from the oldest id, so it never holds the writer for long and never scans the table.

Everything here runs on the moderation thread, in the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from node.moderation.db import ID_SHIFT, match_id, ts_of
from node.moderation.events import MatchEvent

PRUNE_CHUNK: Final = 5000
MAX_PAGE: Final = 1000


def signal_refs(conn: sqlite3.Connection, events: Sequence[MatchEvent]) -> dict[str, int]:
    """Each signal of events -> its ref: the rows of signals seen before are found in one
    statement and their counts moved in another; a new signal's row is created."""
    per: dict[str, list[MatchEvent]] = {}
    for event in events:
        per.setdefault(event.signal, []).append(event)
    refs: dict[str, int] = dict(
        conn.execute(
            "SELECT signal, ref FROM signals WHERE signal IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(per)).decode(),),
        ).fetchall()
    )
    conn.executemany(
        "UPDATE signals SET total = total + ?, last_ms = max(last_ms, ?) WHERE ref = ?",
        [(len(mine), mine[-1].ts, refs[s]) for s, mine in per.items() if s in refs],
    )
    for signal, mine in per.items():
        if signal not in refs:
            refs[signal] = int(conn.execute(
                "INSERT INTO signals (signal, type, list, total, first_ms, last_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (signal, mine[0].signal_type, mine[0].list_name, len(mine), mine[0].ts,
                 mine[-1].ts),
            ).lastrowid or 0)  # fmt: skip
    return refs


def append(
    conn: sqlite3.Connection, events: Sequence[MatchEvent], refs: Mapping[str, int], last_id: int
) -> list[int]:
    """Log events; their match ids, in order (each above last_id)."""
    ids, rows = [], []
    for event in events:
        last_id = match_id(event.ts, last_id)
        ids.append(last_id)
        held = bool(event.hit.get("quarantined"))
        rows.append((last_id, refs[event.signal], event.caller, event.query_type,
                     event.query_value, event.distance, held))  # fmt: skip
    conn.executemany("INSERT INTO matches VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return ids


def last_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM matches").fetchone()[0])


def page(
    conn: sqlite3.Connection,
    *,
    signal: str | None = None,
    since_ms: int | None = None,
    before: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Logged matches newest first: ``{"matches": [...], "next": cursor | None}``; pass
    ``next`` as ``before`` for the page after."""
    clauses = ["m.id >= :low", "m.id < :high"]
    params: dict[str, object] = {"limit": min(limit, MAX_PAGE) + 1}
    params["low"] = 0 if since_ms is None else since_ms * ID_SHIFT
    params["high"] = 2**62 if before is None else before
    if signal is not None:
        clauses.append("m.signal = (SELECT ref FROM signals WHERE signal = :signal)")
        params["signal"] = signal
    rows = conn.execute(
        "SELECT m.id, s.signal, s.type, s.list, m.caller, m.query_type, m.query_value, "
        "m.distance, m.quarantined FROM matches m JOIN signals s ON s.ref = m.signal "
        f"WHERE {' AND '.join(clauses)} ORDER BY m.id DESC LIMIT :limit",
        params,
    ).fetchall()
    shown = rows[: min(limit, MAX_PAGE)]
    more = len(rows) > len(shown)
    return {
        "matches": [
            {"id": r[0], "ts": ts_of(r[0]), "signal": r[1], "signal_type": r[2], "list": r[3],
             "caller": r[4], "query": {"type": r[5], "value": r[6]}, "distance": r[7],
             "quarantined": bool(r[8])}
            for r in shown
        ],
        "next": shown[-1][0] if more and shown else None,
    }  # fmt: skip


def counts(conn: sqlite3.Connection, signal: str) -> dict[str, Any] | None:
    """A signal's lifetime match count here, with its first and last match (ms)."""
    row = conn.execute(
        "SELECT total, first_ms, last_ms, type, list FROM signals WHERE signal = ?", (signal,)
    ).fetchone()
    if row is None:
        return None
    total, first, last, type_, list_name = row
    return {"signal": signal, "total": total, "first_ms": first, "last_ms": last,
            "type": type_, "list": list_name}  # fmt: skip


def top(conn: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The signals matched most here (lifetime), most first."""
    rows = conn.execute(
        "SELECT signal, type, list, total, last_ms FROM signals ORDER BY total DESC, ref LIMIT ?",
        (limit,),
    )
    names = ("signal", "type", "list", "total", "last_ms")
    return [dict(zip(names, r, strict=True)) for r in rows]


def row_count(conn: sqlite3.Connection) -> int:
    """Rows in the log (a full count: once at start; the service keeps it up to date)."""
    return int(conn.execute("SELECT count(*) FROM matches").fetchone()[0])


def prune(conn: sqlite3.Connection, now_ms: int, keep_ms: int, max_rows: int, rows: int) -> int:
    """Delete one chunk of at most PRUNE_CHUNK of the oldest matches that are older than
    keep_ms or beyond the newest max_rows (the log holds rows); returns how many were
    deleted (call again while it is PRUNE_CHUNK)."""
    oldest = [i for (i,) in conn.execute("SELECT id FROM matches ORDER BY id LIMIT ?",
                                          (PRUNE_CHUNK,))]  # fmt: skip
    cutoff = (now_ms - keep_ms) * ID_SHIFT
    doomed = sum(1 for i in oldest if i < cutoff)
    doomed = max(doomed, min(len(oldest), rows - max_rows))
    if doomed <= 0:
        return 0
    return conn.execute("DELETE FROM matches WHERE id <= ?", (oldest[doomed - 1],)).rowcount
