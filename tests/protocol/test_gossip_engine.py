"""The gossip engine alone (``protocol.gossip``): driven with events and a fake clock, its
actions asserted. No network, no store: a peer's answers are events the test writes."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

import pytest

from protocol import SignalBody, SigningKey, sign_record
from protocol.chain import ForkEvidence, Head
from protocol.gossip import (
    Action,
    FetchFrontier,
    FetchPage,
    ForksFound,
    FrontierAnswered,
    GossipEngine,
    GossipSettings,
    Outcome,
    PageReceived,
    PagesMerged,
    PeerAdded,
    PeerBackedOff,
    PeerDropped,
    PeerRemoved,
    PeersBarred,
    PeersLearned,
    Push,
    PushAnswered,
    PushLog,
    RecordsMerged,
    RequestFailed,
    SetTimer,
    StartSync,
    SyncFinished,
)
from protocol.records import Record
from protocol.sync import Frontier, LogRequest

FED = hashlib.sha256(b"test_gossip_engine").hexdigest()
OWN = SigningKey(bytes([1]) * 32)
OTHERS = [SigningKey(bytes([n]) * 32) for n in range(2, 8)]
URLS = [f"http://peer{n}.test/" for n in range(len(OTHERS))]
KEY_OF = {url: key.public for url, key in zip(URLS, OTHERS, strict=True)}
INTERVAL_MS = 2000
T = TypeVar("T")


def record(key: SigningKey, n: int = 0, seq: int = 1) -> Record:
    body = SignalBody("sha256", hashlib.sha256(f"{key.public}/{n}".encode()).hexdigest())
    prev = None if seq == 1 else "0" * 64
    return sign_record(key, fed=FED, seq=seq, prev=prev, ts=1, body=body)


def make_engine(
    urls: Sequence[str] = URLS, *, seed: int = 0, keys: bool = True, **settings: int | float
) -> GossipEngine:
    engine = GossipEngine(
        OWN.public, random.Random(seed), GossipSettings(**settings), own_url="http://own.test/"
    )
    for url in urls:
        engine.handle(0, PeerAdded(url, "config"))
    if keys:
        engine.handle(0, PeersLearned({url: KEY_OF[url] for url in urls}))
    return engine


def only(actions: Iterable[Action], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def timer(actions: Iterable[Action]) -> int:
    (found,) = only(actions, SetTimer)
    return found.at_ms


def heads(**seqs: int) -> dict[str, Head]:
    return {AUTHORS[name]: Head(AUTHORS[name], seq, f"{seq:064x}") for name, seq in seqs.items()}


AUTHORS = {"a": OTHERS[0].public, "b": OTHERS[1].public, "c": OTHERS[2].public}


def sync_to_frontier(engine: GossipEngine, url: str, now: int = 0) -> int:
    (start,) = only(engine.handle(now, StartSync(url)), FetchFrontier)
    return start.exchange


# ---- anti-entropy rounds -----------------------------------------------------------------------


def test_the_first_round_is_one_jittered_interval_after_start() -> None:
    starts = [timer(make_engine(seed=seed).tick(1000)) - 1000 for seed in range(200)]
    assert all(0.75 * INTERVAL_MS <= s <= 1.25 * INTERVAL_MS for s in starts)
    assert min(starts) < 0.85 * INTERVAL_MS and max(starts) > 1.15 * INTERVAL_MS  # jittered


def test_a_round_reconciles_with_one_random_peer_and_the_next_follows_its_end() -> None:
    engine = make_engine()
    due = timer(engine.tick(0))
    assert only(engine.tick(due - 1), FetchFrontier) == []
    (start,) = engine.tick(due)
    assert isinstance(start, FetchFrontier) and start.url in URLS
    assert engine.tick(due + 10 * INTERVAL_MS) == []  # one round at a time
    finished = engine.handle(due + 50, FrontierAnswered(start.exchange, start.url, None, {}))
    (done,) = only(finished, SyncFinished)
    assert (done.outcome, done.report.unchanged) == (Outcome.UNCHANGED, True)
    following = timer(finished) - (due + 50)
    assert 0.75 * INTERVAL_MS <= following <= 1.25 * INTERVAL_MS


def test_rounds_pick_every_available_peer_over_time_and_skip_backed_off_ones() -> None:
    engine = make_engine(URLS[:3], backoff_max_s=1000.0)
    now = timer(engine.tick(0))
    for _ in range(8):  # backed off for 256 s at least: longer than the rounds below
        ex = sync_to_frontier(engine, URLS[0], now)
        engine.handle(now, RequestFailed(URLS[0], ex, Outcome.UNREACHABLE, "unreachable: x"))
    picked = set()
    for _ in range(60):
        (start,) = only(engine.tick(now), FetchFrontier)
        picked.add(start.url)
        now = timer(engine.handle(now, FrontierAnswered(start.exchange, start.url, None, {})))
    assert picked == {URLS[1], URLS[2]}


def test_a_round_without_available_peers_is_planned_again() -> None:
    engine = make_engine([])
    due = timer(engine.tick(0))
    again = engine.tick(due)
    assert only(again, FetchFrontier) == []
    assert due + 0.75 * INTERVAL_MS <= timer(again) <= due + 1.25 * INTERVAL_MS


# ---- backoff -------------------------------------------------------------------------------------


def fail(engine: GossipEngine, url: str, failure: Outcome, now: int) -> PeerBackedOff:
    ex = sync_to_frontier(engine, url, now)
    actions = engine.handle(now, RequestFailed(url, ex, failure, f"{failure}: detail"))
    (done,) = only(actions, SyncFinished)
    assert (done.outcome, done.error) == (failure, f"{failure}: detail")
    (backoff,) = only(actions, PeerBackedOff)
    return backoff


def test_backoff_grows_exponentially_up_to_the_cap_and_a_success_resets_it() -> None:
    engine = make_engine(URLS[:1], backoff_max_s=30.0)
    url = URLS[0]
    for failures in range(1, 9):
        delay = fail(engine, url, Outcome.UNREACHABLE, now=1000).delay_ms
        full = min(30_000, INTERVAL_MS * 2**failures)
        assert full * 0.5 <= delay <= full
        peer = engine.peers[url]
        assert (peer.failures, peer.backoff_until_ms) == (failures, 1000 + delay)
        assert peer.last_error == "unreachable: detail"
        assert engine.available(1000 + delay - 1) == [] and engine.available(1000 + delay) == [url]
    ex = sync_to_frontier(engine, url, 5000)
    engine.handle(5000, FrontierAnswered(ex, url, None, {}))
    peer = engine.peers[url]
    assert (peer.failures, peer.backoff_until_ms, peer.last_error) == (0, 0, None)
    assert (peer.last_contact_ms, peer.last_attempt_ms) == (5000, 5000)


def test_a_peer_that_does_not_count_this_node_yet_is_retried_every_interval() -> None:
    """403 (not admitted yet): never more than one interval, however often it repeats."""
    engine = make_engine(URLS[:1])
    for failures in range(1, 12):
        delay = fail(engine, URLS[0], Outcome.NOT_COUNTED, now=0).delay_ms
        assert 0.5 * INTERVAL_MS <= delay <= INTERVAL_MS
        assert engine.peers[URLS[0]].failures == failures


def test_a_failed_push_backs_the_peer_off_and_a_good_one_resets_it() -> None:
    engine = make_engine(URLS[:2])
    engine.handle(0, RecordsMerged((record(OWN),), None))
    pushes = only(engine.tick(20), Push)
    assert {p.url for p in pushes} == set(URLS[:2])
    (backoff,) = only(
        engine.handle(30, RequestFailed(URLS[0], None, Outcome.UNREACHABLE, "push failed: x")),
        PeerBackedOff,
    )
    assert backoff.url == URLS[0] and engine.peers[URLS[0]].last_error == "push failed: x"
    engine.handle(30, PushAnswered(URLS[1], None, sent=1))
    assert engine.peers[URLS[1]].last_contact_ms == 30
    assert engine.available(31) == [URLS[1]]


# ---- eager push ----------------------------------------------------------------------------------


def push_targets(engine: GossipEngine, event: RecordsMerged | ForksFound, now: int = 0) -> set[str]:
    assert only(engine.handle(now, event), Push) == []  # nothing before the linger
    pushes = only(engine.tick(now + 20), Push)
    return {p.url for p in pushes}


def test_own_records_go_to_every_peer_and_relay_asks_of_them_are_asked_to_relay() -> None:
    asked: set[str] = set()
    for seed in range(30):
        engine = make_engine(seed=seed)  # relay_asks 3 of 6 peers
        actions = engine.handle(0, RecordsMerged((record(OWN),), None))
        assert timer(actions) == 20  # gathered for push_linger_ms
        pushes = only(engine.tick(20), Push)
        assert sorted(p.url for p in pushes) == URLS
        assert all(p.records == (record(OWN),) for p in pushes)
        relaying = {p.url for p in pushes if p.relay}  # the rest: ?relay=0
        assert len(relaying) == 3
        asked |= relaying
    assert asked == set(URLS)  # random peers: all of them over many records


@pytest.mark.parametrize(("peers", "asks", "relaying"), [(6, 0, 0), (6, 5, 5), (2, 3, 2)])
def test_relay_asks_bounds_how_many_peers_relay_own_records(
    peers: int, asks: int, relaying: int
) -> None:
    engine = make_engine(URLS[:peers], relay_asks=asks)
    engine.handle(0, RecordsMerged((record(OWN),), None))
    pushes = only(engine.tick(20), Push)
    assert len(pushes) == peers and sum(p.relay for p in pushes) == relaying


def test_others_records_and_fork_evidence_are_always_pushed_to_be_relayed() -> None:
    for seed in range(10):
        engine = make_engine(seed=seed, relay_asks=0)
        fork = ForkEvidence(record(OTHERS[0], 1), record(OTHERS[0], 2))
        engine.handle(0, ForksFound((fork,)))
        engine.handle(0, RecordsMerged((record(OTHERS[1]),), KEY_OF[URLS[3]]))
        assert all(p.relay for p in only(engine.tick(20), Push))


def test_a_backlog_mixing_relay_asks_goes_in_separate_pushes_each_author_in_order() -> None:
    """One push carries one relay flag: a peer asked to relay some records and not others
    gets them in two pushes, and an author's records never overtake each other."""
    engine = make_engine(URLS[:1], relay_asks=0, interval_s=100.0)
    url = URLS[0]
    engine.handle(0, RecordsMerged((record(OWN, 0),), None))
    (first,) = only(engine.tick(20), Push)
    assert first.relay is False
    # while it is in flight: own records (relay=0), a relayed record, an own record
    relayed = record(OTHERS[0], 5)
    engine.handle(30, RecordsMerged((record(OWN, 1),), None))
    engine.handle(30, RecordsMerged((relayed,), KEY_OF[URLS[3]]))
    engine.handle(30, RecordsMerged((record(OWN, 2),), None))
    engine.tick(50)
    assert engine.backlogs == {url: 3}
    (second,) = only(engine.handle(60, PushAnswered(url, None, sent=1)), Push)
    assert (second.records, second.relay) == ((record(OWN, 1), record(OWN, 2)), False)
    (third,) = only(engine.handle(70, PushAnswered(url, None, sent=2)), Push)
    assert (third.records, third.relay) == ((relayed,), True)


@pytest.mark.parametrize("seed", range(4))
def test_pushes_from_backlogs_with_changing_relay_asks_keep_each_authors_seq_order(
    seed: int,
) -> None:
    engine = make_engine(URLS[:2], seed=seed, relay_asks=1, interval_s=100.0)
    sent: dict[str, list[Push]] = {url: [] for url in URLS[:2]}
    own = [record(OWN, n, seq=n) for n in range(1, 41)]
    relayed = [record(OTHERS[0], n, seq=n) for n in range(1, 41)]
    now = 0
    for n in range(40):  # one own and one relayed record every 10 ms, answers every 50 ms
        engine.handle(now, RecordsMerged((own[n],), None))
        engine.handle(now, RecordsMerged((relayed[n],), KEY_OF[URLS[3]]))
        actions = engine.tick(now + 5)
        if n % 5 == 4:
            for url in URLS[:2]:
                if sent[url]:
                    actions += engine.handle(now + 5, PushAnswered(url, None, sent=1))
        for push in only(actions, Push):
            sent[push.url].append(push)
        now += 10
    for _ in range(20):  # drain
        actions = engine.tick(now)
        for url in URLS[:2]:
            actions += engine.handle(now, PushAnswered(url, None, sent=1))
        for push in only(actions, Push):
            sent[push.url].append(push)
        now += 10
    assert engine.queued == 0 and engine.backlogs == {}
    for url, pushes in sent.items():
        got = [r for p in pushes for r in p.records]
        assert [r for r in got if r.author == OWN.public] == own, url
        assert [r for r in got if r.author != OWN.public] == relayed, url
        assert {p.relay for p in pushes} == {True, False}


def test_a_record_from_its_author_is_relayed_to_one_peer_never_back() -> None:
    author_url = URLS[0]
    for seed in range(40):
        engine = make_engine(seed=seed)
        targets = push_targets(engine, RecordsMerged((record(OTHERS[0]),), KEY_OF[author_url]))
        assert len(targets) == 1 and author_url not in targets


def test_a_relayed_record_goes_to_fanout_peers_never_back_to_the_relay() -> None:
    relay_url = URLS[1]
    seen: set[str] = set()
    for seed in range(40):
        engine = make_engine(seed=seed, fanout=3)
        targets = push_targets(engine, RecordsMerged((record(OTHERS[0]),), KEY_OF[relay_url]))
        assert len(targets) == 3 and relay_url not in targets
        seen |= targets
    assert seen == set(URLS) - {relay_url}  # random peers: all of them over many records


def test_a_record_pulled_from_a_url_is_not_pushed_back_to_that_url() -> None:
    engine = make_engine(URLS[:2], fanout=5)
    assert push_targets(engine, RecordsMerged((record(OTHERS[3]),), URLS[0])) == {URLS[1]}


def test_records_merged_without_relay_are_not_pushed() -> None:
    engine = make_engine()
    assert engine.handle(0, RecordsMerged((record(OWN),), URLS[0], relay=False)) == []
    assert only(engine.tick(100), Push) == [] and engine.queued == 0


def test_fork_evidence_goes_to_every_peer_also_the_one_it_came_from() -> None:
    engine = make_engine()
    fork = ForkEvidence(record(OTHERS[0], 1), record(OTHERS[0], 2))
    engine.handle(0, ForksFound((fork,)))
    pushes = only(engine.tick(20), Push)
    assert sorted(p.url for p in pushes) == URLS
    assert all(set(p.records) == {fork.first, fork.second} for p in pushes)


def test_each_peer_has_one_push_in_flight_and_gets_its_backlog_when_it_answers() -> None:
    engine = make_engine(URLS[:2], push_batch_records=3)
    mine = [record(OWN, n) for n in range(5)]
    engine.handle(0, RecordsMerged(tuple(mine), None))
    first = only(engine.tick(20), Push)
    assert [(p.url, p.records) for p in first] == [(URLS[0], tuple(mine[:3])),
                                                   (URLS[1], tuple(mine[:3]))]  # fmt: skip
    assert engine.queued == 2
    # the rest is routed after one more linger, not held until the answers: it waits in
    # each peer's backlog while that peer's push is in flight
    assert only(engine.tick(40), Push) == [] and engine.queued == 0
    assert timer(engine.handle(45, RecordsMerged((record(OWN, 9),), None))) == 65
    assert only(engine.tick(65), Push) == []
    assert engine.backlogs == {URLS[0]: 3, URLS[1]: 3}
    (second,) = only(engine.handle(100, PushAnswered(URLS[0], None, sent=3)), Push)
    assert second == Push(URLS[0], (*mine[3:], record(OWN, 9)))  # in the order merged
    # a failed push backs its peer off and drops its backlog: anti-entropy repairs it
    actions = engine.handle(110, RequestFailed(URLS[1], None, Outcome.UNREACHABLE, "x"))
    assert only(actions, Push) == [] and only(actions, PeerBackedOff) != []
    assert engine.backlogs == {}
    engine.handle(120, PushAnswered(URLS[0], None, sent=3))
    engine.handle(130, RecordsMerged((record(OWN, 10),), None))
    (third,) = only(engine.tick(150), Push)  # URLS[1] is backed off
    assert third == Push(URLS[0], (record(OWN, 10),))


def test_a_peer_that_never_answers_delays_no_push_to_the_others() -> None:
    """Today's rule sent the next batch only when every peer had answered the last one, so
    a peer that drops packets held every push back for its request timeout."""
    engine = make_engine(URLS[:3], interval_s=100.0)  # no round in these 10 s
    silent = URLS[2]
    engine.handle(0, RecordsMerged((record(OWN, 0),), None))
    assert {p.url for p in only(engine.tick(20), Push)} == set(URLS[:3])
    now = 20
    for n in range(1, 20):  # a new record every 500 ms; the silent peer never answers
        for url in URLS[:2]:
            engine.handle(now + 30, PushAnswered(url, None, sent=1))
        now = n * 500
        due = timer(engine.handle(now, RecordsMerged((record(OWN, n),), None)))
        assert due == now + 20
        pushes = only(engine.tick(due), Push)
        assert [(p.url, p.records) for p in pushes] == [(url, (record(OWN, n),))
                                                        for url in URLS[:2]]  # fmt: skip
    assert engine.backlogs == {silent: 19}
    # its request times out: backed off, backlog dropped, and nothing goes to it meanwhile
    engine.handle(10_020, RequestFailed(silent, None, Outcome.UNREACHABLE, "timed out"))
    assert engine.backlogs == {} and silent not in engine.available(10_021)


def test_a_backlog_longer_than_a_batch_goes_one_batch_per_answer() -> None:
    engine = make_engine(URLS[:1], push_batch_records=2)
    url = URLS[0]
    mine = [record(OWN, n) for n in range(7)]
    engine.handle(0, RecordsMerged(tuple(mine), None))
    assert [p.records for p in only(engine.tick(20), Push)] == [tuple(mine[:2])]
    for now in (40, 60):  # two more batches routed while the first push is in flight
        assert only(engine.tick(now), Push) == []
    assert engine.backlogs == {url: 4} and engine.queued == 1
    sent = []
    for now in range(100, 500, 100):
        actions = engine.handle(now, PushAnswered(url, None, sent=2))
        sent += [p.records for p in only(actions, Push)]
        actions = engine.tick(now + 50)
        sent += [p.records for p in only(actions, Push)]
    assert sent == [tuple(mine[2:4]), tuple(mine[4:6]), (mine[6],)]
    assert engine.backlogs == {} and engine.queued == 0


# ---- pulls and pushes of an exchange -------------------------------------------------------------


def test_pages_are_pipelined_up_to_pull_ahead_then_pushes_then_synced() -> None:
    engine = make_engine(URLS[:1], page_records=10, pull_ahead_pages=2)
    url = URLS[0]
    ex = sync_to_frontier(engine, url)
    theirs = Frontier(heads(a=25, b=3))
    local = heads(a=1, c=4)
    (page,) = engine.handle(1, FrontierAnswered(ex, url, theirs, local))
    assert page == FetchPage(ex, url, LogRequest(AUTHORS["a"], 0, 10))
    assert engine.peers[url].behind == 24 + 3 and engine.peers[url].ahead == 4
    # a full page: the next one is asked at once, one seq back, before the first is merged
    (page2,) = engine.handle(2, PageReceived(ex, url, page.request, 10, 10))
    assert page2.request == LogRequest(AUTHORS["a"], 9, 10)
    assert engine.handle(3, PageReceived(ex, url, page2.request, 10, 19)) == []  # 2 unmerged
    (page3,) = engine.handle(4, PagesMerged(ex, url, pages=1, records=10, accepted=9))
    assert page3.request == LogRequest(AUTHORS["a"], 18, 10)
    assert engine.peers[url].behind == 27 - 9
    # a short page ends author a; b follows once the writer is within pull_ahead again
    assert engine.handle(5, PageReceived(ex, url, page3.request, 7, 25)) == []
    (page4,) = engine.handle(5, PagesMerged(ex, url, pages=1, records=10, accepted=9))
    assert page4.request == LogRequest(AUTHORS["b"], 0, 10)
    assert engine.handle(6, PageReceived(ex, url, page4.request, 3, 3)) == []
    # pushes start once every page is merged, one author at a time
    (push,) = engine.handle(7, PagesMerged(ex, url, pages=2, records=10, accepted=9))
    assert push == PushLog(ex, url, AUTHORS["c"], 0, 500, relay=False)
    (done,) = only(engine.handle(8, PushAnswered(url, ex, sent=4)), SyncFinished)
    assert done.outcome is Outcome.SYNCED
    assert done.report.to_json() == {"peer": url, "pulled": 30, "accepted": 27, "pushed": 4,
                                      "unchanged": False}  # fmt: skip
    assert engine.exchanges == {} and engine.peers[url].last_contact_ms == 8


def test_a_page_with_records_that_do_not_verify_ends_the_exchange_as_misbehaviour() -> None:
    engine = make_engine(URLS[:1])
    url = URLS[0]
    ex = sync_to_frontier(engine, url)
    (page,) = engine.handle(1, FrontierAnswered(ex, url, Frontier(heads(a=3)), {}))
    engine.handle(2, PageReceived(ex, url, page.request, 3, 3))
    actions = engine.handle(3, PagesMerged(ex, url, pages=1, records=3, accepted=1, misbehaving=2))
    (done,) = only(actions, SyncFinished)
    assert done.outcome is Outcome.MISBEHAVED and only(actions, PushLog) == []
    assert engine.peers[url].last_error == f"misbehaved: {url} sent 2 records that do not verify"
    assert engine.peers[url].failures == 1


def test_a_push_answered_with_pending_records_starts_one_repair_that_relays() -> None:
    engine = make_engine(URLS[:2])
    engine.handle(0, RecordsMerged((record(OWN, 1, seq=2),), None))
    engine.tick(20)
    answer = PushAnswered(URLS[0], None, sent=1, pending=1)
    (repair,) = only(engine.handle(30, answer), FetchFrontier)
    assert repair.url == URLS[0]
    assert engine.exchanges[repair.exchange].purpose == "repair"
    engine.handle(31, answer)  # not a second repair while it runs
    assert [e.url for e in engine.exchanges.values()] == [URLS[0]]
    # the repair pushes what the peer lacks with relay=1
    (push,) = engine.handle(
        40, FrontierAnswered(repair.exchange, URLS[0], Frontier({}), heads(a=2))
    )
    assert push == PushLog(repair.exchange, URLS[0], AUTHORS["a"], 0, 500, relay=True)


# ---- membership: peers learned, removed and barred -----------------------------------------------


def test_peers_learned_from_announces_get_their_keys_and_rotations_move_them() -> None:
    engine = make_engine([], keys=False)
    engine.handle(0, PeersLearned({URLS[0]: KEY_OF[URLS[0]], "http://own.test/": OWN.public}))
    assert list(engine.peers) == [URLS[0]]  # never this node's own URL
    assert engine.peers[URLS[0]].source == "announce"
    engine.handle(0, PeersLearned({URLS[0]: "ff" * 32}))
    assert engine.peers[URLS[0]].key == "ff" * 32


def test_only_peers_added_by_hand_can_be_removed() -> None:
    engine = make_engine(URLS[:1])
    engine.handle(0, PeerAdded(URLS[1], "added"))
    engine.handle(0, PeerRemoved(URLS[0]))
    engine.handle(0, PeerRemoved(URLS[1]))
    assert list(engine.peers) == [URLS[0]]


def test_a_barred_peer_is_dropped_at_once_and_nothing_is_planned_to_it_again() -> None:
    engine = make_engine(URLS[:3])
    barred = URLS[0]
    ex = sync_to_frontier(engine, barred)
    engine.handle(0, RecordsMerged((record(OWN),), None))
    engine.tick(20)  # a push to every peer is out
    actions = engine.handle(30, PeersBarred({barred: "member X was removed"}))
    assert PeerDropped(barred, "member X was removed") in actions
    (done,) = only(actions, SyncFinished)
    assert (done.exchange, done.outcome) == (ex, Outcome.BARRED)
    assert barred not in engine.peers and engine.barred == {barred: "member X was removed"}
    assert only(actions, PeerBackedOff) == []  # not a failure of the peer
    # its late answers change nothing; it cannot come back
    engine.handle(31, FrontierAnswered(ex, barred, None, {}))
    engine.handle(31, PeerAdded(barred, "added"))
    engine.handle(31, PeersLearned({barred: KEY_OF[barred]}))
    assert barred not in engine.peers
    for url in URLS[1:3]:
        engine.handle(32, PushAnswered(url, None, sent=1))
    # no round, push or sync is ever planned to it
    engine.handle(40, RecordsMerged((record(OWN, 2),), None))
    engine.handle(40, ForksFound((ForkEvidence(record(OTHERS[0], 1), record(OTHERS[0], 2)),)))
    now = 60
    sent: set[str] = set()
    for _ in range(30):
        actions = engine.tick(now)
        sent |= {a.url for a in actions if isinstance(a, (Push, FetchFrontier, FetchPage))}
        for start in only(actions, FetchFrontier):
            engine.handle(now, FrontierAnswered(start.exchange, start.url, None, {}))
        for push in only(actions, Push):
            engine.handle(now, PushAnswered(push.url, None, sent=len(push.records)))
        now += INTERVAL_MS
    assert engine.handle(now, StartSync(barred)) == []
    assert sent == set(URLS[1:3])


# ---- purity: the same seed and events give the same actions --------------------------------------


def run(seed: int) -> list[Action]:
    engine = make_engine(seed=seed)
    out = engine.tick(0)
    for n in range(5):
        out += engine.handle(n, RecordsMerged((record(OTHERS[n], n),), KEY_OF[URLS[n]]))
    out += engine.tick(3000)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_the_same_seed_and_events_give_the_same_actions(seed: int) -> None:
    assert run(seed) == run(seed)
    assert run(seed) != run(seed + 100)


def test_request_failed_must_name_a_failure() -> None:
    with pytest.raises(ValueError, match="not a failure"):
        RequestFailed(URLS[0], None, Outcome.SYNCED, "")
