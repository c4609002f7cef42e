"""How deep the heaviest randomised tests go.

`make test` runs them at a quarter of their full depth so the suite fits its five-minute budget
on two cores; `make fuzz` (``HASHMESH_FUZZ_DEPTH=1``) runs them at full depth, and a larger value
goes deeper still. Lighter property tests keep their own fixed example counts.
"""

from __future__ import annotations

import os

SCALE = float(os.environ.get("HASHMESH_FUZZ_DEPTH", "0.25"))


def depth(full: int, *, floor: int = 100) -> int:
    """The number of examples (or rounds) to run for a test whose full depth is ``full``."""
    return max(floor, round(full * SCALE))
