"""The type gate through a node's local API (SPEC 4.5, 11), on a node app served in-process.

The node app (``make_app``: store, index, gossip) runs in this process with aiohttp's test
server on 127.0.0.1, so the test can give its registry a type beyond the core
(``extra_types``), as a node upgraded before the others would have; the other members' nodes
are not running, and their announces arrive as signed records.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from extra_types import EXTRA_TYPE, extra_value, register_extra_type
from harness import NodeProc, found_federation

from node.cli.main import _type_gate_lines as type_gate_lines
from node.config import load_config
from node.home import NodeHome
from node.net.app import make_app
from node.net.context import NODE
from node.store.store import Store
from protocol import AnnounceBody, Record, sign_record
from protocol.signal_types import SIGNAL_TYPES
from protocol.type_gate import CORE_TYPES

T0 = 1_763_800_000_000
KNOWS_EXTRA = sorted(SIGNAL_TYPES)  # what this version's nodes announce
GATED = sorted(set(SIGNAL_TYPES) - CORE_TYPES)


def announce_of(node: NodeProc, fed: str, types: list[str], seq: int = 1,
                prev: str | None = None) -> Record:  # fmt: skip
    """node's member announcing itself with these types, as its own node would."""
    body = AnnounceBody(node.name, (node.url,), types=tuple(types))
    return sign_record(NodeHome(node.home).key(), fed=fed, seq=seq, prev=prev, ts=T0, body=body)


async def call(client: TestClient[Any, Any], method: str, path: str, token: str,
               body: Any = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    response = await client.request(method, path, json=body,
                                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    return response.status, await response.json(content_type=None)


def test_a_signal_of_a_type_not_enabled_is_refused_naming_the_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_extra_type(monkeypatch)  # node a runs a version that knows it; b and c do not
    federation, (a, b, c) = found_federation(tmp_path, ["a", "b", "c"])
    token = NodeHome(a.home).token()
    signal = {"type": EXTRA_TYPE, "value": extra_value(1), "labels": ["entity:x"]}

    async def exchange() -> None:
        app = make_app(load_config(a.home, env={}))
        async with TestClient(TestServer(app)) as client:
            node = app[NODE]
            status, problem = await call(client, "POST", "/v1/signals", token, signal)
            assert status == 409, problem
            assert problem["title"] == "signal type not enabled"
            assert "the nodes of b, c have not announced it" in problem["detail"]
            assert problem["signal_type"] == EXTRA_TYPE
            assert [m["name"] for m in problem["waiting_for"]] == ["b", "c"]
            assert problem["waiting_for"][0]["identity"] == NodeHome(b.home).key().public

            _, state = await call(client, "GET", "/v1/status", token)
            types = {m["name"]: m["types"] for m in state["members"]}
            assert types == {"a": KNOWS_EXTRA, "b": [], "c": []}  # a announced at start
            gate = state["signal_types"]
            assert gate["enabled"] == sorted(CORE_TYPES)
            assert gate["waiting"] == {t: ["b", "c"] for t in GATED}
            assert gate["known"] == list(SIGNAL_TYPES) and gate["unknown_enabled"] == []
            assert type_gate_lines(state) == [  # what `hashmesh status` prints of it
                f"  signal type {t} not enabled yet: waiting for b, c to announce it" for t in GATED
            ]

            # b's node upgrades and announces; c's node announces without the type
            await node.merge([announce_of(b, federation.id, KNOWS_EXTRA).canonical,
                              announce_of(c, federation.id, []).canonical], None)  # fmt: skip
            status, problem = await call(client, "POST", "/v1/signals", token, signal)
            assert status == 409 and "the nodes of c have not announced" in problem["detail"]
            _, state = await call(client, "GET", "/v1/status", token)
            assert state["signal_types"]["waiting"] == {t: ["c"] for t in GATED}

            first_c = announce_of(c, federation.id, [])
            later = announce_of(c, federation.id, KNOWS_EXTRA, seq=2, prev=first_c.id)
            await node.merge([later.canonical], None)
            _, state = await call(client, "GET", "/v1/status", token)
            assert state["signal_types"]["enabled"] == KNOWS_EXTRA
            assert state["signal_types"]["waiting"] == {}

    asyncio.run(exchange())
    with Store.open(NodeHome(a.home).db_path, federation, readonly=True) as store:
        head = store.head(NodeHome(a.home).key().public)
        assert head is not None and head.seq == 1  # only a's announce: no refused signal


def test_a_node_that_does_not_know_an_enabled_type_says_it_must_upgrade(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An auditor's node announces nothing, so the gate does not wait for it: when every
    member's node announces a type it does not know, it warns and its status shows it."""
    federation, (a, b, d) = found_federation(tmp_path, ["a", "b"], auditors=["d"])
    home = NodeHome(d.home)
    with Store.open(home.db_path, federation, create=True) as store:
        announces = [announce_of(n, federation.id, ["tlsh"]) for n in (a, b)]
        store.merge([r.canonical for r in announces], received_ms=T0)

    async def exchange() -> dict[str, Any]:
        app = make_app(load_config(d.home, env={}))
        async with TestClient(TestServer(app)) as client:
            return (await call(client, "GET", "/v1/status", home.token()))[1]

    with caplog.at_level(logging.WARNING, logger="hashmesh.node"):
        state = asyncio.run(exchange())
    assert state["signal_types"]["unknown_enabled"] == ["tlsh"]
    assert type_gate_lines(state)[-1:] == ["  upgrade needed: signal types tlsh are enabled in "
                                           "the federation but unknown to this node"]  # fmt: skip
    assert "tlsh" in state["signal_types"]["enabled"]
    assert any("signal types tlsh are enabled in the federation but unknown to this node"
               in r.getMessage() for r in caplog.records)  # fmt: skip


def test_a_node_announces_its_types_again_after_an_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that knows only the core types announces as older nodes do (no ``types``);
    started with a registry that knows one more type, it announces again, listing them all;
    restarted unchanged, it signs nothing."""
    federation, (a, _) = found_federation(tmp_path, ["a", "b"])
    home = NodeHome(a.home)

    def start_and_stop() -> list[dict[str, object]]:
        async def run() -> None:
            async with TestClient(TestServer(make_app(load_config(a.home, env={})))):
                pass

        asyncio.run(run())
        with Store.open(home.db_path, federation, readonly=True) as store:
            head = store.head(home.key().public)
            assert head is not None
            mine = [e for e in store.endpoints() if e["member"] == home.key().public]
            return [{"seq": head.seq, "types": e.get("types")} for e in mine]

    shipped = dict(SIGNAL_TYPES)
    for name in GATED:  # an older version of the node: its registry holds the core types only
        monkeypatch.delitem(SIGNAL_TYPES, name)
    first = start_and_stop()
    assert first == [{"seq": 1, "types": None}]  # announced as nodes before the gate do
    assert start_and_stop() == first  # restarted unchanged: nothing signed
    for name in GATED:  # the upgrade
        monkeypatch.setitem(SIGNAL_TYPES, name, shipped[name])
    upgraded = start_and_stop()
    assert upgraded == [{"seq": 2, "types": sorted(SIGNAL_TYPES)}]
    assert start_and_stop() == upgraded
