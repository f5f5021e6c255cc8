"""A call-server simulator: the long-session service on every lab node.

Calls are long-lived TCP connections on 127.0.0.1 with a line protocol:

    client: CALL <caller-id> <seconds>     server: OK <call-id>   (or BUSY, then closes)
    client: BYE                            server: BYE, then closes
                                           server: HANGUP, then closes (the server cut the call)

How long a call lasts is the client's business; `<seconds>` is only what the caller intends.

Each node also has a control socket (a unix stream socket, mode 0666) that takes one command per
connection and answers text, so playbooks drive it like a telephony CLI over SSH:
`echo count | socat - UNIX-CONNECT:/path/ctl.sock`. Like such CLIs, an error is only text.

One process serves every node of a lab (`python -m upgradectl.lab callserver NODES.json`): a
Python process per node would make a 200-node lab slow to start. Nodes share nothing but the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from upgradectl.lab.process import LabServer, ServerProcess, descendants, kill_descendants
from upgradectl.lab.sshd import pid_file
from upgradectl.lab.unixsocket import ask

REQUEST_TIMEOUT = 10.0
_SOCKET_MODE = 0o666  # the lab user, not the server's owner, runs socat against it


@dataclass(frozen=True)
class NodeConfig:
    """Where one node's call service listens and keeps its state."""

    name: str
    port: int
    control: Path
    state_dir: Path
    version: str  # the version a node starts with, unless its state dir already holds one
    sshd_config: Path | None = None  # the node's sshd, which `poweroff` takes down


@dataclass
class LiveCall:
    """A call in progress."""

    call_id: str
    caller: str
    peer: str
    started: float  # time.monotonic()
    writer: asyncio.StreamWriter

    def cut(self) -> None:
        """Hang up on the caller, as a server restart or an operator would."""
        self.writer.write(b"HANGUP\n")
        self.writer.close()


class CallNode:
    """One node's call service: its live calls, whether it takes new ones, and its version."""

    def __init__(self, config: NodeConfig) -> None:
        self.name = config.name
        self.blocked = False
        self.calls: dict[str, LiveCall] = {}
        self._serial = itertools.count(1)
        self._version_file = config.state_dir / "version"
        if not self._version_file.exists():
            config.state_dir.mkdir(parents=True, exist_ok=True)
            self._version_file.write_text(config.version)
        self.version = self._version_file.read_text().strip()
        self._sshd_config = config.sshd_config
        self._commands: dict[str, Callable[[str], str]] = {
            "count": self._count,
            "list": self._list,
            "hangup": self._hangup,
            "block": self._block,
            "unblock": self._unblock,
            "state": self._state,
            "version": self._report_version,
            "upgrade": self._upgrade,
            "poweroff": self._poweroff,
        }

    def control(self, line: str) -> str:
        """Run one control command and return its answer (newline-terminated, or empty)."""
        command, _, argument = line.strip().partition(" ")
        handler = self._commands.get(command)
        if handler is None:
            return "error: unknown command\n"
        return handler(argument.strip())

    async def serve_call(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Carry one call from CALL to BYE, EOF or a cut."""
        try:
            request = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            words = request.decode(errors="replace").split()
            if len(words) != 3 or words[0] != "CALL":
                writer.write(b"ERROR bad request\n")
            elif self.blocked:
                writer.write(b"BUSY\n")
            else:
                await self._carry(words[1], reader, writer)
        except (TimeoutError, ConnectionError, ValueError):
            pass  # a caller that never spoke, or vanished: nothing to carry
        finally:
            writer.close()

    async def _carry(
        self, caller: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername"))
        call = LiveCall(f"{self.name}-{next(self._serial)}", caller, peer, time.monotonic(), writer)
        self.calls[call.call_id] = call
        writer.write(f"OK {call.call_id}\n".encode())
        try:
            while line := await reader.readline():
                if line.strip() == b"BYE":
                    writer.write(b"BYE\n")
                    await writer.drain()
                    return
        finally:
            self.calls.pop(call.call_id, None)

    async def serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one control command, then close."""
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            writer.write(self.control(line.decode(errors="replace")).encode())
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _cut(self, calls: Sequence[LiveCall]) -> int:
        for call in calls:
            self.calls.pop(call.call_id, None)
            call.cut()
        return len(calls)

    def _count(self, _: str) -> str:
        return f"{len(self.calls)} active\n"

    def _list(self, _: str) -> str:
        now = time.monotonic()
        return "".join(
            f"{call.call_id} {int(now - call.started)} {call.caller}\n"
            for call in self.calls.values()
        )

    def _hangup(self, target: str) -> str:
        if not target:
            return "error: hangup needs 'all' or a call id\n"
        if target == "all":
            chosen = list(self.calls.values())
        else:
            chosen = [self.calls[target]] if target in self.calls else []
        return f"hung up {self._cut(chosen)}\n"

    def _block(self, _: str) -> str:
        self.blocked = True
        return "blocked\n"

    def _unblock(self, _: str) -> str:
        self.blocked = False
        return "ready\n"

    def _state(self, _: str) -> str:
        return "blocked\n" if self.blocked else "ready\n"

    def _report_version(self, _: str) -> str:
        return f"version {self.version}\n"

    def _upgrade(self, version: str) -> str:
        if not version:
            return "error: upgrade needs a version\n"
        # A restart under load cuts every live call: exactly what a drain exists to prevent.
        self._cut(list(self.calls.values()))
        self._version_file.write_text(version)
        self.version = version
        return f"upgraded to {version}\n"

    def _poweroff(self, _: str) -> str:
        # The machine going down, as `reboot` in an upgrade command does it: the node's sshd and
        # every session (this command's own among them) die with it, from inside the command, so
        # the connection drops before the command can end or time out. Nothing brings sshd back.
        if self._sshd_config is None:
            return "error: this node has no sshd to power off\n"
        try:
            pid = int(pid_file(self._sshd_config).read_text())
            # Its title still names its config: a PID reused since is never this sshd.
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return "error: sshd is not running\n"
        if str(self._sshd_config) not in title:
            return "error: sshd is not running\n"
        # The network goes first: the sshd processes that carry the node's connections die at
        # once, so no command's end (a shell reporting its killed child, 137) reaches a client.
        # Then the rest, while the listener still reaps them (no zombie is left), then it.
        for child in descendants(pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "sshd":
                    os.kill(child, signal.SIGKILL)
        kill_descendants(pid)
        os.kill(pid, signal.SIGKILL)
        return "powered off\n"


async def serve(configs: Sequence[NodeConfig]) -> None:
    """Serve every node until SIGTERM or SIGINT."""
    servers: list[asyncio.Server] = []
    for config in configs:
        node = CallNode(config)
        servers.append(await asyncio.start_server(node.serve_call, "127.0.0.1", config.port))
        config.control.unlink(missing_ok=True)
        servers.append(await asyncio.start_unix_server(node.serve_control, path=config.control))
        os.chmod(config.control, _SOCKET_MODE)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    for server in servers:
        server.close()


def read_configs(path: Path) -> list[NodeConfig]:
    """The nodes listed in a JSON file written by write_configs."""
    entries = json.loads(path.read_text())
    return [
        NodeConfig(
            name=entry["name"],
            port=int(entry["port"]),
            control=Path(entry["control"]),
            state_dir=Path(entry["state_dir"]),
            version=entry["version"],
            sshd_config=Path(entry["sshd_config"]) if entry.get("sshd_config") else None,
        )
        for entry in entries
    ]


def write_configs(path: Path, configs: Sequence[NodeConfig]) -> None:
    """Write the JSON file that `python -m upgradectl.lab callserver` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(config) for config in configs], indent=2, default=str))


class CallService(LabServer):
    """The lab's call-server process, serving the given nodes."""

    def __init__(self, configs: Sequence[NodeConfig], workdir: Path) -> None:
        self.configs = list(configs)
        self.config_path = workdir / "callserver.json"
        self.process = ServerProcess(
            "callserver",
            [sys.executable, "-m", "upgradectl.lab", "callserver", str(self.config_path)],
            workdir / "callserver.log",
        )

    def _write_config(self) -> None:
        write_configs(self.config_path, self.configs)

    def _is_ready(self) -> bool:
        try:
            return all(
                ask(config.control, "version").startswith("version ") for config in self.configs
            )
        except OSError:
            return False
