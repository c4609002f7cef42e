"""protocol/ is pure: no I/O, no clock, no randomness, no node; only keys.py touches PyNaCl.

Every import in protocol/**/*.py (read with ast, never executed) must be on an allowlist of
pure modules; a few modules are named explicitly as forbidden so that a failure says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocol"

FORBIDDEN = frozenset(
    {
        "aiohttp",
        "sqlite3",
        "sqlite_utils",
        "node",
        "asyncio",
        "os",
        "time",
        "random",
        "socket",
        "pathlib",
        "datetime",
        "multiprocessing",
        "threading",
        "subprocess",
        "secrets",
        "io",
        "shutil",
        "tempfile",
        "signal",
        "select",
        "selectors",
        "http",
        "urllib.request",
        "ssl",
        "logging",
        "concurrent",
        "sys",
        "uuid",
        "importlib",
        "pickle",
    }
)

# Pure modules protocol/ may import (a module matches an entry or a submodule of one).
ALLOWED = frozenset(
    {
        "__future__",
        "abc",
        "base64",
        "binascii",
        "bisect",
        "collections",
        "dataclasses",
        "enum",
        "functools",
        "hashlib",
        "heapq",
        "itertools",
        "json",
        "math",
        "operator",
        "re",
        "string",
        "types",
        "typing",
        "unicodedata",
        "urllib.parse",
        "orjson",
        "nacl",
        "protocol",
    }
)
NACL_MODULES = frozenset({"protocol/keys.py"})


def _modules() -> list[Path]:
    files = sorted(PROTOCOL.rglob("*.py"))
    assert len(files) >= 12, "protocol/ not found where expected"
    return files


def _imports(path: Path) -> list[tuple[int, str]]:
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    return _imports_of(path.read_text(encoding="utf-8"), package)


def _imports_of(source: str, package: str) -> list[tuple[int, str]]:
    """Every module a source imports, as absolute dotted names (relative imports resolved).

    ``from a import b`` yields both ``a`` and ``a.b``: b may be a module.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{a.name}".lstrip(".")) for a in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.append((node.lineno, "__import__"))
    return found


def _matches(module: str, names: frozenset[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def _is_submodule_guess(module: str, line_modules: set[str]) -> bool:
    """`from typing import Any` also yields "typing.Any"; that is a name, not a module."""
    parent = module.rsplit(".", 1)[0]
    return parent in line_modules and _matches(parent, ALLOWED) and not _matches(module, FORBIDDEN)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_protocol_module_imports_only_pure_modules(path: Path) -> None:
    imports = _imports(path)
    by_line: dict[int, set[str]] = {}
    for line, module in imports:
        by_line.setdefault(line, set()).add(module)
    for line, module in imports:
        where = f"{path.relative_to(ROOT)}:{line}"
        assert module != "__import__", f"{where}: dynamic import"
        assert not _matches(module, FORBIDDEN), f"{where}: protocol/ must not import {module}"
        if not _matches(module, ALLOWED):
            assert _is_submodule_guess(module, by_line[line]), (
                f"{where}: {module} is not on protocol/'s import allowlist"
            )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_keys_touches_nacl(path: Path) -> None:
    relative = path.relative_to(ROOT).as_posix()
    uses_nacl = any(_matches(module, frozenset({"nacl"})) for _, module in _imports(path))
    assert not uses_nacl or relative in NACL_MODULES, f"{relative} imports nacl"


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("import os", "os"),
        ("import os.path as p", "os.path"),
        ("from time import monotonic", "time"),
        ("from urllib import request", "urllib.request"),
        ("from node.app import make_app", "node.app"),
        ("import aiohttp.web", "aiohttp.web"),
        ("from . import keys", "protocol.keys"),
        ("from .records import Record", "protocol.records"),
        ("from .. import node", "node"),
    ],
)
def test_the_checker_sees_every_import_form(source: str, module: str) -> None:
    assert module in [m for _, m in _imports_of(source, "protocol")]


def test_the_checker_flags_dynamic_imports() -> None:
    assert (1, "__import__") in _imports_of("__import__('os')", "protocol")
