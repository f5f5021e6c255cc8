"""The bundled erlang playbook against a real OTP node: `upgradectl patch` loads new code under
live calls, converts the state of the gen_servers running it the OTP way (suspend, load,
code_change, resume), puts everything back when a code_change crashes or a call dies, refuses a
soft purge that would cut a call, and rolls back a version that fails verify.

Every Erlang process here is ours (see otplab).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clihelp import Ran
from conftest import wait_for
from otplab import Reachable, build, local_cli, with_epmd

from upgradectl.lab import HaProxy, LabServer, free_ports, start_servers, stop_servers
from upgradectl.lab.process import ServerProcess

MODULE = "call_handler"
ANSWER_DEADLINE = 5.0
# Calls with media wake this often, so they leave old code within a fraction of a second.
MEDIA_TICK_MS = 50
QUIET = "infinity"


class ErlangNode(Reachable, LabServer):
    """An OTP node running the call handler from its own code directory."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        super().__init__("callserver", env)
        self.code_dir = directory / "code"
        argv = ["erl", "-noshell", "-sname", self.name, "-setcookie", self.cookie]
        argv += ["-pa", str(self.code_dir)]
        # Stopping kills erl_child_setup first, and the node would write a crash dump on its
        # way out: no dump.
        node_env = {**env, "ERL_CRASH_DUMP_SECONDS": "0"}
        # `env` sets the environment and then becomes erl: the PID we stop is the node's.
        self.process = ServerProcess(
            "erlang node",
            ["env", *(f"{k}={v}" for k, v in node_env.items()), *argv],
            directory / "node.log",
        )

    def _write_config(self) -> None:
        self.code_dir.mkdir(parents=True, exist_ok=True)
        build_handler("1", self.code_dir)
        build("call_sup", "1", self.code_dir)
        for module in ("call_leg", "call_media"):
            build(module, "1", self.code_dir)

    def _is_ready(self) -> bool:
        return self.erl_call("erlang:node().").returncode == 0

    def start_calls(self, ids: range, tick: int | str) -> dict[str, str]:
        """Start calls (registered as call_ID); their names and pids."""
        names = [f"call_{i}" for i in ids]
        for i in ids:
            self.eval(f"{MODULE}:start_call({i}, {tick}).")
        return {name: self.pid(name) for name in names}

    def pid(self, call: str) -> str:
        """The pid of a live call ("undefined" once it is gone)."""
        return self.eval(
            f"case whereis({call}) of undefined -> undefined; Pid -> pid_to_list(Pid) end."
        )

    def ask(self, call: str) -> str:
        """What a call answers now: the version of the code it runs after this message."""
        wait_ms = int(ANSWER_DEADLINE * 1000)
        return self.eval(
            f"{call} ! {{ask, self()}}, receive {{_, Vsn}} -> Vsn after {wait_ms} -> timeout end."
        )

    def loaded_version(self) -> str:
        """The vsn of the call handler the node runs."""
        return self.eval(f"proplists:get_value(vsn, {MODULE}:module_info(attributes)).")

    def beam_version(self, beam: Path) -> str:
        """The vsn a .beam file on disk was built with."""
        return self.eval(f'{{ok, {{_, Vsn}}}} = beam_lib:version("{beam}"), Vsn.')

    def old_code_users(self) -> int:
        """How many processes still run the call handler's old code."""
        return int(
            self.eval(f"length([P || P <- processes(), erlang:check_process_code(P, {MODULE})]).")
        )


def build_handler(vsn: str, directory: Path) -> Path:
    """The call handler compiled as version ``vsn`` into ``directory``."""
    return build(MODULE, vsn, directory)


@dataclass
class Otp:
    """A running node, the patches ready for it on disk, and the CLI aimed at it."""

    node: ErlangNode
    tmp: Path
    env: dict[str, str]

    @property
    def patch_dir(self) -> Path:
        return self.tmp / "patches"

    @property
    def kept_dir(self) -> Path:
        return self.tmp / "kept"

    def provide(self, version: str, *, built_as: str | None = None) -> None:
        """Put ``version`` where the playbook looks for it (built as another vsn if asked)."""
        beam = build_handler(built_as or version, self.tmp / "build" / version)
        self.patch_dir.mkdir(exist_ok=True)
        (self.patch_dir / f"{MODULE}-{version}.beam").write_bytes(beam.read_bytes())

    def cli(self, *args: str, **variables: str) -> Ran:
        """`upgradectl --json ARGS` on an inventory of one local node with the erlang playbook."""
        node_vars = {
            "erlang_node": self.node.name,
            "module": MODULE,
            "cookie": self.node.cookie,
            "patch_dir": str(self.patch_dir),
            "kept_dir": str(self.kept_dir),
            **variables,
        }
        return local_cli(self.tmp, "erl-1", "erlang", node_vars, *args, env=self.env)

    def patch(self, version: str) -> Ran:
        """`upgradectl patch erl-1 --version VERSION --yes`."""
        return self.cli("patch", "erl-1", "--version", version, "--yes")

    def provide_patch(self, version: str, **modules: tuple[str, ...]) -> Path:
        """A patch directory: each module built as ``version`` with its ``-D`` defines."""
        directory = self.patch_dir / version
        for module, defines in modules.items():
            build(module, version, directory, *defines)
        return directory

    def patch_legs(self, patch: Path, version: str) -> Ran:
        """`upgradectl -v patch` of the call legs with the patch in ``patch`` (-v: step output too)."""
        return self.cli(
            "-v", "patch", "erl-1", "--version", version, "--yes",
            module="call_leg", patch=str(patch),
        )  # fmt: skip


@pytest.fixture
def otp(tmp_path: Path) -> Iterator[Otp]:
    """epmd and one node running call handler version 1; both stopped after the test."""
    with with_epmd(tmp_path, lambda env: ErlangNode(tmp_path, env)) as (node, env):
        yield Otp(node, tmp_path, env)


@pytest.mark.slow
def test_a_hot_patch_loads_the_new_version_while_the_calls_keep_running(otp: Otp) -> None:
    calls = otp.node.start_calls(range(1, 3), MEDIA_TICK_MS) | otp.node.start_calls(
        range(3, 4), QUIET
    )
    otp.provide("2")

    ran = otp.patch("2")

    assert ran.code == 0, ran.stdout + ran.stderr
    assert ran.summary["nodes"]["erl-1"]["result"] == "patched"
    assert otp.node.loaded_version() == "2"
    assert {call: otp.node.pid(call) for call in calls} == calls  # not one call was restarted
    assert {call: otp.node.ask(call) for call in calls} == dict.fromkeys(calls, "2")
    kept = otp.kept_dir / ran.summary["run_id"] / f"{MODULE}.beam"
    assert otp.node.beam_version(kept) == "1"  # what a rollback would load again
    status = otp.cli("status", "erl-1")
    assert status.code == 0, status.stdout
    assert status.events[0]["nodes"][0]["version"] == "2"


@pytest.mark.slow
def test_a_patch_is_refused_while_a_call_runs_old_code_and_works_after_it_moves_on(
    otp: Otp,
) -> None:
    calls = otp.node.start_calls(range(1, 2), QUIET)
    otp.provide("2")
    otp.provide("3")
    assert otp.patch("2").code == 0
    # The quiet call has had no message since version 2 came: it still runs version 1, now the
    # old code, and loading version 3 would need that code purged from under it.

    refused = otp.patch("3")

    assert refused.code == 1, refused.stdout + refused.stderr
    message = refused.summary["nodes"]["erl-1"]["message"]
    assert "soft_purge_failed: old code of call_handler still running in 1 process" in message
    assert f"{calls['call_1']} call_1 in call_handler:loop/2" in message  # who holds it
    assert otp.node.loaded_version() == "2"
    assert {call: otp.node.pid(call) for call in calls} == calls
    assert otp.node.ask("call_1") == "2"  # the call moves on to the current code...
    assert otp.node.old_code_users() == 0

    retried = otp.patch("3")  # ...and the patch goes through when tried again

    assert retried.code == 0, retried.stdout + retried.stderr
    assert otp.node.loaded_version() == "3"
    assert otp.node.ask("call_1") == "3"


@pytest.mark.slow
def test_a_patch_whose_verify_fails_is_rolled_back_with_the_calls_still_up(otp: Otp) -> None:
    calls = otp.node.start_calls(range(1, 4), MEDIA_TICK_MS)
    otp.provide("2")
    otp.provide("3", built_as="2.9")  # a wrong build shipped as version 3
    assert otp.patch("2").code == 0
    wait_for(
        lambda: otp.node.old_code_users() == 0, ANSWER_DEADLINE, what="the calls to leave version 1"
    )

    ran = otp.patch("3")

    assert ran.code == 1, ran.stdout + ran.stderr
    node = ran.summary["nodes"]["erl-1"]
    assert (
        node["result"] == "failed"
        and "verify_failed: call_handler has vsn 2.9 loaded, expected 3" in node["message"]
    )
    assert "rolled-back" in ran.kinds("erl-1")
    assert otp.node.loaded_version() == "2"
    assert {call: otp.node.pid(call) for call in calls} == calls
    assert {call: otp.node.ask(call) for call in calls} == dict.fromkeys(calls, "2")


# --- the OTP way: gen_servers whose state changes shape ----------------------------------------

# A leg handles a media frame this often, as it would RTP: a leg given new code without its
# state converted crashes within milliseconds.
FRAME_MS = 20


def start_legs(node: ErlangNode, count: int) -> list[str]:
    """``count`` call legs under call_sup, and one started alone (no supervisor): their pids."""
    node.eval("call_sup:start().")
    alone = node.eval(
        f"{{ok, P}} = gen_server:start(call_leg, {{{count + 1}, {FRAME_MS}}}, []), pid_to_list(P)."
    )
    return [*node.start_legs(count, FRAME_MS), alone]


def vsn_of(node: ErlangNode, module: str) -> str:
    """The vsn of ``module`` as loaded in the node."""
    return node.eval(f"proplists:get_value(vsn, {module}:module_info(attributes)).")


@pytest.mark.slow
def test_a_patch_of_two_modules_converts_every_live_call_and_keeps_their_pids(otp: Otp) -> None:
    legs = start_legs(otp.node, 4)
    before = {pid: otp.node.leg_state(pid) for pid in legs}
    assert {state[:2] for state in before.values()} == {("1", "tuple")}
    # call_leg 2 keeps a map and counts through call_media:count/1, new in call_media 2: the
    # two only work loaded together.
    patch = otp.provide_patch("2", call_leg=("SHAPE",), call_media=("SHAPE",))

    ran = otp.patch_legs(patch, "2")

    assert ran.code == 0, ran.outcome()
    assert (
        "patched: call_leg 1 -> 2, call_media 1 -> 2; 5 processes converted by code_change, "
        "all 5 alive with the same pids" in ran.step_output("patch")
    )
    assert "all 5 processes from the patch alive with the same pids" in ran.step_output("verify")
    after = {pid: otp.node.leg_state(pid) for pid in legs}  # the same pids answer
    for pid, (vsn, shape, frames) in after.items():
        assert (vsn, shape) == ("2", "map") and frames >= before[pid][2]  # state converted, kept
    wait_for(
        lambda: all(otp.node.leg_state(pid)[2] > after[pid][2] for pid in legs),
        ANSWER_DEADLINE,
        what="the legs to count frames with the new code",
    )
    assert (otp.node.code_dir / "call_leg.beam").read_bytes() == (
        patch / "call_leg.beam"
    ).read_bytes()
    status = otp.cli("status", "erl-1", module="call_leg")
    assert status.events[0]["nodes"][0]["version"] == "2"


@pytest.mark.slow
def test_a_code_change_that_crashes_puts_the_old_code_back_and_every_call_lives_on(
    otp: Otp,
) -> None:
    legs = start_legs(otp.node, 4)
    patch = otp.provide_patch("2", call_leg=("SHAPE", "CRASH"), call_media=("SHAPE",))

    ran = otp.patch_legs(patch, "2")

    assert ran.code == 1, ran.outcome()
    message = ran.summary["nodes"]["erl-1"]["message"]
    assert 'code_change_failed: call_leg:code_change("1", ...) failed in <' in message
    assert "cannot_convert in call_leg:code_change/3" in message  # the Erlang error
    assert "every module is back on its old code, 5 of 5 processes live on" in message
    assert ran.summary["nodes"]["erl-1"]["in_service"]
    assert (vsn_of(otp.node, "call_leg"), vsn_of(otp.node, "call_media")) == ("1", "1")
    states = {pid: otp.node.leg_state(pid) for pid in legs}  # every pid still answers
    assert {state[:2] for state in states.values()} == {("1", "tuple")}
    wait_for(
        lambda: all(otp.node.leg_state(pid)[2] > states[pid][2] for pid in legs),
        ANSWER_DEADLINE,
        what="the legs to go on counting frames with the old code",
    )
    assert otp.node.beam_version(otp.node.code_dir / "call_leg.beam") == "1"


@pytest.mark.slow
def test_a_patch_after_which_calls_die_fails_though_the_version_is_right(otp: Otp) -> None:
    legs = start_legs(otp.node, 2)
    # call_leg 2 alone: its frames need call_media:count/1, which the node's call_media lacks.
    patch = otp.provide_patch("2", call_leg=("SHAPE",))

    ran = otp.patch_legs(patch, "2")

    assert ran.code == 1, ran.outcome()
    message = ran.summary["nodes"]["erl-1"]["message"]
    # Seen dead by the patch step itself (with what killed them), or by verify when their next
    # frame came only after the patch step looked: either way the patch fails and is undone. A
    # leg whose frame had not come yet when the patch step looked is taken back to version 1
    # alive, unless its frame comes first and kills it on the way: counted with the dead.
    assert re.search(
        r"died_failed: [123] of 3 processes died after the patch \(<[\d.]+> undef in "
        r"call_media:count/1\); the [012] left are back on the old code|"
        r"verify_failed: [123] of 3 processes of the patch died",
        message,
    ), message
    assert "failed" in ran.kinds("erl-1")
    assert vsn_of(otp.node, "call_leg") == "1"
    alive = [
        pid for pid in legs if otp.node.eval(f'is_process_alive(list_to_pid("{pid}")).') == "true"
    ]
    assert {otp.node.leg_state(pid)[:2] for pid in alive} <= {("1", "tuple")}
    assert otp.node.beam_version(otp.node.code_dir / "call_leg.beam") == "1"


@pytest.mark.slow
def test_a_process_that_the_new_code_kills_on_the_way_back_is_counted_with_the_dead(
    otp: Otp,
) -> None:
    # Two processes the patch of call_leg converts: one dies once resumed (the patch goes back),
    # the other dies when the way back suspends it, as a call does when its next message comes
    # first and runs the new code (a CI run saw the way back fail on it: suspend_failed).
    build("sys_witness", "1", otp.node.code_dir)
    first, second = (
        otp.node.eval(f"pid_to_list(sys_witness:start({dies_at})).")
        for dies_at in ("after_resume", "at_second_suspend")
    )
    patch = otp.provide_patch("2", call_leg=("SHAPE",))

    ran = otp.patch_legs(patch, "2")

    assert ran.code == 1, ran.outcome()
    message = ran.summary["nodes"]["erl-1"]["message"]
    assert (
        f"died_failed: 2 of 2 processes died after the patch ({first} killed_by_the_new_code); "
        "the 0 left are back on the old code" in message
    ), message
    assert vsn_of(otp.node, "call_leg") == "1"
    assert otp.node.eval(f'is_process_alive(list_to_pid("{second}")).') == "false"


# --- when a patch cannot be done hot: drain at the balancer and restart ------------------------


@pytest.mark.slow
def test_a_patch_refused_hot_is_done_by_draining_at_haproxy_and_restarting_the_node(
    otp: Otp,
) -> None:
    calls = otp.node.start_calls(range(1, 2), QUIET)
    otp.provide("2")
    otp.provide("3")
    assert otp.patch("2").code == 0
    refused = otp.patch("3")  # the quiet call still runs version 1: not hot
    assert refused.code == 1
    assert f"{calls['call_1']} call_1" in refused.summary["nodes"]["erl-1"]["message"]
    haproxy = HaProxy({"erl-1": free_ports(1)[0]}, otp.tmp / "lb", otp.tmp / "lb" / "admin.sock")
    start_servers([haproxy])
    try:
        # What docs/playbooks/erlang.md shows: the balancer playbook, with an upgrade_command
        # that installs the .beam and restarts the node.
        erl_call = f"erl_call -sname {otp.node.name} -c {otp.node.cookie}"
        beam = otp.patch_dir / f"{MODULE}-{{{{ version }}}}.beam"
        node_vars = {
            "lb_host": "lb",
            "lb_socket": str(haproxy.admin_socket),
            "upgrade_command": f"cp {beam} {otp.node.code_dir}/{MODULE}.beam && "
            f"echo 'init:restart().' | {erl_call} -e",
            "verify_command": "echo 'proplists:get_value(vsn, call_handler:module_info("
            f"attributes)).' | {erl_call} -e | grep -F '\"{{{{ version }}}}\"'",
            "version_command": "echo 'proplists:get_value(vsn, call_handler:module_info("
            f"attributes)).' | {erl_call} -e",
        }

        ran = local_cli(
            otp.tmp, "erl-1", "erlang", node_vars,
            "upgrade", "erl-1", "--playbook", "haproxy", "--version", "3", "--yes",
            env=otp.env, beside={"lb": {"transport": "local"}},
        )  # fmt: skip

        assert ran.code == 0, ran.stdout[-3000:] + ran.stderr
        kinds = ran.kinds("erl-1")
        assert [k for k in kinds if k in ("blocked", "drained", "upgraded", "unblocked")] == [
            "blocked", "drained", "upgraded", "unblocked"
        ]  # fmt: skip
        wait_for(lambda: otp.node.loaded_version() == "3", ANSWER_DEADLINE, what="version 3")
        assert haproxy.server_states()["erl-1"].status != "DRAIN"
    finally:
        stop_servers([haproxy])


def test_the_helper_shipped_to_the_nodes_compiles_without_a_warning(tmp_path: Path) -> None:
    helper = (
        Path(__file__).parent.parent / "upgradectl" / "playbooks" / "erlang" / "upgradectl_otp.erl"
    )
    done = subprocess.run(
        ["erlc", "+warnings_as_errors", "-o", str(tmp_path), str(helper)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
