"""Meta's vPDQ conformance set (../shared/conformance/vpdq): reference frame hashes and the
comparison matrix, read for the protocol and node tests.

``HASHMESH_CONFORMANCE`` names another copy of the conformance folder; the tests that need the
set skip, and say where they looked, only when it is absent.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol.vpdq import VpdqFrame

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
CONFORMANCE = Path(os.environ.get("HASHMESH_CONFORMANCE", _SHARED)) / "vpdq"
VIDEOS = CONFORMANCE / "videos"
HASHES = CONFORMANCE / "hashes"
COMPARISONS = CONFORMANCE / "expected-comparisons.csv"

needs_vpdq_conformance = pytest.mark.skipif(
    not COMPARISONS.is_file(), reason=f"vPDQ conformance set not found at {CONFORMANCE}"
)


@dataclass(frozen=True, slots=True)
class ReferenceFrame:
    """One line of a reference hash file: frame_number,quality,pdq_hex,timestamp_seconds."""

    number: int
    frame: VpdqFrame


def video_names() -> list[str]:
    return sorted(p.stem for p in HASHES.glob("*.txt")) if HASHES.is_dir() else []


def reference_frames(name: str) -> list[ReferenceFrame]:
    rows = []
    for line in (HASHES / f"{name}.txt").read_text(encoding="ascii").split():
        number, quality, pdq, seconds = line.split(",")
        frame = VpdqFrame(pdq, int(quality), round(float(seconds) * 1000))
        rows.append(ReferenceFrame(int(number), frame))
    return rows


def expected_comparisons() -> list[dict[str, str]]:
    if not COMPARISONS.is_file():
        return []
    with COMPARISONS.open(newline="", encoding="ascii") as f:
        return list(csv.DictReader(f))
