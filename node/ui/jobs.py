"""The UI's background work: audits, transparency reports, and the rate sampler.

An audit or a report can take minutes on a large store, so a page starts it as a task (kept
in ``UiState`` and cancelled with the app, never fire-and-forget) and shows its progress
until it is done. Both read a consistent copy of this node's database, taken with SQLite's
online backup in one read transaction (``HOME/.ui-snapshot-*/``, deleted afterwards): the
node keeps merging meanwhile, and the audit compares records and materialised state of one
instant. The audit is ``node.audit.engine.audit`` -- what ``hashmesh audit --db`` runs -- and the
report is ``node.audit.report.build_report`` and its charts, as ``hashmesh report`` draws them.

The sampler reads the node's counters every ``SAMPLE_INTERVAL_S`` so that the dashboard can
show rates (records merged, anti-entropy exchanges and match queries per minute) over the
last ``RATE_WINDOW_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from prometheus_client import Counter

from node.clock import now_ms
from node.errors import NodeError, explain
from node.net.context import NODE, Node
from node.ui.auth import LoginLimiter

SAMPLE_INTERVAL_S: Final = 10.0
RATE_WINDOW_S: Final = 300.0
MIN_RATE_WINDOW_S: Final = 30.0  # a rate over a shorter span says little
REPORT_MIN_INTERVAL_S: Final = 60.0
_CHART_LOCK: Final = threading.Lock()  # pyplot is not thread-safe


@dataclass(slots=True)
class Job:
    """One audit or report run."""

    kind: str
    by: str
    started_ms: int
    records: int  # stored records when it started
    task: asyncio.Task[None] | None = None
    finished_ms: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.finished_ms is None


@dataclass(frozen=True, slots=True)
class Sample:
    at_s: float
    values: dict[str, float]


@dataclass(slots=True)
class UiState:
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=64))
    jobs: dict[str, Job] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


UI = web.AppKey("ui", UiState)


# -- rates -----------------------------------------------------------------------------------


def _total(counter: Counter, label: str | None = None, value: str | None = None) -> float:
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and (
                label is None or sample.labels.get(label) == value
            ):
                total += sample.value
    return total


def sample(node: Node) -> Sample:
    m = node.metrics
    return Sample(
        time.monotonic(),
        {
            "records merged": _total(m.merged, "status", "accepted"),
            "anti-entropy exchanges": _total(m.syncs),
            "match requests": _total(m.match_requests),
            "hashes and images matched": float(node.counters.get("match_queries", 0)),
        },
    )


def rates(state: UiState, node: Node) -> list[dict[str, Any]]:
    """Per metric: the total since start and the rate per minute over the sampled window."""
    now = sample(node)
    window = [s for s in state.samples if now.at_s - s.at_s <= RATE_WINDOW_S]
    first = window[0] if window else None
    out = []
    for name, total in now.values.items():
        per_min = None
        if first is not None and now.at_s - first.at_s >= MIN_RATE_WINDOW_S:
            per_min = (total - first.values.get(name, 0.0)) * 60 / (now.at_s - first.at_s)
        out.append({"name": name, "total": int(total), "per_min": per_min})
    return out


async def _sampler(state: UiState, node: Node) -> None:
    while True:
        state.samples.append(sample(node))
        await asyncio.sleep(SAMPLE_INTERVAL_S)


async def ui_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the sampler; cancel it and any running audit or report with the app."""
    state = app[UI]
    task = asyncio.create_task(_sampler(state, app[NODE]), name="ui-sampler")
    state.tasks.add(task)
    yield
    for running in list(state.tasks):
        running.cancel()
    for running in list(state.tasks):
        with contextlib.suppress(asyncio.CancelledError):
            await running
    state.tasks.clear()


# -- audits and reports ----------------------------------------------------------------------


def start(state: UiState, node: Node, kind: str, by: str, records: int) -> Job:
    """Start kind ("audit" or "report") unless one runs already; the job that runs."""
    job = state.jobs.get(kind)
    if job is not None and job.running:
        return job
    job = Job(kind, by, now_ms(), records)
    work = _audit if kind == "audit" else _report

    async def run() -> None:
        try:
            job.result = await work(node)
        except (NodeError, sqlite3.Error, OSError) as e:
            job.error = explain(e) if isinstance(e, NodeError) else str(e)
        finally:
            job.finished_ms = now_ms()

    job.task = asyncio.create_task(run(), name=f"ui-{kind}")
    state.tasks.add(job.task)
    job.task.add_done_callback(state.tasks.discard)
    state.jobs[kind] = job
    return job


def report_is_stale(state: UiState, records: int) -> bool:
    """No report yet, or one of fewer records that is over REPORT_MIN_INTERVAL_S old."""
    job = state.jobs.get("report")
    if job is None:
        return True
    if job.running or job.records == records:
        return False
    return (now_ms() - job.started_ms) / 1000 >= REPORT_MIN_INTERVAL_S


async def _snapshot(node: Node, target: Path) -> None:
    """A consistent copy of the node's database (SQLite's online backup, one read)."""

    def copy(conn: sqlite3.Connection) -> None:
        dst = sqlite3.connect(target)
        try:
            conn.backup(dst)
        finally:
            dst.close()

    await node.store.read(lambda s: copy(s.conn))


async def _with_snapshot(node: Node, work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=node.home.path, prefix=".ui-snapshot-") as tmp:
        copy = Path(tmp) / "snapshot.db"
        await _snapshot(node, copy)
        return await asyncio.to_thread(work, copy)


async def _audit(node: Node) -> dict[str, Any]:
    from node.audit import engine
    from node.audit.sources import read_database

    def work(copy: Path) -> dict[str, Any]:
        snap = read_database(copy, node.federation)
        try:
            result = engine.audit(snap, now_ms=now_ms(), workers=1)
        finally:
            snap.close()
        return dict(result.to_json())

    return await _with_snapshot(node, work)


async def _report(node: Node) -> dict[str, Any]:
    from node.audit import engine, report
    from node.audit.sources import read_database

    def work(copy: Path) -> dict[str, Any]:
        snap = read_database(copy, node.federation)
        try:
            loaded = engine.load_records(snap, workers=1)
        finally:
            snap.close()
        data = json.loads(report.report_bytes(report.build_report(loaded.records, node.federation)))
        with _CHART_LOCK:
            charts = [
                report.chart_contributions(data),
                report.chart_labels(data),
                report.chart_members(data),
            ]
        return {"report": data, "charts": charts, "skipped": loaded.rows - len(loaded.records)}

    return await _with_snapshot(node, work)
