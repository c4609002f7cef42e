"""What the match log and the actions on a match cost the match path (issue 20). A script,
not a test:

    python tests/bench/bench_moderation.py [--signals 10000000] [--rounds 3]
    python tests/bench/bench_moderation.py --quick          # 200k signals, 2 rounds

One node app in this process (``make_app`` on a real node home: its store, its index, its
moderation service, nothing mocked), matched through ``node.net.matching.match_hashes`` --
the function behind ``POST /v1/match`` -- without HTTP in front, so only the match path is
timed. The index holds ``--signals`` random PDQ hashes plus ``--listed`` PDQ signals of
another member stored with provenance (labels ``entity:bench``). Queries are near copies of
listed signals (each a hit, 8 bits off) or random hashes (a miss).

Off: ``node.moderation`` is None (no log, no actions; what the node did before). On: the
match log, flood quarantine at its defaults, sightings of ``entity:bench`` (at most 20 a
minute, the default), and one webhook rule that every hit passes, delivering to a receiver
in another process (an aiohttp server answering 204) -- the heaviest setting: every hit is
logged, counted and posted. Off and on alternate ``--rounds`` times on the same index, so
both see the same background load; each figure is the median over the rounds.

Measured: single-query latency (p50, p99) of a hit and of a miss, one request at a time; and
batch throughput: two requests of ``--batch`` hashes (10% hits) in flight at a time, queries
per second. The table gives on/off ratios (goal: <= 1.10, i.e. at most 10% slower) and what
the background did meanwhile (matches logged and dropped, deliveries made).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# the repository first (so `protocol` is the package, not tests/protocol), then tests/ for harness
sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

import numpy as np  # noqa: E402
from aiohttp import web  # noqa: E402
from benchlib import sign_unsigned  # noqa: E402
from harness import found_federation, free_port, wait_until  # noqa: E402

from node.config import load_config  # noqa: E402
from node.home import NodeHome  # noqa: E402
from node.media.index import MatchIndex  # noqa: E402
from node.moderation.service import Moderation  # noqa: E402
from node.net.app import make_app  # noqa: E402
from node.net.context import NODE, Node  # noqa: E402
from node.net.matching import match_hashes  # noqa: E402
from node.store.store import Store  # noqa: E402

GOAL_RATIO = 1.10
MODES = ("off", "log", "full")
# (measure, unit, higher is better, has the goal)
MEASURES = (("hit p50", "ms", False, True), ("hit p99", "ms", False, False),
            ("miss p50", "ms", False, True), ("miss p99", "ms", False, False),
            ("batch q/s", "q/s", True, True),
            ("node CPU µs/query", "µs", False, False))  # fmt: skip
HIT_SHARE = 0.10
QUIET_GOSSIP = {"interval_s": 3600.0, "fanout": 0}
RECEIVER = """
import sys
from aiohttp import web
async def hook(request):
    await request.read()
    return web.Response(status=204)
app = web.Application()
app.router.add_post("/hook", hook)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def random_pdq(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def near(value: str, rng: random.Random, bits: int = 8) -> str:
    number = int(value, 16)
    for bit in rng.sample(range(256), bits):
        number ^= 1 << bit
    return f"{number:064x}"


def listed_signals(root: Path, count: int) -> tuple[Path, list[str]]:
    """A two-member federation's homes; count PDQ signals of member b merged into a's
    store. Returns a's home and the listed values."""
    _, [a, b] = found_federation(root, ["a", "b"], gossip=QUIET_GOSSIP)
    home_a, key_b = NodeHome(a.home), NodeHome(b.home).key()
    rng = random.Random(7)
    values = [random_pdq(rng) for _ in range(count)]
    records, prev, fed = [], None, home_a.federation().id
    for seq, value in enumerate(values, 1):
        body = {"type": "pdq", "value": value, "labels": ["entity:bench"]}
        unsigned = {"v": 1, "fed": fed, "author": key_b.public, "seq": seq, "prev": prev,
                    "ts": 1_763_800_000_000 + seq, "kind": "signal", "body": body}  # fmt: skip
        canonical, prev = sign_unsigned(key_b, unsigned)
        records.append(canonical)
    with Store.open(home_a.db_path, home_a.federation(), create=True) as store:
        for start in range(0, len(records), 2000):
            store.merge(records[start : start + 2000], received_ms=1_763_900_000_000)
    return a.home, values


def configure(home: Path, receiver_port: int) -> None:
    with (home / "config.toml").open("a") as f:
        f.write(
            '\n[moderation]\nsightings = ["entity:bench"]\n'
            f'\n[[webhooks]]\nname = "every-hit"\nurl = "http://127.0.0.1:{receiver_port}/hook"\n'
            'secret = "a-long-secret-for-the-bench"\n'
        )


def random_rows(n: int, first_key: int) -> list[tuple[int, str, str]]:
    data = np.random.default_rng(11).integers(0, 256, size=(n, 32), dtype=np.uint8)
    text = data.tobytes().hex()
    return [(first_key + i, "pdq", text[64 * i : 64 * i + 64]) for i in range(n)]


async def single(node: Node, values: Sequence[str]) -> list[float]:
    times = []
    for value in values:
        start = time.perf_counter()
        await match_hashes(node, {"hashes": [{"type": "pdq", "value": value}]})
        times.append(time.perf_counter() - start)
    return times


async def batch_rate(node: Node, batches: Sequence[list[dict[str, str]]]) -> float:
    work = list(batches)

    async def worker() -> None:
        while work:
            await match_hashes(node, {"hashes": work.pop()})

    start = time.perf_counter()
    await asyncio.gather(worker(), worker())
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def pct(times: list[float], q: float) -> float:
    return float(np.percentile(times, q)) * 1e3


async def bench(args: argparse.Namespace, root: Path, receiver_port: int) -> None:
    began = time.perf_counter()
    home, listed = listed_signals(root, args.listed)
    configure(home, receiver_port)
    app = make_app(load_config(home, env={}))
    runner = web.AppRunner(app)
    await runner.setup()  # opens the store, builds the index, starts the moderation service
    node = app[NODE]
    moderation = node.moderation
    assert moderation is not None and moderation.running
    start = time.perf_counter()
    stored = await node.store.read(lambda s: list(s.active_signals_for_index(now_ms=0)))
    index = MatchIndex()
    await asyncio.to_thread(index.add_many, stored + random_rows(args.signals, 10**9))
    async with node.index_lock:
        node.index = index
    build_s = time.perf_counter() - start
    print(f"setup {time.perf_counter() - began:.0f} s (index of {len(index):,} built in "
          f"{build_s:.0f} s)", file=sys.stderr)  # fmt: skip
    rng = random.Random(3)
    rules = dict(moderation.rules)
    results: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    for round_ in range(args.rounds):
        for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
            node.moderation = None if mode == "off" else moderation
            moderation.rules = rules if mode == "full" else {}
            row = results[mode]
            cpu = time.process_time()
            measured = await measure(node, listed, args, rng)
            await moderation.flush()  # the phase's own log writes count towards its CPU
            queries = 2 * args.single + args.batches * args.batch
            measured["node CPU µs/query"] = (time.process_time() - cpu) / queries * 1e6
            for name, value in measured.items():
                row.setdefault(name, []).append(value)
            print(f"round {round_ + 1} {mode}: hit p50 {row['hit p50'][-1]:.3f} ms, "
                  f"batch {row['batch q/s'][-1]:,.0f} q/s", file=sys.stderr)  # fmt: skip
            await drain(moderation)  # the next phase starts with nothing left to do
    node.moderation, moderation.rules = moderation, rules
    report(args, results, moderation.counts(), moderation.delivery_counts, len(index))
    await runner.cleanup()


async def measure(
    node: Node, listed: Sequence[str], args: argparse.Namespace, rng: random.Random
) -> dict[str, float]:
    hits = [near(rng.choice(listed), rng) for _ in range(args.single)]
    misses = [random_pdq(rng) for _ in range(args.single)]
    hit_times, miss_times = await single(node, hits), await single(node, misses)
    batches = [
        [{"type": "pdq", "value": near(rng.choice(listed), rng)
          if rng.random() < HIT_SHARE else random_pdq(rng)} for _ in range(args.batch)]
        for _ in range(args.batches)
    ]  # fmt: skip
    rate = await batch_rate(node, batches)
    return {"hit p50": pct(hit_times, 50), "hit p99": pct(hit_times, 99),
            "miss p50": pct(miss_times, 50), "miss p99": pct(miss_times, 99),
            "batch q/s": rate}  # fmt: skip


async def drain(moderation: Moderation) -> None:
    """Write the queue and wait for the deliveries it queued (not timed)."""
    await moderation.flush()
    deadline = time.monotonic() + 600
    while moderation.delivery_counts["pending"] > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, list[float]]],
    stats: dict[str, int],
    queue: dict[str, int],
    indexed: int,
) -> None:
    load = os.getloadavg()[0]
    print(f"\n## Match path with the match log and actions: off vs on ({indexed:,} PDQ signals, "
          f"{args.listed:,} listed with provenance)\n")  # fmt: skip
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{load:.1f} at the end; median of {args.rounds} alternating rounds; single: "
          f"{args.single} queries one at a time; batch: {args.batches} requests of "
          f"{args.batch} hashes ({HIT_SHARE:.0%} hits), two in flight. log: match log, "
          "flood quarantine, sightings of entity:bench; full: log and a webhook on every "
          "hit\n")  # fmt: skip
    print("| measure | off | log | log/off | full | full/off | goal |")
    print("|---|---|---|---|---|---|---|")
    for name, unit, faster_is_more, goal in MEASURES:
        off, *on = (statistics.median(results[m][name]) for m in MODES)
        ratios = [off / v if faster_is_more else v / off for v in on]  # > 1: a slowdown
        cells = [f"{x:,.0f}" if unit != "ms" else f"{x:.3f} ms" for x in (off, *on)]
        row = [cells[0], cells[1], f"{ratios[0]:.3f}", cells[2], f"{ratios[1]:.3f}"]
        verdict = "met" if max(ratios) <= GOAL_RATIO else "missed"
        row.append(f"<= {GOAL_RATIO:.2f} — {verdict}" if goal else "")
        print(f"| {name} | {' | '.join(row)} |")
    print(f"\nMeanwhile: {stats['logged']:,} matches logged, {stats['dropped']:,} dropped (queue "
          f"full), {stats['delivered']:,} webhook deliveries made, {stats['failed']:,} failed "
          f"attempts, {queue['pending']:,} pending and {queue['held']:,} held at the end, "
          f"{stats['quarantines']:,} signals quarantined, {stats['sightings']:,} sightings "
          "signed. Ratios are slowdowns (on/off for latency and CPU, off/on for throughput); "
          "node CPU is the node process's (the webhook sender's process not counted).")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=int, default=10_000_000)
    parser.add_argument("--listed", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="200k signals, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.signals, args.rounds, args.listed, args.single = 200_000, 2, 1000, 300
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        wait_until(lambda: _listening(port), timeout=30)
        with tempfile.TemporaryDirectory(prefix="bench-moderation-") as root:
            asyncio.run(bench(args, Path(root), port))
    finally:
        receiver.terminate()
        receiver.wait(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
