"""Shared by the store tests and the crash-test child: federations, histories, the fold."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

from protocol import (
    AnnounceBody,
    Body,
    Federation,
    Founder,
    OpinionBody,
    Record,
    RetractBody,
    SignalBody,
    SigningKey,
    VoteBody,
    decode_record,
    draft_genesis,
    encode_canonical,
    fold_state,
    parse_genesis,
    sign_genesis,
    sign_record,
)
from protocol.bodies import rotation

T0 = 1_763_800_000_000
LABELS = ("behaviour:glorification", "entity:alpha", "entity:beta", "incident:7")
TYPES = ("sha256", "md5", "pdq", "url")
# what announces list: often nothing (as before the type gate), names known here or not
ANNOUNCED_TYPES = ((), (), ("md5", "sha512"), ("tlsh",), ("md5", "sha512", "tlsh"))


@cache
def key(n: int) -> SigningKey:
    """A deterministic test key (n >= 1)."""
    return SigningKey(hashlib.sha256(f"hashmesh test key {n}".encode()).digest())


def make_federation(
    founders: Sequence[SigningKey], threshold: int, name: str = "test"
) -> Federation:
    members = [Founder(f"founder-{i}", k.public, "member") for i, k in enumerate(founders)]
    doc = draft_genesis(name, threshold, members)
    for k in founders:
        doc = sign_genesis(doc, k)
    return parse_genesis(encode_canonical(doc))


def hash_value(type_: str, n: int) -> str:
    digest = hashlib.sha256(f"content {n}".encode()).hexdigest()
    if type_ == "md5":
        return digest[:32]
    if type_ == "url":
        return f"https://example.org/item/{n}"
    return digest


@dataclass
class Author:
    """One key's log as the history generator builds it."""

    key: SigningKey
    records: list[Record] = field(default_factory=list)

    @property
    def head(self) -> Record | None:
        return self.records[-1] if self.records else None


@dataclass
class History:
    """A random federation history: every record that anyone signed, in signing order."""

    federation: Federation
    rng: random.Random
    authors: dict[str, Author]
    candidates: list[SigningKey]
    spare_keys: list[SigningKey]
    records: list[Record] = field(default_factory=list)
    signals: list[Record] = field(default_factory=list)
    ts: int = T0

    def append(self, author: Author, body: Body) -> Record:
        head = author.head
        self.ts += self.rng.randint(1, 1000)
        record = sign_record(
            author.key,
            fed=self.federation.id,
            seq=1 if head is None else head.seq + 1,
            prev=None if head is None else head.id,
            ts=self.ts,
            body=body,
        )
        author.records.append(record)
        self.records.append(record)
        if isinstance(body, SignalBody):
            self.signals.append(record)
        return record

    def fork(self, author: Author, body: Body) -> Record | None:
        """A second record at some seq of author's log (never continued)."""
        if not author.records:
            return None
        at = self.rng.choice(author.records)
        record = sign_record(
            author.key, fed=self.federation.id, seq=at.seq, prev=at.prev, ts=at.ts + 1, body=body
        )
        self.records.append(record)
        return record


def random_body(h: History, author: Author) -> Body:
    rng = h.rng
    choice = rng.random()
    own = [r for r in author.records if isinstance(r.body, SignalBody)]
    if choice < 0.45 or not h.signals:
        type_ = rng.choice(TYPES)
        labels = tuple(sorted(rng.sample(LABELS, rng.randint(0, 2))))
        expires = rng.choice([None, None, None, T0 + rng.randint(-5_000, 500_000)])
        return SignalBody(type_, hash_value(type_, rng.randint(0, 12)), labels, None, expires)
    if choice < 0.6:
        target = rng.choice(own) if own and rng.random() < 0.8 else rng.choice(h.signals)
        return RetractBody(target.id if rng.random() < 0.95 else "ab" * 32)
    if choice < 0.85:
        verdict = rng.choice(("confirm", "dispute", "seen"))
        return OpinionBody(rng.choice(h.signals).id, verdict, (rng.choice(LABELS),))
    types = rng.choice(ANNOUNCED_TYPES)
    return AnnounceBody(f"node {rng.randint(0, 3)}", (f"https://n{rng.randint(0, 3)}.example/",),
                        types=types)  # fmt: skip


def random_history(rng: random.Random, federation: Federation, steps: int) -> History:
    """Founders, candidates and rotated keys writing signals, retractions, opinions,
    announcements, votes, rotations and now and then a fork."""
    founders = [f.key for f in federation.founders]
    pool = [key(n) for n in range(1, 40)]
    by_public = {k.public: k for k in pool}
    h = History(
        federation=federation,
        rng=rng,
        authors={p: Author(by_public[p]) for p in founders},
        candidates=[k for k in pool if k.public not in founders][:2],
        spare_keys=[k for k in pool if k.public not in founders][2:],
    )
    for c in h.candidates:
        h.authors[c.public] = Author(c)
    for _ in range(steps):
        _step(h)
    return h


def _step(h: History) -> None:
    rng = h.rng
    author = h.authors[rng.choice(sorted(h.authors))]
    roll = rng.random()
    if roll < 0.08:
        target = rng.choice(h.candidates)
        h.append(author, VoteBody("admit", target.public, name=f"cand-{target.public[:4]}",
                                  role="member"))  # fmt: skip
    elif roll < 0.11:
        target = h.authors[rng.choice(sorted(h.authors))]
        h.append(author, VoteBody("remove", target.key.public, after=len(target.records)))
    elif roll < 0.13 and h.spare_keys:
        new = h.spare_keys.pop(0)
        h.append(author, rotation(new, fed=h.federation.id, old=author.key.public))
        del h.authors[author.key.public]
        h.authors[new.public] = Author(new)
    elif roll < 0.17:
        h.fork(author, random_body(h, author))
    else:
        h.append(author, random_body(h, author))


def fold_json(
    datas: Iterable[bytes], federation: Federation, now_ms: int, decoded: dict[bytes, Record]
) -> dict[str, object]:
    """fold_state over record bytes, each decoded (and verified) once per test."""
    records = []
    for data in datas:
        if data not in decoded:
            decoded[data] = decode_record(data, federation.id)
        records.append(decoded[data])
    return fold_state(records, federation, now_ms).to_json()
