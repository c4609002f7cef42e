"""Benchmark of the node store: merge throughput against its two limits, lookups, size, open.

    python tests/bench/bench_store.py [--n 1000000] [--batch 20000] [--workers CPUS]

Prints one markdown table from one run:

- merge: N records arriving in author order, ``Store.merge`` in batches with verification on
  ``--workers`` processes -- every record decoded and its signature verified before it counts;
- bare PyNaCl verify on all cores: ``crypto_sign_open`` over the same records' prepared
  signing inputs in a process pool of the same size (the verification limit), measured on up to
  ``--verify-sample`` records;
- bare sqlite3 ``executemany``: the rows the store writes for those records (records, signals,
  signal labels, retractions, opinions, the heads), pre-computed, into the same schema, in the
  same batches and transactions (the storage limit);
- the ceiling those two limits set together on this machine: per record, verification on all
  cores and the writes on one thread, sharing the same cores (``benchlib.shared_core_ceiling``);
  no merge that verifies and writes every record can beat it, so merge / verify above
  ceiling / verify is out of reach here whatever the implementation;
- the same rows written the cheapest way SQLite allows (no secondary index at all, 50,000
  rows per transaction), and the ceiling that sets: not even a store that gave up its lookup
  indexes could verify and write these records faster;
- exact lookup p50/p99 by (type, value) over the stored signals, database bytes per record, and
  cold open time (a new process opening the file).

The N signed records are generated once on a process pool and cached under --cache (keyed by N).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nacl.bindings
import orjson
from benchlib import bench_federation, bench_key, shared_core_ceiling, sign_log

from node.net.gossip import PULL_GROUP_RECORDS
from node.runtime import tune_for_bulk_records
from node.store.materialise import Keyer, id8
from node.store.schema import open_database
from node.store.store import Store
from protocol import Federation, SigningKey
from protocol.records import RECORD_DOMAIN, unsigned_bytes

AUTHORS = 8
T0 = 1_763_800_000_000
LABELS = ("behaviour:glorification", "entity:alpha", "entity:beta", "incident:42")
TYPES = (("sha256", 64), ("sha256", 64), ("pdq", 64), ("md5", 32))


# -- the records -------------------------------------------------------------------------------


def author_key(n: int) -> SigningKey:
    return bench_key("bench author", n)


def federation() -> Federation:
    return bench_federation("bench", [author_key(n) for n in range(AUTHORS)])


def author_log(n: int, count: int, fed: str) -> list[bytes]:
    """One author's chain: 90% signals, 5% opinions and 5% retractions of its own signals."""
    return sign_log(author_key(n), fed, count, random.Random(n), _body, t0=T0, ts_step=1)


def _body(rng: random.Random, signals: list[str]) -> tuple[str, dict[str, object]]:
    roll = rng.random()
    if roll < 0.05 and signals:
        return "opinion", {"signal": rng.choice(signals), "verdict": "confirm", "labels": []}
    if roll < 0.10 and signals:
        return "retract", {"signal": signals.pop(rng.randrange(len(signals)))}
    type_, chars = rng.choice(TYPES)
    labels = sorted(rng.sample(LABELS, rng.randint(1, 2)))
    return "signal", {"type": type_, "value": rng.randbytes(chars // 2).hex(), "labels": labels}


def load_records(n: int, cache: Path, workers: int) -> tuple[Federation, list[bytes]]:
    fed = federation()
    path = cache / f"store-bench-{n}-{fed.id[:12]}.records"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        counts = [n // AUTHORS + (1 if i < n % AUTHORS else 0) for i in range(AUTHORS)]
        with _pool(workers) as pool:
            logs = list(pool.map(author_log, range(AUTHORS), counts, [fed.id] * AUTHORS))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(r + b"\n" for log in logs for r in log))
        tmp.rename(path)
    return fed, path.read_bytes().split(b"\n")[:-1]


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


def batches(records: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(records), size):
        yield records[i : i + size]


# -- the limits --------------------------------------------------------------------------------


def bare_verify_chunk(pk: bytes, signed: list[bytes]) -> int:
    for sm in signed:
        nacl.bindings.crypto_sign_open(sm, pk)
    return len(signed)


class BareVerify:
    """crypto_sign_open alone over prepared signing inputs, on a pool of the same size."""

    def __init__(self, workers: int) -> None:
        self.pool = _pool(workers)
        self.workers = workers
        self.done = 0
        self.seconds = 0.0

    def measure(self, records: Sequence[bytes]) -> None:
        tasks = [_signed_inputs(chunk) for chunk in batches(records, 1024)]
        if not self.done:  # start the workers before timing
            list(self.pool.map(bare_verify_chunk, *zip(*tasks[: self.workers], strict=True)))
        start = time.perf_counter()
        self.done += sum(self.pool.map(bare_verify_chunk, *zip(*tasks, strict=True)))
        self.seconds += time.perf_counter() - start

    @property
    def rate(self) -> float:
        return self.done / self.seconds


def _signed_inputs(chunk: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The author key and sig + signing input of each record (chunks hold one author)."""
    objs = [orjson.loads(r) for r in chunk]
    author = objs[0]["author"]
    signed = [
        bytes.fromhex(o["sig"]) + RECORD_DOMAIN + unsigned_bytes(r)
        for o, r in zip(objs, chunk, strict=True)
        if o["author"] == author
    ]
    return bytes.fromhex(author), signed


def sqlite_rows(
    records: Sequence[bytes], salt: bytes, first_row: int
) -> list[dict[str, list[tuple[object, ...]]]]:
    """Per record the rows Store.merge writes for it, by table."""
    out = []
    for row, data in enumerate(records, start=first_row + 1):
        obj = orjson.loads(data)
        rid = hashlib.sha256(RECORD_DOMAIN + unsigned_bytes(data)).digest()
        ref = _REFS.setdefault(obj["author"], len(_REFS) + 1)
        body, kind = obj["body"], obj["kind"]
        rows: dict[str, list[tuple[object, ...]]] = {
            "records": [(row, id8(rid), rid, ref, obj["seq"], kind, T0, data)]
        }
        if kind == "signal":
            vkey = Keyer(salt).key(body["type"], body["value"])
            labels = orjson.dumps(body["labels"]).decode()
            rows["signals"] = [
                (row, rid, ref, obj["seq"], ref, obj["ts"], body["type"], body["value"], vkey,
                 labels, None, None, None)
            ]  # fmt: skip
            rows["signal_labels"] = [(label, row) for label in body["labels"]]
        elif kind == "opinion":
            rows["opinions"] = [(row, bytes.fromhex(body["signal"]), ref, 0, obj["seq"],
                                 body["verdict"], "[]")]  # fmt: skip
        elif kind == "retract":
            rows["retractions"] = [(row, ref, bytes.fromhex(body["signal"]), 0, obj["seq"], 0)]
        out.append(rows)
    return out


_REFS: dict[str, int] = {}
FLOOR_BATCH = 50_000
_INSERTS = {
    "records": "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "signals": "INSERT INTO signals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "signal_labels": "INSERT INTO signal_labels VALUES (?, ?)",
    "opinions": "INSERT INTO opinions VALUES (?, ?, ?, ?, ?, ?, ?)",
    "retractions": "INSERT INTO retractions VALUES (?, ?, ?, ?, ?, ?)",
}


class BareSqlite:
    """The store's rows for the same records, pre-computed, written with executemany into the
    same schema, in the same batches, one transaction each (synchronous=FULL, WAL)."""

    def __init__(self, fed: Federation, path: Path, *, indexes: bool = True) -> None:
        self.conn = open_database(path, fed, create=True, writer=True)
        if not indexes:  # only the tables' own keys: the cheapest way to write these rows
            names = self.conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL"
            ).fetchall()
            for (name,) in names:
                self.conn.execute(f"DROP INDEX {name}")
        salt = self.conn.execute("SELECT value FROM meta WHERE key = 'lookup_salt'").fetchone()
        self.salt = bytes.fromhex(salt[0])
        self.row = 0
        self.done = 0
        self.seconds = 0.0

    def measure(self, records: Sequence[bytes], batch: int) -> None:
        grouped = []
        for chunk in batches(records, batch):
            tables: dict[str, list[tuple[object, ...]]] = {t: [] for t in _INSERTS}
            for rows in sqlite_rows(chunk, self.salt, self.row):
                for table, values in rows.items():
                    tables[table].extend(values)
            self.row += len(chunk)
            grouped.append(tables)
        start = time.perf_counter()
        for tables in grouped:
            self.conn.execute("BEGIN IMMEDIATE")
            for table, values in tables.items():
                self.conn.executemany(_INSERTS[table], values)
            self.conn.execute("UPDATE keys SET head_seq = head_seq WHERE ref = 1")
            self.conn.execute("COMMIT")
        self.seconds += time.perf_counter() - start
        self.done += len(records)

    @property
    def rate(self) -> float:
        return self.done / self.seconds


# -- the store ---------------------------------------------------------------------------------


class Merge:
    """Store.merge_many over the records, verifying on the pool."""

    def __init__(self, fed: Federation, path: Path, workers: int) -> None:
        self.store = Store.open(path, fed, create=True)
        self.workers = workers
        self.done = 0
        self.seconds = 0.0

    def measure(self, records: Sequence[bytes], batch: int) -> None:
        if not self.done:  # start the pool before timing
            self.store.merge(records[:1], received_ms=T0, verify_workers=self.workers)
            records = records[1:]
        start = time.perf_counter()
        chunks = batches(records, batch)
        for result in self.store.merge_many(chunks, received_ms=T0, verify_workers=self.workers):
            if result.counts()["accepted"] != len(result.outcomes):
                raise SystemExit(f"merge did not accept everything: {result.counts()}")
        self.seconds += time.perf_counter() - start
        self.done += len(records)

    @property
    def rate(self) -> float:
        return self.done / self.seconds


def lookup_latency(fed: Federation, path: Path, records: Sequence[bytes]) -> tuple[float, float]:
    rng = random.Random(7)
    sample = [orjson.loads(records[rng.randrange(len(records))]) for _ in range(20_000)]
    probes = [(o["body"]["type"], o["body"]["value"]) for o in sample if o["kind"] == "signal"]
    with Store.open(path, fed, readonly=True) as store:
        for type_, value in probes[:2000]:  # warm the page cache and statement cache
            store.lookup(type_, value, now_ms=T0)
        times, hits = [], 0
        for type_, value in probes:
            start = time.perf_counter_ns()
            found = store.lookup(type_, value, now_ms=T0)
            times.append(time.perf_counter_ns() - start)
            hits += bool(found)
    if hits < len(probes) * 0.8:  # ~5% of signals are retracted, so those find nothing
        raise SystemExit(f"only {hits} of {len(probes)} lookups found their signal")
    times.sort()
    return statistics.median(times) / 1000, times[int(len(times) * 0.99)] / 1000


_OPEN_SNIPPET = """
import sys, time
from pathlib import Path
from protocol import parse_genesis
from node.store.store import Store
fed = parse_genesis(Path(sys.argv[2]).read_bytes())
start = time.perf_counter()
store = Store.open(Path(sys.argv[1]), fed, readonly=sys.argv[3] == "reader")
store.heads()
print(time.perf_counter() - start)
store.close()
"""


def cold_open_s(path: Path, fed: Federation, role: str) -> float:
    genesis = path.with_suffix(".genesis.json")
    genesis.write_bytes(fed.to_bytes())
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_SNIPPET, str(path), str(genesis), role],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout)


# -- the table ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=PULL_GROUP_RECORDS)  # as a pull writes
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--verify-sample", type=int, default=1_000_000)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "hashmesh-bench"
    )
    args = parser.parse_args()
    tune_for_bulk_records()  # as the hashmesh command does
    t = time.perf_counter()
    fed, records = load_records(args.n, args.cache, args.workers)
    print(f"{len(records):,} records ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        rows = run(args, fed, records, Path(tmp))
    print(f"\nStore benchmark: {args.n:,} records in author order, batches of {args.batch:,}, "
          f"{args.workers} verify worker(s), {os.cpu_count()} CPU(s)\n")  # fmt: skip
    print("| measure | value | ratio |\n|---|---:|---:|")
    for name, value, ratio in rows:
        print(f"| {name} | {value} | {ratio} |")


def run(
    args: argparse.Namespace, fed: Federation, records: list[bytes], tmp: Path
) -> list[tuple[str, str, str]]:
    """The three throughputs, measured round by round, interleaved: machine load that comes
    and goes then weighs on all three alike. Then lookups, size and open time."""
    verify, sqlite = BareVerify(args.workers), BareSqlite(fed, tmp / "bare.db")
    floor = BareSqlite(fed, tmp / "floor.db", indexes=False)
    merge = Merge(fed, tmp / "node.db", args.workers)
    rounds = max(1, len(records) // (args.batch * 5))
    step = -(-len(records) // rounds)
    sample_every = max(1, len(records) // args.verify_sample)
    for n, i in enumerate(range(0, len(records), step)):
        part = records[i : i + step]
        verify.measure(part[::sample_every] if sample_every > 1 else part)
        sqlite.measure(part, args.batch)
        floor.measure(part, FLOOR_BATCH)
        merge.measure(part, args.batch)
        print(f"  round {n + 1}/{rounds}: verify {verify.rate:,.0f}/s, sqlite {sqlite.rate:,.0f}/s,"
              f" merge {merge.rate:,.0f}/s", file=sys.stderr)  # fmt: skip
    verify.pool.shutdown()
    sqlite.conn.close()
    floor.conn.close()
    merge.store.close()
    db = tmp / "node.db"
    p50, p99 = lookup_latency(fed, db, records)
    size = sum(p.stat().st_size for p in tmp.glob("node.db*"))
    reader, writer = cold_open_s(db, fed, "reader"), cold_open_s(db, fed, "writer")
    n = len(records)
    m, v, q = merge.rate, verify.rate, sqlite.rate
    ceiling = shared_core_ceiling(v, q, args.workers)
    f = floor.rate
    best = shared_core_ceiling(v, f, args.workers)
    return [
        ("merge, incl. decode + verify of every record (records/s)", f"{m:,.0f}", "1.00"),
        (f"bare PyNaCl verify, {args.workers} process(es) (records/s)", f"{v:,.0f}",
         f"merge / verify = {m / v:.2f}"),
        ("bare sqlite3 executemany of the same rows (records/s)", f"{q:,.0f}",
         f"merge / sqlite = {m / q:.2f}"),
        (f"ceiling: that verify and those writes sharing the {args.workers} cores, nothing "
         "else (records/s)", f"{ceiling:,.0f}",
         f"ceiling / verify = {ceiling / v:.2f}; merge / ceiling = {m / ceiling:.2f}"),
        (f"bare sqlite3 executemany of the same rows without any secondary index, "
         f"{FLOOR_BATCH:,} per transaction (records/s)", f"{f:,.0f}", ""),
        ("ceiling with those cheapest writes instead: no store that writes these rows "
         "beats it (records/s)", f"{best:,.0f}", f"ceiling / verify = {best / v:.2f}"),
        (f"exact lookup by (type, value), p50 / p99 (µs), {n:,} records",
         f"{p50:.1f} / {p99:.1f}", "goal: p50 <= 20"),
        ("database size per record (bytes, incl. indexes)", f"{size / n:,.0f}", ""),
        ("cold open, new process: reader / writer (s)", f"{reader:.3f} / {writer:.3f}", ""),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
