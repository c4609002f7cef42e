"""A simulated node's record store: the real acceptance machine over records kept in memory.

``SimStore`` does what ``node.store`` does, without SQLite: every line it is given is verified
with ``protocol.records.decode_record`` (a real Ed25519 check), judged by
``protocol.ledger.Ledger.offer`` and ``settle``, and stored as the outcomes say (accepted and
fork records, held records, fork evidence -- one per author, the newest found, as the
``forks`` table keeps it). Each ``merge`` is one atomic step of simulated time: it is either
committed whole or, if the node crashes before the step runs, never happened. ``reopen``
rebuilds the ledger from the stored records, as a node restarting on its database does
(``node.store.merge.load_state``); nothing else survives a crash.

The pure ledger instead of SQLite: a merge costs tens of microseconds here instead of
milliseconds, which is what lets thousands of simulated nodes run on one core.

Verification is a pure function of the bytes, so its results are shared between the nodes
of a process (``VERIFIED``); the invariant checker verifies every stored record again
without that cache.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from protocol import Federation, ForkEvidence, Head, Record, SigningKey, fold_state, sign_record
from protocol.bodies import Body
from protocol.encoding import encode_canonical
from protocol.errors import RemoteProtocolError
from protocol.frontier_delta import FrontierHistory
from protocol.ledger import Ledger, Outcome, Verdict, _Batch, counted_of, membership_of_stored
from protocol.membership import Membership, MembershipChange
from protocol.records import decode_record
from protocol.sync import Frontier, capped_heads, is_misbehaviour

VERIFIED: dict[bytes, Record | dict[str, object]] = {}  # bytes -> record, or error JSON
VERIFY_CACHE_LIMIT = 2_000_000


def verify_line(line: bytes, fed: str) -> Record | dict[str, object]:
    """The record these bytes are, or the error JSON (SPEC 4.3) that rejects them."""
    found = VERIFIED.get(line)
    if found is not None:
        return found
    try:
        result: Record | dict[str, object] = decode_record(line, fed)
    except RemoteProtocolError as e:
        result = e.to_json()
    if len(VERIFIED) < VERIFY_CACHE_LIMIT:
        VERIFIED[line] = result
    return result


@dataclass(slots=True)
class MergeReport:
    """What one merge did: each line's status (accepted, duplicate, pending, rejected), the
    records it stored as new heads or fork evidence, the forks it found, and the membership
    if it changed."""

    statuses: list[str]
    ids: list[str | None]
    errors: list[dict[str, object] | None]
    accepted: list[Record] = field(default_factory=list)
    forks: list[ForkEvidence] = field(default_factory=list)
    membership: Membership | None = None
    changes: list[MembershipChange] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("accepted", "duplicate", "pending", "rejected"), 0)
        for status in self.statuses:
            counts[status] += 1
        return counts

    @property
    def misbehaved(self) -> bool:
        return any(is_misbehaviour(e) for e in self.errors)

    def answer(self) -> bytes:
        """The ``POST /v1/records`` answer body (SPEC 10.2)."""
        outcomes = [
            {"index": i, "status": s, "id": self.ids[i], "error": self.errors[i]}
            for i, s in enumerate(self.statuses)
            if s != "accepted"
        ]
        return orjson.dumps({"counts": self.counts(), "outcomes": outcomes})


_STATUS = {
    Verdict.ACCEPTED: "accepted",
    Verdict.FORK: "accepted",
    Verdict.DUPLICATE: "duplicate",
    Verdict.PENDING: "pending",
    Verdict.REJECTED: "rejected",
}


class SimStore:
    """One node's stored records, held records and fork evidence (module docstring)."""

    def __init__(
        self,
        federation: Federation,
        preload: Sequence[Record] = (),
        *,
        frontier_forks: bool = True,
        cap_frontier: bool = False,
    ) -> None:
        self.federation = federation
        self.frontier_forks = frontier_forks  # False: a broken rule (forks left out of frontiers)
        self.cap_frontier = cap_frontier  # the proposed rule: frozen authors' heads at their cap
        self.history: FrontierHistory | None = None  # frontier deltas: the recent frontiers
        self.by_id: dict[str, Record] = {}
        self.at: dict[tuple[str, int], list[str]] = {}  # (author, seq) -> ids, first first
        self.held: dict[str, Record] = {}
        self.forks: dict[str, ForkEvidence] = {}  # by author: the newest found
        self.fork_seqs: dict[str, int] = {}
        self.membership_records: list[Record] = []
        for record in preload:  # records every node holds at the start (trusted)
            self._store(record)
        heads = {r.author: Head(r.author, r.seq, r.id) for r in preload}
        self.ledger = self._ledger(heads)
        self._frontier: Frontier | None = None
        self._digest = ""

    def clone(self, *, frontier_forks: bool = True, cap_frontier: bool = False) -> SimStore:
        """Another store holding the same records, as if built the same way: the membership
        (immutable) is shared instead of derived again, so a thousand nodes start fast. Only
        for a store with nothing held and no batch under way (a freshly built one)."""
        if self.held or self.ledger.held_count():
            raise ValueError("clone a store with nothing held")
        other = copy.copy(self)
        other.by_id = dict(self.by_id)
        other.at = {k: list(v) for k, v in self.at.items()}
        other.held, other.forks = {}, dict(self.forks)
        other.fork_seqs = dict(self.fork_seqs)
        other.membership_records = list(self.membership_records)
        other.frontier_forks, other.cap_frontier = frontier_forks, cap_frontier
        other.history = None
        ledger = other.ledger = copy.copy(self.ledger)
        ledger.reader = other
        ledger.heads = dict(self.ledger.heads)
        ledger.fork_seqs = other.fork_seqs
        ledger.membership_records = other.membership_records
        ledger.counted = dict(self.ledger.counted)
        ledger._held, ledger._held_ids, ledger._batch = {}, set(), _Batch()
        other._frontier = None
        return other

    # -- the ledger's reader -------------------------------------------------------------

    def stored_ids(self, author: str, seq: int) -> Sequence[str]:
        return self.at.get((author, seq), ())

    def stored_record(self, record_id: str) -> Record:
        return self.by_id[record_id]

    def held_records(self, ids: Sequence[str]) -> Sequence[Record]:
        return [self.held[i] for i in ids]

    # -- restart -------------------------------------------------------------------------

    def _ledger(self, heads: dict[str, Head]) -> Ledger:
        membership = membership_of_stored(
            self.federation, heads, self.fork_seqs, self.membership_records
        )
        return Ledger(
            self.federation,
            self,
            heads=heads,
            fork_seqs=self.fork_seqs,
            membership_records=self.membership_records,
            counted=counted_of(membership),
            held=[(r.author, r.seq, r.id) for r in self.held.values()],
        )

    def reopen(self) -> None:
        """A restart: a new ledger from what is stored (the heads, fork seqs, vote and rotate
        records and held records a node reads from its database at start)."""
        self.ledger = self._ledger(dict(self.ledger.heads))
        self._frontier = None
        self.keep_recent(self.history.keep if self.history is not None else 0)  # memory only

    def keep_recent(self, count: int) -> None:
        """Remember the last count frontiers, for frontier deltas (0: none, no deltas)."""
        self.history = FrontierHistory(count) if count else None

    # -- merging -------------------------------------------------------------------------

    def merge(self, lines: Sequence[bytes]) -> MergeReport:
        """Verify, judge and store a batch, atomically."""
        fed = self.federation.id
        report = MergeReport(["rejected"] * len(lines), [None] * len(lines), [None] * len(lines))
        ledger = self.ledger
        for index, line in enumerate(lines):
            checked = verify_line(line, fed)
            if isinstance(checked, dict):
                report.errors[index] = checked
                continue
            report.ids[index] = checked.id
            self._apply(ledger.offer(checked, index), report)
        settlement = ledger.settle()
        self._apply(settlement.outcomes, report)
        for drop in settlement.dropped:
            for rid, held in list(self.held.items()):
                if held.author == drop.author and held.seq > drop.above:
                    del self.held[rid]
        if settlement.derived:
            self._frontier = None
            report.membership = settlement.membership
            report.changes = list(settlement.changes)
        if report.accepted or report.forks:
            self._frontier = None
        return report

    def _apply(self, outcomes: Sequence[Outcome], report: MergeReport) -> None:
        for o in outcomes:
            record = o.record
            if o.released:
                self.held.pop(record.id, None)
            verdict = o.verdict
            if verdict is Verdict.DEFERRED:
                continue
            if verdict in (Verdict.ACCEPTED, Verdict.FORK):
                self._store(record)
                report.accepted.append(record)
            elif o.held:
                self.held[record.id] = record
            if o.evidence is not None:
                self.forks[record.author] = o.evidence
                self.fork_seqs[record.author] = o.evidence.seq
                report.forks.append(o.evidence)
            if isinstance(o.tag, int):
                report.statuses[o.tag] = _STATUS[verdict]
                report.errors[o.tag] = None if o.error is None else o.error.to_json()

    def _store(self, record: Record) -> None:
        if record.id in self.by_id:
            return
        self.by_id[record.id] = record
        self.at.setdefault((record.author, record.seq), []).append(record.id)
        if record.kind in ("vote", "rotate"):
            self.membership_records.append(record)

    def author(self, key: SigningKey, body: Body, ts_ms: int) -> MergeReport:
        """Sign body as key's next record (if the authoring rules allow it) and store it."""
        seq = self.ledger.check_authoring(key.public, body)
        head = self.ledger.heads.get(key.public)
        prev = None if head is None else head.id
        record = sign_record(key, fed=self.federation.id, seq=seq, prev=prev, ts=ts_ms, body=body)
        VERIFIED[record.canonical] = record  # signed here: it verifies (checked again at the end)
        report = self.merge([record.canonical])
        if report.statuses != ["accepted"]:
            raise AssertionError(f"own record not accepted: {report.statuses} {report.errors}")
        return report

    # -- reading -------------------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        return self.ledger.membership

    def heads(self) -> dict[str, Head]:
        return self.ledger.heads

    def frontier(self) -> Frontier:
        if self._frontier is None:
            forks = tuple(self.forks[a].to_json() for a in sorted(self.forks))
            forks = forks if self.frontier_forks else ()
            heads = self.capped_heads() if self.cap_frontier else dict(self.ledger.heads)
            frontier = Frontier(heads, forks)
            self._frontier = frontier
            self._digest = ""
        return self._frontier

    def changes_since(self, digest: str) -> dict[str, Head | None] | None:
        return None if self.history is None else self.history.changes_since(digest)

    def recent_digests(self) -> list[str] | None:
        """What this node sends in Hm-Recent (None: it does not ask for deltas)."""
        return None if self.history is None else self.history.recent()

    def capped_heads(self) -> dict[str, Head]:
        """The heads this node reports and plans with (SPEC 10.2, ``protocol.sync.capped_heads``):
        each frozen author's at its cap, so nodes that stored different records past a freeze
        (before they learned of it) agree."""
        return capped_heads(
            self.ledger.heads, self.ledger.membership.caps, lambda a, cap: self.at[(a, cap)][0]
        )

    def digest(self) -> str:
        """The frontier digest (SPEC 10.2), computed when first asked for: when the node
        reports its frontier or asks with it, so the frontier history (frontier deltas)
        observes it then, as ``FrontierHistory`` asks."""
        frontier = self.frontier()
        if not self._digest:
            history = self.history
            self._digest = frontier.digest() if history is None else history.observe(frontier)
        return self._digest

    def log(self, author: str, after: int, limit: int) -> list[bytes]:
        """author's records with seq > after, in seq order (a fork's two side by side)."""
        head = self.ledger.heads.get(author)
        out: list[bytes] = []
        if head is None:
            return out
        for seq in range(after + 1, head.seq + 1):
            for rid in self.at.get((author, seq), ()):
                out.append(self.by_id[rid].canonical)
                if len(out) >= limit:
                    return out
        return out

    def records(self) -> list[Record]:
        return list(self.by_id.values())

    def fold_digest(self, now_ms: int) -> str:
        """SHA-256 of the fold's state summary (SPEC 8.7), once per distinct record set."""
        ids = frozenset(self.by_id)
        key = (self.federation.id, ids, now_ms)
        digest = _FOLDS.get(key)
        if digest is None:
            state = fold_state(self.by_id.values(), self.federation, now_ms)
            digest = hashlib.sha256(encode_canonical(state.to_json())).hexdigest()
            if len(_FOLDS) >= 16:  # one run at a time: a few sets each
                _FOLDS.clear()
            _FOLDS[key] = digest
        return digest


_FOLDS: dict[tuple[str, frozenset[str], int], str] = {}
