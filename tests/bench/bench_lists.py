"""What local lists, safelists and the match policy cost a match (issue 20). A script, not a test:

    python tests/bench/bench_lists.py [--signals 100000] [--list-entries 100000]
    python tests/bench/bench_lists.py --quick          # 20k signals, 20k list entries

One real node process (plain HTTP on loopback) with ``--signals`` PDQ signals in its index, a
local match list of ``--list-entries`` PDQ entries and a safelist of ``--safelist-entries``
(both switched off to begin with). The same queries are answered in four settings, in one
run, one after the other and then again in reverse order (so drift on a shared machine falls
on every setting alike):

- ``off``: no local list on, the default policy (the answer as before issue 20);
- ``safelist``: the safelist on: every federation hit's value is looked up in it;
- ``match list``: the match list on: every query is also searched in the list's index;
- ``policy``: a request's ``min_confirmations`` = 0 and ``ignore_members`` = [] (the policy
  path: every hit's provenance is read and judged, nothing is dropped).

Single: one PDQ hash a request, sequential, p50 and p99 latency. Batch: 100 hashes a request,
hashes per second. One query in ten is a near copy of an indexed signal (a hit with
provenance), one in ten a near copy of a list entry, the rest random. The table shows each
setting beside ``off`` and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# the repository first (so `protocol` is the package, not tests/protocol), then tests/ for harness
sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

from bench_match_burst import QUIET_GOSSIP, near, random_pdq, signed_log  # noqa: E402
from harness import NodeProc, found_federation, write_config  # noqa: E402

from node.home import NodeHome  # noqa: E402
from node.store.store import Store  # noqa: E402

SETTINGS = ("off", "safelist", "match list", "policy")
BATCH = 100


def call(node: NodeProc, token: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.local_port}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


Prepared = tuple[NodeProc, str, list[str]]  # the node, its token, the queries


def prepare(root: Path, args: argparse.Namespace, rng: random.Random) -> Prepared:
    federation, (node, seeder) = found_federation(root, ["node", "seeder"])
    node.peers = []
    write_config(node, QUIET_GOSSIP)
    indexed = [random_pdq(rng) for _ in range(args.signals)]
    print(f"# signing and storing {args.signals:,} signals ...", file=sys.stderr)
    records, _ = signed_log(NodeHome(seeder.home).key(), federation.id, indexed)
    with Store.open(node.home / "hashmesh.db", federation, create=True) as store:
        store.merge(records, received_ms=1, verify_workers=os.cpu_count() or 1)
    node.start()
    token = NodeHome(node.home).token()
    listed = [random_pdq(rng) for _ in range(args.list_entries)]
    print(f"# filling a match list of {len(listed):,} and a safelist ...", file=sys.stderr)
    call(node, token, "POST", "/v1/lists", {"name": "review"})
    call(node, token, "POST", "/v1/lists", {"name": "safe", "kind": "safelist"})
    for start in range(0, len(listed), 10_000):
        entries = [{"type": "pdq", "value": v} for v in listed[start : start + 10_000]]
        call(node, token, "POST", "/v1/lists/review/entries", {"entries": entries})
    safe = [near(v, rng, 40) for v in rng.sample(indexed, args.safelist_entries)]
    call(node, token, "POST", "/v1/lists/safe/entries",
         {"entries": [{"type": "pdq", "value": v} for v in safe]})  # fmt: skip
    for name in ("review", "safe"):
        call(node, token, "POST", f"/v1/lists/{name}/disable")
    queries = [
        near(rng.choice(indexed), rng) if i % 10 == 0
        else near(rng.choice(listed), rng) if i % 10 == 1 else random_pdq(rng)
        for i in range(args.queries)
    ]  # fmt: skip
    return node, token, queries


def switch(node: NodeProc, token: str, setting: str) -> dict[str, Any]:
    """Put the node in a setting; the extra members of each request."""
    call(node, token, "POST", f"/v1/lists/safe/{'enable' if setting == 'safelist' else 'disable'}")
    on = "enable" if setting == "match list" else "disable"
    call(node, token, "POST", f"/v1/lists/review/{on}")
    return {"min_confirmations": 0, "ignore_members": []} if setting == "policy" else {}


def single(node: NodeProc, token: str, queries: Sequence[str], extra: dict[str, Any]
           ) -> list[float]:  # fmt: skip
    latencies = []
    for value in queries:
        began = time.perf_counter()
        call(node, token, "POST", "/v1/match", {"hashes": [{"type": "pdq", "value": value}]}
             | extra)  # fmt: skip
        latencies.append(time.perf_counter() - began)
    return latencies


def batch(node: NodeProc, token: str, queries: Sequence[str], extra: dict[str, Any]) -> float:
    began = time.perf_counter()
    for start in range(0, len(queries), BATCH):
        hashes = [{"type": "pdq", "value": v} for v in queries[start : start + BATCH]]
        call(node, token, "POST", "/v1/match", {"hashes": hashes} | extra)
    return len(queries) / (time.perf_counter() - began)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--list-entries", type=int, default=100_000)
    parser.add_argument("--safelist-entries", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.signals, args.list_entries, args.queries = 20_000, 20_000, 300
    rng = random.Random(20)
    with tempfile.TemporaryDirectory() as tmp:
        node, token, queries = prepare(Path(tmp), args, rng)
        try:
            lat: dict[str, list[float]] = {s: [] for s in SETTINGS}
            rate: dict[str, list[float]] = {s: [] for s in SETTINGS}
            for order in (SETTINGS, tuple(reversed(SETTINGS))):
                for setting in order:
                    extra = switch(node, token, setting)
                    single(node, token, queries[:50], extra)  # warm-up
                    lat[setting] += single(node, token, queries, extra)
                    rate[setting].append(batch(node, token, queries, extra))
        finally:
            node.stop()
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    print(f"\n## local lists and match policy: {args.signals:,} signals, a match list of "
          f"{args.list_entries:,}, a safelist of {args.safelist_entries:,}; {len(queries):,} "
          f"queries ({platform.python_version()}, {os.cpu_count()} cores, load/core "
          f"{load:.1f}{' - a busy machine' if load > 0.5 else ''})\n")  # fmt: skip
    print("| setting | single p50 ms | p99 ms | p50 vs off | batch hashes/s | vs off |")
    print("|---|---:|---:|---:|---:|---:|")
    base_p50 = statistics.median(lat["off"])
    base_rate = statistics.median(rate["off"])
    for setting in SETTINGS:
        p50 = statistics.median(lat[setting])
        p99 = statistics.quantiles(lat[setting], n=100)[98]
        r = statistics.median(rate[setting])
        print(f"| {setting} | {p50 * 1000:.2f} | {p99 * 1000:.2f} | {p50 / base_p50:.2f}x "
              f"| {r:,.0f} | {r / base_rate:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
