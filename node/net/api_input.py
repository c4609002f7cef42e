"""Strict input for the local API: what a request may carry, checked before it is used.

Every check raises ``ApiError`` with a ``title`` that names what failed (a problem body's
title, node.app): a body's media type must be one the route takes (415), a JSON member, form
field or query parameter the route does not know is refused rather than ignored (a misspelt
``lables`` would otherwise sign a signal without labels), a query parameter may be given
once, and integers are plain decimals in a stated range.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from node.errors import ApiError
from protocol.encoding import MAX_SAFE_INTEGER

JSON = ("application/json",)
MULTIPART = "multipart/form-data"
HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"[0-9]{1,16}")


def unknown_fields(given: Collection[str], allowed: Collection[str], where: str) -> None:
    """Refuse members or form fields a route does not know (a misspelt one would be ignored)."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ApiError(
            f"unknown field(s) in {where}: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})",
            status=400,
            title="unknown field",
        )


def require_content_type(request: web.Request, allowed: Collection[str]) -> None:
    """415 unless the body's media type is one of allowed (``image/*`` allows any image)."""
    media = request.content_type
    if media in allowed or ("image/*" in allowed and media.startswith("image/")):
        return
    given = request.headers.get("Content-Type", "none")
    raise ApiError(
        f"Content-Type {given!r} is not accepted here; send {' or '.join(allowed)}",
        status=415,
        title="unsupported media type",
    )


async def json_body(request: web.Request, allowed: Collection[str]) -> dict[str, Any]:
    """The request's JSON object, whose members must be among allowed."""
    require_content_type(request, JSON)
    try:
        body = await request.json()
    except (ValueError, LookupError, RecursionError) as e:  # LookupError: an unknown charset
        raise ApiError(f"request body is not JSON: {e}", title="invalid JSON body") from e
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object", title="invalid JSON body")
    unknown_fields(body, allowed, "the request body")
    return body


async def optional_json_body(request: web.Request, allowed: Collection[str]) -> dict[str, Any]:
    """json_body, or {} for a request without a body."""
    return await json_body(request, allowed) if request.can_read_body else {}


def query_params(request: web.Request, allowed: Collection[str]) -> dict[str, str]:
    """The query's parameters, each known to the route and given once."""
    query = request.query
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise ApiError(
            f"unknown query parameter(s): {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})",
            title=f"invalid query parameter {unknown[0]}",
        )
    for name in query:
        if len(query.getall(name)) > 1:
            raise ApiError(f"query parameter {name} is given more than once",
                           title=f"invalid query parameter {name}")  # fmt: skip
    return dict(query)


def int_param(
    params: Mapping[str, str], name: str, default: int, low: int, high: int = MAX_SAFE_INTEGER
) -> int:
    """A decimal integer parameter in low..high, or default when absent."""
    text = params.get(name)
    if text is None:
        return default
    if _DECIMAL.fullmatch(text) is None or not low <= int(text) <= high:
        raise ApiError(f"{name} must be an integer from {low} to {high}, got {text[:40]!r}",
                       title=f"invalid query parameter {name}")  # fmt: skip
    return int(text)


def form_flag(fields: Mapping[str, Any], name: str) -> bool:
    value = fields.get(name, "false")
    if value not in ("true", "false"):
        raise ApiError(f"{name} must be true or false", title=f"invalid {name}")
    return bool(value == "true")
