"""``vpdq``: hashed from a video's frames (``node.media.video``), matched by ``VpdqIndex``.

A video yields one value per run of up to 80 frames (``protocol.vpdq.split_vpdq``), all naming
the video by the SHA-256 of its bytes; the index joins them by that id. python-threatexchange's
``vpdq`` signal serialises frames differently, so the bridge does not offer this type yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.media.types.base import NodeSignalType
from protocol.types import SignalType

if TYPE_CHECKING:
    from node.media.matchindex import TypeIndex


def vpdq_index(kind: SignalType, radius: int) -> TypeIndex:
    """The frames of every video in one PDQ multi-index, at the frame distance."""
    from node.media.video_index import VpdqIndex  # numpy: only when an index is made

    return VpdqIndex(radius or kind.default_radius)


TYPES: tuple[NodeSignalType, ...] = (
    NodeSignalType("vpdq", vpdq_index, of_video=lambda hashes: hashes.vpdq_values()),
)
