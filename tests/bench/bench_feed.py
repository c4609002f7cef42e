"""The change feed's memory at 1 M changes: a follower paging it versus reading it whole.

A real node database (``Store.open``) gets N change entries written straight into its
``changes`` table (the feed's own table; entries name signals the store does not hold, so
each entry still costs the signal lookup a real page makes). Each side runs in a fresh
process so its peak RSS is its own:

- paged: ``Store.changes(after, 10_000)`` from cursor 0 to the end, as ``GET /v1/changes``
  and the python-threatexchange exchange do;
- whole: every entry read into one list (what a feed without paging would hold).

    python tests/bench/bench_feed.py [--changes 1000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parent)]

from benchlib import bench_federation, bench_key  # noqa: E402

from node.store.store import Store  # noqa: E402

FED = bench_federation("feed bench", [bench_key("feed", n) for n in range(3)])
PAGE = 10_000


def build(path: Path, changes: int) -> None:
    with Store.open(path, FED, create=True) as store:
        conn = store.conn
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO changes (ts, signal, kind) VALUES (?, ?, 'active')",
            ((n, n.to_bytes(32, "big")) for n in range(1, changes + 1)),
        )
        conn.execute("COMMIT")


def run(path: Path, mode: str) -> None:
    """In a child process: read the feed, print entries, seconds and peak RSS (MB)."""
    start = time.perf_counter()
    with Store.open(path, FED, readonly=True) as store:
        if mode == "paged":
            after, seen = 0, 0
            while True:
                page = store.changes(after, PAGE, now_ms=0)
                entries = page["changes"]
                assert isinstance(entries, list)
                if not entries:
                    break
                seen += len(entries)
                after = entries[-1]["cursor"]
        else:
            rows = store.conn.execute("SELECT cursor, ts, signal, kind FROM changes").fetchall()
            whole = [{"cursor": c, "ts": t, "kind": k, "id": bytes(s).hex(), "signal": None}
                     for c, t, s, k in rows]  # fmt: skip
            seen = len(whole)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(seen, f"{seconds:.2f}", f"{peak_mb:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["paged", "whole"])
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    if args.child:
        run(args.db, args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "node.db"
        build(db, args.changes)
        results = {}
        for mode in ("paged", "whole"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--db", str(db)],
                capture_output=True, text=True, check=True, env=dict(os.environ),
            ).stdout.split()  # fmt: skip
            results[mode] = (int(out[0]), float(out[1]), float(out[2]))
    paged, whole = results["paged"], results["whole"]
    print(f"change feed, {args.changes:,} entries, pages of {PAGE:,}")
    print(f"{'':24}{'paged (the feed)':>20}{'whole list':>16}{'ratio':>8}")
    print(f"{'entries read':24}{paged[0]:>20,}{whole[0]:>16,}")
    print(f"{'seconds':24}{paged[1]:>20.2f}{whole[1]:>16.2f}{paged[1] / whole[1]:>8.2f}")
    print(f"{'peak RSS (MB)':24}{paged[2]:>20.0f}{whole[2]:>16.0f}{paged[2] / whole[2]:>8.2f}")


if __name__ == "__main__":
    main()
