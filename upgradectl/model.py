"""The tool's nouns as frozen dataclasses: what the files say, after validation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from upgradectl.errors import Location, UsageError

Stragglers = Literal["force", "abort", "wait"]
STRAGGLER_POLICIES: tuple[Stragglers, ...] = ("force", "abort", "wait")

# The steps a playbook may have, in the order a full run uses them.
STEP_NAMES = (
    "precheck",
    "is_blocked",
    "block",
    "active",
    "node_active",
    "sessions",
    "force",
    "upgrade",
    "ready",
    "verify",
    "rollback",
    "unblock",
    "patch",
    "version",
)
# What each command cannot do without: a playbook supports a command when it has these steps.
COMMAND_NEEDS: Mapping[str, tuple[str, ...]] = {
    "drain": ("block", "active", "unblock"),
    "upgrade": ("block", "active", "upgrade", "unblock"),
    "patch": ("patch",),
    "unblock": ("unblock",),
    "status": (),
    "check": (),
}
# Every result a node can end a run with (the summary's nodes.NAME.result).
NODE_RESULTS = (
    "upgraded", "drained", "patched", "unblocked", "current", "deferred", "skipped",
    "failed", "aborted", "interrupted", "locked", "unreachable", "attention", "dry-run",
)  # fmt: skip

# Steps that change nothing on a host: the only ones --dry-run runs.
READ_ONLY_STEPS = frozenset(
    {"precheck", "is_blocked", "active", "node_active", "sessions", "version", "ready"}
)
# The steps that print a session count: `active` (where the playbook blocks, e.g. a balancer) and
# the optional `node_active`, a second witness on the node itself (e.g. a call server's own calls).
COUNT_STEPS = ("active", "node_active")
# Steps that can be run again without harm after a dropped connection or a crash.
REPEATABLE_STEPS = READ_ONLY_STEPS | {"block", "unblock", "verify"}


def frozen_mapping(data: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only view of a copy of ``data``."""
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class Node:
    """One inventory host."""

    name: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    groups: tuple[str, ...] = ()
    pair: str | None = None
    playbook: str | None = None
    vars: Mapping[str, Any] = field(default_factory=frozen_mapping)
    sudo: bool = False
    transport: Literal["ssh", "local"] = "ssh"
    where: Location | None = field(default=None, compare=False)
    vars_at: Mapping[str, Location] = field(default_factory=frozen_mapping, compare=False)
    playbook_at: Location | None = field(default=None, compare=False)

    @property
    def address(self) -> str:
        """The name SSH connects to: the host, or the name looked up in ~/.ssh/config."""
        return self.host or self.name


@dataclass(frozen=True)
class Group:
    """A named set of nodes with a rollout limit."""

    name: str
    max_unavailable: str | None = None
    vars: Mapping[str, Any] = field(default_factory=frozen_mapping)
    vars_at: Mapping[str, Location] = field(default_factory=frozen_mapping, compare=False)


@dataclass(frozen=True)
class Inventory:
    """Every node and group, with the file they came from."""

    path: str
    nodes: Mapping[str, Node]
    groups: Mapping[str, Group]
    defaults_vars: Mapping[str, Any] = field(default_factory=frozen_mapping)
    defaults_vars_at: Mapping[str, Location] = field(default_factory=frozen_mapping, compare=False)

    def members(self, group: str) -> list[str]:
        """Names of the nodes in ``group``, in inventory order."""
        return [node.name for node in self.nodes.values() if group in node.groups]


@dataclass(frozen=True)
class StepSpec:
    """A playbook step before rendering: templates and settings."""

    name: str
    run: str
    on: str | None = None
    parse: re.Pattern[str] | None = None
    fail_if: re.Pattern[str] | None = None
    timeout: float | None = None
    retries: int = 1
    delay: float = 2.0
    expected: float | None = None
    reboot: bool = False
    sudo: bool | None = None
    where: Location | None = field(default=None, compare=False)
    lines: Mapping[str, int] = field(default_factory=frozen_mapping, compare=False)  # field -> line

    def at(self, key: str) -> Location | None:
        """The location of one of this step's fields, for error messages."""
        if self.where is None:
            return None
        return Location(
            self.where.file, self.lines.get(key, self.where.line), f"{self.where.key}.{key}"
        )


@dataclass(frozen=True)
class DrainPolicy:
    """How long to wait for sessions to end, and what to do with the ones left."""

    timeout: float = 3600.0
    poll: float = 10.0  # the longest wait between two readings
    # The shortest wait: first readings, near the expected end, settling. A second keeps `settle`
    # meaningful against counters that lag; a fleet benchmark's playbook may go lower.
    poll_min: float = 1.0
    stragglers: Stragglers = "abort"
    max_stragglers: int = 0
    settle: int = 2
    force_when: Literal["deadline", "eta_exceeds_deadline"] = "deadline"
    stall_after: float = 600.0
    # How long a dropped connection is re-tried (with backoff) before the node counts as unreachable.
    reconnect_for: float = 60.0
    # After `force`, how long the forced sessions get to be seen gone before the force failed.
    force_grace: float = 30.0
    # How long `active` and `node_active` may disagree (one at zero, the other not) before the
    # drain stops: a session ended on one side only is not drained.
    witness_grace: float = 60.0


@dataclass(frozen=True)
class Playbook:
    """A named recipe of steps for one kind of service."""

    name: str
    path: str
    description: str = ""
    vars: Mapping[str, Any] = field(default_factory=frozen_mapping)
    drain: DrainPolicy = field(default_factory=DrainPolicy)
    steps: Mapping[str, StepSpec] = field(default_factory=frozen_mapping)
    # /var/tmp survives a reboot (an upgrade may reboot); the lock is created with O_EXCL.
    lock: str = "/var/tmp/upgradectl-{{ node.name }}.lock"  # noqa: S108
    where: Location | None = field(default=None, compare=False)
    vars_at: Mapping[str, Location] = field(default_factory=frozen_mapping, compare=False)
    lock_at: Location | None = field(default=None, compare=False)

    def lacks(self, command: str) -> list[str]:
        """The steps ``command`` needs that this playbook does not have."""
        return [step for step in COMMAND_NEEDS[command] if step not in self.steps]

    def supports(self, command: str) -> bool:
        """Whether this playbook can do ``command`` (``drain``, ``upgrade``, ``patch`` ...)."""
        return not self.lacks(command)


@dataclass(frozen=True)
class Playbooks:
    """The playbooks a run may use, loaded before planning, by the reference that names them.

    A reference that could not be loaded keeps its error, raised only for a node that uses it:
    a broken playbook of a node outside the run does not stop the run.
    """

    loaded: Mapping[str, Playbook] = field(default_factory=frozen_mapping)
    unusable: Mapping[str, UsageError] = field(default_factory=frozen_mapping)

    def get(self, reference: str, where: Location | None = None) -> Playbook:
        """The playbook ``reference`` names; its UsageError, located at ``where`` (the node's
        ``playbook:``) when the file itself could not be found."""
        if reference in self.loaded:
            return self.loaded[reference]
        error = self.unusable.get(reference)
        if error is None:
            raise UsageError(f"playbook {reference!r} was not loaded for this run", where)
        if error.where is None and where is not None:
            raise UsageError(str(error), where)
        raise error
