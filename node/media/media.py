"""A file in, its hashes out: as an image if Pillow reads it, else as a video (PyAV).

What the local API, the web UI and the CLI call for an uploaded or named file; the limits and
the video sampling come from the node's configuration (``[limits]``, ``[media]``).
"""

from __future__ import annotations

import os
from typing import IO, BinaryIO, cast

from node.config import LimitsConfig, MediaConfig
from node.errors import MediaError
from node.media.hashing import MediaHashes, NotAnImageError, hash_image
from node.media.video import VideoHashes, VideoLimits, hash_video


def hash_media(
    file: IO[bytes], limits: LimitsConfig, media: MediaConfig, *, dihedral: bool = False
) -> MediaHashes | VideoHashes:
    """A file's hashes: as an image if Pillow reads it, else as a video (PyAV);
    ``MediaError`` if it is neither, or over a limit."""
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    image_error: MediaError | None = None
    if size <= limits.max_image_bytes:
        try:
            return hash_image(file.read(), max_bytes=limits.max_image_bytes,
                              max_pixels=limits.max_image_pixels, dihedral=dihedral)  # fmt: skip
        except NotAnImageError as e:
            image_error = e
        file.seek(0)
    try:
        return hash_video(cast(BinaryIO, file), interval_s=media.video_interval_s,
                          prune_distance=None if media.video_prune_bits < 0
                          else media.video_prune_bits,
                          limits=video_limits(limits))  # fmt: skip
    except MediaError as e:
        if "not a video" not in str(e):
            raise
        if image_error is not None:
            raise MediaError(f"neither an image nor a video: {image_error}; {e}") from e
        raise MediaError(  # too large for an image, and no video
            f"file is {size} bytes, over the limit of {limits.max_image_bytes} bytes for an "
            f"image (max_image_bytes), and not a video either ({e})",
            status=413,
            title="image too large",
        ) from e


def video_limits(limits: LimitsConfig) -> VideoLimits:
    return VideoLimits(max_bytes=limits.max_video_bytes, max_duration_s=limits.max_video_seconds,
                       max_frames=limits.max_video_frames,
                       time_budget_s=limits.video_time_budget_s)  # fmt: skip
