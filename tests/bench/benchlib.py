"""What the store and audit benchmarks share: deterministic keys, a genesis, record signing."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from protocol import Federation, Founder, SigningKey, draft_genesis, parse_genesis, sign_genesis
from protocol.encoding import encode_canonical
from protocol.records import RECORD_DOMAIN


def bench_key(label: str, n: int) -> SigningKey:
    """Author n's key, derived from label so each benchmark has its own federation."""
    return SigningKey(hashlib.sha256(f"{label} {n}".encode()).digest())


def bench_federation(name: str, keys: list[SigningKey]) -> Federation:
    """A verified genesis with every key a founding member (threshold 2)."""
    founders = [Founder(f"member-{n}", k.public, "member") for n, k in enumerate(keys)]
    doc = draft_genesis(name, 2, founders)
    for key in keys:
        doc = sign_genesis(doc, key)
    return parse_genesis(encode_canonical(doc))


def sign_unsigned(key: SigningKey, unsigned: dict[str, Any]) -> tuple[bytes, str]:
    """A record's canonical bytes and id, signed without the Record constructor's re-verify."""
    signing_input = RECORD_DOMAIN + encode_canonical(unsigned)
    canonical = encode_canonical(unsigned | {"sig": key.sign(signing_input)})
    return canonical, hashlib.sha256(signing_input).hexdigest()


BodyPicker = Callable[[random.Random, list[str]], tuple[str, dict[str, object]]]


def sign_log(
    key: SigningKey,
    fed: str,
    count: int,
    rng: random.Random,
    pick_body: BodyPicker,
    *,
    t0: int,
    ts_step: int,
) -> list[bytes]:
    """One author's chain of count records; pick_body sees the author's own signal ids."""
    records: list[bytes] = []
    prev: str | None = None
    own_signals: list[str] = []
    for seq in range(1, count + 1):
        kind, body = pick_body(rng, own_signals)
        unsigned = {"v": 1, "fed": fed, "author": key.public, "seq": seq, "prev": prev,
                    "ts": t0 + seq * ts_step, "kind": kind, "body": body}  # fmt: skip
        canonical, prev = sign_unsigned(key, unsigned)
        records.append(canonical)
        if kind == "signal":
            own_signals.append(prev)
    return records


def shared_core_ceiling(verify_rate: float, serial_rate: float, cores: int) -> float:
    """The most records/s any implementation can reach on this machine when every record
    needs its signature verified (``verify_rate`` is bare verify on all ``cores``) and also
    some work that runs on one thread (``serial_rate``: bare SQLite writes, or the fold).

    Per record, verification costs cores / verify_rate core-seconds and the serial work
    1 / serial_rate; both share the same cores, and the serial part cannot go faster than
    one thread. A ratio to ``verify_rate`` above ceiling / verify_rate is impossible here.
    """
    shared = cores / (cores / verify_rate + 1 / serial_rate)
    return min(serial_rate, shared)
