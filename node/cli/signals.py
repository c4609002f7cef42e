"""CLI commands about signals: add, retract, opinion, hash, match, signals.

Registered on the ``hashmesh`` group by ``node.cli.main`` (one CLI, one error boundary). Writes go
through ``node.cli.backend``: the running node's local API, or the store itself when no node runs.
Every input is validated before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from node.cli.backend import Backend, LocalApi, open_backend
from node.cli.common import (
    EXIT_ERROR,
    EXIT_NO,
    EXIT_OK,
    authored,
    emit,
    home_option,
    json_option,
    resolve_member,
)
from node.clock import now_ms
from node.config import LimitsConfig, MediaConfig, NodeConfig, load_config
from node.errors import InputError, MediaError, explain
from node.home import NodeHome
from node.interop.formats import HashEntry, parse_expiry, parse_hash
from node.media import types
from node.media.types import DEFAULT_FILE_TYPES, PICTURE_TYPES, VIDEO_TYPES
from protocol.authoring import check_body
from protocol.bodies import OpinionBody, RetractBody, SignalBody
from protocol.errors import InvalidLabelError, RemoteProtocolError
from protocol.labels import normalise_labels
from protocol.signal_types import SIGNAL_TYPES

if TYPE_CHECKING:
    from node.media.hashing import MediaHashes
    from node.media.video import VideoHashes

# what `add FILE` contributes by default (as POST /v1/signals does), what it can, and which of
# those PDQ's quality gates: all from the type registry (node.media.types)
FILE_TYPES = DEFAULT_FILE_TYPES
IMAGE_TYPES = (*PICTURE_TYPES, *types.FILE_TYPES)
PERCEPTUAL_TYPES = PICTURE_TYPES

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


def hash_file(
    path: Path, config: NodeConfig | None = None, *, dihedral: bool = False
) -> MediaHashes | VideoHashes:
    """Every hash of an image or video file (node.media.media), or MediaError naming it."""
    from node.media.media import hash_media  # the image and video stacks load when used

    limits = config.limits if config else LimitsConfig()
    media = config.media if config else MediaConfig()
    try:
        with path.open("rb") as file:
            return hash_media(file, limits, media, dihedral=dihedral)
    except OSError as e:
        raise MediaError(f"{path}: cannot read: {e.strerror or e}") from e
    except MediaError as e:
        raise MediaError(f"{path}: {e}", status=e.status, title=e.title) from e


def _video_values(path: Path, video: VideoHashes, types: Sequence[str]) -> list[HashEntry]:
    """A video's signals for --type: pdq means its vPDQ values, md5 and sha256 its bytes'."""
    values = {"vpdq": video.vpdq_values(), "md5": (video.md5,), "sha256": (video.sha256,)}
    entries = []
    for kind in dict.fromkeys("vpdq" if t in ("pdq", "vpdq") else t for t in types):
        if kind not in values:
            raise InputError(f"{path} is a video: it yields {', '.join(values)}, not {kind}")
        entries += [HashEntry(kind, v, (), str(path)) for v in values[kind]]
    return entries


def _labels(home: NodeHome, labels: Sequence[str]) -> tuple[str, ...]:
    """--label values in record form (the taxonomy is the signing point's to check)."""
    try:
        return normalise_labels(labels)
    except RemoteProtocolError as e:
        raise InputError(f"--label: {explain(e, kind=False)}") from e


def check_bodies(home: NodeHome, bodies: Sequence[SignalBody], sources: Sequence[str]) -> None:
    """``protocol.authoring.check_body`` -- what the signing point checks first -- for every
    body before any is signed, so that a command signs all of its records or none."""
    federation = home.federation()
    for body, source in zip(bodies, sources, strict=True):
        try:
            check_body(federation, body)
        except InvalidLabelError as e:
            raise InputError(f"--label: {explain(e, kind=False)}") from e
        except RemoteProtocolError as e:
            raise InputError(f"{source}: {explain(e, kind=False)}") from e


# ---- add --------------------------------------------------------------------------------


@click.command()
@home_option
@files_argument
@hash_option
@click.option(
    "--type", "types", multiple=True, type=click.Choice((*IMAGE_TYPES, *VIDEO_TYPES)),
    help="Which hashes of each FILE to contribute (repeatable; default pdq and md5; for a "
    "video pdq means its vpdq values).",
)  # fmt: skip
@label_option
@click.option("--note", default=None, help="A note for the other members (1-1000 chars).")
@click.option("--expires", default=None, metavar="DATE|DURATION", help="2026-12-31 or 30d.")
@click.option(
    "--allow-low-quality", is_flag=True,
    help="List a FILE whose PDQ quality is below [media] min_pdq_quality (a near-blank "
    "image). Featureless values (within the match radius of all bits 0 or 1) are refused "
    "regardless.",
)  # fmt: skip
@json_option
def add(
    home: Path,
    files: tuple[Path, ...],
    hashes: tuple[str, ...],
    types: tuple[str, ...],
    labels: tuple[str, ...],
    note: str | None,
    expires: str | None,
    allow_low_quality: bool,
    as_json: bool,
) -> None:
    """Contribute signals: the hashes of each image FILE, or each --hash TYPE:VALUE.

    A hash this member already lists as an active signal is not signed again. An image too
    featureless to match (PDQ quality below min_pdq_quality) is refused unless
    --allow-low-quality; nothing is written unless every hash can be.
    """
    if not files and not hashes:
        raise click.UsageError("give an image FILE or --hash TYPE:VALUE")
    node_home = NodeHome(home).require()
    config = load_config(node_home.path)
    entries = [parse_hash(h) for h in hashes]
    entries += _file_entries(files, types or FILE_TYPES, config, allow_low_quality)
    checked, expiry = _labels(node_home, labels), parse_expiry(expires, now_ms())
    bodies = [SignalBody(e.type, e.value, checked, note or None, expiry) for e in entries]
    check_bodies(node_home, bodies, [e.source or e.type for e in entries])
    with open_backend(node_home) as backend:
        results = [contribute(backend, body) for body in bodies]
    emit({"signals": results}, as_json, "\n".join(_added_line(r) for r in results))


def _file_entries(
    files: Sequence[Path], types: Sequence[str], config: NodeConfig, allow_low_quality: bool
) -> list[HashEntry]:
    entries = []
    floor = config.media.min_pdq_quality
    for path in files:
        hashes = hash_file(path, config)
        if hashes.kind == "video":
            if not any(f.quality >= floor for f in hashes.frames) and not allow_low_quality:
                raise InputError(
                    f"{path}: every hashed frame has PDQ quality below min_pdq_quality {floor}: "
                    "the video is too featureless to list; add --allow-low-quality to list it"
                )
            entries += _video_values(path, hashes, types)
            continue
        if set(types) & set(PERCEPTUAL_TYPES) and hashes.is_low_quality(floor):
            if not allow_low_quality:
                raise InputError(
                    f"{path}: PDQ quality {hashes.pdq_quality} is below min_pdq_quality "
                    f"{floor}: the image is too featureless to list (it would match other "
                    "near-blank images); add --allow-low-quality to list it anyway"
                )
            click.echo(f"warning: {path}: PDQ quality {hashes.pdq_quality} is low", err=True)
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
        record = authored(backend.author(body))
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
        record = authored(backend.author(body))
    emit(record, as_json, f"{verdict} on {body.signal}\n  opinion {record['id']}")


# ---- hash, match ------------------------------------------------------------------------


@click.command("hash")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@json_option
def hash_command(files: tuple[Path, ...], as_json: bool) -> None:
    """Print every hash of each image FILE (PDQ with quality, pHash, dHash, MD5, SHA-1,
    SHA-256, SHA-512) or video FILE (vPDQ, a frame a second, MD5, SHA-256). Runs locally with
    the default limits; needs no node home."""
    results = [_hash_json(path, hash_file(path)) for path in files]
    lines = []
    for r in results:
        if r["kind"] == "video":
            lines.append(f"{r['file']}  (video {r['width']}x{r['height']}, {r['frames']} frames "
                         f"hashed, {r['usable_frames']} usable)")  # fmt: skip
            lines += [f"  {kind}:{value}" for kind in ("md5", "sha256")
                      for value in [r["hashes"][kind]]]  # fmt: skip
            lines += [f"  vpdq:{value}" for value in r["hashes"]["vpdq"]]
            continue
        lines.append(f"{r['file']}  ({r['width']}x{r['height']}, PDQ quality {r['pdq_quality']})")
        lines += [f"  {kind}:{value}" for kind, value in r["hashes"].items()]
    emit({"files": results}, as_json, "\n".join(lines))


def _hash_json(path: Path, h: MediaHashes | VideoHashes) -> dict[str, Any]:
    if h.kind == "video":
        floor = MediaConfig().min_pdq_quality
        return {"file": str(path), "kind": "video", "hashes": {"md5": h.md5, "sha256": h.sha256,
                "vpdq": list(h.vpdq_values())}, "frames": len(h.frames),
                "usable_frames": sum(f.quality >= floor for f in h.frames),
                "duration_ms": h.duration_ms, "width": h.width, "height": h.height}  # fmt: skip
    return {"file": str(path), "kind": "image", "hashes": h.as_signals(),
            "pdq_quality": h.pdq_quality, "low_quality": h.low_quality, "width": h.width,
            "height": h.height}  # fmt: skip


@click.command()
@home_option
@files_argument
@hash_option
@click.option("--radius", type=click.IntRange(min=0), default=None, help="Hamming radius.")
@click.option(
    "--dihedral", is_flag=True,
    help="Also match each image FILE turned (90, 180, 270 degrees) and mirrored.",
)  # fmt: skip
@click.option(
    "--min-confirmations",
    type=click.IntRange(min=0),
    default=None,
    help="Only signals confirmed by this many other members (overrides [match]).",
)
@click.option(
    "--max-dispute-share",
    type=click.FloatRange(0, 100),
    default=None,
    help="Drop signals disputed by more than this % of their opinions.",
)
@click.option(
    "--ignore-member",
    "ignore_members",
    multiple=True,
    help="Drop this member's signals (name or key; repeatable).",
)
@click.option("--list", "lists", multiple=True,
              help="Use only these local lists (repeatable).")  # fmt: skip
@json_option
def match(
    home: Path,
    files: tuple[Path, ...],
    hashes: tuple[str, ...],
    radius: int | None,
    dihedral: bool,
    min_confirmations: int | None,
    max_dispute_share: float | None,
    ignore_members: tuple[str, ...],
    lists: tuple[str, ...],
    as_json: bool,
) -> int:
    """Look images, videos or hashes up in the federation's list, with provenance.

    Needs the running node. Each FILE and --hash is answered on its own: a file that is
    neither an image nor a video is an error for that file, and a near-blank image is
    reported as too featureless to match. A video is matched by vPDQ against listed videos
    and frame by frame against listed images; an image is also looked for in the frames of
    listed videos. Hits of this member's local match lists are shown with their list;
    federation hits that the match policy or a safelist suppresses are shown as suppressed,
    with the reason. Exit status like grep: 0 when something matched, 1 when nothing
    did, 2 when any FILE could not be hashed (or on any other error), whatever matched.
    """
    if not files and not hashes:
        raise click.UsageError("give an image FILE or --hash TYPE:VALUE")
    node_home = NodeHome(home).require()
    api = LocalApi.for_home(node_home)
    config = load_config(node_home.path)
    groups = [(f"--hash {h}", [_query(parse_hash(h), None)]) for h in hashes]
    errors: dict[str, str] = {}
    for path in files:
        try:
            h = hash_file(path, config, dihedral=dihedral or config.media.dihedral)
        except MediaError as e:
            errors[str(path)] = str(e)
            groups.append((str(path), []))
            continue
        if h.kind == "video":  # its vPDQ values are matched as one video
            entries = _video_values(path, h, ("vpdq", "md5", "sha256"))
            groups.append((str(path), [_query(e, None) for e in entries]))
            continue
        groups.append((str(path), [_query(HashEntry(k, v), h.pdq_quality)
                                   for k, v in h.as_signals().items()]))  # fmt: skip
        groups += [(f"{path} ({turn})", [_query(HashEntry("pdq", v), h.pdq_quality)])
                   for turn, v in h.dihedral.items()]  # fmt: skip
    queries = [q for _, group in groups for q in group]
    body: dict[str, Any] = {"hashes": queries} | ({} if radius is None else {"radius": radius})
    policy = {
        "min_confirmations": min_confirmations,
        "max_dispute_share": max_dispute_share,
        "ignore_members": list(ignore_members) or None,
        "lists": list(lists) or None,
    }
    body |= {k: v for k, v in policy.items() if v is not None}
    answer = api.call("POST", "/v1/match", body) if queries else {"results": []}
    results = _grouped(groups, answer["results"], errors)
    matched = any(r["matched"] for r in results)
    data = {"matched": matched, "errors": len(errors), "results": results}
    emit(data, as_json, _match_text(results))
    return EXIT_ERROR if errors else EXIT_OK if matched else EXIT_NO


def _query(entry: HashEntry, quality: int | None) -> dict[str, Any]:
    """A match query; a perceptual hash of a file carries the file's PDQ quality."""
    query: dict[str, Any] = {"type": entry.type, "value": entry.value}
    if quality is not None and entry.type in PERCEPTUAL_TYPES:
        query["quality"] = quality
    return query


def _grouped(
    groups: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    results: Sequence[dict[str, Any]],
    errors: dict[str, str],
) -> list[dict[str, Any]]:
    grouped, at = [], 0
    for name, queries in groups:
        mine = results[at : at + len(queries)]
        at += len(queries)
        hits = [hit for result in mine for hit in result.get("hits", ())]
        suppressed = [hit for result in mine for hit in result.get("suppressed", ())]
        video = next((r for r in mine if r.get("kind") == "video"), None)
        if video is not None:  # every vpdq value of one video has the video's answer
            hits += [s | {"distance": 0, "query_matched_pct": v["query_matched_pct"]}
                     for v in video["videos"] for s in v["signals"]] + video["images"]  # fmt: skip
        reasons = [r["reason"] for r in mine if r.get("featureless") and "reason" in r]
        entry: dict[str, Any] = {"query": name, "matched": bool(hits), "hits": hits,
                                 "suppressed": suppressed,
                                 "featureless": bool(reasons)}  # fmt: skip
        if video is not None:
            entry |= {"videos": video["videos"], "images": video["images"]}
        if reasons:
            entry["reason"] = reasons[0]
        if name in errors:
            entry["error"] = errors[name]
        grouped.append(entry)
    return grouped


def _match_text(results: Sequence[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        count = len(result["hits"])
        if "error" in result:
            lines.append(f"{result['query']}: error: {result['error']}")
            continue
        line = f"{result['query']}: " + (f"{count} match(es)" if count else "no match")
        if result["featureless"]:
            line += f"; too featureless to match by perceptual hash ({result['reason']})"
        lines.append(line)
        lines += [f"  {_hit_line(hit)}" for hit in result["hits"]]
        lines += [f"  suppressed ({_why(hit['by'])}): {_hit_line(hit)}"
                  for hit in result.get("suppressed", ())]  # fmt: skip
    return "\n".join(lines)


def _why(by: dict[str, Any]) -> str:
    """Why a federation hit is suppressed: its safelist entry, or the policy rule."""
    if "safelist" in by:
        entry = by["entry"]
        note = f" ({entry['note']})" if entry.get("note") else ""
        return f"safelist {by['safelist']}: {entry['type']}:{entry['value']}{note}"
    details = ", ".join(f"{k} {v}" for k, v in by.items() if k != "policy")
    return f"policy {by['policy']}: {details}"


def _hit_line(hit: dict[str, Any]) -> str:
    if hit.get("source", {}).get("kind") == "list":
        note = f"  note {hit['note']}" if hit.get("note") else ""
        return f"{hit['type']} distance {hit['distance']}  local list {hit['list']}{note}"
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
@click.option(
    "--member", default=None,
    help="Only this member's signals: its name (any case) or a unique key prefix.",
)  # fmt: skip
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
    from node.store.read import SignalQuery

    with open_backend(NodeHome(home).require()) as backend:
        identity = None if member is None else _member_identity(backend, member)
        query = SignalQuery(kind, label, identity, active=True if active else None, limit=limit)
        rows = backend.signals(query)
    emit({"signals": rows}, as_json, "\n".join(_signal_line(r) for r in rows) or "no signals")


def _member_identity(backend: Backend, member: str) -> str:
    return str(resolve_member(backend.members(), member)["identity"])


def _signal_line(row: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(row["ts"]) / 1000))
    tallies = row["tallies"]
    return (
        f"{row['id']}\n  {row['status']:9s} {when}  {row['member_name'] or row['member']}"
        f"  {row['type']}:{row['value']}\n  labels {' '.join(row['labels']) or '-'}"
        f"  confirm {tallies['confirm']} dispute {tallies['dispute']} seen {tallies['seen']}"
    )


COMMANDS: tuple[click.Command, ...] = (add, retract, opinion, hash_command, match, signals)
