"""Benchmark of the memory one image costs to hash (issue 13 item 10). A script, not a test:

    python tests/bench/bench_media.py            # every image below
    python tests/bench/bench_media.py --quick    # the small ones only

Each image is hashed in a fresh Python process, twice: by ``hash_image`` as the node runs it
now (pixels bounded by ``max_image_pixels``, JPEGs decoded reduced, pictures over ~4 MP
box-reduced before hashing), and by the unbounded path the node ran before (``old_hash``
below: decode every pixel, rotate, convert to RGB, hash every pixel; Pillow's own limit of
89.5 M declared pixels was the only bound). A process's RSS is read before the one call and
its peak after it (``VmHWM``, reset through ``/proc/self/clear_refs`` after a warm-up hash of
a small image, so every library is loaded): the growth is what one request costs the node.
Linux only. The images are what an attacker sends cheaply (a 77 KB PNG declaring 81 M black
pixels) and what members upload (12-48 MP photos).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
import pdqhash
from PIL import Image, ImageOps

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from images import GRAY, RGB, blank_png, encode  # noqa: E402

from node.errors import MediaError  # noqa: E402
from node.media.hashing import DEFAULT_MAX_IMAGE_PIXELS, HASH_MAX_PIXELS, hash_image  # noqa: E402


def old_hash(data: bytes) -> object:
    """What hash_image did before pixels were bounded: every pixel decoded and hashed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    bits, quality = pdqhash.compute(np.asarray(rgb))
    gray = rgb.convert("L")
    return (bits, quality, imagehash.phash(gray), imagehash.dhash(gray),
            hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())  # fmt: skip


PATHS: dict[str, Callable[[bytes], object]] = {"old": old_hash, "new": hash_image}


def photo(width: int, height: int) -> Image.Image:
    """A photo-like picture: smooth gradients and blocks, resized up (cheap to make)."""
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, size=(height // 200 + 1, width // 200 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def images(quick: bool) -> list[tuple[str, Callable[[], bytes]]]:
    cases: list[tuple[str, Callable[[], bytes]]] = [
        ("blank PNG 9000x9000 gray (81 MP)", lambda: blank_png(9000, 9000, GRAY)),
        ("blank PNG 6000x6000 RGB (36 MP)", lambda: blank_png(6000, 6000, RGB)),
        ("photo JPEG 8000x6000 (48 MP)", lambda: encode(photo(8000, 6000), "JPEG", quality=90)),
        ("photo PNG 5000x4000 (20 MP)", lambda: encode(photo(5000, 4000), "PNG", compress_level=1)),
    ]
    small = ("photo JPEG 4000x3000 (12 MP)", lambda: encode(photo(4000, 3000), "JPEG", quality=90))
    return [small] if quick else [*cases, small]


def rss_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in KB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(path_name: str, image: Path, warm: Path) -> None:
    """Runs in a fresh process: prints peak RSS growth (KB), seconds, and the outcome."""
    hasher = PATHS[path_name]
    hasher(warm.read_bytes())
    data = image.read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux)
    before = rss_kb("VmRSS")
    began = time.perf_counter()
    try:
        hasher(data)
        outcome = "hashed"
    except MediaError as e:
        outcome = f"refused {e.status}"
    except Exception as e:  # the old path's own failures (Pillow's bomb check)
        outcome = f"failed: {type(e).__name__}"
    seconds = time.perf_counter() - began
    grown = rss_kb("VmHWM") - before
    print(grown, f"{seconds:.3f}", outcome, sep="\t")


def measure(path_name: str, image: Path, warm: Path) -> tuple[float, float, str]:
    command = [sys.executable, __file__, "--child", path_name, str(image), str(warm)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    grown_kb, seconds, outcome = out.strip().split("\t")
    return int(grown_kb) / 1024, float(seconds), outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small image only")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    bound = 5 * DEFAULT_MAX_IMAGE_PIXELS / 2**20 + 25 * HASH_MAX_PIXELS / 2**20
    print(f"max_image_pixels {DEFAULT_MAX_IMAGE_PIXELS:,}; hashed pictures <= {HASH_MAX_PIXELS:,}"
          f" pixels; documented bound ~{bound:.0f} MB per image\n")  # fmt: skip
    print(
        "| image | file | old path: peak RSS growth · time | new: peak RSS growth · time "
        "| memory new/old |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.png"
        warm.write_bytes(encode(photo(640, 480), "PNG"))
        for name, make in images(args.quick):
            image = Path(tmp) / "image"
            image.write_bytes(make())
            old = measure("old", image, warm)
            new = measure("new", image, warm)
            size = image.stat().st_size
            print(f"| {name} | {size / 1024:,.0f} KB | {old[0]:,.0f} MB · {old[1]:.2f} s "
                  f"({old[2]}) | {new[0]:,.0f} MB · {new[1]:.2f} s ({new[2]}) "
                  f"| {new[0] / max(old[0], 1):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
