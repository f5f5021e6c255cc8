"""Rolling upgrades of a fleet behind a real HAProxy, with calls flowing through it the whole time.

The lab's four nodes (pairs node-1/node-2 and node-3/node-4, group voice, max_unavailable 1)
sit behind HAProxy; the bundled `haproxy` playbook blocks them there. A background thread reads
HAProxy's `show stat` over and over, so the tests judge what the balancer really did, not what
upgradectl says it did.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import yaml
from clihelp import LabCli, Ran
from conftest import LabFactory, wait_for

from upgradectl.lab import CallGenerator, CallResult, Fate, HaProxy, Lab, SshHome, place_calls
from upgradectl.lab.lab import CALL_SERVER
from upgradectl.lab.running import Running
from upgradectl.loader import bundled_playbooks
from upgradectl.yamlread import read_yaml

pytestmark = pytest.mark.lab

NODES = ("node-1", "node-2", "node-3", "node-4")
PAIRS = ({"node-1", "node-2"}, {"node-3", "node-4"})
CALLS_PER_SECOND = 5.0  # with calls of 1-3 s: about ten live at any time, two or three per node
OUT_OF_SERVICE = ("DRAIN", "MAINT")


class ServiceSampler(Running):
    """Which servers HAProxy has out of service, read from `show stat` in a background thread
    for as long as the `with` block lasts."""

    def __init__(self, haproxy: HaProxy) -> None:
        self.haproxy = haproxy
        self.samples: list[frozenset[str]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="show stat", daemon=True)

    def _sample(self) -> None:
        try:
            while not self._stop.wait(0.01):
                states = self.haproxy.server_states()
                self.samples.append(
                    frozenset(n for n, s in states.items() if s.status.startswith(OUT_OF_SERVICE))
                )
        except OSError as exc:  # reported by stop()
            self.error = exc

    @property
    def most_out_at_once(self) -> int:
        """The largest number of servers seen out of service in one reading."""
        return max(len(sample) for sample in self.samples)

    @property
    def ever_out(self) -> set[str]:
        """Every server seen out of service at least once."""
        return set().union(*self.samples)

    def pairs_seen_out(self) -> list[frozenset[str]]:
        """The readings in which both nodes of a pair were out of service."""
        return [sample for sample in self.samples if any(pair <= sample for pair in PAIRS)]

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:  # a blind sampler proves nothing
            raise AssertionError(f"show stat could not be read: {self.error}")


@pytest.fixture
def fleet(lab_factory: LabFactory, ssh_home: Callable[[Lab], SshHome], tmp_path: Path) -> LabCli:
    """Four lab nodes in two pairs behind HAProxy, and the CLI pointed at them."""
    lab = lab_factory(4, haproxy=True)
    return LabCli(lab, ssh_home(lab), tmp_path / "state")


@pytest.fixture
def calls(fleet: LabCli) -> Iterator[CallGenerator]:
    """Calls of 1-3 s placed through HAProxy, flowing before the test acts (stopped after it)."""
    assert fleet.lab.haproxy is not None
    generator = CallGenerator(
        fleet.lab.haproxy.host, fleet.lab.haproxy.port, CALLS_PER_SECOND, duration=(1.0, 3.0)
    ).start()
    wait_for(lambda: len(live(generator.snapshot())) >= 6, timeout=5, what="calls to be live")
    yield generator
    generator.stop()


def live(result: CallResult) -> list[str]:
    """The nodes carrying the calls answered and not ended yet."""
    return [call.node for call in result.calls if call.fate is None and call.node]


def haproxy_playbook(cli: LabCli, name: str, **steps: Any) -> str:
    """The bundled haproxy playbook with fast polls, the lock in each node's own directory (not
    /var/tmp, which every lab on this machine shares) and some steps replaced."""
    playbook = read_yaml(bundled_playbooks()["haproxy"]).data  # keeps `on:` a key, not True
    playbook["name"] = name
    playbook["drain"]["poll"] = "0.2s"
    playbook["lock"] = "{{ node_dir }}/upgradectl.lock"
    playbook["steps"].update(steps)
    path = cli.lab.inventory_path.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(playbook))
    return str(path)


def haproxy_states(cli: LabCli) -> dict[str, str]:
    """Each server's status as HAProxy reports it now."""
    assert cli.lab.haproxy is not None
    return {name: state.status for name, state in cli.lab.haproxy.server_states().items()}


def versions(cli: LabCli) -> dict[str, str]:
    """The version each node's call server runs."""
    return {name: cli.lab.node(name).control("version").split()[1] for name in NODES}


def event(ran: Ran, kind: str) -> dict[str, Any]:
    """The one event of ``kind``."""
    (found,) = [e for e in ran.events if e["event"] == kind]
    return found


def times(ran: Ran, kind: str) -> dict[str, float]:
    """When each node had an event of ``kind``."""
    return {e["node"]: e["time"] for e in ran.events if e["event"] == kind}


def answered_after(result: CallResult, moments: dict[str, float]) -> set[str]:
    """The nodes that answered a call placed after their moment."""
    return {c.node for c in result.calls if c.node in moments and c.started > moments[c.node]}


def assert_fewest_active_first(ran: Ran) -> None:
    """The order event follows the probe's counts, fewest first."""
    probed = {e["node"]: e["active"] for e in ran.events if e["event"] == "probe"}
    order = event(ran, "order")["order"]
    assert sorted(order) == list(NODES)
    assert [probed[name] for name in order] == sorted(probed[name] for name in order)


def assert_nobody_cut(result: CallResult) -> None:
    """Every call ended as its caller meant."""
    counts = result.counts
    assert counts[Fate.DROPPED] == 0 and counts[Fate.REFUSED] == 0, counts
    assert counts[Fate.COMPLETED] == len(result.calls) > 0, counts


def assert_calls_flowed_around_every_drained_node(ran: Ran, result: CallResult) -> None:
    """Calls kept coming while each node was out (blocked until upgraded), and HAProxy sent
    none of them to it."""
    blocked, upgraded = times(ran, "blocked"), times(ran, "upgraded")
    assert set(blocked) == set(upgraded) == set(NODES)
    for node in NODES:
        meanwhile = [c for c in result.calls if blocked[node] < c.started < upgraded[node]]
        assert meanwhile, f"no call was placed while {node} was out"
        assert node not in {c.node for c in meanwhile}


@pytest.mark.slow
def test_a_rolling_upgrade_drops_no_call_and_takes_one_node_at_a_time_out_of_haproxy(
    fleet: LabCli, calls: CallGenerator
) -> None:
    assert fleet.lab.haproxy is not None
    playbook = haproxy_playbook(fleet, "haproxy-fast")
    with ServiceSampler(fleet.lab.haproxy) as sampler:
        ran = fleet("upgrade", "--group", "voice", "--version", "2.0", "--yes",
                    "--playbook", playbook)  # fmt: skip
        assert ran.code == 0, ran.stdout + ran.stderr
        # Back in HAProxy's rotation: every node answers calls placed after its unblock.
        unblocked = times(ran, "unblocked")
        wait_for(
            lambda: answered_after(calls.snapshot(), unblocked) == set(NODES),
            timeout=10,
            what="every node to answer calls after its upgrade",
        )
    assert sampler.ever_out == set(NODES)  # the sampler saw every drain
    assert sampler.most_out_at_once == 1  # the group's max_unavailable
    assert sampler.pairs_seen_out() == []
    result = calls.stop()
    assert_nobody_cut(result)
    assert_calls_flowed_around_every_drained_node(ran, result)
    assert versions(fleet) == dict.fromkeys(NODES, "2.0")
    assert set(haproxy_states(fleet).values()) == {"no check"}  # UP, unchecked: in service
    summary = ran.summary
    assert {name: node["result"] for name, node in summary["nodes"].items()} == dict.fromkeys(
        NODES, "upgraded"
    )
    assert summary["forced"] == []
    assert summary["connections"] == dict.fromkeys(("lb", *NODES), 1)  # one per node, all run
    assert_fewest_active_first(ran)


@pytest.mark.slow
def test_max_unavailable_two_drains_two_nodes_of_different_pairs_at_once(
    fleet: LabCli, calls: CallGenerator
) -> None:
    assert fleet.lab.haproxy is not None
    playbook = haproxy_playbook(fleet, "haproxy-fast")
    with ServiceSampler(fleet.lab.haproxy) as sampler:
        ran = fleet("upgrade", "--group", "voice", "--version", "2.0", "--yes", "--playbook",
                    playbook, "--max-unavailable", "2")  # fmt: skip
    assert ran.code == 0, ran.stdout + ran.stderr
    assert sampler.most_out_at_once == 2
    assert sampler.pairs_seen_out() == []
    result = calls.stop()
    assert_nobody_cut(result)
    assert_calls_flowed_around_every_drained_node(ran, result)
    assert versions(fleet) == dict.fromkeys(NODES, "2.0")
    assert_fewest_active_first(ran)


@pytest.mark.slow
def test_after_max_failures_no_new_node_starts_and_every_node_stays_in_service(
    fleet: LabCli, calls: CallGenerator
) -> None:
    # The order follows live counts, so no node can be named beforehand: the second node to be
    # upgraded fails, whichever it is (the first one claims a marker directory; the nodes share
    # this machine, so any directory the lab user may write will do).
    claimed = fleet.lab.node("node-1").node_dir / "first-upgrade"
    lab_upgrade = yaml.safe_load(fleet.lab.inventory_path.read_text())["defaults"]["vars"][
        "upgrade_command"
    ]
    upgrade = (
        f"mkdir {claimed} 2>/dev/null || {{ echo 'error: disk full'; exit 1; }}; {lab_upgrade}"
    )
    playbook = haproxy_playbook(fleet, "haproxy-fast")
    ran = fleet("upgrade", "--group", "voice", "--version", "2.0", "--yes", "--playbook", playbook,
                "--max-failures", "1", "--var", f"upgrade_command={upgrade}")  # fmt: skip
    assert ran.code == 1, ran.stdout  # a failed step beats the skipped nodes' 75
    first, failed, *rest = event(ran, "order")["order"]
    nodes = ran.summary["nodes"]
    assert set(nodes) == set(NODES)
    assert nodes[first]["result"] == "upgraded"
    assert nodes[failed]["result"] == "failed" and "disk full" in nodes[failed]["message"]
    for name in rest:
        assert nodes[name]["result"] == "skipped"
        assert nodes[name]["message"] == "not started: 1 failures reached --max-failures 1"
        assert "node-start" not in ran.kinds(name)
    assert versions(fleet) == {name: "2.0" if name == first else "1.0" for name in NODES}
    assert set(haproxy_states(fleet).values()) == {"no check"}
    assert {fleet.lab.node(name).control("state").strip() for name in NODES} == {"ready"}
    assert_nobody_cut(calls.stop())


@pytest.mark.slow
@pytest.mark.parametrize("listed_by", ["haproxy", "call server"])
def test_stragglers_past_the_deadline_are_forced_and_the_summary_lists_the_calls_cut(
    fleet: LabCli, calls: CallGenerator, listed_by: str
) -> None:
    assert fleet.lab.haproxy is not None
    long_calls = place_calls(fleet.lab.haproxy.host, fleet.lab.haproxy.port, [60] * 6, "long")
    answered_by = [call.record.node for call in long_calls]
    assert None not in answered_by  # HAProxy put every long call through
    node, held = Counter(name for name in answered_by if name).most_common(1)[0]
    # HAProxy's own list names its streams (0x...); the call server's names the calls themselves.
    sessions = {"run": f"echo list | {CALL_SERVER}", "parse": r"^(?P<id>\S+) (?P<age>\d+)"}
    playbook = haproxy_playbook(
        fleet, "haproxy-fast", **({"sessions": sessions} if listed_by == "call server" else {})
    )
    # 4 s: longer than any short call, so only the long ones are left at the deadline.
    ran = fleet("-v", "drain", node, "--yes", "--playbook", playbook, "--timeout", "4s",
                "--stragglers", "force", "--max-stragglers", str(held + 2))  # fmt: skip
    assert ran.code == 0, ran.outcome()  # -v: each step's output, `force` and `sessions` too
    on_node = [call.wait(10) for call in long_calls if call.record.node == node]
    assert [call.fate for call in on_node] == [Fate.DROPPED] * held
    others = [call for call in long_calls if call.record.node != node]
    assert all(call.live for call in others)  # nobody else was cut
    short = calls.stop().calls
    cut = [call for call in [*short, *on_node] if call.fate is Fate.DROPPED]
    forced = ran.summary["forced"]
    assert ran.summary["nodes"][node]["forced_count"] == len(forced) == len(cut)
    assert {session["node"] for session in forced} == {node}
    assert all(session["age"] >= 3 for session in forced)  # live since before the 4 s deadline
    if listed_by == "call server":
        assert {session["id"] for session in forced} == {call.call_id for call in cut}
    else:
        assert all(f"srv={node} " in session["line"] for session in forced)
        # Named for the helpdesk by the caller's address, not by HAProxy's stream pointer.
        cut_from = {call.address for call in cut}
        assert {session["details"]["client"] for session in forced} == cut_from
    assert haproxy_states(fleet)[node] == "DRAIN"  # a drain leaves the node blocked
    for call in others:
        call.hang_up()


def test_a_dry_run_says_what_the_real_run_then_does_on_the_same_fleet(fleet: LabCli) -> None:
    assert fleet.lab.haproxy is not None
    fleet.lab.node("node-2").control("upgrade 2.0")  # already current: left alone
    fleet.lab.haproxy.admin("set server calls/node-3 state drain")  # blocked by a colleague
    playbook = haproxy_playbook(fleet, "haproxy-fast")
    upgrade = ("upgrade", "--all", "--version", "2.0", "--yes", "--playbook", playbook)

    dry = fleet(*upgrade, "--dry-run")
    real = fleet(*upgrade)

    assert event(dry, "order")["order"] == event(real, "order")["order"]
    said = {name: node["result"] for name, node in dry.summary["nodes"].items()}
    did = {name: node["result"] for name, node in real.summary["nodes"].items()}
    acted = {name for name, result in did.items() if result == "upgraded"}
    assert acted and {name for name, result in said.items() if result == "dry-run"} == acted
    for kept in ("current", "skipped"):  # what neither run touches, for the same reasons
        left = {
            name: dry.summary["nodes"][name]["message"] for name, r in said.items() if r == kept
        }
        assert left == {
            name: real.summary["nodes"][name]["message"] for name, r in did.items() if r == kept
        }
    assert said["node-2"] == did["node-2"] == "current"
    for name in acted:  # each act the dry run described, the real run journalled
        would = next(
            e["message"] for e in dry.events if e["event"] == "would" and e["node"] == name
        )
        kinds = real.kinds(name)
        assert ("block at lb" in would) == ("blocking" in kinds)
        assert ("unblock at lb" in would) == ("unblocked" in kinds)
        assert "upgrade" in would and "upgraded" in kinds
        assert "leave it blocked" in would or "unblocked" in kinds
    assert dry.code == real.code, (dry.stdout, real.stdout)  # 75: a node had to wait
