"""Lab servers as child processes that are stopped together with everything they forked.

Each server runs in its own session (so a Ctrl-C aimed at the test runner does not hit it) and is
made a *child subreaper*: sshd's per-connection children call setsid() and may die before their own
children, and on this machine PID 1 does not reap orphans. As a subreaper, the server inherits its
orphaned descendants and reaps them, so stopping a node never leaves zombies or strays behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

from upgradectl.lab.running import Running
from upgradectl.lab.waiting import wait_for

_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)

STOP_DEADLINE = 5.0
READY_DEADLINE = 30.0


class ServerStartError(RuntimeError):
    """A lab server exited or never became ready; carries the tail of its log."""

    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        super().__init__(
            f"{name} did not start: {reason}\n--- last lines of its log ---\n{log_tail}"
        )
        self.name = name
        self.reason = reason
        self.log_tail = log_tail


def _become_subreaper() -> None:
    """Runs in the forked child before exec; the attribute survives exec."""
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children(pid: int) -> list[int]:
    """The live child processes of `pid`."""
    children: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                children.extend(int(child) for child in (task / "children").read_text().split())
    return children


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    found: set[int] = set()
    pending = children(pid)
    while pending:
        child = pending.pop()
        if child not in found:
            found.add(child)
            pending.extend(children(child))
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def kill_descendants(pid: int, deadline: float = STOP_DEADLINE) -> None:
    """SIGKILL everything `pid` forked, until nothing is left (`pid`, a subreaper, reaps them)."""

    def none_left() -> bool:
        left = descendants(pid)
        for child in left:
            _signal(child, signal.SIGKILL)
        return not left

    wait_for(none_left, deadline, interval=0.01, what=f"the children of {pid} to die")


class ServerProcess:
    """One server binary run in the foreground as our child, its output appended to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server; returns at once (readiness is the owner's business)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_become_subreaper,  # noqa: PLW1509 - a single pre-resolved libc call
            )

    @property
    def pid(self) -> int:
        """The server's PID; only valid once started."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._popen is not None and self._popen.poll() is None

    def pids(self) -> set[int]:
        """The server and every process it forked that is still alive."""
        if not self.running:
            return set()
        return {self.pid} | descendants(self.pid)

    def check_alive(self) -> None:
        """Raise ServerStartError if the server has exited."""
        if self._popen is not None and self._popen.poll() is not None:
            raise ServerStartError(
                self.name, f"exited with status {self._popen.returncode}", self.log_tail()
            )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill_descendants(self, deadline: float = STOP_DEADLINE) -> None:
        """SIGKILL everything the server forked, until nothing is left (the server reaps them)."""
        if self.running:
            kill_descendants(self.pid, deadline)

    def send(self, signum: int) -> None:
        """Send a signal to the server process itself."""
        if self.running:
            _signal(self.pid, signum)

    def wait(self, deadline: float = STOP_DEADLINE) -> None:
        """Wait for the server to exit; SIGKILL it when `deadline` passes."""
        if self._popen is None:
            return
        try:
            self._popen.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()

    def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """Kill what the server forked, SIGTERM the server, wait, SIGKILL after `deadline`."""
        stop_processes([self], deadline)

    def kill(self) -> None:
        """SIGKILL the server and everything it forked, as a crash would."""
        self.kill_descendants()
        self.send(signal.SIGKILL)
        self.wait()


def stop_processes(processes: Iterable[ServerProcess], deadline: float = STOP_DEADLINE) -> None:
    """Stop many servers at once: children first (their server reaps them), then the servers."""
    running = [process for process in processes if process.running]
    for process in running:
        process.kill_descendants(deadline)
    for process in running:
        process.send(signal.SIGTERM)
    for process in running:
        process.wait(deadline)


class LabServer(Running):
    """A lab server: writes its configuration, runs as a ServerProcess, knows when it is ready."""

    process: ServerProcess

    @abstractmethod
    def _write_config(self) -> None:
        """Write whatever files the server reads at start-up."""

    @abstractmethod
    def _is_ready(self) -> bool:
        """One cheap probe: does the server answer yet?"""

    def launch(self) -> None:
        """Start the server without waiting for it (see start_servers)."""
        self._write_config()
        self.process.start()

    def wait_ready(self, timeout: float = READY_DEADLINE) -> None:
        """Wait until the server answers; raise ServerStartError if it dies or times out."""

        def ready() -> bool:
            self.process.check_alive()
            return self._is_ready()

        try:
            wait_for(ready, timeout, what=f"{self.process.name} to answer")
        except TimeoutError as error:
            raise ServerStartError(self.process.name, str(error), self.process.log_tail()) from None

    def start(self) -> Self:
        """Start the server and wait until it answers."""
        start_servers([self])
        return self

    def stop(self) -> None:
        """Stop the server and everything it forked."""
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL the server and everything it forked (for fault tests)."""
        self.process.kill()

    def pids(self) -> set[int]:
        """The PIDs of the server and its live children."""
        return self.process.pids()


def start_servers(servers: Sequence[LabServer]) -> None:
    """Launch every server, then wait for each: start-up costs overlap instead of adding up.

    If any fails, every server launched here is stopped before the error propagates.
    """
    launched: list[LabServer] = []
    try:
        for server in servers:
            launched.append(server)
            server.launch()
        for server in servers:
            server.wait_ready()
    except BaseException:
        stop_servers(launched)
        raise


def stop_servers(servers: Iterable[LabServer]) -> None:
    """Stop many servers together."""
    stop_processes(server.process for server in servers)
