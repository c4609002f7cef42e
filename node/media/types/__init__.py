"""What the node needs of each signal type: its hasher, its index and its export names.

``protocol.types`` defines a type for verification (canonical form, distance, radius); the
module of the same family here defines what the shell does with it (``NodeSignalType``). The
registry (``NODE_TYPES``) collects the families, and every part of the node asks it: the CLI's
choices, the API's validation, the match index, image hashing, the STIX and
python-threatexchange exports, and the README's table. ``tests/node/test_signal_types.py``
fails when a type registered in protocol/ lacks its node side here, or the other way round.
"""

from __future__ import annotations

from types import ModuleType

from node.media.types import digests, perceptual, url, video
from node.media.types.base import NodeSignalType, Picture

FAMILIES: tuple[ModuleType, ...] = (perceptual, digests, url, video)

NODE_TYPES: dict[str, NodeSignalType] = {t.name: t for f in FAMILIES for t in f.TYPES}

PICTURE_TYPES: tuple[str, ...] = tuple(n for n, t in NODE_TYPES.items() if t.of_picture)
FILE_TYPES: tuple[str, ...] = tuple(n for n, t in NODE_TYPES.items() if t.of_bytes)
DEFAULT_FILE_TYPES: tuple[str, ...] = tuple(n for n, t in NODE_TYPES.items() if t.by_default)
PYTX_NAMES: dict[str, str] = {n: t.pytx_name for n, t in NODE_TYPES.items() if t.pytx_name}
STIX_HASHES: dict[str, str] = {n: t.stix_hash for n, t in NODE_TYPES.items() if t.stix_hash}
VIDEO_TYPES: tuple[str, ...] = tuple(n for n, t in NODE_TYPES.items() if t.of_video)

__all__ = [
    "DEFAULT_FILE_TYPES",
    "FILE_TYPES",
    "NODE_TYPES",
    "PICTURE_TYPES",
    "PYTX_NAMES",
    "STIX_HASHES",
    "VIDEO_TYPES",
    "NodeSignalType",
    "Picture",
]
