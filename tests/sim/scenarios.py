"""The fault scenarios: a workload and the faults of one run, built from its seed.

Each scenario takes the seed and the rules and answers a ``World`` with its workload and
faults scheduled, and the ``Expect`` of ``sim.invariants``. Sizes, times and victims are
drawn from the world's random stream, so every seed is a different run of the same story:

- ``calm``: members add signals now and then; nothing goes wrong (the baseline).
- ``lossy``: 10% of messages lost, 5% of requests duplicated, 200 ms of jitter (reordering).
- ``partition``: the federation splits in two for 2-20 s while both sides add; then heals.
- ``down_burst``: a node is down while other members add a burst of 100-300 records.
- ``kill_pull``: a node that was down pulls what it missed in small pages and is killed at a
  random step of that pull, two or three times, then stays up.
- ``equivocate``: a member signs two records at one seq, one for each half of its peers.
- ``equivocate_one``: the same, the second record to a single node only, as a ``?relay=0``
  push (so that node does not push it on); the fork must be known everywhere within 2 s of
  the first node finding it (the fork-gossip check).
- ``withhold``: a member pushes and serves its own records to only some of its peers.
- ``flood``: a member adds 300-1,000 valid records at once while others go on adding.
- ``removed_pushes``: two members vote a third out; it keeps signing and pushing records.
- ``skew``: one node's clock runs 400 s fast (outside the 300 s signature window) for a
  while, another's 250 s slow all along (inside it).
- ``relay_cut``: a member knows only half of the nodes as peers; 80% of its records must still
  reach every node within 1 s (the relay check).
- ``chaos``: loss, a partition, a crash and a fork in one run (``make sim`` only).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

from protocol import Body, VoteBody
from sim.invariants import Expect
from sim.members import signal_body
from sim.network import LinkSpec
from sim.world import Rules, World

# After the last fault heals, correct nodes must agree within: the longest backoff a peer can
# be given (60 s) plus ten anti-entropy rounds.
BOUND_S = 60.0 + 10 * 2.0

Scenario = Callable[[int, Rules, bool], tuple[World, Expect]]
SCENARIOS: dict[str, Scenario] = {}
TEST_SCENARIOS: list[str] = []  # the ones ``make test`` runs (chaos is for ``make sim``)


def scenario(*, in_tests: bool = True) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[fn.__name__] = fn
        if in_tests:
            TEST_SCENARIOS.append(fn.__name__)
        return fn

    return register


_signals = iter(range(1, 10**12))  # distinct signal values (the same in every process)


class Workload:
    """Schedules members' records on a world, from the world's random stream."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rng = world.rng
        self.number = world.seed * 1_000_000

    def body(self) -> Body:
        self.number += 1
        return signal_body(self.number)

    def add(self, at: float, member: int) -> None:
        node = self.world.nodes[member]

        def author() -> None:
            if node.up:
                node.author(self.body())

        self.world.sched.at(at, author)

    def trickle(self, start: float, end: float, count: int, members: Sequence[int]) -> None:
        for _ in range(count):
            self.add(self.rng.uniform(start, end), self.rng.choice(list(members)))

    def burst(self, at: float, member: int, count: int) -> None:
        node = self.world.nodes[member]

        def author() -> None:
            if node.up:
                for _ in range(count):
                    node.author(self.body())

        self.world.sched.at(at, author)


def _size(rng: random.Random, low: int = 4, high: int = 8) -> int:
    return rng.randint(low, high)


def _world(seed: int, rules: Rules, size: int | None = None, **kw: object) -> World:
    rng = random.Random(f"size {seed}")
    return World(seed, size or _size(rng), rules=rules, **kw)  # type: ignore[arg-type]


@scenario()
def calm(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules)
    work = Workload(world)
    work.trickle(0.5, 10.0, 20, range(len(world.nodes)))
    world.last_fault_s = 10.0
    return world, Expect(converge_by_s=10.0 + BOUND_S)


@scenario()
def lossy(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules, link=LinkSpec(0.05, 0.2, loss=0.1, duplicate=0.05))
    Workload(world).trickle(0.5, 10.0, 20, range(len(world.nodes)))
    world.last_fault_s = 10.0
    return world, Expect(converge_by_s=10.0 + BOUND_S)


@scenario()
def partition(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules)
    n, rng = len(world.nodes), world.rng
    nodes = list(range(n))
    rng.shuffle(nodes)
    cut = rng.randint(1, n - 1)
    sides = (nodes[:cut], nodes[cut:])
    start, end = 1.0, 1.0 + rng.uniform(2.0, 20.0)
    world.sched.at(start, lambda: world.net.partition(*sides))
    world.sched.at(end, world.net.heal)
    work = Workload(world)
    work.trickle(0.5, end + 2.0, 30, nodes)
    world.last_fault_s = end + 2.0
    return world, Expect(converge_by_s=end + 2.0 + BOUND_S)


@scenario()
def down_burst(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules)
    n, rng = len(world.nodes), world.rng
    down = rng.randrange(n)
    others = [i for i in range(n) if i != down]
    crash_at = rng.uniform(0.5, 2.0)
    burst_at = crash_at + rng.uniform(0.0, 1.0)
    back_at = burst_at + rng.uniform(0.0, 15.0)
    world.sched.at(crash_at, world.nodes[down].crash)
    world.sched.at(back_at, world.nodes[down].restart)
    work = Workload(world)
    for member in rng.sample(others, min(2, len(others))):
        work.burst(burst_at, member, rng.randint(25, 75) if quick else rng.randint(50, 150))
    work.trickle(0.5, back_at + 2.0, 10, range(n))
    world.last_fault_s = back_at + 2.0
    return world, Expect(converge_by_s=back_at + 2.0 + BOUND_S)


@scenario()
def kill_pull(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    page = 10 if quick else 40
    rules = replace(rules, settings=replace(rules.settings, page_records=page))
    world = _world(seed, rules)
    n, rng = len(world.nodes), world.rng
    victim = rng.randrange(n)
    others = [i for i in range(n) if i != victim]
    node = world.nodes[victim]
    world.sched.at(0.2, node.crash)
    work = Workload(world)
    for member in rng.sample(others, min(2, len(others))):
        work.burst(0.5, member, rng.randint(3 * page, 5 * page))
    kills = rng.randint(2, 3)
    state = {"kills": kills, "steps": rng.randint(1, 8)}

    def step(name: str) -> None:
        if state["kills"] <= 0:
            return
        state["steps"] -= 1
        if state["steps"] <= 0:
            state["kills"] -= 1
            state["steps"] = rng.randint(1, 8)
            world.trace(f"n{victim}", f"killed at step {name}")
            node.crash()
            back = world.now + rng.uniform(0.1, 3.0)
            world.sched.at(back, node.restart)
            world.last_fault_s = max(world.last_fault_s, back)

    node.on_step = step
    world.sched.at(2.0, node.restart)
    work.trickle(0.5, 8.0, 10, others)
    world.last_fault_s = 8.0
    return world, Expect(converge_by_s=8.0 + BOUND_S)  # a late kill moves it (run_one)


def _equivocate(seed: int, rules: Rules, single: bool) -> tuple[World, Expect]:
    world = _world(seed, rules, size=None if not single else 6)
    n, rng = len(world.nodes), world.rng
    forker = rng.randrange(n)
    world.byzantine.add(forker)
    others = [i for i in range(n) if i != forker]
    rng.shuffle(others)
    twin_to = others[:1] if single else others[: len(others) // 2]
    to = [i for i in others if i not in twin_to]
    work = Workload(world)
    at = rng.uniform(1.0, 3.0)
    node = world.nodes[forker]
    world.sched.at(at, lambda: node.equivocate(work.body(), work.body(), to, twin_to, hide=single))
    if not single:
        work.add(at + rng.uniform(0.5, 3.0), forker)
        work.add(at + rng.uniform(3.0, 6.0), forker)
    work.trickle(0.5, 10.0, 15, others)
    world.last_fault_s = 10.0
    return world, Expect(converge_by_s=10.0 + BOUND_S, forkers={forker},
                         fork_bound_s=2.0 if single else None)  # fmt: skip


@scenario()
def equivocate(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    return _equivocate(seed, rules, single=False)


@scenario()
def equivocate_one(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    return _equivocate(seed, rules, single=True)


@scenario()
def withhold(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules)
    n, rng = len(world.nodes), world.rng
    member = rng.randrange(n)
    world.byzantine.add(member)
    others = [i for i in range(n) if i != member]
    world.nodes[member].withhold_from = set(rng.sample(others, max(1, len(others) // 2)))
    work = Workload(world)
    work.trickle(0.5, 10.0, 10, [member])
    work.trickle(0.5, 10.0, 10, others)
    world.last_fault_s = 10.0
    return world, Expect(converge_by_s=10.0 + BOUND_S)


@scenario()
def flood(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules)
    n, rng = len(world.nodes), world.rng
    member = rng.randrange(n)
    work = Workload(world)
    work.burst(1.0, member, rng.randint(100, 300) if quick else rng.randint(300, 1000))
    work.trickle(0.5, 10.0, 20, range(n))
    world.last_fault_s = 10.0
    return world, Expect(converge_by_s=10.0 + BOUND_S)


@scenario()
def removed_pushes(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules, size=_size(random.Random(f"size {seed}"), 5, 8))
    n, rng = len(world.nodes), world.rng
    removed, *voters = rng.sample(range(n), 3)
    world.byzantine.add(removed)
    rogue = world.nodes[removed]
    key = world.fed.keys[removed].public
    others = [i for i in range(n) if i != removed]
    work = Workload(world)
    work.add(0.5, removed)
    work.add(0.8, removed)
    for voter in voters:
        node = world.nodes[voter]

        def vote(node=node) -> None:  # type: ignore[no-untyped-def]
            head = node.store.heads().get(key)
            node.author(VoteBody("remove", key, after=0 if head is None else head.seq))

        world.sched.at(rng.uniform(1.5, 3.0), vote)
    for k in range(20):
        world.sched.at(3.0 + 0.5 * k, lambda: rogue.push_anyway(work.body()))
    work.trickle(3.5, 12.0, 20, others)
    world.last_fault_s = 13.0
    return world, Expect(converge_by_s=13.0 + BOUND_S, removed={removed})


@scenario()
def skew(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules)
    n, rng = len(world.nodes), world.rng
    fast, slow = rng.sample(range(n), 2)
    world.nodes[slow].skew_s = -250.0
    world.nodes[fast].skew_s = 400.0
    fixed = rng.uniform(5.0, 20.0)

    def fix() -> None:
        world.nodes[fast].skew_s = 0.0

    world.sched.at(fixed, fix)
    Workload(world).trickle(0.5, fixed + 2.0, 20, range(n))
    world.last_fault_s = fixed + 2.0
    return world, Expect(converge_by_s=fixed + 2.0 + BOUND_S)


@scenario()
def relay_cut(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules, size=10)
    n, rng = len(world.nodes), world.rng
    author = rng.randrange(n)
    others = [i for i in range(n) if i != author]
    far = set(rng.sample(others, len(others) // 2))
    world.nodes[author].forget_peers(far)  # where the author's peer list ends (SPEC 10.3)
    work = Workload(world)
    for k in range(20):
        work.add(1.0 + 0.5 * k, author)
    world.last_fault_s = 11.0
    expect = Expect(converge_by_s=11.0 + BOUND_S, propagation_bound_s=1.0, propagation_share=0.8)
    world.sched.at(11.0, lambda: expect.propagation_records.extend(world.oracle.authored))
    return world, expect


@scenario(in_tests=False)
def chaos(seed: int, rules: Rules, quick: bool = False) -> tuple[World, Expect]:
    world = _world(seed, rules, link=LinkSpec(0.05, 0.1, loss=0.05, duplicate=0.02))
    n, rng = len(world.nodes), world.rng
    nodes = list(range(n))
    forker = rng.randrange(n)
    world.byzantine.add(forker)
    others = [i for i in nodes if i != forker]
    work = Workload(world)
    rng.shuffle(others)
    half = others[: len(others) // 2]
    world.sched.at(2.0, lambda: world.nodes[forker].equivocate(
        work.body(), work.body(), [i for i in others if i not in half], half))  # fmt: skip
    split = rng.randint(1, n - 1)
    shuffled = nodes[:]
    rng.shuffle(shuffled)
    world.sched.at(3.0, lambda: world.net.partition(shuffled[:split], shuffled[split:]))
    heal = 3.0 + rng.uniform(1.0, 15.0)
    world.sched.at(heal, world.net.heal)
    victim = rng.choice(others)
    world.sched.at(rng.uniform(1.0, 10.0), world.nodes[victim].crash)
    back = rng.uniform(10.0, 20.0)
    world.sched.at(back, world.nodes[victim].restart)
    work.burst(rng.uniform(1.0, 8.0), rng.choice(others), rng.randint(20, 60 if quick else 200))
    work.trickle(0.5, 20.0, 30, others)
    end = max(heal, back, 20.0)
    world.last_fault_s = end
    return world, Expect(converge_by_s=end + BOUND_S, forkers={forker})
