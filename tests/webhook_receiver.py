"""A webhook receiver for tests: a real aiohttp server on 127.0.0.1, in a thread of its own.

It records every request (path, headers, body) and answers ``status``; it can be stopped
and started again on the same port (a receiver that is down for a while).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from aiohttp import web
from harness import free_port

from node.moderation.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER


@dataclass(frozen=True)
class Received:
    path: str
    signature: str
    delivery: str
    body: bytes


class Receiver:
    def __init__(self, port: int | None = None, status: int = 200) -> None:
        self.port = port or free_port()
        self.status = status
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append(
                Received(request.path, request.headers.get(SIGNATURE_HEADER, ""),
                         request.headers.get(DELIVERY_HEADER, ""), body)
            )  # fmt: skip
        return web.Response(status=self.status)

    def start(self) -> Receiver:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]
