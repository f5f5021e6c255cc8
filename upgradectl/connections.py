"""One connection per inventory node per run, opened on first use and shared by every step."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from upgradectl.model import Inventory, Node
from upgradectl.transport.base import Transport
from upgradectl.transport.local import LocalTransport


class Connections:
    """The run's transports, keyed by inventory node name; safe to use from several threads."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        accept_new_host_keys: bool = False,
        warn: Callable[[str], None] = lambda message: None,
        make: Callable[[Node], Transport] | None = None,
    ) -> None:
        self.inventory = inventory
        self.accept_new_host_keys = accept_new_host_keys
        self.warn = warn
        self._make = make or self._transport_for
        self._open: dict[str, Transport] = {}
        self._known_hosts: dict[str, Any] = {}  # path -> ssh.KnownHosts, read once per run
        self._lock = threading.Lock()

    def get(self, name: str) -> Transport:
        """The transport to node ``name`` (not connected until its first command)."""
        with self._lock:
            found = self._open.get(name)
        if found is not None:
            return found
        # Made outside the lock: under a fleet's handshakes the GIL is scarce, and holding the
        # lock while waiting for it made every node's first command queue behind the others'.
        made = self._make(self.inventory.nodes[name])
        with self._lock:
            return self._open.setdefault(name, made)

    def _transport_for(self, node: Node) -> Transport:
        if node.transport == "local":
            return LocalTransport(node.name)
        # paramiko is imported only when a node is really reached over SSH: `plan`, `check`
        # and `--help` stay fast.
        from upgradectl.transport.ssh import KnownHosts, SshTransport, resolve  # noqa: PLC0415

        endpoint = resolve(node.name, node.host, node.port, node.user, node.identity_file)
        with self._lock:
            known = self._known_hosts.get(endpoint.known_hosts)
            if known is None:
                known = self._known_hosts[endpoint.known_hosts] = KnownHosts(endpoint.known_hosts)
        jump = None
        if endpoint.proxy_jump:
            jump_node = self.inventory.nodes.get(endpoint.proxy_jump) or Node(
                name=endpoint.proxy_jump
            )
            jump = self._transport_for(jump_node)
        return SshTransport(
            endpoint,
            accept_new_host_keys=self.accept_new_host_keys,
            warn=self.warn,
            jump=jump,  # type: ignore[arg-type]
            known_hosts=known,
        )

    def opened(self) -> dict[str, int]:
        """How many connections each node needed this run (1 unless one dropped)."""
        with self._lock:
            return {name: transport.connections_opened for name, transport in self._open.items()}

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for transport in self._open.values():
                transport.close()
            self._open.clear()
