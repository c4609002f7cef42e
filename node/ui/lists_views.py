"""The web UI's pages of this member's local lists and its match policy.

``/ui/lists`` shows every local list (kind, on or off, size, who made it) and the match policy
this node answers with (radius per type, minimum confirmations, dispute share, ignored
members, label and list rules); ``/ui/lists/{name}`` a list's entries, newest first, a page
at a time. A moderator adds and removes entries and switches a list on or off there, through
the same ``LocalLists`` calls as ``/v1/lists`` (node.net.lists_api), recorded as added by
``ui:NAME`` and written to the action log. Nothing here is signed, so no step asks to
confirm; creating, deleting and disputing stay with ``hashmesh lists`` and the API. What a
list did to a match shows on the match page.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from node.clock import now_ms
from node.errors import NodeError, explain
from node.interop.formats import parse_hash
from node.matchpolicy import RADIUS_BITS
from node.net.lists_api import lists_of
from node.store import users
from node.ui.auth import form, page
from node.ui.render import Ctx, render

PAGE_ENTRIES: Final = 100


@page()
async def lists_page(ctx: Ctx) -> web.StreamResponse:
    node = ctx.node
    policy = node.config.match
    context: dict[str, Any] = {
        "lists": [m.to_json() for m in lists_of(node).lists()],
        "radii": {kind: policy.node_radius(kind) for kind in RADIUS_BITS},
        "policy": policy,
    }
    return render(ctx.request, "lists.html", context, ctx=ctx)


async def _list(ctx: Ctx, **extra: Any) -> web.StreamResponse:
    """A list's page (its entries from ``offset``), with a message or an error."""
    name = ctx.request.match_info["name"]
    try:
        offset = max(0, int(ctx.request.query.get("offset", "0")))
    except ValueError:
        offset = 0
    try:
        found, entries = await lists_of(ctx.node).entries(name, limit=PAGE_ENTRIES, offset=offset)
    except NodeError as e:
        failed: dict[str, Any] = {"list": None, "error": explain(e), "entries": []}
        return render(ctx.request, "list.html", failed, ctx=ctx, status=e.status)
    context: dict[str, Any] = {
        "list": found.to_json(),
        "entries": [e.to_json() for e in entries],
        "offset": offset,
        "next": offset + PAGE_ENTRIES if offset + PAGE_ENTRIES < found.entries else None,
        "radii": {k: ctx.node.config.match.list_radius(name, k) for k in RADIUS_BITS},
    }
    status = 400 if extra.get("error") else 200
    return render(ctx.request, "list.html", context | extra, ctx=ctx, status=status)


@page()
async def list_page(ctx: Ctx) -> web.StreamResponse:
    return await _list(ctx)


async def _log(ctx: Ctx, action: str, name: str, detail: str) -> None:
    user, now = ctx.user.name, now_ms()
    await ctx.node.store.write(
        lambda s: users.log_action(
            s.conn, user, action, now_ms=now, target=f"list {name}", detail=detail
        )
    )


@form("moderator")
async def list_add(ctx: Ctx) -> web.StreamResponse:
    name, lists = ctx.request.match_info["name"], lists_of(ctx.node)
    try:
        wanted = parse_hash(ctx.field("hash"), "hash")
        entry = lists.check(name, wanted.type, wanted.value, ctx.field("note") or None)
        _, added, _ = await lists.add(name, [entry], by=f"ui:{ctx.user.name}", now_ms=now_ms())
    except NodeError as e:
        return await _list(ctx, error=explain(e))
    shown = f"{entry.type}:{entry.value}"
    if not added:
        return await _list(ctx, message=f"{shown} is in {name} already")
    await _log(ctx, "list add", name, shown)
    return await _list(ctx, message=f"added {shown} to {name}")


@form("moderator")
async def list_remove(ctx: Ctx) -> web.StreamResponse:
    name, lists = ctx.request.match_info["name"], lists_of(ctx.node)
    try:
        wanted = parse_hash(ctx.field("hash"), "hash")
        _, removed, _ = await lists.remove(name, [(wanted.type, wanted.value)])
    except NodeError as e:
        return await _list(ctx, error=explain(e))
    shown = f"{wanted.type}:{wanted.value}"
    if not removed:
        return await _list(ctx, error=f"{shown} is not in {name}")
    await _log(ctx, "list remove", name, shown)
    return await _list(ctx, message=f"removed {shown} from {name}")


@form("moderator")
async def list_switch(ctx: Ctx) -> web.StreamResponse:
    name, wanted = ctx.request.match_info["name"], ctx.field("enabled")
    if wanted not in ("true", "false"):
        return await _list(ctx, error="enabled is true or false")
    try:
        await lists_of(ctx.node).set_enabled(name, wanted == "true")
    except NodeError as e:
        return await _list(ctx, error=explain(e))
    state = "on" if wanted == "true" else "off"
    await _log(ctx, f"list {state}", name, f"switched {state}")
    return await _list(ctx, message=f"{name} is switched {state}")
