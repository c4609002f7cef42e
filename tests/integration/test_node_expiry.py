"""A node's match index drops signals when they expire, without a restart: a real node
process answers ``POST /v1/match`` and ``GET /v1/lookup`` for a signal that expires in a
second, then after its expiry answers it as not matched (issue 21: the index was never told
of expiries, so hits with status ``expired`` came back until the node restarted)."""

from __future__ import annotations

import hashlib
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import NodeProc, found_federation, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    _, (a,) = found_federation(tmp_path, ["a"], threshold=1)
    a.start()
    try:
        yield a
    finally:
        a.stop()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def match(node: NodeProc, value: str) -> dict[str, Any]:
    answer: dict[str, Any] = node.api("POST", "/v1/match", {"type": "md5", "value": value})
    return answer


def lookup(node: NodeProc, value: str) -> dict[str, Any]:
    answer: dict[str, Any] = node.api("GET", f"/v1/lookup?signal_type=md5&signal={value}")
    return answer


def active_md5_gauge(node: NodeProc) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.local_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    (line,) = [x for x in text.splitlines() if x.startswith('hashmesh_active_signals{type="md5"}')]
    return line.split()[-1]


def test_an_expired_signal_stops_matching_without_a_restart(node: NodeProc) -> None:
    lasting, brief, later = md5("lasting"), md5("brief"), md5("later")
    node.api("POST", "/v1/signals", {"type": "md5", "value": lasting})
    soon = int(time.time() * 1000) + 1_500
    added = node.api("POST", "/v1/signals", {"type": "md5", "value": brief, "expires": soon})
    node.api("POST", "/v1/signals", {"type": "md5", "value": later, "expires": soon + 60_000})
    started = node.api("GET", "/v1/status")["node"]["uptime_s"]

    before = match(node, brief)
    assert before["matched"] and before["results"][0]["hits"][0]["id"] == added["id"]
    assert before["results"][0]["hits"][0]["status"] == "active"
    assert lookup(node, brief)["matched"]
    assert node.api("GET", "/v1/status")["index"]["signals"] == 3
    assert active_md5_gauge(node) == "3.0"

    # the timer drops it from the index at its expiry, no query needed
    wait_until(lambda: node.api("GET", "/v1/status")["index"]["signals"] == 2, timeout=10)
    assert time.time() * 1000 >= soon
    assert active_md5_gauge(node) == "2.0"
    after = match(node, brief)
    assert not after["matched"] and after["results"][0]["hits"] == []
    assert after["results"][0]["total_hits"] == 0
    looked = lookup(node, brief)
    assert not looked["matched"] and looked["hits"] == []
    assert match(node, lasting)["matched"] and lookup(node, later)["matched"]  # the others stay
    status = node.api("GET", "/v1/status")["node"]
    assert status["uptime_s"] >= started  # the same process all along
    shown = node.api("GET", f"/v1/signals/{added['id']}")
    assert shown["status"] == "expired"
