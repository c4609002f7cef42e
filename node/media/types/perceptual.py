"""PDQ, pHash and dHash: hashed from a decoded picture, searched by multi-index hashing."""

from __future__ import annotations

from node.media.types.base import NodeSignalType, Picture, hamming_index


def _phash(picture: Picture) -> str:
    import imagehash  # numpy and scipy load only when a picture is hashed

    return str(imagehash.phash(picture.gray))


def _dhash(picture: Picture) -> str:
    import imagehash

    return str(imagehash.dhash(picture.gray))


TYPES: tuple[NodeSignalType, ...] = (
    NodeSignalType("pdq", hamming_index, of_picture=lambda p: p.pdq,
                   by_default=True, pytx_name="pdq"),
    NodeSignalType("phash", hamming_index,
                   of_picture=_phash),
    NodeSignalType("dhash", hamming_index,
                   of_picture=_dhash),
)  # fmt: skip
