"""The auditor: verify a node's records and state with ``protocol/`` alone (DESIGN §9).

An audit reads one source (``node.audit.sources``: a node database, a JSONL export, or a live
node over the signed peer API) into a ``Snapshot``: the stored record bytes with whatever the
source says about them -- stored author/seq/id/kind, heads, fork evidence, materialised
tables. Every verdict is then ``protocol``'s (the checks are in ``node.audit.checks``):

- ``records``     every stored record's bytes are canonical and its signature verifies
                  (``decode_record``, on every core for big sources: the workers run
                  ``protocol.batch.verify_records`` and answer with compact verdicts only);
- ``metadata``    the stored author, seq, id and kind equal what the bytes say; no id twice;
- ``chains``      every author's log runs from seq 1 without gaps and every ``prev`` links
                  (``check_successor``);
- ``membership``  every author is a key of a member identity with role ``member``
                  (``fold_state(...).membership``; auditors author nothing);
- ``forks``       every stored fork evidence verifies on its own (``verify_fork_evidence``)
                  and every fork in the records (``find_forks``) is in the evidence;
- ``heads``       the claimed frontier equals the logs (online also its digest);
- ``state``       the materialised tables equal ``fold_state(records).to_json()``, part by
                  part and row by row (plus the ``counted`` frontier the fold implies);
- ``pending``     records held ahead of a gap verify too.

Records stored beyond a freeze (fork, removal, rotation) are not violations: a node may have
stored them before it learnt of the freeze, and they do not count.

A big source is verified on a process pool (``--workers``) while this process examines its
records as if they were valid, and a worker digests the materialised tables for the state
check; that examination stands only if every record verified, else it is repeated over the
valid records, so the verdicts are the same as a sequential audit's. ``compare`` reads several
sources and reports differing frontiers, missing records, and split views as portable fork
evidence. Results are deterministic: no clock reading, everything sorted.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from node.audit.checks import (
    CHECKS,
    ForkRow,
    Logs,
    Violation,
    check_chains,
    check_digest,
    check_forks,
    check_heads,
    check_membership,
    check_state,
    counted_json,
    group_logs,
    jsonable,
    part_digests,
    violation,
)
from node.errors import NodeError
from node.store.verify_pool import start_worker
from protocol import Federation, Head, Membership, Record, fold_state
from protocol.batch import VerifyResult, trusted_record, verify_records
from protocol.chain import find_forks
from protocol.encoding import JsonValue, encode_canonical
from protocol.errors import LocalProtocolError
from protocol.records import is_record_id, record_id_of
from protocol.sync import capped_heads, frontier_digest

__all__ = [
    "CHECKS",
    "MAX_LISTED",
    "PARALLEL_MIN_RECORDS",
    "AuditError",
    "AuditResult",
    "Comparison",
    "Findings",
    "ForkRow",
    "Loaded",
    "Progress",
    "Row",
    "Snapshot",
    "Violation",
    "audit",
    "canonical_json",
    "compare",
    "examine",
    "load_records",
    "no_progress",
    "records_digest",
    "split_views",
    "verify_chunks",
]

PARALLEL_MIN_RECORDS: Final = 20_000  # below this, starting worker processes costs more
MAX_LISTED: Final = 1000  # violations listed per code (the counts are always complete)

Progress = Callable[[str, int, int | None], None]  # (stage, done, total)


def no_progress(stage: str, done: int, total: int | None) -> None:
    """The default progress callback: silent."""


class AuditError(NodeError):
    """The source could not be audited: not a hashmesh database, unreadable, unreachable."""

    title = "could not audit"


# -- what a source holds ---------------------------------------------------------------------


class Row(NamedTuple):
    """One stored record as the source holds it: its bytes and the metadata stored beside.

    A named tuple, not a frozen dataclass: a big audit makes one per stored record."""

    ref: int  # row number, line number or position in the pulled logs
    raw: bytes
    id: str | None = None
    author: str | None = None
    seq: int | None = None
    kind: str | None = None
    id8_ok: bool = True


@dataclass
class Snapshot:
    """Everything an audit reads from one source; ``None`` where the source has no such part."""

    kind: str  # "database", "jsonl" or "node"
    source: str
    federation: Federation
    chunks: Callable[[], Iterator[list[Row]]]
    total: int
    ref_name: str = "row"
    heads: dict[str, Head] | None = None
    forks: list[ForkRow] | None = None
    fork_seqs: dict[str, int] | None = None
    digest: tuple[str, str] | None = None  # (claimed frontier digest, recomputed)
    pending: list[Row] = field(default_factory=list)
    materialised: Callable[[int], Mapping[str, object]] | None = None
    counted: Callable[[], list[JsonValue]] | None = None
    # part_digests of materialised + counted at now_ms, picklable: computed on a worker process
    state_digests: Callable[[int], dict[str, str]] | None = None
    close: Callable[[], None] = lambda: None


# -- results ---------------------------------------------------------------------------------


@dataclass
class AuditResult:
    """The outcome of one audit; ``to_json`` is deterministic (no clock, everything sorted)."""

    kind: str
    source: str
    federation: Federation
    counts: dict[str, int]
    applicable: set[str]
    violations: list[Violation]
    max_listed: int = MAX_LISTED

    @property
    def clean(self) -> bool:
        return not self.violations

    def checks_json(self) -> list[dict[str, JsonValue]]:
        counts = dict.fromkeys(CHECKS, 0)
        for v in self.violations:
            counts[v.check] += 1
        return [
            {
                "check": name,
                "description": text,
                "violations": counts[name],
                "status": _status(name in self.applicable, counts[name]),
            }
            for name, text in CHECKS.items()
        ]

    def listed(self) -> list[Violation]:
        return listed(self.violations, self.max_listed)

    def to_json(self) -> dict[str, JsonValue]:
        shown = self.listed()
        return {
            "audit": "hashmesh",
            "v": 1,
            "kind": self.kind,
            "source": self.source,
            "federation": {"id": self.federation.id, "name": self.federation.name},
            "clean": self.clean,
            "counts": dict(sorted(self.counts.items())),
            "checks": list(self.checks_json()),
            "violations_total": len(self.violations),
            "violations_listed": len(shown),
            "violations": [v.to_json() for v in shown],
        }


def _status(applicable: bool, violations: int) -> str:
    if not applicable:
        return "not applicable"
    return "fail" if violations else "pass"


def listed(violations: Sequence[Violation], max_listed: int) -> list[Violation]:
    """Violations in order, at most max_listed per code (0: all)."""
    out: list[Violation] = []
    per_code: dict[str, int] = {}
    for v in sorted(violations, key=Violation.sort_key):
        n = per_code[v.code] = per_code.get(v.code, 0) + 1
        if not max_listed or n <= max_listed:
            out.append(v)
    return out


def canonical_json(value: JsonValue) -> bytes:
    """Deterministic bytes for any result (RFC 8785, ``protocol.encoding``)."""
    return encode_canonical(value)


def records_digest(ids: Iterable[str]) -> str:
    """SHA-256 over the sorted record ids, each as hex followed by a newline."""
    h = hashlib.sha256()
    for rid in sorted(ids):
        h.update(rid.encode() + b"\n")
    return h.hexdigest()


# -- reading and verifying records -----------------------------------------------------------


@dataclass
class Loaded:
    """The valid records of a snapshot, and what is wrong with the others."""

    records: list[Record] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    rows: int = 0
    invalid_at: set[tuple[str, int]] = field(default_factory=set)  # (author, seq) of failures
    seen: dict[str, int] = field(default_factory=dict)  # id -> ref of its first row


def verify_chunks(
    chunks: Iterable[list[Row]], fed: str, workers: int
) -> Iterator[tuple[list[Row], list[VerifyResult]]]:
    """Each chunk with ``decode_record``'s verdict on every row (the record id, or the error).

    With ``workers > 1`` chunks are verified on a process pool, a few chunks ahead of the
    caller, so reading and checking in this process overlap verification in the workers.
    """
    if workers <= 1:
        for chunk in chunks:
            yield chunk, verify_records([r.raw for r in chunk], fed)
        return
    with _pool(workers) as pool:
        ahead: deque[tuple[list[Row], Future[list[VerifyResult]]]] = deque()
        try:
            for chunk in chunks:
                ahead.append((chunk, pool.submit(verify_records, [r.raw for r in chunk], fed)))
                if len(ahead) > 2 * workers:
                    done, job = ahead.popleft()
                    yield done, job.result()
            while ahead:
                done, job = ahead.popleft()
                yield done, job.result()
        finally:
            for _, job in ahead:
                job.cancel()


@contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of verification workers (forkserver: the parent may hold SQLite connections);
    a worker that dies makes the source un-auditable here, not a crash. The workers exit with
    the auditing process, however it ends (they run at its priority: an audit is the job)."""
    context = multiprocessing.get_context("forkserver")
    try:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=start_worker, initargs=(os.getpid(), 0)
        ) as pool:
            yield pool
    except BrokenProcessPool as e:
        raise AuditError(f"a verification worker process died: {e}") from e


def load_records(snap: Snapshot, *, workers: int = 1, progress: Progress = no_progress) -> Loaded:
    """Verify every row of snap; keep the valid records, list what is wrong with the others."""
    if snap.total < PARALLEL_MIN_RECORDS:
        workers = 1
    loaded = Loaded()
    progress("verify", 0, snap.total)
    for chunk, results in verify_chunks(snap.chunks(), snap.federation.id, workers):
        _collect(snap, loaded, chunk, results, {})
        progress("verify", loaded.rows, snap.total)
    return loaded


def _collect(
    snap: Snapshot,
    loaded: Loaded,
    chunk: list[Row],
    results: list[VerifyResult],
    built: Mapping[str, Record],
) -> None:
    """Take a verified chunk into loaded (built: records already made from the same bytes)."""
    for row, result in zip(chunk, results, strict=True):
        if isinstance(result, str):
            record = built.get(result)
            if record is None or record.canonical != row.raw:
                record = trusted_record(row.raw, result)
            _take(snap, loaded, row, record)
        else:
            loaded.violations.append(_invalid(snap, row, result, "record_invalid"))
            if row.author is not None and row.seq is not None:
                loaded.invalid_at.add((row.author, row.seq))
    loaded.rows += len(chunk)


_NO_METADATA: Final = (None, None, None, None)


def _take(snap: Snapshot, loaded: Loaded, row: Row, record: Record) -> None:
    meta = (row.id, row.author, row.seq, row.kind)
    actual = (record.id, record.author, record.seq, record.kind)
    if not row.id8_ok or meta not in (_NO_METADATA, actual):
        loaded.violations += _metadata(snap, row, record)
    first = loaded.seen.setdefault(record.id, row.ref)
    if first == row.ref:
        loaded.records.append(record)
        return
    detail = f"record stored twice ({snap.ref_name}s {first} and {row.ref})"
    loaded.violations.append(
        violation("record_duplicate", detail, record.author, record.seq, [record.id])
    )


def _invalid(snap: Snapshot, row: Row, error: Mapping[str, object], code: str) -> Violation:
    rid = row.id or _unverified_id(row.raw)
    name, where = str(error.get("error")), f"{snap.ref_name} {row.ref}"
    detail = f"{where}: {name}: {error.get('detail')}"
    return violation(
        code, detail, row.author, row.seq, [rid] if rid else [], error=name, where=where
    )


def _unverified_id(raw: bytes) -> str | None:
    """The id bytes would have, to name a record that fails to verify (None if unshaped)."""
    try:
        return record_id_of(raw)
    except ValueError:
        return None


def _metadata(snap: Snapshot, row: Row, record: Record) -> list[Violation]:
    stored = {"id": row.id, "author": row.author, "seq": row.seq, "kind": row.kind}
    actual = {"id": record.id, "author": record.author, "seq": record.seq, "kind": record.kind}
    wrong: dict[str, object] = {
        k: {"stored": v, "record": actual[k]}
        for k, v in stored.items()
        if v is not None and v != actual[k]
    }
    if not row.id8_ok:
        wrong["id8"] = {"stored": "not the first 8 bytes of the id", "record": record.id[:16]}
    if not wrong:
        return []
    detail = f"{snap.ref_name} {row.ref}: stored {', '.join(sorted(wrong))} differ from the bytes"
    return [
        violation(
            "record_metadata",
            detail,
            record.author,
            record.seq,
            [record.id],
            fields=jsonable(wrong),
        )
    ]


# -- the audit -------------------------------------------------------------------------------


def audit(
    snap: Snapshot,
    *,
    now_ms: int,
    workers: int = 1,
    progress: Progress = no_progress,
    max_listed: int = MAX_LISTED,
) -> AuditResult:
    """Run every check that applies to snap (see the module docstring)."""
    if workers > 1 and snap.total >= PARALLEL_MIN_RECORDS:
        loaded, findings = _verify_while_examining(snap, workers, now_ms, progress)
    else:
        loaded = load_records(snap, progress=progress)
        findings = examine(snap, loaded.records, loaded.invalid_at, now_ms, progress)
    violations = loaded.violations + _pending(snap) + findings.violations
    counts = {"rows": loaded.rows, "valid": len(loaded.records), "pending": len(snap.pending)}
    progress("done", 1, 1)
    applicable = {"records", "chains", "membership"} | _applicable(snap)
    return AuditResult(
        snap.kind,
        snap.source,
        snap.federation,
        counts | findings.counts,
        applicable,
        violations,
        max_listed,
    )


@dataclass
class Findings:
    """What the checks over a set of valid records found (everything after verification)."""

    violations: list[Violation]
    counts: dict[str, int]


def examine(
    snap: Snapshot,
    records: list[Record],
    invalid_at: set[tuple[str, int]],
    now_ms: int,
    progress: Progress = no_progress,
    node_digests: Callable[[], dict[str, str] | None] | None = None,
) -> Findings:
    """Chains, membership, forks, heads and state of snap, given its valid records (and
    maybe the digests of its materialised state, rendered elsewhere)."""
    progress("chains", 0, None)
    logs = group_logs(records)
    violations, tops = check_chains(logs, invalid_at)
    progress("fold", 0, None)
    state = fold_state(records, snap.federation, now_ms)
    members, uncounted = check_membership(logs, state.membership)
    violations += members
    if snap.forks is not None:
        violations += check_forks(snap.forks, state.forks, snap.federation.id, snap.fork_seqs)
    if snap.heads is not None:
        if snap.kind == "node":  # a live node lists a frozen author at its cap (SPEC 10.2)
            tops = _capped(tops, state.membership, logs)
        violations += check_heads(snap.heads, logs, tops) + check_digest(snap.digest)
    if snap.materialised is not None:
        progress("state", 0, None)
        fold = state.to_json()
        violations += _state_violations(snap, fold, state.membership, now_ms, node_digests)
    counts = {
        "authors": len(logs),
        "uncounted": uncounted,
        "signals": len(state.signals),
        "forks": len(state.forks),
        "opinions": len(state.opinions),
        "members": len(state.members),
    }
    return Findings(violations, counts)


def _capped(tops: dict[str, Head], membership: Membership, logs: Logs) -> dict[str, Head]:
    """The tops as a node's frontier lists them: each frozen author's at its cap, where the
    log holds a record at the cap (else the top stays, and a capped head is a mismatch)."""
    caps = {a: c for a, c in membership.caps.items() if not c or c in logs.get(a, {})}
    return capped_heads(tops, caps, lambda author, seq: logs[author][seq][0].id)


def _verify_while_examining(
    snap: Snapshot, workers: int, now_ms: int, progress: Progress
) -> tuple[Loaded, Findings]:
    """Verify on a process pool while this process reads the records and examines them as if
    they were all valid; that examination stands only if every record verified, else it is
    run again over the valid ones. On a clean source it costs no time of its own."""
    with _pool(workers) as pool:
        digests = pool.submit(snap.state_digests, now_ms) if snap.state_digests else None
        tally = _Tally(progress, snap.total)
        chunks: list[list[Row]] = []
        jobs: list[Future[list[VerifyResult]]] = []
        built: dict[str, Record] | None = {}
        for chunk in snap.chunks():  # each chunk is verified while the next ones are read
            chunks.append(chunk)
            jobs.append(tally.watch(pool.submit(verify_records, [r.raw for r in chunk],
                                                snap.federation.id), len(chunk)))  # fmt: skip
            built = _build_unverified(built, chunk)
        findings = _examine_unverified(snap, built, now_ms, progress, _outcome(digests))
        loaded = Loaded()
        for chunk, job in zip(chunks, jobs, strict=True):
            _collect(snap, loaded, chunk, job.result(), built or {})
    if findings is None or not _all_verified(built, loaded):
        findings = examine(snap, loaded.records, loaded.invalid_at, now_ms, progress)
    return loaded, findings


def _all_verified(built: dict[str, Record] | None, loaded: Loaded) -> bool:
    """Did every row verify, as the record it was built as (so the examination holds)?"""
    bad = {"record_invalid", "record_metadata"}
    return (
        built is not None
        and len(built) == len(loaded.records)
        and not any(v.code in bad for v in loaded.violations)
    )


class _Tally:
    """Progress of the verification jobs, reported as each one finishes (on the pool's
    result thread)."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        progress("verify", 0, total)

    def watch(self, job: Future[list[VerifyResult]], size: int) -> Future[list[VerifyResult]]:
        def finished(_: Future[list[VerifyResult]]) -> None:
            self.done += size
            self.progress("verify", self.done, self.total)

        job.add_done_callback(finished)
        return job


def _build_unverified(
    built: dict[str, Record] | None, chunk: list[Row]
) -> dict[str, Record] | None:
    """Add every row's record to built, made without verifying it, the first copy of each id
    (None from the first row that is not even shaped like a record on).

    A database row names its id: that one is taken here, unchecked. Every row's true id comes
    back from verification, and a stored id that differs is a metadata violation, which
    discards this examination (``_all_verified``); so the ids only have to be right when they
    are, and computing them again here would cost a hash per record for nothing."""
    if built is None:
        return None
    try:
        for row in chunk:
            rid = row.id if row.id is not None and is_record_id(row.id) else record_id_of(row.raw)
            if rid not in built:
                built[rid] = trusted_record(row.raw, rid)
    except (ValueError, LocalProtocolError):
        return None
    return built


def _outcome(job: Future[dict[str, str]] | None) -> Callable[[], dict[str, str] | None] | None:
    """A job's result when asked for; None if it failed (the caller then does the work)."""
    if job is None:
        return None

    def result() -> dict[str, str] | None:
        return None if job.exception() is not None else job.result()

    return result


def _examine_unverified(
    snap: Snapshot,
    built: dict[str, Record] | None,
    now_ms: int,
    progress: Progress,
    node_digests: Callable[[], dict[str, str] | None] | None,
) -> Findings | None:
    if built is None:
        return None
    try:
        return examine(snap, list(built.values()), set(), now_ms, progress, node_digests)
    except Exception:  # unverified bytes can be anything; the verified records decide
        return None


def _state_violations(
    snap: Snapshot,
    fold: dict[str, JsonValue],
    membership: Membership,
    now_ms: int,
    node_digests: Callable[[], dict[str, str] | None] | None,
) -> list[Violation]:
    """The state check; when the node's digests equal the fold's, nothing more is read."""
    assert snap.materialised is not None
    want: dict[str, object] = dict(fold)
    if snap.counted is not None:
        want["counted"] = counted_json(membership)
    if node_digests is not None and node_digests() == part_digests(want):
        return []
    try:
        node = dict(snap.materialised(now_ms))
        if snap.counted is not None:
            node["counted"] = snap.counted()
    except Exception as e:  # the node's reader assumes sane tables; tampered ones may not be
        detail = f"the materialised tables cannot be read: {type(e).__name__}: {e}"
        return [violation("state_mismatch", detail, part="*", change="unreadable")]
    return check_state(node, want)


def _applicable(snap: Snapshot) -> set[str]:
    parts = {
        "metadata": snap.kind != "jsonl",
        "forks": snap.forks is not None,
        "heads": snap.heads is not None,
        "state": snap.materialised is not None,
        "pending": snap.kind == "database",
    }
    return {name for name, on in parts.items() if on}


def _pending(snap: Snapshot) -> list[Violation]:
    results = verify_records([r.raw for r in snap.pending], snap.federation.id)
    return [
        _invalid(snap, row, result, "pending_invalid")
        for row, result in zip(snap.pending, results, strict=True)
        if not isinstance(result, str)
    ]


# -- comparing sources -----------------------------------------------------------------------


@dataclass
class Comparison:
    """Several sources side by side: their frontiers, the records each lacks, and every
    equivocation across them (``split``: no source holds both records -- a split view)."""

    sources: list[str]
    frontiers: list[dict[str, JsonValue]]
    lacking: list[tuple[str, list[str]]]  # (source, ids it lacks that another source holds)
    equivocations: list[dict[str, JsonValue]]
    max_listed: int = MAX_LISTED

    @property
    def agree(self) -> bool:
        """Do all frontiers (heads and forks, from each source's records) agree?"""
        return len({f["digest"] for f in self.frontiers if isinstance(f["digest"], str)}) <= 1

    @property
    def split_views(self) -> list[dict[str, JsonValue]]:
        return [e for e in self.equivocations if e["split"]]

    @property
    def clean(self) -> bool:
        """The sources hold the same records and no author showed them different ones."""
        return self.agree and not any(ids for _, ids in self.lacking) and not self.split_views

    def to_json(self) -> dict[str, JsonValue]:
        cut = self.max_listed or None
        lacking: list[JsonValue] = [
            {"source": source, "lacks_total": len(ids), "lacks": list(ids[:cut])}
            for source, ids in self.lacking
        ]
        return {
            "compare": "hashmesh",
            "v": 1,
            "sources": list(self.sources),
            "agree": self.agree,
            "clean": self.clean,
            "frontiers": list(self.frontiers),
            "lacking": lacking,
            "split_views": len(self.split_views),
            "equivocations": list(self.equivocations),
        }


def compare(
    snaps: Sequence[Snapshot], *, workers: int = 1, progress: Progress = no_progress
) -> Comparison:
    """Load every source's valid records and compare what they hold."""
    held: list[dict[str, Record]] = []
    frontiers: list[dict[str, JsonValue]] = []
    for snap in snaps:
        loaded = load_records(snap, workers=workers, progress=progress)
        held.append({r.id: r for r in loaded.records})
        frontiers.append(_frontier(snap.source, loaded))
    union: dict[str, Record] = {}
    for records in held:
        union.update(records)
    lacking = [
        (s.source, sorted(union.keys() - ids.keys())) for s, ids in zip(snaps, held, strict=True)
    ]
    holders = [(s.source, ids.keys()) for s, ids in zip(snaps, held, strict=True)]
    return Comparison(
        [s.source for s in snaps], frontiers, lacking, split_views(union.values(), holders)
    )


def _frontier(source: str, loaded: Loaded) -> dict[str, JsonValue]:
    _, tops = check_chains(group_logs(loaded.records), set())
    forks = [proof.to_json() for _, proof in sorted(find_forks(loaded.records).items())]
    return {
        "source": source,
        "digest": frontier_digest(tops.values(), forks),
        "records": len(loaded.records),
        "invalid": loaded.rows - len(loaded.records),
        "authors": len(tops),
        "forks": len(forks),
    }


def split_views(
    records: Iterable[Record], holders: Sequence[tuple[str, Iterable[str]]]
) -> list[dict[str, JsonValue]]:
    """Every author's first equivocation across all sources, as portable fork evidence with
    the sources that hold each of its two records (``split``: no source holds both)."""
    held_by: dict[str, list[JsonValue]] = {}
    for source, ids in holders:
        for rid in ids:
            held_by.setdefault(rid, []).append(source)
    out: list[dict[str, JsonValue]] = []
    for author, proof in sorted(find_forks(records).items()):
        first, second = held_by.get(proof.first.id, []), held_by.get(proof.second.id, [])
        out.append(
            {
                "author": author,
                "seq": proof.seq,
                "evidence": proof.to_json(),
                "split": not set(map(str, first)) & set(map(str, second)),
                "held_by": {proof.first.id: first, proof.second.id: second},
            }
        )
    return out
