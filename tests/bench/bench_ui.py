"""Benchmark of the web UI's pages on a large store, beside the local API's JSON for the same.

    python tests/bench/bench_ui.py [--signals 1000000] [--rounds 100] [--cache DIR]

A node database of about ``--signals`` signals (8 members; besides the signals, opinions
with notes, disputes among them, retractions and a few expired signals) is built once with
``Store.merge_many`` and cached under ``--cache``. The node app (``make_app``: store, match
index, UI) is served by aiohttp on 127.0.0.1 and a signed-in session times, in ``--rounds``
interleaved rounds, every page kind end to end (request, SQL, template, response): the
signals list (first page, a label, a type, a member, each status, a page deep down the list,
a search by value) and a signal page; beside them the local API's ``GET /v1/signals`` and
``GET /v1/signals/{id}`` (JSON, same store). Goal: p95 < 200 ms for the list and the page.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher
from benchlib import bench_federation, bench_key, sign_log

from node.config import load_config
from node.home import NodeHome, init_home
from node.net.app import make_app
from node.net.context import NODE
from node.runtime import tune_for_bulk_records
from node.store.store import Store, users
from protocol import Federation, SigningKey

AUTHORS = 8
T0 = 1_763_800_000_000
LABELS = ("behaviour:glorification", "entity:alpha", "entity:beta", "incident:42")
RARE = "incident:rare"  # on 1 signal in 1,000
TYPES = (("sha256", 64), ("pdq", 64), ("md5", 32), ("md5", 32))
BATCH = 10_000
PASSWORD = "bench password"


def author_key(n: int) -> SigningKey:
    return bench_key("ui bench author", n)


def federation() -> Federation:
    return bench_federation("ui bench", [author_key(n) for n in range(AUTHORS)])


def _body(rng: random.Random, own: list[str]) -> tuple[str, dict[str, object]]:
    roll = rng.random()
    if roll < 0.03 and own:
        verdict = rng.choice(("confirm", "dispute", "seen", "seen"))
        return "opinion", {
            "signal": rng.choice(own),
            "verdict": verdict,
            "labels": [],
            "note": f"reviewed: {rng.randbytes(6).hex()}",
        }
    if roll < 0.05 and own:
        return "retract", {"signal": own.pop(rng.randrange(len(own))), "reason": "error"}
    type_, chars = rng.choice(TYPES)
    labels = sorted(rng.sample(LABELS, rng.randint(1, 2)) + ([RARE] if roll > 0.999 else []))
    body: dict[str, object] = {
        "type": type_,
        "value": rng.randbytes(chars // 2).hex(),
        "labels": labels,
    }
    if roll < 0.051:
        body["expires"] = T0 + 1000  # long past
    return "signal", body


def author_log(n: int, count: int, fed: str) -> list[bytes]:
    return sign_log(author_key(n), fed, count, random.Random(n), _body, t0=T0, ts_step=1000)


def build_home(signals: int, cache: Path, workers: int) -> Path:
    """A node home for member 0 whose database holds the records (built once per size)."""
    from concurrent.futures import ProcessPoolExecutor

    fed = federation()
    home = cache / f"ui-bench-{signals}-{fed.id[:12]}"
    if (home / "hashmesh.db").exists() and (home / "built").exists():
        return home
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    init_home(home, name="member-0", listen="127.0.0.1:7990", seed=author_key(0).seed, tls=False)
    NodeHome(home).install_federation(fed)
    total = int(signals / 0.95) + 1
    counts = [total // AUTHORS + (1 if i < total % AUTHORS else 0) for i in range(AUTHORS)]
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        logs = list(pool.map(author_log, range(AUTHORS), counts, [fed.id] * AUTHORS))
    records = [r for log in logs for r in log]
    print(f"  signed {len(records):,} records in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    t = time.perf_counter()
    with Store.open(home / "hashmesh.db", fed, create=True) as store:
        chunks = (records[i : i + BATCH] for i in range(0, len(records), BATCH))
        for done, _ in enumerate(store.merge_many(chunks, received_ms=T0, verify_workers=workers)):
            print(f"  merged {(done + 1) * BATCH:,}", file=sys.stderr, end="\r")
        users.add_user(
            store.conn,
            "bench",
            "viewer",
            PASSWORD,
            now_ms=T0,
            hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
        )
    print(f"  merged in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    (home / "built").write_text("ok\n")
    return home


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def measure(home: Path, rounds: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    app = make_app(load_config(home, env={}))
    server = TestServer(app, host="127.0.0.1")
    t = time.perf_counter()
    await server.start_server()
    print(f"  node started (index built) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    node = app[NODE]
    token = node.token
    stats = await node.store.read(lambda s: s.stats(now_ms=T0))
    ids = await node.store.read(
        lambda s: [
            bytes(r[0]).hex()
            for r in s.conn.execute("SELECT id FROM signals ORDER BY random() LIMIT ?", (rounds,))
        ]
    )
    values = await node.store.read(
        lambda s: [
            f"{r[0]}:{r[1]}"
            for r in s.conn.execute(
                "SELECT type, value FROM signals ORDER BY random() LIMIT ?", (rounds,)
            )
        ]
    )
    member = author_key(3).public
    deep = await node.store.read(
        lambda s: int(s.conn.execute("SELECT max(row) FROM signals").fetchone()[0]) // 2
    )
    jar = aiohttp.CookieJar(unsafe=True)
    times: dict[str, list[float]] = {}
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        url = server.make_url
        page = await (await session.get(url("/ui/login"))).text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf is not None
        login = await session.post(
            url("/ui/login"), data={"name": "bench", "password": PASSWORD, "csrf_token": csrf[1]}
        )
        assert "Sign out" in await login.text(), "login failed"
        bearer = {"Authorization": f"Bearer {token}"}
        kinds = {
            "UI signals list, first page": lambda i: "/ui/signals",
            "UI list, label (1 in 1,000 signals)": lambda i: f"/ui/signals?label={RARE}",
            "UI list, label (common)": lambda i: "/ui/signals?label=entity:alpha",
            "UI list, type pdq": lambda i: "/ui/signals?type=pdq",
            "UI list, member": lambda i: f"/ui/signals?member={member}",
            "UI list, status active": lambda i: "/ui/signals?status=active",
            "UI list, status retracted": lambda i: "/ui/signals?status=retracted",
            "UI list, status expired": lambda i: "/ui/signals?status=expired",
            "UI list, status disputed": lambda i: "/ui/signals?status=disputed",
            "UI list, status frozen (none)": lambda i: "/ui/signals?status=frozen",
            "UI list, a page halfway down": lambda i: f"/ui/signals?before={deep}",
            "UI search by value": lambda i: f"/ui/signals?q={values[i % len(values)]}",
            "UI signal page": lambda i: f"/ui/signals/{ids[i % len(ids)]}",
            "UI dashboard": lambda i: "/ui/",
            "UI members": lambda i: "/ui/members",
            "UI match (form)": lambda i: "/ui/match",
            "UI action log": lambda i: "/ui/log",
            "API GET /v1/signals?limit=50": lambda i: "/v1/signals?limit=50",
            "API GET /v1/signals/{id}": lambda i: f"/v1/signals/{ids[i % len(ids)]}",
        }
        for i in range(rounds):
            for name, path_of in kinds.items():
                path = path_of(i)
                headers = bearer if path.startswith("/v1/") else {}
                t = time.perf_counter()
                async with session.get(url(path), headers=headers, allow_redirects=False) as r:
                    await r.read()
                    if r.status != 200:
                        raise SystemExit(f"{path}: {r.status}")
                times.setdefault(name, []).append((time.perf_counter() - t) * 1000)
    await server.close()
    return times, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "hashmesh-bench"
    )
    args = parser.parse_args()
    tune_for_bulk_records()
    home = build_home(args.signals, args.cache, args.workers)
    times, stats = asyncio.run(measure(home, args.rounds))
    print(
        f"\nweb UI pages at {stats['signals']:,} signals ({stats['active_signals']:,} active, "
        f"{stats['records']:,} records), {args.rounds} requests each, end to end over "
        "loopback\n"
    )
    api_list = statistics.median(times["API GET /v1/signals?limit=50"])
    api_one = statistics.median(times["API GET /v1/signals/{id}"])
    print("| page | p50 ms | p95 ms | max ms | p50 vs the API's JSON | goal p95 < 200 ms |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        p50, p95 = statistics.median(values), percentile(values, 95)
        base = api_one if name == "UI signal page" else api_list
        ratio = "" if name.startswith("API") else f"{p50 / base:.2f}x"
        goal = "" if name.startswith("API") else ("met" if p95 < 200 else "NOT met")
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {max(values):.1f} | {ratio} | {goal} |")


if __name__ == "__main__":
    main()
