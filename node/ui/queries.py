"""The UI's reads of the store: search, one signal's story (its listings are the store's).

Every signal is shown as the local API shows it (``node.store.read``'s row and
``signal_json``), so a page and ``GET /v1/signals/{id}`` agree. Listings are
``node.store.read.signals`` paged by row (``SignalQuery.before``: keyset paging, newest
first), never by OFFSET, so the thousandth page costs what the first does; a value search is
driven by the ``vkey`` index. Everything here runs on a store reader thread
(``AsyncStore.read``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from node.store.materialise import Keyer
from node.store.read import SIGNAL_ROWS, signal_json
from protocol.errors import ProtocolError
from protocol.records import is_record_id
from protocol.signal_types import SIGNAL_TYPES, canonical_value

if TYPE_CHECKING:
    from node.store.store import Store

PAGE_ROWS: Final = 50


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
