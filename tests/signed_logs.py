"""Members' logs signed in memory, for protocol tests that judge what a member may sign next."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol import Body, Record, SigningKey, sign_record


@dataclass
class SignedLogs:
    """Every record signed so far, and each author's head; ``fork`` signs a second record at
    the head's seq."""

    keys: Mapping[str, SigningKey]
    fed: str
    records: list[Record] = field(default_factory=list)
    heads: dict[str, Record] = field(default_factory=dict)

    def add(self, author: str, body: Body) -> Record:
        head = self.heads.get(author)
        seq, prev = (1, None) if head is None else (head.seq + 1, head.id)
        record = sign_record(self.keys[author], fed=self.fed, seq=seq, prev=prev, ts=1, body=body)
        self.records.append(record)
        self.heads[author] = record
        return record

    def fork(self, author: str, body: Body) -> None:
        head = self.heads[author]
        twin = sign_record(self.keys[author], fed=self.fed, seq=head.seq, prev=head.prev, ts=2,
                           body=body)  # fmt: skip
        self.records.append(twin)
