"""The local API of local lists (node.net.local_lists), and the one step that shares a
safelisted hash with the federation: a ``dispute`` opinion on every signal it matches.

    GET    /v1/lists                        {"lists": [{name, kind, enabled, note, entries,
                                            created_by, created_ms}]}
    POST   /v1/lists                        {"name", "kind": "match"|"safelist", "note"?} -> 201
    GET    /v1/lists/{name}?limit=&offset=  {"list", "entries": [...], "limit", "offset"}
    DELETE /v1/lists/{name}                 the list and its entries
    POST   /v1/lists/{name}/enable|disable  switch it on or off (off: it neither matches nor
                                            suppresses)
    POST   /v1/lists/{name}/entries         {"entries": [{"type", "value", "note"?}]} (or one
                                            entry's "type", "value", "note") -> {"added",
                                            "skipped", "entries"}
    DELETE /v1/lists/{name}/entries         {"entries": [{"type", "value"}]} -> {"removed",
                                            "missing"}
    POST   /v1/lists/{name}/dispute         {"type", "value", "note"?}: a safelist entry, shared

A request's entries are all checked before any is added (a bad one: 400, nothing changes).
Entries are never signed and never leave the node; only ``dispute`` signs anything, and what it
signs is an ordinary ``opinion`` record (SPEC 6) on a federation signal: the safelisted value
itself stays here (the opinion names the signal, and carries the note given, if any).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from aiohttp import web

from node.clock import now_ms
from node.errors import ApiError, InputError
from node.net.api_input import int_param, json_body, optional_json_body, query_params
from node.net.context import Node
from node.net.local_api import local
from node.net.local_lists import LocalLists
from node.net.matching import expire_index
from node.store import read as store_read
from node.store.lists import KINDS, NewEntry, check_note
from protocol.bodies import OpinionBody
from protocol.errors import RemoteProtocolError
from protocol.signal_types import canonical_value

if TYPE_CHECKING:
    from node.store.store import Store

MAX_ENTRIES_PER_REQUEST: Final = 10_000
MAX_PAGE: Final = 10_000
TOKEN_USER: Final = "token"  # who changed a list through the bearer token


def lists_of(node: Node) -> LocalLists:
    if node.lists is None:
        raise ApiError("this node has no local lists", status=503, title="not ready")
    return node.lists


def _name(request: web.Request) -> str:
    return request.match_info["name"]


@local
async def get_lists(request: web.Request, node: Node) -> web.StreamResponse:
    query_params(request, ())
    return web.json_response({"lists": [m.to_json() for m in lists_of(node).lists()]})


@local
async def create_list(request: web.Request, node: Node) -> web.StreamResponse:
    body = await json_body(request, ("name", "kind", "note"))
    kind = body.get("kind", "match")
    if kind not in KINDS:
        raise ApiError(f"kind must be one of {', '.join(KINDS)}", title="invalid kind")
    name = body.get("name")
    if not isinstance(name, str):
        raise ApiError("name is required: the list's name", title="invalid list name")
    note = check_note(body.get("note"))
    found = await lists_of(node).create(name, kind, note, by=TOKEN_USER, now_ms=now_ms())
    return web.json_response(found.to_json(), status=201)


@local
async def get_list(request: web.Request, node: Node) -> web.StreamResponse:
    q = query_params(request, ("limit", "offset"))
    limit = int_param(q, "limit", 100, 1, MAX_PAGE)
    offset = int_param(q, "offset", 0, 0)
    found, entries = await lists_of(node).entries(_name(request), limit=limit, offset=offset)
    return web.json_response({"list": found.to_json(), "limit": limit, "offset": offset,
                              "entries": [e.to_json() for e in entries]})  # fmt: skip


@local
async def delete_list(request: web.Request, node: Node) -> web.StreamResponse:
    found = await lists_of(node).delete(_name(request))
    return web.json_response({"list": found.to_json(), "deleted": True})


async def _switch(request: web.Request, node: Node, enabled: bool) -> web.StreamResponse:
    await optional_json_body(request, ())
    found = await lists_of(node).set_enabled(_name(request), enabled)
    return web.json_response({"list": found.to_json()})


@local
async def enable_list(request: web.Request, node: Node) -> web.StreamResponse:
    return await _switch(request, node, True)


@local
async def disable_list(request: web.Request, node: Node) -> web.StreamResponse:
    return await _switch(request, node, False)


def _raw_entries(body: dict[str, Any], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    raw = body.get("entries")
    if raw is None and "type" in body:
        raw = [{k: body[k] for k in fields if k in body}]
    elif raw is not None and any(k in body for k in fields):
        raise ApiError("give entries, or one entry's fields, not both", title="invalid entries")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ENTRIES_PER_REQUEST:
        raise ApiError(f"entries must be a list of 1..{MAX_ENTRIES_PER_REQUEST} "
                       "{type, value} objects", title="invalid entries")  # fmt: skip
    for item in raw:
        if not isinstance(item, dict) or set(item) - set(fields):
            raise ApiError(f"each entry is an object with {', '.join(fields)}",
                           title="invalid entries")  # fmt: skip
    return raw


def checked_entries(lists: LocalLists, name: str, raw: list[dict[str, Any]]) -> list[NewEntry]:
    """Every entry checked for list name, before any is added (the first bad one: 400)."""
    checked = []
    for i, item in enumerate(raw):
        try:
            checked.append(lists.check(name, item.get("type"), item.get("value"), item.get("note")))
        except InputError as e:
            where = f"entry {i + 1}: " if len(raw) > 1 else ""
            raise ApiError(f"{where}{e}", status=e.status, title=e.title) from e
    return checked


@local
async def add_entries(request: web.Request, node: Node) -> web.StreamResponse:
    body = await json_body(request, ("entries", "type", "value", "note"))
    lists, name = lists_of(node), _name(request)
    entries = checked_entries(lists, name, _raw_entries(body, ("type", "value", "note")))
    found, added, skipped = await lists.add(name, entries, by=TOKEN_USER, now_ms=now_ms())
    return web.json_response({"list": found.to_json(), "added": len(added), "skipped": skipped,
                              "entries": [e.to_json() for e in added]})  # fmt: skip


@local
async def remove_entries(request: web.Request, node: Node) -> web.StreamResponse:
    body = await json_body(request, ("entries", "type", "value"))
    lists, name = lists_of(node), _name(request)
    lists.get(name)
    wanted = []
    for item in _raw_entries(body, ("type", "value")):
        wanted.append(_canonical(item.get("type"), item.get("value")))
    found, removed, missing = await lists.remove(name, wanted)
    absent = [{"type": t, "value": v} for t, v in missing]
    return web.json_response({"list": found.to_json(), "removed": len(removed), "missing": absent})


def _canonical(kind: object, value: object) -> tuple[str, str]:
    if not isinstance(kind, str) or not isinstance(value, str):
        raise ApiError("type and value are required strings", title="invalid entry")
    try:
        return kind, canonical_value(kind, value)
    except RemoteProtocolError as e:
        raise ApiError(f"invalid {kind} value: {e}", title="invalid entry") from e


# ---- sharing a safelisted hash ------------------------------------------------------------


@local
async def post_dispute(request: web.Request, node: Node) -> web.StreamResponse:
    body = await json_body(request, ("type", "value", "note"))
    kind, value = _canonical(body.get("type"), body.get("value"))
    note = check_note(body.get("note"))
    answer = await dispute_safelisted(node, _name(request), kind, value, note)
    return web.json_response(answer, status=201 if answer["disputed"] else 200)


async def dispute_safelisted(
    node: Node, name: str, kind: str, value: str, note: str | None
) -> dict[str, Any]:
    """Sign a ``dispute`` opinion on every active federation signal within the safelist's
    radius of one of its entries. This member's own signals, and signals it already
    disputes, are skipped (and said so): running it twice signs nothing twice."""
    lists = lists_of(node)
    found = lists.get(name)
    if found.kind != "safelist":
        raise ApiError(f"{name!r} is a match list; only a safelist's entries are disputed",
                       status=409, title="not a safelist")  # fmt: skip
    _, entry = await lists.find(name, kind, value)
    if entry is None:
        raise ApiError(f"{kind}:{value[:64]} is not in safelist {name!r}: add it first",
                       status=404, title="no such entry")  # fmt: skip
    radius = node.config.match.list_radius(name, kind)
    async with node.index_lock:
        await expire_index(node.index)
        [hits] = await asyncio.to_thread(node.index.query_batch, kind, [value], radius)
    now = now_ms()
    keys = [h.key for h in hits]
    rows = await node.store.read(lambda s: s.signal_rows(keys, now_ms=now)) if keys else []
    distance = {h.key: h.distance for h in hits}
    identity = node.identity
    disputed, skipped = [], []
    for row in rows:
        signal_id = str(row["id"])
        where = {"signal": signal_id, "distance": distance[cast(int, row["row"])]}
        if row["member"] == identity:
            skipped.append(where | {"reason": "this member's own signal (retract it instead)"})
            continue
        if await node.store.read(_verdict(signal_id, identity)) == "dispute":
            skipped.append(where | {"reason": "already disputed by this member"})
            continue
        record = await node.author(OpinionBody(signal_id, "dispute", (), note))
        disputed.append(where | {"id": record.id, "seq": record.seq})
    return {"list": name, "type": kind, "value": value, "radius": radius,
            "disputed": disputed, "skipped": skipped}  # fmt: skip


def _verdict(signal_id: str, identity: str) -> Callable[[Store], str | None]:
    return lambda store: store_read.latest_verdict(store.conn, signal_id, identity)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/lists", get_lists)
    r.add_post("/v1/lists", create_list)
    r.add_get("/v1/lists/{name}", get_list)
    r.add_delete("/v1/lists/{name}", delete_list)
    r.add_post("/v1/lists/{name}/enable", enable_list)
    r.add_post("/v1/lists/{name}/disable", disable_list)
    r.add_post("/v1/lists/{name}/entries", add_entries)
    r.add_delete("/v1/lists/{name}/entries", remove_entries)
    r.add_post("/v1/lists/{name}/dispute", post_dispute)
