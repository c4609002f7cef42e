"""``Moderation``: the match log's queue, its database thread and its background tasks.

The match path calls ``observe(answer)``: the answer's hits become events (``events``) and
join an in-memory queue of at most ``queue_max``; when it is full, new events are dropped
and counted (``hashmesh_match_log_dropped_total``), never waited for. Three tasks, started
by ``start`` and cancelled by ``stop`` (the app's ``cleanup_ctx``):

- the flusher writes the queue every ``flush_interval_s`` (sooner when it is half full) in
  one transaction (``pipeline.flush``), and prunes the log, the flood buckets and old
  deliveries every ``PRUNE_INTERVAL_S``;
- the sender posts due webhook deliveries, ``webhook_concurrency`` at a time, and sleeps
  until the next one is due or the flusher queues more;
- the sighting publisher signs at most ``sighting_batch`` `seen` opinions every
  ``sighting_interval_s`` (only when ``sightings`` names labels).

SQLite runs on one thread of its own (``hashmesh-moderation``), never on the event loop.
``stop`` writes what is still queued before it closes the database, so a clean shutdown
loses no logged match; a crash loses at most the queue (a second's worth), never a
delivery that was queued.

With ``[moderation] match_log = false`` nothing is opened or started: no log, no actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.clock import now_ms
from node.config import ModerationConfig, WebhookRule
from node.errors import ApiError, NodeError, explain
from node.moderation import matchlog, pipeline, quarantine, sightings, webhooks
from node.moderation.db import Transaction, open_db
from node.moderation.events import MATCH_CALLER, MatchEvent, collect
from node.moderation.quarantine import DAY_MS, FloodRule
from node.moderation.sender import COUNTERS, SenderProcess, SenderSpec
from node.store.store import AsyncStore
from protocol.bodies import Body, OpinionBody
from protocol.errors import ProtocolError
from protocol.records import Record

log = logging.getLogger("hashmesh.moderation")

T = TypeVar("T")
Author = Callable[[Body], Awaitable[Record]]
PRUNE_INTERVAL_S: Final = 60.0
RECOUNT_S: Final = 1.0  # the delivery queue's counts are read again this often
DELIVERED_KEEP_MS: Final = 7 * DAY_MS  # delivered and dead deliveries are kept this long


class Moderation:
    """One node's match log and actions (see the module docstring)."""

    def __init__(
        self,
        config: ModerationConfig,
        rules: Sequence[WebhookRule],
        home: Path,
        *,
        node_name: str,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.config = config
        self.rules = {rule.name: rule for rule in rules}
        self.home = home
        self.node_name = node_name
        self.clock = clock
        self.flood = FloodRule(
            config.flood_floor, config.flood_factor, int(config.flood_window_s * 1000),
            int(config.flood_baseline_days * DAY_MS),
        )  # fmt: skip
        self.queue: list[MatchEvent] = []
        self.quarantined: frozenset[str] = frozenset()
        self.stats = {"logged": 0, "dropped": 0, "quarantines": 0, "sightings": 0, "held": 0}
        self.delivery_counts = {"held": 0, "pending": 0, "dead": 0}
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._sender: SenderProcess | None = None
        self._dead_logged: tuple[int, set[str]] = (0, set())  # (since ms, ids logged then)
        self._tasks: list[asyncio.Task[None]] = []
        self._rows = 0
        self._store: AsyncStore | None = None
        self._author: Author | None = None
        self._identity: Callable[[], str | None] = lambda: None
        self._flush_lock = asyncio.Lock()
        self._wake_flush = asyncio.Event()
        if registry is not None:
            registry.register(_Collector(self))

    @property
    def running(self) -> bool:
        return self._conn is not None

    # ---- the match path -----------------------------------------------------------------

    def observe(self, answer: dict[str, Any]) -> None:
        """Log a complete match answer's hits (and mark quarantined ones in it). Never
        blocks: the events wait in memory for the flusher."""
        if self._conn is None:
            return
        events = collect(answer, MATCH_CALLER.get(), self.clock(), self.quarantined)
        if not events:
            return
        room = self.config.queue_max - len(self.queue)
        if len(events) > room:
            self.stats["dropped"] += len(events) - max(room, 0)
            events = events[: max(room, 0)]
        self.queue.extend(events)
        if len(self.queue) * 2 >= self.config.queue_max:
            self._wake_flush.set()

    # ---- start and stop -----------------------------------------------------------------

    async def start(
        self,
        *,
        store: AsyncStore | None = None,
        author: Author | None = None,
        identity: Callable[[], str | None] = lambda: None,
    ) -> None:
        if not self.config.match_log:
            return
        self._store, self._author, self._identity = store, author, identity
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hashmesh-moderation")
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._thread, open_db, self.home)
        self._rows, held, self.delivery_counts = await self._db(
            lambda c: (matchlog.row_count(c), quarantine.quarantined_ids(c), webhooks.counts(c))
        )  # fmt: skip
        self._dead_logged = (self.clock(), set())
        self.quarantined = frozenset(held)
        if self.rules:
            spec = SenderSpec(self.home, self.config, tuple(self.rules.values()))
            self._sender = SenderProcess(spec)
            await asyncio.to_thread(self._sender.start)
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="moderation-flush"),
            asyncio.create_task(self._watch_loop(), name="moderation-watch"),
        ]
        if self.config.sightings and author is not None and store is not None:
            self._tasks.append(asyncio.create_task(self._sighting_loop(), name="sightings"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._conn is not None:
            await self.flush()
        if self._sender is not None:
            await asyncio.to_thread(self._sender.stop)
            self._sender = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    async def _db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise ApiError("the match log is off ([moderation] match_log = false)", status=409,
                           title="match log off")  # fmt: skip
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, conn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            with Transaction(conn):
                return fn(conn)

        return await self._db(run)

    # ---- the flusher --------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        pruned_at = -PRUNE_INTERVAL_S
        loop = asyncio.get_running_loop()
        while True:
            await _wait(self._wake_flush, self.config.flush_interval_s)
            await self.flush()
            if loop.time() - pruned_at >= PRUNE_INTERVAL_S:
                pruned_at = loop.time()
                await self._guarded(self.prune())

    async def flush(self) -> pipeline.FlushResult | None:
        """Write the queued events now (what the flusher does every interval)."""
        async with self._flush_lock:
            events, self.queue = self.queue, []
            if not events or self._conn is None:
                return None
            ctx = pipeline.FlushContext(
                now_ms=self.clock(), identity=self._identity(),
                node=self.node_name, rules=tuple(self.rules.values()), flood=self.flood,
                sighting_labels=self.config.sightings, held_max=self.config.held_max,
                quarantined=self.quarantined, uid=lambda: secrets.token_hex(16),
            )  # fmt: skip
            try:
                result = await self._db(lambda c: pipeline.flush(c, events, ctx))
            except (sqlite3.Error, OSError):
                log.exception("could not write %d match events; they are dropped", len(events))
                self.stats["dropped"] += len(events)
                return None
        self._rows += result.logged
        self.stats["logged"] += result.logged
        self.stats["held"] += result.held
        if result.floods:
            self.quarantined = self.quarantined | {f.signal for f in result.floods}
            self.stats["quarantines"] += len(result.floods)
            for f in result.floods:
                log.warning("signal quarantined: %d matches in the last window, %d in its "
                            "baseline before it; its actions are held until released",
                            f.recent, f.baseline, extra={"signal": f.signal})  # fmt: skip
        if result.deliveries or result.held:
            self.delivery_counts["pending"] += result.deliveries
            self.delivery_counts["held"] += result.held
            self._wake_sender()
        return result

    def _wake_sender(self) -> None:
        if self._sender is not None:
            self._sender.wake.set()

    def counts(self) -> dict[str, int]:
        """What was logged, dropped, held, quarantined and signed here, and the sender's
        deliveries, failed attempts and dead deliveries, since the node started."""
        sent = self._sender.counts() if self._sender is not None else {}
        return self.stats | {name: sent.get(name, 0) for name in COUNTERS}

    async def _watch_loop(self) -> None:
        """Every RECOUNT_S: the queue's counts read again, new dead deliveries logged, and
        a sender that died started again."""
        while True:
            await asyncio.sleep(RECOUNT_S)
            await self._guarded(self._recount())
            if self._sender is not None and not self._sender.alive():
                log.error("the webhook sender process exited; starting it again")
                await asyncio.to_thread(self._sender.start)

    async def _recount(self) -> None:
        since, logged = self._dead_logged
        self.delivery_counts, dead = await self._db(
            lambda c: (webhooks.counts(c), webhooks.dead_since(c, since))
        )
        for d in dead:
            if d["id"] in logged:
                continue
            log.warning("webhook delivery %s to rule %s is dead after %d attempts: %s",
                        d["id"], d["rule"], d["attempts"], d["last_error"])  # fmt: skip
            if d["done_ms"] > since:
                since, logged = d["done_ms"], set()
            logged.add(d["id"])
        self._dead_logged = (since, logged)

    async def prune(self) -> int:
        """Forget matches past ``match_log_days`` or ``match_log_max_rows``, old flood
        buckets, and deliveries done more than a week ago; returns the matches deleted."""
        now = self.clock()
        keep_ms = int(self.config.match_log_days * DAY_MS)
        deleted, n = 0, matchlog.PRUNE_CHUNK
        while n == matchlog.PRUNE_CHUNK:
            n = await self._write(_prune_chunk(now, keep_ms, self.config.match_log_max_rows,
                                               self._rows))  # fmt: skip
            self._rows -= n
            deleted += n
        await self._write(lambda c: (quarantine.prune(c, self.flood, now),
                                     webhooks.prune(c, now - DELIVERED_KEEP_MS)))  # fmt: skip
        return deleted

    async def _guarded(self, work: Awaitable[object]) -> None:
        try:
            await work
        except (sqlite3.Error, OSError, NodeError):
            log.exception("moderation background work failed; it is retried")

    # ---- sightings ----------------------------------------------------------------------

    async def _sighting_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sighting_interval_s)
            await self._guarded(self.publish_sightings())

    async def publish_sightings(self) -> int:
        """Sign the oldest pending sightings (at most sighting_batch); how many were signed."""
        identity, store, author = self._identity(), self._store, self._author
        if identity is None or store is None or author is None:
            return 0
        await self.flush()
        due = await self._db(lambda c: sightings.due(c, self.config.sighting_batch))
        signed = 0
        for ref, signal in due:
            signed += await self._publish_one(ref, signal, identity, store, author)
        self.stats["sightings"] += signed
        return signed

    async def _publish_one(
        self, ref: int, signal: str, identity: str, store: AsyncStore, author: Author
    ) -> bool:
        if signal in self.quarantined:  # quarantined since it was queued
            await self._write(lambda c: sightings.hold(c, [ref]))
            return False
        verdict = await store.read(lambda s: sightings.member_opinion(s.conn, signal, identity))
        record: str | None = None
        note: str | None = None
        if verdict is not None:
            note = f"this member's opinion on it is already {verdict}"
        else:
            try:
                record = (await author(OpinionBody(signal, "seen"))).id
            except (NodeError, ProtocolError) as e:
                note = explain(e)
        state, now = ("published" if record else "skipped"), self.clock()
        await self._write(lambda c: sightings.done(c, ref, state, now, record=record, note=note))
        return record is not None

    # ---- what the API, the CLI and the UI read ------------------------------------------

    async def matches(
        self, *, signal: str | None, since_ms: int | None, before: int | None, limit: int
    ) -> dict[str, Any]:
        await self.flush()
        page = await self._db(
            lambda c: matchlog.page(c, signal=signal, since_ms=since_ms, before=before,
                                    limit=limit)
        )  # fmt: skip
        if signal is not None:
            page["counts"] = await self._db(lambda c: matchlog.counts(c, signal))
            page["quarantine"] = await self._quarantine_of(signal)
        return page | {"dropped": self.stats["dropped"]}

    async def signal_summary(self, signal: str) -> dict[str, Any]:
        """A signal's match count here and its quarantine, for its page."""
        if self._conn is None:
            return {"counts": None, "quarantine": None}
        await self.flush()
        counts = await self._db(lambda c: matchlog.counts(c, signal))
        return {"counts": counts, "quarantine": await self._quarantine_of(signal)}

    async def _quarantine_of(self, signal: str) -> dict[str, Any] | None:
        found = await self._db(lambda c: quarantine.entries(c, signal=signal, released=True))
        return found[0] if found else None

    async def top_signals(self, limit: int = 20) -> list[dict[str, Any]]:
        return await self._db(lambda c: matchlog.top(c, limit))

    async def deliveries(
        self, *, state: str | None, before: int | None, limit: int
    ) -> dict[str, Any]:
        page = await self._db(lambda c: webhooks.page(c, state=state, before=before, limit=limit))
        return page | {"counts": await self._db(webhooks.counts),
                       "rules": webhooks.rules_json(self.rules)}  # fmt: skip

    async def delivery(self, uid: str) -> dict[str, Any] | None:
        return await self._db(lambda c: webhooks.entry(c, uid))

    async def retry_delivery(self, uid: str) -> dict[str, Any] | None:
        """A dead delivery made pending again (None: no dead delivery with that id)."""
        now = self.clock()
        found = await self._write(lambda c: webhooks.retry(c, uid, now))
        if found is not None:
            self.delivery_counts["dead"] -= 1
            self.delivery_counts["pending"] += 1
            self._wake_sender()
        return found

    async def quarantine_entries(self, *, released: bool = False) -> list[dict[str, Any]]:
        return await self._db(lambda c: quarantine.entries(c, released=released))

    async def release(self, signal: str, *, by: str, deliver: bool) -> dict[str, Any] | None:
        """Release a quarantined signal (None: it is not quarantined)."""
        await self.flush()
        now = self.clock()
        found = await self._write(lambda c: quarantine.release(c, signal, now, by=by,
                                                               deliver=deliver))  # fmt: skip
        if found is not None:
            self.quarantined = self.quarantined - {signal}
            self.delivery_counts = await self._db(webhooks.counts)
            self._wake_sender()
            log.info("signal released from quarantine by %s", by, extra={"signal": signal})
        return found

    async def sighting_entries(self, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        return await self._db(lambda c: sightings.entries(c, state=state, limit=limit))

    def status(self) -> dict[str, Any]:
        """In-memory figures, no database read (dashboard, status)."""
        return {"enabled": self.running, "queued": len(self.queue),
                "quarantined": len(self.quarantined), "deliveries": dict(self.delivery_counts),
                "rules": len(self.rules), "sightings": list(self.config.sightings)} | {
                    "counts": self.counts()}  # fmt: skip


def _prune_chunk(
    now: int, keep_ms: int, max_rows: int, rows: int
) -> Callable[[sqlite3.Connection], int]:
    return lambda conn: matchlog.prune(conn, now, keep_ms, max_rows, rows)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Until event is set or timeout_s passes; clears it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    event.clear()


class _Collector(Collector):
    """The moderation figures for ``/metrics``, read from memory at scrape time."""

    def __init__(self, moderation: Moderation) -> None:
        self.moderation = moderation

    def collect(self) -> Iterator[Metric]:
        m = self.moderation
        s = m.counts()
        yield CounterMetricFamily("hashmesh_match_log_events", "Matches written to the match "
                                  "log", value=s["logged"])  # fmt: skip
        yield CounterMetricFamily("hashmesh_match_log_dropped", "Matches not logged (nor "
                                  "acted on): the queue was full", value=s["dropped"])  # fmt: skip
        yield GaugeMetricFamily("hashmesh_match_log_queue", "Matches waiting to be written",
                                value=len(m.queue))  # fmt: skip
        yield GaugeMetricFamily("hashmesh_quarantined_signals", "Signals quarantined now",
                                value=len(m.quarantined))  # fmt: skip
        yield CounterMetricFamily("hashmesh_quarantines", "Signals quarantined for a flood of "
                                  "matches", value=s["quarantines"])  # fmt: skip
        yield CounterMetricFamily("hashmesh_sightings_published", "`seen` opinions signed "
                                  "on a first match here", value=s["sightings"])  # fmt: skip
        attempts = CounterMetricFamily("hashmesh_webhook_attempts", "Webhook delivery "
                                       "attempts, by result", labels=["result"])  # fmt: skip
        for result in ("delivered", "failed", "dead"):
            attempts.add_metric([result], s[result])
        yield attempts
        queue = GaugeMetricFamily("hashmesh_webhook_deliveries", "Webhook deliveries held, "
                                  "pending or dead", labels=["state"])  # fmt: skip
        for state, n in sorted(m.delivery_counts.items()):
            queue.add_metric([state], n)
        yield queue
