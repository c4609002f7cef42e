"""Scale study (issue 19): simulated federations of 10 to 1,000 members under the protocol's
gossip rules (``adopted``: SPEC 10.2 capped frontiers and frontier deltas, SPEC 10.3 a push
pipeline per peer and ``relay_asks`` = 3), optionally beside the rules before (``before``).

Every member's node holds every member's announce (each frontier lists N authors) and runs the
real engine and acceptance machine (``tests/sim``) on 50 ms links (+ up to 10 ms jitter,
100 Mbit/s uplinks). One run per size and rule set:

1. warm-up (5 s), then 10 s with no new record: **idle bytes** per node per second, sent plus
   received (HTTP heads and bodies, ``sim.wire``);
2. ``--signals`` new signals (default 20), one a second, each by a random member: for every
   (signal, node) the delay from authoring to being stored there -- **propagation p50/p99**;
   and the wire bytes of that phase beyond the idle rate, divided by (signals x nodes
   reached x the signal's canonical size) -- **wire bytes per record per node reached**
   (1.0 would be one copy of the bare record per node), split by exchange (push, frontier,
   log pages);
3. a burst of ``--burst`` records (default 200) by one member at once, after the network is
   quiet again: the same wire ratio when records share requests (``burst wire``), and the
   time until every node holds the whole burst.

Goals (issue 19): p99 <= 2 s at 1,000 members, idle <= 2 KB/s per node, wire <= 2x canonical.

Run: python tests/bench/bench_sim_scale.py [--sizes 10,50,200,1000] [--rules adopted,before]
     [--signals 20] [--plot docs/simulation-scale.png]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

from sim.members import signal_body  # noqa: E402
from sim.network import LinkSpec  # noqa: E402
from sim.world import ADOPTED, BEFORE, Rules, World  # noqa: E402

WARM_S, IDLE_S, SPACING_S, TAIL_S = 5.0, 10.0, 1.0, 5.0
RULES: dict[str, Rules] = {
    "adopted": ADOPTED,  # the protocol's rules (SPEC 10.2, 10.3): the engine's and the store's
    "before": BEFORE,  # uncapped full frontiers, every peer asked to relay (sim.world.BEFORE)
}


@dataclass
class Result:
    size: int
    rules: str
    p50: float
    p99: float
    worst: float
    reached: float  # share of (signal, node) pairs reached by the end
    idle: float  # bytes per node per second
    wire: float  # wire bytes per record per node reached / canonical size
    by_kind: dict[str, float]
    burst_wire: float  # the same, for a burst
    burst_s: float  # until every node holds the whole burst
    wall_s: float


def _sent(world: World) -> int:
    return sum(t.sent_head + t.sent_body for t in world.net.traffic.values())


def measure(size: int, name: str, signals: int, burst: int, seed: int = 1) -> Result:
    started = time.perf_counter()
    world = World(seed, size, rules=RULES[name], link=LinkSpec(0.05, 0.01))
    world.oracle.track_seen = True
    world.run(WARM_S)
    sent0, kinds0 = _sent(world), dict(world.net.by_kind)
    world.run(WARM_S + IDLE_S)
    idle_sent = _sent(world) - sent0
    idle = 2 * idle_sent / size / IDLE_S  # each byte sent is also received
    idle_kinds = {k: v - kinds0.get(k, 0) for k, v in world.net.by_kind.items()}
    start = world.now
    sent1, kinds1 = _sent(world), dict(world.net.by_kind)
    ids: list[str] = []
    for k in range(signals):
        member = world.rng.randrange(size)
        at = start + k * SPACING_S
        world.sched.at(
            at, lambda m=member, k=k: ids.append(world.nodes[m].author(signal_body(k)).id)
        )
    end = start + signals * SPACING_S + TAIL_S
    world.run(end)
    phase = end - start
    extra = (_sent(world) - sent1) - idle_sent * phase / IDLE_S
    canonical = statistics.mean(len(world.nodes[0].store.by_id[i].canonical) for i in ids
                                if i in world.nodes[0].store.by_id)  # fmt: skip
    delays = []
    for rid in ids:
        _, authored = world.oracle.authored[rid]
        seen = world.oracle.seen.get(rid, {})
        author = world.oracle.authored[rid][0]
        delays += [seen.get(i, float("inf")) - authored for i in range(size) if i != author]
    reached = [d for d in delays if d != float("inf")]
    denominator = len(reached) * canonical
    by_kind = {
        k: (v - kinds1.get(k, 0) - idle_kinds.get(k, 0) * phase / IDLE_S) / denominator
        for k, v in world.net.by_kind.items()
    }
    q = statistics.quantiles(delays, n=100, method="inclusive") if len(delays) > 1 else delays * 99
    burst_wire, burst_s = _burst(world, burst, idle_sent / IDLE_S, canonical)
    return Result(size, name, q[49], q[98], max(delays), len(reached) / len(delays), idle,
                  extra / denominator, by_kind, burst_wire, burst_s,
                  time.perf_counter() - started)  # fmt: skip


def _burst(world: World, count: int, idle_rate: float, canonical: float) -> tuple[float, float]:
    """One member adds count records at once: wire ratio and time until all hold them."""
    size = len(world.nodes)
    world.run(world.now + TAIL_S)
    start, sent = world.now, _sent(world)
    member = world.rng.randrange(size)
    node = world.nodes[member]
    ids = [node.author(signal_body(10**6 + k)).id for k in range(count)]
    done = None
    while world.now < start + 60.0:
        world.run(world.now + 0.1)
        if done is None and all(len(world.oracle.seen.get(i, {})) == size for i in ids):
            done = world.now - start
            break
    world.run(start + (done or 60.0) + TAIL_S)
    extra = _sent(world) - sent - idle_rate * (world.now - start)
    return extra / (count * (size - 1) * canonical), done or float("inf")


def table(results: list[Result]) -> str:
    lines = [
        "| members | rules | p50 s | p99 s | max s | idle B/s/node | wire x canonical "
        "(push / frontier / log) | burst wire x | burst all-held s | sim wall s |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        parts = " / ".join(f"{r.by_kind.get(k, 0.0):.2f}" for k in ("push", "heads", "log"))
        lines.append(
            f"| {r.size} | {r.rules} | {r.p50:.2f} | {r.p99:.2f} | {r.worst:.2f} | "
            f"{r.idle:,.0f} | {r.wire:.2f} ({parts}) | {r.burst_wire:.2f} | {r.burst_s:.2f} | "
            f"{r.wall_s:.0f} |"
        )
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name in dict.fromkeys(r.rules for r in results):
        rs = [r for r in results if r.rules == name]
        sizes = [r.size for r in rs]
        axes[0].plot(sizes, [r.p99 for r in rs], marker="o", label=f"{name} p99")
        axes[0].plot(sizes, [r.p50 for r in rs], marker=".", ls=":", label=f"{name} p50")
        axes[1].plot(sizes, [r.idle for r in rs], marker="o", label=name)
        axes[2].plot(sizes, [r.wire for r in rs], marker="o", label=name)
    goals = [(0, 2.0, "propagation of a new signal (s)"), (1, 2048, "idle bytes / node / s"),
             (2, 2.0, "wire bytes per record per node reached (x canonical)")]  # fmt: skip
    for i, goal, title in goals:
        ax = axes[i]
        ax.axhline(goal, color="grey", ls="--", lw=1, label="goal")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("members")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,200,1000")
    parser.add_argument("--rules", default="adopted")
    parser.add_argument("--signals", type=int, default=20)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument(
        "--rules-large",
        default="adopted",
        help="the rule sets to run at sizes of 500 and more (slow)",
    )
    parser.add_argument("--plot", type=Path, help="write the plot (PNG) here")
    args = parser.parse_args()
    results = []
    for size in map(int, args.sizes.split(",")):
        for name in (args.rules if size < 500 else args.rules_large).split(","):
            results.append(measure(size, name, args.signals, args.burst))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
