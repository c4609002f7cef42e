"""The node store against real SQLite files: merge semantics, the fold, refusals, queries."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest
from fuzzdepth import depth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import (
    T0,
    History,
    fold_json,
    key,
    make_federation,
    random_history,
)

import node.store.materialise
import node.store.merge
from node.errors import StoreError, StoreRefusedError
from node.store.store import AsyncStore, MergeStatus, Store
from protocol import (
    AnnounceBody,
    LocalProtocolError,
    OpinionBody,
    Record,
    RetractBody,
    SignalBody,
    VoteBody,
    fork_evidence,
    sign_record,
)
from protocol.bodies import rotation
from protocol.errors import (
    AlreadyRetractedError,
    AlreadyVotedError,
    InvalidLabelError,
    NotAMemberError,
    NotContributorError,
    OwnSignalError,
    UnknownSignalError,
)
from protocol.fold import is_active

ACCEPTED, DUPLICATE, PENDING, REJECTED = (
    MergeStatus.ACCEPTED,
    MergeStatus.DUPLICATE,
    MergeStatus.PENDING,
    MergeStatus.REJECTED,
)
NOW = T0 + 100_000

FOUNDERS = [key(1), key(2), key(3)]
FED = make_federation(FOUNDERS, threshold=2)


def new_store(tmp_path: Path, federation=FED, name: str = "node.db") -> Store:
    return Store.open(tmp_path / name, federation, create=True)


def chain(author_key, bodies, *, start: int = 1, prev: str | None = None, fed=FED) -> list[Record]:
    records = []
    for i, body in enumerate(bodies):
        record = sign_record(
            author_key, fed=fed.id, seq=start + i, prev=prev, ts=T0 + start + i, body=body
        )
        records.append(record)
        prev = record.id
    return records


def sig(n: int, *labels: str, expires: int | None = None) -> SignalBody:
    return SignalBody("sha256", f"{n:064x}", tuple(sorted(labels)), None, expires)


def assert_matches_fold(store: Store, decoded: dict[bytes, Record], now_ms: int = NOW) -> None:
    expected = fold_json(store.all_records(), store.federation, now_ms, decoded)
    assert store.materialised_state(now_ms=now_ms) == expected


def statuses(result) -> list[MergeStatus]:
    return [o.status for o in result.outcomes]


# -- the property: materialised state == fold over the stored records -------------------------


def _merge_in_random_batches(store: Store, history: History, rng: random.Random) -> None:
    datas = [r.canonical for r in history.records]
    datas += rng.sample(datas, len(datas) // 4)  # duplicates
    rng.shuffle(datas)
    decoded: dict[bytes, Record] = {}
    while datas:
        size = rng.randint(1, 12)
        batch, datas = datas[:size], datas[size:]
        result = store.merge(batch, received_ms=NOW)
        assert len(result.outcomes) == len(batch)
        assert_matches_fold(store, decoded)
        for outcome in result.outcomes:
            if outcome.status in (ACCEPTED, DUPLICATE):
                assert store.record(outcome.id) is not None
    # anti-entropy: offer everything again until nothing new is stored
    everything = [r.canonical for r in history.records]
    for _ in range(len(everything)):
        if not store.merge(everything, received_ms=NOW).accepted:
            break
    before = store.materialised_state(now_ms=NOW)
    stored = list(store.all_records())
    assert statuses(store.merge(stored, received_ms=NOW)) == [DUPLICATE] * len(stored)
    again = store.merge(everything, received_ms=NOW)
    assert not again.accepted and not again.signal_changes
    assert store.materialised_state(now_ms=NOW) == before
    assert list(store.all_records()) == stored
    assert_matches_fold(store, decoded)
    for now in (T0, T0 + 250_000, T0 + 10**9):
        assert_matches_fold(store, decoded, now)


@settings(
    max_examples=depth(100, floor=25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rng=st.randoms(use_true_random=False),
    founders=st.integers(3, 5),
    threshold=st.integers(1, 3),
    steps=st.integers(5, 45),
)
def test_materialised_state_equals_fold(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    rng: random.Random,
    founders: int,
    threshold: int,
    steps: int,
) -> None:
    # tiny chunks, so that histories this small cross chunk boundaries too
    monkeypatch.setattr(node.store.materialise, "_CHUNK_RECORDS", 2)
    monkeypatch.setattr(node.store.merge, "_PROMOTE_CHUNK", 2)
    federation = make_federation([key(n) for n in range(1, founders + 1)], threshold)
    history = random_history(rng, federation, steps)
    path = tmp_path_factory.mktemp("prop") / "node.db"
    with Store.open(path, federation, create=True) as store:
        _merge_in_random_batches(store, history, rng)
        committed = store.materialised_state(now_ms=NOW)
    with Store.open(path, federation) as reopened:  # reopening re-derives: nothing to repair
        assert reopened.materialised_state(now_ms=NOW) == committed


def test_signal_changes_track_activity(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    a = chain(FOUNDERS[0], [sig(1), sig(2, expires=T0 + 5)])
    first = store.merge([r.canonical for r in a], received_ms=NOW)
    assert [(c.id, c.active) for c in first.signal_changes] == [(a[0].id, True)]
    assert first.signal_changes[0].row == store.signal(a[0].id, now_ms=NOW)["row"]
    retract = chain(FOUNDERS[0], [RetractBody(a[0].id)], start=3, prev=a[1].id)
    second = store.merge([retract[0].canonical], received_ms=NOW)
    assert [(c.id, c.active) for c in second.signal_changes] == [(a[0].id, False)]


def test_signal_changes_say_why(tmp_path: Path) -> None:
    """Each change names its cause: counted, retracted, or why its record stopped counting
    (the ledger's ``Uncount.why``: here unadmitted and fork; tests/protocol/test_ledger.py
    shows removed and rotated)."""
    store = new_store(tmp_path)
    a = chain(FOUNDERS[0], [sig(1), sig(2), sig(3)])
    c = chain(FOUNDERS[2], [sig(4), sig(5)])
    newcomer = key(13)
    admit = VoteBody("admit", newcomer.public, name="newcomer", role="member")
    votes = chain(FOUNDERS[1], [admit]) + chain(FOUNDERS[0], [admit], start=4, prev=a[-1].id)
    theirs = chain(newcomer, [sig(6)])
    merged = store.merge([r.canonical for r in a + c + votes + theirs], received_ms=NOW)
    assert {c.why for c in merged.signal_changes} == {"counted"}
    retracted = chain(FOUNDERS[2], [RetractBody(c[0].id)], start=3, prev=c[1].id)
    whys = lambda result: {(x.id, x.why) for x in result.signal_changes}  # noqa: E731
    assert whys(store.merge([retracted[0].canonical], received_ms=NOW)) == {(c[0].id, "retracted")}
    twin = chain(FOUNDERS[1], [sig(9)], prev=None)[0]  # b forks its admit vote
    assert whys(store.merge([twin.canonical], received_ms=NOW)) == {(theirs[0].id, "unadmitted")}
    fork = chain(FOUNDERS[0], [sig(99)], start=3, prev=a[1].id)[0]
    assert whys(store.merge([fork.canonical], received_ms=NOW)) == {(a[2].id, "fork")}
    assert_matches_fold(store, {})


# -- verification, chains, pending -----------------------------------------------------------


def test_record_failing_verification_is_never_written(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    good = chain(FOUNDERS[0], [sig(1)])[0]
    other_fed = make_federation(FOUNDERS, 2, name="other")
    foreign = chain(FOUNDERS[0], [sig(1)], fed=other_fed)[0]
    flipped = "0" if good.sig[0] != "0" else "1"
    forged = good.canonical.replace(good.sig.encode(), (flipped + good.sig[1:]).encode())
    spaced = good.canonical.replace(b'"seq":1', b'"seq": 1')
    batch = [forged, foreign.canonical, spaced, b"not json", b"{}"]
    result = store.merge(batch, received_ms=NOW)
    assert statuses(result) == [REJECTED] * 5
    codes = [o.error["error"] for o in result.outcomes if o.error]
    assert codes == [
        "SignatureError",
        "FederationMismatchError",
        "NonCanonicalError",
        "MalformedJsonError",
        "SchemaError",
    ]
    assert result.outcomes[0].author == FOUNDERS[0].public and result.outcomes[0].seq == 1
    assert list(store.all_records()) == [] and store.stats(now_ms=NOW)["pending"] == 0
    assert statuses(store.merge([good.canonical], received_ms=NOW)) == [ACCEPTED]


def test_gap_records_wait_and_merge_when_the_gap_fills(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    records = chain(FOUNDERS[0], [sig(n) for n in range(1, 7)])
    held = store.merge([r.canonical for r in records[2:]], received_ms=NOW)
    assert statuses(held) == [PENDING] * 4 and not held.accepted
    assert store.stats(now_ms=NOW)["pending"] == 4 and store.head(FOUNDERS[0].public) is None
    again = store.merge([records[3].canonical], received_ms=NOW)
    assert statuses(again) == [PENDING] and store.stats(now_ms=NOW)["pending"] == 4
    filled = store.merge([records[1].canonical, records[0].canonical], received_ms=NOW)
    assert statuses(filled) == [ACCEPTED, ACCEPTED]  # seq 2 waited for seq 1 in this batch
    assert [r.seq for r in filled.accepted] == [1, 2, 3, 4, 5, 6]
    assert store.head(FOUNDERS[0].public).seq == 6
    assert store.stats(now_ms=NOW)["pending"] == 0
    assert store.log(FOUNDERS[0].public, after=2) == [r.canonical for r in records[2:]]
    assert_matches_fold(store, {})


def test_pending_records_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.store.merge, "MAX_PENDING_PER_AUTHOR", 2)
    store = new_store(tmp_path)
    records = chain(FOUNDERS[0], [sig(n) for n in range(1, 6)])
    result = store.merge([r.canonical for r in records[1:]], received_ms=NOW)
    assert statuses(result) == [PENDING, PENDING, REJECTED, REJECTED]
    assert result.outcomes[2].error["error"] == "SeqGapError"
    assert "limit (2)" in result.outcomes[2].error["detail"]


def test_broken_prev_link_is_rejected(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    first = chain(FOUNDERS[0], [sig(1)])
    stray = chain(FOUNDERS[0], [sig(2)], start=2, prev="cd" * 32)
    result = store.merge([first[0].canonical, stray[0].canonical], received_ms=NOW)
    assert statuses(result) == [ACCEPTED, REJECTED]
    assert result.outcomes[1].error["error"] == "PrevMismatchError"


def test_fork_is_kept_as_evidence_and_freezes_the_author(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    mine = chain(FOUNDERS[0], [sig(1), sig(2), sig(3), sig(4), sig(5)])
    first = store.merge([r.canonical for r in mine[:3] + mine[4:]], received_ms=NOW)
    assert store.stats(now_ms=NOW)["pending"] == 1
    assert first.forks == [] and first.membership is None  # nothing changed who counts
    twin = chain(FOUNDERS[0], [sig(99)], start=2, prev=mine[0].id)[0]
    result = store.merge([twin.canonical], received_ms=NOW)
    assert statuses(result) == [ACCEPTED] and result.accepted == [twin]
    assert result.forks == [fork_evidence(mine[1], twin)]  # the merge says it was a fork
    assert result.membership is not None
    assert result.membership.freezes[FOUNDERS[0].public] == (1, "fork")
    assert not result.membership.is_peer_key(FOUNDERS[0].public)
    assert {(c.id, c.active) for c in result.signal_changes} == {
        (mine[1].id, False),
        (mine[2].id, False),
    }
    assert store.stats(now_ms=NOW)["pending"] == 0  # seq 5 can never count now
    [proof] = store.forks()
    assert (proof.author, proof.seq) == (FOUNDERS[0].public, 2)
    assert {proof.first.id, proof.second.id} == {mine[1].id, twin.id}
    late = store.merge([mine[3].canonical, twin.canonical], received_ms=NOW)
    assert statuses(late) == [REJECTED, DUPLICATE] and late.forks == []
    assert late.outcomes[0].error["error"] == "MembershipError"
    assert [s["id"] for s in store.signals(now_ms=NOW, active=True)] == [mine[0].id]
    assert_matches_fold(store, {})


def test_a_fork_found_among_held_records_is_reported(tmp_path: Path) -> None:
    """Two records at one seq beyond a gap wait in pending; the record that fills the gap
    promotes both, and the merge that stores the second reports the fork."""
    store = new_store(tmp_path)
    mine = chain(FOUNDERS[0], [sig(1), sig(2), sig(3)])
    twin = chain(FOUNDERS[0], [sig(33)], start=3, prev=mine[1].id)[0]
    held = store.merge([mine[2].canonical, twin.canonical], received_ms=NOW)
    assert statuses(held) == [PENDING, PENDING] and held.forks == []
    result = store.merge([r.canonical for r in mine[:2]], received_ms=NOW)
    assert [(f.author, f.seq) for f in result.forks] == [(FOUNDERS[0].public, 3)]
    assert result.membership is not None
    assert result.membership.freezes[FOUNDERS[0].public] == (2, "fork")
    assert_matches_fold(store, {})


def test_admission_and_the_new_members_records_in_one_batch_any_order(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    newcomer = key(10)
    admit = VoteBody("admit", newcomer.public, name="newcomer", role="member")
    votes = [chain(FOUNDERS[i], [admit])[0] for i in (0, 1)]
    theirs = chain(newcomer, [sig(1), sig(2)])
    batch = [r.canonical for r in [theirs[1], theirs[0], votes[0], votes[1]]]
    result = store.merge(batch, received_ms=NOW)
    assert statuses(result) == [ACCEPTED] * 4
    assert store.membership().identity_of(newcomer.public).name == "newcomer"
    assert_matches_fold(store, {})


def test_records_of_non_members_are_rejected_and_not_stored(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    stranger = chain(key(20), [sig(1)])[0]
    result = store.merge([stranger.canonical], received_ms=NOW)
    assert statuses(result) == [REJECTED]
    assert result.outcomes[0].error["error"] == "MembershipError"
    assert "not a member" in result.outcomes[0].error["detail"]
    assert store.record(stranger.id) is None and store.heads() == []


def test_admission_undone_by_a_voters_fork_deactivates_the_newcomer(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    newcomer = key(11)
    admit = VoteBody("admit", newcomer.public, name="newcomer", role="member")
    voter_a = chain(FOUNDERS[0], [admit])
    voter_b = chain(FOUNDERS[1], [sig(1), admit])
    theirs = chain(newcomer, [sig(2), sig(3)])
    store.merge([r.canonical for r in voter_a + voter_b + theirs], received_ms=NOW)
    assert len(store.signals(now_ms=NOW, active=True)) == 3
    twin = chain(FOUNDERS[1], [sig(9)], start=2, prev=voter_b[0].id)[0]  # b forks its vote
    result = store.merge([twin.canonical], received_ms=NOW)
    assert {(c.id, c.active) for c in result.signal_changes} == {
        (theirs[0].id, False),
        (theirs[1].id, False),
    }
    assert store.membership().identity_of(newcomer.public) is None
    assert store.log(newcomer.public) == [r.canonical for r in theirs]  # kept, not counted
    assert_matches_fold(store, {})


def test_removal_freezes_the_member_at_the_named_seq(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    target = chain(FOUNDERS[2], [sig(1), sig(2), sig(3)])
    store.merge([r.canonical for r in target], received_ms=NOW)
    remove = VoteBody("remove", FOUNDERS[2].public, after=1)
    votes = [chain(FOUNDERS[i], [remove])[0] for i in (0, 1)]
    result = store.merge([v.canonical for v in votes], received_ms=NOW)
    assert {(c.id, c.active) for c in result.signal_changes} == {
        (target[1].id, False),
        (target[2].id, False),
    }
    assert store.membership().freezes[FOUNDERS[2].public] == (1, "removed")
    assert result.membership == store.membership()  # the merge carries the new membership
    assert not result.membership.is_peer_key(FOUNDERS[2].public)
    later = chain(FOUNDERS[2], [sig(4)], start=4, prev=target[2].id)[0]
    assert statuses(store.merge([later.canonical], received_ms=NOW)) == [REJECTED]
    assert_matches_fold(store, {})


def test_rotation_continues_the_member_under_the_new_key(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    new_key = key(12)
    old_log = chain(FOUNDERS[0], [sig(1), rotation(new_key, fed=FED.id, old=FOUNDERS[0].public)])
    new_log = chain(new_key, [RetractBody(old_log[0].id), sig(2)])
    result = store.merge([r.canonical for r in new_log + old_log], received_ms=NOW)
    assert statuses(result) == [ACCEPTED] * 4
    [active] = store.signals(now_ms=NOW, active=True)
    assert (active["id"], active["author"], active["member"]) == (
        new_log[1].id, new_key.public, FOUNDERS[0].public,
    )  # fmt: skip
    late = chain(FOUNDERS[0], [sig(3)], start=3, prev=old_log[1].id)[0]
    assert statuses(store.merge([late.canonical], received_ms=NOW)) == [REJECTED]
    assert_matches_fold(store, {})


# -- opening -------------------------------------------------------------------------------


def test_open_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(StoreRefusedError, match="not an SQLite database"):
        Store.open(path, FED)
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(StoreRefusedError, match="empty file"):
        Store.open(tmp_path / "empty.db", FED)
    with pytest.raises(StoreError, match="no node database"):
        Store.open(tmp_path / "missing.db", FED)


def test_open_refuses_a_corrupt_database(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    path = tmp_path / "node.db"
    data = bytearray(path.read_bytes())
    data[100:4096] = random.Random(2).randbytes(4096 - 100)  # the schema page, header intact
    path.write_bytes(bytes(data))
    with pytest.raises(StoreRefusedError, match="corrupt"):
        Store.open(path, FED)


def test_check_refuses_damage_deep_in_the_file(tmp_path: Path) -> None:
    with new_store(tmp_path) as store:
        store.merge([r.canonical for r in chain(FOUNDERS[0], [sig(n) for n in range(300)])],
                    received_ms=NOW)  # fmt: skip
    path = tmp_path / "node.db"
    data = bytearray(path.read_bytes())
    page = 16384  # node.store.schema.PAGE_SIZE: zero a page's header, not its free space
    middle = len(data) // page // 2 * page
    data[middle : middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreRefusedError, match="corrupt"):
        Store.open(path, FED, check=True)


def test_open_refuses_a_newer_schema(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "node.db")
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
        "VALUES ('hashmesh', '0099_future', 'later')"
    )
    conn.commit()
    conn.close()
    with pytest.raises(StoreRefusedError, match=r"newer hashmesh.*0099_future"):
        Store.open(tmp_path / "node.db", FED)
    with pytest.raises(StoreRefusedError, match="newer hashmesh"):
        Store.open(tmp_path / "node.db", FED, readonly=True)


def test_open_refuses_a_newer_schema_version(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "node.db")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreRefusedError, match="schema version 2"):
        Store.open(tmp_path / "node.db", FED)


def test_open_refuses_another_federation(tmp_path: Path) -> None:
    new_store(tmp_path).close()
    other = make_federation(FOUNDERS, 2, name="other")
    with pytest.raises(StoreRefusedError, match=f"belongs to federation {FED.id}"):
        Store.open(tmp_path / "node.db", other)


def test_open_refuses_a_foreign_sqlite_file(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreRefusedError, match=r"not a hashmesh database.*photos"):
        Store.open(tmp_path / "other.db", FED, create=True)


def test_reopen_keeps_everything_and_readers_follow_the_writer(tmp_path: Path) -> None:
    records = chain(FOUNDERS[0], [sig(1), sig(2)])
    with new_store(tmp_path) as store:
        store.merge([records[0].canonical], received_ms=NOW)
        reader = Store.open(tmp_path / "node.db", FED, readonly=True)
        assert [h.seq for h in reader.heads()] == [1]
        store.merge([records[1].canonical], received_ms=NOW)
        assert [h.seq for h in reader.heads()] == [2]
        assert reader.membership().limits[FOUNDERS[0].public] == 2
        with pytest.raises(StoreError, match="read-only"):
            reader.merge([records[0].canonical], received_ms=NOW)
        reader.close()
    with Store.open(tmp_path / "node.db", FED) as again:
        assert statuses(again.merge([records[1].canonical], received_ms=NOW)) == [DUPLICATE]
        assert again.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- local records and queries ---------------------------------------------------------------


def test_append_local_extends_the_own_log(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    first = store.append_local(FOUNDERS[1], sig(1, "entity:alpha"), ts=T0)
    second = store.append_local(FOUNDERS[1], OpinionBody("ab" * 32, "confirm"), ts=T0 + 1)
    assert (first.seq, second.seq, second.prev) == (1, 2, first.id)
    assert store.log(FOUNDERS[1].public) == [first.canonical, second.canonical]
    with pytest.raises(LocalProtocolError, match="not a member"):
        store.append_local(key(30), sig(2), ts=T0)
    result = store.append_local_result(FOUNDERS[1], RetractBody(first.id), ts=T0 + 2)
    assert [(c.id, c.active) for c in result.signal_changes] == [(first.id, False)]


def test_authoring_refusals_sign_nothing(tmp_path: Path) -> None:
    """Every write path ends in append_local, which asks protocol.authoring first: a refused
    body is never signed, and the store is as it was (issue 14: already retracted, already
    voted, own signal)."""
    store = new_store(tmp_path)
    a, b = FOUNDERS[0], FOUNDERS[1]
    mine = store.append_local(a, sig(1, "entity:alpha"), ts=T0)
    gone = store.append_local(a, sig(2), ts=T0)
    store.append_local(a, RetractBody(gone.id), ts=T0)
    admit = VoteBody("admit", key(31).public, name="newcomer", role="member")
    store.append_local(a, admit, ts=T0)
    before = (store.heads(), store.materialised_state(now_ms=NOW))
    refused = [
        (a, RetractBody(gone.id), AlreadyRetractedError),
        (a, OpinionBody(mine.id, "confirm"), OwnSignalError),
        (b, OpinionBody(gone.id, "dispute"), AlreadyRetractedError),
        (a, admit, AlreadyVotedError),
        (b, RetractBody(mine.id), NotContributorError),
        (b, RetractBody("ab" * 32), UnknownSignalError),
        (a, sig(3, "spam"), InvalidLabelError),
        (key(30), sig(3), NotAMemberError),
    ]
    for author, body, error in refused:
        with pytest.raises(error):
            store.append_local(author, body, ts=T0)
    assert (store.heads(), store.materialised_state(now_ms=NOW)) == before
    store.append_local(b, OpinionBody(mine.id, "dispute"), ts=T0)  # another member's: fine
    assert store.signal(mine.id, now_ms=NOW)["tallies"]["dispute"] == 1


def test_signal_queries(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    a = chain(FOUNDERS[0], [sig(1, "entity:alpha"), sig(2, "entity:beta", expires=NOW - 1)])
    b = chain(FOUNDERS[1], [sig(1, "entity:alpha", "incident:7")])
    c = chain(FOUNDERS[2], [OpinionBody(a[0].id, "confirm"), OpinionBody(a[0].id, "dispute")])
    d = chain(FOUNDERS[0], [OpinionBody(a[0].id, "seen")], start=3, prev=a[1].id)
    store.merge([r.canonical for r in a + b + c + d], received_ms=NOW)
    hits = store.lookup("sha256", f"{1:064x}", now_ms=NOW)
    assert sorted(h["id"] for h in hits) == sorted([a[0].id, b[0].id])
    hit = next(h for h in hits if h["id"] == a[0].id)
    assert hit["tallies"] == {"confirm": 0, "dispute": 1, "seen": 0}  # d: on its own signal
    assert (hit["member_name"], hit["labels"], hit["status"]) == ("founder-0", ["entity:alpha"],
                                                                  "active")  # fmt: skip
    assert hit["author"] == hit["member"] == FOUNDERS[0].public and hit["seq"] == 1
    assert store.lookup("sha256", f"{2:064x}", now_ms=NOW) == []
    assert store.signal(a[1].id, now_ms=NOW)["status"] == "expired"
    assert store.signal(a[1].id, now_ms=NOW - 2)["status"] == "active"
    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert ids(store.signals(now_ms=NOW)) == [b[0].id, a[1].id, a[0].id]
    assert ids(store.signals(now_ms=NOW, label="entity:alpha")) == [b[0].id, a[0].id]
    assert ids(store.signals(now_ms=NOW, member=FOUNDERS[0].public)) == [a[1].id, a[0].id]
    assert ids(store.signals(now_ms=NOW, active=False)) == [a[1].id]
    assert ids(store.signals(now_ms=NOW, type="md5")) == []
    assert ids(store.signals(now_ms=NOW, limit=1, offset=1)) == [a[1].id]
    rows = {s["id"]: s["row"] for s in store.signals(now_ms=NOW)}
    found = store.signal_rows([rows[b[0].id], 999, rows[a[0].id]], now_ms=NOW)
    assert ids(found) == [b[0].id, a[0].id]
    assert sorted(store.active_signals_for_index(now_ms=NOW)) == sorted(
        [(rows[a[0].id], "sha256", f"{1:064x}"), (rows[b[0].id], "sha256", f"{1:064x}")]
    )
    assert store.find_own_signal(FOUNDERS[0].public, "sha256", f"{1:064x}") == a[0].id
    assert store.find_own_signal(FOUNDERS[2].public, "sha256", f"{1:064x}") is None
    assert store.find_own_signal(FOUNDERS[0].public, "sha256", f"{2:064x}", now_ms=NOW) is None
    assert store.stats(now_ms=NOW) == {
        "records": 6, "authors": 3, "signals": 3, "active_signals": 2, "forks": 0,
        "pending": 0, "members": 3,
    }  # fmt: skip
    assert store.record(a[0].id) == a[0].canonical and store.record("zz") is None


def test_the_active_filter_is_the_protocol_rule(tmp_path: Path) -> None:
    """``store_read.ACTIVE`` (SQL, for listings and the index) decides as
    ``protocol.fold.is_active`` does, at every time around each expiry."""
    store = new_store(tmp_path)
    bodies = [sig(n, expires=e) for n, e in enumerate([None, NOW - 1, NOW, NOW + 1, None, NOW])]
    a = chain(FOUNDERS[0], bodies)
    retracts = chain(FOUNDERS[0], [RetractBody(a[4].id), RetractBody(a[5].id)], start=7,
                     prev=a[-1].id)  # fmt: skip
    store.merge([r.canonical for r in a + retracts], received_ms=NOW)
    for now in (NOW - 2, NOW - 1, NOW, NOW + 1, NOW + 2):
        rows = store.signals(now_ms=now, limit=100)
        expected = {r["id"] for r in rows if is_active(r["expires"], r["retracted_by"] is not None,
                                                       now)}  # fmt: skip
        assert {r["id"] for r in store.signals(now_ms=now, active=True)} == expected
        assert {r["id"] for r in rows if r["status"] == "active"} == expected
        assert len(list(store.active_signals_for_index(now_ms=now))) == len(expected)
        assert store.stats(now_ms=now)["active_signals"] == len(expected)


def test_endpoints_are_the_latest_announcements(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    first = AnnounceBody("node a", ("https://a.example/",))
    second = AnnounceBody("node a2", ("https://a2.example/",), tls="ef" * 32)
    records = chain(FOUNDERS[0], [first, second])
    store.merge([r.canonical for r in reversed(records)], received_ms=NOW)
    assert store.endpoints() == [
        {"member": FOUNDERS[0].public, "name": "node a2", "urls": ["https://a2.example/"],
         "tls": "ef" * 32, "record": records[1].id}
    ]  # fmt: skip


def test_peers_and_meta(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.upsert_peer("https://a.example", failures=1, member=FOUNDERS[0].public)
    store.upsert_peer("https://a.example", failures=2)
    assert store.peers() == [
        {"url": "https://a.example", "failures": 2, "member": FOUNDERS[0].public}
    ]
    store.set_meta("listen", "127.0.0.1:8080")
    assert store.get_meta("listen") == "127.0.0.1:8080" and store.get_meta("nope") is None
    assert store.get_meta("federation_id") == FED.id
    with pytest.raises(StoreError, match="managed by the store"):
        store.set_meta("federation_id", "x")


# -- verification workers and the async wrapper ----------------------------------------------


def test_verify_workers_give_the_same_result(tmp_path: Path) -> None:
    records = chain(FOUNDERS[0], [sig(n) for n in range(1, 400)])
    datas = [r.canonical for r in records]
    datas[7] = datas[7].replace(b'"v":1', b'"v":2')
    datas.insert(50, datas[3])
    shuffled = datas[:100] + datas[300:] + datas[100:300]
    inline = new_store(tmp_path, name="inline.db").merge(shuffled, received_ms=NOW)
    pool_store = new_store(tmp_path, name="pool.db")
    pooled = pool_store.merge(shuffled, received_ms=NOW, verify_workers=2)
    pool_store.close()
    assert pooled.outcomes == inline.outcomes and pooled.accepted == inline.accepted
    assert pooled.counts() == {"accepted": 7, "duplicate": 1, "pending": 391, "rejected": 1}


def test_merge_many_pipelines_batches_with_the_same_results(tmp_path: Path) -> None:
    records = chain(FOUNDERS[0], [sig(n) for n in range(1, 301)])
    datas = [r.canonical for r in records]
    batches = [datas[200:], datas[:100], datas[100:200], datas[:50]]
    with new_store(tmp_path, name="one.db") as one:
        expected = [one.merge(b, received_ms=NOW).outcomes for b in batches]
    with new_store(tmp_path, name="many.db") as many:
        results = many.merge_many(iter(batches), received_ms=NOW, verify_workers=2)
        assert [r.outcomes for r in results] == expected
        assert many.head(FOUNDERS[0].public).seq == 300


def test_async_store(tmp_path: Path) -> None:
    records = chain(FOUNDERS[0], [sig(n) for n in range(1, 300)])

    async def scenario() -> None:
        store = AsyncStore(tmp_path / "node.db", FED, create=True, verify_workers=1)
        await store.open()
        try:
            result = await store.merge([r.canonical for r in records], received_ms=NOW)
            assert result.counts()["accepted"] == 299
            own = await store.append_local(FOUNDERS[1], sig(5), ts=T0)
            heads = await asyncio.gather(*(store.read(Store.heads) for _ in range(8)))
            assert all(len(h) == 2 for h in heads)
            assert await store.read(lambda s: s.record(own.id)) == own.canonical
            assert await store.write(lambda s: s.head(FOUNDERS[1].public).seq) == 1
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_group_of_prepared_batches_is_one_merge(tmp_path: Path) -> None:
    """finish_merge of several prepared batches (a pull's group of pages): one result indexed
    through the group, the same as merging the concatenation, pool and inline batches mixed;
    a gap left by one batch is filled by a later one of the same group."""
    records = chain(FOUNDERS[0], [sig(n) for n in range(1, 701)])
    datas = [r.canonical for r in records]
    datas[400] = datas[400].replace(b'"v":1', b'"v":2')  # fails verification
    batches = [datas[300:600], datas[:10], datas[10:300], datas[5:8], datas[600:]]
    with new_store(tmp_path, name="flat.db") as flat:
        expected = flat.merge([d for b in batches for d in b], received_ms=NOW)
    with new_store(tmp_path, name="group.db") as grouped:
        prepared = [grouped.prepare_merge(b, verify_workers=2 if len(b) > 50 else 0)
                    for b in batches]  # fmt: skip
        result = grouped.finish_merge(prepared, received_ms=NOW)
        assert result.outcomes == expected.outcomes
        assert [o.index for o in result.outcomes] == list(range(sum(map(len, batches))))
        assert result.counts() == expected.counts()
        assert grouped.head(FOUNDERS[0].public).seq == 400
        assert_matches_fold(grouped, {})


def test_a_failing_group_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction for the whole group: if writing it fails, no batch of it is stored."""
    records = chain(FOUNDERS[0], [sig(n) for n in range(1, 21)])
    datas = [r.canonical for r in records]

    def disk_full(self: node.store.merge.Merger) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with new_store(tmp_path) as store:
        prepared = [store.prepare_merge(datas[:10]), store.prepare_merge(datas[10:])]
        with monkeypatch.context() as patch:
            patch.setattr(node.store.merge.Merger, "_write_heads", disk_full)
            with pytest.raises(sqlite3.OperationalError):
                store.finish_merge(prepared, received_ms=NOW)
        assert store.head(FOUNDERS[0].public) is None
        assert store.stats(now_ms=NOW)["records"] == 0
        assert store.merge(datas, received_ms=NOW).counts()["accepted"] == 20


def test_stats_stay_exact_while_they_are_kept(tmp_path: Path) -> None:
    """Counts are kept between calls only while exact: a commit by this connection or another
    one, an active signal's expiry passing, or the clock going back makes them recount."""
    a, b = FOUNDERS[0], FOUNDERS[1]
    with new_store(tmp_path) as writer, Store.open(tmp_path / "node.db", FED, readonly=True) as r:
        writer.merge([x.canonical for x in chain(a, [sig(1, expires=NOW + 10), sig(2)])],
                     received_ms=NOW)  # fmt: skip
        assert r.stats(now_ms=NOW)["active_signals"] == 2
        assert r.stats(now_ms=NOW + 9)["active_signals"] == 2
        assert r.stats(now_ms=NOW + 10)["active_signals"] == 1  # the expiry passed
        assert r.stats(now_ms=NOW + 5)["active_signals"] == 2  # the clock went back
        assert writer.stats(now_ms=NOW)["signals"] == 2
        writer.merge([x.canonical for x in chain(b, [sig(3)])], received_ms=NOW)
        assert writer.stats(now_ms=NOW)["signals"] == 3  # its own commit
        assert r.stats(now_ms=NOW + 5)["signals"] == 3  # another connection's commit
        assert r.stats(now_ms=NOW + 5) == writer.stats(now_ms=NOW + 5)
        counted = r.stats(now_ms=NOW + 5)
        counted["signals"] = -1  # a caller's copy: the kept counts are not changed
        assert r.stats(now_ms=NOW + 5)["signals"] == 3


def test_a_closed_store_starts_no_verification(tmp_path: Path) -> None:
    """prepare_merge may run on another thread than close(): after close it refuses instead of
    starting a pool that nothing would shut down."""
    records = [r.canonical for r in chain(FOUNDERS[0], [sig(n) for n in range(1, 5)])]
    store = new_store(tmp_path)
    store.prepare_merge(records, verify_workers=1).job.cancel()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.prepare_merge(records, verify_workers=1)
    assert store._pool is None
