"""The import graph of upgradectl: no cycles, and the command line sits on top of everything."""

from __future__ import annotations

import ast
from pathlib import Path

import upgradectl

PACKAGE = Path(upgradectl.__file__).parent


def module_name(path: Path) -> str:
    """``upgradectl/cli/views.py`` -> ``upgradectl.cli.views``; a package is its ``__init__``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every dotted name ``path`` imports anywhere in it (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from upgradectl.cli import views` imports the module upgradectl.cli.views
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the upgradectl modules it imports."""
    found = modules()
    return {name: (imports(path) & set(found)) - {name} for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(name: str) -> None:  # Tarjan's algorithm; the graph is small, recursion is fine
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in sorted(edges[name]):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while (member := stack.pop()) != name:
                group.append(member)
            groups.append(sorted([name, *group]))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return [group for group in groups if len(group) > 1]


def parents(name: str) -> set[str]:
    """The packages Python imports before ``name``: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = name.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts))}


def test_no_module_of_upgradectl_imports_itself_back_through_others() -> None:
    edges = graph()
    # A package's __init__ importing its own modules is how packages work, not a cycle.
    acyclic = {name: targets - parents(name) for name, targets in edges.items()}
    assert cycles(acyclic) == []


def test_nothing_below_the_command_line_imports_it() -> None:
    outside = {
        name: sorted(target for target in targets if target.startswith("upgradectl.cli"))
        for name, targets in graph().items()
        if not (name == "upgradectl.cli" or name.startswith("upgradectl.cli."))
    }
    assert {name: found for name, found in outside.items() if found} == {
        "upgradectl.__main__": ["upgradectl.cli"]
    }


def test_the_graph_reader_sees_imports_in_functions_and_type_checking_blocks() -> None:
    edges = graph()
    assert "upgradectl.cli.views" in edges["upgradectl.cli.commands"]  # top level
    assert "upgradectl.app" in edges["upgradectl.cli.commands"]  # inside a function
    assert "upgradectl.status" in edges["upgradectl.cli.render"]  # under TYPE_CHECKING
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_click_and_rich_are_used_by_the_command_lines_only() -> None:
    users = {
        name
        for name, path in modules().items()
        if {imported.split(".")[0] for imported in imports(path)} & {"click", "rich", "plotext"}
        and not name.startswith("upgradectl.cli")
    }
    # The lab has a command line of its own (`python -m upgradectl.lab`), the demo its command.
    assert users <= {"upgradectl.lab.__main__", "upgradectl.lab.demo"}
