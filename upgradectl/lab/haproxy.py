"""The Debian HAProxy in TCP mode in front of the lab's call servers, with an admin socket."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from upgradectl.lab.ports import free_ports
from upgradectl.lab.process import LabServer, ServerProcess
from upgradectl.lab.unixsocket import ask

HAPROXY = "haproxy"

# No health checks: a check would be a connection the call server does not expect, and an
# operator's `state drain` must stay exactly what the operator set.
_CONFIG = """\
global
    maxconn 4096
    stats socket {admin_socket} mode 666 level admin
    stats timeout 10s

defaults
    mode tcp
    timeout connect 2s
    # Calls are long and silent: idle timeouts must outlast any call of a rehearsal.
    timeout client 1h
    timeout server 1h

frontend calls_in
    bind {host}:{port}
    default_backend {backend}

backend {backend}
    balance leastconn
{servers}
"""


class ServerState(NamedTuple):
    """One backend server as `show stat` reports it."""

    status: str  # "no check" (in service, unchecked), "DRAIN", "MAINT", ...
    scur: int  # current sessions


class HaProxy(LabServer):
    """`haproxy -db` balancing TCP calls over the lab's nodes (balance leastconn)."""

    host = "127.0.0.1"

    def __init__(
        self,
        servers: Mapping[str, int],
        workdir: Path,
        admin_socket: Path,
        *,
        backend: str = "calls",
        port: int | None = None,
    ) -> None:
        self.servers = dict(servers)
        self.backend = backend
        self.admin_socket = admin_socket
        self.port = port if port is not None else free_ports(1)[0]
        self.config_path = workdir / "haproxy.cfg"
        self.process = ServerProcess(
            "haproxy", [HAPROXY, "-db", "-f", str(self.config_path)], workdir / "haproxy.log"
        )

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Run one admin-socket command (e.g. `set server calls/node-1 state drain`)."""
        return ask(self.admin_socket, command, timeout)

    def server_states(self) -> dict[str, ServerState]:
        """Status and current sessions of every server of the backend, from `show stat`."""
        header, *rows = self.admin("show stat").splitlines()
        columns = header.removeprefix("# ").split(",")
        states = {}
        for row in csv.DictReader(rows, fieldnames=columns):
            if row["pxname"] == self.backend and row["svname"] not in ("FRONTEND", "BACKEND"):
                states[row["svname"]] = ServerState(row["status"], int(row["scur"]))
        return states

    def _write_config(self) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{port}" for name, port in self.servers.items()
        )
        self.config_path.write_text(
            _CONFIG.format(
                admin_socket=self.admin_socket,
                host=self.host,
                port=self.port,
                backend=self.backend,
                servers=servers,
            )
        )

    def _is_ready(self) -> bool:
        try:
            return "Name: HAProxy" in self.admin("show info")
        except OSError:
            return False
