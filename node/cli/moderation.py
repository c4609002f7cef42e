"""CLI commands about what the node did with its matches: the match log, webhook deliveries
and flood quarantine (``node.moderation``), read and acted on through the running node's
local API (the moderation database belongs to the node process).

    hashmesh matches [--signal ID] [--since 2h] [--limit N] [--before CURSOR]
    hashmesh webhooks deliveries [--state dead]    hashmesh webhooks retry DELIVERY
    hashmesh quarantine list [--released]          hashmesh quarantine release ID [--drop-held]
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from node.cli.common import api, emit, home_option, json_option
from node.clock import now_ms
from node.errors import InputError
from node.home import NodeHome

_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def since_ms(text: str, now: int) -> int:
    """A time in ms from ``--since``: a duration back from now (``90s``, ``15m``, ``2h``,
    ``7d``) or a time in ms."""
    found = _DURATION.fullmatch(text.strip())
    if found:
        return now - int(found.group(1)) * _UNIT_MS[found.group(2)]
    if text.strip().isdigit():
        return int(text)
    raise InputError(f"--since: a duration (90s, 15m, 2h, 7d) or a time in ms, got {text!r}")


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _get(home: Path, path: str, params: dict[str, Any]) -> Any:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return api(NodeHome(home).require(), "GET", f"{path}?{query}" if query else path)


@click.command()
@home_option
@click.option("--signal", "signal_id", default=None, metavar="ID", help="Only this signal.")
@click.option("--since", default=None, help="Only matches since: 90s, 15m, 2h, 7d, or ms.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--before", type=click.IntRange(1), default=None,
              help="The page after: the cursor 'next' of the page before.")  # fmt: skip
@json_option
def matches(
    home: Path, signal_id: str | None, since: str | None, limit: int, before: int | None,
    as_json: bool,
) -> None:  # fmt: skip
    """The match log: matches this node answered, newest first (time, caller, query, signal,
    distance; "quarantined" when the signal was)."""
    page = _get(home, "/v1/matches", {
        "signal": signal_id, "since": None if since is None else since_ms(since, now_ms()),
        "limit": limit, "before": before})  # fmt: skip
    lines = [
        f"{_when(m['ts'])}  {m['caller']:12s} {m['query']['type']}:{m['query']['value']}\n"
        f"  -> {m['signal']}  distance {'-' if m['distance'] is None else m['distance']}"
        + ("  QUARANTINED" if m["quarantined"] else "")
        for m in page["matches"]
    ]
    counts = page.get("counts")
    if counts:
        lines.insert(
            0, f"{counts['total']} matches of this signal since {_when(counts['first_ms'])}"
        )
    if page["next"] is not None:
        lines.append(f"more: --before {page['next']}")
    emit(page, as_json, "\n".join(lines) or "no matches logged")


@click.group()
def webhooks() -> None:
    """Webhook deliveries of the [[webhooks]] rules in config.toml (README: Webhooks)."""


@webhooks.command("deliveries")
@home_option
@click.option("--state", type=click.Choice(["held", "pending", "delivered", "dead"]),
              default=None, help="Only deliveries in this state (dead: dead letters).")  # fmt: skip
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--before", type=click.IntRange(1), default=None,
              help="The page after: the cursor 'next' of the page before.")  # fmt: skip
@json_option
def webhooks_deliveries(
    home: Path, state: str | None, limit: int, before: int | None, as_json: bool
) -> None:
    """List webhook deliveries, newest first, with attempts and the last error."""
    page = _get(home, "/v1/webhooks/deliveries", {"state": state, "limit": limit,
                                                  "before": before})  # fmt: skip
    lines = [
        f"{d['id']}  {d['state']:9s} rule {d['rule']}  attempts {d['attempts']}  "
        f"created {_when(d['created_ms'])}\n  signal {d['signal']}"
        + (f"\n  last error: {d['last_error']}" if d["last_error"] else "")
        for d in page["deliveries"]
    ]
    counts = page["counts"]
    lines.append(f"held {counts['held']}  pending {counts['pending']}  dead {counts['dead']}")
    if page["next"] is not None:
        lines.append(f"more: --before {page['next']}")
    emit(page, as_json, "\n".join(lines))


@webhooks.command("retry")
@home_option
@click.argument("delivery")
@json_option
def webhooks_retry(home: Path, delivery: str, as_json: bool) -> None:
    """Send a dead delivery again (its attempts start afresh)."""
    found = api(NodeHome(home).require(), "POST", f"/v1/webhooks/deliveries/{delivery}/retry")
    emit(found, as_json, f"delivery {found['id']} is pending again")


@click.group()
def quarantine() -> None:
    """Signals quarantined for a flood of matches: matched and logged, their actions held."""


@quarantine.command("list")
@home_option
@click.option("--released", is_flag=True, help="Also the signals released since.")
@json_option
def quarantine_list(home: Path, released: bool, as_json: bool) -> None:
    """List quarantined signals: since when, the matches that tripped the rule, actions held."""
    found = _get(home, "/v1/quarantine", {"released": "true" if released else None})
    lines = [_quarantine_line(q) for q in found["quarantine"]]
    emit(found, as_json, "\n".join(lines) or "no signal is quarantined")


def _quarantine_line(q: dict[str, Any]) -> str:
    line = (
        f"{q['signal']}  {q['state']} since {_when(q['since_ms'])}\n"
        f"  {q['recent']} matches in the window, {q['baseline']} in the baseline before it; "
        f"held {q['held']} deliveries ({q['held_dropped']} dropped)"
    )
    if q["released_ms"]:
        line += f"; released by {q['released_by']} {_when(q['released_ms'])}"
    return line


@quarantine.command("release")
@home_option
@click.argument("signal_id", metavar="ID")
@click.option("--drop-held", is_flag=True, help="Drop the held actions instead of sending them.")
@json_option
def quarantine_release(home: Path, signal_id: str, drop_held: bool, as_json: bool) -> None:
    """Release a quarantined signal: its held webhook deliveries and sighting go out (or are
    dropped), and only matches from now on count towards another flood."""
    body = {"held": "drop" if drop_held else "deliver"}
    found = api(NodeHome(home).require(), "POST", f"/v1/quarantine/{signal_id}/release", body)
    what = "dropped" if drop_held else f"{found['deliveries_released']} deliveries released"
    emit(found, as_json, f"{signal_id} released ({what})")


COMMANDS: tuple[click.Command, ...] = (matches, webhooks, quarantine)
