"""Process settings for a node or an audit that handles millions of records.

Matching first (``tune_for_serving``): a node's event loop answers matches, which members'
upload pipelines wait on, while the store's writer thread merges a burst of records. Both need
the GIL, and a thread that wants it waits for the holder's *switch interval* (5 ms by default)
before the holder is made to let go; a match request takes the GIL a handful of times (the
loop, the index query's thread, the provenance reader), so during a merge it queued for up to
tens of milliseconds. A serving node switches every ``SERVE_SWITCH_INTERVAL_S`` instead: a
waiting thread gets the GIL within half a millisecond, for the cost of more frequent
switches, which only happen while two threads both want to run Python (``tests/bench/
bench_match_burst.py``).

CPython's cyclic garbage collector runs a young-generation pass every 700 container
allocations and rescans survivors in the older generations. Merging or auditing a batch
allocates several containers per record (the parsed JSON, the record, its body, row tuples),
so with the default thresholds the collector costs about a sixth of the writer's time and a
fifth of an audit's (``tests/bench``: 36.9 -> 30.8 us per record written, 13.2k -> 15.6k
records/s audited). Those objects are freed by reference counting when the batch is done;
the few cycles the process makes (exceptions, aiohttp internals) are still collected, just
less often.
"""

from __future__ import annotations

import gc
import sys
from typing import Final

GC_THRESHOLDS: Final = (100_000, 50, 100)
SERVE_SWITCH_INTERVAL_S: Final = 0.0005


def tune_for_bulk_records() -> None:
    """Collect garbage cycles less often (see the module docstring)."""
    gc.set_threshold(*GC_THRESHOLDS)


def tune_for_serving() -> None:
    """Hand the GIL over to a waiting thread sooner (see the module docstring)."""
    sys.setswitchinterval(SERVE_SWITCH_INTERVAL_S)
