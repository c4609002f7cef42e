"""``hashmesh tokens issue|revoke|list``: the read-only tokens of match replicas
(``node.store.replica_tokens``).

Like ``hashmesh user``, these write only their own table, in one short transaction, on a
connection of their own: they work whether or not the node runs, and a revoked token is
refused by the running node from its next request on (it looks tokens up per request).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from node.cli.common import emit, home_db, home_option, json_option
from node.clock import now_ms
from node.store import replica_tokens


@click.group()
def tokens() -> None:
    """Read-only tokens for match replicas ('hashmesh replica'); the node's own bearer
    token (HOME/api.token) is not one of them."""


@tokens.command("issue")
@click.option(
    "--replica",
    "name",
    required=True,
    help="The replica's name (lowercase letters, digits, . _ -), e.g. its Deployment's.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Register the token in this file (one issued before, e.g. after the database was "
    "restored from a backup) instead of making a new one.",
)
@home_option
@json_option
def tokens_issue(name: str, token_file: Path | None, home: Path, as_json: bool) -> None:
    """Make a token for one replica and print it, once: the node keeps only its hash. It
    reads the snapshot, the change feed and lookups; anything else with it is 403."""
    given = token_file.read_text(encoding="utf-8").strip() if token_file else None
    with home_db(home) as conn:
        token = replica_tokens.issue(conn, name, now_ms=now_ms(), token=given)
    emit(
        {"name": name, "token": token},
        as_json,
        f"{token}\n(replica {name}: give it to 'hashmesh replica --token-file'; it is not "
        "shown again)",
    )


@tokens.command("revoke")
@click.argument("name")
@home_option
@json_option
def tokens_revoke(name: str, home: Path, as_json: bool) -> None:
    """End replica NAME's token: the node refuses it (401) from its next request on."""
    with home_db(home) as conn:
        found = replica_tokens.revoke(conn, replica_tokens.check_name(name), now_ms=now_ms())
    emit(found.to_json(), as_json, f"revoked the token of replica {found.name}")


@tokens.command("list")
@home_option
@json_option
def tokens_list(home: Path, as_json: bool) -> None:
    """Every replica token issued: name, when, and whether it was revoked."""
    with home_db(home) as conn:
        found = replica_tokens.list_tokens(conn)
    lines = [
        f"{t.name:24s} issued {_when(t.issued_ms)}  "
        + ("active" if t.revoked_ms is None else f"revoked {_when(t.revoked_ms)}")
        for t in found
    ]
    emit({"tokens": [t.to_json() for t in found]}, as_json, "\n".join(lines) or "no tokens")


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


COMMANDS: tuple[click.Command, ...] = (tokens,)
