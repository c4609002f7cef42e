"""The acceptance machine alone (no SQLite): every outcome, every effect, as a table.

Each case signs a few logs, offers them to a ``Ledger`` in batches, and compares what the
ledger answers -- every outcome, then each batch's settlement -- written as short lines
(``a2 pending held``, ``count a 0..3 as a/0 grew``, ``frozen a 1 fork``). ``MemoryLog`` stores
what the outcomes say to store, as the node's database does. A Hypothesis test then checks
that the ledger, fed any history in any order and batching, ends with exactly the membership
and counted ranges that ``fold_state`` derives from the records it stored.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from fuzzdepth import depth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    Body,
    Federation,
    Founder,
    Record,
    SignalBody,
    SigningKey,
    VoteBody,
    draft_genesis,
    encode_canonical,
    fold_state,
    parse_genesis,
    sign_genesis,
    sign_record,
)
from protocol.bodies import rotation
from protocol.ledger import Ledger, Outcome, Settlement, Verdict, counted_of

NAMES = ("a", "b", "c", "d", "n", "m", "a2")
KEYS = {n: SigningKey(hashlib.sha256(f"test_ledger {n}".encode()).digest()) for n in NAMES}
NAME_OF = {k.public: n for n, k in KEYS.items()}
TS = 1_763_800_000_000


def make_federation() -> Federation:
    founders = [
        Founder("Alpha", KEYS["a"].public, "member"),
        Founder("Beta", KEYS["b"].public, "member"),
        Founder("Gamma", KEYS["c"].public, "member"),
        Founder("Delta", KEYS["d"].public, "auditor"),
    ]
    doc: Any = draft_genesis("Ledger tests", 2, sorted(founders, key=lambda f: f.key))
    for name in "abcd":
        doc = sign_genesis(doc, KEYS[name])
    return parse_genesis(encode_canonical(doc))


FED = make_federation()


def sig(n: int) -> SignalBody:
    return SignalBody("sha256", f"{n:064x}", ())


def admit(name: str) -> VoteBody:
    return VoteBody("admit", KEYS[name].public, name=name.upper(), role="member")


def remove(name: str, after: int) -> VoteBody:
    return VoteBody("remove", KEYS[name].public, after=after)


@dataclass
class Logs:
    """Signed logs; every record gets a short name: author, seq, and ' for a fork's twin."""

    heads: dict[str, Record] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # record id -> short name

    def add(self, author: str, body: Body) -> Record:
        head = self.heads.get(author)
        seq, prev = (1, None) if head is None else (head.seq + 1, head.id)
        record = self._sign(author, seq, prev, body, f"{author}{seq}")
        self.heads[author] = record
        return record

    def twin(self, of: Record, body: Body) -> Record:
        """Another record at of's seq, after of's prev: a fork."""
        return self._sign(NAME_OF[of.author], of.seq, of.prev, body, self.names[of.id] + "'")

    def stray(self, author: str, seq: int, body: Body) -> Record:
        """A record at seq whose prev names no record: a broken link."""
        return self._sign(author, seq, "cd" * 32, body, f"{author}{seq}~")

    def _sign(self, author: str, seq: int, prev: str | None, body: Body, name: str) -> Record:
        record = sign_record(KEYS[author], fed=FED.id, seq=seq, prev=prev, ts=TS + seq, body=body)
        self.names[record.id] = name
        return record


class MemoryLog:
    """The stored and held records, kept as the outcomes say (the node's database in SQL)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, int], list[Record]] = {}
        self.held: dict[str, Record] = {}

    def stored_ids(self, author: str, seq: int) -> Sequence[str]:
        return [r.id for r in self.stored.get((author, seq), [])]

    def stored_record(self, record_id: str) -> Record:
        return next(r for rs in self.stored.values() for r in rs if r.id == record_id)

    def held_records(self, ids: Sequence[str]) -> Sequence[Record]:
        return [self.held[i] for i in ids]

    def apply(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            r = o.record
            if o.released:
                del self.held[r.id]
            if o.verdict in (Verdict.ACCEPTED, Verdict.FORK):
                self.stored.setdefault((r.author, r.seq), []).append(r)
            elif o.held:
                self.held[r.id] = r

    def settle(self, settlement: Settlement) -> None:
        self.apply(settlement.outcomes)
        for drop in settlement.dropped:
            for rid, r in list(self.held.items()):
                if r.author == drop.author and r.seq > drop.above:
                    del self.held[rid]

    def records(self) -> list[Record]:
        return [r for rs in self.stored.values() for r in rs]


def new_ledger(max_held_per_author: int = 10_000) -> tuple[Ledger, MemoryLog]:
    log = MemoryLog()
    return Ledger(FED, log, max_held_per_author=max_held_per_author), log


def run(ledger: Ledger, log: MemoryLog, logs: Logs, batch: Sequence[Record]) -> list[str]:
    """Offer a batch and settle it; the answers as lines."""
    lines: list[str] = []
    for record in batch:
        outcomes = ledger.offer(record)
        log.apply(outcomes)
        lines += [outcome_line(o, logs) for o in outcomes]
    settlement = ledger.settle()
    log.settle(settlement)
    lines += [outcome_line(o, logs) for o in settlement.outcomes]
    return lines + settlement_lines(settlement)


def outcome_line(o: Outcome, logs: Logs) -> str:
    parts = [logs.names[o.record.id], str(o.verdict)]
    parts += ["held"] * o.held + ["released"] * o.released
    if o.error is not None:
        parts.append(o.error.code)
    if o.evidence is not None:
        pair = (o.evidence.first, o.evidence.second)
        parts.append("evidence " + "+".join(sorted(logs.names[r.id] for r in pair)))
    return " ".join(parts)


def settlement_lines(s: Settlement) -> list[str]:
    """Uncounts, counts (each sorted by name), membership changes, dropped holds."""
    lines = sorted(f"uncount {NAME_OF[u.key]} {u.lo}..{u.hi} {u.why}" for u in s.uncounts)
    lines += sorted(
        f"count {NAME_OF[c.key]} {c.lo}..{c.hi} as {NAME_OF[c.identity]}/{c.gen} {c.why}"
        for c in s.counts
    )
    for ch in s.changes:
        words = [ch.what, NAME_OF[ch.identity]]
        words += [] if ch.key is None or ch.key == ch.identity else [NAME_OF[ch.key]]
        words += [] if ch.seq is None else [str(ch.seq)]
        words += [] if ch.detail is None else [ch.detail]
        lines.append(" ".join(words))
    lines += [f"drop {NAME_OF[d.author]} above {d.above}" for d in s.dropped]
    return lines


# -- the table ---------------------------------------------------------------------------------
# Each case: logs -> batches of records, and per batch the expected lines (outcomes in the order
# answered, then the settlement: uncounts, counts, membership changes, dropped holds).

Batches = list[list[Record]]
Expected = list[list[str]]
CASES: dict[str, Callable[[Logs], tuple[Batches, Expected]]] = {}


def case(fn: Callable[[Logs], tuple[Batches, Expected]]) -> None:
    CASES[fn.__name__] = fn


@case
def next_records_are_accepted(g: Logs) -> tuple[Batches, Expected]:
    a1, a2 = g.add("a", sig(1)), g.add("a", sig(2))
    return [[a1], [a2]], [
        ["a1 accepted", "count a 0..1 as a/0 grew"],
        ["a2 accepted", "count a 1..2 as a/0 grew"],
    ]


@case
def duplicates_in_and_across_batches(g: Logs) -> tuple[Batches, Expected]:
    a1 = g.add("a", sig(1))
    return [[a1, a1], [a1]], [
        ["a1 accepted", "a1 duplicate", "count a 0..1 as a/0 grew"],
        ["a1 duplicate"],
    ]


@case
def a_gap_holds_records_until_it_fills(g: Logs) -> tuple[Batches, Expected]:
    a1, a2, a3 = (g.add("a", sig(n)) for n in (1, 2, 3))
    return [[a3, a2, a3], [a1]], [
        ["a3 pending held", "a2 pending held", "a3 pending"],
        ["a1 accepted", "a2 accepted released", "a3 accepted released", "count a 0..3 as a/0 grew"],
    ]


@case
def a_broken_link_is_rejected(g: Logs) -> tuple[Batches, Expected]:
    a1 = g.add("a", sig(1))
    return [[a1, g.stray("a", 2, sig(2))]], [
        ["a1 accepted", "a2~ rejected PrevMismatchError", "count a 0..1 as a/0 grew"],
    ]


@case
def a_fork_is_evidence_and_freezes_its_author(g: Logs) -> tuple[Batches, Expected]:
    a1, a2, a3, a4 = (g.add("a", sig(n)) for n in (1, 2, 3, 4))
    twin = g.twin(a2, sig(22))
    return [[a1, a2, a3], [a4, a4], [twin, a4], [twin]], [
        ["a1 accepted", "a2 accepted", "a3 accepted", "count a 0..3 as a/0 grew"],
        ["a4 accepted", "a4 duplicate", "count a 3..4 as a/0 grew"],
        ["a2' fork evidence a2+a2'", "a4 duplicate", "uncount a 1..4 fork", "frozen a 1 fork"],
        ["a2' duplicate"],
    ]


@case
def a_fork_found_among_held_records(g: Logs) -> tuple[Batches, Expected]:
    a1, a2, a3 = (g.add("a", sig(n)) for n in (1, 2, 3))
    twin = g.twin(a3, sig(33))
    return [[a3, twin], [a1, a2]], [
        ["a3 pending held", "a3' pending held"],
        ["a1 accepted", "a2 accepted", "a3 accepted released",
         "a3' fork released evidence a3+a3'", "count a 0..2 as a/0 grew", "frozen a 2 fork"],
    ]  # fmt: skip


@case
def held_records_past_a_freeze_are_dropped(g: Logs) -> tuple[Batches, Expected]:
    a1, a2 = g.add("a", sig(1)), g.add("a", sig(2))
    g.add("a", sig(3))
    a4 = g.add("a", sig(4))
    return [[a1, a2, a4], [g.twin(a2, sig(22))]], [
        ["a1 accepted", "a2 accepted", "a4 pending held", "count a 0..2 as a/0 grew"],
        ["a2' fork evidence a2+a2'", "uncount a 1..2 fork", "frozen a 1 fork", "drop a above 1"],
    ]


@case
def strangers_and_auditors_are_rejected(g: Logs) -> tuple[Batches, Expected]:
    return [[g.add("n", sig(1)), g.add("d", sig(2))]], [
        ["n1 deferred", "d1 deferred", "n1 rejected MembershipError",
         "d1 rejected MembershipError"],
    ]  # fmt: skip


@case
def a_late_admission_in_the_same_batch(g: Logs) -> tuple[Batches, Expected]:
    n1, n2 = g.add("n", sig(1)), g.add("n", sig(2))
    votes = [g.add("a", admit("n")), g.add("b", admit("n"))]
    return [[n2, n1, *votes]], [
        ["n2 deferred", "n1 deferred", "a1 accepted", "b1 accepted", "n1 accepted",
         "n2 accepted", "count a 0..1 as a/0 grew", "count b 0..1 as b/0 grew",
         "count n 0..2 as n/0 admitted", "admitted n member"],
    ]  # fmt: skip


@case
def a_late_admission_in_a_later_batch(g: Logs) -> tuple[Batches, Expected]:
    n1 = g.add("n", sig(1))
    votes = [g.add("a", admit("n")), g.add("b", admit("n"))]
    return [[n1], votes, [n1]], [
        ["n1 deferred", "n1 rejected MembershipError"],
        ["a1 accepted", "b1 accepted", "count a 0..1 as a/0 grew", "count b 0..1 as b/0 grew",
         "admitted n member"],
        ["n1 accepted", "count n 0..1 as n/0 grew"],
    ]  # fmt: skip


@case
def an_admission_undone_by_a_voters_fork(g: Logs) -> tuple[Batches, Expected]:
    a1, b1 = g.add("a", admit("n")), g.add("b", sig(1))
    b2 = g.add("b", admit("n"))
    n1 = g.add("n", sig(2))
    return [[a1, b1, b2, n1], [g.twin(b2, sig(9))]], [
        ["a1 accepted", "b1 accepted", "b2 accepted", "n1 accepted", "count a 0..1 as a/0 grew",
         "count b 0..2 as b/0 grew", "count n 0..1 as n/0 admitted", "admitted n member"],
        ["b2' fork evidence b2+b2'", "uncount b 1..2 fork", "uncount n 0..1 unadmitted",
         "unadmitted n", "frozen b 1 fork"],
    ]  # fmt: skip


@case
def a_removal_freezes_at_the_smallest_after(g: Logs) -> tuple[Batches, Expected]:
    c = [g.add("c", sig(n)) for n in (1, 2, 3)]
    votes = [g.add("a", remove("c", 2)), g.add("b", remove("c", 1))]
    c4 = g.add("c", sig(4))
    return [c, votes, [c4]], [
        ["c1 accepted", "c2 accepted", "c3 accepted", "count c 0..3 as c/0 grew"],
        ["a1 accepted", "b1 accepted", "uncount c 1..3 removed", "count a 0..1 as a/0 grew",
         "count b 0..1 as b/0 grew", "removed c", "frozen c 1 removed"],
        ["c4 deferred", "c4 rejected MembershipError"],
    ]  # fmt: skip


@case
def a_rotation_ends_the_old_log_and_continues_the_member(g: Logs) -> tuple[Batches, Expected]:
    a1 = g.add("a", sig(1))
    a2 = g.add("a", rotation(KEYS["a2"], fed=FED.id, old=KEYS["a"].public))
    new = [g.add("a2", sig(2)), g.add("a2", sig(3))]
    a3 = g.add("a", sig(4))
    return [[*new, a1, a2], [a3]], [
        ["a21 deferred", "a22 deferred", "a1 accepted", "a2 accepted", "a21 accepted",
         "a22 accepted", "count a 0..2 as a/0 grew", "count a2 0..2 as a/1 rotated", "rotated a a2",
         "frozen a 2 rotated"],
        ["a3 deferred", "a3 rejected MembershipError"],
    ]  # fmt: skip


@case
def holds_are_bounded(g: Logs) -> tuple[Batches, Expected]:
    records = [g.add("a", sig(n)) for n in range(1, 6)]
    return [records[1:]], [
        ["a2 pending held", "a3 pending held", "a4 rejected SeqGapError",
         "a5 rejected SeqGapError"],
    ]  # fmt: skip


HELD_LIMITS = {"holds_are_bounded": 2}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ledger_answers(name: str) -> None:
    logs = Logs()
    batches, expected = CASES[name](logs)
    ledger, log = new_ledger(HELD_LIMITS.get(name, 10_000))
    answers = [run(ledger, log, logs, batch) for batch in batches]
    assert answers == expected
    assert_agrees_with_fold(ledger, log)


def assert_agrees_with_fold(ledger: Ledger, log: MemoryLog) -> None:
    """What the ledger derived equals what the fold derives from the records it stored."""
    folded = fold_state(log.records(), FED, 0).membership
    assert ledger.membership == folded
    assert ledger.counted == counted_of(folded)


def test_errors_name_the_record() -> None:
    logs = Logs()
    n1 = logs.add("n", sig(1))
    ledger, _ = new_ledger()
    assert [o.verdict for o in ledger.offer(n1, tag=7)] == [Verdict.DEFERRED]
    [rejected] = ledger.settle().outcomes
    assert rejected.tag == 7 and rejected.error is not None
    assert rejected.error.to_json() == {
        "error": "MembershipError",
        "detail": "author is not a member of this federation",
        "author": n1.author,
        "seq": 1,
        "record_id": n1.id,
        "expected": "a member key",
        "actual": "1",
    }


def test_tags_follow_held_records_to_their_final_outcome() -> None:
    logs = Logs()
    a1, a2 = logs.add("a", sig(1)), logs.add("a", sig(2))
    ledger, log = new_ledger()
    [held] = ledger.offer(a2, tag="second")
    log.apply([held])
    outcomes = ledger.offer(a1, tag="first")
    assert [(o.tag, o.verdict, o.released) for o in outcomes] == [
        ("first", Verdict.ACCEPTED, False),
        ("second", Verdict.ACCEPTED, True),
    ]


def test_a_ledger_restored_from_its_store_answers_the_same() -> None:
    logs = Logs()
    records = [logs.add("a", sig(n)) for n in range(1, 5)]
    ledger, log = new_ledger()
    run(ledger, log, logs, [records[0], records[2]])
    restored = Ledger(
        FED, log, heads=ledger.heads, fork_seqs=ledger.fork_seqs,
        membership_records=ledger.membership_records, counted=ledger.counted,
        held=[(r.author, r.seq, r.id) for r in log.held.values()],
    )  # fmt: skip
    assert restored.held_count() == 1 and restored.held_count(KEYS["a"].public) == 1
    assert run(restored, log, logs, [records[1], records[3]]) == [
        "a2 accepted", "a3 accepted released", "a4 accepted", "count a 1..4 as a/0 grew",
    ]  # fmt: skip


# -- the property: any order, any batching, the ledger derives what the fold derives ------------


def random_records(rng: random.Random, steps: int) -> list[Record]:
    logs = Logs()
    signed: list[Record] = []
    authors = ["a", "b", "c", "d", "n", "m"]
    for _ in range(steps):
        author = rng.choice(authors)
        roll = rng.random()
        if roll < 0.15:
            body: Body = admit(rng.choice(["n", "m"]))
        elif roll < 0.22:
            target = rng.choice(authors)
            head = logs.heads.get(target)
            body = remove(target, rng.randint(0, 0 if head is None else head.seq))
        elif roll < 0.25 and author == "a" and "a2" not in authors:
            body = rotation(KEYS["a2"], fed=FED.id, old=KEYS["a"].public)
            authors.append("a2")
        else:
            body = sig(rng.randint(0, 10**6))
        if roll > 0.93 and logs.heads.get(author) is not None:
            signed.append(logs.twin(logs.heads[author], body))
        else:
            signed.append(logs.add(author, body))
    return signed


@settings(
    max_examples=depth(150, floor=40), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(rng=st.randoms(use_true_random=False), steps=st.integers(1, 40))
def test_ledger_derives_what_the_fold_derives(rng: random.Random, steps: int) -> None:
    records = random_records(rng, steps)
    offered = records + rng.sample(records, len(records) // 3)
    rng.shuffle(offered)
    ledger, log = new_ledger()
    while offered:
        size = rng.randint(1, 8)
        batch, offered = offered[:size], offered[size:]
        for record in batch:
            log.apply(ledger.offer(record))
        log.settle(ledger.settle())
        assert_agrees_with_fold(ledger, log)
        assert ledger.held_count() == len(log.held)
    for _ in range(len(records)):  # anti-entropy: offer everything until nothing is new
        before = len(log.records())
        for record in records:
            log.apply(ledger.offer(record))
        log.settle(ledger.settle())
        if len(log.records()) == before:
            break
    assert_agrees_with_fold(ledger, log)
