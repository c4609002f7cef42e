"""Simulated federations: N founding members with fixed keys, and each member's first records.

Keys are derived from the member's number (not from the run's seed), so a federation of N
members is signed once per process and shared by every run (``federation_of``), and a record
signed from the same inputs has the same id in every run: traces compare across runs.
Signatures are real Ed25519 (PyNaCl), genesis and records alike; every simulated node
verifies what it receives with ``protocol.records.decode_record``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from protocol import (
    AnnounceBody,
    Body,
    Federation,
    Founder,
    Record,
    SignalBody,
    SigningKey,
    draft_genesis,
    encode_canonical,
    parse_genesis,
    sign_genesis,
    sign_record,
)

TS0_MS = 1_763_800_000_000  # the simulated epoch: wall time at simulated time 0


def member_key(index: int) -> SigningKey:
    return SigningKey(hashlib.sha256(f"hashmesh sim member {index}".encode()).digest())


def node_url(index: int) -> str:
    return f"http://node{index}.sim:7400/"


@dataclass(slots=True)
class SimFederation:
    federation: Federation
    keys: tuple[SigningKey, ...]  # member i's key
    announces: tuple[Record, ...]  # member i's seq-1 announce (URL node_url(i))
    index: dict[str, int]  # public key -> member number

    @property
    def size(self) -> int:
        return len(self.keys)


@functools.cache
def federation_of(size: int, threshold: int = 2) -> SimFederation:
    """A federation of ``size`` founding members (all role member), signed by all of them."""
    keys = tuple(member_key(i) for i in range(size))
    founders = sorted(
        (Founder(f"Member {i}", k.public, "member") for i, k in enumerate(keys)),
        key=lambda f: f.key,
    )
    doc = draft_genesis(f"Simulated federation of {size}", min(threshold, size), founders)
    for key in keys:
        doc = sign_genesis(doc, key)
    federation = parse_genesis(encode_canonical(doc))
    announces = tuple(
        sign_record(k, fed=federation.id, seq=1, prev=None, ts=TS0_MS,
                    body=AnnounceBody(f"Member {i}", (node_url(i),)))
        for i, k in enumerate(keys)
    )  # fmt: skip
    return SimFederation(federation, keys, announces, {k.public: i for i, k in enumerate(keys)})


def signal_body(number: int, labels: tuple[str, ...] = ("behaviour:glorification",)) -> Body:
    """A sha256 signal body whose value is the number (so each is distinct and readable)."""
    return SignalBody("sha256", f"{number:064x}", labels)
