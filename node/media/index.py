"""``MatchIndex``: every active signal, queried by type and value within a radius.

Keys are the store's integer row ids of signals; the index never holds record ids, labels or
anything else a match answer shows (the caller joins those from the store). A key is one
signal: adding a key that is already present replaces its entry, whatever its type.

Each signal type has an index of its own, of the class its node module names
(``node.media.types``): multi-index hashing for Hamming types, a dict for exact ones
(``node.media.matchindex`` has both and the design). A type the protocol registry knows but
the node side lacks has no index: its signals are refused here with a clear error
(``tests/node/test_signal_types.py`` keeps the two registries equal).

A signal may carry its expiry time: ``expire_due`` drops every signal whose expiry has
passed (the node calls it before each query and on a timer, so an expired signal is never
a hit, though nothing else tells the index about expiries); ``next_expiry_ms`` says when.

The index is not thread-safe for mutation: callers serialise ``add``/``remove``/
``expire_due`` with queries.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from node.media.matchindex import I64, Hit, TypeIndex
from node.media.types import NODE_TYPES
from node.media.video_index import FrameHit, VideoMatch, VpdqIndex
from protocol.signal_types import SIGNAL_TYPES
from protocol.vpdq import VpdqFrame

DEFAULT_RADII: dict[str, int] = {
    n: t.default_radius for n, t in SIGNAL_TYPES.items() if t.is_hamming and n in NODE_TYPES
}
HAMMING_BITS: dict[str, int] = {n: t.bits for n, t in SIGNAL_TYPES.items()
                                if t.is_hamming and t.bits and n in NODE_TYPES}  # fmt: skip
EXACT_TYPES: tuple[str, ...] = tuple(
    n for n, t in SIGNAL_TYPES.items() if not t.is_hamming and n in NODE_TYPES
)


class MatchIndex:
    """All active signals, one index per signal type."""

    def __init__(self, radii: Mapping[str, int] | None = None) -> None:
        self.radii = {**DEFAULT_RADII, **(radii or {})}
        for signal_type, radius in self.radii.items():
            bits = HAMMING_BITS.get(signal_type)
            if bits is None or not 0 <= radius <= bits:
                raise ValueError(f"bad radius {radius!r} for signal type {signal_type!r}")
        self._by_type: dict[str, TypeIndex] = {
            name: NODE_TYPES[name].new_index(kind, self.radii.get(name, 0))
            for name, kind in SIGNAL_TYPES.items()
            if name in NODE_TYPES
        }
        self._top: int | None = None  # the largest key ever indexed
        self._expires: dict[int, int] = {}  # key -> expiry (ms), for keys that have one
        self._due: list[tuple[int, int]] = []  # heap of (expiry ms, key); may hold stale pairs

    def _index(self, signal_type: str) -> TypeIndex:
        index = self._by_type.get(signal_type)
        if index is None:
            raise ValueError(f"unknown signal type {signal_type!r}")
        return index

    def add(self, key: int, signal_type: str, value: str, expires: int | None = None) -> None:
        """Index one signal under ``key``, replacing whatever ``key`` held before; it leaves
        at ``expire_due`` after ``expires`` (ms), if given."""
        index = self._index(signal_type)
        try:
            parsed = index.parse(value)
        except ValueError as e:
            raise ValueError(f"bad {signal_type} value: {e}") from e
        # a key above every key ever indexed holds nothing (store rows grow): skip the lookup
        if self._top is None or key > self._top:
            self._top = key  # set before adding: the add may compact, and could fail there
        else:
            self.remove(key)
        index.add_parsed(key, parsed)
        if expires is not None:
            self.set_expiries([(key, expires)])

    def add_many(self, items: Iterable[tuple[int, str, str]]) -> None:
        """Same as ``add`` for each item in turn, vectorised (start-up from the store). Every
        value is validated before anything changes."""
        batch = items if isinstance(items, Sequence) else list(items)
        if not batch:
            return
        keys = np.fromiter(map(itemgetter(0), batch), dtype=np.int64, count=len(batch))
        if _has_duplicates(keys):
            for item in batch:
                self.add(*item)
            return
        types = list(map(itemgetter(1), batch))
        values = list(map(itemgetter(2), batch))
        groups = []
        for signal_type, rows in _group_by_type(types).items():
            chosen = values if rows is None else [values[i] for i in rows.tolist()]
            index = self._index(signal_type)
            try:
                parsed = index.parse_many(chosen)
            except ValueError as e:
                raise ValueError(f"bad {signal_type} value: {e}") from e
            groups.append((index, keys if rows is None else keys[rows], parsed))
        if len(self):
            self._remove_many(keys)
            if self._expires:
                for key in keys.tolist():
                    self._expires.pop(key, None)
        top = int(keys.max())
        self._top = top if self._top is None else max(self._top, top)
        for index, group_keys, parsed in groups:
            index.add_parsed_many(group_keys, parsed)

    def _remove_many(self, keys: I64) -> None:
        for index in self._by_type.values():
            if len(index):
                index.remove_many(keys)

    def remove(self, key: int) -> None:
        """Forget ``key``; a no-op if it is not indexed."""
        self._expires.pop(key, None)
        for index in self._by_type.values():
            if index.remove(key):
                return

    def set_expiries(self, items: Iterable[tuple[int, int]]) -> None:
        """The expiry times (ms) of indexed keys (``add_many`` takes none)."""
        expiring, due = self._expires, self._due
        for key, expires in items:
            if expiring.get(key) != expires:
                expiring[key] = expires
                heapq.heappush(due, (expires, key))

    def expire_due(self, now_ms: int) -> int:
        """Drop every signal whose expiry is at or before now_ms; the number dropped."""
        dropped = 0
        while self._due and self._due[0][0] <= now_ms:
            expires, key = heapq.heappop(self._due)
            if self._expires.get(key) == expires:
                self.remove(key)
                dropped += 1
        return dropped

    def next_expiry_ms(self) -> int | None:
        """When ``expire_due`` next has something to drop (None: no signal expires)."""
        while self._due and self._expires.get(self._due[0][1]) != self._due[0][0]:
            heapq.heappop(self._due)  # a stale pair: the key left or changed its expiry
        return self._due[0][0] if self._due else None

    def query(self, signal_type: str, value: str, radius: int | None = None) -> list[Hit]:
        """Every indexed signal of ``signal_type`` within ``radius``, by (distance, key)."""
        return self.query_batch(signal_type, [value], radius)[0]

    def query_batch(
        self, signal_type: str, values: Sequence[str], radius: int | None = None
    ) -> list[list[Hit]]:
        """``[query(signal_type, v, radius) for v in values]``, vectorised and threaded."""
        index = self._index(signal_type)
        try:
            return index.query_batch(values, radius)
        except ValueError as e:
            raise ValueError(f"signal type {signal_type!r}: {e}") from e

    def _videos(self) -> VpdqIndex:
        index = self._by_type.get("vpdq")
        if not isinstance(index, VpdqIndex):
            raise ValueError("this node has no vpdq index")
        return index

    def match_videos(
        self, frames: Iterable[VpdqFrame], *, query_pct: float, compared_pct: float
    ) -> list[VideoMatch]:
        """Every indexed video that matches a query video by vPDQ's rule (``VpdqIndex``)."""
        return self._videos().match_videos(frames, query_pct=query_pct, compared_pct=compared_pct)

    def frames_near(self, pdq_values: Sequence[str]) -> list[list[FrameHit]]:
        """For each PDQ hash, the video signals holding a frame within the frame distance."""
        return self._videos().frames_near(pdq_values)

    def compact(self) -> None:
        """Fold every delta and tombstone into rebuilt main segments now."""
        for index in self._by_type.values():
            index.rebuild()

    def __len__(self) -> int:
        return sum(map(len, self._by_type.values()))

    def sizes(self) -> dict[str, int]:
        """The signals indexed of each type, types with none included."""
        return {name: len(index) for name, index in self._by_type.items()}

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and any(key in i for i in self._by_type.values())

    def memory_bytes(self) -> int:
        """Bytes held by the index (numpy arrays exactly, Python dicts approximately)."""
        return sum(i.memory_bytes() for i in self._by_type.values())


def _has_duplicates(keys: I64) -> bool:
    if len(keys) < 2 or bool((keys[1:] > keys[:-1]).all()):
        return False
    ordered = np.sort(keys)
    return bool((ordered[1:] == ordered[:-1]).any())


def _group_by_type(types: Sequence[str]) -> dict[str, npt.NDArray[np.intp] | None]:
    """Positions of each signal type in ``types`` (``None``: all of them)."""
    distinct = sorted(set(types))
    if len(distinct) == 1:
        return {distinct[0]: None}
    code = {t: i for i, t in enumerate(distinct)}
    codes = np.fromiter((code[t] for t in types), dtype=np.intp, count=len(types))
    return {t: np.flatnonzero(codes == i) for t, i in code.items()}
