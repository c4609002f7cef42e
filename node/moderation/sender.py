"""The webhook sender: a process of its own, at a lower CPU priority than the node.

A delivery costs the sender about 0.2 ms of CPU (an HTTP POST through aiohttp's client),
so a rule that fires on many matches would otherwise take a share of the event loop that
answers them. The sender therefore runs in a worker process, started through
``forkserver`` as the store's verification workers are (the node has threads and SQLite
connections that ``fork`` would copy), niced by ``WORKER_NICE`` and exiting when the node
does (``node.store.verify_pool.start_worker``). It shares nothing with the node but the
``deliveries`` table of ``HOME/moderation.db`` (SQLite in WAL mode takes one writer at a
time from either process), an ``Event`` the node sets when it queues or retries deliveries,
and three counters (delivered, failed attempts, dead) for the metrics.

Its loop: take the due pending deliveries (at most ``webhook_concurrency``), post them at
once (``webhooks.send``), record every outcome in one transaction (``webhooks.record``),
and when nothing is due, sleep until the next one is or the node wakes it. A stopping
node sets ``stop``; the sender finishes the batch in flight and exits.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp

from node.clock import now_ms
from node.config import ModerationConfig, WebhookRule
from node.moderation import webhooks
from node.moderation.db import Transaction, open_db
from node.store.verify_pool import WORKER_NICE, start_worker

T = TypeVar("T")
COUNTERS: Final = ("delivered", "failed", "dead")
POLL_S: Final = 5.0  # the sender looks at the queue at least this often
STOP_S: Final = 5.0  # beyond the webhook timeout, a stopping node waits this long for it


@dataclass(frozen=True, slots=True)
class SenderSpec:
    home: Path
    config: ModerationConfig
    rules: tuple[WebhookRule, ...]


class SenderProcess:
    """The node's handle on its sender process."""

    def __init__(self, spec: SenderSpec) -> None:
        self.spec = spec
        self._context = multiprocessing.get_context("forkserver")
        self.wake = self._context.Event()
        self._stop = self._context.Event()
        self._counters = [self._context.Value("q", 0) for _ in COUNTERS]
        self._process: Any = None

    def start(self) -> None:
        self._stop.clear()
        self._process = self._context.Process(
            target=run, args=(self.spec, os.getpid(), self.wake, self._stop, self._counters),
            name="hashmesh-webhooks", daemon=True,
        )  # fmt: skip
        self._process.start()

    def alive(self) -> bool:
        return self._process is not None and bool(self._process.is_alive())

    def counts(self) -> dict[str, int]:
        return {name: int(value.value) for name, value in zip(COUNTERS, self._counters,
                                                              strict=True)}  # fmt: skip

    def stop(self) -> None:
        """Ask the sender to finish its batch and exit; terminated if it does not."""
        if self._process is None:
            return
        self._stop.set()
        self.wake.set()
        self._process.join(self.spec.config.webhook_timeout_s + STOP_S)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_S)
        self._process = None


def run(
    spec: SenderSpec, node_pid: int, wake: Any, stop: Any, counters: list[Synchronized[int]]
) -> None:
    """The sender process's entry point."""
    start_worker(node_pid, WORKER_NICE)
    asyncio.run(Sender(spec, wake, stop, counters).serve())


class Sender:
    """The loop of the sender process (see the module docstring)."""

    def __init__(
        self, spec: SenderSpec, wake: Any, stop: Any, counters: list[Synchronized[int]],
        *, clock: Callable[[], int] = now_ms, rng: random.Random | None = None,
    ) -> None:  # fmt: skip
        self.config = spec.config
        self.rules = {rule.name: rule for rule in spec.rules}
        self.home = spec.home
        self.wake, self.stop = wake, stop
        self.counters = dict(zip(COUNTERS, counters, strict=True))
        self.clock = clock
        self.rng = rng or random.Random()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hashmesh-webhooks-db")
        self._conn: sqlite3.Connection | None = None

    async def _db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._conn is not None
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self._conn)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._thread, open_db, self.home)
        timeout = aiohttp.ClientTimeout(total=self.config.webhook_timeout_s)
        headers = {"User-Agent": "hashmesh-webhooks"}
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
                while not self.stop.is_set():
                    if await self.send_due(session):
                        continue
                    due = await self._db(webhooks.next_due_ms)
                    wait = POLL_S if due is None else min(POLL_S, (due - self.clock()) / 1000)
                    if wait > 0:
                        await asyncio.to_thread(self.wake.wait, wait)
                    self.wake.clear()
        finally:
            await loop.run_in_executor(self._thread, self._conn.close)
            self._thread.shutdown(wait=True)

    async def send_due(self, session: aiohttp.ClientSession) -> int:
        """Attempt the deliveries due now (at most webhook_concurrency at once) and record
        their outcomes in one transaction; how many were attempted."""
        now = self.clock()
        batch = await self._db(lambda c: webhooks.due(c, now, self.config.webhook_concurrency))
        if not batch:
            return 0
        outcomes = await asyncio.gather(*(self._send(session, d) for d in batch))
        done = self.clock()

        def record(conn: sqlite3.Connection) -> None:
            with Transaction(conn):
                webhooks.record(conn, outcomes, done)

        await self._db(record)
        for outcome in outcomes:
            dead = not outcome.attempt.ok and outcome.retry_at_ms is None
            for name, moved in (("delivered", outcome.attempt.ok),
                                ("failed", not outcome.attempt.ok), ("dead", dead)):  # fmt: skip
                if moved:
                    with self.counters[name].get_lock():
                        self.counters[name].value += 1
        return len(batch)

    async def _send(
        self, session: aiohttp.ClientSession, delivery: webhooks.Delivery
    ) -> webhooks.Outcome:
        rule = self.rules.get(delivery.rule)
        if rule is None:
            attempt = webhooks.Attempt(False, None, f"rule {delivery.rule!r} is not configured")
            failures = self.config.webhook_max_attempts
        else:
            attempt = await webhooks.send(session, rule, delivery, self.clock() // 1000,
                                          self.config.webhook_timeout_s)  # fmt: skip
            failures = delivery.attempts + 1
        if attempt.ok or failures >= self.config.webhook_max_attempts:
            return webhooks.Outcome(delivery.id, attempt, None)
        wait = webhooks.backoff_s(failures, self.config.webhook_backoff_s,
                                  self.config.webhook_backoff_max_s, self.rng)  # fmt: skip
        return webhooks.Outcome(delivery.id, attempt, self.clock() + int(wait * 1000))
