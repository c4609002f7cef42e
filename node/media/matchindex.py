"""The in-memory match index: every active signal, queried by value within a radius.

Keys are the store's integer row ids of signals; the index never holds record ids, labels or
anything else a match answer shows (the caller joins those from the store). A key is one signal:
adding a key that is already present replaces its entry, whatever its type.

Exact types (``md5``, ``sha1``, ``sha256``, ``url``) are a dict from value to keys.

Hamming types (``pdq`` 256 bits, ``phash`` and ``dhash`` 64 bits) use multi-index hashing
(Norouzi, Punjani and Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012):

- Each hash is cut into ``m`` contiguous substrings of ``w`` or ``w + 1`` bits (in the hex's
  big-endian bit order). If ``d(h, q) <= r``, the substring distances add up to at most ``r``, so
  for per-substring radii ``r_t`` with ``sum(r_t + 1) >= r + 1`` at least one substring has
  ``d_t <= r_t`` (pigeonhole). A query therefore probes, in every table ``t``, each substring value
  within ``r_t`` of its own, and verifies the stored hashes found there by full Hamming distance:
  recall is 100% by construction, never a tuning accident. The radii are re-derived for each query
  radius (``q, s = divmod(r + 1, m)``: ``s`` tables at radius ``q`` and the others at ``q - 1``,
  the larger radius going to the tables where it costs least), so a per-call radius larger than the
  default is exact too. When the probe set would exceed ``MAX_PROBES`` or the expected candidates
  the whole segment, the segment is scanned linearly instead (also exact).
- ``m`` is chosen when the segment is built from its size ``N`` and the type's default radius by
  minimising ``probes + expected candidates`` with ``w <= ceil(log2 N)`` (Norouzi's rule
  ``w ~ log2 N``). At N = 10 M PDQ and r = 31 that is ``m = 11`` (three 24-bit and eight 23-bit
  substrings): about 2,900 probes and 2,900 random candidates per query. At 10 M 64-bit hashes and
  r = 10 it is ``m = 3`` (22, 21, 21 bits).
- A table is a CSR bucket array: ``postings`` (uint32 row numbers, grouped by substring value)
  plus a two-level directory of bucket starts, ``coarse[b >> k] + fine[b]``, with ``fine`` one byte
  per possible substring value (the block size ``2**k`` is the largest whose entry count fits).
  Looking up a probe is two array reads; everything is vectorised over all probes of all tables and,
  in ``query_batch``, over many queries at once, in threads (numpy releases the GIL).
- Memory per signal at 10 M PDQ: 32 (hash) + 4 * m (postings) + ~12 (directories) + 4 or 8 (key),
  about 92 bytes. 64-bit types also keep, per table, a copy of the hashes in bucket order, so
  candidates are verified from contiguous memory rather than by random reads (~49 bytes/signal).

Updates never rebuild on the spot. New signals go to a small *delta* searched by brute force;
removals are tombstones filtered out of answers. When the delta reaches ``delta_limit``
(``N / 128`` clamped to 1,024..16,384) it is folded into a *middle segment* (the same structure
as the main one, at most an eighth of its size), and the middle segment is folded into the main
segment when it would pass that eighth. A fold *appends* (each new row inserted at the end of
its bucket in every table, one memory move of the segment, no sorting) when the new keys all
follow the segment's (store row ids grow) and the segment has not doubled since its layout was
chosen; otherwise the segment is rebuilt from its live rows, and everything is rebuilt when
tombstones reach a quarter of the rows. Folding every delta straight into a 10 M main segment
moved ~1 GB per 16,384 adds (~100 µs per add); through the middle segment an add costs ~3 µs,
and a query searches one more, smaller segment (``bench_match.py``, update table). All of this
is paid by the ``add``/``remove`` call that trips it; ``compact()`` rebuilds on demand.

The index is not thread-safe for mutation: callers serialise ``add``/``remove`` with queries.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

MAX_PROBES = 1 << 16  # per query; beyond this a segment is scanned linearly
_MIN_WIDTH_BITS = 8
_MAX_WIDTH_BITS = 26
_MAX_BLOCK_SHIFT = 12
_CHUNK_WORK = 1 << 18  # probes + expected candidates of the queries vectorised together
_SCAN_CHUNK_ROWS = 1 << 20
_PARALLEL_BUILD_ROWS = 1 << 16
_CACHE_ROWS = 1 << 15
_FEW_ROWS = 256

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Index = npt.NDArray[np.signedinteger[Any]]  # int32 while the arrays allow it, else int64
IntArray = npt.NDArray[np.integer[Any]]


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching signal: its store key and its Hamming distance (0 for exact types)."""

    key: int
    distance: int


# ---------------------------------------------------------------------------------------------
# Substring layout and probe plans


@dataclass(frozen=True, slots=True)
class _Layout:
    """How a hash of ``bits`` bits is cut into contiguous substrings."""

    bits: int
    widths: tuple[int, ...]

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(itertools.accumulate(self.widths, initial=0))[:-1]

    def substrings(self, hashes: U8) -> U32:
        """Substring values of each row of ``hashes`` (n, bits / 8), as an (n, m) array."""
        if len(hashes) <= _FEW_ROWS:
            return self._few_substrings(hashes)
        out = np.empty((hashes.shape[0], len(self.widths)), dtype=np.uint32)
        for start in range(0, len(hashes), _CACHE_ROWS):  # row blocks that stay in cache
            self._substrings_into(hashes[start : start + _CACHE_ROWS], out[start:])
        return out

    def _few_substrings(self, hashes: U8) -> U32:
        """``substrings`` through Python integers: faster for a handful of query rows."""
        cuts = [
            (self.bits - offset - width, (1 << width) - 1)
            for offset, width in zip(self.offsets, self.widths, strict=True)
        ]
        raw, size = hashes.tobytes(), hashes.shape[1]
        values = [int.from_bytes(raw[i : i + size], "big") for i in range(0, len(raw), size)]
        out = np.array([[v >> s & m for s, m in cuts] for v in values], dtype=np.uint32)
        return out.reshape(len(hashes), len(cuts))

    def _substrings_into(self, hashes: U8, out: U32) -> None:
        for t, (offset, width) in enumerate(zip(self.offsets, self.widths, strict=True)):
            first, last = offset // 8, (offset + width - 1) // 8
            acc = hashes[:, first].astype(np.uint64)
            for column in range(first + 1, last + 1):
                acc = (acc << np.uint64(8)) | hashes[:, column]
            shift = np.uint64((last + 1) * 8 - offset - width)
            out[: len(hashes), t] = (acc >> shift) & np.uint64((1 << width) - 1)


def _split_bits(bits: int, m: int) -> tuple[int, ...]:
    wide, rest = divmod(bits, m)
    return (wide + 1,) * rest + (wide,) * (m - rest)


def _ball(width: int, radius: int) -> int:
    """Number of ``width``-bit values within ``radius`` of a given one."""
    return sum(math.comb(width, d) for d in range(min(radius, width) + 1))


def _table_cost(width: int, radius: int, n: int) -> float:
    """Probes plus expected (uniform) candidates for one table at one radius."""
    return 0.0 if radius < 0 else _ball(width, radius) * (1.0 + n / 2.0**width)


def _assign_radii(widths: Sequence[int], radius: int, n: int) -> tuple[int, ...]:
    """Per-table radii with ``sum(r_t + 1) == radius + 1``, the larger ones where cheapest."""
    q, s = divmod(radius + 1, len(widths))
    extra = sorted(
        range(len(widths)),
        key=lambda t: _table_cost(widths[t], q, n) - _table_cost(widths[t], q - 1, n),
    )[:s]
    return tuple(q if t in extra else q - 1 for t in range(len(widths)))


def _choose_layout(bits: int, n: int, radius: int) -> _Layout:
    """The ``m`` that minimises probes + candidates for ``n`` hashes at ``radius``."""
    cap = max(_MIN_WIDTH_BITS, min(_MAX_WIDTH_BITS, math.ceil(math.log2(max(n, 2)))))
    best: tuple[float, _Layout] | None = None
    for m in range(math.ceil(bits / cap), bits // _MIN_WIDTH_BITS + 1):
        widths = _split_bits(bits, m)
        radii = _assign_radii(widths, radius, n)
        cost = sum(_table_cost(w, r, n) for w, r in zip(widths, radii, strict=True))
        if best is None or cost < best[0]:
            best = (cost, _Layout(bits, widths))
    assert best is not None
    return best[1]


@lru_cache(maxsize=256)
def _flip_masks(width: int, radius: int) -> U32:
    """All ``width``-bit masks of popcount <= ``radius`` (ascending popcount)."""
    if radius >= width:
        return np.arange(1 << width, dtype=np.uint32)
    masks = [sum(1 << i for i in bits) for d in range(radius + 1) for bits in _combos(width, d)]
    out = np.array(masks, dtype=np.uint32)
    out.flags.writeable = False
    return out


def _combos(width: int, d: int) -> Iterator[tuple[int, ...]]:
    return itertools.combinations(range(width), d)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The probes of one radius, flattened over tables: a query's probe ``p`` is
    ``substring[column[p]] ^ mask[p]``, looked up with table ``column[p]``'s directory."""

    column: npt.NDArray[np.intp]
    mask: U32
    candidates: float  # expected per query (uniform hashes)
    fine_base: Index
    coarse_base: Index
    shift: Index


# ---------------------------------------------------------------------------------------------
# Vectorised helpers


def _expand_ranges(starts: Index, lengths: Index) -> Index:
    """The concatenation of ``range(starts[i], starts[i] + lengths[i])``."""
    ends = np.cumsum(lengths)
    if not len(ends) or not ends[-1]:
        return _EMPTY_I64
    shift: Index = np.repeat(starts - ends + lengths, lengths)
    return shift + np.arange(int(ends[-1]), dtype=starts.dtype)


def _as_words(hashes: U8) -> U64:
    return np.ascontiguousarray(hashes).view(np.uint64)


def _distances(words: U64, query_words: U64) -> npt.NDArray[np.uint16]:
    """Row-wise Hamming distances of two (n, W) uint64 arrays."""
    x = words ^ query_words
    total: npt.NDArray[np.uint16] = np.bitwise_count(x[:, 0]).astype(np.uint16)
    for j in range(1, x.shape[1]):
        total += np.bitwise_count(x[:, j])
    return total


def _parse_hex_many(values: Sequence[str], nbytes: int) -> U8:
    """Parse hex strings of ``2 * nbytes`` characters into an (n, nbytes) uint8 array."""
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    bad = np.flatnonzero(lengths != 2 * nbytes)
    if len(bad):
        raise ValueError(f"expected {2 * nbytes} hex characters, got {values[int(bad[0])]!r}")
    try:
        raw = bytes.fromhex("".join(values))
    except ValueError:
        raw = b""
    if len(raw) != nbytes * len(values):
        for value in values:
            _parse_hex(value, nbytes)
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(values), nbytes)


def _parse_hex(value: str, nbytes: int) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(value) != 2 * nbytes or len(raw) != nbytes:
        raise ValueError(f"expected {2 * nbytes} hex characters, got {value!r}")
    return raw


def _worker_count() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


# ---------------------------------------------------------------------------------------------
# The main segment: an immutable multi-index over rows sorted by key


class _Segment:
    """Rows ``0..n-1`` (hash bytes and keys, sorted by key) and one bucket table per substring:
    ``postings`` holds every table's row numbers grouped by bucket, table after table, and
    ``starts[t][b]`` is where bucket ``b`` of table ``t`` starts within that table."""

    def __init__(
        self, keys: IntArray, hashes: U8, layout: _Layout, postings: U32, starts: list[I64]
    ) -> None:
        self.n = len(keys)
        self.keys = keys
        self.hashes = hashes
        self.words: U64 = hashes.view(np.uint64)
        self.layout = layout
        self.postings = postings
        self._plans: dict[int, _Plan | None] = {}
        self._install(starts)

    @classmethod
    def build(cls, keys: IntArray, hashes: U8, radius: int) -> _Segment:
        layout = _choose_layout(hashes.shape[1] * 8, len(keys), radius)
        return cls(keys, hashes, layout, *_sort_tables(layout, hashes))

    def append(self, keys: IntArray, hashes: U8) -> _Segment:
        """A new segment with these rows (keys above all of ours) added at the end, without
        re-sorting: each new row is inserted at the end of its bucket in every table."""
        subs = self.layout.substrings(hashes)
        rows = np.arange(self.n, self.n + len(keys), dtype=np.uint32)
        positions, starts = [], []
        for t, width in enumerate(self.layout.widths):
            old = self._starts(t)
            positions.append(old[subs[:, t].astype(np.int64) + 1] + t * self.n)
            new = old.copy()
            new[1:] += np.cumsum(np.bincount(subs[:, t], minlength=1 << width))
            starts.append(new)
        postings = np.insert(self.postings, np.concatenate(positions), np.tile(rows, len(starts)))
        all_keys = np.concatenate([self.keys, keys.astype(self.keys.dtype)])
        all_hashes = np.concatenate([self.hashes, hashes])
        return _Segment(all_keys, all_hashes, self.layout, postings, starts)

    def _starts(self, t: int) -> I64:
        """Table ``t``'s bucket starts, read back from its directory."""
        size, k = 1 << self.layout.widths[t], int(self.shift[t])
        first = int(self.coarse_base[t])
        coarse = self.coarse[first : first + (size >> k) + 1].astype(np.int64) - t * self.n
        fine = self.fine[int(self.fine_base[t]) :][: size + 1]
        starts: I64 = np.repeat(coarse, 1 << k)[: size + 1] + fine
        return starts

    def _install(self, starts: list[I64]) -> None:
        fine_dtype, shifts = _choose_fine_dtype(starts)
        dirs = [
            _directory(table, t * self.n, fine_dtype, k)
            for t, (table, k) in enumerate(zip(starts, shifts, strict=True))
        ]
        self.fine = np.concatenate([f for _, f in dirs])
        small = max(len(self.fine), len(self.postings)) < np.iinfo(np.int32).max
        self.index_dtype = np.int32 if small else np.int64
        self.coarse: Index = np.concatenate([c for c, _ in dirs]).astype(self.index_dtype)
        self.shift: Index = np.array(shifts, dtype=self.index_dtype)
        self.coarse_base: Index = _bases([len(c) for c, _ in dirs]).astype(self.index_dtype)
        self.fine_base: Index = _bases([len(f) for _, f in dirs]).astype(self.index_dtype)
        self.inline: U64 | None = None
        if self.words.shape[1] == 1:
            self.inline = np.take(self.words[:, 0], self.postings)

    def nbytes(self) -> int:
        arrays = (self.keys, self.hashes, self.postings, self.coarse, self.fine)
        inline = 0 if self.inline is None else self.inline.nbytes
        return sum(a.nbytes for a in arrays) + inline

    def plan(self, radius: int) -> _Plan | None:
        if radius not in self._plans:
            self._plans[radius] = self._make_plan(radius)
        return self._plans[radius]

    def _make_plan(self, radius: int) -> _Plan | None:
        widths = self.layout.widths
        radii = _assign_radii(widths, radius, self.n)
        probes = sum(_ball(w, r) for w, r in zip(widths, radii, strict=True) if r >= 0)
        expected = sum(
            _ball(w, r) * self.n / 2.0**w for w, r in zip(widths, radii, strict=True) if r >= 0
        )
        if probes > MAX_PROBES or expected >= self.n:
            return None
        used = [t for t, r in enumerate(radii) if r >= 0]
        masks = [_flip_masks(widths[t], radii[t]) for t in used]
        column = np.repeat(np.array(used, dtype=np.intp), [len(m) for m in masks])
        return _Plan(
            column=column,
            mask=np.concatenate(masks),
            candidates=expected,
            fine_base=self.fine_base[column],
            coarse_base=self.coarse_base[column],
            shift=self.shift[column],
        )

    def search(self, queries: U8, radius: int) -> tuple[I64, I64, I64]:
        """(query number, row, distance) of every row within ``radius`` of a query (with
        duplicates when a row is found through several tables)."""
        if self.n == 0:
            return _EMPTY_I64, _EMPTY_I64, _EMPTY_I64
        plan = self.plan(radius)
        if plan is None:
            return self._scan(queries, radius)
        subs = self.layout.substrings(queries)
        values: Index = (subs[:, plan.column] ^ plan.mask).astype(self.index_dtype)
        starts = self._bucket_start(plan, values)
        lengths = self._bucket_start(plan, values + 1) - starts
        per_query = lengths.sum(axis=1)
        index = _expand_ranges(starts.ravel(), lengths.ravel())
        query = np.repeat(np.arange(len(queries), dtype=np.int64), per_query)
        qwords = np.repeat(_as_words(queries), per_query, axis=0)
        if self.inline is not None:  # 64-bit hashes: verify from the table's own copy
            dist = np.bitwise_count(np.take(self.inline, index) ^ qwords[:, 0])
            keep = np.flatnonzero(dist <= radius)
            rows = np.take(self.postings, index[keep]).astype(np.int64)
            return query[keep], rows, dist[keep].astype(np.int64)
        rows = np.take(self.postings, index).astype(np.int64)
        dist = _distances(np.take(self.words, rows, axis=0), qwords)
        keep = np.flatnonzero(dist <= radius)
        return query[keep], rows[keep], dist[keep].astype(np.int64)

    def _bucket_start(self, plan: _Plan, values: Index) -> Index:
        coarse = np.take(self.coarse, plan.coarse_base + (values >> plan.shift))
        start: Index = coarse + np.take(self.fine, plan.fine_base + values)
        return start

    def _scan(self, queries: U8, radius: int) -> tuple[I64, I64, I64]:
        found: list[tuple[I64, I64, I64]] = []
        for start in range(0, self.n, _SCAN_CHUNK_ROWS):
            block = self.words[start : start + _SCAN_CHUNK_ROWS]
            for q, qwords in enumerate(_as_words(queries)):
                dist = _distances(block, np.tile(qwords, (len(block), 1)))
                rows = np.flatnonzero(dist <= radius)
                found.append((np.full(len(rows), q), rows + start, dist[rows].astype(np.int64)))
        return _concat3(found)


_EMPTY_I64: I64 = np.empty(0, np.int64)


def _bases(lengths: Sequence[int]) -> I64:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def _concat3(parts: Sequence[tuple[I64, I64, I64]]) -> tuple[I64, I64, I64]:
    if not parts:
        return _EMPTY_I64, _EMPTY_I64, _EMPTY_I64
    a, b, c = zip(*parts, strict=True)
    return (
        np.concatenate(a).astype(np.int64),
        np.concatenate(b).astype(np.int64),
        np.concatenate(c).astype(np.int64),
    )


def _sort_tables(layout: _Layout, hashes: U8) -> tuple[U32, list[I64]]:
    """Every table's postings (row numbers grouped by substring value, stably), concatenated,
    and its bucket starts; tables are sorted in threads for large segments."""
    subs = layout.substrings(hashes)
    n = len(hashes)
    postings = np.empty(n * len(layout.widths), dtype=np.uint32)

    def sort_table(t: int) -> I64:
        packed = (subs[:, t].astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
        packed.sort()
        postings[t * n : (t + 1) * n] = packed & np.uint64(0xFFFFFFFF)
        starts = np.zeros((1 << layout.widths[t]) + 1, dtype=np.int64)
        np.cumsum(np.bincount(subs[:, t], minlength=len(starts) - 1), out=starts[1:])
        return starts

    if n < _PARALLEL_BUILD_ROWS:
        return postings, [sort_table(t) for t in range(len(layout.widths))]
    with ThreadPoolExecutor(max_workers=_worker_count()) as pool:
        return postings, list(pool.map(sort_table, range(len(layout.widths))))


def _largest_block_shift(starts: I64, limit: int) -> int:
    """The largest ``k`` such that every aligned block of ``2**k`` buckets holds <= limit
    (block totals only grow with ``k``: a binary search, cheapest levels first)."""
    low, high = 0, min(_MAX_BLOCK_SHIFT, (len(starts) - 1).bit_length() - 1)
    while low < high:
        k = (low + high + 1) // 2
        if int(np.diff(starts[:: 1 << k]).max()) <= limit:
            low = k
        else:
            high = k - 1
    return low


def _choose_fine_dtype(
    all_starts: Sequence[I64],
) -> tuple[type[np.unsignedinteger[Any]], list[int]]:
    """uint8 or uint16 for the fine directories, whichever takes less memory overall, and the
    block shift ``k`` of each table for it."""
    best: tuple[int, type[np.unsignedinteger[Any]], list[int]] | None = None
    for dtype in (np.uint8, np.uint16):
        limit = int(np.iinfo(dtype).max)
        shifts = [_largest_block_shift(starts, limit) for starts in all_starts]
        if dtype is np.uint8 and min(shifts, default=3) >= 3:
            return dtype, shifts  # coarse already under half the fine size: uint16 cannot win
        size = sum(
            len(starts) * np.dtype(dtype).itemsize + (len(starts) >> k) * 4
            for starts, k in zip(all_starts, shifts, strict=True)
        )
        if best is None or size < best[0]:
            best = (size, dtype, shifts)
    assert best is not None
    return best[1], best[2]


def _directory(
    starts: I64, base: int, fine_dtype: type[np.unsignedinteger[Any]], k: int
) -> tuple[I64, npt.NDArray[np.unsignedinteger[Any]]]:
    """Bucket ``b`` starts at ``coarse[b >> k] + fine[b]`` (absolute position in postings)."""
    heads = starts[:: 1 << k]
    fine = np.zeros(len(starts), dtype=fine_dtype)
    fine[:-1] = (starts[:-1].reshape(-1, 1 << k) - heads[:-1, None]).ravel()
    return heads + base, fine


# ---------------------------------------------------------------------------------------------
# One Hamming signal type: main segment + brute-force delta + tombstones


class _Delta:
    """Recently added hashes, searched by brute force."""

    def __init__(self, nbytes: int) -> None:
        self.hashes = np.empty((0, nbytes), dtype=np.uint8)
        self.keys = np.empty(0, dtype=np.int64)
        self.n = 0
        self.slot: dict[int, int] = {}

    def add(self, key: int, raw: bytes) -> None:
        if self.n == len(self.keys):
            capacity = max(64, 2 * self.n)
            self.hashes = np.resize(self.hashes, (capacity, self.hashes.shape[1]))
            self.keys = np.resize(self.keys, capacity)
        self.hashes[self.n] = np.frombuffer(raw, dtype=np.uint8)
        self.keys[self.n] = key
        self.slot[key] = self.n
        self.n += 1

    def remove(self, key: int) -> bool:
        slot = self.slot.pop(key, None)
        if slot is None:
            return False
        self.n -= 1
        if slot != self.n:
            moved = int(self.keys[self.n])
            self.hashes[slot] = self.hashes[self.n]
            self.keys[slot] = moved
            self.slot[moved] = slot
        return True

    def search(self, queries: U8, radius: int) -> tuple[I64, I64, I64]:
        """(query number, key, distance) of every entry within ``radius``."""
        if self.n == 0:
            return _EMPTY_I64, _EMPTY_I64, _EMPTY_I64
        words = self.hashes[: self.n].view(np.uint64)
        qwords = np.ascontiguousarray(queries).view(np.uint64)
        found = []
        for q in range(len(qwords)):
            dist = _distances(words, np.tile(qwords[q], (self.n, 1)))
            rows = np.flatnonzero(dist <= radius)
            found.append((np.full(len(rows), q), self.keys[rows], dist[rows].astype(np.int64)))
        return _concat3(found)


class _Tier:
    """A segment with its tombstones (rows removed since it was built) and the size its
    layout was chosen for (appends keep that layout until the segment doubles)."""

    def __init__(self, segment: _Segment) -> None:
        self.segment = segment
        self.dead: set[int] = set()
        self.laid_out_for = segment.n

    @classmethod
    def build(cls, keys: I64, hashes: U8, radius: int) -> _Tier:
        if len(keys) and not bool((keys[1:] > keys[:-1]).all()):  # sorted: the start-up case
            order = np.argsort(keys, kind="stable")
            keys, hashes = keys[order], hashes[order]
        small = not len(keys) or (keys[0] >= 0 and keys[-1] < 1 << 32)
        key_dtype = np.uint32 if small else np.int64
        return cls(_Segment.build(keys.astype(key_dtype), hashes, radius))

    @property
    def n(self) -> int:
        return self.segment.n

    @property
    def live(self) -> int:
        return self.segment.n - len(self.dead)

    def row(self, key: int) -> int | None:
        keys = self.segment.keys
        if not len(keys) or not int(keys[0]) <= key <= int(keys[-1]):
            return None
        row = int(keys.searchsorted(keys.dtype.type(key)))  # a Python int would copy keys
        return row if int(keys[row]) == key and row not in self.dead else None

    def remove_many(self, keys: I64) -> None:
        own = self.segment.keys
        if not len(own) or not len(keys):
            return
        inside = keys[(keys >= own[0]) & (keys <= own[-1])].astype(own.dtype)
        rows = own.searchsorted(inside)
        self.dead.update(rows[own[rows] == inside].tolist())

    def rows(self) -> tuple[I64, U8]:
        """The live rows' keys and hashes, in key order."""
        live = np.ones(self.segment.n, dtype=bool)
        live[list(self.dead)] = False
        return self.segment.keys[live].astype(np.int64), self.segment.hashes[live]

    def grown(self, keys: I64, hashes: U8, radius: int) -> _Tier:
        """This tier with the new rows: appended when their keys all follow ours and the
        segment has not doubled since its layout was chosen (rows keep their numbers, so the
        tombstones stay); else rebuilt from the live rows."""
        segment = self.segment
        appendable = (
            segment.n > 0
            and segment.n + len(keys) <= 2 * self.laid_out_for
            and int(keys.min()) > int(segment.keys[-1])
            and int(keys.max()) <= np.iinfo(segment.keys.dtype).max
        )
        if appendable:
            order = np.argsort(keys, kind="stable")
            tier = _Tier(segment.append(keys[order], hashes[order]))
            tier.dead, tier.laid_out_for = self.dead, self.laid_out_for
            return tier
        own_keys, own_hashes = self.rows()
        return _Tier.build(
            np.concatenate([own_keys, keys]), np.concatenate([own_hashes, hashes]), radius
        )

    def search(self, queries: U8, radius: int) -> tuple[I64, I64, I64]:
        """(query number, key, distance) of every live row within radius (with duplicates)."""
        query, rows, dist = self.segment.search(queries, radius)
        if self.dead:
            alive = np.fromiter((r not in self.dead for r in rows.tolist()), bool, len(rows))
            query, rows, dist = query[alive], rows[alive], dist[alive]
        return query, self.segment.keys[rows].astype(np.int64), dist

    def nbytes(self) -> int:
        return self.segment.nbytes() + sys.getsizeof(self.dead) + 28 * len(self.dead)


class _HammingIndex:
    """Three tiers: the main segment, a middle segment of at most an eighth of it, and the
    delta. The delta is folded into the middle segment (a move of the middle segment's
    memory, not the main one's), and the middle segment into the main one when it passes an
    eighth of it, so an add costs about 16x less memory traffic than folding every delta into
    the main segment; a query searches one more segment."""

    def __init__(self, bits: int, radius: int) -> None:
        self.nbytes = bits // 8
        self.radius = radius
        self.main = _Tier.build(_EMPTY_I64, np.empty((0, self.nbytes), np.uint8), radius)
        self.mid = _Tier.build(_EMPTY_I64, np.empty((0, self.nbytes), np.uint8), radius)
        self.delta = _Delta(self.nbytes)

    def __len__(self) -> int:
        return self.main.live + self.mid.live + self.delta.n

    @property
    def laid_out_for(self) -> int:  # the main segment's size when its layout was chosen
        return self.main.laid_out_for

    @property
    def delta_limit(self) -> int:
        return min(16_384, max(1_024, self.main.n // 128))

    def __contains__(self, key: int) -> bool:
        return (
            key in self.delta.slot
            or self.mid.row(key) is not None
            or self.main.row(key) is not None
        )

    def add(self, key: int, raw: bytes) -> None:
        self.delta.add(key, raw)
        if self.delta.n >= self.delta_limit:
            self.flush()

    def add_many(self, keys: I64, hashes: U8) -> None:
        if self.delta.n + len(keys) < self.delta_limit:
            for key, row in zip(keys.tolist(), hashes, strict=True):
                self.delta.add(key, row.tobytes())
            return
        self.flush(keys, hashes)

    def remove(self, key: int) -> bool:
        if self.delta.remove(key):
            return True
        for tier in (self.mid, self.main):
            row = tier.row(key)
            if row is not None:
                tier.dead.add(row)
                if len(self.main.dead) + len(self.mid.dead) > max(
                    self.delta_limit, (self.main.n + self.mid.n) // 4
                ):
                    self.rebuild()
                return True
        return False

    def remove_many(self, keys: I64) -> None:
        if self.delta.n:
            for key in set(self.delta.slot).intersection(keys.tolist()):
                self.delta.remove(key)
        self.mid.remove_many(keys)
        self.main.remove_many(keys)

    def flush(self, keys: I64 = _EMPTY_I64, hashes: U8 | None = None) -> None:
        """Move the delta, and optional new rows, into the middle segment; or, with the middle
        segment, into the main one once they would pass an eighth of it."""
        new_keys = np.concatenate([self.delta.keys[: self.delta.n], keys])
        parts = [self.delta.hashes[: self.delta.n]]
        new_hashes = np.concatenate([*parts, hashes] if hashes is not None else parts)
        self.delta = _Delta(self.nbytes)
        if not len(new_keys):
            return
        if self.main.n and self.mid.live + len(new_keys) <= self.main.n // 8:
            self.mid = self.mid.grown(new_keys, new_hashes, self.radius)
            return
        mid_keys, mid_hashes = self.mid.rows()
        self.mid = _Tier.build(_EMPTY_I64, np.empty((0, self.nbytes), np.uint8), self.radius)
        self.main = self.main.grown(
            np.concatenate([mid_keys, new_keys]),
            np.concatenate([mid_hashes, new_hashes]),
            self.radius,
        )

    def rebuild(self, keys: I64 = _EMPTY_I64, hashes: U8 | None = None) -> None:
        """Rebuild the main segment from every live row, the delta and optional new rows."""
        main_keys, main_hashes = self.main.rows()
        mid_keys, mid_hashes = self.mid.rows()
        all_keys = np.concatenate([main_keys, mid_keys, self.delta.keys[: self.delta.n], keys])
        parts = [main_hashes, mid_hashes, self.delta.hashes[: self.delta.n]]
        all_hashes = np.concatenate([*parts, hashes] if hashes is not None else parts)
        self.delta = _Delta(self.nbytes)
        self.mid = _Tier.build(_EMPTY_I64, np.empty((0, self.nbytes), np.uint8), self.radius)
        self.main = _Tier.build(all_keys, all_hashes, self.radius)

    def chunk_size(self, radius: int) -> int:
        """How many queries to vectorise together: enough to amortise numpy's per-call cost,
        few enough that the temporaries stay in cache."""
        main = self.main.segment
        plan = main.plan(radius) if main.n else None
        work = 1.0 + (len(plan.mask) + plan.candidates if plan else main.n)
        return int(min(64, max(1, _CHUNK_WORK // work)))

    def query(self, queries: U8, radius: int) -> list[list[Hit]]:
        found = [tier.search(queries, radius) for tier in (self.main, self.mid) if tier.n]
        found.append(self.delta.search(queries, radius))
        query, keys, dist = _concat3(found)
        return _group_hits(len(queries), query, keys, dist)

    def memory_bytes(self) -> int:
        delta = self.delta.hashes.nbytes + self.delta.keys.nbytes + sys.getsizeof(self.delta.slot)
        return self.main.nbytes() + self.mid.nbytes() + delta


def _group_hits(n_queries: int, query: I64, keys: I64, dist: I64) -> list[list[Hit]]:
    """Per query, the distinct keys sorted by (distance, key)."""
    order = np.lexsort((keys, dist, query))
    query, keys, dist = query[order], keys[order], dist[order]
    fresh = np.ones(len(order), dtype=bool)
    fresh[1:] = (query[1:] != query[:-1]) | (keys[1:] != keys[:-1])
    query, keys, dist = query[fresh], keys[fresh], dist[fresh]
    bounds = np.searchsorted(query, np.arange(n_queries + 1)).tolist()
    key_list, dist_list = keys.tolist(), dist.tolist()
    return [
        [Hit(k, d) for k, d in zip(key_list[a:b], dist_list[a:b], strict=True)]
        for a, b in itertools.pairwise(bounds)
    ]


# ---------------------------------------------------------------------------------------------
# Exact types


class TypeIndex(Protocol):
    """The index of one signal type, as ``MatchIndex`` drives it (``node.media.types`` names
    the class each type uses). Values are parsed (and so validated) before anything changes."""

    def parse(self, value: str) -> Any: ...
    def parse_many(self, values: Sequence[str]) -> Any: ...
    def add_parsed(self, key: int, parsed: Any) -> None: ...
    def add_parsed_many(self, keys: I64, parsed: Any) -> None: ...
    def remove(self, key: int) -> bool: ...
    def remove_many(self, keys: I64) -> None: ...
    def query_batch(self, values: Sequence[str], radius: int | None) -> list[list[Hit]]: ...
    def rebuild(self) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: int) -> bool: ...
    def memory_bytes(self) -> int: ...


class HammingIndex:
    """A Hamming type's index: multi-index hashing over ``bits``-bit values (module docstring)."""

    def __init__(self, bits: int, radius: int) -> None:
        if not 0 <= radius <= bits:
            raise ValueError(f"bad radius {radius!r} for {bits}-bit hashes")
        self.bits, self.radius = bits, radius
        self._index = _HammingIndex(bits, radius)

    def parse(self, value: str) -> bytes:
        return _parse_hex(value, self.bits // 8)

    def parse_many(self, values: Sequence[str]) -> U8:
        return _parse_hex_many(values, self.bits // 8)

    def add_parsed(self, key: int, parsed: bytes) -> None:
        self._index.add(key, parsed)

    def add_parsed_many(self, keys: I64, parsed: U8) -> None:
        self._index.add_many(keys, parsed)

    def remove(self, key: int) -> bool:
        return self._index.remove(key)

    def remove_many(self, keys: I64) -> None:
        self._index.remove_many(keys)

    def query_batch(self, values: Sequence[str], radius: int | None) -> list[list[Hit]]:
        r = self.radius if radius is None else radius
        if not 0 <= r <= self.bits:
            raise ValueError(f"bad radius {r!r} for {self.bits}-bit hashes")
        index = self._index
        queries = _parse_hex_many(values, index.nbytes)
        size = index.chunk_size(r)
        chunks = [queries[i : i + size] for i in range(0, len(queries), size)]
        workers = min(_worker_count(), len(chunks))
        if workers <= 1:
            return [hits for chunk in chunks for hits in index.query(chunk, r)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            answers = pool.map(lambda chunk: index.query(chunk, r), chunks)
            return [hits for answer in answers for hits in answer]

    def rebuild(self) -> None:
        self._index.rebuild()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: int) -> bool:
        return key in self._index

    def memory_bytes(self) -> int:
        return self._index.memory_bytes()


class ExactIndex:
    """An exact type's index: a dict from value to keys. ``hex_chars`` values are checked
    as that many hex digits and lower-cased; others (url) only need to be non-empty."""

    def __init__(self, hex_chars: int | None = None) -> None:
        self.hex_chars = hex_chars
        self.by_value: dict[str, list[int]] = {}
        self.by_key: dict[int, str] = {}

    def _value(self, value: str) -> str:
        if self.hex_chars is not None:
            _parse_hex(value, self.hex_chars // 2)
            return value.lower()
        if not value:
            raise ValueError("empty value")
        return value

    def parse(self, value: str) -> str:
        return self._value(value)

    def parse_many(self, values: Sequence[str]) -> list[str]:
        return [self._value(v) for v in values]

    def add_parsed(self, key: int, parsed: str) -> None:
        value = parsed
        self.by_key[key] = value
        self.by_value.setdefault(value, []).append(key)

    def add_parsed_many(self, keys: I64, parsed: list[str]) -> None:
        by_key, by_value = self.by_key, self.by_value
        for key, value in zip(keys.tolist(), parsed, strict=True):
            by_key[key] = value
            by_value.setdefault(value, []).append(key)

    def remove(self, key: int) -> bool:
        value = self.by_key.pop(key, None)
        if value is None:
            return False
        keys = self.by_value[value]
        keys.remove(key)
        if not keys:
            del self.by_value[value]
        return True

    def remove_many(self, keys: I64) -> None:
        if self.by_key:
            for key in self.by_key.keys() & keys.tolist():
                self.remove(key)

    def query_batch(self, values: Sequence[str], radius: int | None) -> list[list[Hit]]:
        if radius not in (None, 0):
            raise ValueError("an exact type takes no radius")
        return [
            [Hit(key, 0) for key in sorted(self.by_value.get(self._value(v), ()))] for v in values
        ]

    def rebuild(self) -> None:
        pass  # nothing to fold

    def __len__(self) -> int:
        return len(self.by_key)

    def __contains__(self, key: int) -> bool:
        return key in self.by_key

    def memory_bytes(self) -> int:
        per_key = sum(sys.getsizeof(v) + 36 for v in self.by_key.values())
        return sys.getsizeof(self.by_key) + sys.getsizeof(self.by_value) + per_key
