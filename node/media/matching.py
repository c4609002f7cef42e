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

Images are read with bounded memory: each upload is at most ``max_image_bytes`` (the whole
multipart body at most that plus ``FORM_OVERHEAD_BYTES``), read in chunks and refused with 413
as soon as it is over; a form field is at most ``MAX_FORM_FIELD_BYTES``; unknown form fields
are refused. Decoding is bounded by ``max_image_pixels`` (node.media.hashing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import BodyPartReader, StreamReader, web

from node.clock import now_ms
from node.errors import ApiError, MediaError
from node.media.hashing import MediaHashes, hash_image
from node.media.index import MatchIndex
from node.media.matchindex import Hit
from node.media.types import PICTURE_TYPES
from node.net.api_input import unknown_fields
from node.net.context import Node
from protocol.errors import RemoteProtocolError
from protocol.signal_types import canonical_value, is_featureless, signal_type

DEFAULT_MAX_HITS = 100
MAX_QUERIES = 10_000
MAX_FORM_FIELD_BYTES = 64 * 1024
FORM_OVERHEAD_BYTES = 1024 * 1024  # part headers, boundaries and fields beside the images
FILE_FIELDS = frozenset({"file", "image", "files"})
MATCH_FIELDS = frozenset({"hashes", "type", "value", "radius", "max_hits"})
QUERY_FIELDS = frozenset({"type", "value", "quality"})
PERCEPTUAL_TYPES = PICTURE_TYPES  # hashed from the picture: gated by PDQ quality
_CHUNK_BYTES = 64 * 1024


@dataclass(slots=True)
class Upload:
    hashes: MediaHashes
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


def upload_limit(node: Node, request: web.Request) -> int:
    """The most bytes an image request may carry; 413 at once if Content-Length says more."""
    limit = node.config.limits.max_image_bytes
    if request.content_type.startswith("multipart/"):
        limit += FORM_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise _too_large("the request body", limit)
    return limit


async def _read_limited(
    stream: StreamReader | BodyPartReader, limit: int, too_large: MediaError
) -> bytes:
    """Everything left in stream, in chunks; too_large as soon as it passes limit bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if isinstance(stream, BodyPartReader):
            chunk = await stream.read_chunk(_CHUNK_BYTES)
        else:
            chunk = await stream.read(_CHUNK_BYTES)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(bytes(chunk))


async def read_uploads(
    request: web.Request, node: Node, form_fields: Collection[str] = ()
) -> tuple[list[tuple[str | None, bytes]], dict[str, Any]]:
    """The image files of a request (a raw body, or multipart parts named in FILE_FIELDS or
    with a filename) and its other form fields, which must be among form_fields."""
    limit = upload_limit(node, request)
    per_file = node.config.limits.max_image_bytes
    if not request.content_type.startswith("multipart/"):
        return [
            (None, await _read_limited(request.content, limit, _too_large("the image", limit)))
        ], {}
    reader = await request.multipart()
    files: list[tuple[str | None, bytes]] = []
    fields: dict[str, Any] = {}
    left = limit  # of the whole body
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            raise ApiError("nested multipart bodies are not supported", title="malformed body")
        name = part.name or ""
        is_file = part.filename is not None or name in FILE_FIELDS
        if not is_file:
            unknown_fields([name], form_fields, "the form")
        cap = per_file if is_file else MAX_FORM_FIELD_BYTES
        too_large = _too_large(part.filename or "the image" if is_file else f"field {name}", cap)
        if left < cap:
            cap, too_large = left, _too_large("the request body", limit)
        data = await _read_limited(part, cap, too_large)
        if is_file:
            files.append((part.filename, data))
        else:
            _add_field(fields, name, data.decode())
        left -= len(data)
    if not files:
        raise ApiError("no image in the request (multipart field 'file')", title="no image")
    return files, fields


def _add_field(fields: dict[str, Any], name: str, text: str) -> None:
    if name == "labels":
        fields.setdefault("labels", []).extend(x.strip() for x in text.split(",") if x.strip())
    else:
        fields[name] = text


async def hash_upload(
    request: web.Request, node: Node, form_fields: Collection[str] = ()
) -> Upload:
    """The one image of a request, hashed, with its form fields."""
    files, fields = await read_uploads(request, node, form_fields)
    if len(files) > 1:
        raise ApiError(f"one image per request, got {len(files)}", title="too many images")
    name, data = files[0]
    hashes = await asyncio.to_thread(_hash, node, data)
    return Upload(hashes, name, fields)


def _hash(node: Node, data: bytes) -> MediaHashes:
    limits = node.config.limits
    return hash_image(data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels)


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
    if radius is not None and (type(radius) is not int or radius < 0):
        raise ApiError("radius must be a non-negative integer", title="invalid radius")
    if radius is not None:
        _check_radius(radius, {q.type for q in queries})
    results = await _match(node, queries, radius, max_hits)
    node.counters["match_queries"] = node.counters.get("match_queries", 0) + len(queries)
    return {"matched": any(r["matched"] for r in results), "results": results}


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
    node: Node, queries: Sequence[Query], radius: int | None, max_hits: int
) -> list[dict[str, Any]]:
    """One answer per query, in order: featureless ones are reported, the others searched."""
    reasons = [featureless_reason(node, q, radius) for q in queries]
    searched = [q for q, why in zip(queries, reasons, strict=True) if why is None]
    found = iter(await _with_provenance(node, searched, await _search(node, searched, radius),
                                        max_hits))  # fmt: skip
    results = []
    for query, why in zip(queries, reasons, strict=True):
        if why is None:
            results.append(next(found) | {"featureless": False})
        else:
            results.append(
                {"query": {"type": query.type, "value": query.value}, "matched": False,
                 "hits": [], "total_hits": 0, "truncated": False, "featureless": True,
                 "reason": why}
            )  # fmt: skip
    return results


# ---- image queries ----------------------------------------------------------------------


async def match_images(request: web.Request, node: Node) -> dict[str, Any]:
    """Every uploaded image hashed and matched; an image that cannot be hashed is an entry
    with ``error`` (the caller fails the request: an unreadable image is not a clean one)."""
    files, _fields = await read_uploads(request, node)
    floor = node.config.media.min_pdq_quality
    results: list[dict[str, Any]] = []
    for name, data in files:
        try:
            h = await asyncio.to_thread(_hash, node, data)
        except MediaError as e:
            results.append({"file": name, "error": str(e), "matched": False})
            continue
        signals = h.as_signals()
        queries = [Query(k, v, h.pdq_quality if k in PERCEPTUAL_TYPES else None)
                   for k, v in signals.items()]  # fmt: skip
        per_type = await _match(node, queries, None, DEFAULT_MAX_HITS)
        results.append(
            {"file": name, "hashes": signals, "pdq_quality": h.pdq_quality,
             "low_quality": h.is_low_quality(floor),
             "featureless": any(r["featureless"] for r in per_type),
             "matched": any(r["matched"] for r in per_type), "results": per_type}
        )  # fmt: skip
    node.counters["match_queries"] = node.counters.get("match_queries", 0) + len(files)
    return {"matched": any(r["matched"] for r in results), "results": results}


# ---- the index and provenance -----------------------------------------------------------


async def _search(node: Node, queries: Sequence[Query], radius: int | None) -> list[list[Hit]]:
    if not queries:
        return []
    for query in queries:
        signal_type(query.type)
    async with node.index_lock:
        return await asyncio.to_thread(_query_grouped, node.index, queries, radius)


def _query_grouped(
    index: MatchIndex, queries: Sequence[Query], radius: int | None
) -> list[list[Hit]]:
    """Query the index once per signal type (query_batch), answers in the queries' order."""
    by_type: dict[str, list[int]] = {}
    for i, query in enumerate(queries):
        by_type.setdefault(query.type, []).append(i)
    hits: list[list[Hit]] = [[] for _ in queries]
    for kind, positions in by_type.items():
        values = [queries[i].value for i in positions]
        for i, found in zip(positions, index.query_batch(kind, values, radius), strict=True):
            hits[i] = found
    return hits


async def _with_provenance(
    node: Node, queries: Sequence[Query], hits: list[list[Hit]], max_hits: int
) -> list[dict[str, Any]]:
    rows = sorted({h.key for per in hits for h in per[:max_hits]})
    now = now_ms()
    details = await node.store.read(lambda s: s.signal_rows(rows, now_ms=now)) if rows else []
    by_row = {cast(int, d["row"]): d for d in details}
    results = []
    for query, per in zip(queries, hits, strict=True):
        shown = [
            by_row[h.key] | {"distance": h.distance} for h in per[:max_hits] if h.key in by_row
        ]
        results.append(
            {"query": {"type": query.type, "value": query.value}, "matched": bool(per),
             "hits": shown, "total_hits": len(per), "truncated": len(per) > max_hits}
        )  # fmt: skip
    return results
