"""Protocol core throughput: record verification against bare Ed25519, and the state fold.

    python tests/bench/bench_protocol.py            # 1,000,000 records for the fold
    python tests/bench/bench_protocol.py --n 100000 # smaller

Prints one markdown table (the README's benchmark table) from one run:

- decode_record (size check, canonical decoding, schema validation, Ed25519 verification) on
  realistic signal records: ~450 canonical bytes, a PDQ hash, two labels and a note;
- bare PyNaCl ``VerifyKey.verify`` of exactly the same messages (signing input + signature),
  the floor any verifier must pay; the ratio of the two (goal: >= 0.85);
- the libsodium call decode_record itself makes (``crypto_sign_open`` through PyNaCl's cffi
  binding, writing no opened message), so the table also shows what decode_record costs over
  the signature check alone;
- fold_state over N records of a 50-member federation.

Verification is measured on one core (records/s per core). The fold's N records are signed in a
process pool (one task per author log, since each record names its predecessor's id); the pool
hands back the records it signed, and a random sample of them is verified again with
decode_record here before the fold is timed.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import nacl.signing
import orjson
from nacl._sodium import ffi
from nacl._sodium import lib as sodium

from protocol import (
    Federation,
    Founder,
    OpinionBody,
    Record,
    RetractBody,
    SignalBody,
    SigningKey,
    decode_record,
    draft_genesis,
    encode_canonical,
    fold_state,
    parse_genesis,
    sign_genesis,
)
from protocol.bodies import Body
from protocol.records import RECORD_DOMAIN, _trusted_record

MEMBERS = 50
THRESHOLD = 26
TS_MS = 1_763_800_000_000
LABELS = (
    ("behaviour:glorification", "entity:example-group"),
    ("behaviour:graphic-violence", "incident:2019-03-15"),
    ("behaviour:recruitment-instruction", "entity:other-group"),
)
NOTE = "livestream re-upload, clip 0:13-0:42"
VERIFY_GOAL = 0.85


def member_key(i: int) -> SigningKey:
    return SigningKey(hashlib.sha256(f"bench member {i}".encode()).digest())


def make_federation() -> Federation:
    keys = [member_key(i) for i in range(MEMBERS)]
    founders = [Founder(f"Member {i:02}", k.public, "member") for i, k in enumerate(keys)]
    document: Any = draft_genesis("Benchmark federation", THRESHOLD, founders)
    for key in keys:
        document = sign_genesis(document, key)
    return parse_genesis(encode_canonical(document))


def signal_body(author: int, seq: int) -> SignalBody:
    pdq = hashlib.sha256(f"{author}/{seq}".encode()).hexdigest()
    return SignalBody("pdq", pdq, LABELS[seq % len(LABELS)], NOTE)


def body_at(author: int, seq: int, signal_ids: list[str]) -> Body:
    """Mostly signals; every 10th record an opinion, every 25th a retraction."""
    if seq % 25 == 0 and signal_ids:
        return RetractBody(signal_ids[-5 if len(signal_ids) >= 5 else 0])
    if seq % 10 == 0 and signal_ids:
        return OpinionBody(signal_ids[len(signal_ids) // 2], "confirm", LABELS[0])
    return signal_body(author, seq)


def sign_log(task: tuple[str, int, int]) -> list[Record]:
    """One author's log of count records (runs in a pool worker).

    For speed the canonical bytes come from orjson with sorted keys, which is the JCS form
    here (every key is ASCII, no floats), and a fresh signature is not verified again as
    Record's constructor would; the parent re-verifies a sample with decode_record and
    checks it against encode_canonical.
    """
    fed, author, count = task
    key = member_key(author)
    records: list[Record] = []
    signal_ids: list[str] = []
    prev: str | None = None
    for seq in range(1, count + 1):
        body = body_at(author, seq, signal_ids)
        unsigned = {
            "v": 1,
            "fed": fed,
            "author": key.public,
            "seq": seq,
            "prev": prev,
            "ts": TS_MS + seq,
            "kind": body.KIND,
            "body": body.to_json(),
        }
        unsigned_bytes = orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)
        signing_input = RECORD_DOMAIN + unsigned_bytes
        sig = key.sign_raw(signing_input).hex()
        at = unsigned_bytes.rindex(b',"ts":')  # "sig" sorts between "seq" and "ts"
        canonical = b'%s,"sig":"%s"%s' % (unsigned_bytes[:at], sig.encode(), unsigned_bytes[at:])
        record_id = hashlib.sha256(signing_input).hexdigest()
        records.append(_trusted_record(unsigned | {"sig": sig}, body, record_id, canonical))
        if body.KIND == "signal":
            signal_ids.append(record_id)
        prev = record_id
    return records


def generate(federation: Federation, n: int, workers: int) -> tuple[list[Record], float]:
    per_author = [n // MEMBERS + (1 if i < n % MEMBERS else 0) for i in range(MEMBERS)]
    tasks = [(federation.id, i, count) for i, count in enumerate(per_author) if count]
    started = time.perf_counter()
    records: list[Record] = []
    if workers == 1:
        for task in tasks:
            records.extend(sign_log(task))
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for chunk in pool.imap_unordered(sign_log, tasks):
                records.extend(chunk)
    return records, time.perf_counter() - started


def best_rates(runs: Sequence[Callable[[], None]], count: int, rounds: int = 7) -> list[float]:
    """records/s of each run, best of rounds; the runs alternate, so load drift hits all alike."""
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            started = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - started)
    return [count / t for t in best]


def verification_rates(records: Sequence[Record], fed: str) -> tuple[float, float, float, float]:
    """records/s of decode_record, of bare VerifyKey.verify and of the bare libsodium call
    decode_record makes (through PyNaCl's cffi binding), and the mean record size."""
    datas = [r.canonical for r in records]
    keys = {r.author: nacl.signing.VerifyKey(bytes.fromhex(r.author)) for r in records}
    messages = [
        (keys[r.author], RECORD_DOMAIN + encode_canonical(r.unsigned_json()), bytes.fromhex(r.sig))
        for r in records
    ]
    signed = [(bytes(k), s + m) for k, m, s in messages]

    def decode_all() -> None:
        for data in datas:
            decode_record(data, fed)

    def verify_all() -> None:
        for verify_key, message, signature in messages:
            verify_key.verify(message, signature)

    def open_all() -> None:
        for public, data in signed:
            if sodium.crypto_sign_open(ffi.NULL, ffi.NULL, data, len(data), public):
                raise AssertionError("a benchmark signature does not verify")

    verify_all()  # warm every path (key caches, code paths) before timing
    decode_all()
    open_all()
    size = sum(len(d) for d in datas) / len(datas)
    decode_rate, verify_rate, open_rate = best_rates([decode_all, verify_all, open_all], len(datas))
    return decode_rate, verify_rate, open_rate, size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="records to fold")
    parser.add_argument("--verify-n", type=int, default=5_000, help="records to verify")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    federation = make_federation()
    sample = [r for r in sign_log((federation.id, 0, args.verify_n)) if r.kind == "signal"]
    decode_rate, verify_rate, open_rate, size = verification_rates(sample, federation.id)

    records, generation_s = generate(federation, args.n, args.workers)
    for record in random.Random(0).sample(records, min(2000, len(records))):
        assert decode_record(record.canonical, federation.id) == record
        assert encode_canonical(record.to_json()) == record.canonical
    random.Random(1).shuffle(records)  # arrival order is not log order
    started = time.perf_counter()
    state = fold_state(records, federation, TS_MS + 10**9)
    fold_s = time.perf_counter() - started
    active = len(state.active_signals())

    ratio = decode_rate / verify_rate
    goal = "meets the goal" if ratio >= VERIFY_GOAL else "below the goal"
    n = f"{len(records):,}"
    rows = [
        (
            "bare PyNaCl `VerifyKey.verify` (signing input + sig), per core",
            f"{verify_rate:,.0f} records/s",
        ),
        (
            f"`decode_record` (decode + validate + verify, {size:.0f} B signal records), per core",
            f"{decode_rate:,.0f} records/s",
        ),
        (f"ratio decode_record / bare verify (goal >= {VERIFY_GOAL})", f"{ratio:.3f} ({goal})"),
        (
            "bare libsodium `crypto_sign_open` via PyNaCl's binding, no copy-out (the call "
            "decode_record makes), per core",
            f"{open_rate:,.0f} records/s (decode_record reaches {decode_rate / open_rate:.3f})",
        ),
        (
            f"`fold_state` over {n} records, {MEMBERS} members, one core",
            f"{len(records) / fold_s:,.0f} records/s ({fold_s:.1f} s, {active:,} active signals)",
        ),
        (f"generating the {n} signed records ({args.workers} processes)", f"{generation_s:.1f} s"),
    ]
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, one run\n")
    print("| measurement | result |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
