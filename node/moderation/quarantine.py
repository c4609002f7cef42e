"""Flood quarantine: a signal matching far more than its own history is held back locally.

The rule (``FloodRule.is_flood``): a signal floods when its matches in the last window are
more than ``floor`` *and* more than ``factor`` times its baseline -- its matches over the
``baseline`` period before that window, scaled to one window. A new signal has no history,
so the floor alone decides; a signal that always matches a lot needs a jump of ``factor``.
Matches are counted in buckets of a quarter window (table ``buckets``), so "the last
window" is the buckets that started within it (between 3/4 and 1 window of time).

A quarantined signal is still matched, answered (each hit says ``"quarantined": true``) and
logged; its actions are held: webhook deliveries wait in state ``held`` (at most
``held_max`` per signal, the rest counted), a sighting waits in ``held``. Releasing it
(``release``) lets the held actions go (or drops them) and starts its count afresh: only
matches after the release count towards the next flood.

Everything here runs on the moderation thread with the time passed in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import orjson

DAY_MS: Final = 86_400_000
BUCKETS_PER_WINDOW: Final = 4


@dataclass(frozen=True, slots=True)
class FloodRule:
    floor: int  # 0: quarantine is off
    factor: float
    window_ms: int
    baseline_ms: int

    @property
    def bucket_ms(self) -> int:
        return max(1, self.window_ms // BUCKETS_PER_WINDOW)

    def bucket(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.bucket_ms

    def is_flood(self, recent: int, baseline: int) -> bool:
        """recent: matches in the last window; baseline: in the baseline period before it."""
        per_window = baseline * self.window_ms / self.baseline_ms
        return self.floor > 0 and recent > self.floor and recent > self.factor * per_window


@dataclass(frozen=True, slots=True)
class Flood:
    ref: int
    signal: str
    recent: int
    baseline: int


def count(
    conn: sqlite3.Connection, rule: FloodRule, per_signal: Mapping[int, Iterable[int]]
) -> None:
    """Add matches (signal ref -> their times) to the buckets."""
    totals: dict[tuple[int, int], int] = {}
    for ref, times in per_signal.items():
        for ts in times:
            key = (ref, rule.bucket(ts))
            totals[key] = totals.get(key, 0) + 1
    conn.executemany(
        "INSERT INTO buckets (signal, start_ms, n) VALUES (?, ?, ?) "
        "ON CONFLICT (signal, start_ms) DO UPDATE SET n = n + excluded.n",
        [(ref, start, n) for (ref, start), n in totals.items()],
    )


def floods(
    conn: sqlite3.Connection, rule: FloodRule, refs: Iterable[int], now_ms: int
) -> list[Flood]:
    """The signals among refs, not quarantined now, that flood at now_ms."""
    if rule.floor <= 0:
        return []
    window_start = now_ms - rule.window_ms
    candidates = conn.execute(
        "SELECT b.signal, s.signal, sum(b.n) FROM buckets b "
        "JOIN signals s ON s.ref = b.signal LEFT JOIN quarantine q ON q.signal = b.signal "
        "WHERE b.signal IN (SELECT value FROM json_each(:refs)) "
        "AND b.start_ms >= max(:start, coalesce(q.released_ms, 0)) "
        "AND (q.state IS NULL OR q.state = 'released') "
        "GROUP BY b.signal HAVING sum(b.n) > :floor",
        {"refs": orjson.dumps(sorted(set(refs))).decode(), "start": window_start,
         "floor": rule.floor},
    ).fetchall()  # fmt: skip
    found = []
    for ref, signal, recent in candidates:
        (baseline,) = conn.execute(
            "SELECT coalesce(sum(n), 0) FROM buckets WHERE signal = ? "
            "AND start_ms >= ? AND start_ms < ?",
            (ref, window_start - rule.baseline_ms, window_start),
        ).fetchone()
        if rule.is_flood(recent, baseline):
            found.append(Flood(ref, signal, recent, baseline))
    return found


def quarantine(conn: sqlite3.Connection, flood: Flood, now_ms: int) -> None:
    conn.execute(
        "INSERT INTO quarantine (signal, state, since_ms, recent, baseline) "
        "VALUES (?, 'quarantined', ?, ?, ?) ON CONFLICT (signal) DO UPDATE SET "
        "state = 'quarantined', since_ms = excluded.since_ms, recent = excluded.recent, "
        "baseline = excluded.baseline, held = 0, held_dropped = 0, released_ms = NULL, "
        "released_by = NULL",
        (flood.ref, now_ms, flood.recent, flood.baseline),
    )


def quarantined_ids(conn: sqlite3.Connection) -> set[str]:
    return {
        str(r[0])
        for r in conn.execute(
            "SELECT s.signal FROM quarantine q JOIN signals s ON s.ref = q.signal "
            "WHERE q.state = 'quarantined'"
        )
    }


def hold(conn: sqlite3.Connection, ref: int, *, kept: int, dropped: int) -> None:
    conn.execute(
        "UPDATE quarantine SET held = held + ?, held_dropped = held_dropped + ? WHERE signal = ?",
        (kept, dropped, ref),
    )


def held_room(conn: sqlite3.Connection, ref: int, held_max: int) -> int:
    """How many more webhook deliveries of ref may be held."""
    row = conn.execute("SELECT held FROM quarantine WHERE signal = ?", (ref,)).fetchone()
    return max(0, held_max - (row[0] if row else 0))


def release(
    conn: sqlite3.Connection, signal: str, now_ms: int, *, by: str, deliver: bool
) -> dict[str, object] | None:
    """Release a quarantined signal: its held deliveries become pending (deliver) or are
    deleted, its held sighting pending (deliver) or skipped. None if it is not quarantined."""
    row = conn.execute(
        "SELECT q.signal FROM quarantine q JOIN signals s ON s.ref = q.signal "
        "WHERE s.signal = ? AND q.state = 'quarantined'",
        (signal,),
    ).fetchone()
    if row is None:
        return None
    ref = row[0]
    conn.execute(
        "UPDATE quarantine SET state = 'released', released_ms = ?, released_by = ? "
        "WHERE signal = ?",
        (now_ms, by, ref),
    )
    if deliver:
        moved = conn.execute(
            "UPDATE deliveries SET state = 'pending', next_ms = ? "
            "WHERE signal = ? AND state = 'held'",
            (now_ms, ref),
        ).rowcount
        conn.execute(
            "UPDATE sightings SET state = 'pending' WHERE signal = ? AND state = 'held'", (ref,)
        )
    else:
        moved = 0
        conn.execute("DELETE FROM deliveries WHERE signal = ? AND state = 'held'", (ref,))
        conn.execute(
            "UPDATE sightings SET state = 'skipped', done_ms = ?, "
            "note = 'released without its held actions' WHERE signal = ? AND state = 'held'",
            (now_ms, ref),
        )
    entry = entries(conn, signal=signal, released=True)[0]
    return entry | {"deliveries_released": moved}


def entries(
    conn: sqlite3.Connection, *, signal: str | None = None, released: bool = False
) -> list[dict[str, object]]:
    """Quarantined signals, newest first (with released: also those released)."""
    where = ["1"] if released else ["q.state = 'quarantined'"]
    params: list[object] = []
    if signal is not None:
        where.append("s.signal = ?")
        params.append(signal)
    rows = conn.execute(
        "SELECT s.signal, s.type, s.list, q.state, q.since_ms, q.recent, q.baseline, q.held, "
        "q.held_dropped, q.released_ms, q.released_by FROM quarantine q "
        f"JOIN signals s ON s.ref = q.signal WHERE {' AND '.join(where)} "
        "ORDER BY q.since_ms DESC, q.signal",
        params,
    )
    names = ("signal", "type", "list", "state", "since_ms", "recent", "baseline", "held",
             "held_dropped", "released_ms", "released_by")  # fmt: skip
    return [dict(zip(names, r, strict=True)) for r in rows]


def prune(conn: sqlite3.Connection, rule: FloodRule, now_ms: int) -> int:
    """Forget buckets older than the window and its baseline period."""
    cutoff = now_ms - rule.window_ms - rule.baseline_ms - rule.bucket_ms
    return conn.execute("DELETE FROM buckets WHERE start_ms < ?", (cutoff,)).rowcount
