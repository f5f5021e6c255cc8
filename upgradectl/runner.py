"""One node through one command: its phases in order, and recovery when a step fails.

Phases: prepare (the lock, :mod:`upgradectl.lockkeeper`; is_blocked; precheck), drain (block,
then :mod:`upgradectl.drain`), upgrade (:mod:`upgradectl.reboot` when it reboots), verify,
unblock. A failure is handled in one place, :meth:`NodeRun._recover`, by what phase it happened
in: before the upgrade the node is put back in service; after it, rollback and verify
(:mod:`upgradectl.restore`) decide whether it can be. What recovery may undo is
:mod:`upgradectl.custody`'s to say; the block is put on and lifted by :mod:`upgradectl.block`.
Where a resumed node starts is :mod:`upgradectl.resume`'s to say, and what became of the
intention its dead run left, :mod:`upgradectl.reconcile`'s.

A dry run takes this same path: the read-only steps run, the acting ones (block, force, upgrade,
rollback, verify, unblock, patch, the node lock) are described in a :mod:`upgradectl.rehearsal`
instead, and the drain reads the count once rather than waiting it out.
"""

from __future__ import annotations

from collections.abc import Callable

from upgradectl.block import Block
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
from upgradectl.finishing import finished_together
from upgradectl.lockkeeper import LockKeeper
from upgradectl.nodelog import NodeLog
from upgradectl.plan import NodePlan
from upgradectl.reboot import RebootWait
from upgradectl.reconcile import Reconciler
from upgradectl.rehearsal import Acting, Rehearsal
from upgradectl.restore import restored
from upgradectl.results import NodeResult, concluded
from upgradectl.resume import STAGES
from upgradectl.steps import Steps


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
        self._lock: LockKeeper | None = None  # a dry run takes no lock
        self.rehearsal = Rehearsal() if ctx.dry_run else None  # a dry run's acts, described
        self.acting = Acting(self.steps, self.rehearsal)
        self.block = Block(self.steps, ctx, self.log, self.custody, self.acting)
        self.reconcile = Reconciler(self.name, self.steps, ctx, self.log)

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
            return concluded(self.ctx, self.rehearsal.told(self._guarded(body), self.log))
        lock = self._lock = LockKeeper(self.plan, self.steps, self.ctx, self.log)
        if start_at == "block" and self.ctx.command in ("drain", "upgrade"):
            self.steps.along("is_blocked")  # the prepare phase's question, with the lock
        try:
            lock.take()
        except LockHeld as exc:
            return concluded(self.ctx, self.result("locked", exc.exit_code, str(exc)))
        except TransportError as exc:
            return concluded(self.ctx, self.result("unreachable", exc.exit_code, str(exc)))
        except Exception as exc:  # nothing was blocked yet: a failure, and the lock let go
            lock.let_go()
            message = f"not started: {UnexpectedError(exc)}"
            return concluded(self.ctx, self.result("failed", ExitCode.STEP_FAILED, message))
        try:
            outcome = self._guarded(lambda: self._reconciled(body, start_at))
        finally:
            lock.let_go()
        return concluded(self.ctx, outcome)

    def _reconciled(self, body: Callable[[], NodeResult], start_at: str) -> NodeResult:
        """A resumed node whose run died between an intention and its outcome: ask the node
        what became of it, and write that down, before carrying on."""
        self.reconcile.force()
        if self.reconcile.unblocked(start_at):
            done = {"upgrade": "upgraded", "unblock": "unblocked"}.get(self.ctx.command, "done")
            return self.result(done, ExitCode.OK, "done; back in service")
        return body()

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
            self.block.inherit()
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
        self.acting.act("patch", f"hot-patch on {target}: {self.plan.steps['patch'].run}")
        self._verify(joint="; then ")
        self.log.record("patched", "patched and verified")
        return self.result("patched", ExitCode.OK, "patched and verified; no drain")

    def _unblock_only(self) -> NodeResult:
        self.block.inherit()
        self.phase = "check"
        self._verify()
        self.custody.handed_over()
        return self._unblock("unblocked", joint=", then ")

    # -- phases ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.block.inherit()
        if not self.custody.ours and self.steps.is_blocked():
            self.custody.found_blocked()
            self.log.record("was-blocked", "was blocked before this run: it will be left blocked")
            self.acting.note("already blocked before this run: would leave it blocked")
        if self.steps.has("precheck"):
            target = self.steps.target("precheck")
            self.steps.run("precheck")  # read-only: a dry run fails on it as the run would
            self.log.say("precheck", f"precheck passed on {target}")
            self.acting.note(f"precheck passes on {target}")

    def _block(self) -> None:
        self.phase = "drain"
        self.block.put_on(on_before_the_crash=self.reconcile.blocked())

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
            self.acting.act("upgrade", f"upgrade ({command.run})", joint="; then ")
        elif not reboot.run(command, boot_id):
            return  # stopped while it reboots: `resume` verifies it once it is back
        self.log.record("upgraded", "upgrade step done")

    def _finish_together(self) -> None:
        """Verify, unblock and the lock's release in one round trip where the playbook allows."""
        chain = finished_together(self.plan)
        if not chain or self._lock is None or self.custody.hand_blocked:  # (a dry run: no lock)
            return
        # The block's read-back goes last: its exit code may say "blocked", which gates nothing.
        self.steps.along(*chain[1:], self._lock.release_step(), "is_blocked", gated=True)
        # Written ahead of the round trip that may unblock: a run that dies now leaves `resume`
        # the question to ask the node (and the verify to run again if it is still blocked).
        self.block.record_unblocking()

    def _already_upgraded(self) -> bool:
        """On resume, before the upgrade runs again: the interrupted one finished after all."""
        version = self.plan.variables.get("version")
        if not self.reconcile.upgraded(version):
            return False
        self.phase = "upgrade"  # before the record: a journal that fails now has it verified
        self.log.record("upgraded", f"already at version {version}: the upgrade is not run again")
        return True

    def _verify(self, joint: str = ", ") -> None:
        if self.phase != "check":
            self.phase = "verify"
        if self.steps.has("verify"):
            self.acting.act("verify", "verify", joint)
            self.log.record("verified", f"verified on {self.steps.target('verify')}")

    def _unblock(self, result: str, joint: str = ", ") -> NodeResult:
        self.phase = "unblock"
        if self.custody.hand_blocked:
            self.log.record("left-blocked", "left blocked, as it was found before this run")
            return self.result(
                result, ExitCode.OK, "done; left blocked as found (it was blocked by hand)"
            )
        return self.result(result, ExitCode.OK, f"done; {self.block.lift(joint)}")

    def _interrupted_after_upgrade(self) -> NodeResult:
        message = f"stopped ({self.ctx.stop.reason}) after the upgrade step; `upgradectl resume` verifies and unblocks"
        self.log.record("interrupted", message)
        return self.result("interrupted", ExitCode.INTERRUPTED, message)

    # -- failures --------------------------------------------------------------------------

    def _recover(self, error: Exception) -> NodeResult:
        self.log.record("failed", str(error))
        if self.phase in ("prepare", "drain"):
            return self._back_in_service(ExitCode.STEP_FAILED, "failed", f"{error}; not upgraded")
        if self.phase in ("upgrade", "verify", "patch"):
            how = restored(self.steps, self.log, self.acting, self.phase)
            if how:
                return self._back_in_service(ExitCode.STEP_FAILED, "failed", f"{error}; {how}")
        custody = self.custody
        where = "left blocked" if custody.ours or custody.hand_blocked else "left as it is"
        self.log.record(
            "left-blocked" if custody.ours else "attention",
            f"{error}; {where}: needs a person",
            # The run changed it: a patch, a rollback.
            last_state=self.log.last_state or self.phase,
        )
        return self.result("attention", ExitCode.ATTENTION, f"{error}; {where}")

    def _back_in_service(self, code: ExitCode, result: str, message: str) -> NodeResult:
        """Undo this run's block (and only that); the node is then as the run found it."""
        if not self.custody.undo_is_ours:
            return self.result(result, code, message)
        try:
            self.block.lift()
        except (StepFailed, CommandTimedOut, TransportError) as exc:
            self.log.record("left-blocked", f"could not unblock: {exc}")
            return self.result(
                "attention", ExitCode.ATTENTION, f"{message}; could not unblock: {exc}"
            )
        return self.result(result, code, message)
