"""Regenerate the README's web UI screenshots: docs/ui-dashboard.png, ui-signal.png, ui-match.png.

    python scripts/screenshots.py

Runs the browser tests (tests/ui/test_browser.py: real nodes, headless Chromium) with
HASHMESH_SCREENSHOTS=docs, so the pictures are exactly what those tests saw, then shrinks
them losslessly (a palette PNG). Needs Debian's chromium at /usr/bin/chromium.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NAMES = ("dashboard", "signal", "match")


def main() -> int:
    env = os.environ | {"HASHMESH_SCREENSHOTS": str(DOCS)}
    test = ROOT / "tests/ui/test_browser.py"
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(test)], cwd=ROOT, env=env)  # fmt: skip
    if code != 0:
        return code
    for name in NAMES:
        path = DOCS / f"ui-{name}.png"
        if not path.exists():
            print(f"screenshots: {path} was not written (is chromium installed?)", file=sys.stderr)
            return 1
        image = Image.open(path).convert("RGB")
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
