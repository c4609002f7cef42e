"""What every ``hashmesh`` command shares: exit codes, ``--home``, ``--json``, the one JSON
style, ``--verbose`` and the call to a running node's local API.

The command modules (``node.cli.main`` and its siblings) import from here, and ``main``
registers them all, so no command module imports another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from node.cli.backend import LocalApi
from node.config import load_config
from node.errors import InputError
from node.home import NodeHome

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2


def _checked_home(ctx: click.Context, param: click.Parameter, home: Path) -> Path:
    """A node home's config.toml is loaded (and so validated) before any command runs, so
    garbage or an unknown key is reported by every command exactly as 'serve' reports it."""
    if NodeHome(home).exists():
        load_config(home)
    return home


def home_option(f: Any) -> Any:
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="HASHMESH_HOME",
        default=Path("."),
        show_default="$HASHMESH_HOME or .",
        help="The node home directory.",
        callback=_checked_home,
    )(f)


def json_option(f: Any) -> Any:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object (README: JSON output)."
    )(f)


def json_text(data: Any) -> str:
    """The one JSON style of every command: one line, keys sorted, UTF-8, no spaces."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def emit(data: Any, as_json: bool, human: str | None = None) -> None:
    if as_json or human is None:
        click.echo(json_text(data))
    else:
        click.echo(human)


def authored(answer: dict[str, Any]) -> dict[str, Any]:
    """A signed record's answer (local API shape) with the record nested as an object."""
    record = answer.get("record")
    return answer | ({"record": json.loads(record)} if isinstance(record, str) else {})


# ---- talking to a running node ----------------------------------------------------------


def api(home: NodeHome, method: str, path: str, body: Any = None) -> Any:
    """Call the running node's local API; raise ApiError with the problem detail."""
    return LocalApi.for_home(home).call(method, path, body)


# ---- commands ---------------------------------------------------------------------------


VERBOSE: list[bool] = []  # set by --verbose/-v, before or after the subcommand


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        VERBOSE.append(True)
        logging.getLogger().setLevel(logging.DEBUG)


def verbose_option() -> click.Option:
    """--verbose/-v, accepted by the group and by every command (``hashmesh add -v``)."""
    return click.Option(
        ["--verbose", "-v"], is_flag=True, expose_value=False, is_eager=True,
        callback=_set_verbose, help="Show tracebacks and debug logs.",
    )  # fmt: skip


def resolve_member(members: Sequence[dict[str, Any]], text: str) -> dict[str, Any]:
    """The one member that text names: its name (any case) or a prefix of its key or
    identity; InputError when none or several do."""
    wanted = text.strip()
    hexed = wanted.lower()
    found = [
        m for m in members
        if m["name"].casefold() == wanted.casefold()
        or (hexed and all(c in "0123456789abcdef" for c in hexed)
            and (m["key"].startswith(hexed) or m["identity"].startswith(hexed)))
    ]  # fmt: skip
    if len(found) == 1:
        return found[0]
    if not found:
        names = ", ".join(repr(m["name"]) for m in members)
        raise InputError(
            f"no member is named {wanted!r} or has a key starting with it (members: {names}; "
            "see 'hashmesh federation show')"
        )
    which = ", ".join(f"{m['name']!r} ({m['key'][:16]}…)" for m in found)
    raise InputError(f"{wanted!r} matches {len(found)} members: {which}; give more of the key")


@contextlib.contextmanager
def home_db(home: Path) -> Iterator[sqlite3.Connection]:
    """A home's database (created and migrated if need be) on a connection of its own: what
    ``hashmesh user`` and ``hashmesh tokens`` use, with or without a running node."""
    from node.store.schema import open_database  # SQLite's schema loads only for these commands

    node_home = NodeHome(home).require()
    conn = open_database(node_home.db_path, node_home.federation(), create=True, writer=True)
    try:
        yield conn
    finally:
        conn.close()
