"""Test support for the web UI: a node app served on loopback, browsers as cookie sessions.

``UiNode`` serves a real node home (``make_app``: store, index, gossip, UI) with aiohttp's
``TestServer`` on 127.0.0.1, on an event loop the tests drive synchronously, so one app serves
a whole module. ``Browser`` is one signed-in person: an ``aiohttp.ClientSession`` with its own
cookie jar that logs in through the login form, as a browser would. ``fill_store`` writes a
small federation history straight into a home's database (before its node starts).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher
from images import encode
from PIL import Image

from node.config import load_config
from node.home import NodeHome
from node.media.hashing import hash_image
from node.net.app import make_app
from node.net.context import NODE, Node
from node.store import users
from node.store.schema import open_database
from node.store.store import Store
from protocol.bodies import OpinionBody, RetractBody, SignalBody
from protocol.records import sign_record

PASSWORD = "correct horse battery"
# argon2id with small parameters: tests sign in often (the CLI uses the library's defaults)
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
T = TypeVar("T")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def picture(seed: int) -> Image.Image:
    """A featureful picture (random colour blocks)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    return Image.fromarray(blocks.repeat(16, axis=0).repeat(16, axis=1))


def edited(image: Image.Image) -> Image.Image:
    """The same picture slightly edited: a stripe painted over, brightness changed."""
    out = image.point(lambda v: min(255, int(v * 1.05)))
    out.paste((10, 10, 10), (0, 0, out.width, 6))
    return out


def add_users(home: Path, *accounts: tuple[str, str]) -> None:
    node_home = NodeHome(home)
    conn = open_database(node_home.db_path, node_home.federation(), create=True, writer=True)
    try:
        for name, role in accounts:
            users.add_user(conn, name, role, PASSWORD, now_ms=1, hasher=FAST_HASHER)
    finally:
        conn.close()


def md5_of(n: int) -> str:
    return hashlib.md5(f"signal {n}".encode()).hexdigest()


@dataclass
class Story:
    """What ``fill_store`` wrote: ids a test looks for."""

    pdq: str  # a's PDQ signal of picture(1), labelled entity:example
    pdq_value: str
    noted: str  # the note b's member wrote on it
    retracted: str  # a's retracted md5 signal
    expired: str
    disputed: str  # b's signal that a disputes
    frozen: str | None  # c's signal, c forked (when c exists)


def fill_store(homes: list[Path], extra_signals: int = 0) -> Story:
    """Signals, opinions, a retraction, an expiry and (with a third home) a fork, written by
    each member into its own store and merged into the first home's store."""
    fed = NodeHome(homes[0]).federation()
    keys = [NodeHome(h).key() for h in homes]
    stores = [Store.open(NodeHome(h).db_path, fed, create=True) for h in homes]
    try:
        a, b = stores[0], stores[1]
        pdq_value = hash_image(encode(picture(1), "PNG")).pdq
        pdq = a.append_local(
            keys[0],
            SignalBody("pdq", pdq_value, ("entity:example",), "from a's review"),
            ts=1_700_000_000_000,
        )
        retracted = a.append_local(keys[0], SignalBody("md5", md5_of(1)), ts=1_700_000_001_000)
        a.append_local(keys[0], RetractBody(retracted.id, "listed in error"), ts=1_700_000_002_000)
        expired = a.append_local(
            keys[0], SignalBody("md5", md5_of(2), expires=1_700_000_000_500), ts=1_700_000_003_000
        )
        for n in range(extra_signals):
            a.append_local(
                keys[0],
                SignalBody("md5", md5_of(100 + n), ("incident:bulk",)),
                ts=1_700_000_004_000 + n,
            )
        note = "seen on our platform too, news footage"
        b.append_local(keys[1], OpinionBody(pdq.id, "confirm", (), note), ts=1_700_000_010_000)
        disputed = b.append_local(
            keys[1],
            SignalBody("md5", md5_of(3), ("behaviour:glorification",)),
            ts=1_700_000_011_000,
        )
        a.merge(list(b.all_records()), received_ms=1_700_000_012_000)
        a.append_local(
            keys[0],
            OpinionBody(disputed.id, "dispute", (), "satire, not extremist"),
            ts=1_700_000_013_000,
        )
        frozen = None
        if len(homes) > 2:
            c = stores[2]
            first = c.append_local(keys[2], SignalBody("md5", md5_of(4)), ts=1_700_000_020_000)
            twins = [
                sign_record(
                    keys[2],
                    fed=fed.id,
                    seq=2,
                    prev=first.id,
                    ts=1_700_000_021_000,
                    body=SignalBody("md5", md5_of(n)),
                )
                for n in (5, 6)
            ]
            a.merge([first.canonical] + [r.canonical for r in twins], received_ms=1)
            frozen = first.id
        return Story(pdq.id, pdq_value, note, retracted.id, expired.id, disputed.id, frozen)
    finally:
        for store in stores:
            store.close()


@dataclass
class Response:
    status: int
    text: str
    headers: dict[str, str]
    cookies: list[str]

    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found is not None, self.text[:500]
        return found[1]


class UiNode:
    """A node home served by a real aiohttp server on 127.0.0.1, driven synchronously."""

    def __init__(self, home: Path, *, tls: bool = False) -> None:
        self.home = home
        self.tls = tls
        self.loop = asyncio.new_event_loop()
        self.server = self.run(self._start(home))
        self.browsers: list[Browser] = []

    async def _start(self, home: Path) -> TestServer:
        app = make_app(load_config(home, env={}))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(ssl=app[NODE].tls.server_context() if self.tls else None)
        return server

    @property
    def node(self) -> Node:
        app = self.server.app
        assert app is not None
        return app[NODE]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def browser(self, name: str | None = None, password: str = PASSWORD) -> Browser:
        browser = Browser(self)
        if name is not None:
            answer = browser.login(name, password)
            assert answer.status == 200 and "Sign out" in answer.text, answer.text[:400]
        return browser

    def records(self) -> int:
        """Stored records and logged actions: what a refused form must not change."""
        path = NodeHome(self.home).db_path
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def actions(self) -> int:
        with sqlite3.connect(NodeHome(self.home).db_path) as conn:
            return int(conn.execute("SELECT count(*) FROM ui_actions").fetchone()[0])

    def api(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        token = NodeHome(self.home).token()

        async def call() -> tuple[int, Any]:
            async with aiohttp.ClientSession() as session:
                headers = {"Authorization": f"Bearer {token}"}
                async with session.request(method, self.url(path), headers=headers, **kwargs) as r:
                    return r.status, await r.json(content_type=None)

        return self.run(call())

    def close(self) -> None:
        for browser in self.browsers:
            browser.close()
        self.run(self.server.close())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class Browser:
    """One person's cookie session against a UiNode."""

    def __init__(self, ui: UiNode) -> None:
        self.ui = ui
        self.session = ui.run(self._session())
        ui.browsers.append(self)

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        async def go() -> Response:
            options = {"ssl": False} if self.ui.tls else {}  # the node's self-signed certificate
            async with self.session.request(method, self.ui.url(path), **options, **kwargs) as r:
                return Response(
                    r.status, await r.text(), dict(r.headers), r.headers.getall("Set-Cookie", [])
                )

        return self.ui.run(go())

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", path, data=data, **kwargs)

    def login(self, name: str, password: str = PASSWORD, **kwargs: Any) -> Response:
        token = self.get("/ui/login").csrf()
        form = {"name": name, "password": password, "csrf_token": token, "next": "/ui/"}
        return self.post("/ui/login", form, **kwargs)

    def csrf(self) -> str:
        return self.get("/ui/match").csrf()

    def close(self) -> None:
        if not self.session.closed:
            self.ui.run(self.session.close())
