"""The running node's local lists: ``HOME/lists.db`` (node.store.lists) and a match index per list.

Every enabled list has a ``MatchIndex`` of its own (the federation's index class, so a list
matches exactly as the federation's signals do), built from the file at start and changed
with every change the API makes, after the file has committed it. A list's radius per type is
``[match.lists."NAME"] radius``, else the node's (node.matchpolicy). A switched-off list has no
index: it neither matches nor suppresses.

- A *match* list answers queries: ``match`` gives, for each query, its entries within the
  radius (keys are entry rows).
- A *safelist* suppresses federation hits: ``safelisted`` gives, for a federation signal's
  value, the closest entry of any enabled safelist within that list's radius of it.

Changes are serialised (``_changing``) so the indexes take them in the order the file
committed them; the indexes themselves are guarded by a thread lock, because searches run in
worker threads while a change may be indexing in another.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from node.errors import InputError
from node.matchpolicy import MatchPolicy
from node.media.index import HAMMING_BITS, MatchIndex
from node.store.lists import (
    UNSUPPORTED_TYPES,
    Entry,
    ListStore,
    LocalList,
    NewEntry,
    check_entry,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ListHit:
    """One entry of a local list that a query (or a federation signal) is near."""

    list: str
    row: int
    distance: int


class LocalLists:
    """The file and the in-memory indexes of every enabled list (module docstring)."""

    def __init__(self, path: Path, policy: MatchPolicy) -> None:
        self.path = path
        self.policy = policy
        self._store: ListStore | None = None
        self._meta: dict[str, LocalList] = {}
        self._indexes: dict[str, MatchIndex] = {}  # enabled lists only
        self._index_lock = threading.Lock()
        self._changing = asyncio.Lock()

    # ---- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._store = await asyncio.to_thread(ListStore.open, self.path)
        for found in await self._call(lambda s: s.lists()):
            await self._load(found)

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await asyncio.to_thread(store.close)

    async def _call(self, fn: Callable[[ListStore], T]) -> T:
        store = self._store
        if store is None:
            raise InputError("the local lists are not open (the node is starting)", status=503,
                             title="not ready")  # fmt: skip
        return await asyncio.to_thread(fn, store)

    async def _load(self, found: LocalList) -> None:
        """Index an enabled list from the file (or forget a switched-off one's index)."""
        index = None
        if found.enabled:
            index = self._new_index(found.name)
            rows = await self._call(lambda s: list(s.index_rows(found.name)))
            await asyncio.to_thread(index.add_many, rows)
        with self._index_lock:
            self._meta[found.name] = found
            if index is None:
                self._indexes.pop(found.name, None)
            else:
                self._indexes[found.name] = index

    def _new_index(self, name: str) -> MatchIndex:
        return MatchIndex({k: self.policy.list_radius(name, k) for k in HAMMING_BITS})

    # ---- reading ----------------------------------------------------------------------------

    def lists(self) -> list[LocalList]:
        with self._index_lock:
            return sorted(self._meta.values(), key=lambda m: m.name)

    def get(self, name: str) -> LocalList:
        with self._index_lock:
            found = self._meta.get(name)
        if found is None:
            raise InputError(f"no local list named {name!r}", status=404, title="no such list",
                             fields={"list": name})  # fmt: skip
        return found

    def enabled(self, kind: str) -> list[str]:
        with self._index_lock:
            return sorted(n for n in self._indexes if self._meta[n].kind == kind)

    def any_enabled(self, kind: str, names: Sequence[str] | None = None) -> bool:
        """Is a list of this kind enabled (among names, if given)?"""
        found = self.enabled(kind)
        return bool(found if names is None else set(found) & set(names))

    async def entries(self, name: str, *, limit: int, offset: int) -> tuple[LocalList, list[Entry]]:
        return await self._call(lambda s: s.entries(name, limit=limit, offset=offset))

    async def find(self, name: str, kind: str, value: str) -> tuple[LocalList, Entry | None]:
        return await self._call(lambda s: s.find(name, kind, value))

    async def entries_by_row(self, rows: Sequence[int]) -> dict[int, Entry]:
        if not rows:
            return {}
        return await self._call(lambda s: s.entries_by_row(rows))

    # ---- changing ---------------------------------------------------------------------------

    def check(self, name: str, kind: object, value: object, note: object) -> NewEntry:
        """An entry for list name, checked for that list (``check_entry``)."""
        found = self.get(name)
        radius = self.policy.list_radius(name, kind) if isinstance(kind, str) else 0
        return check_entry(kind, value, note, safelist=found.kind == "safelist", radius=radius)

    async def create(
        self, name: str, kind: str, note: str | None, *, by: str, now_ms: int
    ) -> LocalList:
        async with self._changing:
            found = await self._call(lambda s: s.create(name, kind, note, by=by, now_ms=now_ms))
            await self._load(found)
            return found

    async def delete(self, name: str) -> LocalList:
        async with self._changing:
            found = await self._call(lambda s: s.delete(name))
            with self._index_lock:
                self._meta.pop(name, None)
                self._indexes.pop(name, None)
            return found

    async def set_enabled(self, name: str, enabled: bool) -> LocalList:
        async with self._changing:
            found = await self._call(lambda s: s.set_enabled(name, enabled))
            await self._load(found)
            return found

    async def add(
        self, name: str, entries: Sequence[NewEntry], *, by: str, now_ms: int
    ) -> tuple[LocalList, list[Entry], int]:
        async with self._changing:
            found, added, skipped = await self._call(
                lambda s: s.add_entries(name, entries, by=by, now_ms=now_ms)
            )
            await asyncio.to_thread(self._index, found, [(e.row, e.type, e.value) for e in added])
            return found, added, skipped

    async def remove(
        self, name: str, wanted: Sequence[tuple[str, str]]
    ) -> tuple[LocalList, list[Entry], list[tuple[str, str]]]:
        async with self._changing:
            found, removed, missing = await self._call(lambda s: s.remove_entries(name, wanted))
            await asyncio.to_thread(self._unindex, found, [e.row for e in removed])
            return found, removed, missing

    def _index(self, found: LocalList, rows: Sequence[tuple[int, str, str]]) -> None:
        with self._index_lock:
            self._meta[found.name] = found
            index = self._indexes.get(found.name)
            if index is not None and rows:
                index.add_many(rows)

    def _unindex(self, found: LocalList, rows: Sequence[int]) -> None:
        with self._index_lock:
            self._meta[found.name] = found
            index = self._indexes.get(found.name)
            if index is not None:
                for row in rows:
                    index.remove(row)

    # ---- searching (in a worker thread) -----------------------------------------------------

    def match(
        self,
        queries: Sequence[tuple[str, str]],
        names: Sequence[str] | None,
        radius: Callable[[str, str], int | None],
    ) -> list[list[ListHit]]:
        """For each (type, value), the entries of the enabled match lists (or of names) within
        radius(list, type) of it (None: the list's own), closest first."""
        found: list[list[ListHit]] = [[] for _ in queries]
        with self._index_lock:
            for name in names if names is not None else sorted(self._indexes):
                index = self._indexes.get(name)
                if index is None or self._meta[name].kind != "match":
                    continue
                for kind, positions in _by_type(queries).items():
                    if kind in UNSUPPORTED_TYPES:
                        continue
                    values = [queries[i][1] for i in positions]
                    answers = index.query_batch(kind, values, radius(name, kind))
                    for i, per in zip(positions, answers, strict=True):
                        found[i] += [ListHit(name, h.key, h.distance) for h in per]
        for listed in found:
            listed.sort(key=lambda h: (h.distance, h.list, h.row))
        return found

    def safelisted(
        self, signals: Sequence[tuple[str, str]], names: Sequence[str] | None = None
    ) -> list[ListHit | None]:
        """For each federation signal's (type, value), the closest entry of an enabled
        safelist (among names, if given) within that list's radius of it, or None."""
        found: list[ListHit | None] = [None] * len(signals)
        with self._index_lock:
            chosen = sorted(self._indexes) if names is None else names
            for name in chosen:
                index = self._indexes.get(name)
                if index is None or self._meta[name].kind != "safelist":
                    continue
                for kind, positions in _by_type(signals).items():
                    if kind in UNSUPPORTED_TYPES:
                        continue
                    values = [signals[i][1] for i in positions]
                    for i, per in zip(positions, index.query_batch(kind, values), strict=True):
                        best = found[i]
                        if per and (best is None or per[0].distance < best.distance):
                            found[i] = ListHit(name, per[0].key, per[0].distance)
        return found

    def missing(self, names: Sequence[str]) -> list[str]:
        """The names of names that are no enabled list."""
        with self._index_lock:
            return [n for n in names if n not in self._indexes]


def _by_type(items: Sequence[tuple[str, str]]) -> Mapping[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for i, (kind, _value) in enumerate(items):
        grouped.setdefault(kind, []).append(i)
    return grouped
