"""Frontier deltas (``protocol.frontier_delta``, SPEC 10.2): a node's frontier history, the
three answers to an asker that opts in, and the property that matters: planning an
exchange from a delta or an ``at`` answer gives the same pulls, pushes and lag as planning
from the whole frontier."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.chain import Head
from protocol.errors import SyncError
from protocol.frontier_delta import (
    RECENT_DIGEST_HEX,
    RECENT_FRONTIERS,
    FrontierAt,
    FrontierDelta,
    FrontierHistory,
    parse_frontier_answer,
    parse_recent,
    plan_view,
)
from protocol.sync import Frontier, lag, plan_pulls, plan_pushes


def hexid(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


AUTHORS = tuple(hexid(f"delta author {i}") for i in range(5))
A, B, C, D, E = AUTHORS


def head(author: str, seq: int, branch: str = "") -> Head:
    return Head(author, seq, hexid(f"{author}/{seq}/{branch}"))


def frontier(forks: tuple[str, ...] = (), **seqs: int) -> Frontier:
    """A frontier from seqs by author letter (0: no head); forks name forked authors."""
    letters = dict(zip("ABCDE", AUTHORS, strict=True))
    heads = {letters[k]: head(letters[k], n) for k, n in seqs.items() if n}
    evidence = tuple({"author": letters[k], "seq": 1, "records": []} for k in forks)
    return Frontier(heads, evidence)


def with_digest(answer: Frontier | FrontierDelta | FrontierAt, digest: str) -> dict[str, Any]:
    return {**answer.to_json(), "digest": digest}


# ---- the history --------------------------------------------------------------------------


def test_history_names_each_author_changed_since_a_frontier_with_its_head_then() -> None:
    history = FrontierHistory()
    f0, f1, f2 = frontier(A=1, B=2), frontier(A=2, B=2), frontier(A=3, B=2, C=1)
    d0, d1, d2 = (history.observe(f) for f in (f0, f1, f2))
    assert history.changes_since(d0) == {A: head(A, 1), C: None}
    assert history.changes_since(d1) == {A: head(A, 2), C: None}
    assert history.changes_since(d2) is None  # the current one: nothing to remember
    assert history.recent() == [d1[:RECENT_DIGEST_HEX], d0[:RECENT_DIGEST_HEX]]
    assert history.observe(f2) == d2 and len(history.recent()) == 2  # unchanged: no version


def test_history_keeps_the_last_recent_frontiers_only() -> None:
    history = FrontierHistory()
    digests = [history.observe(frontier(A=n)) for n in range(1, RECENT_FRONTIERS + 3)]
    assert history.changes_since(digests[0]) is None  # the tenth frontier pushed it out
    assert history.changes_since(digests[1]) == {A: head(A, 2)}
    assert len(history.recent()) == RECENT_FRONTIERS


def test_a_change_of_fork_evidence_alone_is_a_version_with_no_author() -> None:
    history = FrontierHistory()
    before = history.observe(frontier(A=2))
    history.observe(frontier(("A",), A=2))
    assert history.changes_since(before) == {}


# ---- answers and their wire form -----------------------------------------------------------


def test_an_asker_at_a_recent_frontier_of_the_answerer_gets_the_changed_heads_only() -> None:
    history = FrontierHistory()
    old = history.observe(frontier(A=1, B=1, C=1, D=1))
    current = frontier(("E",), A=1, B=2, C=1)
    answer = history.answer(current, old, ())
    assert isinstance(answer, FrontierDelta)
    assert answer.authors == {B, D} and dict(answer.frontier.heads) == {B: head(B, 2)}
    assert answer.frontier.forks == current.forks and answer.since == old
    parsed = parse_frontier_answer(with_digest(answer, answer.digest))
    assert parsed == answer and answer.digest == current.digest()


def test_an_answerer_at_a_recent_frontier_of_the_asker_answers_at() -> None:
    answerer = FrontierHistory()
    current = frontier(A=1)
    recent = (hexid("other")[:16], current.digest()[:RECENT_DIGEST_HEX])
    answer = answerer.answer(current, hexid("asker now"), recent)
    assert answer == FrontierAt(current.digest())
    assert parse_frontier_answer(with_digest(answer, current.digest())) == answer


def test_otherwise_the_whole_frontier_is_the_answer() -> None:
    current = frontier(A=1, B=3)
    answer = FrontierHistory().answer(current, hexid("unknown"), (hexid("x")[:16],))
    assert answer == current
    assert parse_frontier_answer(with_digest(answer, current.digest())) == current


def test_parse_recent_reads_up_to_eight_short_digests() -> None:
    items = [hexid(str(n))[:16] for n in range(RECENT_FRONTIERS)]
    assert parse_recent(", ".join(items)) == tuple(items)
    assert parse_recent("") == () and parse_recent("  ") == ()


@pytest.mark.parametrize(
    "value",
    [",".join([hexid("x")[:16]] * (RECENT_FRONTIERS + 1)), "abc", hexid("x"), "G" * 16, "a,,b"],
    ids=["too-many", "short", "whole-digest", "not-hex", "empty-item"],
)
def test_parse_recent_refuses_anything_else(value: str) -> None:
    with pytest.raises(SyncError) as refused:
        parse_recent(value)
    assert refused.value.context.field == "Hm-Recent"


def delta_json(**changes: Any) -> dict[str, Any]:
    base = {"since": hexid("s"), "digest": hexid("d"), "authors": [A],
            "heads": [head(A, 2).to_json()], "forks": []}  # fmt: skip
    return base | changes


@pytest.mark.parametrize(
    "value",
    [
        {"at": "not a digest"},
        delta_json(since="x"),
        delta_json(authors="A"),
        delta_json(authors=[A, A]),
        delta_json(authors=["z" * 64]),
        delta_json(authors=[B]),  # a head of an author the delta does not name
    ],
    ids=["bad-at", "bad-since", "authors-not-list", "twice", "not-a-key", "head-not-named"],
)
def test_parse_frontier_answer_refuses_malformed_deltas(value: dict[str, Any]) -> None:
    with pytest.raises(SyncError):
        parse_frontier_answer(value)


def test_a_delta_since_another_digest_than_asked_is_refused() -> None:
    answer = parse_frontier_answer(delta_json())
    with pytest.raises(SyncError, match="another frontier"):
        plan_view(answer, {}, FrontierHistory(), hexid("what I sent"))


def test_at_a_frontier_the_asker_forgot_asks_for_the_whole_one() -> None:
    assert plan_view(FrontierAt(hexid("gone")), {}, FrontierHistory(), hexid("now")) is None


# ---- the property: deltas plan what the whole frontier plans -------------------------------

seqs = st.fixed_dictionaries({k: st.integers(0, 4) for k in "ABCDE"})
forked = st.lists(st.sampled_from("ABCDE"), max_size=2, unique=True).map(tuple)
frontiers = st.builds(lambda s, f: frontier(f, **s), seqs, forked)


def plans(remote: Frontier, local: dict[str, Head]) -> tuple[object, ...]:
    return plan_pulls(local, remote, 10), plan_pushes(local, remote), lag(local, remote)


@settings(max_examples=150, deadline=None)
@given(past=st.lists(frontiers, min_size=2, max_size=10), pick=st.integers(0, 100))
def test_a_delta_plans_the_same_exchange_as_the_whole_frontier(
    past: list[Frontier], pick: int
) -> None:
    """The asker's frontier is one of the answerer's past ones (it synced, then the answerer
    moved on): the delta gives the same pulls, pushes and lag."""
    answerer = FrontierHistory()
    digests = [answerer.observe(f) for f in past[:-1]]
    asker = past[pick % len(digests)]
    sent = digests[pick % len(digests)]
    answer = answerer.answer(past[-1], sent, ())
    if sent == past[-1].digest():
        return  # equal frontiers: a 304
    parsed = parse_frontier_answer(with_digest(answer, past[-1].digest()))
    view = plan_view(parsed, asker.heads, FrontierHistory(), sent)
    assert view is not None
    assert plans(*view) == plans(past[-1], dict(asker.heads))


@settings(max_examples=150, deadline=None)
@given(mine=st.lists(frontiers, min_size=2, max_size=10), pick=st.integers(0, 100))
def test_an_at_answer_plans_the_same_exchange_as_the_whole_frontier(
    mine: list[Frontier], pick: int
) -> None:
    """The answerer's frontier is one of the asker's past ones: planning from the asker's
    own history gives the same pulls, pushes and lag."""
    asker = FrontierHistory()
    for f in mine:
        asker.observe(f)
    theirs = mine[-2 - pick % min(len(mine) - 1, RECENT_FRONTIERS)]  # one it remembers
    if theirs.digest() == mine[-1].digest():
        return
    answer = FrontierHistory().answer(theirs, hexid("asker"), tuple(asker.recent()))
    assert answer == FrontierAt(theirs.digest())
    view = plan_view(answer, mine[-1].heads, asker, mine[-1].digest())
    assert view is not None
    assert plans(*view) == plans(theirs, dict(mine[-1].heads))
