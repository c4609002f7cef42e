"""The UI of the match log and its actions (node.moderation): ``/ui/matchlog``.

One page: the signals quarantined now (each with a release form), the recent matches (by
signal, paged like the action log), the dead webhook deliveries (each with a retry form),
the signals matched most here and the sightings published. Release and retry are moderator
actions behind a confirmation, written to the action log; they call the same
``Moderation`` methods as the local API. ``summary`` and ``signal_matches`` feed the
dashboard and the signal page. Matches run from the UI are logged with the caller
``ui:<user>`` (``set_caller``).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from node.clock import now_ms
from node.moderation.events import MATCH_CALLER
from node.net.context import Node
from node.store import users
from node.ui.auth import form, page
from node.ui.render import SECURITY_HEADERS, Ctx, denied_page, render

PAGE_ROWS: Final = 50
SIGNAL_ID_CHARS: Final = 128


def set_caller(ctx: Ctx) -> None:
    """Matches run by this request are logged as the signed-in user's."""
    MATCH_CALLER.set(f"ui:{ctx.user.name}")


async def summary(node: Node) -> dict[str, Any] | None:
    """For the dashboard: quarantined signals and the delivery queue (None: log off)."""
    moderation = node.moderation
    if moderation is None or not moderation.running:
        return None
    return moderation.status() | {"quarantine": await moderation.quarantine_entries()}


async def signal_matches(node: Node, signal: str) -> dict[str, Any] | None:
    """For a signal's page: its match count here and its quarantine."""
    moderation = node.moderation
    if moderation is None or not moderation.running:
        return None
    return await moderation.signal_summary(signal)


def _cursor(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) <= 18 else None


@page()
async def matches_page(ctx: Ctx) -> web.StreamResponse:
    moderation = ctx.node.moderation
    if moderation is None or not moderation.running:
        return denied_page(ctx.request, 404, "the match log is off on this node "
                           "([moderation] match_log = false)", ctx=ctx)  # fmt: skip
    q = ctx.request.query
    signal = (q.get("signal") or "").strip()[:SIGNAL_ID_CHARS] or None
    found = await moderation.matches(signal=signal, since_ms=None, before=_cursor(q.get("before")),
                                     limit=PAGE_ROWS)  # fmt: skip
    dead = await moderation.deliveries(state="dead", before=None, limit=PAGE_ROWS)
    context = {
        "signal": signal,
        "matches": found["matches"],
        "counts": found.get("counts"),
        "next": None if found["next"] is None else "?" + urlencode(
            {k: v for k, v in {"signal": signal, "before": found["next"]}.items() if v}),
        "status": moderation.status(),
        "quarantine": await moderation.quarantine_entries(released=True),
        "dead": dead["deliveries"],
        "rules": dead["rules"],
        "top": await moderation.top_signals(10),
        "sightings": await moderation.sighting_entries(state=None, limit=20),
        "done": q.get("done"),
    }  # fmt: skip
    return render(ctx.request, "matchlog.html", context, ctx=ctx)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def _confirm(ctx: Ctx, title: str, action: str, summary: list[tuple[str, str]],
             fields: list[tuple[str, str]], button: str) -> web.Response:  # fmt: skip
    context = {"title": title, "action": action, "summary": summary,
               "fields": [*fields, ("confirm", "yes")], "button": button,
               "cancel": "/ui/matchlog"}  # fmt: skip
    return render(ctx.request, "moderation_confirm.html", context, ctx=ctx)


async def _log(ctx: Ctx, action: str, target: str, detail: str | None = None) -> None:
    name, now = ctx.user.name, now_ms()
    await ctx.node.store.write(
        lambda s: users.log_action(s.conn, name, action, now_ms=now, target=target,
                                   detail=detail)
    )  # fmt: skip


@form("moderator")
async def release(ctx: Ctx) -> web.StreamResponse:
    moderation, signal = ctx.node.moderation, ctx.request.match_info["signal"]
    if moderation is None or not moderation.running or len(signal) > SIGNAL_ID_CHARS:
        return denied_page(ctx.request, 404, "no such quarantined signal", ctx=ctx)
    held = "drop" if ctx.field("held") == "drop" else "deliver"
    if ctx.field("confirm") != "yes":
        summary = [("signal", signal), ("held actions",
                    "dropped" if held == "drop" else "sent (webhooks, sighting)")]  # fmt: skip
        action = f"/ui/matchlog/release/{signal}"
        return _confirm(ctx, "Release this signal from quarantine?", action, summary,
                        [("held", held)], "Release")  # fmt: skip
    found = await moderation.release(signal, by=f"ui:{ctx.user.name}", deliver=held == "deliver")
    if found is None:
        return denied_page(ctx.request, 404, "that signal is not quarantined", ctx=ctx)
    await _log(ctx, "release quarantine", signal, f"held actions: {held}")
    return _see_other("/ui/matchlog?done=released")


@form("moderator")
async def retry(ctx: Ctx) -> web.StreamResponse:
    moderation, uid = ctx.node.moderation, ctx.request.match_info["id"]
    if moderation is None or not moderation.running or len(uid) != 32:
        return denied_page(ctx.request, 404, "no such delivery", ctx=ctx)
    found = await moderation.delivery(uid)
    if found is None or found["state"] != "dead":
        return denied_page(ctx.request, 404, "no dead delivery with that id", ctx=ctx)
    if ctx.field("confirm") != "yes":
        summary = [("delivery", uid), ("rule", str(found["rule"])),
                   ("signal", str(found["signal"])),
                   ("last error", str(found["last_error"]))]  # fmt: skip
        return _confirm(ctx, "Send this webhook delivery again?", f"/ui/webhooks/{uid}/retry",
                        summary, [], "Retry")  # fmt: skip
    await moderation.retry_delivery(uid)
    await _log(ctx, "retry webhook", uid, f"rule {found['rule']}")
    return _see_other("/ui/matchlog?done=retried")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/ui/matchlog", matches_page)
    r.add_post("/ui/matchlog/release/{signal}", release)
    r.add_post("/ui/webhooks/{id}/retry", retry)
