"""Who is a member, derived from genesis and the records alone (SPEC section 7).

Inputs: the federation (founders, threshold), for every key the highest seq up to which its
log is linked and unforked (``limits``), and the ``vote`` and ``rotate`` records. Output: the
member identities with their keys, and for every key the seq through which its records count.

The computation is a fixpoint in rounds and depends only on those inputs, never on the order
in which records arrived:

1. A key's records count through ``limit = min(linked prefix, fork freeze, removal freeze,
   rotation end)``; the rotation end of a key is the seq of its first counted ``rotate``.
2. With the limits fixed, admissions grow to a fixpoint: starting from the founders, a key is
   admitted when ``threshold`` distinct member identities (role ``member``) have a counted
   ``vote admit`` for it with the same name and role; a counted ``rotate`` adds its new key to
   the rotating identity. Admitted identities' votes then count too.
3. Removals: once ``threshold`` distinct member identities have a counted ``vote remove`` for a
   key, that key is frozen at the smallest ``after`` among those votes. Freezes only ever
   lower a limit; if any changed, go back to 1. Otherwise the result is final.

Auditor identities count for nothing here: their records never count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from protocol.bodies import RotateBody, VoteBody
from protocol.federation import Federation
from protocol.records import Record


@dataclass(frozen=True, slots=True)
class Member:
    """A member identity: its first key names it; rotation appends keys."""

    identity: str
    name: str
    role: str
    keys: tuple[str, ...]
    admitted_by: tuple[str, ...] = ()  # voter identities; empty for founders
    removed: bool = False

    @property
    def current_key(self) -> str:
        return self.keys[-1]

    @property
    def is_founder(self) -> bool:
        return not self.admitted_by


@dataclass(frozen=True, slots=True)
class Membership:
    """The derived member list and, for every member key, the seq its records count through."""

    members: Mapping[str, Member]  # by identity
    owner: Mapping[str, str]  # key -> identity
    limits: Mapping[str, int]  # key -> records with seq <= limit count
    caps: Mapping[str, int | None]  # key -> seq past which its records can never count
    freezes: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # key -> (seq, reason)

    def counts(self, record: Record) -> bool:
        """True if record is in the counted part of a member key's log."""
        return record.seq <= self.limits.get(record.author, 0)

    def identity_of(self, key: str) -> Member | None:
        identity = self.owner.get(key)
        return None if identity is None else self.members[identity]

    def generation(self, key: str) -> int:
        """The position of key in its identity's rotation chain (0 for the first key)."""
        member = self.identity_of(key)
        return 0 if member is None else member.keys.index(key)

    def accepts(self, author: str, seq: int) -> bool:
        """Could a record at (author, seq) count: a member-role key's log, not past its cap?"""
        member = self.identity_of(author)
        if member is None or member.role != "member":
            return False
        cap = self.caps.get(author)
        return cap is None or seq <= cap

    def is_peer_key(self, key: str) -> bool:
        """May key take part in the peer protocol (SPEC 10.1, 10.6): the current key of a
        member or auditor identity that is not removed and that no fork froze?"""
        member = self.identity_of(key)
        if member is None or member.removed or member.current_key != key:
            return False
        return self.freezes.get(key, (0, ""))[1] != "fork"


@dataclass(slots=True)
class _Round:
    """Mutable working state of one admission fixpoint (private to this module)."""

    members: dict[str, Member]
    owner: dict[str, str]


def derive_membership(
    federation: Federation,
    prefixes: Mapping[str, int],
    membership_records: Iterable[Record],
    fork_freezes: Mapping[str, int] | None = None,
) -> Membership:
    """Members and counted limits from chain prefixes and the vote/rotate records."""
    records = sorted(
        (r for r in membership_records if isinstance(r.body, VoteBody | RotateBody)),
        key=lambda r: (r.author, r.seq, r.id),
    )
    freezes: dict[str, tuple[int, str]] = {
        key: (seq, "fork") for key, seq in (fork_freezes or {}).items()
    }
    while True:
        limits, caps = _limits(prefixes, freezes, records)
        state = _admission_fixpoint(federation, limits, records)
        removals = _removals(federation, state, limits, records)
        changed = False
        for key, seq in removals.items():
            if seq < freezes.get(key, (seq + 1, ""))[0]:
                freezes[key] = (seq, "removed")
                changed = True
        if not changed:
            return _finish(state, limits, caps, freezes)


def _limits(
    prefixes: Mapping[str, int],
    freezes: Mapping[str, tuple[int, str]],
    records: list[Record],
) -> tuple[dict[str, int], dict[str, int]]:
    """Counted limits (data-dependent) and caps (the seq a log can never count past)."""
    caps = {key: seq for key, (seq, _) in freezes.items()}
    limits = {key: min(k, caps.get(key, k)) for key, k in prefixes.items()}
    for record in records:  # sorted by (author, seq): the first counted rotate ends the log
        if isinstance(record.body, RotateBody) and record.seq <= limits.get(record.author, 0):
            limits[record.author] = min(limits[record.author], record.seq)
            caps[record.author] = min(caps.get(record.author, record.seq), record.seq)
    return limits, caps


def _admission_fixpoint(
    federation: Federation, limits: Mapping[str, int], records: list[Record]
) -> _Round:
    state = _Round(
        members={
            f.key: Member(identity=f.key, name=f.name, role=f.role, keys=(f.key,))
            for f in federation.founders
        },
        owner={f.key: f.key for f in federation.founders},
    )
    while _apply_rotations(state, limits, records) | _apply_admissions(
        federation, state, limits, records
    ):
        pass
    return state


def _voter(state: _Round, limits: Mapping[str, int], record: Record) -> str | None:
    """The member identity whose counted record this is, if it may vote or act."""
    identity = state.owner.get(record.author)
    if identity is None or record.seq > limits.get(record.author, 0):
        return None
    return identity if state.members[identity].role == "member" else None


def _apply_rotations(state: _Round, limits: Mapping[str, int], records: list[Record]) -> bool:
    changed = False
    for record in records:
        body = record.body
        if not isinstance(body, RotateBody) or body.new_key in state.owner:
            continue
        identity = _voter(state, limits, record)
        if identity is None or state.members[identity].current_key != record.author:
            continue
        member = state.members[identity]
        state.members[identity] = _replace_keys(member, (*member.keys, body.new_key))
        state.owner[body.new_key] = identity
        changed = True
    return changed


def _replace_keys(member: Member, keys: tuple[str, ...]) -> Member:
    return Member(member.identity, member.name, member.role, keys, member.admitted_by)


def _apply_admissions(
    federation: Federation, state: _Round, limits: Mapping[str, int], records: list[Record]
) -> bool:
    tallies: dict[tuple[str, str, str], set[str]] = {}
    for record in records:
        body = record.body
        if isinstance(body, VoteBody) and body.action == "admit":
            voter = _voter(state, limits, record)
            if voter is not None and body.name is not None and body.role is not None:
                tallies.setdefault((body.member, body.name, body.role), set()).add(voter)
    changed = False
    for (key, name, role), voters in sorted(tallies.items()):
        if len(voters) >= federation.threshold and key not in state.owner:
            state.members[key] = Member(key, name, role, (key,), tuple(sorted(voters)))
            state.owner[key] = key
            changed = True
    return changed


def _removals(
    federation: Federation, state: _Round, limits: Mapping[str, int], records: list[Record]
) -> dict[str, int]:
    votes: dict[str, dict[str, int]] = {}
    for record in records:
        body = record.body
        if isinstance(body, VoteBody) and body.action == "remove" and body.after is not None:
            voter = _voter(state, limits, record)
            if voter is not None and body.member in state.owner:
                ballot = votes.setdefault(body.member, {})
                ballot[voter] = min(body.after, ballot.get(voter, body.after))
    return {
        key: min(ballot.values())
        for key, ballot in votes.items()
        if len(ballot) >= federation.threshold
    }


def _finish(
    state: _Round,
    limits: Mapping[str, int],
    caps: Mapping[str, int],
    freezes: Mapping[str, tuple[int, str]],
) -> Membership:
    members = dict(state.members)
    for key, (_, reason) in freezes.items():
        identity = state.owner.get(key)
        if reason == "removed" and identity is not None:
            m = members[identity]
            members[identity] = Member(m.identity, m.name, m.role, m.keys, m.admitted_by, True)

    def counted_role(key: str) -> bool:
        return members[state.owner[key]].role == "member"

    counted = {key: limits.get(key, 0) if counted_role(key) else 0 for key in state.owner}
    all_freezes = dict(freezes)
    for key, through in counted.items():
        # a rotation ends a log: record it as a freeze so every node can show why
        member = members[state.owner[key]]
        if key != member.current_key and key not in all_freezes:
            all_freezes[key] = (through, "rotated")
    return Membership(
        members=members,
        owner=dict(state.owner),
        limits=counted,
        caps={key: caps.get(key) if counted_role(key) else 0 for key in counted},
        freezes={k: v for k, v in sorted(all_freezes.items()) if k in counted},
    )


class MembershipChange(NamedTuple):
    """One difference between two memberships (``membership_changes``).

    ``what`` is one of: ``admitted`` (a new identity; ``detail`` its role), ``unadmitted`` (an
    admission no longer holds, e.g. a voter forked), ``removed``, ``reinstated``, ``rotated``
    (``key`` is the new key of ``identity``), ``frozen`` (``key``'s log counts through
    ``seq`` only; ``detail`` the reason: fork, removed, rotated) and ``thawed`` (a freeze that
    no longer holds: SPEC 7.5, only a removal's can).
    """

    what: str
    identity: str
    key: str | None = None
    seq: int | None = None
    detail: str | None = None


def membership_changes(old: Membership, new: Membership) -> list[MembershipChange]:
    """What changed from old to new: members admitted, unadmitted, removed, reinstated,
    keys rotated, logs frozen or thawed -- in a fixed order."""
    changes: list[MembershipChange] = []
    for identity in sorted(old.members.keys() | new.members.keys()):
        before, after = old.members.get(identity), new.members.get(identity)
        if before is None and after is not None:
            changes.append(MembershipChange("admitted", identity, identity, detail=after.role))
        elif before is not None and after is None:
            changes.append(MembershipChange("unadmitted", identity, identity))
        if before is None or after is None:
            continue
        if before.removed != after.removed:
            changes.append(MembershipChange("removed" if after.removed else "reinstated", identity))
        for key in after.keys[len(before.keys) :]:
            changes.append(MembershipChange("rotated", identity, key))
    for key in sorted(old.freezes.keys() | new.freezes.keys()):
        was, now = old.freezes.get(key), new.freezes.get(key)
        owner = new.owner.get(key) or old.owner.get(key, key)
        if now is not None and was != now:
            changes.append(MembershipChange("frozen", owner, key, now[0], now[1]))
        elif now is None and was is not None:
            changes.append(MembershipChange("thawed", owner, key, was[0], was[1]))
    return changes
