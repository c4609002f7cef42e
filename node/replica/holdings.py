"""What a match replica holds: the active signals, indexed, with their provenance.

``Holdings`` is the replica's whole state, in memory: a ``MatchIndex`` keyed by the node's
signal row ids (as the node's own index is), each signal's provenance as the node shows it
(``GET /v1/signals/{id}``'s shape) kept as compact JSON bytes, and the expiry times of the
signals that have one. It is filled from the node's snapshot (``stage``, then ``build``) and
kept current by the change feed (``apply``): every feed entry carries its signal's state
*now* (or null when the node no longer holds it), so applying entries in order, from any
cursor at or before the snapshot's, ends at the node's state; applying one twice changes
nothing.

A signal leaves at its expiry time without waiting for the feed: ``expire_due`` (called
before every match, and by a timer) drops every signal whose ``expires`` has passed by the
replica's clock, as the node's feed will say too; so an expired signal is never a hit here.

Provenance is packed (node.replica.provenance: ~90 bytes a signal, plus its value and
note); the status is worked out at answer time (``protocol.fold.signal_status``), as the
node does. Mutation is not thread-safe: the
replica serialises ``apply``/``expire_due`` with queries (its index lock).
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from node.errors import PeerError
from node.media.index import MatchIndex
from node.replica.provenance import Packer
from protocol.fold import signal_status
from protocol.records import is_record_id


class FeedDataError(PeerError):
    """The node sent a snapshot line or feed entry a replica cannot use."""

    title = "bad data from the node"


Signal = dict[str, Any]


def _signal(raw: object) -> tuple[Signal, int, str, str, int | None]:
    """A signal as the node shows it, with its row, type, value and expiry; FeedDataError if
    it is not one."""
    if not isinstance(raw, dict):
        raise FeedDataError(f"a signal must be a JSON object, got {type(raw).__name__}")
    row, kind, value = raw.get("row"), raw.get("type"), raw.get("value")
    expires = raw.get("expires")
    if type(row) is not int or not isinstance(kind, str) or not isinstance(value, str):
        raise FeedDataError("a signal needs an integer row and string type and value")
    if not is_record_id(raw.get("id")):
        raise FeedDataError(f"signal row {row}: id must be 64 lowercase hex")
    if expires is not None and type(expires) is not int:
        raise FeedDataError(f"signal row {row}: expires must be an integer or null")
    return raw, row, kind, value, expires


def release_freed_memory() -> None:
    """Hand the heap a bulk build freed back to the system: glibc keeps it otherwise (a
    quarter of what a million signals cost, measured). A no-op where there is no
    ``malloc_trim`` (not glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class Holdings:
    """The active signals a replica answers from (module docstring)."""

    def __init__(self, radii: Mapping[str, int] | None = None) -> None:
        self.index = MatchIndex(radii)
        self._rows: dict[int, bytes] = {}  # row -> provenance, packed
        self._expires: dict[int, int] = {}  # row -> expiry (ms), for rows that have one
        self._due: list[tuple[int, int]] = []  # heap of (expiry ms, row); may hold stale pairs
        self._staged: list[int] = []  # rows waiting for build()
        self._packer = Packer()

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, row: object) -> bool:
        return row in self._rows

    def stage(self, signals: Iterable[object], now_ms: int) -> None:
        """Take a batch of a snapshot's signals (each active at the snapshot) into holdings
        that are being built; ``build`` indexes them all at once."""
        for raw in signals:
            signal, row, _, _, expires = _signal(raw)
            if expires is not None and expires <= now_ms:
                continue  # expired while the snapshot streamed
            self._keep(row, signal, expires)
            self._staged.append(row)

    def build(self) -> int:
        """Index everything staged, in one bulk build; the number of signals held."""
        rows, self._staged = self._staged, []
        # made now, after every signal is kept, so this transient list is freed in whole
        # arenas rather than leaving holes between the kept provenance
        staged = [(row, *self._packer.type_value(self._rows[row])) for row in rows]
        try:
            self.index.add_many(staged)
        except ValueError as e:  # an unknown type or a bad value
            raise FeedDataError(f"snapshot: {e}") from e
        del staged
        release_freed_memory()
        return len(self._rows)

    def apply(self, signal_id: str, raw: object, now_ms: int) -> None:
        """One feed entry: the signal's state now (None: the node no longer holds it)."""
        if raw is None:
            self._drop_id(signal_id)
            return
        signal, row, kind, value, expires = _signal(raw)
        state = signal_status(expires, signal.get("retracted_by") is not None, now_ms)
        if signal.get("status") != "active" or state != "active":
            self.remove(row)
            return
        held = self._rows.get(row)
        if held is None or self._packer.type_value(held) != (kind, value):
            try:
                self.index.add(row, kind, value)
            except ValueError as e:
                raise FeedDataError(f"signal row {row}: {e}") from e
        self._keep(row, signal, expires)

    def remove(self, row: int) -> None:
        if self._rows.pop(row, None) is not None:
            self.index.remove(row)
            self._expires.pop(row, None)

    def expire_due(self, now_ms: int) -> int:
        """Drop every held signal whose expiry is at or before now_ms; the number dropped."""
        dropped = 0
        while self._due and self._due[0][0] <= now_ms:
            expires, row = heapq.heappop(self._due)
            if self._expires.get(row) == expires:
                self.remove(row)
                dropped += 1
        return dropped

    def next_expiry_ms(self) -> int | None:
        while self._due and self._expires.get(self._due[0][1]) != self._due[0][0]:
            heapq.heappop(self._due)  # a stale pair: the signal left or changed its expiry
        return self._due[0][0] if self._due else None

    def signal_rows(self, rows: Sequence[int], now_ms: int) -> list[dict[str, Any]]:
        """Provenance of held signals by row, in order (rows not held left out), with the
        status at now_ms, exactly as the node answers it."""
        found = []
        for row in rows:
            blob = self._rows.get(row)
            if blob is not None:
                signal = self._packer.unpack(blob, row)
                retracted = signal.get("retracted_by") is not None
                signal["status"] = signal_status(signal.get("expires"), retracted, now_ms)
                found.append(signal)
        return found

    def _keep(self, row: int, signal: Signal, expires: int | None) -> None:
        try:
            self._rows[row] = self._packer.pack(signal)
        except ValueError as e:
            raise FeedDataError(f"signal row {row}: {e}") from e
        if expires is None:
            self._expires.pop(row, None)
        elif self._expires.get(row) != expires:
            self._expires[row] = expires
            heapq.heappush(self._due, (expires, row))

    def _drop_id(self, signal_id: str) -> None:
        """Forget the signal with this record id: a scan, for the rare entry that names a
        signal the node no longer holds (a frozen author's records after its fork)."""
        prefix = bytes.fromhex(signal_id)
        for row, blob in list(self._rows.items()):
            if blob.startswith(prefix):
                self.remove(row)
