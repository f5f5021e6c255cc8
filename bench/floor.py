"""The floor: a bare paramiko script doing a plain upgrade's six commands on every node.

    python bench/floor.py INVENTORY KNOWN_HOSTS [--sequential]

No rules, journal, events or recovery: one connection per node (host key checked against
KNOWN_HOSTS, the inventory's key, TCP_NODELAY as upgradectl sets it), then the same six round
trips a plain upgrade of bench/playbook.yaml takes with upgradectl: the state (blocked, active,
version), the lock with the block check, block, the count, upgrade, verify with unblock and the
lock's release. All nodes at once, each in its own thread (or one after another). bench/fleet.py
runs it on the same fleet, in the same invocation, as upgradectl and Ansible; its wall time is
what no controller on this machine can beat by much.
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import paramiko
import yaml

VERSION = "2"


def commands(node_dir: str) -> list[str]:
    """The six round trips of one node's upgrade, as shell commands."""
    d = shlex.quote(node_dir)
    active = (
        f"awk -v now=\"$(date +%s.%N)\" '$1 > now {{live++}} END {{print live + 0}}' {d}/sessions"
    )
    lock = f"{d}/upgradectl.lock"
    return [
        f"test -e {d}/blocked; echo $?; {active}; cat {d}/version",
        f'tmp=$(mktemp {lock}.XXXXXX) && echo floor > "$tmp" && ln -n "$tmp" {lock}'
        f' && echo taken; rm -f "$tmp"; test -e {d}/blocked; echo $?',
        f"touch {d}/blocked",
        f"{active}; test -e {d}/blocked; echo $?",
        f"printf '%s\\n' {VERSION} > {d}/version",
        f"grep -qx {VERSION} {d}/version && rm -f {d}/blocked && rm -f {lock}",
    ]


def run(client: paramiko.SSHClient, command: str) -> int:
    """One command on its own channel, its output read to the end; its exit code."""
    _, stdout, _ = client.exec_command(command, timeout=60)
    stdout.read()
    return stdout.channel.recv_exit_status()


def upgrade(node: dict[str, Any], defaults: dict[str, Any], known_hosts: str) -> None:
    """Connect to one node and run its six commands; raise on any failure."""
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        node["host"],
        port=node["port"],
        username=defaults["user"],
        key_filename=defaults["identity_file"],
        look_for_keys=False,
        allow_agent=False,
        # A thousand handshakes at once on two cores: paramiko's 15 s banner wait is too short.
        timeout=120,
        banner_timeout=120,
        auth_timeout=120,
    )
    transport = client.get_transport()
    assert transport is not None and isinstance(transport.sock, socket.socket)
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for command in commands(node["vars"]["node_dir"]):
            code = run(client, command)
            if code != 0:
                raise RuntimeError(f"{node['host']}:{node['port']}: exit {code}: {command}")
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Upgrade every node of the inventory; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inventory", type=Path)
    parser.add_argument("known_hosts")
    parser.add_argument("--sequential", action="store_true")
    args = parser.parse_args(argv)
    inventory = yaml.safe_load(args.inventory.read_text())
    nodes = list(inventory["nodes"].values())
    failures: list[BaseException] = []

    def one(node: dict[str, Any]) -> None:
        try:
            upgrade(node, inventory["defaults"], args.known_hosts)
        except Exception as exc:  # reported below: the bench checks every node's version
            failures.append(exc)

    if args.sequential:
        for node in nodes:
            one(node)
    else:
        threads = [threading.Thread(target=one, args=(node,)) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for failure in failures[:5]:
        print(f"floor: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
