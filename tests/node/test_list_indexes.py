"""The node's local lists in memory (node.net.local_lists): each enabled list's index follows
the file, matches within the list's radius, and a safelist names its closest entry."""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.matchpolicy import MatchPolicy
from node.net.local_lists import ListHit, LocalLists
from node.store.lists import LISTS_FILE

PDQ = "5a3c96e1" * 8
MD5 = "d35c785545392755e7e4164457657269"


def flip(value: str, bits: int) -> str:
    return f"{int(value, 16) ^ ((1 << bits) - 1):064x}"


def test_a_match_list_matches_within_its_radius_and_follows_changes(tmp_path: Path) -> None:
    policy = MatchPolicy(radius={"pdq": 20}, lists={"narrow": {"pdq": 4}})

    async def run() -> None:
        lists = LocalLists(tmp_path / LISTS_FILE, policy)
        await lists.open()
        for name in ("wide", "narrow"):
            await lists.create(name, "match", None, by="token", now_ms=1)
            entries = [lists.check(name, "pdq", PDQ, "x"), lists.check(name, "md5", MD5, None)]
            await lists.add(name, entries, by="token", now_ms=2)
        near = [("pdq", flip(PDQ, 3)), ("pdq", flip(PDQ, 10)), ("md5", MD5), ("sha1", "0" * 40)]
        found = lists.match(near, None, lambda name, kind: None)
        assert [[(h.list, h.distance) for h in per] for per in found] == [
            [("narrow", 3), ("wide", 3)], [("wide", 10)],
            [("narrow", 0), ("wide", 0)], [],
        ]  # fmt: skip
        only = lists.match(near[:2], ["wide"], lambda name, kind: 2)  # a request's radius
        assert only == [[], []]
        await lists.set_enabled("wide", False)  # off: no index, no match
        assert [h.list for h in lists.match(near[:1], None, lambda n, k: None)[0]] == ["narrow"]
        _, removed, _ = await lists.remove("narrow", [("pdq", PDQ)])
        assert len(removed) == 1 and lists.match(near[:1], None, lambda n, k: None) == [[]]
        await lists.close()
        reopened = LocalLists(tmp_path / LISTS_FILE, policy)  # rebuilt from the file
        await reopened.open()
        assert [x.name for x in reopened.lists()] == ["narrow", "wide"]
        assert reopened.enabled("match") == ["narrow"]
        assert [h.list for h in reopened.match(near[2:3], None, lambda n, k: None)[0]] == ["narrow"]
        await reopened.close()

    asyncio.run(run())


def test_a_safelist_names_its_closest_entry_and_a_match_list_suppresses_nothing(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        lists = LocalLists(tmp_path / LISTS_FILE, MatchPolicy(lists={"tight": {"pdq": 2}}))
        await lists.open()
        await lists.create("logos", "safelist", None, by="token", now_ms=1)
        await lists.create("tight", "safelist", None, by="token", now_ms=1)
        await lists.create("review", "match", None, by="token", now_ms=1)
        _, [far], _ = await lists.add("logos", [lists.check("logos", "pdq", flip(PDQ, 9), None)],
                                      by="token", now_ms=2)  # fmt: skip
        _, [close], _ = await lists.add("tight", [lists.check("tight", "pdq", flip(PDQ, 1), None)],
                                        by="token", now_ms=2)  # fmt: skip
        await lists.add("review", [lists.check("review", "md5", MD5, None)], by="t", now_ms=2)
        signals = [("pdq", PDQ), ("pdq", flip(PDQ, 30)), ("md5", MD5)]
        assert lists.safelisted(signals) == [ListHit("tight", close.row, 1),
                                             ListHit("logos", far.row, 21), None]  # fmt: skip
        assert lists.safelisted(signals, ["logos"])[0] == ListHit("logos", far.row, 9)
        assert lists.any_enabled("safelist") and not lists.any_enabled("safelist", ["review"])
        assert lists.missing(["logos", "absent"]) == ["absent"]
        await lists.delete("tight")
        assert lists.safelisted(signals[:1]) == [ListHit("logos", far.row, 9)]
        await lists.close()

    asyncio.run(run())
