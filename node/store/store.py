"""The node's store: the whole federation's records in one SQLite file, and their state.

``Store`` is the synchronous core. A writer ``Store`` owns the one write connection and the
in-memory frontier (``node.store.merge.WriterState``); ``Store.open(..., readonly=True)`` gives a
reader with its own connection that sees the last committed merge (WAL). ``AsyncStore`` is
what the aiohttp node awaits: the writer lives on one dedicated thread, readers on a small
thread pool, and nothing touches SQLite on the event loop.

Merging (``merge``) is: verify every record through ``protocol`` (``node.store.verify_pool``, on
worker processes when asked), decide each one against the stored frontier and write it
(``node.store.merge``), and bring the materialised state up to date
(``node.store.materialise``) -- all in one transaction, committed with ``synchronous=FULL``
before the result is returned, so an acknowledged record survives a crash or a power cut.
Re-merging anything changes nothing.

Everything the node shows is a query over the materialised tables, which always equal
``protocol.fold_state`` over the stored records (``materialised_state`` renders them exactly
as ``State.to_json`` does, so tests and audits compare the two directly). Expiry is the one
part evaluated when read: queries take ``now_ms``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import orjson

from node.errors import StoreError, StoreRefusedError
from node.store import changefeed
from node.store import read as reads
from node.store.materialise import Keyer, SignalChange, WriterState, id8
from node.store.merge import Merger, MergeResult, MergeStatus, Outcome, load_state
from node.store.read import SignalQuery
from node.store.schema import open_database, quick_check
from node.store.verify_pool import Verified, VerifyJob, VerifyPool, verify_inline
from protocol import (
    AnnounceBody,
    Body,
    Federation,
    ForkEvidence,
    Head,
    LocalProtocolError,
    Membership,
    Record,
    SigningKey,
    sign_record,
)
from protocol.authoring import Target
from protocol.batch import trusted_record
from protocol.bodies import OpinionBody, RetractBody
from protocol.ledger import membership_of_stored
from protocol.records import is_record_id, record_id_of
from protocol.sync import capped_heads

__all__ = [
    "AsyncStore",
    "MergeResult",
    "MergeStatus",
    "Outcome",
    "PreparedMerge",
    "SignalChange",
    "Store",
]

T = TypeVar("T")
RESERVED_META: Final = frozenset({"schema_version", "federation_id", "federation", "lookup_salt"})
POOL_MIN_BATCH: Final = 256  # smaller batches verify on the writer thread
_PAGE_ROWS: Final = 1000


@dataclass(frozen=True, slots=True)
class PreparedMerge:
    """A batch whose verification has started (``Store.prepare_merge``)."""

    batch: Sequence[bytes]
    job: VerifyJob | None


class Store:
    """One node database: a writer (``merge``, ``append_local``, ...) or a reader."""

    def __init__(
        self, path: Path, federation: Federation, conn: sqlite3.Connection, *, writer: bool
    ) -> None:
        self.path = path
        self.federation = federation
        self.conn = conn
        self.writer = writer
        self._state: WriterState | None = None
        self._pool: VerifyPool | None = None
        self._pool_lock = threading.RLock()  # prepare_merge may run off the writer thread
        self._closed = False
        self._membership: tuple[int, Membership] | None = None  # reader cache: data_version
        self._stats: tuple[int, int | None, tuple[int, int], dict[str, int]] | None = None
        self._keyer = Keyer(bytes.fromhex(self.get_meta("lookup_salt") or ""))

    @classmethod
    def open(
        cls,
        path: Path,
        federation: Federation,
        *,
        create: bool = False,
        readonly: bool = False,
        check: bool = False,
    ) -> Store:
        """Open (or with create, make) the node database at path for this federation.

        Refuses with ``StoreRefusedError`` a file that is corrupt, from a newer schema, of
        another federation, or not a hashmesh database. ``check`` also runs SQLite's
        ``quick_check`` over the whole file first (it reads every page).
        """
        conn = open_database(Path(path), federation, create=create, writer=not readonly)
        store = cls(Path(path), federation, conn, writer=not readonly)
        try:
            if check:
                store._refuse_if_damaged()
            if store.writer:
                store._start_writer()
        except BaseException:
            conn.close()
            raise
        return store

    def _refuse_if_damaged(self) -> None:
        problems = quick_check(self.conn)
        if problems:
            raise StoreRefusedError(f"{self.path}: database is corrupt: {'; '.join(problems[:3])}")

    def _start_writer(self) -> None:
        """Load the frontier and make the materialised state match the derived membership."""
        self._state = load_state(self.conn, self.federation)
        self._transaction(lambda state: Merger(self.conn, self.federation, state, 0).finish(
            rederive=True
        ))  # fmt: skip

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        if self.writer:
            self.conn.execute("PRAGMA optimize")
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def merge(
        self, batch: Sequence[bytes], *, received_ms: int, verify_workers: int = 0
    ) -> MergeResult:
        """Verify and merge a batch of record bytes in one transaction (see node.store.merge)."""
        prepared = self.prepare_merge(batch, verify_workers=verify_workers)
        return self.finish_merge(prepared, received_ms=received_ms)

    def prepare_merge(self, batch: Sequence[bytes], *, verify_workers: int = 0) -> PreparedMerge:
        """Start verifying batch (on the pool, if workers) without writing anything yet.

        ``finish_merge`` writes it later; meanwhile the writer can finish an earlier batch,
        so verification of batch k+1 overlaps the writes of batch k (streamed sync). Safe to
        call from any thread: it touches only the pool.
        """
        self._writer_state()
        if verify_workers > 0 and batch:
            with self._pool_lock:  # not while close() shuts the pool down
                return PreparedMerge(batch, self._verify_pool(verify_workers).verify(batch))
        return PreparedMerge(batch, None)

    def finish_merge(
        self, prepared: PreparedMerge | Sequence[PreparedMerge], *, received_ms: int
    ) -> MergeResult:
        """Write prepared batches, in order, in one transaction: one result whose outcomes
        are indexed through the batches as if they were one (a bulk pull groups its pages,
        so SQLite commits fewer, larger transactions)."""
        group = [prepared] if isinstance(prepared, PreparedMerge) else list(prepared)
        size = sum(len(p.batch) for p in group)
        return self._merge_verified(_verified_in_order(group, self.federation.id), size,
                                    received_ms)  # fmt: skip

    def merge_many(
        self, batches: Iterable[Sequence[bytes]], *, received_ms: int, verify_workers: int = 0
    ) -> Iterator[MergeResult]:
        """``merge`` each batch in turn, each in its own transaction (bulk sync).

        With workers, the next batch is already being verified while this one is written and
        committed, so the cores do not idle during commits.
        """
        if verify_workers <= 0:
            for batch in batches:
                yield self.merge(batch, received_ms=received_ms)
            return
        self._writer_state()
        pool = self._verify_pool(verify_workers)
        ahead: list[tuple[Sequence[bytes], VerifyJob]] = []
        try:
            for batch in batches:
                ahead.append((batch, pool.verify(batch)))
                if len(ahead) > 1:
                    done, job = ahead.pop(0)
                    yield self._merge_verified(iter(job), len(done), received_ms)
            while ahead:
                done, job = ahead.pop(0)
                yield self._merge_verified(iter(job), len(done), received_ms)
        finally:
            for _, job in ahead:
                job.cancel()

    def _verify_pool(self, workers: int) -> VerifyPool:
        with self._pool_lock:
            if self._closed:
                raise StoreError("the store is closed")
            if self._pool is not None and self._pool.workers != workers:
                self._pool.close()
                self._pool = None
            if self._pool is None:
                self._pool = VerifyPool(workers, self.federation.id)
            return self._pool

    def _merge_verified(
        self, verified: Iterator[tuple[int, Verified]], size: int, received_ms: int
    ) -> MergeResult:
        def run(state: WriterState) -> MergeResult:
            before = state.membership
            merger = Merger(self.conn, self.federation, state, received_ms)
            for index, item in verified:
                if isinstance(item, Record):
                    merger.offer(index, item)
                else:
                    merger.reject(index, item)
            accepted, changes = merger.finish()
            activations = ((c.row, c.id, c.active) for c in changes)
            after = merger.membership
            moved = changefeed.moved_keys(before, after) if after is not None else set()
            feed = changefeed.merge_changes(self.conn, received_ms, activations, accepted, moved)
            changefeed.append(self.conn, feed)
            outcomes = [merger.outcomes[i] for i in range(size)]
            return MergeResult(outcomes, accepted, changes, merger.forks, merger.membership)

        return self._transaction(run)

    def _transaction(self, fn: Callable[[WriterState], T]) -> T:
        """Run fn in one write transaction; on any failure roll back and reload the frontier."""
        state = self._writer_state()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(state)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._state = load_state(self.conn, self.federation)
            raise
        return result

    def append_local(self, key: SigningKey, body: Body, *, ts: int) -> Record:
        """Sign body as the next record of key's own log and merge it."""
        return self.append_local_result(key, body, ts=ts).accepted[0]

    def append_local_result(self, key: SigningKey, body: Body, *, ts: int) -> MergeResult:
        """``append_local``, with the merge result (its signal changes feed the match index).

        Every record this node signs is signed here, after ``protocol.authoring`` said that
        this member may sign this body now (``AuthoringError`` if not: SPEC 4.5)."""
        state = self._writer_state()
        seq = state.ledger.check_authoring(key.public, body, self._target(body, ts),
                                           announced=self.announced_types)  # fmt: skip
        head = state.heads.get(key.public)
        record = sign_record(
            key, fed=self.federation.id, seq=seq, prev=None if head is None else head.id, ts=ts,
            body=body,
        )  # fmt: skip
        result = self._merge_verified(iter([(0, record)]), 1, ts)
        if result.outcomes[0].status is not MergeStatus.ACCEPTED:
            raise LocalProtocolError(f"own record was not accepted: {result.outcomes[0]}")
        return result

    def _target(self, body: Body, now_ms: int) -> Target | None:
        """The counted signal a retract or opinion names, as the authoring rules see it."""
        if not isinstance(body, RetractBody | OpinionBody):
            return None
        row = reads.signal(self.conn, body.signal, now_ms=now_ms)
        return None if row is None else Target(str(row["member"]), row["retracted_by"] is not None)

    def _writer_state(self) -> WriterState:
        if self._state is None:
            raise StoreError("this store was opened read-only")
        return self._state

    # -- the log -------------------------------------------------------------------------

    def heads(self) -> list[Head]:
        rows = self.conn.execute(
            "SELECT key, head_seq, head_id FROM keys WHERE head_seq > 0 ORDER BY key"
        )
        return [Head(key, seq, hid.hex()) for key, seq, hid in rows]

    def frontier_heads(self, caps: Mapping[str, int | None]) -> dict[str, Head]:
        """The heads this node reports in its frontier and plans with: each frozen author's
        at its cap (``protocol.sync.capped_heads``, SPEC 10.2); ``log`` still serves all."""
        return capped_heads({h.author: h for h in self.heads()}, caps, self._id_at)

    def _id_at(self, author: str, seq: int) -> str:
        row = self.conn.execute(
            "SELECT r.id FROM records r JOIN keys k ON k.ref = r.author "
            "WHERE k.key = ? AND r.seq = ? ORDER BY r.row LIMIT 1",
            (author, seq),
        ).fetchone()
        if row is None:  # the chain up to a head is stored whole: this is a broken store
            raise StoreError(f"no stored record of {author} at seq {seq}, below its head")
        return bytes(row[0]).hex()

    def head(self, author: str) -> Head | None:
        row = self.conn.execute(
            "SELECT head_seq, head_id FROM keys WHERE key = ? AND head_seq > 0", (author,)
        ).fetchone()
        return None if row is None else Head(author, row[0], row[1].hex())

    def log(self, author: str, after: int = 0, limit: int = 1000) -> list[bytes]:
        """author's stored records with seq > after, in seq order (a fork's two side by side)."""
        rows = self.conn.execute(
            "SELECT r.raw FROM records r JOIN keys k ON k.ref = r.author "
            "WHERE k.key = ? AND r.seq > ? ORDER BY r.seq, r.row LIMIT ?",
            (author, after, limit),
        )
        return [raw for (raw,) in rows]

    def forks(self) -> list[ForkEvidence]:
        rows = self.conn.execute(
            "SELECT f.first, f.second FROM forks f JOIN keys k ON k.ref = f.author ORDER BY k.key"
        )
        return [ForkEvidence(_stored_record(a), _stored_record(b)) for a, b in rows]

    def record(self, record_id: str) -> bytes | None:
        if not is_record_id(record_id):
            return None
        rid = bytes.fromhex(record_id)
        row = self.conn.execute(
            "SELECT raw FROM records WHERE id8 = ? AND id = ?", (id8(rid), rid)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def all_records(self) -> Iterator[bytes]:
        """Every stored record, in (author, seq) order, read in pages."""
        after = ("", 0, 0)
        while page := self.records_page(after, _PAGE_ROWS):
            yield from (raw for *_, raw in page)
            after = page[-1][:3]

    def records_page(
        self, after: tuple[str, int, int], limit: int
    ) -> list[tuple[str, int, int, bytes]]:
        """Up to limit stored records after the position ``(author key, seq, row)``, in that
        order, as ``(author, seq, row, raw)``; ``("", 0, 0)`` is the start."""
        key, seq, row = after
        out: list[tuple[str, int, int, bytes]] = []
        authors = self.conn.execute("SELECT ref, key FROM keys WHERE key >= ? ORDER BY key", (key,))
        for ref, author in authors.fetchall():
            start = (seq, row) if author == key else (0, 0)
            rows = self.conn.execute(
                "SELECT seq, row, raw FROM records WHERE author = ? AND (seq, row) > (?, ?) "
                "ORDER BY seq, row LIMIT ?",
                (ref, *start, limit - len(out)),
            )
            out += [(author, s, r, bytes(raw)) for s, r, raw in rows]
            if len(out) >= limit:
                break
        return out

    def membership(self) -> Membership:
        if self._state is not None:
            return self._state.membership
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if self._membership is None or self._membership[0] != version:
            self._membership = version, self._derive_membership()
        return self._membership[1]

    def _derive_membership(self) -> Membership:
        heads = {h.author: h for h in self.heads()}
        fork_seqs = dict(
            self.conn.execute("SELECT key, fork_seq FROM keys WHERE fork_seq IS NOT NULL")
        )
        return membership_of_stored(self.federation, heads, fork_seqs, self.membership_records())

    def membership_records(self) -> list[Record]:
        """Every stored vote and rotate record (what membership is derived from)."""
        return [
            trusted_record(raw, rid.hex())
            for rid, raw in self.conn.execute(
                "SELECT id, raw FROM records WHERE kind IN ('vote', 'rotate')"
            )
        ]

    # -- signals -------------------------------------------------------------------------

    def signals(
        self,
        *,
        now_ms: int,
        type: str | None = None,
        label: str | None = None,
        member: str | None = None,
        active: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, object]]:
        """Signals, newest first, filtered by type, label, member identity and activity."""
        query = SignalQuery(type, label, member, active, limit=limit, offset=offset)
        return reads.signals(self.conn, query, now_ms=now_ms)

    def signal(self, record_id: str, *, now_ms: int) -> dict[str, object] | None:
        return reads.signal(self.conn, record_id, now_ms=now_ms)

    def lookup(self, type: str, value: str, *, now_ms: int) -> list[dict[str, object]]:
        """The active signals with exactly this (type, value)."""
        return reads.lookup(self.conn, self._keyer.key(type, value), type, value, now_ms=now_ms)

    def signal_rows(self, row_ids: Sequence[int], *, now_ms: int) -> list[dict[str, object]]:
        """Provenance of match-index hits, in the order of row_ids (unknown rows left out)."""
        return reads.signal_rows(self.conn, row_ids, now_ms=now_ms)

    def active_signals_for_index(self, *, now_ms: int) -> Iterator[tuple[int, str, str]]:
        """(row, type, value) of every active signal, in row order, read in pages."""
        return reads.active_signals(self.conn, now_ms=now_ms)

    def active_expiries(self, *, now_ms: int) -> list[tuple[int, int]]:
        """(row, expires) of every active signal that expires, for the match index."""
        return reads.active_expiries(self.conn, now_ms=now_ms)

    def find_own_signal(
        self,
        author_identity: str,
        type: str,
        value: str,
        *,
        now_ms: int | None = None,
    ) -> str | None:
        """The id of this member's unretracted signal with this hash (also unexpired at now_ms
        if given), so that importing a list twice does not sign it twice."""
        vkey = self._keyer.key(type, value)
        return reads.own_signal(self.conn, author_identity, vkey, type, value, now_ms=now_ms)

    def endpoints(self) -> list[dict[str, object]]:
        """Each member's latest announce: member, name, urls, tls (fingerprint), record --
        for node.app and node.gossip, like ``Endpoint.to_json()``, ordered by member."""
        return reads.endpoints(self.conn)

    def announced_types(self) -> dict[str, list[str]]:
        """Member identity -> the signal types its latest counted announce lists."""
        return reads.announced_types(self.conn)

    def announces_by(self, keys: Iterable[str]) -> list[tuple[str, AnnounceBody]]:
        """Every stored announce signed by these keys, counted or not: (author, body). Reads
        each key's whole log (no index on kind): for the few keys of members that lost the
        peer protocol (``node.net.peerset``), read again only when that set changes."""
        found: list[tuple[str, AnnounceBody]] = []
        for key in keys:
            rows = self.conn.execute(
                "SELECT r.id, r.raw FROM records r JOIN keys k ON k.ref = r.author "
                "WHERE k.key = ? AND r.kind = 'announce' ORDER BY r.seq, r.row",
                (key,),
            )
            for rid, raw in rows:
                body = trusted_record(raw, rid.hex()).body
                if isinstance(body, AnnounceBody):
                    found.append((key, body))
        return found

    # -- the whole state -----------------------------------------------------------------

    def materialised_state(self, *, now_ms: int) -> dict[str, object]:
        """The materialised tables, rendered exactly like ``protocol.fold.State.to_json()``."""
        return reads.render_state(self.conn, now_ms)

    def stats(self, *, now_ms: int) -> dict[str, int]:
        """Counts: records, authors, signals, active_signals, forks, pending, members.

        Counting scans every signal (~0.1 s at 1 M), and status and metrics are polled, so
        the counts are kept while they are exact: the database unchanged (``data_version``
        for other connections' commits, ``total_changes`` for this one's) and now_ms in
        [the time they were counted, the next expiry of an active signal).
        """
        version = (self.conn.execute("PRAGMA data_version").fetchone()[0],
                   self.conn.total_changes)  # fmt: skip
        cached = self._stats
        if cached is not None:
            at, until, counted_version, counts = cached
            if counted_version == version and at <= now_ms and (until is None or now_ms < until):
                return dict(counts)
        counts, until = reads.stats(self.conn, now_ms=now_ms)
        self._stats = (now_ms, until, version, counts)
        return dict(counts)

    def check(self) -> list[str]:
        """SQLite's quick_check over the whole file: [] when sound."""
        return quick_check(self.conn)

    # -- peers and settings --------------------------------------------------------------

    def changes(self, after: int, limit: int, *, now_ms: int) -> dict[str, object]:
        """A page of the change feed after a cursor (``node.store.changefeed``), each entry with its
        signal's state now (None when the node no longer holds it)."""
        entries = [
            {"cursor": cursor, "ts": ts, "kind": kind, "id": signal,
             "signal": reads.signal(self.conn, signal, now_ms=now_ms)}
            for cursor, ts, signal, kind in changefeed.page(self.conn, after, limit)
        ]  # fmt: skip
        last = changefeed.last_cursor(self.conn)
        return {"epoch": changefeed.epoch(self.conn), "changes": entries, "last": last}

    def feed_position(self) -> tuple[str, int]:
        """(node_epoch, last cursor) of the change feed."""
        return changefeed.epoch(self.conn), changefeed.last_cursor(self.conn)

    def sweep_expiries(self, now_ms: int) -> int:
        """Enter the feed's ``expired`` entries up to now_ms (a write)."""
        return self._transaction(lambda _: changefeed.sweep_expiries(self.conn, now_ms))

    def upsert_peer(self, url: str, **fields: object) -> None:
        """Create or update a peer; fields are merged into the stored ones (JSON values)."""
        self._writer_state()
        row = self.conn.execute("SELECT fields FROM peers WHERE url = ?", (url,)).fetchone()
        merged = (orjson.loads(row[0]) if row else {}) | fields
        self.conn.execute(
            "INSERT OR REPLACE INTO peers (url, fields) VALUES (?, ?)",
            (url, orjson.dumps(merged).decode()),
        )

    def remove_peer(self, url: str) -> dict[str, object] | None:
        """Forget a stored peer; its stored fields, or None if it was not stored."""
        self._writer_state()
        row = self.conn.execute("SELECT fields FROM peers WHERE url = ?", (url,)).fetchone()
        if row is None:
            return None
        self.conn.execute("DELETE FROM peers WHERE url = ?", (url,))
        return {"url": url, **orjson.loads(row[0])}

    def peers(self) -> list[dict[str, object]]:
        rows = self.conn.execute("SELECT url, fields FROM peers ORDER BY url")
        return [{"url": url, **orjson.loads(fields)} for url, fields in rows]

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._writer_state()
        if key in RESERVED_META:
            raise StoreError(f"meta key {key!r} is managed by the store")
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _verified_in_order(group: Sequence[PreparedMerge], fed: str) -> Iterator[tuple[int, Verified]]:
    """Each prepared batch's verified records, indexed through the group."""
    offset = 0
    for prepared in group:
        if prepared.job is None:
            verified = verify_inline(prepared.batch, fed)
        else:
            verified = iter(prepared.job)
        for index, item in verified:
            yield offset + index, item
        offset += len(prepared.batch)


def _stored_record(text: str) -> Record:
    data = text.encode()
    return trusted_record(data, record_id_of(data))


class AsyncStore:
    """The store for asyncio: one writer thread, a pool of reader threads, no SQLite on the loop.

    ``merge`` verifies batches of ``POOL_MIN_BATCH`` records or more on ``verify_workers``
    processes (default: one per CPU). Reader threads open their own read-only ``Store`` on
    first use.
    """

    def __init__(
        self,
        store_path: Path,
        federation: Federation,
        *,
        create: bool = False,
        verify_workers: int | None = None,
        readers: int = 4,
    ) -> None:
        self.path = Path(store_path)
        self.federation = federation
        self._create = create
        self._verify_workers = (os.cpu_count() or 1) if verify_workers is None else verify_workers
        self._reader_count = readers
        self._store: Store | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader_threads: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._readers: list[Store] = []
        self._readers_lock = threading.Lock()

    async def open(self) -> None:
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="hashmesh-store-writer")
        self._reader_threads = ThreadPoolExecutor(
            self._reader_count, thread_name_prefix="hashmesh-store-reader"
        )
        opener = functools.partial(Store.open, self.path, self.federation, create=self._create)
        self._store = await asyncio.get_running_loop().run_in_executor(self._writer_thread, opener)

    async def close(self) -> None:
        if self._store is not None:
            await self.write(Store.close)
            self._store = None
        for pool in (self._writer_thread, self._reader_threads):
            if pool is not None:
                pool.shutdown(wait=True)
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    async def merge(self, batch: Sequence[bytes], *, received_ms: int) -> MergeResult:
        workers = self._verify_workers if len(batch) >= POOL_MIN_BATCH else 0
        return await self.write(
            lambda s: s.merge(batch, received_ms=received_ms, verify_workers=workers)
        )

    async def prepare_merge(self, batch: Sequence[bytes]) -> PreparedMerge:
        """Start verifying batch on the pool now; ``finish_merge`` writes it later. Runs off
        the writer thread, so batches are handed to the pool while the writer is busy."""
        store = self._store
        if store is None:
            raise StoreError("the store is not open")
        workers = self._verify_workers if len(batch) >= POOL_MIN_BATCH else 0
        return await asyncio.to_thread(store.prepare_merge, batch, verify_workers=workers)

    async def finish_merge(
        self, prepared: PreparedMerge | Sequence[PreparedMerge], *, received_ms: int
    ) -> MergeResult:
        return await self.write(lambda s: s.finish_merge(prepared, received_ms=received_ms))

    async def append_local(self, key: SigningKey, body: Body, *, ts: int) -> Record:
        return await self.write(lambda s: s.append_local(key, body, ts=ts))

    async def append_local_result(self, key: SigningKey, body: Body, *, ts: int) -> MergeResult:
        return await self.write(lambda s: s.append_local_result(key, body, ts=ts))

    async def read(self, fn: Callable[[Store], T]) -> T:
        """Run fn on a reader thread's own read-only Store."""
        if self._reader_threads is None:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_threads, lambda: fn(self._reader()))

    async def write(self, fn: Callable[[Store], T]) -> T:
        """Run fn on the writer thread with the writer Store."""
        store, thread = self._store, self._writer_thread
        if store is None or thread is None:
            raise StoreError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(thread, fn, store)

    def _reader(self) -> Store:
        reader: Store | None = getattr(self._local, "store", None)
        if reader is None:
            reader = Store.open(self.path, self.federation, readonly=True)
            self._local.store = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader
