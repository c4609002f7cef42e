"""``hashmesh user add|remove|list``: the web UI's local accounts (``node.store.users``).

The accounts live in the node's database, beside but apart from the records: these commands
write only the user tables, each in one short transaction, so they work whether or not the
node runs (SQLite serialises them with the node's writes). Removing a user ends their
sessions at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from node.cli.common import emit, home_db, home_option, json_option
from node.clock import now_ms
from node.errors import InputError
from node.store import users


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise InputError("--password-stdin: nothing on standard input")
        return line.rstrip("\r\n")
    return str(click.prompt("password", hide_input=True, confirmation_prompt=True, err=True))


@click.group()
def user() -> None:
    """Web UI accounts: people sign in to /ui/ with these (machines keep the bearer token)."""


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(users.ROLES),
    default="viewer",
    show_default=True,
    help="viewer reads and matches; moderator also adds, retracts and gives opinions; "
    "admin also votes on members.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@home_option
@json_option
def user_add(name: str, role: str, password_stdin: bool, home: Path, as_json: bool) -> None:
    """Create a web UI account NAME (asks for a password of at least 10 characters, stored
    as an argon2id hash)."""
    users.check_name(name)
    password = _read_password(password_stdin)
    with home_db(home) as conn:
        account = users.add_user(conn, name, role, password, now_ms=now_ms())
    emit(
        {"name": account.name, "role": account.role},
        as_json,
        f"added user {account.name} ({account.role})",
    )


@user.command("remove")
@click.argument("name")
@home_option
@json_option
def user_remove(name: str, home: Path, as_json: bool) -> None:
    """Delete the web UI account NAME and end its sessions."""
    with home_db(home) as conn:
        account = users.remove_user(conn, name)
    emit({"name": account.name, "removed": True}, as_json, f"removed user {account.name}")


@user.command("list")
@home_option
@json_option
def user_list(home: Path, as_json: bool) -> None:
    """The web UI accounts and their roles."""
    with home_db(home) as conn:
        accounts = users.list_users(conn)
    data = {
        "users": [{"name": u.name, "role": u.role, "created_ms": u.created_ms} for u in accounts]
    }
    human = "\n".join(f"{u.role:9s} {u.name}" for u in accounts) or "no users"
    emit(data, as_json, human)


COMMANDS: tuple[click.Command, ...] = (user,)
