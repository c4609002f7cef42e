"""Test media made with PyAV: small videos of distinct pictures, audio-only files, and a stream
that declares video but holds no frame."""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def picture(seed: int, width: int = 128, height: int = 96) -> np.ndarray:
    """A deterministic RGB picture of 16x16 blocks: PDQ quality 100, and pictures of two seeds
    are far apart."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
    return blocks.repeat(16, axis=0).repeat(16, axis=1)


def encode_video(
    pictures: Sequence[np.ndarray],
    *,
    fps: int = 10,
    container: str = "mp4",
    codec: str = "libx264",
    pts_ms: Sequence[int] | None = None,
    container_options: dict[str, str] | None = None,
    seekable: bool = True,
    path: Path | None = None,
) -> bytes:
    """The pictures as a video file; ``pts_ms`` gives each frame's time (a variable rate).
    Written to a stream that cannot seek (``seekable=False``), a Matroska file has no duration
    or frame count in its header, as a live recording would not. Muxer options that rewrite the
    file when it is closed (``movflags=faststart``) need a ``path``."""
    out: io.BytesIO | _Stream | Path = path or (io.BytesIO() if seekable else _Stream())
    with av.open(out, "w", format=container, options=container_options or {}) as media:
        stream = media.add_stream(codec, rate=fps)
        stream.width, stream.height = pictures[0].shape[1], pictures[0].shape[0]
        stream.pix_fmt = "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            media.mux(stream.encode(frame))
        media.mux(stream.encode(None))
    return out.read_bytes() if isinstance(out, Path) else out.getvalue()


class _Stream:
    """A write-only file: no ``seek``, so a muxer cannot go back to fill in its header."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


def audio_only(container: str = "mp4", codec: str = "aac", seconds: float = 1.0) -> bytes:
    """A file with one audio stream of silence and no video stream."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as media:
        stream = media.add_stream(codec, rate=44_100, layout="mono")
        samples = 1024
        for i in range(round(seconds * 44_100 / samples)):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, samples), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 44_100, i * samples
            media.mux(stream.encode(frame))
        media.mux(stream.encode(None))
    return out.getvalue()


def video_without_frames() -> bytes:
    """An MPEG-TS whose program declares a video stream that never carries a frame."""
    out = io.BytesIO()
    with av.open(out, "w", format="mpegts") as media:
        video = media.add_stream("mpeg4", rate=10)
        video.width, video.height = 64, 48
        audio = media.add_stream("mp2", rate=44_100, layout="mono")
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1152), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 44_100, i * 1152
            media.mux(audio.encode(frame))
        media.mux(audio.encode(None))
    return out.getvalue()
