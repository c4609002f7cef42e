"""What must hold at the end of every simulated run, checked from outside the nodes.

``check(world, expect)`` answers a list of failures (empty: the run is good). "Correct" nodes
are those that did not misbehave on purpose and are up at the end (``World.correct``).

1. Convergence: every correct node has the same frontier digest (SPEC 10.2) and the same fold
   digest (SHA-256 of ``fold_state(...).to_json()``, SPEC 8.7) by ``expect.converge_by_s``:
   the last fault's end plus the bound.
2. No accepted record lost: a record a node ever stored is still stored there (crashes lose
   only what was not committed), and every record a correct member authored is stored on
   every correct node.
3. Forks: every correct node holds fork evidence for each equivocating member and freezes it
   identically (same seq, reason ``fork``); with ``fork_bound_s``, every correct node knew
   the fork within that long of the first one that found it.
4. Removal (SPEC 10.6): a removed member is removed and frozen identically on every correct
   node, and no node sent a request to its node after the removal took effect there
   (``Oracle.violations``, recorded as it happened).
5. Verification: every record any node holds, stored or held, verifies again with
   ``decode_record`` (without the simulator's verification cache) and is stored under its
   own author, seq and id.
6. Propagation (scenarios that ask for it): the given share of the listed records reached
   every correct node within ``propagation_bound_s`` of being authored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.errors import RemoteProtocolError
from protocol.records import decode_record
from sim.world import World


@dataclass(slots=True)
class Expect:
    converge_by_s: float
    forkers: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)
    fork_bound_s: float | None = None
    propagation_bound_s: float | None = None
    propagation_share: float = 0.9  # of propagation_records, within the bound
    propagation_records: list[str] = field(default_factory=list)


def check(world: World, expect: Expect) -> list[str]:
    failures: list[str] = []
    correct = world.correct()
    if not correct:
        return ["no correct node is up at the end"]
    failures += _converged(world, correct)
    failures += _nothing_lost(world, correct)
    failures += _forks(world, correct, expect)
    failures += _removals(world, correct, expect)
    failures += _verified(world)
    failures += _propagation(world, correct, expect)
    return failures


def frontier_digests(world: World, nodes: list[int]) -> dict[int, str]:
    return {i: world.nodes[i].store.digest() for i in nodes}


def _converged(world: World, correct: list[int]) -> list[str]:
    digests = frontier_digests(world, correct)
    if len(set(digests.values())) > 1:
        return [f"frontiers differ at t={world.now:.1f}: {_groups(digests)}"]
    now_ms = 10**13  # one instant for every fold (expiry is not what is compared here)
    folds = {i: world.nodes[i].store.fold_digest(now_ms) for i in correct}
    if len(set(folds.values())) > 1:
        return [f"fold digests differ at t={world.now:.1f}: {_groups(folds)}"]
    return []


def _groups(values: dict[int, str]) -> str:
    groups: dict[str, list[int]] = {}
    for node, value in values.items():
        groups.setdefault(value, []).append(node)
    return " | ".join(f"{v[:8]}: n{','.join(map(str, ns))}" for v, ns in groups.items())


def _nothing_lost(world: World, correct: list[int]) -> list[str]:
    failures = []
    for node in world.nodes:
        lost = world.oracle.accepted.get(node.index, set()) - node.store.by_id.keys()
        if lost:
            failures.append(f"n{node.index} lost {len(lost)} records it had stored")
    for rid, (author, _) in world.oracle.authored.items():
        if author not in correct:
            continue
        missing = [i for i in correct if rid not in world.nodes[i].store.by_id]
        if missing:
            failures.append(f"record {rid[:8]} of n{author} is missing on n{missing}")
    return failures


def _forks(world: World, correct: list[int], expect: Expect) -> list[str]:
    failures = []
    for forker in sorted(expect.forkers):
        key = world.fed.keys[forker].public
        unaware = [i for i in correct if key not in world.nodes[i].store.forks]
        if unaware:
            failures.append(f"fork of n{forker} unknown on n{unaware}")
        freezes = {i: world.nodes[i].store.membership.freezes.get(key) for i in correct}
        if len(set(freezes.values())) > 1 or any(
            f is None or f[1] != "fork" for f in freezes.values()
        ):
            failures.append(f"n{forker} frozen differently: {freezes}")
        known = world.oracle.forks_known.get(key, {})
        if expect.fork_bound_s is not None and known:
            first = min(known.values())
            late = [i for i in correct if known.get(i, float("inf")) > first + expect.fork_bound_s]
            if late:
                failures.append(
                    f"fork of n{forker} found at t={first:.2f} reached n{late} later than "
                    f"{expect.fork_bound_s} s"
                )
    return failures


def _removals(world: World, correct: list[int], expect: Expect) -> list[str]:
    failures = list(world.oracle.violations[:5])
    for removed in sorted(expect.removed):
        key = world.fed.keys[removed].public
        states = {
            i: (
                world.nodes[i].store.membership.members[key].removed,
                world.nodes[i].store.membership.freezes.get(key),
            )
            for i in correct
        }
        if any(not removed_ for removed_, _ in states.values()) or len(set(states.values())) > 1:
            failures.append(f"n{removed} removed or frozen differently: {states}")
    return failures


def _verified(world: World) -> list[str]:
    fed = world.fed.federation.id
    seen: dict[bytes, str] = {}
    failures = []
    for node in world.nodes:
        store = node.store
        for (author, seq), ids in store.at.items():
            for rid in ids:
                record = store.by_id[rid]
                if (record.author, record.seq, record.id) != (author, seq, rid):
                    failures.append(f"n{node.index} stores {rid[:8]} under {author[:8]}/{seq}")
        for record in [*store.by_id.values(), *store.held.values()]:
            data = record.canonical
            if data not in seen:
                try:
                    seen[data] = decode_record(data, fed).id
                except RemoteProtocolError as e:
                    seen[data] = f"! {e.code}"
            if seen[data] != record.id:
                failures.append(f"n{node.index} holds {record.id[:8]}, which fails: {seen[data]}")
    return failures[:5]


def propagation_times(world: World, ids: list[str], nodes: list[int]) -> list[float]:
    """For each record: how long until the last of nodes stored it (inf: never)."""
    times = []
    for rid in ids:
        _, authored = world.oracle.authored[rid]
        seen = world.oracle.seen.get(rid, {})
        last = max((seen.get(i, float("inf")) for i in nodes), default=authored)
        times.append(last - authored)
    return times


def _propagation(world: World, correct: list[int], expect: Expect) -> list[str]:
    if expect.propagation_bound_s is None or not expect.propagation_records:
        return []
    times = propagation_times(world, expect.propagation_records, correct)
    fast = sum(1 for t in times if t <= expect.propagation_bound_s)
    if fast < expect.propagation_share * len(times):
        worst = sorted(times)[len(times) // 2]
        return [
            f"only {fast} of {len(times)} records reached every correct node within "
            f"{expect.propagation_bound_s} s (median {worst:.2f} s)"
        ]
    return []
