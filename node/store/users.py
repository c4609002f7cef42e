"""People, not one token: the web UI's local user accounts, sessions and action log.

Several moderators share one node; the bearer token in ``HOME/api.token`` stays the way
machines talk to it, and people sign in to the web UI (``node.ui``) with accounts kept in the
node's own database (tables ``ui_users``, ``ui_sessions``, ``ui_actions``; migration
``0003_ui_users`` in ``node.store.schema``), managed with ``hashmesh user add|remove|list``.

- Roles, each including the one before: ``viewer`` reads every page and matches uploads;
  ``moderator`` also adds, retracts its member's signals and gives opinions; ``admin`` also
  votes to admit or remove members.
- Passwords are stored as argon2id hashes (``argon2-cffi``'s ``PasswordHasher``, its
  RFC 9106 defaults), never in the clear; a login with an unknown name costs the same as one
  with a wrong password.
- A session is a random 256-bit cookie value; the database keeps only its SHA-256, with the
  user, a per-session CSRF token and an expiry. Removing a user ends their sessions at once
  (a session is only valid while its user exists, with the role the user has now).
- The action log records who did what, when, and the id of the record it produced.

Everything here takes a ``sqlite3.Connection`` and the time (``now_ms``): the node runs it on
its store's writer thread (writes) or a reader (reads), the CLI on a connection of its own.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from node.errors import InputError

ROLES: Final = ("viewer", "moderator", "admin")
_RANK: Final = {role: n for n, role in enumerate(ROLES)}
USER_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MIN_PASSWORD_CHARS: Final = 10
MAX_PASSWORD_CHARS: Final = 1024
SESSION_TTL_MS: Final = 12 * 3600 * 1000
MAX_ACTION_DETAIL_CHARS: Final = 2000

_HASHER: Final = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown, so that both failures take the same time
    (made on first use: an argon2id hash costs every CLI command ~0.2 s at import)."""
    return _HASHER.hash(secrets.token_hex(16))


TABLES: Final = (
    """CREATE TABLE ui_users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'moderator', 'admin')),
        password TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE ui_sessions (
        token_hash BLOB PRIMARY KEY,
        user TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX ui_sessions_user ON ui_sessions (user)",
    """CREATE TABLE ui_actions (
        row INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        record TEXT,
        detail TEXT
    )""",
)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    created_ms: int

    def may(self, role: str) -> bool:
        """Does this user hold role, or one above it?"""
        return _RANK[self.role] >= _RANK[role]


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class Action:
    ts_ms: int
    user: str
    action: str
    target: str | None
    record: str | None
    detail: str | None


def check_name(name: str) -> str:
    if USER_NAME.fullmatch(name) is None:
        raise InputError(
            f"user name {name[:70]!r} is not valid: 1-64 characters, lowercase letters, digits "
            "and . _ -, starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in _RANK:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {role[:40]!r}")
    return role


def check_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InputError(
            f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters, "
            f"this one has {len(password)}"
        )
    return password


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# -- accounts -----------------------------------------------------------------------------


def add_user(
    conn: sqlite3.Connection,
    name: str,
    role: str,
    password: str,
    *,
    now_ms: int,
    hasher: PasswordHasher = _HASHER,
) -> User:
    """A new account; InputError if the name is taken or anything is invalid. The hash
    string records the argon2 parameters, so a login verifies with those it was made with."""
    user = User(check_name(name), check_role(role), now_ms)
    hashed = hasher.hash(check_password(password))
    try:
        conn.execute(
            "INSERT INTO ui_users (name, role, password, created_ms) VALUES (?, ?, ?, ?)",
            (user.name, user.role, hashed, now_ms),
        )
    except sqlite3.IntegrityError:
        raise InputError(f"user {name!r} exists already (remove it first)") from None
    return user


def remove_user(conn: sqlite3.Connection, name: str) -> User:
    """Delete an account and end its sessions; InputError if there is no such user."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        user = get_user(conn, name)
        if user is None:
            raise InputError(f"no user {name[:70]!r} (see 'hashmesh user list')")
        conn.execute("DELETE FROM ui_sessions WHERE user = ?", (name,))
        conn.execute("DELETE FROM ui_users WHERE name = ?", (name,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return user


def get_user(conn: sqlite3.Connection, name: str) -> User | None:
    row = conn.execute(
        "SELECT name, role, created_ms FROM ui_users WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else User(*row)


def list_users(conn: sqlite3.Connection) -> list[User]:
    return [
        User(*r) for r in conn.execute("SELECT name, role, created_ms FROM ui_users ORDER BY name")
    ]


def check_login(conn: sqlite3.Connection, name: str, password: str) -> User | None:
    """The user if name and password match, else None (in about the same time either way)."""
    row = conn.execute("SELECT password FROM ui_users WHERE name = ?", (name,)).fetchone()
    stored = _dummy_hash() if row is None else str(row[0])
    try:
        _HASHER.verify(stored, password[:MAX_PASSWORD_CHARS])
    except (VerificationError, InvalidHashError):
        return None
    return None if row is None else get_user(conn, name)


# -- sessions -----------------------------------------------------------------------------


def open_session(conn: sqlite3.Connection, user: User, *, now_ms: int) -> tuple[str, Session]:
    """A new session for user: (the cookie value, the session). Expired sessions are purged."""
    token = secrets.token_urlsafe(32)
    session = Session(user, secrets.token_urlsafe(32), now_ms + SESSION_TTL_MS)
    conn.execute("DELETE FROM ui_sessions WHERE expires_ms <= ?", (now_ms,))
    conn.execute(
        "INSERT INTO ui_sessions (token_hash, user, csrf, created_ms, expires_ms) "
        "VALUES (?, ?, ?, ?, ?)",
        (_token_hash(token), user.name, session.csrf, now_ms, session.expires_ms),
    )
    return token, session


def session_for(conn: sqlite3.Connection, token: str, *, now_ms: int) -> Session | None:
    """The live session of a cookie value: its user still exists, it has not expired."""
    if not token or len(token) > 100:
        return None
    row = conn.execute(
        "SELECT u.name, u.role, u.created_ms, s.csrf, s.expires_ms FROM ui_sessions s "
        "JOIN ui_users u ON u.name = s.user WHERE s.token_hash = ? AND s.expires_ms > ?",
        (_token_hash(token), now_ms),
    ).fetchone()
    if row is None:
        return None
    name, role, created, csrf, expires = row
    return Session(User(name, role, created), csrf, expires)


def close_session(conn: sqlite3.Connection, token: str) -> None:
    conn.execute("DELETE FROM ui_sessions WHERE token_hash = ?", (_token_hash(token),))


def same_token(expected: str, supplied: str | None) -> bool:
    """Constant-time comparison of a CSRF token."""
    return supplied is not None and hmac.compare_digest(expected.encode(), supplied.encode())


# -- the action log -----------------------------------------------------------------------


def log_action(
    conn: sqlite3.Connection,
    user: str,
    action: str,
    *,
    now_ms: int,
    target: str | None = None,
    record: str | None = None,
    detail: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO ui_actions (ts_ms, user, action, target, record, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            now_ms,
            user,
            action,
            target,
            record,
            (detail or None) and detail[:MAX_ACTION_DETAIL_CHARS],
        ),
    )


def actions(
    conn: sqlite3.Connection, *, limit: int, before: int | None = None, user: str | None = None
) -> list[tuple[int, Action]]:
    """The newest actions first, as (row, action); ``before`` a row pages back."""
    rows = conn.execute(
        "SELECT row, ts_ms, user, action, target, record, detail FROM ui_actions "
        "WHERE (:before IS NULL OR row < :before) AND (:user IS NULL OR user = :user) "
        "ORDER BY row DESC LIMIT :limit",
        {"before": before, "user": user, "limit": limit},
    )
    return [(r[0], Action(*r[1:])) for r in rows]


def actions_for_record(conn: sqlite3.Connection, records: list[str]) -> dict[str, Action]:
    """The logged action that produced each of these record ids (if one did, here)."""
    if not records:
        return {}
    marks = ",".join("?" * len(records))
    rows = conn.execute(
        "SELECT record, ts_ms, user, action, target, record, detail FROM ui_actions "
        f"WHERE record IN ({marks})",
        records,
    )
    return {r[0]: Action(*r[1:]) for r in rows}
