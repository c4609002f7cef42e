"""The state of a federation as a pure function of a set of valid records (SPEC section 8).

``fold_state(records, federation, now_ms)`` is deterministic: the same set of records gives
the same ``State`` in any order and with any duplication. Its parts:

- chains: per author, the linked prefix (seqs 1..k present and linked); the first fork of an
  author freezes it at fork seq - 1 (both records are kept as ``ForkEvidence``);
- membership: ``derive_membership`` over prefixes, forks, votes and rotations;
- counted records: those of member keys with seq <= their limit; nothing else counts;
- signals: every counted signal, with status ``retracted`` (a counted ``retract`` by the same
  member identity names it), else ``expired`` (``expires <= now_ms``), else ``active``;
- opinions: per (signal, member identity) the latest counted opinion, where later means a later
  key generation, then a higher seq; tallies count the latest verdicts;
- endpoints: per member identity, its latest counted ``announce``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from protocol.bodies import AnnounceBody, OpinionBody, RetractBody, SignalBody
from protocol.chain import ForkEvidence, find_forks, linked_prefix
from protocol.encoding import JsonValue
from protocol.federation import Federation
from protocol.membership import Member, Membership, derive_membership
from protocol.records import Record

SIGNAL_STATUSES = ("active", "expired", "retracted")


@dataclass(frozen=True, slots=True)
class SignalState:
    id: str
    author: str
    member: str  # identity of the author
    seq: int
    ts: int
    type: str
    value: str
    labels: tuple[str, ...]
    note: str | None
    expires: int | None
    status: str
    retracted_by: str | None  # id of the retract record

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "id": self.id,
            "author": self.author,
            "member": self.member,
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "value": self.value,
            "labels": list(self.labels),
            "note": self.note,
            "expires": self.expires,
            "status": self.status,
            "retracted_by": self.retracted_by,
        }


@dataclass(frozen=True, slots=True)
class OpinionState:
    signal: str
    member: str  # identity of the opinion's author
    verdict: str
    labels: tuple[str, ...]
    record: str  # id of the opinion record

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "signal": self.signal,
            "member": self.member,
            "verdict": self.verdict,
            "labels": list(self.labels),
            "record": self.record,
        }


@dataclass(frozen=True, slots=True)
class Endpoint:
    member: str
    name: str
    urls: tuple[str, ...]
    tls: str | None
    record: str

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "member": self.member,
            "name": self.name,
            "urls": list(self.urls),
            "tls": self.tls,
            "record": self.record,
        }


@dataclass(frozen=True, slots=True)
class State:
    """Everything a node materialises, derived from the record set alone."""

    membership: Membership
    signals: Mapping[str, SignalState]
    opinions: Mapping[tuple[str, str], OpinionState]  # (signal id, member identity)
    endpoints: Mapping[str, Endpoint]  # by member identity
    forks: Mapping[str, ForkEvidence]  # by author key

    @property
    def members(self) -> Mapping[str, Member]:
        return self.membership.members

    def tallies(self) -> dict[str, dict[str, int]]:
        """Per signal id: how many members' latest opinion is confirm, dispute, seen."""
        out: dict[str, dict[str, int]] = {}
        for (signal, _), opinion in self.opinions.items():
            counts = out.setdefault(signal, {"confirm": 0, "dispute": 0, "seen": 0})
            counts[opinion.verdict] += 1
        return out

    def active_signals(self) -> list[SignalState]:
        return [s for s in self.signals.values() if s.active]

    def to_json(self) -> dict[str, JsonValue]:
        """A canonical summary; equal states give equal JSON (used to compare node and fold)."""
        m = self.membership
        return {
            "members": [_member_json(m.members[i]) for i in sorted(m.members)],
            "freezes": [
                {"key": k, "seq": seq, "reason": reason} for k, (seq, reason) in m.freezes.items()
            ],
            "signals": [self.signals[i].to_json() for i in sorted(self.signals)],
            "opinions": [self.opinions[k].to_json() for k in sorted(self.opinions)],
            "endpoints": [self.endpoints[i].to_json() for i in sorted(self.endpoints)],
            "forks": [self.forks[a].to_json() for a in sorted(self.forks)],
        }


def _member_json(member: Member) -> dict[str, JsonValue]:
    return {
        "identity": member.identity,
        "name": member.name,
        "role": member.role,
        "keys": list(member.keys),
        "admitted_by": list(member.admitted_by),
        "removed": member.removed,
    }


def fold_state(records: Iterable[Record], federation: Federation, now_ms: int) -> State:
    """The deterministic state of a set of valid records of this federation at time now_ms."""
    unique: dict[str, Record] = {}
    for r in records:
        if r.fed == federation.id:
            # One copy per id. Copies can differ in their signature (a signer may choose any
            # nonce): keep the smallest, so fork evidence does not depend on arrival order.
            kept = unique.setdefault(r.id, r)
            if r.sig < kept.sig:
                unique[r.id] = r
    by_author: dict[str, dict[int, list[Record]]] = {}
    for record in unique.values():
        by_author.setdefault(record.author, {}).setdefault(record.seq, []).append(record)
    forks = find_forks(unique.values())
    membership = derive_membership(
        federation,
        prefixes={author: linked_prefix(logs) for author, logs in by_author.items()},
        membership_records=(r for r in unique.values() if r.kind in ("vote", "rotate")),
        fork_freezes={author: proof.seq - 1 for author, proof in forks.items()},
    )
    counted = sorted(
        (r for r in unique.values() if membership.counts(r)),
        key=lambda r: (membership.generation(r.author), r.seq, r.author),
    )
    return State(
        membership=membership,
        signals=_signals(counted, membership, now_ms),
        opinions=_opinions(counted, membership),
        endpoints=_endpoints(counted, membership),
        forks=forks,
    )


def signal_status(expires: int | None, retracted: bool, now_ms: int) -> str:
    if retracted:
        return "retracted"
    if expires is not None and expires <= now_ms:
        return "expired"
    return "active"


def _signals(counted: list[Record], membership: Membership, now_ms: int) -> dict[str, SignalState]:
    retractions: dict[tuple[str, str], str] = {}  # (identity, signal id) -> first retract id
    for record in counted:
        if isinstance(record.body, RetractBody):
            key = (membership.owner[record.author], record.body.signal)
            retractions.setdefault(key, record.id)
    signals: dict[str, SignalState] = {}
    for record in counted:
        body = record.body
        if not isinstance(body, SignalBody):
            continue
        member = membership.owner[record.author]
        retracted_by = retractions.get((member, record.id))
        signals[record.id] = SignalState(
            id=record.id,
            author=record.author,
            member=member,
            seq=record.seq,
            ts=record.ts,
            type=body.type,
            value=body.value,
            labels=body.labels,
            note=body.note,
            expires=body.expires,
            status=signal_status(body.expires, retracted_by is not None, now_ms),
            retracted_by=retracted_by,
        )
    return signals


def _opinions(counted: list[Record], membership: Membership) -> dict[tuple[str, str], OpinionState]:
    latest: dict[tuple[str, str], OpinionState] = {}
    for record in counted:  # in (generation, seq) order: later opinions replace earlier ones
        body = record.body
        if isinstance(body, OpinionBody):
            member = membership.owner[record.author]
            latest[(body.signal, member)] = OpinionState(
                body.signal, member, body.verdict, body.labels, record.id
            )
    return latest


def _endpoints(counted: list[Record], membership: Membership) -> dict[str, Endpoint]:
    latest: dict[str, Endpoint] = {}
    for record in counted:
        body = record.body
        if isinstance(body, AnnounceBody):
            member = membership.owner[record.author]
            latest[member] = Endpoint(member, body.name, body.urls, body.tls, record.id)
    return latest
