"""The local operator API: what the member's own moderation systems call.

Protected by the bearer token in ``HOME/api.token`` (``Authorization: Bearer …``); the node
binds loopback by default. JSON in, JSON out; errors are problem bodies (node.app).

    GET  /v1/status                         node, store, members, peers, forks
    GET  /v1/signals?type=&label=&member=&active=&limit=&offset=
    GET  /v1/signals/{id}                   one signal with provenance and opinions
    POST /v1/signals                        {"type","value","labels","note","expires"} or
                                            multipart image (field "file") + labels/note
    POST /v1/signals/{id}/retract           {"reason"}
    POST /v1/signals/{id}/opinions          {"verdict","labels","note"}
    POST /v1/votes                          {"action":"admit","member","name","role"} |
                                            {"action":"remove","member","after"}
    POST /v1/hash                           image (raw body or multipart) -> hashes
    POST /v1/match                          {"hashes":[{"type","value"}...]} or multipart images
    GET  /v1/peers    POST /v1/peers {"url"}    POST /v1/sync {"peer"?}
    GET  /v1/records?after_author=&limit=   (export) NDJSON of stored records
    POST /v1/import                         (import) NDJSON of signed records, merged exactly
                                            like a peer's batch -> {"counts","outcomes"}
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node.app import NODE, Node, now_ms
from node.errors import ApiError, PeerError
from node.matching import Upload, hash_upload, match_hashes, match_images
from node.peer_api import frontier
from protocol.bodies import Body, OpinionBody, RetractBody, SignalBody, VoteBody
from protocol.encoding import MAX_SAFE_INTEGER, encode_canonical
from protocol.errors import RemoteProtocolError
from protocol.labels import check_in_taxonomy, normalise_labels
from protocol.membership import Membership
from protocol.records import is_record_id
from protocol.signal_types import canonical_value

# what aiohttp's multipart reader (and decoding a form field) raise on a malformed body
MALFORMED_MULTIPART = (ValueError, HttpProcessingError)
LocalHandler = Callable[[web.Request, Node], Awaitable[web.StreamResponse]]


def local(handler: LocalHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Require the node's bearer token."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE]
        supplied = request.headers.get("Authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {node.token}".encode()):
            raise ApiError("missing or wrong bearer token (see HOME/api.token)", status=401)
        return await handler(request, node)

    return wrapper


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, LookupError, RecursionError) as e:  # LookupError: an unknown charset
        raise ApiError(f"request body is not JSON: {e}", status=400) from e
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object", status=400)
    return body


def _labels(node: Node, raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ApiError("labels must be a list of strings", status=400)
    labels = normalise_labels(raw)
    check_in_taxonomy(labels, node.federation.taxonomy)
    return labels


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(f"{key} must be a string", status=400)
    return value or None


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is not None and (type(value) is not int or value < 0):
        raise ApiError(f"{key} must be a non-negative integer", status=400)
    return value


async def _hash_upload(request: web.Request, node: Node) -> Upload:
    try:
        return await hash_upload(request, node)
    except MALFORMED_MULTIPART as e:  # no boundary, bad part headers, a field not in UTF-8
        raise ApiError(f"malformed multipart body: {e}", status=400) from e


async def _author(node: Node, body: Body) -> web.Response:
    record = await node.author(body)
    return web.json_response(
        {"id": record.id, "seq": record.seq, "kind": record.kind, "record": record.text},
        status=201,
    )


@local
async def get_status(request: web.Request, node: Node) -> web.StreamResponse:
    from node.gossip import GOSSIP

    now = now_ms()
    stats: dict[str, object] = dict(await node.store.read(lambda s: s.stats(now_ms=now)))
    if request.query.get("digest"):  # the whole materialised state, hashed: costs a full read
        state = await node.store.read(lambda s: s.materialised_state(now_ms=now))
        stats["state_digest"] = hashlib.sha256(encode_canonical(state)).hexdigest()
        stats["frontier_digest"] = (await frontier(node)).digest()
    gossip = request.app[GOSSIP]
    membership = node.membership
    members = (
        [] if membership is None else sorted(membership.members.values(), key=lambda m: m.name)
    )
    return web.json_response(
        {
            "node": {
                "name": node.config.name,
                "key": node.key.public,
                "url": node.config.url,
                "uptime_s": round((now - node.started_ms) / 1000, 1),
                "ready": node.ready,
            },
            "federation": {"name": node.federation.name, "id": node.federation.id},
            "store": stats,
            "index": {"signals": len(node.index)},
            "members": [
                {
                    "name": m.name,
                    "identity": m.identity,
                    "key": m.current_key,
                    "role": m.role,
                    "removed": m.removed,
                    "frozen": _frozen(membership, m.current_key),
                }
                for m in members
            ],
            "forks": _forks(membership),
            "peers": [p.to_json(time.time()) for p in gossip.peers.values()],
            "barred_peers": [{"url": u, "reason": r} for u, r in sorted(gossip.barred.items())],
            "traffic": {"bytes_sent": gossip.bytes_sent, "bytes_received": gossip.bytes_received},
            "counters": node.counters,
        }
    )


def _frozen(membership: Membership | None, key: str) -> dict[str, object] | None:
    """Where a key's log stops counting, and why (fork, removed, rotated), if it does."""
    freeze = membership.freezes.get(key) if membership else None
    return None if freeze is None else {"after": freeze[0], "reason": freeze[1]}


def _forks(membership: Membership | None) -> list[dict[str, object]]:
    """The keys frozen by a fork: the member, the seq it signed twice, what still counts."""
    if membership is None:
        return []
    return [
        {"author": key, "member": getattr(membership.identity_of(key), "name", None),
         "seq": after + 1, "counts_through": after}
        for key, (after, reason) in sorted(membership.freezes.items()) if reason == "fork"
    ]  # fmt: skip


@local
async def list_signals(request: web.Request, node: Node) -> web.StreamResponse:
    q = request.query
    if q.get("active") not in ("true", "false", None):
        raise ApiError("active must be true or false", status=400)
    active = {"true": True, "false": False}.get(q.get("active", ""))
    try:
        limit, offset = int(q.get("limit", "100")), int(q.get("offset", "0"))
    except ValueError as e:
        raise ApiError("limit and offset must be integers", status=400) from e
    if not (0 <= limit <= MAX_SAFE_INTEGER and 0 <= offset <= MAX_SAFE_INTEGER):
        raise ApiError("limit and offset must be integers from 0 to 2^53 - 1", status=400)
    now = now_ms()
    rows = await node.store.read(
        lambda s: s.signals(
            now_ms=now, type=q.get("type"), label=q.get("label"), member=q.get("member"),
            active=active, limit=min(limit, 10_000), offset=offset,
        )
    )  # fmt: skip
    return web.json_response({"signals": rows, "limit": limit, "offset": offset})


@local
async def get_signal(request: web.Request, node: Node) -> web.StreamResponse:
    signal_id = request.match_info["id"]
    now = now_ms()
    row = await node.store.read(lambda s: s.signal(signal_id, now_ms=now))
    if row is None:
        raise ApiError(f"no signal {signal_id}", status=404)
    return web.json_response(row)


@local
async def add_signal(request: web.Request, node: Node) -> web.StreamResponse:
    if request.content_type.startswith("multipart/"):
        upload = await _hash_upload(request, node)
        labels = _labels(node, upload.fields.get("labels"))
        note = upload.fields.get("note")
        hashes = upload.hashes.as_signals()
        records = [
            await node.author(SignalBody(kind, value, labels, note=note))
            for kind, value in hashes.items()
            if kind in ("pdq", "md5")
        ]
        return web.json_response(
            {
                "signals": [{"id": r.id, "type": getattr(r.body, "type", "")} for r in records],
                "hashes": hashes,
                "pdq_quality": upload.hashes.pdq_quality,
                "low_quality": upload.hashes.low_quality,
            },
            status=201,
        )
    body = await json_body(request)
    kind = body.get("type")
    value = body.get("value")
    if not isinstance(kind, str) or not isinstance(value, str):
        raise ApiError("type and value are required strings", status=400)
    signal = SignalBody(
        type=kind,
        value=canonical_value(kind, value),
        labels=_labels(node, body.get("labels")),
        note=_optional_str(body, "note"),
        expires=_optional_int(body, "expires"),
    )
    return await _author(node, signal)


def _signal_id(request: web.Request) -> str:
    signal_id = request.match_info["id"]
    if not is_record_id(signal_id):
        raise ApiError("a signal id is 64 lowercase hex characters", status=400)
    return signal_id


@local
async def retract_signal(request: web.Request, node: Node) -> web.StreamResponse:
    signal_id = _signal_id(request)
    body = await json_body(request) if request.can_read_body else {}
    now = now_ms()
    row = await node.store.read(lambda s: s.signal(signal_id, now_ms=now))
    if row is None:
        raise ApiError(f"no signal {signal_id}", status=404)
    if row["member"] != node.identity:
        raise ApiError("only the member that contributed a signal can retract it", status=403)
    return await _author(node, RetractBody(signal_id, reason=_optional_str(body, "reason")))


@local
async def add_opinion(request: web.Request, node: Node) -> web.StreamResponse:
    signal_id = _signal_id(request)
    body = await json_body(request)
    verdict = body.get("verdict")
    if not isinstance(verdict, str):
        raise ApiError("verdict is required: confirm, dispute or seen", status=400)
    opinion = OpinionBody(
        signal_id, verdict, _labels(node, body.get("labels")), _optional_str(body, "note")
    )
    return await _author(node, opinion)


@local
async def add_vote(request: web.Request, node: Node) -> web.StreamResponse:
    body = await json_body(request)
    vote = VoteBody(
        action=str(body.get("action")),
        member=str(body.get("member")),
        name=_optional_str(body, "name"),
        role=_optional_str(body, "role"),
        after=_optional_int(body, "after"),
    )
    return await _author(node, vote)


@local
async def post_hash(request: web.Request, node: Node) -> web.StreamResponse:
    upload = await _hash_upload(request, node)
    h = upload.hashes
    return web.json_response(
        {"hashes": h.as_signals(), "pdq_quality": h.pdq_quality, "low_quality": h.low_quality,
         "width": h.width, "height": h.height}
    )  # fmt: skip


@local
async def post_match(request: web.Request, node: Node) -> web.StreamResponse:
    if request.content_type.startswith("multipart/"):
        try:
            return web.json_response(await match_images(request, node))
        except MALFORMED_MULTIPART as e:  # no boundary, bad part headers, a field not in UTF-8
            raise ApiError(f"malformed multipart body: {e}", status=400) from e
    body = await json_body(request)
    return web.json_response(await match_hashes(node, body))


@local
async def get_peers(request: web.Request, node: Node) -> web.StreamResponse:
    from node.gossip import GOSSIP

    gossip = request.app[GOSSIP]
    return web.json_response({"peers": [p.to_json(time.time()) for p in gossip.peers.values()]})


@local
async def add_peer(request: web.Request, node: Node) -> web.StreamResponse:
    from node.config import split_seed
    from node.gossip import GOSSIP

    body = await json_body(request)
    url, pin = split_seed(str(body.get("url", "")))  # keeps a "#spki=<hex>" pin
    peer = request.app[GOSSIP].add_peer(url, "added", pin)
    await node.store.write(lambda s: s.upsert_peer(url, source="added", pin=pin))
    return web.json_response(peer.to_json(time.time()), status=201)


@local
async def post_sync(request: web.Request, node: Node) -> web.StreamResponse:
    from node.config import split_seed
    from node.gossip import GOSSIP

    gossip = request.app[GOSSIP]
    body = await json_body(request) if request.can_read_body else {}
    wanted = body.get("peer")
    if wanted is not None and not isinstance(wanted, str):
        raise ApiError("peer must be a peer URL", status=400)
    seed = split_seed(wanted) if wanted else None  # a malformed URL must not become a peer
    await gossip.learn_peers()
    peers = [gossip.add_peer(seed[0], "added", seed[1])] if seed else list(gossip.peers.values())
    reports, errors = [], []
    for peer in peers:
        try:
            reports.append((await gossip.sync_with(peer)).to_json())
        except (PeerError, RemoteProtocolError) as e:
            errors.append({"peer": peer.url, "error": str(e)})
    return web.json_response({"reports": reports, "errors": errors})


@local
async def export_records(request: web.Request, node: Node) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    records = await node.store.read(lambda s: list(s.all_records()))
    for start in range(0, len(records), 1000):
        await response.write(b"".join(r + b"\n" for r in records[start : start + 1000]))
    await response.write_eof()
    return response


@local
async def import_records(request: web.Request, node: Node) -> web.StreamResponse:
    """Merge signed records from a file (``hashmesh import``): verified exactly like sync.

    Unlike a peer's push, a bad line is one rejected record here, not a refused batch.
    """
    lines = [line for line in (await request.read()).split(b"\n") if line]
    if len(lines) > node.config.limits.max_batch_records:
        raise ApiError(f"at most {node.config.limits.max_batch_records} records per request")
    result = await node.merge(lines, source=None)
    outcomes = [
        {"index": o.index, "status": str(o.status), "id": o.id, "error": o.error}
        for o in result.outcomes
        if o.status != "accepted"
    ]
    return web.json_response({"counts": result.counts(), "outcomes": outcomes})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/status", get_status)
    r.add_get("/v1/signals", list_signals)
    r.add_post("/v1/signals", add_signal)
    r.add_get("/v1/signals/{id}", get_signal)
    r.add_post("/v1/signals/{id}/retract", retract_signal)
    r.add_post("/v1/signals/{id}/opinions", add_opinion)
    r.add_post("/v1/votes", add_vote)
    r.add_post("/v1/hash", post_hash)
    r.add_post("/v1/match", post_match)
    r.add_get("/v1/peers", get_peers)
    r.add_post("/v1/peers", add_peer)
    r.add_post("/v1/sync", post_sync)
    r.add_get("/v1/records", export_records)
    r.add_post("/v1/import", import_records)
