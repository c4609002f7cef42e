"""The local API of the match log and its actions (node.moderation), behind the bearer token.

    GET  /v1/moderation                                what is queued, held and counted
    GET  /v1/matches?signal=&since=&before=&limit=     the match log, newest first; with
                                                       signal: its counts and quarantine
    GET  /v1/webhooks/deliveries?state=&before=&limit= the delivery queue (state: held,
                                                       pending, delivered, dead)
    GET  /v1/webhooks/deliveries/{id}                  one delivery, with its body
    POST /v1/webhooks/deliveries/{id}/retry            a dead delivery, pending again
    GET  /v1/quarantine?released=                      quarantined signals (and released)
    POST /v1/quarantine/{signal}/release               {"held": "deliver" | "drop"}
    GET  /v1/sightings?state=&limit=                   sightings queued and published

``since`` is a time in ms; a page's ``next`` (or null) is the ``before`` of the page after.
With ``[moderation] match_log = false`` every route answers 409.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from node.errors import ApiError
from node.moderation import sightings, webhooks
from node.moderation.service import Moderation
from node.net.api_input import int_param, optional_json_body, query_params
from node.net.context import Node
from node.net.local_api import local

SIGNAL_REF: Final = re.compile(r"[0-9A-Za-z:._-]{1,128}")  # a record id, or a local list's
DELIVERY_ID: Final = re.compile(r"[0-9a-f]{32}")
MAX_PAGE: Final = 1000


def _moderation(node: Node) -> Moderation:
    if node.moderation is None or not node.moderation.running:
        raise ApiError("the match log is off ([moderation] match_log = false)", status=409,
                       title="match log off")  # fmt: skip
    return node.moderation


def _signal(text: str | None, where: str) -> str | None:
    if text is not None and SIGNAL_REF.fullmatch(text) is None:
        raise ApiError("a signal is its id (64 hex characters)", title=f"invalid {where}")
    return text


def _choice(q: dict[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = q.get(name)
    if value is not None and value not in choices:
        raise ApiError(f"{name} must be one of {', '.join(choices)}, got {value[:40]!r}",
                       title=f"invalid query parameter {name}")  # fmt: skip
    return value


@local
async def get_status(request: web.Request, node: Node) -> web.StreamResponse:
    query_params(request, ())
    return web.json_response(_moderation(node).status())


@local
async def get_matches(request: web.Request, node: Node) -> web.StreamResponse:
    q = query_params(request, ("signal", "since", "before", "limit"))
    page = await _moderation(node).matches(
        signal=_signal(q.get("signal"), "query parameter signal"),
        since_ms=int_param(q, "since", 0, 0) if "since" in q else None,
        before=int_param(q, "before", 0, 1) if "before" in q else None,
        limit=int_param(q, "limit", 100, 1, MAX_PAGE),
    )
    return web.json_response(page)


@local
async def get_deliveries(request: web.Request, node: Node) -> web.StreamResponse:
    q = query_params(request, ("state", "before", "limit"))
    page = await _moderation(node).deliveries(
        state=_choice(q, "state", webhooks.STATES),
        before=int_param(q, "before", 0, 1) if "before" in q else None,
        limit=int_param(q, "limit", 100, 1, MAX_PAGE),
    )
    return web.json_response(page)


def _delivery_id(request: web.Request) -> str:
    uid = request.match_info["id"]
    if DELIVERY_ID.fullmatch(uid) is None:
        raise ApiError("a delivery id is 32 lowercase hex characters", title="invalid delivery")
    return uid


@local
async def get_delivery(request: web.Request, node: Node) -> web.StreamResponse:
    found = await _moderation(node).delivery(_delivery_id(request))
    if found is None:
        raise ApiError("no such delivery", status=404, title="no such delivery")
    return web.json_response(found)


@local
async def retry_delivery(request: web.Request, node: Node) -> web.StreamResponse:
    uid = _delivery_id(request)
    await optional_json_body(request, ())
    moderation = _moderation(node)
    found = await moderation.retry_delivery(uid)
    if found is None:
        state = (await moderation.delivery(uid) or {}).get("state")
        if state is None:
            raise ApiError("no such delivery", status=404, title="no such delivery")
        raise ApiError(f"only a dead delivery is retried; this one is {state}", status=409,
                       title="delivery not dead")  # fmt: skip
    return web.json_response(found)


@local
async def get_quarantine(request: web.Request, node: Node) -> web.StreamResponse:
    q = query_params(request, ("released",))
    released = _choice(q, "released", ("true", "false")) == "true"
    entries = await _moderation(node).quarantine_entries(released=released)
    return web.json_response({"quarantine": entries})


@local
async def release_signal(request: web.Request, node: Node) -> web.StreamResponse:
    signal = _signal(request.match_info["signal"], "signal") or ""
    body = await optional_json_body(request, ("held",))
    held = body.get("held", "deliver")
    if held not in ("deliver", "drop"):
        raise ApiError("held is deliver (send the held actions) or drop", title="invalid held")
    found = await _moderation(node).release(signal, by="api", deliver=held == "deliver")
    if found is None:
        raise ApiError(f"signal {signal} is not quarantined", status=404,
                       title="not quarantined")  # fmt: skip
    return web.json_response(found)


@local
async def get_sightings(request: web.Request, node: Node) -> web.StreamResponse:
    q = query_params(request, ("state", "limit"))
    entries = await _moderation(node).sighting_entries(
        state=_choice(q, "state", sightings.STATES), limit=int_param(q, "limit", 100, 1, MAX_PAGE)
    )
    return web.json_response({"sightings": entries})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/moderation", get_status)
    r.add_get("/v1/matches", get_matches)
    r.add_get("/v1/webhooks/deliveries", get_deliveries)
    r.add_get("/v1/webhooks/deliveries/{id}", get_delivery)
    r.add_post("/v1/webhooks/deliveries/{id}/retry", retry_delivery)
    r.add_get("/v1/quarantine", get_quarantine)
    r.add_post("/v1/quarantine/{signal}/release", release_signal)
    r.add_get("/v1/sightings", get_sightings)
