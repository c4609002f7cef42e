"""VpdqIndex: candidate search in the frame multi-index, then vPDQ's rule, equals the pure rule.

The pure rule is ``protocol.vpdq.compare_vpdq`` (which reproduces Meta's comparison matrix, see
tests/protocol/test_vpdq.py). Here the index must give the same shares and verdicts for every
pair, on Meta's reference hashes and on random videos with planted near-duplicates, however a
video is split into values.
"""

from __future__ import annotations

import random

import pytest
from vpdq_conformance import (
    expected_comparisons,
    needs_vpdq_conformance,
    reference_frames,
    video_names,
)

from node.media.index import MatchIndex
from node.media.video_index import VpdqIndex
from protocol.vpdq import VpdqFrame, compare_vpdq, matched_ranges, split_vpdq


def random_pdq(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def near(rng: random.Random, pdq: str, bits: int) -> str:
    value = int(pdq, 16)
    for i in rng.sample(range(256), bits):
        value ^= 1 << i
    return f"{value:064x}"


def video(rng: random.Random, frames: int, start_ms: int = 0) -> list[VpdqFrame]:
    return [
        VpdqFrame(random_pdq(rng), rng.choice([30, 60, 80, 100]), start_ms + i * 1000)
        for i in range(frames)
    ]


def index_of(videos: dict[str, list[VpdqFrame]], part: int = 80) -> tuple[VpdqIndex, dict]:
    index, key, keys = VpdqIndex(), 1, {}
    for video_id, frames in videos.items():
        for value in split_vpdq(video_id, frames, part):
            index.add_parsed(key, index.parse(value))
            keys[key] = video_id
            key += 1
    return index, keys


@needs_vpdq_conformance
def test_the_index_reproduces_the_reference_matrix() -> None:
    names = video_names()
    ids = {name: f"{i + 1:064x}" for i, name in enumerate(names)}
    frames = {ids[n]: [r.frame for r in reference_frames(n)] for n in names}
    index, _ = index_of(frames, part=37)  # parts of odd size: the index joins them by id
    answers = {
        name: {m.video_id: m for m in index.match_videos(frames[ids[name]], query_pct=0)}
        for name in names
    }
    for row in expected_comparisons():
        query, compared = row["query"], row["compared"]
        match = answers[query].get(ids[compared])
        q_pct, c_pct = float(row["query_matched_pct"]), float(row["compared_matched_pct"])
        if q_pct == 0:  # no frame hits: not a candidate at all
            assert match is None, (query, compared)
            continue
        assert match is not None, (query, compared)
        assert round(match.query_matched_pct, 2) == q_pct, (query, compared)
        assert round(match.compared_matched_pct, 2) == c_pct, (query, compared)


@pytest.mark.parametrize("seed", range(6))
def test_shares_verdicts_and_ranges_equal_the_pure_rule(seed: int) -> None:
    rng = random.Random(seed)
    videos = {f"{i:064x}": video(rng, rng.randint(1, 150)) for i in range(1, 30)}
    base = videos[f"{1:064x}"]
    # planted: a clip with a few bits flipped per frame, and a re-encode with extra frames
    clip = [VpdqFrame(near(rng, f.pdq, rng.randint(0, 20)), f.quality, f.timestamp_ms - 5000)
            for f in base[5:40] if f.timestamp_ms >= 5000]  # fmt: skip
    videos[f"{100:064x}"] = clip
    index, _ = index_of(videos, part=rng.randint(1, 80))
    queries = [clip, base, video(rng, 20), base[:3] + video(rng, 2, 3000)]
    for query in queries:
        found = {m.video_id: m for m in index.match_videos(query, query_pct=0, compared_pct=0)}
        for video_id, frames in videos.items():
            expected = compare_vpdq(query, frames)
            got = found.get(video_id)
            if expected.query_matched == 0:
                assert got is None
                continue
            assert got is not None
            assert got.query_matched_pct == expected.query_matched_pct
            assert got.compared_matched_pct == expected.compared_matched_pct
            assert got.ranges_ms == matched_ranges(query, frames)
        default = {m.video_id for m in index.match_videos(query)}
        assert default == {v for v, f in videos.items() if compare_vpdq(query, f).is_match()}


def test_a_still_frame_finds_its_video_and_time() -> None:
    rng = random.Random(7)
    frames = video(rng, 50)
    index, keys = index_of({"ab" * 32: frames}, part=20)
    usable = [f for f in frames if f.quality >= 50]
    target = usable[len(usable) // 2]
    (hits,) = index.frames_near([near(rng, target.pdq, 6)])
    assert [(keys[h.key], h.timestamp_ms, h.distance) for h in hits] == [
        ("ab" * 32, target.timestamp_ms, 6)
    ]
    assert index.frames_near([random_pdq(rng)]) == [[]]


def test_removing_a_value_drops_its_frames_and_the_match_index_routes_vpdq() -> None:
    rng = random.Random(3)
    frames = [VpdqFrame(random_pdq(rng), 90, i * 1000) for i in range(100)]
    values = split_vpdq("cd" * 32, frames, 50)
    index = MatchIndex()
    index.add_many([(10, "vpdq", values[0]), (11, "vpdq", values[1]), (12, "pdq", frames[0].pdq)])
    assert [h.key for h in index.query("vpdq", values[0])] == [10, 11]
    assert [h.key for h in index.query("pdq", frames[0].pdq)] == [12]
    index.remove(11)
    assert [h.key for h in index.query("vpdq", values[0])] == [10]
    assert 11 not in index and 10 in index and len(index) == 2
    index.remove(10)
    assert index.query("vpdq", values[0]) == []
