"""``Moderation`` in one process: its bounded queue, its sender against a real aiohttp
receiver on 127.0.0.1 (retries with backoff, dead letters, a retry, a restart), and the
match log's retention with the clock passed in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from webhook_receiver import Receiver

from node.config import ModerationConfig, WebhookRule
from node.moderation.service import Moderation
from node.moderation.webhooks import verify_signature

SECRET = "s3cret-for-the-tests"
FAST = ModerationConfig(flush_interval_s=0.05, webhook_backoff_s=0.05, webhook_backoff_max_s=0.1,
                        webhook_max_attempts=5, webhook_timeout_s=2.0)  # fmt: skip


def answer(*signals: int) -> dict[str, Any]:
    hits = [{"id": f"{n:064x}", "type": "pdq", "value": f"{n:064x}", "labels": ["entity:x"],
             "member": "b" * 64, "tallies": {"confirm": 0, "dispute": 0, "seen": 0},
             "distance": 1} for n in signals]  # fmt: skip
    query = {"type": "pdq", "value": "f" * 64}
    return {"matched": True, "results": [{"query": query, "matched": True, "hits": hits}]}


async def until(condition: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout}s (last: {last!r})")


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    registry = CollectorRegistry()

    async def run() -> None:
        m = Moderation(ModerationConfig(queue_max=10, flush_interval_s=60), [], tmp_path,
                       node_name="t", registry=registry)  # fmt: skip
        await m.start()
        try:
            m.observe(answer(*range(25)))
            assert (len(m.queue), m.stats["dropped"]) == (10, 15)
            assert registry.get_sample_value("hashmesh_match_log_dropped_total") == 15
            assert registry.get_sample_value("hashmesh_match_log_queue") == 10
            await m.flush()
            assert registry.get_sample_value("hashmesh_match_log_events_total") == 10
            page = await m.matches(signal=None, since_ms=None, before=None, limit=100)
            assert len(page["matches"]) == 10 and page["dropped"] == 15
        finally:
            await m.stop()

    asyncio.run(run())


def test_with_the_match_log_off_nothing_is_opened_or_logged(tmp_path: Path) -> None:
    async def run() -> None:
        m = Moderation(ModerationConfig(match_log=False), [], tmp_path, node_name="t")
        await m.start()
        hit = answer(1)
        m.observe(hit)
        assert not m.running and m.queue == [] and not (tmp_path / "moderation.db").exists()
        await m.stop()

    asyncio.run(run())


def test_deliveries_retry_until_the_receiver_answers_then_go_dead_and_are_retried(
    tmp_path: Path,
) -> None:
    receiver = Receiver(status=503).start()
    rules = [WebhookRule("r", receiver.url(), SECRET)]

    async def delivery(m: Moderation, state: str) -> list[dict[str, Any]]:
        return list((await m.deliveries(state=state, before=None, limit=10))["deliveries"])

    async def run() -> None:
        m = Moderation(FAST, rules, tmp_path, node_name="t")
        await m.start()
        try:
            m.observe(answer(1))
            await until(lambda: asyncio.sleep(0, len(receiver.received) >= 2))
            receiver.status = 200  # up again: the next retry is delivered
            [done] = await until(lambda: delivery(m, "delivered"))
            assert done["attempts"] >= 3 and done["last_status"] == 200
            ids = {r.delivery for r in receiver.received}
            assert ids == {done["id"]}  # every attempt is the same delivery
            assert all(verify_signature(SECRET, r.body, r.signature) for r in receiver.received)
            receiver.status = 500
            m.observe(answer(2))
            [dead] = await until(lambda: delivery(m, "dead"))
            assert (dead["attempts"], dead["last_status"]) == (5, 500)
            assert dead["last_error"] == "HTTP 500 Internal Server Error"
            receiver.status = 200
            assert (await m.retry_delivery(dead["id"]))["state"] == "pending"  # type: ignore[index]
            redone = await until(lambda: _delivered(m, dead["id"]))
            assert redone["attempts"] == 1 and receiver.received[-1].delivery == dead["id"]
            assert m.counts()["dead"] == 1
        finally:
            await m.stop()
            receiver.stop()

    asyncio.run(run())


async def _delivered(m: Moderation, uid: str) -> dict[str, Any] | None:
    found = await m.delivery(uid)
    return found if found is not None and found["state"] == "delivered" else None


async def _delivered_count(m: Moderation) -> int:
    page = await m.deliveries(state="delivered", before=None, limit=10)
    return len(page["deliveries"]) if page["counts"]["pending"] == 0 else 0


def test_a_queued_delivery_survives_a_restart(tmp_path: Path) -> None:
    receiver = Receiver()  # not started: down
    rules = [WebhookRule("r", receiver.url(), SECRET)]
    slow = ModerationConfig(flush_interval_s=0.05, webhook_backoff_s=0.5, webhook_max_attempts=9)

    async def run() -> None:
        m = Moderation(slow, rules, tmp_path, node_name="t")
        await m.start()
        m.observe(answer(1))
        await until(lambda: asyncio.sleep(0, m.counts()["failed"] >= 1))
        await m.stop()
        receiver.start()
        again = Moderation(slow, rules, tmp_path, node_name="t")
        await again.start()
        try:
            await until(lambda: asyncio.sleep(0, len(receiver.received) == 1))
            await until(lambda: _delivered_count(again))
        finally:
            await again.stop()
            receiver.stop()

    asyncio.run(run())


def test_the_log_is_pruned_by_age_and_quarantine_survives_a_restart(tmp_path: Path) -> None:
    now = [1_763_800_000_000]
    config = ModerationConfig(flush_interval_s=60, match_log_days=1.0, flood_floor=2)

    async def run() -> None:
        m = Moderation(config, [], tmp_path, node_name="t", clock=lambda: now[0])
        await m.start()
        m.observe(answer(1, 2))
        m.observe(answer(1))
        m.observe(answer(1))
        await m.flush()
        assert m.quarantined == {f"{1:064x}"}
        now[0] += 86_400_000 - 1
        m.observe(answer(2))
        await m.flush()
        now[0] += 2
        assert await m.prune() == 4
        page = await m.matches(signal=None, since_ms=None, before=None, limit=10)
        assert [x["signal"] for x in page["matches"]] == [f"{2:064x}"]
        await m.stop()
        again = Moderation(config, [], tmp_path, node_name="t", clock=lambda: now[0])
        await again.start()
        try:
            assert again.quarantined == {f"{1:064x}"}
            hit = answer(1)
            again.observe(hit)
            assert hit["results"][0]["hits"][0]["quarantined"] is True
            assert (await again.release(f"{1:064x}", by="t", deliver=True)) is not None
            assert again.quarantined == frozenset()
        finally:
            await again.stop()

    asyncio.run(run())
