"""Media in, signals out: every picture and file hash of an image (``node.media.types``).

- **Cryptographic hashes** (MD5, SHA-1, SHA-256, SHA-512) are over the raw bytes as received.
- **Perceptual hashes** are all computed from one decoded picture: the first frame, rotated and
  flipped upright by its EXIF ``Orientation`` tag (``ImageOps.exif_transpose``, applied once,
  before any hash), then converted once to RGB (alpha dropped, palettes expanded). PDQ
  (``pdqhash``, Meta's reference C++) hashes that RGB array; pHash and dHash (``imagehash``) hash
  its 8-bit grayscale, exactly what ``imagehash.phash(rgb)`` / ``dhash(rgb)`` would compute. So a
  photo and its EXIF-rotated twin get the same hashes, as a viewer would show them. EXIF that
  cannot be parsed counts as no orientation.
- **PDQ hex** is the reference's: ``pdqhash.compute`` returns bits most significant first (bit
  255 of the C++ ``Hash256`` first), so packing them big-endian gives Meta's hex string. PDQ
  quality below ``LOW_QUALITY_THRESHOLD`` (a flat or tiny image) is flagged, not refused.
- **Bad media** raises ``MediaError`` with a one-line reason and never anything else: empty,
  over ``max_bytes`` (checked before decoding, 413), over ``max_pixels`` (checked from the
  header before pixels are decoded, 413), not an image, truncated, a decompression bomb (more
  than ``PIL.Image.MAX_IMAGE_PIXELS`` declared pixels), or any other decoder failure. Pillow's
  warnings are silenced during decoding and its ``DecompressionBombWarning`` is made an error;
  since ``warnings.catch_warnings`` is process-wide before Python 3.14, decoding holds a lock
  (hashing itself runs outside it).
- **Memory is bounded by pixels, not bytes**: a 77 KB PNG can declare 81 million black
  pixels. ``max_pixels`` (``[limits] max_image_pixels``) caps what is decoded; a JPEG is
  counted at the size libjpeg decodes it at, since it is decoded reduced (``Image.draft``: 1/2,
  1/4 or 1/8) whenever it is larger than ``HASH_MAX_PIXELS``. Any decoded picture larger than
  that is then box-reduced (``Image.reduce``) to at most ``HASH_MAX_PIXELS`` before it is
  rotated, converted and hashed, so PDQ, pHash and dHash always run on at most ~4 MP. PDQ
  itself box-filters the picture down to 64x64, so this moves its hash by a few bits at most
  (``tests/node/test_hashing.py`` checks upscaled conformance images against Meta's hashes);
  pictures of at most ``HASH_MAX_PIXELS`` (every image of the conformance set) hash exactly as
  before. Peak memory of one image is therefore about its bytes + 5 bytes x the pixels decoded
  (at most ``max_pixels``; 4 bytes a pixel for the widest Pillow modes, plus a conversion for
  palette and 1-bit images) + ~25 bytes x ``HASH_MAX_PIXELS``; decoding holds the lock above,
  so one full-size picture at a time per process (``tests/bench/bench_media.py`` measures it).
- ``fast_jpeg=True`` lets libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale (``Image.draft``,
  keeping the short side >= 256 px) before hashing: several times faster, but PDQ drifts a few
  bits from the full-resolution hash (see ``tests/bench/bench_match.py``), so it is opt-in.
- **Quality**: PDQ's quality score (0-100) says how much structure the picture has; a flat or
  tiny image scores below ``LOW_QUALITY_THRESHOLD`` (50, ThreatExchange's). Hashing only
  reports it; the node refuses to list (and does not match) such hashes below its
  ``[media] min_pdq_quality`` (node.net.matching, node.net.local_api).
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pdqhash
from PIL import Image, ImageOps, UnidentifiedImageError

from node.errors import MediaError
from node.media.types import NODE_TYPES, Picture

DEFAULT_MAX_IMAGE_BYTES: int = 32 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS: int = 40_000_000  # Pillow refuses only past 89.5 M (179 M hard)
LOW_QUALITY_THRESHOLD: int = 50
HASH_MAX_PIXELS = 2048 * 2048  # a larger picture is reduced to about this size before hashing
FAST_JPEG_MIN_SIDE_PX = 256
# modes Image.reduce averages correctly (a palette index or a 1-bit pixel must be converted first)
_REDUCIBLE_MODES = frozenset(
    {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"}
)

_DECODE_LOCK = threading.Lock()


class NotAnImageError(MediaError):
    """The bytes are no image format Pillow reads (they may be a video)."""


@dataclass(frozen=True, slots=True)
class MediaHashes:
    """Every signal of one image, as canonical lowercase hex: one value for each type in
    ``node.media.types`` that hashes a picture or a file's bytes."""

    values: Mapping[str, str]  # signal type -> value
    pdq_quality: int
    width: int
    height: int
    dihedral: Mapping[str, str] = field(default_factory=dict)  # transform -> PDQ, if asked
    kind: Literal["image"] = "image"

    @property
    def pdq(self) -> str:
        return self.values["pdq"]

    @property
    def md5(self) -> str:
        return self.values["md5"]

    @property
    def sha256(self) -> str:
        return self.values["sha256"]

    @property
    def low_quality(self) -> bool:
        """PDQ quality is too low for the PDQ hash to be trusted for matching."""
        return self.is_low_quality(LOW_QUALITY_THRESHOLD)

    def is_low_quality(self, threshold: int) -> bool:
        """PDQ quality is below threshold (a node's ``min_pdq_quality``): too featureless."""
        return self.pdq_quality < threshold

    def as_signals(self) -> dict[str, str]:
        """Signal type -> value, for every type this image yields."""
        return dict(self.values)


def hash_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    fast_jpeg: bool = False,
    dihedral: bool = False,
) -> MediaHashes:
    """Hash an image file's bytes; raise ``MediaError`` if they are not a usable image. With
    ``dihedral``, also the PDQ of the picture's seven other orientations (``DIHEDRAL``)."""
    if not data:
        raise MediaError("empty file: no image bytes")
    if len(data) > max_bytes:
        raise MediaError(
            f"file is {len(data)} bytes, over the limit of {max_bytes} bytes (max_image_bytes)",
            status=413,
            title="image too large",
        )
    rgb, (width, height) = _decode_rgb(data, max_pixels=max_pixels, fast_jpeg=fast_jpeg)
    pdq, quality = _pdq_hash(rgb)
    picture = Picture(rgb, rgb.convert("L"), pdq, quality)
    values = {n: t.of_picture(picture) for n, t in NODE_TYPES.items() if t.of_picture}
    values |= {n: t.of_bytes(data) for n, t in NODE_TYPES.items() if t.of_bytes}
    turned = _dihedral_pdq(rgb) if dihedral else {}
    return MediaHashes(values, quality, width, height, turned)


# pdqhash.compute_dihedral's order (Meta's pdqDihedralHash256esFromFloatLuma): the PDQ of the
# picture as it is, then as if turned or mirrored so; a listed copy turned by T matches T here
DIHEDRAL = ("original", "rotate_90_ccw", "rotate_180", "rotate_90_cw", "flip_vertical",
            "flip_horizontal", "transpose", "transverse")  # fmt: skip


def _dihedral_pdq(rgb: Image.Image) -> dict[str, str]:
    """PDQ of the seven other orientations of the picture (one pass over its DCT)."""
    hashes, _quality = pdqhash.compute_dihedral(np.asarray(rgb))
    packed = (np.packbits(np.asarray(h, dtype=np.uint8)).tobytes().hex() for h in hashes)
    return dict(list(zip(DIHEDRAL, packed, strict=True))[1:])


def _pdq_hash(rgb: Image.Image) -> tuple[str, int]:
    """PDQ hex (Meta's bit order) and quality of an RGB image."""
    bits, quality = pdqhash.compute(np.asarray(rgb))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex(), int(quality)


def _decode_rgb(
    data: bytes, *, max_pixels: int, fast_jpeg: bool
) -> tuple[Image.Image, tuple[int, int]]:
    """The upright first frame of an image file as RGB (reduced to about ``HASH_MAX_PIXELS``
    if larger), and its full upright size; ``MediaError`` for anything else."""
    with _DECODE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _decode(data, max_pixels, fast_jpeg)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise MediaError(f"decompression bomb refused: {e}") from e
        except UnidentifiedImageError as e:
            raise NotAnImageError("not an image, or a format Pillow cannot read") from e
        except MediaError:
            raise
        except Exception as e:  # any decoder failure on hostile bytes is bad media, not a crash
            raise MediaError(f"cannot decode image: {_one_line(e)}") from e


def _decode(data: bytes, max_pixels: int, fast_jpeg: bool) -> tuple[Image.Image, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width < 1 or height < 1:
            raise MediaError(f"image has no pixels ({width}x{height})")
        if image.format == "JPEG":
            draft = _draft_size(width, height, fast_jpeg)
            if draft != (width, height):
                image.draft(None, draft)  # sets the size libjpeg will decode at
        _check_pixels(image.size, max_pixels)
        image.load()
        picture = _reduced(image)
        upright = _upright(picture)
        turned = upright.size != picture.size  # orientations 5..8 swap the axes
        return upright.convert("RGB"), (height, width) if turned else (width, height)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise MediaError(
            f"image is {size[0]}x{size[1]} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} pixels (max_image_pixels)",
            status=413,
            title="image too large",
        )


def _draft_size(width: int, height: int, fast_jpeg: bool) -> tuple[int, int]:
    """The size to ask ``draft`` for: at least ``HASH_MAX_PIXELS`` pixels (draft never goes
    below the size asked), or with ``fast_jpeg`` a short side of at least 256 px."""
    if fast_jpeg:
        scale = max(1.0, min(width, height) / FAST_JPEG_MIN_SIDE_PX)
    else:
        scale = max(1.0, math.sqrt(width * height / HASH_MAX_PIXELS))
    return max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))


def _reduced(image: Image.Image) -> Image.Image:
    """image box-reduced by whole factors to about ``HASH_MAX_PIXELS``, or image itself."""
    width, height = image.size
    pixels = width * height
    if pixels <= HASH_MAX_PIXELS:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        image = image.convert("RGB")  # what hashing converts it to anyway
    factor = math.ceil(math.sqrt(pixels / HASH_MAX_PIXELS))
    y = min(factor, height)
    x = min(width, max(factor, math.ceil(pixels / (HASH_MAX_PIXELS * y))))  # a thin image
    return image.reduce((x, y))


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # unreadable EXIF: treat as no orientation
        return image


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]
