"""node/ is arranged in rooms, and no module of node/ or protocol/ takes part in an import cycle.

Every import is counted, wherever it sits: at the top of a module, inside a function (an
import put off for start-up speed still ties two modules) or under ``TYPE_CHECKING``. Modules
are read with ``ast``, never executed. A cycle fails with the modules that make it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "node")

# node/'s rooms (README "Layout"): the shell's base stays at the top of node/
ROOMS = frozenset({"store", "net", "moderation", "media", "audit", "cli", "interop", "ui",
                   "replica"})  # fmt: skip
BASE = frozenset({"__init__", "__main__", "clock", "config", "errors", "home", "homelock",
                  "matchpolicy", "runtime"})  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    assert len(found) > 60, "protocol/ and node/ not found where expected"
    return found


def imports_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (``from a import b`` counts a.b when that is a
    module, else a)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    graph = imports_graph(project_modules())
    found = cycles(graph)
    shown = [
        " -> ".join(c) + "".join(f"\n    {m} imports {sorted(graph[m] & set(c))}" for m in c)
        for c in found
    ]
    assert not found, "import cycles:\n" + "\n".join(shown)


def test_node_is_arranged_in_rooms() -> None:
    node = ROOT / "node"
    loose = sorted(p.stem for p in node.glob("*.py") if p.stem not in BASE)
    assert not loose, f"node/ modules outside a room: {loose} (put each in one of {sorted(ROOMS)})"
    rooms = {p.name for p in node.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == ROOMS, f"node/'s rooms changed: {sorted(rooms)}; update README Layout"


# node/'s rooms from the top down: a module may import its own room and the rooms below it
LAYERS = ("cli", "ui", "audit", "replica", "net", "moderation", "interop", "media", "store",
          "base")  # fmt: skip
# the base's home repairs a database (store) and makes the node's certificate (net); the app
# (net) mounts the web UI's routes beside the APIs'; ``python -m node`` runs the CLI
UPWARD = {("node.home", "node.store.schema"), ("node.home", "node.net.tls"),
          ("node.net.app", "node.ui"), ("node.__main__", "node.cli.main")}  # fmt: skip


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ROOMS) else "base"


def test_rooms_import_only_downwards() -> None:
    graph = imports_graph(project_modules())
    wrong = sorted(
        (m, t)
        for m, targets in graph.items()
        if m.startswith("node")
        for t in targets
        if t.startswith("node")
        and LAYERS.index(room_of(t)) < LAYERS.index(room_of(m))
        and (m, t) not in UPWARD
    )
    assert not wrong, f"imports up the rooms {LAYERS} (top first): {wrong}"


def test_protocol_never_imports_node() -> None:
    graph = imports_graph(project_modules())
    wrong = {m: sorted(t for t in ts if t.startswith("node")) for m, ts in graph.items()
             if m.startswith("protocol") and any(t.startswith("node") for t in ts)}  # fmt: skip
    assert not wrong, wrong


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, [["b", "c"]]),
    ],
)
def test_the_checker_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_the_checker_counts_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n"
    )
    (tmp_path / "b.py").write_text("def f():\n    from pkg.c import thing\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    modules = {f"pkg.{n}": tmp_path / f"{n}.py" for n in "abc"}
    graph = imports_graph(modules)
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
