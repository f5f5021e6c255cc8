"""Commands on this machine, through the same ``sh -c`` semantics as a remote shell."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from upgradectl.errors import CommandTimedOut
from upgradectl.transport.base import CommandResult
from upgradectl.transport.deadline import KILL_AFTER


class LocalTransport:
    """Runs commands with ``/bin/sh -c`` on the controller itself (``transport: local``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections_opened = 0

    def connect(self) -> None:
        """Nothing to connect to: this machine is always here."""

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run ``command`` with stdin empty; past ``timeout`` it and all it started are stopped."""
        started = time.monotonic()
        # A session of its own: at the deadline the whole process group is signalled, so no
        # child of the command (`sleep 12; write version`) finishes its work afterwards.
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",  # as the SSH transport reads it: output to show, not to fail on
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise CommandTimedOut(self.name, command, timeout, stopped=True) from None
        return CommandResult(
            command, process.returncode, stdout, stderr, time.monotonic() - started
        )

    def reconnect(self, deadline: float) -> None:
        """Nothing to reconnect: this machine is always here."""

    def close(self) -> None:
        """Nothing to release."""


def _stop(process: subprocess.Popen[str]) -> None:
    """TERM the command's process group, then KILL whatever is left of it after a grace."""
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=KILL_AFTER)
    _signal_group(process.pid, signal.SIGKILL)  # a child that ignored TERM, or outlived the shell
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing left in the group
        os.killpg(pgid, sig)
