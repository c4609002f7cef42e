"""Signature verification spread over worker processes.

Verifying an Ed25519 signature costs ~65 µs of CPU and holds the GIL, so a node that merges a
large batch (a new node catching up, a peer's backlog) verifies it on every core. The batch is
cut into chunks of raw bytes; each worker process runs ``protocol.batch.verify_records`` on its
chunk and answers with record ids or error JSON only, and the writer rebuilds each accepted
record from its bytes with ``trusted_record``. Results come back in batch order, chunk by
chunk, so the writer stores one chunk while the workers verify the next ones.

Workers start through ``forkserver``: the parent has threads and SQLite connections, which
``fork`` would copy in whatever state they happen to be in.

Workers live and die with their node. Each one watches the node process (a pidfd, polled by a
daemon thread) and exits the moment the node is gone, however it went (``kill -9``, the OOM
killer): a worker blocked on its task queue would otherwise wait forever, since it holds the
queue's write end itself, and keep the forkserver and the resource tracker alive with it (both
exit once no process holds their pipes). ``PR_SET_PDEATHSIG`` would not do: a worker's parent
is the forkserver, not the node.

Workers also run at a lower CPU priority (``WORKER_NICE``) than the node, so that a burst of
records to verify does not take the cores from the event loop answering matches (which is what
members' upload pipelines wait on); when nothing else wants the CPU they run at full speed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Final

from node.errors import StoreError
from protocol import Record, RemoteProtocolError, decode_record
from protocol.batch import VerifyResult, trusted_record, verify_records

MIN_CHUNK: Final = 64
MAX_CHUNK: Final = 1024
CHUNKS_PER_WORKER: Final = 4
WORKER_NICE: Final = 10  # added to the node's niceness in each worker (19 is the lowest)
_PARENT_POLL_S: Final = 1.0  # where there is no pidfd (not Linux): how often to look

Verified = Record | dict[str, object]  # a verified record, or RemoteProtocolError.to_json()


def verify_inline(batch: Sequence[bytes], fed: str) -> Iterator[tuple[int, Verified]]:
    """Verify on the calling thread (small batches, or no pool)."""
    for index, data in enumerate(batch):
        try:
            yield index, decode_record(data, fed)
        except RemoteProtocolError as e:
            yield index, e.to_json()


class VerifyPool:
    """A pool of worker processes that verify record bytes for one federation."""

    def __init__(self, workers: int, fed: str) -> None:
        if workers < 1:
            raise ValueError("a verify pool needs at least one worker")
        self.workers = workers
        self.fed = fed
        context = multiprocessing.get_context("forkserver")
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=start_worker,
            initargs=(os.getpid(), WORKER_NICE),
        )

    def verify(self, batch: Sequence[bytes]) -> VerifyJob:
        """Start verifying batch; iterate the job for its records, in order, as they come."""
        size = chunk_size(len(batch), self.workers)
        try:
            futures = [
                self._executor.submit(verify_records, list(batch[i : i + size]), self.fed)
                for i in range(0, len(batch), size)
            ]
        except BrokenProcessPool as e:
            raise StoreError("the verification worker pool has broken") from e
        return VerifyJob(batch, futures, size)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class VerifyJob:
    """One batch being verified on the pool: iterable once, in batch order."""

    def __init__(
        self, batch: Sequence[bytes], futures: list[Future[list[VerifyResult]]], size: int
    ) -> None:
        self._batch = batch
        self._futures = futures
        self._size = size

    def __iter__(self) -> Iterator[tuple[int, Verified]]:
        try:
            for n, future in enumerate(self._futures):
                start = n * self._size
                for offset, result in enumerate(_result_of(future)):
                    index = start + offset
                    if isinstance(result, str):
                        yield index, trusted_record(self._batch[index], result)
                    else:
                        yield index, result
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Drop the chunks not yet started (when the merge that wanted them failed)."""
        for future in self._futures:
            future.cancel()


def start_worker(node_pid: int, nice: int) -> None:
    """Worker initializer: lower this worker's priority, and exit when node_pid exits."""
    with contextlib.suppress(OSError):
        os.nice(nice)
    try:
        pidfd = os.pidfd_open(node_pid)
    except ProcessLookupError:
        os._exit(0)  # the node died before this worker started
    except (AttributeError, OSError):  # no pidfd_open here (not Linux, or Linux < 5.3)
        watch = threading.Thread(target=_poll_then_exit, args=(node_pid,), daemon=True)
    else:
        watch = threading.Thread(target=_wait_then_exit, args=(pidfd,), daemon=True)
    watch.name = "hashmesh-watch-node"
    watch.start()


def _wait_then_exit(pidfd: int) -> None:
    select.select([pidfd], [], [])  # a pidfd becomes readable when its process exits
    os._exit(0)


def _poll_then_exit(node_pid: int) -> None:
    while True:
        try:
            os.kill(node_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass  # alive (another user's process: still there)
        time.sleep(_PARENT_POLL_S)


def _result_of(future: Future[list[VerifyResult]]) -> list[VerifyResult]:
    try:
        return future.result()
    except BrokenProcessPool as e:
        raise StoreError("a verification worker died") from e


def chunk_size(records: int, workers: int) -> int:
    """Chunks big enough to amortise the hop between processes, small enough to pipeline."""
    return max(MIN_CHUNK, min(MAX_CHUNK, -(-records // (workers * CHUNKS_PER_WORKER))))
