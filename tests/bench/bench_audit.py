"""Benchmark of the auditor: a full audit of a node database against bare signature checks.

    python tests/bench/bench_audit.py [--n 1000000] [--workers CPUS] [--cache DIR]

Prints one markdown table from one run:

- full audit: ``node.audit.engine.audit`` over a real node database of N records -- every record's
  bytes decoded and its signature verified individually (``protocol.decode_record`` on
  ``--workers`` processes), stored metadata, chains, membership, fork evidence, heads, and the
  materialised tables compared with ``protocol.fold_state`` -- from opening the file to the
  verdict (SQLite's quick_check of the file included);
- bare PyNaCl verify on all cores: ``crypto_sign_open`` alone over the same records' prepared
  signing inputs on a process pool of the same size (the verification limit);
- ``protocol.decode_record`` alone on the same pool: the per-record check every audit must
  make (canonical bytes, schema, signature), i.e. the ceiling the protocol core sets;
- ``protocol.fold_state`` alone over the same records on one core, and the ceiling that the
  bare verify and this fold set together when they share the machine's cores
  (``benchlib.shared_core_ceiling``): every full audit verifies every record and derives the
  state, so audit / verify above ceiling / verify is out of reach here.

The three are measured in ``--rounds`` interleaved rounds and the best of each counts, so load
that comes and goes on a shared machine weighs on all three alike.

The N signed records are generated on a process pool and cached under --cache (keyed by N),
and so is the node database built from them with ``Store.merge``.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nacl.bindings
import orjson
from benchlib import bench_federation, bench_key, shared_core_ceiling, sign_log

from node.audit.engine import AuditResult, audit
from node.audit.sources import open_source
from node.runtime import tune_for_bulk_records
from node.store.schema import known_migrations
from node.store.store import Store
from protocol import Federation, SigningKey, fold_state
from protocol.batch import trusted_record, verify_records
from protocol.records import RECORD_DOMAIN, record_id_of, unsigned_bytes

AUTHORS = 8
T0 = 1_763_800_000_000
LABELS = ("behaviour:glorification", "entity:alpha", "entity:beta", "incident:42")
TYPES = (("sha256", 64), ("sha256", 64), ("pdq", 64), ("md5", 32))
BATCH = 10_000


# -- the records and the database -------------------------------------------------------------


def author_key(n: int) -> SigningKey:
    return bench_key("audit bench author", n)


def federation() -> Federation:
    return bench_federation("audit bench", [author_key(n) for n in range(AUTHORS)])


def author_log(n: int, count: int, fed: str) -> list[bytes]:
    """One author's chain: 80% signals, 10% opinions on others' signals, 10% retractions."""
    return sign_log(author_key(n), fed, count, random.Random(n), _body, t0=T0, ts_step=1000)


def _body(rng: random.Random, own: list[str]) -> tuple[str, dict[str, object]]:
    roll = rng.random()
    if roll < 0.10 and own:
        verdict = rng.choice(("confirm", "dispute", "seen"))
        return "opinion", {"signal": rng.choice(own), "verdict": verdict, "labels": []}
    if roll < 0.20 and own:
        return "retract", {"signal": own.pop(rng.randrange(len(own)))}
    type_, chars = rng.choice(TYPES)
    labels = sorted(rng.sample(LABELS, rng.randint(1, 2)))
    return "signal", {"type": type_, "value": rng.randbytes(chars // 2).hex(), "labels": labels}


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


def load_records(n: int, cache: Path, workers: int, fed: Federation) -> list[bytes]:
    path = cache / f"audit-bench-{n}-{fed.id[:12]}.records"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        counts = [n // AUTHORS + (1 if i < n % AUTHORS else 0) for i in range(AUTHORS)]
        with _pool(workers) as pool:
            logs = list(pool.map(author_log, range(AUTHORS), counts, [fed.id] * AUTHORS))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(r + b"\n" for log in logs for r in log))
        tmp.rename(path)
    return path.read_bytes().split(b"\n")[:-1]


def load_database(records: list[bytes], cache: Path, workers: int, fed: Federation) -> Path:
    """The node database of the records, built once per N and schema."""
    schema = hashlib.sha256("/".join(known_migrations()).encode()).hexdigest()[:8]
    path = cache / f"audit-bench-{len(records)}-{fed.id[:12]}-{schema}.db"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.db")
    for stale in cache.glob(tmp.name + "*"):
        stale.unlink()
    with Store.open(tmp, fed, create=True) as store:
        chunks = (records[i : i + BATCH] for i in range(0, len(records), BATCH))
        for done, result in enumerate(store.merge_many(chunks, received_ms=T0,
                                                       verify_workers=workers)):  # fmt: skip
            if result.counts()["accepted"] != len(result.outcomes):
                raise SystemExit(f"merge did not accept everything: {result.counts()}")
            print(f"  building the database: {(done + 1) * BATCH:,}", file=sys.stderr, end="\r")
    tmp.rename(path)
    return path


# -- the measurements --------------------------------------------------------------------------


def bare_verify_chunk(pk: bytes, signed: list[bytes]) -> int:
    for sm in signed:
        nacl.bindings.crypto_sign_open(sm, pk)
    return len(signed)


def signed_inputs(records: Sequence[bytes]) -> list[tuple[bytes, list[bytes]]]:
    """(author key, [sig + signing input]) per chunk of 1024 records of one author."""
    tasks: list[tuple[bytes, list[bytes]]] = []
    for i in range(0, len(records), 1024):
        objs = [(orjson.loads(r), r) for r in records[i : i + 1024]]
        by_author: dict[str, list[bytes]] = {}
        for o, r in objs:
            signed = bytes.fromhex(o["sig"]) + RECORD_DOMAIN + unsigned_bytes(r)
            by_author.setdefault(o["author"], []).append(signed)
        tasks += [(bytes.fromhex(a), signed) for a, signed in by_author.items()]
    return tasks


def decode_all(pool: ProcessPoolExecutor, records: list[bytes], fed: str) -> float:
    """protocol.decode_record alone over every record, on the pool (what the audit's workers
    run, without the audit)."""
    chunks = [records[i : i + 1024] for i in range(0, len(records), 1024)]
    start = time.perf_counter()
    done = sum(map(len, pool.map(verify_records, chunks, [fed] * len(chunks))))
    return done / (time.perf_counter() - start)


def bare_verify(pool: ProcessPoolExecutor, tasks: list[tuple[bytes, list[bytes]]]) -> float:
    start = time.perf_counter()
    done = sum(pool.map(bare_verify_chunk, *zip(*tasks, strict=True)))
    return done / (time.perf_counter() - start)


class Stages:
    """When each stage of the audit began (verification overlaps the others on a pool)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        self.started.setdefault(stage, time.perf_counter())


def fold_rate(records: list[bytes], fed: Federation) -> float:
    """records/s of protocol.fold_state alone over the records (one core): the state every
    audit must derive to compare with the node's tables."""
    built = [trusted_record(raw, record_id_of(raw)) for raw in records]
    start = time.perf_counter()
    fold_state(built, fed, T0)
    return len(built) / (time.perf_counter() - start)


def full_audit(db: Path, workers: int) -> tuple[float, AuditResult, dict[str, float]]:
    stages = Stages()
    start = time.perf_counter()
    snap = open_source(str(db))
    try:
        result = audit(snap, now_ms=T0, workers=workers, progress=stages)
    finally:
        snap.close()
    seconds = time.perf_counter() - start
    offsets = {stage: at - start for stage, at in stages.started.items()}
    return result.counts["rows"] / seconds, result, offsets | {"verdict": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each (best counts)")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "hashmesh-bench"
    )
    args = parser.parse_args()
    tune_for_bulk_records()  # as the hashmesh command does
    fed = federation()
    t = time.perf_counter()
    records = load_records(args.n, args.cache, args.workers, fed)
    db = load_database(records, args.cache, args.workers, fed)
    print(f"{len(records):,} records and their database ready in {time.perf_counter() - t:.0f} s",
          file=sys.stderr)  # fmt: skip
    rates, result, stages = measure(args, records, db, fed)
    if not result.clean or result.counts["valid"] != args.n:
        raise SystemExit(f"the audit did not pass: {result.counts}, {result.violations[:3]}")
    print_table(args, rates, stages)


def measure(
    args: argparse.Namespace, records: list[bytes], db: Path, fed: Federation
) -> tuple[dict[str, list[float]], AuditResult, dict[str, float]]:
    """Rounds of bare verify, decode_record and the full audit, interleaved, so load that comes
    and goes on the machine weighs on all three; the best of each round counts."""
    tasks = signed_inputs(records)
    rates: dict[str, list[float]] = {"audit": [], "verify": [], "decode": [], "fold": []}
    best: tuple[float, AuditResult, dict[str, float]] | None = None
    for n in range(args.rounds):
        with _pool(args.workers) as pool:
            list(pool.map(bare_verify_chunk, *zip(*tasks[: args.workers], strict=True)))  # warm
            rates["verify"].append(bare_verify(pool, tasks))
            rates["decode"].append(decode_all(pool, records, fed.id))
        run = full_audit(db, args.workers)
        rates["audit"].append(run[0])
        rates["fold"].append(fold_rate(records, fed))
        best = run if best is None or run[0] > best[0] else best
        print(f"  round {n + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()),
              file=sys.stderr)  # fmt: skip
    assert best is not None
    return rates, best[1], best[2]


def print_table(
    args: argparse.Namespace, rates: dict[str, list[float]], stages: dict[str, float]
) -> None:
    audit_rate, verify, decode, fold = (
        max(rates[k]) for k in ("audit", "verify", "decode", "fold")
    )
    ceiling = shared_core_ceiling(verify, fold, args.workers)
    decode_ceiling = shared_core_ceiling(decode, fold, args.workers)

    def all_of(key: str) -> str:
        return " / ".join(f"{r:,.0f}" for r in rates[key])

    print(f"\nAudit benchmark: {args.n:,} records by {AUTHORS} authors in a node database, "
          f"{args.workers} verify worker(s), {os.cpu_count()} CPU(s), best of {args.rounds} "
          "interleaved rounds\n")  # fmt: skip
    print("| measure | records/s | ratio |\n|---|---:|---:|")
    ratio = f"audit / verify = {audit_rate / verify:.2f} (goal >= 0.85)"
    print(f"| full audit, every signature checked individually (rounds: {all_of('audit')}) | "
          f"{audit_rate:,.0f} | {ratio} |")  # fmt: skip
    print(f"| bare PyNaCl verify, {args.workers} process(es) (rounds: {all_of('verify')}) | "
          f"{verify:,.0f} | 1.00 |")  # fmt: skip
    ratios = f"decode / verify = {decode / verify:.2f}; audit / decode = {audit_rate / decode:.2f}"
    print(f"| protocol.decode_record alone, {args.workers} process(es): the audit's per-record "
          f"check without the rest of the audit (rounds: {all_of('decode')}) | {decode:,.0f} | "
          f"{ratios} |")  # fmt: skip
    print(f"| protocol.fold_state alone over the same records, one core (rounds: {all_of('fold')})"
          f" | {fold:,.0f} | |")  # fmt: skip
    print(f"| ceiling: that verify and that fold sharing the {args.workers} cores, nothing else "
          f"| {ceiling:,.0f} | ceiling / verify = {ceiling / verify:.2f}; audit / ceiling = "
          f"{audit_rate / ceiling:.2f} |")  # fmt: skip
    print(f"| ceiling with decode_record's checks in place of bare verify, and that fold "
          f"| {decode_ceiling:,.0f} | ceiling / verify = {decode_ceiling / verify:.2f}; audit / "
          f"ceiling = {audit_rate / decode_ceiling:.2f} |")  # fmt: skip
    print(
        "\n| audit stage (verification runs on the pool throughout) | starts at (s) |\n|---|---:|"
    )
    for stage, seconds in sorted(stages.items(), key=lambda item: item[1]):
        print(f"| {stage} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
