"""The materialised state: the effects of counted records, kept equal to ``fold_state``.

``fold_state`` counts, for every member key, the records of its log up to a limit, and reads
signals, retractions, opinions and announcements from them. The database keeps exactly those
effects in tables, and in ``counted`` the range each key is materialised for: (member identity,
key generation, through seq). After a merge the ledger (``protocol.ledger``) answers which
ranges stop and start counting (``Uncount``, ``Count``: usually a log that grew, whose records
are still in memory); only those are applied.

Every effect is stored with its (generation, seq) and the derived values are computed from the
rows rather than from arrival order, so the result never depends on the order of the steps.
The rules are ``protocol.fold``'s, applied to rows: ``retracted_by`` is the
``first_retraction`` of those that ``retraction_applies`` to the signal (recomputed whenever
one is added or removed); which opinion or announcement counts (``latest``,
``opinion_counts``) is decided when read (``node.store.read``). Removing and re-adding
records reuses their ``records.row``, so a signal keeps its row -- the match index key --
forever.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from node.store import changefeed
from protocol import Membership, Record
from protocol.batch import trusted_record
from protocol.bodies import AnnounceBody, OpinionBody, RetractBody, SignalBody
from protocol.chain import Head
from protocol.fold import first_retraction, is_active, retraction_applies
from protocol.ledger import Count, Counted, Ledger, Uncount

_Range = tuple[int, Record, bool]  # (records.row, record, stored in this merge)
_RANGE_ROWS: Final = "SELECT row FROM records WHERE author = ? AND seq > ? AND seq <= ?"
_CHUNK_RECORDS: Final = 5000


@dataclass(slots=True)
class WriterState:
    """What the writer keeps in memory between merges; reloaded from the database on error."""

    ledger: Ledger  # heads, forks, held records, membership, counted ranges
    refs: dict[str, int]  # key -> keys.ref
    orphans: set[bytes]  # ids named by a retraction but not stored
    next_row: int
    lookup_salt: bytes

    @property
    def membership(self) -> Membership:
        return self.ledger.membership

    @property
    def heads(self) -> dict[str, Head]:
        return self.ledger.heads


class SignalChange(NamedTuple):  # a tuple: one is made per signal merged
    """A signal that became active (True) or inactive (False) in a merge, and why:
    ``counted`` (its record counts now), ``retracted``, ``retraction withdrawn`` (the
    retraction stopped counting), or why its record stopped counting (``protocol.ledger``
    ``Uncount.why``: ``fork``, ``removed``, ``rotated``, ``unadmitted``, ``recounted``)."""

    row: int  # integer key for the match index
    id: str
    type: str
    value: str
    active: bool
    why: str = ""
    expires: int | None = None  # of an active signal: the index drops it then (ms)


class Keyer:
    """The indexed 64-bit ``vkey`` of a signal's (type, value): BLAKE2b keyed by the file's salt."""

    def __init__(self, salt: bytes) -> None:
        self._proto = hashlib.blake2b(digest_size=8, key=salt)

    def key(self, type_: str, value: str) -> int:
        h = self._proto.copy()
        h.update(f"{type_}\x00{value}".encode())
        return int.from_bytes(h.digest(), "big", signed=True)


def _target(conn: sqlite3.Connection, rid: bytes) -> tuple[Any, ...] | None:
    """(signal row or None, member, type, value, expires, retracted_by) of a stored record."""
    return conn.execute(  # type: ignore[no-any-return]
        "SELECT s.row, s.member, s.type, s.value, s.expires, s.retracted_by FROM records r "
        "LEFT JOIN signals s ON s.row = r.row WHERE r.id8 = ? AND r.id = ?",
        (id8(rid), rid),
    ).fetchone()


def id8(record_id: bytes) -> int:
    """The indexed part of a record id: its first 8 bytes as a signed 64-bit integer."""
    return int.from_bytes(record_id[:8], "big", signed=True)


class _Tracker:
    """Signals' activity before the merge and after it."""

    def __init__(self) -> None:
        self._before: dict[int, bool] = {}
        self._after: dict[int, SignalChange] = {}

    def note(
        self,
        row: int,
        rid: str,
        type_: str,
        value: str,
        *,
        before: bool,
        after: bool,
        why: str,
        expires: int | None = None,
    ) -> None:
        self._before.setdefault(row, before)
        self._after[row] = SignalChange(row, rid, type_, value, after, why, expires)

    def new_rows(self) -> Callable[[int, str, str, str, bool, int | None], None]:
        """``note`` for rows that did not exist before this merge (the hot path)."""
        before, after = self._before, self._after

        def note_new(
            row: int, rid: str, type_: str, value: str, active: bool, expires: int | None
        ) -> None:
            if row not in before:
                before[row] = False
            after[row] = SignalChange(row, rid, type_, value, active, "counted", expires)

        return note_new

    def changes(self) -> list[SignalChange]:
        return [c for row, c in self._after.items() if c.active != self._before[row]]


class Materialiser:
    """Applies one merge's change of counted ranges to the materialised tables."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        state: WriterState,
        received_ms: int,
        appended: dict[str, list[tuple[int, Record]]],
        ref_of: Callable[[str], int],
    ) -> None:
        self.conn = conn
        self.state = state
        self.received_ms = received_ms
        self.appended = appended
        self.ref_of = ref_of
        self._tracker = _Tracker()
        self._adopted: set[bytes] = set()
        self._swept: int | None = None

    def _was_active(self, expires: int | None, retracted: bool) -> bool:
        """Was the signal active before this merge, as the change feed has told it: expiries
        count from the feed's last sweep, not the merge's clock. A signal whose expiry passed
        but was not yet swept is still active to followers, so dropping or retracting it must
        enter a change (the sweep skips retracted signals and finds no row for dropped ones)."""
        if self._swept is None:
            self._swept = changefeed.swept_ms(self.conn)
        return is_active(expires, retracted, self._swept)

    def changes(self) -> list[SignalChange]:
        return self._tracker.changes()

    def adopt(self, ids: Iterable[bytes]) -> None:
        """Records now stored that retractions named before they were stored."""
        for rid in ids:
            self.conn.execute("UPDATE retractions SET orphan = 0 WHERE signal = ?", (rid,))
            self.state.orphans.discard(rid)
            self._adopted.add(rid)

    def apply(
        self,
        uncounts: Sequence[Uncount],
        counts: Sequence[Count],
        counted: dict[str, Counted | None],
    ) -> None:
        """Remove the effects of the ranges that stop counting, add those of the ranges that
        start (``protocol.ledger.Settlement``), and record the new ranges in ``counted``."""
        targets: set[tuple[int, bytes]] = set()
        for key, lo, hi, why in uncounts:
            targets.update(self._remove(self.state.refs[key], lo, hi, why))
        for member, target in sorted(targets):
            self._refresh(member, target)
        fresh: list[tuple[Counted, _Range]] = []
        stored: list[tuple[str, Counted, int]] = []
        for key, identity, gen, lo, hi, _ in counts:
            entry = (identity, gen, hi)
            mine = self._in_memory(key, lo, hi)
            if mine is None:
                stored.append((key, entry, lo))
            else:
                fresh.extend((entry, item) for item in mine)
        # This merge's records first: a re-added (not fresh) signal always recomputes its
        # retracted_by, so it may come after the retractions that name it, but not before.
        self._add(fresh)
        for key, entry, lo in stored:
            for chunk in self._stored_range(self.state.refs[key], lo, entry[2]):
                self._add([(entry, item) for item in chunk])
        self._write_counted(counted)

    # -- adding --------------------------------------------------------------------------

    def _in_memory(self, key: str, lo: int, hi: int) -> list[_Range] | None:
        """The records of key with lo < seq <= hi if this merge appended them all."""
        mine = self.appended.get(key, [])
        if mine and mine[0][1].seq <= lo + 1 and mine[-1][1].seq >= hi:
            return [(row, r, True) for row, r in mine if lo < r.seq <= hi]
        return None

    def _stored_range(self, ref: int, lo: int, hi: int) -> Iterator[list[_Range]]:
        """The stored records of ref with lo < seq <= hi, in chunks (a log may be huge)."""
        while lo < hi:
            rows = self.conn.execute(
                "SELECT row, seq, id, raw FROM records WHERE author = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?",
                (ref, lo, hi, _CHUNK_RECORDS),
            ).fetchall()
            if not rows:
                return
            yield [(row, trusted_record(raw, rid.hex()), False) for row, _, rid, raw in rows]
            lo = rows[-1][1]

    def _add(self, items: Sequence[tuple[Counted, _Range]]) -> None:
        signals, retracts, opinions, announces = [], [], [], []
        members: dict[str, int] = {}
        for (identity, gen, _), (row, record, fresh) in items:
            body = record.body
            member = members.get(identity) or members.setdefault(identity, self.ref_of(identity))
            if isinstance(body, SignalBody):
                signals.append((row, record, body, member, fresh))
            elif isinstance(body, RetractBody):
                retracts.append(
                    (row, member, bytes.fromhex(body.signal), gen, record.seq, record.id)
                )
            elif isinstance(body, OpinionBody):
                opinions.append((row, bytes.fromhex(body.signal), member, gen, record.seq,
                                 body.verdict, _json(body.labels)))  # fmt: skip
            elif isinstance(body, AnnounceBody):
                announces.append((row, member, gen, record.seq, body.name, _json(body.urls),
                                  body.tls, _json(body.types) if body.types else None))  # fmt: skip
        self._add_signals(signals)
        self._add_retractions(retracts)
        self.conn.executemany("INSERT INTO opinions VALUES (?, ?, ?, ?, ?, ?, ?)", opinions)
        self.conn.executemany(
            "INSERT INTO announces (row, member, gen, seq, name, urls, tls, types) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            announces,
        )

    def _add_signals(self, signals: list[tuple[int, Record, SignalBody, int, bool]]) -> None:
        keyer, now, adopted = Keyer(self.state.lookup_salt), self.received_ms, self._adopted
        rows: list[tuple[object, ...]] = []
        labels: list[tuple[str, int]] = []
        check: list[tuple[int, bytes]] = []
        changes = self._tracker.new_rows()
        dumps, refs = orjson.dumps, self.state.refs
        for row, record, body, member, fresh in signals:
            type_, value, expires, rid = body.type, body.value, body.expires, record.id
            rows.append((row, bytes.fromhex(rid), refs[record.author], record.seq, member,
                         record.ts, type_, value, keyer.key(type_, value),
                         dumps(body.labels).decode(), body.note, expires))  # fmt: skip
            for label in body.labels:
                labels.append((label, row))
            changes(row, rid, type_, value, is_active(expires, False, now), expires)
            if not fresh or (adopted and bytes.fromhex(rid) in adopted):
                check.append((member, bytes.fromhex(rid)))
        self.conn.executemany(
            "INSERT INTO signals (row, id, author, seq, member, ts, type, value, vkey, labels, "
            "note, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self.conn.executemany("INSERT INTO signal_labels (label, row) VALUES (?, ?)", labels)
        for member, target in check:
            self._refresh(member, target)

    def _add_retractions(self, retracts: list[tuple[int, int, bytes, int, int, str]]) -> None:
        """Store counted retractions and update the signals they retract.

        The common case -- the one retraction of an active signal of the same member -- costs
        one lookup and one update; anything else recomputes ``retracted_by`` from the rows.
        """
        targets = [_target(self.conn, target) for _, _, target, _, _, _ in retracts]
        self.conn.executemany(
            "INSERT INTO retractions VALUES (?, ?, ?, ?, ?, ?)",
            [(*r[:5], int(t is None)) for r, t in zip(retracts, targets, strict=True)],
        )
        counts: dict[tuple[int, bytes], int] = {}
        for r in retracts:
            counts[(r[1], r[2])] = counts.get((r[1], r[2]), 0) + 1
        for (_, member, target, _, _, rid), found in zip(retracts, targets, strict=True):
            if found is None:
                self.state.orphans.add(target)
            elif found[0] is not None and retraction_applies(found[1], member):
                if found[5] is None and counts[(member, target)] == 1:
                    self._retract(found, target, bytes.fromhex(rid))
                else:
                    self._refresh(member, target)

    def _retract(self, found: tuple[Any, ...], target: bytes, rid: bytes) -> None:
        row, _, type_, value, expires, _ = found
        self.conn.execute("UPDATE signals SET retracted_by = ? WHERE row = ?", (rid, row))
        before = self._was_active(expires, False)
        self._tracker.note(
            row, target.hex(), type_, value, before=before, after=False, why="retracted"
        )

    def _refresh(self, member: int, target: bytes) -> None:
        """Recompute retracted_by of member's signal target (if it is materialised)."""
        found = self.conn.execute(
            "SELECT s.row, s.type, s.value, s.expires, s.retracted_by FROM records r "
            "JOIN signals s ON s.row = r.row WHERE r.id8 = ? AND r.id = ? AND s.member = ?",
            (id8(target), target, member),
        ).fetchone()
        if found is None:
            return
        row, type_, value, expires, old = found
        retractions = self.conn.execute(
            "SELECT t.member, t.gen, t.seq, r.id FROM retractions t "
            "JOIN records r ON r.row = t.row WHERE t.signal = ?",
            (target,),
        )
        new = first_retraction(
            (gen, seq, rid) for who, gen, seq, rid in retractions if retraction_applies(member, who)
        )
        if new != old:
            self.conn.execute("UPDATE signals SET retracted_by = ? WHERE row = ?", (new, row))
            now = self.received_ms
            before = self._was_active(expires, old is not None)
            after = is_active(expires, new is not None, now)
            why = "retraction withdrawn" if new is None else "retracted"
            self._tracker.note(row, target.hex(), type_, value, before=before, after=after, why=why,
                               expires=expires)  # fmt: skip

    # -- removing ------------------------------------------------------------------------

    def _remove(self, ref: int, lo: int, hi: int, why: str) -> list[tuple[int, bytes]]:
        """Remove the effects of ref's records with lo < seq <= hi; returns retraction targets."""
        args = (ref, lo, hi)
        removed = self.conn.execute(
            "SELECT s.row, s.id, s.type, s.value, s.expires, s.retracted_by, s.labels "
            f"FROM signals s WHERE s.row IN ({_RANGE_ROWS})",
            args,
        ).fetchall()
        labels: list[tuple[str, int]] = []
        for row, rid, type_, value, expires, retracted_by, label_json in removed:
            before = self._was_active(expires, retracted_by is not None)
            self._tracker.note(row, rid.hex(), type_, value, before=before, after=False, why=why)
            labels.extend((label, row) for label in orjson.loads(label_json))
        self.conn.executemany("DELETE FROM signal_labels WHERE label = ? AND row = ?", labels)
        targets = self.conn.execute(
            f"SELECT member, signal FROM retractions WHERE row IN ({_RANGE_ROWS})", args
        ).fetchall()
        for table in ("signals", "retractions", "opinions", "announces"):
            self.conn.execute(f"DELETE FROM {table} WHERE row IN ({_RANGE_ROWS})", args)
        return targets

    # -- the frontier --------------------------------------------------------------------

    def _write_counted(self, counted: dict[str, Counted | None]) -> None:
        for key, entry in counted.items():
            if entry is None:
                self.conn.execute("DELETE FROM counted WHERE key = ?", (self.state.refs[key],))
        self.conn.executemany(
            "INSERT OR REPLACE INTO counted (key, member, gen, through) VALUES (?, ?, ?, ?)",
            [
                (self.ref_of(key), self.ref_of(entry[0]), entry[1], entry[2])
                for key, entry in counted.items()
                if entry is not None
            ],
        )


def write_membership(conn: sqlite3.Connection, membership: Membership) -> None:
    """Rewrite the members and freezes tables if the membership's members or freezes changed."""
    members = [
        (m.identity, m.name, m.role, _json(m.keys), _json(m.admitted_by), int(m.removed))
        for _, m in sorted(membership.members.items())
    ]
    freezes = [(key, seq, reason) for key, (seq, reason) in sorted(membership.freezes.items())]
    if conn.execute("SELECT * FROM members ORDER BY identity").fetchall() != members:
        conn.execute("DELETE FROM members")
        conn.executemany("INSERT INTO members VALUES (?, ?, ?, ?, ?, ?)", members)
    if conn.execute("SELECT * FROM freezes ORDER BY key").fetchall() != freezes:
        conn.execute("DELETE FROM freezes")
        conn.executemany("INSERT INTO freezes VALUES (?, ?, ?)", freezes)


def _json(values: Iterable[str]) -> str:
    return orjson.dumps(list(values)).decode()
