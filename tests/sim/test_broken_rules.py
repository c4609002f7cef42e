"""Break one rule on purpose and the simulation must fail: the invariants can see each rule.

Each switch is wrapped in the simulator (``sim.world.Rules``), around the real engine: relay
disabled (records pushed by others are never pushed on), fork evidence not gossiped (no push
of it, and frontiers without it), removal not honoured (a removed member's node stays a
peer). Each test runs the same seeds with the rule kept (every run passes) and broken (every
run fails, with the failure the rule exists to prevent). The last test shows why SPEC 10.2
caps a frozen author's head (``protocol.sync.capped_heads``): without the cap, correct nodes
never agree after a fork.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim.run import run_one
from sim.world import ADOPTED, EVERY_PEER_RELAYS, Rules

SEEDS = range(4)


def _runs(scenario: str, rules: Rules) -> list[list[str]]:
    return [run_one(scenario, seed, rules, quick=True).failures for seed in SEEDS]


@pytest.mark.parametrize(
    ("scenario", "switch", "failure"),
    [
        ("relay_cut", {"relay": False}, "reached every correct node within 1.0 s"),
        ("equivocate_one", {"gossip_forks": False}, "unknown on"),
        ("removed_pushes", {"honour_removal": False}, "removed here"),
    ],
    ids=["relay-disabled", "fork-evidence-not-gossiped", "removal-not-honoured"],
)
def test_a_broken_rule_fails_the_simulation(
    scenario: str, switch: dict[str, bool], failure: str
) -> None:
    rules = EVERY_PEER_RELAYS if scenario == "relay_cut" else ADOPTED  # test_findings
    assert _runs(scenario, rules) == [[] for _ in SEEDS]
    for failures in _runs(scenario, replace(rules, **switch)):
        assert any(failure in f for f in failures), failures


def test_uncapped_frontiers_never_agree_after_a_fork() -> None:
    """Without SPEC 10.2's cap, each node's head of a forked author is whichever record it
    stored first, so frontier digests differ for ever although the folds agree."""
    for failures in _runs("equivocate", replace(ADOPTED, cap_frontier=False)):
        assert len(failures) == 1 and failures[0].startswith("frontiers differ"), failures
    assert _runs("equivocate", ADOPTED) == [[] for _ in SEEDS]
