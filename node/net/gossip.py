"""Gossip: anti-entropy rounds with random peers, plus eager push of new records.

- Anti-entropy: every ``interval_s`` (jittered +-25%) the node picks a random peer that is
  not backed off and reconciles with it (``sync_with``): it asks for the peer's frontier
  (``If-None-Match`` with its own digest, so an idle round is a 304), pulls what it lacks in
  pages, and pushes what the peer lacks. ``protocol.sync`` decides what to ask and send.
- Eager push (SPEC 10.3): new records are queued and pushed in small batches. Records this
  node authors go to every peer; records that came straight from their author's node are
  relayed to one random peer (the author reached everyone it knows); records pushed by a
  relay to ``fanout`` random peers; never back to the peer they came from. Records pulled,
  or pushed by a peer's anti-entropy (``?relay=0``), are not pushed on. A push answered with
  pending records (the peer missed earlier ones) starts a reconciliation with it at once.
- Peers: config seeds, ``hashmesh peers add``, and members' signed ``announce`` records.
  Each peer has exponential backoff with jitter after failures or misbehaviour; a peer that
  refuses this node's key (403: not admitted yet) is retried every interval instead, so an
  admission takes effect within a round or two.
- Membership (SPEC 10.6, ``node.net.peerset``): the merge that removes a member or finds its fork
  drops that member's node from the peer set before anything else runs, and no request is
  sent to it from then on (also none already planned); its URL cannot be added back.
- Transport (``node.net.tls``, SPEC 10.5): an ``https://`` peer is contacted only with a pin for
  its TLS key -- from its member's announce, else from the seed URL (``#spki=``), else, if
  ``[tls] tofu`` allows it, the first key it shows. A mismatch, a missing pin, or a plain
  ``http://`` peer while this node runs TLS is refused before any request is sent, and shows
  in the peer's ``last_error``, the log and ``hashmesh_tls_pin_failures_total``.

All peer requests are signed (``node.net.httpsig``), share one ``ClientSession`` and run under a
timeout. Tasks are created in ``gossip_ctx`` and cancelled when the app stops.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
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
from node.store.store import MergeResult, PreparedMerge, Store
from protocol.bodies import AnnounceBody
from protocol.chain import ForkEvidence, Head
from protocol.errors import RemoteProtocolError
from protocol.records import Record
from protocol.sync import (
    Frontier,
    LogRequest,
    check_log_page,
    claimed_last_seq,
    is_misbehaviour,
    join_ndjson,
    lag,
    next_page,
    parse_frontier,
    plan_pulls,
    plan_pushes,
    push_width,
    split_ndjson,
)

log = logging.getLogger("hashmesh.gossip")
PUSH_BATCH_RECORDS = 500
PUSH_LINGER_S = 0.02
# A pull writes its pages in groups of about this many records, one transaction each: SQLite
# dirties each page of the random-order indexes (record ids, lookup keys) once per transaction,
# so bare inserts of 20,000 records per commit run ~1.5x faster than 5,000 (one page) at 1 M.
PULL_GROUP_RECORDS = 20_000
PULL_AHEAD_PAGES = 10  # pages fetched and verifying ahead of the writer (~50k records)
EVERY_PEER = "*"  # the queued source of fork evidence: pushed to every peer (SPEC 10.3)


@dataclass(slots=True)
class PeerState:
    url: str
    source: str = "config"  # config | added | announce
    last_contact_ms: int | None = None
    last_attempt_ms: int | None = None
    failures: int = 0
    backoff_until: float = 0.0
    last_error: str | None = None
    behind: int = 0  # records the peer had that we lacked, at last contact
    ahead: int = 0  # records we had that the peer lacked, at last contact
    key: str | None = None
    pin: str | None = None  # SPKI fingerprint its TLS certificate must have
    pin_source: str | None = None  # announce | seed | tofu
    seed_pin: str | None = None  # from config (#spki=) or `peers add`: the fallback

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "url": self.url,
            "source": self.source,
            "key": self.key,
            "tls": {"pin": self.pin, "source": self.pin_source},
            "last_contact_ms": self.last_contact_ms,
            "seconds_since_contact": None
            if self.last_contact_ms is None
            else round(now - self.last_contact_ms / 1000, 1),
            "failures": self.failures,
            "backed_off_s": max(0.0, round(self.backoff_until - now, 1)),
            "last_error": self.last_error,
            "lag_records": {"behind": self.behind, "ahead": self.ahead},
        }


@dataclass(slots=True)
class SyncReport:
    peer: str
    pulled: int = 0
    accepted: int = 0
    pushed: int = 0
    unchanged: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "pulled": self.pulled,
            "accepted": self.accepted,
            "pushed": self.pushed,
            "unchanged": self.unchanged,
        }


@dataclass(slots=True)
class Gossip:
    node: Node
    session: aiohttp.ClientSession
    peers: dict[str, PeerState] = field(default_factory=dict)
    queue: asyncio.Queue[tuple[Record, str | None]] = field(default_factory=asyncio.Queue)
    bytes_sent: int = 0
    bytes_received: int = 0
    spki_pins: dict[str, SpkiPin] = field(default_factory=dict)  # one per pin: pooling
    repairs: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # url -> running sync
    claims: Claims = field(default_factory=Claims)  # who announced which URL and TLS key
    lost: dict[str, str] = field(default_factory=dict)  # identities out of the peer protocol
    barred: dict[str, str] = field(default_factory=dict)  # url -> why it is not contacted
    _lost_keys: frozenset[str] = frozenset()  # whose announces _lost_announces holds
    _lost_announces: list[tuple[str, AnnounceBody]] = field(default_factory=list)

    # ---- peers -------------------------------------------------------------------------

    def add_peer(self, url: str, source: str = "added", pin: str | None = None) -> PeerState:
        """A peer by URL; ``pin`` (or the config seed's ``#spki=``) pins it until an announce."""
        self.check_contactable(url, pin)
        peer = self.peers.setdefault(url, PeerState(url, source))
        peer.seed_pin = pin or self.node.config.seed_pins.get(url) or peer.seed_pin
        if peer.seed_pin and peer.pin_source in (None, "tofu"):
            peer.pin, peer.pin_source = peer.seed_pin, "seed"
        return peer

    def check_contactable(self, url: str, pin: str | None = None) -> None:
        """Raise unless url may be a peer: not this node's own URL, not barred (SPEC 10.6)."""
        if url == self.node.config.url:
            raise PeerError("that URL is this node's own URL", status=400)
        reason = barred_reason(url, pin, self.claims, self.lost)
        if reason is not None:
            raise PeerBarredError(f"{url} is not contacted: {reason}")

    def remove_peer(self, url: str) -> PeerState | None:
        """Stop contacting a peer added by hand; a sync already running with it finishes."""
        peer = self.peers.get(url)
        if peer is None or peer.source != "added":
            return None
        log.info("removed peer %s", url, extra={"peer": url})
        return self.peers.pop(url)

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
        for endpoint in endpoints:
            if endpoint["member"] == self.node.identity or endpoint["member"] in self.lost:
                continue
            member = membership.members.get(str(endpoint["member"])) if membership else None
            tls = endpoint.get("tls")
            for url in map(str, _as_list(endpoint["urls"])):
                if url != self.node.config.url and url not in self.barred:
                    peer = self.add_peer(url, "announce")
                    peer.key = member.current_key if member else peer.key
                    announced.setdefault(url, set()).add(tls if isinstance(tls, str) else None)
        for url, pins in announced.items():
            self._pin_from_announce(self.peers[url], pins)

    def apply_membership(self) -> None:
        """Drop the peers of members that lost the peer protocol and move rotated members'
        peers to their new keys. Synchronous: the node calls it in the merge that changed the
        membership, before anything else runs (SPEC 10.6)."""
        membership = self.node.membership
        if membership is None:
            return
        self.lost = lost_protocol(membership)
        urls = self.peers.keys() | self.claims.urls.keys()
        pins = {url: peer.pin for url, peer in self.peers.items()}
        barred = {url: barred_reason(url, pins.get(url), self.claims, self.lost) for url in urls}
        self.barred = {url: reason for url, reason in barred.items() if reason is not None}
        for url, reason in self.barred.items():
            if self.peers.pop(url, None) is not None:
                log.warning("dropped peer %s: %s; it is not contacted from now on", url, reason,
                            extra={"peer": url})  # fmt: skip
        for peer in self.peers.values():
            member = membership.identity_of(peer.key) if peer.key else None
            if member is not None:
                peer.key = member.current_key

    def _pin_from_announce(self, peer: PeerState, pins: set[str | None]) -> None:
        pin = next(iter(pins)) if len(pins) == 1 else None
        if len(pins) > 1 and peer.pin_source == "announce":
            log.warning("peer URL announced with conflicting TLS pins; not pinned by announces",
                        extra={"peer": peer.url})  # fmt: skip
        if pin is not None and (peer.pin, peer.pin_source) != (pin, "announce"):
            if peer.pin_source == "announce":
                log.info("peer announced a new TLS key %s", pin, extra={"peer": peer.url})
            peer.pin, peer.pin_source = pin, "announce"
        elif pin is None and peer.pin_source == "announce":
            peer.pin, peer.pin_source = peer.seed_pin, "seed" if peer.seed_pin else None

    def _available(self) -> list[PeerState]:
        now = time.monotonic()
        return [p for p in self.peers.values() if p.backoff_until <= now]

    def _failed(self, peer: PeerState, error: str, *, exponential: bool = True) -> None:
        peer.failures += 1
        peer.last_error = error
        g = self.node.config.gossip
        exponent = min(peer.failures, 10) if exponential else 0
        delay = min(g.backoff_max_s, g.interval_s * 2**exponent)
        peer.backoff_until = time.monotonic() + delay * self.node.rng.uniform(0.5, 1.0)
        log.info("peer %s failed (%s); backing off %.1fs", peer.url, error, delay,
                 extra={"peer": peer.url})  # fmt: skip

    def _refused(self, peer: PeerState, error: TlsRefusedError) -> None:
        """A transport-security refusal: back off, and make it visible everywhere."""
        self.node.metrics.tls_pin_failures.labels(peer.url, error.reason).inc()
        log.warning("refused peer %s: %s", peer.url, error,
                    extra={"peer": peer.url, "reason": error.reason, "peer_key": peer.key,
                           "expected_spki": error.expected, "got_spki": error.got})  # fmt: skip
        self._failed(peer, f"TLS refused ({error.reason}): {error}")

    def _ssl_for(self, peer: PeerState, url: URL) -> SpkiPin | bool:
        """The aiohttp ``ssl=`` value for a request to peer: a pin, or refusal."""
        tls = self.node.config.tls
        if url.scheme != "https":
            if tls.enabled:
                raise TlsRefusedError(
                    f"{peer.url} is plain HTTP and this node requires TLS "
                    "([tls] enabled = false allows plain peers)",
                    reason="plain_http",
                )
            return True
        if peer.pin is not None:
            pin = self.spki_pins.get(peer.pin)
            if pin is None:
                pin = self.spki_pins[peer.pin] = SpkiPin(peer.pin)
            return pin
        if tls.tofu:
            return SpkiPin("0" * 64, on_seen=lambda seen: self._trust_first(peer, seen))
        raise TlsRefusedError(
            f"no TLS pin for {peer.url}: its member's announce is not known yet; pin the seed "
            "('https://host:port/#spki=<hex>' in peers) or set [tls] tofu = true",
            reason="no_pin",
        )

    def _trust_first(self, peer: PeerState, seen: str) -> None:
        if peer.pin is None:
            peer.pin, peer.pin_source = seen, "tofu"
            log.warning("trusting the TLS key of %s on first use: %s", peer.url, seen,
                        extra={"peer": peer.url})  # fmt: skip

    def _succeeded(self, peer: PeerState) -> None:
        peer.failures = 0
        peer.backoff_until = 0.0
        peer.last_error = None
        peer.last_contact_ms = now_ms()

    # ---- requests ----------------------------------------------------------------------

    async def _request(
        self,
        peer: PeerState,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        reason = self.barred.get(peer.url)
        if reason is not None:  # dropped while this exchange was planned or under way
            raise PeerBarredError(f"{peer.url} is not contacted: {reason}")
        url = str(URL(peer.url).join(URL(path)))
        if params:
            url = str(URL(url).with_query(params))
        target = URL(url, encoded=True)
        ssl = self._ssl_for(peer, target)  # before signing: nothing leaves for a refused peer
        signed = sign_request(self.node.key, method, url, body, now_s=time.time())
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
            raise describe_mismatch(peer.url, e) from e
        self.bytes_sent += len(body) + sum(len(k) + len(v) for k, v in all_headers.items())
        self.bytes_received += len(data)
        return response.status, data, dict(response.headers)

    # ---- anti-entropy ------------------------------------------------------------------

    async def sync_with(self, peer: PeerState, *, relay: bool = False) -> SyncReport:
        """One reconciliation with peer: pull what we lack, push what it lacks (asking it to
        push those on only if relay: a repair of a missed push, SPEC 10.3)."""
        peer.last_attempt_ms = now_ms()
        report = SyncReport(peer.url)
        metrics = self.node.metrics
        try:
            await self._reconcile(peer, report, relay)
        except PeerBarredError:
            metrics.syncs.labels("barred").inc()
            raise
        except NotCountedError as e:
            metrics.syncs.labels("not_counted").inc()
            self._failed(peer, str(e), exponential=False)
            raise
        except TlsRefusedError as e:
            metrics.syncs.labels("refused").inc()
            self._refused(peer, e)
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            metrics.syncs.labels("unreachable").inc()
            self._failed(peer, f"unreachable: {str(e) or 'timed out'}")
            raise PeerError(f"{peer.url} is unreachable: {str(e) or 'timed out'}") from e
        except (RemoteProtocolError, PeerError) as e:
            metrics.syncs.labels("misbehaved").inc()
            self._failed(peer, f"misbehaved: {e}")
            raise
        metrics.syncs.labels("unchanged" if report.unchanged else "synced").inc()
        self._succeeded(peer)
        return report

    async def _reconcile(self, peer: PeerState, report: SyncReport, relay: bool) -> None:
        local = await self._local_heads()
        from node.net.peer_api import frontier

        mine = await frontier(self.node)
        status, data, _ = await self._request(
            peer, "GET", "/v1/heads", headers={"If-None-Match": f'"{mine.digest()}"'}
        )
        if status == 304:
            peer.behind = peer.ahead = 0
            report.unchanged = True
            return
        if status == 403:
            raise NotCountedError(
                f"{peer.url} does not count this node's key as a member (not admitted yet, "
                f"removed, or frozen by a fork): {answer_text(data)}"
            )
        if status != 200:
            raise PeerError(f"{peer.url} answered {status} to /v1/heads: {answer_text(data)}")
        theirs = parse_frontier(_json(data))
        peer.behind, peer.ahead = lag(local, theirs)
        await self._merge_forks(theirs, peer)
        await self._pull(
            peer, plan_pulls(local, theirs, self.node.config.gossip.page_records), report
        )
        for author, after in plan_pushes(await self._local_heads(), theirs):
            await self._push_log(peer, author, after, report, relay)

    async def _local_heads(self) -> dict[str, Head]:
        heads = await self.node.store.read(lambda s: s.heads())
        return {h.author: h for h in heads}

    async def _merge_forks(self, theirs: Frontier, peer: PeerState) -> None:
        batch = [str(t).encode() for f in theirs.forks for t in _as_list(f.get("records"))]
        if batch:
            await self.node.merge(batch, source=peer.url)

    async def _fetch_page(self, peer: PeerState, page: LogRequest) -> list[bytes]:
        status, data, _ = await self._request(
            peer, "GET", f"/v1/log/{page.author}", params=page.query()
        )
        if status != 200:
            raise PeerError(f"{peer.url} answered {status} to /v1/log: {answer_text(data)}")
        lines = split_ndjson(data, page.limit)
        check_log_page(lines, page)
        return lines

    async def _pull(self, peer: PeerState, requests: list[LogRequest], report: SyncReport) -> None:
        """Stream the logs asked for, one after another, through a bounded pipeline: a fetcher
        hands each page to the verify pool as it arrives and queues it (up to
        ``PULL_AHEAD_PAGES``); the writer takes what is queued, up to ``PULL_GROUP_RECORDS``,
        and writes it in one transaction. Neither waits on the other at page or log
        boundaries, and SQLite commits fewer, larger transactions."""
        queue: asyncio.Queue[PreparedMerge | BaseException | None] = asyncio.Queue(PULL_AHEAD_PAGES)
        fetcher = asyncio.create_task(self._fetch_pages(peer, collections.deque(requests), queue))
        group: list[PreparedMerge] = []
        try:
            end, failure = False, None
            while not end:
                item = await queue.get()
                while True:
                    if item is None:
                        end = True
                    elif isinstance(item, BaseException):  # write what came before it first
                        end, failure = True, item
                    else:
                        group.append(item)
                    if end or queue.empty() or _records(group) >= PULL_GROUP_RECORDS:
                        break
                    item = queue.get_nowait()
                if group:
                    result = await self.node.store.finish_merge(group, received_ms=now_ms())
                    group = []
                    await self._merged_page(peer, result, report)
            if failure is not None:
                raise failure
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher
            while not queue.empty():
                leftover = queue.get_nowait()
                if isinstance(leftover, PreparedMerge):
                    group.append(leftover)
            _cancel_jobs(group)

    async def _fetch_pages(
        self,
        peer: PeerState,
        pages: collections.deque[LogRequest],
        queue: asyncio.Queue[PreparedMerge | BaseException | None],
    ) -> None:
        """Fetch page after page, handing each to the verify pool and then to the queue; then
        None, or the exception that stopped it."""
        try:
            while pages:
                page = pages.popleft()
                lines = await self._fetch_page(peer, page)
                preparing = asyncio.ensure_future(self.node.store.prepare_merge(lines))
                try:  # the thread runs on if this task is cancelled: drop its job when done
                    prepared = await asyncio.shield(preparing)
                except asyncio.CancelledError:
                    preparing.add_done_callback(_cancel_prepared)
                    raise
                following = next_page(page, len(lines), claimed_last_seq(lines))
                if following is not None:
                    pages.appendleft(following)
                try:
                    await queue.put(prepared)
                except asyncio.CancelledError:  # the writer stopped: drop what it never took
                    _cancel_jobs([prepared])
                    raise
        except Exception as e:
            await queue.put(e)
            return
        await queue.put(None)

    async def _merged_page(self, peer: PeerState, result: MergeResult, report: SyncReport) -> None:
        await self.node.merged(result, source=peer.url, relay=False)  # SPEC 10.3
        accepted = result.counts()["accepted"]
        report.pulled += len(result.outcomes)
        report.accepted += accepted
        peer.behind = max(0, peer.behind - accepted)  # status shows a long catch-up's progress
        bad = [o for o in result.outcomes if is_misbehaviour(o.error)]
        if bad:
            raise PeerError(f"{peer.url} sent {len(bad)} records that do not verify")

    async def _push_log(
        self, peer: PeerState, author: str, after: int, report: SyncReport, relay: bool
    ) -> None:
        """Push one batch of what the peer lacks; a peer further behind pulls the rest."""
        lines = await self.node.store.read(_log_reader(author, after))
        if lines:
            await self._post(peer, lines, relay=relay)
            report.pushed += len(lines)

    async def _post(self, peer: PeerState, lines: list[bytes], *, relay: bool = True) -> None:
        path = "/v1/records" if relay else "/v1/records?relay=0"
        status, data, _ = await self._request(peer, "POST", path, join_ndjson(lines))
        if status not in (200, 422):
            raise PeerError(f"{peer.url} answered {status} to a push: {answer_text(data)}")
        if _pending_count(data):
            self.repair(peer)

    def repair(self, peer: PeerState) -> None:
        """Reconcile with peer now, not at the next round: it holds pushed records pending
        because it lacks earlier ones (it missed a push), and a sync sends it those."""
        if peer.url not in self.repairs:
            task = asyncio.create_task(self._repair(peer), name=f"repair {peer.url}")
            self.repairs[peer.url] = task

    async def _repair(self, peer: PeerState) -> None:
        try:
            with contextlib.suppress(PeerError, RemoteProtocolError):
                await self.sync_with(peer, relay=True)
        finally:
            del self.repairs[peer.url]

    # ---- background tasks --------------------------------------------------------------

    async def anti_entropy_loop(self) -> None:
        interval = self.node.config.gossip.interval_s
        while True:
            await asyncio.sleep(interval * self.node.rng.uniform(0.75, 1.25))
            await self.learn_peers()
            candidates = self._available()
            if not candidates:
                continue
            peer = self.node.rng.choice(sorted(candidates, key=lambda p: p.url))
            with contextlib.suppress(PeerError, RemoteProtocolError):
                await self.sync_with(peer)

    def enqueue(self, records: list[Record], source: str | None) -> None:
        for record in records:
            self.queue.put_nowait((record, source))

    def push_evidence(self, forks: list[ForkEvidence]) -> None:
        """A fork this node found goes to every peer at once, both records, however they came
        (pulled ones too): a peer may hold only one of them and must freeze the author."""
        self.enqueue([r for fork in forks for r in (fork.first, fork.second)], EVERY_PEER)

    async def push_loop(self) -> None:
        while True:
            batch = [await self.queue.get()]
            await asyncio.sleep(PUSH_LINGER_S)  # let a burst gather into one request
            while not self.queue.empty() and len(batch) < PUSH_BATCH_RECORDS:
                batch.append(self.queue.get_nowait())
            if any(record.kind == "announce" for record, _ in batch):
                await self.learn_peers()  # know the announcing peers' keys: no push back
            await self._push_batch(batch)

    async def _push_batch(self, batch: list[tuple[Record, str | None]]) -> None:
        """Push each record to the peers SPEC 10.3 names for it, one request per peer."""
        available = self._available()
        fanout = self.node.config.gossip.fanout
        by_route: dict[tuple[str | None, int | None], list[int]] = {}
        own_key = self.node.key.public
        for index, (record, source) in enumerate(batch):
            want = (
                None
                if source == EVERY_PEER
                else push_width(record.author, source=source, own_key=own_key, fanout=fanout)
            )
            by_route.setdefault((source, want), []).append(index)
        per_peer: dict[str, tuple[PeerState, list[int]]] = {}
        for (source, want), indexes in by_route.items():
            targets = [p for p in available if source is None or source not in (p.url, p.key)]
            if want is not None:
                targets = self.node.rng.sample(targets, min(want, len(targets)))
            for peer in targets:
                per_peer.setdefault(peer.url, (peer, []))[1].extend(indexes)
        chosen = [peer for peer, _ in per_peer.values()]
        results = await asyncio.gather(
            *(
                self._post(peer, [batch[i][0].canonical for i in sorted(indexes)])
                for peer, indexes in per_peer.values()
            ),
            return_exceptions=True,
        )
        for peer, outcome in zip(chosen, results, strict=True):
            if isinstance(outcome, PeerBarredError):
                continue  # dropped while the push was under way
            if isinstance(outcome, TlsRefusedError):
                self._refused(peer, outcome)
            elif isinstance(outcome, BaseException):
                self._failed(peer, f"push failed: {type(outcome).__name__}: {outcome}")
            else:
                self._succeeded(peer)


def _log_reader(author: str, after: int) -> Callable[[Store], list[bytes]]:
    def read(store: Store) -> list[bytes]:
        return store.log(author, after, PUSH_BATCH_RECORDS)

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
        if url != node.config.url and url not in gossip.peers:
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
    tasks = [
        asyncio.create_task(gossip.anti_entropy_loop(), name="anti-entropy"),
        asyncio.create_task(gossip.push_loop(), name="push"),
    ]
    yield
    node.on_new_records.remove(gossip.enqueue)
    node.on_membership.remove(gossip.apply_membership)
    node.on_announces.remove(gossip.learn_peers)
    node.on_forks.remove(gossip.push_evidence)
    tasks.extend(gossip.repairs.values())
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
