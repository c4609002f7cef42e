"""Membership on running nodes (issue 13, items 1, 2 and 4), with real node processes.

- A removal takes effect at once on every running node: the removed member's URL leaves the
  peer set and its key is refused in the merge that reaches the threshold, so its store never
  receives a record authored afterwards.
- A member admitted while its node runs announces itself as soon as it learns the admission.
- A fork between real nodes (two homes sharing one member key) is logged, counted in
  ``hashmesh_forks_detected``, shown by ``/v1/status`` and ``hashmesh status``, and freezes the
  author for storage and for transport on every node that learns it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import FAST_GOSSIP, REPO, NodeProc, found_federation, free_port, hm, wait_until
from harness import write_config as write_node_config
from prometheus_client.parser import text_string_to_metric_families

from node.home import NodeHome, init_home
from node.net.httpsig import sign_request
from node.store.store import Store
from protocol import Federation
from protocol.keys import SigningKey

pytestmark = pytest.mark.slow
INTERVAL_S = float(FAST_GOSSIP["interval_s"])


@pytest.fixture
def stop_all() -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []
    yield started
    for node in started:
        node.stop()


def start(nodes: list[NodeProc], started: list[NodeProc]) -> None:
    for node in nodes:
        node.start()
        started.append(node)


def add_signal(node: NodeProc, n: int) -> str:
    value = hashlib.sha256(str(n).encode()).hexdigest()  # a PDQ hash with features
    body = {"type": "pdq", "value": value, "labels": ["entity:test"]}
    return str(node.api("POST", "/v1/signals", body)["id"])


def active_ids(node: NodeProc) -> set[str]:
    rows = node.api("GET", "/v1/signals?active=true&limit=10000")["signals"]
    return {row["id"] for row in rows}


def stored(node: NodeProc, federation: Federation, record_id: str) -> bool:
    """Whether the record is in node's database at all (active or not)."""
    with Store.open(node.home / "hashmesh.db", federation, readonly=True) as store:
        return store.record(record_id) is not None


def head_seq(node: NodeProc, federation: Federation, author: str) -> int:
    with Store.open(node.home / "hashmesh.db", federation, readonly=True) as store:
        head = store.head(author)
    return 0 if head is None else head.seq


def status(node: NodeProc) -> dict[str, Any]:
    return dict(node.api("GET", "/v1/status"))


def member_entry(state: dict[str, Any], key: str) -> dict[str, Any]:
    return next(m for m in state["members"] if m["key"] == key)


def peer_urls(state: dict[str, Any]) -> set[str]:
    return {str(p["url"]) for p in state["peers"]}


def barred_urls(node: NodeProc) -> set[str]:
    return {str(p["url"]) for p in status(node)["barred_peers"]}


def peer_keys(state: dict[str, Any]) -> set[str]:
    """The member keys of the peers that this node traced to an announce."""
    return {str(p["key"]) for p in state["peers"] if p["key"]}


def peer_get(node: NodeProc, key: SigningKey, path: str) -> int:
    """Status of a GET to node's peer API signed with key."""
    url = f"http://127.0.0.1:{node.port}{path}"
    headers = sign_request(key, "GET", url, b"", now_s=time.time())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code)


def scrape(node: NodeProc, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.local_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and not s.labels
    )


# ---- item 1: a removal takes effect at once -------------------------------------------------


def test_removed_member_receives_no_record_authored_after_removal(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    federation, nodes = found_federation(tmp_path, ["a", "b", "c", "d"])
    a, b, c, d = nodes
    start(nodes, stop_all)
    early = add_signal(c, 1)
    wait_until(lambda: all(early in active_ids(n) for n in nodes), timeout=20)
    # D has been a member for a while: every node holds its announce (what names its URL)
    wait_until(lambda: all(d.key in peer_keys(status(n)) for n in (a, b, c)), timeout=20)
    for voter in (a, b):  # each names D's head as it sees it
        after = head_seq(voter, federation, d.key)
        voter.api("POST", "/v1/votes", {"action": "remove", "member": d.key, "after": after})

    def removal_seen(node: NodeProc) -> dict[str, Any] | None:
        state = status(node)
        return state if member_entry(state, d.key)["removed"] else None

    seen = {n.name: wait_until(lambda n=n: removal_seen(n), timeout=20) for n in (a, b, c)}
    late = add_signal(c, 2)  # authored after the removal took effect everywhere
    wait_until(lambda: all(late in active_ids(n) for n in (a, b)), timeout=20)
    deadline = time.monotonic() + 6 * INTERVAL_S  # pushes, relays and anti-entropy rounds
    while time.monotonic() < deadline:
        assert not stored(d, federation, late), "the removed member received a new record"
        time.sleep(INTERVAL_S / 3)
    assert stored(d, federation, early)
    for name, state in seen.items():  # the merge that removed D dropped its URL at once
        assert d.url not in peer_urls(state), (name, state["peers"])
    d_key = NodeHome(d.home).key()
    for node in (a, b, c):  # its requests are refused, and nobody lists its URL again
        assert peer_get(node, d_key, "/v1/heads") == 403
        state = status(node)
        assert d.url not in peer_urls(state)
        assert state["barred_peers"] == [{"url": d.url, "reason": "member d was removed"}]
    for path, body in (("/v1/peers", {"url": d.url}), ("/v1/sync", {"peer": d.url})):
        with pytest.raises(urllib.error.HTTPError) as refused:  # an operator cannot add it back
            a.api("POST", path, body)
        refused.value.close()
        assert refused.value.code == 409, path
    assert d.url not in peer_urls(status(a))


# ---- item 2: a newly admitted member announces itself -----------------------------------


def test_admitted_member_announces_itself_without_restart(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    federation, nodes = found_federation(tmp_path, ["a", "b", "c"])
    a, b, _ = nodes
    newcomer = NodeProc("e", tmp_path / "e", free_port())
    init_home(newcomer.home, name="e", listen=f"127.0.0.1:{newcomer.port}", url=newcomer.url,
              tls=False)  # fmt: skip
    NodeHome(newcomer.home).install_federation(federation)
    newcomer.peers = [a.url]  # the founders do not know its URL: only an announce tells them
    write_node_config(newcomer, {"backoff_max_s": 60.0})  # the default
    start([*nodes, newcomer], stop_all)

    def refused_often() -> bool:  # exponential backoff would now wait 0.3 s * 2^6 * [0.5, 1]
        return any(p["failures"] >= 6 for p in status(newcomer)["peers"])

    wait_until(refused_often, timeout=30)
    for voter in (a, b):
        body = {"action": "admit", "member": newcomer.key, "name": "e", "role": "member"}
        voter.api("POST", "/v1/votes", body)
    began = time.monotonic()
    wait_until(lambda: all(newcomer.url in peer_urls(status(n)) for n in nodes), timeout=30)
    elapsed = time.monotonic() - began
    # a refusal (403) is retried every interval, not backed off: the admission is seen soon
    assert elapsed < 25 * INTERVAL_S, f"the new member's URL took {elapsed:.1f}s to be known"
    theirs = add_signal(nodes[2], 3)  # c never had the newcomer in its config
    wait_until(lambda: theirs in active_ids(newcomer), timeout=20)
    mine = add_signal(newcomer, 4)
    wait_until(lambda: all(mine in active_ids(n) for n in nodes), timeout=20)


# ---- item 4: a fork surfaces everywhere -------------------------------------------------


def _log_lines(node: NodeProc) -> list[dict[str, Any]]:
    assert node.log_path is not None
    lines = node.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_fork_between_real_nodes_is_surfaced_and_frozen_everywhere(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    """A member's home copied and started twice: both nodes sign a different seq 1 (their
    announces name different URLs). Every other node logs it, counts it, shows it, and
    freezes the author: its signals stop counting, its key is refused, its URLs dropped."""
    _, nodes = found_federation(tmp_path, ["a", "b", "c"])
    a, b, c = nodes
    twin = NodeProc("a", tmp_path / "a-twin", free_port())
    shutil.copytree(a.home, twin.home)  # the same member key, before either ran
    twin.peers = [b.url, c.url]
    write_node_config(twin)
    for node in (*nodes, twin):
        node.serve_args = ["--log-format", "json"]
    start(nodes, stop_all)
    wait_until(lambda: all(a.url in peer_urls(status(n)) for n in (b, c)), timeout=20)
    signal = add_signal(a, 5)
    wait_until(lambda: all(signal in active_ids(n) for n in (b, c)), timeout=20)
    start([twin], stop_all)  # its announce is a second record at the key's seq 1

    def frozen_on(node: NodeProc) -> dict[str, Any] | None:
        state = status(node)  # the evidence is stored, and the membership adopted
        return state if state["store"]["forks"] == 1 and state.get("forks") else None

    key = NodeHome(a.home).key()
    for node in (b, c):
        state = wait_until(lambda node=node: frozen_on(node), timeout=20)
        assert state["forks"] == [
            {"author": key.public, "member": "a", "seq": 1, "counts_through": 0}
        ]
        assert member_entry(state, key.public)["frozen"] == {"after": 0, "reason": "fork"}
        assert {a.url, twin.url}.isdisjoint(peer_urls(state)), state["peers"]
        # the twin's URL too: its announce never counted, but its key signed it
        wait_until(lambda node=node: {a.url, twin.url} <= barred_urls(node), timeout=10)
        assert signal not in active_ids(node)
        assert peer_get(node, key, "/v1/heads") == 403
        assert scrape(node, "hashmesh_forks_detected_total") == 1
        warnings = [line for line in _log_lines(node) if line["msg"].startswith("fork detected")]
        assert len(warnings) == 1 and warnings[0]["level"] == "warning", warnings
        assert warnings[0]["author"] == key.public and warnings[0]["seq"] == 1
        cli = subprocess.run(
            [sys.executable, "-m", "node", "status", "--home", str(node.home)],
            capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
        )  # fmt: skip
        assert f"fork: a ({key.public[:16]}…) signed two records at seq 1" in cli.stdout


def peer_heads(node: NodeProc, key: SigningKey) -> dict[str, Any]:
    """node's GET /v1/heads answer (the frontier and its digest), signed with key."""
    url = f"http://127.0.0.1:{node.port}/v1/heads"
    headers = sign_request(key, "GET", url, b"", now_s=time.time())
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return dict(json.loads(r.read()))


def test_nodes_that_stored_different_records_past_a_fork_reach_equal_frontiers(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    """SPEC 10.2: a frozen author's head is listed at its cap. B holds a's X1, X2 (from a),
    C holds the twin's Y1 before they meet; after they exchange, both know the fork at seq 1
    (cap 0) and B still stores X2. Uncapped, B's head of a stays X2 and C's Y1 for ever (C
    never accepts X2), so their /v1/heads digests never agree; capped, a is left out of both
    frontiers and they agree."""
    federation, nodes = found_federation(tmp_path, ["a", "b", "c"])
    a, b, c = nodes
    twin = NodeProc("a", tmp_path / "a-twin", free_port())
    shutil.copytree(a.home, twin.home)  # the same member key, before either ran
    b.peers, c.peers, a.peers, twin.peers = [], [], [b.url], [c.url]  # two halves
    for node in (a, b, c, twin):
        write_node_config(node)
    start([b, c, a, twin], stop_all)
    x2 = add_signal(a, 6)  # a's seq 2; its announce is seq 1, the twin's another seq 1
    wait_until(lambda: stored(b, federation, x2), timeout=20)
    wait_until(lambda: head_seq(c, federation, a.key) == 1, timeout=20)
    a.stop()
    twin.stop()
    b_key = NodeHome(b.home).key()
    before = {n.name: peer_heads(n, b_key) for n in (b, c)}
    assert before["b"]["digest"] != before["c"]["digest"]
    b.api("POST", "/v1/peers", {"url": c.url})  # the halves meet
    c.api("POST", "/v1/peers", {"url": b.url})
    for node in (b, c):
        wait_until(lambda node=node: status(node)["store"]["forks"] == 1, timeout=20)

    def digests() -> tuple[str, str] | None:
        pair = (peer_heads(b, b_key)["digest"], peer_heads(c, b_key)["digest"])
        return pair if pair[0] == pair[1] else None

    wait_until(digests, timeout=15 * INTERVAL_S + 5)
    for node in (b, c):
        heads = peer_heads(node, b_key)["heads"]
        assert a.key not in {h["author"] for h in heads}  # cap 0: left out
        assert [f["author"] for f in peer_heads(node, b_key)["forks"]] == [a.key]
    assert head_seq(b, federation, a.key) == 2 and stored(b, federation, x2)  # still stored
    assert not stored(c, federation, x2)  # past the cap: never accepted
    # a live audit reads b's capped frontier and the fork's records (not X2): clean
    audit = hm("audit", "--node", b.url, "--home", b.home, "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["clean"] is True
