"""What a match answer finally shows: federation hits judged by policy and safelists, and hits
of the member's local match lists.

``node.net.matching`` searches the federation's index; this module turns those hits into the
answer of each query (``screened``):

1. provenance of the hits (labels, contributor, tallies), read from the store;
2. each hit held to its own radius (``Judge.hit_radius``: the request's, its labels', the
   node's) and judged by the match policy (``Judge.verdict``, node.matchpolicy);
3. each hit still standing checked against the enabled safelists: an entry within the
   safelist's radius of the signal's value suppresses it here;
4. the entries of the enabled local match lists near the query, added as hits.

Every hit names its ``source``: ``{"kind": "federation", "signal", "member"}`` or
``{"kind": "list", "list"}``. Suppressed hits are listed under ``suppressed`` with ``by``:
the rule (``{"policy": ...}``) or the safelist entry (``{"safelist", "entry"}``), so an
engineer sees why a hit is not one. ``matched`` is true when a hit remains. Hits and
suppressed hits are each at most ``max_hits``; ``total_hits`` and ``total_suppressed`` count
them all.

When no policy filter is set and no local list is enabled, only the shown hits' provenance is
read (the answer is what it was before policies and lists existed); otherwise every hit's is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from node.clock import now_ms
from node.errors import ApiError
from node.matchpolicy import NO_OVERRIDES, Judge, Overrides, resolve_members
from node.media.matchindex import Hit
from node.net.host import MatchHost as Node
from node.net.local_lists import ListHit
from node.store.lists import Entry


@dataclass(frozen=True, slots=True)
class Screen:
    """How one request's hits are screened: the judge, its local lists, its radius."""

    judge: Judge
    lists: tuple[str, ...] | None = None  # None: every enabled list
    radius: int | None = None  # the request's radius for every type, if it gave one

    def search_radius(self, kind: str) -> int:
        return self.judge.search_radius(kind, self.radius)

    def list_radius(self, name: str, kind: str) -> int | None:
        """A local list's radius for a request: the request's, else the list's own."""
        return self.judge.request_radius(kind, self.radius)


def screen_for(
    node: Node, overrides: Overrides = NO_OVERRIDES, radius: int | None = None
) -> Screen:
    """The screen of one request: the node's policy with the request's overrides."""
    policy = node.config.match
    members = [] if node.membership is None else [
        {"name": m.name, "identity": m.identity, "keys": m.keys}
        for m in node.membership.members.values()
    ]  # fmt: skip
    if overrides.ignore_members is None:
        ignored = resolve_members(policy.ignore_members, members, strict=False)
    else:
        ignored = resolve_members(overrides.ignore_members, members, strict=True)
    if overrides.lists is not None and node.lists is not None:
        missing = node.lists.missing(overrides.lists)
        if missing:
            raise ApiError(f"lists: {', '.join(missing)} is not an enabled local list "
                           "(see GET /v1/lists)", status=404, title="no such list")  # fmt: skip
    return Screen(Judge(policy, overrides, node.own_member or "", ignored), overrides.lists, radius)


def _needs_provenance(node: Node, screen: Screen) -> bool:
    """Must every hit's provenance be read (a filter, a label rule or a safelist is on)?"""
    lists = node.lists
    return screen.judge.filters or bool(
        lists is not None and lists.any_enabled("safelist", screen.lists)
    )


async def screened(
    node: Node, screen: Screen, queries: Sequence[Any], hits: list[list[Hit]], max_hits: int
) -> list[dict[str, Any]]:
    """The answer of each searched query (``query`` has ``type`` and ``value``)."""
    full = _needs_provenance(node, screen)
    rows = sorted({h.key for per in hits for h in (per if full else per[:max_hits])})
    now = now_ms()
    details = await node.signal_rows(rows, now) if rows else []
    by_row = {cast(int, d["row"]): d for d in details}
    # a signal may expire between the index's expiry drop (before the search) and this read
    hits = [[h for h in per if by_row.get(h.key, {}).get("status") != "expired"] for per in hits]
    kept: list[list[dict[str, Any]]] = []
    dropped: list[list[dict[str, Any]]] = []
    totals: list[int] = []
    for query, per in zip(queries, hits, strict=True):
        mine, theirs = _judged(screen, query, per, by_row, full=full)
        kept.append(mine)
        dropped.append(theirs)
        totals.append(len(mine) if full else len(per))
    if full:
        await _safelist(node, screen, kept, dropped, totals)
    listed = await _listed(node, screen, queries)
    results = []
    for query, mine, theirs, federation, extra in zip(queries, kept, dropped, totals, listed,
                                                      strict=True):  # fmt: skip
        shown = sorted(mine + extra, key=lambda h: (h["distance"], h["source"]["kind"] == "list"))
        total = federation + len(extra)
        _count(node, "match_list_hits", len(extra))
        _count(node, "match_suppressed", len(theirs))
        results.append(
            {"query": {"type": query.type, "value": query.value}, "matched": bool(total),
             "hits": shown[:max_hits], "total_hits": total, "truncated": total > max_hits,
             "suppressed": theirs[:max_hits], "total_suppressed": len(theirs)}
        )  # fmt: skip
    return results


def _count(node: Node, key: str, n: int) -> None:
    if n:
        node.counters[key] = node.counters.get(key, 0) + n


def _judged(
    screen: Screen, query: Any, per: list[Hit], by_row: dict[int, dict[str, Any]], *, full: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A query's federation hits, kept and suppressed by policy (in index order)."""
    kept, dropped = [], []
    for hit in per:
        row = by_row.get(hit.key)
        if row is None:
            continue  # not fetched (beyond max_hits, fast path) or gone since the search
        shown = row | {"distance": hit.distance, "source": _federation(row)}
        if full:
            labels = cast(list[str], row.get("labels", []))
            if hit.distance > screen.judge.hit_radius(query.type, labels, screen.radius):
                continue  # beyond this hit's radius: not a hit at all
            why = screen.judge.verdict(row)
            if why is not None:
                dropped.append(shown | {"by": why})
                continue
        kept.append(shown)
    return kept, dropped


def _federation(row: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "federation", "signal": row["id"], "member": row["member"]}


async def _safelist(
    node: Node,
    screen: Screen,
    kept: list[list[dict[str, Any]]],
    dropped: list[list[dict[str, Any]]],
    totals: list[int],
) -> None:
    """Move every kept federation hit that an enabled safelist entry is near to dropped."""
    lists = node.lists
    if lists is None or not lists.any_enabled("safelist", screen.lists):
        return
    signals = [(str(h["type"]), str(h["value"])) for per in kept for h in per]
    found = await asyncio.to_thread(lists.safelisted, signals, screen.lists)
    entries = await lists.entries_by_row([f.row for f in found if f is not None])
    at = 0
    for i, per in enumerate(kept):
        keep = []
        for hit in per:
            listed = found[at]
            at += 1
            entry = None if listed is None else entries.get(listed.row)
            if listed is None or entry is None:
                keep.append(hit)
                continue
            dropped[i].append(hit | {"by": {"safelist": listed.list,
                                            "entry": _entry(entry, listed.distance)}})  # fmt: skip
        totals[i] -= len(per) - len(keep)
        kept[i] = keep


async def _listed(node: Node, screen: Screen, queries: Sequence[Any]) -> list[list[dict[str, Any]]]:
    """The hits of the enabled local match lists, for each query."""
    lists = node.lists
    if lists is None or not queries or not lists.any_enabled("match", screen.lists):
        return [[] for _ in queries]
    pairs = [(str(q.type), str(q.value)) for q in queries]
    found = await asyncio.to_thread(lists.match, pairs, screen.lists, screen.list_radius)
    entries = await lists.entries_by_row([h.row for per in found for h in per])
    return [[_list_hit(entries[h.row], h) for h in per if h.row in entries] for per in found]


def _entry(entry: Entry, distance: int) -> dict[str, Any]:
    return entry.to_json() | {"distance": distance}


def _list_hit(entry: Entry, hit: ListHit) -> dict[str, Any]:
    return entry.to_json() | {"distance": hit.distance,
                              "source": {"kind": "list", "list": hit.list}}  # fmt: skip
