"""Matching uploads and hashes against the federation's list, with provenance.

A match answer lists, for every query, every active signal within the type's radius:
its record id, type, value, distance, labels, the contributing member, the opinion tallies
(confirm / dispute / seen) and when it was first seen. Hits beyond ``max_hits`` per query
are not dropped silently: the answer says ``truncated`` and gives ``total_hits``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import BodyPartReader, web

from node.app import Node, now_ms
from node.errors import ApiError, MediaError
from node.hashing import MediaHashes, hash_image
from node.matchindex import Hit, MatchIndex
from protocol.errors import RemoteProtocolError
from protocol.signal_types import canonical_value, signal_type

DEFAULT_MAX_HITS = 100
MAX_QUERIES = 10_000


@dataclass(slots=True)
class Upload:
    hashes: MediaHashes
    filename: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


async def _read_uploads(
    request: web.Request, node: Node
) -> tuple[list[tuple[str | None, bytes]], dict[str, Any]]:
    limit = node.config.limits.max_image_bytes
    files: list[tuple[str | None, bytes]] = []
    fields: dict[str, Any] = {}
    if not request.content_type.startswith("multipart/"):
        data = await request.read()
        return [(None, data)], fields
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        data = await part.read(decode=False)
        if part.filename is not None or part.name in ("file", "image", "files"):
            if len(data) > limit:
                raise MediaError(
                    f"{part.filename or 'upload'} is larger than {limit} bytes", status=413
                )
            files.append((part.filename, bytes(data)))
        elif part.name == "labels":
            fields.setdefault("labels", []).extend(
                x.strip() for x in bytes(data).decode().split(",") if x.strip()
            )
        elif part.name is not None:
            fields[part.name] = bytes(data).decode()
    if not files:
        raise ApiError("no image in the request (multipart field 'file')", status=400)
    return files, fields


async def hash_upload(request: web.Request, node: Node) -> Upload:
    files, fields = await _read_uploads(request, node)
    name, data = files[0]
    hashes = await asyncio.to_thread(hash_image, data, max_bytes=node.config.limits.max_image_bytes)
    return Upload(hashes, name, fields)


def _queries(body: dict[str, Any]) -> list[tuple[str, str]]:
    raw = body.get("hashes")
    if raw is None and "type" in body:
        raw = [{"type": body["type"], "value": body.get("value")}]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_QUERIES:
        raise ApiError(f"hashes must be a list of 1..{MAX_QUERIES} {{type, value}}", status=400)
    queries = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ApiError("each hash is an object with type and value", status=400)
        kind, value = item["type"], item.get("value")
        if not isinstance(value, str):
            raise ApiError("each hash needs a string value", status=400)
        try:
            queries.append((kind, canonical_value(kind, value)))
        except RemoteProtocolError as e:
            raise ApiError(f"invalid {kind} hash: {e}", status=400) from e
    return queries


async def match_hashes(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    queries = _queries(body)
    max_hits = body.get("max_hits", DEFAULT_MAX_HITS)
    radius = body.get("radius")
    if type(max_hits) is not int or max_hits < 1:
        raise ApiError("max_hits must be a positive integer", status=400)
    if radius is not None and (type(radius) is not int or radius < 0):
        raise ApiError("radius must be a non-negative integer", status=400)
    if radius is not None:
        _check_radius(radius, {kind for kind, _ in queries})
    hits = await _search(node, queries, radius)
    results = await _with_provenance(node, queries, hits, max_hits)
    node.counters["match_queries"] = node.counters.get("match_queries", 0) + len(queries)
    return {"matched": any(r["matched"] for r in results), "results": results}


def _check_radius(radius: int, kinds: set[str]) -> None:
    """A radius every queried type can take: 0 for exact types, up to the hash's bits."""
    for kind in sorted(kinds):
        bits = signal_type(kind).bits
        if not signal_type(kind).is_hamming:
            if radius:
                raise ApiError(f"{kind} matches exactly and takes no radius", status=400)
        elif bits is not None and radius > bits:
            raise ApiError(f"a {kind} radius is at most {bits} bits", status=400)


async def match_images(request: web.Request, node: Node) -> dict[str, Any]:
    files, _fields = await _read_uploads(request, node)
    limit = node.config.limits.max_image_bytes
    results: list[dict[str, Any]] = []
    for name, data in files:
        try:
            h = await asyncio.to_thread(hash_image, data, max_bytes=limit)
        except MediaError as e:
            results.append({"file": name, "error": str(e), "matched": False})
            continue
        queries = [(k, v) for k, v in h.as_signals().items()]
        hits = await _search(node, queries, None)
        per_type = await _with_provenance(node, queries, hits, DEFAULT_MAX_HITS)
        results.append(
            {"file": name, "hashes": h.as_signals(), "pdq_quality": h.pdq_quality,
             "low_quality": h.low_quality, "matched": any(r["matched"] for r in per_type),
             "results": per_type}
        )  # fmt: skip
    node.counters["match_queries"] = node.counters.get("match_queries", 0) + len(files)
    return {"matched": any(r["matched"] for r in results), "results": results}


async def _search(
    node: Node, queries: Sequence[tuple[str, str]], radius: int | None
) -> list[list[Hit]]:
    for kind, _ in queries:
        signal_type(kind)
    async with node.index_lock:
        return await asyncio.to_thread(_query_grouped, node.index, queries, radius)


def _query_grouped(
    index: MatchIndex, queries: Sequence[tuple[str, str]], radius: int | None
) -> list[list[Hit]]:
    """Query the index once per signal type (query_batch), answers in the queries' order."""
    by_type: dict[str, list[int]] = {}
    for i, (kind, _) in enumerate(queries):
        by_type.setdefault(kind, []).append(i)
    hits: list[list[Hit]] = [[] for _ in queries]
    for kind, positions in by_type.items():
        values = [queries[i][1] for i in positions]
        for i, found in zip(positions, index.query_batch(kind, values, radius), strict=True):
            hits[i] = found
    return hits


async def _with_provenance(
    node: Node, queries: Sequence[tuple[str, str]], hits: list[list[Hit]], max_hits: int
) -> list[dict[str, Any]]:
    rows = sorted({h.key for per in hits for h in per[:max_hits]})
    now = now_ms()
    details = await node.store.read(lambda s: s.signal_rows(rows, now_ms=now)) if rows else []
    by_row = {cast(int, d["row"]): d for d in details}
    results = []
    for (kind, value), per in zip(queries, hits, strict=True):
        shown = [
            by_row[h.key] | {"distance": h.distance} for h in per[:max_hits] if h.key in by_row
        ]
        results.append(
            {"query": {"type": kind, "value": value}, "matched": bool(per), "hits": shown,
             "total_hits": len(per), "truncated": len(per) > max_hits}
        )  # fmt: skip
    return results
