"""The UI's reads of the store: signal pages, filtered listings, search, one signal's story.

Every signal is shown as the local API shows it (``node.store.read``'s row and
``signal_json``), so a page and ``GET /v1/signals/{id}`` agree. Listings page by row
(``before``: keyset paging, newest first), never by OFFSET, so the thousandth page costs what
the first does; a label filter is driven by the ``signal_labels`` index, a value search by the
``vkey`` index. Everything here runs on a store reader thread (``AsyncStore.read``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from node.store.materialise import Keyer
from node.store.read import _SIGNAL_ROWS as SIGNAL_ROWS
from node.store.read import _tallies as tallies_of
from node.store.read import signal_json
from protocol.errors import ProtocolError
from protocol.records import is_record_id
from protocol.signal_types import SIGNAL_TYPES, canonical_value

if TYPE_CHECKING:
    from node.store.store import Store

STATUSES: Final = ("active", "retracted", "expired", "disputed", "frozen")
PAGE_ROWS: Final = 50
_ACTIVE: Final = "s.retracted_by IS NULL AND (s.expires IS NULL OR s.expires > :now)"
_STATUS_SQL: Final = {
    "active": _ACTIVE,
    "retracted": "s.retracted_by IS NOT NULL",
    "expired": "s.retracted_by IS NULL AND s.expires IS NOT NULL AND s.expires <= :now",
    "disputed_rows": "s.row IN (SELECT value FROM json_each(:disputed))",
    "frozen": "s.author IN (SELECT value FROM json_each(:frozen))",
}
# driven by the (label, row) primary key: the newest rows with the label first
_BY_LABEL: Final = SIGNAL_ROWS.replace(
    "FROM signals s", "FROM signal_labels sl CROSS JOIN signals s ON s.row = sl.row", 1
)


@dataclass(frozen=True, slots=True)
class SignalFilter:
    """A listing's filters; None means any. member is a member identity."""

    type: str | None = None
    label: str | None = None
    member: str | None = None
    status: str | None = None
    before: int | None = None  # show rows below this one (the next page)


def list_signals(
    store: Store, f: SignalFilter, *, now_ms: int, limit: int = PAGE_ROWS
) -> list[dict[str, object]]:
    """A page of signals, newest first (read limit + 1 to know whether another follows).

    Each filter keeps the cost of a page independent of the store's size where it can: a
    label walks its own index, a status is tested row by row as the newest rows are walked
    (a few disputes or frozen authors are looked up first instead), keyset paging.
    """
    clauses: list[str] = []
    params: dict[str, object] = {"now": now_ms, "limit": limit, "before": f.before}
    select, row = SIGNAL_ROWS, "s.row"
    if f.label is not None:
        select, row = _BY_LABEL, "sl.row"
        clauses.append("sl.label = :label")
        params["label"] = f.label
    if f.type is not None:
        clauses.append("s.type = :type")
        params["type"] = f.type
    if f.member is not None:
        clauses.append("s.member = (SELECT ref FROM keys WHERE key = :member)")
        params["member"] = f.member
    if f.status == "frozen":
        refs = frozen_refs(store)
        if not refs:
            return []
        params["frozen"] = orjson.dumps(refs).decode()
    if f.status == "disputed":
        rows = disputed_rows(store)
        if not rows:
            return []
        params["disputed"] = orjson.dumps(rows).decode()
        clauses.append(_STATUS_SQL["disputed_rows"])
    elif f.status is not None:
        clauses.append(_STATUS_SQL[f.status])
    if f.before is not None:
        clauses.append(f"{row} < :before")
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    sql = select + where + f" ORDER BY {row} DESC LIMIT :limit"
    return [signal_json(r, now_ms) for r in store.conn.execute(sql, params)]


def frozen_refs(store: Store) -> list[int]:
    """The key refs of authors frozen by a fork or a removal."""
    return [
        int(r[0])
        for r in store.conn.execute(
            "SELECT k.ref FROM freezes f JOIN keys k ON k.key = f.key "
            "WHERE f.reason IN ('fork', 'removed')"
        )
    ]


def disputed_rows(store: Store) -> list[int]:
    """The rows of every signal that a counted dispute stands on: each member's latest
    opinion, not on its own signal (``protocol.fold``'s rules, as the tallies count them)."""
    found = store.conn.execute(
        "SELECT s.row, s.member, (SELECT group_concat(o.member || ' ' || o.gen || ' ' || o.seq "
        "|| ' ' || o.verdict) FROM opinions o WHERE o.signal = s.id) FROM signals s "
        "WHERE s.id IN (SELECT signal FROM opinions WHERE verdict = 'dispute')"
    )
    return [int(row) for row, member, given in found if tallies_of(given, member)["dispute"]]


def candidates(text: str) -> list[tuple[str, str]]:
    """The (type, canonical value) pairs a search text can mean: ``type:value`` is one; a bare
    value is every type whose canonical form accepts it."""
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in SIGNAL_TYPES and kind.lower() != "url":
        kinds, value = [kind.lower()], rest.strip()
    else:
        kinds, value = list(SIGNAL_TYPES), text
    found = []
    for name in kinds:
        try:
            found.append((name, canonical_value(name, value)))
        except ProtocolError:
            continue
    return found


def search_value(
    store: Store, pairs: list[tuple[str, str]], *, now_ms: int
) -> list[dict[str, object]]:
    """Every signal, in any status, with exactly one of these (type, value) pairs."""
    keyer = Keyer(bytes.fromhex(store.get_meta("lookup_salt") or ""))
    out: list[dict[str, object]] = []
    for type_, value in pairs:
        rows = store.conn.execute(
            SIGNAL_ROWS + " WHERE s.vkey = ? AND s.type = ? AND s.value = ? ORDER BY s.row DESC",
            (keyer.key(type_, value), type_, value),
        )
        out += [signal_json(row, now_ms) for row in rows]
    return out


@dataclass(frozen=True, slots=True)
class OpinionEntry:
    """One opinion record on a signal, as the timeline shows it."""

    record: str
    member: str  # identity
    author: str  # the key that signed it
    seq: int
    ts: int
    verdict: str
    labels: list[str]
    note: str | None
    latest: bool  # this member's current opinion (SPEC: the latest replaces earlier ones)


def opinions_of(store: Store, signal_id: str) -> list[OpinionEntry]:
    """Every counted opinion on a signal, oldest first, each member's latest marked."""
    if not is_record_id(signal_id):
        return []
    rows = store.conn.execute(
        "SELECT r.id, k.key, o.gen, o.seq, r.raw FROM opinions o "
        "JOIN keys k ON k.ref = o.member JOIN records r ON r.row = o.row "
        "WHERE o.signal = ? ORDER BY o.member, o.gen, o.seq",
        (bytes.fromhex(signal_id),),
    ).fetchall()
    latest = {member: rid for rid, member, *_ in rows}  # ordered: the last one wins
    entries = []
    for rid, member, _gen, seq, raw in rows:
        record = orjson.loads(raw)
        body: dict[str, Any] = record["body"]
        entries.append(
            OpinionEntry(
                record=bytes(rid).hex(),
                member=member,
                author=record["author"],
                seq=seq,
                ts=record["ts"],
                verdict=body["verdict"],
                labels=list(body.get("labels", [])),
                note=body.get("note"),
                latest=latest[member] == rid,
            )
        )
    return sorted(entries, key=lambda e: (e.ts, e.record))


def record_json(store: Store, record_id: str) -> dict[str, Any] | None:
    """A stored record as JSON (its bytes were verified when it was stored)."""
    raw = store.record(record_id)
    return None if raw is None else dict(orjson.loads(raw))
