"""A fleet on one machine: N nodes (sshd + call service each), optionally HAProxy in front.

The lab directory holds what an operator reads: `inventory.yaml`, `known_hosts`, the servers'
configurations and logs. What the nodes' log-in user must reach (authorized_keys, the control
sockets, each node's writable `node_dir`) lives in a short, world-traversable directory under the
system temp dir: sshd reads authorized_keys as that user, pytest's tmp_path sits below a 0700
directory, and unix socket paths may not exceed 107 bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import yaml

from upgradectl.lab.account import LabAccount, lab_account
from upgradectl.lab.callserver import CallService, NodeConfig
from upgradectl.lab.haproxy import HaProxy
from upgradectl.lab.keys import KeyPair
from upgradectl.lab.ports import free_ports, ports_from
from upgradectl.lab.process import LabServer, start_servers, stop_servers
from upgradectl.lab.running import Running
from upgradectl.lab.sshd import SshServer
from upgradectl.lab.unixsocket import ask

PLAYBOOK = "lab"  # without a balancer: block at each node's own call server
BALANCED_PLAYBOOK = "haproxy"  # behind HAProxy: block there, as production would
GROUP = "voice"
BACKEND = "calls"
BALANCER = "lb"
CALL_SERVER = "socat - UNIX-CONNECT:{{ ctl_socket | quote }}"


@dataclass(frozen=True)
class LabNode:
    """One node of the lab: its sshd, its call service's port and control socket, its own dir."""

    name: str
    ssh: SshServer
    call_port: int
    ctl_socket: Path
    node_dir: Path  # writable by the lab user: lock files and the like
    state_dir: Path  # the call service's (its version survives a restart)
    pair: str | None

    def control(self, command: str) -> str:
        """Run a call-service control command (`count`, `block`, `upgrade 2.0`, ...)."""
        return ask(self.ctl_socket, command)

    def inventory_entry(self) -> dict[str, object]:
        """This node as `inventory.yaml` lists it."""
        entry: dict[str, object] = {
            "host": self.ssh.host,
            "port": self.ssh.port,
            "groups": [GROUP],
        }
        if self.pair:
            entry["pair"] = self.pair
        entry["vars"] = {
            "ctl_socket": str(self.ctl_socket),
            "node_dir": str(self.node_dir),
            # The node lock lives in the node's own directory, not /var/tmp, which every lab on
            # this machine shares (their nodes have the same names).
            "lock_dir": str(self.node_dir),
            "call_port": self.call_port,
        }
        return entry


@dataclass(frozen=True)
class SshHome:
    """A HOME for running the CLI against a lab, and the environment that uses it."""

    home: Path
    known_hosts: Path
    env: dict[str, str]


class Lab(Running):
    """Start `nodes` lab nodes (and HAProxy with `haproxy=True`) and describe them in an inventory.

    Pass `host_key`/`client_key` to reuse keys across labs (a test session does); otherwise the
    lab makes its own under `directory/keys`. Ports are free ones at random, or, from
    `base_port`, in order: each node's sshd then its call port, then the balancer's sshd and
    HAProxy's port for calls.
    """

    def __init__(
        self,
        directory: Path,
        nodes: int = 2,
        *,
        haproxy: bool = False,
        version: str = "1.0",
        host_key: KeyPair | None = None,
        client_key: KeyPair | None = None,
        base_port: int | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a lab needs at least one node")
        self.dir = directory
        self.node_count = nodes
        self.with_haproxy = haproxy
        self.version = version
        self._host_key = host_key
        self._client_key = client_key
        self.base_port = base_port
        self.run_dir: Path | None = None
        self.nodes: list[LabNode] = []
        self.balancer: SshServer | None = None
        self.haproxy: HaProxy | None = None
        self.callservice: CallService | None = None

    @property
    def inventory_path(self) -> Path:
        """The lab's `inventory.yaml`."""
        return self.dir / "inventory.yaml"

    @property
    def known_hosts_path(self) -> Path:
        """The host keys of every node, as OpenSSH's known_hosts."""
        return self.dir / "known_hosts"

    @property
    def user(self) -> str:
        """The user every node logs in."""
        return self.nodes[0].ssh.user

    @property
    def identity_file(self) -> Path:
        """The private key that logs in to every node."""
        return self.nodes[0].ssh.identity_file

    def node(self, name: str) -> LabNode:
        """The node called `name`."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def servers(self) -> list[LabServer]:
        """Every server the lab runs."""
        servers: list[LabServer] = [node.ssh for node in self.nodes]
        for server in (self.balancer, self.callservice, self.haproxy):
            if server is not None:
                servers.append(server)
        return servers

    def pids(self) -> set[int]:
        """The PIDs of every lab server and of everything they forked."""
        return {pid for server in self.servers() for pid in server.pids()}

    def start(self) -> Self:
        """Start every server (in parallel) and write the inventory and known_hosts."""
        try:
            self._build(lab_account())
            start_servers(self.servers())
            self._write_inventory()
            self.known_hosts_path.write_text(self._known_hosts())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server and remove the run directory; safe to call twice."""
        stop_servers(self.servers())
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def write_home(self, home: Path) -> Path:
        """Create `home/.ssh/known_hosts` (and nothing else) for the lab; returns its path."""
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        known_hosts = ssh_dir / "known_hosts"
        known_hosts.write_text(self._known_hosts())
        return known_hosts

    def ssh_home(self, home: Path) -> SshHome:
        """A HOME that trusts the lab's host keys, and an environment without ssh-agent using it."""
        known_hosts = self.write_home(home)
        env = {key: value for key, value in os.environ.items() if key != "SSH_AUTH_SOCK"}
        env["HOME"] = str(home)
        return SshHome(home, known_hosts, env)

    def _build(self, account: LabAccount) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        run_dir = self.run_dir = Path(tempfile.mkdtemp(prefix="upgradectl-lab-"))
        run_dir.chmod(0o755)
        host_key = self._host_key or KeyPair.generate(self.dir / "keys" / "host_key", "lab host")
        client_key = self._client_key or KeyPair.generate(
            self.dir / "keys" / "client_key", "lab client"
        )
        authorized_keys = run_dir / "authorized_keys"
        authorized_keys.write_text(client_key.public_line() + "\n")
        authorized_keys.chmod(0o644)
        count = 2 * self.node_count + 2
        ports = iter(
            free_ports(count) if self.base_port is None else ports_from(self.base_port, count)
        )

        def ssh_server(name: str) -> SshServer:
            return SshServer(
                name,
                self.dir / name,
                host_key=host_key,
                client_key=client_key,
                authorized_keys=authorized_keys,
                user=account.name,
                port=next(ports),
            )

        for number in range(1, self.node_count + 1):
            name = f"node-{number}"
            node_root = run_dir / name
            self.nodes.append(
                LabNode(
                    name=name,
                    ssh=ssh_server(name),
                    call_port=next(ports),
                    ctl_socket=node_root / "ctl.sock",
                    node_dir=_make_node_dir(node_root, account),
                    state_dir=node_root / "service",
                    pair=self._pair_of(number),
                )
            )
        self.callservice = CallService([self._node_config(node) for node in self.nodes], self.dir)
        if self.with_haproxy:
            self.balancer = ssh_server(BALANCER)
            self.haproxy = HaProxy(
                {node.name: node.call_port for node in self.nodes},
                self.dir,
                run_dir / "admin.sock",
                backend=BACKEND,
                port=next(ports),
            )

    def _pair_of(self, number: int) -> str | None:
        """node-1 pairs with node-2, node-3 with node-4, ...; an odd last node has no pair."""
        partner = number + 1 if number % 2 else number - 1
        return f"node-{partner}" if partner <= self.node_count else None

    def _node_config(self, node: LabNode) -> NodeConfig:
        return NodeConfig(
            node.name,
            node.call_port,
            node.ctl_socket,
            node.state_dir,
            self.version,
            sshd_config=node.ssh.config_path,
        )

    def _inventory(self) -> dict[str, object]:
        balancer_vars: dict[str, object] = {}
        nodes: dict[str, object] = {}
        playbook = PLAYBOOK
        if self.balancer is not None and self.haproxy is not None:
            playbook = BALANCED_PLAYBOOK
            # In defaults, so every node's plan resolves them (the lb node inherits them too).
            balancer_vars = {
                "lb_host": BALANCER,
                "lb_socket": str(self.haproxy.admin_socket),
                "backend": BACKEND,
                # The bundled haproxy playbook asks how a node itself is upgraded: here, by its
                # call server, so the playbook works on the lab as it is.
                "upgrade_command": f"echo upgrade {{{{ version | quote }}}} | {CALL_SERVER} | grep '^upgraded to '",
                "verify_command": f"echo version | {CALL_SERVER} | grep '^version '",
                "version_command": f"echo version | {CALL_SERVER} | sed -n 's/^version //p'",
            }
            # The balancer runs no call server: it has no playbook, steps reach it with `on:`.
            nodes[BALANCER] = {"host": self.balancer.host, "port": self.balancer.port}
        for node in self.nodes:
            entry = node.inventory_entry()
            entry["playbook"] = playbook
            nodes[node.name] = entry
        return {
            "defaults": {
                "user": self.user,
                "identity_file": str(self.identity_file),
                "vars": balancer_vars,
            },
            "groups": {GROUP: {"max_unavailable": 1}},
            "nodes": nodes,
        }

    def _write_inventory(self) -> None:
        self.inventory_path.write_text(yaml.safe_dump(self._inventory(), sort_keys=False))

    def _known_hosts(self) -> str:
        servers = [node.ssh for node in self.nodes]
        if self.balancer is not None:
            servers.append(self.balancer)
        return "".join(server.known_hosts_line() + "\n" for server in servers)


def _make_node_dir(node_root: Path, account: LabAccount) -> Path:
    """`node_root/work`, owned by the lab user; `node_root` itself stays ours but traversable."""
    node_dir = node_root / "work"
    node_dir.mkdir(parents=True)
    for path in (node_root, node_dir):
        path.chmod(0o755)
    account.give(node_dir)
    return node_dir
