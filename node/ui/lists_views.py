"""The web UI's read-only view of this member's local lists and its match policy.

``/ui/lists`` shows every local list (kind, on or off, size, who made it) and the match policy
this node answers with (radius per type, minimum confirmations, dispute share, ignored
members, label and list rules); ``/ui/lists/{name}`` a list's entries, newest first, a page
at a time. Lists are changed with ``hashmesh lists`` or ``/v1/lists`` (node.net.lists_api);
what a list did to a match shows on the match page.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from node.errors import NodeError, explain
from node.matchpolicy import RADIUS_BITS
from node.net.lists_api import lists_of
from node.ui.auth import page
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


@page()
async def list_page(ctx: Ctx) -> web.StreamResponse:
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
    return render(ctx.request, "list.html", context, ctx=ctx)
