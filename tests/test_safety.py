"""Never lose track: a controller killed or interrupted, a second controller, connections that drop,
nodes that reboot; over real sshd, with the command line run as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import pytest
from clihelp import LabCli, Ran
from conftest import wait_for

from upgradectl.lab import Call, LabNode, place_calls
from upgradectl.runrecords import RunRecord, read_run

CTL = "socat - UNIX-CONNECT:{{ ctl_socket }}"
DEADLINE = 30.0  # for anything a test waits on; a healthy run needs a few seconds


class Controller:
    """``python -m upgradectl --json ...`` running in the background: its events as they come,
    its journal, and signals to send it."""

    def __init__(self, cli: LabCli, args: tuple[str, ...], state_dir: Path) -> None:
        self.state_dir = state_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "upgradectl", "-i", str(cli.lab.inventory_path),
             "--state-dir", str(state_dir), "--json", *args],
            env=cli.home.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=_pump, args=(self.process.stdout, self.lines)),
            threading.Thread(target=_pump, args=(self.process.stderr, self.stderr)),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON events printed so far."""
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    @property
    def run_id(self) -> str:
        """The run's id, as its first event announces it."""
        return str(self.wait_for_event(lambda e: e["event"] == "run-start", "run-start")["run_id"])

    def journal(self) -> RunRecord:
        """The run's journal as it is on disk now."""
        return read_run(self.state_dir / "runs" / f"{self.run_id}.jsonl")

    def kinds(self, node: str) -> list[str]:
        """The kinds of the journal records of ``node``, in order."""
        return [r["kind"] for r in self.journal().records if r.get("node") == node]

    def wait_for_journal(self, kind: str, node: str = "node-1") -> None:
        """Wait until ``node`` has a ``kind`` record in the journal."""
        wait_for(lambda: kind in self.kinds(node), DEADLINE, what=f"{kind!r} in the journal")

    def wait_for_event(self, match: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Wait for the first event that ``match`` accepts, and return it."""

        def first() -> dict[str, Any] | None:
            return next((event for event in self.events if match(event)), None)

        found = wait_for(first, DEADLINE, what=what)
        assert found is not None  # wait_for returns only what is truthy
        return found

    def wait_for_stderr(self, text: str) -> None:
        """Wait until ``text`` appears on the controller's standard error."""
        wait_for(lambda: text in "".join(self.stderr), DEADLINE, what=repr(text))

    def send(self, signum: int) -> None:
        """Signal the controller."""
        self.process.send_signal(signum)

    def finish(self) -> Ran:
        """Wait for the controller to exit (it must, by the deadline)."""
        code = self.process.wait(DEADLINE)
        for reader in self._readers:
            reader.join(DEADLINE)
        return Ran(code, "".join(self.lines), "".join(self.stderr), self.events)

    def kill(self) -> None:
        """SIGKILL the controller (if it still runs) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.finish()


def _pump(stream: IO[str], lines: list[str]) -> None:
    """Collect ``stream``'s lines as they come, until it closes (then close our end)."""
    with stream:
        for line in stream:
            lines.append(line)


Start = Callable[..., Controller]


@pytest.fixture
def start(cli: LabCli) -> Iterator[Start]:
    """``start(*args)``: a controller in the background, killed after the test."""
    started: list[Controller] = []

    def launch(*args: str) -> Controller:
        started.append(Controller(cli, args, cli.state_dir))
        return started[-1]

    yield launch
    for controller in started:
        controller.kill()


def one_call(cli: LabCli, seconds: float = 60) -> Call:
    """One live call on node-1: it keeps the drain waiting until the test hangs it up."""
    (call,) = place_calls("127.0.0.1", cli.lab.node("node-1").call_port, [seconds], "safety")
    return call


def upgrade(playbook: str) -> tuple[str, ...]:
    """The arguments of ``upgrade node-1`` to 2.0 with ``playbook``."""
    return ("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", playbook)


def lock_file(cli: LabCli) -> Path:
    """The lab playbook's node lock of node-1."""
    return cli.lab.node("node-1").node_dir / "upgradectl.lock"


# --- the controller dies or is interrupted --------------------------------------------------


@pytest.mark.slow
def test_a_controller_killed_mid_drain_is_shown_by_status_and_finished_by_resume(
    cli: LabCli, start: Start
) -> None:
    call = one_call(cli)
    killed = start(*upgrade(cli.playbook_variant("fast")))
    killed.wait_for_event(lambda e: e["event"] == "poll", "the drain to poll")
    killed.kill()
    assert cli.ask("state") == "blocked"

    status = cli("status")
    assert status.code == 0, status.stderr
    (report,) = status.events
    left = report["left_out_of_service"]["node-1"]
    assert (left["run"], left["kind"]) == (killed.run_id, "blocked")
    assert [run["run"] for run in report["unfinished_runs"]] == [killed.run_id]
    node = next(row for row in report["nodes"] if row["node"] == "node-1")
    assert node["blocked"] is True and node["lock"]["run"] == killed.run_id

    call.hang_up()
    resumed = cli("resume", "--yes")
    assert resumed.code == 0, resumed.stdout  # the dead run's node lock is this run's own
    assert resumed.summary["run_id"] == killed.run_id
    assert cli.ask("version") == "version 2.0" and cli.ask("state") == "ready"
    assert not lock_file(cli).exists()
    assert cli("status").events[0]["left_out_of_service"] == {}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_during_the_wait_puts_the_node_back_in_service(
    cli: LabCli, start: Start, signum: int
) -> None:
    call = one_call(cli)
    running = start(*upgrade(cli.playbook_variant("fast")))
    running.wait_for_event(lambda e: e["event"] == "poll", "the drain to poll")
    running.send(signum)
    ran = running.finish()
    assert ran.code == 5, ran.stdout
    assert cli.ask("state") == "ready" and cli.ask("version") == "version 1.0"
    assert call.live  # nobody was cut
    kinds = running.kinds("node-1")
    assert kinds[-2:] == ["unblocked", "result"] and "upgrading" not in kinds
    assert running.journal().finished is not None
    assert not lock_file(cli).exists()
    call.hang_up()


def gated_upgrade(cli: LabCli) -> tuple[str, Path]:
    """A playbook whose upgrade waits on the node until the returned file exists."""
    gate = cli.lab.node("node-1").node_dir / "go"
    upgrade_step = {
        "run": f"until [ -e {gate} ]; do sleep 0.05; done; echo upgrade {{{{ version }}}} | {CTL}",
        "parse": "^upgraded to",
    }
    return cli.playbook_variant("gated", upgrade=upgrade_step), gate


def test_ctrl_c_during_the_upgrade_lets_the_step_finish_then_stops(
    cli: LabCli, start: Start
) -> None:
    playbook, gate = gated_upgrade(cli)
    running = start(*upgrade(playbook))
    running.wait_for_journal("upgrading")
    running.send(signal.SIGINT)
    running.wait_for_stderr("stopping at the next safe point")
    gate.touch()
    ran = running.finish()
    assert ran.code == 5, ran.stdout
    kinds = running.kinds("node-1")
    assert kinds[-3:] == ["upgraded", "interrupted", "result"]
    assert cli.ask("version") == "version 2.0" and cli.ask("state") == "blocked"

    resumed = cli("resume", running.run_id, "--yes")
    assert resumed.code == 0, resumed.stdout
    assert "upgrading" not in resumed.kinds("node-1")  # the finished upgrade is not run again
    assert cli.ask("state") == "ready"


def test_a_second_ctrl_c_exits_at_once_leaving_a_resumable_journal(
    cli: LabCli, start: Start
) -> None:
    playbook, gate = gated_upgrade(cli)
    running = start(*upgrade(playbook))
    running.wait_for_journal("upgrading")
    running.send(signal.SIGINT)
    running.wait_for_stderr("stopping at the next safe point")
    assert running.process.poll() is None  # the first Ctrl-C waits for the step
    running.send(signal.SIGINT)
    ran = running.finish()
    assert ran.code == 5 and "second interrupt" in ran.stderr
    assert running.kinds("node-1")[-1] == "upgrading" and running.journal().finished is None

    # The abandoned upgrade command still runs on the node, and completes.
    gate.touch()
    wait_for(lambda: cli.ask("version") == "version 2.0", DEADLINE)
    resumed = cli("resume", "--yes")
    assert resumed.code == 0, resumed.stdout
    assert resumed.summary["run_id"] == running.run_id
    assert cli.ask("state") == "ready" and not lock_file(cli).exists()


def test_a_node_blocked_by_hand_stays_blocked_after_an_abort(cli: LabCli) -> None:
    calls = place_calls("127.0.0.1", cli.lab.node("node-1").call_port, [60, 60, 60], "held")
    cli.ask("block")  # an operator took the node out of service before the run
    ran = cli(
        *upgrade(cli.playbook_variant("fast")),
        "--timeout", "1s", "--stragglers", "force", "--max-stragglers", "2",
    )  # fmt: skip
    assert ran.code == 3, ran.stdout
    assert cli.ask("state") == "blocked" and cli.ask("version") == "version 1.0"
    assert "unblocked" not in ran.kinds("node-1")
    assert all(call.live for call in calls)
    for call in calls:
        call.hang_up()


# --- two controllers ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_controller_on_the_same_node_is_turned_away_and_break_lock_takes_over(
    cli: LabCli, start: Start, tmp_path: Path
) -> None:
    call = one_call(cli)
    fast = cli.playbook_variant("fast")
    first = start(*upgrade(fast))
    first.wait_for_journal("blocked")

    other = LabCli(cli.lab, cli.home, tmp_path / "other-controller")
    turned_away = other(*upgrade(fast))
    assert turned_away.code == 75, turned_away.stdout
    message = turned_away.summary["nodes"]["node-1"]["message"]
    assert first.run_id in message and "--break-lock" in message
    assert json.loads(lock_file(cli).read_text())["run"] == first.run_id  # left alone

    # The first controller dies; its lock goes stale. Another controller (its own state dir)
    # cannot tell that the run died: 75 until --break-lock, which is journalled. The block is
    # not that controller's to lift: it leaves the node blocked, as it found it. (The dead run's
    # own controller takes such a lock over without asking: tests/test_takeover.py.)
    first.kill()
    call.hang_up()
    assert other(*upgrade(fast)).code == 75
    took_over = other(*upgrade(fast), "--break-lock")
    assert took_over.code == 0, took_over.stdout
    journal = read_run(other.state_dir / "runs" / f"{took_over.summary['run_id']}.jsonl")
    (broken,) = [r for r in journal.records if r["kind"] == "lock-broken"]
    assert broken["node"] == "node-1" and broken["data"]["holder"]["run"] == first.run_id
    assert cli.ask("state") == "blocked" and cli.ask("version") == "version 2.0"
    assert not lock_file(cli).exists()


# --- connections that drop, nodes that reboot -----------------------------------------------


def test_a_connection_dropped_during_the_wait_is_reopened_and_the_drain_carries_on(
    cli: LabCli, start: Start
) -> None:
    call = one_call(cli)
    node = cli.lab.node("node-1")
    running = start(*upgrade(cli.playbook_variant("fast", drain={"reconnect_for": "20s"})))
    running.wait_for_event(lambda e: e["event"] == "poll", "the drain to poll")
    node.ssh.kill()
    running.wait_for_event(lambda e: "reconnecting" in e.get("message", ""), "a reconnect")
    node.ssh.start()
    call.hang_up()
    ran = running.finish()
    assert ran.code == 0, ran.stdout
    assert ran.summary["connections"]["node-1"] == 2
    kinds = running.kinds("node-1")
    assert kinds.count("blocked") == 1 and "drained" in kinds and "upgraded" in kinds
    # One drain throughout: the same deadline before and after the drop.
    assert len({e["deadline"] for e in ran.events if e["event"] == "poll"}) == 1
    assert cli.ask("version") == "version 2.0" and cli.ask("state") == "ready"


def test_a_node_unreachable_after_the_retries_needs_attention_and_the_journal_says_so(
    cli: LabCli, start: Start
) -> None:
    one_call(cli)
    running = start(*upgrade(cli.playbook_variant("fast", drain={"reconnect_for": "1s"})))
    running.wait_for_event(lambda e: e["event"] == "poll", "the drain to poll")
    cli.lab.node("node-1").ssh.kill()
    ran = running.finish()
    assert ran.code == 4, ran.stdout
    node = ran.summary["nodes"]["node-1"]
    assert node["result"] == "unreachable" and node["in_service"] is False
    kinds = running.kinds("node-1")
    assert kinds[-2:] == ["attention", "result"] and "unblocked" not in kinds
    last = running.journal().node_states()["node-1"]
    assert last["kind"] == "attention" and last["data"]["blocked"] is True  # as far as we know
    assert cli.ask("state") == "blocked"  # and so it is


# Like `reboot`, the upgrade command takes the node down under itself (the lab's `poweroff`):
# the connection drops before the command can end or time out.
REBOOTING_UPGRADE = f"echo upgrade {{{{ version }}}} | {CTL} && echo poweroff | {CTL}"


def boots_again(node: LabNode) -> None:
    """Once the node powered off (its sshd gone with every session), a new sshd starts."""
    wait_for(lambda: not node.ssh.process.running, DEADLINE, interval=0.01)
    node.ssh.start()


def test_an_upgrade_that_reboots_waits_for_the_node_to_come_back_then_verifies(
    cli: LabCli,
) -> None:
    rebooting = cli.playbook_variant(
        "reboots",
        upgrade={"run": REBOOTING_UPGRADE, "reboot": True, "timeout": "10s"},
        ready={"run": f"echo version | {CTL}", "parse": "^version 2\\.0$"},
    )  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        rebooted = pool.submit(boots_again, cli.lab.node("node-1"))
        ran = cli(*upgrade(rebooting))
        rebooted.result()
    assert ran.code == 0, ran.stdout
    assert ran.summary["connections"]["node-1"] == 2
    kinds = ran.kinds("node-1")
    assert (
        kinds.index("upgrading")
        < kinds.index("rebooting")
        < kinds.index("back")
        < kinds.index("upgraded")
        < kinds.index("verified")
        < kinds.index("unblocked")
    )
    assert cli.ask("version") == "version 2.0" and cli.ask("state") == "ready"


def test_a_node_that_does_not_come_back_from_its_reboot_needs_attention(cli: LabCli) -> None:
    # The upgrade command powers the node off itself, as `reboot` would: the connection drops
    # under it before it can end or time out, whatever the machine's load. (A test thread that
    # killed sshd once the new version ran raced the step's timeout, and sometimes lost.) The
    # timeout is then how long the node is awaited: it never comes back.
    never_back = cli.playbook_variant(
        "never-back",
        drain={"reconnect_for": "1s"},
        upgrade={"run": REBOOTING_UPGRADE, "reboot": True, "timeout": "3s"},
    )  # fmt: skip
    ran = cli(*upgrade(never_back))
    assert not cli.lab.node("node-1").ssh.process.running  # powered off, by the command itself
    assert ran.code == 4, ran.stdout
    assert ran.summary["nodes"]["node-1"]["result"] == "unreachable"
    kinds = ran.kinds("node-1")
    assert "rebooting" in kinds and "upgraded" not in kinds, ran.stdout


# --- the journal stays true -----------------------------------------------------------------


def test_a_torn_last_journal_line_is_skipped_and_reported_and_the_run_resumes(
    cli: LabCli, start: Start
) -> None:
    call = one_call(cli)
    killed = start("drain", "node-1", "--yes", "--playbook", cli.playbook_variant("fast"))
    killed.wait_for_event(lambda e: e["event"] == "poll", "the drain to poll")
    killed.kill()
    path = cli.state_dir / "runs" / f"{killed.run_id}.jsonl"
    with path.open("a") as journal:  # a power cut in the middle of a write
        journal.write(f'{{"run":"{killed.run_id}","kind":"dra')
    torn_line = len(path.read_text().splitlines())

    history = cli("history")
    assert history.code == 0, history.stderr
    (row,) = history.events
    assert row["run"] == killed.run_id and row["torn_lines"] == [torn_line]
    status = cli("status")
    assert status.code == 0, status.stderr
    assert [run["run"] for run in status.events[0]["unfinished_runs"]] == [killed.run_id]

    call.hang_up()
    resumed = cli("resume", "--yes")
    assert resumed.code == 0, resumed.stdout
    after = read_run(path)
    assert after.torn_lines == [torn_line]  # still the only one: what came after is whole
    assert after.finished is not None and after.node_states()["node-1"]["kind"] == "drained"
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_failed_upgrade_leaves_a_journal_that_matches_what_happened(cli: LabCli) -> None:
    broken = cli.playbook_variant(
        "broken",
        upgrade={"run": f"echo upgrade 2.0 | {CTL}; echo 'error: migration failed'",
                 "fail_if": "(?m)^error"},
        rollback={"run": f"echo upgrade 1.0 | {CTL}", "parse": "^upgraded to 1.0"},
    )  # fmt: skip
    ran = cli(*upgrade(broken))
    assert ran.code == 1, ran.stdout
    journal = read_run(cli.state_dir / "runs" / f"{ran.summary['run_id']}.jsonl")
    # Every state change (the drain's readings, kept beside them, are not state changes).
    records = [r for r in journal.records if r.get("node") == "node-1" and r["kind"] != "reading"]
    assert [r["kind"] for r in records] == [
        "blocking", "blocked", "drained", "upgrading", "failed", "rolling-back", "rolled-back",
        "verified", "unblocking", "unblocked", "result",
    ]  # fmt: skip
    assert [r["active"] for r in journal.readings("node-1")] == [0]  # the empty node, read once
    assert "migration failed" in records[4]["data"]["message"]
    assert records[-1]["data"]["exit_code"] == 1
    assert all(r["run"] == ran.summary["run_id"] and r["user"] and r["host"] for r in records)
    # What happened: the old version, back in service; and nothing is left out of service.
    assert cli.ask("version") == "version 1.0" and cli.ask("state") == "ready"
    assert cli("status").events[0]["left_out_of_service"] == {}


@pytest.mark.slow
def test_a_connection_lost_mid_upgrade_is_recorded_as_unknown_not_as_upgraded(
    cli: LabCli,
) -> None:
    # The upgrade takes its own SSH session down: did it finish? The controller cannot know.
    # (Its session is the sshd process above it, past the shells and `timeout` in between.)
    session = (
        "p=$PPID; until grep -q '^sshd' /proc/$p/comm; do p=$(cut -d' ' -f4 /proc/$p/stat); done"
    )
    cut = cli.playbook_variant(
        "cut", upgrade={"run": f"echo upgrade {{{{ version }}}} | {CTL}; {session}; kill -9 $p"}
    )
    ran = cli(*upgrade(cut))
    assert ran.code == 4, ran.stdout
    journal = read_run(cli.state_dir / "runs" / f"{ran.summary['run_id']}.jsonl")
    kinds = [r["kind"] for r in journal.records if r.get("node") == "node-1"]
    assert kinds[-3:] == ["upgrading", "attention", "result"]
    last = journal.node_states()["node-1"]
    assert last["kind"] == "attention" and last["data"]["last_state"] == "upgrading"
    assert cli.ask("state") == "blocked"  # left out of service, for a person to look at
    left = cli("status").events[0]["left_out_of_service"]
    assert (
        left["node-1"]["kind"] == "attention"
        and left["node-1"]["data"]["last_state"] == "upgrading"
    )
