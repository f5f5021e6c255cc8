"""What starting upgradectl costs: the CPU of a fresh interpreter for each command path.

    python bench/startup.py                # median of 9 runs of each
    python bench/startup.py --runs 21 --json startup.json
    python bench/startup.py --against ../old-checkout   # before and after, side by side

Every figure is the CPU time (user + system) of a fresh `python` process, median of `--runs`,
minus the median of a bare `python -c pass` measured in the same loop (runs interleaved, so
both see the same load). Modules are byte-compiled, as after `pip install .`: the runs ignore
PYTHONDONTWRITEBYTECODE and keep their .pyc files in a private PYTHONPYCACHEPREFIX, warmed by
one run of each before measuring.

- **imports: upgrade over SSH**: importing every module `upgradectl upgrade` imports on a fleet
  reached over SSH (the command line, the run, the SSH transport with paramiko): the figure
  BENCHMARKS.md gives for "the upgrade path imports". The modules are those a real upgrade of
  the local node had imported by its end, and the SSH transport's.
- **imports: upgrade, local nodes**: the same without the SSH transport.
- **imports: its libraries alone**: click, PyYAML, Jinja2 and paramiko (as the SSH transport
  imports it): what no change to upgradectl's own modules can take off the first figure.
- the commands themselves (`--help`, `check`, `plan`, `history`, `status`, `upgrade --dry-run`),
  whole, on a one-node site of `transport: local` whose service is files: their imports and
  their own work. Each is one of the processes the test suite starts by the hundred.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs a command line, then prints the modules of upgradectl it imported by its end.
LOADED = (
    "import sys\nfrom upgradectl.cli import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
    "    print('LOADED', *sorted(name for name in sys.modules if name.startswith('upgradectl')))\n"
)
# What the upgrade path over SSH imports of others' code: the floor under its figure.
LIBRARIES = ["click", "yaml", "jinja2", "upgradectl.transport.paramiko_lean"]
# What Connections imports the first time a node is reached over SSH.
SSH = [
    "upgradectl.transport.ssh",
    "upgradectl.transport.known_hosts",
    "upgradectl.transport.sshconfig",
]

PLAYBOOK = Path(__file__).resolve().parent / "playbook.yaml"  # the fleet bench's: shell only


def site(folder: Path) -> Path:
    """A one-node site on this machine whose service is files (bench/playbook.yaml's); returns
    its inventory."""
    node_dir = folder / "node"
    node_dir.mkdir()
    (node_dir / "sessions").write_text("")
    (node_dir / "version").write_text("1\n")
    inventory = folder / "inventory.yaml"
    inventory.write_text(
        f"defaults: {{transport: local, playbook: {PLAYBOOK}, vars: {{node_dir: {node_dir}}}}}\n"
        "nodes:\n  node-a: {}\n"
    )
    return inventory


def paths(inventory: Path, state: Path, upgrade: list[str]) -> dict[str, list[str]]:
    """Each measured path: the arguments of its fresh interpreter; ``upgrade``: the modules of
    upgradectl that a real upgrade of the local node imported."""

    def command(*args: str) -> list[str]:
        return ["-m", "upgradectl", "-i", str(inventory), "--state-dir", str(state), *args]

    def imports(modules: list[str]) -> list[str]:
        return ["-c", "import " + ", ".join(modules)]

    return {
        "python -c pass": ["-c", "pass"],
        "imports: upgrade over SSH": imports(upgrade + SSH),
        "imports: upgrade, local nodes": imports(upgrade),
        "imports: its libraries alone": imports(LIBRARIES),
        "upgradectl --help": command("--help"),
        "upgradectl check": command("check"),
        "upgradectl plan": command("plan", "node-a", "--version", "2"),
        "upgradectl history": command("history"),
        "upgradectl status": command("status"),
        "upgradectl upgrade --dry-run": command("upgrade", "node-a", "--version", "2", "--yes", "--dry-run", "-q"),
    }  # fmt: skip


def cpu_of(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """CPU seconds (user + system) of one run of a fresh interpreter with ``args``, in ``cwd``
    (not a checkout's root, whose ``upgradectl/`` would come first on ``sys.path``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{args}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imported_by_upgrade(inventory: Path, state: Path, env: dict[str, str], cwd: Path) -> list[str]:
    """The modules of upgradectl a real `upgradectl upgrade` of the local node imports (those
    its functions import when they run included: what an import list written by hand misses)."""
    argv = ["-i", str(inventory), "--state-dir", str(state), "upgrade", "node-a", "--version", "2", "--yes", "-q"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", LOADED, *argv], env=env, cwd=cwd, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"upgrade: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout.split("LOADED", 1)[1].split()


def measure(runs: int, folder: Path, against: Path | None) -> dict[str, dict[str, float]]:
    """Median CPU ms of each path, the bare interpreter's taken off all but its own row; for
    this install, and for the checkout ``against`` (its ``upgradectl/`` first on the path)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pyc")
    envs = {"this install": env}
    if against is not None:
        envs[str(against)] = {**env, "PYTHONPATH": str(against.resolve())}
    inventory, state = site(folder), folder / "state"
    measured = {
        tree: paths(inventory, state, imported_by_upgrade(inventory, state, env, folder))
        for tree, env in envs.items()
    }
    jobs = [(tree, name) for tree in envs for name in measured[tree]]
    for tree, name in jobs:  # writes the .pyc files
        cpu_of(measured[tree][name], envs[tree], folder)
    samples: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
    for _ in range(runs):  # interleaved: a burst of load hits every path alike
        for tree, name in jobs:
            samples[tree, name].append(cpu_of(measured[tree][name], envs[tree], folder))
    figures: dict[str, dict[str, float]] = {}
    for tree in envs:
        medians = {name: 1000 * statistics.median(samples[tree, name]) for name in measured[tree]}
        bare = medians["python -c pass"]
        figures[tree] = {
            name: ms if name == "python -c pass" else ms - bare for name, ms in medians.items()
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each path (median)")
    parser.add_argument(
        "--against", metavar="CHECKOUT", type=Path,
        help="also measure the upgradectl of this checkout (an older commit), interleaved",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(args.runs, Path(folder), args.against)
    load = os.getloadavg()[0]
    print(f"CPU ms, median of {args.runs}, minus bare python (load average {load:.2f})")
    trees = list(figures)
    print("".join(f"{tree[-24:]:>26}" for tree in trees) + "  path")
    for name in figures["this install"]:
        print("".join(f"{figures[tree][name]:26.1f}" for tree in trees) + f"  {name}")
    if args.json:
        found: dict[str, object] = {"runs": args.runs, "load": load, "ms": figures["this install"]}
        if args.against is not None:
            found["against"] = {"checkout": str(args.against), "ms": figures[str(args.against)]}
        Path(args.json).write_text(json.dumps(found))


if __name__ == "__main__":
    main()
