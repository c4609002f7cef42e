"""What the auditor reads: a node database, a JSONL record export, or a live node.

Each reader returns a ``node.audit.engine.Snapshot`` and decides nothing: the stored bytes and what
the source says about them (stored metadata, heads, fork evidence, the materialised tables)
go to ``node.audit.engine``, whose verdicts are ``protocol``'s.

- ``read_database``: a copy of any node's ``hashmesh.db``, opened read-only through
  ``Store.open`` (which refuses files that are not hashmesh databases, are corrupt, or belong
  to another federation); the raw tables are read with the store's read-only connection.
- ``read_jsonl``: one canonical record per line (what ``GET /v1/records`` exports); the
  federation must be given.
- ``read_node``: ``GET /v1/heads``, then every author's log up to that frontier over
  ``GET /v1/log/{author}`` (a frozen author's head is at its cap, SPEC 10.2: its log is
  read through its fork evidence too, and records it stored past a freeze are not read),
  every request signed (RFC 9421) with the auditor's key. The first
  frontier is the snapshot: records a live node stores meanwhile are left out. An ``https``
  node is pinned as peers pin it (SPEC 10.5): by its member's announce, as the auditor's home
  database holds it, else by the URL's ``#spki=<fingerprint>``; without a pin it is not
  contacted, and a node presenting another key is refused before any request is sent.

Anything that makes a source unreadable raises ``AuditError`` (exit 2 at the CLI).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import orjson

from node.audit.checks import ForkRow, part_digests
from node.audit.engine import AuditError, Row, Snapshot
from node.config import split_seed
from node.errors import ConfigError, NodeError, StoreError
from node.net.client import NodeClient
from node.net.httpsig import sign_request
from node.net.tls import announced_pins
from node.store import schema
from node.store.materialise import id8
from node.store.schema import SQLITE_HEADER
from node.store.store import Store
from protocol import Federation, Head, RemoteProtocolError, SigningKey
from protocol.encoding import JsonValue
from protocol.federation import parse_genesis
from protocol.records import is_record_id
from protocol.sync import (
    MAX_PAGE_RECORDS,
    LogRequest,
    claimed_last_seq,
    next_page,
    parse_frontier,
)

CHUNK_RECORDS: Final = 1024
HTTP_TIMEOUT_S: Final = 60


def open_source(
    spec: str,
    *,
    federation: Federation | None = None,
    key: SigningKey | None = None,
    home_db: Path | None = None,
) -> Snapshot:
    """The snapshot of a database path, a JSONL path or a node URL (http:// or https://,
    optionally pinned: ``https://host:port/#spki=<hex>``). home_db, the auditor home's
    database, if any, supplies the TLS pins its members announced."""
    if spec.startswith(("http://", "https://")):
        if key is None or federation is None:
            raise AuditError(f"{spec}: auditing a node needs --home with an auditor key")
        pins = home_pins(home_db, federation) if spec.startswith("https://") else {}
        return read_node(spec, key, federation, pins)
    path = Path(spec)
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise AuditError(f"{path}: cannot read: {e.strerror}") from e
    if header == SQLITE_HEADER:
        return read_database(path, federation)
    if header[:1] == b"{" or not header:
        if federation is None:
            raise AuditError(f"{path}: a record export needs --federation or --home")
        return read_jsonl(path, federation)
    raise AuditError(f"{path}: not a hashmesh database (not SQLite) nor a JSONL record export")


# -- a node database -------------------------------------------------------------------------


def database_federation(path: Path) -> Federation:
    """The federation a node database names, read without trusting the file to be one."""
    try:
        return schema.database_federation(path)
    except StoreError as e:
        raise AuditError(str(e)) from e


def read_database(path: Path, federation: Federation | None = None) -> Snapshot:
    """A node database, read-only. With federation, a database of another one is refused."""
    fed = federation if federation is not None else database_federation(path)
    try:
        store = Store.open(path, fed, readonly=True, check=True)
    except StoreError as e:
        raise AuditError(str(e)) from e
    try:
        return _database_snapshot(path, store)
    except sqlite3.DatabaseError as e:
        store.close()
        raise AuditError(f"{path}: cannot read: {e}") from e


def _database_snapshot(path: Path, store: Store) -> Snapshot:
    conn = store.conn
    keys: dict[int, str] = dict(conn.execute("SELECT ref, key FROM keys"))
    forks = [
        ForkRow(author, seq, {"author": author, "seq": seq, "records": [first, second]})
        for author, seq, first, second in conn.execute(
            "SELECT k.key, f.seq, f.first, f.second FROM forks f JOIN keys k ON k.ref = f.author"
        )
    ]
    pending = [
        _db_row(keys, n, rid, id8(rid) if isinstance(rid, bytes) else None, ref, seq, None, raw)
        for n, (rid, ref, seq, raw) in enumerate(
            conn.execute("SELECT id, author, seq, raw FROM pending ORDER BY id"), start=1
        )
    ]
    fork_seqs = "SELECT key, fork_seq FROM keys WHERE fork_seq IS NOT NULL"
    return Snapshot(
        kind="database",
        source=str(path),
        federation=store.federation,
        chunks=lambda: _database_chunks(conn, keys),
        total=conn.execute("SELECT count(*) FROM records").fetchone()[0],
        heads=_heads(conn),
        forks=forks,
        fork_seqs=dict(conn.execute(fork_seqs)),
        pending=pending,
        materialised=lambda now_ms: store.materialised_state(now_ms=now_ms),
        counted=lambda: _counted_rows(conn),
        state_digests=functools.partial(
            materialised_digests, str(path), store.federation.to_bytes()
        ),
        close=store.close,
    )


def _database_chunks(conn: sqlite3.Connection, keys: Mapping[int, str]) -> Iterator[list[Row]]:
    sql = "SELECT row, id, id8, author, seq, kind, raw FROM records WHERE row > ? ORDER BY row "
    after = 0
    while rows := conn.execute(sql + "LIMIT ?", (after, CHUNK_RECORDS)).fetchall():
        yield [_db_row(keys, *r) for r in rows]
        after = rows[-1][0]


def _db_row(
    keys: Mapping[int, str],
    row: int,
    rid: object,
    short: object,
    ref: object,
    seq: object,
    kind: object,
    raw: object,
) -> Row:
    """A stored row, whatever types a damaged table holds (they only make violations)."""
    if type(rid) is bytes and type(raw) is bytes and type(ref) is int and type(seq) is int:
        author = keys.get(ref) or f"<no key ref {ref}>"
        return Row(row, raw, rid.hex(), author, seq, str(kind), id8(rid) == short)
    return Row(
        row,
        raw if isinstance(raw, bytes) else str(raw).encode(),
        repr(rid),
        repr(ref),
        seq if isinstance(seq, int) else -1,
        str(kind),
        False,
    )


def _heads(conn: sqlite3.Connection) -> dict[str, Head]:
    rows = conn.execute("SELECT key, head_seq, head_id FROM keys WHERE head_seq > 0")
    return {
        key: Head(key, seq, hid.hex() if isinstance(hid, bytes) else repr(hid))
        for key, seq, hid in rows
    }


def materialised_digests(path: str, genesis: bytes, now_ms: int) -> dict[str, str]:
    """``part_digests`` of a database's materialised state and ``counted`` frontier, for a
    worker process (it opens its own read-only connection)."""
    with Store.open(Path(path), parse_genesis(genesis), readonly=True) as store:
        state = dict(store.materialised_state(now_ms=now_ms))
        state["counted"] = _counted_rows(store.conn)
    return part_digests(state)


def _counted_rows(conn: sqlite3.Connection) -> list[JsonValue]:
    rows = conn.execute(
        "SELECT k.key, m.key, c.gen, c.through FROM counted c JOIN keys k ON k.ref = c.key "
        "JOIN keys m ON m.ref = c.member ORDER BY k.key"
    )
    return [{"key": k, "member": m, "gen": gen, "through": through} for k, m, gen, through in rows]


# -- a record export -------------------------------------------------------------------------


def read_jsonl(path: Path, federation: Federation) -> Snapshot:
    """A record export: one canonical record per line (blank lines are ignored)."""
    try:
        lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    except OSError as e:
        raise AuditError(f"{path}: cannot read: {e.strerror}") from e
    rows = [Row(n, line) for n, line in enumerate(lines, start=1)]
    return Snapshot("jsonl", str(path), federation, lambda: _chunked(rows), len(rows), "line")


def _chunked(rows: list[Row]) -> Iterator[list[Row]]:
    for i in range(0, len(rows), CHUNK_RECORDS):
        yield rows[i : i + CHUNK_RECORDS]


# -- a live node -----------------------------------------------------------------------------


def home_pins(db: Path | None, federation: Federation) -> dict[str, str]:
    """URL -> TLS pin from the members' announces in the auditor home's database (none if
    the home has no database yet)."""
    if db is None or not db.exists():
        return {}
    try:
        with Store.open(db, federation, readonly=True) as store:
            return announced_pins(store.endpoints())
    except (StoreError, sqlite3.DatabaseError) as e:
        raise AuditError(f"{db}: cannot read the members' TLS pins: {e}") from e


def read_node(
    spec: str, key: SigningKey, federation: Federation, pins: Mapping[str, str] | None = None
) -> Snapshot:
    """A live node through the signed peer API: its frontier, then every log up to it.
    ``https`` is pinned: by pins (the members' announces), else by spec's ``#spki=``."""
    try:
        url, url_pin = split_seed(spec)
    except ConfigError as e:
        raise AuditError(str(e)) from e
    pin = (pins or {}).get(url) or url_pin
    if url.startswith("https://") and pin is None:
        raise AuditError(
            f"no TLS pin for {url}: its member's announce is not in this home's database; "
            f"pin the node's key: {url}#spki=<fingerprint> ('hashmesh card' shows it)"
        )
    with PeerClient(url, key, pin=pin) as client:
        return _read_node(client, url, federation)


def _read_node(client: PeerClient, url: str, federation: Federation) -> Snapshot:
    answer = client.get_json("/v1/heads")
    try:
        frontier = parse_frontier(answer)
    except RemoteProtocolError as e:
        raise AuditError(f"{url}: malformed /v1/heads answer: {e}") from e
    claimed = str(answer.get("digest")) if isinstance(answer, dict) else ""
    forks = [ForkRow(str(f.get("author")), _int(f.get("seq")), f) for f in frontier.forks]
    through = {author: head.seq for author, head in frontier.heads.items()}
    for fork in forks:  # its two records lie past the author's capped head
        if is_record_id(fork.author) and fork.seq is not None and fork.seq > 0:
            through[fork.author] = max(through.get(fork.author, 0), fork.seq)
    rows: list[Row] = []
    for author, seq in sorted(through.items()):
        rows += [Row(len(rows) + 1, raw, author=author) for raw in client.log(author, seq)]
    return Snapshot(
        kind="node",
        source=url,
        federation=federation,
        chunks=lambda: _chunked(rows),
        total=len(rows),
        ref_name="pulled record",
        heads=dict(frontier.heads),
        forks=forks,
        digest=(claimed, frontier.digest()),
    )


def _int(value: object) -> int | None:
    return value if type(value) is int else None


class PeerClient(NodeClient):
    """Signed GET requests to a node's peer API (RFC 9421, with the auditor's key); ``https``
    only with a pin. Every failure is an ``AuditError``."""

    def __init__(
        self,
        url: str,
        key: SigningKey,
        clock: Callable[[], float] = time.time,
        *,
        pin: str | None = None,
    ) -> None:
        def authorise(method: str, url: str, body: bytes) -> dict[str, str]:
            return sign_request(key, method, url, body, now_s=clock())

        super().__init__(url, authorise, pin=pin, timeout_s=HTTP_TIMEOUT_S)

    def get(self, path: str, query: Mapping[str, str] | None = None) -> bytes:
        try:
            return self.call_raw("GET", path, query=query)
        except NodeError as e:
            raise AuditError(f"{self.base}{path}: {e}") from e

    def get_json(self, path: str) -> JsonValue:
        try:
            value: JsonValue = json.loads(self.get(path))
        except ValueError as e:
            raise AuditError(f"{self.base}{path}: the answer is not JSON") from e
        return value

    def log(self, author: str, through: int) -> list[bytes]:
        """author's records with seq <= through, paged as gossip pages (``protocol.sync``'s
        ``next_page``: each page after the first starts one seq back, so the second record
        of a fork at a page boundary is not lost); each line is kept once."""
        kept: dict[bytes, None] = {}
        page = LogRequest(author, 0, MAX_PAGE_RECORDS)
        while True:
            lines = [
                line for line in self.get(f"/v1/log/{author}", page.query()).split(b"\n") if line
            ]
            kept.update((line, None) for line in lines if (_seq_of(line) or 0) <= through)
            following = next_page(page, len(lines), claimed_last_seq(lines))
            if following is None or following.after >= through:
                return list(kept)
            page = following


def _seq_of(line: bytes) -> int | None:
    """The seq a line claims, for paging only (every line is verified later)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    seq = value.get("seq") if isinstance(value, dict) else None
    return seq if type(seq) is int else None
