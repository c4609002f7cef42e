"""What protocol/ knows of a signal type: ``SignalType``, the contract every type family fills.

One module per type family (``perceptual``, ``digests``, ``url``, ``video``) defines its types as
``TYPES``; ``protocol.signal_types`` is the registry that collects them. The node side of a
type (its hasher, its index, its export names) lives in ``node.media.types``, one module per
family too, and a test fails when a registered type lacks either side (SPEC 5.3, 11).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from protocol.errors import InvalidHashError

HAMMING = "hamming"  # values are bit strings; distance is the count of differing bits
EXACT = "exact"  # values match only when equal
FRAMES = "frames"  # a value is a bag of PDQ frames; videos compare by vPDQ's rule (SPEC 5.3.1)

# the longest canonical value a type may have is its record-size need (SPEC 5.3, 7.1)
MAX_HEX_VALUE_CHARS = 128


@dataclass(frozen=True, slots=True)
class SignalType:
    """One kind of hash: name, canonical form, validation, distance and matching defaults."""

    name: str
    describe: str
    compare: str  # HAMMING or EXACT
    normalise: Callable[[str], str]  # user input -> canonical form, or InvalidHashError
    is_canonical: Callable[[str], object]  # truthy iff the value is in canonical form
    hex_chars: int | None = None  # None for non-hex types (url)
    default_radius: int = 0  # 0 for exact types
    degenerate: tuple[str, ...] = ()  # featureless values (SPEC 5.3), Hamming types only
    max_value_chars: int = MAX_HEX_VALUE_CHARS  # the longest canonical value
    core: bool = False  # one of v1's types, enabled in every federation (SPEC 11)
    frame_distance: Callable[[str, str], int | None] | None = None  # FRAMES types only

    @property
    def bits(self) -> int | None:
        return None if self.hex_chars is None else self.hex_chars * 4

    @property
    def is_hamming(self) -> bool:
        return self.compare == HAMMING

    def distance(self, a: str, b: str) -> int | None:
        """Hamming distance for Hamming types; 0 (equal) or None (no match) for exact ones;
        for frame types, 0 when the two bags match by the type's rule, else None."""
        if self.is_hamming:
            return hamming_distance(a, b)
        if self.frame_distance is not None:
            return self.frame_distance(a, b)
        return 0 if a == b else None


def hamming_distance(a: str, b: str) -> int:
    """Bits that differ between two equal-length hex strings."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def hex_type(
    name: str,
    chars: int,
    describe: str,
    *,
    radius: int = 0,
    degenerate: tuple[str, ...] = (),
    core: bool = False,
) -> SignalType:
    """A type whose values are exactly ``chars`` lower-case hex digits."""
    pattern = re.compile(f"[0-9a-f]{{{chars}}}")

    def normalise(value: str) -> str:
        text = value.strip().lower()
        if pattern.fullmatch(text) is None:
            raise InvalidHashError(
                f"a {name} hash is {chars} hex characters",
                field="value",
                expected=f"{chars} hex chars",
                actual=value,
            )
        return text

    return SignalType(
        name=name,
        describe=describe,
        compare=HAMMING if radius else EXACT,
        normalise=normalise,
        is_canonical=pattern.fullmatch,
        hex_chars=chars,
        default_radius=radius,
        degenerate=degenerate,
        max_value_chars=chars,
        core=core,
    )
