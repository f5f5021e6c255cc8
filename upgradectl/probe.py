"""Ask every node how it is before a rollout starts: cheap, parallel, over the run's connections.

The answers order the rollout (fewest active sessions first) and tell the fleet which nodes,
and which pairs outside the selection, are already out of service.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from upgradectl.errors import ExitCode, StepFailed, UpgradectlError
from upgradectl.plan import NodePlan, Plan, build_plan
from upgradectl.runner import NodeResult, RunContext
from upgradectl.steps import Steps

# Connecting is mostly waiting on the network: more threads than cores pays.
MAX_PROBE_THREADS = 64


@dataclass(frozen=True)
class Probe:
    """One node's answer."""

    active: int | None = None
    blocked: bool | None = None
    error: str | None = None
    reachable: bool = True

    @property
    def in_service(self) -> bool:
        """Reachable and not blocked."""
        return self.reachable and not self.blocked


def probe(plan: Plan, ctx: RunContext, names: list[str]) -> dict[str, Probe]:
    """The state of ``names`` and of their pairs outside the selection."""
    plans = [plan.node(name) for name in names]
    outside = sorted({p.pair for p in plans if p.pair} - set(names))
    if outside:
        try:
            plans += build_plan(plan.inventory, outside, "status", plan.options, plan.run_id).nodes
        except UpgradectlError as exc:
            ctx.events.emit("warning", None, f"cannot check the pairs {', '.join(outside)}: {exc}")
    with ThreadPoolExecutor(max_workers=min(MAX_PROBE_THREADS, len(plans) or 1)) as pool:
        answers = dict(
            zip([p.name for p in plans], pool.map(lambda p: _ask(p, ctx), plans), strict=True)
        )
    return answers


def _ask(node_plan: NodePlan, ctx: RunContext) -> Probe:
    steps = Steps(
        node_plan,
        ctx.connections.get,
        ctx.events,
        reconnect_for=ctx.reconnect_for,
        pause=ctx.stop.wait,
    )
    try:
        blocked = steps.is_blocked()
        active = steps.count() if steps.has("active") else None
    except UpgradectlError as exc:
        ctx.events.emit("probe", node_plan.name, f"cannot ask: {exc}", error=str(exc))
        return Probe(error=str(exc), reachable=isinstance(exc, StepFailed))
    state = ", blocked" if blocked else ""
    ctx.events.emit(
        "probe",
        node_plan.name,
        f"before the run: {active} active{state}",
        active=active,
        blocked=blocked,
    )
    return Probe(active, blocked)


def not_started(ctx: RunContext, name: str, found: Probe) -> NodeResult:
    """The result of a node whose probe failed: nothing was touched. A node that could not be
    reached needs a person (exit 4); one whose steps fail is a failed step (exit 1)."""
    result, code = (
        ("failed", ExitCode.STEP_FAILED) if found.reachable else ("unreachable", ExitCode.ATTENTION)
    )
    message = f"not started: {found.error}"
    ctx.journal.append("result", name, result=result, exit_code=int(code), message=message)
    ctx.events.emit("node-done", name, f"{result}: {message}")
    return NodeResult(name, result, code, message, in_service=found.reachable)
