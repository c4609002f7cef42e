"""Per-author hash chains and fork evidence (SPEC section 6).

Each author's records form an append-only chain: seq starts at 1 and grows by exactly 1, and
``prev`` is the id of the author's record at seq - 1. Two valid records of one author with the
same seq and different ids are a fork: ``ForkEvidence`` holds both and can be checked by anyone
who knows only the federation id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from protocol.encoding import JsonValue
from protocol.errors import ForkEvidenceError, PrevMismatchError, SeqGapError
from protocol.records import Record, decode_record


@dataclass(frozen=True, slots=True)
class Head:
    """The newest record of an author's log that a node holds."""

    author: str
    seq: int
    id: str

    def to_json(self) -> dict[str, JsonValue]:
        return {"author": self.author, "seq": self.seq, "id": self.id}


def check_successor(head: Head | None, record: Record) -> None:
    """Raise unless record is the next record of the log whose newest record is head."""
    expected_seq = 1 if head is None else head.seq + 1
    if record.seq != expected_seq:
        raise SeqGapError(
            "record does not follow the author's newest record",
            author=record.author,
            seq=record.seq,
            record_id=record.id,
            field="seq",
            expected=expected_seq,
            actual=record.seq,
        )
    expected_prev = None if head is None else head.id
    if record.prev != expected_prev:
        raise PrevMismatchError(
            "prev is not the id of the author's previous record",
            author=record.author,
            seq=record.seq,
            record_id=record.id,
            field="prev",
            expected=expected_prev,
            actual=record.prev,
        )


def validate_chain(records: Sequence[Record]) -> Head | None:
    """Check that records (one author, in seq order from 1) form a chain; return its head."""
    head: Head | None = None
    for record in records:
        if head is not None and record.author != head.author:
            raise SeqGapError("records of two authors in one chain", author=record.author)
        check_successor(head, record)
        head = Head(record.author, record.seq, record.id)
    return head


def linked_prefix(by_seq: Mapping[int, Sequence[Record]]) -> int:
    """The highest k such that seqs 1..k each hold exactly one record and link up (0 if none)."""
    k = 0
    prev: str | None = None
    while True:
        candidates = by_seq.get(k + 1, ())
        if len(candidates) != 1 or candidates[0].prev != prev:
            return k
        prev = candidates[0].id
        k += 1


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    """Two valid records by one author at one seq with different ids: proof of equivocation."""

    first: Record
    second: Record

    def __post_init__(self) -> None:
        a, b = self.first, self.second
        if a.author != b.author or a.seq != b.seq or a.fed != b.fed:
            raise ForkEvidenceError(
                "fork evidence needs two records of one author at one seq",
                author=a.author,
                seq=a.seq,
                actual=f"{b.author[:16]}…/{b.seq}",
            )
        if a.id >= b.id:
            raise ForkEvidenceError(
                "fork evidence needs two different records, the smaller id first",
                author=a.author,
                seq=a.seq,
                record_id=a.id,
            )

    @property
    def author(self) -> str:
        return self.first.author

    @property
    def seq(self) -> int:
        return self.first.seq

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "author": self.author,
            "seq": self.seq,
            "records": [self.first.text, self.second.text],
        }


def fork_evidence(a: Record, b: Record) -> ForkEvidence:
    """Evidence from two records in either order."""
    return ForkEvidence(a, b) if a.id < b.id else ForkEvidence(b, a)


def verify_fork_evidence(evidence: JsonValue, fed: str) -> ForkEvidence:
    """Check evidence received from anywhere: both records verify and they conflict."""
    if not isinstance(evidence, dict) or set(evidence) != {"author", "seq", "records"}:
        raise ForkEvidenceError("fork evidence is an object with author, seq and records")
    texts = evidence["records"]
    if not isinstance(texts, list) or len(texts) != 2 or not all(isinstance(t, str) for t in texts):
        raise ForkEvidenceError("fork evidence holds exactly two record texts", field="records")
    # surrogatepass: a lone surrogate (json.loads accepts "\ud800") becomes invalid UTF-8 bytes
    a, b = (decode_record(str(t).encode("utf-8", "surrogatepass"), fed) for t in texts)
    proof = fork_evidence(a, b)
    claimed = (evidence["author"], evidence["seq"])
    # type(...) is int: JSON true would otherwise stand for seq 1 (True == 1)
    if type(evidence["seq"]) is not int or (proof.author, proof.seq) != claimed:
        raise ForkEvidenceError(
            "fork evidence names another author or seq",
            expected=f"{proof.author}/{proof.seq}",
            actual=f"{evidence['author']}/{evidence['seq']}",
        )
    return proof


def find_forks(records: Iterable[Record]) -> dict[str, ForkEvidence]:
    """The first fork (lowest seq, then smallest ids) of every author that has one."""
    at: dict[tuple[str, int], dict[str, Record]] = {}
    for record in records:
        at.setdefault((record.author, record.seq), {})[record.id] = record
    forks: dict[str, ForkEvidence] = {}
    for (author, _), group in sorted(at.items()):
        if len(group) > 1 and author not in forks:
            first, second = sorted(group)[:2]
            forks[author] = ForkEvidence(group[first], group[second])
    return forks
