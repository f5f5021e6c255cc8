"""A command's deadline, kept on the host itself: at its timeout the command and everything it
started are stopped there, whatever became of the controller or the link.

Without this, a timed-out command kept running on the node after the controller had moved on
(rolled back, unblocked): an upgrade that finished 12 s later on a node already back in service.
The node's own ``timeout`` (coreutils, busybox) puts the command in a process group of its own
and signals the whole group; it exits 124 (or 137 after KILL), which is the witness that the
command was stopped.
"""

from __future__ import annotations

import shlex

# After TERM at the deadline a command gets this long to end before it is sent KILL.
KILL_AFTER = 2.0
# How much longer than the command's timeout the controller waits for the node's word that the
# command was stopped (KILL_AFTER, plus a round trip on a slow link).
ANSWER_GRACE = KILL_AFTER + 3.0
# How `timeout` exits when it stopped the command: TERM worked (124), or KILL was needed (137).
STOPPED_EXIT_CODES = frozenset({124, 137})


def bounded(command: str, timeout: float) -> str:
    """``command`` under the host's own deadline of ``timeout`` seconds.

    A host without a ``timeout`` command runs it as it is; the controller's deadline then still
    ends the wait, but cannot say that the command was stopped.
    """
    # Not `exec timeout`: KILL reaches `timeout` too (it is in the group it signals), and only
    # a shell above it turns that death into the exit code 137 that says so.
    # The command once, not in both branches of an `if`: a command's size is its exec request's.
    return (
        f"u_timeout=; command -v timeout >/dev/null 2>&1 && "
        f'u_timeout="timeout -k {KILL_AFTER:.3f} {timeout:.3f}"; '
        f"$u_timeout sh -c {shlex.quote(command)}"
    )


def stopped_at_deadline(exit_code: int, elapsed: float, timeout: float) -> bool:
    """Whether a bounded command's exit says that its deadline stopped it."""
    return exit_code in STOPPED_EXIT_CODES and elapsed >= timeout
