"""Media in, signals out: PDQ, pHash, dHash and the MD5/SHA-1/SHA-256 of an image's bytes.

- **Cryptographic hashes** are over the raw bytes exactly as received.
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
  over ``max_bytes`` (checked before decoding), not an image, truncated, a decompression bomb
  (more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels, refused from the header before pixels are
  decoded), or any other decoder failure. Pillow's warnings are silenced during decoding and its
  ``DecompressionBombWarning`` is made an error; since ``warnings.catch_warnings`` is process-wide
  before Python 3.14, decoding holds a lock (hashing itself runs outside it).
- ``fast_jpeg=True`` lets libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale (``Image.draft``,
  keeping the short side >= 256 px) before hashing: several times faster, but PDQ drifts a few
  bits from the full-resolution hash (see ``tests/bench/bench_match.py``), so it is opt-in.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
import pdqhash
from PIL import Image, ImageOps, UnidentifiedImageError

from node.errors import MediaError

DEFAULT_MAX_IMAGE_BYTES: int = 32 * 1024 * 1024
LOW_QUALITY_THRESHOLD: int = 50
FAST_JPEG_MIN_SIDE_PX = 256

_DECODE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class MediaHashes:
    """Every signal of one image, as canonical lowercase hex."""

    pdq: str
    pdq_quality: int
    phash: str
    dhash: str
    md5: str
    sha1: str
    sha256: str
    width: int
    height: int

    @property
    def low_quality(self) -> bool:
        """PDQ quality is too low for the PDQ hash to be trusted for matching."""
        return self.pdq_quality < LOW_QUALITY_THRESHOLD

    def as_signals(self) -> dict[str, str]:
        """Signal type -> value, for every type this image yields."""
        return {
            "pdq": self.pdq,
            "phash": self.phash,
            "dhash": self.dhash,
            "md5": self.md5,
            "sha1": self.sha1,
            "sha256": self.sha256,
        }


def hash_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, fast_jpeg: bool = False
) -> MediaHashes:
    """Hash an image file's bytes; raise ``MediaError`` if they are not a usable image."""
    if not data:
        raise MediaError("empty file: no image bytes")
    if len(data) > max_bytes:
        raise MediaError(f"file is {len(data)} bytes, over the limit of {max_bytes} bytes")
    rgb, (width, height) = _decode_rgb(data, fast_jpeg=fast_jpeg)
    pdq, quality = _pdq_hash(rgb)
    gray = rgb.convert("L")
    return MediaHashes(
        pdq=pdq,
        pdq_quality=quality,
        phash=str(imagehash.phash(gray)),
        dhash=str(imagehash.dhash(gray)),
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
    )


def _pdq_hash(rgb: Image.Image) -> tuple[str, int]:
    """PDQ hex (Meta's bit order) and quality of an RGB image."""
    bits, quality = pdqhash.compute(np.asarray(rgb))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex(), int(quality)


def _decode_rgb(data: bytes, *, fast_jpeg: bool) -> tuple[Image.Image, tuple[int, int]]:
    """The upright first frame of an image file as RGB, and its full upright size (which
    ``fast_jpeg`` decoding may have reduced); ``MediaError`` for anything else."""
    with _DECODE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _decode(data, fast_jpeg)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise MediaError(f"decompression bomb refused: {e}") from e
        except UnidentifiedImageError as e:
            raise MediaError("not an image, or a format Pillow cannot read") from e
        except MediaError:
            raise
        except Exception as e:  # any decoder failure on hostile bytes is bad media, not a crash
            raise MediaError(f"cannot decode image: {_one_line(e)}") from e


def _decode(data: bytes, fast_jpeg: bool) -> tuple[Image.Image, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width < 1 or height < 1:
            raise MediaError(f"image has no pixels ({width}x{height})")
        if fast_jpeg and image.format == "JPEG":
            image.draft("RGB", _draft_size(width, height))
        image.load()
        decoded = image.size
        upright = _upright(image)
        turned = upright.size != decoded  # orientations 5..8 swap the axes
        return upright.convert("RGB"), (height, width) if turned else (width, height)


def _draft_size(width: int, height: int) -> tuple[int, int]:
    """The size to ask ``draft`` for: scale so that the short side stays >= the minimum."""
    scale = max(1.0, min(width, height) / FAST_JPEG_MIN_SIDE_PX)
    return max(1, int(width / scale)), max(1, int(height / scale))


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # unreadable EXIF: treat as no orientation
        return image


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]
