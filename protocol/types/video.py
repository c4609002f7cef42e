"""Video hashes: ``vpdq``, a bag of PDQ frame hashes compared by vPDQ's rule (SPEC 5.3.1).

The value format, the split of a long video into several values that name one video id, and
the comparison rule live in ``protocol.vpdq``; this module declares the type. ``vpdq`` came
after v1, so it is gated: members author it once the federation has enabled it (SPEC 11).
"""

from __future__ import annotations

from protocol.types import FRAMES, SignalType
from protocol.vpdq import (
    MAX_VPDQ_VALUE_CHARS,
    VPDQ_DISTANCE,
    compare_vpdq,
    decode_vpdq,
    is_canonical_vpdq,
    normalise_vpdq,
)


def _distance(a: str, b: str) -> int | None:
    """0 when the two values match as videos at the defaults, else None."""
    result = compare_vpdq(decode_vpdq(a).frames, decode_vpdq(b).frames)
    return 0 if result.is_match() else None


TYPES: tuple[SignalType, ...] = (
    SignalType(
        name="vpdq",
        describe="vPDQ: PDQ hashes of a video's frames with quality and time, compared as bags",
        compare=FRAMES,
        normalise=normalise_vpdq,
        is_canonical=is_canonical_vpdq,
        default_radius=VPDQ_DISTANCE,  # per frame
        max_value_chars=MAX_VPDQ_VALUE_CHARS,
        frame_distance=_distance,
    ),
)
