"""What the runner says is what happened: the block is watched, a cut is proven, two counts agree.

Runner decisions on a simulated node (a ScriptedTransport answering from a small model of a
service) and a ManualClock: an hour of drain in milliseconds. The real stacks are in
test_playbook_kamailio.py and test_runner.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from upgradectl.connections import Connections
from upgradectl.context import RunContext
from upgradectl.errors import ExitCode
from upgradectl.events import Event, Events
from upgradectl.history import forced_sessions
from upgradectl.journal import Journal
from upgradectl.loader import load_inventory, load_playbooks
from upgradectl.plan import PlanOptions, build_plan
from upgradectl.results import NodeResult
from upgradectl.runner import NodeRun
from upgradectl.runrecords import runs
from upgradectl.testing import ManualClock, Reply, ScriptedTransport

RUN_ID = "20261130T020000-witness"
PLAYBOOK = {
    "name": "sim",
    "drain": {
        "timeout": "60s", "poll": "5s", "stragglers": "force", "max_stragglers": 5,
        "settle": 2, "force_grace": "10s", "witness_grace": "20s",
    },
    "steps": {
        "is_blocked": {"run": "is-blocked", "parse": "^yes"},
        "block": {"run": "block", "parse": "^ok"},
        "active": {"run": "count", "parse": "(\\d+) active"},
        "node_active": {"run": "node-count", "parse": "(\\d+) calls"},
        "sessions": {"run": "list", "parse": "^(?P<id>\\S+) (?P<age>\\d+)$"},
        "force": "force",
        "upgrade": "upgrade",
        "unblock": "unblock",
    },
}  # fmt: skip


@dataclass
class Session:
    """A session from ``start`` to ``end`` on the run's clock; ``on_node`` until ``node_end``."""

    start: float
    end: float
    node_end: float | None = None  # when the node's own leg ends, if not with the session


@dataclass
class Service:
    """A node as the scripted transport answers for it: its block, sessions and own count."""

    clock: ManualClock
    sessions: dict[str, Session]
    blocked: bool = False
    lose_block_at: float | None = None  # someone lifts the block then (a dispatcher reload)
    arrivals: dict[str, Session] = field(default_factory=dict)  # come only while not blocked
    force_ends: set[str] | None = None  # which sessions `force` ends (None: all of them)
    force_reaches_node: bool = True
    block_fails_after: int | None = None  # `block` fails from this call on
    # At the second zero (the drain settles) the block goes and `late` arrives at once.
    late: tuple[str, float] | None = None  # (id, how long it lasts)
    zeros: int = 0
    blocked_at_upgrade: bool | None = None
    blocks: int = 0

    def answer(self, command: str) -> Reply:
        now = self._tick()
        if command == "block":
            self.blocks += 1
            if self.block_fails_after is not None and self.blocks > self.block_fails_after:
                return Reply("", "error: cannot reach the balancer\n", 1)
            self.blocked = True
            return Reply("ok\n")
        replies = {
            "is-blocked": lambda: "yes" if self.blocked else "no",
            "unblock": lambda: self._set_blocked(False),
            "count": lambda: f"{len(self._live(now))} active",
            "node-count": lambda: self._node_count(now),
            "list": lambda: "".join(
                f"{name} {int(now - s.start)}\n" for name, s in self._live(now).items()
            ),
            "force": lambda: self._force(now),
            "upgrade": self._upgrade,
        }
        return Reply(replies[command]() + "\n")

    def _tick(self) -> float:
        now = self.clock.monotonic()
        if self.lose_block_at is not None and now >= self.lose_block_at:
            self.blocked, self.lose_block_at = False, None
        for name, session in list(self.arrivals.items()):
            if session.start <= now and not self.blocked:
                self.sessions[name] = self.arrivals.pop(name)
        return now

    def _node_count(self, now: float) -> str:
        live = len(self._on_node(now))  # read last in a poll
        self.zeros = self.zeros + 1 if live == 0 else 0
        if self.late is not None and self.zeros == 2:
            name, lasts = self.late
            self.blocked, self.late = False, None
            self.sessions[name] = Session(now, now + lasts)
        return f"{live} calls"

    def _set_blocked(self, blocked: bool) -> str:
        self.blocked = blocked
        return "ok"

    def _live(self, now: float) -> dict[str, Session]:
        return {name: s for name, s in self.sessions.items() if s.start <= now < s.end}

    def _on_node(self, now: float) -> dict[str, Session]:
        return {
            name: s
            for name, s in self.sessions.items()
            if s.start <= now < (s.end if s.node_end is None else max(s.end, s.node_end))
        }

    def _force(self, now: float) -> str:
        for name, session in self._live(now).items():
            if self.force_ends is None or name in self.force_ends:
                if not self.force_reaches_node:  # the node keeps its leg until the call would end
                    session.node_end = session.end
                session.end = now
        return "ok"

    def _upgrade(self) -> str:
        self.blocked_at_upgrade = self.blocked
        return "ok"


@dataclass
class Run:
    """One `upgrade sim-1` by the real runner over the simulated service."""

    result: NodeResult
    events: list[Event]
    transport: ScriptedTransport
    state_dir: Path

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def first(self, kind: str) -> Event:
        return next(event for event in self.events if event.kind == kind)

    def cut(self) -> list[str]:
        """The ids `history --forced` lists."""
        return [s["id"] for s in forced_sessions(list(runs(str(self.state_dir))))]


def upgrade(tmp_path: Path, service: Service, **playbook_changes: object) -> Run:
    playbook = {**PLAYBOOK, **playbook_changes}
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump(playbook))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": {"sim-1": {"playbook": "./sim.yaml", "transport": "local"}}})
    )
    loaded = load_inventory(str(inventory))
    options = PlanOptions(version="2.0")
    plan = build_plan(loaded, ["sim-1"], "upgrade", options, RUN_ID, load_playbooks(loaded)).nodes[
        0
    ]
    transport = ScriptedTransport("sim-1", service.answer)
    events: list[Event] = []
    state_dir = tmp_path / "state"
    context = RunContext(
        run_id=RUN_ID,
        command="upgrade",
        connections=Connections(loaded, make=lambda node: transport),
        journal=Journal(str(state_dir), RUN_ID),
        events=Events(events.append),
        stop=service.clock.stop(),
        state_dir=str(state_dir),
        monotonic=service.clock.monotonic,
        wall=service.clock.wall,
    )
    return Run(NodeRun(plan, context).run(), events, transport, state_dir)


def at(*times: float) -> Session:
    return Session(*times)


# --- the block is watched --------------------------------------------------------------------


def test_a_lost_block_is_journalled_said_put_back_and_the_sessions_it_let_in_drained(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    service = Service(clock, {"s1": at(0, 40)}, lose_block_at=12, arrivals={"s2": at(13, 50)})

    run = upgrade(tmp_path, service)

    assert (run.result.result, run.result.exit_code) == ("upgraded", ExitCode.OK)
    lost = run.first("block-lost")
    assert lost.data["arrived"] == ["s2"] and "s2" in lost.message
    assert run.kinds().index("block-lost") < run.kinds().index("upgrading")
    assert service.blocks == 2 and service.blocked_at_upgrade is True
    assert run.result.forced == [] and run.cut() == []  # s2 ended by itself: nobody was cut
    assert (run.result.drain_seconds or 0) >= 50


def test_the_block_is_read_on_the_polls_rhythm_well_within_a_minute_not_at_every_poll(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    read_at: list[float] = []
    service = Service(clock, {"s1": at(0, 300)})
    answer = service.answer

    def recording(command: str) -> Reply:
        if command == "is-blocked":
            read_at.append(clock.monotonic())
        return answer(command)

    service.answer = recording  # type: ignore[method-assign]
    run = upgrade(tmp_path, service, drain={**PLAYBOOK["drain"], "timeout": "10m"})  # type: ignore[dict-item]

    assert run.result.result == "upgraded"
    polls = len(run.transport.ran("^count$"))
    during = [t for t in read_at if 0 < t <= 300]
    gaps = [b - a for a, b in zip([0.0, *during], during, strict=False)]
    assert len(during) < polls / 2  # not at every poll
    assert max(gaps) <= 30.0  # well within a minute


def test_the_block_is_read_right_before_force_and_right_before_upgrade(tmp_path: Path) -> None:
    service = Service(ManualClock(), {"s1": at(0, 500)})

    run = upgrade(tmp_path, service)

    commands = run.transport.commands
    for acting in ("force", "upgrade"):
        before = commands[: commands.index(acting)]
        last_count = max(i for i, c in enumerate(before) if c == "count")
        assert "is-blocked" in before[last_count:], acting


def test_a_block_that_cannot_be_put_back_stops_the_drain_as_a_failed_block(
    tmp_path: Path,
) -> None:
    service = Service(ManualClock(), {"s1": at(0, 40)}, lose_block_at=12, block_fails_after=1)

    run = upgrade(tmp_path, service)

    assert (run.result.result, run.result.exit_code) == ("failed", ExitCode.STEP_FAILED)
    assert "the block was lost and could not be put back" in run.result.message
    assert "block-lost" in run.kinds() and "upgrading" not in run.kinds()
    assert run.result.in_service and service.blocked_at_upgrade is None


def test_sessions_that_arrived_while_the_block_was_lost_are_named_when_forced(
    tmp_path: Path,
) -> None:
    service = Service(
        ManualClock(), {"s1": at(0, 500)}, lose_block_at=12, arrivals={"s2": at(13, 500)}
    )

    run = upgrade(tmp_path, service, drain={**PLAYBOOK["drain"], "timeout": "30s"})  # type: ignore[dict-item]

    forcing = run.first("forcing")
    assert forcing.data["arrived_unblocked"] == ["s2"]
    assert "1 of them arrived while the block was lost: s2" in forcing.message
    assert sorted(run.cut()) == ["s1", "s2"] and run.result.result == "upgraded"


def test_a_block_lost_right_before_the_upgrade_is_put_back_and_the_node_drained_again(
    tmp_path: Path,
) -> None:
    # The block goes as the drain settles, after the last periodic read: only the read right
    # before the upgrade can see it, and a session came in meanwhile.
    service = Service(ManualClock(), {"s1": at(0, 20)}, late=("s3", 15))

    run = upgrade(tmp_path, service)

    assert run.result.result == "upgraded" and service.blocked_at_upgrade is True
    lost = run.first("block-lost")
    assert lost.data["before"] == "before upgrade" and lost.data["arrived"] == ["s3"]
    kinds = run.kinds()
    assert kinds.count("drained") == 2 and kinds.index("block-lost") < kinds.index("upgrading")
    assert run.result.forced == []  # s3 was waited for, not cut


# --- a cut is proven ----------------------------------------------------------------------------


def test_a_force_that_ends_nothing_is_not_reported_as_cut_and_nothing_is_upgraded(
    tmp_path: Path,
) -> None:
    service = Service(ManualClock(), {"s1": at(0, 900)}, force_ends=set())

    run = upgrade(tmp_path, service)

    assert (run.result.result, run.result.exit_code) == ("failed", ExitCode.STEP_FAILED)
    assert "force did not end them: s1 still listed 10s after it" in run.result.message
    assert "forced" not in run.kinds() and run.result.forced == [] and run.cut() == []
    assert service.blocked_at_upgrade is None and run.result.in_service


def test_only_the_sessions_seen_gone_after_force_are_journalled_as_cut(tmp_path: Path) -> None:
    service = Service(ManualClock(), {"s1": at(0, 900), "s2": at(1, 900)}, force_ends={"s1"})

    run = upgrade(tmp_path, service)

    assert run.result.exit_code == ExitCode.STEP_FAILED
    assert run.cut() == ["s1"] and [s["id"] for s in run.result.forced] == ["s1"]
    assert "force did not end them: s2 still listed" in run.result.message
    assert run.first("forced").message.startswith("cut 1, each seen gone after force: s1")


# --- two witnesses ------------------------------------------------------------------------------


def test_drained_means_both_counts_say_zero(tmp_path: Path) -> None:
    service = Service(ManualClock(), {"s1": Session(0, 10, node_end=18)})

    run = upgrade(tmp_path, service)

    assert run.result.result == "upgraded" and run.result.forced == []
    assert (run.result.drain_seconds or 0) >= 18
    polls = [e for e in run.events if e.kind == "poll"]
    assert any(e.data["active_at"] == 0 and e.data["node_active"] == 1 for e in polls)
    assert all(e.data["active"] == max(e.data["active_at"], e.data["node_active"]) for e in polls)


def test_counts_that_disagree_longer_than_the_grace_stop_the_drain_in_words(
    tmp_path: Path,
) -> None:
    service = Service(ManualClock(), {"s1": Session(0, 10, node_end=10_000)})

    run = upgrade(tmp_path, service)

    assert (run.result.result, run.result.exit_code) == ("failed", ExitCode.STEP_FAILED)
    message = run.result.message
    assert "the counts disagree for" in message
    assert "0 at sim-1 (active), 1 on sim-1 (node_active)" in message
    assert "not drained" in message and "upgrading" not in run.kinds()


def test_after_a_force_both_counts_must_say_zero(tmp_path: Path) -> None:
    service = Service(ManualClock(), {"s1": at(0, 900)}, force_reaches_node=False)

    run = upgrade(tmp_path, service)

    assert run.result.exit_code == ExitCode.STEP_FAILED
    assert run.cut() == ["s1"]  # gone from the listing: its caller was cut
    assert "force did not end them: 0 at sim-1 (active), 1 on sim-1 (node_active)" in (
        run.result.message
    )
    assert "upgrading" not in run.kinds()
