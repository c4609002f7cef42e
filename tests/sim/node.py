"""A simulated node: the real gossip engine and acceptance machine, driven by simulated time.

``SimNode`` is to ``protocol.gossip.GossipEngine`` what ``node.net.gossip`` is in a real node:
it tells the engine the time and what happened, and carries out the actions it answers --
over ``sim.network`` instead of aiohttp, into a ``sim.store.SimStore`` instead of SQLite. It
also answers its peers' requests as ``node.net.peer_api`` does: the RFC 9421 checks that
matter here (``created`` within 300 s of its own clock, no replayed nonce, a key its
membership counts: 401/401/403), ``GET /v1/heads`` with ``If-None-Match`` (304), ``GET
/v1/log``, ``POST /v1/records`` (merged by the one writer; answered when committed).

What a merge does next follows ``node.net.context.Node.merged``: a changed membership first
(removed or forked members' nodes barred at once, SPEC 10.6), then forks, then onward gossip.

The writer: merges run one after another, each taking ``MERGE_BASE_S`` plus
``MERGE_PER_RECORD_S`` per line of simulated time and committing at its end. A crash loses
the engine, every request in flight and every merge not committed; the store keeps what was
committed (``SimStore.reopen``).

Misbehaviour, for the fault scenarios: ``withhold_from`` (this member's own records are not
pushed or served to those nodes), ``equivocate`` (a second record at the next seq, sent to
some nodes only), ``push_anyway`` (a removed member signs and pushes records its own rules
forbid).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from node.net.peerset import lost_protocol
from protocol import Body, Head, Record, sign_record
from protocol.frontier_delta import FrontierAnswer, plan_view
from protocol.gossip import (
    Action,
    Event,
    FetchFrontier,
    FetchPage,
    ForksFound,
    FrontierAnswered,
    GossipEngine,
    Outcome,
    PageReceived,
    PagesMerged,
    PeerBackedOff,
    PeerDropped,
    PeersBarred,
    PeersLearned,
    Push,
    PushAnswered,
    PushLog,
    RecordsMerged,
    RequestFailed,
    SetTimer,
    SyncFinished,
)
from protocol.sync import Frontier, LogRequest, check_log_page, claimed_last_seq, join_ndjson
from sim.members import TS0_MS, node_url
from sim.network import Answer, Request
from sim.scheduler import Event as TimerEvent
from sim.store import MergeReport
from sim.wire import IF_NONE_MATCH_BYTES, answer_header_bytes, request_header_bytes

if TYPE_CHECKING:
    from sim.world import World

MERGE_BASE_S = 0.0005
MERGE_PER_RECORD_S = 0.0001  # an Ed25519 verify and a share of the write, on one core
SIGNATURE_WINDOW_S = 300
HM_RECENT_BYTES = len("Hm-Recent: \r\n")
HOST_OF = {}  # url -> host[:port], cached


def _host(url: str) -> str:
    host = HOST_OF.get(url)
    if host is None:
        host = HOST_OF[url] = url.split("//", 1)[1].rstrip("/")
    return host


class SimNode:
    """One member's node (module docstring)."""

    def __init__(self, world: World, index: int, rng: random.Random) -> None:
        self.world = world
        self.index = index
        self.rng = rng
        self.key = world.fed.keys[index]
        self.url = node_url(index)
        self.store = world.template.clone(frontier_forks=world.rules.gossip_forks,
                                          cap_frontier=world.rules.cap_frontier)  # fmt: skip
        self.store.keep_recent(world.rules.frontier_deltas)
        self.url_of = {node_url(i): i for i in range(world.fed.size)}
        self.up = True
        self.epoch = 0
        self.skew_s = 0.0
        self.engine = self._new_engine()
        self._timer: TimerEvent | None = None
        self._writer_free = 0.0
        self._replays: dict[tuple[str, int], float] = {}
        self._local_at_request: dict[int, dict[str, Any]] = {}
        self.withhold_from: set[int] = set()
        self.lies: dict[int, dict[int, Record]] = {}  # node -> seq -> record shown instead
        self.barred: dict[str, str] = {}
        self.unknown: set[int] = set()  # nodes this one does not know (forget_peers)
        self._rogue: tuple[int, str | None] | None = None  # push_anyway's own (seq, id) head
        self.on_step: Callable[[str], None] | None = None  # a fault scenario's hook (kill_pull)

    # -- clocks --------------------------------------------------------------------------

    def mono_ms(self) -> int:
        """The engine's clock: monotonic (a wall clock step does not move it)."""
        return round(self.world.sched.now * 1000)

    def wall_s(self) -> float:
        return TS0_MS / 1000 + self.world.sched.now + self.skew_s

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        """fn, if this node has not crashed since the callback was made."""
        epoch = self.epoch

        def run() -> None:
            if self.up and self.epoch == epoch:
                fn()

        return run

    def trace(self, what: str) -> None:
        self.world.trace(f"n{self.index}", what)

    # -- life ----------------------------------------------------------------------------

    def _new_engine(self) -> GossipEngine:
        return GossipEngine(self.key.public, self.rng, self.world.rules.settings, own_url=self.url)

    def start(self) -> None:
        fed = self.world.fed
        peers = {node_url(i): fed.keys[i].public for i in range(fed.size)
                 if i != self.index and i not in self.unknown}  # fmt: skip
        self._run(self.engine.tick(self.mono_ms()))
        self._tell(PeersLearned(peers))
        self._apply_membership(announce=False)

    def forget_peers(self, nodes: set[int]) -> None:
        """Stop knowing these nodes as peers (a peer list that ends somewhere)."""
        self.unknown = nodes
        self._tell(PeersBarred({node_url(i): "not known here" for i in nodes} | self.barred))

    def crash(self) -> None:
        """Lose everything not committed: the engine, requests in flight, queued merges."""
        if not self.up:
            return
        self.trace("crash")
        self.up = False
        self.epoch += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._local_at_request.clear()
        self._replays.clear()

    def restart(self) -> None:
        if self.up:
            return
        self.trace("restart")
        self.up = True
        self.epoch += 1
        self._writer_free = self.world.sched.now
        self.store.reopen()
        self.engine = self._new_engine()
        self.start()

    # -- the engine ----------------------------------------------------------------------

    def _tell(self, event: Event) -> None:
        self._run(self.engine.handle(self.mono_ms(), event))

    def _tick(self) -> None:
        self._timer = None
        self._run(self.engine.tick(self.mono_ms()))

    def _run(self, actions: Sequence[Action]) -> None:
        for action in actions:
            _ACTIONS[type(action)](self, action)

    def _set_timer(self, action: SetTimer) -> None:
        if self._timer is not None:
            self._timer.cancel()
        at = max(self.world.sched.now, action.at_ms / 1000)
        self._timer = self.world.sched.at(at, self._guard(self._tick))

    def _note(self, action: Any) -> None:
        if isinstance(action, SyncFinished):
            self.trace(f"sync {action.exchange} with n{self.url_of.get(action.url)}: "
                       f"{action.outcome.value} {action.error or ''}")  # fmt: skip
        elif isinstance(action, PeerBackedOff):
            self.trace(f"back off n{self.url_of.get(action.url)} {action.delay_ms} ms")
        elif isinstance(action, PeerDropped):
            self.trace(f"drop n{self.url_of.get(action.url)}: {action.reason}")

    # -- requests out --------------------------------------------------------------------

    def _send(self, url: str, kind: str, op: Any, target: str, body: bytes, extra: int,
              done: Callable[[Answer | None, str], None]) -> None:  # fmt: skip
        dst = self.url_of[url]
        self._check_send(dst, kind)
        world = self.world
        request = Request(
            src=self.index, dst=dst, kind=kind, op=op, body=body,
            head_bytes=request_header_bytes("GET" if kind != "push" else "POST", target,
                                            _host(url), len(body), extra),
            created_s=int(self.wall_s()), nonce=world.net.next_nonce(), key=self.key.public,
        )  # fmt: skip
        epoch = self.epoch

        def finished(answer: Answer | None, failure: str) -> None:
            if self.up and self.epoch == epoch:
                done(answer, failure)

        world.net.request(request, finished)

    def _check_send(self, dst: int, kind: str) -> None:
        """SPEC 10.6: nothing goes to a member's node once its removal took effect here."""
        identity = self.world.fed.keys[dst].public
        member = self.store.membership.members.get(identity)
        if member is not None and member.removed:
            self.world.oracle.violations.append(
                f"t={self.world.now:.3f} n{self.index} sent {kind} to n{dst}, removed here"
            )

    def _step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)

    def _fetch_frontier(self, action: FetchFrontier) -> None:
        local = self.store.frontier().heads  # what this node reports is what it plans with
        digest = self.store.digest()
        history = self.store.history
        recent = None if history is None else tuple(history.recent())
        extra = IF_NONE_MATCH_BYTES + (0 if recent is None else HM_RECENT_BYTES + 17 * len(recent))

        def done(answer: Answer | None, failure: str) -> None:
            if answer is None or answer.status not in (200, 304):
                self._failed(action.url, action.exchange, answer, failure, "/v1/heads")
                return
            self._step("frontier")
            if not self.up:
                return
            frontier: Frontier | None = None
            heads = local
            if answer.status == 200:
                frontier, heads = self._read_frontier(answer.data, local, digest)
                self._merge_fork_evidence(frontier, action.url)
            self._tell(FrontierAnswered(action.exchange, action.url, frontier, heads))

        self._send(action.url, "heads", ("heads", digest, recent), "/v1/heads", b"", extra, done)

    def _read_frontier(
        self, data: FrontierAnswer, local: Mapping[str, Head], sent: str
    ) -> tuple[Frontier, Mapping[str, Head]]:
        """The peer's frontier and this node's heads to plan with: all of them, or only the
        authors a delta names (``protocol.frontier_delta.plan_view``: outside them both sides
        agree)."""
        history = self.store.history
        if isinstance(data, Frontier) or history is None:
            return (data if isinstance(data, Frontier) else Frontier({})), local
        view = plan_view(data, local, history, sent)
        if view is None:  # "at" a frontier forgotten meanwhile: nothing to plan this time
            return Frontier({}), {}
        return view

    def _merge_fork_evidence(self, frontier: Frontier, url: str) -> None:
        lines = [str(t).encode() for f in frontier.forks for t in f.get("records", [])]  # type: ignore[union-attr]
        if lines:
            report = self.store.merge(lines)
            self._merged(report, url, relay=True)

    def _fetch_page(self, action: FetchPage) -> None:
        request = action.request
        target = f"/v1/log/{request.author}?after={request.after}&limit={request.limit}"

        def done(answer: Answer | None, failure: str) -> None:
            if answer is None or answer.status != 200:
                self._failed(action.url, action.exchange, answer, failure, "/v1/log")
                return
            self._step("page received")
            if not self.up:
                return
            lines: list[bytes] = answer.data
            check_log_page(lines, request)
            self._tell(PageReceived(action.exchange, action.url, request, len(lines),
                                    claimed_last_seq(lines)))  # fmt: skip
            self._write(lines, lambda report: self._page_merged(action, report))

        self._send(action.url, "log", ("log", request), target, b"", 0, done)

    def _page_merged(self, action: FetchPage, report: MergeReport) -> None:
        counts = report.counts()
        bad = sum(1 for e in report.errors if e is not None and _misbehaviour(e))
        self._merged(report, action.url, relay=False)
        self._tell(PagesMerged(action.exchange, action.url, 1, len(report.statuses),
                               counts["accepted"], bad))  # fmt: skip
        self._step("page merged")

    def _push_log(self, action: PushLog) -> None:
        lines = self.store.log(action.author, action.after, action.limit)
        lines = self._withheld(self.url_of[action.url], lines)
        if not lines:
            self._tell(PushAnswered(action.url, action.exchange, 0))
            return
        self._post(action.url, action.exchange, lines, action.relay)

    def _push(self, action: Push) -> None:
        lines = self._withheld(self.url_of[action.url], [r.canonical for r in action.records])
        if not lines:
            self._tell(PushAnswered(action.url, None, 0))
            return
        self._post(action.url, None, lines, action.relay)

    def _post(self, url: str, exchange: int | None, lines: list[bytes], relay: bool, *,
              tell: bool = True) -> None:  # fmt: skip
        target = "/v1/records" if relay else "/v1/records?relay=0"

        def done(answer: Answer | None, failure: str) -> None:
            if not tell:
                return  # a push the engine did not ask for (equivocate, push_anyway)
            if answer is None or answer.status not in (200, 422):
                self._failed(url, exchange, answer, failure, "a push")
                return
            pending = int(answer.data.get("pending", 0)) if answer.data else 0
            self._tell(PushAnswered(url, exchange, len(lines), pending))

        self._send(url, "push", ("push", lines, relay), target, join_ndjson(lines), 0, done)

    def _failed(self, url: str, exchange: int | None, answer: Answer | None, failure: str,
                what: str) -> None:  # fmt: skip
        if answer is None:
            outcome, detail = Outcome.UNREACHABLE, f"unreachable: {failure}"
        elif answer.status == 403:
            outcome, detail = Outcome.NOT_COUNTED, f"{url} does not count this node's key"
        else:
            outcome, detail = Outcome.MISBEHAVED, f"{url} answered {answer.status} to {what}"
        self._tell(RequestFailed(url, exchange, outcome, detail))

    def _withheld(self, dst: int, lines: list[bytes]) -> list[bytes]:
        if dst not in self.withhold_from:
            return lines
        mine = self.key.public
        return [line for line in lines if orjson.loads(line)["author"] != mine]

    # -- requests in ---------------------------------------------------------------------

    def receive(self, request: Request, reply: Callable[[Answer], None]) -> None:
        refusal = self._authenticate(request)
        if refusal is not None:
            reply(_problem(refusal))
            return
        kind = request.op[0]
        if kind == "heads":
            reply(self._answer_heads(request))
        elif kind == "log":
            reply(self._answer_log(request))
        else:
            self._receive_push(request, reply)

    def _authenticate(self, request: Request) -> int | None:
        """SPEC 10.1 checks 4-6 (the signature itself is the sender's real key: not forged)."""
        if abs(request.created_s - self.wall_s()) > SIGNATURE_WINDOW_S:
            return 401
        now = self.world.sched.now
        seen = (request.key, request.nonce)
        if seen in self._replays:
            return 401
        self._replays[seen] = now + 2 * SIGNATURE_WINDOW_S
        if len(self._replays) > 4096:
            self._replays = {k: t for k, t in self._replays.items() if t > now}
        if not self.store.membership.is_peer_key(request.key):
            return 403
        return None

    def _answer_heads(self, request: Request) -> Answer:
        frontier, body_len = self._frontier_for(request.src)
        own = frontier is self.store.frontier()
        digest = self.store.digest() if own else frontier.digest()
        _, asked, recent = request.op
        if asked == digest:
            return Answer(304, b"", answer_header_bytes(304, 0, "", etag=True))
        history = self.store.history
        if own and history is not None and recent is not None:  # the asker opted in
            delta = history.answer(frontier, asked, recent)
            if not isinstance(delta, Frontier):
                data = orjson.dumps(delta.to_json())
                head = answer_header_bytes(
                    200, len(data), "application/json; charset=utf-8", etag=True
                )
                return Answer(200, b"x" * len(data), head, delta)
        body = b"x" * body_len  # the bytes' count is what the network needs
        heads = answer_header_bytes(200, body_len, "application/json; charset=utf-8", etag=True)
        return Answer(200, body, heads, frontier)

    def _frontier_for(self, requester: int) -> tuple[Frontier, int]:
        frontier = self.store.frontier()
        lie = self.lies.get(requester)
        if requester in self.withhold_from or lie:
            heads = dict(frontier.heads)
            if requester in self.withhold_from:
                heads.pop(self.key.public, None)
            for record in (lie or {}).values():
                head = heads.get(record.author)
                if head is not None and head.seq == record.seq:
                    heads[record.author] = type(head)(record.author, record.seq, record.id)
            frontier = Frontier(heads, frontier.forks)
        return frontier, frontier_body_len(frontier)

    def _answer_log(self, request: Request) -> Answer:
        log_request: LogRequest = request.op[1]
        if log_request.author == self.key.public and request.src in self.withhold_from:
            lines: list[bytes] = []
        else:
            lines = self.store.log(log_request.author, log_request.after, log_request.limit)
        lie = self.lies.get(request.src)
        if lie and log_request.author == self.key.public:
            lines = [lie[s].canonical if (s := orjson.loads(x)["seq"]) in lie else x for x in lines]
        body = join_ndjson(lines)
        head = answer_header_bytes(200, len(body), "application/x-ndjson", etag=False)
        return Answer(200, body, head, lines)

    def _receive_push(self, request: Request, reply: Callable[[Answer], None]) -> None:
        _, lines, relay = request.op

        def committed(report: MergeReport) -> None:
            self._merged(report, request.key, relay=relay)
            body = report.answer()
            status = 422 if report.misbehaved else 200
            head = answer_header_bytes(status, len(body), "application/json", etag=False)
            reply(Answer(status, body, head, report.counts()))

        self._write(lines, committed)

    # -- the writer ----------------------------------------------------------------------

    def _write(self, lines: list[bytes], then: Callable[[MergeReport], None]) -> None:
        """Merge lines when the writer is free; commit and call then, unless crashed first."""
        now = self.world.sched.now
        start = max(now, self._writer_free)
        self._writer_free = start + MERGE_BASE_S + MERGE_PER_RECORD_S * len(lines)

        def commit() -> None:
            then(self.store.merge(lines))

        self.world.sched.at(self._writer_free, self._guard(commit))

    def _merged(self, report: MergeReport, source: str | None, *, relay: bool) -> None:
        """A committed merge's consequences, in ``Node.merged``'s order."""
        world = self.world
        if report.accepted:
            world.oracle.stored(self.index, [r.id for r in report.accepted], world.now)
            self.trace(f"merged {len(report.accepted)} from {_who(source, self)}")
        if report.membership is not None:
            self._apply_membership()
        if report.forks:
            for fork in report.forks:
                world.oracle.forks_known.setdefault(fork.author, {}).setdefault(
                    self.index, world.now)  # fmt: skip
            if world.rules.gossip_forks:
                self._tell(ForksFound(tuple(report.forks)))
        if report.accepted:
            relay = relay and (source is None or world.rules.relay)
            direct = () if world.rules.relay_from_author else tuple(
                r for r in report.accepted if r.author == source)  # fmt: skip
            if direct:  # the candidate rule: what came straight from its author stops here
                self._tell(RecordsMerged(direct, source, relay=False))
            rest = tuple(r for r in report.accepted if r not in direct) if direct else tuple(
                report.accepted)  # fmt: skip
            if rest:
                self._tell(RecordsMerged(rest, source, relay))

    def _apply_membership(self, *, announce: bool = True) -> None:
        membership = self.store.membership
        world = self.world
        for identity, member in membership.members.items():
            if member.removed:
                world.oracle.removal_seen.setdefault(identity, {}).setdefault(
                    self.index, world.now)  # fmt: skip
        lost = lost_protocol(membership)
        barred = {
            node_url(world.fed.index[identity]): reason
            for identity, reason in lost.items()
            if identity in world.fed.index and world.fed.index[identity] != self.index
        }
        if barred != self.barred:
            self.barred = barred
            if world.rules.honour_removal:
                unknown = {node_url(i): "not known here" for i in self.unknown}
                self._tell(PeersBarred(unknown | barred))

    # -- this member's own records -------------------------------------------------------

    def author(self, body: Body) -> Record:
        """Sign body as this member's next record, store it, and gossip it."""
        report = self.store.author(self.key, body, int(self.wall_s() * 1000))
        record = report.accepted[0]
        self.world.oracle.authored[record.id] = (self.index, self.world.now)
        self.trace(f"authored {record.kind} seq {record.seq}")
        self._merged(report, None, relay=True)
        return record

    def equivocate(self, body: Body, twin: Body, to: Sequence[int], twin_to: Sequence[int], *,
                   hide: bool = False) -> None:  # fmt: skip
        """Sign two records at the next seq: the first to ``to``, the second to ``twin_to``
        (with ``hide``, as ``?relay=0``, so that those nodes do not push it on). This node
        keeps the first (its engine is not told: it pushes neither)."""
        head = self.store.heads().get(self.key.public)
        seq, prev = (1, None) if head is None else (head.seq + 1, head.id)
        fed, ts = self.world.fed.federation.id, int(self.wall_s() * 1000)
        first = self.store.author(self.key, body, ts).accepted[0]
        second = sign_record(self.key, fed=fed, seq=seq, prev=prev, ts=ts + 1, body=twin)
        self.trace(f"equivocated at seq {seq}")
        for dst in twin_to:
            self.lies.setdefault(dst, {})[seq] = second
        for dsts, record, relay in ((to, first, True), (twin_to, second, not hide)):
            for dst in dsts:
                self._post(node_url(dst), None, [record.canonical], relay, tell=False)

    def push_anyway(self, body: Body) -> Record:
        """Sign this member's next record whatever the rules say (a removed member's node
        that keeps going) and push it straight to every other node."""
        if self._rogue is None:
            head = self.store.heads().get(self.key.public)
            self._rogue = (0, None) if head is None else (head.seq, head.id)
        seq, prev = self._rogue
        record = sign_record(self.key, fed=self.world.fed.federation.id, seq=seq + 1, prev=prev,
                             ts=int(self.wall_s() * 1000), body=body)  # fmt: skip
        self._rogue = (record.seq, record.id)
        self.trace(f"pushes seq {record.seq} anyway")
        for i in range(self.world.fed.size):
            if i != self.index:
                self._post(node_url(i), None, [record.canonical], True, tell=False)
        return record


def _misbehaviour(error: dict[str, object]) -> bool:
    from protocol.sync import is_misbehaviour

    return is_misbehaviour(error)


def _who(source: str | None, node: SimNode) -> str:
    if source is None:
        return "self"
    if source in node.url_of:
        return f"n{node.url_of[source]}"
    index = node.world.fed.index.get(source)
    return f"n{index}" if index is not None else source[:8]


def _problem(status: int) -> Answer:
    body = orjson.dumps({"type": "about:blank", "title": "refused", "status": status})
    return Answer(status, body, answer_header_bytes(status, len(body), "application/problem+json",
                                                    etag=False))  # fmt: skip


def frontier_body_len(frontier: Frontier) -> int:
    """Bytes of the ``GET /v1/heads`` answer body for this frontier (cached per object)."""
    cached = _FRONTIER_LEN.get(id(frontier))
    if cached is not None and cached[0] is frontier:
        return cached[1]
    size = len(orjson.dumps(frontier.to_json() | {"digest": "0" * 64}))
    if len(_FRONTIER_LEN) > 100_000:
        _FRONTIER_LEN.clear()
    _FRONTIER_LEN[id(frontier)] = (frontier, size)
    return size


_FRONTIER_LEN: dict[int, tuple[Frontier, int]] = {}

_ACTIONS: dict[type[Any], Callable[[SimNode, Any], None]] = {
    SetTimer: SimNode._set_timer,
    FetchFrontier: SimNode._fetch_frontier,
    FetchPage: SimNode._fetch_page,
    PushLog: SimNode._push_log,
    Push: SimNode._push,
    SyncFinished: SimNode._note,
    PeerBackedOff: SimNode._note,
    PeerDropped: SimNode._note,
}
