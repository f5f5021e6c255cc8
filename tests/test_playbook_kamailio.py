"""The bundled kamailio playbook: against Debian's Kamailio with SIPp callers and call servers,
and its parsing of kamcmd output recorded from that Kamailio."""

from __future__ import annotations

import re
import shlex
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from clihelp import Ran, run_cli
from conftest import wait_for
from kamailio.siplab import KAMCMD, CallTotals, SipLab, missing_programs

from upgradectl.connections import Connections
from upgradectl.errors import StepFailed, UnreadableCount
from upgradectl.events import Events
from upgradectl.lab import LabServer
from upgradectl.loader import bundled_playbooks, load_inventory, load_playbooks
from upgradectl.plan import PlanOptions, build_plan
from upgradectl.steps import Steps

RECORDED = Path(__file__).parent / "kamailio" / "recorded"
# Where the call servers were when the outputs were recorded (kamailio/recorded/README.md).
RECORDED_PORTS = {"cs-1": 21524, "cs-2": 29521}
# The recording of each RPC method that a scenario does not replace.
RECORDED_DEFAULTS = {
    "dispatcher.list": "dispatcher.list.txt",
    "dispatcher.set_state": "dispatcher.set_state.txt",
    "dlg.profile_get_size": "dlg.profile_get_size.txt",
    "dlg.profile_list": "dlg.profile_list.txt",
    "dlg.end_dlg": "dlg.end_dlg.txt",
    "tm.cancel": "tm.cancel.txt",
}

# The drain options of the straggler tests: calls last longer than the deadline.
FORCE_AT_MOST_TWO_AFTER_1S = ("--timeout", "1s", "--stragglers", "force", "--max-stragglers", "2")

needs_sip_lab = pytest.mark.skipif(
    bool(missing_programs()),
    reason=f"not installed: {', '.join(missing_programs())} (apt-get install kamailio sip-tester)",
)


# --- parsing recorded kamcmd output ---------------------------------------------------------


class ReplayingKamcmd:
    """A kamcmd stand-in: prints what the real one printed for each RPC method; logs its calls."""

    def __init__(self, directory: Path, recordings: Mapping[str, str] | None = None) -> None:
        home = Path(tempfile.mkdtemp(prefix="kamcmd-", dir=directory))
        self.path = home / "kamcmd"
        self.log = home / "calls.log"
        chosen = {**RECORDED_DEFAULTS, **(recordings or {})}
        cases = "".join(
            f"  {method}) cat {shlex.quote(str(RECORDED / name))} ;;\n"
            for method, name in chosen.items()
        )
        self.path.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "$*" >> {shlex.quote(str(self.log))}\n'
            f'case "$1" in\n{cases}  *) echo "error: 500 - no recording of $1" ;;\nesac\n'
        )
        self.path.chmod(0o755)

    @property
    def command(self) -> str:
        """What the playbook's ``kamcmd`` var is set to."""
        return str(self.path)

    def calls(self) -> list[str]:
        """The argument lists it was called with, one string each."""
        return self.log.read_text().splitlines() if self.log.exists() else []


def recorded_steps(tmp_path: Path, kamcmd: str, node: str = "cs-1", **more_vars: str) -> Steps:
    """The kamailio playbook's drain steps for ``node``, rendered and run on this machine."""
    nodes: dict[str, object] = {"proxy": {"transport": "local"}}
    for name, port in RECORDED_PORTS.items():
        nodes[name] = {
            "host": "127.0.0.1",
            "transport": "local",
            "playbook": "kamailio",
            "vars": {"sip_port": port},
        }
    inventory_path = tmp_path / "inventory.yaml"
    defaults = {"vars": {"kamcmd": kamcmd, "node_state_dir": str(tmp_path), **more_vars}}
    inventory_path.write_text(yaml.safe_dump({"defaults": defaults, "nodes": nodes}))
    inventory = load_inventory(str(inventory_path))
    plan = build_plan(
        inventory, [node], "drain", PlanOptions(), "recorded", load_playbooks(inventory)
    )
    connections = Connections(inventory)
    return Steps(
        plan.nodes[0], connections.get, Events(), reconnect_for=0.0, pause=lambda seconds: False
    )


def recorded_field(name: str, key: str) -> list[str]:
    """Every value of ``key`` at the top level of each dialog in a recorded ``dlg.profile_list``."""
    return re.findall(rf"^\t{re.escape(key)}: (\S+)$", (RECORDED / name).read_text(), re.MULTILINE)


def test_active_is_the_destinations_profile_size(tmp_path: Path) -> None:
    busy = recorded_steps(tmp_path, ReplayingKamcmd(tmp_path).command)
    assert busy.count() == 3
    idle = ReplayingKamcmd(tmp_path, {"dlg.profile_get_size": "dlg.profile_get_size-idle.txt"})
    assert recorded_steps(tmp_path, idle.command).count() == 0
    assert idle.calls() == ["dlg.profile_get_size calls sip:127.0.0.1:21524"]


def test_sessions_are_the_destinations_calls_by_call_id_and_age(tmp_path: Path) -> None:
    steps = recorded_steps(tmp_path, ReplayingKamcmd(tmp_path).command)
    sessions = steps.sessions(now=0.0)
    call_ids = recorded_field("dlg.profile_list.txt", "call-id")
    durations = [float(value) for value in recorded_field("dlg.profile_list.txt", "duration")]
    assert len(call_ids) == 3
    assert [(s.id, s.age) for s in sessions] == list(zip(call_ids, durations, strict=True))


def test_is_blocked_reads_the_destinations_disabled_flag(tmp_path: Path) -> None:
    active = ReplayingKamcmd(tmp_path)
    assert recorded_steps(tmp_path, active.command).is_blocked() is False
    disabled = ReplayingKamcmd(tmp_path, {"dispatcher.list": "dispatcher.list-cs-1-disabled.txt"})
    assert recorded_steps(tmp_path, disabled.command, "cs-1").is_blocked() is True
    assert recorded_steps(tmp_path, disabled.command, "cs-2").is_blocked() is False


def test_precheck_refuses_to_take_out_the_last_active_destination(tmp_path: Path) -> None:
    recorded_steps(tmp_path, ReplayingKamcmd(tmp_path).command, "cs-1").run("precheck")
    disabled = ReplayingKamcmd(tmp_path, {"dispatcher.list": "dispatcher.list-cs-1-disabled.txt"})
    with pytest.raises(StepFailed, match="other active destination"):
        recorded_steps(tmp_path, disabled.command, "cs-2").run("precheck")


def test_block_and_unblock_set_the_destination_state(tmp_path: Path) -> None:
    kamcmd = ReplayingKamcmd(tmp_path)
    steps = recorded_steps(tmp_path, kamcmd.command)
    steps.run("block")
    steps.run("unblock")
    assert kamcmd.calls() == [
        "dispatcher.set_state d 1 sip:127.0.0.1:21524",
        "dispatcher.set_state ap 1 sip:127.0.0.1:21524",  # active, and probed again
    ]


def test_an_error_printed_with_exit_code_0_fails_the_block(tmp_path: Path) -> None:
    kamcmd = ReplayingKamcmd(
        tmp_path, {"dispatcher.set_state": "dispatcher.set_state-unknown-destination.txt"}
    )
    with pytest.raises(StepFailed, match="fail_if"):
        recorded_steps(tmp_path, kamcmd.command).run("block")


def test_force_ends_every_listed_dialog_of_the_destination(tmp_path: Path) -> None:
    kamcmd = ReplayingKamcmd(tmp_path)
    recorded_steps(tmp_path, kamcmd.command).run("force")
    entries = recorded_field("dlg.profile_list.txt", "h_entry")
    ids = recorded_field("dlg.profile_list.txt", "h_id")
    ended = [call for call in kamcmd.calls() if call.startswith("dlg.end_dlg")]
    assert ended == [f"dlg.end_dlg {entry} {id_}" for entry, id_ in zip(entries, ids, strict=True)]


def test_an_idle_destination_has_no_sessions_and_force_ends_nothing(tmp_path: Path) -> None:
    kamcmd = ReplayingKamcmd(tmp_path, {"dlg.profile_list": "dlg.profile_list-idle.txt"})
    steps = recorded_steps(tmp_path, kamcmd.command)
    assert steps.sessions(now=0.0) == []
    steps.run("force")
    assert not [call for call in kamcmd.calls() if call.startswith("dlg.end_dlg")]


def test_force_cancels_a_ringing_call_that_dlg_end_dlg_would_refuse(tmp_path: Path) -> None:
    kamcmd = ReplayingKamcmd(tmp_path, {"dlg.profile_list": "dlg.profile_list-ringing.txt"})
    recorded_steps(tmp_path, kamcmd.command).run("force")
    (call_id,) = recorded_field("dlg.profile_list-ringing.txt", "call-id")
    assert recorded_field("dlg.profile_list-ringing.txt", "state") == ["2"]
    assert kamcmd.calls()[1:] == [f"tm.cancel s:{call_id} s:1"]  # never dlg.end_dlg


def test_force_accepts_a_ringing_call_that_ended_by_itself_meanwhile(tmp_path: Path) -> None:
    kamcmd = ReplayingKamcmd(
        tmp_path,
        {
            "dlg.profile_list": "dlg.profile_list-ringing.txt",
            "tm.cancel": "tm.cancel-ended-meanwhile.txt",
        },
    )
    recorded_steps(tmp_path, kamcmd.command).run("force")  # no StepFailed: the call is gone
    (call_id,) = recorded_field("dlg.profile_list-ringing.txt", "call-id")
    assert kamcmd.calls()[1:] == [f"tm.cancel s:{call_id} s:1"]  # it was asked to go, once


# What call servers print for their own count (tests/recorded/README.md: where each comes from).
NODE_COUNTS = [
    pytest.param("1 active call\n57 calls processed\n", 1, id="asterisk one call"),
    pytest.param("3 of 100 max active calls ( 3.00% of capacity)\n", 3, id="asterisk maxcalls"),
    pytest.param("\n0 total.\n\n", 0, id="freeswitch none"),
    pytest.param("\n3 total.\n\n", 3, id="freeswitch three"),
    pytest.param(
        "Unable to connect to remote asterisk (does ... exist?)\n", None, id="no asterisk"
    ),
    pytest.param("Command 'core show calls' cannot be run during shutdown\n", None, id="shutdown"),
    pytest.param("-ERR SQL DISABLED NO DATA AVAILABLE!\n\n", None, id="freeswitch error"),
    pytest.param("", None, id="nothing"),
]


@pytest.mark.parametrize(("output", "expected"), NODE_COUNTS)
def test_the_call_servers_own_count_reads_asterisk_and_freeswitch_never_an_error_as_zero(
    tmp_path: Path, output: str, expected: int | None
) -> None:
    printed = tmp_path / "printed.txt"
    printed.write_text(output)
    steps = recorded_steps(
        tmp_path, ReplayingKamcmd(tmp_path).command, node_active_command=f"cat {printed}"
    )
    assert steps.target("node_active") == "cs-1"  # on the call server, not the proxy
    if expected is None:
        with pytest.raises(UnreadableCount):
            steps.count("node_active")
    else:
        assert steps.count("node_active") == expected


def test_sessions_name_the_caller_and_the_callee_by_their_uris(tmp_path: Path) -> None:
    sessions = recorded_steps(tmp_path, ReplayingKamcmd(tmp_path).command).sessions(now=0.0)
    froms = recorded_field("dlg.profile_list.txt", "from_uri")
    tos = recorded_field("dlg.profile_list.txt", "to_uri")
    assert [dict(s.details) for s in sessions] == [
        {"from": from_uri, "to": to_uri} for from_uri, to_uri in zip(froms, tos, strict=True)
    ]


def test_force_accepts_a_call_that_ended_by_itself_meanwhile(tmp_path: Path) -> None:
    kamcmd = ReplayingKamcmd(tmp_path, {"dlg.end_dlg": "dlg.end_dlg-ended-meanwhile.txt"})
    recorded_steps(tmp_path, kamcmd.command).run("force")  # no StepFailed: the calls are gone
    # ...and every listed dialog was still asked to end: one that ended meanwhile stops none.
    ended = [call for call in kamcmd.calls() if call.startswith("dlg.end_dlg")]
    assert len(ended) == len(recorded_field("dlg.profile_list.txt", "h_entry"))


def test_an_unknown_profile_is_an_error_never_zero_calls(tmp_path: Path) -> None:
    kamcmd = ReplayingKamcmd(
        tmp_path,
        {
            "dlg.profile_get_size": "dlg.profile_get_size-unknown-profile.txt",
            "dlg.profile_list": "dlg.profile_list-unknown-profile.txt",
        },
    )
    steps = recorded_steps(tmp_path, kamcmd.command)
    with pytest.raises(UnreadableCount):
        steps.count()
    for step in ("sessions", "force"):
        with pytest.raises(StepFailed, match="fail_if"):
            steps.run(step)


@pytest.mark.parametrize(
    "kamcmd",
    [
        pytest.param("kamcmd-not-on-this-path", id="kamcmd not found"),
        pytest.param(
            f"{KAMCMD} -s unix:/nonexistent/kamailio_ctl",
            id="no ctl socket",
            marks=pytest.mark.skipif(not Path(KAMCMD).exists(), reason="kamcmd is not installed"),
        ),
    ],
)
def test_kamcmd_that_cannot_answer_fails_every_step(tmp_path: Path, kamcmd: str) -> None:
    steps = recorded_steps(tmp_path, kamcmd)
    with pytest.raises(UnreadableCount):
        steps.count()
    for step in ("precheck", "block", "sessions", "force", "unblock"):
        with pytest.raises(StepFailed):
            steps.run(step)


def test_upgrade_takes_the_version_when_given_and_rollback_reads_what_it_saved(
    tmp_path: Path,
) -> None:
    recorded_steps(tmp_path, "kamcmd")  # writes the inventory
    inventory = load_inventory(str(tmp_path / "inventory.yaml"))
    pinned = build_plan(
        inventory,
        ["cs-1"],
        "upgrade",
        PlanOptions(version="1:20.5.0-1"),
        "run-1",
        load_playbooks(inventory),
    )
    newest = build_plan(
        inventory, ["cs-1"], "upgrade", PlanOptions(), "run-1", load_playbooks(inventory)
    )
    upgrade, rollback = pinned.nodes[0].steps["upgrade"].run, pinned.nodes[0].steps["rollback"].run
    assert "--only-upgrade asterisk=1:20.5.0-1 " in upgrade
    assert "--only-upgrade asterisk " in newest.nodes[0].steps["upgrade"].run
    saved = str(tmp_path / "upgradectl-cs-1-run-1.previous-version")
    assert re.search(rf"dpkg-query .* > '?{re.escape(saved)}'? ", upgrade)
    assert re.search(
        rf"previous=\$\(cat '?{re.escape(saved)}'?\) && .* asterisk=\"\$previous\"", rollback
    )


# --- end to end: Kamailio, SIPp, the real CLI -------------------------------------------------


@pytest.fixture
def sip_lab(tmp_path: Path) -> Iterator[SipLab]:
    """Kamailio in front of SIPp call servers cs-1 and cs-2 on 127.0.0.1; stopped after the test."""
    lab = SipLab(tmp_path / "sip").start()
    yield lab
    lab.stop()
    processes: list[LabServer] = [lab.proxy, *lab.call_servers.values()]
    assert not any(process.pids() for process in processes), "a lab process outlived the test"


def drain(lab: SipLab, tmp_path: Path, node: str, *options: str) -> Ran:
    """``upgradectl -v drain NODE --yes`` against the lab, through the bundled kamailio playbook
    (``-v``: what the steps printed is in the events, for ``Ran.outcome()``)."""
    inventory = str(lab.write_inventory(tmp_path / "inventory.yaml"))
    state_dir = str(tmp_path / "state")
    return run_cli(
        "-i", inventory, "--state-dir", state_dir, "--json", "-v", "drain", node, "--yes", *options
    )


def event(ran: Ran, kind: str) -> dict[str, Any]:
    """The first event of ``kind``."""
    return next(e for e in ran.events if e["event"] == kind)


def live_calls(lab: SipLab, counts: Mapping[str, int]) -> bool:
    """Whether each call server named holds exactly that many calls at the proxy."""
    return all(lab.proxy.active(lab.call_servers[name].uri) == n for name, n in counts.items())


@needs_sip_lab
@pytest.mark.slow
def test_a_drain_sends_new_calls_elsewhere_and_lets_live_calls_finish(
    sip_lab: SipLab, tmp_path: Path
) -> None:
    cs1, cs2 = sip_lab.call_servers["cs-1"], sip_lab.call_servers["cs-2"]
    caller = sip_lab.call(calls=30, rate=5, hold=3.0)
    wait_for(lambda: sip_lab.proxy.active(cs1.uri) >= 2, 10, what="live calls on cs-1")

    ran = drain(sip_lab, tmp_path, "cs-1")
    totals = caller.wait(timeout=30)

    assert ran.code == 0, ran.outcome()
    summary = ran.summary["nodes"]["cs-1"]
    assert (summary["result"], summary["forced"]) == ("drained", [])
    polls = [e for e in ran.events if e["event"] == "poll"]
    assert polls[0]["active"] >= 2 and polls[-1]["active"] == 0
    # Every call placed after the block went to cs-2; cs-1's calls (placed before) ended normally.
    blocked_at = float(event(ran, "blocked")["time"])
    placed_after = {call for call, sent in caller.invites().items() if sent > blocked_at}
    assert placed_after, "the caller placed no call after the block"
    assert placed_after <= cs2.calls()
    assert not placed_after & cs1.calls()
    assert cs1.calls() and cs1.ended() == cs1.calls()
    assert caller.cut() == set()
    assert totals == CallTotals(successful=30, failed=0)
    assert sip_lab.proxy.flags()[cs1.uri].startswith("D"), "a drain leaves the call server blocked"


@needs_sip_lab
@pytest.mark.slow
def test_stragglers_past_the_deadline_are_cut_and_named(sip_lab: SipLab, tmp_path: Path) -> None:
    cs1 = sip_lab.call_servers["cs-1"]
    caller = sip_lab.call(calls=4, rate=10, hold=10.0)
    wait_for(lambda: live_calls(sip_lab, {"cs-1": 2, "cs-2": 2}), 10, what="2 calls on each server")

    ran = drain(sip_lab, tmp_path, "cs-1", *FORCE_AT_MOST_TWO_AFTER_1S)
    totals = caller.wait(timeout=30)

    summary = ran.summary["nodes"]["cs-1"]
    if sip_lab.proxy.dropped_byes():
        # Kamailio's own race (see Proxy.dropped_byes): a call server never got its BYE, and
        # the drain must not call it drained. Its witness says so; cs-1 is put back.
        assert ran.code == 1, ran.outcome()
        assert "on cs-1 (node_active) still counted" in summary["message"], ran.outcome()
        assert sip_lab.proxy.flags()[cs1.uri].startswith("A")
        assert cs1.live(), "Kamailio said it dropped a BYE, yet cs-1 holds no call"
        return
    assert ran.code == 0, ran.outcome()
    assert summary["result"] == "drained"
    forced = {session["id"] for session in summary["forced"]}
    assert len(forced) == 2
    assert forced == cs1.calls() == caller.cut()
    # Ended at the call server too (SIPp writes its trace when it gets to it: waited for).
    wait_for(lambda: cs1.ended() == cs1.calls(), 10, what="cs-1's trace to show the BYEs")
    assert cs1.live() == set()
    assert all(session["age"] >= 1 for session in summary["forced"])
    assert totals == CallTotals(successful=4, failed=0)  # a cut call ends with a BYE, not an error
    # The helpdesk report names who called whom, as the caller's INVITE did.
    report = run_cli(
        "-i", str(tmp_path / "inventory.yaml"), "--state-dir", str(tmp_path / "state"),
        "history", "--forced",
    )  # fmt: skip
    lines = report.stdout.splitlines()
    assert len(lines) == 2, report.stdout
    for call_id in forced:
        (line,) = [line for line in lines if f"({call_id})" in line]
        assert re.search(
            r"  from sip:caller@127\.0\.0\.1:\d+ to sip:service@127\.0\.0\.1:\d+ ", line
        )


@needs_sip_lab
@pytest.mark.slow
def test_more_stragglers_than_allowed_abort_and_put_the_server_back(
    sip_lab: SipLab, tmp_path: Path
) -> None:
    cs1 = sip_lab.call_servers["cs-1"]
    caller = sip_lab.call(calls=6, rate=10, hold=9.0)
    wait_for(lambda: live_calls(sip_lab, {"cs-1": 3, "cs-2": 3}), 10, what="3 calls on each server")

    ran = drain(sip_lab, tmp_path, "cs-1", *FORCE_AT_MOST_TWO_AFTER_1S)

    assert ran.code == 3, ran.outcome()
    summary = ran.summary["nodes"]["cs-1"]
    assert (summary["result"], summary["forced"]) == ("aborted", [])
    assert sip_lab.proxy.flags()[cs1.uri].startswith("A")
    assert caller.wait(timeout=30) == CallTotals(successful=6, failed=0)
    assert caller.cut() == set()
    # Back in service: of the next two calls, round robin gives cs-1 one.
    offered_before = cs1.calls()
    follow_up = sip_lab.call(calls=2, rate=10, hold=0.2)
    assert follow_up.wait(timeout=10) == CallTotals(successful=2, failed=0)
    assert len(cs1.calls() - offered_before) == 1


@pytest.fixture
def ringing_lab(tmp_path: Path) -> Iterator[SipLab]:
    """The SIP lab, with cs-1 ringing 30 s before it answers: its calls stay early dialogs."""
    lab = SipLab(tmp_path / "sip", ring={"cs-1": 30.0}).start()
    yield lab
    lab.stop()


@needs_sip_lab
@pytest.mark.slow
def test_a_ringing_straggler_is_cancelled_at_the_call_server_and_at_the_caller(
    ringing_lab: SipLab, tmp_path: Path
) -> None:
    cs1 = ringing_lab.call_servers["cs-1"]
    caller = ringing_lab.call(calls=2, rate=10, hold=20.0)
    wait_for(lambda: live_calls(ringing_lab, {"cs-1": 1}), 10, what="a call ringing on cs-1")
    assert "state: 2" in ringing_lab.proxy.rpc("dlg.profile_list", "calls", cs1.uri)

    ran = drain(ringing_lab, tmp_path, "cs-1", *FORCE_AT_MOST_TWO_AFTER_1S)

    assert ran.code == 0, ran.outcome()
    ringing = cs1.calls()
    assert len(ringing) == 1
    assert {session["id"] for session in ran.summary["forced"]} == ringing
    # The call server let it go, and the caller was told (each as its SIPp trace shows, once
    # written: the drain ends when the proxy forgets the call, before SIPp logs the CANCEL).
    wait_for(lambda: cs1.cancelled() == ringing, 10, what="cs-1's trace to show the CANCEL")
    wait_for(lambda: caller.answered(487) == ringing, 10, what="the caller's trace to show 487")
    assert cs1.live() == set()
    assert ringing_lab.proxy.active(cs1.uri) == 0


@needs_sip_lab
@pytest.mark.slow
def test_the_call_of_a_caller_that_died_is_ended_at_the_call_server(
    sip_lab: SipLab, tmp_path: Path
) -> None:
    cs1 = sip_lab.call_servers["cs-1"]
    caller = sip_lab.call(calls=2, rate=10, hold=20.0)
    wait_for(lambda: live_calls(sip_lab, {"cs-1": 1, "cs-2": 1}), 10, what="a call on each server")
    caller.die()  # its dialogs stay at the proxy, its calls at the call servers

    ran = drain(sip_lab, tmp_path, "cs-1", *FORCE_AT_MOST_TWO_AFTER_1S)

    assert ran.code == 0, ran.outcome()
    assert {session["id"] for session in ran.summary["forced"]} == cs1.calls()
    wait_for(lambda: cs1.ended() == cs1.calls(), 10, what="cs-1's trace to show the BYE")
    assert cs1.live() == set()
    assert sip_lab.proxy.active(cs1.uri) == 0
    assert sip_lab.proxy.active(sip_lab.call_servers["cs-2"].uri) == 1  # not cs-1's: left alone


@needs_sip_lab
@pytest.mark.slow
def test_a_dispatcher_reload_mid_drain_loses_the_block_which_is_put_back_and_its_calls_waited_for(
    sip_lab: SipLab, tmp_path: Path
) -> None:
    cs1 = sip_lab.call_servers["cs-1"]
    first = sip_lab.call(calls=2, rate=10, hold=20.0)
    wait_for(lambda: live_calls(sip_lab, {"cs-1": 1, "cs-2": 1}), 10, what="a call on each server")
    late: list[Any] = []

    def reload_once_blocked() -> None:  # a colleague reloads the dispatcher list mid-drain
        wait_for(lambda: sip_lab.proxy.flags()[cs1.uri].startswith("D"), 20, what="the block")
        sip_lab.proxy.rpc("dispatcher.reload")
        late.append((time.time(), sip_lab.call(calls=4, rate=10, hold=4.0)))

    colleague = threading.Thread(target=reload_once_blocked)
    colleague.start()
    ran = drain(sip_lab, tmp_path, "cs-1")
    colleague.join()

    assert ran.code == 0, ran.outcome()
    ((reloaded_at, second),) = late
    second.wait(timeout=30)
    let_in = {call for call, sent in second.invites().items() if sent > reloaded_at} & cs1.calls()
    assert let_in, "no call reached cs-1 while its block was lost"
    lost = event(ran, "block-lost")
    assert lost["before"] == "during the drain" and set(lost["arrived"]) <= let_in
    assert ran.kinds().count("blocked") == 2  # blocked, then blocked again
    assert sip_lab.proxy.flags()[cs1.uri].startswith("D"), "the block is back"
    # The calls it let in were counted and waited for, never cut.
    assert ran.summary["nodes"]["cs-1"]["result"] == "drained" and ran.summary["forced"] == []
    assert first.cut() == set() and second.cut() == set() and cs1.live() == set()
    assert first.wait(timeout=30) == CallTotals(successful=2, failed=0)


@needs_sip_lab
@pytest.mark.slow
def test_a_force_that_ends_nothing_is_not_reported_as_cut_and_the_server_is_put_back(
    sip_lab: SipLab, tmp_path: Path
) -> None:
    cs1 = sip_lab.call_servers["cs-1"]
    # Held far longer than the drain can take on a busy machine (the lab hangs it up after): the
    # call must still be up when the force that does nothing is tried.
    caller = sip_lab.call(calls=2, rate=10, hold=120.0)
    wait_for(lambda: live_calls(sip_lab, {"cs-1": 1, "cs-2": 1}), 10, what="a call on each server")

    # The bundled playbook with a force that does nothing, as a broken kamcmd path would.
    playbook = yaml.safe_load(Path(bundled_playbooks()["kamailio"]).read_text())
    for step in playbook["steps"].values():  # YAML 1.1 reads the key `on` as true
        if isinstance(step, dict) and True in step:
            step["on"] = step.pop(True)
    playbook["steps"]["force"]["run"] = "true"
    playbook["drain"]["force_grace"] = "3s"
    broken = tmp_path / "kamailio-force-does-nothing.yaml"
    broken.write_text(yaml.safe_dump(playbook))

    ran = drain(sip_lab, tmp_path, "cs-1", *FORCE_AT_MOST_TWO_AFTER_1S, "--playbook", str(broken))

    assert ran.code == 1, ran.outcome()
    summary = ran.summary["nodes"]["cs-1"]
    assert summary["result"] == "failed" and summary["forced"] == []
    assert "force did not end them" in summary["message"]
    assert "forced" not in ran.kinds()
    assert sip_lab.proxy.flags()[cs1.uri].startswith("A"), "put back in service"
    assert caller.cut() == set()  # the call was never cut: it ends when its caller hangs up
    report = run_cli(
        "-i", str(tmp_path / "inventory.yaml"), "--state-dir", str(tmp_path / "state"),
        "history", "--forced",
    )  # fmt: skip
    assert report.stdout.strip() == "no sessions were cut"


@needs_sip_lab
@pytest.mark.slow
def test_status_shows_the_proxys_count_and_the_call_servers_own(
    sip_lab: SipLab, tmp_path: Path
) -> None:
    caller = sip_lab.call(calls=2, rate=10, hold=20.0)
    wait_for(lambda: live_calls(sip_lab, {"cs-1": 1, "cs-2": 1}), 10, what="a call on each server")
    caller.die()  # the proxy and the call server still hold the call
    inventory = str(sip_lab.write_inventory(tmp_path / "inventory.yaml"))

    state_dir = str(tmp_path / "state")
    # No Asterisk here: the call server's version is made up.
    version = ("--var", "version_command=echo 20.6.0")
    shown = run_cli("-i", inventory, "--state-dir", state_dir, "status", "cs-1", *version)

    assert shown.code == 0, shown.stderr
    assert "cs-1: in service, 1 active (1 on the node itself), version 20.6.0" in shown.stdout
