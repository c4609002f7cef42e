"""The node's aiohttp application: ``make_app(config)`` wires the rooms together.

It builds the ``Node`` (``node.net.context``: key, federation, store, membership, match
index) and mounts the peer API, the local API, the web UI, health, readiness and metrics.
Background work (gossip rounds, eager push, expiry sweeps) is started and stopped through
``cleanup_ctx``; nothing is fire-and-forget.

Errors become RFC 9457 problem bodies in one middleware: ``NodeError`` and
``RemoteProtocolError`` carry their status; anything else is a 500 and is logged.

Transport (``node.net.tls``): the member's announce carries the SPKI fingerprint of the node's
TLS certificate and is republished when it changes. ``GET /metrics`` (``node.net.metrics``)
exposes the node's own Prometheus registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from node import ui
from node.clock import now_ms
from node.config import NodeConfig
from node.errors import ApiError, NodeError
from node.home import NodeHome
from node.media.index import HAMMING_BITS, MatchIndex
from node.moderation.service import Moderation
from node.net import gossip, lists_api, local_api, moderation_api, peer_api, replica_api
from node.net.context import (
    NODE,
    PROBLEM_MEMBERS,
    SESSION,
    Node,
    announce_self,
    check_enabled_types,
    problem,
)
from node.net.deadlines import counting, read_deadlines
from node.net.gossip import GOSSIP
from node.net.httpsig import RequestVerifier
from node.net.local_lists import LocalLists
from node.net.matching import expire_signals
from node.net.metrics import METRICS, may_scrape, metrics_middleware
from node.net.tls import load_node_tls
from node.store.lists import LISTS_FILE
from node.store.store import AsyncStore
from protocol.errors import RemoteProtocolError

log = logging.getLogger("hashmesh.node")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return problem(e.status, e.reason, e.text or e.reason)
    except RemoteProtocolError as e:
        fields = {k: v for k, v in e.to_json().items() if k not in PROBLEM_MEMBERS}
        return problem(e.status, e.code, str(e), **fields)
    except NodeError as e:
        fields = {k: v for k, v in e.fields.items() if k not in PROBLEM_MEMBERS}
        return problem(e.status, e.title, str(e), **fields)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem(500, "internal error", "the node failed to handle this request")


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]
    await node.store.open()
    await node.refresh_membership()
    now = now_ms()
    rows = await node.store.read(lambda s: list(s.active_signals_for_index(now_ms=now)))
    await asyncio.to_thread(node.index.add_many, rows)  # seconds at 10 M signals
    node.index.set_expiries(await node.store.read(lambda s: s.active_expiries(now_ms=now)))
    if node.lists is not None:
        await node.lists.open()
    await announce_self(node)
    await check_enabled_types(node)
    node.ready = True
    yield
    node.ready = False
    if node.lists is not None:
        await node.lists.close()
    await node.store.close()


async def _expiry_ctx(app: web.Application) -> AsyncIterator[None]:
    """Signals leave the match index when they expire (``node.net.matching.expire_signals``)."""
    task = asyncio.create_task(expire_signals(app[NODE]), name="index expiries")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _moderation_ctx(app: web.Application) -> AsyncIterator[None]:
    """The match log and actions (node.moderation): started once the store is open, stopped
    (its queue written) before the store closes."""
    node = app[NODE]
    moderation = node.moderation
    assert moderation is not None
    identity = lambda: node.identity if node.membership is not None else None  # noqa: E731
    await moderation.start(store=node.store, author=node.author, identity=identity)
    yield
    await moderation.stop()


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
        index=MatchIndex({k: config.match.node_radius(k) for k in HAMMING_BITS}),
        lists=LocalLists(home.path / LISTS_FILE, config.match),
    )
    node.moderation = Moderation(config.moderation, config.webhooks, home.path,
                                 node_name=config.name, registry=node.metrics.registry)  # fmt: skip
    node.metrics.watch_counters(node.counters)
    node.metrics.tls_enabled.set(int(node.tls.enabled))
    deadlines = read_deadlines(config.limits.body_timeout_s, counting(node.counters))
    middlewares: list[Any] = [deadlines, metrics_middleware, problem_middleware]
    if not config.tls.enabled and config.url.startswith("https://"):
        middlewares.insert(0, _proxied_https)
    app = web.Application(middlewares=middlewares, client_max_size=config.limits.max_request_bytes)
    app[NODE] = node
    app[METRICS] = node.metrics
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_expiry_ctx)
    app.cleanup_ctx.append(_moderation_ctx)
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(gossip.gossip_ctx)
    peer_api.add_routes(app)
    local_api.add_routes(app)
    lists_api.add_routes(app)  # local lists (node.net.lists_api)
    moderation_api.add_routes(app)
    replica_api.add_routes(app)  # the snapshot match replicas start from
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


async def handle_metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if not may_scrape(request, node.token):
        raise ApiError("metrics are for loopback clients or the bearer token", status=401,
                       title="not authorised")  # fmt: skip
    stats = await node.store.read(lambda s: s.stats(now_ms=now_ms()))
    node.metrics.refresh_store(stats)
    node.metrics.refresh_index(node.index.sizes())
    node.metrics.refresh_peers(request.app[GOSSIP].peers.values(), time.time())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(node.metrics.registry), headers={"Content-Type": content_type})
