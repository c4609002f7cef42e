"""node.media.hashing: PDQ conformance with Meta's reference, EXIF orientation, formats, bad
media."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import imagehash
import numpy as np
import pdqhash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images import RGB, blank_png
from PIL import Image

from node.config import LimitsConfig, MediaConfig
from node.errors import MediaError
from node.media.hashing import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    HASH_MAX_PIXELS,
    LOW_QUALITY_THRESHOLD,
    MediaHashes,
    hash_image,
)

# ../shared/conformance/pdq beside the repository; HASHMESH_CONFORMANCE names another copy
_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "conformance"
CONFORMANCE = Path(os.environ.get("HASHMESH_CONFORMANCE", _SHARED)) / "pdq"
IMAGES = CONFORMANCE / "images"
needs_conformance = pytest.mark.skipif(
    not (CONFORMANCE / "expected.csv").is_file(),
    reason=f"PDQ conformance set not found at {CONFORMANCE}",
)
REFERENCE_TOLERANCE_BITS = 10  # Meta's criterion for a correct port (pdq/README.md)
MATCH_RADIUS = 31


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def expected_rows() -> list[tuple[str, str]]:
    if not (CONFORMANCE / "expected.csv").is_file():
        return []
    with (CONFORMANCE / "expected.csv").open(newline="") as f:
        return [(row["file"], row["pdq_hex"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def hashed() -> dict[str, MediaHashes]:
    """Every conformance image hashed once."""
    return {name: hash_image((IMAGES / name).read_bytes()) for name, _ in expected_rows()}


def picture(width: int = 192, height: int = 128, seed: int = 7) -> Image.Image:
    """A deterministic blocky picture with enough structure for PDQ quality 100."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
    return Image.fromarray(blocks.repeat(16, axis=0).repeat(16, axis=1))


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=image_format, **options)
    return out.getvalue()


# --- conformance -------------------------------------------------------------------------------


@needs_conformance
@pytest.mark.parametrize(("name", "reference"), expected_rows())
def test_pdq_within_10_bits_of_reference(
    hashed: dict[str, MediaHashes], name: str, reference: str
) -> None:
    result = hashed[name]
    if name == "small.jpg":  # quality 0: tests the low-quality path, not the hash
        assert result.pdq_quality < LOW_QUALITY_THRESHOLD
        assert result.low_quality
        return
    assert result.pdq_quality >= 80
    assert not result.low_quality
    assert distance(result.pdq, reference) <= REFERENCE_TOLERANCE_BITS


@needs_conformance
def test_edited_copies_match_the_original(hashed: dict[str, MediaHashes]) -> None:
    prefixes = ("blur-", "sharpen-", "shrink-", "square-", "high-")
    edits = [name for name in hashed if name.startswith(prefixes)]
    assert len(edits) == 11
    original = hashed["aaa-orig.jpg"].pdq
    far = {name: distance(hashed[name].pdq, original) for name in edits}
    assert max(far.values()) <= MATCH_RADIUS, far


@needs_conformance
def test_dihedral_bridge_images_do_not_match_each_other(hashed: dict[str, MediaHashes]) -> None:
    bridges = sorted(name for name in hashed if name.startswith("bridge-"))
    assert len(bridges) == 8
    for a, b in itertools.combinations(bridges, 2):
        assert distance(hashed[a].pdq, hashed[b].pdq) > MATCH_RADIUS, (a, b)


@needs_conformance
def test_crypto_hashes_are_of_the_raw_bytes(hashed: dict[str, MediaHashes]) -> None:
    for name in ("aaa-orig.jpg", "c.png", "wee.jpg"):
        data = (IMAGES / name).read_bytes()
        assert hashed[name].md5 == hashlib.md5(data).hexdigest()
        assert hashed[name].values["sha1"] == hashlib.sha1(data).hexdigest()
        assert hashed[name].sha256 == hashlib.sha256(data).hexdigest()


@needs_conformance
def test_fast_jpeg_stays_close_to_full_resolution(hashed: dict[str, MediaHashes]) -> None:
    for name in ("aaa-orig.jpg", "bridge-2-rotate-90.jpg", "sharpen-a-lot.jpg"):
        fast = hash_image((IMAGES / name).read_bytes(), fast_jpeg=True)
        assert distance(fast.pdq, hashed[name].pdq) <= REFERENCE_TOLERANCE_BITS
        assert (fast.width, fast.height) == (hashed[name].width, hashed[name].height)


def full_resolution_pdq(image: Image.Image) -> str:
    """PDQ of every pixel, as hash_image computed it before large pictures were reduced."""
    bits, _quality = pdqhash.compute(np.asarray(image.convert("RGB")))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


@needs_conformance
@pytest.mark.parametrize(
    ("name", "image_format"),
    [("aaa-orig.jpg", "PNG"), ("aaa-orig.jpg", "JPEG"), ("bridge-2-rotate-90.jpg", "JPEG"),
     ("c.png", "PNG")],
)  # fmt: skip
def test_large_pictures_are_hashed_reduced_within_tolerance(name: str, image_format: str) -> None:
    """A conformance image upscaled 3x (about 14 MP) is decoded reduced (JPEG draft) and
    box-reduced to ~4 MP before hashing: still within 10 bits of Meta's hash of the original,
    within a few bits of the full-resolution hash, and reported at its full size."""
    reference = dict(expected_rows())[name]
    with Image.open(IMAGES / name) as original:
        big = original.convert("RGB").resize((original.width * 3, original.height * 3))
    assert big.width * big.height > 2 * HASH_MAX_PIXELS
    options = {"quality": 95} if image_format == "JPEG" else {"compress_level": 1}
    data = encode(big, image_format, **options)
    result = hash_image(data)
    if image_format == "PNG":  # lossless: the pixels are big's
        full = full_resolution_pdq(big)
    else:
        with Image.open(io.BytesIO(data)) as decoded:
            full = full_resolution_pdq(decoded)
    assert distance(result.pdq, reference) <= REFERENCE_TOLERANCE_BITS
    assert distance(result.pdq, full) <= 6
    assert (result.width, result.height) == big.size


def test_pictures_up_to_the_hash_size_are_hashed_at_full_resolution() -> None:
    image = picture(2048, 2048, seed=3)
    assert hash_image(encode(image, "PNG")).pdq == full_resolution_pdq(image)


def test_every_mode_of_a_large_picture_is_reduced_alike() -> None:
    """Over HASH_MAX_PIXELS, palette and 1-bit pictures are converted before the box filter
    (averaging palette indices would be noise) and the others reduced as they are."""
    image = picture(2208, 2208, seed=11)  # 4.9 MP
    reference = hash_image(encode(image, "TIFF"))
    for mode in ("L", "LA", "RGBA", "P", "1", "CMYK", "I", "F"):
        result = hash_image(encode(image.convert(mode), "TIFF"))
        assert (result.width, result.height) == (2208, 2208), mode
        assert distance(result.pdq, reference.pdq) <= (8 if mode == "1" else 4), mode


def test_thin_picture_is_reduced_along_its_long_side() -> None:
    image = picture(48_000, 128, seed=5)  # 6.1 MP, 128 px high
    result = hash_image(encode(image, "PNG"))
    assert (result.width, result.height) == (48_000, 128)


# --- what the hashes are -----------------------------------------------------------------------


def test_signals_are_canonical_hex_and_match_imagehash() -> None:
    image = picture()
    result = hash_image(encode(image, "PNG"))
    signals = result.as_signals()
    assert list(signals) == ["pdq", "phash", "dhash", "md5", "sha1", "sha256", "sha512"]
    lengths = {"pdq": 64, "phash": 16, "dhash": 16, "md5": 32, "sha1": 40, "sha256": 64,
               "sha512": 128}  # fmt: skip
    for signal_type, value in signals.items():
        assert len(value) == lengths[signal_type]
        assert value == value.lower()
        int(value, 16)
    assert result.values["phash"] == str(imagehash.phash(image))
    assert result.values["dhash"] == str(imagehash.dhash(image))
    assert (result.width, result.height) == image.size
    assert result.pdq_quality == 100


def test_exif_orientation_is_applied_before_hashing() -> None:
    image = picture(width=160, height=96)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    tagged = hash_image(encode(image, "JPEG", quality=95, exif=exif.tobytes()))
    rotated = hash_image(encode(image.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95))
    unrotated = hash_image(encode(image, "JPEG", quality=95))
    assert (tagged.width, tagged.height) == (96, 160)
    assert distance(tagged.pdq, rotated.pdq) <= 4
    assert distance(tagged.values["phash"], rotated.values["phash"]) <= 2
    assert distance(tagged.pdq, unrotated.pdq) > MATCH_RADIUS  # the tag really mattered
    assert tagged.sha256 != rotated.sha256


@pytest.mark.parametrize(
    ("image_format", "options"),
    [
        ("PNG", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("WEBP", {"lossless": True}),
        ("JPEG", {"quality": 95}),
        ("WEBP", {"quality": 90}),
        ("GIF", {}),
    ],
)
def test_formats_hash_alike(image_format: str, options: dict[str, object]) -> None:
    image = picture()
    reference = hash_image(encode(image, "PNG"))
    result = hash_image(encode(image, image_format, **options))
    lossless = image_format in {"PNG", "BMP", "TIFF"} or options.get("lossless")
    assert distance(result.pdq, reference.pdq) <= (0 if lossless else 16)
    assert (result.width, result.height) == image.size


def test_other_modes_hash() -> None:
    image = picture()
    for mode in ("L", "RGBA", "P", "CMYK", "1", "LA"):
        result = hash_image(encode(image.convert(mode), "TIFF"))
        assert len(result.pdq) == 64, mode


def test_tiny_image_is_low_quality_not_an_error() -> None:
    result = hash_image(encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
    assert result.low_quality
    assert (result.width, result.height) == (1, 1)


# --- bad media ---------------------------------------------------------------------------------


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels but whose data is tiny."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def assert_refused(data: bytes, fragment: str, status: int = 422, **options: int) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(MediaError, match=fragment) as info:
            hash_image(data, **options)  # type: ignore[arg-type]
    assert caught == [], [str(w.message) for w in caught]
    assert info.value.status == status
    assert "\n" not in str(info.value)


def test_empty_file_is_refused() -> None:
    assert_refused(b"", "empty")


def test_not_an_image_is_refused() -> None:
    assert_refused(b"%PDF-1.7 definitely not a picture\n" * 10, "not an image")


def test_truncated_jpeg_is_refused() -> None:
    data = encode(picture(), "JPEG", quality=95)
    assert_refused(data[: len(data) // 2], "truncated")


def test_corrupt_png_is_refused() -> None:
    data = bytearray(encode(picture(), "PNG"))
    data[60:80] = b"\xff" * 20  # inside IDAT: bad CRC / bad deflate stream
    assert_refused(bytes(data), "cannot decode")


def test_decompression_bomb_header_is_refused() -> None:
    assert_refused(png_with_header(100_000, 100_000), "decompression bomb")


@pytest.mark.parametrize("side", [40, 100])  # warning zone (1x..2x the limit), error zone
def test_pixel_limit_is_enforced(monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    assert_refused(encode(picture(side, side), "PNG"), "decompression bomb")


def test_image_over_max_pixels_is_refused_from_its_header() -> None:
    """An 80 KB PNG declaring 81 M black pixels is refused before a pixel is decoded."""
    data = blank_png(9000, 9000)
    assert len(data) < 100_000
    assert_refused(data, "over the limit of 40,000,000 pixels", 413)
    assert_refused(encode(picture(), "PNG"), "max_image_pixels", 413, max_pixels=192 * 128 - 1)
    assert hash_image(encode(picture(), "PNG"), max_pixels=192 * 128).width == 192


def test_jpeg_counts_the_pixels_it_decodes_at() -> None:
    """A JPEG is decoded at 1/2..1/8 scale when large, so max_pixels counts those pixels."""
    data = encode(picture(4800, 4000, seed=9), "JPEG", quality=90)  # 19.2 MP, decoded at 1/2
    assert hash_image(data, max_pixels=5_000_000).width == 4800
    assert_refused(data, "2400x2000", 413, max_pixels=4_000_000)


def test_config_defaults_are_the_hashing_defaults() -> None:
    limits = LimitsConfig()
    assert (limits.max_image_bytes, limits.max_image_pixels) == (
        DEFAULT_MAX_IMAGE_BYTES,
        DEFAULT_MAX_IMAGE_PIXELS,
    )
    assert MediaConfig().min_pdq_quality == LOW_QUALITY_THRESHOLD == 50


PEAK_RSS_SCRIPT = """
import sys
from node.media.hashing import hash_image
def kb(field):
    lines = open("/proc/self/status").read().splitlines()
    return int(next(line for line in lines if line.startswith(field + ":")).split()[1])
data = open(sys.argv[1], "rb").read()
hash_image(open(sys.argv[2], "rb").read())  # loads every library
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = kb("VmRSS")
hash_image(data)
print(kb("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_of_a_large_image_is_bounded(tmp_path: Path) -> None:
    """Hashing a 36 MP RGB PNG raises a fresh process's peak RSS by at most node.media.hashing's
    documented bound: 5 bytes a decoded pixel + 25 bytes a pixel of the <= 4 MP picture that
    is hashed (~285 MB; ~185 MB measured). Hashing every pixel raised it by 1.2 GB
    (``tests/bench/bench_media.py`` prints both side by side)."""
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    big.write_bytes(blank_png(6000, 6000, RGB))
    small.write_bytes(encode(picture(), "PNG"))
    script = [sys.executable, "-c", PEAK_RSS_SCRIPT, str(big), str(small)]
    growth_kb = int(subprocess.run(script, capture_output=True, check=True, text=True).stdout)
    bound = 5 * 6000 * 6000 + 25 * HASH_MAX_PIXELS
    assert growth_kb * 1024 <= bound, f"peak RSS grew by {growth_kb / 1024:.0f} MB"


def test_file_over_max_bytes_is_refused_before_decoding() -> None:
    data = encode(picture(), "PNG")
    assert_refused(data, "over the limit", 413, max_bytes=len(data) - 1)
    assert hash_image(data, max_bytes=len(data)).width == 192
    assert_refused(b"\0" * 2_000, "over the limit", 413, max_bytes=1_000)  # never decoded


SAMPLES = [
    encode(picture(48, 32), "PNG"),
    encode(picture(48, 32), "JPEG"),
    encode(picture(48, 32), "GIF"),
    encode(picture(48, 32), "WEBP"),
    encode(picture(48, 32), "BMP"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_mangled_media_hashes_or_raises_media_error(
    sample: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(sample)
    for position, value in edits:
        data[position % len(data)] = value
    try:
        result = hash_image(bytes(data[: max(cut, 8)]))
    except MediaError:
        return
    assert len(result.pdq) == 64
