"""Test images built byte by byte: huge but tiny blank PNGs, and PNGs padded to a size."""

from __future__ import annotations

import io
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRAY, RGB = 0, 2  # PNG colour types


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body).to_bytes(4, "big")
    return len(body).to_bytes(4, "big") + kind + body + crc


def blank_png(width: int, height: int, colour_type: int = GRAY) -> bytes:
    """A real all-black 8-bit PNG, compressed as it is made: 9000 x 9000 gray is ~80 KB
    of file for 81 million pixels (what a decompression-amplification attack sends)."""
    deflate = zlib.compressobj(9)
    row = b"\0" * (1 + width * (3 if colour_type == RGB else 1))  # filter byte + pixels
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, colour_type, 0, 0, 0])
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def padded_png(image: bytes, size: int) -> bytes:
    """A PNG grown to exactly size bytes by a private ancillary chunk, which decoders skip."""
    iend = image.rindex(b"IEND") - 4
    pad = png_chunk(b"hmPd", b"\0" * (size - len(image) - 12))
    assert len(image) + len(pad) == size
    return image[:iend] + pad + image[iend:]


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=image_format, **options)
    return out.getvalue()
