"""How `check` and `plan` scale with the inventory: they must stay linear, under 1 ms a node.

    python bench/check_plan.py                 # 1,000 and 10,000 nodes
    python bench/check_plan.py --nodes 40000

Each size writes an inventory of paired nodes in one group behind a balancer, using the bundled
`haproxy` playbook, then runs the real `upgradectl check` and `upgradectl plan --all` in this
process (output discarded) and prints the CPU time (and wall time) of each, per node.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import yaml

from upgradectl.cli import main


def inventory(nodes: int) -> dict[str, object]:
    """``nodes`` call servers in pairs, in group `voice`, behind `lb-1`."""
    members: dict[str, object] = {"lb-1": {"host": "10.255.0.1"}}
    for i in range(nodes):
        peer = i + 1 if i % 2 == 0 else i - 1
        address = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"
        members[f"node-{i}"] = {"host": address, "groups": ["voice"], "pair": f"node-{peer}"}
    return {
        "defaults": {"user": "deploy", "playbook": "haproxy", "vars": {"lb_host": "lb-1"}},
        "groups": {"voice": {"max_unavailable": "10%"}},
        "nodes": members,
    }


def measure(args: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one in-process run of the command line."""
    cpu, wall = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(args)
        except SystemExit as done:
            if done.code not in (0, None):
                raise RuntimeError(f"{args}: exit {done.code}") from None
    return time.process_time() - cpu, time.perf_counter() - wall


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, action="append", help="inventory sizes (repeatable)")
    sizes = parser.parse_args().nodes or [1000, 10000]
    print(f"{'nodes':>7} {'command':<8} {'cpu s':>7} {'wall s':>7} {'ms/node (cpu)':>14}")
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            path = Path(folder) / f"inventory-{size}.yaml"
            path.write_text(yaml.safe_dump(inventory(size)))
            for name, args in (
                ("check", ["check"]),
                ("plan", ["plan", "--all", "--version", "2.4"]),
            ):
                cpu, wall = measure(["-i", str(path), *args])
                print(f"{size:>7} {name:<8} {cpu:>7.2f} {wall:>7.2f} {1000 * cpu / size:>14.3f}")


if __name__ == "__main__":
    main_bench()
