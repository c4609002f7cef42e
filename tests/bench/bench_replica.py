"""Match replicas (``hashmesh replica``) against the node alone, all as real processes.

    python tests/bench/bench_replica.py [--signals 1000000] [--seconds 15] [--cache DIR]

A node home holding ``--signals`` PDQ signals (4 members, 1-2 labels each, a note on one
in ten, a few opinions) is built once with ``Store.merge_many`` and cached under
``--cache``. Then, on this machine (its cores shared by everything below):

- **throughput**: ``hashmesh serve`` alone, then one, then two ``hashmesh replica``
  processes following it, each loaded for ``--seconds`` by the bench (aiohttp,
  ``CONCURRENCY`` requests in flight, batches of ``BATCH`` PDQ hashes: unlisted values with
  one near-duplicate of a listed signal in 20, so answers carry provenance); with two
  replicas it alternates between them. Figures are hashes answered per second, and per
  CPU-second the serving processes used (``/proc``: what sizes replicas per core).
- **memory per signal**: a replica's resident memory once it holds the list (and its peak
  while loading: the bulk index build) minus that of a replica holding nothing (same
  imports; its node unreachable), divided by the signals; beside it the match index's own
  bytes (``hashmesh_replica_index_bytes``) and the node's.
- **propagation**: a signal added on the node (``POST /v1/signals``) until both replicas
  match it, ``ROUNDS`` times (each replica polled in its own thread).
- **bootstrap**: a replica's start to ready (snapshot streamed, parsed, indexed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parent)]

import aiohttp  # noqa: E402
from benchlib import bench_federation, bench_key, sign_log  # noqa: E402

from node.home import NodeHome, init_home  # noqa: E402
from node.runtime import tune_for_bulk_records  # noqa: E402
from node.store import replica_tokens  # noqa: E402
from node.store.schema import open_database  # noqa: E402
from node.store.store import Store  # noqa: E402
from protocol import Federation, SigningKey  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
AUTHORS = 4
T0 = 1_763_800_000_000
LABELS = ("behaviour:glorification", "entity:alpha", "entity:beta", "incident:42")
MERGE_BATCH = 10_000
BATCH = 100  # hashes per match request
CONCURRENCY = 8  # match requests in flight
NEAR_EVERY = 20
ROUNDS = 50  # propagation measurements


def author_key(n: int) -> SigningKey:
    return bench_key("replica bench author", n)


def federation() -> Federation:
    return bench_federation("replica bench", [author_key(n) for n in range(AUTHORS)])


def _body(rng: random.Random, own: list[str]) -> tuple[str, dict[str, object]]:
    roll = rng.random()
    if roll < 0.02 and own:
        return "opinion", {"signal": rng.choice(own), "verdict": "seen", "labels": []}
    body: dict[str, object] = {"type": "pdq", "value": rng.randbytes(32).hex(),
                               "labels": sorted(rng.sample(LABELS, rng.randint(1, 2)))}  # fmt: skip
    if roll > 0.9:
        body["note"] = f"seen in the wild, case {rng.randbytes(8).hex()}"
    return "signal", body


def author_log(n: int, count: int, fed: str) -> list[bytes]:
    return sign_log(author_key(n), fed, count, random.Random(n), _body, t0=T0, ts_step=1000)


def build_home(signals: int, cache: Path, workers: int) -> Path:
    fed = federation()
    home = cache / f"replica-bench-{signals}-{fed.id[:12]}"
    if (home / "built").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    init_home(home, name="member-0", listen="127.0.0.1:7990", seed=author_key(0).seed, tls=False)
    NodeHome(home).install_federation(fed)
    total = int(signals / 0.98) + 1
    counts = [total // AUTHORS + (1 if i < total % AUTHORS else 0) for i in range(AUTHORS)]
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        logs = list(pool.map(author_log, range(AUTHORS), counts, [fed.id] * AUTHORS))
    records = [r for log in logs for r in log]
    print(f"  signed {len(records):,} records in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    t = time.perf_counter()
    with Store.open(home / "hashmesh.db", fed, create=True) as store:
        chunks = (records[i : i + MERGE_BATCH] for i in range(0, len(records), MERGE_BATCH))
        for _ in store.merge_many(chunks, received_ms=T0, verify_workers=workers):
            pass
    print(f"  merged in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    (home / "built").write_text("ok\n")
    return home


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, token: str | None = None, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=600) as r:
        return json.loads(r.read())


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} not ready within {timeout} s")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loaded(urls: list[str], token: str | None, bodies: list[bytes], seconds: float,
           pids: list[int]) -> tuple[float, float]:  # fmt: skip
    """(hashes answered per second, hashes per CPU-second of the serving processes)."""
    before = sum(cpu_s(pid) for pid in pids)
    began = time.monotonic()
    rate = asyncio.run(load(urls, token, bodies, seconds))
    elapsed = time.monotonic() - began
    used = sum(cpu_s(pid) for pid in pids) - before
    return rate, rate * elapsed / used


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


class Processes:
    """Every process this bench starts, stopped at the end whatever happens."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.all: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen([sys.executable, "-m", "node", *args], stdout=log,
                                   stderr=subprocess.STDOUT, cwd=REPO)  # fmt: skip
        log.close()
        self.all.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for process in self.all:
            self.stop(process)


def replica_args(node_port: int, token_file: Path, port: int) -> list[str]:
    return ["replica", "--node", f"http://127.0.0.1:{node_port}", "--token-file",
            str(token_file), "--port", str(port), "--max-lag-s", "30"]  # fmt: skip


def near(value: str, rng: random.Random) -> str:
    """value with a few bits flipped (within PDQ's radius)."""
    number = int(value, 16)
    for bit in rng.sample(range(256), rng.randint(1, 8)):
        number ^= 1 << bit
    return f"{number:064x}"


def query_bodies(listed: list[str], count: int) -> list[bytes]:
    rng = random.Random(7)
    bodies = []
    for _ in range(count):
        hashes = []
        for i in range(BATCH):
            value = (
                near(rng.choice(listed), rng) if i % NEAR_EVERY == 0 else rng.randbytes(32).hex()
            )
            hashes.append({"type": "pdq", "value": value})
        bodies.append(json.dumps({"hashes": hashes}).encode())
    return bodies


async def load(urls: list[str], token: str | None, bodies: list[bytes], seconds: float) -> float:
    """Hashes answered per second over ``seconds``, requests spread over urls."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    answered = 0
    matched = 0
    stop_at = time.monotonic() + seconds
    counter = iter(range(10**12))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal answered, matched
            while time.monotonic() < stop_at:
                n = next(counter)
                url = urls[n % len(urls)]
                async with session.post(url, data=bodies[n % len(bodies)], headers=headers) as r:
                    answer = await r.json()
                    if r.status != 200:
                        raise SystemExit(f"{url}: {r.status} {answer}")
                answered += BATCH
                matched += sum(1 for x in answer["results"] if x["matched"])

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.monotonic() - began
    if matched < answered // NEAR_EVERY:
        raise SystemExit(f"only {matched} of {answered // NEAR_EVERY} near-duplicates matched")
    return answered / elapsed


def propagation(node_url: str, token: str, replicas: list[str]) -> list[float]:
    """Seconds from a signal's POST to the node until every replica matches it."""
    rng = random.Random(11)
    seconds = []
    for _ in range(ROUNDS):
        value = rng.randbytes(32).hex()
        seen: dict[str, float] = {}

        def watch(url: str, value: str = value, seen: dict[str, float] = seen) -> None:
            body = {"type": "pdq", "value": value}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if get_json(url + "/v1/match", None, body)["matched"]:
                    seen[url] = time.monotonic()
                    return
                time.sleep(0.001)

        threads = [threading.Thread(target=watch, args=(u,)) for u in replicas]
        began = time.monotonic()
        for t in threads:
            t.start()
        get_json(node_url + "/v1/signals", token, {"type": "pdq", "value": value})
        for t in threads:
            t.join()
        if len(seen) != len(replicas):
            raise SystemExit("a replica did not see a new signal within 10 s")
        seconds.append(max(seen.values()) - began)
    return seconds


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def run(home: Path, seconds: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="replica-bench-"))
    live = work / "home"
    shutil.copytree(home, live)  # the cached home stays as built (the bench adds signals)
    processes = Processes(work)
    try:
        measure(live, work, processes, seconds)
    finally:
        processes.close()
        shutil.rmtree(work, ignore_errors=True)


def measure(home: Path, work: Path, processes: Processes, seconds: float) -> None:
    node_home = NodeHome(home)
    conn = open_database(node_home.db_path, node_home.federation(), create=False, writer=True)
    try:
        tokens = [work / f"r{n}.token" for n in range(2)]
        for n, path in enumerate(tokens):
            path.write_text(replica_tokens.issue(conn, f"r{n}", now_ms=T0))
        listed = [
            r[0] for r in conn.execute("SELECT value FROM signals ORDER BY random() LIMIT 2000")
        ]
        signals = conn.execute(
            "SELECT count(*) FROM signals WHERE retracted_by IS NULL"
        ).fetchone()[0]
    finally:
        conn.close()
    node_port = free_port()
    (home / "config.toml").write_text(
        (home / "config.toml").read_text().replace("127.0.0.1:7990", f"127.0.0.1:{node_port}")
    )
    node_url = f"http://127.0.0.1:{node_port}"
    node = processes.start("node", "serve", "--home", str(home))
    node_start = wait_ready(node_url, node, 1200)
    token = node_home.token()
    bodies = query_bodies(listed, 400)
    print(f"  node ready in {node_start:.1f} s; {signals:,} signals", file=sys.stderr)

    results: dict[str, tuple[float, float]] = {}
    results["node"] = loaded([node_url + "/v1/match"], token, bodies, seconds, [node.pid])
    print(f"  node alone: {results['node']}", file=sys.stderr)

    empty_port = free_port()
    empty = processes.start("empty", *replica_args(1, tokens[0], empty_port))
    time.sleep(3)  # imports done, nothing to hold: its node is unreachable
    empty_kb = memory_kb(empty.pid)["VmRSS"]
    processes.stop(empty)

    ports = [free_port(), free_port()]
    replicas = [f"http://127.0.0.1:{p}" for p in ports]
    first = processes.start("r0", *replica_args(node_port, tokens[0], ports[0]))
    bootstrap_s = wait_ready(replicas[0], first, 1200)
    mem = memory_kb(first.pid)
    index_bytes = metric(replicas[0], "hashmesh_replica_index_bytes")
    print(
        f"  replica ready in {bootstrap_s:.1f} s; RSS {mem['VmRSS'] / 1024:.0f} MB", file=sys.stderr
    )
    results["1 replica"] = loaded([replicas[0] + "/v1/match"], None, bodies, seconds,
                                  [first.pid])  # fmt: skip
    print(f"  1 replica: {results['1 replica']}", file=sys.stderr)
    second = processes.start("r1", *replica_args(node_port, tokens[1], ports[1]))
    wait_ready(replicas[1], second, 1200)
    urls = [u + "/v1/match" for u in replicas]
    results["2 replicas"] = loaded(urls, None, bodies, seconds, [first.pid, second.pid])
    print(f"  2 replicas: {results['2 replicas']}", file=sys.stderr)
    lags = propagation(node_url, token, replicas)

    node_index = get_json(node_url + "/v1/status", token)["index"]
    per_signal = (mem["VmRSS"] - empty_kb) * 1024 / signals
    peak_per_signal = (mem["VmHWM"] - empty_kb) * 1024 / signals
    report(signals, seconds, results, per_signal, peak_per_signal, index_bytes / signals,
           empty_kb, lags, bootstrap_s, node_index)  # fmt: skip


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise SystemExit(f"no {name} at {url}")


def report(signals: int, seconds: float, results: dict[str, tuple[float, float]],
           per_signal: float, peak: float, index: float, empty_kb: int, lags: list[float],
           bootstrap_s: float, node_index: Any) -> None:  # fmt: skip
    node, node_cpu = results["node"]
    print(f"\nmatch replicas at {signals:,} PDQ signals, {os.cpu_count()} cores shared by the "
          f"node, the replicas and the load client; batches of {BATCH} hashes, "
          f"{CONCURRENCY} in flight, {seconds:g} s each; load average at the end "
          f"{os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| measure | replicas | node alone | ratio |")
    print("|---|---|---|---|")
    for name in ("1 replica", "2 replicas"):
        rate, per_cpu = results[name]
        print(f"| batch match throughput, {name} | {rate:,.0f} hashes/s | {node:,.0f} hashes/s "
              f"| {rate / node:.2f}x |")  # fmt: skip
        print(f"| hashes per CPU-second of the serving processes, {name} | {per_cpu:,.0f} | "
              f"{node_cpu:,.0f} | {per_cpu / node_cpu:.2f}x |")  # fmt: skip
    print(f"| replica memory per signal, held (RSS growth / signals) | {per_signal:.0f} B | "
          f"match index alone {index:.0f} B | {per_signal / index:.1f}x |")  # fmt: skip
    print(f"| replica memory per signal, peak while loading | {peak:.0f} B | | |")
    print(f"| a replica holding nothing (imports) | {empty_kb / 1024:.0f} MB | | |")
    p50, p99 = statistics.median(lags), percentile(lags, 99)
    print(f"| a new signal on the node until both replicas match it ({len(lags)} signals) | "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms | "
          f"goal 1 s | {p99:.2f}x |")  # fmt: skip
    print(f"| replica start to ready (snapshot streamed, parsed, indexed) | {bootstrap_s:.1f} s "
          f"({signals / bootstrap_s:,.0f} signals/s) | | |")  # fmt: skip
    print(f"\nnode index: {node_index}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "hashmesh-bench"
    )
    args = parser.parse_args()
    tune_for_bulk_records()
    home = build_home(args.signals, args.cache, args.workers)
    run(home, args.seconds)


if __name__ == "__main__":
    main()
