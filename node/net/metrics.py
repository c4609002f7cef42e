"""Prometheus metrics: ``GET /metrics`` in the text exposition format (prometheus-client).

Every app has its own ``CollectorRegistry`` (``Metrics``, held by the ``Node``), never the
process-global one, so several nodes can run in one process (tests). Three kinds of values:

- counters moved where things happen: merges by outcome and rejection reason, forks detected,
  records authored, anti-entropy exchanges by result, peer connections refused for transport
  security (``hashmesh_tls_pin_failures_total{peer,reason}``), match requests and latency
  (``metrics_middleware`` times ``POST /v1/match``);
- gauges refreshed at scrape time from the store and the gossip engine: records, authors,
  members, pending, forks, and per peer: up, records behind/ahead at last contact, seconds
  since last contact;
- ``hashmesh_active_signals{type}``, read from the match index at scrape time (signals
  leave it as they change and as they expire).

``/metrics`` answers loopback clients (no ``Forwarded``/``X-Forwarded-For`` header, i.e. not
relayed by a local reverse proxy) and anyone presenting the node's bearer token; the numbers
and peer URLs are operational detail, not for the public internet.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from node.store.merge import MergeResult


class PeerView(Protocol):
    """What the metrics read of one peer (``node.net.gossip.PeerView`` has it)."""

    @property
    def url(self) -> str: ...
    @property
    def failures(self) -> int: ...
    @property
    def behind(self) -> int: ...
    @property
    def ahead(self) -> int: ...
    @property
    def last_contact_ms(self) -> int | None: ...


MATCH_SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
MATCH_PATH = "/v1/match"
# node.counters kept by other modules, exported as counters: (key, metric name, help)
NODE_COUNTERS = (
    ("peer_requests_refused", "hashmesh_peer_requests_refused",
     "Peer API requests refused (unsigned, bad signature, replay, not a member)"),
    ("requests_timed_out", "hashmesh_requests_timed_out",
     "Requests whose headers or body did not arrive in time (connection closed)"),
    ("match_queries", "hashmesh_match_queries", "Hashes and images looked up by match requests"),
    ("match_list_hits", "hashmesh_match_list_hits",
     "Hits of this member's local match lists in match answers"),
    ("match_suppressed", "hashmesh_match_suppressed",
     "Federation hits suppressed in match answers (by a safelist or the match policy)"),
    ("replica_snapshots", "hashmesh_replica_snapshots", "Snapshots streamed to match replicas"),
    ("replica_snapshots_refused", "hashmesh_replica_snapshots_refused",
     "Snapshot requests refused with 429 while another streamed"),
)  # fmt: skip


class _NodeCounters(Collector):
    """Reads the node's plain ``counters`` dict at scrape time."""

    def __init__(self, counters: Mapping[str, int]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        for key, name, documentation in NODE_COUNTERS:
            yield CounterMetricFamily(name, documentation, value=self.counters.get(key, 0))


class Metrics:
    """One node's metrics and the registry they are exposed from."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        def gauge(name: str, documentation: str, *labels: str) -> Gauge:
            return Gauge(name, documentation, labels, registry=r)

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=r)

        gauge("hashmesh_node_info", "This node's software version", "version").labels(
            _version()
        ).set(1)
        self.tls_enabled = gauge("hashmesh_tls_enabled", "1 if peers reach this node over TLS")
        # the store, refreshed at scrape
        self.records = gauge("hashmesh_records", "Records stored")
        self.authors = gauge("hashmesh_authors", "Author keys with stored records")
        self.members = gauge("hashmesh_members", "Members and auditors not removed")
        self.pending = gauge("hashmesh_pending_records", "Records held until their gap fills")
        self.forks = gauge("hashmesh_forks", "Fork evidence held (frozen authors)")
        self.active_signals = gauge(
            "hashmesh_active_signals", "Active signals in the match index", "type"
        )
        # merges
        self.merged = counter("hashmesh_merged_records", "Records merged, by outcome", "status")
        self.rejected = counter(
            "hashmesh_rejected_records", "Records rejected, by reason", "reason"
        )
        self.forks_detected = counter("hashmesh_forks_detected", "Equivocations found by merges")
        self.authored = counter("hashmesh_authored_records", "Records this member signed", "kind")
        # peers
        self.peers = gauge("hashmesh_peers", "Known peer URLs")
        self.peers_up = gauge("hashmesh_peers_up", "Peers whose last exchange succeeded")
        self.peer_up = gauge("hashmesh_peer_up", "1 if the last exchange succeeded", "peer")
        self.peer_behind = gauge(
            "hashmesh_peer_records_behind", "Records the peer had and we lacked, at last contact",
            "peer",
        )  # fmt: skip
        self.peer_ahead = gauge(
            "hashmesh_peer_records_ahead", "Records we had and the peer lacked, at last contact",
            "peer",
        )  # fmt: skip
        self.peer_since = gauge(
            "hashmesh_peer_seconds_since_contact", "Seconds since the last good exchange", "peer"
        )
        self.syncs = counter("hashmesh_syncs", "Anti-entropy exchanges, by result", "result")
        self.tls_pin_failures = counter(
            "hashmesh_tls_pin_failures",
            "Peer connections refused for transport security (mismatch, no_pin, plain_http)",
            "peer",
            "reason",
        )
        # matching
        self.match_requests = counter("hashmesh_match_requests", "POST /v1/match", "status")
        self.match_seconds = Histogram(
            "hashmesh_match_seconds",
            "POST /v1/match latency",
            buckets=MATCH_SECONDS_BUCKETS,
            registry=r,
        )

    def watch_counters(self, counters: Mapping[str, int]) -> None:
        self.registry.register(_NodeCounters(counters))

    # ---- moved by the node -------------------------------------------------------------

    def merge_done(self, result: MergeResult) -> None:
        for status, count in result.counts().items():
            if count:
                self.merged.labels(status).inc(count)
        for outcome in result.outcomes:
            if str(outcome.status) == "rejected":
                reason = outcome.error.get("error") if outcome.error else None
                self.rejected.labels(str(reason or "unknown")).inc()
        if result.forks:
            self.forks_detected.inc(len(result.forks))

    # ---- refreshed at scrape -----------------------------------------------------------

    def refresh_index(self, sizes: Mapping[str, int]) -> None:
        """The match index's signals of each type (``MatchIndex.sizes``)."""
        for signal_type, size in sizes.items():
            self.active_signals.labels(signal_type).set(size)

    def refresh_store(self, stats: Mapping[str, int]) -> None:
        self.records.set(stats.get("records", 0))
        self.authors.set(stats.get("authors", 0))
        self.members.set(stats.get("members", 0))
        self.pending.set(stats.get("pending", 0))
        self.forks.set(stats.get("forks", 0))

    def refresh_peers(self, peers: Iterable[PeerView], now_s: float) -> None:
        for gauge in (self.peer_up, self.peer_behind, self.peer_ahead, self.peer_since):
            gauge.clear()  # peers come and go; stale label sets must not linger
        known = up = 0
        for peer in peers:
            known += 1
            is_up = peer.failures == 0 and peer.last_contact_ms is not None
            up += is_up
            self.peer_up.labels(peer.url).set(int(is_up))
            self.peer_behind.labels(peer.url).set(peer.behind)
            self.peer_ahead.labels(peer.url).set(peer.ahead)
            if peer.last_contact_ms is not None:
                self.peer_since.labels(peer.url).set(now_s - peer.last_contact_ms / 1000)
        self.peers.set(known)
        self.peers_up.set(up)


def _version() -> str:
    try:
        return metadata.version("hashmesh")
    except metadata.PackageNotFoundError:
        return "unknown"


METRICS = web.AppKey("metrics", Metrics)


# ---- HTTP --------------------------------------------------------------------------------


def may_scrape(request: web.Request, token: str) -> bool:
    supplied = request.headers.get("Authorization", "")
    if hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
        return True
    relayed = "Forwarded" in request.headers or "X-Forwarded-For" in request.headers
    try:
        loopback = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        loopback = False
    return loopback and not relayed


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time match requests (outermost, so it sees the final status)."""
    if request.path != MATCH_PATH or request.method != "POST":
        return await handler(request)
    metrics = request.app[METRICS]
    began = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        metrics.match_requests.labels(str(status)).inc()
        metrics.match_seconds.observe(time.perf_counter() - began)
