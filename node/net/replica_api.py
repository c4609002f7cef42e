"""What the node offers its match replicas (``hashmesh replica``, node.replica): read-only
tokens, a snapshot of the active list, and admission that keeps them from stampeding.

A replica starts from ``GET /v1/snapshot`` and then follows the change feed
(``GET /v1/changes``, node.net.local_api) from the snapshot's cursor. Both, and
``GET /v1/lookup``, take the node's bearer token or a *replica token*
(node.store.replica_tokens; ``read_only``); a replica token on any other route is 403.

The snapshot is NDJSON, streamed in pages of ``SNAPSHOT_PAGE`` signals from the store::

    {"snapshot": 1, "epoch": E, "cursor": C, "media": {...}, "radii": {...}}
    {"id": ..., "row": ..., "type": ..., "value": ..., "labels": ..., "tallies": ..., ...}
    ...                                  one line a signal active now (GET /v1/signals' shape)
    {"end": true, "signals": N}

The cursor is read *before* the first page (after the feed's expiry sweep), so a change
made while the pages are read is either in a page already or after the cursor: following
the feed from C ends at the node's state whatever the pages saw, because a feed entry
carries its signal's state now (node.store.changefeed). A stream without its ``end`` line
was cut short and must not be used. ``media`` and ``radii`` are the node's matching
settings, so a replica answers exactly as the node does.

Admission: at most ``SNAPSHOT_STREAMS`` snapshots stream at once; another request is
answered 429 with ``Retry-After`` (seconds: when the current one should end, if it takes
as long as the last one did). When the
node's database is restored (a new ``node_epoch``) every replica must start over; together
with each replica's random wait before it asks, this makes them rebuild one after another
rather than all at once against the node (HMA's matchers reloading together took its
service down: ThreatExchange #1813). A write to a replica that stops reading times out
after ``SNAPSHOT_WRITE_TIMEOUT_S``, so a stalled reader cannot hold the slot.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from node.clock import now_ms
from node.errors import ApiError
from node.net.api_input import query_params
from node.net.context import NODE, Node, problem
from node.store import read as store_read
from node.store import replica_tokens
from node.store.read import SignalQuery

SNAPSHOT_STREAMS = 1  # snapshots streamed at once
SNAPSHOT_PAGE = 5_000  # signals read from the store per step
SNAPSHOT_WRITE_TIMEOUT_S = 30.0
SNAPSHOT_FORMAT = 1

LocalHandler = Callable[[web.Request, Node], Awaitable[web.StreamResponse]]


def _bearer(request: web.Request) -> str:
    supplied = request.headers.get("Authorization", "")
    return supplied[7:] if supplied.startswith("Bearer ") else ""


async def replica_holding(node: Node, token: str) -> str | None:
    """The replica whose active token this is (None: not a replica token)."""
    if not replica_tokens.looks_like_token(token):
        return None
    return await node.store.read(lambda s: replica_tokens.holder(s.conn, token))


async def refuse_replica(request: web.Request, node: Node) -> None:
    """403 for a replica token on a route it may not use (the caller then answers 401)."""
    name = await replica_holding(node, _bearer(request))
    if name is not None:
        raise ApiError(
            f"replica token {name!r} is read-only: it may only read the snapshot, the change "
            "feed and lookups",
            status=403,
            title="forbidden for a replica token",
        )


def read_only(handler: LocalHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Require the node's bearer token or an active replica token."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE]
        supplied = _bearer(request)
        is_node = hmac.compare_digest(supplied.encode(), node.token.encode())
        if not is_node and await replica_holding(node, supplied) is None:
            raise ApiError("missing, wrong or revoked token (HOME/api.token, or a replica "
                               "token from 'hashmesh tokens issue --replica')", status=401,
                               title="not authorised")  # fmt: skip
        return await handler(request, node)

    return wrapper


@dataclass(slots=True)
class SnapshotGate:
    """Admits ``limit`` snapshot streams at a time; counts what it served and refused."""

    limit: int = SNAPSHOT_STREAMS
    streaming: int = 0
    most: int = 0  # the most streams ever open at once
    last_duration_s: float = 1.0
    last_began: float = 0.0  # time.monotonic() when the newest stream began

    def retry_after_s(self) -> int:
        """About when the newest stream ends, if it takes as long as the last one did."""
        left = self.last_duration_s - (time.monotonic() - self.last_began)
        return max(1, math.ceil(left))


SNAPSHOT_GATE = web.AppKey("snapshot_gate", SnapshotGate)


@read_only
async def get_snapshot(request: web.Request, node: Node) -> web.StreamResponse:
    query_params(request, ())
    gate = request.app[SNAPSHOT_GATE]
    if gate.streaming >= gate.limit:
        _count(node, "replica_snapshots_refused")
        retry = gate.retry_after_s()
        response = problem(429, "snapshot slots busy",
                           f"{gate.streaming} snapshot(s) streaming; retry after {retry} s",
                           retry_after_s=retry)  # fmt: skip
        response.headers["Retry-After"] = str(retry)
        return response
    gate.streaming += 1
    gate.most = max(gate.most, gate.streaming)
    node.counters["replica_snapshot_streams_most"] = gate.most
    began = gate.last_began = time.monotonic()
    try:
        return await _stream_snapshot(request, node)
    finally:
        gate.streaming -= 1
        gate.last_duration_s = time.monotonic() - began


async def _stream_snapshot(request: web.Request, node: Node) -> web.StreamResponse:
    now = now_ms()
    await node.store.write(lambda s: s.sweep_expiries(now))
    epoch, cursor = await node.store.read(lambda s: s.feed_position())
    media = node.config.media
    header = {"snapshot": SNAPSHOT_FORMAT, "epoch": epoch, "cursor": cursor,
              "media": {"min_pdq_quality": media.min_pdq_quality, "dihedral": media.dihedral,
                        "video_interval_s": media.video_interval_s,
                        "video_prune_bits": media.video_prune_bits},
              "radii": node.index.radii}  # fmt: skip
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    await _write(response, orjson.dumps(header) + b"\n")
    before: int | None = None
    sent = 0
    while True:
        page = await node.store.read(_active_page(before, now))
        if page:
            await _write(response, b"".join(orjson.dumps(row) + b"\n" for row in page))
            sent += len(page)
            before = int(page[-1]["row"])  # type: ignore[call-overload]
        if len(page) < SNAPSHOT_PAGE:
            break
    await _write(response, orjson.dumps({"end": True, "signals": sent}) + b"\n")
    await response.write_eof()
    _count(node, "replica_snapshots")
    return response


def _active_page(before: int | None, now: int) -> Callable[..., list[dict[str, object]]]:
    query = SignalQuery(active=True, before=before, limit=SNAPSHOT_PAGE)
    return lambda store: store_read.signals(store.conn, query, now_ms=now)


async def _write(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(SNAPSHOT_WRITE_TIMEOUT_S):
        await response.write(data)


def _count(node: Node, key: str) -> None:
    node.counters[key] = node.counters.get(key, 0) + 1


def add_routes(app: web.Application) -> None:
    app[SNAPSHOT_GATE] = SnapshotGate()
    app.router.add_get("/v1/snapshot", get_snapshot)
