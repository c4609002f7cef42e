"""Templates (Jinja2 through aiohttp-jinja2, autoescaped) and the filters they use.

Times are shown in ISO 8601 in the node's local time zone, with the zone named
(``2025-11-26T09:25:03+01:00 CET``) inside a ``<time>`` element; counts with thousands
separators. Templates are strict: an undefined name is an error, not an empty string.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Final

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup, escape
from multidict import MultiDictProxy

from node.net.context import NODE, Node
from node.store import users
from node.store.users import Session

SECURITY_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(slots=True)
class Ctx:
    """What a UI handler works with."""

    request: web.Request
    node: Node
    session: Session
    form: MultiDictProxy[str] | None = None

    @property
    def user(self) -> users.User:
        return self.session.user

    def field(self, name: str, default: str = "") -> str:
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else default


TEMPLATES: Final = "node.ui"


def when(ts_ms: object) -> Markup:
    """A record or event time (ms since the epoch) in local ISO 8601, zone shown."""
    if not isinstance(ts_ms, int):
        return Markup("&mdash;")
    try:
        moment = datetime.datetime.fromtimestamp(ts_ms / 1000, tz=datetime.UTC).astimezone()
    except (OverflowError, ValueError, OSError):
        return escape(f"{ts_ms:,} ms since 1970 (beyond the calendar)")
    iso = moment.isoformat(timespec="seconds")  # digits, signs and colons only
    return Markup(f'<time datetime="{iso}">{iso} {escape(moment.tzname() or "")}</time>')


def num(value: object) -> str:
    """12,345 (a number with thousands separators); anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    return f"{value:,}"


def short(text: object, chars: int = 12) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= chars else value[:chars] + "…"


def seconds(value: object) -> str:
    if not isinstance(value, int | float):
        return "never"
    if value < 120:
        return f"{value:,.0f} s ago"
    if value < 7200:
        return f"{value / 60:,.0f} min ago"
    return f"{value / 3600:,.1f} h ago"


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader(TEMPLATES, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        default_helpers=False,
    )
    env.filters.update({"when": when, "num": num, "short": short, "ago": seconds})


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    *,
    ctx: Ctx | None = None,
    status: int = 200,
) -> web.Response:
    node = request.app[NODE]
    base = {
        "fed": node.federation,
        "node_name": node.config.name,
        "user": ctx.user if ctx is not None else None,
        "csrf": ctx.session.csrf if ctx is not None else "",
        "path": request.path,
        "message": None,
        "error": None,
    }
    response = aiohttp_jinja2.render_template(template, request, base | context, status=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def denied_page(
    request: web.Request, status: int, message: str, *, ctx: Ctx | None = None
) -> web.Response:
    context = {"status": status, "error": message}
    return render(request, "denied.html", context, ctx=ctx, status=status)
