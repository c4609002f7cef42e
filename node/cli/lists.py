"""``hashmesh lists …``: the member's local lists (node.store.lists), and sharing a safelisted
hash with the federation as a dispute.

Like the commands that change the federation's list, these work whether or not the node
runs: through its local API when it does (the node's match indexes change at once), else
on ``HOME/lists.db`` directly under the home's lock (``node.cli.backend.lock_or_api``), and
the next ``hashmesh serve`` indexes what was written. Both routes answer in the local API's
JSON shapes. ``dispute`` signs opinions and searches the federation's index, so it needs the
running node.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import click

from node.cli.backend import LocalApi, lock_or_api
from node.cli.common import emit, home_option, json_option
from node.clock import now_ms
from node.config import load_config
from node.errors import ConfigError, InputError
from node.home import NodeHome
from node.interop.formats import HashEntry, parse_hash, parse_hash_list
from node.matchpolicy import MatchPolicy
from node.store.lists import LISTS_FILE, ListStore, check_entry

OFFLINE_USER = "cli"  # who changed a list when no node ran


class ListsRoute(Protocol):
    def call(self, method: str, path: str, body: Any = None) -> Any: ...


class OfflineLists:
    """The local API's list routes, answered from HOME/lists.db (no node runs)."""

    def __init__(self, store: ListStore, policy: MatchPolicy) -> None:
        self.store = store
        self.policy = policy

    def call(self, method: str, path: str, body: Any = None) -> Any:
        parts = urllib.parse.urlsplit(path)
        segments = [urllib.parse.unquote(p) for p in parts.path.split("/")[3:]]  # /v1/lists/…
        query = dict(urllib.parse.parse_qsl(parts.query))
        name = segments[0] if segments else None
        action = segments[1] if len(segments) > 1 else None
        if name is None:
            if method == "POST":
                return self.store.create(body["name"], body["kind"], body.get("note"),
                                         by=OFFLINE_USER, now_ms=now_ms()).to_json()  # fmt: skip
            return {"lists": [m.to_json() for m in self.store.lists()]}
        if action is None and method == "DELETE":
            return {"list": self.store.delete(name).to_json(), "deleted": True}
        if action is None:
            limit, offset = int(query.get("limit", 100)), int(query.get("offset", 0))
            found, entries = self.store.entries(name, limit=limit, offset=offset)
            return {"list": found.to_json(), "limit": limit, "offset": offset,
                    "entries": [e.to_json() for e in entries]}  # fmt: skip
        if action in ("enable", "disable"):
            return {"list": self.store.set_enabled(name, action == "enable").to_json()}
        if action == "entries" and method == "POST":
            return self._add(name, body["entries"])
        if action == "entries":
            wanted = [(e["type"], e["value"]) for e in body["entries"]]
            found, removed, missing = self.store.remove_entries(name, wanted)
            return {"list": found.to_json(), "removed": len(removed),
                    "missing": [{"type": t, "value": v} for t, v in missing]}  # fmt: skip
        raise ConfigError(
            "a dispute is signed and searched for in the federation's index: start the node "
            "('hashmesh serve') and run this again"
        )

    def _add(self, name: str, raw: Sequence[dict[str, Any]]) -> dict[str, Any]:
        found = self.store.get(name)
        safelist = found.kind == "safelist"
        checked = []
        for i, e in enumerate(raw):
            radius = self.policy.list_radius(name, e["type"]) if e["type"] else 0
            try:
                checked.append(check_entry(e["type"], e["value"], e.get("note"),
                                           safelist=safelist, radius=radius))  # fmt: skip
            except InputError as error:
                where = f"entry {i + 1}: " if len(raw) > 1 else ""
                raise InputError(f"{where}{error}", title=error.title) from error
        found, added, skipped = self.store.add_entries(name, checked, by=OFFLINE_USER,
                                                       now_ms=now_ms())  # fmt: skip
        return {"list": found.to_json(), "added": len(added), "skipped": skipped,
                "entries": [e.to_json() for e in added]}  # fmt: skip


@contextlib.contextmanager
def lists_route(home: Path) -> Iterator[ListsRoute]:
    """The running node's API, or HOME/lists.db under the home's lock."""
    node_home = NodeHome(_home(home)).require()
    route = lock_or_api(node_home)
    if isinstance(route, LocalApi):
        yield route
        return
    policy = load_config(node_home.path).match
    with route, ListStore.open(node_home.path / LISTS_FILE) as store:
        yield OfflineLists(store, policy)


def _home(home: Path) -> Path:
    """--home given to the group ('hashmesh lists --home DIR add …') counts for the command."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.parent is None or "home" not in ctx.parent.params:
        return home
    if ctx.get_parameter_source("home") is click.core.ParameterSource.DEFAULT:
        return Path(ctx.parent.params["home"])
    return home


def _path(name: str, *rest: str) -> str:
    return "/".join(["/v1/lists", urllib.parse.quote(name, safe=""), *rest])


def _list_line(found: dict[str, Any]) -> str:
    state = "on " if found["enabled"] else "off"
    note = f"  ({found['note']})" if found.get("note") else ""
    return f"{state} {found['kind']:8s} {found['name']}  {found['entries']:,} entries{note}"


def _entry_line(entry: dict[str, Any]) -> str:
    note = f"  {entry['note']}" if entry.get("note") else ""
    return f"{entry['type']}:{entry['value']}{note}"


@click.group(invoke_without_command=True)
@home_option
@json_option
@click.pass_context
def lists(ctx: click.Context, home: Path, as_json: bool) -> None:
    """This member's local lists: hashes to match that never leave the node (under review, or
    from another source) and safelists of false positives that suppress federation matches
    here. Without a subcommand: every list, switched on or off, with its size."""
    if ctx.invoked_subcommand is not None:
        return
    with lists_route(home) as route:
        found = route.call("GET", "/v1/lists")["lists"]
    emit({"lists": found}, as_json, "\n".join(map(_list_line, found)) or "no local lists")


@lists.command("create")
@click.argument("name")
@click.option("--safelist", is_flag=True, help="A safelist: its entries suppress federation "
              "matches here (default: a match list, whose entries are matched).")  # fmt: skip
@click.option("--note", default=None, help="What the list is for.")
@home_option
@json_option
def lists_create(name: str, safelist: bool, note: str | None, home: Path, as_json: bool) -> None:
    """Create the local list NAME (lowercase letters, digits, '.', '_', '-')."""
    body = {"name": name, "kind": "safelist" if safelist else "match", "note": note}
    with lists_route(home) as route:
        found = route.call("POST", "/v1/lists", body)
    what = "safelist" if found["kind"] == "safelist" else "match list"
    emit(found, as_json, f"created {what} {found['name']}")


@lists.command("delete")
@click.argument("name")
@home_option
@json_option
def lists_delete(name: str, home: Path, as_json: bool) -> None:
    """Delete the local list NAME and every entry in it."""
    with lists_route(home) as route:
        answer = route.call("DELETE", _path(name))
    emit(answer, as_json, f"deleted {name} ({answer['list']['entries']:,} entries)")


@lists.command("show")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@home_option
@json_option
def lists_show(name: str, limit: int, offset: int, home: Path, as_json: bool) -> None:
    """The local list NAME and its entries, newest first."""
    with lists_route(home) as route:
        answer = route.call("GET", _path(name) + f"?limit={limit}&offset={offset}")
    lines = [_list_line(answer["list"]), *map(_entry_line, answer["entries"])]
    emit(answer, as_json, "\n".join(lines))


@lists.command("add")
@click.argument("name")
@click.argument("hashes", nargs=-1, metavar="[TYPE:VALUE]...")
@click.option("--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="A hash list: TYPE:VALUE lines, or csv with signal_type "
              "and signal_value columns (repeatable).")  # fmt: skip
@click.option("--note", default=None, help="A note kept with each entry added.")
@home_option
@json_option
def lists_add(
    name: str,
    hashes: tuple[str, ...],
    files: tuple[Path, ...],
    note: str | None,
    home: Path,
    as_json: bool,
) -> None:
    """Add hashes to the local list NAME; one already in it is skipped. Every hash is checked
    before any is added."""
    entries = _entries(hashes, files)
    if not entries:
        raise click.UsageError("give TYPE:VALUE hashes or --file")
    added = skipped = 0
    with lists_route(home) as route:
        for start in range(0, len(entries), 10_000):
            body = {"entries": [{"type": e.type, "value": e.value, "note": note}
                                for e in entries[start : start + 10_000]]}  # fmt: skip
            answer = route.call("POST", _path(name, "entries"), body)
            added, skipped = added + answer["added"], skipped + answer["skipped"]
    data = {"list": answer["list"], "added": added, "skipped": skipped}
    emit(data, as_json, f"{name}: added {added:,}, skipped {skipped:,} already listed")


def _entries(hashes: Sequence[str], files: Sequence[Path]) -> list[HashEntry]:
    found = [parse_hash(h, "TYPE:VALUE") for h in hashes]
    for path in files:
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read it as UTF-8 text: {e}") from e
        found += parse_hash_list(text, str(path))
    return found


@lists.command("remove")
@click.argument("name")
@click.argument("hashes", nargs=-1, required=True, metavar="TYPE:VALUE...")
@home_option
@json_option
def lists_remove(name: str, hashes: tuple[str, ...], home: Path, as_json: bool) -> None:
    """Remove hashes from the local list NAME."""
    wanted = [parse_hash(h, "TYPE:VALUE") for h in hashes]
    body = {"entries": [{"type": e.type, "value": e.value} for e in wanted]}
    with lists_route(home) as route:
        answer = route.call("DELETE", _path(name, "entries"), body)
    missing = "".join(f"\n  not in {name}: {m['type']}:{m['value']}" for m in answer["missing"])
    emit(answer, as_json, f"{name}: removed {answer['removed']:,}{missing}")


def _switch(name: str, home: Path, as_json: bool, action: str) -> None:
    with lists_route(home) as route:
        answer = route.call("POST", _path(name, action))
    emit(answer, as_json, _list_line(answer["list"]))


@lists.command("enable")
@click.argument("name")
@home_option
@json_option
def lists_enable(name: str, home: Path, as_json: bool) -> None:
    """Switch the local list NAME on: it matches (a safelist: suppresses) again."""
    _switch(name, home, as_json, "enable")


@lists.command("disable")
@click.argument("name")
@home_option
@json_option
def lists_disable(name: str, home: Path, as_json: bool) -> None:
    """Switch the local list NAME off: it neither matches nor suppresses; entries are kept."""
    _switch(name, home, as_json, "disable")


@lists.command("dispute")
@click.argument("name")
@click.argument("hash_text", metavar="TYPE:VALUE")
@click.option("--note", default=None, help="Why, for the other members (signed and gossiped).")
@home_option
@json_option
def lists_dispute(name: str, hash_text: str, note: str | None, home: Path, as_json: bool) -> None:
    """Share a hash of safelist NAME with the federation: sign a dispute opinion on every
    federation signal within the safelist's radius of it (skipping this member's own and
    those it already disputes). Needs the running node; the hash itself stays here."""
    entry = parse_hash(hash_text, "TYPE:VALUE")
    body = {"type": entry.type, "value": entry.value, "note": note}
    with lists_route(home) as route:
        answer = route.call("POST", _path(name, "dispute"), body)
    lines = [f"disputed {len(answer['disputed'])} signal(s) within {answer['radius']} bits"]
    lines += [f"  {d['signal']}  distance {d['distance']}  opinion {d['id']}"
              for d in answer["disputed"]]  # fmt: skip
    lines += [f"  skipped {s['signal']}: {s['reason']}" for s in answer["skipped"]]
    emit(answer, as_json, "\n".join(lines))


COMMANDS: tuple[click.Command, ...] = (lists,)
