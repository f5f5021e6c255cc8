"""One connection per inventory node per run, opened on first use and shared by every step."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from upgradectl.model import Inventory, Node
from upgradectl.transport.base import Transport
from upgradectl.transport.local import LocalTransport

if TYPE_CHECKING:
    from upgradectl.transport.sshconfig import Answers, Hop


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
        # (user files, global files) -> KnownHosts, read once per run
        self._known_hosts: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}
        self._hops: dict[tuple[Hop, int], Transport] = {}  # jump hosts, keyed by how reached
        self._answers: Answers | None = None  # OpenSSH's, made with the first SSH transport
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
        return self._ssh(node.name, node.host, node.port, node.user, node.identity_file)

    def _ssh(
        self,
        name: str,
        host: str | None,
        port: int | None = None,
        user: str | None = None,
        identity_file: str | None = None,
        *,
        via: Transport | None = None,
    ) -> Transport:
        """An SSH transport; through ``via``, else through the hops of its own ProxyJump."""
        # paramiko is imported only when a node is really reached over SSH: `plan`, `check`
        # and `--help` stay fast.
        from upgradectl.transport.known_hosts import KnownHosts  # noqa: PLC0415
        from upgradectl.transport.ssh import SshTransport  # noqa: PLC0415
        from upgradectl.transport.sshconfig import Answers, resolve  # noqa: PLC0415

        with self._lock:
            answers = self._answers = self._answers or Answers()
        endpoint = resolve(name, host, port, user, identity_file, ask=answers.ask)
        jump = via
        if via is None:
            # ProxyJump a,b: reach a (as its own configuration says), through it b, through b us.
            for hop in endpoint.proxy_jump:
                jump = self._hop(hop, jump)
        with self._lock:
            files = (endpoint.known_hosts, endpoint.global_known_hosts)
            known = self._known_hosts.get(files)
            if known is None:
                known = self._known_hosts[files] = KnownHosts(*files)
        return SshTransport(
            endpoint,
            accept_new_host_keys=self.accept_new_host_keys,
            warn=self.warn,
            jump=jump,  # type: ignore[arg-type]
            known_hosts=known,
        )

    def _hop(self, hop: Hop, before: Transport | None) -> Transport:
        """The transport of one jump host, shared by every node behind it (one connection)."""
        key = (hop, id(before))
        with self._lock:
            found = self._hops.get(key)
        if found is not None:
            return found
        node = self.inventory.nodes.get(hop.host)
        if before is None and node is not None and hop.user is None and hop.port is None:
            made = self._transport_for(node)  # an inventory node: its own fields apply
        else:
            made = self._ssh(hop.host, hop.host, hop.port, hop.user, via=before)
        with self._lock:
            return self._hops.setdefault(key, made)

    def opened(self) -> dict[str, int]:
        """How many connections each node needed this run (1 unless one dropped)."""
        with self._lock:
            return {name: transport.connections_opened for name, transport in self._open.items()}

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for transport in [*self._open.values(), *self._hops.values()]:
                transport.close()
            self._open.clear()
            self._hops.clear()
