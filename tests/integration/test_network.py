"""Federation acceptance tests (issue 4) with real node processes on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    Link,
    NodeProc,
    found_federation,
    wait_until,
    with_bad_signature,
    write_config,
)

from node.home import NodeHome
from node.net.httpsig import sign_request
from node.store.store import Store
from protocol import Federation
from protocol.bodies import SignalBody
from protocol.keys import SigningKey
from protocol.records import sign_record

PDQ_A = "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22"


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


def add_signal(
    node: NodeProc, value: str, kind: str = "sha256", labels: list[str] | None = None
) -> str:  # sha256: the values are arbitrary (a pdq this near all-zero is featureless, refused)
    reply = node.api(
        "POST", "/v1/signals", {"type": kind, "value": value, "labels": labels or ["entity:test"]}
    )
    return str(reply["id"])


def state_digest(node: NodeProc) -> str:
    return str(node.api("GET", "/v1/status?digest=1")["store"]["state_digest"])


def active_ids(node: NodeProc) -> set[str]:
    rows = node.api("GET", "/v1/signals?active=true&limit=10000")["signals"]
    return {row["id"] for row in rows}


def converged(nodes: list[NodeProc]) -> bool:
    return len({state_digest(n) for n in nodes}) == 1


def test_line_of_five_converges(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    _, nodes = found_federation(tmp_path, ["a", "b", "c", "d", "e"], topology="line")
    start(nodes, stop_all)
    first = add_signal(nodes[0], PDQ_A)
    last = add_signal(nodes[4], "0" * 63 + "1")
    began = time.monotonic()
    wait_until(lambda: all({first, last} <= active_ids(n) for n in nodes), timeout=20)
    elapsed = time.monotonic() - began
    wait_until(lambda: converged(nodes), timeout=20)
    statuses = [n.api("GET", "/v1/status?digest=1")["store"] for n in nodes]
    assert all(s["active_signals"] == 2 for s in statuses)
    assert elapsed < 10, f"propagation across the line took {elapsed:.1f}s"


def test_restarted_node_catches_up(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    _, nodes = found_federation(tmp_path, ["a", "b", "c"])
    start(nodes, stop_all)
    nodes[2].stop()
    ids = {add_signal(nodes[0], f"{i:064x}") for i in range(1, 6)}
    nodes[2].start()
    wait_until(lambda: ids <= active_ids(nodes[2]), timeout=20)
    wait_until(lambda: converged(nodes), timeout=20)


def _heads_digest(node: NodeProc, key: SigningKey) -> str:
    """node's /v1/heads digest (asking makes node remember that frontier, SPEC 10.2)."""
    url = f"http://127.0.0.1:{node.port}/v1/heads"
    headers = sign_request(key, "GET", url, b"", now_s=time.time())
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return str(json.loads(r.read())["digest"])


def test_a_node_that_missed_records_reconciles_through_a_frontier_delta(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    """b is down while a adds signals; a remembers the frontier they shared, so the first
    exchange after b restarts carries only what changed: a delta (b asks a) or "at" (a asks
    b, and plans from its own history). Either way they converge."""
    _, nodes = found_federation(tmp_path, ["a", "b"])
    a, b = nodes
    start(nodes, stop_all)
    key = NodeHome(a.home).key()
    wait_until(lambda: _heads_digest(a, key) == _heads_digest(b, key), timeout=20)
    b.stop()
    ids = {add_signal(a, f"{0xD00 + i:064x}") for i in range(3)}
    b.start()
    wait_until(lambda: ids <= active_ids(b), timeout=20)
    wait_until(lambda: converged(nodes), timeout=20)
    answered = [n.api("GET", "/v1/status")["counters"] for n in nodes]
    assert sum(c.get("heads_delta", 0) + c.get("heads_at", 0) for c in answered) >= 1, answered


# No anti-entropy round within the test, and no random relay: only the push rules act.
PUSH_ONLY = {"interval_s": 600.0, "fanout": 0}


def test_own_records_are_pushed_to_every_peer(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    """A star: the hub knows four leaves, each leaf only the hub. With random relay (fanout
    peers) some leaf would wait for anti-entropy; the hub's own records reach every leaf."""
    _, nodes = found_federation(tmp_path, ["hub", "b", "c", "d", "e"], gossip=PUSH_ONLY)
    hub, leaves = nodes[0], nodes[1:]
    hub.peers = [n.seed for n in leaves]
    for leaf in leaves:
        leaf.peers = [hub.seed]
    for node in nodes:
        write_config(node, PUSH_ONLY)
    start(nodes, stop_all)
    signal = add_signal(hub, f"{0xABC:064x}")
    wait_until(lambda: all(signal in active_ids(leaf) for leaf in leaves), timeout=10)


def test_records_from_their_author_are_relayed_once(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    """A line a - b - c: a's record reaches c only through b's one relay (a never learns c
    before the signal is added: nothing but the push rules runs)."""
    _, nodes = found_federation(tmp_path, ["a", "b", "c"], topology="line", gossip=PUSH_ONLY)
    start(nodes, stop_all)
    first = add_signal(nodes[0], f"{0xDEF:064x}")
    wait_until(lambda: first in active_ids(nodes[2]), timeout=10)
    last = add_signal(nodes[2], f"{0xFED:064x}")
    wait_until(lambda: last in active_ids(nodes[0]), timeout=10)


def test_an_author_asks_only_relay_asks_of_its_peers_to_relay(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    """``relay_asks = 1``: a's signal goes to its four peers, one of them asked to relay it
    (the others get ``relay=0``); that one passes it to one more peer, which has it already.
    So the federation merges exactly one duplicate (asking every peer made four)."""
    gossip = PUSH_ONLY | {"relay_asks": 1}
    _, nodes = found_federation(tmp_path, ["a", "b", "c", "d", "e"], gossip=gossip)
    start(nodes, stop_all)
    for node in nodes:  # every node gets every announce (no rounds run) and backs off no one
        assert node.api("POST", "/v1/sync", {})["errors"] == []
    before = sum(_counter(n, "merge_duplicate") for n in nodes)
    signal = add_signal(nodes[0], f"{0xA5C:064x}")
    wait_until(lambda: all(signal in active_ids(n) for n in nodes), timeout=10)
    wait_until(lambda: sum(_counter(n, "merge_duplicate") for n in nodes) > before, timeout=10)
    time.sleep(1.0)  # a second relay would have landed by now
    assert sum(_counter(n, "merge_duplicate") for n in nodes) - before == 1


def test_catch_up_is_not_pushed_on(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    """A node that catches up pulls (and is pushed) what it missed; it does not push that on,
    so its peers are not made to verify again what they hold (SPEC 10.3)."""
    _, nodes = found_federation(tmp_path, ["a", "b", "c"])
    a, b, c = nodes
    start([a, b], stop_all)
    added = {add_signal(a, f"{0x100 + i:064x}") for i in range(30)}
    wait_until(lambda: added <= active_ids(b), timeout=20)
    before = sum(_counter(n, "merge_duplicate") for n in (a, b))
    start([c], stop_all)
    wait_until(lambda: added <= active_ids(c), timeout=20)
    wait_until(lambda: converged(nodes), timeout=20)
    time.sleep(1.0)  # several anti-entropy rounds: a relay of the catch-up would have landed
    duplicates = sum(_counter(n, "merge_duplicate") for n in (a, b)) - before
    # c's own announce reaches a and b, and each relays it once: a few duplicates, not 30
    assert duplicates < 10, f"{duplicates} duplicate records reached a and b"


def _counter(node: NodeProc, name: str) -> int:
    return int(node.api("GET", "/v1/status")["counters"].get(name, 0))


def test_partition_heals(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    _, nodes = found_federation(tmp_path, ["a", "b", "c", "d"])
    links = {n.name: Link(n.port) for n in nodes}
    source = {n.name: f"127.0.0.{10 + i}" for i, n in enumerate(nodes)}
    for node in nodes:  # peers are reached only through their links
        node.peers = [links[n.name].url for n in nodes if n is not node]
        write_config(node, url=links[node.name].url, source_address=source[node.name])

    def partition(groups: list[set[str]]) -> None:
        for group in groups:
            outsiders = {source[n.name] for n in nodes if n.name not in group}
            for name in group:
                links[name].block(outsiders)

    try:
        start(nodes, stop_all)
        add_signal(nodes[0], f"{7:064x}")
        wait_until(lambda: converged(nodes), timeout=20)
        partition([{"a", "b"}, {"c", "d"}])
        left = {add_signal(nodes[0], f"{100 + i:064x}") for i in range(3)}
        right = {add_signal(nodes[3], f"{200 + i:064x}") for i in range(3)}
        wait_until(lambda: left <= active_ids(nodes[1]) and right <= active_ids(nodes[2]), 20)
        time.sleep(1.0)  # several gossip intervals: nothing may cross the partition
        assert not left & active_ids(nodes[2]) and not left & active_ids(nodes[3])
        assert not right & active_ids(nodes[0]) and not right & active_ids(nodes[1])
        partition([{"a", "b", "c", "d"}])
        wait_until(lambda: all(left | right <= active_ids(n) for n in nodes), timeout=30)
        wait_until(lambda: converged(nodes), timeout=20)
    finally:
        for link in links.values():
            link.close()


def _peer_request(
    node: NodeProc,
    key: SigningKey | None,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    created: float | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{node.port}{path}"
    signed = (
        {} if key is None else sign_request(key, method, url, body, now_s=created or time.time())
    )
    request = urllib.request.Request(
        url, data=body or None, method=method, headers=signed | (headers or {})
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()


def test_peer_api_refuses_bad_requests(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    federation, nodes = found_federation(tmp_path, ["a", "b"])
    start(nodes[:1], stop_all)
    a = nodes[0]
    member = NodeHome(nodes[1].home).key()
    before = a.api("GET", "/v1/status?digest=1")["store"]

    status, headers, body = _peer_request(a, None, "GET", "/v1/heads")
    assert status == 401 and headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(body)["status"] == 401
    assert _peer_request(a, SigningKey(b"\x42" * 32), "GET", "/v1/heads")[0] == 403
    assert _peer_request(a, member, "GET", "/v1/heads", created=time.time() - 600)[0] == 401
    assert _peer_request(a, member, "GET", "/v1/heads")[0] == 200

    record = sign_record(
        member, fed=federation.id, seq=1, prev=None, ts=1, body=SignalBody("md5", "a" * 32)
    )
    url = f"http://127.0.0.1:{a.port}/v1/records"
    body_bytes = record.canonical + b"\n"
    signed = sign_request(member, "POST", url, body_bytes, now_s=time.time())
    tampered = record.canonical.replace(b'"md5"', b'"sha1"') + b"\n"
    bad_digest = urllib.request.Request(url, data=tampered, method="POST", headers=signed)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad_digest, timeout=10)
    refused.value.close()
    assert refused.value.code == 401
    ok = urllib.request.Request(url, data=body_bytes, method="POST", headers=signed)
    with urllib.request.urlopen(ok, timeout=10) as r:
        assert json.loads(r.read())["counts"]["accepted"] == 1
    replay = urllib.request.Request(url, data=body_bytes, method="POST", headers=signed)
    with pytest.raises(urllib.error.HTTPError) as replayed:
        urllib.request.urlopen(replay, timeout=10)
    replayed.value.close()
    assert replayed.value.code == 401
    malformed = [  # each a 400 problem body naming the protocol error, nothing stored
        ("POST", "/v1/records?relay=yes", body_bytes),
        ("POST", "/v1/records", record.canonical),  # NDJSON without its final newline
        ("POST", "/v1/records", b"\n"),  # an empty line
        ("GET", f"/v1/log/{member.public}?limit=0", b""),
        ("GET", f"/v1/log/{member.public}?after=-1", b""),
        ("GET", f"/v1/log/{member.public}?after=x", b""),
    ]
    for method, path, body in malformed:
        status, headers, answer = _peer_request(a, member, method, path, body)
        assert status == 400, (path, status, answer[:200])
        assert headers["Content-Type"].startswith("application/problem+json")
        problem = json.loads(answer)
        assert problem["status"] == 400 and problem["error"] == "SyncError", problem
    after = a.api("GET", "/v1/status?digest=1")["store"]
    assert after["records"] == before["records"] + 1


def test_invalid_pushed_records_are_not_stored(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    federation, nodes = found_federation(tmp_path, ["a", "b"])
    start(nodes[:1], stop_all)
    a = nodes[0]
    member = NodeHome(nodes[1].home).key()
    good = sign_record(
        member, fed=federation.id, seq=1, prev=None, ts=1, body=SignalBody("md5", "b" * 32)
    )
    bad_sig = with_bad_signature(good.canonical, good.sig)
    other_fed = sign_record(
        member, fed="e" * 64, seq=1, prev=None, ts=1, body=SignalBody("md5", "c" * 32)
    ).canonical
    gap = sign_record(
        member, fed=federation.id, seq=5, prev="d" * 64, ts=1, body=SignalBody("md5", "d" * 32)
    ).canonical
    before = a.api("GET", "/v1/status?digest=1")["store"]
    for payload, code in ((bad_sig, "SignatureError"), (other_fed, "FederationMismatchError")):
        status, _, body = _peer_request(a, member, "POST", "/v1/records", payload + b"\n")
        assert status == 422
        outcome = json.loads(body)["outcomes"][0]
        assert outcome["status"] == "rejected" and outcome["error"]["error"] == code
    status, _, body = _peer_request(a, member, "POST", "/v1/records", gap + b"\n")
    assert json.loads(body)["counts"] == {
        "accepted": 0,
        "duplicate": 0,
        "pending": 1,
        "rejected": 0,
    }
    after = a.api("GET", "/v1/status?digest=1")["store"]
    assert after["records"] == before["records"]
    assert after["state_digest"] == before["state_digest"]


def test_equivocation_freezes_author_everywhere(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    federation, nodes = found_federation(tmp_path, ["a", "b", "c"])
    start(nodes[1:], stop_all)  # a does not run: its key equivocates from outside
    cheater = NodeHome(nodes[0].home).key()
    x, y = (
        sign_record(
            cheater, fed=federation.id, seq=1, prev=None, ts=1, body=SignalBody("md5", v * 32)
        )
        for v in ("1", "2")
    )
    for node, record in ((nodes[1], x), (nodes[2], y)):
        status, _, _ = _peer_request(node, cheater, "POST", "/v1/records", record.canonical + b"\n")
        assert status == 200

    def frozen_everywhere() -> bool:
        for node in nodes[1:]:
            state = node.api("GET", "/v1/status?digest=1")
            if state["store"]["forks"] != 1:
                return False
        return True

    wait_until(frozen_everywhere, timeout=20)
    for node in nodes[1:]:
        signals = node.api("GET", f"/v1/signals?member={cheater.public}&limit=100")["signals"]
        assert [s["status"] for s in signals if s["status"] == "active"] == []
    wait_until(lambda: converged(nodes[1:]), timeout=20)


# ---- bulk catch-up: pages written in groups, across logs (node.gossip._pull) -----------------

SMALL_PAGES = {"page_records": 7}


def _history(key: SigningKey, fed: str, count: int) -> list[bytes]:
    out, prev = [], None
    for seq in range(1, count + 1):
        body = SignalBody("md5", hashlib.md5(key.public.encode() + bytes([seq])).hexdigest())
        record = sign_record(key, fed=fed, seq=seq, prev=prev, ts=seq, body=body)
        out.append(record.canonical)
        prev = record.id
    return out


def _bulk_holder(
    tmp_path: Path, count: int
) -> tuple[Federation, NodeProc, NodeProc, list[SigningKey]]:
    """A holder whose database has count records from each of three members (merged before
    it starts, as a restored backup would be); a newcomer that knows only the holder."""
    federation, nodes = found_federation(tmp_path, ["holder", "new", "c", "d"], gossip=SMALL_PAGES)
    holder, newcomer = nodes[0], nodes[1]
    authors = [NodeHome(n.home).key() for n in (holder, nodes[2], nodes[3])]
    with Store.open(holder.home / "hashmesh.db", federation, create=True) as store:
        for key in authors:
            result = store.merge(_history(key, federation.id, count), received_ms=1)
            assert result.counts()["accepted"] == count
    holder.peers, newcomer.peers = [], [holder.url]
    for node in (holder, newcomer):
        write_config(node, SMALL_PAGES)
    return federation, holder, newcomer, authors


def _head_seq(node: NodeProc, federation: Federation, author: str) -> int:
    with Store.open(node.home / "hashmesh.db", federation, readonly=True) as store:
        head = store.head(author)
    return 0 if head is None else head.seq


def test_bulk_catch_up_in_pages_across_logs(tmp_path: Path, stop_all: list[NodeProc]) -> None:
    """3 x 150 records in pages of 7: many pages per transaction group and groups that span
    the end of one log and the start of the next; the newcomer ends identical."""
    _, holder, newcomer, _ = _bulk_holder(tmp_path, 150)
    start([holder, newcomer], stop_all)
    wait_until(lambda: converged([holder, newcomer]), timeout=30)
    status = newcomer.api("GET", "/v1/status")["store"]
    assert status["records"] >= 3 * 150 and status["pending"] == 0


def test_bulk_catch_up_stops_at_a_record_that_does_not_verify(
    tmp_path: Path, stop_all: list[NodeProc]
) -> None:
    """The holder serves one record with a broken signature in the middle of a log: the
    newcomer keeps everything before it, stores nothing that fails verification, and treats
    the holder as misbehaving; the pull ends (no hang) and is retried after the backoff."""
    federation, holder, newcomer, authors = _bulk_holder(tmp_path, 60)
    victim = authors[1].public
    db = sqlite3.connect(holder.home / "hashmesh.db")
    (ref,) = db.execute("SELECT ref FROM keys WHERE key = ?", (victim,)).fetchone()
    row, raw = db.execute(
        "SELECT row, raw FROM records WHERE author = ? AND seq = 30", (ref,)
    ).fetchone()
    sig = json.loads(raw)["sig"]
    db.execute("UPDATE records SET raw = ? WHERE row = ?", (with_bad_signature(raw, sig), row))
    db.commit()
    db.close()
    start([holder, newcomer], stop_all)
    wait_until(lambda: _head_seq(newcomer, federation, victim) == 29, timeout=30)
    # (logs planned after the bad one are not pulled from this peer: it is backed off whole)

    def misbehaved() -> bool:
        peers = newcomer.api("GET", "/v1/status")["peers"]
        return any("misbehaved" in str(p.get("last_error")) for p in peers)

    wait_until(misbehaved, timeout=30)
    with Store.open(newcomer.home / "hashmesh.db", federation, readonly=True) as store:
        stored = list(store.log(victim, 0, 1000))
    assert [json.loads(r)["seq"] for r in stored] == list(range(1, 30))
    assert newcomer.api("GET", "/v1/status")["store"]["pending"] <= 30
