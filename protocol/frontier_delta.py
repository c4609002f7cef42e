"""Frontier deltas: a ``/v1/heads`` answer that lists only what changed (SPEC 10.2).

While a record spreads, two nodes' frontiers differ in an author or two, yet each exchange
would carry the whole frontier (about 150 bytes an author: 150 KB at 1,000 members). A node
therefore remembers its last ``RECENT_FRONTIERS`` frontiers (``FrontierHistory``): each one's
digest and, for every author whose head changed after it, the head it had then. An asker
that opts in (the ``Hm-Recent`` header, naming its own recent digests) is answered

- a ``FrontierDelta`` when its digest (``If-None-Match``) is one of the answerer's recent
  frontiers: the answerer's heads of only the authors changed since (``authors``; one that
  has no head now is named without one), and all its fork evidence. Outside those authors
  the two frontiers are equal, because the asker's equals that past one of the answerer's;
- ``FrontierAt`` when the answerer's digest is one of the asker's recent ones: the asker
  knows that frontier from its own history (``changes_since`` gives its heads then);
- the full frontier otherwise.

``plan_view`` turns any of the three into the (remote frontier, local heads) pair that
``protocol.sync.plan_pulls`` and ``plan_pushes`` plan with: over the named authors only.
The history is per process: after a restart a node answers and asks with full frontiers
until it has seen a few.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from protocol.chain import Head
from protocol.errors import SyncError
from protocol.records import is_record_id
from protocol.sync import MAX_FRONTIER_AUTHORS, Frontier, parse_frontier

RECENT_FRONTIERS = 8  # past frontiers a node remembers
RECENT_DIGEST_HEX = 16  # a recent digest in Hm-Recent: its first 16 hex characters (64 bits)


@dataclass(frozen=True, slots=True)
class FrontierDelta:
    """The answerer's frontier as the change since the asker's: ``frontier`` holds the current
    heads of ``authors`` (those that have one) and all the answerer's fork evidence."""

    since: str  # the asker's digest, one of the answerer's recent frontiers
    digest: str  # the answerer's current frontier digest
    authors: frozenset[str]
    frontier: Frontier

    def to_json(self) -> dict[str, object]:
        return self.frontier.to_json() | {
            "since": self.since,
            "authors": sorted(self.authors),
            "digest": self.digest,
        }


@dataclass(frozen=True, slots=True)
class FrontierAt:
    """The answerer's frontier is the asker's recent one with this digest."""

    digest: str

    def to_json(self) -> dict[str, object]:
        return {"at": self.digest, "digest": self.digest}


FrontierAnswer = Frontier | FrontierDelta | FrontierAt


class FrontierHistory:
    """A node's last frontiers, to answer and read deltas. ``observe`` every frontier the node
    reports or plans with; the order they are observed in does not matter for correctness
    (``changes_since`` names every author that changed in any step after the asked one)."""

    def __init__(self, keep: int = RECENT_FRONTIERS) -> None:
        self.keep = keep
        self._last: Frontier | None = None
        self._digest = ""
        self._versions: list[tuple[str, dict[str, Head | None]]] = []  # oldest first

    def observe(self, frontier: Frontier) -> str:
        """Make frontier the current one (remembering the one before); its digest."""
        if frontier is self._last:
            return self._digest
        digest = frontier.digest()
        if digest == self._digest:
            return digest
        if self._last is not None:
            old, new = self._last.heads, frontier.heads
            changed = {a: old.get(a) for a in old.keys() | new.keys() if old.get(a) != new.get(a)}
            self._versions.append((self._digest, changed))
            del self._versions[: -self.keep]
        self._last, self._digest = frontier, digest
        return digest

    def changes_since(self, digest: str) -> dict[str, Head | None] | None:
        """Every author whose head changed since the remembered frontier ``digest``, with
        its head then (None: none); None if that frontier is not remembered."""
        for index, (past, _) in enumerate(self._versions):
            if past == digest:
                since: dict[str, Head | None] = {}
                for _, changed in self._versions[index:]:
                    for author, head in changed.items():
                        since.setdefault(author, head)
                return since
        return None

    def recent(self) -> list[str]:
        """The truncated digests of the remembered past frontiers, newest first (Hm-Recent)."""
        return [d[:RECENT_DIGEST_HEX] for d, _ in reversed(self._versions)]

    def answer(self, current: Frontier, asked: str | None, recent: Sequence[str]) -> FrontierAnswer:
        """The answer to an asker that opted in: a delta since its digest ``asked``, ``at``
        if current is one of its ``recent`` frontiers, else the full frontier."""
        digest = self.observe(current)
        since = self.changes_since(asked) if asked is not None else None
        if since is not None and asked is not None:
            heads = {a: current.heads[a] for a in since if a in current.heads}
            return FrontierDelta(asked, digest, frozenset(since), Frontier(heads, current.forks))
        if digest[:RECENT_DIGEST_HEX] in recent:
            return FrontierAt(digest)
        return current


def parse_recent(value: str) -> tuple[str, ...]:
    """The ``Hm-Recent`` header: up to 8 comma-separated 16-hex digests (may be empty)."""
    items = tuple(item.strip() for item in value.split(",")) if value.strip() else ()
    if len(items) > RECENT_FRONTIERS:
        raise SyncError(
            "Hm-Recent names too many digests", field="Hm-Recent",
            expected=RECENT_FRONTIERS, actual=len(items),
        )  # fmt: skip
    hexdigits = set("0123456789abcdef")
    for item in items:
        if len(item) != RECENT_DIGEST_HEX or not set(item) <= hexdigits:
            raise SyncError(
                f"Hm-Recent items are {RECENT_DIGEST_HEX} lowercase hex", field="Hm-Recent"
            )
    return items


def parse_frontier_answer(value: object) -> FrontierAnswer:
    """A peer's ``/v1/heads`` answer: full, delta (``since``) or ``at``; raises SyncError."""
    if isinstance(value, dict) and "at" in value:
        if not is_record_id(value["at"]):
            raise SyncError("at must be a frontier digest (64 lowercase hex)", field="at")
        return FrontierAt(str(value["at"]))
    frontier = parse_frontier(value)
    if not isinstance(value, dict) or "since" not in value:
        return frontier
    since, authors, digest = value.get("since"), value.get("authors"), value.get("digest")
    if not is_record_id(since) or not is_record_id(digest):
        raise SyncError("since and digest must be frontier digests", field="since")
    if not isinstance(authors, list) or len(authors) > MAX_FRONTIER_AUTHORS:
        raise SyncError("a delta's authors must be a list", field="authors")
    if not all(is_record_id(a) for a in authors) or len(set(authors)) != len(authors):
        raise SyncError("a delta's authors are distinct 64-hex keys", field="authors")
    named = frozenset(str(a) for a in authors)
    if not frontier.heads.keys() <= named:
        raise SyncError("a delta lists a head of an author it does not name", field="heads")
    return FrontierDelta(str(since), str(digest), named, frontier)


def plan_view(
    answer: FrontierAnswer, local: Mapping[str, Head], history: FrontierHistory, sent: str
) -> tuple[Frontier, dict[str, Head]] | None:
    """The peer's frontier and the local heads to plan an exchange with (``plan_pulls``,
    ``plan_pushes``): everything for a full frontier, the named authors for a delta or
    ``at``. ``sent`` is the digest this node asked with. None when the answer is ``at`` a
    frontier this node no longer remembers (ask again for the full one)."""
    if isinstance(answer, Frontier):
        return answer, dict(local)
    if isinstance(answer, FrontierDelta):
        if answer.since != sent:
            raise SyncError("a delta since another frontier than asked", field="since",
                            expected=sent, actual=answer.since)  # fmt: skip
        return answer.frontier, {a: local[a] for a in answer.authors if a in local}
    since = history.changes_since(answer.digest)
    if since is None:
        return None
    then = {a: h for a, h in since.items() if h is not None}
    return Frontier(then), {a: local[a] for a in since if a in local}
