"""Benchmark of video hashing (issue 16): seconds of video hashed per second of CPU at 1 fps,
next to decoding alone (the floor), on the SD conformance videos. A script, not a test:

    python tests/bench/bench_video.py              # the SD samples, best of 3
    python tests/bench/bench_video.py --hd         # the HD ones too
    python tests/bench/bench_video.py --repeat 1
    python tests/bench/bench_video.py --match-videos 10000   # a smaller match table (0: none)

After the hashing table it prints the match table of ``bench_video_match.py`` (a 60 s query
against 10 M frame hashes of 100,000 videos, p50/p99, recall against brute force, memory per
frame).

CPU time is ``time.process_time()`` of this process (every decoder thread included), so
"x real time" is per core. Rows:

- ``decode all frames``: PyAV decodes every frame and converts none (the floor of any hasher
  that looks at every frame);
- ``decode, NONREF before next``: the decode ``hash_video`` does at 1 fps (frames nothing
  references, before the next frame due, skipped), nothing converted or hashed;
- ``decode keyframes only``: ``skip_frame = NONKEY``, for scale only: it hashes other frames
  than the reference, so hashmesh does not do it;
- ``hash_video 1 fps``: what the node runs (reference RGB conversion, PDQ on full frames);
- ``... fast RGB``: PyAV's default YUV->RGB (no ACCURATE_RND): cheaper, far from the reference
  on flat frames;
- ``... frames <= 512 px``: frames shrunk (area) before PDQ: cheaper PDQ, hashes further from
  the reference.

``bits max/mean`` compare each hashed frame with Meta's reference hash of the same frame.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pdqhash
from av.video.reformatter import Interpolation

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import bench_video_match  # noqa: E402
from vpdq_conformance import VIDEOS, reference_frames  # noqa: E402

from node.media import video  # noqa: E402
from protocol.vpdq import VpdqFrame  # noqa: E402

SD = [
    "chair-orig-22-sd-bar",
    "chair-22-sd-grey-bar",
    "chair-22-with-large-logo-bar",
    "chair-19-sd-bar",
    "pattern-sd-grey-bar",
]
HD = ["pattern-hd-no-bar", "doorknob-hd-no-bar", "test-padded-dimensions"]
GOAL_X = 30.0


def decode(path: Path, skip: str = "DEFAULT") -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "SLICE"
        stream.codec_context.skip_frame = skip  # type: ignore[assignment]
        return sum(1 for _ in container.decode(stream))


def decode_as_sampled(path: Path) -> int:
    """hash_video's decode at 1 fps with hashing replaced by nothing."""
    original = video._hash_frame
    video._hash_frame = lambda frame, ms: VpdqFrame("0" * 64, 0, ms)
    try:
        return video.hash_video(path).decoded_frames
    finally:
        video._hash_frame = original


def hashed(
    path: Path, hasher: Callable[[av.VideoFrame, int], VpdqFrame] | None = None
) -> list[VpdqFrame]:
    original = video._hash_frame
    video._hash_frame = hasher or original
    try:
        return list(video.hash_video(path).frames)
    finally:
        video._hash_frame = original


def fast_rgb(frame: av.VideoFrame, ms: int) -> VpdqFrame:
    return _pdq(frame.to_ndarray(format="rgb24"), ms)


def shrunk(frame: av.VideoFrame, ms: int) -> VpdqFrame:
    scale = min(1.0, 512 / max(frame.width, frame.height))
    small = frame.reformat(
        width=max(1, round(frame.width * scale)),
        height=max(1, round(frame.height * scale)),
        format="rgb24",
        interpolation=Interpolation.AREA | Interpolation.ACCURATE_RND,
    )
    return _pdq(small.to_ndarray(), ms)


def _pdq(rgb: np.ndarray, ms: int) -> VpdqFrame:
    bits, quality = pdqhash.compute(rgb)
    return VpdqFrame(
        np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex(), int(quality), ms
    )


def best_cpu(run: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.process_time()
        result = run()
        best = min(best, time.process_time() - start)
    return best, result


def bits_vs_reference(name: str, frames: object) -> str:
    if not isinstance(frames, list):
        return ""
    reference = {r.frame.timestamp_ms: r.frame for r in reference_frames(name)}
    bits = [(f.bits ^ reference[f.timestamp_ms].bits).bit_count() for f in frames]
    return f"{max(bits):>4} {sum(bits) / len(bits):5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hd", action="store_true", help="also the HD and odd-size samples")
    parser.add_argument(
        "--match-videos",
        type=int,
        default=100_000,
        help="listed videos of 100 frames in the match table (0: no match table)",
    )
    args = parser.parse_args()
    names = SD + (HD if args.hd else [])
    variants: list[tuple[str, Callable[[Path], object]]] = [
        ("decode all frames", decode),
        ("decode, NONREF before next", decode_as_sampled),
        ("decode keyframes only", lambda p: decode(p, "NONKEY")),
        ("hash_video 1 fps", hashed),
        ("hash_video 1 fps, fast RGB", lambda p: hashed(p, fast_rgb)),
        ("hash_video 1 fps, frames <= 512 px", lambda p: hashed(p, shrunk)),
    ]
    print(
        f"PyAV {av.__version__}, libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}"
    )
    columns = f"{'variant':36} {'video s':>8} {'CPU s':>7} {'x real':>7} {'vs floor':>8}"
    header = f"{columns} {'bits max mean':>13}"
    totals: dict[str, list[float]] = {label: [0.0, 0.0] for label, _ in variants}
    for name in names:
        path = VIDEOS / f"{name}.mp4"
        seconds = reference_frames(name)[-1].frame.timestamp_ms / 1000 + 1 / 30
        print(f"\n{name} ({seconds:.1f} s)\n{header}")
        floor = None
        for label, run in variants:
            cpu, result = best_cpu(lambda run=run, path=path: run(path), args.repeat)
            floor = floor or cpu
            totals[label][0] += seconds
            totals[label][1] += cpu
            print(
                f"{label:36} {seconds:8.1f} {cpu:7.3f} {seconds / cpu:6.1f}x {cpu / floor:7.2f}x "
                f"{bits_vs_reference(name, result):>13}"
            )
    print(f"\nAll {len(names)} videos (goal: hash_video 1 fps >= {GOAL_X:.0f}x real time per core)")
    print(columns)
    floor_total = totals[variants[0][0]][1]
    for label, (seconds, cpu) in totals.items():
        print(
            f"{label:36} {seconds:8.1f} {cpu:7.3f} {seconds / cpu:6.1f}x {cpu / floor_total:7.2f}x"
        )
    if args.match_videos:  # the match side, in the same run (bench_video_match.py)
        print()
        bench_video_match.main(["--videos", str(args.match_videos)])


if __name__ == "__main__":
    main()
