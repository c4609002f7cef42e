"""node.media.video: vPDQ conformance with Meta's reference hashes and comparison matrix,
sampling by time, the digests, and every kind of bad video input."""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import pytest
from fuzzdepth import SCALE, depth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from videos import audio_only, encode_video, picture, video_without_frames
from vpdq_conformance import (
    VIDEOS,
    ReferenceFrame,
    expected_comparisons,
    needs_vpdq_conformance,
    reference_frames,
    video_names,
)

from node.errors import MediaError
from node.media.video import DEFAULT_INTERVAL_S, VideoHashes, VideoLimits, hash_video
from protocol.vpdq import VpdqFrame, compare_vpdq, decode_vpdq

REFERENCE_TOLERANCE_BITS = 10  # the conformance README's criterion for a port
# Every frame of the 8 videos costs about a minute of CPU (PDQ of a full-size frame is 10-45
# ms), so `make test` checks every 15th frame (every 0.5 s) and `make fuzz` every frame.
CONFORMANCE_INTERVAL_S = 0.0 if SCALE >= 1 else 0.5
# chair-19 is a clip of chair-orig starting at its frame 111 (3.7 s): its 1 fps samples fall
# 0.7 s from chair-orig's, where this hand-held footage has moved far past 31 bits. The
# reference sampled at 1 fps gives the same 4.35 % / 10.53 % (test below), so this is vPDQ's
# 1 fps limit, not a defect of the port; the every-frame matrix matches them at 85 %.
OUT_OF_PHASE_CLIP_PAIRS = {
    ("chair-19-sd-bar", "chair-orig-22-sd-bar"),
    ("chair-orig-22-sd-bar", "chair-19-sd-bar"),
    ("chair-19-sd-bar", "chair-22-sd-grey-bar"),
    ("chair-22-sd-grey-bar", "chair-19-sd-bar"),
}


@pytest.fixture(scope="module")
def sampled() -> dict[str, VideoHashes]:
    """Every conformance video hashed at CONFORMANCE_INTERVAL_S (0 = every frame)."""
    return {
        name: hash_video(VIDEOS / f"{name}.mp4", interval_s=CONFORMANCE_INTERVAL_S)
        for name in video_names()
    }


@pytest.fixture(scope="module")
def one_fps() -> dict[str, VideoHashes]:
    """Every conformance video hashed at the default 1 frame a second."""
    return {name: hash_video(VIDEOS / f"{name}.mp4") for name in video_names()}


def by_time(name: str) -> dict[int, ReferenceFrame]:
    return {r.frame.timestamp_ms: r for r in reference_frames(name)}


def reference_at_one_fps(name: str) -> list[VpdqFrame]:
    """What Meta's reference keeps at 1 s per hash: every int(1 x 30 fps)-th frame."""
    return [r.frame for r in reference_frames(name) if r.number % 30 == 0]


# --- conformance -------------------------------------------------------------------------------


@needs_vpdq_conformance
@pytest.mark.timeout(120 if CONFORMANCE_INTERVAL_S else 900)
def test_frame_hashes_are_within_10_bits_of_the_reference_and_match_it_as_a_video(
    sampled: dict[str, VideoHashes],
) -> None:
    """Each hashed frame within 10 bits of the reference frame with the same frame number
    (the same timestamp), and the video's frames matching the reference's at >= 99 % of unique
    frames both ways."""
    assert len(sampled) == 8
    worst = {}
    for name, hashes in sampled.items():
        reference = by_time(name)
        if CONFORMANCE_INTERVAL_S == 0:
            assert len(hashes.frames) == len(reference), name
        counterpart = [reference[f.timestamp_ms].frame for f in hashes.frames]
        assert counterpart, name
        for ours, theirs in zip(hashes.frames, counterpart, strict=True):
            assert abs(ours.quality - theirs.quality) <= 2, (name, ours.timestamp_ms)
        worst[name] = max(
            (o.bits ^ t.bits).bit_count() for o, t in zip(hashes.frames, counterpart, strict=True)
        )
        result = compare_vpdq(hashes.frames, counterpart)
        assert result.query_matched_pct >= 99, (name, result)
        assert result.compared_matched_pct >= 99, (name, result)
    print(f"worst bits per video at interval {CONFORMANCE_INTERVAL_S} s: {worst}")
    assert max(worst.values()) <= REFERENCE_TOLERANCE_BITS, worst


@needs_vpdq_conformance
def test_one_fps_hashes_give_the_reference_verdicts(one_fps: dict[str, VideoHashes]) -> None:
    """At the default 1 fps and thresholds (query >= 80 %, compared >= 0 %):

    - hashmesh takes the frames Meta's reference takes at 1 s per hash;
    - every pair of the reference matrix gets the matrix's verdict, except the four pairs of
      chair-19 (a clip 0.7 s out of phase with 1 fps sampling) and the chair originals;
    - every pair gets the verdict of the reference's own hashes sampled at 1 fps, which miss
      those four pairs as well.
    """
    for name, hashes in one_fps.items():
        expected = [f.timestamp_ms for f in reference_at_one_fps(name)]
        assert [f.timestamp_ms for f in hashes.frames] == expected, name
    rows = expected_comparisons()
    assert len(rows) == 64
    differ = set()
    for row in rows:
        query, compared = row["query"], row["compared"]
        ours = compare_vpdq(one_fps[query].frames, one_fps[compared].frames)
        theirs = compare_vpdq(reference_at_one_fps(query), reference_at_one_fps(compared))
        assert ours.is_match() == theirs.is_match(), (query, compared, ours, theirs)
        matrix = float(row["query_matched_pct"]) >= 80 and float(row["compared_matched_pct"]) >= 0
        if ours.is_match() != matrix:
            differ.add((query, compared))
    assert differ == OUT_OF_PHASE_CLIP_PAIRS


# --- sampling and digests ----------------------------------------------------------------------


def frames_due(frames: list[VpdqFrame], interval_ms: int) -> list[VpdqFrame]:
    """The time rule, applied to every frame: the first, then the first at or after each next
    multiple of the interval."""
    taken: list[VpdqFrame] = []
    for frame in frames:
        if (
            not taken
            or frame.timestamp_ms >= (taken[-1].timestamp_ms // interval_ms + 1) * interval_ms
        ):
            taken.append(frame)
    return taken


@pytest.fixture(scope="module")
def clip() -> bytes:
    """8 s of distinct pictures at 10 fps, H.264 with B-frames."""
    return encode_video([picture(i) for i in range(80)], fps=10)


def test_sampled_decoding_hashes_exactly_the_frames_a_full_decode_would(clip: bytes) -> None:
    every = hash_video(io.BytesIO(clip), interval_s=0)
    assert every.decoded_frames == len(every.frames) == 80
    for interval_ms in (1000, 500, 300):
        hashes = hash_video(io.BytesIO(clip), interval_s=interval_ms / 1000)
        assert list(hashes.frames) == frames_due(list(every.frames), interval_ms)
        assert hashes.decoded_frames < 80  # frames nothing references were not decoded
    assert [f.timestamp_ms for f in hash_video(io.BytesIO(clip)).frames] == list(
        range(0, 8000, 1000)
    )


def test_frames_are_sampled_by_time_at_a_variable_frame_rate() -> None:
    times = [0, 100, 250, 1000, 1050, 2500, 2600, 2999, 3000]
    video = encode_video([picture(i) for i in range(len(times))], pts_ms=times)
    assert [f.timestamp_ms for f in hash_video(io.BytesIO(video)).frames] == [0, 1000, 2500, 3000]
    half = hash_video(io.BytesIO(video), interval_s=0.5)
    assert [f.timestamp_ms for f in half.frames] == [0, 1000, 2500, 3000]
    assert [f.timestamp_ms for f in hash_video(io.BytesIO(video), interval_s=0).frames] == times
    assert half.duration_ms == 3000


def test_timestamps_count_from_the_first_frame() -> None:
    video = encode_video([picture(i) for i in range(4)], pts_ms=[5000, 5500, 6000, 7200])
    hashes = hash_video(io.BytesIO(video))
    assert [f.timestamp_ms for f in hashes.frames] == [0, 1000, 2200]


def test_digests_are_of_the_file_bytes_and_name_the_video(clip: bytes, tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip)
    from_path, from_file = hash_video(path), hash_video(io.BytesIO(clip))
    assert from_path == from_file
    assert from_path.md5 == hashlib.md5(clip).hexdigest()
    assert from_path.sha256 == hashlib.sha256(clip).hexdigest()
    assert (from_path.width, from_path.height) == (128, 96)
    (value,) = from_path.vpdq_values()
    assert decode_vpdq(value).video_id == from_path.sha256
    assert decode_vpdq(value).frames == from_path.frames


def test_a_long_video_gives_several_values_of_the_same_video() -> None:
    video = encode_video([picture(i, 64, 48) for i in range(100)], fps=1)
    hashes = hash_video(io.BytesIO(video))
    values = hashes.vpdq_values()
    assert [len(decode_vpdq(v).frames) for v in values] == [80, 20]
    assert {decode_vpdq(v).video_id for v in values} == {hashes.sha256}


def test_pruning_drops_repeated_frames() -> None:
    still, other = picture(1), picture(2)
    video = encode_video([still] * 30 + [other] * 30, fps=10)
    assert len(hash_video(io.BytesIO(video)).frames) == 6
    pruned = hash_video(io.BytesIO(video), prune_distance=8)
    assert [f.timestamp_ms for f in pruned.frames] == [0, 3000]


def test_a_file_object_is_read_from_its_start(clip: bytes) -> None:
    file = io.BytesIO(clip)
    file.seek(1000)
    assert hash_video(file).sha256 == hashlib.sha256(clip).hexdigest()


# --- bad input ---------------------------------------------------------------------------------


def truncated(video: bytes, keep: float) -> bytes:
    return video[: int(len(video) * keep)]


@pytest.fixture(scope="module")
def faststart(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A clip whose index (moov) comes first, so a cut keeps it and loses frames."""
    path = tmp_path_factory.mktemp("faststart") / "clip.mp4"
    pictures = [picture(i) for i in range(30)]
    return encode_video(pictures, container_options={"movflags": "faststart"}, path=path)


BAD = [
    ("empty", lambda v, f: b"", "empty file"),
    ("text", lambda v, f: b"hello, this is not a video\n" * 40, "not a video, or truncated"),
    ("png", lambda v, f: b"\x89PNG\r\n\x1a\n" + bytes(200), "not a video container hashmesh"),
    ("index lost", lambda v, f: truncated(v, 0.5), "not a video, or truncated"),
    ("frames lost", lambda v, f: truncated(f, 0.5), "video is truncated or damaged"),
    ("audio only", lambda v, f: audio_only(), "no video stream: the file is audio only"),
    ("audio only mkv", lambda v, f: audio_only("matroska"), "no video stream: the file is audio"),
    ("no frame", lambda v, f: video_without_frames(), "no decodable video frame"),
    (
        "raw h264",  # a demuxer hashmesh does not open
        lambda v, f: encode_video([picture(0)], container="h264"),
        "not a video container hashmesh reads",
    ),
    (
        "hls playlist",
        lambda v, f: b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n",
        "not a video",
    ),
]


@pytest.mark.parametrize(("label", "make", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_video_input_is_a_media_error_with_a_reason(
    label: str, make: object, message: str, clip: bytes, faststart: bytes
) -> None:
    data = make(clip, faststart)  # type: ignore[operator]
    with pytest.raises(MediaError) as caught:
        hash_video(io.BytesIO(data))
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (VideoLimits(max_bytes=1000), "file is"),
        (VideoLimits(max_duration_s=5), "video is 8.0 s long, over the limit of 5 s"),
        (VideoLimits(max_frames=50), "video has more than 50 frames (80"),
        (VideoLimits(max_frame_pixels=128 * 95), "frames are 128x96 = 12,288 pixels"),
    ],
)
def test_a_video_over_a_limit_is_refused_before_decoding(
    clip: bytes, limits: VideoLimits, message: str
) -> None:
    with pytest.raises(MediaError) as caught:
        hash_video(io.BytesIO(clip), limits=limits)
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.status == 413


def test_limits_hold_while_decoding_when_the_header_does_not_say() -> None:
    """A Matroska stream written live has no frame count or duration in its header; both are
    checked as frames come."""
    video = encode_video(
        [picture(i, 64, 48) for i in range(40)], container="matroska", seekable=False
    )
    with pytest.raises(MediaError, match=r"more than 25 frames \(26"):
        hash_video(io.BytesIO(video), limits=VideoLimits(max_frames=25))
    with pytest.raises(MediaError, match=r"video is 3\.\d s long, over the limit of 3 s"):
        hash_video(io.BytesIO(video), interval_s=0, limits=VideoLimits(max_duration_s=3))


def test_decoding_stops_at_the_time_budget(clip: bytes) -> None:
    ticks = itertools.count()

    def clock() -> float:  # one second passes at every look
        return float(next(ticks))

    with pytest.raises(MediaError, match=r"decoding took longer than 5 s") as caught:
        hash_video(io.BytesIO(clip), limits=VideoLimits(time_budget_s=5), clock=clock)
    assert caught.value.status == 413
    assert next(ticks) < 10  # it stopped at the budget, not at the end of the file


def test_a_missing_file_is_a_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot read video file"):
        hash_video(tmp_path / "absent.mp4")


@pytest.fixture(scope="module")
def small() -> bytes:
    return encode_video([picture(i, 64, 48) for i in range(12)], fps=4)


@settings(
    max_examples=depth(120, floor=30),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_damaged_videos_hash_or_raise_media_error_only(small: bytes, data: st.DataObject) -> None:
    """The decoder's invariant: hashes, or a MediaError; never another exception or a hang."""
    damaged = bytearray(small)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(damaged)))
    try:
        hashes = hash_video(io.BytesIO(bytes(damaged[:cut])))
    except MediaError as e:
        assert "\n" not in str(e)
        return
    assert hashes.frames and hashes.sha256 == hashlib.sha256(damaged[:cut]).hexdigest()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        hash_video(io.BytesIO(b"x"), interval_s=-1)
    assert DEFAULT_INTERVAL_S == 1.0
