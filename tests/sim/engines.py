"""Variants of the gossip engine that the simulator measures against today's (proposals for
``protocol/gossip.py``; see docs/simulation.md). Each changes one rule and nothing else.

``PerPeerPushEngine``: each peer has its own push pipeline. Today a push batch goes to its
peers together and the next batch waits until every one of them has answered, so a single
peer that drops packets holds every new record back for the request timeout (10 s), each
time its backoff ends. Here records routed to a peer wait in that peer's backlog only while a
push to that peer is in flight; a peer that fails or is backed off loses its backlog (its
next anti-entropy exchange repairs it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protocol.gossip import Action, GossipEngine, Push, SetTimer, push_width
from protocol.records import Record


class PerPeerPushEngine(GossipEngine):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backlog: dict[str, list[Record]] = {}

    def tick(self, now_ms: int) -> list[Action]:
        self._now = now_ms
        self._timer = None
        if self._round is None and self._round_at is None:
            self._round_at = self._jittered()
        elif self._round is None and self._round_at is not None and self._round_at <= now_ms:
            self._start_round()
        if self._linger_at is not None and self._linger_at <= now_ms:
            self._push_batch()
        return self._flush()

    def _flush(self) -> list[Action]:
        due = [t for t in (self._round_at, self._linger_at) if t is not None]
        wake = min(due) if due else None
        if wake is not None and wake != self._timer:
            self._timer = wake
            self._out.append(SetTimer(wake))
        out, self._out = self._out, []
        return out

    def _enqueue(self, items: Iterable[Any]) -> None:
        self._queue.extend(items)
        if self._queue and self._linger_at is None:
            self._linger_at = self._now + self.settings.push_linger_ms

    def _push_batch(self) -> None:
        self._linger_at = None
        count = min(len(self._queue), self.settings.push_batch_records)
        batch = [self._queue.popleft() for _ in range(count)]
        available = [self._peers[url] for url in self.available(self._now)]
        for item in batch:
            want = None if item.everyone else push_width(
                item.record.author, source=item.source, own_key=self.own_key,
                fanout=self.settings.fanout)  # fmt: skip
            source = item.source
            targets = [p.url for p in available if source is None or source not in (p.url, p.key)]
            if want is not None:
                targets = self._rng.sample(targets, min(want, len(targets)))
            for url in targets:
                self._backlog.setdefault(url, []).append(item.record)
        for url in sorted(self._backlog):
            self._send_backlog(url)
        if self._queue:
            self._linger_at = self._now + self.settings.push_linger_ms

    def _send_backlog(self, url: str) -> None:
        if url in self._pushing:
            return
        records = self._backlog.pop(url, [])
        peer = self._peers.get(url)
        if not records or peer is None or peer.backoff_until_ms > self._now:
            return  # gone or backed off: anti-entropy repairs it later
        limit = self.settings.push_batch_records
        if len(records) > limit:
            self._backlog[url] = records[limit:]
        self._out.append(Push(url, tuple(records[:limit])))
        self._pushing.add(url)

    def _push_done(self, url: str) -> None:
        self._pushing.discard(url)
        self._send_backlog(url)
