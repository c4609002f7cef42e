"""Print the lowest versions pyproject.toml allows, one `name==version` a line.

`make test-min` installs exactly these (the runtime dependencies and, with --extra, an
optional group's) and runs the tests against them, so every `>=` bound is a tested one.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWER = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*$")


def lowest(requirements: list[str]) -> list[str]:
    pins = []
    for requirement in requirements:
        found = LOWER.match(requirement)
        if found is None:
            raise SystemExit(f"min_requirements: {requirement!r} has no single >= bound")
        pins.append(f"{found[1]}=={found[2]}")
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], help="an optional group too")
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in args.extra:
        requirements += project["optional-dependencies"][extra]
    sys.stdout.write("".join(f"{pin}\n" for pin in lowest(requirements)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
