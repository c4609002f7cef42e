"""Who may see a UI page, and from where: loopback only, a signed-in user, a role, CSRF.

Every UI handler is wrapped by ``page`` (GET) or ``form`` (POST), which, in order:

1. answers only a request that reached a loopback address of this host *and* names a
   loopback host (``Host: 127.0.0.1:…``, ``[::1]``, ``localhost``): a reverse proxy or a
   public listener reaches nothing, and a DNS-rebinding page (``Host: evil.example``) is
   refused before any cookie or form is read;
2. loads the session from the ``hashmesh_session`` cookie (``HttpOnly``, ``SameSite=Strict``,
   ``Path=/ui/``, ``Secure`` when the request came over TLS); without one a GET is sent to the
   login page and a POST is refused, so nothing is shown after logout;
3. checks the user's role (viewer < moderator < admin);
4. for a POST: refuses a cross-origin ``Origin`` and requires the session's CSRF token, from
   the form field ``csrf_token`` or, for a multipart upload (whose fields the media reader
   consumes), from the query string.

Failed logins are limited per user name and per client address (``LoginLimiter``).
Every UI answer carries ``Cache-Control: no-store`` and a strict Content-Security-Policy.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from node.clock import now_ms
from node.net.context import NODE, Node
from node.store import users
from node.store.users import Session
from node.ui.render import SECURITY_HEADERS, Ctx, denied_page

SESSION_COOKIE: Final = "hashmesh_session"
LOGIN_COOKIE: Final = "hashmesh_login"
CSRF_FIELD: Final = "csrf_token"
COOKIE_PATH: Final = "/ui/"
LOGIN_WINDOW_S: Final = 900.0
MAX_FAILURES_PER_NAME: Final = 5
MAX_FAILURES_PER_CLIENT: Final = 20


class UiDeniedError(Exception):
    """A request the UI refuses; rendered as a page with status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class LoginLimiter:
    """Failed logins in a sliding window, per user name and per client address."""

    window_s: float = LOGIN_WINDOW_S
    per_name: int = MAX_FAILURES_PER_NAME
    per_client: int = MAX_FAILURES_PER_CLIENT
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self.failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def wait_s(self, name: str, client: str, now: float) -> float:
        """0 if a login may be tried now, else the seconds until one may."""
        waits = [0.0]
        for key, cap in ((f"name:{name}", self.per_name), (f"client:{client}", self.per_client)):
            times = self._recent(key, now)
            if len(times) >= cap:
                waits.append(times[-cap] + self.window_s - now)
        return max(waits)

    def failed(self, name: str, client: str, now: float) -> None:
        for key in (f"name:{name}", f"client:{client}"):
            self._recent(key, now).append(now)

    def succeeded(self, name: str) -> None:
        self.failures.pop(f"name:{name}", None)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def loopback_request(request: web.Request) -> bool:
    """Did request reach a loopback address of this host, naming a loopback host?"""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname or not _is_loopback(str(sockname[0])):
        return False
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    host = host.strip("[]").lower()
    return host == "localhost" or _is_loopback(host)


def check_origin(request: web.Request) -> None:
    """A browser's cross-origin POST names another origin: refuse it."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise UiDeniedError(403, "this form was sent from another site; it was refused")


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    max_age: int | None,
) -> None:
    response.set_cookie(
        name,
        value,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=max_age,
    )


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=COOKIE_PATH)


async def current_session(request: web.Request, node: Node) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    now = now_ms()
    return await node.store.read(lambda s: users.session_for(s.conn, token, now_ms=now))


async def csrf_field(request: web.Request) -> tuple[str | None, MultiDictProxy[str] | None]:
    """The CSRF token a POST carries, and its form fields (None for a multipart upload)."""
    if request.content_type.startswith("multipart/"):
        return request.query.get(CSRF_FIELD), None
    data = await request.post()
    fields = MultiDictProxy(MultiDict((k, v) for k, v in data.items() if isinstance(v, str)))
    token = fields.get(CSRF_FIELD)
    return token, fields


Handler = Callable[["Ctx"], Awaitable[web.StreamResponse]]


def guard(
    role: str, *, post: bool
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Wrap a UI handler with the checks in the module docstring."""

    def decorate(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if not loopback_request(request):
                raise web.HTTPNotFound()  # the UI does not exist on this listener
            node = request.app[NODE]
            try:
                session = await current_session(request, node)
                if session is None:
                    if not post:
                        target = request.path_qs if request.path != "/ui/login" else "/ui/"
                        raise web.HTTPSeeOther(
                            "/ui/login?" + _next_param(target), headers=SECURITY_HEADERS
                        )
                    raise UiDeniedError(403, "you are not signed in (or your session ended)")
                form = None
                if post:
                    check_origin(request)
                    token, form = await csrf_field(request)
                    if not users.same_token(session.csrf, token):
                        raise UiDeniedError(
                            403,
                            "the form's CSRF token is missing or wrong: reload "
                            "the page and send it again",
                        )
                if not session.user.may(role):
                    raise UiDeniedError(
                        403,
                        f"this needs the {role} role; {session.user.name} is a {session.user.role}",
                    )
                response = await handler(Ctx(request, node, session, form))
            except UiDeniedError as e:
                response = denied_page(request, e.status, str(e))
            response.headers.update(SECURITY_HEADERS)
            return response

        return wrapper

    return decorate


def page(
    role: str = "viewer",
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    return guard(role, post=False)


def form(
    role: str = "viewer",
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    return guard(role, post=True)


def _next_param(target: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"next": target})


def safe_next(target: str | None) -> str:
    """Where to go after login: a UI path on this host, never another site."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target
