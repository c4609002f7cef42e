"""The audit's checks: pure functions from records (and what a source claims) to violations.

Every verdict here is ``protocol``'s: chains through ``check_successor``, forks through
``find_forks`` (as ``State.forks``) and ``verify_fork_evidence``, membership and the state
through ``fold_state``. A ``Violation`` names its code (``CODES``), what is wrong and the
record ids concerned; ``node.audit.engine`` runs the checks that apply to a source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson

from protocol import (
    ForkEvidence,
    Head,
    Membership,
    Record,
    RemoteProtocolError,
    check_successor,
    verify_fork_evidence,
)
from protocol.encoding import MAX_SAFE_INTEGER, JsonValue
from protocol.errors import ChainError, SeqGapError

CHECKS: Final = {
    "records": "every record's bytes are canonical and its signature verifies",
    "metadata": "stored author, seq, id and kind match the record bytes; no id stored twice",
    "chains": "every log runs from seq 1 without gaps and every prev links",
    "membership": "every author is a key of a member (auditors author nothing)",
    "forks": "fork evidence verifies on its own; every fork in the records is in the evidence",
    "heads": "the claimed frontier equals the logs",
    "state": "the materialised tables equal fold_state over the records",
    "pending": "records held ahead of a gap verify",
}
CODES: Final = {  # violation code -> the check that finds it
    "record_invalid": "records",
    "record_metadata": "metadata",
    "record_duplicate": "metadata",
    "chain_gap": "chains",
    "chain_prev": "chains",
    "author_not_member": "membership",
    "author_auditor": "membership",
    "fork_evidence_invalid": "forks",
    "fork_unrecorded": "forks",
    "head_mismatch": "heads",
    "frontier_digest": "heads",
    "state_mismatch": "state",
    "pending_invalid": "pending",
}


@dataclass(frozen=True, slots=True)
class ForkRow:
    """One piece of stored fork evidence (SPEC 6.4 JSON) and the author it is filed under."""

    author: str
    seq: int | None
    evidence: JsonValue


@dataclass(frozen=True, slots=True)
class Violation:
    """One finding: a code (see ``CODES``), what is wrong, and the records it concerns."""

    code: str
    detail: str
    author: str | None = None
    seq: int | None = None
    records: tuple[str, ...] = ()
    data: Mapping[str, JsonValue] = field(default_factory=dict)

    @property
    def check(self) -> str:
        return CODES[self.code]

    def sort_key(self) -> tuple[str, str, int, tuple[str, ...], str]:
        return (self.code, self.author or "", self.seq or 0, self.records, self.detail)

    def to_json(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {"check": self.check, "code": self.code}
        out |= {"detail": self.detail, "records": list(self.records)}
        if self.author is not None:
            out["author"] = self.author
        if self.seq is not None:
            out["seq"] = self.seq
        return out | dict(self.data)


def violation(
    code: str,
    detail: str,
    author: str | None = None,
    seq: int | None = None,
    records: Sequence[str] = (),
    **data: JsonValue,
) -> Violation:
    return Violation(code, detail, author, seq, tuple(records), data)


def jsonable(value: object) -> JsonValue:
    """value in the protocol's JSON space (a tampered table may hold floats or blobs)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int) and abs(value) <= MAX_SAFE_INTEGER:
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return f"<{type(value).__name__}> {value!r}"


# -- chains, membership, forks, heads --------------------------------------------------------

Logs = dict[str, dict[int, list[Record]]]  # author -> seq -> records (two or more: a fork)


def group_logs(records: Iterable[Record]) -> Logs:
    logs: Logs = {}
    for r in records:
        logs.setdefault(r.author, {}).setdefault(r.seq, []).append(r)
    return logs


def check_chains(
    logs: Logs, invalid_at: set[tuple[str, int]]
) -> tuple[list[Violation], dict[str, Head]]:
    """The chain violations of every log, and each log's top (its newest chain record)."""
    violations: list[Violation] = []
    tops: dict[str, Head] = {}
    for author in sorted(logs):
        head: Head | None = None
        by_seq = logs[author]
        for seq in sorted(by_seq):
            record = _chain_record(head, by_seq[seq], by_seq.get(seq + 1, ()))
            try:
                check_successor(head, record)
            except ChainError as e:
                violations.append(_chain_violation(e, record, head, invalid_at))
            head = Head(author, seq, record.id)
        if head is not None:
            tops[author] = head
    return violations, tops


def _chain_record(
    head: Head | None, candidates: list[Record], following: Sequence[Record]
) -> Record:
    """The record at this seq that the log runs through (another one is fork evidence)."""
    if len(candidates) == 1:
        return candidates[0]
    ordered = sorted(candidates, key=lambda r: r.id)
    linked = {r.prev for r in following}
    expected_prev = None if head is None else head.id
    return next(
        (r for r in ordered if r.id in linked),
        next((r for r in ordered if r.prev == expected_prev), ordered[0]),
    )


def _chain_violation(
    error: ChainError, record: Record, head: Head | None, invalid_at: set[tuple[str, int]]
) -> Violation:
    ids = [record.id] if head is None else [record.id, head.id]
    if not isinstance(error, SeqGapError):
        detail = f"prev {record.prev} is not the id of the record at seq {record.seq - 1}"
        return violation("chain_prev", detail, record.author, record.seq, ids)
    first = 1 if head is None else head.seq + 1
    span = f"{first}" if record.seq == first + 1 else f"{first}..{record.seq - 1}"
    bad = [str(s) for s in range(first, record.seq) if (record.author, s) in invalid_at]
    note = f" (the stored record at seq {', '.join(bad)} failed to verify)" if bad else ""
    detail = f"seq {span} missing before seq {record.seq}{note}"
    return violation("chain_gap", detail, record.author, first, ids, missing=record.seq - first)


def check_membership(logs: Logs, membership: Membership) -> tuple[list[Violation], int]:
    """Authors that are not member-role keys, and how many stored records do not count."""
    violations: list[Violation] = []
    uncounted = 0
    for author in sorted(logs):
        by_seq, limit = logs[author], membership.limits.get(author, 0)
        uncounted += sum(len(rs) for seq, rs in by_seq.items() if seq > limit)
        member = membership.identity_of(author)
        if member is not None and member.role == "member":
            continue
        records = sorted((r for rs in by_seq.values() for r in rs), key=_position)
        ids, first = [r.id for r in records], records[0].seq
        if member is None:
            detail = f"{len(ids)} record(s) by a key that is not a member of the federation"
            violations.append(violation("author_not_member", detail, author, first, ids))
        else:
            detail = f"{len(ids)} record(s) by {member.name!r}, whose role {member.role!r} "
            detail += "authors nothing"
            violations.append(violation("author_auditor", detail, author, first, ids))
    return violations, uncounted


def _position(record: Record) -> tuple[int, str]:
    return record.seq, record.id


def check_forks(
    rows: Sequence[ForkRow],
    found: Mapping[str, ForkEvidence],
    fed: str,
    fork_seqs: Mapping[str, int] | None,
) -> list[Violation]:
    """Stored evidence that does not verify on its own, and forks missing from the evidence.

    found: every author's first fork in the records (``find_forks``, as ``State.forks``)."""
    violations: list[Violation] = []
    held: dict[str, ForkEvidence] = {}
    for row in rows:
        try:
            proof = verify_fork_evidence(row.evidence, fed)
        except RemoteProtocolError as e:
            detail = f"{e.code}: {e}"
            violations.append(
                violation("fork_evidence_invalid", detail, row.author, row.seq, error=e.code)
            )
            continue
        if proof.author != row.author:
            detail = "evidence filed under another author"
            violations.append(
                violation("fork_evidence_invalid", detail, row.author, row.seq, _ids(proof))
            )
        held[proof.author] = proof
    for author, proof in sorted(found.items()):
        violations += _fork_recorded(held.get(author), proof, fork_seqs)
    for author in sorted(held.keys() - found.keys()):
        proof, detail = held[author], "evidence names a fork whose records are not stored"
        violations.append(
            violation("fork_evidence_invalid", detail, author, proof.seq, _ids(proof))
        )
    return violations


def _ids(proof: ForkEvidence) -> list[str]:
    return [proof.first.id, proof.second.id]


def _fork_recorded(
    held: ForkEvidence | None, proof: ForkEvidence, fork_seqs: Mapping[str, int] | None
) -> list[Violation]:
    author, seq = proof.author, proof.seq
    if held is None or (held.seq, _ids(held)) != (seq, _ids(proof)):
        what = "no fork evidence" if held is None else f"evidence for seq {held.seq} instead"
        detail = f"the records hold a fork at seq {seq}, the node holds {what}"
        return [
            violation("fork_unrecorded", detail, author, seq, _ids(proof), evidence=proof.to_json())
        ]
    if fork_seqs is not None and fork_seqs.get(author) != seq:
        detail = f"keys.fork_seq is {fork_seqs.get(author)}, the fork is at seq {seq}"
        return [violation("fork_unrecorded", detail, author, seq, _ids(proof))]
    return []


def check_heads(
    claimed: Mapping[str, Head], logs: Logs, tops: Mapping[str, Head]
) -> list[Violation]:
    """The claimed head of every author against its log (with a fork at the top either record
    there may be the head, depending on which arrived first)."""
    violations: list[Violation] = []
    for author in sorted(claimed.keys() | tops.keys()):
        head, top = claimed.get(author), tops.get(author)
        if head is None and top is not None:
            detail = f"the log runs to seq {top.seq} but no head is recorded"
            violations.append(violation("head_mismatch", detail, author, top.seq, [top.id]))
        elif top is None and head is not None:
            detail = f"the head names seq {head.seq} but no valid record of this author is stored"
            violations.append(violation("head_mismatch", detail, author, head.seq, [head.id]))
        elif head and top and (head.seq != top.seq or head.id not in _ids_at(logs, top)):
            detail = f"the head is seq {head.seq}, the log runs to seq {top.seq}"
            ids = [head.id, top.id]
            violations.append(
                violation("head_mismatch", detail, author, head.seq, ids, log_seq=top.seq)
            )
    return violations


def _ids_at(logs: Logs, head: Head) -> set[str]:
    return {r.id for r in logs[head.author][head.seq]}


def check_digest(digest: tuple[str, str] | None) -> list[Violation]:
    if digest is None or digest[0] == digest[1]:
        return []
    detail = f"the frontier digest {digest[0]} is not the digest of the heads and forks sent"
    return [violation("frontier_digest", detail, recomputed=digest[1])]


# -- the materialised state ------------------------------------------------------------------

_PART_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "members": ("identity",),
    "freezes": ("key",),
    "signals": ("id",),
    "opinions": ("signal", "member"),
    "endpoints": ("member",),
    "forks": ("author",),
    "counted": ("key",),
}
_PART_RECORDS: Final[dict[str, tuple[str, ...]]] = {
    "signals": ("id", "retracted_by"),
    "opinions": ("record",),
    "endpoints": ("record",),
}
Rows = list[dict[str, object]]


def check_state(node: Mapping[str, object], fold: Mapping[str, object]) -> list[Violation]:
    """Every row by which the node's materialised state differs from the fold's."""
    violations: list[Violation] = []
    for part, keys in _PART_KEYS.items():
        mine, want = node.get(part, []), fold.get(part)
        if want is not None and mine != want:
            violations += _diff_part(part, keys, _rows(mine), _rows(want))
    return violations


def _rows(value: object) -> Rows:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _diff_part(part: str, keys: tuple[str, ...], node: Rows, fold: Rows) -> list[Violation]:
    def key(row: Mapping[str, object]) -> str:
        return "/".join(str(row.get(k)) for k in keys)

    mine, want = {key(r): r for r in node}, {key(r): r for r in fold}
    return [
        _state_violation(part, k, mine.get(k), want.get(k))
        for k in sorted(mine.keys() | want.keys())
        if mine.get(k) != want.get(k)
    ]


def _state_violation(
    part: str, key: str, node: dict[str, object] | None, fold: dict[str, object] | None
) -> Violation:
    row = fold or node or {}
    ids = sorted(
        {str(r[f]) for r in (node, fold) if r for f in _PART_RECORDS.get(part, ()) if r.get(f)}
    )
    author, seq = (row.get("author"), row.get("seq")) if part == "signals" else (None, None)
    author = author if isinstance(author, str) else None
    seq = seq if isinstance(seq, int) else None
    if node is None:
        detail = f"{part} row {key} is derived by the fold but not materialised"
        return violation(
            "state_mismatch", detail, author, seq, ids, part=part, key=key, change="missing"
        )
    if fold is None:
        detail = f"{part} row {key} is materialised but not derived by the fold"
        return violation(
            "state_mismatch", detail, author, seq, ids, part=part, key=key, change="added"
        )
    fields = sorted(f for f in node.keys() | fold.keys() if node.get(f) != fold.get(f))
    diff = {f: {"node": jsonable(node.get(f)), "fold": jsonable(fold.get(f))} for f in fields}
    detail = f"{part} row {key} differs from the fold in {', '.join(fields)}"
    return violation(
        "state_mismatch",
        detail,
        author,
        seq,
        ids,
        part=part,
        key=key,
        change="changed",
        fields=jsonable(diff),
    )


def part_digests(state: Mapping[str, object]) -> dict[str, str]:
    """A digest of every part of a state summary: equal rows give equal digests, so the parts
    that differ are found without holding both states in one process."""
    return {
        part: hashlib.sha256(orjson.dumps(rows, option=orjson.OPT_SORT_KEYS)).hexdigest()
        for part, rows in sorted(state.items())
    }


def counted_json(membership: Membership) -> list[JsonValue]:
    """The ``counted`` frontier the fold implies: per key, identity, generation, limit."""
    return [
        {
            "key": key,
            "member": membership.owner[key],
            "gen": membership.generation(key),
            "through": limit,
        }
        for key, limit in sorted(membership.limits.items())
        if limit > 0
    ]
