"""Clustered PDQ lists for the match benchmarks: what a real hash list looks like, not random bits.

A real list is clustered: GIFCT's 2.1 M hashes described ~370,000 items, about 5.7 hashes per
item (edits, crops, re-encodes, frames), and PDQ bits of natural images are biased. This module
draws such lists, deterministically from a seed, vectorised with numpy (10 M hashes in seconds):

- **Items.** Each item has ``1 + Poisson(mean_variants - 1)`` listed hashes (mean 5.7 by
  default). Its *centre* is a PDQ hash drawn bit by bit, bit ``i`` set with probability ``p_i``
  (below). The first listed hash is the centre itself (the original); every other one is an
  *edit*: the centre with ``d`` distinct bits flipped at random positions, ``d`` drawn from the
  measured edit distances (below). Edits of one item are thus near each other (most pairs within
  ~20 bits), a few far apart (a logo, a grey SD copy: beyond the match radius, as in real lists).
  Edits at distance 0 (a blur often changes nothing) repeat the centre: kept, as when two members
  list the same hash.
- **Edit distances** (``edit_distances``) come from real edits of one picture or video, hashed
  by Meta's reference PDQ (the conformance set in ``shared/conformance/``; its hashes are what
  ``pdqhash`` computes within a few bits): the 11 edits of ``aaa-orig.jpg`` (blur, sharpen,
  shrink, square crops, contrast, saturation: 0-16 bits, median 4) and, for the video edits of
  ``chair-orig`` (greyscale, a re-encode, a large logo) and the grey SD copy of
  ``pattern-hd``, each frame's distance to the nearest frame of the original (grey and re-encode
  0-10 bits, median 2; logo median 54; grey SD pattern median 82). An edit picks one of these 15
  *edit kinds* uniformly, then a distance from that kind's sample: every real edit counts once,
  however many frames it has. (Frames one second apart of one video are mostly 90-140 bits apart: a
  video's frames are independent centres here, not edits.)
- **Bit bias** (``bit_probabilities``): each bit's P(1), estimated from the PDQ hashes of
  independent real pictures: the conformance images (the 8 dihedral transforms of ``bridge``,
  ``c.png``, ``wee.jpg``) and one frame per second (quality >= 50) of the videos of distinct
  content (``chair-orig``, ``doorknob``, ``pattern-hd``, ``test-padded-dimensions``): 47 hashes
  (consecutive frames are near-copies and would only repeat the same sample). With 47 samples
  each estimate has sampling noise of sd ~0.07, comparable with the spread observed across bits
  (sd ~0.10), so the deviations from 0.5 are scaled by ``sqrt(1 - noise var / observed var)``
  (~0.68): the bias kept has the spread the data supports beyond noise (sd ~0.067 around 0.5,
  per bit 0.35..0.68). ``bias_scale`` multiplies it for a stress run.
  Bits are sampled independently (PDQ's median threshold, which makes each hash about half
  ones, is not modelled).
- **Queries** (``near_duplicate_queries``): new edits of listed items (a centre with a fresh
  drawn distance), kept when within ``radius`` of at least one of the item's listed hashes and
  equal to none of them: an upload of a listed item that nobody listed exactly.
  ``unlisted_queries``: centres of new items (an unrelated upload, almost never a hit).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

CONFORMANCE = Path(__file__).resolve().parents[2].parent / "shared" / "conformance"
PDQ_BITS = 256
MEAN_VARIANTS = 2.1e6 / 370e3  # GIFCT: hashes per item
_CHUNK_ROWS = 1 << 19

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_IMAGE_EDITS = (
    "blur-a-little.jpg", "blur-a-lot.jpg", "high-contrast.jpg", "high-saturation.jpg",
    "sharpen-a-little.jpg", "sharpen-a-lot.jpg", "shrink-a-little.jpg", "shrink-a-lot.jpg",
    "square-128x128.jpg", "square-256x256.jpg", "square-512x512.jpg",
)  # fmt: skip
_VIDEO_EDITS = (
    ("chair-22-sd-grey-bar", "chair-orig-22-sd-bar"),
    ("chair-19-sd-bar", "chair-orig-22-sd-bar"),
    ("chair-22-with-large-logo-bar", "chair-orig-22-sd-bar"),
    ("pattern-sd-grey-bar", "pattern-hd-no-bar"),
)
_DISTINCT_VIDEOS = (
    "chair-orig-22-sd-bar", "doorknob-hd-no-bar", "pattern-hd-no-bar", "test-padded-dimensions",
)  # fmt: skip
_QUALITY = 50


def _bits(hexes: list[str]) -> U8:
    raw = np.frombuffer(bytes.fromhex("".join(hexes)), dtype=np.uint8)
    return np.unpackbits(raw.reshape(len(hexes), -1), axis=1)


def _image_hashes() -> dict[str, str]:
    path = CONFORMANCE / "pdq" / "expected.csv"
    with path.open(newline="") as f:
        return {row["file"]: row["pdq_hex"] for row in csv.DictReader(f)}


def _frames(name: str) -> list[tuple[float, str]]:
    """(timestamp, pdq hex) of a video's reference frames of quality >= 50."""
    out = []
    for line in (CONFORMANCE / "vpdq" / "hashes" / f"{name}.txt").read_text().splitlines():
        _, quality, pdq, timestamp = line.split(",")
        if int(quality) >= _QUALITY:
            out.append((float(timestamp), pdq))
    return out


@lru_cache(maxsize=1)
def edit_distances() -> tuple[I64, ...]:
    """One sample of distances per real edit kind (see the module docstring)."""
    images = _image_hashes()
    original = _bits([images["aaa-orig.jpg"]])[0]
    kinds = [np.array([int((_bits([images[f]])[0] != original).sum())]) for f in _IMAGE_EDITS]
    for edit, source in _VIDEO_EDITS:
        ref = _bits([h for _, h in _frames(source)])
        got = _bits([h for _, h in _frames(edit)])
        nearest = [int((ref != row).sum(axis=1).min()) for row in got]
        kinds.append(np.array(nearest, dtype=np.int64))
    return tuple(k.astype(np.int64) for k in kinds)


@lru_cache(maxsize=1)
def bit_probabilities() -> F64:
    """Each PDQ bit's P(1) over independent real pictures, shrunk towards 0.5 (sampling noise)."""
    images = _image_hashes()
    hexes = [h for f, h in images.items() if f.startswith("bridge-") or f in ("c.png", "wee.jpg")]
    for name in _DISTINCT_VIDEOS:
        last = -1.0
        for timestamp, pdq in _frames(name):
            if timestamp >= last + 1.0:  # one frame a second
                hexes.append(pdq)
                last = timestamp
    samples = _bits(hexes).astype(np.float64)
    p = samples.mean(axis=0)
    noise = float((p * (1 - p)).mean()) / len(samples)
    shrink = max(0.0, 1.0 - noise / float(p.var())) ** 0.5
    shrunk: F64 = 0.5 + shrink * (p - 0.5)
    return shrunk


@dataclass(frozen=True)
class ClusteredList:
    """``hashes`` (n, 32) uint8, ``item`` (n,) the item of each row, ``centres`` one per item
    (row ``starts[i]`` is item i's centre itself, its edits follow)."""

    hashes: U8
    item: I64
    centres: U8
    starts: I64


def _draw_distances(count: int, rng: np.random.Generator) -> I64:
    kinds = edit_distances()
    choice = rng.integers(0, len(kinds), size=count)
    out = np.empty(count, dtype=np.int64)
    for k, sample in enumerate(kinds):
        rows = np.flatnonzero(choice == k)
        out[rows] = sample[rng.integers(0, len(sample), size=len(rows))]
    return out


def _draw_centres(count: int, rng: np.random.Generator, bias_scale: float) -> U8:
    p = np.clip(0.5 + bias_scale * (bit_probabilities() - 0.5), 0.0, 1.0)
    thresholds = np.round(p * 65536).astype(np.uint32)
    out = np.empty((count, PDQ_BITS // 8), dtype=np.uint8)
    for start in range(0, count, _CHUNK_ROWS):
        stop = min(count, start + _CHUNK_ROWS)
        draws = rng.integers(0, 65536, size=(stop - start, PDQ_BITS), dtype=np.uint32)
        out[start:stop] = np.packbits(draws < thresholds, axis=1)
    return out


def flip_random_bits(rows: U8, distances: I64, rng: np.random.Generator) -> U8:
    """Each row with ``distances[i]`` distinct bits flipped at uniformly random positions."""
    out = rows.copy()
    for start in range(0, len(rows), _CHUNK_ROWS):
        stop = min(len(rows), start + _CHUNK_ROWS)
        flips = np.zeros((stop - start, rows.shape[1]), dtype=np.uint8)
        need = distances[start:stop].copy()
        active = np.flatnonzero(need > 0)
        while len(active):
            position = rng.integers(0, rows.shape[1] * 8, size=len(active))
            byte, mask = position >> 3, (0x80 >> (position & 7)).astype(np.uint8)
            fresh = (flips[active, byte] & mask) == 0
            hit, byte, mask = active[fresh], byte[fresh], mask[fresh]
            flips[hit, byte] |= mask
            need[hit] -= 1
            active = active[need[active] > 0]
        out[start:stop] ^= flips
    return out


def generate(
    n: int,
    seed: int,
    *,
    mean_variants: float = MEAN_VARIANTS,
    bias_scale: float = 1.0,
) -> ClusteredList:
    """A clustered list of exactly ``n`` PDQ hashes (see the module docstring)."""
    if n <= 0 or mean_variants < 1:
        raise ValueError("n must be positive and mean_variants at least 1")
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(mean_variants - 1, size=int(n / mean_variants * 1.1) + 16)
    while int(sizes.sum()) < n:
        sizes = np.concatenate([sizes, 1 + rng.poisson(mean_variants - 1, size=len(sizes))])
    ends = np.cumsum(sizes)
    items = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:items]
    sizes[-1] -= int(ends[items - 1]) - n
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    centres = _draw_centres(items, rng, bias_scale)
    item = np.repeat(np.arange(items, dtype=np.int64), sizes)
    distances = _draw_distances(n, rng)
    distances[starts] = 0  # the original
    hashes = flip_random_bits(centres[item], distances, rng)
    return ClusteredList(hashes=hashes, item=item, centres=centres, starts=starts)


def _distances_to(rows: U8, query: U8) -> I64:
    x = np.ascontiguousarray(rows).view(np.uint64) ^ np.ascontiguousarray(query).view(np.uint64)
    total: I64 = np.bitwise_count(x).sum(axis=1).astype(np.int64)
    return total


def near_duplicate_queries(
    data: ClusteredList, count: int, radius: int, rng: np.random.Generator
) -> tuple[U8, I64]:
    """``count`` new edits of listed items, each within ``radius`` of one of its item's listed
    hashes and equal to none; returns them and their items."""
    items = len(data.centres)
    ends = np.append(data.starts[1:], len(data.hashes))
    found: list[U8] = []
    their: list[int] = []
    while len(found) < count:
        picks = rng.integers(0, items, size=count)
        edits = flip_random_bits(data.centres[picks], _draw_distances(count, rng), rng)
        for item, edit in zip(picks.tolist(), edits, strict=True):
            nearest = _distances_to(data.hashes[data.starts[item] : ends[item]], edit).min()
            if 0 < nearest <= radius and len(found) < count:
                found.append(edit)
                their.append(item)
    return np.array(found, dtype=np.uint8), np.array(their, dtype=np.int64)


def unlisted_queries(count: int, rng: np.random.Generator, bias_scale: float = 1.0) -> U8:
    """Centres of new items: unrelated uploads with the same bit bias."""
    return _draw_centres(count, rng, bias_scale)
