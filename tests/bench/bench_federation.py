"""Federation benchmark (issue 4): N real node processes on loopback, default gossip settings.

Prints one markdown table with:
- propagation latency of new signals to all N nodes (p50, p99; goal p99 <= 2 s), measured
  from the record's ts to each node's received_ms (read from the SQLite files afterwards, so
  the measurement does not load the nodes while they gossip);
- idle traffic per node per second at N members (goal <= 2 KB/s): every node is reached
  through a counting TCP forwarder, so this is the exact TCP payload (HTTP with headers);
- bytes on the wire per record relative to its canonical size, during a burst;
- bootstrap of a new node from one peer holding M records (records/s), next to bare PyNaCl
  verify on all cores measured in the same run (goal >= 0.8 of it).

Run: python tests/bench/bench_federation.py [--nodes 30] [--records 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

# the repository first (so `protocol` is the package, not tests/protocol), then tests/ for harness
sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

from benchlib import shared_core_ceiling  # noqa: E402
from harness import Link, NodeProc, found_federation, wait_until, write_config  # noqa: E402

from node.home import NodeHome  # noqa: E402
from node.net.gossip import PULL_GROUP_RECORDS  # noqa: E402
from node.store.store import Store  # noqa: E402
from protocol import Federation  # noqa: E402
from protocol.bodies import SignalBody  # noqa: E402
from protocol.keys import SigningKey  # noqa: E402
from protocol.records import RECORD_DOMAIN, sign_record, unsigned_bytes  # noqa: E402

DEFAULT_GOSSIP = {"interval_s": 2.0, "fanout": 3, "timeout_s": 10.0, "backoff_max_s": 60.0}


def link_bytes(links: list[Link]) -> int:
    return sum(link.bytes for link in links)


def start_all(nodes: list[NodeProc]) -> None:
    for node in nodes:
        node.start()


def state_digests(nodes: list[NodeProc]) -> set[str]:
    return {n.api("GET", "/v1/status?digest=1")["store"]["state_digest"] for n in nodes}


def received_ms(node: NodeProc, record_ids: list[str]) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{node.home / 'hashmesh.db'}?mode=ro", uri=True)
    try:
        out = {}
        for rid in record_ids:
            row = conn.execute(
                "SELECT received_ms FROM records WHERE id = ?", (bytes.fromhex(rid),)
            ).fetchone()
            if row:
                out[rid] = int(row[0])
        return out
    finally:
        conn.close()


def measure_propagation(nodes: list[NodeProc], signals: int, rng: random.Random) -> list[float]:
    added: list[tuple[str, int]] = []
    for i in range(signals):
        origin = rng.choice(nodes)
        reply = origin.api(
            "POST", "/v1/signals", {"type": "md5", "value": f"{rng.getrandbits(128):032x}"}
        )
        added.append((reply["id"], i))
        time.sleep(0.5)
    ids = [rid for rid, _ in added]

    def everywhere() -> bool:
        return all(len(received_ms(n, ids)) == len(ids) for n in nodes)

    wait_until(everywhere, timeout=120, step=0.5)
    ts = {}
    conn = sqlite3.connect(f"file:{nodes[0].home / 'hashmesh.db'}?mode=ro", uri=True)
    for rid in ids:
        raw = conn.execute("SELECT raw FROM records WHERE id = ?", (bytes.fromhex(rid),)).fetchone()
        ts[rid] = int(raw[0].split(b'"ts":')[1].split(b",")[0])
    conn.close()
    latencies = []
    for rid in ids:
        arrivals = [received_ms(n, [rid])[rid] for n in nodes]
        latencies.append((max(arrivals) - ts[rid]) / 1000)
    return latencies


def measure_idle(nodes: list[NodeProc], links: list[Link], seconds: float) -> float:
    time.sleep(3 * DEFAULT_GOSSIP["interval_s"])
    before = link_bytes(links)
    time.sleep(seconds)
    return (link_bytes(links) - before) / len(nodes) / seconds


def measure_burst(
    nodes: list[NodeProc], links: list[Link], count: int, rng: random.Random
) -> tuple[float, int]:
    before = link_bytes(links)
    origin = nodes[0]
    canonical = 0
    for _ in range(count):
        reply = origin.api(
            "POST", "/v1/signals", {"type": "md5", "value": f"{rng.getrandbits(128):032x}"}
        )
        canonical += len(reply["record"].encode())
    wait_until(lambda: len(state_digests(nodes)) == 1, timeout=120, step=1.0)
    wire = link_bytes(links) - before
    return wire / canonical, canonical // count


# ---- bootstrap --------------------------------------------------------------------------


def _sign_chunk(args: tuple[bytes, str, int, int, str | None]) -> list[bytes]:
    seed, fed, start, count, prev = args
    key = SigningKey(seed)
    out = []
    for seq in range(start, start + count):
        body = SignalBody("pdq", f"{random.Random(seq).getrandbits(256):064x}", ("entity:bench",))
        record = sign_record(
            key, fed=fed, seq=seq, prev=prev, ts=1_763_800_000_000 + seq, body=body
        )
        out.append(record.canonical)
        prev = record.id
    return out


def sign_log(seed: bytes, fed: str, count: int) -> list[bytes]:
    """A valid chain of count records, signed serially per chunk, chunks on all cores."""
    # Ed25519 signing is ~25 us; a chain is inherently serial in its prev links, so sign the
    # chain in one process per author and use several authors to use all cores.
    return _sign_chunk((seed, fed, 1, count, None))


def _sign_author(args: tuple[bytes, str, int]) -> list[bytes]:
    return sign_log(*args)


def bare_verify_rate(records: list[bytes]) -> float:
    """Bare PyNaCl VerifyKey.verify on all cores at once: each worker times its own loop."""
    cores = os.cpu_count() or 1
    sample = records[: min(len(records), 20_000 * cores)]
    per = -(-len(sample) // cores)
    with multiprocessing.Pool(cores) as pool:
        results = pool.map(_bare_verify, [sample[i : i + per] for i in range(0, len(sample), per)])
    return sum(n / seconds for n, seconds in results)


def _bare_verify(records: list[bytes]) -> tuple[int, float]:
    import json

    import nacl.signing

    prepared = []
    for raw in records:
        obj = json.loads(raw)
        prepared.append(
            (nacl.signing.VerifyKey(bytes.fromhex(obj["author"])),
             RECORD_DOMAIN + unsigned_bytes(raw), bytes.fromhex(obj["sig"]))
        )  # fmt: skip
    start = time.perf_counter()
    for key, message, sig in prepared:
        key.verify(message, sig)
    return len(prepared), time.perf_counter() - start


def bare_sqlite_rate(federation: Federation, records: list[bytes], root: Path) -> float:
    """The store's rows for these records written with bare executemany (bench_store's
    limit), into a scratch database of the same schema, as many per transaction as a pull
    writes per transaction."""
    from bench_store import BareSqlite

    bare = BareSqlite(federation, root / "bare.db")
    try:
        bare.measure(records, PULL_GROUP_RECORDS)
    finally:
        bare.conn.close()
    return bare.rate


def stored_records(db: Path) -> int:
    """Rows in a node's records table (rows are appended and never deleted)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT max(row) FROM records").fetchone()[0] or 0)
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def measure_bootstrap(root: Path, count: int) -> tuple[float, float, float]:
    federation, nodes = found_federation(
        root, [f"m{i}" for i in range(4)], threshold=2, gossip=DEFAULT_GOSSIP
    )
    # history from every member but the newcomer (nodes[1]): its own log starts when it runs
    seeds = [NodeHome(n.home).key().seed for n in nodes if n is not nodes[1]]
    per_author = count // len(seeds)
    t0 = time.perf_counter()
    with multiprocessing.Pool() as pool:
        logs = pool.map(_sign_author, [(s, federation.id, per_author) for s in seeds])
    records = [r for log in logs for r in log]
    print(f"  generated {len(records):,} records in {time.perf_counter() - t0:.0f}s", flush=True)
    holder, newcomer = nodes[0], nodes[1]
    store = Store.open(holder.home / "hashmesh.db", federation, create=True)
    for i in range(0, len(records), 20_000):
        store.merge(records[i : i + 20_000], received_ms=0, verify_workers=os.cpu_count() or 1)
    store.close()
    limit = bare_verify_rate(records)
    sqlite_rate = bare_sqlite_rate(federation, records, root)
    holder.peers, newcomer.peers = [], [holder.url]
    write_config(holder, DEFAULT_GOSSIP)
    write_config(newcomer, DEFAULT_GOSSIP | {"interval_s": 0.2})
    try:
        holder.start()
        start = time.perf_counter()
        newcomer.start()

        # Polled on the newcomer's file, read-only: /v1/status counts every row (~0.1 s of
        # CPU at 1 M), which would take its share of the two cores from the bootstrap.
        def done() -> bool:
            return stored_records(newcomer.home / "hashmesh.db") >= len(records)

        wait_until(done, timeout=3600, step=1.0)
        rate = len(records) / (time.perf_counter() - start)
    finally:
        newcomer.stop()
        holder.stop()
    return rate, limit, sqlite_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--signals", type=int, default=20)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="5 nodes, 20k records")
    parser.add_argument("--no-bootstrap", action="store_true", help="only the 30-node measurements")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.records, args.idle_seconds, args.signals = 5, 20_000, 6.0, 5
    rng = random.Random(7)
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="hashmesh-bench-") as tmp:
        names = [f"n{i:02d}" for i in range(args.nodes)]
        _, nodes = found_federation(Path(tmp) / "fed", names, gossip=DEFAULT_GOSSIP)
        # every node is reached through a counting forwarder (its announced URL), so peer
        # traffic is measured exactly, whatever else runs on this machine
        links = [Link(node.port) for node in nodes]
        for i, node in enumerate(nodes):  # a sparse seed graph: ring + one random chord
            chord = rng.randrange(len(nodes))
            node.peers = list({links[(i + 1) % len(nodes)].url, links[chord].url} - {links[i].url})
            write_config(node, DEFAULT_GOSSIP, url=links[i].url)
        try:
            print(f"starting {len(nodes)} nodes…", flush=True)
            start_all(nodes)
            wait_until(lambda: len(state_digests(nodes)) == 1, timeout=300, step=2.0)
            idle = measure_idle(nodes, links, args.idle_seconds)
            latencies = measure_propagation(nodes, args.signals, rng)
            ratio, size = measure_burst(nodes, links, 200, rng)
        finally:
            for node in nodes:
                node.stop()
            for link in links:
                link.close()
        p50 = statistics.median(latencies)
        p99 = sorted(latencies)[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        rows += [
            (f"propagation to all {args.nodes} nodes, p50", f"{p50:.2f} s", "", ""),
            (f"propagation to all {args.nodes} nodes, p99", f"{p99:.2f} s", "goal <= 2 s",
             f"{p99 / 2:.2f}x goal"),
            (f"idle traffic per node ({args.nodes} members)", f"{idle / 1024:.2f} KB/s",
             "goal <= 2 KB/s", f"{idle / 2048:.2f}x goal"),
            ("peer bytes per record in a burst of 200 (all nodes, HTTP incl. headers)",
             f"{ratio:.1f}x canonical", f"canonical {size} B", ""),
        ]  # fmt: skip
        if args.no_bootstrap:
            args.records = 0
    if args.records:
        with tempfile.TemporaryDirectory(prefix="hashmesh-bench-") as tmp:
            print("bootstrapping a new node…", flush=True)
            rate, limit, sqlite_rate = measure_bootstrap(Path(tmp) / "boot", args.records)
        cores = os.cpu_count() or 1
        ceiling = shared_core_ceiling(limit, sqlite_rate, cores)
        rows += [
            (f"bootstrap of {args.records:,} records from one peer", f"{rate:,.0f} rec/s",
             f"all-core PyNaCl verify {limit:,.0f} rec/s", f"{rate / limit:.2f} (goal >= 0.8)"),
            (f"ceiling: that verify and the bare SQLite writes of the same records "
             f"({sqlite_rate:,.0f} rec/s alone) sharing the {cores} cores, nothing else",
             f"{ceiling:,.0f} rec/s", f"ceiling / verify = {ceiling / limit:.2f}",
             f"bootstrap / ceiling = {rate / ceiling:.2f}"),
        ]  # fmt: skip
    print("\n| measure | hashmesh | baseline / goal | ratio |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
