"""The one interface every transport offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    """What a command did: its exit code and its output."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def output(self) -> str:
        """Standard output and standard error together, the way an operator would read them."""
        return self.stdout + ("\n" + self.stderr if self.stderr.strip() else "")


class Transport(Protocol):
    """Runs shell commands on one host."""

    name: str
    connections_opened: int

    def connect(self) -> None:
        """Connect and log in now, once, without retrying: Refused or ConnectionLost says why not."""
        ...

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run ``command`` in the host's shell; raise CommandTimedOut or ConnectionLost."""
        ...

    def reconnect(self, deadline: float) -> None:
        """Drop the connection and open it again, retrying with backoff until ``deadline``."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
