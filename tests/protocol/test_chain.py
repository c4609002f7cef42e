"""Per-author hash chains and fork evidence, through the public API."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fuzzdepth import depth
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    ForkEvidence,
    Head,
    Record,
    RemoteProtocolError,
    SignalBody,
    SigningKey,
    check_successor,
    decode_canonical,
    decode_record,
    encode_canonical,
    fork_evidence,
    sign_record,
    verify_fork_evidence,
)
from protocol.chain import find_forks, linked_prefix, validate_chain
from protocol.errors import (
    FederationMismatchError,
    ForkEvidenceError,
    PrevMismatchError,
    SeqGapError,
    SignatureError,
)

FED = hashlib.sha256(b"test_chain federation").hexdigest()
OTHER_FED = hashlib.sha256(b"test_chain other federation").hexdigest()
ALICE = SigningKey(hashlib.sha256(b"test_chain alice").digest())
BOB = SigningKey(hashlib.sha256(b"test_chain bob").digest())
TS = 1_763_800_000_000


def body(n: int) -> SignalBody:
    return SignalBody("sha256", hashlib.sha256(str(n).encode()).hexdigest())


def chain(key: SigningKey, length: int, *, salt: int = 0, fed: str = FED) -> list[Record]:
    records: list[Record] = []
    for seq in range(1, length + 1):
        prev = records[-1].id if records else None
        records.append(
            sign_record(key, fed=fed, seq=seq, prev=prev, ts=TS + seq, body=body(seq * 1000 + salt))
        )
    return records


LOG = chain(ALICE, 5)


def head_of(record: Record) -> Head:
    return Head(record.author, record.seq, record.id)


# --- check_successor --------------------------------------------------------------------------


def test_first_record_follows_no_head() -> None:
    check_successor(None, LOG[0])


@pytest.mark.parametrize("seq", [1, 2, 3, 4])
def test_each_record_follows_its_predecessor(seq: int) -> None:
    check_successor(head_of(LOG[seq - 1]), LOG[seq])


def _other(seq: int, prev: str | None) -> Record:
    return sign_record(ALICE, fed=FED, seq=seq, prev=prev, ts=TS, body=body(-seq))


SUCCESSOR_ERRORS: list[tuple[str, int | None, Record, type[RemoteProtocolError]]] = [
    ("seq 2 with no head", None, LOG[1], SeqGapError),
    ("gap of one", 0, LOG[2], SeqGapError),
    ("same seq again", 1, LOG[1], SeqGapError),
    ("going back", 3, LOG[1], SeqGapError),
    ("seq 1 after a head", 0, LOG[0], SeqGapError),
    ("prev names seq - 2", 1, _other(3, LOG[0].id), PrevMismatchError),
    ("prev names another log's record", 0, _other(2, chain(BOB, 1)[0].id), PrevMismatchError),
]


@pytest.mark.parametrize(
    ("head_index", "record", "error"),
    [(h, r, e) for _, h, r, e in SUCCESSOR_ERRORS],
    ids=[n for n, *_ in SUCCESSOR_ERRORS],
)
def test_check_successor_rejects(
    head_index: int | None, record: Record, error: type[RemoteProtocolError]
) -> None:
    head = None if head_index is None else head_of(LOG[head_index])
    with pytest.raises(RemoteProtocolError) as raised:
        check_successor(head, record)
    assert type(raised.value) is error
    ctx = raised.value.context
    assert (ctx.author, ctx.seq, ctx.record_id) == (record.author, record.seq, record.id)


def test_chain_errors_carry_expected_and_actual() -> None:
    with pytest.raises(SeqGapError) as gap:
        check_successor(head_of(LOG[0]), LOG[3])
    assert (gap.value.context.expected, gap.value.context.actual) == ("2", "4")
    wrong = _other(2, "ab" * 32)
    with pytest.raises(PrevMismatchError) as prev:
        check_successor(head_of(LOG[0]), wrong)
    assert (prev.value.context.expected, prev.value.context.actual) == (LOG[0].id, "ab" * 32)
    assert gap.value.status == prev.value.status == 409


def test_validate_chain() -> None:
    assert validate_chain([]) is None
    assert validate_chain(LOG) == head_of(LOG[-1])
    with pytest.raises(SeqGapError):
        validate_chain([LOG[0], LOG[2]])
    with pytest.raises(SeqGapError):
        validate_chain(LOG[1:])
    with pytest.raises(SeqGapError):
        validate_chain([LOG[0], chain(BOB, 2)[1]])  # two authors
    with pytest.raises(PrevMismatchError):
        validate_chain([LOG[0], _other(2, "cd" * 32)])


def test_head_to_json() -> None:
    assert head_of(LOG[2]).to_json() == {"author": ALICE.public, "seq": 3, "id": LOG[2].id}


def test_linked_prefix() -> None:
    def by_seq(records: list[Record]) -> dict[int, list[Record]]:
        out: dict[int, list[Record]] = {}
        for r in records:
            out.setdefault(r.seq, []).append(r)
        return out

    assert linked_prefix({}) == 0
    assert linked_prefix(by_seq(LOG)) == 5
    assert linked_prefix(by_seq([LOG[0], LOG[1], LOG[3]])) == 2  # gap at 3
    assert linked_prefix(by_seq(LOG[1:])) == 0  # no seq 1
    assert linked_prefix(by_seq([*LOG, _other(3, LOG[1].id)])) == 2  # two records at seq 3
    assert linked_prefix(by_seq([LOG[0], _other(2, "ab" * 32), LOG[2]])) == 1  # bad link


# --- fork evidence ----------------------------------------------------------------------------

FORK_A = LOG[2]
FORK_B = _other(3, LOG[1].id)


def test_fork_evidence_orders_its_records() -> None:
    one, two = fork_evidence(FORK_A, FORK_B), fork_evidence(FORK_B, FORK_A)
    assert one == two
    assert one.first.id < one.second.id
    assert (one.author, one.seq) == (ALICE.public, 3)


def test_fork_evidence_json_round_trip_verifies_standalone() -> None:
    proof = fork_evidence(FORK_A, FORK_B)
    as_json = proof.to_json()
    assert as_json == {
        "author": ALICE.public,
        "seq": 3,
        "records": [proof.first.text, proof.second.text],
    }
    wire = decode_canonical(encode_canonical(as_json), max_bytes=64 * 1024)
    assert verify_fork_evidence(wire, FED) == proof


def test_fork_evidence_needs_no_chain_context() -> None:
    """A fork at seq 1 (both prev null) and records whose prev differ are both forks."""
    a = sign_record(BOB, fed=FED, seq=1, prev=None, ts=TS, body=body(1))
    b = sign_record(BOB, fed=FED, seq=1, prev=None, ts=TS + 1, body=body(1))
    assert verify_fork_evidence(fork_evidence(a, b).to_json(), FED).seq == 1


def _evidence(a: Record, b: Record, **override: Any) -> dict[str, Any]:
    return {"author": a.author, "seq": a.seq, "records": [a.text, b.text]} | override


def _tampered(record: Record) -> str:
    return record.text.replace(f'"ts":{record.ts}', f'"ts":{record.ts + 1}')


FORGED: list[tuple[str, object, type[RemoteProtocolError]]] = [
    ("not an object", [FORK_A.text, FORK_B.text], ForkEvidenceError),
    ("missing records", {"author": ALICE.public, "seq": 3}, ForkEvidenceError),
    ("extra key", _evidence(FORK_A, FORK_B, note="x"), ForkEvidenceError),
    ("one record", _evidence(FORK_A, FORK_B, records=[FORK_A.text]), ForkEvidenceError),
    (
        "three records",
        _evidence(FORK_A, FORK_B, records=[FORK_A.text, FORK_B.text, LOG[0].text]),
        ForkEvidenceError,
    ),
    ("records not strings", _evidence(FORK_A, FORK_B, records=[1, 2]), ForkEvidenceError),
    ("the same record twice", _evidence(FORK_A, FORK_A), ForkEvidenceError),
    ("two seqs", _evidence(FORK_A, LOG[3]), ForkEvidenceError),
    ("two authors", _evidence(FORK_A, chain(BOB, 3)[2]), ForkEvidenceError),
    ("claims another seq", _evidence(FORK_A, FORK_B, seq=4), ForkEvidenceError),
    ("claims seq as boolean", _evidence(LOG[0], _other(1, None), seq=True), ForkEvidenceError),
    ("claims another author", _evidence(FORK_A, FORK_B, author=BOB.public), ForkEvidenceError),
    (
        "tampered record",
        _evidence(FORK_A, FORK_B, records=[FORK_A.text, _tampered(FORK_B)]),
        SignatureError,
    ),
    (
        "record from another federation",
        _evidence(FORK_A, FORK_B, records=[FORK_A.text, chain(ALICE, 3, fed=OTHER_FED)[2].text]),
        FederationMismatchError,
    ),
    (
        "lone surrogate in a record text",
        _evidence(FORK_A, FORK_B, records=[FORK_A.text, "\ud800"]),
        RemoteProtocolError,
    ),
]


@pytest.mark.parametrize(
    ("evidence", "error"), [(e, x) for _, e, x in FORGED], ids=[n for n, _, _ in FORGED]
)
def test_forged_fork_evidence_is_rejected(evidence: Any, error: type[RemoteProtocolError]) -> None:
    with pytest.raises(error):
        verify_fork_evidence(evidence, FED)


def test_fork_evidence_from_another_federation_is_rejected() -> None:
    with pytest.raises(FederationMismatchError):
        verify_fork_evidence(fork_evidence(FORK_A, FORK_B).to_json(), OTHER_FED)


@pytest.mark.parametrize(
    ("first", "second"),
    [(FORK_A, FORK_A), (LOG[2], LOG[3]), (LOG[0], chain(BOB, 1)[0])],
    ids=["same record", "two seqs", "two authors"],
)
def test_fork_evidence_cannot_be_constructed_from_non_forks(first: Record, second: Record) -> None:
    with pytest.raises(ForkEvidenceError):
        fork_evidence(first, second)


def test_fork_evidence_constructor_wants_the_smaller_id_first() -> None:
    small, large = sorted([FORK_A, FORK_B], key=lambda r: r.id)
    assert ForkEvidence(small, large).first is small
    with pytest.raises(ForkEvidenceError):
        ForkEvidence(large, small)


def test_find_forks_reports_the_first_fork_of_each_author() -> None:
    late = _other(5, LOG[3].id)
    bob = chain(BOB, 2)
    bob_fork = sign_record(BOB, fed=FED, seq=2, prev=bob[0].id, ts=TS, body=body(77))
    forks = find_forks([*LOG, FORK_B, late, *bob, bob_fork, *LOG])
    assert forks == {
        ALICE.public: fork_evidence(FORK_A, FORK_B),
        BOB.public: fork_evidence(bob[1], bob_fork),
    }
    assert find_forks(LOG + LOG) == {}


def test_three_way_fork_reports_the_two_smallest_ids() -> None:
    third = _other(3, "ef" * 32)
    smallest = sorted([FORK_A, FORK_B, third], key=lambda r: r.id)
    forks = find_forks([third, FORK_B, FORK_A])
    assert forks[ALICE.public] == ForkEvidence(smallest[0], smallest[1])


def test_records_decode_identically_from_evidence() -> None:
    proof = verify_fork_evidence(fork_evidence(FORK_A, FORK_B).to_json(), FED)
    assert {proof.first.id, proof.second.id} == {FORK_A.id, FORK_B.id}
    assert decode_record(proof.first.canonical, FED) == proof.first


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.characters(), max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=depth(300, floor=75), deadline=None)
@given(
    author=json_values,
    seq=json_values,
    texts=st.lists(
        st.one_of(st.sampled_from([FORK_A.text, FORK_B.text]), st.text(st.characters())),
        min_size=2,
        max_size=2,
    ),
)
def test_arbitrary_evidence_verifies_or_raises_remote_protocol_error(
    author: Any, seq: Any, texts: list[str]
) -> None:
    evidence: Any = {"author": author, "seq": seq, "records": texts}
    try:
        proof = verify_fork_evidence(evidence, FED)
    except RemoteProtocolError:
        return
    assert (proof.author, proof.seq) == (author, seq) == (ALICE.public, 3)
