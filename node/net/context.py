"""The node's services, as request handlers and background tasks see them: ``Node``.

One process, one member, one store. ``Node`` holds the member key, the verified federation, the
store, the cached membership and the match index; the aiohttp application (``node.net.app``)
keeps it under the typed key ``NODE``. What a merge does after it commits lives here, in one
place (``Node.merged``): membership first (SPEC 10.6: a removed or forked member's key is
refused and its node dropped by gossip in that same step; a member admitted while its node
runs announces itself then), then the match index, forks (logged, counted, pushed to every
peer by the gossip engine's hook) and onward gossip.

Logs name peers, authors and records in the structured fields ``peer``, ``author``, ``seq``,
``record`` and never carry keys or tokens.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from node.clock import now_ms
from node.config import NodeConfig
from node.errors import ApiError, refused
from node.home import NodeHome
from node.media.index import MatchIndex
from node.moderation.service import Moderation
from node.net.httpsig import RequestVerifier
from node.net.local_lists import LocalLists
from node.net.metrics import Metrics
from node.net.tls import NodeTls
from node.store.store import AsyncStore, MergeResult, SignalChange
from protocol.bodies import AnnounceBody, Body
from protocol.chain import ForkEvidence
from protocol.errors import AuthoringError, LocalProtocolError
from protocol.federation import Federation
from protocol.frontier_delta import FrontierHistory
from protocol.keys import SigningKey
from protocol.membership import Membership
from protocol.records import Record
from protocol.signal_types import SIGNAL_TYPES
from protocol.sync import VIEW_DEPENDENT_ERRORS
from protocol.type_gate import announced_types, enabled_types

log = logging.getLogger("hashmesh.node")

_FREEZE_REASONS = {"fork": "it signed two records at one seq", "removed": "members removed it",
                   "rotated": "it was rotated to a new key"}  # fmt: skip
INDEX_CHUNK_CHANGES = 256  # signal changes indexed per hold of the index lock


class Beacon:
    """Wakes everyone waiting on it when rung: a merge rings the change feed's, so a long
    poll of ``GET /v1/changes`` (a replica at the feed's end) answers at once."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def armed(self) -> asyncio.Event:
        """The event the next ``ring`` sets (take it before reading what it guards)."""
        return self._event

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


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
    lists: LocalLists | None = None  # the member's local lists (HOME/lists.db), once made
    membership: Membership | None = None
    frontiers: FrontierHistory = field(default_factory=FrontierHistory)  # deltas, SPEC 10.2
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
    feed_beacon: Beacon = field(default_factory=Beacon)  # rung after a merge added feed entries
    # enabled signal types this node's registry does not know (SPEC 11: it must upgrade)
    unknown_enabled: frozenset[str] = frozenset()
    moderation: Moderation | None = None  # the match log and actions (node.moderation)

    def is_peer_key(self, key: str) -> bool:
        """May key talk to this node: the current key of a member or auditor, neither
        removed nor frozen by a fork (SPEC 10.6)?"""
        return self.membership is not None and self.membership.is_peer_key(key)

    @property
    def identity(self) -> str:
        assert self.membership is not None
        return self.membership.owner.get(self.key.public, self.key.public)

    @property
    def own_member(self) -> str:
        """This member's identity (its key before the federation is known)."""
        return self.identity if self.membership is not None else self.key.public

    async def signal_rows(self, rows: Sequence[int], now_ms: int) -> list[dict[str, Any]]:
        """Provenance of match-index hits (node.net.matching), from the store."""
        return await self.store.read(lambda s: s.signal_rows(rows, now_ms=now_ms))

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
        if result.accepted:
            self.feed_beacon.ring()
        changes = result.signal_changes
        await index_signal_changes(self.index, self.index_lock, changes, order=self.index_order)
        for status, count in result.counts().items():
            self.counters[f"merge_{status}"] = self.counters.get(f"merge_{status}", 0) + count
        self.metrics.merge_done(result)
        _log_merge(result, source, self.membership)
        if result.membership is not None or any(r.kind == "announce" for r in result.accepted):
            for hook in self.on_announces:
                await hook()
            await check_enabled_types(self)
        if result.membership is not None:
            await announce_self(self)  # admitted while running: announce now, not at restart
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
        level = logging.INFO if set(reasons) <= VIEW_DEPENDENT_ERRORS else logging.WARNING
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
            index.add(change.row, change.type, change.value, change.expires)
        else:
            index.remove(change.row)


NODE = web.AppKey("node", Node)
SESSION = web.AppKey("session", aiohttp.ClientSession)


PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail"})


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail} | extra
    return web.json_response(body, status=status, content_type="application/problem+json")


async def announce_self(node: Node) -> None:
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
        types = announced_types(SIGNAL_TYPES)
        wanted = {"name": node.config.name, "urls": [node.config.url], "tls": node.tls.spki,
                  "types": list(types)}  # fmt: skip
        if mine and {k: mine[0].get(k, []) for k in wanted} == wanted:
            return
        body = AnnounceBody(name=node.config.name, urls=(node.config.url,), tls=node.tls.spki,
                            types=types)  # fmt: skip
        await node.author(body)
    log.info("announced %s (TLS key fingerprint %s; signal types %s)", node.config.url,
             node.tls.spki or "none", ", ".join(types) or "the core ones")  # fmt: skip


async def check_enabled_types(node: Node) -> frozenset[str]:
    """The signal types enabled in the federation (``protocol.type_gate``); logs a warning when
    some of them are unknown to this node's registry: records of those types are rejected here
    and their authors' later records stop counting here, until this node is upgraded (SPEC 11).
    An auditor's node, which announces nothing, is the usual case."""
    membership = node.membership
    if membership is None:
        return frozenset()
    announced = await node.store.read(lambda s: s.announced_types())
    enabled = enabled_types(membership, announced)
    unknown = frozenset(enabled - SIGNAL_TYPES.keys())
    if unknown and unknown != node.unknown_enabled:
        log.warning(
            "signal types %s are enabled in the federation but unknown to this node: upgrade "
            "hashmesh, or records of those types are rejected here and their authors' later "
            "records stop counting here",
            ", ".join(sorted(unknown)),
        )
    node.unknown_enabled = unknown
    return enabled
