"""Following a node: the snapshot to start from, then the change feed, for ever.

``Follower.run`` is the replica's one background task:

1. **Bootstrap**: ``GET /v1/snapshot`` (node.net.replica_api) streams the active list at a
   feed cursor; the lines are parsed off the event loop into new ``Holdings``, indexed in
   one bulk build, and swapped in. A stream without its ``end`` line is discarded.
2. **Follow**: ``GET /v1/changes?after=CURSOR&epoch=E&wait_ms=W`` is a long poll: the node
   answers at once when it has entries after the cursor, or when a merge adds some, or
   after ``W`` with none. Entries are applied in order (``Holdings.apply``) under the index
   lock. ``W`` is jittered (+-20%) and at most half the lag bound, so an idle replica still
   hears from the node well within it.
3. **Epoch change** (409: the node's database was rebuilt or restored): the replica keeps
   answering from what it holds, waits a random time in ``[0, rebuild_jitter_s)``, then
   bootstraps anew; the node admits one snapshot at a time (429 + ``Retry-After``, waited
   with jitter). Replicas therefore rebuild one after the other, never all at once.
4. **Errors** (node unreachable, 5xx, a timeout, bad data): logged once per outage, counted,
   retried with exponential backoff and full jitter up to ``retry_max_s``; what is held is
   kept and still answered from.

Lag: ``caught_up`` is when the node last answered a feed request with nothing left after
the replica's cursor; ``lag_s`` is the time since (0 while nothing has been missed and the
node answers). The node sends an answer at least every ``W`` seconds, so an idle, healthy
replica's lag stays below ``W`` plus a round trip. Readiness and health read ``FeedStatus``
(node.replica.app).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from node.clock import now_ms
from node.config import MediaConfig
from node.errors import PeerError
from node.net.tls import SpkiPin, describe_mismatch
from node.replica.holdings import FeedDataError, Holdings
from node.replica.settings import ReplicaSettings

log = logging.getLogger("hashmesh.replica")

SNAPSHOT_BATCH_LINES = 5_000  # snapshot lines staged per hand-off to a worker thread
FEED_PAGE = 5_000


class EpochChangedError(PeerError):
    """The node's feed has another epoch, or ends before the replica's cursor: start over."""

    status = 409
    title = "the node's change feed restarted"


class SnapshotBusyError(PeerError):
    """The node is streaming its snapshot to another replica: come back later."""

    status = 429
    title = "snapshot slots busy"

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"the node asks to retry the snapshot after {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class FeedStatus:
    """Where the replica stands against its node (what health, readiness and metrics show)."""

    epoch: str | None = None
    cursor: int = 0
    caught_up: float | None = None  # time.monotonic() of the last "nothing left" answer
    node_up: bool = False
    last_error: str | None = None
    rebuilding: bool = False
    rebuilds: int = 0
    snapshots: int = 0
    snapshot_waits: int = 0  # 429s answered by the node
    changes_applied: int = 0
    feed_errors: int = 0
    bootstrap_s: float | None = None  # how long the last snapshot took, end to end

    def lag_s(self, now: float) -> float | None:
        return None if self.caught_up is None else max(0.0, now - self.caught_up)


@dataclass(slots=True)
class Follower:
    """Keeps ``holdings`` in step with the node (module docstring)."""

    settings: ReplicaSettings
    session: aiohttp.ClientSession
    swap: Callable[[Holdings, MediaConfig], Awaitable[None]]  # installs new holdings
    apply: Callable[[Callable[[Holdings], None]], Awaitable[None]]  # changes the holdings
    rng: random.Random = field(default_factory=random.Random)
    status: FeedStatus = field(default_factory=FeedStatus)
    _failures: int = 0
    _confirm: bool = False  # poll once without waiting
    _ssl: SpkiPin | bool = True  # one SpkiPin for every request (aiohttp pools connections by it)

    def __post_init__(self) -> None:
        self._ssl = self.settings.ssl()

    # ---- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                if self.status.epoch is None:
                    await self.bootstrap()
                await self.poll()
                self._failures = 0
            except EpochChangedError as e:
                await self._restart(e)
            except SnapshotBusyError as e:
                self.status.snapshot_waits += 1
                await asyncio.sleep(e.retry_after_s + self.rng.uniform(0, e.retry_after_s))
            except aiohttp.ServerFingerprintMismatch as e:  # not the node's pinned TLS key
                await self._failed(describe_mismatch(self.settings.node_url, e))
            except (aiohttp.ClientError, TimeoutError, PeerError, ValueError) as e:
                await self._failed(e)
            except Exception as e:  # a bug: logged with its traceback, and still following
                log.exception("the replica's follower failed unexpectedly; retrying")
                await self._failed(e)

    async def _restart(self, e: EpochChangedError) -> None:
        """Start over from a new snapshot, after a random wait (no stampede)."""
        log.warning("%s; rebuilding from a new snapshot", e)
        self.status.rebuilding = True
        self.status.rebuilds += 1
        self.status.epoch = None
        await asyncio.sleep(self.rng.uniform(0, self.settings.rebuild_jitter_s))

    async def _failed(self, e: BaseException) -> None:
        status = self.status
        if status.node_up or status.last_error != (str(e) or repr(e)):
            log.warning("the node %s is unreachable or failing: %s; answering from what is "
                        "held, retrying", self.settings.node_url, e or repr(e))  # fmt: skip
        status.node_up = False
        status.last_error = str(e) or repr(e)
        status.feed_errors += 1
        self._failures += 1
        cap = min(self.settings.retry_max_s, 0.1 * 2 ** min(self._failures, 10))
        await asyncio.sleep(self.rng.uniform(cap / 2, cap))

    # ---- bootstrap ------------------------------------------------------------------

    async def bootstrap(self) -> None:
        began = time.monotonic()
        async with self._get("/v1/snapshot", {}) as response:
            if response.status == 429:
                raise SnapshotBusyError(_retry_after(response))
            await _check(response)
            header = orjson.loads(await _line(response))
            if not isinstance(header, dict) or header.get("snapshot") != 1:
                raise FeedDataError(f"not a snapshot header: {str(header)[:80]}")
            epoch, cursor = header.get("epoch"), header.get("cursor")
            if not isinstance(epoch, str) or type(cursor) is not int:
                raise FeedDataError("the snapshot header needs an epoch and a cursor")
            holdings = Holdings(header.get("radii") or None)
            await self._read_signals(response, holdings)
        media = _media(header.get("media"))
        await asyncio.to_thread(holdings.build)
        await self.swap(holdings, media)
        status = self.status
        status.epoch, status.cursor, status.node_up, status.last_error = epoch, cursor, True, None
        status.rebuilding, status.snapshots = False, status.snapshots + 1
        status.caught_up = began  # the snapshot holds every change up to its cursor
        self._confirm = True  # the first poll after it does not wait: readiness comes at once
        status.bootstrap_s = time.monotonic() - began
        log.info("loaded a snapshot of %d signals at cursor %d (epoch %s) in %.1f s",
                 len(holdings), cursor, epoch, status.bootstrap_s)  # fmt: skip

    async def _read_signals(self, response: aiohttp.ClientResponse, holdings: Holdings) -> None:
        """Every signal line up to the ``end`` line, staged a batch at a time off the loop."""
        batch: list[bytes] = []
        count = 0
        while True:
            line = await _line(response)
            if line.startswith(b'{"end"'):
                end = orjson.loads(line)
                break
            batch.append(line)
            if len(batch) >= SNAPSHOT_BATCH_LINES:
                await asyncio.to_thread(_stage, holdings, batch, now_ms())
                count, batch = count + len(batch), []
        await asyncio.to_thread(_stage, holdings, batch, now_ms())
        count += len(batch)
        if end.get("signals") != count:
            raise FeedDataError(f"the snapshot ended after {count} signals, its end line "
                                f"says {end.get('signals')}")  # fmt: skip

    # ---- following the feed -----------------------------------------------------------

    def wait_ms(self) -> int:
        """The long poll's wait: the setting, at most half the lag bound, jittered +-20%."""
        wait_s = min(self.settings.poll_wait_s, self.settings.max_lag_s / 2)
        return max(1, int(wait_s * self.rng.uniform(0.8, 1.2) * 1000))

    async def poll(self) -> None:
        """One long poll of the feed, and its entries applied."""
        status = self.status
        wait_ms, self._confirm = (0 if self._confirm else self.wait_ms()), False
        params = {"after": str(status.cursor), "limit": str(FEED_PAGE),
                  "epoch": status.epoch or "", "wait_ms": str(wait_ms)}  # fmt: skip
        async with self._get("/v1/changes", params) as response:
            if response.status == 409:
                detail = (await response.json(content_type=None)).get("detail", "")
                raise EpochChangedError(f"the node's change feed restarted: {detail}")
            await _check(response)
            page = await response.json(loads=orjson.loads)
        entries, last = page.get("changes"), page.get("last")
        if not isinstance(entries, list) or type(last) is not int:
            raise FeedDataError("a feed page needs changes and last")
        if entries:
            now = now_ms()
            await self.apply(lambda h: _apply_entries(h, entries, now))
            status.cursor = int(entries[-1]["cursor"])
            status.changes_applied += len(entries)
        status.node_up, status.last_error = True, None
        if status.cursor >= last:
            status.caught_up = time.monotonic()

    # ---- HTTP -------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str]) -> Any:
        s = self.settings
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.timeout_s,
                                        sock_read=s.timeout_s + s.poll_wait_s)  # fmt: skip
        headers = {"Authorization": f"Bearer {s.token}"}
        return self.session.get(s.node_url + path, params=params, timeout=timeout,
                                headers=headers, ssl=self._ssl)  # fmt: skip


def _apply_entries(holdings: Holdings, entries: list[Any], now: int) -> None:
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise FeedDataError("a feed entry needs an id")
        holdings.apply(entry["id"], entry.get("signal"), now)


def _stage(holdings: Holdings, lines: list[bytes], now: int) -> None:
    try:
        signals = [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError as e:
        raise FeedDataError(f"a snapshot line is not JSON: {e}") from e
    holdings.stage(signals, now)


async def _line(response: aiohttp.ClientResponse) -> bytes:
    line = await response.content.readline()
    if not line.endswith(b"\n"):
        raise FeedDataError("the snapshot stream was cut short")
    return line


async def _check(response: aiohttp.ClientResponse) -> None:
    if response.status == 200:
        return
    try:
        detail = (await response.json(content_type=None)).get("detail", "")
    except (ValueError, AttributeError):
        detail = (await response.text())[:200]
    raise PeerError(f"{response.method} {response.url.path}: {response.status} {detail}",
                    status=502 if response.status >= 500 else response.status)  # fmt: skip


def _retry_after(response: aiohttp.ClientResponse) -> float:
    try:
        return min(60.0, max(0.1, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def _media(raw: object) -> MediaConfig:
    """The node's matching settings from the snapshot header (defaults for any missing)."""
    if not isinstance(raw, dict):
        return MediaConfig()
    known = {k: v for k, v in raw.items() if k in MediaConfig.__dataclass_fields__}
    try:
        return MediaConfig(**known)
    except (TypeError, ValueError) as e:
        raise FeedDataError(f"the snapshot's media settings: {e}") from e
