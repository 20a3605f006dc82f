"""The shape of the code, checked: the core never reaches up into Discord, no two files import
each other at run time, and a long file says why it is long."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "cogs")
ENTRY_POINTS = ("bot.__main__", "bot.cli")  # start the Discord client: the core files that may
LONG_FILE_LINES = 500
LONG_FILE_REASON = "Why this file is long:"


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The nodes inside `if TYPE_CHECKING:` blocks: they never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def runtime_imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every module `name` imports when it runs (function-level imports included)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module
            # `from bot.jobs import store` imports the module bot.jobs.store.
            yield from (f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known)


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(runtime_imports(name, path, known)) for name, path in known.items()}


def test_the_core_never_imports_discord_or_the_cogs() -> None:
    offenders = {
        name: sorted(
            target
            for target in targets
            if target.split(".")[0] in ("discord", "cogs") or target.startswith("discord.")
        )
        for name, targets in import_graph().items()
        if name.split(".")[0] == "bot" and not name.startswith(ENTRY_POINTS)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_two_files_import_each_other_at_run_time() -> None:
    graph = import_graph()
    edges = {
        name: {t for t in targets if t in graph and t != name} for name, targets in graph.items()
    }
    cycles: list[list[str]] = []
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert cycles == []


def test_a_long_file_says_why_it_is_long() -> None:
    unexplained = []
    for name, path in modules().items():
        source = path.read_text()
        if source.count("\n") > LONG_FILE_LINES:
            docstring = ast.get_docstring(ast.parse(source)) or ""
            if LONG_FILE_REASON not in docstring:
                unexplained.append(f"{name} ({source.count(chr(10))} lines)")
    assert unexplained == []


def test_the_checks_see_what_they_should() -> None:
    """The checks above would pass on an empty tree: make sure they read the real one."""
    graph = import_graph()
    assert "bot.services" in graph and "cogs.client" in graph
    assert "bot.services" in graph["cogs.client"]
    assert "discord" in graph["cogs.client"]
    assert "cogs.client" in graph["bot.cli.run"]
