"""protocol.vpdq: the canonical vpdq value, its size cap, pruning, and vPDQ's comparison rule
(checked against Meta's reference comparison matrix)."""

from __future__ import annotations

import functools

import pytest
from fuzzdepth import depth
from hypothesis import given, settings
from hypothesis import strategies as st
from vpdq_conformance import expected_comparisons, needs_vpdq_conformance, reference_frames

from protocol.encoding import MAX_RECORD_BYTES, encode_canonical
from protocol.errors import InvalidHashError, LocalProtocolError
from protocol.vpdq import (
    FRAME_HEX_CHARS,
    MAX_VPDQ_FRAMES,
    MAX_VPDQ_VALUE_CHARS,
    VpdqComparison,
    VpdqFrame,
    VpdqHash,
    check_vpdq,
    compare_vpdq,
    decode_vpdq,
    encode_vpdq,
    is_canonical_vpdq,
    join_vpdq,
    matched_ranges,
    normalise_vpdq,
    prune_frames,
    split_vpdq,
)

VIDEO_ID = "ab" * 32
PDQ_A = "f" * 32 + "0" * 32
PDQ_B = "0" * 32 + "f" * 32  # 256 bits from PDQ_A


def flip(pdq: str, bits: int) -> str:
    """pdq with its lowest ``bits`` bits inverted."""
    return f"{int(pdq, 16) ^ ((1 << bits) - 1):064x}"


def frame(pdq: str = PDQ_A, quality: int = 100, ms: int = 0) -> VpdqFrame:
    return VpdqFrame(pdq, quality, ms)


def video(*pdqs: str, quality: int = 100) -> list[VpdqFrame]:
    """One frame a second, one per hash."""
    return [VpdqFrame(p, quality, 1000 * i) for i, p in enumerate(pdqs)]


frames_st = st.lists(
    st.builds(
        VpdqFrame,
        st.integers(0, 2**256 - 1).map(lambda n: f"{n:064x}"),
        st.integers(0, 100),
        st.integers(0, 0xFFFFFFFF),
    ),
    min_size=1,
    max_size=MAX_VPDQ_FRAMES,
    unique_by=lambda f: f.timestamp_ms,
).map(lambda fs: sorted(fs, key=lambda f: f.timestamp_ms))


# --- the canonical value -----------------------------------------------------------------------


def test_value_layout_is_video_id_then_pdq_quality_and_milliseconds_per_frame() -> None:
    value = encode_vpdq(VIDEO_ID, [frame(PDQ_A, 100, 0), frame(PDQ_B, 7, 1_500)])
    assert value == VIDEO_ID + PDQ_A + "64" + "00000000" + PDQ_B + "07" + "000005dc"
    assert decode_vpdq(value) == VpdqHash(VIDEO_ID, (frame(PDQ_A, 100, 0), frame(PDQ_B, 7, 1_500)))
    assert decode_vpdq(value).duration_ms == 1_500


@settings(max_examples=depth(400))
@given(frames=frames_st, video_id=st.integers(0, 2**256 - 1).map(lambda n: f"{n:064x}"))
def test_round_trip(frames: list[VpdqFrame], video_id: str) -> None:
    value = encode_vpdq(video_id, frames)
    assert len(value) == 64 + FRAME_HEX_CHARS * len(frames) <= MAX_VPDQ_VALUE_CHARS
    decoded = decode_vpdq(value)
    assert decoded.video_id == video_id
    assert list(decoded.frames) == frames
    assert decoded.encode() == value
    assert normalise_vpdq(f"  {value.upper()}\n") == value
    assert is_canonical_vpdq(value)


@settings(max_examples=depth(400))
@given(frames=frames_st, data=st.data())
def test_any_other_string_is_rejected_or_decodes_to_itself(
    frames: list[VpdqFrame], data: st.DataObject
) -> None:
    """The decoder's invariant: a string is its own canonical encoding, or InvalidHashError."""
    value = encode_vpdq(VIDEO_ID, frames)
    at = data.draw(st.integers(0, len(value)))
    mutated = (
        value[:at] + data.draw(st.text("0123456789abcdefABCDEF: \n", max_size=3)) + value[at + 1 :]
    )
    try:
        decoded = decode_vpdq(mutated)
    except InvalidHashError:
        return
    assert decoded.encode() == mutated


def _value(frames: int = 2) -> str:
    """A value of ``frames`` frames, written out by hand so it can exceed the cap."""
    return VIDEO_ID + "".join(frame(ms=1000 * i).encode() for i in range(frames))


NON_CANONICAL = [
    ("", "video id and"),
    (VIDEO_ID, "video id and"),  # no frame
    (_value()[:-1], "video id and"),
    (_value() + "0", "video id and"),
    (_value().upper(), "lowercase hex"),
    (" " + _value()[1:], "lowercase hex"),
    (_value()[:-2] + "g0", "lowercase hex"),
    (VIDEO_ID + PDQ_A + "65" + "00000000", "quality"),  # quality 101
    (VIDEO_ID + PDQ_A + "ff" + "00000000", "quality"),
    (VIDEO_ID + PDQ_A + "64" + "00000001" + PDQ_B + "64" + "00000001", "increase strictly"),
    (VIDEO_ID + PDQ_A + "64" + "00000002" + PDQ_B + "64" + "00000001", "increase strictly"),
    (_value(MAX_VPDQ_FRAMES + 1), f"over {MAX_VPDQ_VALUE_CHARS} characters"),
]


@pytest.mark.parametrize(("value", "message"), NON_CANONICAL)
def test_non_canonical_values_are_rejected_with_a_reason(value: str, message: str) -> None:
    with pytest.raises(InvalidHashError, match=message) as caught:
        check_vpdq(value)
    assert caught.value.context.field == "value"
    assert not is_canonical_vpdq(value)


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidHashError, match="not a string"):
        decode_vpdq(b"00" * 100)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pdq", "quality", "ms"),
    [
        (PDQ_A.upper(), 100, 0),
        (PDQ_A[:-1], 100, 0),
        (PDQ_A, 101, 0),
        (PDQ_A, -1, 0),
        (PDQ_A, True, 0),
        (PDQ_A, 100, -1),
        (PDQ_A, 100, 2**32),
        (PDQ_A, 100, 1.5),
    ],
)
def test_frames_are_validated_on_construction(pdq: str, quality: int, ms: int) -> None:
    with pytest.raises(InvalidHashError):
        VpdqFrame(pdq, quality, ms)


def test_a_value_holds_1_to_max_frames_in_time_order() -> None:
    with pytest.raises(InvalidHashError, match="1 to 80 frames"):
        VpdqHash(VIDEO_ID, ())
    with pytest.raises(InvalidHashError, match="1 to 80 frames"):
        VpdqHash(VIDEO_ID, tuple(frame(ms=i) for i in range(MAX_VPDQ_FRAMES + 1)))
    with pytest.raises(InvalidHashError, match="increase strictly"):
        VpdqHash(VIDEO_ID, (frame(ms=5), frame(ms=5)))
    with pytest.raises(InvalidHashError, match="video id"):
        VpdqHash("AB" * 32, (frame(),))
    assert len(VpdqHash(VIDEO_ID, tuple(frame(ms=i) for i in range(80))).encode()) == 5984


# --- size: a full value fits a record with any labels -----------------------------------------


def test_a_record_with_a_full_value_and_any_labels_fits_the_record_cap() -> None:
    """The worst case SPEC 5.3.1 promises: 80 frames, 16 labels of 64 characters, the largest
    integers, an expiry and a 600-character note still fit 8 KiB."""
    record = {
        "v": 1,
        "fed": "a" * 64,
        "author": "b" * 64,
        "seq": 2**53 - 1,
        "prev": "c" * 64,
        "ts": 2**53 - 1,
        "kind": "signal",
        "body": {
            "type": "vpdq",
            "value": _value(MAX_VPDQ_FRAMES),
            "labels": [f"{i:x}" * 64 for i in range(16)],
            "note": "n" * 600,
            "expires": 2**53 - 1,
        },
        "sig": "d" * 128,
    }
    size = len(encode_canonical(record))  # type: ignore[arg-type]
    assert size <= MAX_RECORD_BYTES
    assert MAX_RECORD_BYTES - size < 100  # the cap is close to what fits, not arbitrary


def test_a_long_video_is_split_into_values_that_each_verify_alone() -> None:
    frames = [frame(f"{i:064x}", 100, 1000 * i) for i in range(200)]
    values = split_vpdq(VIDEO_ID, frames)
    assert [len(decode_vpdq(v).frames) for v in values] == [80, 80, 40]
    assert all(decode_vpdq(v).video_id == VIDEO_ID for v in values)
    assert list(join_vpdq(reversed(values))) == frames
    assert list(join_vpdq([*values, values[0]])) == frames  # a part held twice counts once
    assert len(split_vpdq(VIDEO_ID, frames, max_frames=50)) == 4
    with pytest.raises(LocalProtocolError):
        split_vpdq(VIDEO_ID, frames, max_frames=81)
    with pytest.raises(InvalidHashError):
        split_vpdq(VIDEO_ID, [])
    with pytest.raises(InvalidHashError, match="increase strictly"):
        split_vpdq(VIDEO_ID, list(reversed(frames)))


def test_pruning_drops_frames_within_the_distance_of_the_last_frame_kept() -> None:
    frames = video(PDQ_A, flip(PDQ_A, 2), flip(PDQ_A, 3), flip(PDQ_A, 6), PDQ_B, PDQ_B)
    assert prune_frames(frames, 0) == (frames[0], frames[1], frames[2], frames[3], frames[4])
    # flip(6) is 6 bits from PDQ_A, the last frame kept, although only 3 from its neighbour
    assert prune_frames(frames, 3) == (frames[0], frames[3], frames[4])
    assert prune_frames(frames, 6) == (frames[0], frames[4])
    assert prune_frames([], 10) == ()


# --- the comparison rule -----------------------------------------------------------------------


@functools.cache
def _reference(name: str) -> tuple[VpdqFrame, ...]:
    return tuple(r.frame for r in reference_frames(name))


def _compare_reference(query: str, compared: str) -> VpdqComparison:
    """compare_vpdq of two reference videos; each unordered pair is computed once (the rule
    is symmetric: test_comparison_is_symmetric)."""
    if query > compared:
        r = _compare_pair(compared, query)
        return VpdqComparison(
            r.compared_frames, r.compared_matched, r.query_frames, r.query_matched
        )
    return _compare_pair(query, compared)


@functools.cache
def _compare_pair(query: str, compared: str) -> VpdqComparison:
    return compare_vpdq(_reference(query), _reference(compared))


@needs_vpdq_conformance
def test_comparison_of_reference_hashes_reproduces_the_reference_matrix() -> None:
    rows = expected_comparisons()
    assert len(rows) == 64
    got = []
    for row in rows:
        result = _compare_reference(row["query"], row["compared"])
        got.append(
            {
                **row,
                "query_matched_pct": f"{result.query_matched_pct:.2f}",
                "compared_matched_pct": f"{result.compared_matched_pct:.2f}",
            }
        )
    assert got == rows


def test_frames_match_within_the_distance_and_unique_usable_hashes_count_once() -> None:
    query = video(PDQ_A, PDQ_A, flip(PDQ_B, 31), PDQ_A)  # 2 unique hashes
    compared = video(PDQ_B, flip(PDQ_A, 32), "1" * 64)
    result = compare_vpdq(query, compared)
    assert result == VpdqComparison(2, 1, 3, 1)
    assert (result.query_matched_pct, round(result.compared_matched_pct, 2)) == (50.0, 33.33)
    assert compare_vpdq(query, compared, distance=32) == VpdqComparison(2, 2, 3, 2)
    assert compare_vpdq(query, compared, distance=30) == VpdqComparison(2, 0, 3, 0)


def test_frames_below_the_quality_filter_are_not_compared() -> None:
    query = [frame(PDQ_A, 50, 0), frame(PDQ_B, 49, 1000)]
    compared = [frame(PDQ_A, 100, 0), frame(PDQ_B, 100, 1000)]
    assert compare_vpdq(query, compared) == VpdqComparison(1, 1, 2, 1)
    assert compare_vpdq(query, compared, min_quality=0) == VpdqComparison(2, 2, 2, 2)
    # a hash seen at two qualities counts when any of its frames is good enough
    twice = [frame(PDQ_A, 10, 0), frame(PDQ_A, 90, 1000)]
    assert compare_vpdq(twice, compared) == VpdqComparison(1, 1, 2, 1)


@pytest.mark.parametrize(
    ("comparison", "query_pct", "compared_pct", "expected"),
    [
        (VpdqComparison(5, 4, 100, 4), 80.0, 0.0, True),  # a clip of a listed video
        (VpdqComparison(5, 3, 100, 3), 80.0, 0.0, False),
        (VpdqComparison(5, 4, 100, 4), 80.0, 5.0, False),
        (VpdqComparison(100, 4, 5, 4), 0.0, 80.0, True),  # the reference README's P_c = 80
        (VpdqComparison(0, 0, 5, 0), 0.0, 0.0, False),  # no usable query frame: never
        (VpdqComparison(5, 0, 0, 0), 0.0, 0.0, False),
    ],
)
def test_match_needs_both_percentages(
    comparison: VpdqComparison, query_pct: float, compared_pct: float, expected: bool
) -> None:
    assert comparison.is_match(query_pct=query_pct, compared_pct=compared_pct) is expected


def test_default_thresholds_are_python_threatexchanges() -> None:
    assert VpdqComparison(5, 4, 100, 1).is_match()
    assert not VpdqComparison(5, 3, 100, 100).is_match()


@settings(max_examples=depth(200))
@given(a=frames_st, b=frames_st)
def test_comparison_is_symmetric(a: list[VpdqFrame], b: list[VpdqFrame]) -> None:
    forward, backward = compare_vpdq(a, b, distance=120), compare_vpdq(b, a, distance=120)
    assert (forward.query_frames, forward.query_matched) == (
        backward.compared_frames,
        backward.compared_matched,
    )
    assert forward.compared_matched <= forward.compared_frames
    assert compare_vpdq(a, a).query_matched == compare_vpdq(a, a).query_frames


def test_matched_ranges_are_runs_of_matching_query_frames() -> None:
    listed = video(PDQ_A, PDQ_B)
    other = flip(PDQ_A, 128)
    query = [
        frame(other, 100, 0),
        frame(flip(PDQ_A, 3), 100, 1_000),
        frame(PDQ_A, 100, 2_000),
        frame("0" * 64, 0, 3_000),  # featureless: neither breaks nor extends a range
        frame(PDQ_B, 100, 4_000),
        frame(other, 100, 5_000),
        frame(PDQ_B, 100, 6_000),
    ]
    assert matched_ranges(query, listed) == ((1_000, 4_000), (6_000, 6_000))
    assert matched_ranges(reversed(query), listed) == ((1_000, 4_000), (6_000, 6_000))
    assert matched_ranges(query, video(other)) == ((0, 0), (5_000, 5_000))
    assert matched_ranges(query, []) == ()
