"""The node's one reading of the wall clock, in the protocol's unit (ms since the epoch).

``protocol/`` never reads a clock (SPEC 12.5); the shell reads it here and passes the time in.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
