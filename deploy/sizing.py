#!/usr/bin/env python3
"""How big a match replica is and how many a load needs, from measured figures.

    python3 deploy/sizing.py                                  # the table in deploy/README.md
    python3 deploy/sizing.py --signals 25000000 --qps 40000   # one deployment

A replica (`hashmesh replica`) holds the whole list in memory and answers from one Python
process, so its memory follows the list and its CPU follows the queries:

- memory request = base RSS + bytes per signal x signals. The limit adds a second index,
  because a replica keeps serving from its old index while it rebuilds after an epoch change.
- one core per replica (the request the HorizontalPodAutoscaler's utilisation is measured
  against); the limit allows a burst to two.
- replicas = queries/s / (q/s per core x the autoscaler's target utilisation), rounded up, and
  never fewer than the PodDisruptionBudget's two.

q/s per core falls as the list grows (more candidates per query); between and beyond the
measured sizes it is interpolated on a log-log line through them.

The figures below are the only inputs. Each names the bench and command that measured it;
replace them when you measure on your hardware (`make bench`) and re-run this script.
tests/test_deploy.py checks that deploy/README.md's table and the replica Deployment's
resources (deploy/k8s/replica.yaml, sized for PLANNED_SIGNALS) are what this script prints.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

MIB = 1024 * 1024
ROUND_MIB = 64  # memory quantities are rounded up to this
HPA_TARGET_UTILISATION = 0.70  # deploy/k8s/replica.yaml, HorizontalPodAutoscaler
MIN_REPLICAS = 2  # deploy/k8s/replica.yaml: HorizontalPodAutoscaler minReplicas, PDB
CPU_REQUEST_CORES = 1
CPU_LIMIT_CORES = 2
PLANNED_SIGNALS = 10_000_000  # what deploy/k8s/replica.yaml is sized for
TABLE_SIGNALS = (1_000_000, 10_000_000)
TABLE_QPS = 10_000


@dataclass(frozen=True, slots=True)
class Figures:
    """Measured inputs (provisional until the replica bench lands: see `source`)."""

    source: str
    base_rss_mib: float
    bytes_per_signal: float
    qps_per_core: dict[int, float]  # list size -> queries/s one core answers


FIGURES = Figures(
    source=(
        "tests/bench/bench_match.py --sizes 10000000, clustered table (README bench table): "
        "in-process PDQ matching at r=31 on 2 threads, halved per core; 10 M: 5,506 q/s, "
        "93.5 B/signal; 1 M: 8,000 q/s (low end of 8,000-11,100, busy machine). Base RSS: "
        "a Python process with node.net.app imported, 104 MiB, rounded up to 128. "
        "Provisional: no HTTP cost and no provenance held, until tests/bench/bench_replica.py "
        "measures a replica process"
    ),
    base_rss_mib=128,
    bytes_per_signal=93.5,
    qps_per_core={1_000_000: 4_000, 10_000_000: 2_753},
)


@dataclass(frozen=True, slots=True)
class Sizing:
    signals: int
    memory_request_mib: int
    memory_limit_mib: int
    qps_per_replica: float
    replicas: int  # for the queries/s asked


def round_mib(mib: float) -> int:
    return math.ceil(mib / ROUND_MIB) * ROUND_MIB


def qps_per_core(signals: int, figures: Figures = FIGURES) -> float:
    """Log-log interpolation through the measured sizes (extrapolated outside them)."""
    (n1, q1), (n2, q2) = sorted(figures.qps_per_core.items())[:2]
    slope = math.log(q2 / q1) / math.log(n2 / n1)
    return q1 * (signals / n1) ** slope


def size(signals: int, qps: float, figures: Figures = FIGURES) -> Sizing:
    index_mib = figures.bytes_per_signal * signals / MIB
    per_replica = qps_per_core(signals, figures) * CPU_REQUEST_CORES
    return Sizing(
        signals=signals,
        memory_request_mib=round_mib(figures.base_rss_mib + index_mib),
        memory_limit_mib=round_mib(figures.base_rss_mib + 2 * index_mib),
        qps_per_replica=per_replica,
        replicas=max(MIN_REPLICAS, math.ceil(qps / (per_replica * HPA_TARGET_UTILISATION))),
    )


def millions(signals: int) -> str:
    return f"{signals / 1_000_000:g} M"


def table(figures: Figures = FIGURES) -> str:
    """The markdown table deploy/README.md shows (its rows are TABLE_SIGNALS)."""
    per_million = figures.bytes_per_signal * 1_000_000 / MIB
    lines = [
        "| signals | memory per replica: request / limit | CPU per replica: request / limit "
        f"| q/s per replica | cores per 1,000 q/s | replicas per {TABLE_QPS:,} q/s |",
        "|---|---|---|---|---|---|",
    ]
    for signals in TABLE_SIGNALS:
        s = size(signals, TABLE_QPS, figures)
        lines.append(
            f"| {millions(signals)} | {s.memory_request_mib} / {s.memory_limit_mib} MiB "
            f"| {CPU_REQUEST_CORES} / {CPU_LIMIT_CORES} cores | {s.qps_per_replica:,.0f} "
            f"| {1000 / qps_per_core(signals, figures):.2f} | {s.replicas} |"
        )
    lines.append(
        f"| per million signals | +{per_million:.0f} / +{2 * per_million:.0f} MiB "
        "| (CPU follows queries, not signals) | | | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=float, help="signals in the list (e.g. 25e6)")
    parser.add_argument("--qps", type=float, default=TABLE_QPS, help="peak match queries/s")
    args = parser.parse_args(argv)
    if args.signals is None:
        print(table())
        print(f"\nFigures: {FIGURES.source}.")
        return
    s = size(int(args.signals), args.qps)
    print(
        f"{millions(s.signals)} signals at {args.qps:,.0f} q/s: {s.replicas} replicas, each "
        f"memory {s.memory_request_mib}Mi (limit {s.memory_limit_mib}Mi), cpu "
        f"{CPU_REQUEST_CORES} (limit {CPU_LIMIT_CORES}), ~{s.qps_per_replica:,.0f} q/s at "
        f"full load; HorizontalPodAutoscaler target {HPA_TARGET_UTILISATION:.0%} CPU"
    )


if __name__ == "__main__":
    main()
