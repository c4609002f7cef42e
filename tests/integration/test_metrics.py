"""Operations (issue 8): ``GET /metrics`` parsed by prometheus-client, and the JSON logs.

One two-member federation of real ``hashmesh serve`` processes (JSON logs) for the module.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from harness import NodeProc, found_federation, wait_until
from prometheus_client.parser import text_string_to_metric_families

from node.home import NodeHome

PDQ = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProc]]:
    _, nodes = found_federation(tmp_path_factory.mktemp("metrics"), ["a", "b"])
    try:
        for node in nodes:
            node.serve_args = ["--log-format", "json"]
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def scrape(node: NodeProc, headers: dict[str, str] | None = None) -> Samples:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.local_port}/metrics", headers=headers or {}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def status_of(node: NodeProc, signal_id: str) -> object:
    try:
        return node.api("GET", f"/v1/signals/{signal_id}").get("status")
    except urllib.error.HTTPError as e:
        e.close()
        return None


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_move_when_records_merge_and_matches_run(pair: list[NodeProc]) -> None:
    a, b = pair
    wait_until(lambda: value(scrape(a), "hashmesh_peers_up") == 1)
    before = scrape(a)
    assert value(before, "hashmesh_tls_enabled") == 0
    assert value(before, "hashmesh_members") == 2
    added = b.api("POST", "/v1/signals", {"type": "pdq", "value": PDQ, "labels": ["entity:x"]})
    wait_until(lambda: status_of(a, added["id"]) == "active")
    merged = scrape(a)
    assert value(merged, "hashmesh_merged_records_total", status="accepted") == (
        value(before, "hashmesh_merged_records_total", status="accepted") + 1
    )
    assert value(merged, "hashmesh_active_signals", type="pdq") == 1
    assert value(merged, "hashmesh_records") == value(before, "hashmesh_records") + 1
    assert value(merged, "hashmesh_authors") == 2
    assert value(scrape(b), "hashmesh_authored_records_total", kind="signal") == 1

    reply = a.api("POST", "/v1/match", {"hashes": [{"type": "pdq", "value": PDQ}]})
    assert reply["matched"] is True
    matched = scrape(a)
    assert value(matched, "hashmesh_match_requests_total", status="200") == (
        value(merged, "hashmesh_match_requests_total", status="200") + 1
    )
    assert value(matched, "hashmesh_match_seconds_count") == (
        value(merged, "hashmesh_match_seconds_count") + 1
    )
    assert value(matched, "hashmesh_match_queries_total") >= 1

    a.api("POST", "/v1/sync", {"peer": b.url})  # the peer gauges describe b
    peer = scrape(a)
    assert value(peer, "hashmesh_peer_up", peer=b.url) == 1
    assert value(peer, "hashmesh_peer_records_behind", peer=b.url) == 0
    assert 0 <= value(peer, "hashmesh_peer_seconds_since_contact", peer=b.url) < 30
    assert value(peer, "hashmesh_syncs_total", result="unchanged") >= 1


def test_metrics_need_loopback_or_the_token(pair: list[NodeProc]) -> None:
    a = pair[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(a, {"X-Forwarded-For": "203.0.113.9"})  # relayed by a proxy: not local
    refused.value.close()
    assert refused.value.code == 401
    token = NodeHome(a.home).token()
    assert scrape(a, {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {token}"})


def test_json_logs_name_peers_authors_records_and_never_secrets(pair: list[NodeProc]) -> None:
    a, b = pair
    added = a.api("POST", "/v1/signals", {"type": "md5", "value": "a" * 32})
    wait_until(lambda: status_of(b, added["id"]) == "active")
    for node in pair:
        text = (node.home / "serve.log").read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines and len(lines) == len(text.splitlines()), "every log line is JSON"
        home = NodeHome(node.home)
        for secret in (home.key().seed.hex(), home.token()):
            assert secret not in text
    authored = [e for e in _log(a) if e.get("record") == added["id"]]
    assert authored and authored[0]["author"] == a.key and authored[0]["seq"] == added["seq"]
    assert any(e.get("peer") or e.get("peer_key") for e in _log(b)), "merges name their source"


def _log(node: NodeProc) -> list[dict[str, Any]]:
    text = (node.home / "serve.log").read_text()
    return [json.loads(line) for line in text.splitlines()]
