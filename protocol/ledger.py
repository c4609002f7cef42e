"""The acceptance machine: what a node must know to judge the next record, and its answers.

A ``Ledger`` holds the frontier of one node's stored record set -- every author's head, the
seq of its first fork, the records held ahead of a gap -- and the membership that set implies
(its vote and rotate records, the derived ``Membership``, the range each key counts through).
It is fed verified records (``offer``) and answers each with an ``Outcome``; at the end of a
batch ``settle`` answers what the batch did to the derived state (a ``Settlement``). It does
no I/O: it reads stored records only through the ``LogReader`` it is given, and writes
nothing -- the node persists what it answers (``node.store.merge``). Validity never depends on the
receiver's clock (SPEC 12.5), so no answer here takes the time; expiry is evaluated when the
state is read.

``offer(r)`` for a record r of author a, with h = a's head seq (0 if none) and "allowed" =
``Membership.accepts(a, r.seq)`` under the current view (SPEC 4.4, 6.1, 7.5):

============================== ============ ================================================
position of r                  verdict      effect the node persists
============================== ============ ================================================
r.seq <= h, r.id stored there  DUPLICATE    --
r.seq <= h, not allowed        DEFERRED     -- (decided by ``settle``)
r.seq <= h, another id there   FORK         store r beside it; ``evidence``; a frozen at r.seq-1
r.seq > h, not allowed         DEFERRED     -- (decided by ``settle``)
r.seq = h+1, r.prev = head id  ACCEPTED     store r as a's head; held records that now follow
                                            are offered again (their outcomes follow r's)
r.seq = h+1, r.prev differs    REJECTED     -- (``PrevMismatchError``)
r.seq > h+1, already held      PENDING      --
r.seq > h+1, holds are full    REJECTED     -- (``SeqGapError``)
r.seq > h+1                    PENDING      hold r (``held``)
============================== ============ ================================================

``settle()`` offers the deferred records again while the batch's votes, rotations and forks
keep changing the membership, rejects the rest (``MembershipError``), derives the final
membership -- again from the stored vote and rotate records if any were stored, else each
log that grew simply counts through its new head, up to its cap -- and answers the changes:
ranges of each key's log that start or stop counting (``Count``, ``Uncount``), the changes to
the member list (``protocol.membership.MembershipChange``) and the held records that can
never count now (``DropHeld``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, NamedTuple, Protocol

from protocol.authoring import Target, check_authoring
from protocol.bodies import Body
from protocol.chain import ForkEvidence, Head, check_successor, fork_evidence
from protocol.encoding import MAX_SAFE_INTEGER
from protocol.errors import (
    ChainError,
    LocalProtocolError,
    MembershipError,
    RemoteProtocolError,
    SeqGapError,
)
from protocol.federation import Federation
from protocol.membership import (
    Membership,
    MembershipChange,
    derive_membership,
    membership_changes,
)
from protocol.records import Record
from protocol.type_gate import Announced

MAX_HELD_PER_AUTHOR: Final = 10_000
MAX_HELD_TOTAL: Final = 200_000
MEMBERSHIP_KINDS: Final = frozenset({"vote", "rotate"})

Counted = tuple[str, int, int]  # (member identity, key generation, counted through seq)


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # the next record of its author's log: stored as the new head
    DUPLICATE = "duplicate"  # its id is stored already
    FORK = "fork"  # a second record at a stored (author, seq): stored as evidence
    PENDING = "pending"  # ahead of a gap in its author's log: held until the gap fills
    DEFERRED = "deferred"  # its author may not author it under the current view (yet)
    REJECTED = "rejected"  # not stored; ``error`` says why


class Outcome(NamedTuple):  # a tuple: one is made per record offered
    """The ledger's answer about one record."""

    record: Record
    verdict: Verdict
    tag: object = None  # what the caller passed with the record (e.g. its batch index)
    error: RemoteProtocolError | None = None  # REJECTED: why
    evidence: ForkEvidence | None = None  # FORK: the proof (the author is frozen)
    held: bool = False  # PENDING: hold it now (False: it was held before)
    released: bool = False  # the record was held and has now been offered again


class Count(NamedTuple):
    """key's records with lo < seq <= hi now count, as identity at key generation gen, because
    the log ``grew``, its key was ``admitted``, ``rotated`` in (a member's new key) or
    ``thawed`` (a removal no longer holds), or it counts as another identity or generation
    now (``recounted``: an admission or a rotation was undone or redone)."""

    key: str
    identity: str
    gen: int
    lo: int
    hi: int
    why: str


class Uncount(NamedTuple):
    """key's records with lo < seq <= hi no longer count, because of a ``fork``, a removal
    (``removed``) or a ``rotated`` key, because its admission no longer holds
    (``unadmitted``), or because it counts as another identity or generation (``recounted``)."""

    key: str
    lo: int
    hi: int
    why: str


class DropHeld(NamedTuple):
    """author's held records with seq > above can never count under the new membership."""

    author: str
    above: int


class LogReader(Protocol):
    """What the ledger reads of the stored records (the node answers from its database)."""

    def stored_ids(self, author: str, seq: int) -> Sequence[str]:
        """The ids of the stored records of author at seq, first stored first."""
        ...

    def stored_record(self, record_id: str) -> Record:
        """A stored record."""
        ...

    def held_records(self, ids: Sequence[str]) -> Sequence[Record]:
        """The held records with these ids, in that order."""
        ...


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a batch did, beyond the outcomes ``offer`` answered."""

    outcomes: list[Outcome]  # of the records deferred in the batch, and any they released
    counts: list[Count]
    uncounts: list[Uncount]
    counted: dict[str, Counted | None]  # keys whose counted range changed (None: none now)
    membership: Membership | None  # the membership, if it was derived again
    changes: list[MembershipChange]  # what that derivation changed
    dropped: list[DropHeld]

    @property
    def derived(self) -> bool:
        return self.membership is not None


def membership_of_stored(
    federation: Federation,
    heads: Mapping[str, Head],
    fork_seqs: Mapping[str, int],
    membership_records: Iterable[Record],
) -> Membership:
    """The membership of a stored record set: every stored log is linked up to its head
    (the ledger never stores a record that does not extend one), forks freeze at seq - 1."""
    prefixes = {author: head.seq for author, head in heads.items()}
    freezes = {author: seq - 1 for author, seq in fork_seqs.items()}
    prefixes.update(freezes)
    return derive_membership(federation, prefixes, membership_records, freezes)


def counted_of(membership: Membership) -> dict[str, Counted]:
    """Every key whose records count, with its identity, generation and limit."""
    return {
        key: (membership.owner[key], membership.generation(key), limit)
        for key, limit in membership.limits.items()
        if limit > 0
    }


def counted_changes(
    old: Mapping[str, Counted],
    new: Mapping[str, Counted],
    before: Membership | None = None,
    after: Membership | None = None,
) -> tuple[list[Uncount], list[Count]]:
    """The ranges that stop and start counting to go from old to new counted ranges, and why
    (from the memberships before and after, if given):

    - same identity and generation, higher limit: the new records start counting;
    - lower limit (a fork, a removal, a rotation): the records past it stop;
    - another identity or generation (an admission or rotation undone or redone): all stop,
      then all start again."""
    uncounts: list[Uncount] = []
    counts: list[Count] = []
    for key in sorted(old.keys() | new.keys()):
        o, n = old.get(key), new.get(key)
        if o == n:
            continue
        if o is not None and n is not None and o[:2] == n[:2]:
            if n[2] > o[2]:
                counts.append(Count(key, n[0], n[1], o[2], n[2], _why_counted(key, before, after)))
            else:
                uncounts.append(Uncount(key, n[2], o[2], _why_uncounted(key, after)))
            continue
        moved = o is not None and n is not None
        if o is not None:
            why = "recounted" if moved else _why_uncounted(key, after)
            uncounts.append(Uncount(key, 0, o[2], why))
        if n is not None:
            why = "recounted" if moved else _why_counted(key, before, after)
            counts.append(Count(key, n[0], n[1], 0, n[2], why))
    return uncounts, counts


def _why_counted(key: str, before: Membership | None, after: Membership | None) -> str:
    if before is None or after is None:
        return "grew"
    if before.identity_of(key) is None:
        return "admitted" if after.owner.get(key) == key else "rotated"
    if key in before.freezes and key not in after.freezes:
        return "thawed"
    return "grew"


def _why_uncounted(key: str, after: Membership | None) -> str:
    if after is None:
        return "closed"
    if after.identity_of(key) is None:
        return "unadmitted"
    return after.freezes.get(key, (0, "closed"))[1]


def membership_error(membership: Membership, author: str, seq: int, record_id: str | None = None
                     ) -> MembershipError:  # fmt: skip
    """Why author may not author at seq: not a member, not a member role, or frozen."""
    member = membership.identity_of(author)
    cap = membership.caps.get(author)
    if member is None:
        reason, expected = "author is not a member of this federation", "a member key"
    elif member.role != "member":
        reason, expected = f"author has role {member.role!r} and may not author records", "member"
    else:
        why = membership.freezes.get(author, (cap, "closed"))[1]
        reason, expected = f"author's log is closed after seq {cap} ({why})", f"seq <= {cap}"
    return MembershipError(
        reason, author=author, seq=seq, record_id=record_id, expected=expected, actual=seq
    )


@dataclass(slots=True)
class _Deferred:
    record: Record
    tag: object
    epoch: int


@dataclass(slots=True)
class _Batch:
    """What the ledger remembers until the batch settles."""

    deferred: list[_Deferred] = field(default_factory=list)
    # the records stored in this batch, which the reader may not hold yet: per author the
    # records that extended its head (consecutive seqs), and the forks' second records
    grown: dict[str, list[Record]] = field(default_factory=dict)
    forked: dict[tuple[str, int], Record] = field(default_factory=dict)
    held: dict[str, tuple[Record, object]] = field(default_factory=dict)  # id -> (record, tag)
    promote: set[str] = field(default_factory=set)
    caps: dict[str, int] = field(default_factory=dict)  # author -> highest seq it may author
    dirty: bool = False  # a vote, rotate or fork was stored since the last derivation
    derived: bool = False
    epoch: int = 0


class Ledger:
    """The frontier of a stored record set and the membership it implies (module docstring)."""

    def __init__(
        self,
        federation: Federation,
        reader: LogReader,
        *,
        heads: Mapping[str, Head] | None = None,
        fork_seqs: Mapping[str, int] | None = None,
        membership_records: Iterable[Record] = (),
        counted: Mapping[str, Counted] | None = None,
        held: Iterable[tuple[str, int, str]] = (),
        max_held_per_author: int = MAX_HELD_PER_AUTHOR,
        max_held_total: int = MAX_HELD_TOTAL,
    ) -> None:
        self.federation = federation
        self.reader = reader
        self.heads: dict[str, Head] = dict(heads or {})
        self.fork_seqs: dict[str, int] = dict(fork_seqs or {})
        self.membership_records: list[Record] = list(membership_records)
        self.membership = membership_of_stored(
            federation, self.heads, self.fork_seqs, self.membership_records
        )
        self.counted: dict[str, Counted] = dict(counted or {})
        self.max_held_per_author = max_held_per_author
        self.max_held_total = max_held_total
        self._held: dict[str, list[tuple[int, str]]] = {}  # author -> heap of (seq, id)
        self._held_ids: set[str] = set()
        for author, seq, record_id in held:
            self._held.setdefault(author, []).append((seq, record_id))
            self._held_ids.add(record_id)
        for heap in self._held.values():
            heapq.heapify(heap)
        self._settled = self.membership
        self._batch = _Batch()

    # -- what it holds -------------------------------------------------------------------

    def held_count(self, author: str | None = None) -> int:
        """Records held ahead of a gap: of author, or of every author."""
        if author is None:
            return len(self._held_ids)
        return len(self._held.get(author, ()))

    def check_authoring(
        self,
        author: str,
        body: Body,
        target: Target | None = None,
        announced: Callable[[], Announced] = dict,
    ) -> int:
        """Raise ``AuthoringError`` unless author may sign body as its next record now
        (``protocol.authoring``, with this ledger's membership and votes, and ``announced``
        reading each member's announced types); that seq."""
        self._refresh()
        head = self.heads.get(author)
        seq = 1 if head is None else head.seq + 1
        check_authoring(
            self.federation, self.membership, author, seq, body, target=target,
            votes=self.membership_records, announced=announced,
        )  # fmt: skip
        return seq

    # -- offering ------------------------------------------------------------------------

    def offer(self, record: Record, tag: object = None) -> list[Outcome]:
        """Judge one verified record of this federation: its outcome first, then those of
        the held records it released, in the order their effects must be persisted."""
        head = self.heads.get(record.author)
        if (
            head is not None
            and record.seq == head.seq + 1
            and record.prev == head.id
            and self._may_extend(record)
        ):
            outcomes = [self._extend(record, tag)]  # the common case: a log's next record
        else:
            outcomes = [self._decide(record, tag)]
        promote = self._batch.promote
        while promote:
            outcomes += self._release(promote.pop())
        return outcomes

    def _decide(self, record: Record, tag: object) -> Outcome:
        return _TRANSITIONS[self._position(record)](self, record, tag)

    def _position(self, record: Record) -> str:
        head = self.heads.get(record.author)
        head_seq = 0 if head is None else head.seq
        if record.seq <= head_seq:
            return "known seq"
        if not self._accepts(record):
            return "not allowed"
        return "next" if record.seq == head_seq + 1 else "ahead"

    def _accepts(self, record: Record) -> bool:
        self._refresh()
        return self.membership.accepts(record.author, record.seq)

    def _may_extend(self, record: Record) -> bool:
        """``_accepts`` for the common case, cached per author until the membership changes."""
        batch = self._batch
        if batch.dirty:
            self._refresh()
        caps = batch.caps
        cap = caps.get(record.author)
        if cap is None:
            m = self.membership
            if not m.accepts(record.author, 1):
                return False
            limit = m.caps.get(record.author)
            cap = caps[record.author] = MAX_SAFE_INTEGER if limit is None else limit
        return record.seq <= cap

    def _refresh(self) -> None:
        """Derive the membership again if a vote, rotate or fork was stored since."""
        batch = self._batch
        if batch.dirty:
            self.membership = membership_of_stored(
                self.federation, self.heads, self.fork_seqs, self.membership_records
            )
            batch.dirty = False
            batch.derived = True
            batch.epoch += 1
            batch.caps.clear()

    # -- the transitions -----------------------------------------------------------------

    def _known_seq(self, record: Record, tag: object) -> Outcome:
        """At or below its author's head: a duplicate, or a fork."""
        first, ids = self._stored_at(record.author, record.seq)
        if first is None:
            raise LocalProtocolError(
                f"the log reader holds no record of {record.author[:16]}… at seq {record.seq}, "
                "below the author's head"
            )
        if record.id in ids:
            return Outcome(record, Verdict.DUPLICATE, tag)
        if not self._accepts(record):
            return self._defer(record, tag)
        self.fork_seqs[record.author] = record.seq
        batch = self._batch
        batch.dirty = True
        batch.forked[(record.author, record.seq)] = record
        if record.body.KIND in MEMBERSHIP_KINDS:
            self._note_membership(record)
        proof = fork_evidence(first if isinstance(first, Record) else self.reader.stored_record(
            first), record)  # fmt: skip
        return Outcome(record, Verdict.FORK, tag, evidence=proof)

    def _defer(self, record: Record, tag: object) -> Outcome:
        self._batch.deferred.append(_Deferred(record, tag, self._batch.epoch))
        return Outcome(record, Verdict.DEFERRED, tag)

    def _append(self, record: Record, tag: object) -> Outcome:
        try:
            check_successor(self.heads.get(record.author), record)
        except ChainError as e:
            return Outcome(record, Verdict.REJECTED, tag, error=e)
        return self._extend(record, tag)

    def _extend(self, record: Record, tag: object) -> Outcome:
        """Record is its author's new head (the caller checked that it follows the head)."""
        author = record.author
        self.heads[author] = Head(author, record.seq, record.id)
        batch = self._batch
        grown = batch.grown.get(author)
        if grown is None:
            batch.grown[author] = [record]
        else:
            grown.append(record)
        if record.body.KIND in MEMBERSHIP_KINDS:
            self._note_membership(record)
        if author in self._held:
            batch.promote.add(author)
        return Outcome(record, Verdict.ACCEPTED, tag)

    def _note_membership(self, record: Record) -> None:
        """A stored vote or rotate: the membership must be derived again."""
        self.membership_records.append(record)
        self._batch.dirty = True

    def _hold(self, record: Record, tag: object) -> Outcome:
        """Beyond a gap in its author's log: held until the gap fills."""
        if record.id in self._held_ids:
            return Outcome(record, Verdict.PENDING, tag)
        held = len(self._held.get(record.author, ()))
        if held >= self.max_held_per_author or len(self._held_ids) >= self.max_held_total:
            return Outcome(record, Verdict.REJECTED, tag, error=self._holds_full(record, held))
        heapq.heappush(self._held.setdefault(record.author, []), (record.seq, record.id))
        self._held_ids.add(record.id)
        self._batch.held[record.id] = (record, tag)
        return Outcome(record, Verdict.PENDING, tag, held=True)

    def _holds_full(self, record: Record, held: int) -> SeqGapError:
        per_author = held >= self.max_held_per_author
        scope = "its author" if per_author else "this node"
        limit = self.max_held_per_author if per_author else self.max_held_total
        return SeqGapError(
            f"record is ahead of a gap in its author's log and the records held for {scope} "
            f"are at their limit ({limit}); send the missing records first",
            author=record.author,
            seq=record.seq,
            record_id=record.id,
            field="seq",
        )

    def _release(self, author: str) -> list[Outcome]:
        """Offer again the held records of author that its new head has reached."""
        heap = self._held.get(author)
        head = self.heads[author]
        ids: list[str] = []
        while heap and heap[0][0] <= head.seq + 1:
            ids.append(heapq.heappop(heap)[1])
        if not ids:
            return []
        if not heap:
            del self._held[author]
        self._held_ids.difference_update(ids)
        outcomes: list[Outcome] = []
        for record, tag in self._held_records(ids):
            outcomes.append(self._decide(record, tag)._replace(released=True))
        if author in self._held:
            self._batch.promote.add(author)
        return outcomes

    def _held_records(self, ids: Sequence[str]) -> list[tuple[Record, object]]:
        batch = self._batch.held
        found: dict[str, tuple[Record, object]] = {i: batch.pop(i) for i in ids if i in batch}
        missing = [i for i in ids if i not in found]
        if missing:
            found.update((r.id, (r, None)) for r in self.reader.held_records(missing))
        return [found[i] for i in ids]

    def _stored_at(self, author: str, seq: int) -> tuple[Record | str | None, Sequence[str]]:
        """The first record stored at (author, seq) (itself, or its id: the reader has it)
        and the ids of all stored there, this batch's records included."""
        ids = self.reader.stored_ids(author, seq)
        batch = self._batch
        grown = batch.grown.get(author)
        mine = [] if not grown or not grown[0].seq <= seq <= grown[-1].seq else [
            grown[seq - grown[0].seq]]  # fmt: skip
        forked = batch.forked.get((author, seq)) if batch.forked else None
        if forked is not None:
            mine.append(forked)
        first: Record | str | None = ids[0] if ids else None
        if not mine:
            return first, ids
        ids = list(ids)
        for record in mine:
            if record.id not in ids:
                ids.append(record.id)
                first = record if first is None else first
        return first, ids

    # -- settling ------------------------------------------------------------------------

    def settle(self, *, rederive: bool = False) -> Settlement:
        """End the batch: decide the deferred records, derive the final membership (always,
        with rederive) and answer what changed (module docstring)."""
        outcomes = self._retry_deferred()
        outcomes += self._reject_deferred()
        membership = self._final_membership(rederive)
        derived = self._batch.derived
        new = counted_of(membership)
        uncounts, counts = counted_changes(self.counted, new, self._settled, membership)
        changed: dict[str, Counted | None] = {
            key: new.get(key) for key in self.counted.keys() | new.keys()
            if self.counted.get(key) != new.get(key)
        }  # fmt: skip
        settlement = Settlement(
            outcomes=outcomes,
            counts=counts,
            uncounts=uncounts,
            counted=changed,
            membership=membership if derived else None,
            changes=membership_changes(self._settled, membership) if derived else [],
            dropped=self._drop_unreachable(membership) if derived else [],
        )
        self.membership = self._settled = membership
        self.counted = new
        self._batch = _Batch()
        return settlement

    def _retry_deferred(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        batch = self._batch
        while batch.deferred:
            self._refresh()
            retry = [d for d in batch.deferred if d.epoch < batch.epoch]
            if not retry:
                break
            batch.deferred = [d for d in batch.deferred if d.epoch >= batch.epoch]
            for d in sorted(retry, key=lambda d: (d.record.author, d.record.seq)):
                outcomes += self.offer(d.record, d.tag)
        return outcomes

    def _reject_deferred(self) -> list[Outcome]:
        outcomes = []
        for d in self._batch.deferred:
            r = d.record
            error = membership_error(self.membership, r.author, r.seq, r.id)
            outcomes.append(Outcome(r, Verdict.REJECTED, d.tag, error=error))
        self._batch.deferred = []
        return outcomes

    def _final_membership(self, rederive: bool) -> Membership:
        """The membership after the batch. Without new votes, rotations or forks nothing but
        the heads changed: each log that grew counts through its new head, up to its cap."""
        batch = self._batch
        if rederive or batch.dirty or batch.derived:
            batch.dirty = True
            self._refresh()
            return self.membership
        m = self.membership
        limits = dict(m.limits)
        for author in batch.grown:  # accepted, so a member key: it counts through its head
            cap = m.caps.get(author)
            seq = self.heads[author].seq
            limits[author] = seq if cap is None else min(seq, cap)
        return replace(m, limits=limits)

    def _drop_unreachable(self, membership: Membership) -> list[DropHeld]:
        """Held records that can never count now (frozen or non-member authors) go."""
        dropped = []
        for author in sorted(self._held):
            cap = membership.caps.get(author) if membership.accepts(author, 1) else 0
            if cap is None:
                continue
            heap = self._held[author]
            gone = {rid for seq, rid in heap if seq > cap}
            if not gone:
                continue
            kept = [(seq, rid) for seq, rid in heap if seq <= cap]
            heapq.heapify(kept)
            if kept:
                self._held[author] = kept
            else:
                del self._held[author]
            self._held_ids -= gone
            dropped.append(DropHeld(author, cap))
        return dropped


_TRANSITIONS: Final[dict[str, Callable[[Ledger, Record, object], Outcome]]] = {
    "known seq": Ledger._known_seq,
    "not allowed": Ledger._defer,
    "next": Ledger._append,
    "ahead": Ledger._hold,
}
