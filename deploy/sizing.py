#!/usr/bin/env python3
"""How big a match replica is and how many a load needs, from measured figures.

    python3 deploy/sizing.py                                  # the table in deploy/README.md
    python3 deploy/sizing.py --signals 25000000 --qps 40000   # one deployment

A replica (`hashmesh replica`) holds the whole list in memory and answers from one Python
process, so its memory follows the list and its CPU follows the queries:

- memory request = base RSS + bytes held per signal x signals (the steady state). The limit
  is the peak of a rebuild after an epoch change: the old list is still held while the new
  one loads. The node streams one snapshot at a time, so few replicas are above their
  request at once; the limit, not the request, is what must fit on a Kubernetes node.
- one core per replica: Python's per-request work holds the GIL, so a replica process uses
  about one core however many it is given. The autoscaler's utilisation is measured against
  this request; the limit allows short bursts (numpy threads).
- replicas = hashes/s / (hashes per CPU-second x the autoscaler's target utilisation),
  rounded up, and never fewer than two (the PodDisruptionBudget lets one go at a time).
- start to ready: the snapshot streamed, parsed and indexed, at a measured signals/s.

Hashes per CPU-second fall as the list grows (more candidates per query); between and
beyond the sizes in FIGURES they are interpolated on a log-log line through them.

FIGURES are the only inputs. Each names the bench and command that measured it; replace them
when you measure on your hardware and re-run this script. tests/test_deploy.py checks that
deploy/README.md's table and the replica Deployment's resources and startup probe
(deploy/k8s/replica.yaml, sized for PLANNED_SIGNALS) are what this script computes.
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

# bench_match.py, clustered PDQ table, batch throughput in-process (README bench table):
# 1 M ~8,000 q/s, 10 M 5,506 q/s. The whole per-hash cost is scaled by it (conservative:
# the HTTP and JSON part of a request does not grow with the list).
_INDEX_SLOWDOWN_10M = 8_000 / 5_506


@dataclass(frozen=True, slots=True)
class Figures:
    """Measured inputs; `source` says where each comes from."""

    source: str
    base_rss_mib: float  # a replica process holding nothing
    held_bytes_per_signal: float  # RSS growth per signal once loaded
    loading_bytes_per_signal: float  # RSS growth per signal at the peak of loading
    hashes_per_cpu_s: dict[int, float]  # list size -> hashes matched per CPU-second
    bootstrap_signals_per_s: float  # start to ready


FIGURES = Figures(
    source=(
        "python tests/bench/bench_replica.py --signals 1000000 --seconds 15 (README bench "
        "table), 1 M PDQ signals, batches of 100 hashes, on a busy shared 2-vCPU machine (load "
        "7-10): base RSS 96 MB, 507 B/signal held, 893 B/signal at the loading peak, 6,700 "
        "hashes per CPU-second of a replica process, start to ready 61 s (16,300 signals/s). "
        "10 M: hashes per CPU-second scaled down by the index's own slowdown from 1 M to 10 M "
        "(tests/bench/bench_match.py --sizes 10000000, clustered table: 1.45x), not measured "
        "end to end"
    ),
    base_rss_mib=96,
    held_bytes_per_signal=507,
    loading_bytes_per_signal=893,
    hashes_per_cpu_s={1_000_000: 6_700, 10_000_000: 6_700 / _INDEX_SLOWDOWN_10M},
    bootstrap_signals_per_s=16_300,
)


@dataclass(frozen=True, slots=True)
class Sizing:
    signals: int
    memory_request_mib: int
    memory_limit_mib: int
    qps_per_replica: float  # hashes/s of one replica at its full core
    replicas: int  # for the hashes/s asked
    ready_s: float  # start to ready


def round_mib(mib: float) -> int:
    return math.ceil(mib / ROUND_MIB) * ROUND_MIB


def hashes_per_cpu_s(signals: int, figures: Figures = FIGURES) -> float:
    """Log-log interpolation through the measured sizes (extrapolated outside them)."""
    (n1, q1), (n2, q2) = sorted(figures.hashes_per_cpu_s.items())[:2]
    slope = math.log(q2 / q1) / math.log(n2 / n1)
    return q1 * (signals / n1) ** slope


def size(signals: int, qps: float, figures: Figures = FIGURES) -> Sizing:
    held = figures.held_bytes_per_signal * signals / MIB
    rebuild = (figures.held_bytes_per_signal + figures.loading_bytes_per_signal) * signals / MIB
    per_replica = hashes_per_cpu_s(signals, figures) * CPU_REQUEST_CORES
    return Sizing(
        signals=signals,
        memory_request_mib=round_mib(figures.base_rss_mib + held),
        memory_limit_mib=round_mib(figures.base_rss_mib + rebuild),
        qps_per_replica=per_replica,
        replicas=max(MIN_REPLICAS, math.ceil(qps / (per_replica * HPA_TARGET_UTILISATION))),
        ready_s=signals / figures.bootstrap_signals_per_s,
    )


def millions(signals: int) -> str:
    return f"{signals / 1_000_000:g} M"


def gib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib} MiB"


def table(figures: Figures = FIGURES) -> str:
    """The markdown table deploy/README.md shows (its rows are TABLE_SIGNALS)."""
    held = figures.held_bytes_per_signal * 1_000_000 / MIB
    rebuild = (figures.held_bytes_per_signal + figures.loading_bytes_per_signal) * 1e6 / MIB
    lines = [
        "| signals | memory per replica: request / limit | cores per replica "
        f"| hashes/s per core | start to ready | replicas per {TABLE_QPS:,} hashes/s |",
        "|---|---|---|---|---|---|",
    ]
    for signals in TABLE_SIGNALS:
        s = size(signals, TABLE_QPS, figures)
        lines.append(
            f"| {millions(signals)} | {gib(s.memory_request_mib)} / {gib(s.memory_limit_mib)} "
            f"| {CPU_REQUEST_CORES} (limit {CPU_LIMIT_CORES}) | {s.qps_per_replica:,.0f} "
            f"| {s.ready_s / 60:.0f} min | {s.replicas} |"
        )
    lines.append(
        f"| per million signals | +{held:.0f} / +{rebuild:.0f} MiB | (CPU follows the load) "
        f"| | +{1e6 / figures.bootstrap_signals_per_s:.0f} s | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=float, help="signals in the list (e.g. 25e6)")
    parser.add_argument("--qps", type=float, default=TABLE_QPS, help="peak hashes matched/s")
    args = parser.parse_args(argv)
    if args.signals is None:
        print(table())
        print(f"\nFigures: {FIGURES.source}.")
        return
    s = size(int(args.signals), args.qps)
    print(
        f"{millions(s.signals)} signals at {args.qps:,.0f} hashes/s: {s.replicas} replicas, "
        f"each memory {s.memory_request_mib}Mi (limit {s.memory_limit_mib}Mi), cpu "
        f"{CPU_REQUEST_CORES} (limit {CPU_LIMIT_CORES}), ~{s.qps_per_replica:,.0f} hashes/s "
        f"on its core, ready ~{s.ready_s:.0f} s after it starts; HorizontalPodAutoscaler "
        f"target {HPA_TARGET_UTILISATION:.0%} CPU"
    )


if __name__ == "__main__":
    main()
