"""What a node offers its match replicas, on a node app served in-process: replica tokens
(read-only, revocable), the snapshot, its one-at-a-time admission, the feed's long poll,
and followers (node.replica.follower) rebuilding after an epoch change without a stampede.

The node app (``make_app``) runs with aiohttp's test server on 127.0.0.1; the store is
filled directly before it starts. Real processes: tests/integration/test_replica.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner, Result
from harness import found_federation

from node.cli.main import cli
from node.config import MediaConfig, load_config
from node.errors import InputError
from node.home import NodeHome
from node.net import replica_api
from node.net.app import make_app
from node.net.context import NODE
from node.replica.follower import Follower
from node.replica.holdings import Holdings
from node.replica.settings import ReplicaSettings
from node.store import replica_tokens
from node.store.changefeed import EPOCH_KEY
from node.store.schema import open_database
from node.store.store import Store
from protocol.bodies import OpinionBody, RetractBody, SignalBody
from protocol.records import sign_record

T0 = 1_700_000_000_000
Client = TestClient[Any, Any]


def md5_of(n: int) -> str:
    return hashlib.md5(f"signal {n}".encode()).hexdigest()


def issue(home: Path, name: str) -> str:
    node_home = NodeHome(home)
    conn = open_database(node_home.db_path, node_home.federation(), create=True, writer=True)
    try:
        return replica_tokens.issue(conn, name, now_ms=T0)
    finally:
        conn.close()


def fill(home: Path, signals: int) -> dict[str, str]:
    """``signals`` md5 signals, then one retracted, one expired, one with an opinion."""
    node_home = NodeHome(home)
    key = node_home.key()
    with Store.open(node_home.db_path, node_home.federation(), create=True) as store:
        for n in range(signals):
            store.append_local(key, SignalBody("md5", md5_of(n), ("entity:x",)), ts=T0 + n)
        gone = store.append_local(key, SignalBody("md5", md5_of(-1)), ts=T0)
        store.append_local(key, RetractBody(gone.id, "mistake"), ts=T0)
        old = store.append_local(key, SignalBody("md5", md5_of(-2), expires=T0 + 1), ts=T0)
    return {"retracted": gone.id, "expired": old.id}


def served(home: Path, run: Callable[[Client, Any], Awaitable[None]]) -> None:
    async def main() -> None:
        app = make_app(load_config(home, env={}))
        async with TestClient(TestServer(app)) as client:
            await run(client, app)

    asyncio.run(main())


async def call(client: Client, method: str, path: str, token: str, body: Any = None,
               **params: str) -> tuple[int, Any]:  # fmt: skip
    response = await client.request(method, path, json=body, params=params,
                                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    text = await response.read()
    if response.content_type == "application/x-ndjson":
        return response.status, [orjson.loads(line) for line in text.splitlines()]
    return response.status, orjson.loads(text)


def test_a_replica_token_reads_the_snapshot_feed_and_lookups_and_nothing_else(
    tmp_path: Path,
) -> None:
    _, (a, _b) = found_federation(tmp_path, ["a", "b"])
    ids = fill(a.home, 3)
    token = issue(a.home, "web-1")
    other = issue(a.home, "web-2")
    node_token = NodeHome(a.home).token()

    async def run(client: Client, app: Any) -> None:
        status, lines = await call(client, "GET", "/v1/snapshot", token)
        assert status == 200
        header, *signals, end = lines
        assert header["snapshot"] == 1 and header["epoch"] and header["cursor"] > 0
        assert header["media"]["min_pdq_quality"] == 50 and header["radii"]["pdq"] == 31
        assert sorted(s["value"] for s in signals) == sorted(md5_of(n) for n in range(3))
        assert {ids["retracted"], ids["expired"]}.isdisjoint(s["id"] for s in signals)
        assert all(s["status"] == "active" and s["member_name"] == "a" for s in signals)
        assert end == {"end": True, "signals": 3}
        assert (await call(client, "GET", "/v1/changes", token, after="0"))[0] == 200
        status, found = await call(client, "GET", "/v1/lookup", token, signal_type="md5",
                                   signal=md5_of(1))  # fmt: skip
        assert status == 200 and found["matched"]

        node = app[NODE]
        author = NodeHome(a.home).key().public
        before = await node.store.read(lambda s: s.head(author))
        writes = [("POST", "/v1/signals", {"type": "md5", "value": "a" * 32}),
                  ("POST", "/v1/match", {"type": "md5", "value": "a" * 32}),
                  ("GET", "/v1/status", None), ("GET", "/v1/records", None),
                  ("POST", f"/v1/signals/{ids['expired']}/retract", {})]  # fmt: skip
        for method, path, body in writes:
            status, problem = await call(client, method, path, token, body)
            assert (status, problem["title"]) == (403, "forbidden for a replica token"), path
            assert "'web-1' is read-only" in problem["detail"]

        assert tokens(a.home, "revoke", "web-1").exit_code == 0  # while the node runs
        for path in ("/v1/snapshot", "/v1/changes", "/v1/lookup", "/v1/signals"):
            status, problem = await call(client, "GET", path, token)
            assert (status, problem["title"]) == (401, "not authorised"), path
        assert (await call(client, "GET", "/v1/changes", other))[0] == 200  # web-2 still works
        assert (await call(client, "GET", "/v1/changes", "hmr_" + "x" * 43))[0] == 401
        assert (await call(client, "GET", "/v1/status", node_token))[0] == 200
        assert await node.store.read(lambda s: s.head(author)) == before  # nothing signed

    served(a.home, run)


def tokens(home: Path, *args: str) -> Result:
    """``hashmesh tokens ARGS --home HOME`` in this process (click's runner)."""
    return CliRunner().invoke(cli, ["tokens", *args, "--home", str(home)])


def test_tokens_commands_issue_list_and_revoke(tmp_path: Path) -> None:
    _, (a, _b) = found_federation(tmp_path, ["a", "b"])
    issued = tokens(a.home, "issue", "--replica", "web-1", "--json")
    assert issued.exit_code == 0, issued.output
    token = orjson.loads(issued.output)["token"]
    assert token.startswith("hmr_") and len(token) == 47
    again = tokens(a.home, "issue", "--replica", "web-1")
    assert isinstance(again.exception, InputError)
    assert "already has an active token" in str(again.exception)
    bad = tokens(a.home, "issue", "--replica", "Web 1")
    assert "replica name 'Web 1' is not valid" in str(bad.exception)
    assert isinstance(tokens(a.home, "revoke", "nobody").exception, InputError)
    revoked = tokens(a.home, "revoke", "web-1")
    assert revoked.output == "revoked the token of replica web-1\n"
    listed = orjson.loads(tokens(a.home, "list", "--json").output)["tokens"]
    assert [(t["name"], t["active"]) for t in listed] == [("web-1", False)]
    assert tokens(a.home, "issue", "--replica", "web-1").exit_code == 0
    human = tokens(a.home, "list").output
    assert human.startswith("web-1") and human.rstrip().endswith("active")
    kept = tmp_path / "web-2.token"  # a replica's token registered again (a restored node)
    kept.write_text(token + "\n")
    assert tokens(a.home, "issue", "--replica", "web-2", "--token-file", str(kept)).exit_code == 0
    kept.write_text("hunter2")
    refused = tokens(a.home, "issue", "--replica", "web-3", "--token-file", str(kept))
    assert "not a replica token" in str(refused.exception)
    conn = open_database(NodeHome(a.home).db_path, NodeHome(a.home).federation(),
                         create=False, writer=False)  # fmt: skip
    try:
        stored = conn.execute("SELECT token_hash FROM replica_tokens").fetchall()
        assert stored and all(token.encode() not in row[0] for row in stored)  # hashes only
        assert replica_tokens.holder(conn, token) == "web-2"  # not web-1's any more
    finally:
        conn.close()


def test_one_snapshot_streams_at_a_time_others_are_told_when_to_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, (a, _b) = found_federation(tmp_path, ["a", "b"])
    fill(a.home, 2)
    token = issue(a.home, "web-1")
    release = asyncio.Event()
    writing = replica_api._write

    async def held(response: Any, data: bytes) -> None:  # the first stream stalls after its header
        await writing(response, data)
        if data.startswith(b'{"snapshot"'):
            await release.wait()

    monkeypatch.setattr(replica_api, "_write", held)

    async def run(client: Client, app: Any) -> None:
        first = asyncio.create_task(call(client, "GET", "/v1/snapshot", token))
        gate = app[replica_api.SNAPSHOT_GATE]
        while not gate.streaming:
            await asyncio.sleep(0.01)
        response = await client.get("/v1/snapshot", headers={"Authorization": f"Bearer {token}"})
        problem = await response.json(content_type=None)
        assert response.status == 429 and response.headers["Retry-After"] == "1"
        assert problem["title"] == "snapshot slots busy" and problem["retry_after_s"] == 1
        release.set()
        status, lines = await first
        assert status == 200 and lines[-1] == {"end": True, "signals": 2}
        assert (await call(client, "GET", "/v1/snapshot", token))[0] == 200  # free again
        counters = app[NODE].counters
        assert counters["replica_snapshots"] == 2 and counters["replica_snapshots_refused"] == 1
        assert gate.most == 1

    served(a.home, run)


def test_the_feed_long_poll_answers_when_a_merge_adds_entries(tmp_path: Path) -> None:
    _, (a, _b) = found_federation(tmp_path, ["a", "b"])
    fill(a.home, 1)
    token = issue(a.home, "web-1")
    node_token = NodeHome(a.home).token()

    async def run(client: Client, app: Any) -> None:
        _, page = await call(client, "GET", "/v1/changes", token, after="0")
        end = str(page["last"])
        began = time.monotonic()
        _, idle = await call(client, "GET", "/v1/changes", token, after=end, wait_ms="300")
        assert idle["changes"] == [] and time.monotonic() - began >= 0.29
        began = time.monotonic()
        poll = asyncio.create_task(call(client, "GET", "/v1/changes", token, after=end,
                                        wait_ms="20000", epoch=page["epoch"]))  # fmt: skip
        await asyncio.sleep(0.2)
        assert not poll.done()
        added = {"type": "md5", "value": md5_of(7)}
        status, record = await call(client, "POST", "/v1/signals", node_token, added)
        assert status == 201
        _, woke = await poll
        assert time.monotonic() - began < 5
        assert [(c["id"], c["kind"]) for c in woke["changes"]] == [(record["id"], "active")]
        status, problem = await call(client, "GET", "/v1/changes", token, after="0",
                                     wait_ms="30001")  # fmt: skip
        assert status == 400 and problem["title"] == "invalid query parameter wait_ms"

    served(a.home, run)


def test_followers_rebuild_after_an_epoch_change_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three followers all see the node's new epoch at once and ask for a snapshot at once
    (no random wait here): the node streams one and tells the others to come back, and
    each ends holding the node's list under the new epoch."""
    _, (a, _b) = found_federation(tmp_path, ["a", "b"])
    fill(a.home, 5)
    tokens = [issue(a.home, f"web-{n}") for n in range(3)]
    writing = replica_api._write

    async def slow(response: Any, data: bytes) -> None:  # a snapshot takes 0.6 s
        await writing(response, data)
        if data.startswith(b'{"snapshot"'):
            await asyncio.sleep(0.6)

    monkeypatch.setattr(replica_api, "_write", slow)

    async def run(client: Client, app: Any) -> None:
        url = str(client.make_url("")).rstrip("/")
        held = [Holdings() for _ in tokens]

        def installer(n: int) -> Callable[[Holdings, MediaConfig], Awaitable[None]]:
            async def swap(holdings: Holdings, media: MediaConfig) -> None:
                held[n] = holdings

            return swap

        async with aiohttp.ClientSession() as session:
            followers = []
            for n, token in enumerate(tokens):
                settings = ReplicaSettings.for_node(url, token, rebuild_jitter_s=0,
                                                    poll_wait_s=0.2)  # fmt: skip
                apply = _applier(held, n)
                followers.append(Follower(settings, session, installer(n), apply,
                                          random.Random(n)))  # fmt: skip
            for follower in followers:  # one after the other here: these loads do not overlap
                await follower.bootstrap()
            first_epoch = followers[0].status.epoch
            node = app[NODE]
            await node.store.write(lambda s: s.set_meta(EPOCH_KEY, "restored0000000"))
            tasks = [asyncio.create_task(f.run()) for f in followers]
            try:
                deadline = time.monotonic() + 20
                while any(f.status.epoch != "restored0000000" for f in followers):
                    assert time.monotonic() < deadline, [f.status for f in followers]
                    await asyncio.sleep(0.05)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        gate = app[replica_api.SNAPSHOT_GATE]
        assert gate.most == 1  # never two snapshots at once
        assert node.counters["replica_snapshots_refused"] >= 2  # all three asked at once
        assert node.counters["replica_snapshots"] == 6
        assert first_epoch != "restored0000000"
        for follower, holdings in zip(followers, held, strict=True):
            assert follower.status.rebuilds == 1 and follower.status.snapshots == 2
            assert sorted(s["value"] for s in holdings.signal_rows(range(100), T0)) == sorted(
                md5_of(n) for n in range(5)
            )
        assert sum(f.status.snapshot_waits for f in followers) >= 2

    served(a.home, run)


def _applier(held: list[Holdings], n: int) -> Callable[[Callable[[Holdings], None]], Any]:
    async def apply(change: Callable[[Holdings], None]) -> None:
        change(held[n])

    return apply


def test_opinions_reach_a_follower_as_new_tallies(tmp_path: Path) -> None:
    federation, (a, b) = found_federation(tmp_path, ["a", "b"])
    fill(a.home, 1)
    token = issue(a.home, "web-1")

    async def run(client: Client, app: Any) -> None:
        url = str(client.make_url("")).rstrip("/")
        held = [Holdings()]

        async def swap(holdings: Holdings, media: MediaConfig) -> None:
            held[0] = holdings

        async with aiohttp.ClientSession() as session:
            settings = ReplicaSettings.for_node(url, token, poll_wait_s=0.2)
            follower = Follower(settings, session, swap, _applier(held, 0))
            await follower.bootstrap()
            node = app[NODE]
            (signal,) = held[0].signal_rows(range(100), T0)
            assert signal["tallies"] == {"confirm": 0, "dispute": 0, "seen": 0}
            body = OpinionBody(signal["id"], "dispute", (), "satire")
            opinion = sign_record(NodeHome(b.home).key(), fed=federation.id, seq=1, prev=None,
                                  ts=T0, body=body)  # fmt: skip
            result = await node.merge([opinion.canonical], None)
            assert result.counts()["accepted"] == 1
            await follower.poll()
            (signal,) = held[0].signal_rows(range(100), T0)
            assert signal["tallies"] == {"confirm": 0, "dispute": 1, "seen": 0}
            assert follower.status.caught_up is not None

    served(a.home, run)


def test_a_replica_answers_uploads_and_lookups_as_its_node_does(tmp_path: Path) -> None:
    """The replica app (node.replica.app) and its node app in one process: an image upload
    and a lookup get the node's answers; ``--api-token-file`` guards the replica's routes;
    readiness and metrics say where it stands."""
    import numpy as np
    from images import encode
    from PIL import Image

    from node.media.hashing import hash_image
    from node.replica.app import make_app as make_replica_app

    _, (a, _b) = found_federation(tmp_path, ["a", "b"])
    picture = Image.fromarray(
        np.random.default_rng(3).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    ).resize((256, 192))
    png = encode(picture, "PNG")
    listed = hash_image(png)
    node_home = NodeHome(a.home)
    with Store.open(node_home.db_path, node_home.federation(), create=True) as store:
        for kind in ("pdq", "md5"):
            body = SignalBody(kind, listed.as_signals()[kind], ("entity:x",), "seen before")
            store.append_local(node_home.key(), body, ts=T0)
    token = issue(a.home, "web-1")
    node_token = node_home.token()

    async def run(client: Client, app: Any) -> None:
        settings = ReplicaSettings.for_node(str(client.make_url("")), token, poll_wait_s=0.2,
                                            api_token="client secret")  # fmt: skip
        async with TestClient(TestServer(make_replica_app(settings))) as replica:
            deadline = time.monotonic() + 20
            while (await replica.get("/readyz")).status != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            form = aiohttp.FormData()
            form.add_field(
                "file",
                encode(picture.resize((240, 180)), "JPEG", quality=85),
                filename="upload.jpg",
            )
            answers = []
            for server, bearer in ((client, node_token), (replica, "client secret")):
                auth = {"Authorization": f"Bearer {bearer}"}
                response = await server.post("/v1/match", data=form(), headers=auth)
                assert response.status == 200, await response.text()
                answers.append(await response.json())
            assert answers[0] == answers[1] and answers[1]["matched"]
            assert {h["type"] for r in answers[1]["results"][0]["results"] for h in r["hits"]} == {
                "pdq"
            }  # the edited copy: PDQ within the radius, MD5 no longer equal
            params = {"signal_type": "video_md5", "signal": listed.md5}
            lookups = [
                await (await server.get("/v1/lookup", params=params,
                                        headers={"Authorization": f"Bearer {bearer}"})).json()
                for server, bearer in ((client, node_token), (replica, "client secret"))
            ]  # fmt: skip
            assert lookups[0] == lookups[1] and lookups[1]["matched"]
            refused = await replica.get("/v1/lookup", params=params)
            assert refused.status == 401
            health = await (await replica.get("/healthz")).json()
            assert (health["status"], health["signals"], health["node_up"]) == ("ok", 2, True)
            metrics = await (await replica.get("/metrics")).text()
            assert "hashmesh_replica_signals 2.0" in metrics
            assert 'hashmesh_match_requests_total{route="match",status="200"} 1.0' in metrics

    served(a.home, run)


def test_a_replica_reaches_an_https_node_only_pinned(tmp_path: Path) -> None:
    """A real TLS node: its seed URL (``#spki=``) is followed; another pin is refused before
    a byte is sent; an https URL without a pin is a configuration error."""
    from node.errors import ConfigError

    _, (a, _b) = found_federation(tmp_path, ["a", "b"], tls=True)
    fill(a.home, 2)
    token = issue(a.home, "web-1")
    a.start()
    try:

        async def follow(url: str) -> Holdings:
            held = [Holdings()]

            async def swap(holdings: Holdings, media: MediaConfig) -> None:
                held[0] = holdings

            async with aiohttp.ClientSession() as session:
                follower = Follower(ReplicaSettings.for_node(url, token), session, swap,
                                    _applier(held, 0))  # fmt: skip
                await follower.bootstrap()
            return held[0]

        assert len(asyncio.run(follow(a.seed))) == 2
        with pytest.raises(aiohttp.ServerFingerprintMismatch):
            asyncio.run(follow(f"{a.url}#spki={'0' * 64}"))
        with pytest.raises(ConfigError, match="an https node is reached pinned"):
            ReplicaSettings.for_node(a.url, token)
    finally:
        a.stop()
