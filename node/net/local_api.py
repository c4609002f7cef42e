"""The local operator API: what the member's own moderation systems call.

Protected by the bearer token in ``HOME/api.token`` (``Authorization: Bearer …``; the feed,
the snapshot and lookups also take a read-only replica token, node.net.replica_api); the node
binds loopback by default. JSON in, JSON out; errors are problem bodies (node.app) whose
``title`` names what failed. Every input is checked strictly, so a mistake is an error rather
than a silent default: a body's Content-Type must be one the route takes (415), a JSON
member, form field or query parameter the route does not know is refused (a misspelt
``lables`` would otherwise sign a signal without labels), and a repeated query parameter is
refused. JSON and NDJSON bodies are at most ``max_request_bytes``; image uploads to
``/v1/hash``, ``/v1/match`` and ``/v1/signals`` at most ``max_image_bytes`` (node.net.matching).

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
    GET  /v1/changes?after=&limit=&epoch=&wait_ms=   the change feed (long poll with wait_ms)
    GET  /v1/lookup?signal_type=&signal=    one hash, HMA's shape
    GET  /v1/snapshot                       the active list at a feed cursor (node.net.replica_api)
    GET  /v1/records?after_author=&after_seq=&limit=
                                            (export) NDJSON of stored records in (author,
                                            seq) order, streamed in pages of bounded memory
    POST /v1/import                         (import) NDJSON of signed records, merged exactly
                                            like a peer's batch -> {"counts","outcomes"}
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node.clock import now_ms
from node.errors import ApiError, ConfigError, PeerError
from node.media.types import DEFAULT_FILE_TYPES, PYTX_NAMES
from node.media.video import VideoHashes
from node.net.api_input import (
    HEX64,
    MULTIPART,
    form_flag,
    int_param,
    json_body,
    optional_json_body,
    query_params,
    require_content_type,
)
from node.net.context import NODE, Node, problem
from node.net.host import MatchHost as Matcher
from node.net.matching import MATCH_FIELDS, Upload, hash_upload, match_hashes, match_images
from node.net.peer_api import frontier
from node.net.replica_api import read_only, refuse_replica
from node.store import read as store_read
from node.store.read import SignalQuery
from protocol.authoring import check_body
from protocol.bodies import Body, OpinionBody, RetractBody, SignalBody, VoteBody
from protocol.encoding import MAX_SAFE_INTEGER, encode_canonical
from protocol.errors import RemoteProtocolError
from protocol.labels import check_labels, normalise_labels
from protocol.membership import Membership
from protocol.records import is_record_id
from protocol.signal_types import SIGNAL_TYPES, canonical_value
from protocol.type_gate import enabled_types, waiting_for

if TYPE_CHECKING:
    from node.store.store import Store

StoredRow = tuple[str, int, int, bytes]  # (author, seq, row, raw), Store.records_page
# what aiohttp's multipart reader (and decoding a form field) raise on a malformed body
MALFORMED_MULTIPART = (ValueError, HttpProcessingError)
LocalHandler = Callable[[web.Request, Node], Awaitable[web.StreamResponse]]
MAX_LIST_LIMIT = 10_000
MAX_ROW = 2**63 - 1  # after every row of a seq
EXPORT_CHUNK_RECORDS = 1000  # records read from the store per step of an export (<= 8 MiB)


def local(handler: LocalHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Require the node's bearer token."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE]
        supplied = request.headers.get("Authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {node.token}".encode()):
            await refuse_replica(request, node)  # a replica token here: 403, not 401
            raise ApiError("missing or wrong bearer token (see HOME/api.token)", status=401,
                           title="not authorised")  # fmt: skip
        return await handler(request, node)

    return wrapper


def _labels(node: Node, raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ApiError("labels must be a list of strings", title="invalid labels")
    return normalise_labels(raw)  # the taxonomy is the signing point's (protocol.authoring)


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(f"{key} must be a string", title=f"invalid {key}")
    return value or None


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is not None and (type(value) is not int or value < 0):
        raise ApiError(f"{key} must be a non-negative integer", title=f"invalid {key}")
    return value


async def _hash_upload(
    request: web.Request, node: Node, form_fields: Collection[str] = ()
) -> Upload:
    try:
        return await hash_upload(request, node, form_fields)
    except MALFORMED_MULTIPART as e:  # no boundary, bad part headers, a field not in UTF-8
        raise ApiError(f"malformed multipart body: {e}", title="malformed multipart body") from e


async def _author(node: Node, body: Body) -> web.Response:
    record = await node.author(body)
    return web.json_response(
        {"id": record.id, "seq": record.seq, "kind": record.kind, "record": record.text},
        status=201,
    )


@local
async def get_status(request: web.Request, node: Node) -> web.StreamResponse:
    from node.net.gossip import GOSSIP

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
    announced = await node.store.read(lambda s: s.announced_types())
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
                    "types": announced.get(m.identity, []),
                }
                for m in members
            ],
            "signal_types": _signal_types(membership, announced),
            "forks": _forks(membership),
            "peers": [p.to_json(time.time()) for p in gossip.peers.values()],
            "barred_peers": [{"url": u, "reason": r} for u, r in sorted(gossip.barred.items())],
            "traffic": {"bytes_sent": gossip.bytes_sent, "bytes_received": gossip.bytes_received},
            "counters": node.counters,
        }
    )


def _signal_types(
    membership: Membership | None, announced: Mapping[str, list[str]]
) -> dict[str, object]:
    """The type gate as this node sees it (SPEC 11): the types its registry knows, those
    enabled in the federation, the enabled ones it does not know (it must be upgraded), and
    for each known type not enabled yet the members whose nodes have not announced it."""
    enabled = set() if membership is None else enabled_types(membership, announced)
    return {
        "known": list(SIGNAL_TYPES),
        "enabled": sorted(enabled),
        "unknown_enabled": sorted(enabled - SIGNAL_TYPES.keys()),
        "waiting": {
            name: [m.name for m in waiting_for(membership, announced, name)]
            for name in sorted(SIGNAL_TYPES.keys() - enabled)
            if membership is not None
        },
    }


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


SIGNAL_PARAMS = ("type", "label", "member", "active", "limit", "offset")


@local
async def list_signals(request: web.Request, node: Node) -> web.StreamResponse:
    query = signal_query(query_params(request, SIGNAL_PARAMS))
    now = now_ms()
    rows = await node.store.read(lambda s: store_read.signals(s.conn, query, now_ms=now))
    return web.json_response({"signals": rows, "limit": query.limit, "offset": query.offset})


def signal_query(q: dict[str, str]) -> SignalQuery:
    """The listing ``GET /v1/signals`` asks for (absent: any signal, 100 of them)."""
    if q.get("active") not in ("true", "false", None):
        raise ApiError("active must be true or false", title="invalid query parameter active")
    if q.get("type") is not None and q["type"] not in SIGNAL_TYPES:
        raise ApiError(f"type must be one of {', '.join(SIGNAL_TYPES)}, got {q['type'][:40]!r}",
                       title="invalid query parameter type")  # fmt: skip
    if q.get("member") is not None and HEX64.fullmatch(q["member"]) is None:
        raise ApiError("member must be a member's identity (64 lowercase hex)",
                       title="invalid query parameter member")  # fmt: skip
    if q.get("label") is not None:
        try:
            check_labels([q["label"]], "label")
        except RemoteProtocolError as e:
            raise ApiError(f"label: {e}", title="invalid query parameter label") from e
    return SignalQuery(
        type=q.get("type"),
        label=q.get("label"),
        member=q.get("member"),
        active={"true": True, "false": False}.get(q.get("active", "")),
        limit=int_param(q, "limit", 100, 1, MAX_LIST_LIMIT),
        offset=int_param(q, "offset", 0, 0),
    )


@local
async def get_signal(request: web.Request, node: Node) -> web.StreamResponse:
    signal_id = request.match_info["id"]
    now = now_ms()
    row = await node.store.read(lambda s: s.signal(signal_id, now_ms=now))
    if row is None:
        raise ApiError(f"no signal {signal_id}", status=404, title="no such signal")
    return web.json_response(row)


SIGNAL_FIELDS = ("type", "value", "labels", "note", "expires")
SIGNAL_FORM_FIELDS = ("labels", "note", "allow_low_quality")
UPLOAD_TYPES = DEFAULT_FILE_TYPES  # what an image upload lists (as `hashmesh add FILE` does)


@local
async def add_signal(request: web.Request, node: Node) -> web.StreamResponse:
    if request.content_type == MULTIPART:
        return await _add_upload(request, node)
    body = await json_body(request, SIGNAL_FIELDS)
    kind = body.get("type")
    value = body.get("value")
    if not isinstance(kind, str) or not isinstance(value, str):
        raise ApiError("type and value are required strings", title="invalid signal")
    signal = SignalBody(
        type=kind,
        value=canonical_value(kind, value),
        labels=_labels(node, body.get("labels")),
        note=_optional_str(body, "note"),
        expires=_optional_int(body, "expires"),
    )
    return await _author(node, signal)


async def _add_upload(request: web.Request, node: Node) -> web.StreamResponse:
    """An image's PDQ and MD5 as signals, or a video's vPDQ values and MD5; refused whole if
    the image (every frame of the video) is too featureless."""
    upload = await _hash_upload(request, node, SIGNAL_FORM_FIELDS)
    labels = _labels(node, upload.fields.get("labels"))
    hashes = upload.hashes
    floor = node.config.media.min_pdq_quality
    allowed = form_flag(upload.fields, "allow_low_quality")
    if isinstance(hashes, VideoHashes):
        return await _add_video(node, hashes, labels, upload.fields.get("note"), allowed)
    if hashes.is_low_quality(floor) and not allowed:
        raise ApiError(
            f"PDQ quality {hashes.pdq_quality} is below min_pdq_quality {floor}: the image is "
            "too featureless to list (its hashes would match other near-blank images); send "
            "allow_low_quality=true to list it anyway",
            status=422,
            title="image too featureless",
        )
    signals = hashes.as_signals()
    bodies = [SignalBody(k, signals[k], labels, note=upload.fields.get("note"))
              for k in UPLOAD_TYPES]  # fmt: skip
    for body in bodies:  # a degenerate value is refused even when allowed, before any is signed
        check_body(node.federation, body)
    records = [await node.author(body) for body in bodies]
    return web.json_response(
        {
            "signals": [{"id": r.id, "type": getattr(r.body, "type", "")} for r in records],
            "hashes": signals,
            "pdq_quality": hashes.pdq_quality,
            "low_quality": hashes.is_low_quality(floor),
        },
        status=201,
    )


async def _add_video(
    node: Node, video: VideoHashes, labels: tuple[str, ...], note: str | None, allowed: bool
) -> web.StreamResponse:
    floor = node.config.media.min_pdq_quality
    if not any(f.quality >= floor for f in video.frames) and not allowed:
        raise ApiError(
            f"every hashed frame of the video has PDQ quality below min_pdq_quality {floor}: it "
            "is too featureless to list; send allow_low_quality=true to list it anyway",
            status=422,
            title="video too featureless",
        )
    values = [("vpdq", v) for v in video.vpdq_values()] + [("md5", video.md5)]
    bodies = [SignalBody(kind, value, labels, note=note) for kind, value in values]
    for body in bodies:  # every value is checked before any is signed
        check_body(node.federation, body)
    records = [await node.author(body) for body in bodies]
    return web.json_response(
        {"signals": [{"id": r.id, "type": getattr(r.body, "type", "")} for r in records]}
        | video_json(video, floor),
        status=201,
    )


def video_json(video: VideoHashes, floor: int) -> dict[str, object]:
    """What a video hashed to (the answer of POST /v1/hash for a video)."""
    usable = sum(1 for f in video.frames if f.quality >= floor)
    return {"kind": "video", "hashes": {"md5": video.md5, "sha256": video.sha256,
            "vpdq": list(video.vpdq_values())}, "frames": len(video.frames),
            "usable_frames": usable, "low_quality": usable == 0, "duration_ms": video.duration_ms,
            "width": video.width, "height": video.height}  # fmt: skip


def _signal_id(request: web.Request) -> str:
    signal_id = request.match_info["id"]
    if not is_record_id(signal_id):
        raise ApiError("a signal id is 64 lowercase hex characters", title="invalid signal id")
    return signal_id


@local
async def retract_signal(request: web.Request, node: Node) -> web.StreamResponse:
    signal_id = _signal_id(request)
    body = await optional_json_body(request, ("reason",))
    return await _author(node, RetractBody(signal_id, reason=_optional_str(body, "reason")))


@local
async def add_opinion(request: web.Request, node: Node) -> web.StreamResponse:
    signal_id = _signal_id(request)
    body = await json_body(request, ("verdict", "labels", "note"))
    verdict = body.get("verdict")
    if not isinstance(verdict, str):
        raise ApiError("verdict is required: confirm, dispute or seen", title="invalid verdict")
    opinion = OpinionBody(
        signal_id, verdict, _labels(node, body.get("labels")), _optional_str(body, "note")
    )
    return await _author(node, opinion)


@local
async def add_vote(request: web.Request, node: Node) -> web.StreamResponse:
    body = await json_body(request, ("action", "member", "name", "role", "after"))
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
    require_content_type(request, (MULTIPART, "image/*", "video/*", "application/octet-stream"))
    upload = await _hash_upload(request, node)
    h = upload.hashes
    floor = node.config.media.min_pdq_quality
    if isinstance(h, VideoHashes):
        return web.json_response(video_json(h, floor))
    return web.json_response(
        {"kind": "image", "hashes": h.as_signals(), "pdq_quality": h.pdq_quality,
         "low_quality": h.is_low_quality(floor), "width": h.width, "height": h.height}
    )  # fmt: skip


@local
async def post_match(request: web.Request, node: Node) -> web.StreamResponse:
    return await match_response(request, node)


async def match_response(request: web.Request, node: Matcher) -> web.StreamResponse:
    """``POST /v1/match`` on the node or a replica (node.replica). Fails closed: if any
    uploaded image cannot be hashed, the answer is a 422 problem (with every file's result
    and no top-level ``matched``), never a 200 that reads as "clean"."""
    if request.content_type != MULTIPART:
        body = await json_body(request, MATCH_FIELDS)
        return web.json_response(await match_hashes(node, body))
    try:
        answer = await match_images(request, node)
    except MALFORMED_MULTIPART as e:  # no boundary, bad part headers, a field not in UTF-8
        raise ApiError(f"malformed multipart body: {e}", title="malformed multipart body") from e
    results = answer["results"]
    errors = [{"file": r["file"], "error": r["error"]} for r in results if "error" in r]
    if not errors:
        return web.json_response(answer)
    first = errors[0]
    detail = (
        f"{len(errors)} of {len(results)} files could not be hashed, so they were not "
        f"matched (first: {first['file'] or 'upload'}: {first['error']})"
    )
    too_large = all(r.get("status") == 413 for r in results if "error" in r)
    return problem(413 if too_large else 422, "image could not be hashed", detail,
                   errors=errors, results=results)  # fmt: skip


CHANGES_PARAMS = ("after", "limit", "epoch", "wait_ms")
MAX_FEED_PAGE = 10_000
MAX_FEED_WAIT_MS = 30_000


@read_only
async def get_changes(request: web.Request, node: Node) -> web.StreamResponse:
    """The change feed after a cursor (``node.store.changefeed``): ``{"epoch", "changes":
    [{"cursor", "ts", "kind", "id", "signal"}], "next", "last"}``. With ``epoch`` (the one the
    reader holds), a feed of another epoch, or a cursor beyond its end, is 409: start
    over from 0. With ``wait_ms`` (a long poll, as replicas follow it), a reader at the end
    is answered when a merge adds entries, or with no entries after that long (an expiry
    alone does not wake it). The node's bearer token or a replica token."""
    q = query_params(request, CHANGES_PARAMS)
    after = int_param(q, "after", 0, 0)
    limit = int_param(q, "limit", 1000, 1, MAX_FEED_PAGE)
    wait_ms = int_param(q, "wait_ms", 0, 0, MAX_FEED_WAIT_MS)
    armed = node.feed_beacon.armed()  # before the read: a merge after it wakes this poll
    page = await _feed_page(node, after, limit)
    at_end = not page["changes"] and after == page["last"]
    if wait_ms and at_end and q.get("epoch") in (None, page["epoch"]):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_ms / 1000):
                await armed.wait()
        page = await _feed_page(node, after, limit)
    stale = q.get("epoch") not in (None, page["epoch"])
    if stale or after > int(page["last"]):  # type: ignore[call-overload]
        why = "another node_epoch" if stale else f"cursor {after} beyond the feed's end"
        return problem(409, "change feed restarted",
                       f"{why}: the database was rebuilt or restored; start over from cursor 0",
                       epoch=page["epoch"], last=page["last"])  # fmt: skip
    changes: list[dict[str, Any]] = page["changes"]  # type: ignore[assignment]
    page["next"] = changes[-1]["cursor"] if changes else after
    return web.json_response(page)


async def _feed_page(node: Node, after: int, limit: int) -> dict[str, object]:
    now = now_ms()
    await node.store.write(lambda s: s.sweep_expiries(now))
    return await node.store.read(lambda s: s.changes(after, limit, now_ms=now))


LOOKUP_PARAMS = ("signal_type", "signal", "radius", "max_hits")
# python-threatexchange's names for hashmesh's types (it has no phash, dhash or sha1).
# python-threatexchange names that are not hashmesh names (README: Use with HMA)
PYTX_TYPE_NAMES = {pytx: name for name, pytx in PYTX_NAMES.items() if pytx != name}


@read_only
async def lookup(request: web.Request, node: Node) -> web.StreamResponse:
    """The node's bearer token or a replica token."""
    return await lookup_response(request, node)


async def lookup_response(request: web.Request, node: Matcher) -> web.StreamResponse:
    """One hash by GET, in the shape HMA's lookup takes (``signal_type``, ``signal``): the
    same answer as ``POST /v1/match`` for that hash, with provenance and tallies (the node's
    ``GET /v1/lookup``, and a replica's)."""
    q = query_params(request, LOOKUP_PARAMS)
    for name in ("signal_type", "signal"):
        if not q.get(name):
            raise ApiError(f"{name} is required", title=f"missing query parameter {name}")
    kind = PYTX_TYPE_NAMES.get(q["signal_type"], q["signal_type"])
    if kind not in SIGNAL_TYPES:
        names = sorted({*SIGNAL_TYPES, *PYTX_TYPE_NAMES})
        got = q["signal_type"][:40]
        raise ApiError(f"signal_type must be one of {', '.join(names)}, got {got!r}",
                       title="invalid query parameter signal_type")  # fmt: skip
    body: dict[str, Any] = {"type": kind, "value": q["signal"]}
    if "radius" in q:
        body["radius"] = int_param(q, "radius", 0, 0)
    if "max_hits" in q:
        body["max_hits"] = int_param(q, "max_hits", 1, 1)
    answer = await match_hashes(node, body)
    result = answer["results"][0]
    return web.json_response({"signal_type": q["signal_type"], **result})


@local
async def get_peers(request: web.Request, node: Node) -> web.StreamResponse:
    from node.net.gossip import GOSSIP

    gossip = request.app[GOSSIP]
    return web.json_response({"peers": [p.to_json(time.time()) for p in gossip.peers.values()]})


@local
async def add_peer(request: web.Request, node: Node) -> web.StreamResponse:
    from node.config import split_seed
    from node.net.gossip import GOSSIP

    body = await json_body(request, ("url",))
    url, pin = split_seed(str(body.get("url", "")))  # keeps a "#spki=<hex>" pin
    peer = request.app[GOSSIP].add_peer(url, "added", pin)
    await node.store.write(lambda s: s.upsert_peer(url, source="added", pin=pin))
    return web.json_response(peer.to_json(time.time()), status=201)


@local
async def remove_peer(request: web.Request, node: Node) -> web.StreamResponse:
    """Forget a peer added by hand (``?url=``); seeds live in config.toml and announced URLs
    stay peers while their member announces them."""
    from node.config import normalise_peer
    from node.net.gossip import GOSSIP

    q = query_params(request, ("url",))
    if not q.get("url"):
        raise ApiError(
            "url is required: the peer URL to remove", title="missing query parameter url"
        )
    try:
        url = normalise_peer(q["url"].partition("#")[0])
    except ConfigError as e:
        raise ApiError(f"url: {e}", title="invalid query parameter url") from e
    if url in node.config.peers:
        raise ApiError(f"{url} is a seed in config.toml: remove it there", status=409,
                       title="peer is a configured seed")  # fmt: skip
    gossip = request.app[GOSSIP]
    peer = gossip.peers.get(url)
    if peer is not None and peer.source != "added":
        raise ApiError(f"{url} is announced by a member: it stays a peer while announced",
                       status=409, title="peer is announced")  # fmt: skip
    stored = await node.store.write(lambda s: s.remove_peer(url))
    gossip.remove_peer(url)
    if stored is None and peer is None:
        raise ApiError(f"{url} is not a peer added here", status=404, title="no such peer")
    return web.json_response({"url": url, "removed": True, "source": "added"})


@local
async def post_sync(request: web.Request, node: Node) -> web.StreamResponse:
    from node.config import split_seed
    from node.net.gossip import GOSSIP

    gossip = request.app[GOSSIP]
    body = await optional_json_body(request, ("peer",))
    wanted = body.get("peer")
    if wanted is not None and not isinstance(wanted, str):
        raise ApiError("peer must be a peer URL", title="invalid peer")
    seed = split_seed(wanted) if wanted else None  # a malformed URL must not become a peer
    await gossip.learn_peers()
    if seed is not None and seed[0] not in gossip.peers:
        gossip.check_contactable(*seed)  # this node's own URL: 400; a barred one: 409
        raise ApiError(f"{seed[0]} is not a peer of this node: add it first (POST /v1/peers)",
                       status=404, title="no such peer")  # fmt: skip
    peers = [gossip.peers[seed[0]]] if seed else list(gossip.peers.values())
    reports, errors = [], []
    for peer in peers:
        try:
            reports.append((await gossip.sync_with(peer)).to_json())
        except (PeerError, RemoteProtocolError) as e:
            errors.append({"peer": peer.url, "error": str(e)})
    return web.json_response({"reports": reports, "errors": errors})


EXPORT_PARAMS = ("after_author", "after_seq", "limit")


@local
async def export_records(request: web.Request, node: Node) -> web.StreamResponse:
    """Stored records in (author, seq) order, NDJSON, streamed from the store in chunks of
    ``EXPORT_CHUNK_RECORDS``. A page of ``limit`` records never splits a seq (a fork's two
    records go together, so a page may hold limit + 1); the next page starts after the last
    record's author and seq."""
    q = query_params(request, EXPORT_PARAMS)
    author = q.get("after_author", "")
    if author and HEX64.fullmatch(author) is None:
        raise ApiError("after_author must be an author key (64 lowercase hex)",
                       title="invalid query parameter after_author")  # fmt: skip
    if "after_seq" in q and not author:
        raise ApiError("after_seq needs after_author", title="invalid query parameter after_seq")
    seq = int_param(q, "after_seq", 0, 0)
    limit = int_param(q, "limit", MAX_SAFE_INTEGER, 1)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    cursor = (author, seq, MAX_ROW) if author else ("", 0, 0)
    sent = 0
    while sent < limit:
        want = min(EXPORT_CHUNK_RECORDS, limit - sent)
        page = await node.store.read(_records_page(cursor, want))
        if page:
            await response.write(b"".join(raw + b"\n" for *_, raw in page))
            sent, cursor = sent + len(page), page[-1][:3]
        if len(page) < want:
            break
    else:  # the limit is reached: the rest of the last record's seq (a fork's other side)
        rest = await node.store.read(_records_page(cursor, 2))
        await response.write(b"".join(r[3] + b"\n" for r in rest if r[:2] == cursor[:2]))
    await response.write_eof()
    return response


def _records_page(after: tuple[str, int, int], limit: int) -> Callable[[Store], list[StoredRow]]:
    return lambda store: store.records_page(after, limit)


@local
async def import_records(request: web.Request, node: Node) -> web.StreamResponse:
    """Merge signed records from a file (``hashmesh import``): verified exactly like sync.

    Unlike a peer's push, a bad line is one rejected record here, not a refused batch.
    """
    require_content_type(request, ("application/x-ndjson",))
    lines = [line for line in (await request.read()).split(b"\n") if line]
    if len(lines) > node.config.limits.max_batch_records:
        raise ApiError(f"at most {node.config.limits.max_batch_records} records per request",
                       title="too many records")  # fmt: skip
    result = await node.merge(lines, source=None)
    return web.json_response(result.to_json())


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
    r.add_get("/v1/lookup", lookup)
    r.add_get("/v1/changes", get_changes)
    r.add_get("/v1/peers", get_peers)
    r.add_post("/v1/peers", add_peer)
    r.add_delete("/v1/peers", remove_peer)
    r.add_post("/v1/sync", post_sync)
    r.add_get("/v1/records", export_records)
    r.add_post("/v1/import", import_records)
