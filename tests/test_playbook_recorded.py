"""The bundled freeswitch, asterisk and systemd playbooks through the real core.

FreeSWITCH and Asterisk are not in Debian: their playbooks read recorded output of the real CLIs
(tests/recorded, with where each text comes from) answered by a ScriptedTransport, and whole
drains run on a ManualClock. The systemd playbook counts connections with this machine's `ss`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from clihelp import run_cli
from conftest import wait_for

from upgradectl.connections import Connections
from upgradectl.context import RunContext
from upgradectl.errors import ExitCode, StepFailed, UnreadableCount, UsageError
from upgradectl.events import Event, Events
from upgradectl.journal import Journal
from upgradectl.loader import bundled_playbooks, load_inventory, load_playbook, load_playbooks
from upgradectl.model import Inventory
from upgradectl.plan import NodePlan, PlanOptions, build_plan
from upgradectl.results import NodeResult
from upgradectl.runner import NodeRun
from upgradectl.steps import Steps
from upgradectl.testing import Answer, ManualClock, Reply, Rule, ScriptedTransport
from upgradectl.transport.base import Transport
from upgradectl.transport.local import LocalTransport

RECORDED = Path(__file__).parent / "recorded"
RUN_ID = "20261125T020000-test"
SYSTEMD_VARS = {"service": "web", "block_command": "true", "unblock_command": "true"}


@dataclass(frozen=True)
class Case:
    """One recorded output, and what the playbook must make of it."""

    playbook: str
    name: str
    step: str
    reply: Reply
    expect: Any
    now: float = 0.0
    vars: dict[str, Any] = field(default_factory=dict)  # the node's, e.g. a mode the case is of


def recorded(playbook: str) -> list[Case]:
    """The cases of ``tests/recorded/PLAYBOOK.yaml``."""
    data = yaml.safe_load((RECORDED / f"{playbook}.yaml").read_text())
    return [
        Case(
            playbook=playbook,
            name=case["name"],
            step=case["step"],
            reply=Reply(case.get("stdout", ""), case.get("stderr", ""), case.get("exit", 0)),
            expect=case["expect"],
            now=case.get("now", 0.0),
            vars=case.get("vars", {}),
        )
        for case in data["cases"]
    ]


def case_named(playbook: str, name: str) -> Case:
    """A recorded case, to reuse its output in a whole run."""
    return next(case for case in recorded(playbook) if case.name == name)


CASES = recorded("freeswitch") + recorded("asterisk")
# An error is an error by its text alone: the same outputs as a wrapper that drops the exit code
# (`fs_cli ... | tee`, a monitoring shim) would leave them.
ERRORS_EXITING_0 = [
    replace(case, name=f"{case.name}, exit code lost", reply=replace(case.reply, exit_code=0))
    for case in CASES
    if case.expect in ("unreadable", "fails") and case.reply.exit_code != 0
]


def case_id(case: Case) -> str:
    return f"{case.playbook}-{case.step}-{case.name}"


@dataclass
class Node:
    """The one node of an inventory, running a bundled playbook."""

    inventory: Inventory
    events: list[Event] = field(default_factory=list)

    @classmethod
    def make(cls, tmp_path: Path, playbook: str, node_vars: dict[str, Any] | None = None) -> Node:
        """A node called PLAYBOOK-1 with ``playbook`` and ``node_vars``."""
        spec = {"playbook": playbook, "transport": "local", "vars": node_vars or {}}
        path = tmp_path / "inventory.yaml"
        path.write_text(yaml.safe_dump({"nodes": {f"{playbook}-1": spec}}))
        return cls(load_inventory(str(path)))

    @property
    def name(self) -> str:
        (name,) = self.inventory.nodes
        return name

    def plan(self, command: str, options: PlanOptions | None = None) -> NodePlan:
        """The rendered plan of ``command``."""
        options = options or PlanOptions()
        playbooks = load_playbooks(self.inventory, options.playbook)
        return build_plan(self.inventory, [self.name], command, options, RUN_ID, playbooks).nodes[0]

    def steps(self, plan: NodePlan, transport: Transport) -> Steps:
        """The core's step runner for ``plan`` over ``transport``; retries do not wait."""
        connections = Connections(self.inventory, make=lambda node: transport)
        return Steps(plan, connections.get, Events(), reconnect_for=1.0, pause=lambda s: False)

    def run(
        self,
        command: str,
        transport: Transport,
        state_dir: Path,
        clock: ManualClock,
        options: PlanOptions | None = None,
    ) -> NodeResult:
        """One whole run of ``command`` by the real runner; polls and delays take no real time."""
        context = RunContext(
            run_id=RUN_ID,
            command=command,
            connections=Connections(self.inventory, make=lambda node: transport),
            journal=Journal(str(state_dir), RUN_ID),
            events=Events(self.events.append),
            stop=clock.stop(),
            state_dir=str(state_dir),
            monotonic=clock.monotonic,
            wall=clock.wall,
        )
        return NodeRun(self.plan(command, options), context).run()

    def kinds(self) -> list[str]:
        """The kinds of the events the runs emitted, in order."""
        return [event.kind for event in self.events]


def _run(steps: Steps, case: Case) -> str:
    steps.run(case.step)
    return "ok"


READINGS: dict[str, Callable[[Steps, Case], Any]] = {
    "active": lambda steps, case: steps.count(),
    "sessions": lambda steps, case: [
        {"id": s.id, "age": s.age, **s.details} for s in steps.sessions(case.now)
    ],
    "is_blocked": lambda steps, case: steps.is_blocked(),
    "version": lambda steps, case: steps.version(),
}


def reading(steps: Steps, case: Case) -> Any:
    """What the playbook makes of the case's output, in the terms of the case's ``expect``."""
    try:
        return READINGS.get(case.step, _run)(steps, case)
    except UnreadableCount:
        return "unreadable"
    except StepFailed:
        return "fails"


@pytest.mark.parametrize("case", CASES + ERRORS_EXITING_0, ids=case_id)
def test_recorded_output_reads_as_the_playbook_says(case: Case, tmp_path: Path) -> None:
    node = Node.make(tmp_path, case.playbook, case.vars)
    plan = node.plan("status" if case.step == "version" else "upgrade", PlanOptions(version="2.0"))
    command = plan.steps[case.step].run
    # Only the step's own command is answered: any other command fails the test.
    transport = ScriptedTransport(node.name, [(re.escape(command), case.reply)])

    assert reading(node.steps(plan, transport), case) == case.expect
    assert transport.commands and set(transport.commands) == {command}


def test_the_erlang_freeswitch_asterisk_and_systemd_playbooks_load_and_are_listed() -> None:
    listed = run_cli("playbooks")
    assert listed.code == 0, listed.stderr
    for name in ("erlang", "freeswitch", "asterisk", "systemd"):
        playbook = load_playbook(bundled_playbooks()[name])
        assert playbook.name == name
        assert re.search(rf"(?m)^{name}\s+{re.escape(playbook.description)}$", listed.stdout)


# --- whole drains on recorded output ----------------------------------------------------------


@dataclass(frozen=True)
class Telephony:
    """How a FreeSWITCH or Asterisk node answers its playbook's drain commands."""

    playbook: str
    is_blocked: str
    says_blocked: tuple[Reply, Reply]  # what is_blocked prints: not blocked, blocked
    block: Rule
    unblock: Rule
    count: str
    counted: Callable[[int], Reply]
    error_exiting_0: str  # a recorded case of an error text behind exit code 0

    def node(self, counts: Answer, *more: Rule) -> ScriptedTransport:
        """A node that answers the count with ``counts``, and ``more`` commands as they say; it
        is blocked once `block` ran, until `unblock` runs."""

        def is_blocked(command: str) -> Reply:
            blocked = len(transport.ran(str(self.block[0]))) > len(
                transport.ran(str(self.unblock[0]))
            )
            return self.says_blocked[blocked]

        rules = [
            self.unblock,
            (self.is_blocked, is_blocked),
            self.block,
            (self.count, counts),
            *more,
        ]
        transport = ScriptedTransport(f"{self.playbook}-1", rules)
        return transport


FREESWITCH = Telephony(
    playbook="freeswitch",
    is_blocked="fsctl pause_check inbound",
    says_blocked=(Reply("false\n"), Reply("true\n")),
    block=("fsctl pause inbound", Reply("+OK\n\n")),
    unblock=("fsctl resume inbound", Reply("+OK\n\n")),
    count="show calls count",
    counted=lambda n: Reply(f"\n{n} total.\n\n"),
    error_exiting_0="core database disabled",
)
ASTERISK = Telephony(
    playbook="asterisk",
    is_blocked="database get upgradectl blocked",
    says_blocked=(Reply("Database entry not found.\n"), Reply("Value: 1\n")),
    block=("database put upgradectl blocked 1", Reply("Updated database successfully\n")),
    unblock=(
        "database del upgradectl blocked",
        Reply("Database entry removed.\nDatabase entry not found.\n"),
    ),
    count="core show calls",
    counted=lambda n: Reply(f"{n} active call{'s' if n != 1 else ''}\n9 calls processed\n"),
    error_exiting_0="no such command",
)


@pytest.mark.parametrize("kind", [FREESWITCH, ASTERISK], ids=lambda kind: kind.playbook)
def test_a_drain_whose_count_goes_3_2_0_0_ends_drained_and_left_blocked(
    kind: Telephony, tmp_path: Path
) -> None:
    transport = kind.node([kind.counted(3), kind.counted(2), kind.counted(0)])
    node = Node.make(tmp_path, kind.playbook)

    result = node.run("drain", transport, tmp_path / "state", ManualClock())

    assert (result.result, result.exit_code) == ("drained", ExitCode.OK)
    assert len(transport.ran(kind.count)) == 4  # 3, 2, 0 and the second 0 that settles it
    poll = load_playbook(bundled_playbooks()[kind.playbook]).drain.poll
    # Adaptive polling: quicker than the playbook's poll where it pays, never slower.
    assert result.drain_seconds is not None and 0 < result.drain_seconds <= 3 * poll
    assert len(transport.ran(kind.block[0])) == 1 and transport.ran(kind.unblock[0]) == []


@pytest.mark.parametrize("kind", [FREESWITCH, ASTERISK], ids=lambda kind: kind.playbook)
def test_an_error_text_exiting_0_is_never_a_zero_and_stops_the_drain_back_in_service(
    kind: Telephony, tmp_path: Path
) -> None:
    error = case_named(kind.playbook, kind.error_exiting_0).reply
    assert error.exit_code == 0
    transport = kind.node([kind.counted(3), error])
    node = Node.make(tmp_path, kind.playbook)

    result = node.run("drain", transport, tmp_path / "state", ManualClock())

    assert (result.result, result.exit_code) == ("failed", ExitCode.STEP_FAILED)
    assert "drained" not in node.kinds()
    assert len(transport.ran(kind.count)) == 4  # one reading, then the unreadable ones retried
    assert len(transport.ran(kind.unblock[0])) == 1 and "unblocked" in node.kinds()
    assert result.in_service


def test_stragglers_past_the_deadline_are_hung_up_and_reported_by_uuid_and_age(
    tmp_path: Path,
) -> None:
    listed = case_named("freeswitch", "two calls listed")

    hung_up = case_named("freeswitch", "all hung up").reply
    none_listed = case_named("freeswitch", "no calls listed").reply

    def count(command: str) -> Reply:  # two calls until they are hung up
        return FREESWITCH.counted(0 if transport.ran("hupall") else 2)

    def calls(command: str) -> Reply:
        return none_listed if transport.ran("hupall") else listed.reply

    transport = FREESWITCH.node(
        count,
        (re.escape("show calls as delim |"), calls),
        ("hupall MANAGER_REQUEST", hung_up),
    )
    node = Node.make(tmp_path, "freeswitch")
    timeout = 60.0
    clock = ManualClock(wall=listed.now - timeout)  # the deadline falls when the recording was made

    result = node.run("drain", transport, tmp_path / "state", clock, PlanOptions(timeout=timeout))

    assert (result.result, result.exit_code) == ("drained", ExitCode.OK)
    assert [(s["id"], s["age"]) for s in result.forced] == [
        (s["id"], s["age"]) for s in listed.expect
    ]
    assert result.forced_count == 2
    assert len(transport.ran("hupall")) == 1


# --- asterisk: the playbook's own shell around recorded outputs ---------------------------------

# A stand-in for `asterisk -rx`: prints the recorded answer to each command from $ROOT/COMMAND
# (or "Unable to connect" and exit 1 when $ROOT/down exists); `core stop gracefully` starts a
# shutdown. `systemctl show -p ActiveState --value` prints $ROOT/state.
ASTERISK_STUB = """#!/bin/sh
ROOT=$(dirname "$0")
[ -e "$ROOT/down" ] && { echo "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)" >&2; exit 1; }
case "$2" in
  'core stop gracefully') touch "$ROOT/shutting-down"; exit 0 ;;
  'core abort shutdown') rm -f "$ROOT/shutting-down"; exit 0 ;;
esac
[ -e "$ROOT/shutting-down" ] && { echo "Command '$2' cannot be run during shutdown"; exit 0; }
cat "$ROOT/$2"
"""
SYSTEMCTL_STUB = '#!/bin/sh\ncat "$(dirname "$0")/state"\n'
CONCISE_WITH_DIAL_LEGS = (
    case_named(
        "asterisk", "two calls listed, the outgoing legs of their Dials left out"
    ).reply.stdout
    + "PJSIP/carrier-00000013!from-proxy!5551234!1!Up!AppDial!(Outgoing Line)!5551234!!!3!3126"
    "!2a3f5e1c-1d2b-4c3e-8f9a-0b1c2d3e4f5a!1795569124.43\n"
)


@dataclass
class AsteriskStub:
    """A directory with the stand-ins, and the asterisk playbook's steps run through them here."""

    root: Path
    steps: Steps

    @classmethod
    def make(
        cls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **node_vars: str
    ) -> AsteriskStub:
        """Stand-ins first on PATH: the playbook's `asterisk` and `systemctl` are theirs."""
        root = tmp_path / "asterisk"
        root.mkdir()
        for name, text in (("asterisk", ASTERISK_STUB), ("systemctl", SYSTEMCTL_STUB)):
            (root / name).write_text(text)
            (root / name).chmod(0o755)
        (root / "core show calls").write_text("2 active calls\n61 calls processed\n")
        (root / "core show channels concise").write_text(CONCISE_WITH_DIAL_LEGS)
        (root / "state").write_text("active\n")
        monkeypatch.setenv("PATH", f"{root}:{os.environ['PATH']}")
        node = Node.make(tmp_path, "asterisk", node_vars)
        plan = node.plan("upgrade", PlanOptions(version="2.0"))
        return cls(root, node.steps(plan, LocalTransport(node.name)))


def test_asterisk_lists_one_line_per_call_named_by_caller_and_callee(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = AsteriskStub.make(tmp_path, monkeypatch)
    listed = [(s.id, s.details) for s in stub.steps.sessions(0.0)]
    assert listed == [
        ("PJSIP/alice-00000012", {"caller": "1001", "callee": "5551234"}),
        ("PJSIP/bob-00000014", {"caller": "1002", "callee": "5559876"}),
    ]
    assert stub.steps.count() == 2


def test_asterisk_graceful_mode_blocks_with_core_stop_gracefully_and_aborts_it_to_unblock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = AsteriskStub.make(tmp_path, monkeypatch, block_mode="graceful")
    assert stub.steps.is_blocked() is False
    stub.steps.run("block")
    assert (stub.root / "shutting-down").exists() and stub.steps.is_blocked() is True
    # Asterisk counts nothing while it shuts down: at least one call is all that can be known.
    assert stub.steps.count() == 1
    assert not stub.steps.has("sessions")
    stub.steps.run("unblock")
    assert not (stub.root / "shutting-down").exists() and stub.steps.count() == 2


def test_asterisk_graceful_mode_reads_zero_only_once_the_service_stopped_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = AsteriskStub.make(tmp_path, monkeypatch, block_mode="graceful")
    (stub.root / "down").touch()
    (stub.root / "state").write_text("inactive\n")
    assert stub.steps.count() == 0
    assert stub.steps.is_blocked() is True  # stopped takes no call: not a block lost
    (stub.root / "state").write_text("failed\n")  # crashed: nothing says how many calls it had
    with pytest.raises(UnreadableCount):
        stub.steps.count()


def test_asterisk_graceful_mode_upgrades_a_node_that_stopped_itself_without_a_lost_block(
    tmp_path: Path,
) -> None:
    # Asterisk's answers through the playbook's shell: refusing the CLI while it waits for its
    # two calls, then stopped by itself (systemd: inactive) until the upgrade restarts it.
    state: dict[str, Any] = {"phase": "up", "calls": 2}
    said = {
        "up": Reply("0 active calls\n7 calls processed\n"),
        "stopping": Reply("Command 'core show calls' cannot be run during shutdown\n"),
        "stopped": Reply("blocked: the service has stopped\n"),
    }

    def is_blocked(command: str) -> Reply:
        return said[state["phase"]]

    def count(command: str) -> Reply:
        if state["phase"] == "stopping":
            state["calls"] -= 1
            if state["calls"] == 0:
                state["phase"] = "stopped"
            return Reply("1 active call (at least: Asterisk counts nothing while it shuts down)\n")
        if state["phase"] == "stopped":
            return Reply("0 active calls (the service has stopped)\n")
        return said["up"]

    def act(phase: str, reply: Reply) -> Callable[[str], Reply]:
        def answer(command: str) -> Reply:
            state["phase"] = phase
            return reply

        return answer

    transport = ScriptedTransport(
        "asterisk-1",
        [
            ("core stop gracefully", act("stopping", said["stopping"])),
            ("core abort shutdown", act("up", said["up"])),
            ("blocked: the service has stopped", is_blocked),
            ("at least", count),
            ("dpkg-query", act("up", Reply())),
            ("core waitfullybooted", Reply("Asterisk has fully booted.\n")),
            ("core show version", Reply("Asterisk 20.6.0 built by buildd\n")),
        ],
    )
    node = Node.make(tmp_path, "asterisk", {"block_mode": "graceful"})

    result = node.run(
        "upgrade", transport, tmp_path / "state", ManualClock(), PlanOptions(version="2.0")
    )

    assert (result.result, result.exit_code) == ("upgraded", ExitCode.OK), result.message
    assert "block-lost" not in node.kinds() and result.forced == []
    assert len(transport.ran("core stop gracefully")) == 1


def test_asterisk_block_mode_must_be_astdb_or_graceful(tmp_path: Path) -> None:
    node = Node.make(tmp_path, "asterisk", {"block_mode": "gracefull"})
    with pytest.raises(UsageError, match="block_mode_is_astdb_or_graceful"):
        node.plan("drain")


# --- systemd: this machine's ss ---------------------------------------------------------------


@dataclass
class Listener:
    """A TCP server on 127.0.0.1 with some clients connected."""

    server: socket.socket
    clients: list[socket.socket] = field(default_factory=list)
    accepted: list[socket.socket] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.getsockname()[1])

    def connect(self) -> None:
        """One more established connection."""
        self.clients.append(socket.create_connection(("127.0.0.1", self.port)))
        self.accepted.append(self.server.accept()[0])

    def hang_up(self) -> None:
        """Close the oldest connection at both ends."""
        self.clients.pop(0).close()
        self.accepted.pop(0).close()

    def peers(self) -> list[str]:
        """The clients' addresses, as ss names the peers of the server's connections."""
        return ["{}:{}".format(*client.getsockname()) for client in self.clients]


@pytest.fixture
def listener() -> Iterator[Listener]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        opened = Listener(server)
        try:
            yield opened
        finally:
            for connection in opened.clients + opened.accepted:
                connection.close()


def test_the_systemd_playbook_counts_established_connections_with_this_machines_ss(
    listener: Listener, tmp_path: Path
) -> None:
    node = Node.make(tmp_path, "systemd", {**SYSTEMD_VARS, "port": listener.port})
    steps = node.steps(node.plan("drain"), LocalTransport(node.name))
    listener.connect()
    listener.connect()

    assert steps.count() == 2
    assert sorted(s.id for s in steps.sessions(0.0)) == sorted(listener.peers())
    listener.hang_up()
    wait_for(lambda: steps.count() == 1, 5.0, what="ss to see one connection closed")
    listener.hang_up()
    wait_for(lambda: steps.count() == 0, 5.0, what="ss to see no connection")


def test_an_ss_that_fails_is_an_unreadable_count_not_a_zero(tmp_path: Path) -> None:
    # A login whose PATH lacks ss, or a filter this ss cannot parse: `ss | wc -l` would say 0.
    for broken in ("no-such-ss -Htn", "ss -Htn state established '( sport = :not-a-port )'"):
        node = Node.make(tmp_path, "systemd", {**SYSTEMD_VARS, "port": 1, "connections": broken})
        with pytest.raises(UnreadableCount):
            node.steps(node.plan("status"), LocalTransport(node.name)).count()


# --- systemd: the upgrade and rollback commands, with apt stood in for -----------------------

STUBS = {
    # The installed version lives in $STATE/installed; every call is logged to $STATE/calls.
    "dpkg-query": 'echo "dpkg-query $*" >> "$STATE/calls"; cat "$STATE/installed"',
    "apt-get": 'echo "apt-get $*" >> "$STATE/calls"; for a; do v=$a; done; echo "${v#*=}" > "$STATE/installed"',
    "systemctl": 'echo "systemctl $*" >> "$STATE/calls"',
}


@dataclass
class Apt:
    """A directory of stand-ins for dpkg-query, apt-get and systemctl, and what they were asked."""

    root: Path

    @classmethod
    def make(cls, root: Path, installed: str) -> Apt:
        (root / "bin").mkdir(parents=True)
        for name, body in STUBS.items():
            stub = root / "bin" / name
            stub.write_text(f"#!/bin/sh\nSTATE={root}\n{body}\n")
            stub.chmod(0o755)
        (root / "installed").write_text(installed + "\n")
        (root / "calls").touch()
        return cls(root)

    @property
    def installed(self) -> str:
        return (self.root / "installed").read_text().strip()

    def calls(self, program: str) -> list[str]:
        return [
            line
            for line in (self.root / "calls").read_text().splitlines()
            if line.startswith(program)
        ]

    def run(self, command: str) -> int:
        """Run a rendered step on this machine with the stand-ins first on PATH."""
        shell = LocalTransport("apt")
        return shell.run(f"PATH={self.root / 'bin'}:$PATH; {command}", 30).exit_code


def systemd_steps(tmp_path: Path, **node_vars: str) -> dict[str, str]:
    """The systemd playbook's rendered upgrade to 2.0 (and its rollback) for service `web`."""
    previous_file = str(tmp_path / "web.previous")
    node = Node.make(
        tmp_path,
        "systemd",
        {**SYSTEMD_VARS, "port": 8080, "previous_version_file": previous_file, **node_vars},
    )
    plan = node.plan("upgrade", PlanOptions(version="2.0"))
    return {step: command.run for step, command in plan.steps.items()}


def test_the_upgrade_writes_down_the_installed_version_and_the_rollback_goes_back_to_it(
    tmp_path: Path,
) -> None:
    apt = Apt.make(tmp_path / "apt", installed="1.4-1")
    steps = systemd_steps(tmp_path)

    assert apt.run(steps["upgrade"]) == 0
    assert apt.installed == "2.0"
    assert apt.calls("systemctl") == ["systemctl restart web"]
    assert apt.run(steps["rollback"]) == 0
    assert apt.installed == "1.4-1"
    assert [call.split()[-1] for call in apt.calls("apt-get")] == ["web=2.0", "web=1.4-1"]


def test_a_previous_version_given_wins_over_the_one_written_down(tmp_path: Path) -> None:
    apt = Apt.make(tmp_path / "apt", installed="1.4-1")
    steps = systemd_steps(tmp_path, previous_version="1.3-2")

    assert apt.run(steps["upgrade"]) == 0
    assert apt.run(steps["rollback"]) == 0
    assert apt.installed == "1.3-2"


def test_a_rollback_with_no_version_to_go_back_to_fails_without_touching_apt(
    tmp_path: Path,
) -> None:
    apt = Apt.make(tmp_path / "apt", installed="1.4-1")
    steps = systemd_steps(tmp_path)  # no upgrade ran: nothing was written down

    assert apt.run(steps["rollback"]) != 0
    assert apt.calls("apt-get") == [] and apt.installed == "1.4-1"
