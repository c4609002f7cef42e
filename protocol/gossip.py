"""The gossip engine: whom a node talks to, when, and what it sends (SPEC 10.3, 10.6), as a
sans-I/O state machine.

The engine holds no socket, clock, store or random source. Its driver (``node.net.gossip``,
or a simulator) tells it the time and what happened, as events, and carries out what it
answers, as actions::

    actions = engine.tick(now_ms)            # a timer fired (and at start)
    actions = engine.handle(now_ms, event)   # a peer answered, a request failed, records merged

- Anti-entropy: every ``interval_s`` (jittered +-25%, from the start or from the end of the
  previous round) it picks one random peer that is not backed off and reconciles with it: a
  frontier request (``FetchFrontier``); on the answer it plans the pulls and pushes with
  ``protocol.sync`` and asks for log pages one at a time, each page's follow-up as soon as
  the page arrives (``next_page``), up to ``pull_ahead_pages`` pages waiting for the store's
  writer; then it pushes what the peer lacks, one author after another (``PushLog``).
- Eager push: merged records are gathered for ``push_linger_ms`` and routed in batches of up
  to ``push_batch_records``: own records to every peer, records straight from their author
  to one, relayed ones to ``fanout`` (``protocol.sync.push_width``), fork evidence to every
  peer; never back to the source. An own record's push asks only ``relay_asks`` random
  peers to relay it (``relay=1``), the others get it with ``relay=0``: the author already
  sends it to every peer it knows. Each peer has its own pipeline: one ``Push`` in flight at
  a time, records routed to it meanwhile wait in its backlog and go (up to
  ``push_batch_records``) as soon as that push is answered. A peer whose push fails, or that
  is backed off, loses its backlog (anti-entropy brings it the records), so a peer that
  never answers holds back nothing sent to the others. Pulled records and ``relay=0``
  pushes are not pushed on. A push answered with pending records starts a repair: an
  exchange with that peer whose pushes ask it to relay (one at a time per peer).
- Backoff: a failed exchange or push backs the peer off for ``interval * 2^failures`` (capped
  at ``backoff_max_s``, times a random 0.5..1); a 403 (``NOT_COUNTED``: the peer does not
  count this node's key yet) only for about one interval, so an admission takes effect
  within a round or two. Success resets it.
- Peers come from the driver (configuration, the operator, members' announces). A barred URL
  (its member was removed or forked, SPEC 10.6) leaves the peer set at once: its running
  exchanges end, nothing more is planned to it and it cannot be added back.

Time is an integer of milliseconds on any monotonic-enough clock the driver chooses; the only
randomness is the ``rng`` passed in (``random.Random`` fits), so a seeded driver replays a run
exactly. The driver's duty for an action is written on its class.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from protocol.gossip_messages import (
    FAILURES,
    Action,
    Event,
    ExchangeStatus,
    FetchFrontier,
    FetchPage,
    ForksFound,
    FrontierAnswered,
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
    PeerSource,
    PeerStatus,
    Purpose,
    Push,
    PushAnswered,
    PushLog,
    RecordsMerged,
    RequestFailed,
    Rng,
    SetTimer,
    StartSync,
    SyncFinished,
    SyncReport,
)
from protocol.records import Record
from protocol.sync import LogRequest, lag, next_page, plan_pulls, plan_pushes, push_width

__all__ = [
    "Action",
    "Event",
    "ExchangeStatus",
    "FAILURES",
    "FetchFrontier",
    "FetchPage",
    "ForksFound",
    "FrontierAnswered",
    "GossipEngine",
    "GossipSettings",
    "Outcome",
    "PageReceived",
    "PagesMerged",
    "PeerAdded",
    "PeerBackedOff",
    "PeerDropped",
    "PeerRemoved",
    "PeersBarred",
    "PeersLearned",
    "PeerSource",
    "PeerStatus",
    "Purpose",
    "Push",
    "PushAnswered",
    "PushLog",
    "RecordsMerged",
    "RequestFailed",
    "Rng",
    "SetTimer",
    "StartSync",
    "SyncFinished",
    "SyncReport",
]


@dataclass(slots=True)
class _Exchange:
    id: int
    url: str
    purpose: Purpose
    relay: bool
    phase: Literal["frontier", "pull", "push"] = "frontier"
    pulls: deque[LogRequest] = field(default_factory=deque)
    pushes: deque[tuple[str, int]] = field(default_factory=deque)
    fetching: bool = False  # a page request is out
    unmerged: int = 0  # pages received, not merged yet
    pushing: bool = False  # a PushLog is out
    report: SyncReport = field(default_factory=lambda: SyncReport(""))


@dataclass(frozen=True, slots=True)
class _Queued:
    record: Record
    source: str | None
    everyone: bool  # fork evidence: to every peer, whatever the source


class GossipEngine:
    """One node's gossip decisions. Construct it, call ``tick`` once to start the rounds,
    then feed it events; carry out every action it returns, in order."""

    def __init__(
        self,
        own_key: str,
        rng: Rng,
        settings: GossipSettings | None = None,
        *,
        own_url: str | None = None,
    ) -> None:
        self.own_key = own_key
        self.own_url = own_url
        self.settings = settings or GossipSettings()
        self._rng = rng
        self._peers: dict[str, PeerStatus] = {}
        self._barred: dict[str, str] = {}
        self._exchanges: dict[int, _Exchange] = {}
        self._next_exchange = 1
        self._round: int | None = None  # the running anti-entropy exchange
        self._round_at: int | None = None
        self._repairs: set[str] = set()
        self._queue: deque[_Queued] = deque()
        self._linger_at: int | None = None
        self._pushing: set[str] = set()  # peers with a push in flight
        # routed, waiting for that peer's push: (record, ask the peer to relay it)
        self._backlog: dict[str, list[tuple[Record, bool]]] = {}
        self._timer: int | None = None
        self._now = 0
        self._out: list[Action] = []

    # ---- inspection ------------------------------------------------------------------------

    @property
    def peers(self) -> Mapping[str, PeerStatus]:
        return dict(self._peers)

    @property
    def barred(self) -> Mapping[str, str]:
        return dict(self._barred)

    @property
    def exchanges(self) -> Mapping[int, ExchangeStatus]:
        return {i: ExchangeStatus(i, e.url, e.purpose, e.relay, e.phase)
                for i, e in self._exchanges.items()}  # fmt: skip

    @property
    def queued(self) -> int:
        """Records waiting for the next push batch."""
        return len(self._queue)

    @property
    def backlogs(self) -> Mapping[str, int]:
        """Per peer, the records routed to it waiting for its push in flight to be answered."""
        return {url: len(records) for url, records in self._backlog.items() if records}

    @property
    def next_round_ms(self) -> int | None:
        return self._round_at

    def available(self, now_ms: int) -> list[str]:
        """Peer URLs not backed off at now_ms, sorted."""
        return sorted(u for u, p in self._peers.items() if p.backoff_until_ms <= now_ms)

    # ---- driving ---------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Action]:
        """Run what is due at now_ms: the first call schedules the first round."""
        self._now = now_ms
        self._timer = None
        if self._round is None and self._round_at is None:
            self._round_at = self._jittered()
        elif self._round is None and self._round_at is not None and self._round_at <= now_ms:
            self._start_round()
        if self._linger_at is not None and self._linger_at <= now_ms:
            self._push_batch()
        return self._flush()

    def handle(self, now_ms: int, event: Event) -> list[Action]:
        self._now = now_ms
        _HANDLERS[type(event)](self, event)
        return self._flush()

    def _flush(self) -> list[Action]:
        due = [t for t in (self._round_at, self._linger_at) if t is not None]
        wake = min(due) if due else None
        if wake is not None and wake != self._timer:
            self._timer = wake
            self._out.append(SetTimer(wake))
        out, self._out = self._out, []
        return out

    # ---- peers -------------------------------------------------------------------------------

    def _may_add(self, url: str) -> bool:
        return url != self.own_url and url not in self._barred

    def _peer_added(self, event: PeerAdded) -> None:
        if self._may_add(event.url) and event.url not in self._peers:
            self._peers[event.url] = PeerStatus(event.url, event.source)

    def _peer_removed(self, event: PeerRemoved) -> None:
        peer = self._peers.get(event.url)
        if peer is not None and peer.source == "added":
            del self._peers[event.url]
            self._backlog.pop(event.url, None)

    def _peers_learned(self, event: PeersLearned) -> None:
        for url, key in event.peers.items():
            if not self._may_add(url):
                continue
            peer = self._peers.setdefault(url, PeerStatus(url, "announce"))
            if key is not None and peer.key != key:
                self._peers[url] = replace(peer, key=key)

    def _peers_barred(self, event: PeersBarred) -> None:
        self._barred = dict(event.barred)
        for url, reason in sorted(self._barred.items()):
            if self._peers.pop(url, None) is not None:
                self._out.append(PeerDropped(url, reason))
            for exchange in [e for e in self._exchanges.values() if e.url == url]:
                self._finish(exchange, Outcome.BARRED, f"{url} is not contacted: {reason}")
            self._pushing.discard(url)
            self._backlog.pop(url, None)

    def _succeeded(self, url: str) -> None:
        peer = self._peers.get(url)
        if peer is not None:
            self._peers[url] = replace(peer, failures=0, backoff_until_ms=0, last_error=None,
                                       last_contact_ms=self._now)  # fmt: skip

    def _failed(self, url: str, failure: Outcome, error: str) -> None:
        """Back the peer off: exponentially, except for a 403 (about one interval)."""
        peer = self._peers.get(url)
        if peer is None or failure is Outcome.BARRED:
            return
        s = self.settings
        exponent = min(peer.failures + 1, 10) if failure is not Outcome.NOT_COUNTED else 0
        delay_s = min(s.backoff_max_s, s.interval_s * 2**exponent) * self._rng.uniform(0.5, 1.0)
        delay_ms = round(delay_s * 1000)
        self._peers[url] = replace(peer, failures=peer.failures + 1, last_error=error,
                                   backoff_until_ms=self._now + delay_ms)  # fmt: skip
        self._out.append(PeerBackedOff(url, delay_ms, error))

    # ---- exchanges -------------------------------------------------------------------------

    def _jittered(self) -> int:
        return self._now + round(self.settings.interval_s * 1000 * self._rng.uniform(0.75, 1.25))

    def _start_round(self) -> None:
        candidates = self.available(self._now)
        if not candidates:
            self._round_at = self._jittered()
            return
        self._round_at = None
        self._round = self._start(self._rng.choice(candidates), "round", relay=False)

    def _start(self, url: str, purpose: Purpose, *, relay: bool) -> int:
        exchange = _Exchange(self._next_exchange, url, purpose, relay, report=SyncReport(url))
        self._next_exchange += 1
        self._exchanges[exchange.id] = exchange
        self._peers[url] = replace(self._peers[url], last_attempt_ms=self._now)
        self._out.append(FetchFrontier(exchange.id, url))
        return exchange.id

    def _start_sync(self, event: StartSync) -> None:
        if event.url in self._peers:
            self._start(event.url, "sync", relay=event.relay)

    def _repair(self, url: str) -> None:
        """The peer holds pushed records pending: reconcile now, pushes relayed (10.3)."""
        if url in self._peers and url not in self._repairs:
            self._repairs.add(url)
            self._start(url, "repair", relay=True)

    def _exchange(self, exchange: int | None, url: str) -> _Exchange | None:
        found = self._exchanges.get(exchange) if exchange is not None else None
        return found if found is not None and found.url == url else None

    def _frontier_answered(self, event: FrontierAnswered) -> None:
        ex = self._exchange(event.exchange, event.url)
        if ex is None or ex.phase != "frontier":
            return
        peer = self._peers[ex.url]
        if event.frontier is None:
            self._peers[ex.url] = replace(peer, behind=0, ahead=0)
            ex.report = replace(ex.report, unchanged=True)
            self._finish(ex, Outcome.UNCHANGED)
            return
        behind, ahead = lag(event.local, event.frontier)
        self._peers[ex.url] = replace(peer, behind=behind, ahead=ahead)
        ex.pulls.extend(plan_pulls(event.local, event.frontier, self.settings.page_records))
        ex.pushes.extend(plan_pushes(event.local, event.frontier))
        ex.phase = "pull"
        self._advance(ex)

    def _page_received(self, event: PageReceived) -> None:
        ex = self._exchange(event.exchange, event.url)
        if ex is None or not ex.fetching:
            return
        ex.fetching = False
        ex.unmerged += 1
        following = next_page(event.request, event.received, event.last_seq)
        if following is not None:
            ex.pulls.appendleft(following)
        self._advance(ex)

    def _pages_merged(self, event: PagesMerged) -> None:
        ex = self._exchange(event.exchange, event.url)
        if ex is None:
            return
        ex.unmerged = max(0, ex.unmerged - event.pages)
        ex.report = replace(ex.report, pulled=ex.report.pulled + event.records,
                            accepted=ex.report.accepted + event.accepted)  # fmt: skip
        peer = self._peers.get(ex.url)
        if peer is not None:  # status shows a long catch-up's progress
            self._peers[ex.url] = replace(peer, behind=max(0, peer.behind - event.accepted))
        if event.misbehaving:
            error = f"misbehaved: {ex.url} sent {event.misbehaving} records that do not verify"
            self._finish(ex, Outcome.MISBEHAVED, error)
        else:
            self._advance(ex)

    def _push_answered(self, event: PushAnswered) -> None:
        if event.exchange is None:
            if event.url in self._pushing:
                self._succeeded(event.url)
                self._push_done(event.url)
        else:
            ex = self._exchange(event.exchange, event.url)
            if ex is None or not ex.pushing:
                return
            ex.pushing = False
            ex.report = replace(ex.report, pushed=ex.report.pushed + event.sent)
            self._advance(ex)
        if event.pending:
            self._repair(event.url)

    def _request_failed(self, event: RequestFailed) -> None:
        if event.exchange is None:
            if event.url in self._pushing:
                self._failed(event.url, event.failure, event.detail)
                self._backlog.pop(event.url, None)  # anti-entropy brings it these records
                self._push_done(event.url)
            return
        ex = self._exchange(event.exchange, event.url)
        if ex is not None:
            self._finish(ex, event.failure, event.detail)

    def _advance(self, ex: _Exchange) -> None:
        """Ask for the next page, or move on to pushes, or end: whatever is next."""
        if ex.phase == "pull":
            ahead = ex.unmerged < self.settings.pull_ahead_pages
            if ex.pulls and not ex.fetching and ahead:
                ex.fetching = True
                self._out.append(FetchPage(ex.id, ex.url, ex.pulls.popleft()))
            if ex.pulls or ex.fetching or ex.unmerged:
                return
            ex.phase = "push"
        if ex.pushing:
            return
        if ex.pushes:
            author, after = ex.pushes.popleft()
            ex.pushing = True
            limit = self.settings.push_batch_records
            self._out.append(PushLog(ex.id, ex.url, author, after, limit, ex.relay))
            return
        self._finish(ex, Outcome.SYNCED)

    def _finish(self, ex: _Exchange, outcome: Outcome, error: str | None = None) -> None:
        del self._exchanges[ex.id]
        if outcome in (Outcome.SYNCED, Outcome.UNCHANGED):
            self._succeeded(ex.url)
        else:
            self._failed(ex.url, outcome, error or outcome.value)
        if ex.purpose == "repair":
            self._repairs.discard(ex.url)
        if ex.id == self._round:
            self._round = None
            self._round_at = self._jittered()
        self._out.append(SyncFinished(ex.id, ex.url, outcome, ex.report, error))

    # ---- eager push ------------------------------------------------------------------------

    def _records_merged(self, event: RecordsMerged) -> None:
        if event.relay:
            self._enqueue(_Queued(r, event.source, False) for r in event.records)

    def _forks_found(self, event: ForksFound) -> None:
        records = (r for fork in event.forks for r in (fork.first, fork.second))
        self._enqueue(_Queued(r, None, True) for r in records)

    def _enqueue(self, items: Iterable[_Queued]) -> None:
        self._queue.extend(items)
        if self._queue and self._linger_at is None:
            self._linger_at = self._now + self.settings.push_linger_ms

    def _push_batch(self) -> None:
        """Route up to ``push_batch_records`` queued records into the backlogs of the peers
        SPEC 10.3 names for each; send every backlog whose peer has no push in flight."""
        self._linger_at = None
        count = min(len(self._queue), self.settings.push_batch_records)
        batch = [self._queue.popleft() for _ in range(count)]
        for url, routed in sorted(self._route(batch).items()):
            backlog = self._backlog.setdefault(url, [])
            backlog.extend((batch[i].record, ask) for i, ask in sorted(routed))
            self._send_backlog(url)
        if self._queue:
            self._linger_at = self._now + self.settings.push_linger_ms

    def _route(self, batch: list[_Queued]) -> dict[str, list[tuple[int, bool]]]:
        """Per peer, the records it gets (index in batch) and whether it is asked to relay
        them. Records with the same source and width go to the same random peers, so each
        peer gets one request for them; of the peers an own record goes to (all),
        ``relay_asks`` random ones are asked to relay it."""
        available = [self._peers[url] for url in self.available(self._now)]
        routes: dict[tuple[str | None, bool, int | None], list[int]] = {}
        for index, item in enumerate(batch):
            want = None if item.everyone else push_width(
                item.record.author, source=item.source, own_key=self.own_key,
                fanout=self.settings.fanout)  # fmt: skip
            routes.setdefault((item.source, item.everyone, want), []).append(index)
        per_peer: dict[str, list[tuple[int, bool]]] = {}
        for (source, everyone, want), indexes in routes.items():
            targets = [p.url for p in available if source is None or source not in (p.url, p.key)]
            if want is not None:
                targets = self._rng.sample(targets, min(want, len(targets)))
            asked = set(targets)
            if want is None and not everyone and len(targets) > self.settings.relay_asks:
                asked = set(self._rng.sample(targets, self.settings.relay_asks))
            for url in targets:
                per_peer.setdefault(url, []).extend((i, url in asked) for i in indexes)
        return per_peer

    def _send_backlog(self, url: str) -> None:
        """Push the peer's backlog unless a push to it is in flight; a peer gone or backed
        off loses it."""
        if url in self._pushing:
            return
        backlog = self._backlog.pop(url, [])
        peer = self._peers.get(url)
        if not backlog or peer is None or peer.backoff_until_ms > self._now:
            return
        records, relay, rest = _next_push(backlog, self.settings.push_batch_records)
        if rest:
            self._backlog[url] = rest
        self._out.append(Push(url, records, relay))
        self._pushing.add(url)

    def _push_done(self, url: str) -> None:
        self._pushing.discard(url)
        self._send_backlog(url)


def _next_push(
    backlog: list[tuple[Record, bool]], limit: int
) -> tuple[tuple[Record, ...], bool, list[tuple[Record, bool]]]:
    """The next push from a peer's backlog of (record, ask to relay): up to limit records
    that share the first one's relay flag (a push carries one), in order, and what stays.
    An author with a record left behind keeps the rest of its records behind too, so each
    author's records reach the peer in seq order (else it would hold them pending)."""
    relay = backlog[0][1]
    taken: list[Record] = []
    rest: list[tuple[Record, bool]] = []
    held: set[str] = set()
    for index, (record, ask) in enumerate(backlog):
        if len(taken) == limit:
            rest.extend(backlog[index:])
            break
        if ask is relay and record.author not in held:
            taken.append(record)
        else:
            held.add(record.author)
            rest.append((record, ask))
    return tuple(taken), relay, rest


_HANDLERS: dict[type[Any], Callable[[GossipEngine, Any], None]] = {
    PeerAdded: GossipEngine._peer_added,
    PeerRemoved: GossipEngine._peer_removed,
    PeersLearned: GossipEngine._peers_learned,
    PeersBarred: GossipEngine._peers_barred,
    RecordsMerged: GossipEngine._records_merged,
    ForksFound: GossipEngine._forks_found,
    StartSync: GossipEngine._start_sync,
    FrontierAnswered: GossipEngine._frontier_answered,
    PageReceived: GossipEngine._page_received,
    PagesMerged: GossipEngine._pages_merged,
    PushAnswered: GossipEngine._push_answered,
    RequestFailed: GossipEngine._request_failed,
}
