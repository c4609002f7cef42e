"""The fault scenarios, seeded: every invariant holds after every run (``sim.invariants``).

Each test item runs a few seeds of one scenario (so xdist spreads them); a failure names the
seed and the command that replays it with its trace. ``make sim`` runs thousands of random
seeds the same way. relay_cut runs with every peer of the author asked to relay
(``relay_asks`` = 3 misses its bound: ``test_findings``).
"""

from __future__ import annotations

import pytest

from sim.run import run_one
from sim.scenarios import TEST_SCENARIOS
from sim.world import ADOPTED, EVERY_PEER_RELAYS

SEEDS_PER_ITEM = 5
ITEMS_PER_SCENARIO = 4  # 12 scenarios x 20 seeds = 240 runs


@pytest.mark.parametrize("chunk", range(ITEMS_PER_SCENARIO))
@pytest.mark.parametrize("scenario", TEST_SCENARIOS)
def test_invariants_hold(scenario: str, chunk: int) -> None:
    failed = []
    for seed in range(chunk * SEEDS_PER_ITEM, (chunk + 1) * SEEDS_PER_ITEM):
        rules = EVERY_PEER_RELAYS if scenario == "relay_cut" else ADOPTED  # test_findings
        result = run_one(scenario, seed, rules, quick=True)
        if result.failures:
            failed.append(f"seed {seed}: {result.failures}\n  replay: {result.replay}")
        assert result.converged_s is not None or result.failures
    assert not failed, "\n".join(failed)
