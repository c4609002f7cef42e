"""Render the README's CLI reference from every command's ``--help`` text.

    python scripts/cli_reference.py           print the reference (Markdown)
    python scripts/cli_reference.py --write   replace it in README.md, between the markers

``tests/test_readme.py`` fails when README.md and this output differ, so a changed option or
a new command means running ``--write`` once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"
WIDTH = 100

sys.path.insert(0, str(ROOT))

from node.cli.main import cli  # noqa: E402


def commands(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Context, click.Command]]:
    """command and every subcommand, depth first in name order, with their help contexts."""
    yield ctx, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            sub = command.commands[name]
            yield from commands(sub, click.Context(sub, info_name=name, parent=ctx))


def command_paths() -> list[str]:
    """Every command as typed: 'hashmesh', 'hashmesh add', 'hashmesh federation create', …"""
    return [ctx.command_path for ctx, _ in commands(cli, _root_context())]


def _root_context() -> click.Context:
    return click.Context(cli, info_name="hashmesh", terminal_width=WIDTH, max_content_width=WIDTH)


def render() -> str:
    """The reference: one section per command, its --help text verbatim."""
    parts = [START, ""]
    for ctx, command in commands(cli, _root_context()):
        parts += [f"### `{ctx.command_path}`", "", "```text", command.get_help(ctx), "```", ""]
    return "\n".join([*parts, END])


def readme_block(text: str) -> str:
    """The block between the markers (markers included) in a README text."""
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        text = README.read_text("utf-8")
        README.write_text(text.replace(readme_block(text), render()), "utf-8")
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
