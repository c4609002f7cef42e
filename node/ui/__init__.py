"""The web UI: server-rendered pages for moderators, operators and auditors under ``/ui/``.

Served by the node's own aiohttp app, answered only on loopback (``node.ui.auth``), rendered
with Jinja2 (autoescaped) and a stylesheet; no JavaScript, no CDN, nothing fetched from
elsewhere. People sign in with the accounts of ``hashmesh user`` (``node.store.users``).

    GET  /ui/                        dashboard: federation, this member, store, peers, rates
    GET  /ui/login  POST /ui/login   POST /ui/logout
    GET  /ui/signals                 browse (type, label, member, status) and search
    GET  /ui/signals/{id}            one signal: provenance, opinions timeline, retraction
    POST /ui/signals/{id}/opinion    POST /ui/signals/{id}/retract        (moderator)
    GET  /ui/records/{id}            a record's bytes and its signature check
    GET  /ui/match  POST /ui/match  POST /ui/match/upload
    GET  /ui/act    POST /ui/act/add  POST /ui/act/upload                  (moderator)
    GET  /ui/members  POST /ui/members/vote                                (admin votes)
    GET  /ui/audit  POST /ui/audit   GET /ui/report   GET /ui/log
    GET  /ui/lists  GET /ui/lists/{name}   local lists and the match policy
    POST /ui/lists/{name}/entries|remove|switch   add, remove, switch on/off (moderator)
    GET  /ui/matchlog                POST /ui/matchlog/release/{signal}
    POST /ui/webhooks/{id}/retry                                           (moderator)
"""

from __future__ import annotations

from aiohttp import web

from node.ui import lists_views, moderation, views
from node.ui.jobs import UI, UiState, ui_ctx
from node.ui.render import setup


def add_routes(app: web.Application) -> None:
    """Register the UI on the node app (templates, state, background tasks, routes)."""
    setup(app)
    app[UI] = UiState()
    app.cleanup_ctx.append(ui_ctx)
    r = app.router
    r.add_get("/ui", views.root)
    r.add_get("/ui/", views.dashboard)
    r.add_get("/ui/login", views.login_page)
    r.add_post("/ui/login", views.login)
    r.add_post("/ui/logout", views.logout)
    r.add_get("/ui/signals", views.signals)
    r.add_get("/ui/signals/{id}", views.signal_page)
    r.add_post("/ui/signals/{id}/opinion", views.act_opinion)
    r.add_post("/ui/signals/{id}/retract", views.act_retract)
    r.add_get("/ui/records/{id}", views.record_page)
    r.add_get("/ui/match", views.match_page)
    r.add_post("/ui/match", views.match_pasted)
    r.add_post("/ui/match/upload", views.match_upload)
    r.add_get("/ui/act", views.act_page)
    r.add_post("/ui/act/add", views.act_add)
    r.add_post("/ui/act/upload", views.act_upload)
    r.add_get("/ui/members", views.members_page)
    r.add_post("/ui/members/vote", views.act_vote)
    r.add_get("/ui/audit", views.audit_page)
    r.add_post("/ui/audit", views.audit_run)
    r.add_get("/ui/report", views.report_page)
    r.add_get("/ui/log", views.log_page)
    r.add_get("/ui/lists", lists_views.lists_page)
    r.add_get("/ui/lists/{name}", lists_views.list_page)
    r.add_post("/ui/lists/{name}/entries", lists_views.list_add)
    r.add_post("/ui/lists/{name}/remove", lists_views.list_remove)
    r.add_post("/ui/lists/{name}/switch", lists_views.list_switch)
    r.add_get("/ui/static/{name}", views.static_file)
    moderation.add_routes(app)  # /ui/matchlog (node.ui.moderation)
