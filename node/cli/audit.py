"""The ``hashmesh audit`` and ``hashmesh report`` commands (issue 7).

    hashmesh audit --db PATH                     a node database copy or a JSONL record export
    hashmesh audit --node URL --home AUDITOR     a live node, over the signed peer API
    hashmesh audit --compare A B ...             several databases, exports or node URLs
    hashmesh report [--db PATH | --home DIR] [--out report.html] [--json]

``audit`` exits 0 when every check passes, 1 when it found violations (with ``--compare``:
when the sources' frontiers differ, one lacks records another holds, or an author showed them
different records at one seq -- a split view) and 2 when it could not audit (the CLI's one
error boundary in ``node.cli.main.main`` prints the reason). ``--json`` output is canonical
JSON with no clock readings, so the same source gives the same bytes; progress goes to stderr
(``node.cli.progress``: a bar on a terminal, plain lines elsewhere).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from node.audit import engine
from node.audit.engine import (
    MAX_LISTED,
    AuditError,
    AuditResult,
    Comparison,
    Snapshot,
    canonical_json,
)
from node.cli.progress import progress_lines, progress_mode, progress_option
from node.config import load_config
from node.home import NodeHome
from protocol import Federation, SigningKey
from protocol.errors import RemoteProtocolError
from protocol.federation import parse_genesis

EXIT_CLEAN, EXIT_VIOLATIONS = 0, 1
STAGES = {
    "verify": "verifying records",
    "chains": "checking chains",
    "fold": "folding state",
    "state": "comparing materialised state",
    "done": "done",
}


_SHARED_OPTIONS = (
    click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Auditor home: its key signs peer requests, its federation is pinned.",
    ),
    click.option(
        "--federation",
        "genesis",
        default=None,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="federation.json to pin (needed for a JSONL export without --home).",
    ),
    click.option(
        "--workers",
        type=click.IntRange(1),
        default=os.cpu_count() or 1,
        show_default="all CPUs",
        help="Processes verifying signatures.",
    ),
    progress_option,
    click.option("--json", "as_json", is_flag=True, help="Print canonical JSON."),
)


def _options(f: Callable[..., None]) -> Callable[..., None]:
    """The options audit and report share (--home, --federation, --workers, --json)."""
    for option in reversed(_SHARED_OPTIONS):
        f = option(f)
    return f


def _pinned(home: Path | None, genesis: Path | None) -> tuple[Federation | None, SigningKey | None]:
    """The federation to pin and the key to sign with, from --federation and --home."""
    fed: Federation | None = None
    if genesis is not None:
        try:
            fed = parse_genesis(genesis.read_bytes())
        except RemoteProtocolError as e:
            raise AuditError(f"{genesis} is not a valid federation document: {e}") from e
    if home is None:
        return fed, None
    node_home = NodeHome(home).require()
    load_config(home)  # validated as by every command
    return fed or node_home.federation(), node_home.key()


@contextmanager
def _progress(
    command: str, show: bool | None, as_json: bool
) -> Iterator[Callable[[str, int, int | None], None]]:
    """Progress on stderr (``node.cli.progress``): a bar on a terminal, else plain lines."""
    mode = progress_mode(show, as_json)
    if mode is None:
        yield lambda stage, done, total: None
        return
    if mode == "lines":
        with progress_lines(command, show) as lines:
            yield lambda stage, done, total: lines(STAGES.get(stage, stage), done, total)
        return
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                for name, task in tasks.items():  # a new stage ends the steps before it
                    if name != "verify":
                        bar.update(task, total=1, completed=1)
                tasks[stage] = bar.add_task(STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _open_all(
    specs: Sequence[str], fed: Federation | None, key: SigningKey | None, home: Path | None
) -> list[Snapshot]:
    from node.audit.sources import open_source  # the store's imports would slow every command

    home_db = NodeHome(home).db_path if home is not None else None  # members' TLS pins
    snaps: list[Snapshot] = []
    try:
        for spec in specs:
            snaps.append(open_source(spec, federation=fed, key=key, home_db=home_db))
    except BaseException:
        for snap in snaps:
            snap.close()
        raise
    return snaps


@click.command()
@click.argument("sources", nargs=-1)
@click.option("--db", default=None, help="A node database copy or a JSONL record export.")
@click.option(
    "--node",
    "node_url",
    default=None,
    help="A node's URL (needs --home); https is pinned by the member's announce in the "
    "home's database, else by the URL's #spki=<fingerprint>.",
)
@click.option("--compare", is_flag=True, help="Compare SOURCES (databases, exports, URLs).")
@click.option(
    "--max-listed",
    type=click.IntRange(0),
    default=MAX_LISTED,
    show_default=True,
    help="Violations listed per kind (0: all); counts are always complete.",
)
@_options
@click.pass_context
def audit(
    ctx: click.Context,
    sources: tuple[str, ...],
    db: str | None,
    node_url: str | None,
    compare: bool,
    max_listed: int,
    home: Path | None,
    genesis: Path | None,
    workers: int,
    show_progress: bool | None,
    as_json: bool,
) -> None:
    """Verify a node's records and state with the protocol alone (exit 0 clean, 1 violations,
    2 could not audit)."""
    specs = _audit_specs(sources, db, node_url, compare)
    fed, key = _pinned(home, genesis)
    snaps = _open_all(specs, fed, key, home)
    try:
        with _progress("audit", show_progress, as_json) as progress:
            if compare:
                result: AuditResult | Comparison = engine.compare(
                    snaps, workers=workers, progress=progress
                )
                result.max_listed = max_listed
            else:
                result = engine.audit(
                    snaps[0],
                    now_ms=time.time_ns() // 1_000_000,
                    workers=workers,
                    progress=progress,
                    max_listed=max_listed,
                )
    finally:
        for snap in snaps:
            snap.close()
    if as_json:
        click.echo(canonical_json(result.to_json()).decode())
    elif isinstance(result, Comparison):
        _print_comparison(result)
    else:
        _print_audit(result)
    ctx.exit(EXIT_CLEAN if result.clean else EXIT_VIOLATIONS)


def _audit_specs(
    sources: tuple[str, ...], db: str | None, node_url: str | None, compare: bool
) -> list[str]:
    if compare:
        specs = [*sources, *([db] if db else []), *([node_url] if node_url else [])]
        if len(specs) < 2:
            raise click.UsageError("--compare needs at least two sources")
        return specs
    given = [s for s in (db, node_url) if s] + list(sources)
    if len(given) != 1:
        raise click.UsageError("audit one source: --db PATH or --node URL (or use --compare)")
    return given


def _print_audit(result: AuditResult) -> None:
    console = Console()
    verdict = (
        "[green]clean[/]" if result.clean else f"[red]{len(result.violations)} violation(s)[/]"
    )
    console.print(
        f"audit of {result.kind} [bold]{result.source}[/] in federation "
        f"{result.federation.name!r} ({result.federation.id[:16]}…): {verdict}"
    )
    counts = result.counts
    console.print(
        f"{counts['rows']} records read, {counts['valid']} valid, {counts['authors']} "
        f"authors, {counts['signals']} signals, {counts['forks']} fork(s), "
        f"{counts['uncounted']} stored but not counted (beyond a freeze or a gap)"
    )
    table = Table("check", "status", "violations", "what it verifies")
    for check in result.checks_json():
        assert isinstance(check, dict)
        status = str(check["status"])
        style = {"pass": "green", "fail": "red"}.get(status, "dim")
        table.add_row(
            str(check["check"]),
            f"[{style}]{status}[/]",
            str(check["violations"]),
            str(check["description"]),
        )
    console.print(table)
    listed = result.to_json()["violations"]
    assert isinstance(listed, list)
    for v in listed:
        assert isinstance(v, dict)
        where = f" {str(v['author'])[:16]}… seq {v.get('seq')}" if "author" in v else ""
        ids = ", ".join(str(r) for r in v["records"] or [])  # type: ignore[union-attr]
        console.print(
            f"[red]{v['code']}[/]{where}: {v['detail']}" + (f"\n    records {ids}" if ids else ""),
            highlight=False,
            soft_wrap=True,
        )


def _print_comparison(result: Comparison) -> None:
    console = Console()
    verdict = "[green]agree[/]" if result.agree else "[red]differ[/]"
    console.print(f"frontiers of {len(result.sources)} sources {verdict}")
    table = Table("source", "records", "invalid", "authors", "lacks", "frontier digest")
    for frontier, (_, lacks) in zip(result.frontiers, result.lacking, strict=True):
        table.add_row(
            str(frontier["source"]),
            str(frontier["records"]),
            str(frontier["invalid"]),
            str(frontier["authors"]),
            str(len(lacks)),
            str(frontier["digest"])[:16] + "…",
        )
    console.print(table)
    for source, ids in result.lacking:
        if ids:
            more = " …" if len(ids) > 3 else ""
            console.print(
                f"[red]{source} lacks {len(ids)} record(s)[/]: {', '.join(ids[:3])}{more}",
                highlight=False,
                soft_wrap=True,
            )
    for fork in result.equivocations:
        kind = "split view" if fork["split"] else "fork"
        console.print(
            f"[red]{kind}[/]: author {fork['author']} seq {fork['seq']}: "
            f"{_holders(fork['held_by'])}",
            highlight=False,
            soft_wrap=True,
        )
    if result.equivocations:
        console.print(
            "fork evidence: see --json ('evidence' verifies with the federation id alone)"
        )


def _holders(held_by: object) -> str:
    """ "id… by source, source; id… by source" for a fork's two records."""
    if not isinstance(held_by, dict):
        return ""
    return "; ".join(
        f"{rid[:16]}… by {', '.join(map(str, sources)) if isinstance(sources, list) else '?'}"
        for rid, sources in held_by.items()
    )


@click.command()
@click.option("--db", default=None, help="A node database copy or a JSONL record export.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the HTML report here (default report.html unless --json).",
)
@_options
def report(
    db: str | None,
    out: Path | None,
    home: Path | None,
    genesis: Path | None,
    workers: int,
    show_progress: bool | None,
    as_json: bool,
) -> None:
    """The transparency report of a node's records: HTML with charts, or canonical JSON."""
    if db is None and home is None:
        raise click.UsageError("report needs --db PATH or --home DIR")
    fed, _ = _pinned(home, genesis)
    source = db if db is not None else str(NodeHome(home or Path(".")).db_path)
    (snap,) = _open_all([source], fed, None, None)
    try:
        with _progress("report", show_progress, as_json) as progress:
            loaded = engine.load_records(snap, workers=workers, progress=progress)
    finally:
        snap.close()
    skipped = loaded.rows - len(loaded.records)
    if skipped:
        click.echo(
            f"hashmesh: warning: {skipped} stored record(s) failed verification and are "
            "left out (run 'hashmesh audit')",
            err=True,
        )
    from node.audit.report import build_report, render_html, report_bytes

    data = build_report(loaded.records, snap.federation)
    if out is not None or not as_json:
        target = out or Path("report.html")
        target.write_text(render_html(data), encoding="utf-8")
        if not as_json:
            click.echo(
                f"wrote {target}: {data['records']} records, digest {data['records_digest']}"
            )
    if as_json:
        click.echo(report_bytes(data))


COMMANDS: tuple[click.Command, ...] = (audit, report)
