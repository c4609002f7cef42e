"""Cryptographic digests of a file's bytes, matched exactly: MD5, SHA-1, SHA-256, SHA-512.

``sha512`` is the first type added after v1 (SPEC 5.3, 11): it is not a core type, so a
federation's members may author it only once every member's node has announced it.
"""

from __future__ import annotations

from protocol.types import SignalType, hex_type

TYPES: tuple[SignalType, ...] = (
    hex_type("md5", 32, "MD5 of the file bytes, exact", core=True),
    hex_type("sha1", 40, "SHA-1 of the file bytes, exact", core=True),
    hex_type("sha256", 64, "SHA-256 of the file bytes, exact", core=True),
    hex_type("sha512", 128, "SHA-512 of the file bytes, exact"),
)
