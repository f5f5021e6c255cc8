"""Executes a Plan against the nodes: the four-step plan, journalled, as a stream of events.

Each node's run goes through phases: prepare (lock, is_blocked, precheck), drain (block, wait,
straggler policy), upgrade, verify, unblock. A failure is handled in one place,
:meth:`NodeRun._recover`, by what phase it happened in: before the upgrade the node is put back
in service; after it, rollback and verify decide whether it can be.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from upgradectl import journal as journals
from upgradectl.connections import Connections
from upgradectl.duration import format_duration
from upgradectl.errors import (
    CommandTimedOut,
    ConnectionLost,
    ExitCode,
    LockHeld,
    StepFailed,
    TransportError,
    Unreachable,
    UnreadableCount,
)
from upgradectl.estimate import DrainEstimate, estimate_drain, format_eta
from upgradectl.events import Events
from upgradectl.journal import Journal
from upgradectl.lock import NodeLock, describe_holder
from upgradectl.model import DrainPolicy
from upgradectl.plan import Command, NodePlan
from upgradectl.policy import DrainState, Verdict, judge, next_poll
from upgradectl.steps import Steps

# A count that cannot be read this many times in a row stops the drain: never read as zero.
MAX_UNREADABLE_COUNTS = 3
# After `force`, how long the sessions get to disappear before the force counts as failed.
FORCE_GRACE = 30.0
# Where a resumed upgrade starts, in order.
STAGES = ("block", "upgrade", "verify", "unblock")


def resume_stage(kinds: list[str]) -> str | None:
    """Where an interrupted node carries on, from its journal record kinds in order (None: done).

    Only state changes count (not notes such as ``interrupted`` or ``result``). Block, verify and
    unblock are safe to repeat; the upgrade is re-run only if it never completed; a node that
    went down for its reboot is verified, which waits for it to answer.
    """
    states = [kind for kind in kinds if kind in journals.OUT_OF_SERVICE | journals.SETTLED]
    last = states[-1] if states else None
    if "upgraded" in states and last in ("unblocked", "left-blocked"):
        return None
    return _RESUME_AT.get(last or "", "block")


# The stage that follows each state, for a resumed node; any other state starts from block.
_RESUME_AT = {
    "upgrading": "upgrade",
    "rebooting": "verify",
    "upgraded": "verify",
    "verified": "unblock",
}


_DRAINED = object()  # the drain's marker for "done waiting", distinct from any result


@dataclass
class _Drain:
    """The progress of one drain: readings so far, the deadline, and whether stragglers were forced."""

    policy: DrainPolicy
    started: float
    wall_started: float
    samples: list[tuple[float, int]] = field(default_factory=list)
    zeros: int = 0
    unreadable: int = 0
    forced_at: float | None = None
    just_forced: bool = False
    near_end_since: int | None = None  # the poll at which the estimated end came within `poll`
    estimate: DrainEstimate | None = None  # of the latest reading: judged, then used to pace polls

    @property
    def deadline(self) -> float:
        """The monotonic time at which the straggler policy applies."""
        return self.started + self.policy.timeout

    @property
    def wall_deadline(self) -> float:
        """The same deadline on the wall clock, for people."""
        return self.wall_started + self.policy.timeout


class Stop:
    """The operator's request to stop (Ctrl-C, SIGTERM), shared by every node of the run."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def request(self, reason: str) -> None:
        """Ask the run to stop at its next safe point."""
        self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (at once) when a stop is asked for."""
        return self._event.wait(max(seconds, 0.0))


@dataclass
class RunContext:
    """What every node run of one invocation shares."""

    run_id: str
    command: str
    connections: Connections
    journal: Journal
    events: Events
    stop: Stop
    state_dir: str
    dry_run: bool = False
    break_lock: bool = False
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _earlier: Mapping[str, Mapping[str, Any]] | None = field(default=None, init=False, repr=False)
    _earlier_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def left_blocked_by_earlier_runs(self, node: str) -> Mapping[str, Any] | None:
        """The record of an earlier run that left ``node`` blocked by this tool, if any.

        The state dir holds every past run: it is read once per invocation, not once per node.
        """
        with self._earlier_lock:
            if self._earlier is None:
                self._earlier = journals.left_blocked(self.state_dir)
            return self._earlier.get(node)


@dataclass
class NodeResult:
    """How one node ended."""

    node: str
    result: str
    exit_code: ExitCode
    message: str = ""
    drain_seconds: float | None = None
    forced: list[dict[str, Any]] = field(default_factory=list)
    forced_count: int = 0
    in_service: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The node's entry in the JSON summary."""
        return {
            "result": self.result,
            "exit_code": int(self.exit_code),
            "in_service": self.in_service,
            "message": self.message,
            "drain_seconds": None if self.drain_seconds is None else round(self.drain_seconds, 3),
            "forced": self.forced,
            "forced_count": self.forced_count,
        }


class NodeRun:
    """One node through one command (drain, upgrade, patch, unblock) or its dry run."""

    def __init__(self, plan: NodePlan, ctx: RunContext) -> None:
        self.plan = plan
        self.ctx = ctx
        self.name = plan.name
        self.steps = Steps(
            plan,
            ctx.connections.get,
            ctx.events,
            reconnect_for=plan.drain.reconnect_for,
            pause=ctx.stop.wait,
        )
        self.phase = "prepare"
        self.ours = False  # this run (or an earlier one of ours) blocked the node: undo is ours
        self.hand_blocked = False  # blocked before any run of ours: it stays blocked
        self.forced: list[dict[str, Any]] = []
        self.forced_count = 0
        self.drain_seconds: float | None = None
        self.last_state: str | None = None
        self.blocked = False  # this tool has the node blocked now (its own block, not a hand's)

    # -- journal and events ----------------------------------------------------------------

    def record(self, kind: str, message: str, **data: Any) -> None:
        """A state change: on disk first, then announced."""
        if kind == "blocking":
            self.blocked = self.ours
        elif kind == "unblocked":
            self.blocked = False
        self.ctx.journal.append(
            kind,
            self.name,
            message=message,
            hand_blocked=self.hand_blocked,
            ours=self.ours,
            blocked=self.blocked,
            **data,
        )
        if kind in journals.OUT_OF_SERVICE | journals.SETTLED:
            self.last_state = kind
        self.ctx.events.emit(kind, self.name, message, **data)

    def say(self, kind: str, message: str, **data: Any) -> None:
        """An event that changes nothing."""
        self.ctx.events.emit(kind, self.name, message, **data)

    def result(self, result: str, code: ExitCode, message: str) -> NodeResult:
        """This node's result, with what the drain measured and cut, and whether it serves now."""
        in_service = code != ExitCode.ATTENTION and not self.hand_blocked and not self.blocked
        return NodeResult(
            self.name,
            result,
            code,
            message,
            self.drain_seconds,
            self.forced,
            self.forced_count,
            in_service,
        )

    # -- entry point -----------------------------------------------------------------------

    def run(self, start_at: str = "block") -> NodeResult:
        """Run the context's command on this node; every outcome becomes a NodeResult."""
        self.say("node-start", f"{self.ctx.command} with playbook {self.plan.playbook.name}")
        if self.ctx.dry_run:
            return self._finish(self._guarded(self._preview))
        lock = NodeLock(
            self.name, self.plan.lock_path, self.steps.shell, self.ctx.run_id, self.ctx.command
        )
        try:
            lock.acquire(break_lock=self.ctx.break_lock, on_break=self._lock_broken)
        except LockHeld as exc:
            return self._finish(self.result("locked", exc.exit_code, str(exc)))
        except TransportError as exc:
            return self._finish(self.result("unreachable", exc.exit_code, str(exc)))
        try:
            body = {
                "drain": self._drain_only,
                "upgrade": lambda: self._upgrade(start_at),
                "patch": self._patch,
                "unblock": self._unblock_only,
            }[self.ctx.command]
            outcome = self._guarded(body)
        finally:
            try:
                lock.release()
            except TransportError as exc:
                self.say("warning", f"could not release the lock {self.plan.lock_path}: {exc}")
        return self._finish(outcome)

    def _lock_broken(self, holder: dict[str, Any]) -> None:
        self.ctx.journal.append("lock-broken", self.name, holder=holder)
        self.say("warning", f"--break-lock: took over the lock of {describe_holder(holder)}")

    def _finish(self, outcome: NodeResult) -> NodeResult:
        self.ctx.journal.append("result", self.name, **outcome.as_dict())
        data = outcome.as_dict()
        self.say("node-done", f"{outcome.result}: {data.pop('message')}", **data)
        return outcome

    def _guarded(self, body: Callable[[], NodeResult]) -> NodeResult:
        # The outer handler also catches a connection lost while recovering from a failed step.
        try:
            try:
                return body()
            except (StepFailed, CommandTimedOut) as exc:
                return self._recover(exc)
        except TransportError as exc:
            return self._lost(exc)

    def _lost(self, error: TransportError) -> NodeResult:
        """The node cannot be reached (or trusted): its state is unknown, and that needs a person."""
        known = (
            f"last recorded state: {self.last_state}"
            if self.last_state
            else "nothing was changed by this run"
        )
        self.record(
            "attention",
            f"{error}; the node is in an unknown state ({known})",
            last_state=self.last_state,
        )
        result = "unreachable" if isinstance(error, Unreachable) else "attention"
        return self.result(result, error.exit_code, str(error))

    # -- the commands ----------------------------------------------------------------------

    def _drain_only(self) -> NodeResult:
        self._prepare()
        self._block()
        gave_up = self._drain()
        if gave_up:
            return gave_up
        return self.result(
            "drained",
            ExitCode.OK,
            f"drained in {format_duration(self.drain_seconds or 0)}; left blocked",
        )

    def _upgrade(self, start_at: str) -> NodeResult:
        stage = STAGES.index(start_at)
        if stage == 0:
            self._prepare()
            self._block()
            gave_up = self._drain()
            if gave_up:
                return gave_up
        else:
            self._inherit_block()
        if stage <= 1:
            self._upgrade_step()
            if self.ctx.stop.requested:
                return self._interrupted_after_upgrade()
        if stage <= 2:
            self._verify()
        return self._unblock("upgraded")

    def _patch(self) -> NodeResult:
        self.phase = "patch"
        self.record("patching", f"hot patch on {self.steps.target('patch')}")
        self.steps.run("patch")
        self._verify()
        self.record("patched", "patched and verified")
        return self.result("patched", ExitCode.OK, "patched and verified; no drain")

    def _unblock_only(self) -> NodeResult:
        self._inherit_block()
        self.phase = "check"
        self._verify()
        self.hand_blocked = False  # the operator asked for this node to be unblocked
        return self._unblock("unblocked")

    # -- phases ----------------------------------------------------------------------------

    def _inherit_block(self) -> None:
        """Learn from the journal whether an earlier run of ours left this node blocked."""
        earlier = self.ctx.left_blocked_by_earlier_runs(self.name)
        if earlier is not None:
            data = earlier.get("data", {})
            self.hand_blocked = bool(data.get("hand_blocked"))
            self.ours = not self.hand_blocked
            self.blocked = self.ours
            self.last_state = earlier["kind"]
            self.say(
                "note",
                f"carrying on from run {earlier['run']}, which left the node {earlier['kind']}",
            )

    def _prepare(self) -> None:
        self._inherit_block()
        if not self.ours and self.steps.is_blocked():
            self.hand_blocked = True
            self.record("was-blocked", "was blocked before this run: it will be left blocked")
        if self.steps.has("precheck"):
            self.steps.run("precheck")
            self.say("precheck", f"precheck passed on {self.steps.target('precheck')}")

    def _block(self) -> None:
        self.phase = "drain"
        target = self.steps.target("block")
        self.ours = (
            self.ours or not self.hand_blocked
        )  # set first: a half-done block is ours to undo
        self.record("blocking", f"blocking at {target}")
        self.steps.run("block")
        self.record("blocked", f"blocked at {target}; no new sessions")

    def _drain(self) -> NodeResult | None:
        """Wait for the sessions to end; None once drained, else how the drain ended."""
        drain = _Drain(self.plan.drain, self.ctx.monotonic(), self.ctx.wall())
        while True:
            active = self._read_count(drain)
            if active is not None:
                ended = self._judge(drain, active)
                if ended is _DRAINED:
                    break
                if isinstance(ended, NodeResult):
                    return ended
                if drain.just_forced:
                    drain.just_forced = False
                    continue  # look again at once: the force should have emptied the node
            if self.ctx.stop.wait(self._next_poll(drain)):
                reason = f"stopped ({self.ctx.stop.reason}) while waiting"
                return self._back_in_service(ExitCode.INTERRUPTED, "interrupted", reason)
        self.drain_seconds = self.ctx.monotonic() - drain.started
        self.record(
            "drained",
            f"drained in {format_duration(self.drain_seconds)}",
            seconds=self.drain_seconds,
        )
        if self.ctx.stop.requested:
            return self._back_in_service(
                ExitCode.INTERRUPTED, "interrupted", f"stopped ({self.ctx.stop.reason})"
            )
        return None

    def _next_poll(self, drain: _Drain) -> float:
        active = drain.samples[-1][1] if drain.samples else None
        eta = drain.estimate.eta_low if drain.estimate and active else None
        polls = len(drain.samples)
        if eta is None or eta >= self.plan.drain.poll:
            drain.near_end_since = None
        elif drain.near_end_since is None:
            drain.near_end_since = polls
        return next_poll(
            self.plan.drain,
            polls,
            active,
            eta,
            drain.deadline - self.ctx.monotonic(),
            near_end_polls=0 if drain.near_end_since is None else polls - drain.near_end_since,
            phase=zlib.crc32(self.name.encode()) / 2**32,
        )

    def _read_count(self, drain: _Drain) -> int | None:
        """The live count, or None for an unreadable one (never zero; too many in a row raise)."""
        try:
            active = self.steps.count()
        except UnreadableCount as exc:
            drain.unreadable += 1
            if drain.unreadable >= MAX_UNREADABLE_COUNTS:
                raise
            self.say(
                "warning", f"{exc}; polling again ({drain.unreadable} of {MAX_UNREADABLE_COUNTS})"
            )
            return None
        drain.unreadable = 0
        drain.samples.append((self.ctx.monotonic(), active))
        drain.zeros = drain.zeros + 1 if active == 0 else 0
        return active

    def _judge(self, drain: _Drain, active: int) -> NodeResult | object | None:
        """Apply the straggler policy to a new reading: _DRAINED, a result that ends the drain, or None."""
        policy = self.plan.drain
        now = self.ctx.monotonic()
        estimate = drain.estimate = estimate_drain(drain.samples, stall_after=policy.stall_after)
        self._poll_event(active, estimate, drain.wall_deadline)
        if drain.forced_at is not None:
            if drain.zeros >= policy.settle:
                return _DRAINED
            if now > drain.forced_at + FORCE_GRACE:
                target = self.steps.target("force")
                raise StepFailed("force", target, f"{active} sessions still live after force")
            return None
        eta = estimate.eta_low if estimate else None
        verdict = judge(policy, DrainState(active, drain.zeros, now, drain.deadline, eta))
        if verdict is Verdict.DRAINED:
            return _DRAINED
        if verdict is Verdict.ABORT:
            return self._give_up(active)
        if verdict is Verdict.FORCE:
            # Before the deadline only the estimate can force: journal that it did.
            self._force(active, "eta_exceeds_deadline" if now < drain.deadline else "deadline")
            drain.forced_at = self.ctx.monotonic()
            drain.just_forced = True
        return None

    def _poll_event(self, active: int, estimate: DrainEstimate | None, deadline: float) -> None:
        # At zero the drain is not over until `settle` readings agree: say the count, not "drained".
        insight = format_eta(estimate) if estimate and active else f"{active} active"
        data: dict[str, Any] = {"active": active, "deadline": deadline, "insight": insight}
        if estimate is not None:
            data.update(
                rate_per_minute=round(estimate.rate_per_minute, 3),
                eta_low=estimate.eta_low,
                eta_high=estimate.eta_high,
                stalled=estimate.stalled,
            )
        self.say("poll", insight, **data)

    def _force(self, active: int, because: str) -> None:
        policy = self.plan.drain
        sessions = self.steps.sessions(self.ctx.wall())
        listed = [{"id": s.id, "age": s.age, "line": s.line} for s in sessions]
        self.record(
            "forcing",
            f"{active} session{'s' if active != 1 else ''} left (at most {policy.max_stragglers} may be forced); "
            + (
                "forcing"
                if because == "deadline"
                else "forcing now: the estimate says they will outlast the deadline"
            ),
            active=active,
            sessions=listed,
            because=because,
        )
        self.steps.run("force")
        cut_at = self.ctx.wall()
        self.forced = [
            {**s, "node": self.name, "run": self.ctx.run_id, "cut_at": cut_at} for s in listed
        ]
        self.forced_count = max(active, len(listed))
        names = (
            ", ".join(str(s["id"]) for s in listed)
            or f"{active} unnamed (the playbook has no sessions step)"
        )
        self.record(
            "forced",
            f"cut {self.forced_count}: {names}",
            sessions=self.forced,
            count=self.forced_count,
        )

    def _give_up(self, active: int) -> NodeResult:
        policy = self.plan.drain
        why = (
            f"{active} sessions left at the deadline, more than max_stragglers={policy.max_stragglers}"
            if policy.stragglers == "force"
            else f"{active} sessions left at the deadline (stragglers: abort)"
        )
        self.record("aborted", f"{why}; giving up, not upgraded", active=active)
        return self._back_in_service(
            ExitCode.GAVE_UP, "aborted", f"{why}; back in service, not upgraded"
        )

    def _upgrade_step(self) -> None:
        command = self.plan.steps["upgrade"]
        # Read before the phase changes: a node that cannot be judged is never upgraded.
        boot_id = self._boot_id_before_reboot() if command.reboot else None
        self.phase = "upgrade"
        self.record("upgrading", f"upgrading: {command.run}", expected=command.expected)
        if command.reboot:
            self._reboot(command, boot_id)
        else:
            self.steps.run("upgrade")
        self.record("upgraded", "upgrade step done")

    def _boot_id_before_reboot(self) -> str | None:
        """The boot id before a rebooting upgrade; without it or a ``ready`` step, nothing could
        tell that the node is back."""
        target = self.steps.target("upgrade")
        boot_id = self.steps.boot_id(target)
        if boot_id is None and not self.steps.has("ready"):
            raise StepFailed(
                "upgrade",
                target,
                "cannot tell when the node is back from its reboot: it shows no boot id and "
                "the playbook has no `ready` step",
            )
        return boot_id

    def _reboot(self, command: Command, boot_id: str | None) -> None:
        """Run the rebooting upgrade, expecting the connection to drop; wait for the node to return."""
        deadline = time.monotonic() + command.timeout
        try:
            self.steps.run("upgrade")
            how = "the upgrade command returned"
        except ConnectionLost:
            how = "the connection dropped"
        self.record(
            "rebooting",
            f"{how}; waiting up to {format_duration(command.timeout)} for the node to come back",
            boot_id=boot_id,
        )
        why = self.steps.await_return(boot_id, deadline)
        self.say("back", f"back from the reboot: {why}")

    def _verify(self) -> None:
        if self.phase != "check":
            self.phase = "verify"
        if self.steps.has("verify"):
            self.steps.run("verify")
            self.record("verified", f"verified on {self.steps.target('verify')}")

    def _unblock(self, result: str) -> NodeResult:
        self.phase = "unblock"
        if self.hand_blocked:
            self.record("left-blocked", "left blocked, as it was found before this run")
            return self.result(
                result, ExitCode.OK, "done; left blocked as found (it was blocked by hand)"
            )
        target = self.steps.target("unblock")
        self.steps.run("unblock")
        self.record("unblocked", f"unblocked at {target}; back in service")
        return self.result(result, ExitCode.OK, "done; back in service")

    def _interrupted_after_upgrade(self) -> NodeResult:
        message = f"stopped ({self.ctx.stop.reason}) after the upgrade step; `upgradectl resume` verifies and unblocks"
        self.record("interrupted", message)
        return self.result("interrupted", ExitCode.INTERRUPTED, message)

    # -- failures --------------------------------------------------------------------------

    def _recover(self, error: Exception) -> NodeResult:
        self.record("failed", str(error))
        if self.phase in ("prepare", "drain"):
            return self._back_in_service(ExitCode.STEP_FAILED, "failed", f"{error}; not upgraded")
        restored = self._restored() if self.phase in ("upgrade", "verify", "patch") else ""
        if restored:
            return self._back_in_service(ExitCode.STEP_FAILED, "failed", f"{error}; {restored}")
        where = "left blocked" if self.ours or self.hand_blocked else "left as it is"
        self.record(
            "left-blocked" if self.ours else "attention",
            f"{error}; {where}: needs a person",
            last_state=self.last_state or self.phase,  # the run changed it: a patch, a rollback
        )
        return self.result("attention", ExitCode.ATTENTION, f"{error}; {where}")

    def _restored(self) -> str:
        """Roll back (if the playbook can) and verify; how the node is known good again, or ""."""
        rolled_back = self.steps.has("rollback")
        if rolled_back:
            self.record("rolling-back", f"rolling back on {self.steps.target('rollback')}")
            try:
                self.steps.run("rollback")
            except (StepFailed, CommandTimedOut) as exc:
                self.say("failed", f"rollback failed: {exc}")
                return ""
            self.record("rolled-back", "rolled back")
        elif self.phase == "verify":
            return ""  # the new version fails its check and nothing can undo it
        if not self.steps.has("verify"):
            return "rolled back (no verify step)" if rolled_back else ""
        try:
            self.steps.run("verify")
        except (StepFailed, CommandTimedOut) as exc:
            self.say("failed", f"verify after the failure failed too: {exc}")
            return ""
        self.record("verified", "verified after the failure")
        # Without a rollback nothing was restored: the node may run the new version or the old.
        return (
            "rolled back and verified"
            if rolled_back
            else "not rolled back (the playbook has no rollback step), but it verifies"
        )

    def _back_in_service(self, code: ExitCode, result: str, message: str) -> NodeResult:
        """Undo this run's block (and only that); the node is then as the run found it."""
        if not self.ours or self.hand_blocked:
            return self.result(result, code, message)
        try:
            self.steps.run("unblock")
        except (StepFailed, CommandTimedOut, TransportError) as exc:
            self.record("left-blocked", f"could not unblock: {exc}")
            return self.result(
                "attention", ExitCode.ATTENTION, f"{message}; could not unblock: {exc}"
            )
        self.record("unblocked", f"unblocked at {self.steps.target('unblock')}; back in service")
        return self.result(result, code, message)

    # -- dry run ---------------------------------------------------------------------------

    def _preview(self) -> NodeResult:
        from upgradectl.preview import describe_node  # noqa: PLC0415 - only dry runs need it

        message, data = describe_node(self)
        self.say("would", message, **data)
        return self.result("dry-run", ExitCode.OK, "nothing was changed")
