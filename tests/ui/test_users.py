"""Web UI accounts: ``hashmesh user add|remove|list``, argon2id hashes, sessions, action log."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from harness import found_federation

from node.cli.main import cli
from node.errors import InputError
from node.home import NodeHome
from node.store import users
from node.store.schema import open_database

PASSWORD = "correct horse battery"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    _, nodes = found_federation(tmp_path, ["a", "b"])
    return nodes[0].home


def run(home: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--home", str(home)], input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return 2, str(result.exception)
    return result.exit_code, result.output


def db(home: Path) -> contextlib.closing[sqlite3.Connection]:
    node_home = NodeHome(home)
    conn = open_database(node_home.db_path, node_home.federation(), create=True, writer=True)
    return contextlib.closing(conn)


def test_user_add_list_remove_through_the_cli(home: Path) -> None:
    code, out = run(
        home,
        "user",
        "add",
        "alice",
        "--role",
        "moderator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert (code, out.strip()) == (0, "added user alice (moderator)")
    assert run(home, "user", "add", "bob", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    code, out = run(home, "user", "list", "--json")
    listed = json.loads(out)["users"]
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "moderator"), ("bob", "viewer")]
    with db(home) as conn:
        stored = conn.execute("SELECT password FROM ui_users WHERE name = 'alice'").fetchone()[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert run(home, "user", "remove", "bob")[0] == 0
    assert json.loads(run(home, "user", "list", "--json")[1])["users"][0]["name"] == "alice"
    assert len(json.loads(run(home, "user", "list", "--json")[1])["users"]) == 1


@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        (["alice", "--role", "moderator"], "short\n", "a password has 10 to"),
        (["Alice"], PASSWORD + "\n", "user name 'Alice' is not valid"),
        (["alice", "--role", "root"], PASSWORD + "\n", "'root' is not one of"),
        (["taken"], PASSWORD + "\n", "user 'taken' exists already"),
        (["alice"], "", "nothing on standard input"),
    ],
)
def test_user_add_refuses_bad_input_and_stores_nothing(
    home: Path, args: list[str], stdin: str, error: str
) -> None:
    assert run(home, "user", "add", "taken", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    code, out = run(home, "user", "add", *args, "--password-stdin", stdin=stdin)
    assert code == 2 and error in out
    with db(home) as conn:
        assert [u.name for u in users.list_users(conn)] == ["taken"]


def test_remove_of_an_unknown_user_is_an_error(home: Path) -> None:
    code, out = run(home, "user", "remove", "nobody")
    assert code == 2 and "no user 'nobody'" in out


def test_login_sessions_and_removal(home: Path) -> None:
    with db(home) as conn:
        user = users.add_user(conn, "carol", "admin", PASSWORD, now_ms=1000)
        assert users.check_login(conn, "carol", PASSWORD) == user
        assert users.check_login(conn, "carol", PASSWORD + "x") is None
        assert users.check_login(conn, "nobody", PASSWORD) is None
        token, session = users.open_session(conn, user, now_ms=2000)
        assert users.session_for(conn, token, now_ms=3000) == session
        assert users.session_for(conn, token + "x", now_ms=3000) is None
        assert users.session_for(conn, token, now_ms=session.expires_ms) is None  # expired
        # the database keeps only the token's hash
        assert (
            conn.execute(
                "SELECT count(*) FROM ui_sessions WHERE token_hash = ?", (token.encode(),)
            ).fetchone()[0]
            == 0
        )
        users.remove_user(conn, "carol")
        assert users.session_for(conn, token, now_ms=3000) is None
        assert conn.execute("SELECT count(*) FROM ui_sessions").fetchone()[0] == 0


def test_roles_include_the_ones_below() -> None:
    admin, moderator, viewer = (users.User(r, r, 0) for r in ("admin", "moderator", "viewer"))
    assert admin.may("moderator") and admin.may("viewer") and moderator.may("viewer")
    assert not viewer.may("moderator") and not moderator.may("admin")
    with pytest.raises(InputError):
        users.check_role("superuser")


def test_the_action_log_pages_newest_first(home: Path) -> None:
    with db(home) as conn:
        for n in range(5):
            users.log_action(conn, "dave", f"act{n}", now_ms=n, record=f"r{n}")
        first = users.actions(conn, limit=2)
        assert [a.action for _, a in first] == ["act4", "act3"]
        more = users.actions(conn, limit=2, before=first[-1][0])
        assert [a.action for _, a in more] == ["act2", "act1"]
        assert users.actions_for_record(conn, ["r2", "zz"])["r2"].action == "act2"
