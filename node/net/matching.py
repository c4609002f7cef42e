"""Matching uploads and hashes against the federation's list, with provenance.

A match answer lists, for every query, every active signal within the type's radius:
its record id, type, value, distance, labels, the contributing member, the opinion tallies
(confirm / dispute / seen) and when it was first seen. Hits beyond ``max_hits`` per query
are not dropped silently: the answer says ``truncated`` and gives ``total_hits``.

Featureless queries are answered, not searched (``"featureless": true`` with a ``reason``): a
perceptual hash of an image whose PDQ quality is below ``[media] min_pdq_quality`` (a query
may carry the image's ``quality``), and a value within the radius of a degenerate value
(``protocol.signal_types.is_featureless``). A blank image would otherwise "match" every other
blank image in the list. Since no featureless query is searched, no degenerate stored value is
ever a hit either (one within the radius of a query would make that query featureless).

Hash and image queries are searched at the radius the match policy allows and screened
(``node.net.screening``): the policy and the member's safelists move hits to ``suppressed``
(with the reason), and its local match lists add hits of their own, each hit naming its
``source``. Video answers (vPDQ matches, listed images in frames, frames of listed videos)
are not screened yet.

Images are read with bounded memory: each upload is at most ``max_image_bytes`` (the whole
multipart body at most that plus ``FORM_OVERHEAD_BYTES``), read in chunks and refused with 413
as soon as it is over; a form field is at most ``MAX_FORM_FIELD_BYTES``; unknown form fields
are refused. Decoding is bounded by ``max_image_pixels`` (node.media.hashing).
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

from aiohttp import BodyPartReader, StreamReader, web

from node.clock import now_ms
from node.errors import ApiError, MediaError
from node.matchpolicy import POLICY_FIELDS, parse_overrides
from node.media import media
from node.media.hashing import MediaHashes
from node.media.index import MatchIndex
from node.media.matchindex import Hit
from node.media.types import PICTURE_TYPES, VIDEO_TYPES
from node.media.video import VideoHashes
from node.net.api_input import unknown_fields
from node.net.host import MatchHost as Node
from node.net.screening import Screen, screen_for, screened
from protocol.errors import RemoteProtocolError
from protocol.signal_types import canonical_value, is_featureless, signal_type
from protocol.vpdq import VPDQ_COMPARED_MATCH_PCT, VPDQ_QUERY_MATCH_PCT, VpdqFrame, join_vpdq

DEFAULT_MAX_HITS = 100
MAX_QUERIES = 10_000
MAX_FORM_FIELD_BYTES = 64 * 1024
FORM_OVERHEAD_BYTES = 1024 * 1024  # part headers, boundaries and fields beside the images
FILE_FIELDS = frozenset({"file", "image", "files"})
MATCH_FIELDS = frozenset({"hashes", "type", "value", "radius", "max_hits", "query_pct",
                          "compared_pct", *POLICY_FIELDS})  # fmt: skip
QUERY_FIELDS = frozenset({"type", "value", "quality"})
PERCEPTUAL_TYPES = PICTURE_TYPES  # hashed from the picture: gated by PDQ quality
_CHUNK_BYTES = 64 * 1024
_SPOOL_BYTES = 8 * 1024 * 1024  # past this, chunks are written off the event loop


@dataclass(slots=True)
class Upload:
    hashes: MediaHashes | VideoHashes
    filename: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Query:
    """One hash to look up; quality is the PDQ quality of the image it came from, if known."""

    type: str
    value: str
    quality: int | None = None


def _too_large(what: str, limit: int) -> MediaError:
    return MediaError(f"{what} is larger than {limit} bytes", status=413, title="upload too large")


def file_limit(node: Node) -> int:
    """The most bytes one uploaded file may have: an image's or a video's limit."""
    return max(node.config.limits.max_image_bytes, node.config.limits.max_video_bytes)


def upload_limit(node: Node, request: web.Request) -> int:
    """The most bytes an upload request may carry; 413 at once if Content-Length says more."""
    limit = file_limit(node)
    if request.content_type.startswith("multipart/"):
        limit += FORM_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise _too_large("the request body", limit)
    return limit


async def _read_limited(
    stream: StreamReader | BodyPartReader, limit: int, too_large: MediaError, out: IO[bytes]
) -> int:
    """Copy everything left in stream to out, in chunks; too_large as soon as it passes limit
    bytes. Returns the bytes copied."""
    size = 0
    while True:
        if isinstance(stream, BodyPartReader):
            chunk = await stream.read_chunk(_CHUNK_BYTES)
        else:
            chunk = await stream.read(_CHUNK_BYTES)
        if not chunk:
            return size
        size += len(chunk)
        if size > limit:
            raise too_large
        if size > _SPOOL_BYTES:  # on disk by now: keep the loop free while it writes
            await asyncio.to_thread(out.write, chunk)
        else:
            out.write(chunk)


def _spool(node: Node) -> IO[bytes]:
    """A file for one upload: in memory up to an image's size, then on disk (a video)."""
    return tempfile.SpooledTemporaryFile(max_size=node.config.limits.max_image_bytes)


async def read_uploads(
    request: web.Request, node: Node, form_fields: Collection[str] = ()
) -> tuple[list[tuple[str | None, IO[bytes]]], dict[str, Any]]:
    """The files of a request (a raw body, or multipart parts named in FILE_FIELDS or with a
    filename), each spooled to a temporary file, and its other form fields, which must be
    among form_fields. The caller closes the files (``closing_uploads``)."""
    limit = upload_limit(node, request)
    per_file = file_limit(node)
    if not request.content_type.startswith("multipart/"):
        out = _spool(node)
        await _read_limited(request.content, limit, _too_large("the upload", limit), out)
        return [(None, out)], {}
    reader = await request.multipart()
    files: list[tuple[str | None, IO[bytes]]] = []
    fields: dict[str, Any] = {}
    left = limit  # of the whole body
    try:
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise ApiError("nested multipart bodies are not supported", title="malformed body")
            name = part.name or ""
            is_file = part.filename is not None or name in FILE_FIELDS
            if not is_file:
                unknown_fields([name], form_fields, "the form")
            cap = per_file if is_file else MAX_FORM_FIELD_BYTES
            what = part.filename or "the upload" if is_file else f"field {name}"
            too_large = _too_large(what, cap)
            if left < cap:
                cap, too_large = left, _too_large("the request body", limit)
            if is_file:
                out = _spool(node)
                files.append((part.filename, out))
                left -= await _read_limited(part, cap, too_large, out)
            else:
                buffer = io.BytesIO()
                left -= await _read_limited(part, cap, too_large, buffer)
                _add_field(fields, name, buffer.getvalue().decode())
    except BaseException:
        for _name, f in files:
            f.close()
        raise
    if not files:
        raise ApiError("no image or video in the request (multipart field 'file')",
                       title="no image")  # fmt: skip
    return files, fields


def _add_field(fields: dict[str, Any], name: str, text: str) -> None:
    if name == "labels":
        fields.setdefault("labels", []).extend(x.strip() for x in text.split(",") if x.strip())
    else:
        fields[name] = text


async def hash_upload(
    request: web.Request, node: Node, form_fields: Collection[str] = ()
) -> Upload:
    """The one image or video of a request, hashed, with its form fields."""
    files, fields = await read_uploads(request, node, form_fields)
    try:
        if len(files) > 1:
            raise ApiError(f"one file per request, got {len(files)}", title="too many images")
        name, file = files[0]
        hashes = await asyncio.to_thread(hash_media, node, file)
    finally:
        for _name, f in files:
            f.close()
    return Upload(hashes, name, fields)


def hash_media(node: Node, file: IO[bytes], *, dihedral: bool = False) -> MediaHashes | VideoHashes:
    """An uploaded file's hashes (``node.media.media.hash_media`` with this node's limits)."""
    return media.hash_media(file, node.config.limits, node.config.media, dihedral=dihedral)


# ---- hash queries -----------------------------------------------------------------------


def _queries(body: dict[str, Any]) -> list[Query]:
    unknown_fields(body, MATCH_FIELDS, "the match request")
    raw = body.get("hashes")
    if raw is None and "type" in body:
        raw = [{"type": body["type"], "value": body.get("value")}]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_QUERIES:
        raise ApiError(
            f"hashes must be a list of 1..{MAX_QUERIES} {{type, value}}", title="invalid hashes"
        )
    return [_query(item) for item in raw]


def _query(item: object) -> Query:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise ApiError("each hash is an object with type and value", title="invalid hashes")
    unknown_fields(item, QUERY_FIELDS, "a hash")
    kind, value, quality = item["type"], item.get("value"), item.get("quality")
    if not isinstance(value, str):
        raise ApiError("each hash needs a string value", title="invalid hashes")
    if quality is not None and (type(quality) is not int or not 0 <= quality <= 100):
        raise ApiError("quality must be an integer 0..100 (PDQ quality)", title="invalid hashes")
    try:
        canonical = canonical_value(kind, value)
    except RemoteProtocolError as e:
        raise ApiError(f"invalid {kind} hash: {e}", title="invalid hash") from e
    if quality is not None and kind not in PERCEPTUAL_TYPES:
        raise ApiError(f"quality applies to {', '.join(PERCEPTUAL_TYPES)}, not {kind}",
                       title="invalid hashes")  # fmt: skip
    return Query(kind, canonical, quality)


async def match_hashes(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    queries = _queries(body)
    max_hits = body.get("max_hits", DEFAULT_MAX_HITS)
    radius = body.get("radius")
    if type(max_hits) is not int or max_hits < 1:
        raise ApiError("max_hits must be a positive integer", title="invalid max_hits")
    if radius is not None and not isinstance(radius, dict) and (type(radius) is not int
                                                                or radius < 0):  # fmt: skip
        raise ApiError("radius must be a non-negative integer or {type: radius}",
                       title="invalid radius")  # fmt: skip
    if type(radius) is int:
        _check_radius(radius, {q.type for q in queries})
    screen = screen_for(node, parse_overrides(body), radius if type(radius) is int else None)
    videos = {i: q for i, q in enumerate(queries) if q.type in VIDEO_TYPES}
    others = [q for i, q in enumerate(queries) if i not in videos]
    found = iter(await _match(node, others, screen.radius, max_hits, screen))
    by_video = await _match_video_values(node, list(videos.values()), MediaOptions.of(node, body))
    results = [by_video[q.value] if i in videos else next(found) for i, q in enumerate(queries)]
    node.counters["match_queries"] = node.counters.get("match_queries", 0) + len(queries)
    answer = {"matched": any(r["matched"] for r in results), "results": results}
    if node.moderation is not None:  # the match log and actions: queued, never waited for
        node.moderation.observe(answer)
    return answer


async def _match_video_values(
    node: Node, queries: Sequence[Query], options: MediaOptions
) -> dict[str, dict[str, Any]]:
    """vpdq queries: the values naming one video id are joined into one query video, and
    each is answered with that video's answer (as an uploaded video is)."""
    parts: dict[str, list[str]] = {}
    for q in queries:
        parts.setdefault(q.value[:64], []).append(q.value)
    answers: dict[str, dict[str, Any]] = {}
    for video_id, values in parts.items():
        frames = join_vpdq(values)
        answer = await match_frames(node, frames, options)
        for value in values:
            answers[value] = {"query": {"type": "vpdq", "value": value, "video_id": video_id},
                              "kind": "video"} | answer  # fmt: skip
    return answers


def _check_radius(radius: int, kinds: set[str]) -> None:
    """A radius every queried type can take: 0 for exact types, up to the hash's bits."""
    for kind in sorted(kinds):
        bits = signal_type(kind).bits
        if not signal_type(kind).is_hamming:
            if radius:
                raise ApiError(
                    f"{kind} matches exactly and takes no radius", title="invalid radius"
                )
        elif bits is not None and radius > bits:
            raise ApiError(f"a {kind} radius is at most {bits} bits", title="invalid radius")


def featureless_reason(node: Node, query: Query, radius: int | None) -> str | None:
    """Why query is too featureless to search, or None if it is not."""
    floor = node.config.media.min_pdq_quality
    if query.quality is not None and query.quality < floor:
        return f"PDQ quality {query.quality} is below min_pdq_quality {floor}: a near-blank image"
    r = node.index.radii.get(query.type, 0) if radius is None else radius
    if is_featureless(query.type, query.value, r):
        return f"the value is within {r} bits of a degenerate {query.type} value (a blank image)"
    return None


async def _match(
    node: Node,
    queries: Sequence[Query],
    radius: int | None,
    max_hits: int,
    screen: Screen | None = None,
) -> list[dict[str, Any]]:
    """One answer per query, in order: featureless ones are reported, the others searched
    (at the largest radius the match policy allows for the type) and screened by the policy,
    the safelists and the local match lists (node.net.screening)."""
    screen = screen or screen_for(node, radius=radius)
    radii = {q.type: screen.search_radius(q.type) for q in queries}
    reasons = [featureless_reason(node, q, radii[q.type]) for q in queries]
    searched = [q for q, why in zip(queries, reasons, strict=True) if why is None]
    hits = await _search(node, searched, radii)
    found = iter(await screened(node, screen, searched, hits, max_hits))
    results = []
    for query, why in zip(queries, reasons, strict=True):
        if why is None:
            results.append(next(found) | {"featureless": False})
        else:
            results.append(
                {"query": {"type": query.type, "value": query.value}, "matched": False,
                 "hits": [], "total_hits": 0, "truncated": False, "suppressed": [],
                 "total_suppressed": 0, "featureless": True, "reason": why}
            )  # fmt: skip
    return results


# ---- image and video queries --------------------------------------------------------------

UPLOAD_MATCH_FIELDS = frozenset({"dihedral", "query_pct", "compared_pct"})


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """How an upload is matched: dihedral PDQ, and vPDQ's thresholds (percent)."""

    dihedral: bool = False
    query_pct: float = VPDQ_QUERY_MATCH_PCT
    compared_pct: float = VPDQ_COMPARED_MATCH_PCT

    @classmethod
    def of(cls, node: Node, fields: dict[str, Any]) -> MediaOptions:
        dihedral = fields.get("dihedral", node.config.media.dihedral)
        if isinstance(dihedral, str):
            if dihedral not in ("true", "false"):
                raise ApiError("dihedral is true or false", title="invalid dihedral")
            dihedral = dihedral == "true"
        return cls(bool(dihedral), _pct(fields, "query_pct", VPDQ_QUERY_MATCH_PCT),
                   _pct(fields, "compared_pct", VPDQ_COMPARED_MATCH_PCT))  # fmt: skip


def _pct(fields: dict[str, Any], name: str, default: float) -> float:
    raw = fields.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not 0 <= value <= 100:
        raise ApiError(f"{name} is a percentage 0..100, got {str(raw)[:20]!r}",
                       title=f"invalid {name}")  # fmt: skip
    return value


async def match_images(request: web.Request, node: Node) -> dict[str, Any]:
    """Every uploaded image or video hashed and matched; a file that cannot be hashed is an
    entry with ``error`` (the caller fails the request: an unreadable file is not a clean
    one)."""
    files, fields = await read_uploads(request, node, UPLOAD_MATCH_FIELDS)
    results: list[dict[str, Any]] = []
    try:
        options = MediaOptions.of(node, fields)
        for name, file in files:
            try:
                h = await asyncio.to_thread(hash_media, node, file, dihedral=options.dihedral)
            except MediaError as e:
                results.append({"file": name, "error": str(e), "status": e.status,
                                "matched": False})  # fmt: skip
                continue
            if isinstance(h, VideoHashes):
                results.append({"file": name} | await match_video(node, h, options))
            else:
                results.append({"file": name} | await match_image(node, h, options))
    finally:
        for _name, f in files:
            f.close()
    node.counters["match_queries"] = node.counters.get("match_queries", 0) + len(files)
    answer = {"matched": any(r["matched"] for r in results), "results": results}
    if node.moderation is not None:  # the match log and actions: queued, never waited for
        node.moderation.observe(answer)
    return answer


async def match_image(node: Node, h: MediaHashes, options: MediaOptions) -> dict[str, Any]:
    """An image's hashes against the list, and its PDQ against every listed video's frames
    (a still of a known video). With ``dihedral``, PDQ is also tried rotated and mirrored."""
    floor = node.config.media.min_pdq_quality
    signals = h.as_signals()
    queries = [Query(k, v, h.pdq_quality if k in PERCEPTUAL_TYPES else None)
               for k, v in signals.items()]  # fmt: skip
    per_type = await _match(node, queries, None, DEFAULT_MAX_HITS)
    answer: dict[str, Any] = {
        "kind": "image", "hashes": signals, "pdq_quality": h.pdq_quality,
        "low_quality": h.is_low_quality(floor),
        "featureless": any(r["featureless"] for r in per_type), "results": per_type,
    }  # fmt: skip
    if options.dihedral and not h.is_low_quality(floor):
        answer["dihedral"] = await _dihedral(node, h)
    pdq = Query("pdq", h.pdq, h.pdq_quality)
    answer["videos"] = [] if featureless_reason(node, pdq, None) else await _stills(node, [pdq])
    answer["matched"] = bool(any(r["matched"] for r in per_type) or answer["videos"]
                             or any(d["matched"] for d in answer.get("dihedral", ())))  # fmt: skip
    return answer


async def _dihedral(node: Node, h: MediaHashes) -> list[dict[str, Any]]:
    """PDQ of the picture's seven other orientations, each matched; which one hit is said."""
    variants = [Query("pdq", value, h.pdq_quality) for value in h.dihedral.values()]
    results = await _match(node, variants, None, DEFAULT_MAX_HITS)
    return [r | {"transform": t} for t, r in zip(h.dihedral, results, strict=True)]


async def _stills(node: Node, pdqs: Sequence[Query]) -> list[dict[str, Any]]:
    """Video signals holding a frame near one of the PDQ hashes: provenance, frame time."""
    async with node.index_lock:
        await expire_index(node.index)
        found = await asyncio.to_thread(node.index.frames_near, [q.value for q in pdqs])
    best: dict[int, tuple[int, int]] = {}  # signal key -> (distance, frame ms)
    for per in found:
        for hit in per:
            if hit.key not in best or (hit.distance, hit.timestamp_ms) < best[hit.key]:
                best[hit.key] = (hit.distance, hit.timestamp_ms)
    rows = await _rows(node, sorted(best))
    return [rows[k] | {"distance": d, "frame_ms": ms}
            for k, (d, ms) in sorted(best.items(), key=lambda i: i[1]) if k in rows]  # fmt: skip


async def match_video(node: Node, h: VideoHashes, options: MediaOptions) -> dict[str, Any]:
    """A video against the list: its frames (``match_frames``) and its file digests."""
    digests = [Query(t, getattr(h, t)) for t in ("md5", "sha256")]
    per_type = await _match(node, digests, None, DEFAULT_MAX_HITS)
    answer = await match_frames(node, h.frames, options)
    return {
        "kind": "video", "frames": len(h.frames), "duration_ms": h.duration_ms,
        "hashes": {"md5": h.md5, "sha256": h.sha256, "vpdq": list(h.vpdq_values())},
        "results": per_type,
    } | answer | {"matched": answer["matched"] or any(r["matched"] for r in per_type)}  # fmt: skip


async def match_frames(
    node: Node, frames: Sequence[VpdqFrame], options: MediaOptions
) -> dict[str, Any]:
    """A video's frames against the list: listed videos by vPDQ's rule (both shares and the
    matched time ranges of the query) and listed images found in any frame (with the
    frames' times)."""
    floor = node.config.media.min_pdq_quality
    usable = [f for f in frames if f.quality >= floor]
    videos: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    if usable:
        async with node.index_lock:
            await expire_index(node.index)
            found = await asyncio.to_thread(
                node.index.match_videos, usable, query_pct=options.query_pct,
                compared_pct=options.compared_pct,
            )  # fmt: skip
        rows = await _rows(node, sorted({k for m in found for k in m.keys}))
        videos = [
            {"video_id": m.video_id, "signals": [rows[k] for k in m.keys if k in rows],
             "query_matched_pct": round(m.query_matched_pct, 2),
             "compared_matched_pct": round(m.compared_matched_pct, 2),
             "ranges_ms": [list(r) for r in m.ranges_ms]}
            for m in found
        ]  # fmt: skip
        images = await _frames_as_images(node, usable)
    return {"usable_frames": len(usable), "featureless": not usable, "videos": videos,
            "images": images, "matched": bool(videos or images)}  # fmt: skip


async def _frames_as_images(node: Node, frames: Sequence[VpdqFrame]) -> list[dict[str, Any]]:
    """Listed PDQ image signals matching any frame, each with the times of those frames."""
    queries = [Query("pdq", f.pdq, f.quality) for f in frames]
    searched = [q for q in queries if featureless_reason(node, q, None) is None]
    times = [f.timestamp_ms for f, q in zip(frames, queries, strict=True)
             if featureless_reason(node, q, None) is None]  # fmt: skip
    hits = await _search(node, searched, None)
    best: dict[int, int] = {}
    frames_ms: dict[int, list[int]] = {}
    for ms, per in zip(times, hits, strict=True):
        for hit in per:
            best[hit.key] = min(best.get(hit.key, hit.distance), hit.distance)
            frames_ms.setdefault(hit.key, []).append(ms)
    rows = await _rows(node, sorted(best))
    return [rows[k] | {"distance": d, "frames_ms": frames_ms[k]}
            for k, d in sorted(best.items(), key=lambda i: (i[1], i[0])) if k in rows]  # fmt: skip


async def _rows(node: Node, keys: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Provenance of signals by store key (the match answer's hit shape, without distance)."""
    if not keys:
        return {}
    details = await node.signal_rows(keys, now_ms())
    # expired since the index's expiry drop before the search: never a hit
    return {cast(int, d["row"]): d for d in details if d.get("status") != "expired"}


# ---- the index and provenance -----------------------------------------------------------


async def _search(
    node: Node, queries: Sequence[Query], radius: int | Mapping[str, int] | None
) -> list[list[Hit]]:
    if not queries:
        return []
    for query in queries:
        signal_type(query.type)
    async with node.index_lock:
        await expire_index(node.index)
        return await asyncio.to_thread(_query_grouped, node.index, queries, radius)


async def expire_index(index: MatchIndex) -> int:
    """Drop the signals whose expiry has passed from the index, before a query (the caller
    holds the index lock): nothing else tells the index of expiries between the timer's
    rounds (``expire_signals``), and an expired signal must never be a hit. The number
    dropped. Dropping needs no commit order: a signal a later merge adds already expired
    is dropped by the next call, whichever comes first."""
    now, due = now_ms(), index.next_expiry_ms()
    if due is None or due > now:
        return 0
    return await asyncio.to_thread(index.expire_due, now)


EXPIRY_WAKE_S = 1.0  # the timer's longest sleep: it learns of a new earlier expiry then


async def expire_signals(node: Node) -> None:
    """Forever: drop signals from the index when they expire (a background task of the
    node), so the index shrinks without waiting for a query."""
    while True:
        due = node.index.next_expiry_ms()
        wait_s = EXPIRY_WAKE_S if due is None else (due - now_ms()) / 1000
        await asyncio.sleep(min(max(wait_s, 0.0), EXPIRY_WAKE_S))
        async with node.index_lock:
            dropped = await expire_index(node.index)
        if dropped:
            node.counters["index_expired"] = node.counters.get("index_expired", 0) + dropped


def _query_grouped(
    index: MatchIndex, queries: Sequence[Query], radius: int | Mapping[str, int] | None
) -> list[list[Hit]]:
    """Query the index once per signal type (query_batch), answers in the queries' order; a
    radius per type, one for all, or None (the index's own)."""
    by_type: dict[str, list[int]] = {}
    for i, query in enumerate(queries):
        by_type.setdefault(query.type, []).append(i)
    hits: list[list[Hit]] = [[] for _ in queries]
    for kind, positions in by_type.items():
        values = [queries[i].value for i in positions]
        r = radius.get(kind) if isinstance(radius, Mapping) else radius
        for i, found in zip(positions, index.query_batch(kind, values, r), strict=True):
            hits[i] = found
    return hits
