"""The node as an OS process (issue 13): one node per home, and no process outlives its node.

Real `hashmesh serve` processes and real CLI commands: a second `serve` on a running home is
refused and leaves the running node whole; an offline write never runs beside a node; a node
killed with SIGKILL takes its verify workers, the forkserver and the resource tracker with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import REPO, NodeProc, found_federation, hm, wait_until

from node.home import NodeHome
from node.homelock import SERVE, HomeLock
from node.store.verify_pool import WORKER_NICE
from protocol.bodies import SignalBody
from protocol.federation import Federation
from protocol.records import sign_record

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, list[NodeProc]]]:
    federation, nodes = found_federation(tmp_path_factory.mktemp("fed"), ["a", "b", "c"])
    yield federation, nodes
    for node in nodes:
        node.stop()


def md5_of(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def matched(node: NodeProc, kind: str, value: str) -> bool:
    answer = node.api("POST", "/v1/match", {"hashes": [{"type": kind, "value": value}]})
    return bool(answer["results"][0]["matched"])


# ---- one node per home ------------------------------------------------------------------


def test_second_serve_is_refused_and_the_running_node_is_untouched(
    fed: tuple[Federation, list[NodeProc]],
) -> None:
    node = fed[1][0]
    node.start()
    assert node.process is not None
    runtime = (node.home / "node.json").read_text()
    second = hm("serve", "--home", str(node.home), timeout=30)
    assert second.returncode == 2, second.stderr
    assert f"a node is already running (pid {node.process.pid})" in second.stderr
    assert "serving" not in second.stderr and "address already in use" not in second.stderr
    assert (node.home / "node.json").read_text() == runtime
    assert node.ready()
    # a command run now reaches the running node: it signs, stores and indexes at once
    value = md5_of("added after a second serve was refused")
    added = hm("add", "--home", str(node.home), "--hash", f"md5:{value}", "--json")
    assert added.returncode == 0, added.stderr
    assert matched(node, "md5", value)
    node.stop()


def test_no_offline_write_while_a_node_holds_the_home(
    fed: tuple[Federation, list[NodeProc]],
) -> None:
    """A node that holds the lock but has no local API yet (it is starting): write commands
    are refused and write nothing; and no node starts while an offline command writes."""
    node = fed[1][1]
    home = NodeHome(node.home)
    value = md5_of("never written beside a node")
    with HomeLock.acquire(node.home, SERVE):
        refused = hm("add", "--home", str(node.home), "--hash", f"md5:{value}")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"a node is already running (pid {os.getpid()})" in refused.stderr
        assert "its local API is not answering" in refused.stderr
        vote = hm("member", "vote", "remove", "--home", str(node.home), fed[1][2].key)
        assert vote.returncode == 2 and "already running" in vote.stderr
    assert not home.db_path.exists()  # nothing was written, not even an empty store
    with HomeLock.acquire(node.home, "import"):
        serve = hm("serve", "--home", str(node.home), timeout=30)
        assert serve.returncode == 2, serve.stderr
        assert f"'hashmesh import' (pid {os.getpid()}) is writing to it" in serve.stderr
        assert not (node.home / "node.json").exists()
    added = hm("add", "--home", str(node.home), "--hash", f"md5:{value}", "--json")
    assert added.returncode == 0, added.stderr  # the lock released, the write goes through
    assert json.loads(added.stdout)["signals"][0]["new"] is True
    assert home.db_path.exists()


# ---- no process outlives its node --------------------------------------------------------

Proc = tuple[int, int]  # (pid, start time in clock ticks): a pid reused later is another


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # fields from the state (3rd) on


def descendants(pid: int) -> set[Proc]:
    """Every live process below pid (children, their children...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[Proc] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            fields = _stat(child)
            if fields is not None and fields[0] != "Z":
                found.add((child, int(fields[19])))
                todo.append(child)
    return found


def alive(proc: Proc) -> bool:
    fields = _stat(proc[0])
    return fields is not None and fields[0] != "Z" and int(fields[19]) == proc[1]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def push_batch(node: NodeProc, federation: Federation, author: NodeProc, count: int) -> Any:
    """count signed records of author's, imported in one batch (big enough for the pool)."""
    key, prev, lines = NodeHome(author.home).key(), None, []
    for seq in range(1, count + 1):
        body = SignalBody("md5", md5_of(f"{author.name} {seq}"))
        record = sign_record(key, fed=federation.id, seq=seq, prev=prev, ts=seq, body=body)
        prev = record.id
        lines.append(record.canonical)
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{node.local_port}/v1/import", data=b"\n".join(lines) + b"\n",
        method="POST", headers={"Authorization": f"Bearer {NodeHome(node.home).token()}",
                                "Content-Type": "application/x-ndjson"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_kill_9_takes_every_helper_process_down(fed: tuple[Federation, list[NodeProc]]) -> None:
    federation, nodes = fed
    node = nodes[2]
    node.start()
    assert node.process is not None
    answer = push_batch(node, federation, nodes[0], 400)  # verified on the worker pool
    assert answer["counts"]["accepted"] == 400
    helpers = descendants(node.process.pid)
    commands = " ".join(cmdline(pid) for pid, _ in helpers)
    assert "forkserver" in commands and "resource_tracker" in commands, commands
    niceness = {pid: os.getpriority(os.PRIO_PROCESS, pid) for pid, _ in helpers}

    began = time.monotonic()
    node.process.send_signal(signal.SIGKILL)
    node.process.wait()
    try:
        wait_until(lambda: not any(alive(p) for p in helpers), timeout=10)
    finally:  # a failure must not leave orphans on the machine
        for proc in helpers:
            if alive(proc):
                os.kill(proc[0], signal.SIGKILL)
    took = time.monotonic() - began
    assert took < 5, f"helper processes outlived their node by {took:.1f}s"
    # the verify workers ran below the node's priority (matching comes first: issue 13.14)
    workers = [pid for pid, nice in niceness.items() if nice > os.getpriority(os.PRIO_PROCESS, 0)]
    assert len(workers) >= 1 and all(niceness[w] >= WORKER_NICE for w in workers), niceness

    node.start()  # the kernel dropped the home's lock with the node: a restart just works
    assert node.process is not None
    assert json.loads((node.home / "node.json").read_text())["pid"] == node.process.pid
    assert matched(node, "md5", md5_of(f"{nodes[0].name} 400"))
    node.stop()
    assert not (node.home / "node.json").exists()


def test_audit_workers_exit_with_a_killed_auditor() -> None:
    """An audit's verification workers watch the auditing process: kill -9 leaves no orphan."""
    script = (
        "import os, sys, time\n"
        "from node.audit.engine import _pool\n"
        "with _pool(2) as pool:\n"
        "    pids = {job.result() for job in [pool.submit(os.getpid) for _ in range(8)]}\n"
        "    print(' '.join(map(str, sorted(pids))), flush=True)\n"
        "    time.sleep(60)\n"
    )
    auditor = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert auditor.stdout is not None
        pids = [int(p) for p in auditor.stdout.readline().split()]
        workers = [(pid, int(fields[19])) for pid in pids if (fields := _stat(pid)) is not None]
        assert workers and all(alive(w) for w in workers)
    finally:
        auditor.kill()
        auditor.wait()
        auditor.stdout.close()
    began = time.monotonic()
    try:
        wait_until(lambda: not any(alive(w) for w in workers), timeout=10)
    finally:
        for worker in workers:
            if alive(worker):
                os.kill(worker[0], signal.SIGKILL)
    assert time.monotonic() - began < 5
