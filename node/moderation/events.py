"""The hits of a match answer, as the moderation pipeline sees them: ``MatchEvent``.

``collect`` runs on the match path, so it only walks the answer and keeps references: a hit
is any dict carrying a signal's provenance (``id`` and ``tallies``: the shape
``node.store.read.signal_json`` gives every hit, video hit and still), under the nearest
``query`` above it. It never copies a hit and never touches SQLite; everything derived from a
hit (its labels, list, confirmations) is read later, on the moderation thread.

One answer entry (one hashed query, one uploaded file) gives at most one event per signal:
an image whose PDQ and its rotations both hit a signal is one match of that signal, at the
smaller distance; the ``vpdq`` values of one video, answered with that video's one answer,
give its hits once. An answer that matched nothing costs one dict lookup. A hit on an entry of
a local list (``"source": {"kind": "list"}``, no id) is an event too, under
``list:<name>:<type>:<value>``; hits the match policy or a safelist moved to ``suppressed``
were not answered as matches and are no event.

``caller`` names who asked, for the log: ``api`` (the bearer token) unless the request's
context says otherwise (the web UI sets ``ui:<user>`` through ``MATCH_CALLER``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

MATCH_CALLER: ContextVar[str] = ContextVar("hashmesh_match_caller", default="api")
FEDERATION: Final = "federation"  # the list of a hit on a federation signal


@dataclass(frozen=True, slots=True)
class MatchEvent:
    """One signal matched by one query, at ts (ms), for caller."""

    ts: int
    caller: str
    query_type: str
    query_value: str
    hit: Mapping[str, Any]  # the hit as answered: id, type, value, labels, member, tallies...

    @property
    def signal(self) -> str:
        return hit_key(self.hit)

    @property
    def signal_type(self) -> str:
        return str(self.hit.get("type", ""))

    @property
    def list_name(self) -> str:
        """The list the hit comes from: a local list's name, or ``federation``."""
        source = self.hit.get("source")
        if isinstance(source, dict) and source.get("kind") == "list":
            return str(source.get("list"))
        return str(self.hit.get("list") or FEDERATION)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.hit.get("labels") or ())

    @property
    def member(self) -> str | None:
        member = self.hit.get("member")
        return member if isinstance(member, str) else None

    @property
    def confirms(self) -> int:
        tallies = self.hit.get("tallies") or {}
        return int(tallies.get("confirm", 0))

    @property
    def distance(self) -> int | None:
        distance = self.hit.get("distance")
        return distance if isinstance(distance, int) else None


def collect(
    answer: Mapping[str, Any], caller: str, now_ms: int, quarantined: Collection[str] = ()
) -> list[MatchEvent]:
    """The events of a match answer (``POST /v1/match`` shape: ``results``, one entry per
    query or file). Hits on a quarantined signal are marked ``"quarantined": true`` in the
    answer itself, before it is sent."""
    if not answer.get("matched"):
        return []
    events: list[MatchEvent] = []
    shared: set[int] = set()  # hits already seen (the vpdq values of one video share them)
    for entry in answer.get("results", ()):
        if not isinstance(entry, dict) or not entry.get("matched"):
            continue
        best: dict[str, tuple[tuple[str, str], dict[str, Any]]] = {}
        for query, hit in _hits(entry, _entry_query(entry)):
            if id(hit) in shared:
                continue
            shared.add(id(hit))
            key = hit_key(hit)
            if quarantined and key in quarantined:
                hit["quarantined"] = True
            known = best.get(key)
            if known is None or _closer(hit, known[1]):
                best[key] = (query, hit)
        events += [MatchEvent(now_ms, caller, q[0], q[1], hit) for q, hit in best.values()]
    return events


def hit_key(hit: Mapping[str, Any]) -> str:
    """What a hit is logged and counted under: a federation signal's id, or for an entry of
    a local list (``node.net.screening``: no id) ``list:<name>:<type>:<value>``."""
    if isinstance(hit.get("id"), str):
        return str(hit["id"])
    return f"list:{hit['source']['list']}:{hit.get('type')}:{hit.get('value')}"


def _is_list_hit(node: Mapping[str, Any]) -> bool:
    source = node.get("source")
    return isinstance(source, dict) and source.get("kind") == "list" and "value" in node


def _entry_query(entry: Mapping[str, Any]) -> tuple[str, str]:
    """The query an answer entry is about: its hash, or an uploaded file's PDQ (an image)
    or MD5 (a video)."""
    hashes = entry.get("hashes")
    if isinstance(hashes, dict):
        for kind in ("pdq", "md5"):
            if isinstance(hashes.get(kind), str):
                return kind, hashes[kind]
    return "upload", str(entry.get("file") or "")


def _hits(node: Any, query: tuple[str, str]) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    if isinstance(node, dict):
        asked = node.get("query")
        if isinstance(asked, dict) and isinstance(asked.get("type"), str):
            query = (asked["type"], str(asked.get("value", "")))
        if ("tallies" in node and isinstance(node.get("id"), str)) or _is_list_hit(node):
            yield query, node
            return
        for key, value in node.items():
            if key not in ("query", "suppressed") and isinstance(value, dict | list):
                yield from _hits(value, query)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                yield from _hits(item, query)


def _closer(hit: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    mine, theirs = hit.get("distance"), than.get("distance")
    return isinstance(mine, int) and (not isinstance(theirs, int) or mine < theirs)
