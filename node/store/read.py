"""Reading the materialised state: signal queries, and the state rendered like the fold.

Every signal answer is one statement over ``signals`` (which repeats its record's id, author
and seq, so the large ``records`` rows are never read), the two ``keys`` it names, its member's
name, and every opinion row on it. Which of those count is decided here with
``protocol.fold``'s rules (each member's ``latest``, not on its own signal: ``opinion_counts``;
``tally``), as is status (``signal_status``, from ``retracted_by`` and ``expires`` at the
``now_ms`` the caller passes: expiry needs no write). The rules written in SQL are
``ACTIVE``, the filter form of ``protocol.fold.is_active`` over the same two columns, and the
statuses a listing filters by (``_STATUS_SQL``), which a listing of millions of signals
needs; ``tests/node/test_store.py`` checks ``ACTIVE`` against the protocol function and
``tests/ui/test_pages.py`` each status. Every listing (``GET /v1/signals``, ``hashmesh
signals``, the web UI) is one ``SignalQuery`` answered by ``signals``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from node.store.materialise import id8
from protocol.fold import latest, opinion_counts, signal_status, tally
from protocol.records import is_record_id

_PAGE_ROWS: Final = 10_000
_MAX_PARAMS: Final = 500
# protocol.fold.is_active(expires, retracted_by is not None, :now), as a filter
ACTIVE: Final = "s.retracted_by IS NULL AND (s.expires IS NULL OR s.expires > :now)"
# a signal's opinion rows, "member gen seq verdict" comma separated (what _tallies reads)
_OPINION_ROWS: Final = (
    "(SELECT group_concat(o.member || ' ' || o.gen || ' ' || o.seq || ' ' || o.verdict) "
    "FROM opinions o WHERE o.signal = s.id)"
)
# the columns signal_json reads, one row per signal
SIGNAL_ROWS: Final = f"""
SELECT s.row, s.id, a.key, m.key, mb.name, s.type, s.value, s.labels, s.note, s.expires, s.ts,
    s.seq, s.retracted_by, s.member, {_OPINION_ROWS}
FROM signals s
JOIN keys a ON a.ref = s.author
JOIN keys m ON m.ref = s.member
LEFT JOIN members mb ON mb.identity = m.key
"""
# driven by the (label, row) primary key: the newest rows with the label first
_BY_LABEL: Final = SIGNAL_ROWS.replace(
    "FROM signals s", "FROM signal_labels sl CROSS JOIN signals s ON s.row = sl.row", 1
)
_LOOKUP: Final = (
    SIGNAL_ROWS + f" WHERE s.vkey = :vkey AND s.type = :type AND s.value = :value AND {ACTIVE}"
)
STATUSES: Final = ("active", "retracted", "expired", "disputed", "frozen")
# each status as a filter: the first three are protocol.fold.signal_status's; a disputed
# signal's rows and a frozen author's key refs are looked up first (they are few)
_STATUS_SQL: Final = {
    "active": ACTIVE,
    "retracted": "s.retracted_by IS NOT NULL",
    "expired": "s.retracted_by IS NULL AND s.expires IS NOT NULL AND s.expires <= :now",
    "disputed": "s.row IN (SELECT value FROM json_each(:disputed))",
    "frozen": "s.author IN (SELECT value FROM json_each(:frozen))",
}


@dataclass(frozen=True, slots=True)
class SignalQuery:
    """A page of a signal listing, newest first: filters that must all hold (None: any), then
    where the page starts.

    ``member`` is a member identity; ``active`` is ``protocol.fold.is_active`` (False: retracted
    or expired); ``status`` one of ``STATUSES`` (the web UI's filter). A page is at most
    ``limit`` rows, after skipping ``offset`` (``GET /v1/signals``, ``hashmesh signals``) or
    below row ``before`` (keyset paging, the web UI: a deep page costs what the first does).
    The default of ``active`` is each caller's: any through the API, active only in the CLI.
    """

    type: str | None = None
    label: str | None = None
    member: str | None = None
    active: bool | None = None
    status: str | None = None
    before: int | None = None
    limit: int = 100
    offset: int = 0


def signals(
    conn: sqlite3.Connection, query: SignalQuery, *, now_ms: int
) -> list[dict[str, object]]:
    """A page of signals. A page's cost stays independent of the store's size where it can: a
    label walks its own index, the other filters are tested row by row as the newest rows are
    walked (a few disputes or frozen authors are looked up first instead)."""
    clauses: list[str] = []
    params: dict[str, object] = {"now": now_ms, "limit": query.limit, "offset": query.offset}
    select, row = SIGNAL_ROWS, "s.row"
    if query.label is not None:
        select, row = _BY_LABEL, "sl.row"
        clauses.append("sl.label = :label")
        params["label"] = query.label
    if query.type is not None:
        clauses.append("s.type = :type")
        params["type"] = query.type
    if query.member is not None:
        clauses.append("s.member = (SELECT ref FROM keys WHERE key = :member)")
        params["member"] = query.member
    if query.active is not None:
        clauses.append(ACTIVE if query.active else f"NOT ({ACTIVE})")
    if query.status in ("disputed", "frozen"):
        listed = _disputed_rows(conn) if query.status == "disputed" else _frozen_refs(conn)
        if not listed:
            return []
        params[query.status] = orjson.dumps(listed).decode()
    if query.status is not None:
        clauses.append(_STATUS_SQL[query.status])
    if query.before is not None:
        clauses.append(f"{row} < :before")
        params["before"] = query.before
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    sql = select + where + f" ORDER BY {row} DESC LIMIT :limit OFFSET :offset"
    return [signal_json(r, now_ms) for r in conn.execute(sql, params)]


def _frozen_refs(conn: sqlite3.Connection) -> list[int]:
    """The key refs of authors frozen by a fork or a removal."""
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT k.ref FROM freezes f JOIN keys k ON k.key = f.key "
            "WHERE f.reason IN ('fork', 'removed')"
        )
    ]


def _disputed_rows(conn: sqlite3.Connection) -> list[int]:
    """The rows of every signal that a counted dispute stands on (as its tallies count)."""
    found = conn.execute(
        f"SELECT s.row, s.member, {_OPINION_ROWS} FROM signals s "
        "WHERE s.id IN (SELECT signal FROM opinions WHERE verdict = 'dispute')"
    )
    return [int(row) for row, member, given in found if _tallies(given, member)["dispute"]]


def signal(conn: sqlite3.Connection, record_id: str, *, now_ms: int) -> dict[str, object] | None:
    if not is_record_id(record_id):
        return None
    rid = bytes.fromhex(record_id)
    row = conn.execute(
        SIGNAL_ROWS + " WHERE s.row = (SELECT row FROM records WHERE id8 = ? AND id = ?)",
        (id8(rid), rid),
    ).fetchone()
    return None if row is None else signal_json(row, now_ms)


def lookup(
    conn: sqlite3.Connection, vkey: int, type_: str, value: str, *, now_ms: int
) -> list[dict[str, object]]:
    rows = conn.execute(_LOOKUP, {"vkey": vkey, "type": type_, "value": value, "now": now_ms})
    return [signal_json(row, now_ms) for row in rows]


def signal_rows(
    conn: sqlite3.Connection, row_ids: Sequence[int], *, now_ms: int
) -> list[dict[str, object]]:
    found: dict[int, dict[str, object]] = {}
    ids = list(dict.fromkeys(row_ids))
    for i in range(0, len(ids), _MAX_PARAMS):
        chunk = ids[i : i + _MAX_PARAMS]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(SIGNAL_ROWS + f" WHERE s.row IN ({marks})", chunk):
            found[row[0]] = signal_json(row, now_ms)
    return [found[r] for r in ids if r in found]


def active_signals(conn: sqlite3.Connection, *, now_ms: int) -> Iterator[tuple[int, str, str]]:
    after = 0
    while True:
        rows = conn.execute(
            f"SELECT s.row, s.type, s.value FROM signals s WHERE s.row > :after AND {ACTIVE} "
            "ORDER BY s.row LIMIT :limit",
            {"after": after, "now": now_ms, "limit": _PAGE_ROWS},
        ).fetchall()
        yield from rows
        if not rows:
            return
        after = rows[-1][0]


def active_expiries(conn: sqlite3.Connection, *, now_ms: int) -> list[tuple[int, int]]:
    """(row, expires) of every active signal that has an expiry (by the expiry index)."""
    return conn.execute(
        f"SELECT s.row, s.expires FROM signals s WHERE s.expires > :now AND {ACTIVE}",
        {"now": now_ms},
    ).fetchall()


def own_signal(
    conn: sqlite3.Connection,
    identity: str,
    vkey: int,
    type_: str,
    value: str,
    *,
    now_ms: int | None,
) -> str | None:
    row = conn.execute(
        "SELECT s.id FROM signals s JOIN keys m ON m.ref = s.member "
        "WHERE s.vkey = ? AND s.type = ? AND s.value = ? AND m.key = ? "
        "AND s.retracted_by IS NULL AND (? IS NULL OR s.expires IS NULL OR s.expires > ?) "
        "ORDER BY s.row LIMIT 1",
        (vkey, type_, value, identity, now_ms, now_ms),
    ).fetchone()
    return None if row is None else str(row[0].hex())


def stats(conn: sqlite3.Connection, *, now_ms: int) -> tuple[dict[str, int], int | None]:
    """The counts, and the next moment (ms) one of them changes with time alone: the soonest
    expiry of a signal now active (None: no active signal expires). Until then, and while
    the database is unchanged, the counts stay exact."""

    def one(sql: str) -> int:
        return int(conn.execute(sql, {"now": now_ms}).fetchone()[0])

    signals, active, next_expiry = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {ACTIVE}), "
        f"min(s.expires) FILTER (WHERE {ACTIVE}) FROM signals s",
        {"now": now_ms},
    ).fetchone()
    counts = {
        "records": one("SELECT count(*) FROM records"),
        "authors": one("SELECT count(*) FROM keys WHERE head_seq > 0"),
        "signals": int(signals),
        "active_signals": int(active),
        "forks": one("SELECT count(*) FROM forks"),
        "pending": one("SELECT count(*) FROM pending"),
        "members": one("SELECT count(*) FROM members WHERE NOT removed"),
    }
    return counts, None if next_expiry is None else int(next_expiry)


def signal_json(row: tuple[Any, ...], now_ms: int) -> dict[str, object]:
    """One row of ``SIGNAL_ROWS`` as the API shows a signal."""
    (r, rid, author, member, name, type_, value, labels, note, expires, ts, seq, retracted_by,
     member_ref, opinions) = row  # fmt: skip
    return {
        "id": rid.hex(),
        "row": r,
        "author": author,
        "member": member,
        "member_name": name,
        "type": type_,
        "value": value,
        "labels": orjson.loads(labels),
        "note": note,
        "expires": expires,
        "ts": ts,
        "seq": seq,
        "status": signal_status(expires, retracted_by is not None, now_ms),
        "retracted_by": None if retracted_by is None else retracted_by.hex(),
        "tallies": _tallies(opinions, member_ref),
    }


def _tallies(opinions: str | None, signal_member: int) -> dict[str, int]:
    """The tallies of a signal from its opinion rows ("member gen seq verdict", comma
    separated): each member's latest opinion counts, unless the signal is its own."""
    given: dict[int, list[tuple[int, int, str]]] = {}
    for text in opinions.split(",") if opinions else ():
        member, gen, seq, verdict = text.split(" ")
        given.setdefault(int(member), []).append((int(gen), int(seq), verdict))
    counted = [latest(c) for m, c in given.items() if opinion_counts(m, signal_member)]
    return tally(v for v in counted if v is not None)


# -- the state, rendered like protocol.fold.State.to_json() -------------------------------------


def render_state(conn: sqlite3.Connection, now_ms: int) -> dict[str, object]:
    """The materialised tables in the shape of ``protocol.fold.State.to_json()``."""
    signals = _render_signals(conn, now_ms)
    return {
        "members": _render_members(conn),
        "freezes": [
            {"key": key, "seq": seq, "reason": reason}
            for key, seq, reason in conn.execute("SELECT * FROM freezes ORDER BY key")
        ],
        "signals": signals,
        "opinions": _render_opinions(conn, {str(s["id"]): s["member"] for s in signals}),
        "endpoints": endpoints(conn),
        "forks": [
            {"author": author, "seq": seq, "records": [first, second]}
            for author, seq, first, second in conn.execute(
                "SELECT k.key, f.seq, f.first, f.second FROM forks f "
                "JOIN keys k ON k.ref = f.author ORDER BY k.key"
            )
        ],
    }


def _render_members(conn: sqlite3.Connection) -> list[dict[str, object]]:
    rows = conn.execute("SELECT * FROM members ORDER BY identity")
    return [
        {
            "identity": identity,
            "name": name,
            "role": role,
            "keys": orjson.loads(keys),
            "admitted_by": orjson.loads(admitted_by),
            "removed": bool(removed),
        }
        for identity, name, role, keys, admitted_by, removed in rows
    ]


def _render_signals(conn: sqlite3.Connection, now_ms: int) -> list[dict[str, object]]:
    rows = conn.execute(
        "SELECT s.id, a.key, m.key, s.seq, s.ts, s.type, s.value, s.labels, s.note, s.expires, "
        "s.retracted_by FROM signals s JOIN keys a ON a.ref = s.author "
        "JOIN keys m ON m.ref = s.member"
    )
    signals = [
        {
            "id": rid.hex(),
            "author": author,
            "member": member,
            "seq": seq,
            "ts": ts,
            "type": type_,
            "value": value,
            "labels": orjson.loads(labels),
            "note": note,
            "expires": expires,
            "status": signal_status(expires, retracted is not None, now_ms),
            "retracted_by": None if retracted is None else retracted.hex(),
        }
        for rid, author, member, seq, ts, type_, value, labels, note, expires, retracted in rows
    ]
    return sorted(signals, key=lambda s: str(s["id"]))


def _render_opinions(
    conn: sqlite3.Connection, signal_members: dict[str, object]
) -> list[dict[str, object]]:
    """Each member's latest opinion on each signal, unless the signal is its own."""
    rows = conn.execute(
        "SELECT o.signal, m.key, o.gen, o.seq, o.verdict, o.labels, r.id FROM opinions o "
        "JOIN keys m ON m.ref = o.member JOIN records r ON r.row = o.row"
    )
    given: dict[tuple[str, str], list[tuple[int, int, dict[str, object]]]] = {}
    for signal, member, gen, seq, verdict, labels, rid in rows:
        opinion = {"signal": signal.hex(), "member": member, "verdict": verdict,
                   "labels": orjson.loads(labels), "record": rid.hex()}  # fmt: skip
        given.setdefault((signal.hex(), member), []).append((gen, seq, opinion))
    counted = [
        latest(candidates)
        for (signal, member), candidates in sorted(given.items())
        if opinion_counts(member, signal_members.get(signal))
    ]
    return [opinion for opinion in counted if opinion is not None]


def endpoints(conn: sqlite3.Connection) -> list[dict[str, object]]:
    """Every member's latest counted announcement, like ``Endpoint.to_json()`` (``types``
    only when announced), by member."""
    rows = conn.execute(
        "SELECT m.key, o.gen, o.seq, o.name, o.urls, o.tls, r.id, o.types FROM announces o "
        "JOIN keys m ON m.ref = o.member JOIN records r ON r.row = o.row"
    )
    announced: dict[str, list[tuple[int, int, dict[str, object]]]] = {}
    for member, gen, seq, name, urls, tls, rid, types in rows:
        endpoint = {"member": member, "name": name, "urls": orjson.loads(urls), "tls": tls,
                    "record": rid.hex()}  # fmt: skip
        if types is not None:
            endpoint["types"] = orjson.loads(types)
        announced.setdefault(member, []).append((gen, seq, endpoint))
    chosen = [latest(candidates) for _, candidates in sorted(announced.items())]
    return [endpoint for endpoint in chosen if endpoint is not None]


def announced_types(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Member identity -> the signal types its latest counted announce lists (the type gate's
    input, ``protocol.type_gate``)."""
    announced: dict[str, list[str]] = {}
    for endpoint in endpoints(conn):
        types = endpoint.get("types")
        announced[str(endpoint["member"])] = (
            [str(t) for t in types] if isinstance(types, list) else []
        )
    return announced


def latest_verdict(conn: sqlite3.Connection, signal_id: str, identity: str) -> str | None:
    """A member's current opinion on a signal (its latest counted one), if it gave one."""
    if not is_record_id(signal_id):
        return None
    row = conn.execute(
        "SELECT o.verdict FROM opinions o JOIN keys k ON k.ref = o.member "
        "WHERE o.signal = ? AND k.key = ? ORDER BY o.gen DESC, o.seq DESC LIMIT 1",
        (bytes.fromhex(signal_id), identity),
    ).fetchone()
    return None if row is None else str(row[0])
