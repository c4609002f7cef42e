"""Packed provenance (node.replica.provenance) gives back exactly what the node showed."""

from __future__ import annotations

from typing import Any

import pytest

from node.replica.provenance import Packer

BASE: dict[str, Any] = {
    "id": "ab" * 32, "row": 7, "author": "a" * 64, "member": "b" * 64, "member_name": "Bé",
    "type": "pdq", "value": "f8f8f0cce0f4e84d0e370a22028f67f0b36e2ed596623e1d33e6339c4e9c9b22",
    "labels": ["entity:x", "incident:42"], "note": None, "expires": None,
    "ts": 1_763_800_000_000, "seq": 17, "retracted_by": None,
    "tallies": {"confirm": 2, "dispute": 1, "seen": 0},
}  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"type": "url", "value": "https://example.com/a?b=c"},
        {"type": "md5", "value": "0a" * 16, "note": "seen in the wild — ünïcode"},
        {"type": "url", "value": "deadbeef"},  # a url that reads as hex: still exact
        {"type": "url", "value": "abc"},  # odd length: kept as text
        {"expires": 1_800_000_000_000, "labels": []},
        {"note": ""},
        {"member_name": None},
        {"lists": ["a list a later version shows"], "tallies": {"confirm": 1, "x": 2}},
        {"labels": "not a list", "note": 5, "ts": 2**62 + 1, "retracted_by": "c" * 64},
        {"author": ["odd"], "tallies": {"confirm": -1, "dispute": 0, "seen": 0}},
    ],
)
def test_unpack_gives_back_what_was_packed(changes: dict[str, Any]) -> None:
    packer = Packer()
    signal = BASE | changes
    blob = packer.pack(signal | {"status": "active"})
    assert packer.unpack(blob, 7) == signal
    assert packer.type_value(blob) == (signal["type"], signal["value"])


def test_a_pdq_signals_provenance_is_about_a_hundred_and_thirty_bytes() -> None:
    packer = Packer()
    blobs = [packer.pack(BASE | {"id": f"{n:064x}"}) for n in range(100)]
    assert {len(b) for b in blobs} == {len(blobs[0])} and len(blobs[0]) <= 140
    assert packer.unpack(blobs[5], 9)["id"] == f"{5:064x}"
