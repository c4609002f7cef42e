"""``hashmesh replica``: a stateless process that follows one node and answers matches.

A member whose node cannot answer all its matching alone runs replicas beside it (on
Kubernetes, a Deployment behind a Service; ``deploy/k8s/``). Each replica holds, in memory,
what the node's own index holds (node.replica.holdings), fed by the node's snapshot and
change feed (node.replica.follower), and serves the node's matching routes with the node's
code (node.net.matching, node.net.local_api), so answers are the same, provenance included:

    POST /v1/match     hashes (JSON) or images and videos (multipart), as on the node
    GET  /v1/lookup    one hash, HMA's shape, as on the node
    GET  /healthz      200 while the process runs; the body says how it stands
    GET  /readyz       200 once loaded and caught up (lag <= --max-lag-s); when lagging,
                       503 with ``--stale refuse``, 200 ``"status": "stale"`` with ``serve``
    GET  /metrics      Prometheus text: lag, readiness, signals held, feed and match counts

It writes nothing anywhere and needs no home: the node is the single writer, and a replica
that restarts loads a new snapshot. It never signs, so it holds no member key, only a
read-only replica token (``hashmesh tokens issue --replica``). Its own clients need no
token unless ``--api-token-file`` is given (then ``Authorization: Bearer`` as on the node):
keep it on a private network (a cluster Service) either way.

Every answer carries ``Hashmesh-Replica-Lag-S`` (seconds since the node last confirmed the
replica held every change) and, when that passes the bound, ``Hashmesh-Replica-Stale: 1``;
with ``--stale refuse`` such a request is 503 instead. Before every match the signals whose
expiry has passed are dropped (``Holdings.expire_due``), so an expired signal never matches.

Swapping in new holdings (a rebuild after the node's epoch changed) waits for the matches
in flight and holds new ones back for that instant (``SwapGuard``): a hit found in the old
index is never given the provenance of another signal under the new one's row numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from node.clock import now_ms
from node.config import LimitsConfig, MediaConfig
from node.errors import ApiError
from node.matchpolicy import MatchPolicy
from node.media.index import MatchIndex
from node.net.app import problem_middleware
from node.net.context import problem
from node.net.deadlines import GuardedRunner, read_deadlines
from node.net.local_api import lookup_response, match_response
from node.net.metrics import MATCH_SECONDS_BUCKETS
from node.net.serve import SHUTDOWN_TIMEOUT_S, configure_logging
from node.replica.follower import FeedStatus, Follower
from node.replica.holdings import Holdings
from node.replica.settings import ReplicaSettings
from node.runtime import tune_for_serving

log = logging.getLogger("hashmesh.replica")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LAG_HEADER = "Hashmesh-Replica-Lag-S"
STALE_HEADER = "Hashmesh-Replica-Stale"


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """The settings matching reads (node.net.host.MatchSettings): the node's media
    settings, from its snapshot, and this process's upload limits."""

    limits: LimitsConfig = field(default_factory=LimitsConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    match: MatchPolicy = field(default_factory=MatchPolicy)  # the node's radii, no filter


class SwapGuard:
    """Matches run together; a swap of the holdings waits for them and runs alone."""

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._readers = 0
        self._swapping = False

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._swapping)
            self._readers += 1
        try:
            yield
        finally:
            async with self._changed:
                self._readers -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def swapping(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._swapping)
            self._swapping = True
            await self._changed.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            async with self._changed:
                self._swapping = False
                self._changed.notify_all()


@dataclass(slots=True)
class Replica:
    """The replica's services: what matching needs of a host (node.net.host.MatchHost) and
    how it stands against its node."""

    settings: ReplicaSettings
    holdings: Holdings = field(default_factory=Holdings)
    config: MatchConfig = field(default_factory=MatchConfig)
    index_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    counters: dict[str, int] = field(default_factory=dict)
    guard: SwapGuard = field(default_factory=SwapGuard)
    status: FeedStatus = field(default_factory=FeedStatus)
    started: float = field(default_factory=time.monotonic)
    # what a node has and a replica has not (node.net.host.MatchHost): no membership, no
    # local lists, no match log; so no signal is its own
    membership: None = None
    lists: None = None
    moderation: None = None
    own_member: None = None

    @property
    def index(self) -> MatchIndex:
        return self.holdings.index

    async def signal_rows(self, rows: Sequence[int], now_ms: int) -> list[dict[str, Any]]:
        return self.holdings.signal_rows(rows, now_ms)

    async def swap(self, holdings: Holdings, media: MediaConfig) -> None:
        async with self.guard.swapping(), self.index_lock:
            self.holdings = holdings
            self.config = replace(
                self.config, media=media, match=MatchPolicy(radius=dict(holdings.index.radii))
            )

    async def apply(self, change: Callable[[Holdings], None]) -> None:
        async with self.index_lock:
            await asyncio.to_thread(change, self.holdings)

    async def expire_due(self) -> None:
        now = now_ms()
        due = self.holdings.next_expiry_ms()
        if due is not None and due <= now:
            async with self.index_lock:
                await asyncio.to_thread(self.holdings.expire_due, now)

    def standing(self) -> tuple[bool, str, float | None]:
        """(ready, status, lag in seconds): readiness and health (module docstring)."""
        lag = self.status.lag_s(time.monotonic())
        if lag is None:
            return False, "bootstrapping", None
        if lag <= self.settings.max_lag_s:
            return True, "ok", lag
        return self.settings.stale == "serve", "stale", lag

    def why_stale(self) -> str:
        s = self.status
        if not s.node_up:
            return f"the node is unreachable ({s.last_error})"
        return "rebuilding after the node's epoch changed" if s.rebuilding else "behind the feed"


REPLICA = web.AppKey("replica", Replica)
FOLLOWER = web.AppKey("follower", asyncio.Task[None])


# ---- matching routes ----------------------------------------------------------------------


def matching(handler: Callable[[web.Request, Replica], Awaitable[web.StreamResponse]]) -> Handler:
    """The replica's checks around a matching route: the client token (if one is set),
    nothing to answer from yet (503), stale (503 with ``--stale refuse``), expiries due."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        replica = request.app[REPLICA]
        wanted = replica.settings.api_token
        supplied = request.headers.get("Authorization", "")
        if wanted and not hmac.compare_digest(supplied.encode(), f"Bearer {wanted}".encode()):
            raise ApiError("missing or wrong bearer token (--api-token-file)", status=401,
                           title="not authorised")  # fmt: skip
        ready, state, lag = replica.standing()
        if lag is None or (state == "stale" and not ready):
            what = "has not loaded the list yet" if lag is None else replica.why_stale()
            refused = problem(503, "replica not ready", f"this replica {what}", lag_s=lag)
            refused.headers["Retry-After"] = "1"
            return refused
        await replica.expire_due()
        async with replica.guard.reading():
            response = await handler(request, replica)
        response.headers[LAG_HEADER] = f"{lag:.3f}"
        if state == "stale":
            response.headers[STALE_HEADER] = "1"
        return response

    return wrapper


@matching
async def post_match(request: web.Request, replica: Replica) -> web.StreamResponse:
    return await match_response(request, replica)


@matching
async def get_lookup(request: web.Request, replica: Replica) -> web.StreamResponse:
    return await lookup_response(request, replica)


# ---- health, readiness, metrics ----------------------------------------------------------


def _standing_json(replica: Replica) -> dict[str, object]:
    ready, state, lag = replica.standing()
    s = replica.status
    return {
        "status": state if ready or state != "stale" else "stale",
        "ready": ready,
        "lag_s": None if lag is None else round(lag, 3),
        "max_lag_s": replica.settings.max_lag_s,
        "stale_mode": replica.settings.stale,
        "reason": replica.why_stale() if state == "stale" else None,
        "node": replica.settings.node_url,
        "node_up": s.node_up,
        "last_error": s.last_error,
        "epoch": s.epoch,
        "cursor": s.cursor,
        "rebuilding": s.rebuilding,
        "signals": len(replica.holdings),
        "uptime_s": round(time.monotonic() - replica.started, 1),
        "pid": os.getpid(),
    }


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(_standing_json(request.app[REPLICA]))


async def readyz(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    body = _standing_json(replica)
    if not body["ready"]:
        detail = "no snapshot loaded yet" if body["lag_s"] is None else replica.why_stale()
        fields = {k: v for k, v in body.items() if k not in ("status", "detail")}
        return problem(503, "not ready", f"this replica is not ready: {detail}", **fields)
    return web.json_response(body)


class ReplicaCollector(Collector):
    """The replica's standing, read at scrape time."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        r = self.replica
        ready, _, lag = r.standing()
        s = r.status
        gauges = (
            ("hashmesh_replica_lag_seconds", "Seconds since the node last confirmed this "
             "replica held every change (-1: never)", -1 if lag is None else lag),
            ("hashmesh_replica_ready", "1 if /readyz answers 200", int(ready)),
            ("hashmesh_replica_node_up", "1 if the last request to the node succeeded",
             int(s.node_up)),
            ("hashmesh_replica_signals", "Active signals held", len(r.holdings)),
            ("hashmesh_replica_cursor", "The change feed cursor applied", s.cursor),
            ("hashmesh_replica_rebuilding", "1 while rebuilding after an epoch change",
             int(s.rebuilding)),
            ("hashmesh_replica_index_bytes", "Bytes held by the match index",
             r.holdings.index.memory_bytes()),
        )  # fmt: skip
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        counters = (
            ("hashmesh_replica_rebuilds", "Rebuilds after the node's epoch changed", s.rebuilds),
            ("hashmesh_replica_snapshots", "Snapshots loaded", s.snapshots),
            ("hashmesh_replica_snapshot_waits", "Snapshot requests the node asked to retry",
             s.snapshot_waits),
            ("hashmesh_replica_changes", "Change feed entries applied", s.changes_applied),
            ("hashmesh_replica_feed_errors", "Failed requests to the node", s.feed_errors),
            ("hashmesh_match_queries", "Hashes and images looked up by match requests",
             r.counters.get("match_queries", 0)),
        )  # fmt: skip
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)


@dataclass(slots=True)
class ReplicaMetrics:
    registry: CollectorRegistry
    requests: Counter
    seconds: Histogram

    @classmethod
    def of(cls, replica: Replica) -> ReplicaMetrics:
        r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        r.register(ReplicaCollector(replica))
        requests = Counter("hashmesh_match_requests", "Matching requests (match and lookup)",
                           ["route", "status"], registry=r)  # fmt: skip
        seconds = Histogram("hashmesh_match_seconds", "Matching request latency", ["route"],
                            buckets=MATCH_SECONDS_BUCKETS, registry=r)  # fmt: skip
        return cls(r, requests, seconds)


METRICS = web.AppKey("replica_metrics", ReplicaMetrics)
MATCH_ROUTES = {"/v1/match": "match", "/v1/lookup": "lookup"}


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = MATCH_ROUTES.get(request.path)
    if route is None:
        return await handler(request)
    metrics = request.app[METRICS]
    began = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        metrics.requests.labels(route, str(status)).inc()
        metrics.seconds.labels(route).observe(time.perf_counter() - began)


async def handle_metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


# ---- the application and the process ----------------------------------------------------


async def _follow_ctx(app: web.Application) -> AsyncIterator[None]:
    replica = app[REPLICA]
    settings = replica.settings
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        follower = Follower(settings, session, replica.swap, replica.apply, random.Random(),
                            replica.status)  # fmt: skip
        task = asyncio.create_task(follower.run(), name="replica-follower")
        app[FOLLOWER] = task
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_app(settings: ReplicaSettings) -> web.Application:
    replica = Replica(settings)
    limits = replica.config.limits
    deadlines = read_deadlines(limits.body_timeout_s, _count_timeout(replica))
    middlewares: list[Any] = [deadlines, metrics_middleware, problem_middleware]
    app = web.Application(
        middlewares=middlewares,
        client_max_size=limits.max_request_bytes,
    )
    app[REPLICA] = replica
    app[METRICS] = ReplicaMetrics.of(replica)
    app.cleanup_ctx.append(_follow_ctx)
    app.router.add_post("/v1/match", post_match)
    app.router.add_get("/v1/lookup", get_lookup)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", handle_metrics)
    return app


def _count_timeout(replica: Replica) -> Callable[[str], None]:
    def count(_what: str) -> None:
        replica.counters["requests_timed_out"] = replica.counters.get("requests_timed_out", 0) + 1

    return count


async def serve(app: web.Application, settings: ReplicaSettings) -> None:
    runner = GuardedRunner(
        app,
        header_timeout_s=LimitsConfig().header_timeout_s,
        on_timeout=_count_timeout(app[REPLICA]),
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info("replica of %s answering on %s:%d (max lag %g s, stale: %s)",
                 settings.node_url, settings.host, settings.port, settings.max_lag_s,
                 settings.stale)  # fmt: skip
        await stop.wait()
    finally:
        await runner.cleanup()


def run_replica(settings: ReplicaSettings, *, log_format: str = "text") -> None:
    """Serve until SIGTERM or SIGINT."""
    tune_for_serving()
    configure_logging(log_format)
    asyncio.run(serve(make_app(settings), settings))
