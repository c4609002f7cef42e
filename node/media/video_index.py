"""The ``vpdq`` index: every active video's usable frames in one PDQ multi-index.

A ``vpdq`` signal is one value of a video (a long video is several values naming one video id,
``protocol.vpdq``). Each usable frame (PDQ quality >= ``min_quality``) of each signal goes into
a ``HammingIndex`` of 256-bit hashes under a *frame row* of its own, and three arrays give a
row's signal key and timestamp. Matching a query video (``match_videos``):

1. the query's unique usable frames are looked up in the frame index at the frame distance D
   (multi-index hashing: exact, so every frame within D is found);
2. the videos hit are the *candidates*; for each, ``query_matched`` is the number of the query's
   unique frames that hit it, so ``query_matched_pct`` is known without scanning anything else,
   and a candidate below the query threshold is dropped here;
3. only the remaining candidates are scored the other way (``compared_matched_pct``: the share
   of the video's unique usable frames, all its values joined, within D of some query frame),
   by a brute-force XOR/popcount over their frames and the query's, and the query's matched
   time ranges are read off the same comparison.

This is vPDQ's rule exactly (``protocol.vpdq.compare_vpdq``; ``tests/node/test_video_index.py``
checks it against the pure rule), but it costs one index query per query frame plus work
proportional to the candidates' frames, never to the whole list. A still image is matched
against the frames too (``frames_near``): each hit is a video signal and the time of its frame.

Memory per indexed frame: the multi-index's ~92 bytes (``node.media.matchindex``), 32 bytes of
hash kept per signal for scoring, and 12 bytes of row arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from node.media.matchindex import I64, U8, HammingIndex, Hit
from protocol.vpdq import (
    VPDQ_COMPARED_MATCH_PCT,
    VPDQ_DISTANCE,
    VPDQ_MIN_QUALITY,
    VPDQ_QUERY_MATCH_PCT,
    VpdqFrame,
    VpdqHash,
    decode_vpdq,
    runs,
)

_GROW = 1 << 16


@dataclass(frozen=True, slots=True)
class VideoMatch:
    """One listed video that matches a query video, with vPDQ's two shares."""

    video_id: str
    keys: tuple[int, ...]  # the signals (values) of that video, as store keys
    query_matched_pct: float
    compared_matched_pct: float
    ranges_ms: tuple[tuple[int, int], ...]  # stretches of the query that match, (first, last)


@dataclass(frozen=True, slots=True)
class FrameHit:
    """A video signal holding a frame within the radius of a queried PDQ hash."""

    key: int
    timestamp_ms: int
    distance: int


@dataclass(slots=True)
class _Signal:
    video_id: str
    rows: I64  # frame rows in the index
    hashes: U8  # (n, 32) the usable frames' PDQ hashes
    times: npt.NDArray[np.uint32]


class VpdqIndex:
    """Frames of every ``vpdq`` signal, matched by vPDQ's rule (module docstring)."""

    def __init__(self, radius: int = VPDQ_DISTANCE, min_quality: int = VPDQ_MIN_QUALITY) -> None:
        self.radius, self.min_quality = radius, min_quality
        self.frames = HammingIndex(256, radius)
        self._row_key = np.empty(0, dtype=np.int64)
        self._row_ms = np.empty(0, dtype=np.uint32)
        self._rows = 0
        self._signals: dict[int, _Signal] = {}
        self._videos: dict[str, set[int]] = {}

    # -- the TypeIndex interface (node.media.matchindex) ------------------------------------

    def parse(self, value: str) -> VpdqHash:
        return decode_vpdq(value)

    def parse_many(self, values: Sequence[str]) -> list[VpdqHash]:
        return [decode_vpdq(v) for v in values]

    def add_parsed(self, key: int, parsed: VpdqHash) -> None:
        self.add_parsed_many(np.array([key], dtype=np.int64), [parsed])

    def add_parsed_many(self, keys: I64, parsed: Sequence[VpdqHash]) -> None:
        all_rows, all_hashes = [], []
        for key, value in zip(keys.tolist(), parsed, strict=True):
            usable = [f for f in value.frames if f.quality >= self.min_quality]
            hashes = _hash_rows([f.pdq for f in usable])
            times = np.array([f.timestamp_ms for f in usable], dtype=np.uint32)
            rows = np.arange(self._rows, self._rows + len(usable), dtype=np.int64)
            self._reserve(self._rows + len(usable))
            self._row_key[rows] = key
            self._row_ms[rows] = times
            self._rows += len(usable)
            self._signals[key] = _Signal(value.video_id, rows, hashes, times)
            self._videos.setdefault(value.video_id, set()).add(key)
            all_rows.append(rows)
            all_hashes.append(hashes)
        if all_rows:
            self.frames.add_parsed_many(np.concatenate(all_rows), np.concatenate(all_hashes))

    def _reserve(self, rows: int) -> None:
        if rows <= len(self._row_key):
            return
        size = max(rows, 2 * len(self._row_key), _GROW)
        self._row_key = np.resize(self._row_key, size)
        self._row_ms = np.resize(self._row_ms, size)

    def remove(self, key: int) -> bool:
        signal = self._signals.pop(key, None)
        if signal is None:
            return False
        self.frames.remove_many(signal.rows)
        keys = self._videos[signal.video_id]
        keys.discard(key)
        if not keys:
            del self._videos[signal.video_id]
        return True

    def remove_many(self, keys: I64) -> None:
        for key in keys.tolist():
            if key in self._signals:
                self.remove(key)

    def query_batch(self, values: Sequence[str], radius: int | None) -> list[list[Hit]]:
        """Each value taken as a query video: every signal of every video that matches it at
        the default thresholds (distance 0: a match; ``match_videos`` has the shares)."""
        if radius not in (None, self.radius):
            raise ValueError(f"vpdq frames match at {self.radius} bits; use match_videos")
        answers = []
        for value in values:
            found = self.match_videos(decode_vpdq(value).frames)
            answers.append([Hit(k, 0) for k in sorted(k for m in found for k in m.keys)])
        return answers

    def rebuild(self) -> None:
        self.frames.rebuild()

    def __len__(self) -> int:
        return len(self._signals)

    def __contains__(self, key: int) -> bool:
        return key in self._signals

    def memory_bytes(self) -> int:
        per_signal = sum(s.hashes.nbytes + s.rows.nbytes + s.times.nbytes + 120
                         for s in self._signals.values())  # fmt: skip
        return self.frames.memory_bytes() + self._row_key.nbytes + self._row_ms.nbytes + per_signal

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    # -- matching ---------------------------------------------------------------------------

    def match_videos(
        self,
        query: Iterable[VpdqFrame],
        *,
        query_pct: float = VPDQ_QUERY_MATCH_PCT,
        compared_pct: float = VPDQ_COMPARED_MATCH_PCT,
    ) -> list[VideoMatch]:
        """Every listed video that matches the query frames by vPDQ's rule, best first."""
        ordered = sorted(query, key=lambda f: f.timestamp_ms)
        usable = [f for f in ordered if f.quality >= self.min_quality]
        unique = list(dict.fromkeys(f.pdq for f in usable))
        if not unique or not self._signals:
            return []
        hits = self.frames.query_batch(unique, self.radius)
        matched_by_video: dict[str, int] = {}
        for per in hits:
            videos = {
                self._signals[k].video_id for k in self._row_key[[h.key for h in per]].tolist()
            }
            for video in videos:
                matched_by_video[video] = matched_by_video.get(video, 0) + 1
        q_hashes = _hash_rows(unique)
        position = {pdq: i for i, pdq in enumerate(unique)}
        found = []
        for video, matched in matched_by_video.items():
            q_pct = matched * 100 / len(unique)
            if q_pct < query_pct:
                continue
            keys = tuple(sorted(self._videos[video]))
            compared = np.unique(np.concatenate([self._signals[k].hashes for k in keys]), axis=0)
            if not len(compared):
                continue
            near = _within(compared, q_hashes, self.radius)  # (compared, query) bool
            c_pct = int(near.any(axis=1).sum()) * 100 / len(compared)
            if c_pct < compared_pct:
                continue
            q_near: list[bool] = np.asarray(near.any(axis=0)).tolist()
            ranges = runs([(f.timestamp_ms, q_near[position[f.pdq]]) for f in usable])
            found.append(VideoMatch(video, keys, q_pct, c_pct, ranges))
        found.sort(key=lambda m: (-m.query_matched_pct, -m.compared_matched_pct, m.video_id))
        return found

    def frames_near(
        self, pdq_values: Sequence[str], radius: int | None = None
    ) -> list[list[FrameHit]]:
        """For each PDQ hash, the video signals with a usable frame within radius (the
        frame distance by default): one hit per signal, its nearest frame."""
        if not pdq_values or not self._signals:
            return [[] for _ in pdq_values]
        answers = []
        for per in self.frames.query_batch(pdq_values, self.radius if radius is None else radius):
            best: dict[int, FrameHit] = {}
            for hit in per:
                key = int(self._row_key[hit.key])
                if key not in best or hit.distance < best[key].distance:
                    best[key] = FrameHit(key, int(self._row_ms[hit.key]), hit.distance)
            answers.append(sorted(best.values(), key=lambda h: (h.distance, h.key)))
        return answers


def _hash_rows(pdqs: Sequence[str]) -> U8:
    if not pdqs:
        return np.empty((0, 32), dtype=np.uint8)
    raw = np.frombuffer(bytes.fromhex("".join(pdqs)), dtype=np.uint8)
    return raw.reshape(len(pdqs), 32).copy()


def _within(a: U8, b: U8, radius: int) -> npt.NDArray[np.bool_]:
    """(len(a), len(b)): is each row of a within radius bits of each row of b?"""
    wa, wb = a.view(np.uint64), b.view(np.uint64)  # (n, 4) words
    out = np.empty((len(a), len(b)), dtype=np.bool_)
    step = max(1, (1 << 20) // max(1, len(b)))
    for start in range(0, len(a), step):
        block = wa[start : start + step, None, :] ^ wb[None, :, :]
        out[start : start + step] = np.bitwise_count(block).sum(axis=2, dtype=np.uint16) <= radius
    return out
