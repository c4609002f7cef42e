"""kill -9 at random moments while a child process merges: nothing acknowledged is lost.

The child (store_crash_child.py) merges a stream of 6,000 records in batches and prints each
batch's outcome after its commit. The test kills it with SIGKILL at 20+ random moments,
restarting it after each kill from the first unacknowledged batch. After every kill the file
opens, passes ``PRAGMA integrity_check``, holds every record whose merge was acknowledged, and
its materialised state equals the fold over its stored records. At the end the stream is
merged to completion and the result equals a run that was never interrupted.
"""

from __future__ import annotations

import json
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from fuzzdepth import depth
from store_helpers import T0, Author, History, fold_json, hash_value, key, make_federation

from node.store.store import Store
from protocol import Federation, Record, RetractBody, SignalBody, VoteBody

CHILD = Path(__file__).with_name("store_crash_child.py")
KILLS = depth(22, floor=8)
BATCH = 120
RECEIVED_MS = 1_763_900_000_000
NOW = T0 + 10**7


def crash_stream(federation: Federation, rng: random.Random, size: int) -> list[Record]:
    """Signals, retractions, an admission, the newcomer's records and one fork, shuffled
    locally so that records often arrive ahead of a gap."""
    h = History(federation, rng, {}, [], [])
    authors = [Author(key(n)) for n in (1, 2, 3)]
    newcomer = Author(key(9))
    for a in authors[:2]:
        h.append(a, VoteBody("admit", newcomer.key.public, name="newcomer", role="member"))
    everyone = [*authors, newcomer]
    for n in range(size - 3):
        author = rng.choice(everyone)
        own = [r for r in author.records if isinstance(r.body, SignalBody)]
        if own and rng.random() < 0.1:
            h.append(author, RetractBody(rng.choice(own).id))
        elif n == size // 2:
            h.fork(authors[2], SignalBody("md5", hash_value("md5", n)))
        else:
            h.append(author, SignalBody("sha256", hash_value("sha256", n), ("entity:alpha",)))
    records = h.records
    for i in range(0, len(records), 40):  # local disorder
        window = records[i : i + 40]
        rng.shuffle(window)
        records[i : i + 40] = window
    return records


class Child:
    """One run of the child process, its output lines read on a thread."""

    def __init__(self, files: list[Path], start: int) -> None:
        args = [sys.executable, str(CHILD), *map(str, files), str(start), str(BATCH)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put(line.strip())
        self.lines.put(None)

    def wait_ready(self) -> None:
        assert self.lines.get(timeout=30) == "ready"

    def ack(self) -> dict[str, object]:
        line = self.lines.get(timeout=30)
        assert line is not None and line.startswith("{"), line
        return dict(json.loads(line))

    def kill(self) -> list[dict[str, object]]:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        return self.drain()

    def drain(self) -> list[dict[str, object]]:
        acks = []
        while (line := self.lines.get(timeout=30)) is not None:
            if line.startswith("{"):
                acks.append(json.loads(line))
        return acks


def check_database(db: Path, federation: Federation, acked: set[str], pending: set[str],
                   decoded: dict[bytes, Record], by_id: dict[str, Record]) -> None:  # fmt: skip
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    held = {row[0].hex() for row in conn.execute("SELECT id FROM pending")}
    conn.close()
    with Store.open(db, federation, readonly=True) as store:
        missing = [rid for rid in acked if store.record(rid) is None]
        assert not missing, f"{len(missing)} acknowledged records lost"
        membership = store.membership()
        lost = [
            rid
            for rid in pending
            if rid not in held
            and store.record(rid) is None
            and membership.accepts(
                by_id[rid].author, by_id[rid].seq
            )  # else dropped: it can't count
        ]
        assert not lost, f"{len(lost)} acknowledged pending records lost"
        expected = fold_json(store.all_records(), federation, NOW, decoded)
        assert store.materialised_state(now_ms=NOW) == expected


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20251122)
    federation = make_federation([key(1), key(2), key(3)], threshold=2)
    records = crash_stream(federation, rng, 6_000)
    files = [tmp_path / "node.db", tmp_path / "federation.json", tmp_path / "records.ndjson"]
    files[1].write_bytes(federation.to_bytes())
    files[2].write_bytes(b"".join(r.canonical + b"\n" for r in records))
    by_id = {r.id: r for r in records}
    acked: set[str] = set()
    pending: set[str] = set()
    decoded: dict[bytes, Record] = {}
    start, kills = 0, 0
    while kills < KILLS:
        child = Child(files, start)
        child.wait_ready()
        early = [child.ack() for _ in range(rng.randint(0, 1))]  # let it commit 0 or 1 batch
        time.sleep(rng.uniform(0.0, 0.025))  # then kill at a random moment of the next ones
        acks = early + child.kill()
        kills += 1
        for ack in acks:
            acked.update(ack["stored"])
            pending.update(ack["pending"])
            start = int(ack["end"])
        check_database(files[0], federation, acked, pending, decoded, by_id)
        assert start < len(records), "the stream ended before enough kills; make it longer"
    finish = Child(files, start)
    finish.wait_ready()
    assert finish.proc.wait(timeout=60) == 0
    assert finish.drain()[-1]["end"] == len(records)
    check_database(files[0], federation, acked, pending, decoded, by_id)
    assert_same_as_uninterrupted(files[0], tmp_path / "reference.db", federation, records)


def assert_same_as_uninterrupted(db: Path, reference: Path, federation: Federation,
                                 records: list[Record]) -> None:  # fmt: skip
    with Store.open(reference, federation, create=True) as store:
        for i in range(0, len(records), BATCH):
            store.merge([r.canonical for r in records[i : i + BATCH]], received_ms=RECEIVED_MS)
        expected = store.materialised_state(now_ms=NOW), list(store.all_records())
    with Store.open(db, federation, readonly=True) as crashed:
        assert (crashed.materialised_state(now_ms=NOW), list(crashed.all_records())) == expected
