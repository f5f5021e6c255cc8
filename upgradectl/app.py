"""The run use case, between the command line and the runner: plan, run, summarize; and resume.

The command line (``upgradectl.cli``) parses and renders; a run it asks for happens here. The
reading commands have their own modules: ``status``, ``checkup``, ``history``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from upgradectl import runrecords
from upgradectl.closing import release_left_locks
from upgradectl.connections import Connections
from upgradectl.context import RunContext, Stop
from upgradectl.errors import ExitCode, JournalFailed, UnexpectedError, UsageError
from upgradectl.events import Events
from upgradectl.intent import Intent, intent_of
from upgradectl.journal import Journal
from upgradectl.journal_records import start_problem
from upgradectl.loader import load_inventory, load_playbooks
from upgradectl.outputs import write_outputs
from upgradectl.plan import NodePlan, Plan, PlanOptions, build_plan
from upgradectl.preflight import preflight
from upgradectl.probe import MAX_PROBE_THREADS, Probe, ask, not_started, probe, probe_plans
from upgradectl.results import NodeResult, RunSummary, concluded
from upgradectl.resume import latest_resumable, resume_points
from upgradectl.rollout import (
    FAILURES,
    Arrivals,
    Fleet,
    fewest_active_first,
    parse_limit,
    roll,
)
from upgradectl.runlock import RunLock
from upgradectl.runner import NodeRun
from upgradectl.runrecords import RunRecord
from upgradectl.settings import Settings
from upgradectl.statedir import check_output, check_state_dir, ensure_private
from upgradectl.unattended import Unattended
from upgradectl.window import deferral, require_open, within_window


@dataclass
class RunOptions:
    """How a run that touches hosts behaves."""

    dry_run: bool = False
    break_lock: bool = False
    max_unavailable: str | None = None
    max_failures: int | None = None
    unattended: Unattended = field(default_factory=Unattended)
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    # Asked after the probe, before the first block; None: the operator said --yes already.
    confirm: Callable[[Intent], bool] | None = None
    allow_downgrade: bool = False


def execute(
    settings: Settings,
    plan: Plan,
    events: Events,
    stop: Stop,
    run: RunOptions,
    start_at: dict[str, str] | None = None,
) -> RunSummary:
    """Run ``plan`` on its nodes, journalled; returns the summary (also emitted as an event)."""
    if run.max_unavailable is not None:
        parse_limit(run.max_unavailable, 1)  # a usage error before any host is touched
    require_open(run.unattended.window, _now_utc())
    ensure_private(settings.state_dir, create=True)
    check_state_dir(settings.state_dir, len(start_at) if start_at else len(plan.nodes))
    for option, path in (
        ("--report", run.unattended.report),
        ("--metrics-file", run.unattended.metrics_file),
    ):
        if path:
            check_output(path, option)
    with _run_lock(settings, plan, run):
        if start_at:  # a resumed run: the nodes it finished before it died keep no lock of it
            finished = [node.name for node in plan.nodes if node.name not in start_at]
            if release_left_locks(settings, plan, finished) is None:
                events.emit(
                    "warning", None, "could not release the locks left on " + ", ".join(finished)
                )
        return _execute(settings, plan, events, stop, run, start_at)


@contextmanager
def _run_lock(settings: Settings, plan: Plan, run: RunOptions) -> Iterator[None]:
    """Overlapping acting runs (cron and cron, cron and a person, a run and its own `resume`)
    must not both act; a dry run acts on nothing."""
    if run.dry_run:
        yield
        return
    with RunLock(os.path.join(settings.state_dir, "run.lock")) as lock:
        lock.acquire(plan.run_id, run.argv)
        yield


def _execute(
    settings: Settings,
    plan: Plan,
    events: Events,
    stop: Stop,
    run: RunOptions,
    start_at: dict[str, str] | None,
) -> RunSummary:
    notifications = None
    if run.unattended.notify:
        # http.client and urllib are imported only by a run that posts to a webhook.
        from upgradectl.notify import Notifications  # noqa: PLC0415

        notifications = Notifications(run.unattended.notify)
    if notifications is not None:
        events.sinks.append(notifications)
    journal = Journal(settings.state_dir, plan.run_id, new=not start_at)
    started = time.time()
    if not start_at:
        journal.append("run-start", None, **_run_inputs(settings, plan, run))
    else:
        journal.append("resumed", None, nodes=start_at)
    events.emit("run-start", None, f"{plan.command} {', '.join(n.name for n in plan.nodes)} (run {plan.run_id})",
                run_id=plan.run_id, command=plan.command, dry_run=run.dry_run,
                nodes=[node.name for node in plan.nodes if not start_at or node.name in start_at])  # fmt: skip
    connections = Connections(
        plan.inventory,
        accept_new_host_keys=settings.accept_new_host_keys,
        warn=lambda message: _warn(events, message),
    )
    ctx = RunContext(
        run_id=plan.run_id,
        command=plan.command,
        connections=connections,
        journal=journal,
        events=events,
        stop=stop,
        state_dir=settings.state_dir,
        dry_run=run.dry_run,
        break_lock=run.break_lock,
        hand_blocked=_found_blocked_by_hand(journal.path) if start_at else frozenset(),
        intentions=_intentions_left(journal.path) if start_at else {},
    )
    try:
        results = run_nodes(plan, ctx, run, start_at)
    finally:
        opened = connections.opened()
        connections.close()
    summary = RunSummary(plan.run_id, plan.command, started, time.time(), tuple(results), opened)
    journal.append("run-end", None, exit_code=int(summary.exit_code), result=summary.result)
    journal.close()
    write_outputs(run.unattended, summary)
    events.emit("summary", None, "", **summary.event_data())
    if notifications is not None and (error := notifications.close()):
        events.emit("warning", None, f"--notify {run.unattended.notify}: {error}")
    if journal.failure is not None:  # the summary is out: now the reason, on stderr
        failed = journal.failure
        raise JournalFailed(failed.path, failed.error, summary.exit_code, _LOST_TRACK)
    return summary


_LOST_TRACK = (
    "the run stopped acting there and put its nodes back as far as it could (see the summary); "
    "the journal lacks what followed, so `status` may list nodes as out of service that are not"
)


def _found_blocked_by_hand(path: Path) -> frozenset[str]:
    """The nodes a run's journal says it found blocked by hand."""
    return frozenset(
        record["node"]
        for record in runrecords.read_run(path).records
        if record.get("node")
        and (record["kind"] == "was-blocked" or record.get("data", {}).get("hand_blocked"))
    )


# Records written before an effect whose outcome record follows it.
_INTENTIONS = frozenset({"blocking", "forcing", "unblocking"})


def _intentions_left(path: Path) -> dict[str, dict[str, Any]]:
    """Per node, its last state record when that is an intention without its outcome."""
    last = runrecords.read_run(path).node_states()
    return {node: record for node, record in last.items() if record["kind"] in _INTENTIONS}


def _now_utc() -> datetime:
    """The current time, aware (windows compare aware times)."""
    return datetime.now(UTC)


def _warn(events: Events, message: str) -> None:
    events.emit("warning", None, message)


def run_nodes(
    plan: Plan, ctx: RunContext, run: RunOptions, start_at: dict[str, str] | None
) -> list[NodeResult]:
    """Each node's run: in the fleet's order and limits, or one after another where limits mean nothing."""
    names = [node.name for node in plan.nodes if start_at is None or node.name in start_at]
    nodes = _Nodes(plan, ctx, run, start_at)
    refusals = preflight(plan, names, ctx.connections.get, ctx.events)
    if refusals:  # before anything is touched: the whole run ends here
        return [
            nodes.unstarted(name, refusals.result(name), refusals.exit_code, refusals.reason(name))
            for name in names
        ]
    if plan.command == "unblock":
        return _unblock_each(nodes, names)
    if run.confirm is None:  # nobody is asked: each node starts once its own probe is in
        return _roll_as_probed(nodes, names)
    return _roll_once_asked(nodes, names)


class _Nodes:
    """How each node of a run starts, or ends without starting; every end is made final."""

    def __init__(
        self, plan: Plan, ctx: RunContext, run: RunOptions, start_at: dict[str, str] | None
    ) -> None:
        self.plan = plan
        self.ctx = ctx
        self.options = run
        self.start_at = start_at or {}
        self.resuming = plan.run_id if start_at else None

    def start(self, name: str) -> NodeResult:
        """Run node ``name`` (within the window, which may defer it)."""
        window, now = self.options.unattended.window, _now_utc()
        reason = deferral(window, self.plan.node(name), now)
        if reason is not None:
            return self.unstarted(name, "deferred", ExitCode.NOT_NOW, reason)
        node_plan = within_window(window, self.plan.node(name), now)
        try:
            return NodeRun(node_plan, self.ctx).run(self.start_at.get(name, "block"))
        except Exception as exc:  # past the node's own recovery: never the whole run's end
            message = f"{UnexpectedError(exc)}; its state is unknown: a person must look"
            outcome = NodeResult(name, "attention", ExitCode.ATTENTION, message, in_service=False)
            return concluded(self.ctx, outcome)

    def unstarted(self, name: str, result: str, code: ExitCode, reason: str) -> NodeResult:
        """Node ``name`` ends without starting."""
        return concluded(self.ctx, NodeResult(name, result, code, reason))

    def skip(self, name: str, reason: str) -> NodeResult:
        """Node ``name`` is not started: the run stops, or the fleet will not let it."""
        code = ExitCode.INTERRUPTED if self.ctx.stop.requested else ExitCode.NOT_NOW
        return self.unstarted(name, "skipped", code, reason)

    def current(self, name: str) -> NodeResult:
        """Node ``name`` is in service on the version already (a nightly run over the whole
        group): it stays so, and whatever an earlier record of ours left pending is settled."""
        if not self.options.dry_run:
            message = "in service, on the version"
            self.ctx.journal.append("in-service", name, message=message, blocked=False)
        return self.unstarted(
            name, "current", ExitCode.OK, f"already at version {self.plan.version}"
        )

    def fleet(
        self,
        names: list[str],
        *,
        out_of_service: set[str] | None = None,
        unknown: set[str] | None = None,
        failures: int = 0,
    ) -> Fleet:
        """The rollout's limits and pairs over ``names``, with what is known of the fleet."""
        return Fleet(
            self.plan.inventory,
            names,
            pairs={name: self.plan.node(name).pair for name in names},
            override=self.options.max_unavailable,
            max_failures=self.options.max_failures,
            out_of_service=out_of_service or set(),
            unknown=unknown or set(),
            failures=failures,
        )

    def say_order(self, order: list[str]) -> None:
        """The order nodes start in, when there is one to say."""
        if len(order) > 1:
            said = f"order (fewest active first): {', '.join(order)}"
            self.ctx.events.emit("order", None, said, order=order)


def _unblock_each(nodes: _Nodes, names: list[str]) -> list[NodeResult]:
    """Nothing goes out of service: no limits to respect, so no probing either.

    A dry run takes the real path from here on: probe, `current`, fleet order and limits.
    """
    refused = _refused(intent_of(nodes.plan, names, {}, nodes.resuming), nodes.options)
    if refused is not None:
        return [nodes.unstarted(name, "skipped", *refused) for name in names]
    stopping = nodes.ctx.stop
    return [
        nodes.skip(name, "not started: stopped") if stopping.requested else nodes.start(name)
        for name in names
    ]


def _roll_once_asked(nodes: _Nodes, names: list[str]) -> list[NodeResult]:
    """The rollout once a person has answered, with the whole fleet's probe in front of them."""
    plan, ctx = nodes.plan, nodes.ctx
    probes = probe(plan, ctx, names)
    failed = [not_started(ctx, name, probes[name]) for name in names if probes[name].error]
    done = [nodes.current(name) for name in names if _already_current(plan, probes[name])]
    names = [name for name in names if not _already_current(plan, probes[name])]
    fleet = nodes.fleet(
        names,
        out_of_service={name for name, found in probes.items() if not found.in_service},
        failures=sum(result.exit_code in FAILURES for result in failed),
    )
    order = fewest_active_first({n: probes[n].active for n in names if not probes[n].error})
    nodes.say_order(order)
    intent = intent_of(plan, order, probes, nodes.resuming)
    refused = _refused(intent, nodes.options)
    if refused is not None:
        return failed + done + [nodes.unstarted(name, "skipped", *refused) for name in order]
    for name, running in intent.downgrades.items():
        ctx.events.emit("warning", name, f"downgrade: {running} -> {plan.version}")
    return failed + done + roll(fleet, order, nodes.start, nodes.skip, lambda: ctx.stop.requested)


def _roll_as_probed(nodes: _Nodes, names: list[str]) -> list[NodeResult]:
    """The rollout fed by the probe as it answers, with no wait for the whole fleet's answers.

    A node not probed yet counts as out of service for the limits, and a node waits for its
    pair's probe (:class:`Fleet`). Among the nodes probed and free to go, the fewest active
    sessions go first; a node probed late may start after one with more sessions probed
    earlier (the price of not waiting). A downgrade that is not allowed leaves its node not
    started (exit 2) and halts the rollout: no node starts after it.
    """
    plan, ctx = nodes.plan, nodes.ctx
    plans = probe_plans(plan, ctx, names)
    fleet = nodes.fleet(names, unknown={node_plan.name for node_plan in plans})
    selected = set(names)
    active: dict[str, int | None] = {}
    answered: list[str] = []

    def arrived(answer: tuple[str, Probe]) -> tuple[list[str], list[NodeResult]]:
        name, found = answer
        fleet.known(name, found.in_service)
        answered.append(name)
        judged = judge(name, found)
        if len(answered) == len(plans):  # the ranking, once complete
            nodes.say_order(fewest_active_first({n: active[n] for n in names if n in active}))
        return judged

    def judge(name: str, found: Probe) -> tuple[list[str], list[NodeResult]]:
        """Whether node ``name`` may be started, or how it ends, now that its probe is in."""
        if name not in selected:
            return [], []
        if found.error:
            return [], [not_started(ctx, name, found)]
        if _already_current(plan, found):
            return [], [nodes.current(name)]
        intent = intent_of(plan, [name], {name: found})
        refused = _refused(intent, nodes.options)  # nobody is asked: only a downgrade is
        if refused is not None:
            fleet.halted = f"{name} runs {found.version}, newer than {plan.version}"
            return [], [nodes.unstarted(name, "skipped", *refused)]
        if intent.downgrades:
            ctx.events.emit("warning", name, f"downgrade: {found.version} -> {plan.version}")
        active[name] = found.active
        return [name], []

    place = {name: index for index, name in enumerate(names)}  # ties keep the selection's order
    arrivals = Arrivals(
        len(plans), arrived, rank=lambda n: (active[n] is None, active[n] or 0, place[n])
    )

    def answer(node_plan: NodePlan) -> None:
        arrivals.inbox.put((node_plan.name, ask(node_plan, ctx)))

    with ThreadPoolExecutor(max_workers=min(MAX_PROBE_THREADS, len(plans) or 1)) as pool:
        for node_plan in plans:
            pool.submit(answer, node_plan)
        return roll(fleet, [], nodes.start, nodes.skip, lambda: ctx.stop.requested, arrivals)


def _refused(intent: Intent, run: RunOptions) -> tuple[ExitCode, str] | None:
    """Why the run must not go on (its exit code and message), or None: the operator agreed."""
    # A dry run says what the real one would do: a downgrade is only warned of.
    if intent.downgrades and not run.allow_downgrade and run.confirm is None and not run.dry_run:
        older = ", ".join(f"{name} runs {v}" for name, v in intent.downgrades.items())
        return ExitCode.USAGE, (
            f"not started: {older}, newer than {intent.version}: a downgrade needs "
            "--allow-downgrade (or a yes at the terminal)"
        )
    if run.confirm is not None and not run.confirm(intent):
        return ExitCode.STEP_FAILED, "not started: the operator answered no"
    return None


def _already_current(plan: Plan, found: Probe) -> bool:
    return (
        plan.command == "upgrade"
        and plan.version is not None
        and found.error is None
        and found.in_service
        and found.version == plan.version
    )


def _run_inputs(settings: Settings, plan: Plan, run: RunOptions) -> dict[str, Any]:
    """What `resume` needs to rebuild the same plan."""
    return {
        "command": plan.command,
        "nodes": [node.name for node in plan.nodes],
        "inventory": os.path.abspath(settings.inventory),
        "version": plan.version,
        "options": plan.options.as_dict(),
        "argv": run.argv,
        "dry_run": run.dry_run,
    }


# --- resume ---------------------------------------------------------------------------------


def resume_plan(settings: Settings, run_id: str | None) -> tuple[Plan, dict[str, str], RunRecord]:
    """The plan of an interrupted run, and where each unfinished node starts again."""
    if run_id is None:
        found = latest_resumable(settings.state_dir)
    else:
        found = runrecords.find_run(settings.state_dir, run_id)
    if found is None:
        wanted = f"run {run_id} with a readable start record" if run_id else "unfinished run"
        raise UsageError(f"{settings.state_dir}: no {wanted} to resume (see `upgradectl status`)")
    inputs = found.start.get("data", {})
    if inputs.get("dry_run"):
        raise UsageError(
            f"run {found.run_id} was a dry run: it changed nothing, so nothing resumes"
        )
    try:
        if problem := start_problem(inputs):
            raise ValueError(problem)
        options = PlanOptions.from_dict(inputs.get("options", {}))
    except ValueError as exc:
        raise UsageError(f"{found.path}: the run's start record is not readable: {exc}") from None
    inventory = load_inventory(inputs["inventory"])
    playbooks = load_playbooks(inventory, options.playbook)
    plan = build_plan(
        inventory, inputs["nodes"], inputs["command"], options, found.run_id, playbooks
    )
    return plan, resume_points(found, inputs["nodes"]), found
