"""The simulator's parts: a run is a function of its seed, the network does what it says,
bytes are counted as the real messages would be, a crash loses only what was not committed,
and the in-memory store decides exactly as the node's SQLite store does."""

from __future__ import annotations

import random
from pathlib import Path

from node.net.httpsig import sign_request
from node.store.store import Store
from protocol.gossip import GossipSettings, StartSync
from protocol.sync import join_ndjson
from sim.members import federation_of, node_url, signal_body
from sim.network import Answer, LinkSpec, Network, Request
from sim.run import run_one
from sim.scheduler import Scheduler, Trace
from sim.store import SimStore
from sim.wire import SIGNATURE_HEADER_BYTES
from sim.world import ADOPTED, Rules, World


def test_a_run_is_a_function_of_its_seed() -> None:
    first = run_one("chaos", 7, ADOPTED, trace=True, quick=True)
    again = run_one("chaos", 7, ADOPTED, trace=True, quick=True)
    other = run_one("chaos", 8, ADOPTED, trace=True, quick=True)
    assert first.trace == again.trace and first.events == again.events
    assert len(first.trace.splitlines()) > 100
    assert other.trace != first.trace


def test_signature_headers_are_sized_as_the_node_signs() -> None:
    key = federation_of(4).keys[0]
    for method, url, body in [("GET", "http://node12.sim:7400/v1/heads", b""),
                              ("POST", "http://node3.sim:7400/v1/records", b"x\n")]:  # fmt: skip
        headers = sign_request(key, method, url, body, now_s=1_763_800_000)
        assert sum(len(k) + len(v) + 4 for k, v in headers.items()) == SIGNATURE_HEADER_BYTES


class Echo:
    """An endpoint that answers every request 200 with its body, and counts them."""

    def __init__(self) -> None:
        self.up = True
        self.got: list[int] = []

    def receive(self, request: Request, reply: object) -> None:
        self.got.append(request.nonce)
        reply(Answer(200, request.body, 10))  # type: ignore[operator]


def _network(spec: LinkSpec) -> tuple[Scheduler, Network, Echo]:
    sched = Scheduler()
    net = Network(sched, random.Random(1), Trace(), default=spec, timeout_s=10.0)
    echo = Echo()
    net.attach(0, Echo())
    net.attach(1, echo)
    return sched, net, echo


def _ask(sched: Scheduler, net: Network, body: bytes = b"abc") -> list[tuple[float, str, int]]:
    outcomes: list[tuple[float, str, int]] = []

    def done(answer: Answer | None, failure: str) -> None:
        outcomes.append((sched.now, failure, 0 if answer is None else answer.status))

    net.request(Request(0, 1, "push", None, body, 100, 0, net.next_nonce(), "k"), done)
    sched.run(60.0)
    return outcomes


def test_network_latency_loss_partition_refusal_and_duplicates() -> None:
    sched, net, echo = _network(LinkSpec(latency_s=0.05, jitter_s=0.0))
    [(at, failure, status)] = _ask(sched, net)
    assert (failure, status) == ("", 200) and 0.1 <= at < 0.101
    assert net.traffic[0].sent_head == 100 and net.traffic[0].sent_body == 3
    assert net.traffic[0].received_body == 3 and net.traffic[1].received_body == 3

    sched, net, echo = _network(LinkSpec(loss=1.0))
    assert _ask(sched, net) == [(10.0, "timeout", 0)] and echo.got == []

    sched, net, echo = _network(LinkSpec())
    net.partition([0], [1])
    assert _ask(sched, net) == [(10.0, "timeout", 0)]
    net.heal()
    sched, net, echo = _network(LinkSpec(latency_s=0.05, jitter_s=0.0))
    echo.up = False
    [(at, failure, _)] = _ask(sched, net)
    assert failure == "refused" and at < 0.2

    sched, net, echo = _network(LinkSpec(duplicate=1.0))
    [(_, failure, status)] = _ask(sched, net)  # answered once, delivered twice
    assert (failure, status) == ("", 200) and len(echo.got) == 2 and len(set(echo.got)) == 1


def test_a_duplicated_push_is_refused_as_a_replay_and_merged_once() -> None:
    world = World(3, 4, link=LinkSpec(duplicate=1.0))
    record = world.nodes[0].author(signal_body(1))
    world.run(1.0)
    assert all(record.id in n.store.by_id for n in world.nodes)
    assert world.nodes[1].store.merge([record.canonical]).statuses == ["duplicate"]


def test_push_bytes_are_the_records_canonical_bytes_as_ndjson() -> None:
    settings = GossipSettings(interval_s=600.0)  # no anti-entropy round in this test
    world = World(5, 5, rules=Rules(settings=settings))
    world.run(1.0)
    before = world.net.traffic[0].sent_body
    record = world.nodes[0].author(signal_body(2))
    world.run(2.0)
    assert world.net.traffic[0].sent_body - before == 4 * len(join_ndjson([record.canonical]))


def test_a_crash_loses_only_what_was_not_committed() -> None:
    quiet = Rules(settings=GossipSettings(interval_s=600.0))  # no anti-entropy round
    world = World(11, 2, rules=quiet, link=LinkSpec(latency_s=0.05, jitter_s=0.0))
    author, victim = world.nodes
    first = author.author(signal_body(3))
    world.run(0.5)
    second = author.author(signal_body(4))  # pushed at 0.52, delivered 0.57, merged 0.5706
    world.sched.at(0.5703, victim.crash)
    world.run(0.6)
    assert second.id not in victim.store.by_id and first.id in victim.store.by_id
    victim.restart()
    assert first.id in victim.store.by_id and victim.store.heads()[author.key.public].seq == 2
    world.run(10.4)
    assert author.engine.peers[node_url(1)].failures == 0  # no answer yet: not a refusal
    world.run(10.6)  # the push times out
    assert author.engine.peers[node_url(1)].last_error == "unreachable: timeout"
    victim._tell(StartSync(node_url(0)))  # the operator's sync: pulls what it lacks
    world.run(11.0)
    assert second.id in victim.store.by_id


def test_the_memory_store_decides_as_the_node_store(tmp_path: Path) -> None:
    """Every record of two faulty runs (a fork, a removal and records past it), merged in
    shuffled batches into a SimStore and into the node's SQLite Store: the same outcome for
    every line, the same heads, forks and logs."""
    records = {}
    for scenario in ("equivocate", "removed_pushes"):
        world = run_one(scenario, 3, ADOPTED, keep=True, quick=True).world
        assert world is not None
        for node in world.nodes:
            records.update({r.id: r.canonical for r in node.store.records()})
        fed = world.fed
        lines = sorted(records.values())
        random.Random(scenario).shuffle(lines)
        sim = SimStore(fed.federation)
        with Store.open(tmp_path / f"{scenario}.db", fed.federation, create=True) as real:
            start = 0
            rng = random.Random(1)
            while start < len(lines):
                batch = lines[start : start + rng.randint(1, 40)]
                start += len(batch)
                ours = sim.merge(batch).statuses
                theirs = [str(o.status) for o in real.merge(batch, received_ms=1).outcomes]
                assert ours == theirs
            assert {h.author: h for h in real.heads()} == sim.heads()
            assert {f.author: f.seq for f in real.forks()} == {
                a: f.seq for a, f in sim.forks.items()
            }
            for author in sim.heads():
                assert real.log(author, 0, 10_000) == sim.log(author, 0, 10_000)
        records.clear()


def test_a_cloned_store_decides_as_a_fresh_one() -> None:
    world = run_one("removed_pushes", 2, ADOPTED, keep=True, quick=True).world
    assert world is not None
    lines = sorted({r.canonical for n in world.nodes for r in n.store.records()})
    random.Random(2).shuffle(lines)
    fed = world.fed
    fresh, clone = SimStore(fed.federation, fed.announces), world.template.clone()
    for start in range(0, len(lines), 7):
        batch = lines[start : start + 7]
        assert fresh.merge(batch).statuses == clone.merge(batch).statuses
    assert fresh.heads() == clone.heads() and fresh.membership == clone.membership
    assert world.template.heads() != clone.heads()  # the template is untouched
