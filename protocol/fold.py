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
  key generation, then a higher seq, unless the signal is the identity's own; tallies count
  the latest verdicts;
- endpoints: per member identity, its latest counted ``announce`` (with the signal types its
  node announced, from which ``protocol.type_gate`` derives the enabled types).

Each rule is one small function below (``signal_status``, ``is_active``,
``retraction_applies``, ``first_retraction``, ``latest``, ``opinion_counts``, ``tally``); the
node's materialised state (``node.store.materialise``, ``node.store.read``) decides with the same
functions, over rows instead of records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from protocol.bodies import AnnounceBody, OpinionBody, RetractBody, SignalBody
from protocol.chain import ForkEvidence, find_forks, linked_prefix
from protocol.encoding import JsonValue
from protocol.federation import Federation
from protocol.membership import Member, Membership, derive_membership
from protocol.records import Record

SIGNAL_STATUSES = ("active", "expired", "retracted")
VERDICTS = ("confirm", "dispute", "seen")


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
    types: tuple[str, ...] = ()  # the signal types its node announced (SPEC 5.2, 11)

    def to_json(self) -> dict[str, JsonValue]:
        """As in the state summary (8.7): ``types`` only when announced, so a state without
        any keeps the summary it had before the type gate."""
        out: dict[str, JsonValue] = {
            "member": self.member,
            "name": self.name,
            "urls": list(self.urls),
            "tls": self.tls,
            "record": self.record,
        }
        if self.types:
            out["types"] = list(self.types)
        return out


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
        """Per signal id: how many members' counted latest opinion is confirm, dispute, seen."""
        verdicts: dict[str, list[str]] = {}
        for (signal, _), opinion in self.opinions.items():
            verdicts.setdefault(signal, []).append(opinion.verdict)
        return {signal: tally(v) for signal, v in verdicts.items()}

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
    signals = _signals(counted, membership, now_ms)
    return State(
        membership=membership,
        signals=signals,
        opinions=_opinions(counted, membership, signals),
        endpoints=_endpoints(counted, membership),
        forks=forks,
    )


# -- the rules: one small function each, used by fold_state and by the node's materialised
# -- state (node.materialise, node.store_read), so that the two cannot decide differently.

T = TypeVar("T")
Position = tuple[int, int]  # (key generation, seq): a place in an identity's history (8.1)


def signal_status(expires: int | None, retracted: bool, now_ms: int) -> str:
    """A counted signal's status at now_ms (SPEC 8.2)."""
    if retracted:
        return "retracted"
    if expires is not None and expires <= now_ms:
        return "expired"
    return "active"


def is_active(expires: int | None, retracted: bool, now_ms: int) -> bool:
    """Is a counted signal active at now_ms (SPEC 8.2)?"""
    return not retracted and (expires is None or expires > now_ms)


def retraction_applies(signal_member: object, retract_member: object) -> bool:
    """Does a counted retract by retract_member withdraw a signal of signal_member? Only the
    identity that contributed a signal retracts it, under any of its keys (SPEC 8.2)."""
    return signal_member == retract_member


def first_retraction(candidates: Iterable[tuple[int, int, T]]) -> T | None:
    """Of an identity's counted retractions of one signal, as (generation, seq, id): the one
    that retracts it -- the first in the identity's history (SPEC 8.2)."""
    return min(candidates, key=_position, default=(0, 0, None))[2]


def latest(candidates: Iterable[tuple[int, int, T]]) -> T | None:
    """Of an identity's counted opinions on one signal (or its announcements), as
    (generation, seq, value): the one that counts -- the latest in its history (8.3, 8.4)."""
    return max(candidates, key=_position, default=(0, 0, None))[2]


def _position(candidate: tuple[int, int, object]) -> Position:
    return candidate[0], candidate[1]


def opinion_counts(opinion_member: object, signal_member: object | None) -> bool:
    """Does an identity's opinion count, given the identity of the counted signal it names
    (None: no such counted signal)? A member's opinion on its own signal does not (8.3)."""
    return opinion_member != signal_member


def tally(verdicts: Iterable[str]) -> dict[str, int]:
    """How many of the counted latest opinions on a signal have each verdict (8.3)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for verdict in verdicts:
        counts[verdict] += 1
    return counts


def _signals(counted: list[Record], membership: Membership, now_ms: int) -> dict[str, SignalState]:
    # signal id -> (retracting identity, generation, seq, retract id) of each counted retract
    retractions: dict[str, list[tuple[str, int, int, str]]] = {}
    for record in counted:
        if isinstance(record.body, RetractBody):
            who, generation = membership.owner[record.author], membership.generation(record.author)
            retractions.setdefault(record.body.signal, []).append(
                (who, generation, record.seq, record.id)
            )
    signals: dict[str, SignalState] = {}
    for record in counted:
        body = record.body
        if not isinstance(body, SignalBody):
            continue
        member = membership.owner[record.author]
        retracted_by = first_retraction(
            (generation, seq, rid)
            for who, generation, seq, rid in retractions.get(record.id, ())
            if retraction_applies(member, who)
        )
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


def _opinions(
    counted: list[Record], membership: Membership, signals: Mapping[str, SignalState]
) -> dict[tuple[str, str], OpinionState]:
    given: dict[tuple[str, str], list[tuple[int, int, OpinionState]]] = {}
    for record in counted:
        body = record.body
        if isinstance(body, OpinionBody):
            member = membership.owner[record.author]
            opinion = OpinionState(body.signal, member, body.verdict, body.labels, record.id)
            position = (membership.generation(record.author), record.seq)
            given.setdefault((body.signal, member), []).append((*position, opinion))
    latest_given = {key: latest(candidates) for key, candidates in given.items()}
    return {
        (signal, member): opinion
        for (signal, member), opinion in latest_given.items()
        if opinion is not None
        and opinion_counts(member, getattr(signals.get(signal), "member", None))
    }


def _endpoints(counted: list[Record], membership: Membership) -> dict[str, Endpoint]:
    announced: dict[str, list[tuple[int, int, Endpoint]]] = {}
    for record in counted:
        body = record.body
        if isinstance(body, AnnounceBody):
            member = membership.owner[record.author]
            endpoint = Endpoint(member, body.name, body.urls, body.tls, record.id, body.types)
            position = (membership.generation(record.author), record.seq)
            announced.setdefault(member, []).append((*position, endpoint))
    chosen = {member: latest(candidates) for member, candidates in announced.items()}
    return {member: endpoint for member, endpoint in chosen.items() if endpoint is not None}
