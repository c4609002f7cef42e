"""A simulated federation: the clock, the network, the nodes, the rules they follow, and the
oracle that watches what happens for the invariant checker.

``World(seed, size, ...)`` builds N nodes of a federation of N members (``sim.members``), each
holding every member's announce (so every node knows every peer, as after a federation has
run for a while). All randomness of a run -- network jitter and loss, each engine's choices,
the workload and the faults -- comes from ``random.Random`` streams derived from the seed, so
a run is a function of its seed and scenario.

``Rules`` holds the switches a test flips to break a rule on purpose (the simulator wraps the
engine: it withholds the events that would make it relay, gossip fork evidence or drop a
removed member's node), and the earlier rules the scale study can compare with (``BEFORE``).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from protocol.frontier_delta import RECENT_FRONTIERS
from protocol.gossip import GossipSettings
from sim.members import SimFederation, federation_of
from sim.network import LinkSpec, Network
from sim.scheduler import Scheduler, Trace
from sim.store import SimStore


@functools.cache
def _templates(size: int, threshold: int) -> SimStore:
    fed = federation_of(size, threshold)
    return SimStore(fed.federation, fed.announces)


def template_store(fed: SimFederation) -> SimStore:
    """The store every node starts from: every member's announce (built once per size)."""
    return _templates(fed.size, fed.federation.threshold)


@dataclass(frozen=True, slots=True)
class Rules:
    """Which rules the nodes follow. The defaults are the protocol's (SPEC 10.2, 10.3, 10.6):
    the engine's own rules (a push pipeline per peer, ``relay_asks`` of an author's peers
    asked to relay) come with ``settings``; the store side is simulated here."""

    relay: bool = True  # False: records pushed by others are never pushed on
    gossip_forks: bool = True  # False: fork evidence is neither pushed nor put in frontiers
    honour_removal: bool = True  # False: a removed member's node stays a peer
    # SPEC 10.2: a frozen author's head in frontiers is its record at the cap
    # (protocol.sync.capped_heads); False: the rule before, under which nodes holding
    # different records past a fork never reach equal digests (test_broken_rules)
    cap_frontier: bool = True
    # SPEC 10.2: frontier deltas against this many recent frontiers (protocol.frontier_delta);
    # 0: every /v1/heads answer is the full frontier
    frontier_deltas: int = RECENT_FRONTIERS
    relay_from_author: bool = True  # False: records straight from their author are not relayed
    settings: GossipSettings = field(default_factory=GossipSettings)


ADOPTED = Rules()
# The protocol's rules, but an author asks every peer to relay its records (relay_asks=3 as
# adopted misses relay_cut's bound: tests/sim/test_findings.py).
EVERY_PEER_RELAYS = Rules(settings=GossipSettings(relay_asks=1_000_000))
# The rules before issue 19's changes, as far as they are cheap to switch back: uncapped
# frontiers, full frontiers only, an author asks every peer to relay its records. (The push
# pipeline per peer is the engine's and stays.)
BEFORE = Rules(cap_frontier=False, frontier_deltas=0, settings=GossipSettings(relay_asks=1_000_000))


@dataclass(slots=True)
class Oracle:
    """What the simulator saw, for the invariants and the measurements (not seen by nodes)."""

    authored: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (node, time)
    seen: dict[str, dict[int, float]] = field(default_factory=dict)  # id -> node -> first stored
    accepted: dict[int, set[str]] = field(default_factory=dict)  # node -> ids it ever stored
    forks_known: dict[str, dict[int, float]] = field(default_factory=dict)  # author -> node -> t
    removal_seen: dict[str, dict[int, float]] = field(default_factory=dict)  # identity -> node
    violations: list[str] = field(default_factory=list)  # broken on the spot (10.6 sends)
    track_seen: bool = True

    def stored(self, node: int, ids: list[str], now: float) -> None:
        if not self.track_seen:
            return
        mine = self.accepted.setdefault(node, set())
        for rid in ids:
            if rid not in mine:
                mine.add(rid)
                self.seen.setdefault(rid, {}).setdefault(node, now)


class World:
    """Everything of one run (module docstring)."""

    def __init__(
        self,
        seed: int,
        size: int,
        *,
        rules: Rules | None = None,
        link: LinkSpec | None = None,
        trace: bool = False,
        threshold: int = 2,
        timeout_s: float = 10.0,
    ) -> None:
        from sim.node import SimNode  # the node needs the world's types

        self.seed = seed
        self.rng = random.Random(f"world {seed}")
        self.sched = Scheduler()
        self.trace = Trace(enabled=trace, clock=self.sched)
        self.rules = rules or Rules()
        self.fed: SimFederation = federation_of(size, threshold)
        self.net = Network(self.sched, random.Random(f"net {seed}"), self.trace,
                           default=link or LinkSpec(), timeout_s=timeout_s)  # fmt: skip
        self.oracle = Oracle()
        self.byzantine: set[int] = set()  # members that misbehave on purpose
        self.last_fault_s = 0.0  # when the last fault healed (the convergence bound starts)
        self.template = template_store(self.fed)
        self.nodes = [SimNode(self, i, random.Random(f"node {seed} {i}")) for i in range(size)]
        for node in self.nodes:
            self.net.attach(node.index, node)
        for node in self.nodes:
            node.start()

    @property
    def now(self) -> float:
        return self.sched.now

    def correct(self) -> list[int]:
        """The nodes the invariants speak of: not Byzantine, up at the end."""
        return [n.index for n in self.nodes if n.index not in self.byzantine and n.up]

    def run(self, until: float) -> None:
        self.sched.run(until)

    def healed(self) -> None:
        """A fault ended now: the convergence bound counts from the last such moment."""
        self.last_fault_s = max(self.last_fault_s, self.sched.now)
