"""vPDQ: a video hash as a bag of PDQ frame hashes, its canonical value and its comparison rule.

Meta's vPDQ (ThreatExchange ``vpdq/``) hashes frames of a video with PDQ and keeps, for each
hashed frame, its PDQ hash, PDQ quality (0-100) and timestamp. Two videos are compared as
unordered bags of frame hashes (SPEC 5.3.1):

- keep the *usable* frames of each video, those of quality >= ``min_quality`` (F, 50), and of
  those only the unique hashes;
- ``query_matched_pct`` is the share of the query's unique usable hashes within ``distance``
  (D, 31) bits of some usable hash of the compared video, ``compared_matched_pct`` the other
  way round;
- the videos match when ``query_matched_pct >= query_pct`` (P_q) and
  ``compared_matched_pct >= compared_pct`` (P_c); the defaults are python-threatexchange's
  vPDQ extension (what HMA runs): P_q = 80, P_c = 0, so a clip of a listed video matches.

A video with no usable frame on either side matches nothing (both percentages are 0).

**The value of a ``vpdq`` signal** (SPEC 5.3.1) is lowercase hex: the 64-hex id of the video
(the SHA-256 of the file the frames were hashed from), then 1 to ``MAX_VPDQ_FRAMES`` frames of
74 hex each -- 64 hex of PDQ (Meta's bit order), 2 hex of quality (0-100), 8 hex of timestamp
in milliseconds from the first decoded frame (0 .. 2^32-1) -- in strictly increasing timestamp
order. A value holds at most 80 frames so that a record carrying it fits the 8 KiB record cap
with any labels; a longer video is signed as several values with the same video id, each a
consecutive run of its frames (``split_vpdq``), which a matcher joins by video id. Every value
is valid on its own.

Pure: no I/O, no clock, no randomness; Hamming distance is ``int.bit_count`` of the XOR.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from protocol.errors import InvalidHashError, LocalProtocolError

PDQ_HEX_CHARS: Final = 64
VIDEO_ID_HEX_CHARS: Final = 64
FRAME_HEX_CHARS: Final = 64 + 2 + 8  # pdq, quality byte, timestamp (uint32, ms)
MAX_VPDQ_FRAMES: Final = 80
MAX_VPDQ_VALUE_CHARS: Final = VIDEO_ID_HEX_CHARS + FRAME_HEX_CHARS * MAX_VPDQ_FRAMES  # 5984
MAX_QUALITY: Final = 100
MAX_TIMESTAMP_MS: Final = 0xFFFFFFFF  # about 49.7 days

VPDQ_DISTANCE: Final = 31  # D: frames match within this many bits
VPDQ_MIN_QUALITY: Final = 50  # F: frames below this PDQ quality are not compared
VPDQ_QUERY_MATCH_PCT: Final = 80.0  # P_q, python-threatexchange's default
VPDQ_COMPARED_MATCH_PCT: Final = 0.0  # P_c, python-threatexchange's default

_HEX = re.compile(r"[0-9a-f]*")
_PDQ = re.compile(r"[0-9a-f]{64}")


def _invalid(message: str, *, expected: object, actual: object) -> InvalidHashError:
    return InvalidHashError(
        f"vpdq value: {message}", field="value", expected=expected, actual=actual
    )


@dataclass(frozen=True, slots=True)
class VpdqFrame:
    """One hashed frame: PDQ hex (Meta's bit order), PDQ quality and time in the video."""

    pdq: str
    quality: int
    timestamp_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.pdq, str) or _PDQ.fullmatch(self.pdq) is None:
            raise _invalid("a frame's PDQ is 64 lowercase hex", expected="64 hex", actual=self.pdq)
        _check_int(self.quality, MAX_QUALITY, "quality")
        _check_int(self.timestamp_ms, MAX_TIMESTAMP_MS, "timestamp_ms")

    @property
    def bits(self) -> int:
        """The PDQ hash as a 256-bit integer (big-endian, as the hex reads)."""
        return int(self.pdq, 16)

    @property
    def seconds(self) -> float:
        return self.timestamp_ms / 1000

    def encode(self) -> str:
        return f"{self.pdq}{self.quality:02x}{self.timestamp_ms:08x}"


def _check_int(value: object, limit: int, name: str) -> None:
    if type(value) is not int or not 0 <= value <= limit:
        raise _invalid(f"a frame's {name} is an integer 0..{limit}", expected=limit, actual=value)


@dataclass(frozen=True, slots=True)
class VpdqHash:
    """One ``vpdq`` signal value: a video id and 1..MAX_VPDQ_FRAMES frames in time order."""

    video_id: str
    frames: tuple[VpdqFrame, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.video_id, str) or _PDQ.fullmatch(self.video_id) is None:
            raise _invalid(
                "the video id is 64 lowercase hex", expected="64 hex", actual=self.video_id
            )
        object.__setattr__(self, "frames", tuple(self.frames))
        count = len(self.frames)
        if not 1 <= count <= MAX_VPDQ_FRAMES:
            raise _invalid(
                f"holds 1 to {MAX_VPDQ_FRAMES} frames (split a longer video: split_vpdq)",
                expected=f"1..{MAX_VPDQ_FRAMES}",
                actual=count,
            )
        if not all(isinstance(f, VpdqFrame) for f in self.frames):
            raise _invalid("frames are VpdqFrame", expected="VpdqFrame", actual=self.frames)
        _check_time_order(self.frames)

    def encode(self) -> str:
        """The canonical value (module docstring)."""
        return self.video_id + "".join(f.encode() for f in self.frames)

    @property
    def duration_ms(self) -> int:
        """From the first frame's timestamp to the last's."""
        return self.frames[-1].timestamp_ms - self.frames[0].timestamp_ms


def _check_time_order(frames: Sequence[VpdqFrame]) -> None:
    for before, after in itertools.pairwise(frames):
        if after.timestamp_ms <= before.timestamp_ms:
            raise _invalid(
                "frame timestamps must increase strictly",
                expected=f"> {before.timestamp_ms}",
                actual=after.timestamp_ms,
            )


def decode_vpdq(value: str) -> VpdqHash:
    """The video id and frames of a canonical value; ``InvalidHashError`` for anything else."""
    if not isinstance(value, str):
        raise _invalid("not a string", expected="str", actual=type(value).__name__)
    _check_shape(value)
    body = value[VIDEO_ID_HEX_CHARS:]
    frames = [
        _decode_frame(body[i : i + FRAME_HEX_CHARS]) for i in range(0, len(body), FRAME_HEX_CHARS)
    ]
    return VpdqHash(value[:VIDEO_ID_HEX_CHARS], tuple(frames))


def _check_shape(value: str) -> None:
    size = len(value)
    if size > MAX_VPDQ_VALUE_CHARS:
        raise _invalid(
            f"over {MAX_VPDQ_VALUE_CHARS} characters ({MAX_VPDQ_FRAMES} frames)",
            expected=f"<= {MAX_VPDQ_VALUE_CHARS} chars",
            actual=f"{size} chars",
        )
    frames, rest = divmod(size - VIDEO_ID_HEX_CHARS, FRAME_HEX_CHARS)
    if frames < 1 or rest:
        raise _invalid(
            f"is {VIDEO_ID_HEX_CHARS} hex of video id and {FRAME_HEX_CHARS} hex per frame",
            expected=f"{VIDEO_ID_HEX_CHARS} + {FRAME_HEX_CHARS} x n chars, n >= 1",
            actual=f"{size} chars",
        )
    if _HEX.fullmatch(value) is None:
        raise _invalid("only lowercase hex digits", expected="[0-9a-f]", actual=value)


def _decode_frame(text: str) -> VpdqFrame:
    return VpdqFrame(text[:64], int(text[64:66], 16), int(text[66:], 16))


def encode_vpdq(video_id: str, frames: Iterable[VpdqFrame]) -> str:
    """The canonical value of one video id and 1..MAX_VPDQ_FRAMES frames in time order."""
    return VpdqHash(video_id, tuple(frames)).encode()


def check_vpdq(value: str) -> None:
    """Raise ``InvalidHashError`` unless value is a canonical ``vpdq`` value."""
    decode_vpdq(value)


def is_canonical_vpdq(value: str) -> bool:
    try:
        decode_vpdq(value)
    except InvalidHashError:
        return False
    return True


def normalise_vpdq(value: str) -> str:
    """User input to the canonical value: surrounding whitespace dropped, hex lower-cased."""
    if not isinstance(value, str):
        raise _invalid("not a string", expected="str", actual=type(value).__name__)
    return decode_vpdq(value.strip().lower()).encode()


def split_vpdq(
    video_id: str, frames: Sequence[VpdqFrame], max_frames: int = MAX_VPDQ_FRAMES
) -> tuple[str, ...]:
    """The values of one video: consecutive runs of at most ``max_frames`` frames each."""
    if not 1 <= max_frames <= MAX_VPDQ_FRAMES:
        raise LocalProtocolError(f"max_frames must be 1..{MAX_VPDQ_FRAMES}, not {max_frames}")
    if not frames:
        raise _invalid("a video has at least one frame", expected=">= 1 frame", actual=0)
    _check_time_order(frames)
    runs = (frames[i : i + max_frames] for i in range(0, len(frames), max_frames))
    return tuple(encode_vpdq(video_id, run) for run in runs)


def join_vpdq(values: Iterable[str]) -> tuple[VpdqFrame, ...]:
    """The frames of several values (the parts of one video), in time order, duplicates
    dropped."""
    frames = {f for value in values for f in decode_vpdq(value).frames}
    return tuple(sorted(frames, key=lambda f: (f.timestamp_ms, f.pdq, f.quality)))


def prune_frames(frames: Iterable[VpdqFrame], distance: int) -> tuple[VpdqFrame, ...]:
    """Drop each frame within ``distance`` bits of the last frame kept (the reference's
    optional D_prune): repeated and near-identical consecutive frames cost nothing."""
    kept: list[VpdqFrame] = []
    last = -1
    for frame in frames:
        bits = frame.bits
        if last < 0 or (bits ^ last).bit_count() > distance:
            kept.append(frame)
            last = bits
    return tuple(kept)


# ---- comparison ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VpdqComparison:
    """How much of each video the other one matches, counted in unique usable frame hashes."""

    query_frames: int
    query_matched: int
    compared_frames: int
    compared_matched: int

    @property
    def query_matched_pct(self) -> float:
        return _pct(self.query_matched, self.query_frames)

    @property
    def compared_matched_pct(self) -> float:
        return _pct(self.compared_matched, self.compared_frames)

    def is_match(
        self,
        *,
        query_pct: float = VPDQ_QUERY_MATCH_PCT,
        compared_pct: float = VPDQ_COMPARED_MATCH_PCT,
    ) -> bool:
        """Both percentages reach their thresholds; never when either side has no usable
        frame."""
        return (
            self.query_frames > 0
            and self.compared_frames > 0
            and self.query_matched_pct >= query_pct
            and self.compared_matched_pct >= compared_pct
        )


def _pct(matched: int, total: int) -> float:
    return matched * 100 / total if total else 0.0


def usable_hashes(
    frames: Iterable[VpdqFrame], min_quality: int = VPDQ_MIN_QUALITY
) -> frozenset[int]:
    """The unique PDQ hashes (as integers) of the frames of quality >= min_quality."""
    return frozenset(f.bits for f in frames if f.quality >= min_quality)


def compare_vpdq(
    query: Iterable[VpdqFrame],
    compared: Iterable[VpdqFrame],
    *,
    distance: int = VPDQ_DISTANCE,
    min_quality: int = VPDQ_MIN_QUALITY,
) -> VpdqComparison:
    """vPDQ's comparison rule (module docstring) applied to two bags of frames."""
    q = usable_hashes(query, min_quality)
    c = usable_hashes(compared, min_quality)
    return VpdqComparison(
        query_frames=len(q),
        query_matched=_count_matched(q, c, distance),
        compared_frames=len(c),
        compared_matched=_count_matched(c, q, distance),
    )


def _count_matched(hashes: frozenset[int], others: frozenset[int], distance: int) -> int:
    """How many of hashes lie within distance of some hash of others."""
    pool = tuple(others)
    return sum(1 for h in hashes if _near(h, others, pool, distance))


def _near(bits: int, others: frozenset[int], pool: tuple[int, ...], distance: int) -> bool:
    return bits in others or any((bits ^ o).bit_count() <= distance for o in pool)


def matched_ranges(
    query: Iterable[VpdqFrame],
    compared: Iterable[VpdqFrame],
    *,
    distance: int = VPDQ_DISTANCE,
    min_quality: int = VPDQ_MIN_QUALITY,
) -> tuple[tuple[int, int], ...]:
    """The stretches of the query that match the compared video, as (first ms, last ms).

    The query's usable frames are taken in time order; a run of consecutive ones that each lie
    within ``distance`` of some usable frame of the compared video is one range, from the first
    frame's timestamp to the last's (a single frame gives (t, t)). Frames below
    ``min_quality`` neither break nor extend a range.
    """
    others = usable_hashes(compared, min_quality)
    pool = tuple(others)
    usable = (f for f in sorted(query, key=lambda f: f.timestamp_ms) if f.quality >= min_quality)
    return runs((f.timestamp_ms, _near(f.bits, others, pool, distance)) for f in usable)


def runs(marks: Iterable[tuple[int, bool]]) -> tuple[tuple[int, int], ...]:
    """Runs of consecutive marked times, as (first ms, last ms); a single one gives (t, t)."""
    ranges: list[tuple[int, int]] = []
    run: list[int] = []
    for ms, marked in marks:
        if marked:
            run.append(ms)
        elif run:
            ranges.append((run[0], run[-1]))
            run = []
    if run:
        ranges.append((run[0], run[-1]))
    return tuple(ranges)
