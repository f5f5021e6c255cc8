"""Commands on this machine, through the same ``sh -c`` semantics as a remote shell."""

from __future__ import annotations

import subprocess
import time

from upgradectl.errors import CommandTimedOut
from upgradectl.transport.base import CommandResult


class LocalTransport:
    """Runs commands with ``/bin/sh -c`` on the controller itself (``transport: local``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections_opened = 0

    def connect(self) -> None:
        """Nothing to connect to: this machine is always here."""

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run ``command``; a command past ``timeout`` is killed and reported."""
        started = time.monotonic()
        try:
            done = subprocess.run(
                ["/bin/sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandTimedOut(self.name, command, timeout) from None
        return CommandResult(
            command, done.returncode, done.stdout, done.stderr, time.monotonic() - started
        )

    def reconnect(self, deadline: float) -> None:
        """Nothing to reconnect: this machine is always here."""

    def close(self) -> None:
        """Nothing to release."""
