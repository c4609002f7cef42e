"""Match replicas as real processes (``hashmesh replica``) beside a real federation.

Two founders' nodes run (``a`` and ``b``, gossiping); three replicas follow ``a`` with
tokens ``a`` issued (``hashmesh tokens issue --replica``). Signals are added, retracted and
expired on ``b``, so they reach the replicas the way the federation's records reach a
member: gossip to ``a``, then ``a``'s change feed. Replica ``r2`` refuses when stale, the
others serve. The processes are what costs, so one test runs every step on one
federation (a module fixture would be started again by every xdist worker that runs one
of several tests); each step first waits until every replica is ready and caught up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import REPO, NodeProc, found_federation, free_port, hm, wait_until

from node.home import NodeHome
from node.store import replica_tokens
from node.store.schema import open_database

pytestmark = pytest.mark.slow

MAX_LAG_S = 2.0
WITHIN_S = 1.0  # the acceptance bound: a change on the federation on every replica


@dataclass
class ReplicaProc:
    name: str
    node: NodeProc
    token_file: Path
    port: int
    stale: str = "serve"
    process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        log = (self.token_file.parent / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node", "replica", "--port", str(self.port),
             "--token-file", str(self.token_file), "--max-lag-s", str(MAX_LAG_S),
             "--stale", self.stale, "--rebuild-jitter-s", "2"],
            env=os.environ | {"HASHMESH_REPLICA_NODE": f"http://127.0.0.1:{self.node.port}"},
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        log.close()
        if wait:
            wait_until(self.ready, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)
        self.process = None

    def log(self) -> str:
        return (self.token_file.parent / f"{self.name}.log").read_text(errors="replace")[-3000:]

    def get(self, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return request(self.port, "GET", path)

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log()}")
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def health(self) -> dict[str, Any]:
        return self.get("/healthz")[1]

    def match(self, kind: str, value: str) -> dict[str, Any]:
        status, answer, _ = request(self.port, "POST", "/v1/match", {"type": kind, "value": value})
        assert status == 200, answer
        return answer

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"no metric {name}")


def request(port: int, method: str, path: str, body: Any = None,
            token: str | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:  # fmt: skip
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(r, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read()), dict(e.headers)


@dataclass
class Fed:
    a: NodeProc
    b: NodeProc
    replicas: list[ReplicaProc]
    root: Path

    def ready(self) -> None:
        stopped = [node for node in (self.a, self.b) if node.process is None]
        with ThreadPoolExecutor(2) as pool:  # both start at once
            list(pool.map(NodeProc.start, stopped))
        for replica in self.replicas:
            if replica.process is None:
                replica.start(wait=False)
        wait_until(lambda: all(r.ready() for r in self.replicas), timeout=40)
        wait_until(lambda: all(r.health()["status"] == "ok" for r in self.replicas), timeout=15)


def issue_token(node: NodeProc, name: str, token: str | None = None) -> Path:
    """What ``hashmesh tokens issue --replica NAME [--token-file]`` does (tests/integration/
    test_replica_api.py runs the command itself)."""
    home = NodeHome(node.home)
    conn = open_database(home.db_path, home.federation(), create=True, writer=True)
    try:
        token = replica_tokens.issue(conn, name, now_ms=int(time.time() * 1000), token=token)
    finally:
        conn.close()
    path = node.home.parent / f"{name}.token"
    path.write_text(token + "\n")
    return path


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    root = tmp_path
    _, (a, b) = found_federation(root, ["a", "b"])
    replicas = [
        ReplicaProc(
            f"r{n}", a, issue_token(a, f"r{n}"), free_port(), "refuse" if n == 2 else "serve"
        )
        for n in range(3)
    ]
    f = Fed(a, b, replicas, root)
    try:
        f.ready()
        yield f
    finally:
        for replica in replicas:
            replica.stop()
        a.stop()
        b.stop()


def everywhere(fed: Fed, kind: str, value: str, matched: bool) -> float:
    """Wait until every replica answers matched (or not) for the hash; the seconds it took."""
    began = time.monotonic()
    wait_until(lambda: all(r.match(kind, value)["matched"] is matched for r in fed.replicas),
               timeout=10, step=0.01)  # fmt: skip
    return time.monotonic() - began


def md5(n: int) -> str:
    return f"{n:032x}"


def a_signal_added_retracted_and_expired_on_the_federation_reaches_every_replica(
    fed: Fed,
) -> None:
    fed.ready()  # every replica ready and caught up first
    value = md5(int(time.time() * 1000))
    body = {"type": "md5", "value": value, "labels": ["entity:x"], "note": "from b"}
    added = fed.b.api("POST", "/v1/signals", body)
    assert everywhere(fed, "md5", value, True) < WITHIN_S
    on_node = fed.a.api("POST", "/v1/match", {"type": "md5", "value": value})
    for replica in fed.replicas:  # the node's answer, provenance and all
        assert replica.match("md5", value) == on_node
    (hit,) = on_node["results"][0]["hits"]
    assert (hit["id"], hit["member_name"], hit["note"]) == (added["id"], "b", "from b")

    fed.b.api("POST", f"/v1/signals/{added['id']}/retract", {"reason": "mistake"})
    assert everywhere(fed, "md5", value, False) < WITHIN_S

    soon = int(time.time() * 1000) + 1500
    expiring = md5(int(time.time() * 1000) + 1)
    fed.b.api("POST", "/v1/signals", {"type": "md5", "value": expiring, "expires": soon})
    assert everywhere(fed, "md5", expiring, True) < WITHIN_S
    time.sleep(max(0.0, soon / 1000 - time.time()))
    assert everywhere(fed, "md5", expiring, False) < WITHIN_S
    assert not fed.a.api("POST", "/v1/match", {"type": "md5", "value": value})["matched"]


def a_replica_restarted_mid_stream_catches_up(fed: Fed) -> None:
    fed.ready()  # every replica ready and caught up first
    r0 = fed.replicas[0]
    base = int(time.time() * 1000) * 100
    for n in range(20):
        fed.a.api("POST", "/v1/signals", {"type": "md5", "value": md5(base + n)})
        if n == 5:
            r0.stop(signal.SIGKILL)  # mid-stream: it held some of these
        if n == 10:
            r0.start(wait=False)  # loads a snapshot while signals keep coming
    wait_until(r0.ready, timeout=30)
    assert everywhere(fed, "md5", md5(base + 19), True) < WITHIN_S
    active = fed.a.api("GET", "/v1/status")["store"]["active_signals"]
    wait_until(lambda: all(r.health()["signals"] == active for r in fed.replicas))

    # the node restarts (same database): replicas resume from their cursors, no new snapshot
    snapshots = [r.metric("hashmesh_replica_snapshots_total") for r in fed.replicas]
    fed.a.stop()
    fed.a.start()
    wait_until(lambda: all(r.health()["status"] == "ok" for r in fed.replicas), timeout=15)
    fed.a.api("POST", "/v1/signals", {"type": "md5", "value": md5(base + 20)})
    # the first change after the node's restart: a replica may still be in its jittered
    # reconnect wait (feed errors >= 1 below), so this one bound is two seconds
    assert everywhere(fed, "md5", md5(base + 20), True) < 2 * WITHIN_S
    assert [r.metric("hashmesh_replica_snapshots_total") for r in fed.replicas] == snapshots
    assert all(r.metric("hashmesh_replica_rebuilds_total") == 0 for r in fed.replicas)
    assert all(r.metric("hashmesh_replica_feed_errors_total") >= 1 for r in fed.replicas)


def a_replica_behind_its_node_says_so_and_serves_or_refuses(fed: Fed) -> None:
    fed.ready()  # every replica ready and caught up first
    serving, refusing = fed.replicas[1], fed.replicas[2]
    value = md5(int(time.time() * 1000))
    fed.a.api("POST", "/v1/signals", {"type": "md5", "value": value})
    everywhere(fed, "md5", value, True)
    assert fed.a.process is not None
    fed.a.process.send_signal(signal.SIGSTOP)  # the node hangs: no answer, no error
    try:
        wait_until(lambda: not refusing.ready(), timeout=10)
        status, problem, _ = request(refusing.port, "POST", "/v1/match",
                                     {"type": "md5", "value": value})  # fmt: skip
        assert status == 503 and problem["title"] == "replica not ready"
        status, body, _ = refusing.get("/healthz")
        assert status == 200 and body["status"] == "stale" and body["lag_s"] > MAX_LAG_S
        assert refusing.metric("hashmesh_replica_ready") == 0
        assert refusing.metric("hashmesh_replica_lag_seconds") > MAX_LAG_S

        status, body, _ = serving.get("/readyz")
        assert status == 200 and body["status"] == "stale" and body["lag_s"] > MAX_LAG_S
        status, answer, headers = request(serving.port, "POST", "/v1/match",
                                          {"type": "md5", "value": value})  # fmt: skip
        assert status == 200 and answer["matched"]  # answered from what it holds
        assert headers["Hashmesh-Replica-Stale"] == "1"
        assert float(headers["Hashmesh-Replica-Lag-S"]) > MAX_LAG_S
    finally:
        fed.a.process.send_signal(signal.SIGCONT)
    wait_until(lambda: all(r.health()["status"] == "ok" for r in fed.replicas), timeout=10)
    _, _, headers = request(serving.port, "POST", "/v1/match", {"type": "md5", "value": value})
    assert "Hashmesh-Replica-Stale" not in headers

    fed.a.stop()  # gone: the replicas say the node is unreachable
    try:
        wait_until(lambda: not refusing.ready() and serving.health()["status"] == "stale")
        body = serving.get("/readyz")[1]
        assert not body["node_up"] and body["reason"].startswith("the node is unreachable")
    finally:
        fed.a.start()


def the_node_restored_from_a_backup_makes_replicas_rebuild_one_at_a_time(
    fed: Fed,
) -> None:
    fed.ready()  # every replica ready and caught up first
    value = md5(int(time.time() * 1000))
    fed.b.api("POST", "/v1/signals", {"type": "md5", "value": value})
    everywhere(fed, "md5", value, True)
    backup = fed.root / "backup.jsonl"  # what `hashmesh export` writes: GET /v1/records
    token = NodeHome(fed.a.home).token()
    records = urllib.request.Request(f"http://127.0.0.1:{fed.a.port}/v1/records",
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    with urllib.request.urlopen(records, timeout=30) as answer:
        backup.write_bytes(answer.read())
    old_epoch = fed.replicas[0].health()["epoch"]
    fed.a.stop()
    home = NodeHome(fed.a.home)
    for suffix in ("", "-wal", "-shm"):  # the machine lost its database: restore the backup
        Path(f"{home.db_path}{suffix}").unlink(missing_ok=True)
    restored = hm("import", "--home", fed.a.home, backup)
    assert restored.returncode == 0, restored.stderr
    for replica in fed.replicas:  # tokens are not records: register the replicas' again
        issue_token(fed.a, replica.name, replica.token_file.read_text().strip())
    fed.a.start()
    wait_until(lambda: all(r.health()["epoch"] not in (None, old_epoch) for r in fed.replicas),
               timeout=30)  # fmt: skip
    wait_until(lambda: all(r.ready() for r in fed.replicas), timeout=10)
    active = fed.a.api("GET", "/v1/status")["store"]["active_signals"]
    assert all(r.health()["signals"] == active for r in fed.replicas)
    assert all(r.match("md5", value)["matched"] for r in fed.replicas)
    counters = fed.a.api("GET", "/v1/status")["counters"]
    assert counters["replica_snapshots"] == 3
    assert counters["replica_snapshot_streams_most"] == 1  # never two at once
    assert all(r.metric("hashmesh_replica_rebuilds_total") == 1 for r in fed.replicas)


def a_revoked_replica_token_is_refused(fed: Fed) -> None:
    fed.ready()  # every replica ready and caught up first
    r1 = fed.replicas[1]
    token = r1.token_file.read_text().strip()
    status, problem, _ = request(fed.a.port, "POST", "/v1/signals",
                                 {"type": "md5", "value": md5(1)}, token)  # fmt: skip
    assert status == 403 and problem["title"] == "forbidden for a replica token"
    assert hm("tokens", "revoke", "r1", "--home", fed.a.home).returncode == 0
    try:
        status, problem, _ = request(fed.a.port, "GET", "/v1/changes", None, token)
        assert status == 401 and problem["title"] == "not authorised"
        wait_until(lambda: not r1.health()["node_up"], timeout=10)
        assert "401" in r1.health()["last_error"]
        assert all(r.health()["node_up"] for r in fed.replicas if r is not r1)
    finally:
        issue_token(fed.a, "r1", token)  # registered again: r1 follows the node once more
    wait_until(lambda: r1.health()["node_up"], timeout=15)


@pytest.mark.timeout(600)
def test_three_replicas_follow_a_federation_through_changes_outages_and_a_restore(
    fed: Fed,
) -> None:
    """One federation for every step (processes are what costs here): each step is one
    acceptance point, and leaves every replica following the node again."""
    a_signal_added_retracted_and_expired_on_the_federation_reaches_every_replica(fed)
    a_replica_behind_its_node_says_so_and_serves_or_refuses(fed)
    a_revoked_replica_token_is_refused(fed)
    a_replica_restarted_mid_stream_catches_up(fed)
    the_node_restored_from_a_backup_makes_replicas_rebuild_one_at_a_time(fed)
