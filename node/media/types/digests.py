"""MD5, SHA-1, SHA-256 and SHA-512 of a file's bytes, matched exactly.

python-threatexchange calls file digests of videos ``video_md5`` and ``video_sha256`` and has
no SHA-1 or SHA-512; STIX 2.1 names them in its hash-algorithm vocabulary.
"""

from __future__ import annotations

import hashlib

from node.media.types.base import NodeSignalType, exact_index


def _digest(name: str) -> NodeSignalType:
    return NodeSignalType(
        name,
        exact_index,
        of_bytes=lambda data: hashlib.new(name, data).hexdigest(),
        by_default=name == "md5",
        pytx_name={"md5": "video_md5", "sha256": "video_sha256"}.get(name),
        stix_hash={"md5": "MD5", "sha1": "'SHA-1'", "sha256": "'SHA-256'",
                   "sha512": "'SHA-512'"}[name],
    )  # fmt: skip


TYPES: tuple[NodeSignalType, ...] = (
    _digest("md5"),
    _digest("sha1"),
    _digest("sha256"),
    _digest("sha512"),
)
