"""The README documents every CLI command, and its CLI reference is the current --help text."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import click
import pytest
from click.testing import CliRunner

from node.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text("utf-8")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "scripts/cli_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = _load_script()


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _paths(command, (*prefix, name))
    return found


COMMANDS = _paths(cli)


def command(path: tuple[str, ...]) -> click.Command:
    found: click.Command = cli
    for name in path:
        assert isinstance(found, click.Group)
        found = found.commands[name]
    return found


def test_the_walk_finds_every_command_of_issue_6() -> None:
    names = {" ".join(path) for path in COMMANDS}
    assert {
        "init", "card", "federation create", "federation sign", "federation join",
        "federation show", "serve", "status", "sync", "peers", "peers add", "add", "retract",
        "opinion", "hash", "match", "signals", "export", "import", "member vote admit",
        "member vote remove", "demo",
    } <= names  # fmt: skip


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="hashmesh")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: hashmesh {' '.join(path)}")
    guide = README.replace(REFERENCE.readme_block(README), "")
    shown = f"`hashmesh {' '.join(path)}" + ("" if isinstance(command(path), click.Group) else "`")
    assert shown in guide, "not in the README outside the generated reference"


def test_cli_reference_block_is_current() -> None:
    assert REFERENCE.readme_block(README) == REFERENCE.render(), (
        "README.md's CLI reference is stale: run .venv/bin/python scripts/cli_reference.py --write"
    )
    assert REFERENCE.command_paths() == ["hashmesh", *(f"hashmesh {' '.join(p)}" for p in COMMANDS)]


def test_quick_start_is_exactly_make_demo_and_make_test() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block[1].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_benchmark_table_markers_are_present() -> None:
    assert README.index("<!-- bench:start -->") < README.index("<!-- bench:end -->")
