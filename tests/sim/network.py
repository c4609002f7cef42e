"""The simulated network: links with latency, jitter, loss and duplication, partitions, and
byte counts per node.

A peer request travels as one message each way (HTTP/1.1 over a connection that is already
open). ``Network.request`` sends it: it leaves the sender's uplink (``uplink_bytes_s``: a node
pushing to 999 peers queues 999 messages), crosses the link after its latency plus a random
part of the jitter -- so two messages on one link can arrive in either order -- and is handed
to the receiving node, which answers through the reply callback it is given; the answer
travels back the same way. The sender learns the outcome exactly once: the answer, or a
failure -- ``"refused"`` one round trip later when the receiver is down (a TCP reset), or
``"timeout"`` after ``timeout_s`` when the request or its answer was lost or the link is cut
(a partition drops packets silently). A duplicated request reaches the receiver twice (the
second copy is the receiver's to refuse: RFC 9421's replay cache).

Every transmission is counted on both ends, head and body apart (``sim.wire``), and by the
kind of exchange, so the scale study can say where the bytes go.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sim.scheduler import Scheduler, Trace


@dataclass(frozen=True, slots=True)
class LinkSpec:
    latency_s: float = 0.05  # one way
    jitter_s: float = 0.01  # each message adds uniform(0, jitter_s)
    loss: float = 0.0  # chance that a message is lost
    duplicate: float = 0.0  # chance that a request is delivered twice


@dataclass(slots=True)
class Traffic:
    sent_body: int = 0
    sent_head: int = 0
    received_body: int = 0
    received_head: int = 0
    requests_sent: int = 0

    @property
    def total(self) -> int:
        return self.sent_body + self.sent_head + self.received_body + self.received_head


@dataclass(slots=True)
class Request:
    """One peer request: what the engine asked for (``op``), and its wire size."""

    src: int
    dst: int
    kind: str  # heads | log | push (the endpoint)
    op: Any  # the engine's request object, as the receiving node reads it
    body: bytes
    head_bytes: int
    created_s: float  # the sender's clock when it signed (RFC 9421 ``created``)
    nonce: int
    key: str  # the signing key (``keyid``)


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    head_bytes: int
    data: Any = None  # what the receiver answered, parsed (the frontier, the records)


class Endpoint(Protocol):
    @property
    def up(self) -> bool: ...

    def receive(self, request: Request, reply: Callable[[Answer], None]) -> None: ...


Done = Callable[[Answer | None, str], None]  # (answer, "") or (None, "timeout" | "refused")


@dataclass(slots=True)
class _Exchange:
    request: Request
    done: Done
    finished: bool = False

    def finish(self, answer: Answer | None, failure: str) -> None:
        if not self.finished:
            self.finished = True
            self.done(answer, failure)


@dataclass
class Network:
    sched: Scheduler
    rng: random.Random
    trace: Trace
    default: LinkSpec = field(default_factory=LinkSpec)
    timeout_s: float = 10.0
    uplink_bytes_s: float = 12.5e6  # 100 Mbit/s
    links: dict[tuple[int, int], LinkSpec] = field(default_factory=dict)
    groups: dict[int, int] = field(default_factory=dict)  # node -> partition side
    cut: set[tuple[int, int]] = field(default_factory=set)  # (src, dst) that drop everything
    endpoints: dict[int, Endpoint] = field(default_factory=dict)
    traffic: dict[int, Traffic] = field(default_factory=dict)
    by_kind: Counter[str] = field(default_factory=Counter)  # bytes sent, heads and bodies
    body_by_kind: Counter[str] = field(default_factory=Counter)  # bodies only
    delivered: list[tuple[float, int, int, str, Any]] = field(default_factory=list)
    keep_deliveries: bool = False  # record (time, src, dst, kind, op) of every request
    _uplink_free: dict[int, float] = field(default_factory=dict)
    _nonce: int = 0

    # -- topology ------------------------------------------------------------------------

    def attach(self, node: int, endpoint: Endpoint) -> None:
        self.endpoints[node] = endpoint
        self.traffic.setdefault(node, Traffic())

    def partition(self, *sides: Iterable[int]) -> None:
        """Split the nodes: messages between different sides are dropped (both ways)."""
        self.groups = {n: i for i, side in enumerate(sides) for n in side}
        self.trace("net", f"partition {[sorted(s) for s in sides]}")

    def heal(self) -> None:
        self.groups = {}
        self.cut = set()
        self.trace("net", "heal")

    def blocked(self, src: int, dst: int) -> bool:
        groups = self.groups
        if groups and groups.get(src, -1) != groups.get(dst, -1):
            return True
        return (src, dst) in self.cut

    def link(self, src: int, dst: int) -> LinkSpec:
        return self.links.get((src, dst), self.default)

    # -- messages ------------------------------------------------------------------------

    def next_nonce(self) -> int:
        self._nonce += 1
        return self._nonce

    def _transmit(self, src: int, dst: int, head: int, body: int, kind: str) -> float:
        """Count a message leaving src; the time it arrives at dst (if it is not lost)."""
        t = self.traffic[src]
        t.sent_head += head
        t.sent_body += body
        self.by_kind[kind] += head + body
        self.body_by_kind[kind] += body
        start = max(self.sched.now, self._uplink_free.get(src, 0.0))
        leaves = start + (head + body) / self.uplink_bytes_s
        self._uplink_free[src] = leaves
        spec = self.link(src, dst)
        return leaves + spec.latency_s + self.rng.uniform(0.0, spec.jitter_s)

    def _arrives(self, src: int, dst: int) -> bool:
        return not self.blocked(src, dst) and self.rng.random() >= self.link(src, dst).loss

    def _count_in(self, dst: int, head: int, body: int) -> None:
        t = self.traffic[dst]
        t.received_head += head
        t.received_body += body

    def request(self, request: Request, done: Done) -> None:
        """Send request; done is called once with the answer or the failure."""
        src, dst = request.src, request.dst
        exchange = _Exchange(request, done)
        self.traffic[src].requests_sent += 1
        arrival = self._transmit(src, dst, request.head_bytes, len(request.body), request.kind)
        self.sched.at(self.sched.now + self.timeout_s, lambda: exchange.finish(None, "timeout"))
        if not self._arrives(src, dst):
            self.trace(f"n{src}", f"-> n{dst} {request.kind} lost")
            return
        copies = 2 if self.rng.random() < self.link(src, dst).duplicate else 1
        for copy in range(copies):
            extra = copy * self.rng.uniform(0.0, 2 * self.link(src, dst).jitter_s + 0.001)
            self.sched.at(arrival + extra, lambda: self._deliver(exchange))

    def _deliver(self, exchange: _Exchange) -> None:
        request = exchange.request
        src, dst = request.src, request.dst
        endpoint = self.endpoints[dst]
        if not endpoint.up:  # connection refused: the sender hears it one trip later
            back = self.link(dst, src).latency_s
            self.sched.after(back, lambda: exchange.finish(None, "refused"))
            return
        self._count_in(dst, request.head_bytes, len(request.body))
        if self.keep_deliveries:
            self.delivered.append((self.sched.now, src, dst, request.kind, request.op))
        replied = False

        def reply(answer: Answer) -> None:
            nonlocal replied
            if replied:
                return
            replied = True
            self._answer(exchange, answer)

        endpoint.receive(request, reply)

    def _answer(self, exchange: _Exchange, answer: Answer) -> None:
        request = exchange.request
        src, dst = request.dst, request.src  # the answer goes back
        arrival = self._transmit(src, dst, answer.head_bytes, len(answer.body), request.kind)
        if not self._arrives(src, dst):
            self.trace(f"n{src}", f"-> n{dst} {request.kind} answer lost")
            return

        def arrive() -> None:
            if exchange.finished:
                return  # timed out already, or a duplicate's answer: dropped unread
            self._count_in(dst, answer.head_bytes, len(answer.body))
            exchange.finish(answer, "")

        self.sched.at(arrival, arrive)
