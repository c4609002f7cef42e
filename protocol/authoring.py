"""Authoring rules: may this member sign this body now? (SPEC 4.5)

``check_authoring`` decides for every record a node signs, whichever way it was asked (local
API, offline CLI, import): ``node.store.store.Store.append_local`` calls it before signing, and
nothing else signs. Authoring rules are not validity rules (section 4): a record that breaks
one verifies and is merged like any other (an older node may have signed it; the fold gives
it whatever effect it has, often none). They keep a node from signing a record that would be
refused by policy, do nothing, or mislead, and each failure names its rule.

Checks, in order; the first failure is raised:

1. the body alone (``check_body``, which needs only the genesis, so a command that signs many
   records can check them all before signing any): signal and opinion labels admitted by the
   taxonomy (``InvalidLabelError``); a signal value that is not featureless (5.3,
   ``InvalidHashError``);
2. the author: a key of a member identity (``NotAMemberError``) with role ``member`` -- an
   auditor authors nothing (``AuditorError``) -- whose log is open at the next seq: a removed,
   forked or rotated-away key authors nothing (``ClosedLogError``);
3. what the body names, as the node's state shows it (``Target``, ``counted votes``, the
   types each member's node announced):
   - ``signal``: a type that is enabled in the federation (``protocol.type_gate``: a core
     type, or one every member's node announced; ``TypeNotEnabledError``);
   - ``retract``: a counted signal (``UnknownSignalError``) of this identity -- only the
     contributor retracts (``NotContributorError``) -- not retracted already
     (``AlreadyRetractedError``);
   - ``opinion``: not on the member's own signal (``OwnSignalError``: it would not count,
     8.3), not on a retracted signal (``AlreadyRetractedError``);
   - ``vote``: not a vote the identity has already cast (``AlreadyVotedError``): an admit vote
     for the same key, name and role, or a remove vote for the same key with an ``after`` no
     lower than one it cast (a lower ``after`` moves the freeze, so it may be cast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protocol.bodies import Body, OpinionBody, RetractBody, SignalBody, VoteBody
from protocol.errors import (
    AlreadyRetractedError,
    AlreadyVotedError,
    AuditorError,
    ClosedLogError,
    NotAMemberError,
    NotContributorError,
    OwnSignalError,
    UnknownSignalError,
)
from protocol.federation import Federation
from protocol.labels import check_in_taxonomy
from protocol.membership import Membership
from protocol.records import Record
from protocol.signal_types import check_authorable
from protocol.type_gate import CORE_TYPES, Announced, check_type_enabled


@dataclass(frozen=True, slots=True)
class Target:
    """What the rules need to know of the counted signal a retract or opinion names."""

    member: str  # the identity that contributed it
    retracted: bool


def check_body(federation: Federation, body: Body) -> None:
    """Rule 1: what a body must be before anyone signs it, whoever the author."""
    if isinstance(body, SignalBody | OpinionBody):
        check_in_taxonomy(body.labels, federation.taxonomy)
    if isinstance(body, SignalBody):
        check_authorable(body.type, body.value)


def check_authoring(
    federation: Federation,
    membership: Membership,
    author: str,
    seq: int,
    body: Body,
    *,
    target: Target | None = None,
    votes: Iterable[Record] = (),
    announced: Callable[[], Announced] = dict,
) -> None:
    """Raise unless author may sign body as its record at seq now (module docstring).

    ``target``: the counted signal a retract or opinion names (None: no such signal);
    ``votes``: the stored vote records (those that count are the identity's votes);
    ``announced``: reads each member identity's announced types -- called only for a signal
    of a type that is not core, so authoring the core types reads nothing."""
    check_body(federation, body)
    identity = _check_author(membership, author, seq)
    if isinstance(body, SignalBody) and body.type not in CORE_TYPES:
        check_type_enabled(membership, announced(), body.type)
    elif isinstance(body, RetractBody):
        _check_retract(body, identity, target)
    elif isinstance(body, OpinionBody):
        _check_opinion(body, identity, target)
    elif isinstance(body, VoteBody):
        _check_vote(body, identity, membership, votes)


def _check_author(membership: Membership, author: str, seq: int) -> str:
    member = membership.identity_of(author)
    if member is None:
        raise NotAMemberError(f"key {author[:16]}… is not a member of this federation")
    if member.role != "member":
        raise AuditorError(f"{member.name} has role {member.role!r}: an auditor authors nothing")
    if not membership.accepts(author, seq):
        cap = membership.caps.get(author)
        why = membership.freezes.get(author, (cap, "closed"))[1]
        raise ClosedLogError(
            f"{member.name}'s log under key {author[:16]}… is closed after seq {cap} ({why}): "
            "it authors nothing more"
        )
    return member.identity


def _check_retract(body: RetractBody, identity: str, target: Target | None) -> None:
    if target is None:
        raise UnknownSignalError(f"no signal {body.signal}")
    if target.member != identity:
        raise NotContributorError("only the member that contributed a signal can retract it")
    if target.retracted:
        raise AlreadyRetractedError(f"signal {body.signal} is already retracted")


def _check_opinion(body: OpinionBody, identity: str, target: Target | None) -> None:
    if target is None:
        return  # an opinion may name any id (8.3)
    if target.member == identity:
        raise OwnSignalError(
            f"signal {body.signal} is this member's own: an opinion on it would not count"
        )
    if target.retracted:
        raise AlreadyRetractedError(f"signal {body.signal} is already retracted by its contributor")


def _check_vote(
    body: VoteBody, identity: str, membership: Membership, votes: Iterable[Record]
) -> None:
    for record in votes:
        cast = record.body
        if (
            not isinstance(cast, VoteBody)
            or cast.member != body.member
            or cast.action != body.action
            or not membership.counts(record)
            or membership.owner.get(record.author) != identity
        ):
            continue
        if body.action == "admit" and (cast.name, cast.role) == (body.name, body.role):
            raise AlreadyVotedError(
                f"this member has already voted to admit {body.name!r} ({body.member[:16]}…)"
            )
        if body.action == "remove" and (cast.after or 0) <= (body.after or 0):
            raise AlreadyVotedError(
                f"this member has already voted to remove {body.member[:16]}… after seq "
                f"{cast.after}; only a vote with a lower after changes anything"
            )
