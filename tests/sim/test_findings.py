"""What the simulator found in today's rules, as tests that say how today behaves and how the
proposed rule behaves (docs/simulation.md, /work/notes/engine-api.md). When a proposal is
adopted, its test flips to assert the new behaviour only.

- Proposal 1: after a fork, frontiers never agree (``test_broken_rules``).
- Proposal 2: one peer that drops packets holds back every new record of the node that
  pushes to it for the request timeout (10 s), each time its backoff ends, because a push
  batch waits for every peer's answer before the next batch goes.
"""

from __future__ import annotations

from dataclasses import replace

from sim.members import signal_body
from sim.world import TODAY, Rules, World


def _to_reachable_nodes(rules: Rules) -> list[float]:
    """Node 0 adds a record every 0.5 s while node 9 silently drops everything: how long
    each record takes to reach all of nodes 1..8, sorted."""
    world = World(3, 10, rules=rules)
    world.run(1.0)
    world.net.partition([9], range(9))
    ids: list[str] = []
    for k in range(40):
        world.sched.at(
            1.0 + 0.5 * k, lambda k=k: ids.append(world.nodes[0].author(signal_body(k)).id)
        )
    world.run(30.0)
    delays = []
    for rid in ids:
        authored = world.oracle.authored[rid][1]
        seen = world.oracle.seen[rid]
        delays.append(max(seen.get(i, float("inf")) for i in range(1, 9)) - authored)
    return sorted(delays)


def test_one_unreachable_peer_holds_back_every_push_today() -> None:
    today = _to_reachable_nodes(TODAY)
    assert today[len(today) // 2] > 2.0  # median: the other nodes wait for the timeout
    proposed = _to_reachable_nodes(replace(TODAY, per_peer_push=True))
    assert proposed[-1] < 0.5  # per-peer push pipelines: every record at once
