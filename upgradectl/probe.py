"""Ask every node how it is before a rollout starts: cheap, parallel, over the run's connections.

The answers order the rollout (fewest active sessions first) and tell the fleet which nodes are
already out of service: the selected ones, and those outside the selection that the fleet's
rules look at (their pairs, the other members of their groups).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from upgradectl.context import RunContext
from upgradectl.errors import ExitCode, StepFailed, UnexpectedError, UpgradectlError
from upgradectl.model import Inventory
from upgradectl.plan import NodePlan, Plan, build_plan
from upgradectl.results import NodeResult, concluded
from upgradectl.steps import Steps

# Connecting is mostly waiting on the network: more threads than cores pays.
MAX_PROBE_THREADS = 64


@dataclass(frozen=True)
class Probe:
    """One node's answer; ``blocked`` is None when the playbook cannot tell or it was not read."""

    active: int | None = None
    blocked: bool | None = None
    error: str | None = None
    reachable: bool = True
    version: str | None = None

    @property
    def in_service(self) -> bool:
        """Reachable, not blocked, and not a node whose state could not be read."""
        unknown = self.error is not None and self.blocked is None
        return self.reachable and not self.blocked and not unknown


def probe(plan: Plan, ctx: RunContext, names: list[str]) -> dict[str, Probe]:
    """The state of ``names`` and of their pairs and group mates outside the selection."""
    plans = probe_plans(plan, ctx, names)
    with ThreadPoolExecutor(max_workers=min(MAX_PROBE_THREADS, len(plans) or 1)) as pool:
        answers = pool.map(lambda node_plan: ask(node_plan, ctx), plans)
        return dict(zip([node_plan.name for node_plan in plans], answers, strict=True))


def probe_plans(plan: Plan, ctx: RunContext, names: list[str]) -> list[NodePlan]:
    """What to probe for a run of ``names``: their plans, then their neighbours' status plans."""
    plans = [plan.node(name) for name in names]
    return plans + _plans_of(plan, sorted(neighbours(plan.inventory, plans) - set(names)), ctx)


def neighbours(inventory: Inventory, plans: Iterable[NodePlan]) -> set[str]:
    """The nodes whose state decides whether these may start: their pairs and group mates."""
    found: set[str] = set()
    for node_plan in plans:
        if node_plan.pair:
            found.add(node_plan.pair)
        for group in node_plan.node.groups:
            found.update(inventory.members(group))
    return found


def _plans_of(plan: Plan, names: list[str], ctx: RunContext) -> list[NodePlan]:
    """The status plans of ``names``; one that cannot be rendered is left out, with a warning."""
    try:
        return list(_status_plan(plan, names).nodes)
    except UpgradectlError:
        pass  # which ones? Rendering them one by one says.
    plans: list[NodePlan] = []
    for name in names:
        try:
            plans += _status_plan(plan, [name]).nodes
        except UpgradectlError as exc:
            ctx.events.emit("warning", name, f"cannot check {name} before the run: {exc}")
    return plans


def _status_plan(plan: Plan, names: list[str]) -> Plan:
    return build_plan(plan.inventory, names, "status", plan.options, plan.run_id, plan.playbooks)


def ask(node_plan: NodePlan, ctx: RunContext) -> Probe:
    """One node's answer; never raises (what went wrong is the answer's ``error``)."""
    try:
        return _ask(node_plan, ctx)
    except Exception as exc:  # an event that could not be sent, say: the node is left out
        return Probe(error=str(UnexpectedError(exc)), reachable=False)


def _ask(node_plan: NodePlan, ctx: RunContext) -> Probe:
    steps = Steps(
        node_plan,
        ctx.connections.get,
        ctx.events,
        reconnect_for=node_plan.drain.reconnect_for,
        pause=ctx.stop.wait,
    )
    blocked = None
    steps.along("active", "version")  # every reading in one round trip
    try:
        blocked = steps.is_blocked()
        active = steps.count() if steps.has("active") else None
    except Exception as exc:  # a fault of ours too: this node is left out, the others go on
        error = exc if isinstance(exc, UpgradectlError) else UnexpectedError(exc)
        ctx.events.emit("probe", node_plan.name, f"cannot ask: {error}", error=str(error))
        return Probe(
            blocked=blocked,
            error=str(error),
            reachable=isinstance(error, StepFailed | UnexpectedError),
        )
    version = _version(steps, node_plan, ctx)
    said = [f"{active} active" if active is not None else "", "blocked" if blocked else ""]
    said.append(f"version {version}" if version else "")
    ctx.events.emit(
        "probe",
        node_plan.name,
        "before the run: " + (", ".join(part for part in said if part) or "reachable"),
        active=active,
        blocked=blocked,
        version=version,
    )
    return Probe(active, blocked, version=version)


def _version(steps: Steps, node_plan: NodePlan, ctx: RunContext) -> str | None:
    """The version the node runs, when the playbook can tell (a failure here stops nothing)."""
    if not steps.has("version"):
        return None
    try:
        return steps.version()
    except Exception as exc:  # a fault of ours too
        error = exc if isinstance(exc, UpgradectlError) else UnexpectedError(exc)
        ctx.events.emit("warning", node_plan.name, f"cannot read its version: {error}")
        return None


def not_started(ctx: RunContext, name: str, found: Probe) -> NodeResult:
    """The result of a node whose probe failed: nothing was touched, so it is a failure (exit 1),
    never attention (4), whether it could not be reached or its steps failed."""
    result = "failed" if found.reachable else "unreachable"
    code = ExitCode.STEP_FAILED
    message = f"not started: {found.error}"
    return concluded(ctx, NodeResult(name, result, code, message, in_service=found.in_service))
