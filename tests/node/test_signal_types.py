"""Signal types as plug-ins: every registered type has all its parts, on both sides.

A type is one module entry in ``protocol/types/`` (what verification needs) and one in
``node/media/types/`` (what the shell needs), plus its SPEC row and its vectors. These tests
fail when any of those is missing, so a type added to one registry only cannot reach a node.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from node.media.hashing import hash_image
from node.media.index import MatchIndex
from node.media.types import NODE_TYPES, PYTX_NAMES, STIX_HASHES
from protocol.bodies import SignalBody
from protocol.records import MAX_RECORD_BYTES
from protocol.signal_types import CORE_TYPES, FAMILIES, SIGNAL_TYPES, canonical_value
from protocol.types import EXACT, FRAMES, HAMMING

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "protocol" / "SPEC.md"
VECTORS = ROOT / "protocol" / "vectors" / "records.json"

EXAMPLES = {  # one canonical value per type, for the round trips below
    "pdq": "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "phash": "d1c4b2a3e5f60718",
    "dhash": "0f0e0d0c0b0a0908",
    "md5": hashlib.md5(b"x").hexdigest(),  # a signal value, not security
    "sha1": hashlib.sha1(b"x").hexdigest(),  # a signal value, not security
    "sha256": hashlib.sha256(b"x").hexdigest(),
    "sha512": hashlib.sha512(b"x").hexdigest(),
    "url": "https://example.com/a",
    "vpdq": "ab" * 32  # the video id, then frames of PDQ, quality and ms
    + "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    + "5a"
    + "00000000"
    + "0f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22f"
    + "64"
    + "000003e8",
}


def test_both_registries_name_the_same_types() -> None:
    assert set(NODE_TYPES) == set(SIGNAL_TYPES), "a type lacks its protocol or its node module"
    assert set(EXAMPLES) == set(SIGNAL_TYPES), "give the new type an example value here"
    assert len({t.name for f in FAMILIES for t in f.TYPES}) == len(SIGNAL_TYPES), "a name twice"


@pytest.mark.parametrize("name", sorted(SIGNAL_TYPES))
def test_every_protocol_type_has_every_part(name: str) -> None:
    kind = SIGNAL_TYPES[name]
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name)
    assert kind.describe and kind.compare in (HAMMING, EXACT, FRAMES)
    assert kind.normalise(EXAMPLES[name]) == EXAMPLES[name]
    assert kind.is_canonical(EXAMPLES[name])
    if kind.is_hamming:
        assert kind.bits and 0 < kind.default_radius < kind.bits
        assert all(kind.is_canonical(d) for d in kind.degenerate)
    elif kind.compare == FRAMES:  # bags of PDQ frames: a per-frame radius and a rule
        assert kind.frame_distance is not None and 0 < kind.default_radius < 256
        assert kind.distance(EXAMPLES[name], EXAMPLES[name]) == 0
    else:
        assert kind.default_radius == 0 and not kind.degenerate
    # its longest value fits in a record (SPEC 7.1): the envelope and body keys take < 600 bytes
    assert 600 + kind.max_value_chars < MAX_RECORD_BYTES
    assert SignalBody(name, EXAMPLES[name]).value == EXAMPLES[name]


@pytest.mark.parametrize("name", sorted(NODE_TYPES))
def test_every_node_type_indexes_and_matches_its_values(name: str) -> None:
    node_type, kind = NODE_TYPES[name], SIGNAL_TYPES[name]
    index = MatchIndex()
    index.add(7, name, EXAMPLES[name])
    assert [h.key for h in index.query(name, EXAMPLES[name])] == [7]
    index.add_many([(8, name, EXAMPLES[name])])
    assert [h.key for h in index.query(name, EXAMPLES[name])] == [7, 8]
    index.remove(7)
    assert [h.key for h in index.query(name, EXAMPLES[name])] == [8]
    # a type is hashed from media (a picture or a file's bytes) or given as a value (url)
    hashed = any(h is not None for h in (node_type.of_picture, node_type.of_bytes,
                                         node_type.of_video))  # fmt: skip
    assert hashed or kind.hex_chars is None, f"{name} has no hasher"
    assert node_type.pytx_name is None or re.fullmatch(r"[a-z0-9_]+", node_type.pytx_name)


def test_an_image_yields_every_hashed_type_and_exports_name_them() -> None:
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    data = out.getvalue()
    values = hash_image(data).as_signals()
    hashed = {n for n, t in NODE_TYPES.items() if t.of_picture or t.of_bytes}  # not videos
    assert set(values) == hashed
    assert values["sha512"] == hashlib.sha512(data).hexdigest()
    for name, value in values.items():
        assert canonical_value(name, value) == value
    assert PYTX_NAMES == {"pdq": "pdq", "md5": "video_md5", "sha256": "video_sha256", "url": "url"}
    assert set(STIX_HASHES) == {"md5", "sha1", "sha256", "sha512"}


def test_spec_registry_table_lists_every_type() -> None:
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("### 5.3 Signal type registry") :]
    section = section[: section.index("\n\n", section.index("| name |"))]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.M)
    assert rows == list(SIGNAL_TYPES), "SPEC 5.3's table must list the registry, in order"
    core_marked = set(re.findall(r"^\| `([a-z0-9_]+)` \|.*\| core \|$", section, flags=re.M))
    assert core_marked == set(CORE_TYPES)


def test_vectors_hold_a_valid_record_of_every_type() -> None:
    valid = json.loads(VECTORS.read_text(encoding="utf-8"))["valid"]
    records = [json.loads(e["canonical"]) for e in valid]
    types = {r["body"]["type"] for r in records if r["kind"] == "signal"}
    assert types == set(SIGNAL_TYPES)
