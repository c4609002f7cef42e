"""Gossip: the shell that carries the gossip engine's requests (``protocol.gossip``).

``protocol.gossip.GossipEngine`` decides everything SPEC 10.3 and 10.6 leave to a node: when
to run an anti-entropy round and with whom, which log pages to ask for and how far ahead,
what to push to whom (own records to every peer, ``relay_asks`` of them asked to relay them,
relays to one or ``fanout``, fork evidence to all, never back to the source; a pipeline per
peer), backoff, the 403 "not admitted yet" retry, repairs of
pushes answered with pending records, and dropping barred peers. ``Gossip`` feeds it the
clock, the node's merges and membership, and the peers' answers, and performs what it asks:

- one task per request, each under ``asyncio.timeout``, signed (``node.net.httpsig``), over
  the app's one ``ClientSession``; its result or failure goes back to the engine as an event;
- a pull's pages are handed to the verify pool as they arrive and written by one writer per
  exchange in groups of about ``PULL_GROUP_RECORDS`` records, one transaction each;
- one timer task that calls ``engine.tick`` when the engine's ``SetTimer`` is due.

What stays here is what needs the node: peers learned from the store's announces and the
claims that bar a removed or forked member's URLs (``node.net.peerset``), and transport
(``node.net.tls``, SPEC 10.5): an ``https://`` peer is contacted only with a pin for its TLS
key -- from its member's announce, else from the seed URL (``#spki=``), else, if ``[tls] tofu``
allows it, the first key it shows. A mismatch, a missing pin, or a plain ``http://`` peer while
this node runs TLS is refused before any request is sent, and shows in the peer's
``last_error``, the log and ``hashmesh_tls_pin_failures_total``.

Tasks are created in ``gossip_ctx`` and cancelled when the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from node.clock import now_ms
from node.errors import PeerError
from node.net.context import NODE, SESSION, Node
from node.net.httpsig import sign_request
from node.net.peerset import (
    Claims,
    NotCountedError,
    PeerBarredError,
    barred_reason,
    claims_of,
    lost_protocol,
)
from node.net.tls import SpkiPin, TlsRefusedError, describe_mismatch
from node.store.store import PreparedMerge, Store
from protocol.bodies import AnnounceBody
from protocol.chain import ForkEvidence
from protocol.errors import RemoteProtocolError
from protocol.frontier_delta import parse_frontier_answer, plan_view
from protocol.gossip import (
    Action,
    Event,
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
    PeerStatus,
    Push,
    PushAnswered,
    PushLog,
    RecordsMerged,
    RequestFailed,
    SetTimer,
    StartSync,
    SyncFinished,
    SyncReport,
)
from protocol.records import Record
from protocol.sync import (
    LogRequest,
    check_log_page,
    claimed_last_seq,
    is_misbehaviour,
    join_ndjson,
    parse_frontier,
    split_ndjson,
)

log = logging.getLogger("hashmesh.gossip")
PUSH_BATCH_RECORDS = 500
PUSH_LINGER_MS = 20
# A pull writes its pages in groups of about this many records, one transaction each: SQLite
# dirties each page of the random-order indexes (record ids, lookup keys) once per transaction,
# so bare inserts of 20,000 records per commit run ~1.5x faster than 5,000 (one page) at 1 M.
PULL_GROUP_RECORDS = 20_000
PULL_AHEAD_PAGES = 10  # pages fetched and verifying ahead of the writer (~50k records)


@dataclass(slots=True)
class PeerTls:
    """How this node pins a peer URL's TLS key (SPEC 10.5)."""

    pin: str | None = None  # SPKI fingerprint its TLS certificate must have
    source: str | None = None  # announce | seed | tofu
    seed_pin: str | None = None  # from config (#spki=) or `peers add`: the fallback


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer as /v1/peers, status and metrics show it: the engine's view and the pin."""

    status: PeerStatus
    tls: PeerTls

    @property
    def url(self) -> str:
        return self.status.url

    @property
    def source(self) -> str:
        return self.status.source

    @property
    def key(self) -> str | None:
        return self.status.key

    @property
    def failures(self) -> int:
        return self.status.failures

    @property
    def behind(self) -> int:
        return self.status.behind

    @property
    def ahead(self) -> int:
        return self.status.ahead

    @property
    def last_contact_ms(self) -> int | None:
        return self.status.last_contact_ms

    def to_json(self, now: float) -> dict[str, Any]:
        s = self.status
        return {
            "url": s.url,
            "source": s.source,
            "key": s.key,
            "tls": {"pin": self.tls.pin, "source": self.tls.source},
            "last_contact_ms": s.last_contact_ms,
            "seconds_since_contact": None
            if s.last_contact_ms is None
            else round(now - s.last_contact_ms / 1000, 1),
            "failures": s.failures,
            "backed_off_s": max(0.0, round(s.backoff_until_ms / 1000 - now, 1)),
            "last_error": s.last_error,
            "lag_records": {"behind": s.behind, "ahead": s.ahead},
        }


@dataclass(slots=True)
class _Pull:
    """The pages of one exchange between the fetch tasks and its writer."""

    queue: asyncio.Queue[PreparedMerge | None] = field(default_factory=asyncio.Queue)
    writer: asyncio.Task[None] | None = None
    closed: bool = False
    keep: bool = False  # a page request failed: still write the pages received before it


_Finished = tuple[SyncFinished, "asyncio.Task[None] | None"]


def _settings(node: Node) -> GossipSettings:
    g = node.config.gossip
    return GossipSettings(
        interval_s=g.interval_s,
        fanout=g.fanout,
        page_records=g.page_records,
        backoff_max_s=g.backoff_max_s,
        push_linger_ms=PUSH_LINGER_MS,
        push_batch_records=PUSH_BATCH_RECORDS,
        pull_ahead_pages=PULL_AHEAD_PAGES,
        relay_asks=g.relay_asks,
    )


@dataclass(slots=True)
class Gossip:
    node: Node
    session: aiohttp.ClientSession
    engine: GossipEngine = field(init=False)
    tls: dict[str, PeerTls] = field(default_factory=dict)  # url -> pin
    bytes_sent: int = 0
    bytes_received: int = 0
    spki_pins: dict[str, SpkiPin] = field(default_factory=dict)  # one per pin: pooling
    claims: Claims = field(default_factory=Claims)  # who announced which URL and TLS key
    lost: dict[str, str] = field(default_factory=dict)  # identities out of the peer protocol
    _lost_keys: frozenset[str] = frozenset()  # whose announces _lost_announces holds
    _lost_announces: list[tuple[str, AnnounceBody]] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _waiters: dict[int, asyncio.Future[_Finished]] = field(default_factory=dict)
    _errors: dict[int, BaseException] = field(default_factory=dict)  # exchange -> why it failed
    _pulls: dict[int, _Pull] = field(default_factory=dict)
    _wake_at: int | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        node = self.node
        self.engine = GossipEngine(node.key.public, node.rng, _settings(node),
                                   own_url=node.config.url)  # fmt: skip

    # ---- the engine ------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Action]:
        actions = self.engine.handle(now_ms(), event)
        self._run(actions)
        return actions

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case SetTimer(at_ms):
                    self._wake_at = at_ms
                    self._wake.set()
                case FetchFrontier(exchange, url):
                    self._spawn(url, exchange, self._fetch_frontier(exchange, url))
                case FetchPage(exchange, url, request):
                    self._spawn(url, exchange, self._fetch_page(exchange, url, request))
                case PushLog():
                    self._spawn(action.url, action.exchange, self._push_log(action))
                case Push(url, records, relay):
                    self._spawn(url, None, self._push(url, records, relay))
                case SyncFinished():
                    self._finished(action)
                case PeerBackedOff(url, delay_ms, error):
                    log.info("peer %s failed (%s); backing off %.1fs", url, error,
                             delay_ms / 1000, extra={"peer": url})  # fmt: skip
                case PeerDropped(url, reason):
                    self.tls.pop(url, None)
                    log.warning("dropped peer %s: %s; it is not contacted from now on", url,
                                reason, extra={"peer": url})  # fmt: skip

    def _spawn(self, url: str, exchange: int | None, work: Awaitable[Event | None]) -> None:
        task = asyncio.create_task(self._perform(url, exchange, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _perform(self, url: str, exchange: int | None, work: Awaitable[Event | None]) -> None:
        """Run one request; tell the engine its answer, or how it failed."""
        try:
            event = await work
        except Exception as e:  # every failure is reported: none stops gossip
            event = self._failure(url, exchange, e)
        if event is not None:
            self.feed(event)

    def _failure(self, url: str, exchange: int | None, e: Exception) -> RequestFailed:
        failure, detail = _classify(url, e)
        if isinstance(e, TlsRefusedError):
            self.node.metrics.tls_pin_failures.labels(url, e.reason).inc()
            log.warning("refused peer %s: %s", url, e,
                        extra={"peer": url, "reason": e.reason, "expected_spki": e.expected,
                               "got_spki": e.got})  # fmt: skip
        elif failure is Outcome.UNREACHABLE:
            e = PeerError(f"{url} is unreachable: {detail.removeprefix('unreachable: ')}")
        elif failure is Outcome.MISBEHAVED and not isinstance(e, (PeerError, RemoteProtocolError)):
            log.exception("gossip request to %s failed", url, exc_info=e, extra={"peer": url})
        if exchange is None:
            if not isinstance(e, TlsRefusedError):
                detail = f"push failed: {detail}"  # e.g. "push failed: unreachable: timed out"
        else:
            self._errors[exchange] = e
        return RequestFailed(url, exchange, failure, detail)

    def _finished(self, done: SyncFinished) -> None:
        self.node.metrics.syncs.labels(done.outcome.value).inc()
        pull = self._pulls.pop(done.exchange, None)
        if pull is not None:
            _close(pull, keep=pull.keep or done.outcome in (Outcome.SYNCED, Outcome.UNCHANGED))
        waiter = self._waiters.pop(done.exchange, None)
        if waiter is not None and not waiter.done():  # sync_with takes the error
            waiter.set_result((done, pull.writer if pull is not None else None))
        else:
            self._errors.pop(done.exchange, None)

    async def timer_loop(self) -> None:
        """Call ``engine.tick`` whenever its timer is due; before a round, learn the peers
        announced since (as a safety net: merges of announces learn them at once)."""
        self._run(self.engine.tick(now_ms()))
        while True:
            self._wake.clear()
            wait_s = None if self._wake_at is None else (self._wake_at - now_ms()) / 1000
            if wait_s is None or wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                continue
            self._wake_at = None
            round_at = self.engine.next_round_ms
            if round_at is not None and round_at <= now_ms():
                try:
                    await self.learn_peers()
                except Exception:  # the round goes ahead with the peers known
                    log.exception("learning peers from announces failed")
            self._run(self.engine.tick(now_ms()))

    # ---- peers -----------------------------------------------------------------------------

    @property
    def peers(self) -> dict[str, PeerView]:
        return {url: PeerView(status, self.tls.setdefault(url, PeerTls()))
                for url, status in self.engine.peers.items()}  # fmt: skip

    @property
    def barred(self) -> dict[str, str]:
        """url -> why it is not contacted (SPEC 10.6)."""
        return dict(self.engine.barred)

    def add_peer(self, url: str, source: str = "added", pin: str | None = None) -> PeerView:
        """A peer by URL; ``pin`` (or the config seed's ``#spki=``) pins it until an announce."""
        self.check_contactable(url, pin)
        self.feed(PeerAdded(url, "config" if source == "config" else "added"))
        self._seed_pin(url, pin)
        return self.peers[url]

    def _seed_pin(self, url: str, pin: str | None) -> PeerTls:
        tls = self.tls.setdefault(url, PeerTls())
        tls.seed_pin = pin or self.node.config.seed_pins.get(url) or tls.seed_pin
        if tls.seed_pin and tls.source in (None, "tofu"):
            tls.pin, tls.source = tls.seed_pin, "seed"
        return tls

    def check_contactable(self, url: str, pin: str | None = None) -> None:
        """Raise unless url may be a peer: not this node's own URL, not barred (SPEC 10.6)."""
        if url == self.node.config.url:
            raise PeerError("that URL is this node's own URL", status=400)
        reason = barred_reason(url, pin, self.claims, self.lost)
        if reason is not None:
            raise PeerBarredError(f"{url} is not contacted: {reason}")

    def remove_peer(self, url: str) -> PeerView | None:
        """Stop contacting a peer added by hand; a sync already running with it finishes."""
        peer = self.peers.get(url)
        if peer is None or peer.source != "added":
            return None
        self.feed(PeerRemoved(url))
        log.info("removed peer %s", url, extra={"peer": url})
        return peer

    async def learn_peers(self) -> None:
        """Add the URLs members announced in signed records (except this member's own), and
        drop the nodes of members that lost the peer protocol (``apply_membership``).

        The announce's ``tls`` fingerprint pins the URL. A URL that two members announce with
        different fingerprints is not pinned from announces (one of them lies about it).
        """
        node = self.node
        if node.membership is not None:
            lost = lost_protocol(node.membership)
            keys = frozenset(k for i in lost for k in node.membership.members[i].keys)
            if keys != self._lost_keys:  # rare: a removal or a fork; reads those logs whole
                self._lost_announces = await node.store.read(lambda s: s.announces_by(keys))
                self._lost_keys = keys
        endpoints = await node.store.read(lambda s: s.endpoints())
        membership = node.membership
        if membership is not None:
            self.claims = claims_of(endpoints, self._lost_announces, membership)
        self.apply_membership()
        announced: dict[str, set[str | None]] = {}
        learned: dict[str, str | None] = {}
        barred = self.engine.barred
        for endpoint in endpoints:
            if endpoint["member"] == self.node.identity or endpoint["member"] in self.lost:
                continue
            member = membership.members.get(str(endpoint["member"])) if membership else None
            tls = endpoint.get("tls")
            for url in map(str, _as_list(endpoint["urls"])):
                if url != self.node.config.url and url not in barred:
                    learned[url] = member.current_key if member else None
                    announced.setdefault(url, set()).add(tls if isinstance(tls, str) else None)
        self.feed(PeersLearned(learned))
        for url, pins in announced.items():
            self._pin_from_announce(url, self._seed_pin(url, None), pins)

    def apply_membership(self) -> None:
        """Drop the peers of members that lost the peer protocol and move rotated members'
        peers to their new keys. Synchronous: the node calls it in the merge that changed the
        membership, before anything else runs (SPEC 10.6)."""
        membership = self.node.membership
        if membership is None:
            return
        self.lost = lost_protocol(membership)
        peers = self.engine.peers
        urls = peers.keys() | self.claims.urls.keys()
        pins = {url: tls.pin for url, tls in self.tls.items()}
        barred = {url: barred_reason(url, pins.get(url), self.claims, self.lost) for url in urls}
        self.feed(PeersBarred({url: reason for url, reason in barred.items() if reason}))
        rotated: dict[str, str | None] = {}
        for url, peer in self.engine.peers.items():
            member = membership.identity_of(peer.key) if peer.key else None
            if member is not None and member.current_key != peer.key:
                rotated[url] = member.current_key
        if rotated:
            self.feed(PeersLearned(rotated))

    def _pin_from_announce(self, url: str, peer: PeerTls, pins: set[str | None]) -> None:
        pin = next(iter(pins)) if len(pins) == 1 else None
        if len(pins) > 1 and peer.source == "announce":
            log.warning("peer URL announced with conflicting TLS pins; not pinned by announces",
                        extra={"peer": url})  # fmt: skip
        if pin is not None and (peer.pin, peer.source) != (pin, "announce"):
            if peer.source == "announce":
                log.info("peer announced a new TLS key %s", pin, extra={"peer": url})
            peer.pin, peer.source = pin, "announce"
        elif pin is None and peer.source == "announce":
            peer.pin, peer.source = peer.seed_pin, "seed" if peer.seed_pin else None

    def _ssl_for(self, url: str, target: URL) -> SpkiPin | bool:
        """The aiohttp ``ssl=`` value for a request to peer: a pin, or refusal."""
        tls = self.node.config.tls
        if target.scheme != "https":
            if tls.enabled:
                raise TlsRefusedError(
                    f"{url} is plain HTTP and this node requires TLS "
                    "([tls] enabled = false allows plain peers)",
                    reason="plain_http",
                )
            return True
        peer = self.tls.setdefault(url, PeerTls())
        if peer.pin is not None:
            pin = self.spki_pins.get(peer.pin)
            if pin is None:
                pin = self.spki_pins[peer.pin] = SpkiPin(peer.pin)
            return pin
        if tls.tofu:
            return SpkiPin("0" * 64, on_seen=lambda seen: self._trust_first(url, peer, seen))
        raise TlsRefusedError(
            f"no TLS pin for {url}: its member's announce is not known yet; pin the seed "
            "('https://host:port/#spki=<hex>' in peers) or set [tls] tofu = true",
            reason="no_pin",
        )

    def _trust_first(self, url: str, peer: PeerTls, seen: str) -> None:
        if peer.pin is None:
            peer.pin, peer.source = seen, "tofu"
            log.warning("trusting the TLS key of %s on first use: %s", url, seen,
                        extra={"peer": url})  # fmt: skip

    # ---- requests --------------------------------------------------------------------------

    async def _request(
        self,
        url: str,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        reason = self.engine.barred.get(url)
        if reason is not None:  # dropped while this exchange was planned or under way
            raise PeerBarredError(f"{url} is not contacted: {reason}")
        full = str(URL(url).join(URL(path)))
        if params:
            full = str(URL(full).with_query(params))
        target = URL(full, encoded=True)
        ssl = self._ssl_for(url, target)  # before signing: nothing leaves for a refused peer
        signed = sign_request(self.node.key, method, full, body, now_s=time.time())
        all_headers = signed | (headers or {})
        if body:
            all_headers["Content-Type"] = "application/x-ndjson"
        try:
            async with asyncio.timeout(self.node.config.gossip.timeout_s):
                async with self.session.request(
                    method, target, data=body or None, headers=all_headers, ssl=ssl
                ) as response:
                    data = await response.read()
        except aiohttp.ServerFingerprintMismatch as e:
            raise describe_mismatch(url, e) from e
        self.bytes_sent += len(body) + sum(len(k) + len(v) for k, v in all_headers.items())
        self.bytes_received += len(data)
        return response.status, data

    async def _fetch_frontier(self, exchange: int, url: str) -> FrontierAnswered:
        """GET /v1/heads, reading deltas (SPEC 10.2); merge its fork evidence; report the
        peer's frontier and the local heads to plan with (the authors a delta names)."""
        from node.net.peer_api import frontier

        mine = await frontier(self.node)  # its heads, frozen authors capped, plan the exchange
        history = self.node.frontiers
        digest = history.observe(mine)
        headers = {"If-None-Match": f'"{digest}"', "Hm-Recent": ",".join(history.recent())}
        status, data = await self._request(url, "GET", "/v1/heads", headers=headers)
        if status == 304:
            return FrontierAnswered(exchange, url, None, dict(mine.heads))
        answer = parse_frontier_answer(self._frontier_json(url, status, data))
        view = plan_view(answer, mine.heads, history, digest)
        if view is None:  # "at" a frontier this node forgot meanwhile: ask for all of it
            status, data = await self._request(url, "GET", "/v1/heads")
            view = parse_frontier(self._frontier_json(url, status, data)), dict(mine.heads)
        theirs, local = view
        batch = [str(t).encode() for f in theirs.forks for t in _as_list(f.get("records"))]
        if batch:  # SPEC 10.3 step 2: fork evidence first, through the normal merge
            await self.node.merge(batch, source=url)
        return FrontierAnswered(exchange, url, theirs, local)

    @staticmethod
    def _frontier_json(url: str, status: int, data: bytes) -> object:
        if status == 403:
            raise NotCountedError(
                f"{url} does not count this node's key as a member (not admitted yet, "
                f"removed, or frozen by a fork): {answer_text(data)}"
            )
        if status != 200:
            raise PeerError(f"{url} answered {status} to /v1/heads: {answer_text(data)}")
        return _json(data)

    async def _fetch_page(self, exchange: int, url: str, page: LogRequest) -> PageReceived | None:
        """Fetch a page and hand it to the verify pool, then to the exchange's writer."""
        if exchange not in self.engine.exchanges:  # it ended before this task ran
            return None
        pull = self._pulls.setdefault(exchange, _Pull())
        try:
            status, data = await self._request(
                url, "GET", f"/v1/log/{page.author}", params=page.query()
            )
            if status != 200:
                raise PeerError(f"{url} answered {status} to /v1/log: {answer_text(data)}")
            lines = split_ndjson(data, page.limit)
            check_log_page(lines, page)
        except Exception:
            pull.keep = True  # the pages received before this one verify on their own
            raise
        preparing = asyncio.ensure_future(self.node.store.prepare_merge(lines))
        try:  # the thread runs on if this task is cancelled: drop its job when done
            prepared = await asyncio.shield(preparing)
        except asyncio.CancelledError:
            preparing.add_done_callback(_cancel_prepared)
            raise
        if pull.closed:  # the exchange ended meanwhile
            _cancel_jobs([prepared])
            return None
        pull.queue.put_nowait(prepared)
        if pull.writer is None:
            pull.writer = asyncio.create_task(self._write_pages(exchange, url, pull))
        return PageReceived(exchange, url, page, len(lines), claimed_last_seq(lines))

    async def _write_pages(self, exchange: int, url: str, pull: _Pull) -> None:
        """Write what is queued, up to ``PULL_GROUP_RECORDS`` records a transaction, until the
        exchange ends; tell the engine what each group held."""
        end = False
        while not end:
            group: list[PreparedMerge] = []
            item = await pull.queue.get()
            while True:
                if item is None:
                    end = True
                else:
                    group.append(item)
                if end or pull.queue.empty() or _records(group) >= PULL_GROUP_RECORDS:
                    break
                item = pull.queue.get_nowait()
            if not group:
                continue
            try:
                result = await self.node.store.finish_merge(group, received_ms=now_ms())
                await self.node.merged(result, source=url, relay=False)  # SPEC 10.3
            except Exception as e:  # reported: the exchange ends
                log.exception("writing pulled pages from %s failed", url, extra={"peer": url})
                _close(pull, keep=False)
                self.feed(RequestFailed(url, exchange, Outcome.UNREACHABLE, f"not written: {e}"))
                return
            bad = sum(1 for o in result.outcomes if is_misbehaviour(o.error))
            accepted = result.counts()["accepted"]
            self.feed(PagesMerged(exchange, url, len(group), len(result.outcomes), accepted, bad))

    async def _push_log(self, action: PushLog) -> PushAnswered:
        """Push one batch of what the peer lacks; a peer further behind pulls the rest."""
        lines = await self.node.store.read(_log_reader(action.author, action.after, action.limit))
        pending = await self._post(action.url, lines, relay=action.relay) if lines else 0
        return PushAnswered(action.url, action.exchange, len(lines), pending)

    async def _push(self, url: str, records: tuple[Record, ...], relay: bool) -> PushAnswered:
        pending = await self._post(url, [r.canonical for r in records], relay=relay)
        return PushAnswered(url, None, len(records), pending)

    async def _post(self, url: str, lines: list[bytes], *, relay: bool) -> int:
        """Post a batch; the number of records the peer holds pending."""
        path = "/v1/records" if relay else "/v1/records?relay=0"
        status, data = await self._request(url, "POST", path, join_ndjson(lines))
        if status == 403:
            raise NotCountedError(f"{url} refused a push (403): {answer_text(data)}")
        if status not in (200, 422):
            raise PeerError(f"{url} answered {status} to a push: {answer_text(data)}")
        return _pending_count(data)

    # ---- the node's side -------------------------------------------------------------------

    async def sync_with(self, peer: PeerView, *, relay: bool = False) -> SyncReport:
        """One reconciliation with peer now: pull what we lack, push what it lacks; raises
        what stopped it (PeerError, PeerBarredError, TlsRefusedError, RemoteProtocolError)."""
        actions = self.engine.handle(now_ms(), StartSync(peer.url, relay))
        start = next((a for a in actions if isinstance(a, FetchFrontier)), None)
        if start is None:
            self._run(actions)
            raise PeerBarredError(f"{peer.url} is not a peer of this node")
        waiter: asyncio.Future[_Finished] = asyncio.get_running_loop().create_future()
        self._waiters[start.exchange] = waiter
        self._run(actions)
        done, writer = await waiter
        error = self._errors.pop(done.exchange, None)
        if writer is not None:  # pages received before a failure are still being written
            await asyncio.wait([writer])
        if done.outcome in (Outcome.SYNCED, Outcome.UNCHANGED):
            return done.report
        if done.outcome is Outcome.BARRED:
            raise PeerBarredError(done.error or f"{peer.url} is not contacted")
        raise error if error is not None else PeerError(done.error or done.outcome.value)

    def enqueue(self, records: list[Record], source: str | None) -> None:
        self.feed(RecordsMerged(tuple(records), source))

    def push_evidence(self, forks: list[ForkEvidence]) -> None:
        """A fork this node found goes to every peer at once, both records, however they came
        (pulled ones too): a peer may hold only one of them and must freeze the author."""
        self.feed(ForksFound(tuple(forks)))

    async def stop(self) -> None:
        tasks = list(self._tasks) + [p.writer for p in self._pulls.values() if p.writer]
        for pull in self._pulls.values():
            _close(pull, keep=False)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _classify(url: str, e: Exception) -> tuple[Outcome, str]:
    """How a request failed, and the text the peer's ``last_error`` shows."""
    if isinstance(e, PeerBarredError):
        return Outcome.BARRED, str(e)
    if isinstance(e, NotCountedError):
        return Outcome.NOT_COUNTED, str(e)
    if isinstance(e, TlsRefusedError):
        return Outcome.REFUSED, f"TLS refused ({e.reason}): {e}"
    if isinstance(e, (aiohttp.ClientError, TimeoutError, OSError)):
        return Outcome.UNREACHABLE, f"unreachable: {str(e) or 'timed out'}"
    return Outcome.MISBEHAVED, f"misbehaved: {e}"


def _close(pull: _Pull, *, keep: bool) -> None:
    """End a pull: its writer writes what is queued (keep) or drops it, then stops."""
    pull.closed = True
    if not keep:
        dropped = []
        while not pull.queue.empty():
            item = pull.queue.get_nowait()
            if item is not None:
                dropped.append(item)
        _cancel_jobs(dropped)
    pull.queue.put_nowait(None)


def _log_reader(author: str, after: int, limit: int) -> Callable[[Store], list[bytes]]:
    def read(store: Store) -> list[bytes]:
        return store.log(author, after, limit)

    return read


def _records(group: list[PreparedMerge]) -> int:
    return sum(len(p.batch) for p in group)


def _cancel_prepared(future: asyncio.Future[PreparedMerge]) -> None:
    if not future.cancelled() and future.exception() is None:
        _cancel_jobs([future.result()])


def _cancel_jobs(group: list[PreparedMerge]) -> None:
    for prepared in group:
        if prepared.job is not None:
            prepared.job.cancel()


def answer_text(data: bytes) -> str:
    """A peer's error answer as text for people: a problem body's title and detail, else
    the first 200 characters decoded (never a bytes repr)."""
    try:
        problem = orjson.loads(data)
        if isinstance(problem, dict) and (problem.get("title") or problem.get("detail")):
            parts = [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
            return ": ".join(parts)[:300]
    except orjson.JSONDecodeError:
        pass
    return data[:200].decode("utf-8", errors="replace").strip() or "(empty answer)"


def _json(data: bytes) -> object:
    import json

    try:
        return json.loads(data)
    except ValueError as e:
        raise PeerError(f"peer answered with invalid JSON: {e}") from e


def _pending_count(data: bytes) -> int:
    """How many pushed records a peer's answer says it holds pending (0 if it does not say)."""
    try:
        counts = orjson.loads(data).get("counts", {})
        pending = counts.get("pending", 0)
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return pending if type(pending) is int and pending > 0 else 0


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


GOSSIP = web.AppKey("gossip", Gossip)


async def gossip_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    gossip = Gossip(node, app[SESSION])
    for url in node.config.peers:
        if url != node.config.url:
            gossip.add_peer(url, "config")
    for row in await node.store.read(lambda s: s.peers()):
        url = str(row["url"])
        if url != node.config.url and url not in gossip.engine.peers:
            pin = row.get("pin")  # stored by `peers add URL#spki=…`, if the API kept it
            gossip.add_peer(
                url, str(row.get("source") or "added"), pin if isinstance(pin, str) else None
            )
    await gossip.learn_peers()  # before any exchange: seeds of removed members go at once
    node.on_new_records.append(gossip.enqueue)
    node.on_membership.append(gossip.apply_membership)
    node.on_announces.append(gossip.learn_peers)
    node.on_forks.append(gossip.push_evidence)
    app[GOSSIP] = gossip
    timer = asyncio.create_task(gossip.timer_loop(), name="gossip timer")
    yield
    node.on_new_records.remove(gossip.enqueue)
    node.on_membership.remove(gossip.apply_membership)
    node.on_announces.remove(gossip.learn_peers)
    node.on_forks.remove(gossip.push_evidence)
    timer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await timer
    await gossip.stop()
