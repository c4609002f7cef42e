"""The UI's pages and forms (routes in ``node.ui.add_routes``).

Read-only pages are plain GETs that work without JavaScript; every action is a POST form
behind a confirmation page (the first POST checks the input and shows what will be signed,
the second, with ``confirm=yes``, signs it) and the session's CSRF token. Actions go through
``node.ui.actions`` (the local API's rules and ``Node.author``) and matching through
``node.net.matching`` (the functions ``POST /v1/match`` calls), so the UI and the API answer
alike. Every signed record is written to the action log with the user who asked for it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from node.clock import now_ms
from node.errors import NodeError, explain
from node.media.video import VideoHashes
from node.net.context import NODE, Node
from node.net.local_api import MALFORMED_MULTIPART
from node.net.matching import hash_upload, match_hashes, match_images
from node.store import users
from node.store.membership_view import members_json, pending_votes
from node.store.read import STATUSES, SignalQuery
from node.store.read import signals as list_signals
from node.ui import actions, queries
from node.ui import moderation as ui_moderation
from node.ui.actions import FormError
from node.ui.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    form,
    loopback_request,
    page,
    safe_next,
    set_cookie,
)
from node.ui.jobs import UI, rates, report_is_stale, start
from node.ui.render import SECURITY_HEADERS, Ctx, denied_page, render
from protocol.errors import ProtocolError
from protocol.labels import check_labels
from protocol.records import RECORD_DOMAIN, decode_record, is_record_id, unsigned_bytes
from protocol.signal_types import SIGNAL_TYPES

UPLOAD_FIELDS: Final = ("labels", "note", "allow_low_quality", "expires_days")
MAX_MATCH_LINES: Final = 1000
VERDICTS: Final = ("confirm", "dispute", "seen")


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


async def _log(
    ctx: Ctx,
    action: str,
    *,
    target: str | None = None,
    record: str | None = None,
    detail: str | None = None,
) -> None:
    name, now = ctx.user.name, now_ms()
    await ctx.node.store.write(
        lambda s: users.log_action(
            s.conn, name, action, now_ms=now, target=target, record=record, detail=detail
        )
    )


def _names(node: Node) -> dict[str, str]:
    """Member identity (and every key of it) -> display name."""
    membership = node.membership
    if membership is None:
        return {}
    names = {identity: m.name for identity, m in membership.members.items()}
    return names | {key: names[identity] for key, identity in membership.owner.items()}


# -- login and logout ------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    if not loopback_request(request):
        raise web.HTTPNotFound()
    return _login_form(request, None, 200)


def _login_form(request: web.Request, error: str | None, status: int) -> web.Response:
    token = secrets.token_urlsafe(32)
    context = {
        "login_token": token,
        "next": safe_next(request.query.get("next")),
        "error": error,
        "signed_out": "out" in request.query,
    }
    response = render(request, "login.html", context, status=status)
    set_cookie(response, request, LOGIN_COOKIE, token, max_age=3600)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    if not loopback_request(request):
        raise web.HTTPNotFound()
    node = request.app[NODE]
    data = await request.post()
    name, password, token = (str(data.get(k, "")) for k in ("name", "password", "csrf_token"))
    if not users.same_token(request.cookies.get(LOGIN_COOKIE, ""), token) or not token:
        return _login_form(request, "the login form expired: sign in again", 403)
    limiter = request.app[UI].limiter
    client = request.remote or "unknown"
    wait = limiter.wait_s(name, client, time.monotonic())
    if wait > 0:
        return _login_form(request, f"too many failed sign-ins: try again in {wait:,.0f} s", 429)
    user = await node.store.read(lambda s: users.check_login(s.conn, name, password))
    now = now_ms()
    if user is None:
        limiter.failed(name, client, time.monotonic())
        detail = name[:64]
        await node.store.write(
            lambda s: users.log_action(s.conn, detail, "login failed", now_ms=now)
        )
        return _login_form(request, "wrong user name or password", 401)
    limiter.succeeded(name)

    def open_session(s: Any) -> tuple[str, users.Session]:
        users.log_action(s.conn, user.name, "login", now_ms=now)
        return users.open_session(s.conn, user, now_ms=now)

    cookie, _ = await node.store.write(open_session)
    response = _see_other(safe_next(str(data.get("next", ""))))
    set_cookie(response, request, SESSION_COOKIE, cookie, max_age=users.SESSION_TTL_MS // 1000)
    clear_cookie(response, LOGIN_COOKIE)
    return response


@form("viewer")
async def logout(ctx: Ctx) -> web.StreamResponse:
    token = ctx.request.cookies.get(SESSION_COOKIE, "")
    await _log(ctx, "logout")
    await ctx.node.store.write(lambda s: users.close_session(s.conn, token))
    response = _see_other("/ui/login?out=1")
    clear_cookie(response, SESSION_COOKIE)
    return response


# -- dashboard -------------------------------------------------------------------------------


@page()
async def dashboard(ctx: Ctx) -> web.StreamResponse:
    from node.net.gossip import GOSSIP

    node, now = ctx.node, now_ms()
    stats = await node.store.read(lambda s: s.stats(now_ms=now))
    membership = node.membership
    names = _names(node)
    me = membership.identity_of(node.key.public) if membership else None
    frozen = [
        {"key": key, "name": names.get(key, "a non-member key"), "after": after, "reason": reason}
        for key, (after, reason) in sorted((membership.freezes if membership else {}).items())
        if reason in ("fork", "removed")
    ]
    gossip = ctx.request.app[GOSSIP]
    peers = [p.to_json(time.time()) for p in gossip.peers.values()]
    for peer in peers:
        peer["name"] = names.get(peer["key"] or "", "")
    pending = await _pending(node)
    context = {
        "me": me,
        "key": node.key.public,
        "url": node.config.url,
        "stats": stats,
        "indexed": len(node.index),
        "uptime_s": (now - node.started_ms) / 1000,
        "frozen": frozen,
        "peers": sorted(peers, key=lambda p: p["url"]),
        "barred": sorted(gossip.barred.items()),
        "rates": rates(ctx.request.app[UI], node),
        "pending": pending,
        "moderation": await ui_moderation.summary(node),
    }
    return render(ctx.request, "dashboard.html", context, ctx=ctx)


async def _pending(node: Node) -> list[dict[str, Any]]:
    membership = node.membership
    if membership is None:
        return []
    records = await node.store.read(lambda s: s.membership_records())
    return pending_votes(node.federation, membership, records)


# -- signals ---------------------------------------------------------------------------------


def _signal_query(node: Node, q: Any) -> SignalQuery:
    type_ = q.get("type") or None
    if type_ is not None and type_ not in SIGNAL_TYPES:
        raise FormError(f"type must be one of {', '.join(SIGNAL_TYPES)}")
    label = (q.get("label") or "").strip().lower() or None
    if label is not None:
        try:
            check_labels([label], "label")
        except ProtocolError as e:
            raise FormError(explain(e)) from e
    member = q.get("member") or None
    if member is not None and (node.membership is None or member not in node.membership.members):
        raise FormError("member: choose one of the federation's members")
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        raise FormError(f"status must be one of {', '.join(STATUSES)}")
    before = q.get("before") or None
    if before is not None and (not before.isdigit() or len(before) > 18):
        raise FormError("before: a row number")
    return SignalQuery(
        type_, label, member, status=status, before=None if before is None else int(before),
        limit=queries.PAGE_ROWS + 1,
    )  # fmt: skip


@page()
async def signals(ctx: Ctx) -> web.StreamResponse:
    node, q, now = ctx.node, ctx.request.query, now_ms()
    text = (q.get("q") or "").strip()
    members = members_json(node.membership) if node.membership else []
    context: dict[str, Any] = {
        "types": list(SIGNAL_TYPES),
        "statuses": STATUSES,
        "members": members,
        "q": q,
        "rows": [],
        "next": None,
        "search": text,
        "names": _names(node),
    }
    try:
        if text:
            if is_record_id(text):
                found = await node.store.read(lambda s: s.signal(text, now_ms=now))
                if found is not None:
                    return _see_other(f"/ui/signals/{text}")
            pairs = queries.candidates(text)
            if not pairs:
                raise FormError(f"{text[:80]!r} is neither a signal id nor a hash of any type")
            context["rows"] = await node.store.read(
                lambda s: queries.search_value(s, pairs, now_ms=now)
            )
            return render(ctx.request, "signals.html", context, ctx=ctx)
        query = _signal_query(node, q)
        rows = await node.store.read(lambda s: list_signals(s.conn, query, now_ms=now))
    except FormError as e:
        context["error"] = str(e)
        return render(ctx.request, "signals.html", context, ctx=ctx, status=400)
    if len(rows) > queries.PAGE_ROWS:
        rows = rows[: queries.PAGE_ROWS]
        params = {k: v for k, v in q.items() if k != "before" and v}
        context["next"] = "?" + urlencode(params | {"before": str(rows[-1]["row"])})
    context["rows"] = rows
    return render(ctx.request, "signals.html", context, ctx=ctx)


@page()
async def signal_page(ctx: Ctx) -> web.StreamResponse:
    node, now = ctx.node, now_ms()
    sid = ctx.request.match_info["id"]

    def read(s: Any) -> dict[str, Any] | None:
        row = s.signal(sid, now_ms=now)
        if row is None:
            return None
        opinions = queries.opinions_of(s, sid)
        retraction = (
            queries.record_json(s, str(row["retracted_by"])) if row["retracted_by"] else None
        )
        ids = [sid, *(o.record for o in opinions)] + ([row["retracted_by"]] if retraction else [])
        return {
            "row": row,
            "opinions": opinions,
            "retraction": retraction,
            "record": queries.record_json(s, sid),
            "here": users.actions_for_record(s.conn, ids),
        }

    data = await node.store.read(read) if is_record_id(sid) else None
    if data is None:
        return denied_page(ctx.request, 404, f"no signal {sid[:80]} on this node", ctx=ctx)
    context = data | {
        "names": _names(node),
        "own": data["row"]["member"] == node.identity,
        "verdicts": VERDICTS,
        "taxonomy": _taxonomy(node),
        "done": ctx.request.query.get("done"),
        "matched": await ui_moderation.signal_matches(node, sid),
    }
    return render(ctx.request, "signal.html", context, ctx=ctx)


def _taxonomy(node: Node) -> dict[str, list[str]]:
    taxonomy = list(node.federation.taxonomy)
    return {
        "labels": [t for t in taxonomy if not t.endswith(":")],
        "prefixes": [t for t in taxonomy if t.endswith(":")],
    }


@page()
async def record_page(ctx: Ctx) -> web.StreamResponse:
    """A stored record, its bytes and its signature checked with protocol/ alone."""
    node, rid = ctx.node, ctx.request.match_info["id"]
    raw = await node.store.read(lambda s: s.record(rid)) if is_record_id(rid) else None
    if raw is None:
        return denied_page(ctx.request, 404, f"no record {rid[:80]} on this node", ctx=ctx)
    check: dict[str, Any] = {"ok": True, "error": None}
    try:
        record = decode_record(raw, node.federation.id)
        check["id_matches"] = record.id == rid
        check["ok"] = check["id_matches"]
    except ProtocolError as e:
        check = {"ok": False, "error": explain(e), "id_matches": False}
    signing_input = RECORD_DOMAIN + unsigned_bytes(raw)
    parsed = json.loads(raw)
    context = {
        "rid": rid,
        "raw": raw.decode("utf-8", "replace"),
        "pretty": json.dumps(parsed, indent=2),
        "parsed": parsed,
        "check": check,
        "names": _names(node),
        "signing_input_sha256": hashlib.sha256(signing_input).hexdigest(),
        "domain": RECORD_DOMAIN.decode().strip(),
    }
    return render(ctx.request, "record.html", context, ctx=ctx)


# -- match -----------------------------------------------------------------------------------


@page()
async def match_page(ctx: Ctx) -> web.StreamResponse:
    return render(ctx.request, "match.html", {"answer": None, "hashes": ""}, ctx=ctx)


@form()
async def match_pasted(ctx: Ctx) -> web.StreamResponse:
    text = ctx.field("hashes")
    context: dict[str, Any] = {"answer": None, "hashes": text, "names": _names(ctx.node)}
    try:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise FormError("paste at least one hash (type:value, one a line)")
        if len(lines) > MAX_MATCH_LINES:
            raise FormError(f"at most {MAX_MATCH_LINES:,} hashes at a time")
        queries_: list[dict[str, str]] = []
        for line in lines:
            pairs = queries.candidates(line)
            if not pairs:
                raise FormError(f"{line[:80]!r} is not a hash of any type (write type:value)")
            queries_ += [{"type": t, "value": v} for t, v in pairs]
        ui_moderation.set_caller(ctx)
        answer = await match_hashes(ctx.node, {"hashes": queries_})
    except FormError as e:
        context["error"] = str(e)
        return render(ctx.request, "match.html", context, ctx=ctx, status=400)
    except (NodeError, ProtocolError) as e:
        context["error"] = explain(e)
        return render(ctx.request, "match.html", context, ctx=ctx, status=400)
    context["answer"] = {
        "matched": answer["matched"],
        "files": [{"file": None, "results": answer["results"]}],
    }
    return render(ctx.request, "match.html", context, ctx=ctx)


@form()
async def match_upload(ctx: Ctx) -> web.StreamResponse:
    """Images hashed and matched by the API's own function; the bytes are never kept."""
    context: dict[str, Any] = {"answer": None, "hashes": "", "names": _names(ctx.node)}
    try:
        if not ctx.request.content_type.startswith("multipart/"):
            raise FormError("choose one or more images to upload")
        ui_moderation.set_caller(ctx)
        answer = await match_images(ctx.request, ctx.node)
    except FormError as e:
        context["error"] = str(e)
        return render(ctx.request, "match.html", context, ctx=ctx, status=400)
    except (NodeError, ProtocolError, *MALFORMED_MULTIPART) as e:
        context["error"] = explain(e) if isinstance(e, NodeError | ProtocolError) else str(e)
        return render(ctx.request, "match.html", context, ctx=ctx, status=400)
    context["answer"] = {"matched": answer["matched"], "files": answer["results"]}
    return render(ctx.request, "match.html", context, ctx=ctx)


# -- acting ----------------------------------------------------------------------------------


@page("moderator")
async def act_page(ctx: Ctx) -> web.StreamResponse:
    context = {"types": list(SIGNAL_TYPES), "taxonomy": _taxonomy(ctx.node), "form": {}}
    return render(ctx.request, "act.html", context, ctx=ctx)


def _confirm(
    ctx: Ctx,
    title: str,
    action: str,
    summary: Sequence[tuple[str, object]],
    fields: list[tuple[str, str]],
    cancel: str,
) -> web.Response:
    context = {
        "title": title,
        "action": action,
        "summary": summary,
        "fields": [*fields, ("confirm", "yes")],
        "cancel": cancel,
    }
    return render(ctx.request, "confirm.html", context, ctx=ctx)


def _confirmed(ctx: Ctx) -> bool:
    return ctx.field("confirm") == "yes"


@form("moderator")
async def act_add(ctx: Ctx) -> web.StreamResponse:
    node = ctx.node
    assert ctx.form is not None
    hashes = ctx.form.getall("hash", [])
    if ctx.field("type") or ctx.field("value"):
        hashes = [f"{ctx.field('type')}:{ctx.field('value')}"]
    try:
        labels = actions.labels_of(node, ctx.form.getall("labels", []))
        note = actions.optional_text(ctx.field("note"))
        expires = actions.expiry(ctx.field("expires_days"), now=now_ms())
        bodies = actions.signal_bodies(hashes, labels, note, expires)
        if not _confirmed(ctx):
            fields = [("hash", f"{b.type}:{b.value}") for b in bodies]
            fields += [
                ("labels", " ".join(labels)),
                ("note", note or ""),
                ("expires_days", ctx.field("expires_days")),
            ]
            summary = [("sign as", node.config.name)]
            summary += [(f"{b.type} signal", b.value) for b in bodies]
            summary += [
                ("labels", " ".join(labels) or "none"),
                ("note", note or "none"),
                ("expires", f"in {ctx.field('expires_days')} days" if expires else "never"),
            ]
            return _confirm(
                ctx, f"Add {len(bodies)} signal(s)?", "/ui/act/add", summary, fields, "/ui/act"
            )
        records = await actions.author(node, bodies)
    except FormError as e:
        context = {
            "types": list(SIGNAL_TYPES),
            "taxonomy": _taxonomy(node),
            "error": str(e),
            "form": dict(ctx.form),
        }
        return render(ctx.request, "act.html", context, ctx=ctx, status=400)
    for record in records:
        await _log(
            ctx,
            "add",
            target=record.id,
            record=record.id,
            detail=f"{getattr(record.body, 'type', '')}:{getattr(record.body, 'value', '')}",
        )
    return _see_other(f"/ui/signals/{records[0].id}?done=added")


@form("moderator")
async def act_upload(ctx: Ctx) -> web.StreamResponse:
    """An image hashed (as ``POST /v1/signals`` with a file does) for the confirmation page;
    the image itself is discarded there and then."""
    node = ctx.node
    try:
        if not ctx.request.content_type.startswith("multipart/"):
            raise FormError("choose an image to upload")
        upload = await hash_upload(ctx.request, node, UPLOAD_FIELDS)
        labels = actions.labels_of(node, upload.fields.get("labels", []))
        note = actions.optional_text(str(upload.fields.get("note", "")))
        days = str(upload.fields.get("expires_days", ""))
        actions.expiry(days, now=now_ms())
        h = upload.hashes
        floor = node.config.media.min_pdq_quality
        forced = upload.fields.get("allow_low_quality") == "true"
        if isinstance(h, VideoHashes):
            usable = sum(1 for f in h.frames if f.quality >= floor)
            if not usable and not forced:
                raise FormError(
                    f"every hashed frame has PDQ quality below min_pdq_quality {floor}: the "
                    "video is too featureless to list; tick 'list it anyway' to list it"
                )
            pairs = [("vpdq", v) for v in h.vpdq_values()] + [("md5", h.md5)]
            what, quality = "video", f"{usable} of {len(h.frames)} frames usable"
        else:
            if h.is_low_quality(floor) and not forced:
                raise FormError(
                    f"PDQ quality {h.pdq_quality} is below min_pdq_quality {floor}: the "
                    "image is too featureless to list (its hashes would match other "
                    "near-blank images); tick 'list it anyway' to list it"
                )
            signals = h.as_signals()
            pairs = [(k, signals[k]) for k in actions.UPLOAD_TYPES]
            what, quality = "image", str(h.pdq_quality)
        hashes = [f"{k}:{v}" for k, v in pairs]
        actions.signal_bodies(hashes, labels, note, None)  # refuses a degenerate value now
    except FormError as e:
        return _act_error(ctx, str(e))
    except (NodeError, ProtocolError, *MALFORMED_MULTIPART) as e:
        return _act_error(ctx, explain(e) if isinstance(e, NodeError | ProtocolError) else str(e))
    fields = [("hash", x) for x in hashes]
    fields += [("labels", " ".join(labels)), ("note", note or ""), ("expires_days", days)]
    summary = [
        ("sign as", node.config.name),
        (what, upload.filename or "upload"),
        ("PDQ quality", quality),
    ]
    summary += [(f"{k} signal", v if len(v) <= 140 else f"{v[:64]}… ({len(v)} chars)")
                for k, v in pairs]  # fmt: skip
    summary += [("labels", " ".join(labels) or "none"), ("note", note or "none")]
    return _confirm(ctx, f"Add this {what}'s signals?", "/ui/act/add", summary, fields, "/ui/act")


def _act_error(ctx: Ctx, message: str) -> web.Response:
    context = {
        "types": list(SIGNAL_TYPES),
        "taxonomy": _taxonomy(ctx.node),
        "error": message,
        "form": {},
    }
    return render(ctx.request, "act.html", context, ctx=ctx, status=400)


async def _signal_error(ctx: Ctx, sid: str, message: str) -> web.Response:
    node, now = ctx.node, now_ms()
    row = await node.store.read(lambda s: s.signal(sid, now_ms=now)) if is_record_id(sid) else None
    if row is None:
        return denied_page(ctx.request, 404, message, ctx=ctx)
    opinions = await node.store.read(lambda s: queries.opinions_of(s, sid))
    retraction = None
    if row["retracted_by"]:
        rid = str(row["retracted_by"])
        retraction = await node.store.read(lambda s: queries.record_json(s, rid))
    record = await node.store.read(lambda s: queries.record_json(s, sid))
    context = {
        "row": row,
        "opinions": opinions,
        "retraction": retraction,
        "record": record,
        "here": {},
        "names": _names(node),
        "own": row["member"] == node.identity,
        "verdicts": VERDICTS,
        "taxonomy": _taxonomy(node),
        "done": None,
        "error": message,
    }
    return render(ctx.request, "signal.html", context, ctx=ctx, status=400)


@form("moderator")
async def act_opinion(ctx: Ctx) -> web.StreamResponse:
    node, sid = ctx.node, ctx.request.match_info["id"]
    assert ctx.form is not None
    try:
        actions.signal_id(sid)
        verdict = ctx.field("verdict")
        if verdict not in VERDICTS:
            raise FormError("choose a verdict: confirm, dispute or seen")
        labels = actions.labels_of(node, ctx.form.getall("labels", []))
        note = actions.optional_text(ctx.field("note"))
        body = actions.opinion_body(sid, verdict, labels, note)
        if not _confirmed(ctx):
            fields = [("verdict", verdict), ("labels", " ".join(labels)), ("note", note or "")]
            summary = [
                ("sign as", node.config.name),
                ("signal", sid),
                ("verdict", verdict),
                ("labels", " ".join(labels) or "none"),
                ("note", note or "none"),
            ]
            return _confirm(
                ctx,
                f"Sign a {verdict} opinion?",
                f"/ui/signals/{sid}/opinion",
                summary,
                fields,
                f"/ui/signals/{sid}",
            )
        (record,) = await actions.author(node, [body])
    except FormError as e:
        return await _signal_error(ctx, sid, str(e))
    await _log(ctx, verdict, target=sid, record=record.id, detail=note)
    return _see_other(f"/ui/signals/{sid}?done={verdict}")


@form("moderator")
async def act_retract(ctx: Ctx) -> web.StreamResponse:
    node, sid = ctx.node, ctx.request.match_info["id"]
    try:
        actions.signal_id(sid)
        reason = actions.optional_text(ctx.field("reason"))
        body = await actions.retract_body(node, sid, reason)
        if not _confirmed(ctx):
            summary = [
                ("sign as", node.config.name),
                ("retract signal", sid),
                ("reason", reason or "none"),
            ]
            return _confirm(
                ctx,
                "Retract this signal?",
                f"/ui/signals/{sid}/retract",
                summary,
                [("reason", reason or "")],
                f"/ui/signals/{sid}",
            )
        (record,) = await actions.author(node, [body])
    except FormError as e:
        return await _signal_error(ctx, sid, str(e))
    await _log(ctx, "retract", target=sid, record=record.id, detail=reason)
    return _see_other(f"/ui/signals/{sid}?done=retracted")


# -- members ---------------------------------------------------------------------------------


async def _members_context(ctx: Ctx) -> dict[str, Any]:
    node = ctx.node
    membership = node.membership
    members = members_json(membership) if membership else []
    endpoints = await node.store.read(lambda s: s.endpoints())
    by_member = {str(e["member"]): e for e in endpoints}
    for m in members:
        m["endpoint"] = by_member.get(m["identity"])
        full = membership.members[m["identity"]] if membership else None
        m["keys"] = list(full.keys) if full else [m["key"]]
        m["frozen"] = membership.freezes.get(m["key"]) if membership else None
    pending = await _pending(node)
    me = node.identity if membership else ""
    my_name = membership.members[me].name if membership and me in membership.members else ""
    for vote in pending:
        vote["mine"] = my_name in vote["voters"]
    return {
        "members": members,
        "pending": pending,
        "threshold": node.federation.threshold,
        "me": me,
        "form": {},
    }


@page()
async def members_page(ctx: Ctx) -> web.StreamResponse:
    return render(ctx.request, "members.html", await _members_context(ctx), ctx=ctx)


@form("admin")
async def act_vote(ctx: Ctx) -> web.StreamResponse:
    node = ctx.node
    action = ctx.field("action")
    summary: list[tuple[str, object]]
    try:
        if action == "admit":
            body = actions.admit_body(
                ctx.field("card"),
                ctx.field("key"),
                ctx.field("name"),
                ctx.field("role") or "member",
            )
            fields = [
                ("action", "admit"),
                ("key", body.member),
                ("name", body.name or ""),
                ("role", body.role or ""),
            ]
            summary = [
                ("vote", "admit"),
                ("name", body.name),
                ("key", body.member),
                ("role", body.role),
            ]
        elif action == "remove":
            body = await actions.remove_body(node, ctx.field("member"), ctx.field("after"))
            names = _names(node)
            fields = [
                ("action", "remove"),
                ("member", ctx.field("member")),
                ("after", str(body.after)),
            ]
            summary = [
                ("vote", "remove"),
                ("member", names.get(body.member, body.member)),
                ("key", body.member),
                ("its records count through seq", body.after),
            ]
        else:
            raise FormError("choose admit or remove")
        if not _confirmed(ctx):
            summary.insert(0, ("sign as", node.config.name))
            summary.append(("votes needed", node.federation.threshold))
            return _confirm(
                ctx, f"Vote to {action}?", "/ui/members/vote", summary, fields, "/ui/members"
            )
        (record,) = await actions.author(node, [body])
    except FormError as e:
        context = await _members_context(ctx) | {"error": str(e), "form": dict(ctx.form or {})}
        return render(ctx.request, "members.html", context, ctx=ctx, status=400)
    await _log(ctx, f"vote {action}", target=body.member, record=record.id)
    return _see_other("/ui/members?done=voted")


# -- audit, report, action log ---------------------------------------------------------------


async def _records(node: Node) -> int:
    now = now_ms()
    stats = await node.store.read(lambda s: s.stats(now_ms=now))
    return int(stats["records"])


@page()
async def audit_page(ctx: Ctx) -> web.StreamResponse:
    job = ctx.request.app[UI].jobs.get("audit")
    return render(ctx.request, "audit.html", {"job": job}, ctx=ctx)


@form("moderator")
async def audit_run(ctx: Ctx) -> web.StreamResponse:
    start(ctx.request.app[UI], ctx.node, "audit", ctx.user.name, await _records(ctx.node))
    await _log(ctx, "audit")
    return _see_other("/ui/audit")


@page()
async def report_page(ctx: Ctx) -> web.StreamResponse:
    state, records = ctx.request.app[UI], await _records(ctx.node)
    if report_is_stale(state, records):
        start(state, ctx.node, "report", ctx.user.name, records)
    job = state.jobs["report"]
    shown = job if not job.running else None
    return render(
        ctx.request, "report.html", {"job": job, "shown": shown, "records": records}, ctx=ctx
    )


@page()
async def log_page(ctx: Ctx) -> web.StreamResponse:
    before_text = ctx.request.query.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) < 19 else None
    rows = await ctx.node.store.read(
        lambda s: users.actions(s.conn, limit=queries.PAGE_ROWS + 1, before=before)
    )
    more = len(rows) > queries.PAGE_ROWS
    rows = rows[: queries.PAGE_ROWS]
    context = {"rows": rows, "next": f"?before={rows[-1][0]}" if more else None}
    return render(ctx.request, "log.html", context, ctx=ctx)


async def static_file(request: web.Request) -> web.StreamResponse:
    from importlib import resources

    if not loopback_request(request) or request.match_info["name"] != "style.css":
        raise web.HTTPNotFound()
    text = resources.files("node.ui").joinpath("static/style.css").read_text("utf-8")
    headers = {"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
    return web.Response(text=text, content_type="text/css", headers=headers)


async def root(request: web.Request) -> web.StreamResponse:
    if not loopback_request(request):
        raise web.HTTPNotFound()
    return _see_other("/ui/")
