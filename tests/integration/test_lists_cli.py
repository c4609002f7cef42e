"""``hashmesh lists`` with no node running: HOME/lists.db is written under the home's lock, in
the local API's shapes, and the next ``hashmesh serve`` matches what was written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from harness import NodeProc, found_federation

from node.cli.main import cli
from node.errors import NodeError, explain

PDQ = "5a3c96e1" * 8
MD5 = "d35c785545392755e7e4164457657269"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    _, (a,) = found_federation(tmp_path, ["a"], threshold=1)
    yield a
    a.stop()


def run(home: Path, *args: str) -> tuple[int, str]:
    """The command in this process (no interpreter start-up): exit code and output, or 2 and
    the one error line the CLI's boundary would print."""
    result = CliRunner().invoke(cli, [*args, "--home", str(home)], standalone_mode=False)
    if isinstance(result.exception, NodeError):
        return 2, explain(result.exception)
    assert result.exception is None, result.exception
    return 0, result.output


def ok(home: Path, *args: str) -> Any:
    code, out = run(home, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def test_lists_work_offline_and_the_next_serve_matches_them(node: NodeProc, tmp_path: Path) -> None:
    home = node.home
    assert ok(home, "lists") == {"lists": []}
    assert ok(home, "lists", "create", "review", "--note", "under review")["created_by"] == "cli"
    hashes = tmp_path / "other-source.txt"
    hashes.write_text(f"# from another source\npdq:{PDQ.upper()}\nmd5:{MD5}\n")
    added = ok(home, "lists", "add", "review", "--file", str(hashes), "--note", "imported")
    assert (added["added"], added["skipped"], added["list"]["entries"]) == (2, 0, 2)
    shown = ok(home, "lists", "show", "review")
    assert [(e["type"], e["value"], e["added_by"]) for e in shown["entries"]] == [
        ("md5", MD5, "cli"), ("pdq", PDQ, "cli"),
    ]  # fmt: skip
    code, line = run(home, "lists", "add", "review", "pdq:" + "0" * 64)
    assert code == 2 and "featureless" in line
    code, line = run(home, "lists", "add", "review", f"md5:{MD5}", "md5:xyz")
    assert code == 2 and "md5" in line and ok(home, "lists")["lists"][0]["entries"] == 2
    assert ok(home, "lists", "create", "logos", "--safelist")["kind"] == "safelist"
    code, line = run(home, "lists", "dispute", "logos", f"md5:{MD5}")
    assert code == 2 and "start the node" in line
    assert ok(home, "lists", "disable", "logos")["list"]["enabled"] is False
    assert ok(home, "lists", "remove", "review", f"md5:{MD5}")["removed"] == 1
    assert ok(home, "lists", "delete", "logos")["deleted"] is True

    node.start()  # the list written offline is indexed at start
    answer = node.api("POST", "/v1/match", {"type": "pdq", "value": PDQ})["results"][0]
    assert answer["hits"][0]["source"] == {"kind": "list", "list": "review"}
    assert not node.api("POST", "/v1/match", {"type": "md5", "value": MD5})["matched"]
    assert ok(home, "lists", "show", "review")["list"]["entries"] == 1  # through the API now
