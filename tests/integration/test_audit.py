"""The auditor (issue 7) against real SQLite files, record exports and live nodes.

A small federation history is signed with ``protocol`` and merged into a real ``Store``; each
test tampers with a copy of that database in one way and checks that the audit names exactly
that violation, with the record ids concerned. The CLI runs as a real process (``python -m
node``) for exit codes and output; one test audits live ``hashmesh serve`` processes with an
auditor-role founder's key over the signed peer API.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import NodeProc, found_federation, hm, wait_until

import node.audit.engine
import node.audit.sources
from node.audit.engine import AuditResult, audit, canonical_json, compare
from node.audit.sources import open_source
from node.store.store import Store
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
    draft_genesis,
    encode_canonical,
    parse_genesis,
    sign_genesis,
    sign_record,
    verify_fork_evidence,
)

T0 = 1_763_800_000_000
NOW = T0 + 10**9


def key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(f"audit test key {name}".encode()).digest())


A, B, C, D, WATCH, OUTSIDER = (key(n) for n in ("a", "b", "c", "d", "watch", "outsider"))


def make_federation() -> Federation:
    founders = [Founder(n, k.public, "member") for n, k in (("a", A), ("b", B), ("c", C))]
    founders.append(Founder("watch", WATCH.public, "auditor"))
    doc = draft_genesis("audit test", 2, founders)
    for k in (A, B, C, WATCH):
        doc = sign_genesis(doc, k)
    return parse_genesis(encode_canonical(doc))


FED = make_federation()


@dataclass
class Log:
    """One key's chain as the test writes it."""

    key: SigningKey
    records: list[Record] = field(default_factory=list)

    def add(self, body: Body, ts: int | None = None) -> Record:
        head = self.records[-1] if self.records else None
        seq = 1 if head is None else head.seq + 1
        record = sign_record(self.key, fed=FED.id, seq=seq, prev=head.id if head else None,
                             ts=ts or T0 + 1000 * (len(self.records) + 1), body=body)  # fmt: skip
        self.records.append(record)
        return record


def sha(n: int) -> SignalBody:
    return SignalBody("sha256", f"{n:064x}", ("entity:alpha",))


@dataclass
class History:
    records: list[Record]
    logs: dict[str, Log]
    fork: Record  # the second record of c's fork


def history() -> History:
    """a, b, c founders (threshold 2); d admitted by a and b; c equivocates at seq 2."""
    a, b, c, d = Log(A), Log(B), Log(C), Log(D)
    s1, s2 = a.add(sha(1)), a.add(sha(2))
    a.add(sha(3))
    a.add(RetractBody(s2.id))
    a.add(AnnounceBody("node a", ("https://a.example/",)))
    b.add(OpinionBody(s1.id, "dispute", ("entity:alpha",)))
    b.add(sha(4))
    for voter in (a, b):
        voter.add(VoteBody("admit", D.public, name="d", role="member"))
    d.add(sha(5))
    d.add(OpinionBody(s1.id, "confirm"))
    c.add(sha(6))
    c.add(sha(7))
    fork = sign_record(C, fed=FED.id, seq=2, prev=c.records[0].id, ts=T0 + 9, body=sha(8))
    logs = {"a": a, "b": b, "c": c, "d": d}
    return History([r for log in logs.values() for r in log.records] + [fork], logs, fork)


HISTORY = history()


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "node.db"
    with Store.open(path, FED, create=True) as store:
        result = store.merge([r.canonical for r in HISTORY.records], received_ms=T0)
        assert result.counts()["rejected"] == 0, result.outcomes
    return path


@pytest.fixture
def copy(clean_db: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy.db"
    shutil.copy(clean_db, target)
    return target


def run_audit(path: Path, **kwargs: object) -> AuditResult:
    snap = open_source(str(path))
    try:
        return audit(snap, now_ms=NOW, **kwargs)  # type: ignore[arg-type]
    finally:
        snap.close()


def codes(result: AuditResult) -> set[str]:
    return {v.code for v in result.violations}


def tamper(path: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)
    conn.close()


def row_of(record: Record) -> str:
    return f"(SELECT row FROM records WHERE id = x'{record.id}')"


# -- a clean database, and each way of tampering with one ----------------------------------------


def test_clean_database_passes_every_check(clean_db: Path) -> None:
    result = run_audit(clean_db)
    assert result.violations == []
    statuses = {c["check"]: c["status"] for c in result.checks_json()}
    assert set(statuses.values()) == {"pass"}
    assert result.counts["rows"] == len(HISTORY.records)
    assert result.counts["forks"] == 1
    assert result.counts["uncounted"] == 2  # c's two records at seq 2: the log froze at 1


def test_flipped_byte_in_a_stored_record(copy: Path) -> None:
    victim = HISTORY.logs["a"].records[2]
    raw = flip_signature(victim.canonical)
    tamper(copy, f"UPDATE records SET raw = ? WHERE row = {row_of(victim)}", raw)
    result = run_audit(copy)
    invalid = [v for v in result.violations if v.code == "record_invalid"]
    assert [(v.records, v.data["error"], v.seq) for v in invalid] == [
        ((victim.id,), "SignatureError", 3)
    ]
    gap = next(v for v in result.violations if v.code == "chain_gap")
    assert gap.seq == 3 and "failed to verify" in gap.detail


def test_deleted_record_in_the_middle_of_a_chain(copy: Path) -> None:
    log = HISTORY.logs["a"].records
    tamper(copy, f"DELETE FROM records WHERE row = {row_of(log[2])}")
    result = run_audit(copy)
    gaps = [v for v in result.violations if v.code == "chain_gap"]
    assert [(v.author, v.seq, v.records[0]) for v in gaps] == [(A.public, 3, log[3].id)]
    assert "chain_gap" in codes(result) and "record_invalid" not in codes(result)


def test_record_of_a_non_member_with_a_valid_signature(copy: Path) -> None:
    intruder = sign_record(OUTSIDER, fed=FED.id, seq=1, prev=None, ts=T0, body=sha(99))
    insert_record(copy, intruder)
    result = run_audit(copy)
    assert codes(result) == {"author_not_member"}
    (v,) = result.violations
    assert (v.author, v.records) == (OUTSIDER.public, (intruder.id,))


def test_record_of_an_auditor(copy: Path) -> None:
    record = sign_record(WATCH, fed=FED.id, seq=1, prev=None, ts=T0, body=sha(98))
    insert_record(copy, record)
    result = run_audit(copy)
    assert codes(result) == {"author_auditor"}
    assert result.violations[0].records == (record.id,)


def insert_record(path: Path, record: Record) -> None:
    rid = bytes.fromhex(record.id)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO keys (key, head_seq, head_id) VALUES (?, 1, ?)",
                     (record.author, rid))  # fmt: skip
        ref = conn.execute("SELECT ref FROM keys WHERE key = ?", (record.author,)).fetchone()[0]
        row = conn.execute("SELECT max(row) + 1 FROM records").fetchone()[0]
        conn.execute(
            "INSERT INTO records (row, id8, id, author, seq, kind, received_ms, raw) "
            "VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
            (row, int.from_bytes(rid[:8], "big", signed=True), rid, ref, record.kind, T0,
             record.canonical),
        )  # fmt: skip
    conn.close()


def test_materialised_signal_row_edited(copy: Path) -> None:
    signal = HISTORY.logs["b"].records[1]
    tamper(copy, f"UPDATE signals SET value = ? WHERE row = {row_of(signal)}", "0" * 64)
    result = run_audit(copy)
    assert codes(result) == {"state_mismatch"}
    (v,) = result.violations
    assert v.records == (signal.id,)
    assert (v.data["part"], v.data["change"], v.data["key"]) == ("signals", "changed", signal.id)
    assert v.data["fields"] == {"value": {"node": "0" * 64, "fold": f"{4:064x}"}}


def test_materialised_signal_row_deleted(copy: Path) -> None:
    signal = HISTORY.logs["d"].records[0]
    tamper(copy, f"DELETE FROM signals WHERE row = {row_of(signal)}")
    result = run_audit(copy)
    assert codes(result) == {"state_mismatch"}
    (v,) = result.violations
    assert (v.records, v.data["change"], v.author) == ((signal.id,), "missing", D.public)


def test_head_rewound(copy: Path) -> None:
    log = HISTORY.logs["a"].records
    tamper(copy, "UPDATE keys SET head_seq = ?, head_id = ? WHERE key = ?",
           len(log) - 1, bytes.fromhex(log[-2].id), A.public)  # fmt: skip
    result = run_audit(copy)
    assert codes(result) == {"head_mismatch"}
    (v,) = result.violations
    assert (v.author, v.seq, v.records) == (A.public, len(log) - 1, (log[-2].id, log[-1].id))


def test_stored_metadata_that_contradicts_the_bytes(copy: Path) -> None:
    record = HISTORY.logs["b"].records[0]
    tamper(copy, f"UPDATE records SET kind = 'signal', seq = 7 WHERE row = {row_of(record)}")
    result = run_audit(copy)
    meta = [v for v in result.violations if v.code == "record_metadata"]
    assert [(v.records, sorted(v.data["fields"])) for v in meta] == [  # type: ignore[arg-type]
        ((record.id,), ["kind", "seq"])
    ]


def test_fork_evidence_is_checked_and_exported_evidence_verifies_alone(copy: Path) -> None:
    with Store.open(copy, FED, readonly=True) as store:
        (proof,) = store.forks()
    exported = json.loads(encode_canonical(proof.to_json()))
    checked = verify_fork_evidence(exported, FED.id)  # only the federation id is needed
    assert {checked.first.id, checked.second.id} == {
        HISTORY.fork.id,
        HISTORY.logs["c"].records[1].id,
    }
    tamper(copy, "UPDATE forks SET second = first")
    result = run_audit(copy)
    assert {"fork_evidence_invalid", "fork_unrecorded"} <= codes(result)
    unrecorded = next(v for v in result.violations if v.code == "fork_unrecorded")
    verify_fork_evidence(unrecorded.data["evidence"], FED.id)


def flip_signature(raw: bytes) -> bytes:
    data = bytearray(raw)
    i = data.index(b'"sig":"') + 20
    data[i] = ord("1") if data[i] != ord("1") else ord("2")
    return bytes(data)


@pytest.mark.parametrize("tampering", ["none", "gap", "invalid"])
def test_parallel_verification_gives_the_same_verdicts(
    copy: Path, monkeypatch: pytest.MonkeyPatch, tampering: str
) -> None:
    """On the pool this process examines the records while they are verified and a worker
    digests the materialised state; with a record that fails verification the examination is
    discarded and repeated, with a state that differs the full comparison runs."""
    if tampering != "none":
        tamper(copy, f"DELETE FROM records WHERE row = {row_of(HISTORY.logs['a'].records[1])}")
    if tampering == "invalid":
        victim = HISTORY.logs["b"].records[1]
        raw = flip_signature(victim.canonical)
        tamper(copy, f"UPDATE records SET raw = ? WHERE row = {row_of(victim)}", raw)
    inline = run_audit(copy).to_json()
    monkeypatch.setattr(node.audit.engine, "PARALLEL_MIN_RECORDS", 0)
    monkeypatch.setattr(node.audit.sources, "CHUNK_RECORDS", 4)
    assert run_audit(copy, workers=2).to_json() == inline
    assert inline["clean"] is (tampering == "none")
    assert ("record_invalid" in str(inline)) is (tampering == "invalid")


def test_materialised_tables_that_cannot_be_read(copy: Path) -> None:
    tamper(copy, f"UPDATE signals SET labels = 'not json' WHERE row = {row_of(HISTORY.records[0])}")
    result = run_audit(copy)
    assert codes(result) == {"state_mismatch"}
    assert result.violations[0].data["change"] == "unreadable"


# -- comparing sources ---------------------------------------------------------------------------


def test_compare_finds_missing_records_and_a_split_view(tmp_path: Path) -> None:
    common = [r for r in HISTORY.records if r.author != C.public]
    left, right = tmp_path / "left.db", tmp_path / "right.db"
    c1 = HISTORY.logs["c"].records
    with Store.open(left, FED, create=True) as store:
        store.merge([r.canonical for r in [*common, *c1]], received_ms=T0)
    with Store.open(right, FED, create=True) as store:
        store.merge([r.canonical for r in [*common[:-1], c1[0], HISTORY.fork]], received_ms=T0)
    snaps = [open_source(str(p)) for p in (left, right)]
    result = compare(snaps)
    for snap in snaps:
        snap.close()
    assert not result.agree
    assert result.lacking == [(str(left), [HISTORY.fork.id]),
                              (str(right), sorted([common[-1].id, c1[1].id]))]  # fmt: skip
    (split,) = result.split_views
    assert (split["author"], split["seq"], split["split"]) == (C.public, 2, True)
    proof = verify_fork_evidence(split["evidence"], FED.id)
    assert {proof.first.id, proof.second.id} == {c1[1].id, HISTORY.fork.id}


# -- the command line ----------------------------------------------------------------------------


def test_cli_exit_codes_and_json(copy: Path, tmp_path: Path) -> None:
    clean = hm("audit", "--db", copy, "--json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["clean"] is True
    tamper(copy, "UPDATE keys SET head_seq = head_seq - 1 WHERE key = ?", B.public)
    dirty = hm("audit", "--db", copy, "--json")
    assert dirty.returncode == 1
    assert [v["code"] for v in json.loads(dirty.stdout)["violations"]] == ["head_mismatch"]
    assert canonical_json(run_audit(copy).to_json()) + b"\n" == dirty.stdout.encode()
    human = hm("audit", "--db", copy)
    assert human.returncode == 1 and "head_mismatch" in human.stdout


def test_cli_refuses_what_is_not_a_hashmesh_database(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (x)")
    conn.close()
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    refusals = {path.name: hm("audit", "--db", path) for path in (other, text, tmp_path / "x.db")}
    assert [r.returncode for r in refusals.values()] == [2, 2, 2]
    assert all("could not audit" in r.stderr for r in refusals.values())
    assert "other.db: not a hashmesh database" in refusals["other.db"].stderr
    assert "notes.txt: not a hashmesh database" in refusals["notes.txt"].stderr


def test_cli_audits_a_jsonl_export(tmp_path: Path) -> None:
    export, genesis = tmp_path / "records.jsonl", tmp_path / "federation.json"
    export.write_bytes(b"".join(r.canonical + b"\n" for r in HISTORY.records))
    genesis.write_bytes(FED.to_bytes())
    result = hm("audit", "--db", export, "--federation", genesis, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "jsonl" and out["counts"]["valid"] == len(HISTORY.records)
    assert hm("audit", "--db", export).returncode == 2  # no federation given


# -- a live node, over the signed peer API -------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[list[NodeProc], Path]]:
    _, nodes = found_federation(tmp_path, ["a", "b"], auditors=["audit"])
    members, auditor = nodes[:2], nodes[2]
    try:
        for n in members:
            n.start()
        yield members, auditor.home
    finally:
        for n in members:
            n.stop()


def converged(a: NodeProc, b: NodeProc) -> int:
    """The number of records both nodes hold once they hold the same ones (nodes announce
    themselves too), else 0."""
    stores = [n.api("GET", "/v1/status")["store"] for n in (a, b)]
    same = stores[0] == stores[1] and stores[0]["signals"] == 3
    return int(stores[0]["records"]) if same else 0


@pytest.mark.slow
def test_online_audit_of_live_nodes(live: tuple[list[NodeProc], Path]) -> None:
    (a, b), home = live
    ids = [a.api("POST", "/v1/signals", {"type": "sha256", "value": f"{n:064x}"})["id"]
           for n in range(1, 4)]  # fmt: skip
    b.api("POST", f"/v1/signals/{ids[0]}/opinions", {"verdict": "dispute"})
    stored = wait_until(lambda: converged(a, b))
    result = hm("audit", "--node", a.url, "--home", home, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert (out["kind"], out["clean"], out["counts"]["valid"]) == ("node", True, stored)
    assert {c["check"]: c["status"] for c in out["checks"]}["heads"] == "pass"
    both = hm("audit", "--compare", a.url, b.url, "--home", home, "--json")
    assert both.returncode == 0 and json.loads(both.stdout)["agree"] is True
    b.stop()  # now b serves a record whose signature does not verify
    victim = ids[1]
    with sqlite3.connect(b.home / "hashmesh.db") as conn:
        raw = conn.execute("SELECT raw FROM records WHERE id = ?", (bytes.fromhex(victim),))
        data = bytearray(raw.fetchone()[0])
        i = data.index(b'"sig":"') + 9
        data[i] = ord("1") if data[i] != ord("1") else ord("2")
        conn.execute(
            "UPDATE records SET raw = ? WHERE id = ?", (bytes(data), bytes.fromhex(victim))
        )
    conn.close()
    b.start()
    bad = hm("audit", "--node", b.url, "--home", home, "--json")
    assert bad.returncode == 1, bad.stderr
    invalid = [v for v in json.loads(bad.stdout)["violations"] if v["code"] == "record_invalid"]
    assert [(v["records"], v["error"]) for v in invalid] == [([victim], "SignatureError")]
