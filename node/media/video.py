"""Video in, vPDQ frames and file digests out (issue 16; the value format is ``protocol.vpdq``).

- **Decoding**: PyAV (FFmpeg inside its wheels). Only plain container formats are opened
  (``CONTAINER_FORMATS``: MP4/MOV, Matroska/WebM, AVI, FLV, MPEG-TS/PS, Ogg, ASF, GIF);
  playlists and other demuxers that open further files or URLs (HLS, DASH, concat, image
  sequences) are refused before they read anything. The first video stream is decoded;
  rotation metadata is ignored, as the reference does.
- **Frames to RGB exactly as Meta's reference**: the reference vPDQ hashes were made by FFmpeg's
  ``-pix_fmt rgb24`` conversion, which rounds accurately; ``to_ndarray(format="rgb24")`` with
  ``BICUBIC | ACCURATE_RND`` reproduces them (all 3265 frames of the conformance videos: at
  most 6 bits, 0.14 on average), where PyAV's default fast path is up to 76 bits off on near-flat
  frames. PDQ (``pdqhash``, the reference C++) hashes the full-size RGB frame; Meta's bit order,
  packed big-endian, is the hex (as ``node.media.hashing``). Shrinking frames to 512 px before PDQ
  would be about 20% faster but moves hashes 7-9 bits from the reference on average (up to 14;
  more when smaller), so it is not done (``tests/bench/bench_video.py``).
- **Sampling** (``interval_s``, default 1.0 s; 0 = every frame): the first frame is hashed, then
  each frame whose time (from the first frame, exact rational arithmetic on pts) reaches the next
  multiple of the interval after the last hashed frame. Meta's reference samples every
  ``int(interval x frame rate)``-th frame instead (every 29th at 29.97 fps); by time, a
  variable frame rate stream is sampled evenly too. Timestamps are milliseconds from the first
  frame, which for a constant frame rate is the reference's ``frame_number / fps``.
- **Decoding only what is needed**: while the next frame to hash lies ahead, packets are
  decoded with ``skip_frame = NONREF``: a frame no other frame references, earlier than the next
  sample time, cannot be hashed and is not needed to decode one, so the frames hashed are
  exactly those of a full decode (a test checks it) for about a third less decoding work on
  typical H.264.
- **Optional pruning** (``prune_distance``): a frame within that many bits of the last frame
  kept is dropped (``protocol.vpdq.prune_frames``).
- **Exact hashes**: MD5 and SHA-256 of the file bytes, streamed (python-threatexchange's
  ``video_md5`` / ``video_sha256``); the SHA-256 is also the video id of its vpdq values.
- **Bad input** raises ``MediaError`` with a one-line reason and nothing else, never hangs:
  empty, over ``max_bytes`` (before reading it, 413), not a video container (or one not on the
  list), truncated or damaged, no video stream (audio only), no decodable frame, frames over
  ``max_frame_pixels`` (413), longer than ``max_duration_s`` or more than ``max_frames``
  decoded frames (from the header when it says, else while decoding; 413), or decoding past
  ``time_budget_s`` of wall time (checked between packets; one packet decodes in milliseconds).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Literal

import av
import av.container
import av.error
import numpy as np
import pdqhash
from av.video.reformatter import Interpolation

from node.errors import MediaError
from protocol.vpdq import VpdqFrame, prune_frames, split_vpdq

DEFAULT_INTERVAL_S = 1.0
DEFAULT_MAX_VIDEO_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_DURATION_S = 3 * 3600.0
DEFAULT_MAX_FRAMES = 500_000  # decoded frames, hashed or not: 3 h at 46 fps
DEFAULT_MAX_FRAME_PIXELS = 4096 * 4096
DEFAULT_TIME_BUDGET_S = 600.0
CONTAINER_FORMATS = (  # FFmpeg demuxer names
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf,gif"
)
_FORMAT_NAMES = "MP4/MOV, Matroska/WebM, AVI, FLV, MPEG-TS/PS, Ogg, ASF/WMV, GIF"
_RGB_INTERPOLATION = Interpolation.BICUBIC | Interpolation.ACCURATE_RND
_READ_CHUNK = 1 << 20

Source = str | os.PathLike[str] | BinaryIO
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class VideoHashes:
    """The vPDQ frames of one video file and the digests of its bytes."""

    frames: tuple[VpdqFrame, ...]
    md5: str
    sha256: str
    width: int
    height: int
    decoded_frames: int  # frames decoded (a sampled decode skips some it does not need)
    duration_ms: int  # time of the last decoded frame
    kind: Literal["video"] = "video"

    def vpdq_values(self) -> tuple[str, ...]:
        """The canonical ``vpdq`` values of this video: one per run of up to 80 frames,
        each naming the video by its SHA-256."""
        return split_vpdq(self.sha256, self.frames)


@dataclass(frozen=True, slots=True)
class VideoLimits:
    """What one video may cost; each limit has a ``DEFAULT_`` constant."""

    max_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_frames: int = DEFAULT_MAX_FRAMES
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    time_budget_s: float = DEFAULT_TIME_BUDGET_S


def hash_video(
    source: Source,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    prune_distance: int | None = None,
    limits: VideoLimits = VideoLimits(),
    clock: Clock = time.monotonic,
) -> VideoHashes:
    """Hash a video file (a path or a seekable binary file, read from its start)."""
    if not (interval_s >= 0 and math.isfinite(interval_s)):
        raise ValueError(f"interval_s must be a finite number >= 0, not {interval_s}")
    deadline = clock() + limits.time_budget_s
    with _binary(source) as file:
        md5, sha256 = file_digests(file, max_bytes=limits.max_bytes)
        sampler = _Sampler(
            Fraction(interval_s).limit_denominator(1_000_000), limits, deadline, clock
        )
        _decode(file, sampler)
    frames = tuple(sampler.frames)
    if prune_distance is not None:
        frames = prune_frames(frames, prune_distance)
    return VideoHashes(
        frames=frames,
        md5=md5,
        sha256=sha256,
        width=sampler.width,
        height=sampler.height,
        decoded_frames=sampler.decoded,
        duration_ms=sampler.duration_ms,
    )


@contextmanager
def _binary(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as file:
                yield file
        except OSError as e:
            raise MediaError(f"cannot read video file: {e.strerror or e}") from e
    else:
        yield source


def file_digests(file: BinaryIO, *, max_bytes: int = DEFAULT_MAX_VIDEO_BYTES) -> tuple[str, str]:
    """MD5 and SHA-256 of a seekable file's bytes, streamed; the file is left at its start."""
    size = file.seek(0, os.SEEK_END)
    if size == 0:
        raise MediaError("empty file: no video bytes")
    if size > max_bytes:
        raise MediaError(
            f"file is {size} bytes, over the limit of {max_bytes} bytes (max_video_bytes)",
            status=413,
            title="video too large",
        )
    file.seek(0)
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    while chunk := file.read(_READ_CHUNK):
        md5.update(chunk)
        sha256.update(chunk)
    file.seek(0)
    return md5.hexdigest(), sha256.hexdigest()


def _decode(file: BinaryIO, sampler: _Sampler) -> None:
    with _open_container(file) as container:
        try:
            stream = _video_stream(container)
            sampler.check_header(stream, container)
            sampler.run(container, stream)
        except MediaError:
            raise
        except av.error.FFmpegError as e:
            raise MediaError(f"video is truncated or damaged: {_reason(e)}") from e
        except Exception as e:  # any other decoder failure on hostile bytes is bad media
            raise MediaError(f"cannot decode video: {_reason(e)}") from e
    if not sampler.frames:
        raise MediaError("no decodable video frame in the file")


@contextmanager
def _open_container(file: BinaryIO) -> Iterator[av.container.InputContainer]:
    options = {"format_whitelist": CONTAINER_FORMATS, "protocol_whitelist": "file"}
    try:
        container = av.open(file, mode="r", options=options, metadata_errors="ignore")
    except av.error.ArgumentError as e:  # format_whitelist refused the demuxer FFmpeg found
        raise MediaError(
            f"not a video container hashmesh reads ({_FORMAT_NAMES}): {_reason(e)}"
        ) from e
    except Exception as e:
        raise MediaError(f"not a video, or truncated: {_reason(e)}") from e
    with container:
        yield container


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    if container.streams.video:
        stream = container.streams.video[0]
        if stream.codec_context is None:  # FFmpeg has no decoder for it
            raise MediaError("the video stream's codec is unknown or unsupported")
        return stream
    if container.streams.audio:
        raise MediaError("no video stream: the file is audio only")
    raise MediaError("no video stream in the file")


class _Sampler:
    """Decodes one video stream, picks the frames to hash and enforces the limits."""

    def __init__(self, interval: Fraction, limits: VideoLimits, deadline: float, clock: Clock):
        self.interval = interval
        self.limits = limits
        self.deadline = deadline
        self.clock = clock
        self.frames: list[VpdqFrame] = []
        self.decoded = 0
        self.width = self.height = 0
        self.duration_ms = 0
        self.first_pts: int | None = None
        self.next_due = Fraction(0)  # time of the next frame to hash, from the first frame

    def check_header(self, stream: av.VideoStream, container: av.container.InputContainer) -> None:
        """Refuse from the header what is certainly over the limits, before decoding."""
        self._check_pixels(stream.codec_context.width, stream.codec_context.height)
        if stream.frames > self.limits.max_frames:
            self._too_many(stream.frames)
        seconds = _header_seconds(stream, container)
        if seconds is not None and seconds > self.limits.max_duration_s:
            self._too_long(seconds)

    def run(self, container: av.container.InputContainer, stream: av.VideoStream) -> None:
        codec = stream.codec_context
        codec.thread_type = "SLICE"  # frame threads would delay skip_frame changes
        time_base = stream.time_base or Fraction(1, 90_000)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        for packet in container.demux(stream):
            if self.clock() > self.deadline:
                raise MediaError(
                    f"decoding took longer than {self.limits.time_budget_s:g} s "
                    "(time budget); the file is too long or too slow to decode",
                    status=413,
                    title="video too slow to decode",
                )
            codec.skip_frame = "NONREF" if self._skippable(packet, time_base) else "DEFAULT"
            for frame in codec.decode(packet):
                self._take(frame, time_base, rate)

    def _skippable(self, packet: av.Packet[av.VideoStream], time_base: Fraction) -> bool:
        """May a frame of this packet that no other frame references go undecoded? Only
        when it lies before the next frame to hash (and sampling is on)."""
        if self.interval == 0 or self.first_pts is None or packet.pts is None:
            return False
        return (packet.pts - self.first_pts) * time_base < self.next_due

    def _take(self, frame: av.VideoFrame, time_base: Fraction, rate: Fraction) -> None:
        self.decoded += 1
        if self.decoded > self.limits.max_frames:
            self._too_many(self.decoded)
        self._check_pixels(frame.width, frame.height)
        at = self._time(frame, time_base, rate)
        if at > self.limits.max_duration_s:
            self._too_long(float(at))
        ms = round(at * 1000)
        self.duration_ms = max(self.duration_ms, ms)
        if at < self.next_due or (self.frames and ms <= self.frames[-1].timestamp_ms):
            return  # not due, or no later than the last frame hashed (a damaged pts)
        self.frames.append(_hash_frame(frame, ms))
        self.width, self.height = frame.width, frame.height
        if self.interval:
            self.next_due = (at // self.interval + 1) * self.interval

    def _time(self, frame: av.VideoFrame, time_base: Fraction, rate: Fraction) -> Fraction:
        """Seconds from the first frame: from pts, or counted at the frame rate without one."""
        if frame.pts is None:
            return Fraction(self.decoded - 1) / rate
        if self.first_pts is None:
            self.first_pts = frame.pts
        return (frame.pts - self.first_pts) * time_base

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.limits.max_frame_pixels:
            raise MediaError(
                f"frames are {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{self.limits.max_frame_pixels:,} (max_video_frame_pixels)",
                status=413,
                title="video too large",
            )

    def _too_many(self, frames: int) -> None:
        raise MediaError(
            f"video has more than {self.limits.max_frames:,} frames ({frames:,}; max_video_frames)",
            status=413,
            title="video too long",
        )

    def _too_long(self, seconds: float) -> None:
        raise MediaError(
            f"video is {seconds:.1f} s long, over the limit of "
            f"{self.limits.max_duration_s:g} s (max_video_seconds)",
            status=413,
            title="video too long",
        )


def _header_seconds(stream: av.VideoStream, container: av.container.InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _hash_frame(frame: av.VideoFrame, ms: int) -> VpdqFrame:
    rgb = frame.to_ndarray(format="rgb24", interpolation=_RGB_INTERPOLATION)
    bits, quality = pdqhash.compute(rgb)
    pdq = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()
    return VpdqFrame(pdq, int(quality), ms)


def _reason(error: BaseException) -> str:
    """One line: FFmpeg's own wording for its errors, else the exception's text."""
    text = error.strerror if isinstance(error, av.error.FFmpegError) else str(error)
    return " ".join(str(text or type(error).__name__).split())[:200]
