"""A demo that needs no infrastructure: one call server on this machine, live calls, a real upgrade.

The node uses ``transport: local`` and the bundled ``lab`` playbook, its control client being
this Python (no socat needed); the upgrade is the real ``upgradectl`` command, so what the demo
shows is what an operator sees.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

from upgradectl.lab import unixsocket
from upgradectl.lab.callgen import place_calls
from upgradectl.lab.callserver import CallService, NodeConfig
from upgradectl.lab.ports import free_ports

# Four calls end within two seconds; one outlasts the 4 s deadline and is forced, as a straggler.
# (Short, so that the README's first command shows the whole plan in a few seconds.)
CALL_SECONDS = [0.5, 1.0, 1.5, 2.0, 300.0]


def run_demo(keep: Path | None) -> int:
    """Start the demo node, place calls, upgrade it with the real CLI; the CLI's exit code."""
    folder = keep or Path(tempfile.mkdtemp(prefix="upgradectl-demo-"))
    (folder / "work").mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    node = NodeConfig("demo-1", port, folder / "ctl.sock", folder / "callserver", "1.0")
    inventory = _write_inventory(folder, node)
    service = CallService([node], folder)
    service.start()
    try:
        calls = place_calls("127.0.0.1", port, CALL_SECONDS, caller_prefix="caller")
        click.echo(
            f"demo-1 is serving {len(calls)} live calls; upgrading it to 2.0 with upgradectl:\n"
        )
        code = _upgradectl(
            inventory, folder, "upgrade", "demo-1", "--version", "2.0", "--timeout", "4s", "--yes"
        )
        click.echo("\nThe helpdesk report (`upgradectl history --forced`):")
        _upgradectl(inventory, folder, "history", "--forced")
        click.echo(f"\nInventory and journal of this demo: {inventory}, {folder / 'state'}")
        return code
    finally:
        service.stop()


def _write_inventory(folder: Path, node: NodeConfig) -> Path:
    # Every step of the demo asks the call server, several times a second while it drains: the
    # client is the socket module's file run as a script, a Python start that imports nothing
    # else (`python -m upgradectl.lab ask` would import the lab and click each time).
    ctl = f"{sys.executable} {unixsocket.__file__} {node.control}"
    inventory = {
        "defaults": {"transport": "local", "playbook": "lab"},
        "nodes": {
            node.name: {
                "vars": {
                    "ctl": ctl,
                    "ctl_socket": str(node.control),
                    "node_dir": str(folder / "work"),
                }
            }
        },
    }
    path = folder / "inventory.yaml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _upgradectl(inventory: Path, folder: Path, *args: str) -> int:
    command = [
        sys.executable,
        "-m",
        "upgradectl",
        "-i",
        str(inventory),
        "--state-dir",
        str(folder / "state"),
    ]
    return subprocess.run([*command, *args], check=False).returncode
