"""One batch of match events, written in one transaction: ``flush``.

In order: the signals' counts, the log rows, the flood buckets; then the flood rule over
the signals of the batch (a signal that floods is quarantined before its actions are
decided, so the batch that tips it over is already held); then each event's actions --
a webhook delivery per rule it passes (pending, or held if its signal is quarantined, at
most ``held_max`` held per signal), and a sighting for a signal's first qualifying match.

Pure apart from the connection: the time, this member's identity, the rules and a
generator of delivery ids come in ``FlushContext``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from node.config import WebhookRule
from node.moderation import matchlog, quarantine, sightings, webhooks
from node.moderation.db import Transaction
from node.moderation.events import MatchEvent
from node.moderation.quarantine import Flood, FloodRule


@dataclass(frozen=True, slots=True)
class FlushContext:
    now_ms: int
    identity: str | None  # this member's (None: not known yet; no sightings)
    node: str  # this node's name, in webhook bodies
    rules: Sequence[WebhookRule]
    flood: FloodRule
    sighting_labels: Collection[str]
    held_max: int
    quarantined: Collection[str]  # signal ids quarantined before this batch
    uid: Callable[[], str]  # a new delivery id


@dataclass(frozen=True, slots=True)
class FlushResult:
    last_id: int
    logged: int
    floods: list[Flood]
    deliveries: int  # pending deliveries queued
    held: int  # deliveries held for quarantined signals
    held_dropped: int  # beyond held_max
    sightings: int  # signals queued for a sighting


def flush(conn: sqlite3.Connection, events: Sequence[MatchEvent], ctx: FlushContext) -> FlushResult:
    with Transaction(conn):
        refs = matchlog.signal_refs(conn, events)
        last = matchlog.last_id(conn)
        ids = matchlog.append(conn, events, refs, last)
        times: dict[int, list[int]] = {}
        for event in events:
            times.setdefault(refs[event.signal], []).append(event.ts)
        quarantine.count(conn, ctx.flood, times)
        floods = quarantine.floods(conn, ctx.flood, times, ctx.now_ms)
        for flood in floods:
            quarantine.quarantine(conn, flood, ctx.now_ms)
        sightings.hold(conn, [f.ref for f in floods])
        held_ids = {*ctx.quarantined, *(f.signal for f in floods)}
        queued, held, dropped = _deliveries(conn, events, ids, refs, held_ids, ctx)
        wanted = {
            refs[e.signal]: "held" if e.signal in held_ids else "pending"
            for e in events
            if sightings.wants_sighting(e, ctx.sighting_labels, ctx.identity)
        }
        added = sightings.enqueue(conn, [(r, s, ctx.now_ms) for r, s in wanted.items()])
    return FlushResult(ids[-1] if ids else last, len(ids), floods, queued, held, dropped,
                       added)  # fmt: skip


def _deliveries(
    conn: sqlite3.Connection,
    events: Sequence[MatchEvent],
    ids: Sequence[int],
    refs: dict[str, int],
    held_ids: set[str],
    ctx: FlushContext,
) -> tuple[int, int, int]:
    """Queue each event's webhook deliveries: (pending, held, dropped beyond held_max)."""
    rows: list[webhooks.DeliveryRow] = []
    room: dict[int, int] = {}
    dropped: dict[int, int] = {}
    for event, match in zip(events, ids, strict=True):
        ref = refs[event.signal]
        held = event.signal in held_ids
        for rule in ctx.rules:
            if not rule.applies(event.labels, event.list_name, event.signal_type, event.confirms):
                continue
            if held:
                if ref not in room:
                    room[ref] = quarantine.held_room(conn, ref, ctx.held_max)
                if room[ref] <= 0:
                    dropped[ref] = dropped.get(ref, 0) + 1
                    continue
                room[ref] -= 1
            uid = ctx.uid()
            body = webhooks.payload(uid, rule.name, event, match, ctx.node, held=held)
            rows.append((uid, rule.name, ref, match, body, "held" if held else "pending",
                         ctx.now_ms))  # fmt: skip
    webhooks.enqueue(conn, rows)
    kept: dict[int, int] = {}
    for row in rows:
        if row[5] == "held":
            kept[row[2]] = kept.get(row[2], 0) + 1
    for ref in kept.keys() | dropped.keys():
        quarantine.hold(conn, ref, kept=kept.get(ref, 0), dropped=dropped.get(ref, 0))
    n_held = sum(kept.values())
    return len(rows) - n_held, n_held, sum(dropped.values())
