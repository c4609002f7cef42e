"""Replica tokens: read-only, revocable credentials the node issues to its match replicas.

A member that runs ``hashmesh replica`` processes (node.replica) gives each one a token of
its own rather than the node's bearer token (``HOME/api.token``, which can sign records):
``hashmesh tokens issue --replica NAME`` prints a fresh token once, ``hashmesh tokens
revoke NAME`` ends it, ``hashmesh tokens list`` shows them. A replica token may read what a
replica needs and nothing else (``node.net.replica_api``: the snapshot, the change feed and
lookup); any other request made with it is refused with 403.

- A token is ``hmr_`` and 256 random bits (URL-safe base64). The database keeps only its
  SHA-256 (table ``replica_tokens``, migration ``0005_replica_tokens``): a random 256-bit
  secret needs no slow hash, and a copy of the database gives no working token.
- The tokens are the node's own, not records: a database restored from a jsonl backup
  (README "Backups and restore") has none, and ``issue --token-file`` registers each
  replica's token again rather than making new ones to hand out.
- Revoking keeps the row (name, when issued, when revoked), so ``list`` shows what existed;
  a revoked name can be issued again, which replaces the row with a new token.

Everything here takes a ``sqlite3.Connection`` and the time: the node checks tokens on a
store reader, the CLI writes on a connection of its own, with or without a running node
(SQLite serialises it with the node's writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from node.errors import InputError

TOKEN_PREFIX: Final = "hmr_"
TOKEN_BYTES: Final = 32
REPLICA_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

TABLES: Final = (
    """CREATE TABLE replica_tokens (
        name TEXT PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE,
        issued_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    ) WITHOUT ROWID""",
)


@dataclass(frozen=True, slots=True)
class ReplicaToken:
    name: str
    issued_ms: int
    revoked_ms: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "issued_ms": self.issued_ms, "revoked_ms": self.revoked_ms,
                "active": self.active}  # fmt: skip


def check_name(name: str) -> str:
    if REPLICA_NAME.fullmatch(name) is None:
        raise InputError(
            f"replica name {name[:70]!r} is not valid: 1-64 characters, lowercase letters, "
            "digits and . _ -, starting with a letter or digit"
        )
    return name


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def looks_like_token(text: str) -> bool:
    """Could text be a replica token (cheap: decides whether the store is asked at all)?"""
    return text.startswith(TOKEN_PREFIX) and 40 <= len(text) <= 80


def issue(conn: sqlite3.Connection, name: str, *, now_ms: int, token: str | None = None) -> str:
    """A new token for replica ``name`` (or ``token``, one issued before: after a database
    is restored from a backup, the replicas keep the tokens they hold); refused while an
    active one has that name."""
    check_name(name)
    if token is not None and not (looks_like_token(token) and token.isascii()):
        raise InputError("not a replica token: it starts with hmr_ (see 'hashmesh tokens issue')")
    with _immediate(conn):
        row = conn.execute(
            "SELECT revoked_ms FROM replica_tokens WHERE name = ?", (name,)
        ).fetchone()
        if row is not None and row[0] is None:
            raise InputError(
                f"replica {name!r} already has an active token: revoke it first "
                f"('hashmesh tokens revoke {name}') or choose another name"
            )
        token = token or TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        conn.execute(
            "INSERT OR REPLACE INTO replica_tokens (name, token_hash, issued_ms, revoked_ms) "
            "VALUES (?, ?, ?, NULL)",
            (name, token_hash(token), now_ms),
        )
    return token


def revoke(conn: sqlite3.Connection, name: str, *, now_ms: int) -> ReplicaToken:
    """End replica ``name``'s token; every request with it is refused from now on."""
    with _immediate(conn):
        found = _get(conn, name)
        if found is None:
            raise InputError(
                f"no replica token is named {name[:70]!r} (see 'hashmesh tokens list')"
            )
        if not found.active:
            return found
        conn.execute("UPDATE replica_tokens SET revoked_ms = ? WHERE name = ?", (now_ms, name))
    return ReplicaToken(name, found.issued_ms, now_ms)


def list_tokens(conn: sqlite3.Connection) -> list[ReplicaToken]:
    rows = conn.execute("SELECT name, issued_ms, revoked_ms FROM replica_tokens ORDER BY name")
    return [ReplicaToken(*row) for row in rows]


def holder(conn: sqlite3.Connection, token: str) -> str | None:
    """The name of the replica whose active token this is, or None."""
    if not looks_like_token(token):
        return None
    row = conn.execute(
        "SELECT name FROM replica_tokens WHERE token_hash = ? AND revoked_ms IS NULL",
        (token_hash(token),),
    ).fetchone()
    return None if row is None else str(row[0])


def _get(conn: sqlite3.Connection, name: str) -> ReplicaToken | None:
    row = conn.execute(
        "SELECT name, issued_ms, revoked_ms FROM replica_tokens WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else ReplicaToken(*row)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (the connection is in autocommit mode, as every store's is)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
