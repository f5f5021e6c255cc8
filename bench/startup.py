"""What starting upgradectl costs: the CPU of a fresh interpreter for each command path.

    python bench/startup.py                # median of 9 runs of each
    python bench/startup.py --runs 21 --json startup.json

Every figure is the CPU time (user + system) of a fresh `python` process, median of `--runs`,
minus the median of a bare `python -c pass` measured in the same loop (runs interleaved, so
both see the same load). Modules are byte-compiled, as after `pip install .`: the runs ignore
PYTHONDONTWRITEBYTECODE and keep their .pyc files in a private PYTHONPYCACHEPREFIX, warmed by
one run of each before measuring.

- **imports: upgrade over SSH**: importing every module `upgradectl upgrade` imports on a fleet
  reached over SSH (the command line, the run, the SSH transport with paramiko): the figure
  BENCHMARKS.md gives for "the upgrade path imports".
- **imports: upgrade, local nodes**: the same without the SSH transport.
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

UPGRADE_LOCAL = [
    "upgradectl.cli.commands", "upgradectl.app", "upgradectl.cli.views",
    "upgradectl.cli.question", "upgradectl.unattended", "upgradectl.transport.local",
]  # fmt: skip
# What Connections imports the first time a node is reached over SSH.
SSH = [
    "upgradectl.transport.ssh",
    "upgradectl.transport.known_hosts",
    "upgradectl.transport.sshconfig",
]

PLAYBOOK = """\
name: files
drain: {timeout: 30s, poll: 0.2s, stragglers: abort, settle: 1}
lock: "{{ dir }}/lock"
steps:
  is_blocked: "test -e {{ dir }}/blocked"
  block: "touch {{ dir }}/blocked"
  active: "ls {{ dir }}/sessions | wc -l"
  upgrade: "echo {{ version | quote }} > {{ dir }}/version"
  verify: "test -s {{ dir }}/version"
  version: "cat {{ dir }}/version 2>/dev/null || echo 1"
  unblock: "rm -f {{ dir }}/blocked"
"""


def site(folder: Path) -> Path:
    """A one-node site on this machine; returns its inventory."""
    (folder / "work" / "sessions").mkdir(parents=True)
    (folder / "files.yaml").write_text(PLAYBOOK)
    inventory = folder / "inventory.yaml"
    inventory.write_text(
        f"defaults: {{transport: local, playbook: ./files.yaml, vars: {{dir: {folder / 'work'}}}}}\n"
        "nodes:\n  node-a: {}\n"
    )
    return inventory


def paths(inventory: Path, state: Path) -> dict[str, list[str]]:
    """Each measured path: the arguments of its fresh interpreter."""

    def command(*args: str) -> list[str]:
        return ["-m", "upgradectl", "-i", str(inventory), "--state-dir", str(state), *args]

    def imports(modules: list[str]) -> list[str]:
        return ["-c", "import " + ", ".join(modules)]

    return {
        "python -c pass": ["-c", "pass"],
        "imports: upgrade over SSH": imports(UPGRADE_LOCAL + SSH),
        "imports: upgrade, local nodes": imports(UPGRADE_LOCAL),
        "upgradectl --help": command("--help"),
        "upgradectl check": command("check"),
        "upgradectl plan": command("plan", "node-a", "--version", "2"),
        "upgradectl history": command("history"),
        "upgradectl status": command("status"),
        "upgradectl upgrade --dry-run": command("upgrade", "node-a", "--version", "2", "--yes", "--dry-run", "-q"),
    }  # fmt: skip


def cpu_of(args: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of one run of a fresh interpreter with ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{args}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(runs: int, cache: Path, folder: Path) -> dict[str, float]:
    """Median CPU ms of each path, the bare interpreter's taken off all but its own row."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    measured = paths(site(folder), folder / "state")
    for args in measured.values():  # writes the .pyc files
        cpu_of(args, env)
    samples: dict[str, list[float]] = {name: [] for name in measured}
    for _ in range(runs):  # interleaved: a burst of load hits every path alike
        for name, args in measured.items():
            samples[name].append(cpu_of(args, env))
    medians = {name: 1000 * statistics.median(found) for name, found in samples.items()}
    bare = medians["python -c pass"]
    return {name: ms if name == "python -c pass" else ms - bare for name, ms in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each path (median)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(args.runs, Path(folder) / "pyc", Path(folder))
    load = os.getloadavg()[0]
    print(f"CPU ms, median of {args.runs}, minus bare python (load average {load:.2f})")
    for name, ms in figures.items():
        print(f"{ms:8.1f}  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": args.runs, "load": load, "ms": figures}))


if __name__ == "__main__":
    main()
