"""Merging verified records into the node database: the writer's half of ``Store.merge``.

Every decision about a record is the writer's ``protocol.ledger.Ledger``'s: a ``Merger``
offers it each verified record of one batch and persists what it answers, within the
caller's transaction:

- ACCEPTED: the record's row (buffered, written with ``executemany``); its author's head is
  written at ``finish``;
- FORK: the record's row beside the first, the fork evidence and the author's fork seq (the
  merge reports the evidence in ``MergeResult.forks``; the record's status is ACCEPTED);
- PENDING: a row in ``pending`` if the ledger holds it now (``held``); a record the ledger
  releases (``released``) leaves ``pending`` before its own outcome is persisted;
- DUPLICATE, DEFERRED, REJECTED: nothing (a deferred record's outcome comes at ``finish``).

``finish`` settles the ledger and persists the settlement: the heads, the ranges of each
key's log that start or stop counting (``node.store.materialise``), the membership tables when the
membership was derived again, and the held records that can never count now. The ledger
reads stored records through ``StoredLog``; it remembers the records of the running batch
itself, so nothing is flushed here to be read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, NamedTuple

from node.store.materialise import Materialiser, SignalChange, WriterState, id8, write_membership
from protocol import Federation, Head, Membership, Record
from protocol.batch import trusted_record
from protocol.chain import ForkEvidence
from protocol.ledger import Counted, Ledger, Verdict
from protocol.ledger import Outcome as LedgerOutcome

MAX_PENDING_PER_AUTHOR: Final = 10_000  # records the ledger holds ahead of gaps, per author
MAX_PENDING_TOTAL: Final = 200_000  # and in all
_PROMOTE_CHUNK: Final = 512  # held records read back per query


class MergeStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    PENDING = "pending"
    REJECTED = "rejected"


# A fork's record is stored (as evidence): its status is ACCEPTED. DEFERRED is not final.
_STATUS: Final = {
    Verdict.ACCEPTED: MergeStatus.ACCEPTED,
    Verdict.FORK: MergeStatus.ACCEPTED,
    Verdict.DUPLICATE: MergeStatus.DUPLICATE,
    Verdict.PENDING: MergeStatus.PENDING,
    Verdict.REJECTED: MergeStatus.REJECTED,
}


class Outcome(NamedTuple):  # a tuple: one is made per record merged
    """What happened to the record at ``index`` of a batch."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing here uses
    status: MergeStatus
    id: str | None
    author: str | None
    seq: int | None
    error: dict[str, object] | None  # RemoteProtocolError.to_json() when rejected


@dataclass(frozen=True, slots=True)
class MergeResult:
    outcomes: list[Outcome]
    accepted: list[Record]  # newly stored records, in the order stored (for relay)
    signal_changes: list[SignalChange]  # signals that became active or inactive
    # equivocations this merge found: each stored a second record at a held (author, seq)
    # (that record's outcome is ACCEPTED: it is kept as evidence) and froze the author
    forks: list[ForkEvidence] = field(default_factory=list)
    # the membership after this merge, if votes, rotations or forks made it re-derive it
    membership: Membership | None = None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(MergeStatus, 0)
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        return {str(status): n for status, n in counts.items()}

    def to_json(self) -> dict[str, object]:
        """What a merge answers (``POST /v1/records``, ``POST /v1/import``, ``hashmesh
        import``): the counts, and the outcome of every record not accepted."""
        outcomes = [
            {"index": o.index, "status": str(o.status), "id": o.id, "error": o.error}
            for o in self.outcomes
            if o.status != MergeStatus.ACCEPTED
        ]
        return {"counts": self.counts(), "outcomes": outcomes}


class StoredLog:
    """The ledger's ``LogReader``: stored and held records, read from the node database."""

    def __init__(self, conn: sqlite3.Connection, refs: dict[str, int]) -> None:
        self.conn = conn
        self.refs = refs

    def stored_ids(self, author: str, seq: int) -> list[str]:
        ref = self.refs.get(author)
        if ref is None:
            return []
        rows = self.conn.execute(
            "SELECT id FROM records WHERE author = ? AND seq = ? ORDER BY row", (ref, seq)
        )
        return [rid.hex() for (rid,) in rows]

    def stored_record(self, record_id: str) -> Record:
        rid = bytes.fromhex(record_id)
        row = self.conn.execute(
            "SELECT raw FROM records WHERE id8 = ? AND id = ?", (id8(rid), rid)
        ).fetchone()
        return trusted_record(row[0], record_id)

    def held_records(self, ids: Sequence[str]) -> list[Record]:
        found: dict[str, Record] = {}
        for i in range(0, len(ids), _PROMOTE_CHUNK):
            chunk = [bytes.fromhex(x) for x in ids[i : i + _PROMOTE_CHUNK]]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT id, raw FROM pending WHERE id IN ({marks})", chunk)
            found.update((rid.hex(), trusted_record(raw, rid.hex())) for rid, raw in rows)
        return [found[x] for x in ids]


def load_state(conn: sqlite3.Connection, federation: Federation) -> WriterState:
    refs: dict[str, int] = {}
    heads: dict[str, Head] = {}
    fork_seqs: dict[str, int] = {}
    keys = conn.execute("SELECT ref, key, head_seq, head_id, fork_seq FROM keys")
    for ref, key, head_seq, head_id, fork_seq in keys:
        refs[key] = ref
        if head_seq:
            heads[key] = Head(key, head_seq, head_id.hex())
        if fork_seq is not None:
            fork_seqs[key] = fork_seq
    ledger = Ledger(
        federation,
        StoredLog(conn, refs),
        heads=heads,
        fork_seqs=fork_seqs,
        membership_records=[trusted_record(raw, rid.hex()) for rid, raw in
                            conn.execute(_MEMBERSHIP_SQL)],
        counted=_load_counted(conn),
        held=[(key, seq, rid.hex()) for key, seq, rid in conn.execute(_HELD_SQL)],
        max_held_per_author=MAX_PENDING_PER_AUTHOR,
        max_held_total=MAX_PENDING_TOTAL,
    )  # fmt: skip
    return WriterState(
        ledger=ledger,
        refs=refs,
        orphans={r[0] for r in conn.execute("SELECT signal FROM retractions WHERE orphan")},
        next_row=conn.execute("SELECT coalesce(max(row), 0) + 1 FROM records").fetchone()[0],
        lookup_salt=bytes.fromhex(_meta(conn, "lookup_salt")),
    )


_MEMBERSHIP_SQL: Final = "SELECT id, raw FROM records WHERE kind IN ('vote', 'rotate')"
_HELD_SQL: Final = "SELECT k.key, p.seq, p.id FROM pending p JOIN keys k ON k.ref = p.author"


def _load_counted(conn: sqlite3.Connection) -> dict[str, Counted]:
    sql = (
        "SELECT k.key, m.key, c.gen, c.through FROM counted c "
        "JOIN keys k ON k.ref = c.key JOIN keys m ON m.ref = c.member"
    )
    return {key: (member, gen, through) for key, member, gen, through in conn.execute(sql)}


def _meta(conn: sqlite3.Connection, key: str) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return "" if row is None else str(row[0])


class Merger:
    """One batch merged into the database within the caller's transaction."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        federation: Federation,
        state: WriterState,
        received_ms: int,
    ) -> None:
        self.conn = conn
        self.federation = federation
        self.state = state
        self.ledger = state.ledger
        self.ledger.max_held_per_author = MAX_PENDING_PER_AUTHOR  # (tests lower them)
        self.ledger.max_held_total = MAX_PENDING_TOTAL
        self.received_ms = received_ms
        self.outcomes: dict[int, Outcome] = {}
        self.accepted: list[Record] = []
        self.forks: list[ForkEvidence] = []
        self.appended: dict[str, list[tuple[int, Record]]] = {}
        self.membership: Membership | None = None  # set by finish if derived again
        self._rows: list[tuple[object, ...]] = []
        self._adopted: list[bytes] = []  # stored ids that were orphan retraction targets

    @property
    def derived(self) -> bool:
        """Was the membership derived again (votes, rotations or forks were stored)?"""
        return self.membership is not None

    # -- persisting the ledger's answers -------------------------------------------------

    def offer(self, index: int | None, record: Record) -> None:
        """Offer one verified record (index: its position in the batch) and persist."""
        outcomes = self.ledger.offer(record, index)
        if len(outcomes) == 1 and outcomes[0].verdict is Verdict.ACCEPTED:  # the common case
            self._store_head(outcomes[0])
            if index is not None:
                self.outcomes[index] = Outcome(
                    index, MergeStatus.ACCEPTED, record.id, record.author, record.seq, None
                )
            return
        for outcome in outcomes:
            self._persist(outcome)

    def reject(self, index: int, error: dict[str, object]) -> None:
        """Report a record that failed verification (it is never written)."""
        author, seq, rid = error.get("author"), error.get("seq"), error.get("record_id")
        self.outcomes[index] = Outcome(
            index,
            MergeStatus.REJECTED,
            rid if isinstance(rid, str) else None,
            author if isinstance(author, str) else None,
            seq if isinstance(seq, int) else None,
            error,
        )

    def _persist(self, outcome: LedgerOutcome) -> None:
        record, verdict = outcome.record, outcome.verdict
        if outcome.released:
            self.conn.execute("DELETE FROM pending WHERE id = ?", (bytes.fromhex(record.id),))
        _PERSIST[verdict](self, outcome)
        index = outcome.tag
        if isinstance(index, int) and verdict is not Verdict.DEFERRED:
            error = None if outcome.error is None else outcome.error.to_json()
            self.outcomes[index] = Outcome(
                index, _STATUS[verdict], record.id, record.author, record.seq, error
            )

    def _store_head(self, outcome: LedgerOutcome) -> None:
        record = outcome.record
        row = self._insert(record)
        appended = self.appended.get(record.author)
        if appended is None:
            appended = self.appended[record.author] = []
        appended.append((row, record))

    def _store_fork(self, outcome: LedgerOutcome) -> None:
        record, proof = outcome.record, outcome.evidence
        assert proof is not None
        self._insert(record)
        ref = self.state.refs[record.author]
        self.conn.execute(
            "INSERT OR REPLACE INTO forks (author, seq, first, second) VALUES (?, ?, ?, ?)",
            (ref, record.seq, proof.first.text, proof.second.text),
        )
        self.conn.execute("UPDATE keys SET fork_seq = ? WHERE ref = ?", (record.seq, ref))
        self.forks.append(proof)

    def _hold(self, outcome: LedgerOutcome) -> None:
        record = outcome.record
        if outcome.held:
            self.conn.execute(
                "INSERT INTO pending (id, author, seq, received_ms, raw) VALUES (?, ?, ?, ?, ?)",
                (bytes.fromhex(record.id), self._ref(record.author), record.seq,
                 self.received_ms, record.canonical),
            )  # fmt: skip

    def _nothing(self, outcome: LedgerOutcome) -> None:
        pass

    # -- writing -------------------------------------------------------------------------

    def _ref(self, key: str) -> int:
        ref = self.state.refs.get(key)
        if ref is None:
            ref = self.conn.execute("INSERT INTO keys (key) VALUES (?)", (key,)).lastrowid
            assert ref is not None
            self.state.refs[key] = ref
        return ref

    def _insert(self, record: Record) -> int:
        """Buffer record's row; returns its ``records.row``."""
        state = self.state
        row = state.next_row
        state.next_row = row + 1
        rid = bytes.fromhex(record.id)
        ref = state.refs.get(record.author) or self._ref(record.author)
        self._rows.append(
            (row, id8(rid), rid, ref, record.seq, record.body.KIND, self.received_ms,
             record.canonical)
        )  # fmt: skip
        if state.orphans and rid in state.orphans:
            self._adopted.append(rid)
        self.accepted.append(record)
        return row

    def flush(self) -> None:
        """Write the buffered record rows."""
        if self._rows:
            self.conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._rows)
            self._rows.clear()

    # -- finishing -----------------------------------------------------------------------

    def finish(self, *, rederive: bool = False) -> tuple[list[Record], list[SignalChange]]:
        """Settle the ledger and persist the settlement (module docstring).

        Afterwards ``derived`` says whether the membership was derived again (votes,
        rotations or forks were stored): ``membership`` is then the new one."""
        settlement = self.ledger.settle(rederive=rederive)
        for outcome in settlement.outcomes:
            self._persist(outcome)
        self.flush()
        self._write_heads()
        materialiser = Materialiser(
            self.conn, self.state, self.received_ms, self.appended, self._ref
        )
        materialiser.adopt(self._adopted)
        materialiser.apply(settlement.uncounts, settlement.counts, settlement.counted)
        if settlement.membership is not None:
            write_membership(self.conn, settlement.membership)
            self.membership = settlement.membership
        for drop in settlement.dropped:
            self.conn.execute(
                "DELETE FROM pending WHERE author = ? AND seq > ?",
                (self.state.refs[drop.author], drop.above),
            )
        return self.accepted, materialiser.changes()

    def _write_heads(self) -> None:
        heads = [self.ledger.heads[a] for a in self.appended]
        self.conn.executemany(
            "UPDATE keys SET head_seq = ?, head_id = ? WHERE ref = ?",
            [(h.seq, bytes.fromhex(h.id), self.state.refs[h.author]) for h in heads],
        )


_PERSIST: Final[dict[Verdict, Callable[[Merger, LedgerOutcome], None]]] = {
    Verdict.ACCEPTED: Merger._store_head,
    Verdict.FORK: Merger._store_fork,
    Verdict.PENDING: Merger._hold,
    Verdict.DUPLICATE: Merger._nothing,
    Verdict.DEFERRED: Merger._nothing,
    Verdict.REJECTED: Merger._nothing,
}
