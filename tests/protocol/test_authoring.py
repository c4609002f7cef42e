"""The authoring rules (SPEC 4.5): who may sign which body now, rule by rule, as a table.

Each case builds a small record set, derives its membership with the fold, and asks
``check_authoring`` about one (author, body, target): the answer is the error class raised,
or None. The order of the checks is part of the rules (a body error before an author error,
an author error before a target error), so some cases break two rules on purpose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from signed_logs import SignedLogs

from protocol import (
    Body,
    Federation,
    Founder,
    OpinionBody,
    RetractBody,
    SignalBody,
    SigningKey,
    VoteBody,
    draft_genesis,
    encode_canonical,
    fold_state,
    parse_genesis,
    sign_genesis,
)
from protocol.authoring import Target, check_authoring, check_body
from protocol.bodies import rotation
from protocol.errors import (
    AlreadyRetractedError,
    AlreadyVotedError,
    AuditorError,
    AuthoringError,
    ClosedLogError,
    InvalidHashError,
    InvalidLabelError,
    NotAMemberError,
    NotContributorError,
    OwnSignalError,
    UnknownSignalError,
)

NAMES = ("a", "b", "c", "d", "n", "a2")
KEYS = {n: SigningKey(hashlib.sha256(f"test_authoring {n}".encode()).digest()) for n in NAMES}
PUB = {n: k.public for n, k in KEYS.items()}
SIGNAL_ID = "ab" * 32


def make_federation() -> Federation:
    founders = [
        Founder("Alpha", PUB["a"], "member"),
        Founder("Beta", PUB["b"], "member"),
        Founder("Gamma", PUB["c"], "member"),
        Founder("Delta", PUB["d"], "auditor"),
    ]
    doc: Any = draft_genesis("Authoring tests", 2, sorted(founders, key=lambda f: f.key))
    for name in "abcd":
        doc = sign_genesis(doc, KEYS[name])
    return parse_genesis(encode_canonical(doc))


FED = make_federation()


def check(
    w: SignedLogs, author: str, body: Body, target: Target | None = None
) -> type[AuthoringError] | type[Exception] | None:
    membership = fold_state(w.records, FED, 0).membership
    head = w.heads.get(author)
    seq = 1 if head is None else head.seq + 1
    try:
        check_authoring(FED, membership, PUB[author], seq, body, target=target, votes=w.records)
    except (AuthoringError, InvalidLabelError, InvalidHashError) as e:
        return type(e)
    return None


def sig(labels: tuple[str, ...] = ("entity:x",), value: str = "1" * 64) -> SignalBody:
    return SignalBody("sha256", value, labels)


def admit(name: str = "N") -> VoteBody:
    return VoteBody("admit", PUB["n"], name=name, role="member")


def remove(after: int) -> VoteBody:
    return VoteBody("remove", PUB["c"], after=after)


MINE, THEIRS = Target(PUB["a"], retracted=False), Target(PUB["b"], retracted=False)
MINE_RETRACTED, THEIRS_RETRACTED = Target(PUB["a"], True), Target(PUB["b"], True)


def removed_c(w: SignedLogs) -> None:
    w.add("c", sig())
    w.add("a", remove(0))
    w.add("b", remove(0))


def rotated_a(w: SignedLogs) -> None:
    w.add("a", rotation(KEYS["a2"], fed=FED.id, old=PUB["a"]))


Setup = Callable[[SignedLogs], object]
CASES: list[tuple[str, Setup, str, Body, Target | None, type[Exception] | None]] = [
    # the body alone
    ("a signal", lambda w: None, "a", sig(), None, None),
    ("a label outside the taxonomy", lambda w: None, "a", sig(("spam",)), None, InvalidLabelError),
    ("a featureless value", lambda w: None, "a", SignalBody("pdq", "0" * 64, ()), None,
     InvalidHashError),
    ("an opinion's labels too", lambda w: None, "a",
     OpinionBody(SIGNAL_ID, "seen", ("spam",)), THEIRS, InvalidLabelError),
    ("the body before the author", lambda w: None, "d", sig(("spam",)), None, InvalidLabelError),
    # the author
    ("a stranger", lambda w: None, "n", sig(), None, NotAMemberError),
    ("an auditor", lambda w: None, "d", sig(), None, AuditorError),
    ("a removed member", removed_c, "c", sig(), None, ClosedLogError),
    ("a forked member", lambda w: (w.add("b", sig()), w.fork("b", sig(value="2" * 64))), "b",
     sig(), None, ClosedLogError),
    ("a rotated-away key", rotated_a, "a", sig(), None, ClosedLogError),
    ("the new key of a rotated member", rotated_a, "a2", sig(), None, None),
    ("the author before the target", lambda w: None, "n", RetractBody(SIGNAL_ID), None,
     NotAMemberError),
    # retract
    ("retract one's own signal", lambda w: None, "a", RetractBody(SIGNAL_ID), MINE, None),
    ("retract an unknown signal", lambda w: None, "a", RetractBody(SIGNAL_ID), None,
     UnknownSignalError),
    ("retract another's signal", lambda w: None, "a", RetractBody(SIGNAL_ID), THEIRS,
     NotContributorError),
    ("retract twice", lambda w: None, "a", RetractBody(SIGNAL_ID), MINE_RETRACTED,
     AlreadyRetractedError),
    ("retract under a new key", rotated_a, "a2", RetractBody(SIGNAL_ID), MINE, None),
    # opinion
    ("an opinion on another's signal", lambda w: None, "a", OpinionBody(SIGNAL_ID, "confirm"),
     THEIRS, None),
    ("an opinion on an unknown id", lambda w: None, "a", OpinionBody(SIGNAL_ID, "seen"), None,
     None),
    ("confirm one's own signal", lambda w: None, "a", OpinionBody(SIGNAL_ID, "confirm"), MINE,
     OwnSignalError),
    ("dispute one's own signal", lambda w: None, "a", OpinionBody(SIGNAL_ID, "dispute"), MINE,
     OwnSignalError),
    ("own, under a new key", rotated_a, "a2", OpinionBody(SIGNAL_ID, "seen"), MINE,
     OwnSignalError),
    ("an opinion on a retracted signal", lambda w: None, "a", OpinionBody(SIGNAL_ID, "dispute"),
     THEIRS_RETRACTED, AlreadyRetractedError),
    # votes
    ("a first vote", lambda w: None, "a", admit(), None, None),
    ("the same vote twice", lambda w: w.add("a", admit()), "a", admit(), None,
     AlreadyVotedError),
    ("another member's vote", lambda w: w.add("a", admit()), "b", admit(), None, None),
    ("a vote for another name", lambda w: w.add("a", admit()), "a", admit("Other"), None, None),
    ("the same vote under a new key", lambda w: (w.add("a", admit()), rotated_a(w)), "a2",
     admit(), None, AlreadyVotedError),
    ("a vote that does not count does not block", lambda w: w.add("d", admit()), "a", admit(),
     None, None),
    ("remove twice", lambda w: w.add("a", remove(3)), "a", remove(3), None, AlreadyVotedError),
    ("remove again, later", lambda w: w.add("a", remove(3)), "a", remove(5), None,
     AlreadyVotedError),
    ("remove again, earlier", lambda w: w.add("a", remove(3)), "a", remove(1), None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "author", "body", "target", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_authoring_rules(
    setup: Setup,
    author: str,
    body: Body,
    target: Target | None,
    expected: type[Exception] | None,
) -> None:
    w = SignedLogs(KEYS, FED.id)
    setup(w)
    assert check(w, author, body, target) is expected


def test_case_names_are_distinct() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)


def test_refusals_carry_a_status_and_a_title() -> None:
    answers = {
        NotAMemberError: 409, AuditorError: 409, ClosedLogError: 409, UnknownSignalError: 404,
        NotContributorError: 403, AlreadyRetractedError: 409, AlreadyVotedError: 409,
        OwnSignalError: 422,
    }  # fmt: skip
    for error, status in answers.items():
        assert error.status == status and error.title and error("x").diagnostics().endswith(": x")


def test_check_body_needs_only_the_genesis() -> None:
    check_body(FED, sig())
    with pytest.raises(InvalidLabelError):
        check_body(FED, sig(("spam",)))
    check_body(FED, VoteBody("remove", PUB["c"], after=0))  # nothing to check in a vote's body
