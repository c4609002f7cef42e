"""The peer API: what member nodes and auditors ask of each other (SPEC section 10).

Every request must carry an RFC 9421 signature by a current member's or auditor's key, made
for this node's URL (``node.net.httpsig``); anything else gets 401/403/421 and no data. A query
parameter given twice is refused (400, naming it).

- ``GET /v1/heads``: the frontier, a frozen author's head at its cap (``frontier``). With
  ``If-None-Match: "<digest>"`` equal to this node's frontier digest the answer is ``304``
  with no body: an idle exchange costs only headers. An asker that sends ``Hm-Recent`` (its
  recent digests) may get a delta or ``at`` instead (``protocol.frontier_delta``).
- ``GET /v1/log/{author}?after=SEQ&limit=N``: the author's records with seq > after, in seq
  order, as NDJSON (one canonical record per line).
- ``POST /v1/records``: a pushed NDJSON batch; the answer lists what was accepted,
  duplicate, pending and rejected (with reasons). Each line is its own outcome: a line that
  fails verification (oversize, malformed, forged) is rejected and not stored, the valid
  lines of the batch are stored, and the answer is 422 (the sender misbehaved).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.net.context import NODE, Node, problem
from node.net.httpsig import NotAMemberError, SignatureRefusedError
from node.store.store import Store
from protocol.errors import SyncError
from protocol.frontier_delta import FrontierAnswer, FrontierDelta, parse_recent
from protocol.records import is_record_id
from protocol.sync import (
    MAX_PAGE_RECORDS,
    Frontier,
    is_misbehaviour,
    join_ndjson,
    parse_log_request,
    split_ndjson,
)

PEER_KEY = web.RequestKey("peer_key", str)


async def authenticate(request: web.Request, node: Node) -> str:
    body = await request.read()
    try:
        return node.verifier.verify(
            request.method,
            str(request.url),
            request.headers,
            body,
            now_s=time.time(),
            is_member=node.is_peer_key,
        )
    except SignatureRefusedError:
        node.counters["peer_requests_refused"] = node.counters.get("peer_requests_refused", 0) + 1
        raise


def signed(
    handler: Callable[[web.Request, Node], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE]
        key = request[PEER_KEY] = await authenticate(request, node)
        response = await handler(request, node)
        if request.method == "GET" and not node.is_peer_key(key):  # removed meanwhile: 10.6
            refused = node.counters.get("peer_requests_refused", 0)
            node.counters["peer_requests_refused"] = refused + 1
            raise NotAMemberError(f"key {key[:16]}… stopped being a member during the request")
        return response

    return wrapper


async def frontier(node: Node) -> Frontier:
    """This node's frontier: its heads, a frozen author's at its cap (SPEC 10.2), and its
    fork evidence. The gossip shell plans its pulls and pushes with the same heads."""
    caps = node.membership.caps if node.membership is not None else {}

    def read(store: Store) -> Frontier:
        forks = tuple(f.to_json() for f in store.forks())
        return Frontier(store.frontier_heads(caps), forks)

    return await node.store.read(read)


@signed
async def get_heads(request: web.Request, node: Node) -> web.StreamResponse:
    header = request.headers.get("Hm-Recent")  # the asker reads deltas (SPEC 10.2)
    recent = parse_recent(header) if header is not None else None
    current = await frontier(node)
    digest = node.frontiers.observe(current)
    etag = f'"{digest}"'
    asked = request.headers.get("If-None-Match")
    if asked == etag:
        return web.Response(status=304, headers={"ETag": etag})
    answer: FrontierAnswer = current
    if recent is not None:
        asked_digest = asked[1:-1] if asked and len(asked) == 66 and asked[0] == '"' else None
        answer = node.frontiers.answer(current, asked_digest, recent)
    if not isinstance(answer, Frontier):  # counted in /v1/status: heads_delta, heads_at
        kind = "heads_delta" if isinstance(answer, FrontierDelta) else "heads_at"
        node.counters[kind] = node.counters.get(kind, 0) + 1
    body: dict[str, object] = {**answer.to_json(), "digest": digest}
    return web.json_response(body, headers={"ETag": etag})


def query_value(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once (a repeated one is ambiguous: refused)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise SyncError(
            f"query parameter {name!r} is given {len(values)} times", field=name, actual=values
        )
    return values[0] if values else None


@signed
async def get_log(request: web.Request, node: Node) -> web.StreamResponse:
    author = request.match_info["author"]
    if not is_record_id(author):
        return problem(400, "bad author", "author must be 64 lowercase hex characters")
    after, limit = parse_log_request(
        query_value(request, "after"), query_value(request, "limit"), MAX_PAGE_RECORDS
    )
    records = await node.store.read(lambda s: s.log(author, after, limit))
    return web.Response(body=join_ndjson(records), content_type="application/x-ndjson")


@signed
async def post_records(request: web.Request, node: Node) -> web.StreamResponse:
    lines = split_ndjson(await request.read(), node.config.limits.max_batch_records)
    relay = query_value(request, "relay")
    relay = "1" if relay is None else relay
    if relay not in ("0", "1"):
        raise SyncError("relay must be 0 or 1", field="relay", actual=relay)
    result = await node.merge(lines, source=request[PEER_KEY], relay=relay == "1")
    bad = [o for o in result.outcomes if is_misbehaviour(o.error)]
    if bad:
        return problem(
            422,
            "records rejected",
            f"{len(bad)} of {len(lines)} records failed verification and were not stored",
            **result.to_json(),
        )
    return web.json_response(result.to_json())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/heads", get_heads)
    app.router.add_get("/v1/log/{author}", get_log)
    app.router.add_post("/v1/records", post_records)
