"""The node's aiohttp application: ``make_app(config)``.

One process, one member, one store. The app holds a ``Node`` (typed ``AppKey``) with the
member key, the verified federation, the store, the cached membership, the gossip engine and
the match index. Background work (gossip rounds, eager push, expiry sweeps) is started and
stopped through ``cleanup_ctx``; nothing is fire-and-forget.

Errors become RFC 9457 problem bodies in one middleware: ``NodeError`` and
``RemoteProtocolError`` carry their status; anything else is a 500 and is logged.

Membership (SPEC 10.6): a merge that changes it hands the new membership over, and
``Node.merged`` adopts it before anything else runs, so a removed or forked member's key is
refused and its node dropped by gossip in that same step; a member admitted while its node
runs announces itself then. Forks a merge finds are logged, counted and pushed to every peer.

Transport (``node.tls``): the member's announce carries the SPKI fingerprint of the node's
TLS certificate and is republished when it changes. ``GET /metrics`` (``node.metrics``)
exposes the node's own Prometheus registry. Logs name peers, authors and records in the
structured fields ``peer``, ``author``, ``seq``, ``record`` and never carry keys or tokens.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from node.config import NodeConfig
from node.deadlines import counting, read_deadlines
from node.errors import ApiError, NodeError, refused
from node.home import NodeHome
from node.httpsig import RequestVerifier
from node.matchindex import MatchIndex
from node.metrics import Metrics, handle_metrics, metrics_middleware
from node.store import AsyncStore, MergeResult, SignalChange
from node.tls import NodeTls, load_node_tls
from protocol.bodies import AnnounceBody, Body
from protocol.chain import ForkEvidence
from protocol.errors import AuthoringError, LocalProtocolError, RemoteProtocolError
from protocol.federation import Federation
from protocol.keys import SigningKey
from protocol.membership import Membership
from protocol.records import Record

log = logging.getLogger("hashmesh.node")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# rejections that mean "our views of the federation differ", not "the sender misbehaved"
VIEW_REJECTIONS = frozenset({"MembershipError", "SeqGapError", "PrevMismatchError"})
_FREEZE_REASONS = {"fork": "it signed two records at one seq", "removed": "members removed it",
                   "rotated": "it was rotated to a new key"}  # fmt: skip
INDEX_CHUNK_CHANGES = 256  # signal changes indexed per hold of the index lock


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Node:
    """Everything a request handler or background task of this node needs."""

    config: NodeConfig
    home: NodeHome
    key: SigningKey
    federation: Federation
    token: str
    store: AsyncStore
    tls: NodeTls
    metrics: Metrics = field(default_factory=Metrics)
    verifier: RequestVerifier = field(default_factory=RequestVerifier)
    index: MatchIndex = field(default_factory=MatchIndex)
    membership: Membership | None = None
    rng: random.Random = field(default_factory=random.Random)
    started_ms: int = field(default_factory=now_ms)
    on_new_records: list[Callable[[list[Record], str | None], None]] = field(default_factory=list)
    # called at once, before anything else runs, when a merge changed the membership
    on_membership: list[Callable[[], None]] = field(default_factory=list)
    # awaited after a merge that changed the membership or stored announces
    on_announces: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # called with the forks a merge found, however its records came (gossip pushes them)
    on_forks: list[Callable[[list[ForkEvidence]], None]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    index_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # queries vs. updates
    index_order: asyncio.Lock = field(default_factory=asyncio.Lock)  # updates in commit order
    announce_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def is_peer_key(self, key: str) -> bool:
        """May key talk to this node: the current key of a member or auditor, neither
        removed nor frozen by a fork (SPEC 10.6)?"""
        return self.membership is not None and self.membership.is_peer_key(key)

    @property
    def identity(self) -> str:
        assert self.membership is not None
        return self.membership.owner.get(self.key.public, self.key.public)

    async def refresh_membership(self) -> None:
        self.membership = await self.store.read(lambda s: s.membership())

    def set_membership(self, membership: Membership) -> None:
        """Adopt a merge's new membership and apply it to transport at once (SPEC 10.6): a
        removed or forked member's key is refused and its node leaves the peer set before
        this node answers, pushes or authors anything else."""
        was_peer = self.is_peer_key(self.key.public)
        self.membership = membership
        for hook in self.on_membership:
            hook()
        if was_peer and not self.is_peer_key(self.key.public):
            seq, why = membership.freezes.get(self.key.public, (0, "not a member"))
            log.warning("this node's member key lost the peer protocol (%s; its log counts "
                        "through seq %d): peers refuse its requests from now on",
                        _FREEZE_REASONS.get(why, why), seq)  # fmt: skip

    async def merged(self, result: MergeResult, source: str | None, *, relay: bool = True) -> None:
        """Apply a merge's consequences: membership and peers first, then index, forks,
        this member's announce, and (if relay) onward gossip of the new records (SPEC 10.3:
        pulled records and anti-entropy pushes are not pushed on).

        Merges finish in the order the writer committed them and this runs up to its first
        await when the merge's result is delivered, so no later merge is applied first; the
        index takes their signal changes in that order too (``index_order``)."""
        if result.membership is not None:
            self.set_membership(result.membership)
        for fork_hook in self.on_forks if result.forks else ():
            fork_hook(result.forks)
        changes = result.signal_changes
        await index_signal_changes(self.index, self.index_lock, changes, order=self.index_order)
        for status, count in result.counts().items():
            self.counters[f"merge_{status}"] = self.counters.get(f"merge_{status}", 0) + count
        self.metrics.merge_done(result)
        _log_merge(result, source, self.membership)
        if result.membership is not None or any(r.kind == "announce" for r in result.accepted):
            for hook in self.on_announces:
                await hook()
        if result.membership is not None:
            await _announce_self(self)  # admitted while running: announce now, not at restart
        if result.accepted and relay:
            for callback in self.on_new_records:
                callback(result.accepted, source)

    async def merge(
        self, batch: list[bytes], source: str | None, *, relay: bool = True
    ) -> MergeResult:
        result = await self.store.merge(batch, received_ms=now_ms())
        await self.merged(result, source, relay=relay)
        return result

    async def author(self, body: Body) -> Record:
        """Sign body as this member's next record, store it, index it, and gossip it."""
        try:
            result = await self.store.append_local_result(self.key, body, ts=now_ms())
        except AuthoringError as e:  # protocol.authoring said no (SPEC 4.5)
            raise refused(e) from e
        except LocalProtocolError as e:
            raise ApiError(f"this node cannot author that record: {e}", status=409) from e
        await self.merged(result, source=None)
        record = result.accepted[0]
        self.metrics.authored.labels(record.kind).inc()
        log.info(
            "authored %s record seq %d",
            record.kind,
            record.seq,
            extra={"author": record.author, "seq": record.seq, "record": record.id},
        )
        return record


def _log_merge(result: MergeResult, source: str | None, membership: Membership | None) -> None:
    """Forks one by one (rare, and what an operator investigates); rejections one line a batch."""
    # a pulled batch names the peer's URL, a pushed one the key that signed the request
    peer = {} if not source else {"peer" if "://" in source else "peer_key": source}
    for fork in result.forks:
        member = membership.identity_of(fork.author) if membership else None
        log.warning(
            "fork detected: %s signed two records at seq %d; its log counts through seq %d",
            member.name if member else "a non-member key", fork.seq, fork.seq - 1,
            extra={"author": fork.author, "seq": fork.seq, "record": fork.first.id,
                   "other_record": fork.second.id} | peer,
        )  # fmt: skip
    rejected = []
    for o in result.outcomes:
        reason = str((o.error or {}).get("error", "unknown"))
        fields = {"author": o.author, "seq": o.seq, "record": o.id, "reason": reason} | peer
        if str(o.status) == "rejected":
            rejected.append(fields)
    if rejected:
        reasons = sorted({str(f["reason"]) for f in rejected})
        level = logging.INFO if set(reasons) <= VIEW_REJECTIONS else logging.WARNING
        log.log(level, "rejected %d of %d records (%s); first shown", len(rejected),
                len(result.outcomes), ", ".join(reasons), extra=rejected[0])  # fmt: skip
    if result.accepted and source:
        log.info("merged %d new records", len(result.accepted), extra=peer)


async def index_signal_changes(
    index: MatchIndex, lock: asyncio.Lock, changes: Sequence[SignalChange], *, order: asyncio.Lock
) -> None:
    """Index a merge's signal changes a chunk at a time, off the loop (an add may compact a
    10 M index). A match waiting for the index (``lock``) goes between two chunks, so a burst
    of records never holds matching up for long; merges are indexed one after the other, in
    the order they were committed (``order``: a signal and its retraction may come in two
    merges). Both locks are first come, first served."""
    if not changes:
        return
    async with order:
        for start in range(0, len(changes), INDEX_CHUNK_CHANGES):
            async with lock:
                chunk = changes[start : start + INDEX_CHUNK_CHANGES]
                await asyncio.to_thread(apply_signal_changes, index, chunk)


def apply_signal_changes(index: MatchIndex, changes: Sequence[SignalChange]) -> None:
    # add() is amortised (a delta segment); add_many() is the bulk-build path for start-up
    for change in changes:
        if change.active:
            index.add(change.row, change.type, change.value)
        else:
            index.remove(change.row)


NODE = web.AppKey("node", Node)
SESSION = web.AppKey("session", aiohttp.ClientSession)


_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail"})


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail} | extra
    return web.json_response(body, status=status, content_type="application/problem+json")


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return problem(e.status, e.reason, e.text or e.reason)
    except RemoteProtocolError as e:
        fields = {k: v for k, v in e.to_json().items() if k not in _PROBLEM_MEMBERS}
        return problem(e.status, e.code, str(e), **fields)
    except NodeError as e:
        return problem(e.status, e.title, str(e))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem(500, "internal error", "the node failed to handle this request")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.store.open()
    await node.refresh_membership()
    rows = await node.store.read(lambda s: list(s.active_signals_for_index(now_ms=now_ms())))
    await asyncio.to_thread(node.index.add_many, rows)  # seconds at 10 M signals
    node.metrics.signals_indexed(rows)
    await _announce_self(node)
    node.ready = True
    yield
    node.ready = False
    await node.store.close()


async def _announce_self(node: Node) -> None:
    """Publish (or refresh) this member's signed announce: name, URL, TLS key fingerprint.

    A new certificate key (rotation) or a new URL is a new announce; peers re-pin from it.
    Called at start and whenever a merge changes the membership, so a member admitted while
    its node runs announces as soon as it learns the admission.
    """
    async with node.announce_lock:  # two merges at once must not both announce
        membership, key = node.membership, node.key.public
        if membership is None or not (membership.is_peer_key(key) and membership.accepts(key, 1)):
            return  # not (or no longer) a member that authors
        endpoints = await node.store.read(lambda s: s.endpoints())
        mine = [e for e in endpoints if e["member"] == node.identity]
        wanted = {"name": node.config.name, "urls": [node.config.url], "tls": node.tls.spki}
        if mine and {k: mine[0].get(k) for k in wanted} == wanted:
            return
        body = AnnounceBody(name=node.config.name, urls=(node.config.url,), tls=node.tls.spki)
        await node.author(body)
    log.info("announced %s (TLS key fingerprint %s)", node.config.url, node.tls.spki or "none")


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[NODE].config
    timeout = aiohttp.ClientTimeout(total=config.gossip.timeout_s)
    local_addr = (config.source_address, 0) if config.source_address else None
    connector = aiohttp.TCPConnector(local_addr=local_addr, limit=64)
    async with aiohttp.ClientSession(
        timeout=timeout, raise_for_status=False, connector=connector
    ) as session:
        app[SESSION] = session
        yield


def make_app(config: NodeConfig) -> web.Application:
    """The node application for the home in config (its store is opened on startup)."""
    from node import gossip, local_api, peer_api, ui  # the route modules import NODE from here

    home = NodeHome(config.home).require()
    federation = home.federation()
    node = Node(
        config=config,
        home=home,
        key=home.key(),
        federation=federation,
        token=home.token(),
        store=AsyncStore(home.db_path, federation, create=True),
        tls=load_node_tls(config, now=datetime.datetime.now(datetime.UTC)),
        verifier=RequestVerifier(config.answers_to),
    )
    node.metrics.watch_counters(node.counters)
    node.metrics.tls_enabled.set(int(node.tls.enabled))
    deadlines = read_deadlines(config.limits.body_timeout_s, counting(node.counters))
    middlewares: list[Any] = [deadlines, metrics_middleware, problem_middleware]
    if not config.tls.enabled and config.url.startswith("https://"):
        middlewares.insert(0, _proxied_https)
    app = web.Application(middlewares=middlewares, client_max_size=config.limits.max_request_bytes)
    app[NODE] = node
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(gossip.gossip_ctx)
    peer_api.add_routes(app)
    local_api.add_routes(app)
    ui.add_routes(app)  # the web UI, loopback only (node.ui)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", handle_metrics)
    return app


@web.middleware
async def _proxied_https(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Behind a TLS-terminating proxy: peers signed https:// target URIs (RFC 9421), so the
    request is seen with the scheme of this node's public URL. The proxy must pass Host."""
    return await handler(request.clone(scheme="https"))


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def _readyz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if not node.ready:
        return problem(503, "not ready", "the store is opening or the index is being built")
    return web.json_response({"status": "ready", "signals_indexed": len(node.index)})
