"""Index updates yield to matching (issue 13 item 14): a big merge's signal changes are indexed
a chunk at a time, and a match waiting for the index gets in between two chunks; merges are
still indexed one after the other, in commit order."""

from __future__ import annotations

import asyncio

from node.media.index import MatchIndex
from node.media.matchindex import Hit
from node.net.context import INDEX_CHUNK_CHANGES, index_signal_changes
from node.net.matching import expire_index
from node.store.store import SignalChange


def changes(count: int, *, active: bool = True) -> list[SignalChange]:
    return [SignalChange(row, f"{row:064x}", "md5", f"{row:032x}", active) for row in range(count)]


async def index_while_matching(count: int) -> tuple[int, int]:
    """(signals indexed when a waiting match got the index, signals indexed at the end)."""
    index, lock, order = MatchIndex(), asyncio.Lock(), asyncio.Lock()
    update = asyncio.create_task(index_signal_changes(index, lock, changes(count), order=order))
    while not lock.locked():  # the update holds the index: a match arrives and waits
        await asyncio.sleep(0)
    async with lock:
        seen_by_match = len(index)
        assert index.query_batch("md5", [f"{0:032x}"], None) == [[Hit(0, 0)]]
    await update
    return seen_by_match, len(index)


def test_a_waiting_match_goes_between_two_chunks_of_a_big_update() -> None:
    count = 8 * INDEX_CHUNK_CHANGES
    seen_by_match, indexed = asyncio.run(index_while_matching(count))
    assert indexed == count
    assert seen_by_match == INDEX_CHUNK_CHANGES  # after the first chunk, not after all of them


def test_removals_are_indexed_in_chunks_too() -> None:
    async def add_then_remove() -> int:
        index, lock, order = MatchIndex(), asyncio.Lock(), asyncio.Lock()
        await index_signal_changes(index, lock, changes(3 * INDEX_CHUNK_CHANGES + 1), order=order)
        removals = changes(3 * INDEX_CHUNK_CHANGES, active=False)
        await index_signal_changes(index, lock, removals, order=order)
        return len(index)

    assert asyncio.run(add_then_remove()) == 1


def test_merges_are_indexed_in_commit_order() -> None:
    """A signal added in the last chunk of one merge and retracted by the next merge: the next
    merge's removal must not go between the first merge's chunks (the signal would come back)."""
    count = 4 * INDEX_CHUNK_CHANGES

    async def add_then_retract_last() -> MatchIndex:
        index, lock, order = MatchIndex(), asyncio.Lock(), asyncio.Lock()
        retract = [changes(count, active=False)[-1]]
        first = asyncio.create_task(index_signal_changes(index, lock, changes(count), order=order))
        second = asyncio.create_task(index_signal_changes(index, lock, retract, order=order))
        await asyncio.gather(first, second)
        return index

    index = asyncio.run(add_then_retract_last())
    assert len(index) == count - 1
    assert index.query_batch("md5", [f"{count - 1:032x}"], None) == [[]]


def test_signals_leave_the_index_at_their_expiry() -> None:
    """The index keeps each signal's expiry (from the merge's change, or set at start-up) and
    drops it at ``expire_due``; a re-add replaces the expiry, a removal forgets it."""
    index = MatchIndex()
    lasting, brief, renewed, gone = changes(4)
    index_changes = [brief._replace(expires=1_000), renewed._replace(expires=1_000), lasting,
                     gone._replace(expires=500)]  # fmt: skip
    for change in index_changes:
        index.add(change.row, change.type, change.value, change.expires)
    index.add(renewed.row, renewed.type, renewed.value, 5_000)  # the same key, a later expiry
    index.remove(gone.row)
    assert index.next_expiry_ms() == 1_000
    assert index.expire_due(999) == 0 and len(index) == 3
    assert index.expire_due(1_000) == 1 and brief.row not in index
    assert index.query_batch("md5", [brief.value], None) == [[]]
    assert index.next_expiry_ms() == 5_000 and renewed.row in index
    index.add_many([(7, "md5", "7" * 32)])
    index.set_expiries([(7, 6_000)])
    assert index.expire_due(10**12) == 2 and len(index) == 1 and lasting.row in index
    assert index.next_expiry_ms() is None


def test_a_search_never_finds_a_signal_whose_expiry_passed() -> None:
    """Before each query the matcher drops what expired (the timer may not have run yet)."""

    async def search() -> list[list[Hit]]:
        index = MatchIndex()
        index.add(1, "md5", "1" * 32, expires=1)  # long past
        index.add(2, "md5", "2" * 32)
        assert await expire_index(index) == 1
        return index.query_batch("md5", ["1" * 32, "2" * 32], None)

    assert asyncio.run(search()) == [[], [Hit(2, 0)]]
