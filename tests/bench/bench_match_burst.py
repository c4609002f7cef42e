"""Match latency while a node takes a burst of records (issue 13 item 14). A script, not a test:

    python tests/bench/bench_match_burst.py [--rounds 4] [--burst 5000] [--rate 200]
    python tests/bench/bench_match_burst.py --quick        # 2 rounds of 2,000 records

One real node process (plain HTTP on loopback) with ``--signals`` PDQ signals in its index.
One open-loop load of ``--rate`` match requests per second runs for the whole bench: request
i is sent at t0 + i / rate whether or not earlier answers came back, and its latency runs
from that scheduled instant to the answer, so a stalled node is charged for every request
that waited (no coordinated omission). Each request matches one PDQ hash (one in ten a near
copy of an indexed signal, so the answer carries provenance read from the store).

The bench alternates ``--rounds`` times: an idle window (``--idle-s`` seconds, nothing but
matches), then a burst: ``--burst`` new signals of another member pushed straight to the node
as a peer does (signed ``POST /v1/records`` of ``--batch`` records each, one after the
other, verified on the node's worker pool, merged and indexed). A request belongs to the
burst when it was scheduled between the first push and the answer to the last one. Idle and
burst windows interleave, so both see the same background load on a shared machine; the
second after each burst (its backlog draining) counts for neither.

It prints one table: p50 / p99 / max latency idle and during the bursts, side by side, and
their ratios (goal: p99 during a burst <= 3x idle), plus the records/s the bursts achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# the repository first (so `protocol` is the package, not tests/protocol), then tests/ for harness
sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

import aiohttp  # noqa: E402
from benchlib import sign_unsigned  # noqa: E402
from harness import NodeProc, found_federation, write_config  # noqa: E402

from node.home import NodeHome  # noqa: E402
from node.net.httpsig import sign_request  # noqa: E402
from node.store.store import Store  # noqa: E402
from protocol import Federation, SigningKey  # noqa: E402

GOAL_P99_RATIO = 3.0
SETTLE_S = 1.0  # between a burst and the next idle window (not counted in either)
BUSY_LOAD_PER_CORE = 0.5
QUIET_GOSSIP = {"interval_s": 600.0, "fanout": 0}  # no peers run: the node only serves


def random_pdq(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def near(value: str, rng: random.Random, bits: int = 8) -> str:
    """value with `bits` random bits flipped (well within PDQ's radius 31)."""
    number = int(value, 16)
    for bit in rng.sample(range(256), bits):
        number ^= 1 << bit
    return f"{number:064x}"


def signed_log(key: SigningKey, fed: str, values: Sequence[str], first_seq: int = 1,
               prev: str | None = None) -> tuple[list[bytes], str | None]:  # fmt: skip
    """Signal records of key's log for values, from first_seq on: (canonical bytes, head id)."""
    records = []
    for offset, value in enumerate(values):
        seq = first_seq + offset
        body = {"type": "pdq", "value": value, "labels": ["entity:bench"]}
        unsigned = {"v": 1, "fed": fed, "author": key.public, "seq": seq, "prev": prev,
                    "ts": 1_763_800_000_000 + seq, "kind": "signal", "body": body}  # fmt: skip
        canonical, prev = sign_unsigned(key, unsigned)
        records.append(canonical)
    return records, prev


# ---- setup ------------------------------------------------------------------------------


@dataclass
class Setup:
    node: NodeProc
    federation: Federation
    pusher: SigningKey
    indexed: list[str]
    bursts: list[list[list[bytes]]]  # per round, the batches to push


def prepare(root: Path, args: argparse.Namespace, rng: random.Random) -> Setup:
    federation, (node, pusher, seeder) = found_federation(root, ["node", "pusher", "seeder"])
    node.peers = []
    write_config(node, QUIET_GOSSIP)
    seed_key, push_key = NodeHome(seeder.home).key(), NodeHome(pusher.home).key()
    indexed = [random_pdq(rng) for _ in range(args.signals)]
    print(f"# signing and storing {args.signals:,} indexed signals ...", file=sys.stderr)
    records, _ = signed_log(seed_key, federation.id, indexed)
    with Store.open(node.home / "hashmesh.db", federation, create=True) as store:
        store.merge(records, received_ms=1, verify_workers=os.cpu_count() or 1)
    print(f"# signing {args.rounds} bursts of {args.burst:,} records ...", file=sys.stderr)
    bursts, seq, prev = [], 1, None
    for _ in range(args.rounds):
        values = [random_pdq(rng) for _ in range(args.burst)]
        burst, prev = signed_log(push_key, federation.id, values, seq, prev)
        seq += args.burst
        bursts.append([burst[i : i + args.batch] for i in range(0, len(burst), args.batch)])
    return Setup(node, federation, push_key, indexed, bursts)


# ---- the load and the bursts --------------------------------------------------------------


@dataclass
class Load:
    """The open-loop match load: (scheduled, latency) of every answered request."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    stop: bool = False


async def one_match(
    session: aiohttp.ClientSession, url: str, token: str, value: str, when: float, load: Load
) -> None:
    body = {"hashes": [{"type": "pdq", "value": value}]}
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with session.post(url, json=body, headers=headers) as response:
            await response.read()
            ok = response.status == 200
    except aiohttp.ClientError:
        ok = False
    if ok:
        load.samples.append((when, time.perf_counter() - when))
    else:
        load.errors += 1


async def run_load(
    session: aiohttp.ClientSession, setup: Setup, rate: float, load: Load, rng: random.Random
) -> None:
    url = f"http://127.0.0.1:{setup.node.local_port}/v1/match"
    token = NodeHome(setup.node.home).token()
    queries = [near(rng.choice(setup.indexed), rng) if i % 10 == 0 else random_pdq(rng)
               for i in range(1000)]  # fmt: skip
    tasks: set[asyncio.Task[None]] = set()
    t0, i = time.perf_counter(), 0
    while not load.stop:
        when = t0 + i / rate
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one_match(session, url, token, queries[i % 1000], when, load))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)


async def push_burst(
    session: aiohttp.ClientSession, setup: Setup, batches: list[list[bytes]]
) -> tuple[float, float]:
    """Push the batches one after the other as the pusher's node would: (start, end)."""
    url = setup.node.url.rstrip("/") + "/v1/records"
    start = time.perf_counter()
    for batch in batches:
        body = b"".join(line + b"\n" for line in batch)
        headers = sign_request(setup.pusher, "POST", url, body, now_s=time.time())
        headers["Content-Type"] = "application/x-ndjson"
        async with session.post(url, data=body, headers=headers) as response:
            answer = await response.json()
            if response.status != 200 or answer["counts"]["accepted"] != len(batch):
                raise SystemExit(f"push refused: {response.status} {answer}")
    return start, time.perf_counter()


async def measure(setup: Setup, args: argparse.Namespace, rng: random.Random) -> Result:
    load, result = Load(), Result()
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        driver = asyncio.create_task(run_load(session, setup, args.rate, load, rng))
        for batches in setup.bursts:
            await asyncio.sleep(SETTLE_S)  # warm-up; the previous burst's backlog drains
            began = time.perf_counter()
            await asyncio.sleep(args.idle_s)
            result.idle.append((began, time.perf_counter()))
            result.bursts.append(await push_burst(session, setup, batches))
        await asyncio.sleep(SETTLE_S)  # the last burst's stragglers are answered
        load.stop = True
        await driver
    result.load = load
    return result


# ---- the answer ---------------------------------------------------------------------------


@dataclass
class Result:
    idle: list[tuple[float, float]] = field(default_factory=list)
    bursts: list[tuple[float, float]] = field(default_factory=list)
    load: Load = field(default_factory=Load)

    def latencies(self, windows: list[tuple[float, float]]) -> list[float]:
        return sorted(ms for when, ms in self.ms() if any(a <= when < b for a, b in windows))

    def ms(self) -> list[tuple[float, float]]:
        return [(when, seconds * 1000) for when, seconds in self.load.samples]


def quantile(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def table(result: Result, args: argparse.Namespace) -> str:
    idle, burst = result.latencies(result.idle), result.latencies(result.bursts)
    pushed_s = sum(b - a for a, b in result.bursts)
    rate = args.rounds * args.burst / pushed_s if pushed_s else 0.0
    rows = [("idle", idle), (f"during a {args.burst:,}-record push", burst)]
    lines = ["| phase | requests | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
    for name, v in rows:
        worst = max(v, default=float("nan"))
        lines.append(f"| {name} | {len(v):,} | {quantile(v, 0.5):.2f} | "
                     f"{quantile(v, 0.99):.2f} | {worst:.1f} |")  # fmt: skip
    p50, p99 = (quantile(burst, q) / quantile(idle, q) for q in (0.5, 0.99))
    verdict = "met" if p99 <= GOAL_P99_RATIO else "not met"
    lines.append(f"| **ratio push / idle** | | **{p50:.2f}x** | **{p99:.2f}x** | |")
    lines += [
        "",
        f"Open-loop load {args.rate:g} match requests/s ({result.load.errors} failed); "
        f"{args.rounds} bursts of {args.burst:,} records in POSTs of {args.batch}, merged at "
        f"{rate:,.0f} records/s (mean {pushed_s / args.rounds:.2f} s a burst); index "
        f"{args.signals:,} PDQ signals.",
        f"Goal: p99 during a push <= {GOAL_P99_RATIO:g}x idle -- {verdict} ({p99:.2f}x).",
    ]
    return "\n".join(lines)


def environment(load_before: float) -> str:
    cores = os.cpu_count() or 1
    line = (f"python {platform.python_version()} on {platform.machine()}, {cores} cores, "
            f"load average {load_before:.1f} before the bench")  # fmt: skip
    if load_before > BUSY_LOAD_PER_CORE * cores:
        line += " -- a BUSY machine: latencies include other processes' work; re-measure quiet"
    return line


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="idle window + burst, repeated")
    parser.add_argument("--burst", type=int, default=5000, help="records pushed per burst")
    parser.add_argument("--batch", type=int, default=500, help="records per pushed POST")
    parser.add_argument("--rate", type=float, default=200.0, help="match requests per second")
    parser.add_argument("--idle-s", type=float, default=4.0, help="idle window per round (s)")
    parser.add_argument("--signals", type=int, default=20_000, help="PDQ signals indexed")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2,000: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.burst, args.idle_s, args.signals = 2, 2000, 2.0, 5000
    rng, load_before = random.Random(13), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hashmesh-burst-") as tmp:
        setup = prepare(Path(tmp), args, rng)
        setup.node.start()
        try:
            result = asyncio.run(measure(setup, args, rng))
        finally:
            setup.node.stop()
    print(environment(load_before))
    print()
    print(table(result, args))


if __name__ == "__main__":
    main()
