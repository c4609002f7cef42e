"""URLs: listed and matched exactly; nothing to hash (a URL is given, not computed)."""

from __future__ import annotations

from node.media.types.base import NodeSignalType, exact_index

TYPES: tuple[NodeSignalType, ...] = (NodeSignalType("url", exact_index, pytx_name="url"),)
