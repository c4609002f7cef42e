"""Webhooks: a signed HTTP POST for each match a ``[[webhooks]]`` rule selects, from a durable
queue, retried with backoff, dead-lettered after repeated failures.

The request (one per match and rule)::

    POST <url>
    Content-Type: application/json
    X-Hashmesh-Event: match
    X-Hashmesh-Delivery: <32 hex: the delivery's id, the same on every retry>
    X-Hashmesh-Signature: t=<unix seconds>,v1=<64 hex>

``v1`` is HMAC-SHA256, keyed with the rule's ``secret`` (its UTF-8 bytes), over the bytes
``<t>.<body>``: the decimal timestamp, a full stop, and the exact request body (Stripe's
scheme). The timestamp is signed, so a receiver refuses a replay by refusing a ``t`` more
than a few minutes from its clock (``verify_signature``: 300 s), and the delivery id lets it
drop a retry it has already acted on. Each attempt is signed afresh with its own ``t``.

The body (``payload``) names the delivery, the rule, the node, the match (time, caller,
query, distance) and the signal with its provenance as a match answer gives it.

A delivery is pending until a 2xx answer; anything else (a refused connection, a timeout,
a 3xx, 4xx or 5xx) is a failed attempt, retried after ``backoff_s``: ``base * 2^(n-1)``
seconds (n: failed attempts so far), at most ``cap``, with "equal jitter" (half of it fixed,
half uniformly random) so that many deliveries failing together do not retry together.
After ``max_attempts`` failures it is ``dead`` (``GET /v1/webhooks/deliveries?state=dead``);
an operator's retry makes it pending again with a fresh count. Redirects are not followed.

The queue is the ``deliveries`` table of ``HOME/moderation.db``: it survives a restart,
and the secret is never stored in it (each attempt signs with the rule as configured then).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from node.config import WebhookRule
from node.moderation.events import MatchEvent

SIGNATURE_HEADER: Final = "X-Hashmesh-Signature"
DELIVERY_HEADER: Final = "X-Hashmesh-Delivery"
EVENT_HEADER: Final = "X-Hashmesh-Event"
TOLERANCE_S: Final = 300
MAX_ERROR_CHARS: Final = 300
STATES: Final = ("held", "pending", "delivered", "dead")
SIGNAL_FIELDS: Final = ("id", "type", "value", "labels", "member", "member_name", "author",
                        "seq", "ts", "expires", "status", "tallies", "list", "note")  # fmt: skip


def signature(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Hashmesh-Signature`` header value for body sent at timestamp (unix s)."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    header: str,
    *,
    now_s: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """For a receiver: did a holder of secret sign exactly body, within tolerance_s of now?
    (header: the ``X-Hashmesh-Signature`` value; any ``v1`` in it may match.)"""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(name, []).append(value)
    stamps = fields.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    now = time.time() if now_s is None else now_s
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


def backoff_s(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait after the failures-th failed attempt (equal jitter)."""
    delay = min(cap_s, base_s * 2 ** max(0, failures - 1))
    return float(delay / 2 + rng.uniform(0, delay / 2))


def payload(uid: str, rule: str, event: MatchEvent, match: int, node: str, *, held: bool) -> bytes:
    """A delivery's JSON body."""
    signal = {k: event.hit[k] for k in SIGNAL_FIELDS if k in event.hit}
    signal.setdefault("list", event.list_name)
    found = {"id": match, "ts": event.ts, "caller": event.caller,
             "query": {"type": event.query_type, "value": event.query_value},
             "distance": event.distance, "quarantined": held}  # fmt: skip
    body = {"event": "match", "delivery": uid, "rule": rule, "node": node, "match": found,
            "signal": signal}  # fmt: skip
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


# ---- the queue ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    uid: str
    rule: str
    body: bytes
    attempts: int


DeliveryRow = tuple[str, str, int, int, bytes, str, int]  # uid, rule, ref, match, body, state, ms


def enqueue(conn: sqlite3.Connection, rows: list[DeliveryRow]) -> None:
    """rows: (uid, rule, signal ref, match id, body, state, now_ms)."""
    conn.executemany(
        "INSERT INTO deliveries (uid, rule, signal, match, body, state, next_ms, created_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?7, ?7)",
        rows,
    )


def due(
    conn: sqlite3.Connection, now_ms: int, limit: int, busy: Collection[int] = ()
) -> list[Delivery]:
    rows = conn.execute(
        "SELECT id, uid, rule, body, attempts FROM deliveries "
        "WHERE state = 'pending' AND next_ms <= ? ORDER BY next_ms, id LIMIT ?",
        (now_ms, limit + len(busy)),
    ).fetchall()
    return [Delivery(*r) for r in rows if r[0] not in busy][:limit]


def next_due_ms(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT min(next_ms) FROM deliveries WHERE state = 'pending'").fetchone()
    return None if row[0] is None else int(row[0])


def delivered(conn: sqlite3.Connection, delivery: int, now_ms: int, status: int) -> None:
    conn.execute(
        "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, done_ms = ?, "
        "last_status = ?, last_error = NULL WHERE id = ?",
        (now_ms, status, delivery),
    )


def failed(
    conn: sqlite3.Connection,
    delivery: int,
    now_ms: int,
    *,
    status: int | None,
    error: str,
    retry_at_ms: int | None,
) -> None:
    """A failed attempt: retried at retry_at_ms, or dead (None)."""
    conn.execute(
        "UPDATE deliveries SET attempts = attempts + 1, last_status = ?, last_error = ?, "
        "state = ?, next_ms = coalesce(?, next_ms), done_ms = ? WHERE id = ?",
        (status, error[:MAX_ERROR_CHARS], "pending" if retry_at_ms else "dead", retry_at_ms,
         None if retry_at_ms else now_ms, delivery),
    )  # fmt: skip


def retry(conn: sqlite3.Connection, uid: str, now_ms: int) -> dict[str, Any] | None:
    """Make a dead delivery pending again, due now, with its attempts counted afresh."""
    changed = conn.execute(
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = ?, done_ms = NULL "
        "WHERE uid = ? AND state = 'dead'",
        (now_ms, uid),
    ).rowcount
    return entry(conn, uid) if changed else None


_COLUMNS: Final = (
    "d.id, d.uid, d.rule, s.signal, d.match, d.state, d.attempts, d.next_ms, d.created_ms, "
    "d.done_ms, d.last_status, d.last_error, d.body"
)


def _entry(row: tuple[Any, ...], *, body: bool) -> dict[str, Any]:
    names = ("row", "id", "rule", "signal", "match", "state", "attempts", "next_ms",
             "created_ms", "done_ms", "last_status", "last_error")  # fmt: skip
    out = dict(zip(names, row[:-1], strict=True))
    if body:
        out["body"] = orjson.loads(row[-1])
    return out


def entry(conn: sqlite3.Connection, uid: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM deliveries d JOIN signals s ON s.ref = d.signal WHERE d.uid = ?",
        (uid,),
    ).fetchone()
    return None if row is None else _entry(row, body=True)


def page(
    conn: sqlite3.Connection, *, state: str | None, before: int | None, limit: int
) -> dict[str, Any]:
    """Deliveries newest first (in a state, if given); ``next`` continues below the last."""
    clauses = ["d.id < :before"]
    params: dict[str, object] = {"before": 2**62 if before is None else before}
    if state is not None:
        clauses.append("d.state = :state")
        params["state"] = state
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM deliveries d JOIN signals s ON s.ref = d.signal "
        f"WHERE {' AND '.join(clauses)} ORDER BY d.id DESC LIMIT :limit",
        params | {"limit": limit + 1},
    ).fetchall()
    shown = [_entry(r, body=False) for r in rows[:limit]]
    return {"deliveries": shown, "next": shown[-1]["row"] if len(rows) > limit else None}


def dead_since(conn: sqlite3.Connection, since_ms: int, limit: int = 100) -> list[dict[str, Any]]:
    """Deliveries that went dead at since_ms or later, in that order (to be logged)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM deliveries d JOIN signals s ON s.ref = d.signal "
        "WHERE d.state = 'dead' AND d.done_ms >= ? ORDER BY d.done_ms, d.id LIMIT ?",
        (since_ms, limit),
    ).fetchall()
    return [_entry(r, body=False) for r in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Deliveries waiting or given up on, by state (delivered ones are not counted)."""
    found = dict(
        conn.execute(
            "SELECT state, count(*) FROM deliveries WHERE state IN ('held', 'pending', 'dead') "
            "GROUP BY state"
        ).fetchall()
    )
    return {state: int(found.get(state, 0)) for state in ("held", "pending", "dead")}


def prune(conn: sqlite3.Connection, before_ms: int) -> int:
    """Forget deliveries delivered or dead before before_ms."""
    return conn.execute(
        "DELETE FROM deliveries WHERE state IN ('delivered', 'dead') AND done_ms < ?",
        (before_ms,),
    ).rowcount


# ---- sending -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    status: int | None
    error: str


async def send(
    session: aiohttp.ClientSession, rule: WebhookRule, delivery: Delivery, now_s: int,
    timeout_s: float,
) -> Attempt:  # fmt: skip
    """POST one delivery, signed now; never raises for the receiver's failures."""
    headers = {
        "Content-Type": "application/json",
        EVENT_HEADER: "match",
        DELIVERY_HEADER: delivery.uid,
        SIGNATURE_HEADER: signature(rule.secret, delivery.body, now_s),
    }
    try:
        async with session.post(
            rule.url, data=delivery.body, headers=headers, allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:  # fmt: skip
            await response.read()
            if 200 <= response.status < 300:
                return Attempt(True, response.status, "")
            return Attempt(False, response.status, f"HTTP {response.status} {response.reason}")
    except TimeoutError:
        return Attempt(False, None, f"no answer within {timeout_s:g} s")
    except aiohttp.ClientError as e:
        return Attempt(False, None, f"{type(e).__name__}: {e}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went, and for a failure when to try again (None: it is dead)."""

    delivery: int
    attempt: Attempt
    retry_at_ms: int | None


def record(conn: sqlite3.Connection, outcomes: Sequence[Outcome], now_ms: int) -> None:
    for o in outcomes:
        if o.attempt.ok:
            delivered(conn, o.delivery, now_ms, o.attempt.status or 200)
        else:
            failed(conn, o.delivery, now_ms, status=o.attempt.status, error=o.attempt.error,
                   retry_at_ms=o.retry_at_ms)  # fmt: skip


def rules_json(rules: Mapping[str, WebhookRule]) -> list[dict[str, Any]]:
    """The configured rules as the API shows them (never the secret)."""
    return [
        {"name": r.name, "url": r.url, "labels": list(r.labels), "lists": list(r.lists),
         "types": list(r.types), "min_confirmations": r.min_confirmations}
        for r in rules.values()
    ]  # fmt: skip
