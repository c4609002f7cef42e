"""CLI commands that move the list in and out of a node: export and import.

Formats are described in ``node.interop.formats``. ``import`` of signed records (jsonl) goes
through the same verification as sync (``Store.merge``); ``import`` of a hash list signs new
signal records as this member and skips every hash this member already lists as an active
signal, so an
interrupted import can simply be run again. Both work whether or not the node runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from node.cli.backend import Backend, open_backend
from node.cli.common import emit, home_option, json_option
from node.cli.progress import progress_lines, progress_mode, progress_option
from node.cli.signals import contribute, label_option
from node.clock import now_ms
from node.config import load_config
from node.errors import InputError, explain
from node.home import NodeHome
from node.interop.formats import (
    batches,
    csv_text,
    is_record_stream,
    parse_expiry,
    parse_hash_list,
    record_lines,
)
from protocol.authoring import check_body
from protocol.bodies import SignalBody
from protocol.errors import RemoteProtocolError
from protocol.labels import normalise_labels
from protocol.records import decode_record

EXPORT_PAGE = 10_000  # signals per page of the csv export (the local API's largest page)


@contextmanager
def progress(total: int, what: str, show: bool | None, as_json: bool) -> Iterator[Any]:
    """Progress of an import on stderr (``node.cli.progress``); yields advance(n)."""
    mode = progress_mode(show, as_json)
    if mode == "lines":
        with progress_lines("import", show) as update:
            done = [0]

            def advance(n: int) -> None:
                done[0] += n
                update(what, done[0], total)

            update(what, 0, total)
            yield advance
        return
    if mode is None:
        yield lambda n: None
        return
    from rich import progress as rp
    from rich.console import Console

    bar = rp.Progress(
        rp.TextColumn(what), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TimeRemainingColumn(),
        console=Console(stderr=True),
    )  # fmt: skip
    with bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


# ---- export -----------------------------------------------------------------------------


@click.command()
@home_option
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv", "stix"]), default="jsonl",
    show_default=True,
    help="jsonl: every stored signed record (a verifiable backup); csv: active signals; "
    "stix: a STIX 2.1 bundle of every signal, member, opinion and sighting (needs the "
    "'stix' extra: pip install 'hashmesh[stix]').",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write to this file instead of standard output (never over one without --force).",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def export(home: Path, fmt: str, output: Path | None, force: bool) -> None:
    """Export the list: signed records as jsonl, active signals as csv, or STIX 2.1."""
    if output is not None and output.exists() and not force:
        raise InputError(f"{output} exists; refusing to overwrite it (pass --force to replace it)")
    writers = {"jsonl": _write_jsonl, "csv": _write_csv, "stix": _write_stix}
    with open_backend(NodeHome(home).require()) as backend, _sink(output) as sink:
        count = writers[fmt](backend, sink)
    if output is not None:
        what = {"jsonl": "records", "csv": "active signals", "stix": "STIX objects"}[fmt]
        click.echo(f"exported {count} {what} to {output}", err=True)


@contextmanager
def _sink(output: Path | None) -> Iterator[IO[bytes]]:
    if output is None:
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("wb") as f:
        yield f
    tmp.replace(output)  # a complete file or none: never half a backup


def _write_jsonl(backend: Backend, sink: IO[bytes]) -> int:
    count = 0
    for record in backend.records():
        sink.write(record + b"\n")
        count += 1
    return count


def _write_stix(backend: Backend, sink: IO[bytes]) -> int:
    try:
        from node.interop.stix import stix_bundle
    except ImportError as e:  # pragma: no cover - the extra is installed in tests
        raise InputError("STIX export needs the stix extra: pip install 'hashmesh[stix]'") from e
    federation = backend.federation
    records = (decode_record(line, federation.id) for line in backend.records())
    bundle = stix_bundle(records, federation, now_ms())
    sink.write(bundle.serialize(pretty=False, ensure_ascii=False).encode() + b"\n")
    return len(bundle.objects)


def _write_csv(backend: Backend, sink: IO[bytes]) -> int:
    rows = list(_active_signals(backend))
    for chunk in csv_text(rows):
        sink.write(chunk.encode())
    return len(rows)


def _active_signals(backend: Backend) -> Iterator[dict[str, Any]]:
    from node.store.read import SignalQuery

    offset = 0
    while True:
        page = backend.signals(SignalQuery(active=True, limit=EXPORT_PAGE, offset=offset))
        yield from page
        if len(page) < EXPORT_PAGE:
            return
        offset += EXPORT_PAGE


# ---- import -----------------------------------------------------------------------------


@click.command("import")
@home_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@label_option
@click.option("--note", default=None, help="Hash lists: a note on every new signal.")
@click.option("--expires", default=None, metavar="DATE|DURATION", help="Hash lists: expiry.")
@progress_option
@json_option
def import_command(
    home: Path,
    file: Path,
    labels: tuple[str, ...],
    note: str | None,
    expires: str | None,
    show_progress: bool | None,
    as_json: bool,
) -> None:
    """Import signed records (jsonl) or a hash list (csv, or TYPE:VALUE lines).

    Signed records are verified exactly as in sync; a hash list is signed as this member,
    skipping hashes it already lists, so an interrupted import can be run again. --label,
    --note and --expires apply to hash lists only.
    """
    node_home = NodeHome(home).require()
    data = file.read_bytes()
    shown = (show_progress, as_json)
    if is_record_stream(data):
        result = _import_records(node_home, record_lines(data), shown)
    else:
        bodies = _hash_list_bodies(node_home, data, str(file), labels, note, expires)
        result = _import_hashes(node_home, bodies, shown)
    emit(result, as_json, _import_text(result))
    if result.get("rejected_examples"):
        first = result["rejected_examples"][0]
        raise InputError(
            f"{result['counts']['rejected']} record(s) failed verification and were not "
            f"stored; first: line {first['line']}: {first['error']}"
        )


def _import_records(
    home: NodeHome, lines: Sequence[bytes], shown: tuple[bool | None, bool]
) -> dict[str, Any]:
    limits = load_config(home.path).limits
    counts = dict.fromkeys(("accepted", "duplicate", "pending", "rejected"), 0)
    rejected: list[dict[str, Any]] = []
    done = 0
    with open_backend(home) as backend, progress(len(lines), "records", *shown) as advance:
        for batch in batches(lines, limits.max_batch_records, limits.max_request_bytes // 2):
            answer = backend.merge(batch)
            for status, n in answer["counts"].items():
                counts[status] = counts.get(status, 0) + n
            outcomes = answer["outcomes"]
            rejected += [_rejection(o, done) for o in outcomes if o["status"] == "rejected"]
            done += len(batch)
            advance(len(batch))
    return {"format": "jsonl", "records": len(lines), "counts": counts,
            "rejected_examples": rejected[:10]}  # fmt: skip


def _rejection(outcome: dict[str, Any], offset: int) -> dict[str, Any]:
    error = outcome["error"] or {}
    detail = f"{error.get('error', 'rejected')}: {error.get('detail', '')}".rstrip(": ")
    return {"line": offset + int(outcome["index"]) + 1, "status": outcome["status"],
            "error": detail}  # fmt: skip


def _hash_list_bodies(
    home: NodeHome,
    data: bytes,
    source: str,
    labels: Sequence[str],
    note: str | None,
    expires: str | None,
) -> list[SignalBody]:
    """Every entry of a hash list as a signal body, all validated before anything is signed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{source}: not UTF-8 text: {e}") from e
    federation, expiry = home.federation(), parse_expiry(expires, now_ms())
    bodies = []
    for entry in parse_hash_list(text, source):
        try:
            merged = normalise_labels([*labels, *entry.labels])
            body = SignalBody(entry.type, entry.value, merged, note or None, expiry)
            check_body(federation, body)  # what the signing point checks first (4.5)
            bodies.append(body)
        except RemoteProtocolError as e:
            raise InputError(f"{entry.source}: {explain(e, kind=False)}") from e
    return bodies


def _import_hashes(
    home: NodeHome, bodies: Sequence[SignalBody], shown: tuple[bool | None, bool]
) -> dict[str, Any]:
    added: list[str] = []
    unique = {(body.type, body.value): body for body in reversed(bodies)}  # first one wins
    with open_backend(home) as backend, progress(len(bodies), "hashes", *shown) as advance:
        for body in reversed(unique.values()):
            result = contribute(backend, body)
            if result["new"]:
                added.append(result["id"])
            advance(1)
        advance(len(bodies) - len(unique))
    skipped = len(bodies) - len(added)
    return {"format": "hashes", "hashes": len(bodies), "added": len(added), "skipped": skipped,
            "ids": added}  # fmt: skip


def _import_text(result: dict[str, Any]) -> str:
    if result["format"] == "jsonl":
        c = result["counts"]
        return (
            f"{result['records']} records: {c['accepted']} accepted, {c['duplicate']} already "
            f"held, {c['pending']} pending, {c['rejected']} rejected"
        )
    return (
        f"{result['hashes']} hashes: {result['added']} new signals signed, "
        f"{result['skipped']} already listed"
    )


COMMANDS: tuple[click.Command, ...] = (export, import_command)
