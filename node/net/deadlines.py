"""Read deadlines on every listener: a client sending a byte a second cannot hold a connection.

aiohttp's server has no header or body read timeout (its keep-alive timer only closes idle
connections, and a trickle of bytes is not idle), so the node adds both:

- **headers** (``[limits] header_timeout_s``): a request's line and headers must be complete
  within this many seconds of the connection opening, or of the first byte of a later request
  on a kept-alive connection. Otherwise the connection is closed without an answer (there is
  no request to answer yet). ``GuardedRunner`` wraps each connection's aiohttp protocol in a
  ``_HeaderGuard`` that arms the deadline; ``read_deadlines``, the outermost middleware,
  disarms it when the request reaches the application.
- **body** (``[limits] body_timeout_s``): once the application has the request, its body must
  be complete within this many seconds. Otherwise reading it raises ``BodyTimeoutError``: the
  answer is a 408 problem body and the connection is closed.
- **idle**: a kept-alive connection with no request in flight is closed after
  ``KEEPALIVE_TIMEOUT_S`` (aiohttp's ``keepalive_timeout``; longer than the 15 s an aiohttp
  client keeps an idle pooled connection, so a peer never reuses one the node just closed).

Both deadlines count ``hashmesh_requests_timed_out_total`` through ``on_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from node.errors import NodeError

log = logging.getLogger("hashmesh.http")

KEEPALIVE_TIMEOUT_S = 75.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# the guard of each open connection, by its transport (what a request names as its own)
_GUARDS: dict[asyncio.BaseTransport, _HeaderGuard] = {}


class BodyTimeoutError(NodeError, TimeoutError):
    """The request body did not arrive within ``body_timeout_s``.

    A ``TimeoutError`` too, so aiohttp, draining the rest of the body after the answer, stops
    quietly and closes the connection."""

    status = 408
    title = "request body too slow"


class _HeaderGuard(asyncio.Protocol):
    """An aiohttp connection protocol with a deadline for each request's headers."""

    def __init__(
        self, inner: RequestHandler, timeout_s: float, on_timeout: Callable[[str], None]
    ) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self.transport: asyncio.BaseTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.busy = False  # a request is with the application (its body is its deadline)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        _GUARDS[transport] = self
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if data and not self.busy and self.timer is None:
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is not None:
            _GUARDS.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_started(self) -> None:
        self._disarm()
        self.busy = True

    def request_finished(self) -> None:
        self.busy = False

    def _arm(self) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.info("closed a connection: request headers not complete within %.1f s",
                 self.timeout_s, extra={"client": str(peer)})  # fmt: skip
        self.on_timeout("headers")
        self.inner.force_close()


class _GuardedFactory:
    """What the listening socket calls per connection: aiohttp's protocol, guarded."""

    def __init__(self, server: Any, timeout_s: float, on_timeout: Callable[[str], None]) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout

    def __call__(self) -> _HeaderGuard:
        return _HeaderGuard(self.server(), self.timeout_s, self.on_timeout)


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose sites serve every connection through a ``_HeaderGuard``."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout_s: float,
        on_timeout: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(app, keepalive_timeout=KEEPALIVE_TIMEOUT_S, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.on_timeout = on_timeout

    @property
    def server(self) -> Any:  # a site only calls it: the guarded factory stands in for it
        server = super().server
        if server is None:
            return None
        return _GuardedFactory(server, self.header_timeout_s, self.on_timeout)


def read_deadlines(
    body_timeout_s: float, on_timeout: Callable[[str], None]
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The outermost middleware: ends the header deadline, runs the body deadline."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = _GUARDS.get(request.transport) if request.transport is not None else None
        if guard is not None:
            guard.request_started()
        body = request.content
        timer = None
        if not body.is_eof():
            timer = asyncio.get_running_loop().call_later(
                body_timeout_s, _body_expired, body, body_timeout_s, on_timeout
            )
            body.on_eof(timer.cancel)
        try:
            response = await handler(request)
            if isinstance(body.exception(), BodyTimeoutError):
                response.force_close()
            return response
        finally:
            if timer is not None:
                timer.cancel()
            if guard is not None:
                guard.request_finished()

    return middleware


def counting(counters: dict[str, int]) -> Callable[[str], None]:
    """An ``on_timeout`` that counts into the node's ``requests_timed_out`` counter."""

    def count(kind: str) -> None:
        counters["requests_timed_out"] = counters.get("requests_timed_out", 0) + 1

    return count


def _body_expired(body: Any, timeout_s: float, on_timeout: Callable[[str], None]) -> None:
    if body.is_eof():
        return
    log.info("request body not complete within %.1f s: answered 408", timeout_s)
    on_timeout("body")
    body.set_exception(BodyTimeoutError(f"the request body did not arrive within {timeout_s} s"))
