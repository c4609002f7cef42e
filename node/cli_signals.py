"""CLI commands about signals: add, retract, opinion, hash, match, signals.

Registered on the ``hashmesh`` group by ``node.cli`` (one CLI, one error boundary). Writes go
through ``node.backend``: the running node's local API, or the store itself when no node runs.
Every input is validated before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from node.backend import Backend, LocalApi, SignalQuery, now_ms, open_backend
from node.cli import EXIT_NO, EXIT_OK, emit, home_option, json_option
from node.errors import InputError
from node.formats import HashEntry, parse_expiry, parse_hash
from node.home import NodeHome
from protocol.bodies import OpinionBody, RetractBody, SignalBody
from protocol.errors import RemoteProtocolError
from protocol.labels import check_in_taxonomy, normalise_labels
from protocol.signal_types import SIGNAL_TYPES

if TYPE_CHECKING:
    from node.hashing import MediaHashes

FILE_TYPES = ("pdq", "md5")  # what `add FILE` contributes by default (as POST /v1/signals does)
IMAGE_TYPES = ("pdq", "phash", "dhash", "md5", "sha1", "sha256")

files_argument = click.argument(
    "files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
hash_option = click.option(
    "--hash", "hashes", multiple=True, metavar="TYPE:VALUE",
    help=f"A hash instead of a file (repeatable); TYPE is one of {', '.join(SIGNAL_TYPES)}.",
)  # fmt: skip
label_option = click.option(
    "--label", "labels", multiple=True, help="A label such as entity:NAME (repeatable)."
)


def hash_file(path: Path) -> MediaHashes:
    """Every hash of an image file (node.hashing), or MediaError naming the file."""
    from node.errors import MediaError
    from node.hashing import hash_image

    try:
        return hash_image(path.read_bytes())
    except MediaError as e:
        raise MediaError(f"{path}: {e}") from e


def _labels(home: NodeHome, labels: Sequence[str]) -> tuple[str, ...]:
    """--label values in record form, admitted by the federation's taxonomy."""
    taxonomy = home.federation().taxonomy
    try:
        checked = normalise_labels(labels)
        check_in_taxonomy(checked, taxonomy)
    except RemoteProtocolError as e:
        raise InputError(f"--label: {e.diagnostics()}") from e
    return checked


# ---- add --------------------------------------------------------------------------------


@click.command()
@home_option
@files_argument
@hash_option
@click.option(
    "--type", "types", multiple=True, type=click.Choice(IMAGE_TYPES),
    help="Which hashes of each FILE to contribute (repeatable; default pdq and md5).",
)  # fmt: skip
@label_option
@click.option("--note", default=None, help="A note for the other members (1-1000 chars).")
@click.option("--expires", default=None, metavar="DATE|DURATION", help="2026-12-31 or 30d.")
@json_option
def add(
    home: Path,
    files: tuple[Path, ...],
    hashes: tuple[str, ...],
    types: tuple[str, ...],
    labels: tuple[str, ...],
    note: str | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Contribute signals: the hashes of each image FILE, or each --hash TYPE:VALUE.

    A hash this member already lists as an active signal is not signed again.
    """
    if not files and not hashes:
        raise click.UsageError("give an image FILE or --hash TYPE:VALUE")
    node_home = NodeHome(home).require()
    entries = [parse_hash(h) for h in hashes] + _file_entries(files, types or FILE_TYPES)
    checked, expiry = _labels(node_home, labels), parse_expiry(expires, now_ms())
    bodies = [SignalBody(e.type, e.value, checked, note or None, expiry) for e in entries]
    with open_backend(node_home) as backend:
        results = [contribute(backend, body) for body in bodies]
    emit({"signals": results}, as_json, "\n".join(_added_line(r) for r in results))


def _file_entries(files: Sequence[Path], types: Sequence[str]) -> list[HashEntry]:
    entries = []
    for path in files:
        hashes = hash_file(path)
        if "pdq" in types and hashes.low_quality:
            click.echo(
                f"warning: {path}: PDQ quality {hashes.pdq_quality} is low; "
                "its PDQ hash may match poorly",
                err=True,
            )
        signals = hashes.as_signals()
        entries += [HashEntry(t, signals[t], (), str(path)) for t in types]
    return entries


def contribute(backend: Backend, body: SignalBody) -> dict[str, Any]:
    """Sign body unless this member already lists that hash; the signal's id either way."""
    existing = backend.find_own_signal(body.type, body.value)
    if existing is not None:
        return {"id": existing, "type": body.type, "value": body.value, "new": False}
    record = backend.author(body)
    return {"id": record["id"], "type": body.type, "value": body.value, "new": True}


def _added_line(result: dict[str, Any]) -> str:
    verb = "added" if result["new"] else "already listed"
    return f"{verb} {result['type']} {result['value']}\n  signal {result['id']}"


# ---- retract, opinion -------------------------------------------------------------------


@click.command()
@home_option
@click.argument("signal_id", metavar="ID")
@click.option("--reason", default=None, help="Why the signal is withdrawn (1-1000 chars).")
@json_option
def retract(home: Path, signal_id: str, reason: str | None, as_json: bool) -> None:
    """Withdraw one of this member's signals (by its record ID)."""
    body = RetractBody(signal_id.strip().lower(), reason=reason or None)
    with open_backend(NodeHome(home).require()) as backend:
        record = backend.author(body)
    emit(record, as_json, f"retracted {body.signal}\n  retraction {record['id']}")


@click.command()
@home_option
@click.argument("signal_id", metavar="ID")
@click.argument("verdict", type=click.Choice(["confirm", "dispute", "seen"]))
@label_option
@click.option("--note", default=None, help="A note for the other members (1-1000 chars).")
@json_option
def opinion(
    home: Path,
    signal_id: str,
    verdict: str,
    labels: tuple[str, ...],
    note: str | None,
    as_json: bool,
) -> None:
    """Give this member's verdict on a signal: confirm, dispute or seen.

    A later opinion on the same signal replaces this member's earlier one.
    """
    node_home = NodeHome(home).require()
    body = OpinionBody(signal_id.strip().lower(), verdict, _labels(node_home, labels), note)
    with open_backend(node_home) as backend:
        if backend.signal(body.signal) is None:
            raise InputError(f"no signal {body.signal} on this node (check the ID, or sync)")
        record = backend.author(body)
    emit(record, as_json, f"{verdict} on {body.signal}\n  opinion {record['id']}")


# ---- hash, match ------------------------------------------------------------------------


@click.command("hash")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@json_option
def hash_command(files: tuple[Path, ...], as_json: bool) -> None:
    """Print every hash of each image FILE (PDQ with quality, pHash, dHash, MD5, SHA-1,
    SHA-256). Runs locally; needs no node home."""
    results = [_hash_json(path, hash_file(path)) for path in files]
    lines = []
    for r in results:
        lines.append(f"{r['file']}  ({r['width']}x{r['height']}, PDQ quality {r['pdq_quality']})")
        lines += [f"  {kind}:{value}" for kind, value in r["hashes"].items()]
    emit({"files": results}, as_json, "\n".join(lines))


def _hash_json(path: Path, h: MediaHashes) -> dict[str, Any]:
    return {"file": str(path), "hashes": h.as_signals(), "pdq_quality": h.pdq_quality,
            "low_quality": h.low_quality, "width": h.width, "height": h.height}  # fmt: skip


@click.command()
@home_option
@files_argument
@hash_option
@click.option("--radius", type=click.IntRange(min=0), default=None, help="Hamming radius.")
@json_option
def match(
    home: Path, files: tuple[Path, ...], hashes: tuple[str, ...], radius: int | None, as_json: bool
) -> int:
    """Look images or hashes up in the federation's list, with provenance.

    Needs the running node. Exit status like grep: 0 when something matched, 1 when nothing
    did, 2 on error.
    """
    if not files and not hashes:
        raise click.UsageError("give an image FILE or --hash TYPE:VALUE")
    groups = [(f"--hash {h}", [parse_hash(h)]) for h in hashes]
    groups += [(str(path), _image_queries(path)) for path in files]
    api = LocalApi.for_home(NodeHome(home).require())
    queries = [{"type": e.type, "value": e.value} for _, entries in groups for e in entries]
    body: dict[str, Any] = {"hashes": queries} | ({} if radius is None else {"radius": radius})
    answer = api.call("POST", "/v1/match", body)
    results = _grouped(groups, answer["results"])
    emit({"matched": answer["matched"], "results": results}, as_json, _match_text(results))
    return EXIT_OK if answer["matched"] else EXIT_NO


def _image_queries(path: Path) -> list[HashEntry]:
    signals = hash_file(path).as_signals()
    return [HashEntry(kind, value, (), str(path)) for kind, value in signals.items()]


def _grouped(
    groups: Sequence[tuple[str, Sequence[HashEntry]]], results: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    grouped, at = [], 0
    for name, entries in groups:
        mine = results[at : at + len(entries)]
        at += len(entries)
        hits = [hit for result in mine for hit in result["hits"]]
        grouped.append({"query": name, "matched": bool(hits), "hits": hits})
    return grouped


def _match_text(results: Sequence[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        count = len(result["hits"])
        lines.append(f"{result['query']}: " + (f"{count} match(es)" if count else "no match"))
        lines += [f"  {_hit_line(hit)}" for hit in result["hits"]]
    return "\n".join(lines)


def _hit_line(hit: dict[str, Any]) -> str:
    tallies = hit["tallies"]
    return (
        f"{hit['type']} distance {hit['distance']}  from {hit['member_name'] or hit['member']}"
        f"  labels {' '.join(hit['labels']) or '-'}  confirm {tallies['confirm']}"
        f" dispute {tallies['dispute']} seen {tallies['seen']}  signal {hit['id']}"
    )


# ---- signals ----------------------------------------------------------------------------


@click.command()
@home_option
@click.option("--type", "kind", type=click.Choice(list(SIGNAL_TYPES)), default=None)
@click.option("--label", default=None, help="Only signals with this label.")
@click.option("--member", default=None, help="Only this member's signals (name or key).")
@click.option("--active/--all", default=True, show_default=True, help="Active signals only.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@json_option
def signals(
    home: Path,
    kind: str | None,
    label: str | None,
    member: str | None,
    active: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List signals, newest first, with contributor, labels, status and opinion tallies."""
    with open_backend(NodeHome(home).require()) as backend:
        identity = None if member is None else _member_identity(backend, member)
        query = SignalQuery(kind, label, identity, True if active else None, limit)
        rows = backend.signals(query)
    emit({"signals": rows}, as_json, "\n".join(_signal_line(r) for r in rows) or "no signals")


def _member_identity(backend: Backend, member: str) -> str:
    for m in backend.members():
        if member in (m["name"], m["identity"], m["key"]):
            return str(m["identity"])
    raise InputError(f"no member named {member!r} (see 'hashmesh federation show')")


def _signal_line(row: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(row["ts"]) / 1000))
    tallies = row["tallies"]
    return (
        f"{row['id']}\n  {row['status']:9s} {when}  {row['member_name'] or row['member']}"
        f"  {row['type']}:{row['value']}\n  labels {' '.join(row['labels']) or '-'}"
        f"  confirm {tallies['confirm']} dispute {tallies['dispute']} seen {tallies['seen']}"
    )


COMMANDS: tuple[click.Command, ...] = (add, retract, opinion, hash_command, match, signals)
