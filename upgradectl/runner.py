"""One node through one command: its phases in order, and recovery when a step fails.

Phases: prepare (lock, is_blocked, precheck), drain (block, then :mod:`upgradectl.drain`),
upgrade (:mod:`upgradectl.reboot` when it reboots), verify, unblock. A failure is handled in one
place, :meth:`NodeRun._recover`, by what phase it happened in: before the upgrade the node is put
back in service; after it, rollback and verify decide whether it can be. What recovery may undo
is :mod:`upgradectl.custody`'s to say; where a resumed node starts, :mod:`upgradectl.resume`'s.

A dry run takes this same path: the read-only steps run, the acting ones (block, force, upgrade,
rollback, verify, unblock, patch, the node lock) are described in a :mod:`upgradectl.rehearsal`
instead, and the drain reads the count once rather than waiting it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from upgradectl.context import RunContext
from upgradectl.custody import BlockCustody
from upgradectl.drain import Drained, DrainLoop, GaveUp
from upgradectl.duration import format_duration
from upgradectl.errors import (
    CommandTimedOut,
    ExitCode,
    JournalFailed,
    LockHeld,
    StepFailed,
    TransportError,
    UnexpectedError,
    Unreachable,
    UpgradectlError,
)
from upgradectl.history import NOT_CONFIRMED
from upgradectl.lockholder import dead_run_of_ours
from upgradectl.nodelock import LOCK_TIMEOUT, NodeLock, describe_holder
from upgradectl.nodelog import NodeLog
from upgradectl.plan import Command, NodePlan
from upgradectl.reboot import RebootWait
from upgradectl.rehearsal import Rehearsal
from upgradectl.results import NodeResult, concluded
from upgradectl.resume import STAGES
from upgradectl.steps import Steps
from upgradectl.witness import Counts, look

# Said of a block or unblock whose effect the playbook cannot read back.
_NO_WITNESS = "no is_blocked step to read it back"


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
        self.custody = BlockCustody()
        self.log = NodeLog(self.name, ctx, self.custody)
        self.drain = DrainLoop(self.steps, ctx, self.log)
        self.drain_seconds: float | None = None
        self.phase = "prepare"
        self._lock: NodeLock | None = None
        self._unblocking = (
            False  # the intention to unblock is on record (before verify, sent with it)
        )
        self._asked: set[str] = set()  # the intentions of a resumed run already asked about
        self.rehearsal = Rehearsal() if ctx.dry_run else None  # a dry run's acts, described

    def result(self, result: str, code: ExitCode, message: str) -> NodeResult:
        """This node's result, with what the drain measured and cut, and whether it serves now."""
        in_service = code != ExitCode.ATTENTION and self.custody.in_service
        return NodeResult(
            self.name,
            result,
            code,
            message,
            self.drain_seconds,
            self.drain.forced,
            self.drain.forced_count,
            in_service,
        )

    # -- entry point -----------------------------------------------------------------------

    def run(self, start_at: str = "block") -> NodeResult:
        """Run the context's command on this node; every outcome becomes a NodeResult."""
        self.log.say("node-start", f"{self.ctx.command} with playbook {self.plan.playbook.name}")
        body = {
            "drain": self._drain_only,
            "upgrade": lambda: self._upgrade(start_at),
            "patch": self._patch,
            "unblock": self._unblock_only,
        }[self.ctx.command]
        if self.rehearsal is not None:
            return concluded(self.ctx, self._rehearsed(self._guarded(body), self.rehearsal))
        lock = self._lock = NodeLock(
            self.name, self.plan.lock_path, self.steps.shell, self.ctx.run_id, self.ctx.command
        )
        if start_at == "block" and self.ctx.command in ("drain", "upgrade"):
            self.steps.along("is_blocked")  # the prepare phase's question, with the lock
        try:
            lock.acquire(
                break_lock=self.ctx.break_lock,
                on_break=self._lock_broken,
                dead_run=lambda holder: dead_run_of_ours(holder, self.ctx.state_dir),
                on_take_over=self._lock_taken_over,
            )
        except LockHeld as exc:
            return concluded(self.ctx, self.result("locked", exc.exit_code, str(exc)))
        except TransportError as exc:
            return concluded(self.ctx, self.result("unreachable", exc.exit_code, str(exc)))
        except Exception as exc:  # nothing was blocked yet: a failure, and the lock let go
            self._release(lock)
            message = f"not started: {UnexpectedError(exc)}"
            return concluded(self.ctx, self.result("failed", ExitCode.STEP_FAILED, message))
        try:
            outcome = self._guarded(lambda: self._reconciled(body, start_at))
        finally:
            self._release(lock)
        return concluded(self.ctx, outcome)

    def _reconciled(self, body: Callable[[], NodeResult], start_at: str) -> NodeResult:
        """A resumed node whose run died between an intention and its outcome: ask the node
        what became of it, and write that down, before carrying on."""
        intention = self.ctx.intentions.get(self.name, {})
        kind = intention.get("kind")
        if kind == "forcing":
            self._reconcile_force(intention.get("data", {}))
        # Recorded before a verify sent with the unblock too: an unblock that worked passed it.
        unblocked = (
            kind == "unblocking"
            and start_at in ("verify", "unblock")
            and self.name not in self.ctx.hand_blocked
            and self.steps.is_blocked() is False
        )
        if unblocked:
            self.log.record("unblocked", "found in service: the unblock before the crash worked")
            done = {"upgrade": "upgraded", "unblock": "unblocked"}.get(self.ctx.command, "done")
            return self.result(done, ExitCode.OK, "done; back in service")
        return body()

    def _reconcile_force(self, forcing: dict[str, Any]) -> None:
        """The force may have run before the controller died: ask the node. The sessions it
        named that are gone now, and the unnamed ones the counts show gone, are written down as
        cut, not confirmed (they may have ended by themselves); unnamed ones the counts cannot
        tell about now are written down as perhaps cut."""
        listed = [s for s in forcing.get("sessions") or [] if isinstance(s, dict) and "id" in s]
        active = forcing.get("active")
        before = Counts(active if isinstance(active, int) else 0)  # the count the force was for
        unlisted = max(before.live - len(listed), 0)
        if not unlisted and not (listed and self.steps.has("sessions")):
            return
        proof = look(self.steps, self.ctx, listed)
        gone = [
            {**session, "node": self.name, "run": self.ctx.run_id, "cut_at": self.ctx.wall(),
             "cut": f"{NOT_CONFIRMED}; gone when resume looked"}
            for session in proof.gone
        ]  # fmt: skip
        said = [str(s["id"]) for s in gone]
        unnamed, seen = 0, {}
        if unlisted:
            after = proof.counts.live if proof.counts is not None else None
            unnamed = unlisted if after is None else proof.unnamed_cut(before)
            seen = {"active_before": before.live, "active_after": after}
        if unnamed:
            said.append(
                f"{unnamed} unnamed: the count could not be read when resume looked"
                if seen["active_after"] is None
                else f"{unnamed} unnamed: count went from {before.live} to {seen['active_after']}"
                " when resume looked"
            )
        if gone or unnamed:
            self.log.record(
                "forced",
                f"{NOT_CONFIRMED} around the force; cut then, or ended by themselves: "
                + "; ".join(said),
                sessions=gone,
                count=len(gone) + unnamed,
                confirmed=False,
                **seen,
            )

    def _release(self, lock: NodeLock) -> None:
        try:
            lock.release()
        except Exception as exc:  # the node's result stands: a lock left is reported, not fatal
            self.log.say("warning", f"could not release the lock {self.plan.lock_path}: {exc}")

    def _rehearsed(self, outcome: NodeResult, rehearsal: Rehearsal) -> NodeResult:
        """A dry run that got through says what the run would have done; one that failed (a
        precheck, an unreachable node) fails as the run would have."""
        if outcome.exit_code != ExitCode.OK:
            return outcome
        self.log.say("would", rehearsal.sentence(), **rehearsal.data)
        # `in_service` stays what the run would leave: the fleet's limits decide as they would.
        return replace(outcome, result="dry-run", message="nothing was changed")

    def _act(self, step: str, description: str, joint: str = ", ") -> None:
        """Run an acting step; a dry run describes it instead."""
        if self.rehearsal is not None:
            self.rehearsal.would(description, joint)
        else:
            self.steps.run(step)

    def _note(self, text: str) -> None:
        if self.rehearsal is not None:
            self.rehearsal.note(text)

    def _lock_taken_over(self, holder: dict[str, Any], why: str) -> None:
        self.ctx.journal.append("lock-taken-over", self.name, holder=holder, why=why)
        self.log.say("warning", f"took over the lock of {describe_holder(holder)}: {why}")

    def _lock_broken(self, holder: dict[str, Any]) -> None:
        self.ctx.journal.append("lock-broken", self.name, holder=holder)
        self.log.say("warning", f"--break-lock: took over the lock of {describe_holder(holder)}")

    def _guarded(self, body: Callable[[], NodeResult]) -> NodeResult:
        # A journal that fails during recovery stops the recovery too: put back what is ours.
        try:
            return self._recovering(body)
        except JournalFailed as exc:
            return self._journal_failed(exc)
        except Exception as exc:  # the recovery itself broke: the node's state is unknown
            return self._lost(UnexpectedError(exc))

    def _recovering(self, body: Callable[[], NodeResult]) -> NodeResult:
        # The outer handler also catches a connection lost while recovering from a failed step.
        try:
            try:
                return body()
            except (StepFailed, CommandTimedOut) as exc:
                return self._recover(exc)
            except (TransportError, JournalFailed):
                raise
            except Exception as exc:  # a fault of ours is a failed step: the node is put back
                return self._recover(UnexpectedError(exc))
        except TransportError as exc:
            return self._lost(exc)

    def _journal_failed(self, error: JournalFailed) -> NodeResult:
        """The journal cannot be written: act no further; put the node back as the run found it.

        An upgrade may have run by now, so the node goes back only once it verifies.
        """
        self.ctx.stop.request("the journal cannot be written")
        self.log.say("error", f"{error}; stopping, and putting the node back")
        message = f"{error}; stopped"
        if self.phase in ("upgrade", "verify", "unblock") and self.steps.has("verify"):
            try:
                self.steps.run("verify")
            except (StepFailed, CommandTimedOut, TransportError) as exc:
                return self.result(
                    "attention", ExitCode.ATTENTION, f"{message}; {exc}; left blocked"
                )
        return self._back_in_service(ExitCode.STEP_FAILED, "failed", message)

    def _lost(self, error: UpgradectlError) -> NodeResult:
        """The node cannot be reached (or trusted): its state is unknown, and that needs a person."""
        last_state = self.log.last_state
        known = (
            f"last recorded state: {last_state}"
            if last_state
            else "nothing was changed by this run"
        )
        self.log.record(
            "attention",
            f"{error}; the node is in an unknown state ({known})",
            last_state=last_state,
        )
        result = "unreachable" if isinstance(error, Unreachable) else "attention"
        # Whatever the error's own code (a refused host key is 2 before a run), here it may have
        # left the node out of service: a person must look.
        return self.result(result, ExitCode.ATTENTION, str(error))

    # -- the commands ----------------------------------------------------------------------

    def _drain_only(self) -> NodeResult:
        self._prepare()
        self._block()
        ended = self._drain()
        if ended is not None:
            return ended
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
            ended = self._drain()
            if ended is not None:
                return ended
        else:
            self._inherit_block()
        if stage == 1 and self._already_upgraded():
            stage = 2
        if stage <= 1:
            ended = self._hold_block()
            if ended is not None:
                return ended
            self._upgrade_step()
            if self.ctx.stop.requested:
                return self._interrupted_after_upgrade()
        if stage <= 2:
            self._finish_together()
            self._verify()
        return self._unblock("upgraded")

    def _patch(self) -> NodeResult:
        self.phase = "patch"
        target = self.steps.target("patch")
        self.log.record("patching", f"hot patch on {target}")
        self._act("patch", f"hot-patch on {target}: {self.plan.steps['patch'].run}")
        self._verify(joint="; then ")
        self.log.record("patched", "patched and verified")
        return self.result("patched", ExitCode.OK, "patched and verified; no drain")

    def _unblock_only(self) -> NodeResult:
        self._inherit_block()
        self.phase = "check"
        self._verify()
        self.custody.handed_over()
        return self._unblock("unblocked", joint=", then ")

    # -- phases ----------------------------------------------------------------------------

    def _inherit_block(self) -> None:
        """Learn from the journal whether an earlier run of ours left this node blocked."""
        if self.name in self.ctx.hand_blocked:  # a resumed run had found it blocked by hand
            self.custody.inherited(hand_blocked=True)
            return
        earlier = self.ctx.left_blocked_by_earlier_runs(self.name)
        if earlier is not None:
            self.custody.inherited(bool(earlier.get("data", {}).get("hand_blocked")))
            self.log.last_state = earlier["kind"]
            self.log.say(
                "note",
                f"carrying on from run {earlier['run']}, which left the node {earlier['kind']}",
            )

    def _prepare(self) -> None:
        self._inherit_block()
        if not self.custody.ours and self.steps.is_blocked():
            self.custody.found_blocked()
            self.log.record("was-blocked", "was blocked before this run: it will be left blocked")
            self._note("already blocked before this run: would leave it blocked")
        if self.steps.has("precheck"):
            target = self.steps.target("precheck")
            self.steps.run("precheck")  # read-only: a dry run fails on it as the run would
            self.log.say("precheck", f"precheck passed on {target}")
            self._note(f"precheck passes on {target}")

    def _block(self) -> None:
        self.phase = "drain"
        target = self.steps.target("block")
        self.custody.took()
        if self._blocked_before_the_crash():
            self.log.record(
                "blocked", f"found blocked at {target}: the block before the crash worked"
            )
            return
        self.log.record("blocking", f"blocking at {target}")
        if not self.steps.has("is_blocked"):
            self._note("no is_blocked step: the block and unblock would not be read back")
        self._read_back_along()
        self._act("block", f"block at {target}")
        if self._read_back("block", blocked=True):
            self.log.record("blocked", f"blocked at {target}; no new sessions (is_blocked says so)")
        else:
            self.log.record("blocked", f"block step done at {target} ({_NO_WITNESS})")

    def _blocked_before_the_crash(self) -> bool:
        """Whether a resumed run died between its block and the record of it, and the node
        says the block is on (asked once; without `is_blocked`, the block is put on again)."""
        intention = self.ctx.intentions.get(self.name, {})
        if intention.get("kind") != "blocking" or self.name in self._asked:
            return False
        self._asked.add(self.name)
        return self.steps.is_blocked() is True

    def _drain(self) -> NodeResult | None:
        """Wait for the sessions to end; None once drained, else the node's result."""
        if self.rehearsal is not None:
            self.drain.rehearse(self.rehearsal)  # a dry run does not wait out a real drain
            return None
        ended = self.drain.run()
        if isinstance(ended, Drained):
            self.drain_seconds = ended.seconds
            return None
        if isinstance(ended, GaveUp):
            message = f"{ended.why}; back in service, not upgraded"
            return self._back_in_service(ExitCode.GAVE_UP, "aborted", message)
        return self._back_in_service(ExitCode.INTERRUPTED, "interrupted", ended.why)

    def _hold_block(self) -> NodeResult | None:
        """Read the block right before the upgrade: one found lost is put back, and the node is
        drained again (sessions may have arrived); None once it is blocked and empty."""
        if self.rehearsal is not None:
            return None  # a dry run blocked nothing: there is no block to lose
        # Read with the drain's last count when it could be (one round trip for both).
        while self.drain.watch.check("before upgrade", self._block_seen()):
            ended = self._drain()
            if ended is not None:
                return ended
        return None

    def _block_seen(self) -> bool | None:
        seen, self.drain.block_seen = self.drain.block_seen, None
        return seen

    def _upgrade_step(self) -> None:
        command = self.plan.steps["upgrade"]
        reboot = RebootWait(self.steps, self.ctx, self.log) if command.reboot else None
        # Read before the phase changes: a node that cannot be judged is never upgraded.
        boot_id = reboot.boot_id_before() if reboot else None
        self.phase = "upgrade"
        self.log.record("upgrading", f"upgrading: {command.run}", expected=command.expected)
        if reboot is None or self.rehearsal is not None:
            self._act("upgrade", f"upgrade ({command.run})", joint="; then ")
        elif not reboot.run(command, boot_id):
            return  # stopped while it reboots: `resume` verifies it once it is back
        self.log.record("upgraded", "upgrade step done")

    def _finish_together(self) -> None:
        """Verify, unblock and the lock's release in one round trip, each only if the one
        before it succeeded: where each one's success is its exit code alone (no ``parse`` or
        ``fail_if`` to read, no retries) and all run on the node itself, beside its lock."""
        if self.rehearsal is not None or self.custody.hand_blocked or self._lock is None:
            return
        chain = [self.plan.steps[name] for name in ("verify", "unblock") if self.steps.has(name)]
        if not chain or chain[-1].step != "unblock":
            return
        if any(c.parse or c.fail_if or c.retries > 1 or c.target != self.name for c in chain):
            return
        release = Command(
            step="lock", target=self.name, run=self._lock.release_command(), timeout=LOCK_TIMEOUT
        )
        # The block's read-back goes last: its exit code may say "blocked", which gates nothing.
        self.steps.along(*chain[1:], release, "is_blocked", gated=True)
        # Written ahead of the round trip that may unblock: a run that dies now leaves `resume`
        # the question to ask the node (and the verify to run again if it is still blocked).
        self._record_unblocking()

    def _record_unblocking(self) -> None:
        if not self._unblocking:
            self._unblocking = True
            self.log.record("unblocking", f"unblocking at {self.steps.target('unblock')}")

    def _already_upgraded(self) -> bool:
        """On resume, before the upgrade runs again: did the interrupted one finish after all?

        The node's own word (the ``version`` step) decides; without it the upgrade runs again,
        which the playbook must then allow (README: upgrades must be safe to repeat).
        """
        version = self.plan.variables.get("version")
        if not self.steps.has("version") or version is None:
            self.log.say(
                "note",
                "re-running the upgrade: the journal shows it started but not that it finished, "
                "and the playbook has no `version` step to ask the node (it must be safe to repeat)",
            )
            return False
        found = self.steps.version()
        if found != version:
            self.log.say("note", f"re-running the upgrade: the node reports version {found}")
            return False
        self.phase = "upgrade"
        self.log.record("upgraded", f"already at version {version}: the upgrade is not run again")
        return True

    def _verify(self, joint: str = ", ") -> None:
        if self.phase != "check":
            self.phase = "verify"
        if self.steps.has("verify"):
            self._act("verify", "verify", joint)
            self.log.record("verified", f"verified on {self.steps.target('verify')}")

    def _unblock(self, result: str, joint: str = ", ") -> NodeResult:
        self.phase = "unblock"
        if self.custody.hand_blocked:
            self.log.record("left-blocked", "left blocked, as it was found before this run")
            return self.result(
                result, ExitCode.OK, "done; left blocked as found (it was blocked by hand)"
            )
        return self.result(result, ExitCode.OK, f"done; {self._lift_block(joint)}")

    def _lift_block(self, joint: str = ", ") -> str:
        """Unblock; what is known of the node after it ("back in service" only when read back)."""
        target = self.steps.target("unblock")
        # Written ahead: a run that dies now leaves `resume` the question to ask the node.
        self._record_unblocking()
        self._read_back_along()
        self._act("unblock", f"unblock at {target}", joint)
        witnessed = self._read_back("unblock", blocked=False)
        self.custody.released()
        if not witnessed:
            self.log.record("unblocked", f"unblock step done at {target} ({_NO_WITNESS})")
            return f"unblock step done ({_NO_WITNESS})"
        self.log.record("unblocked", f"unblocked at {target}; back in service (is_blocked says so)")
        return "back in service"

    def _read_back_along(self) -> None:
        """Send ``is_blocked`` with the acting step that comes next, to read its effect back in
        the same round trip where they share a host (unless the verify's round trip brought it)."""
        if self.rehearsal is None and not self.steps.ready("is_blocked"):
            self.steps.along("is_blocked")

    def _read_back(self, step: str, *, blocked: bool) -> bool:
        """Read ``is_blocked`` after ``step`` acted: True when it says what the step meant to do,
        False when nothing can be read (no step, or a dry run, which did not act). A node that
        says otherwise fails the step: its effect was not seen."""
        if self.rehearsal is not None or not self.steps.has("is_blocked"):
            return False
        if self.steps.is_blocked() is blocked:
            return True
        says = "the node still takes sessions" if blocked else "the node is still blocked"
        raise StepFailed(
            step, self.steps.target(step), f"the {step} did not take: is_blocked says {says}"
        )

    def _interrupted_after_upgrade(self) -> NodeResult:
        message = f"stopped ({self.ctx.stop.reason}) after the upgrade step; `upgradectl resume` verifies and unblocks"
        self.log.record("interrupted", message)
        return self.result("interrupted", ExitCode.INTERRUPTED, message)

    # -- failures --------------------------------------------------------------------------

    def _recover(self, error: Exception) -> NodeResult:
        self.log.record("failed", str(error))
        if self.phase in ("prepare", "drain"):
            return self._back_in_service(ExitCode.STEP_FAILED, "failed", f"{error}; not upgraded")
        restored = self._restored() if self.phase in ("upgrade", "verify", "patch") else ""
        if restored:
            return self._back_in_service(ExitCode.STEP_FAILED, "failed", f"{error}; {restored}")
        custody = self.custody
        where = "left blocked" if custody.ours or custody.hand_blocked else "left as it is"
        self.log.record(
            "left-blocked" if custody.ours else "attention",
            f"{error}; {where}: needs a person",
            # The run changed it: a patch, a rollback.
            last_state=self.log.last_state or self.phase,
        )
        return self.result("attention", ExitCode.ATTENTION, f"{error}; {where}")

    def _restored(self) -> str:
        """Roll back (if the playbook can) and verify; how the node is known good again, or ""."""
        rolled_back = self.steps.has("rollback")
        if rolled_back:
            target = self.steps.target("rollback")
            self.log.record("rolling-back", f"rolling back on {target}")
            try:
                self._act("rollback", f"roll back on {target}")
            except (StepFailed, CommandTimedOut) as exc:
                self.log.say("failed", f"rollback failed: {exc}")
                return ""
            self.log.record("rolled-back", "rolled back")
        elif self.phase == "verify":
            return ""  # the new version fails its check and nothing can undo it
        if not self.steps.has("verify"):
            return "rolled back (no verify step)" if rolled_back else ""
        try:
            self._act("verify", "verify")
        except (StepFailed, CommandTimedOut) as exc:
            self.log.say("failed", f"verify after the failure failed too: {exc}")
            return ""
        self.log.record("verified", "verified after the failure")
        # Without a rollback nothing was restored: the node may run the new version or the old.
        return (
            "rolled back and verified"
            if rolled_back
            else "not rolled back (the playbook has no rollback step), but it verifies"
        )

    def _back_in_service(self, code: ExitCode, result: str, message: str) -> NodeResult:
        """Undo this run's block (and only that); the node is then as the run found it."""
        if not self.custody.undo_is_ours:
            return self.result(result, code, message)
        try:
            self._lift_block()
        except (StepFailed, CommandTimedOut, TransportError) as exc:
            self.log.record("left-blocked", f"could not unblock: {exc}")
            return self.result(
                "attention", ExitCode.ATTENTION, f"{message}; could not unblock: {exc}"
            )
        return self.result(result, code, message)
