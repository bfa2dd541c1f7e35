"""The house imports only downwards: read `bridge/`'s imports with `ast` and check the rules.

- no circle among the modules of `bridge` (imports run when a module is imported: those at
  module level, in classes and under `try`; not those inside functions, which run later and
  are how an optional extra or a slow import is deferred, nor those under `if TYPE_CHECKING:`,
  which never run);
- nothing imports `bridge.cli` but `bridge/__main__.py` (the commands are the edge);
- the engines (`poll`, `receive`, `deliver`) never import click, a store backend, the CLI or
  the daemon, wherever the import is;
- no SQL outside `bridge/store/`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "bridge"
ENGINES = ("bridge.poll", "bridge.receive", "bridge.deliver")
FORBIDDEN_IN_ENGINES = (
    "click",
    "sqlite3",
    "sqlite_utils",
    "psycopg",
    "psycopg_pool",
    "bridge.store.sqlite",
    "bridge.store.postgres",
    "bridge.cli",
    "bridge.daemon",
)
SQL = re.compile(
    r"SELECT\s.*\sFROM\s|INSERT\s+INTO\s|UPDATE\s.*\sSET\s|DELETE\s+FROM\s|CREATE\s+TABLE\s"
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported
    line: int
    at_import_time: bool  # False inside a function or under `if TYPE_CHECKING:`


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, at_import_time: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        now = at_import_time
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            now = False
        yield child, now
        if isinstance(child, ast.If) and _is_type_checking(child):
            for stmt in child.body:
                yield stmt, False
                yield from _walk(stmt, False)
            for stmt in child.orelse:
                yield stmt, now
                yield from _walk(stmt, now)
            continue
        yield from _walk(child, now)


def imports(root: Path) -> list[Import]:
    known = modules(root)
    found = []
    for name, path in known.items():
        tree = ast.parse(path.read_text("utf-8"), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node, at_import_time in _walk(tree, True):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from a import b` imports the module `a.b` when there is one, else `a`.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            found += [Import(name, t, node.lineno, at_import_time) for t in targets]
    return found


def circles(root: Path) -> list[list[str]]:
    """Each import circle among the modules under `root` (imports at import time only)."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for imp in imports(root):
        if imp.at_import_time and imp.target in known and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return found


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def sql_strings(root: Path) -> Iterator[tuple[str, int, str]]:
    for name, path in modules(root).items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = " ".join(node.value.split())
                if SQL.search(text):
                    yield name, node.lineno, text[:60]


def test_the_checks_see_the_whole_package() -> None:
    names = modules(PACKAGE)
    assert {"bridge.cli", "bridge.store.sqlite.store", "bridge.poll.engine"} <= set(names)
    assert len(imports(PACKAGE)) > 100


def test_no_import_circle() -> None:
    assert circles(PACKAGE) == []


def test_nothing_imports_the_command_line() -> None:
    offenders = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in imports(PACKAGE)
        if within(imp.target, "bridge.cli")
        and not within(imp.module, "bridge.cli")
        and imp.module != "bridge.__main__"
    ]
    assert offenders == []


def test_the_engines_know_no_click_no_backend_no_cli_and_no_daemon() -> None:
    offenders = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in imports(PACKAGE)
        if any(within(imp.module, engine) for engine in ENGINES)
        and any(within(imp.target, bad) for bad in FORBIDDEN_IN_ENGINES)
    ]
    assert offenders == []


def test_no_sql_outside_the_store() -> None:
    found = list(sql_strings(PACKAGE))
    assert any(within(name, "bridge.store") for name, _, _ in found)  # the regex does see SQL
    offenders = [f"{n}:{line}: {text}" for n, line, text in found if not within(n, "bridge.store")]
    assert offenders == []


def test_a_circle_and_a_forbidden_import_are_caught(tmp_path: Path) -> None:
    root = tmp_path / "bridge"
    (root / "poll").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from bridge import b\n")
    (root / "b.py").write_text("import bridge.a\n\ndef later():\n    import bridge.c\n")
    (root / "c.py").write_text("from bridge.b import later\n")
    (root / "poll" / "__init__.py").write_text("")
    (root / "poll" / "engine.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bridge import c\n"
        "def f():\n    import click\n    return 'SELECT id FROM events'\n"
    )
    assert circles(root) == [["bridge.a", "bridge.b", "bridge.a"]]
    engine = [i for i in imports(root) if i.module == "bridge.poll.engine"]
    assert [(i.target, i.at_import_time) for i in engine] == [
        ("typing", True),
        ("bridge.c", False),
        ("click", False),
    ]
    assert [name for name, _, _ in sql_strings(root)] == ["bridge.poll.engine"]
