"""``NodeSignalType``: the node side of one signal type (``node.media.types``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol.types import SignalType

if TYPE_CHECKING:  # the CLI reads the registry at start-up: numpy and Pillow load when used
    from PIL import Image

    from node.media.matchindex import TypeIndex
    from node.media.video import VideoHashes


@dataclass(frozen=True, slots=True)
class Picture:
    """One decoded, upright picture, as every perceptual hasher sees it."""

    rgb: Image.Image
    gray: Image.Image  # its 8-bit grayscale
    pdq: str  # PDQ hex, computed once: PDQ's quality gates every perceptual type
    pdq_quality: int


@dataclass(frozen=True, slots=True)
class NodeSignalType:
    name: str  # the protocol type's name
    new_index: Callable[[SignalType, int], TypeIndex]  # an empty index for the node's radius
    of_picture: Callable[[Picture], str] | None = None  # a perceptual hash of a picture
    of_bytes: Callable[[bytes], str] | None = None  # a digest of a file's bytes
    of_video: Callable[[VideoHashes], tuple[str, ...]] | None = None  # a video's values
    by_default: bool = False  # listed when a file is added without --type (and by the UI)
    pytx_name: str | None = None  # python-threatexchange's name (README: Use with HMA)
    stix_hash: str | None = None  # the STIX 2.1 ``hashes`` key (an indicator's pattern)


def hamming_index(kind: SignalType, radius: int) -> TypeIndex:
    """Multi-index hashing over the type's bits."""
    from node.media.matchindex import HammingIndex  # numpy: only when an index is made

    assert kind.bits is not None, kind.name
    return HammingIndex(kind.bits, radius)


def exact_index(kind: SignalType, radius: int) -> TypeIndex:
    """A dict from value to keys (hex values checked as the type's hex digits)."""
    from node.media.matchindex import ExactIndex  # numpy: only when an index is made

    return ExactIndex(kind.hex_chars)
