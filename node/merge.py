"""Merging verified records into the node database: the writer's half of ``Store.merge``.

A ``Merger`` handles one batch inside one transaction. It is offered verified records in batch
order and decides each one against the stored frontier, kept in memory in ``WriterState``:

- its id is already stored at its (author, seq): DUPLICATE;
- another record is stored at its (author, seq): a fork; it is stored beside the first as
  evidence (ACCEPTED, and listed in ``MergeResult.forks``) and the author is frozen at
  seq - 1 (``derive_membership`` with fork freezes);
- its author may not author at that seq under the current membership: deferred, retried once
  the batch's own votes, rotations and forks have changed the membership, else REJECTED;
- it extends its author's log (``check_successor``): ACCEPTED; a broken ``prev``: REJECTED;
- it lies beyond a gap: held in ``pending`` (bounded) until the gap fills: PENDING (if the gap
  fills within the same batch, the record's outcome is what it then became).

Records are buffered and written with ``executemany``; anything that must read the database
flushes the buffer first. ``finish`` then brings the materialised state up to date: it derives
the final membership (re-running ``derive_membership`` only if votes, rotations or forks were
stored; otherwise each appended log simply counts through its new head, up to its cap) and
hands the difference in counted ranges to ``node.materialise``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, NamedTuple

from node.errors import StoreError
from node.materialise import (
    Counted,
    Materialiser,
    SignalChange,
    counted_of,
    id8,
    write_membership,
)
from protocol import Federation, Head, Membership, Record, check_successor, derive_membership
from protocol.batch import trusted_record
from protocol.chain import ForkEvidence, fork_evidence
from protocol.encoding import MAX_SAFE_INTEGER
from protocol.errors import ChainError, MembershipError, RemoteProtocolError, SeqGapError

MAX_PENDING_PER_AUTHOR: Final = 10_000
MAX_PENDING_TOTAL: Final = 200_000
_PROMOTE_CHUNK: Final = 512
_MEMBERSHIP_KINDS: Final = ("vote", "rotate")


class MergeStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    PENDING = "pending"
    REJECTED = "rejected"


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


@dataclass(slots=True)
class WriterState:
    """What the writer keeps in memory between merges; reloaded from the database on error."""

    refs: dict[str, int]  # key -> keys.ref
    heads: dict[str, Head]
    fork_seqs: dict[str, int]  # author -> seq of its first fork
    membership_records: list[Record]  # stored vote and rotate records
    membership: Membership  # as materialised
    counted: dict[str, Counted]  # as materialised (the ``counted`` table)
    pending: dict[str, int]  # author -> records held in ``pending``
    orphans: set[bytes]  # ids named by a retraction but not stored
    next_row: int
    lookup_salt: bytes

    @property
    def pending_total(self) -> int:
        return sum(self.pending.values())


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
    records = [trusted_record(raw, rid.hex()) for rid, raw in conn.execute(_MEMBERSHIP_SQL)]
    return WriterState(
        refs=refs,
        heads=heads,
        fork_seqs=fork_seqs,
        membership_records=records,
        membership=derive(federation, heads, fork_seqs, records),
        counted=_load_counted(conn),
        pending=dict(conn.execute("SELECT k.key, count(*) FROM pending p "
                                  "JOIN keys k ON k.ref = p.author GROUP BY p.author")),
        orphans={r[0] for r in conn.execute("SELECT signal FROM retractions WHERE orphan")},
        next_row=conn.execute("SELECT coalesce(max(row), 0) + 1 FROM records").fetchone()[0],
        lookup_salt=bytes.fromhex(_meta(conn, "lookup_salt")),
    )  # fmt: skip


_MEMBERSHIP_SQL: Final = "SELECT id, raw FROM records WHERE kind IN ('vote', 'rotate')"


def _load_counted(conn: sqlite3.Connection) -> dict[str, Counted]:
    sql = (
        "SELECT k.key, m.key, c.gen, c.through FROM counted c "
        "JOIN keys k ON k.ref = c.key JOIN keys m ON m.ref = c.member"
    )
    return {key: (member, gen, through) for key, member, gen, through in conn.execute(sql)}


def _meta(conn: sqlite3.Connection, key: str) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return "" if row is None else str(row[0])


def derive(
    federation: Federation,
    heads: dict[str, Head],
    fork_seqs: dict[str, int],
    membership_records: Sequence[Record],
) -> Membership:
    """The membership of the stored records: every stored log is linked up to its head."""
    prefixes = {author: head.seq for author, head in heads.items()}
    freezes = {author: seq - 1 for author, seq in fork_seqs.items()}
    prefixes.update(freezes)
    return derive_membership(federation, prefixes, membership_records, freezes)


@dataclass(slots=True)
class _Deferred:
    index: int | None
    record: Record
    epoch: int


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
        self.received_ms = received_ms
        self.outcomes: dict[int, Outcome] = {}
        self.accepted: list[Record] = []
        self.forks: list[ForkEvidence] = []
        self.appended: dict[str, list[tuple[int, Record]]] = {}
        self._rows: list[tuple[object, ...]] = []
        self._deferred: list[_Deferred] = []
        self._promote: set[str] = set()
        self._adopted: list[bytes] = []  # stored ids that were orphan retraction targets
        self._held: dict[str, int] = {}  # record id -> batch index, for records held here
        self._dirty = False  # a vote, rotate or fork was stored since the last derive
        self._derived = False
        self._epoch = 0
        self._caps: dict[str, int] = {}  # author -> highest seq it may author (see _may_extend)

    @property
    def derived(self) -> bool:
        """Was the membership derived again (votes, rotations or forks were stored)?"""
        return self._derived

    # -- offering records ----------------------------------------------------------------

    def offer(self, index: int | None, record: Record) -> None:
        """Decide one verified record (index None: a record promoted from ``pending``)."""
        head = self.state.heads.get(record.author)
        if (
            head is not None
            and record.seq == head.seq + 1
            and record.prev == head.id
            and self._may_extend(record)
        ):
            self._extend(index, record)  # the common case: the next record of a known log
        else:
            self._offer(index, record)
        while self._promote:
            self._promote_pending(self._promote.pop())

    def _may_extend(self, record: Record) -> bool:
        """May record's author author at its seq (cached per author until membership changes)?"""
        if self._dirty:
            self._rederive()
        cap = self._caps.get(record.author)
        if cap is None:
            m = self.state.membership
            if not m.accepts(record.author, 1):
                return False
            limit = m.caps.get(record.author)
            cap = self._caps[record.author] = MAX_SAFE_INTEGER if limit is None else limit
        return record.seq <= cap

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

    def _offer(self, index: int | None, record: Record) -> None:
        head = self.state.heads.get(record.author)
        head_seq = 0 if head is None else head.seq
        if record.seq <= head_seq:
            self._known_seq(index, record)
        elif not self._accepts(record):
            self._deferred.append(_Deferred(index, record, self._epoch))
        elif record.seq == head_seq + 1:
            self._append(index, record, head)
        else:
            self._hold(index, record)

    def _outcome(
        self, index: int | None, record: Record, status: MergeStatus, error: object = None
    ) -> None:
        if index is None:
            return
        json = error.to_json() if isinstance(error, RemoteProtocolError) else None
        self.outcomes[index] = Outcome(index, status, record.id, record.author, record.seq, json)

    def _accepts(self, record: Record) -> bool:
        if self._dirty:
            self._rederive()
        return self.state.membership.accepts(record.author, record.seq)

    def _rederive(self) -> None:
        s = self.state
        s.membership = derive(self.federation, s.heads, s.fork_seqs, s.membership_records)
        self._dirty = False
        self._derived = True
        self._epoch += 1
        self._caps.clear()

    # -- the four paths ------------------------------------------------------------------

    def _append(self, index: int | None, record: Record, head: Head | None) -> None:
        try:
            check_successor(head, record)
        except ChainError as e:
            self._outcome(index, record, MergeStatus.REJECTED, e)
            return
        self._extend(index, record)

    def _extend(self, index: int | None, record: Record) -> None:
        """Store record as its author's new head (the caller checked that it follows it)."""
        author, seq, rid = record.author, record.seq, record.id
        row = self._insert(record)
        state = self.state
        state.heads[author] = Head(author, seq, rid)
        appended = self.appended.get(author)
        if appended is None:
            appended = self.appended[author] = []
        appended.append((row, record))
        if state.pending and author in state.pending:
            self._promote.add(author)
        if index is not None:
            self.outcomes[index] = Outcome(index, MergeStatus.ACCEPTED, rid, author, seq, None)

    def _known_seq(self, index: int | None, record: Record) -> None:
        """A record at or below its author's head: a duplicate, or a fork."""
        self.flush()
        stored = self.conn.execute(
            "SELECT id, raw FROM records WHERE author = ? AND seq = ? ORDER BY row",
            (self.state.refs[record.author], record.seq),
        ).fetchall()
        if not stored:
            raise StoreError(f"no stored record at {record.author[:16]}…/{record.seq} below head")
        if any(rid.hex() == record.id for rid, _ in stored):
            self._outcome(index, record, MergeStatus.DUPLICATE)
        elif not self._accepts(record):
            self._deferred.append(_Deferred(index, record, self._epoch))
        else:
            first_id, first_raw = stored[0]
            self._store_fork(trusted_record(first_raw, first_id.hex()), record)
            self._outcome(index, record, MergeStatus.ACCEPTED)

    def _store_fork(self, stored: Record, record: Record) -> None:
        self._insert(record)
        proof = fork_evidence(stored, record)
        ref = self.state.refs[record.author]
        self.conn.execute(
            "INSERT OR REPLACE INTO forks (author, seq, first, second) VALUES (?, ?, ?, ?)",
            (ref, record.seq, proof.first.text, proof.second.text),
        )
        self.conn.execute("UPDATE keys SET fork_seq = ? WHERE ref = ?", (record.seq, ref))
        self.state.fork_seqs[record.author] = record.seq
        self.forks.append(proof)
        self._dirty = True

    def _hold(self, index: int | None, record: Record) -> None:
        """A record beyond a gap in its author's log waits in ``pending``."""
        rid = bytes.fromhex(record.id)
        held = self.state.pending.get(record.author, 0)
        if held and self.conn.execute("SELECT 1 FROM pending WHERE id = ?", (rid,)).fetchone():
            self._outcome(index, record, MergeStatus.PENDING)
            return
        if held >= MAX_PENDING_PER_AUTHOR or self.state.pending_total >= MAX_PENDING_TOTAL:
            self._outcome(index, record, MergeStatus.REJECTED, _pending_full(record, held))
            return
        self.conn.execute(
            "INSERT INTO pending (id, author, seq, received_ms, raw) VALUES (?, ?, ?, ?, ?)",
            (rid, self._ref(record.author), record.seq, self.received_ms, record.canonical),
        )
        self.state.pending[record.author] = held + 1
        self._outcome(index, record, MergeStatus.PENDING)
        if index is not None:
            self._held[record.id] = index  # promoted within this batch: report the final status

    def _promote_pending(self, author: str) -> None:
        """Offer again the held records of author that its new head has reached."""
        head = self.state.heads[author]
        rows = self.conn.execute(
            "SELECT id, raw FROM pending WHERE author = ? AND seq <= ? ORDER BY seq LIMIT ?",
            (self.state.refs[author], head.seq + 1, _PROMOTE_CHUNK),
        ).fetchall()
        for rid, raw in rows:
            self.conn.execute("DELETE FROM pending WHERE id = ?", (rid,))
            self._forget_pending(author)
            record = trusted_record(raw, rid.hex())
            self._offer(self._held.pop(record.id, None), record)
        if rows and author in self.state.pending:
            self._promote.add(author)

    def _forget_pending(self, author: str) -> None:
        left = self.state.pending[author] - 1
        if left:
            self.state.pending[author] = left
        else:
            del self.state.pending[author]

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
        kind = record.body.KIND
        self._rows.append(
            (row, id8(rid), rid, ref, record.seq, kind, self.received_ms, record.canonical)
        )
        if kind in _MEMBERSHIP_KINDS:
            state.membership_records.append(record)
            self._dirty = True
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
        """Settle deferred records, write everything, and update the materialised state.

        Afterwards ``derived`` says whether the membership was derived again (votes,
        rotations or forks were stored): ``state.membership`` is then the new one."""
        self._retry_deferred()
        self._reject_deferred()
        self.flush()
        self._write_heads()
        membership = self._final_membership(rederive)
        materialiser = Materialiser(
            self.conn, self.state, self.received_ms, self.appended, self._ref
        )
        materialiser.adopt(self._adopted)
        materialiser.apply(counted_of(membership))
        if self._derived:
            write_membership(self.conn, membership)
            self._drop_unreachable_pending(membership)
        self.state.membership = membership
        return self.accepted, materialiser.changes()

    def _drop_unreachable_pending(self, membership: Membership) -> None:
        """Held records that can never count now (frozen or non-member authors) go."""
        for author in list(self.state.pending):
            cap = membership.caps.get(author) if membership.accepts(author, 1) else 0
            if cap is None:
                continue
            ref = self.state.refs[author]
            dropped = self.conn.execute(
                "DELETE FROM pending WHERE author = ? AND seq > ?", (ref, cap)
            ).rowcount
            left = self.state.pending[author] - dropped
            if left > 0:
                self.state.pending[author] = left
            else:
                del self.state.pending[author]

    def _retry_deferred(self) -> None:
        while self._deferred:
            if self._dirty:
                self._rederive()
            retry = [d for d in self._deferred if d.epoch < self._epoch]
            if not retry:
                return
            self._deferred = [d for d in self._deferred if d.epoch >= self._epoch]
            for d in sorted(retry, key=lambda d: (d.record.author, d.record.seq)):
                self.offer(d.index, d.record)

    def _reject_deferred(self) -> None:
        for d in self._deferred:
            error = membership_error(self.state.membership, d.record)
            self._outcome(d.index, d.record, MergeStatus.REJECTED, error)
        self._deferred.clear()

    def _write_heads(self) -> None:
        heads = [self.state.heads[a] for a in self.appended]
        self.conn.executemany(
            "UPDATE keys SET head_seq = ?, head_id = ? WHERE ref = ?",
            [(h.seq, bytes.fromhex(h.id), self.state.refs[h.author]) for h in heads],
        )

    def _final_membership(self, rederive: bool) -> Membership:
        if rederive or self._dirty or self._derived:
            self._rederive()
            return self.state.membership
        m = self.state.membership
        limits = dict(m.limits)
        for author in self.appended:  # accepted, so a member key: it counts through its head
            cap = m.caps.get(author)
            seq = self.state.heads[author].seq
            limits[author] = seq if cap is None else min(seq, cap)
        return replace(m, limits=limits)


def membership_error(membership: Membership, record: Record) -> MembershipError:
    """Why record's author may not author it: not a member, not a member role, or frozen."""
    member = membership.identity_of(record.author)
    cap = membership.caps.get(record.author)
    if member is None:
        reason, expected = "author is not a member of this federation", "a member key"
    elif member.role != "member":
        reason, expected = f"author has role {member.role!r} and may not author records", "member"
    else:
        why = membership.freezes.get(record.author, (cap, "closed"))[1]
        reason, expected = f"author's log is closed after seq {cap} ({why})", f"seq <= {cap}"
    return MembershipError(
        reason,
        author=record.author,
        seq=record.seq,
        record_id=record.id,
        expected=expected,
        actual=record.seq,
    )


def _pending_full(record: Record, held: int) -> SeqGapError:
    scope = "its author" if held >= MAX_PENDING_PER_AUTHOR else "this node"
    limit = MAX_PENDING_PER_AUTHOR if held >= MAX_PENDING_PER_AUTHOR else MAX_PENDING_TOTAL
    return SeqGapError(
        f"record is ahead of a gap in its author's log and the records held for {scope} "
        f"are at their limit ({limit}); send the missing records first",
        author=record.author,
        seq=record.seq,
        record_id=record.id,
        field="seq",
    )
