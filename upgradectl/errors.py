"""Exceptions named after what happened, and the exit codes they become.

The mapping from exception to exit code lives in :func:`exit_code_for`, the one
place the command line consults.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """The exit codes of SPEC.md."""

    OK = 0
    STEP_FAILED = 1
    USAGE = 2
    GAVE_UP = 3
    ATTENTION = 4
    INTERRUPTED = 5
    NOT_NOW = 75


# With several nodes the most serious code wins, in this order (SPEC.md).
# A node refused at preflight (credentials, host key, sudo) is USAGE: nothing was touched, and the
# run ended before anything could be; it ranks just below the codes that say a node may be out.
_SEVERITY = [
    ExitCode.ATTENTION,
    ExitCode.INTERRUPTED,
    ExitCode.USAGE,
    ExitCode.STEP_FAILED,
    ExitCode.GAVE_UP,
    ExitCode.NOT_NOW,
    ExitCode.OK,
]


def most_serious(codes: list[ExitCode]) -> ExitCode:
    """The code that wins among several nodes' codes (OK when there are none)."""
    return min(codes, key=_SEVERITY.index, default=ExitCode.OK)


class UpgradectlError(Exception):
    """Base of every error this tool raises on purpose."""

    exit_code = ExitCode.STEP_FAILED


@dataclass
class Location:
    """Where in which file something was said: ``inventory.yaml:12: nodes.node-a.port``."""

    file: str
    line: int | None
    key: str

    def __str__(self) -> str:
        line = f"{self.line}:" if self.line else ""
        key = f" {self.key}:" if self.key else ""
        return f"{self.file}:{line}{key}"


class UsageError(UpgradectlError):
    """Bad usage, inventory or playbook: nothing was touched."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, where: Location | None = None) -> None:
        self.where = where
        super().__init__(f"{where} {message}" if where else message)


class NotNow(UpgradectlError):
    """Another run holds a lock, or the maintenance window is closed."""

    exit_code = ExitCode.NOT_NOW


class TransportError(UpgradectlError):
    """Something went wrong between the controller and a node."""


class Refused(TransportError):
    """The node answered but will not let us in as configured: an operator's setup to fix.

    Retrying cannot help, so it is never retried; before anything is touched it is exit 2.
    """

    exit_code = ExitCode.USAGE


class HostKeyRefused(Refused):
    """The node's host key is unknown or changed and was not accepted."""


class AuthenticationRefused(Refused):
    """No key we hold was accepted: a rejected key, an encrypted key without an agent, a
    missing identity file."""


class ConnectionLost(TransportError):
    """The connection dropped (or never came up) while a command needed it."""

    exit_code = ExitCode.ATTENTION


class Unreachable(ConnectionLost):
    """The node stayed unreachable after every reconnect attempt."""


class ConnectionRefused(ConnectionLost):
    """Nothing answers at the node's address: connection refused, no route, timed out."""


class CommandTimedOut(TransportError):
    """A command ran past its timeout; ``stopped`` says whether it was seen stopped on the host.

    False means nothing confirmed it: the host did not answer by the controller's own deadline
    (its own deadline still stops the command there, unseen).
    """

    def __init__(
        self, host: str, command: str, timeout: float, *, stopped: bool, started: bool = True
    ) -> None:
        self.host = host
        self.command = command
        self.timeout = timeout
        self.stopped = stopped
        self.started = started
        super().__init__(f"{host}: {self.what}: {command}")

    @property
    def what(self) -> str:
        """``timed out after 3s; the command was stopped``, or what is not known."""
        if not self.started:
            return (
                f"timed out after {self.timeout:g}s waiting for a free session on the"
                " connection; the command was not started"
            )
        known = (
            "the command was stopped"
            if self.stopped
            else "no answer from the node, so not known whether the command was stopped"
        )
        return f"timed out after {self.timeout:g}s; {known}"


class StepFailed(UpgradectlError):
    """A playbook step ran but its exit code or output says it failed."""

    def __init__(self, step: str, host: str, reason: str, output: str = "") -> None:
        self.step = step
        self.host = host
        self.reason = reason
        self.output = output
        detail = f": {_last_line(output)}" if output.strip() else ""
        super().__init__(f"{step} on {host} failed ({reason}){detail}")


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code an uncaught error becomes."""
    if isinstance(error, UpgradectlError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.ATTENTION


class UnreadableCount(StepFailed):
    """The session count was not a number: never read as zero."""


class BlockLost(StepFailed):
    """The block vanished during the drain and could not be put back."""

    def __init__(self, host: str, reason: str, output: str = "") -> None:
        super().__init__(
            "block", host, f"the block was lost and could not be put back: {reason}", output
        )


class ForceFailed(StepFailed):
    """``force`` ran, but sessions it should have ended are still seen: not cut."""


class WitnessesDisagree(StepFailed):
    """The two session counts (``active``, ``node_active``) disagree on whether the node is empty."""


class SudoRefused(UpgradectlError):
    """sudo will not run a ``sudo: true`` step's command without a password (found at preflight)."""

    exit_code = ExitCode.USAGE

    def __init__(self, host: str, step: str, check: str, output: str) -> None:
        self.host = host
        self.step = step
        self.check = check
        self.output = output
        said = f": {_last_line(output)}" if output.strip() else ""
        super().__init__(
            f"{host}: sudo refuses the {step} step's command (`{check}` failed{said}); "
            "allow exactly that command with NOPASSWD in /etc/sudoers.d (see the README's "
            '"Steps as root")'
        )


class LockHeld(NotNow):
    """Another run holds the node's lock."""

    def __init__(self, node: str, holder: str) -> None:
        self.node = node
        self.holder = holder
        super().__init__(
            f"{node}: locked by another run: {holder} (use --break-lock if that run is dead)"
        )


class JournalFailed(UpgradectlError):
    """The journal could not be written: the run must stop acting, since it would lose track.

    Before any node is touched this is bad setup (exit 2); once nodes were touched, the run puts
    them back and ``exit_code`` is the run's own.
    """

    exit_code = ExitCode.USAGE

    def __init__(
        self, path: str, error: OSError, exit_code: ExitCode | None = None, then: str = ""
    ) -> None:
        self.path = path
        self.error = error
        self.reason = error.strerror or str(error)
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(
            f"{path}: the journal cannot be written ({self.reason})" + (f"; {then}" if then else "")
        )


class UnexpectedError(UpgradectlError):
    """Something no step was meant to raise (a bug, a fault of a library) in one node's run: the
    node still gets its recovery, and the run goes on with the others."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(f"unexpected error ({type(error).__name__}: {error})")
