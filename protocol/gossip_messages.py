"""The gossip engine's vocabulary (``protocol.gossip``): its settings, the events a driver
tells it, the actions it answers, and the views of its state. All frozen values, so a
simulator can log, compare and replay them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from protocol.chain import ForkEvidence, Head
from protocol.records import Record
from protocol.sync import DEFAULT_PAGE_RECORDS, Frontier, LogRequest

T = TypeVar("T")
PeerSource = Literal["config", "added", "announce"]
Purpose = Literal["round", "repair", "sync"]


class Rng(Protocol):
    """The engine's only source of randomness (``random.Random`` is one)."""

    def uniform(self, a: float, b: float) -> float: ...
    def choice(self, seq: Sequence[T]) -> T: ...
    def sample(self, population: Sequence[T], k: int) -> list[T]: ...


@dataclass(frozen=True, slots=True)
class GossipSettings:
    interval_s: float = 2.0  # anti-entropy round, jittered +-25%
    fanout: int = 3  # relay width of records pushed by a relay
    page_records: int = DEFAULT_PAGE_RECORDS  # limit of one log page request
    backoff_max_s: float = 60.0
    push_linger_ms: int = 20  # let a burst gather into one push
    push_batch_records: int = 500  # records per push request and per pushed log
    pull_ahead_pages: int = 10  # pages received and not yet merged, at most
    relay_asks: int = 3  # peers an own record's push asks to relay it (the rest: relay=0)

    def __post_init__(self) -> None:
        if not self.interval_s > 0 or not self.backoff_max_s > 0:
            raise ValueError("interval_s and backoff_max_s must be positive")
        if min(self.fanout, self.push_linger_ms, self.relay_asks) < 0:
            raise ValueError("fanout, push_linger_ms and relay_asks must be 0 or more")
        if min(self.page_records, self.push_batch_records, self.pull_ahead_pages) < 1:
            raise ValueError("page_records, push_batch_records, pull_ahead_pages must be >= 1")


class Outcome(enum.StrEnum):
    """How an exchange ended; the failures are also what a failed request reports."""

    SYNCED = "synced"
    UNCHANGED = "unchanged"  # the frontiers were equal (304)
    UNREACHABLE = "unreachable"  # no answer, refused connection, timeout
    MISBEHAVED = "misbehaved"  # malformed answer, records that do not verify, odd status
    NOT_COUNTED = "not_counted"  # 403: the peer does not count this node's key (yet)
    REFUSED = "refused"  # the transport refused the peer (TLS pin, plain HTTP)
    BARRED = "barred"  # the peer's member lost the peer protocol (SPEC 10.6)


FAILURES = frozenset(Outcome) - {Outcome.SYNCED, Outcome.UNCHANGED}


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What the engine knows of one peer (for /v1/peers and metrics)."""

    url: str
    source: PeerSource
    key: str | None = None  # the member key of its node, once an announce names it
    failures: int = 0
    backoff_until_ms: int = 0
    last_error: str | None = None
    last_contact_ms: int | None = None
    last_attempt_ms: int | None = None
    behind: int = 0  # records the peer had that this node lacked, at last contact
    ahead: int = 0  # records this node had that the peer lacked, at last contact


@dataclass(frozen=True, slots=True)
class SyncReport:
    peer: str
    pulled: int = 0
    accepted: int = 0
    pushed: int = 0
    unchanged: bool = False

    def to_json(self) -> dict[str, str | int | bool]:
        return {"peer": self.peer, "pulled": self.pulled, "accepted": self.accepted,
                "pushed": self.pushed, "unchanged": self.unchanged}  # fmt: skip


# ---- events: what the driver tells the engine ----------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerAdded:
    """A peer from the configuration or the operator (ignored if barred or this node's URL)."""

    url: str
    source: PeerSource = "added"


@dataclass(frozen=True, slots=True)
class PeerRemoved:
    """The operator removed a peer it added (only ``added`` peers go; running exchanges end)."""

    url: str


@dataclass(frozen=True, slots=True)
class PeersLearned:
    """Peer URLs from members' announces, each with its member's current key (or None)."""

    peers: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class PeersBarred:
    """Every URL not to contact now, with why (replaces the previous set; SPEC 10.6)."""

    barred: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RecordsMerged:
    """Records that a merge stored for the first time. ``source``: the URL they were pulled
    from, the key that signed the push, or None when authored here. ``relay=False`` for pulled
    records and ``?relay=0`` pushes: they are not pushed on."""

    records: tuple[Record, ...]
    source: str | None
    relay: bool = True


@dataclass(frozen=True, slots=True)
class ForksFound:
    """Forks a merge found, however their records came: pushed to every peer."""

    forks: tuple[ForkEvidence, ...]


@dataclass(frozen=True, slots=True)
class StartSync:
    """Reconcile with this peer now (the operator's sync); answered by a ``FetchFrontier``."""

    url: str
    relay: bool = False


@dataclass(frozen=True, slots=True)
class FrontierAnswered:
    """The peer's frontier (None: 304, equal to this node's) and this node's heads, read just
    before the request. The driver has merged the frontier's fork evidence (10.3 step 2)."""

    exchange: int
    url: str
    frontier: Frontier | None
    local: Mapping[str, Head]


@dataclass(frozen=True, slots=True)
class PageReceived:
    """A log page arrived, passed ``check_log_page`` and waits for the writer: ``received``
    lines, the last claiming ``last_seq`` (``protocol.sync.claimed_last_seq``)."""

    exchange: int
    url: str
    request: LogRequest
    received: int
    last_seq: int | None


@dataclass(frozen=True, slots=True)
class PagesMerged:
    """The writer merged ``pages`` received pages of an exchange: ``records`` lines, of which
    ``accepted`` were new and ``misbehaving`` failed by the sender's fault
    (``protocol.sync.is_misbehaviour``)."""

    exchange: int
    url: str
    pages: int
    records: int
    accepted: int
    misbehaving: int = 0


@dataclass(frozen=True, slots=True)
class PushAnswered:
    """A push (``exchange`` None) or an exchange's ``PushLog`` was answered 200 or 422:
    ``sent`` records, of which the peer holds ``pending`` waiting for earlier ones."""

    url: str
    exchange: int | None
    sent: int
    pending: int = 0


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request of an exchange (or a push, ``exchange`` None) failed; ``detail`` is the text
    kept as the peer's ``last_error``."""

    url: str
    exchange: int | None
    failure: Outcome
    detail: str

    def __post_init__(self) -> None:
        if self.failure not in FAILURES:
            raise ValueError(f"{self.failure} is not a failure")


Event = (
    PeerAdded | PeerRemoved | PeersLearned | PeersBarred | RecordsMerged | ForksFound
    | StartSync | FrontierAnswered | PageReceived | PagesMerged | PushAnswered | RequestFailed
)  # fmt: skip


# ---- actions: what the engine asks the driver to do -----------------------------------------


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call ``tick`` at ``at_ms`` (or soon after); replaces the previous timer."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class FetchFrontier:
    """``GET /v1/heads`` with ``If-None-Match`` = this node's frontier digest; merge the
    answer's fork evidence, then report ``FrontierAnswered`` (or ``RequestFailed``)."""

    exchange: int
    url: str


@dataclass(frozen=True, slots=True)
class FetchPage:
    """``GET /v1/log/{author}?after&limit``; report ``PageReceived``, hand the page to the
    writer, and report ``PagesMerged`` when it is merged (with ``relay=False``)."""

    exchange: int
    url: str
    request: LogRequest


@dataclass(frozen=True, slots=True)
class PushLog:
    """Post the stored records of author with seq > after, at most limit, with ``relay``;
    report ``PushAnswered`` (``sent`` 0 without a request when there are none)."""

    exchange: int
    url: str
    author: str
    after: int
    limit: int
    relay: bool


@dataclass(frozen=True, slots=True)
class Push:
    """Post these records (in this order) to the peer with ``?relay=1`` (``relay``) or
    ``?relay=0``; report ``PushAnswered``."""

    url: str
    records: tuple[Record, ...]
    relay: bool = True


@dataclass(frozen=True, slots=True)
class SyncFinished:
    """An exchange ended (a ``StartSync`` caller waits for it). Later events about it are
    ignored. Pages received and not merged yet may still be written (they verify on their
    own; the node writes them after a failed page request, as before it), or dropped."""

    exchange: int
    url: str
    outcome: Outcome
    report: SyncReport
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PeerBackedOff:
    """The peer is not contacted by rounds or pushes for delay_ms (for the log)."""

    url: str
    delay_ms: int
    error: str


@dataclass(frozen=True, slots=True)
class PeerDropped:
    """A barred peer left the peer set: send it nothing more, also nothing already planned."""

    url: str
    reason: str


Action = (
    SetTimer | FetchFrontier | FetchPage | PushLog | Push | SyncFinished | PeerBackedOff
    | PeerDropped
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExchangeStatus:
    exchange: int
    url: str
    purpose: Purpose  # round (anti-entropy), repair (a push found the peer behind), sync
    relay: bool
    phase: Literal["frontier", "pull", "push"]
