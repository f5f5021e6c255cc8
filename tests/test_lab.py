"""The lab itself, against the real parts: OpenSSH sshd, HAProxy, socat and the call server."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from clihelp import LabCli, run_cli
from conftest import LabFactory, wait_for

from upgradectl.lab import (
    CallGenerator,
    Fate,
    KeyPair,
    Lab,
    SshHome,
    SshServer,
    place_calls,
)
from upgradectl.lab.account import LAB_USER
from upgradectl.lab.ports import free_range
from upgradectl.lab.process import children

pytestmark = pytest.mark.lab


def ssh_argv(
    server: SshServer, command: str, known_hosts: Path, identity: Path | None = None
) -> list[str]:
    """The OpenSSH client, strict about host keys, offering exactly one key."""
    return [
        "ssh", "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=5",
        "-i", str(identity or server.identity_file),
        "-p", str(server.port),
        f"{server.user}@{server.host}",
        command,
    ]  # fmt: skip


def run_ssh(
    lab: Lab, server: SshServer, command: str, identity: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ssh_argv(server, command, lab.known_hosts_path, identity),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def active(lab: Lab, name: str) -> int:
    """The number of live calls a node reports."""
    return int(lab.node(name).control("count").split()[0])


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


# --- sshd -----------------------------------------------------------------------------------


def test_a_node_logs_in_the_lab_user_with_the_lab_key_and_socat_reaches_its_call_server(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(1)
    node = lab.nodes[0]

    result = run_ssh(lab, node.ssh, f"id -un; echo count | socat - UNIX-CONNECT:{node.ctl_socket}")

    assert result.returncode == 0, result.stderr
    expected_user = LAB_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert result.stdout.splitlines() == [expected_user, "0 active"]


def test_the_node_dir_is_writable_by_the_lab_user(lab_factory: LabFactory) -> None:
    lab = lab_factory(1)
    node = lab.nodes[0]

    result = run_ssh(lab, node.ssh, f"echo held > {node.node_dir}/lock && cat {node.node_dir}/lock")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "held\n"
    assert (node.node_dir / "lock").stat().st_uid == pwd.getpwnam(lab.user).pw_uid


def test_a_node_refuses_a_key_it_does_not_know(lab_factory: LabFactory, tmp_path: Path) -> None:
    lab = lab_factory(1)
    stranger = KeyPair.generate(tmp_path / "stranger", "not the lab's")

    result = run_ssh(lab, lab.nodes[0].ssh, "true", identity=stranger.private_key)

    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_a_killed_sshd_comes_back_on_the_same_port_with_the_same_host_key(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(1)
    server = lab.nodes[0].ssh
    with subprocess.Popen(
        ssh_argv(server, "echo up; sleep 60", lab.known_hosts_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as session:
        assert session.stdout is not None
        assert session.stdout.readline() == "up\n"

        server.kill()

        # The session dies with its sshd: ssh exits 255 when the connection drops first, or 137
        # (128 + SIGKILL) when the remote command's kill is reported before the drop.
        assert session.wait(timeout=10) in (255, 128 + signal.SIGKILL), (
            "a live session must die with its sshd"
        )
    assert run_ssh(lab, server, "true").returncode == 255
    server.restart()
    back = run_ssh(lab, server, "echo back")  # strict host key checking: same key
    assert (back.returncode, back.stdout) == (0, "back\n"), back.stderr


# --- call server ----------------------------------------------------------------------------


def test_a_blocked_node_answers_busy_until_it_is_unblocked(lab_factory: LabFactory) -> None:
    lab = lab_factory(1)
    node = lab.nodes[0]

    assert node.control("block") == "blocked\n"
    assert node.control("state") == "blocked\n"
    [refused] = place_calls("127.0.0.1", node.call_port, [1.0])
    assert node.control("unblock") == "ready\n"
    [taken] = place_calls("127.0.0.1", node.call_port, [0.1])

    assert refused.wait(5).fate is Fate.REFUSED
    assert taken.wait(5).fate is Fate.COMPLETED
    assert node.control("state") == "ready\n"


def test_list_shows_each_call_and_hangup_cuts_one_by_its_id(lab_factory: LabFactory) -> None:
    lab = lab_factory(1)
    node = lab.nodes[0]
    kept, cut = place_calls("127.0.0.1", node.call_port, [10, 10], caller_prefix="alice")

    listed = [line.split() for line in node.control("list").splitlines()]

    assert [(call_id, caller) for call_id, _, caller in listed] == [
        (kept.call_id, "alice-1"),
        (cut.call_id, "alice-2"),
    ]
    assert all(int(age) >= 0 for _, age, _ in listed)
    assert node.control(f"hangup {cut.call_id}") == "hung up 1\n"
    assert node.control("hangup no-such-call") == "hung up 0\n"
    assert cut.wait(5).fate is Fate.DROPPED
    assert kept.live
    kept.hang_up()
    assert kept.wait(5).fate is Fate.COMPLETED


def test_upgrade_cuts_every_live_call_and_the_new_version_is_reported(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(1)
    node = lab.nodes[0]
    calls = place_calls("127.0.0.1", node.call_port, [10, 10])
    assert node.control("version") == "version 1.0\n"

    assert node.control("upgrade 2.0") == "upgraded to 2.0\n"

    assert [call.wait(5).fate for call in calls] == [Fate.DROPPED, Fate.DROPPED]
    assert node.control("version") == "version 2.0\n"
    assert node.control("count") == "0 active\n"


def test_the_version_survives_a_restart_of_the_call_server(lab_factory: LabFactory) -> None:
    lab = lab_factory(1)
    node = lab.nodes[0]
    assert lab.callservice is not None
    node.control("upgrade 2.1")

    lab.callservice.stop()
    lab.callservice.start()

    assert node.control("version") == "version 2.1\n"


def test_an_unknown_command_is_an_error_text_and_socat_still_exits_zero(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(1)
    node = lab.nodes[0]

    result = run_ssh(lab, node.ssh, f"echo reboot | socat - UNIX-CONNECT:{node.ctl_socket}")

    assert (result.returncode, result.stdout) == (0, "error: unknown command\n"), result.stderr


def test_hangup_all_shows_up_as_dropped_calls_in_the_generator(lab_factory: LabFactory) -> None:
    lab = lab_factory(1)
    node = lab.nodes[0]
    generator = CallGenerator(
        "127.0.0.1", node.call_port, rate_per_second=20, duration=(10, 11), caller_prefix="gen"
    ).start()
    wait_for(lambda: active(lab, "node-1") >= 3, 5, what="three live calls")

    answer = node.control("hangup all")
    result = generator.stop(timeout=0)  # the calls placed since are hung up by their callers

    hung_up = int(answer.split()[-1])
    assert answer == f"hung up {hung_up}\n" and hung_up >= 3
    assert result.counts[Fate.DROPPED] == hung_up
    assert result.counts[Fate.REFUSED] == 0
    assert result.counts[Fate.COMPLETED] == len(result.calls) - hung_up
    assert all(call.node == "node-1" for call in result.with_fate(Fate.DROPPED))


# --- HAProxy --------------------------------------------------------------------------------


def test_calls_through_haproxy_reach_both_nodes(lab_factory: LabFactory) -> None:
    lab = lab_factory(2, haproxy=True)
    assert lab.haproxy is not None

    calls = place_calls(lab.haproxy.host, lab.haproxy.port, [10] * 4)

    assert sorted(str(call.record.node) for call in calls) == ["node-1"] * 2 + ["node-2"] * 2
    assert (active(lab, "node-1"), active(lab, "node-2")) == (2, 2)
    states = lab.haproxy.server_states()
    assert {name: state.scur for name, state in states.items()} == {"node-1": 2, "node-2": 2}
    for call in calls:
        call.hang_up()
    assert {call.wait(5).fate for call in calls} == {Fate.COMPLETED}


def test_a_drained_server_gets_no_new_calls_while_its_live_call_goes_on(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(2, haproxy=True)
    assert lab.haproxy is not None and lab.balancer is not None
    first = place_calls(lab.haproxy.host, lab.haproxy.port, [3, 3])
    [on_node_1] = [call for call in first if call.record.node == "node-1"]

    # As an operator's playbook would: the lab user, on the balancer host, through socat.
    drain = run_ssh(
        lab,
        lab.balancer,
        "echo 'set server calls/node-1 state drain'"
        f" | socat stdio UNIX-CONNECT:{lab.haproxy.admin_socket}",
    )
    assert drain.returncode == 0, drain.stderr
    later = place_calls(lab.haproxy.host, lab.haproxy.port, [10] * 3, caller_prefix="later")

    assert lab.haproxy.server_states()["node-1"] == ("DRAIN", 1)
    assert [call.record.node for call in later] == ["node-2"] * 3
    assert on_node_1.live
    assert on_node_1.wait(10).fate is Fate.COMPLETED
    for call in later:
        call.hang_up()


def test_shutting_down_a_servers_sessions_drops_its_calls_only(lab_factory: LabFactory) -> None:
    lab = lab_factory(2, haproxy=True)
    assert lab.haproxy is not None
    calls = place_calls(lab.haproxy.host, lab.haproxy.port, [10, 10])
    [cut] = [call for call in calls if call.record.node == "node-1"]
    [kept] = [call for call in calls if call.record.node == "node-2"]

    lab.haproxy.admin("shutdown sessions server calls/node-1")

    assert cut.wait(5).fate is Fate.DROPPED
    assert kept.live
    kept.hang_up()
    assert kept.wait(5).fate is Fate.COMPLETED


# --- the lab as a whole ---------------------------------------------------------------------


def test_the_inventory_describes_nodes_pairs_group_and_balancer(lab_factory: LabFactory) -> None:
    lab = lab_factory(3, haproxy=True)
    assert lab.haproxy is not None and lab.balancer is not None

    inventory = yaml.safe_load(lab.inventory_path.read_text())

    defaults_vars = inventory["defaults"].pop("vars")
    assert inventory["defaults"] == {"user": lab.user, "identity_file": str(lab.identity_file)}
    balancer = {"lb_host": "lb", "lb_socket": str(lab.haproxy.admin_socket), "backend": "calls"}
    assert balancer.items() <= defaults_vars.items()
    # What the bundled haproxy playbook needs to upgrade a node: its call server's commands.
    for command in ("upgrade_command", "verify_command", "version_command"):
        assert "UNIX-CONNECT:{{ ctl_socket | quote }}" in defaults_vars[command]
    assert inventory["groups"] == {"voice": {"max_unavailable": 1}}
    nodes = inventory["nodes"]
    assert nodes["lb"] == {"host": "127.0.0.1", "port": lab.balancer.port}
    assert [nodes[name].get("pair") for name in ("node-1", "node-2", "node-3")] == [
        "node-2",
        "node-1",
        None,
    ]
    for node in lab.nodes:
        entry = nodes[node.name]
        assert (entry["host"], entry["port"], entry["groups"], entry["playbook"]) == (
            "127.0.0.1",
            node.ssh.port,
            ["voice"],
            "haproxy",  # behind HAProxy a node is blocked there, as in production
        )
        assert entry["vars"] == {
            "ctl_socket": str(node.ctl_socket),
            "node_dir": str(node.node_dir),
            "lock_dir": str(node.node_dir),
            "call_port": node.call_port,
        }
    for server in [node.ssh for node in lab.nodes] + [lab.balancer]:
        assert run_ssh(lab, server, "true").returncode == 0, f"known_hosts lacks {server.name}"


def test_write_home_gives_a_home_whose_known_hosts_trusts_the_lab(
    lab_factory: LabFactory, ssh_home: Callable[[Lab], SshHome]
) -> None:
    lab = lab_factory(1)
    home = ssh_home(lab)
    server = lab.nodes[0].ssh

    login = subprocess.run(
        ssh_argv(server, "echo in", home.known_hosts),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert sorted(path.relative_to(home.home) for path in home.home.rglob("*")) == [
        Path(".ssh"),
        Path(".ssh/known_hosts"),
    ]
    assert home.known_hosts == home.home / ".ssh" / "known_hosts"
    assert (home.env["HOME"], "SSH_AUTH_SOCK" in home.env) == (str(home.home), False)
    assert (login.returncode, login.stdout) == (0, "in\n"), login.stderr


def test_stopping_the_lab_leaves_no_process_behind(lab_factory: LabFactory) -> None:
    lab = lab_factory(2, haproxy=True)
    assert lab.haproxy is not None
    with subprocess.Popen(
        ssh_argv(lab.nodes[0].ssh, "echo up; sleep 60 & sleep 60", lab.known_hosts_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as session:
        assert session.stdout is not None
        assert session.stdout.readline() == "up\n"
        [call] = place_calls(lab.haproxy.host, lab.haproxy.port, [30])
        started = lab.pids()
        servers = {server.process.pid for server in lab.servers()}
        assert len(servers) == 5  # 2 node sshd, the balancer's sshd, the call server, HAProxy
        assert len(started - servers) >= 4, "the SSH session's processes should be counted too"

        lab.stop()

    assert [pid for pid in started if alive(pid)] == []
    # The session ended with the lab: the connection dropped (255), or, when the stop's SIGKILL
    # reached the session's shell before its sshd, sshd said so first (137, 128 + SIGKILL).
    assert session.wait(timeout=10) in (255, 128 + signal.SIGKILL)
    assert call.wait(5).fate is Fate.DROPPED


@pytest.fixture
def lab_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`python -m upgradectl.lab up` with one node in tmp_path, stopped after the test."""
    directory = tmp_path / "lab"
    with subprocess.Popen(
        [sys.executable, "-m", "upgradectl.lab", "up", "--nodes", "1", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as up:
        yield up, directory
        if up.poll() is None:
            up.terminate()
            up.wait(timeout=30)


def test_lab_up_runs_in_the_foreground_until_sigterm(
    lab_up: tuple[subprocess.Popen[str], Path],
) -> None:
    up, directory = lab_up
    assert up.stdout is not None
    first_line = up.stdout.readline()
    assert first_line == f"inventory: {directory / 'inventory.yaml'}\n"
    port = yaml.safe_load((directory / "inventory.yaml").read_text())["nodes"]["node-1"]["port"]
    server_pids = children(up.pid)
    assert len(server_pids) == 4  # the node's sshd, the balancer's sshd, call server, HAProxy

    up.send_signal(signal.SIGTERM)

    assert up.wait(timeout=30) == 0
    assert "lab stopped" in up.stdout.read()
    assert [pid for pid in server_pids if alive(pid)] == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


# --- the lab as a rehearsal: its own inventory works as it is -------------------------------


def lab_cli(lab: Lab, ssh_home: Callable[[Lab], SshHome], tmp_path: Path) -> LabCli:
    return LabCli(lab, ssh_home(lab), tmp_path / "state")


@pytest.mark.parametrize("haproxy", [True, False])
def test_check_passes_on_the_labs_own_inventory(
    lab_factory: LabFactory, ssh_home: Callable[[Lab], SshHome], tmp_path: Path, haproxy: bool
) -> None:
    cli = lab_cli(lab_factory(2, haproxy=haproxy), ssh_home, tmp_path)
    ran = run_cli("-i", str(cli.lab.inventory_path), "check", "--strict", env=cli.home.env)
    assert ran.code == 0, ran.stdout + ran.stderr
    playbook = "haproxy" if haproxy else "lab"
    assert f"node-1: playbook {playbook} " in ran.stdout


def test_status_reads_the_versions_of_a_lab_behind_haproxy(
    lab_factory: LabFactory, ssh_home: Callable[[Lab], SshHome], tmp_path: Path
) -> None:
    cli = lab_cli(lab_factory(2, haproxy=True, version="6.1"), ssh_home, tmp_path)
    ran = cli("status")
    assert ran.code == 0, ran.stdout + ran.stderr
    (report,) = ran.events
    assert {row["node"]: row["version"] for row in report["nodes"]} == {
        "node-1": "6.1",
        "node-2": "6.1",
    }


def test_the_labs_default_playbook_blocks_at_haproxy_so_no_call_is_refused(
    lab_factory: LabFactory, ssh_home: Callable[[Lab], SshHome], tmp_path: Path
) -> None:
    lab = lab_factory(2, haproxy=True)
    assert lab.haproxy is not None
    cli = lab_cli(lab, ssh_home, tmp_path)
    calls = CallGenerator(lab.haproxy.host, lab.haproxy.port, 4, duration=(0.5, 1.5)).start()
    try:
        wait_for(lambda: len(calls.snapshot().calls) >= 4, timeout=5, what="calls to flow")
        ran = cli("upgrade", "node-1", "--version", "2.0", "--yes")
    finally:
        result = calls.stop()
    assert ran.code == 0, ran.stdout + ran.stderr
    assert cli.ask("version") == "version 2.0"
    assert result.counts[Fate.REFUSED] == 0
    assert result.counts[Fate.DROPPED] == 0
    assert len(result.calls) >= 8  # calls went on through the whole upgrade


def test_base_port_chooses_the_labs_ports_in_order(tmp_path: Path) -> None:
    base = free_range(4)  # claimed: a lab starting meanwhile does not choose from it
    with subprocess.Popen(
        [sys.executable, "-m", "upgradectl.lab", "up", "--nodes", "1", "--no-haproxy",
         "--dir", str(tmp_path / "lab"), "--base-port", str(base)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            said = [process.stdout.readline() for _ in range(3)]
            assert said[2] == f"node-1: sshd 127.0.0.1:{base}, calls 127.0.0.1:{base + 1}\n", said
            inventory = yaml.safe_load((tmp_path / "lab" / "inventory.yaml").read_text())
            assert inventory["nodes"]["node-1"]["port"] == base
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
