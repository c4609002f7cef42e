"""The current membership as an operator reads it (``hashmesh federation show``).

The members come from ``protocol.membership`` (the derived view, with admitted and removed
members); the pending votes are the counted ``vote`` records that have not reached the
threshold yet, tallied the way ``protocol.membership`` tallies them: one vote per member
identity of role ``member`` whose record counts, admissions grouped by (key, name, role).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protocol.bodies import VoteBody
from protocol.federation import Federation
from protocol.membership import Membership
from protocol.records import Record


def members_json(membership: Membership) -> list[dict[str, Any]]:
    """Every member identity, founders first, then by name."""
    names = {identity: m.name for identity, m in membership.members.items()}
    ordered = sorted(membership.members.values(), key=lambda m: (not m.is_founder, m.name))
    return [
        {"name": m.name, "identity": m.identity, "key": m.current_key, "role": m.role,
         "founder": m.is_founder, "admitted_by": sorted(names[v] for v in m.admitted_by),
         "removed": m.removed}
        for m in ordered
    ]  # fmt: skip


def pending_votes(
    federation: Federation, membership: Membership, records: Iterable[Record]
) -> list[dict[str, Any]]:
    """Admissions and removals that some members voted for and that have not happened yet."""
    tallies: dict[tuple[str, str, str | None, str | None], set[str]] = {}
    for record in records:
        body, voter = record.body, membership.identity_of(record.author)
        if not isinstance(body, VoteBody) or voter is None or voter.role != "member":
            continue
        if not membership.counts(record) or not _pending(body, membership):
            continue
        ballot = (body.action, body.member, body.name, body.role)
        tallies.setdefault(ballot, set()).add(voter.identity)
    names = {identity: m.name for identity, m in membership.members.items()}
    return [
        {"action": action, "member": key, "name": name or _name(membership, key), "role": role,
         "votes": len(voters), "threshold": federation.threshold,
         "voters": sorted(names[v] for v in voters)}
        for (action, key, name, role), voters in sorted(tallies.items(), key=lambda t: t[0][:2])
    ]  # fmt: skip


def _pending(body: VoteBody, membership: Membership) -> bool:
    target = membership.identity_of(body.member)
    if body.action == "admit":
        return target is None
    return target is not None and not target.removed


def _name(membership: Membership, key: str) -> str | None:
    member = membership.identity_of(key)
    return None if member is None else member.name
