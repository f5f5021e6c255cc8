"""The import graph of upgradectl: no cycles, the command line on top of everything; and what
each command path imports to start (no paramiko without an SSH node, nothing heavy it never uses).
"""

from __future__ import annotations

import ast
import subprocess
import sys
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


# --- what each command path imports (start-up cost: BENCHMARKS.md, bench/startup.py) -----------

# Run in a fresh interpreter: the command line's main(), then every module loaded by then.
_LOADED = (
    "import sys\nfrom upgradectl.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as done:\n"
    "    print('LOADED', *sorted(sys.modules))\n    raise\n"
)
# What the upgrade path imports when its nodes are reached over SSH (Connections does, lazily).
UPGRADE_OVER_SSH = (
    "upgradectl.cli.commands", "upgradectl.app", "upgradectl.cli.views", "upgradectl.cli.question",
    "upgradectl.transport.ssh", "upgradectl.transport.known_hosts", "upgradectl.transport.sshconfig",
)  # fmt: skip
# Libraries no command path needs to start: each cost milliseconds of every start-up.
NEVER_AT_START = {
    "http": "--notify's webhook posts only",
    "urllib.request": "--notify's webhook posts only",
    "ssl": "--notify's webhook posts only",
    "email": "importlib.metadata and http.client read mail headers",
    "importlib.metadata": "paramiko's own version: transport/paramiko_lean.py",
    "invoke": "paramiko.config's Match exec: transport/paramiko_lean.py",
    "unittest": "invoke imports unittest.mock",
    "tenacity": "transport/backoff.py",
    "zoneinfo": "--tz only",
    "asyncio": "nothing here is async",
    "rich": "the live table on a terminal only",
    "plotext": "`history RUN_ID` only",
}


def loaded(argv: list[str], cwd: Path) -> set[str]:
    """The modules a real ``upgradectl ARGV`` has imported when it exits."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, *argv], cwd=cwd, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split("LOADED", 1)[1].split())


def libraries(modules: set[str]) -> set[str]:
    """The third-party packages among ``modules`` (C helpers such as ``_cffi_backend`` aside)."""
    tops = {name.split(".")[0] for name in modules}
    return {top for top in tops - set(sys.stdlib_module_names) if not top.startswith("_")} - {
        "upgradectl", "cython_runtime"
    }  # fmt: skip


def heavy(modules: set[str]) -> set[str]:
    """Those of ``modules`` that NEVER_AT_START names (a package or one of its modules)."""
    return {
        name
        for name in NEVER_AT_START
        for found in modules
        if found == name or found.startswith(f"{name}.")
    }


def test_the_commands_on_local_nodes_never_import_paramiko_nor_what_no_start_needs(
    local_site: Path,
) -> None:
    on_site = ["-i", "inventory.yaml", "--state-dir", "state"]
    commands = {
        "--help": ["--help"],
        "upgrade": [*on_site, "upgrade", "node-a", "--version", "2", "--yes", "-q"],
        "history": [*on_site, "history"],
        "status": [*on_site, "status"],
        "plan": [*on_site, "plan", "node-a", "--version", "3"],
        "check": [*on_site, "check"],
        "drain": [*on_site, "drain", "node-a", "--yes", "--dry-run", "-q"],
    }
    found = {name: loaded(argv, local_site) for name, argv in commands.items()}
    plan_libraries = {"click", "yaml", "jinja2", "markupsafe"}
    assert {name: libraries(modules) for name, modules in found.items()} == {
        "--help": {"click"}, "history": {"click"}, "upgrade": plan_libraries,
        "status": plan_libraries, "plan": plan_libraries, "check": plan_libraries,
        "drain": plan_libraries,
    }  # fmt: skip
    assert {name: heavy(modules) for name, modules in found.items() if heavy(modules)} == {}
    # Reading the journals needs no inventory: no model (its dataclasses), no loader, no plan.
    model = {"upgradectl.model", "upgradectl.loader", "upgradectl.plan"}
    assert found["history"] & model == set()


def test_the_upgrade_path_over_ssh_imports_paramiko_and_nothing_heavier() -> None:
    probe = f"import sys, {', '.join(UPGRADE_OVER_SSH)}; print(*sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = set(done.stdout.split())
    assert libraries(modules) == {
        "click", "yaml", "jinja2", "markupsafe", "paramiko", "cryptography", "nacl", "bcrypt"
    }  # fmt: skip
    assert heavy(modules) == set()


def test_paramiko_imported_lean_knows_its_own_version_as_importlib_metadata_does() -> None:
    probe = (
        "from upgradectl.transport.paramiko_lean import paramiko\n"
        "import sys; lean = 'importlib.metadata' in sys.modules\n"
        "from importlib import metadata\n"
        "print(lean, paramiko.__version__, metadata.version('paramiko'))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    lean, version, real = done.stdout.split()
    assert (lean, version) == ("False", real)
