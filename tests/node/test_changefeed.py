"""The change feed against real SQLite files: replaying it from any cursor reproduces the
node's active list, through random histories (forks, votes, rotations, retractions, opinions,
expiries) merged in random batches as time passes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import T0, key, make_federation, random_history

from node.store.store import Store, changefeed
from protocol import OpinionBody, RetractBody, SignalBody, sign_record

STEP_MS = 40_000  # histories' expiries fall within T0 - 5 s .. T0 + 500 s


def active_list(store: Store, now_ms: int) -> dict[str, dict[str, Any]]:
    """What a follower should hold: every active signal with its state (tallies included)."""
    found: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        page = store.signals(now_ms=now_ms, active=True, limit=1000, offset=offset)
        found.update({str(s["id"]): s for s in page})
        if len(page) < 1000:
            return found
        offset += 1000


def replay(store: Store, held: dict[str, dict[str, Any]], after: int, now_ms: int) -> int:
    """Apply the feed after a cursor to a follower's copy, page by page; the last cursor."""
    store.sweep_expiries(now_ms)
    while True:
        page = store.changes(after, 7, now_ms=now_ms)
        changes: list[dict[str, Any]] = page["changes"]  # type: ignore[assignment]
        for change in changes:
            signal = change["signal"]
            if signal is not None and signal["status"] == "active":
                held[change["id"]] = signal
            else:
                held.pop(change["id"], None)
            after = change["cursor"]
        if not changes:
            return after


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rng=st.randoms(use_true_random=False),
    founders=st.integers(3, 4),
    threshold=st.integers(1, 2),
    steps=st.integers(5, 40),
)
def test_replaying_the_feed_from_any_cursor_reproduces_the_active_list(
    tmp_path_factory: pytest.TempPathFactory,
    rng: random.Random,
    founders: int,
    threshold: int,
    steps: int,
) -> None:
    federation = make_federation([key(n) for n in range(1, founders + 1)], threshold)
    history = random_history(rng, federation, steps)
    datas = [r.canonical for r in history.records]
    rng.shuffle(datas)
    path = tmp_path_factory.mktemp("feed") / "node.db"
    checkpoints: list[tuple[int, dict[str, dict[str, Any]], int]] = []
    with Store.open(path, federation, create=True) as store:
        now = T0 - 10_000
        while datas:
            size = rng.randint(1, 10)
            batch, datas = datas[:size], datas[size:]
            now += rng.randint(0, STEP_MS)
            store.merge(batch, received_ms=now)
            store.sweep_expiries(now)
            checkpoints.append((changefeed.last_cursor(store.conn), active_list(store, now), now))
        end = now + 10**9  # every expiry has passed
        expected = active_list(store, end)
        from_zero: dict[str, dict[str, Any]] = {}
        replay(store, from_zero, 0, end)
        assert from_zero == expected
        for cursor, held, _ in checkpoints:
            follower = {k: dict(v) for k, v in held.items()}
            replay(store, follower, cursor, end)
            diff = {
                k: (follower.get(k), expected.get(k))
                for k in follower.keys() | expected.keys()
                if follower.get(k) != expected.get(k)
            }
            assert follower == expected, (cursor, diff)


def test_entries_name_what_happened_and_carry_the_state_now(tmp_path: Path) -> None:
    founders = [key(1), key(2)]
    federation = make_federation(founders, threshold=1)
    with Store.open(tmp_path / "node.db", federation, create=True) as store:
        epoch, start = store.feed_position()
        assert len(epoch) == 16 and start == 0
        lasting = store.append_local(key(1), SignalBody("md5", "a" * 32), ts=T0)
        brief = store.append_local(key(1), SignalBody("md5", "b" * 32, (), None, T0 + 500), ts=T0)
        opinion = sign_record(key(2), fed=federation.id, seq=1, prev=None, ts=T0 + 1,
                              body=OpinionBody(lasting.id, "confirm"))  # fmt: skip
        store.merge([opinion.canonical], received_ms=T0 + 1)
        assert store.sweep_expiries(T0 + 499) == 0
        assert store.sweep_expiries(T0 + 1_000) == 1
        assert store.sweep_expiries(T0 + 2_000) == 0  # once
        page = store.changes(0, 100, now_ms=T0 + 2_000)
        kinds = [(c["id"], c["kind"]) for c in page["changes"]]  # type: ignore[index, union-attr]
        assert kinds == [(lasting.id, "active"), (brief.id, "active"), (lasting.id, "opinion"),
                         (brief.id, "expired")]  # fmt: skip
        entries: list[dict[str, Any]] = page["changes"]  # type: ignore[assignment]
        assert entries[2]["signal"]["tallies"]["confirm"] == 1
        assert entries[3]["ts"] == T0 + 500 and entries[3]["signal"]["status"] == "expired"
        assert page["last"] == entries[-1]["cursor"] and page["epoch"] == epoch
    with Store.open(tmp_path / "node.db", federation) as reopened:
        assert reopened.feed_position() == (epoch, entries[-1]["cursor"])
    with Store.open(tmp_path / "other.db", federation, create=True) as other:
        assert other.feed_position()[0] != epoch  # a new database, a new epoch


class _Follower:
    """A follower's copy, kept current by replaying the feed from its last cursor."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, Any]] = {}
        self.cursor = 0

    def catch_up(self, store: Store, now_ms: int) -> set[str]:
        self.cursor = replay(store, self.held, self.cursor, now_ms)
        return set(self.held)


def test_a_fork_that_drops_an_expired_but_unswept_signal_enters_it(tmp_path: Path) -> None:
    """Regression (the replay property's failing case): a merge freezes an author by a fork
    after its signal's expiry passed but before a read swept it; the feed must still say the
    signal went, since the sweep that comes later finds no row for it."""
    federation = make_federation([key(1), key(2)], threshold=1)
    with Store.open(tmp_path / "node.db", federation, create=True) as store:
        body = SignalBody("md5", "c" * 32, (), None, T0 + 500)
        first = sign_record(key(1), fed=federation.id, seq=1, prev=None, ts=T0, body=body)
        store.merge([first.canonical], received_ms=T0)
        follower = _Follower()
        assert follower.catch_up(store, T0 + 100) == {first.id}  # swept up to T0 + 100
        other = sign_record(key(1), fed=federation.id, seq=1, prev=None, ts=T0 + 1,
                            body=SignalBody("md5", "d" * 32))  # fmt: skip
        result = store.merge([other.canonical], received_ms=T0 + 1_000)  # expired, unswept
        assert result.forks
        assert follower.catch_up(store, T0 + 2_000) == set() == set(active_list(store, T0 + 2_000))


def test_retracting_an_expired_but_unswept_signal_enters_it(tmp_path: Path) -> None:
    """The same for a retraction: the sweep skips retracted signals, so the merge enters it."""
    federation = make_federation([key(1), key(2)], threshold=1)
    with Store.open(tmp_path / "node.db", federation, create=True) as store:
        signal = store.append_local(key(1), SignalBody("md5", "e" * 32, (), None, T0 + 500), ts=T0)
        follower = _Follower()
        assert follower.catch_up(store, T0 + 100) == {signal.id}
        retract = sign_record(key(1), fed=federation.id, seq=2, prev=signal.id, ts=T0 + 1_000,
                              body=RetractBody(signal.id))  # fmt: skip
        store.merge([retract.canonical], received_ms=T0 + 1_000)
        assert follower.catch_up(store, T0 + 2_000) == set()
