"""Perceptual image hashes, compared by Hamming distance: PDQ, pHash, dHash (SPEC 5.3).

Each has *degenerate* values that carry no feature of any picture -- all bits 0 (what PDQ and
dHash give a blank image), all bits 1, and pHash's ``8000000000000000`` (a flat image: only
the DC bit). A value within the radius of one is featureless: never authored, never searched.
"""

from __future__ import annotations

from protocol.types import SignalType, hex_type

TYPES: tuple[SignalType, ...] = (
    hex_type("pdq", 64, "PDQ perceptual image hash, 256 bits, Hamming distance", radius=31,
             degenerate=("0" * 64, "f" * 64), core=True),
    hex_type("phash", 16, "imagehash pHash, 64 bits, Hamming distance", radius=10,
             degenerate=("0" * 16, "f" * 16, "8" + "0" * 15), core=True),
    hex_type("dhash", 16, "imagehash dHash, 64 bits, Hamming distance", radius=10,
             degenerate=("0" * 16, "f" * 16), core=True),
)  # fmt: skip
