"""Child process of test_store_crash: merges a stream of records in batches until killed.

Usage: store_crash_child.py DB FEDERATION RECORDS START BATCH

RECORDS holds one record per line (canonical JSON has no raw newlines). The child merges
records[START:] in batches of BATCH and, after each merge has committed, prints one JSON line:
the batch's end index and the ids it reported stored (accepted or duplicate) and pending.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from node.store.store import MergeStatus, Store
from protocol import parse_genesis

RECEIVED_MS = 1_763_900_000_000


def main(db: str, federation_file: str, records_file: str, start: int, batch: int) -> None:
    federation = parse_genesis(Path(federation_file).read_bytes())
    records = Path(records_file).read_bytes().split(b"\n")[:-1]
    with Store.open(Path(db), federation, create=True) as store:
        print("ready", flush=True)
        for i in range(start, len(records), batch):
            result = store.merge(records[i : i + batch], received_ms=RECEIVED_MS)
            stored = [o.id for o in result.outcomes if o.status in _STORED]
            pending = [o.id for o in result.outcomes if o.status is MergeStatus.PENDING]
            line = {"end": min(i + batch, len(records)), "stored": stored, "pending": pending}
            print(json.dumps(line), flush=True)
    print("done", flush=True)


_STORED = (MergeStatus.ACCEPTED, MergeStatus.DUPLICATE)

if __name__ == "__main__":
    db, fed, recs, start, batch = sys.argv[1:6]
    main(db, fed, recs, int(start), int(batch))
