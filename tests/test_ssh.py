"""The SSH transport against a real sshd: ~/.ssh/config, ssh-agent, ProxyJump, shared channels."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest
import yaml
from clihelp import LabCli, run_cli
from conftest import LabFactory, wait_for

from upgradectl.errors import CommandTimedOut, ConnectionLost
from upgradectl.lab import Lab, SshHome
from upgradectl.transport.ssh import IDLE_WAKE_SECONDS, MAX_CHANNELS, SshTransport
from upgradectl.transport.sshconfig import Hop, resolve


def transport_to(lab: Lab, node: str = "node-1") -> SshTransport:
    ssh = lab.node(node).ssh
    return SshTransport(resolve(node, ssh.host, ssh.port, ssh.user, str(lab.identity_file)))


def test_more_commands_at_once_than_sshd_allows_sessions_queue_and_all_succeed(
    cli: LabCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(cli.home.home))
    transport = transport_to(cli.lab)  # HOME points at the lab's known_hosts
    try:
        with ThreadPoolExecutor(max_workers=30) as pool:
            results = list(pool.map(lambda n: transport.run(f"sleep 0.2; echo {n}", 10), range(30)))
    finally:
        transport.close()
    assert [r.stdout.strip() for r in results] == [str(n) for n in range(30)]
    assert transport.connections_opened == 1  # never dropped for a refused channel
    assert MAX_CHANNELS < 10  # OpenSSH's default MaxSessions, which the lab's sshd keeps


def test_a_command_waits_for_a_free_session_no_longer_than_its_timeout(
    cli: LabCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(cli.home.home))
    transport = transport_to(cli.lab)
    release = cli.lab.node("node-1").node_dir / "release-the-sessions"
    hold = f"while [ ! -e {release} ]; do sleep 0.1; done; echo held"
    try:
        with ThreadPoolExecutor(max_workers=MAX_CHANNELS) as pool:
            holders = [pool.submit(transport.run, hold, 30) for _ in range(MAX_CHANNELS)]
            try:
                with pytest.raises(CommandTimedOut) as waited:
                    transport.run("echo late", 0.5)
            finally:
                release.touch()
            assert [holder.result().stdout for holder in holders] == ["held\n"] * MAX_CHANNELS
    finally:
        transport.close()
    assert not waited.value.started
    assert "waiting for a free session" in str(waited.value)
    assert "the command was not started" in str(waited.value)


@contextmanager
def paramiko_transport_of(
    cli: LabCli, monkeypatch: pytest.MonkeyPatch
) -> Iterator[paramiko.Transport]:
    """paramiko's own transport under a connection to the lab's node-1 that ran a command;
    the connection is closed after the block."""
    monkeypatch.setenv("HOME", str(cli.home.home))
    transport = transport_to(cli.lab)
    try:
        assert transport.run("echo up", 10).stdout == "up\n"
        client = transport._client
        assert client is not None
        paramiko_transport = client.get_transport()
        assert paramiko_transport is not None
        yield paramiko_transport
    finally:
        transport.close()


def test_an_idle_connection_wakes_once_per_keepalive_and_closes_at_once(
    cli: LabCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with paramiko_transport_of(cli, monkeypatch) as paramiko_transport:
        assert paramiko_transport.sock.gettimeout() == IDLE_WAKE_SECONDS  # not 0.1 s
    # Its thread ends at once, not when a read of its socket times out.
    wait_for(
        lambda: not paramiko_transport.is_alive(),
        IDLE_WAKE_SECONDS / 2,
        what="paramiko's thread to end",
    )


def test_the_connection_agrees_on_aes_gcm_so_no_packet_has_a_tag_checked_in_python(
    cli: LabCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with paramiko_transport_of(cli, monkeypatch) as paramiko_transport:
        remote = paramiko_transport.remote_cipher  # type: ignore[attr-defined]  # not in the stubs
        ciphers = (paramiko_transport.local_cipher, remote)
    assert ciphers == ("aes128-gcm@openssh.com", "aes128-gcm@openssh.com")


def test_a_command_lost_with_its_connection_leaves_the_new_connection_alone(
    cli: LabCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(cli.home.home))
    transport = transport_to(cli.lab)
    started = cli.lab.node("node-1").node_dir / "started"
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            lost = pool.submit(transport.run, f"touch {started}; sleep 30", 40)
            wait_for(started.exists, 10, what="the command to start")
            # Another command's reconnect replaces the connection the first one runs on.
            transport.reconnect(time.monotonic() + 10)
            with pytest.raises(ConnectionLost):
                lost.result(timeout=10)
        # The lost command's own failure closed only its own connection, not the new one.
        assert transport.run("echo on", 10).stdout == "on\n"
    finally:
        transport.close()
    assert transport.connections_opened == 2


@contextmanager
def descriptors_above(number: int) -> Iterator[None]:
    """Every descriptor opened meanwhile is numbered above ``number``, as in a run of a large
    fleet (a socket per node); the limit and the descriptors are put back after."""
    import resource  # noqa: PLC0415 (POSIX only, like the lab)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = number + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the descriptor limit ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    held: list[int] = []
    try:
        with open(os.devnull) as devnull:
            while not held or held[-1] < number:
                held.append(os.dup(devnull.fileno()))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_commands_run_when_the_controller_holds_more_than_1024_descriptors(
    cli: LabCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(cli.home.home))
    transport = transport_to(cli.lab)
    try:
        with descriptors_above(1100):
            with ThreadPoolExecutor(max_workers=4) as pool:
                results = list(
                    pool.map(lambda n: transport.run(f"echo out{n}; echo err{n} >&2", 10), range(8))
                )
            late = transport.run("sleep 1.2; echo late; exit 3", 10)  # waits past one read's cap
    finally:
        transport.close()
    assert transport.connections_opened == 1  # no command's end cost the others the connection
    assert [(r.stdout, r.stderr, r.exit_code) for r in results] == [
        (f"out{n}\n", f"err{n}\n", 0) for n in range(8)
    ]
    assert (late.stdout, late.exit_code) == ("late\n", 3)


@contextmanager
def cpu_load(processes: int = 2) -> Iterator[None]:
    """Busy loops beside the test, so that sshd is slow to open and close sessions."""
    busy = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(processes)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_sessions_sshd_refuses_are_asked_for_again_on_the_same_connection_under_load(
    cli: LabCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    sshd = cli.lab.node("node-1").ssh
    sshd.max_sessions = 2  # far below the MAX_CHANNELS the transport opens at once
    sshd.restart()
    monkeypatch.setenv("HOME", str(cli.home.home))
    transport = transport_to(cli.lab)
    try:
        with cpu_load(), ThreadPoolExecutor(max_workers=MAX_CHANNELS) as pool:
            for repeat in range(20):
                # Commands that end at once: sshd closes each channel as soon as it is open.
                results = list(
                    pool.map(lambda n: transport.run(f"echo {n}", 10), range(MAX_CHANNELS))
                )
                assert [r.stdout.strip() for r in results] == [
                    str(n) for n in range(MAX_CHANNELS)
                ], repeat
    finally:
        transport.close()
    log = sshd.process.log_path.read_text(errors="replace")
    # sshd drops a connection that breaks the protocol (an EOF sent after the channel's CLOSE).
    assert "Disconnecting" not in log, log
    assert transport.connections_opened == 1  # a refusal never dropped the connection
    assert log.count("no more sessions") > 0, (
        "sshd never refused a session: the test proved nothing"
    )


def inventory_without_keys(cli: LabCli, node_fields: dict[str, object]) -> Path:
    """The lab's inventory with node-1 replaced and no identity_file in the defaults."""
    inventory = yaml.safe_load(cli.lab.inventory_path.read_text())
    inventory["defaults"].pop("identity_file")
    kept = {key: inventory["nodes"]["node-1"][key] for key in ("playbook", "vars")}
    inventory["nodes"] = {"node-1": {**node_fields, **kept}}
    path = cli.lab.inventory_path.with_name("bare.yaml")
    path.write_text(yaml.safe_dump(inventory))
    return path


def test_a_node_without_host_is_found_in_ssh_config(cli: LabCli) -> None:
    ssh = cli.lab.node("node-1").ssh
    (cli.home.home / ".ssh" / "config").write_text(
        f"Host node-1\n  HostName {ssh.host}\n  Port {ssh.port}\n  User {ssh.user}\n"
        f"  IdentityFile {cli.lab.identity_file}\n"
    )
    ran = cli("status", inventory=inventory_without_keys(cli, {}))
    assert ran.code == 0, ran.stdout + ran.stderr
    assert ran.events[0]["nodes"][0]["version"] == "1.0"


def test_ssh_agent_keys_are_used_when_no_identity_file_is_given(cli: LabCli, agent: str) -> None:
    env = {"SSH_AUTH_SOCK": agent}
    subprocess.run(
        ["ssh-add", "-q", str(cli.lab.identity_file)], env={**os.environ, **env}, check=True
    )
    ssh = cli.lab.node("node-1").ssh
    bare = inventory_without_keys(cli, {"host": ssh.host, "port": ssh.port})
    args = ("-i", str(bare), "--state-dir", str(cli.state_dir), "--json", "status")
    ran = run_cli(*args, env={**cli.home.env, **env})
    assert ran.code == 0, ran.stdout + ran.stderr
    without_agent = run_cli(*args, env=cli.home.env)
    assert without_agent.code == 1  # no agent: no key, no login; status touched nothing: never 4


def test_proxyjump_reaches_a_node_through_another(cli: LabCli) -> None:
    node, jump = cli.lab.node("node-1").ssh, cli.lab.node("node-2").ssh
    (cli.home.home / ".ssh" / "config").write_text(
        f"Host node-1\n  HostName {node.host}\n  Port {node.port}\n  ProxyJump jumphost\n"
        f"Host jumphost\n  HostName {jump.host}\n  Port {jump.port}\n"
        f"Host *\n  User {node.user}\n  IdentityFile {cli.lab.identity_file}\n"
    )
    logins_at_jump = jump.process.log_path.read_text().count("Accepted publickey")
    ran = cli("status", inventory=inventory_without_keys(cli, {}))
    assert ran.code == 0, ran.stdout + ran.stderr
    assert ran.events[0]["nodes"][0]["blocked"] is False
    # node-2 is not in this inventory: the only way to log in there was as node-1's jump host.
    wait_for(
        lambda: jump.process.log_path.read_text().count("Accepted publickey") > logins_at_jump,
        timeout=5,
    )


def test_an_alias_from_an_included_file_with_match_and_wildcards_resolves_as_openssh_does(
    cli: LabCli,
) -> None:
    ssh = cli.lab.node("node-1").ssh
    included = cli.home.home / "fleet.conf"
    # Include, a wildcard block and a Match block: none of them paramiko's parser would follow.
    included.write_text(
        f"Host callserver-*\n  HostName {ssh.host}\n  User {ssh.user}\n"
        f"Match originalhost callserver-east\n  Port {ssh.port}\n"
        f"  IdentityFile {cli.lab.identity_file}\n"
    )
    (cli.home.home / ".ssh" / "config").write_text(f"Include {included}\n")
    ran = cli("status", inventory=inventory_without_keys(cli, {"host": "callserver-east"}))
    assert ran.code == 0, ran.stdout + ran.stderr
    assert ran.events[0]["nodes"][0]["version"] == "1.0"


def test_a_bad_ssh_config_is_a_usage_error_in_openssh_words(cli: LabCli) -> None:
    (cli.home.home / ".ssh" / "config").write_text("Host *\n  NoSuchOption yes\n")
    ran = cli("drain", "node-1", "--yes", inventory=inventory_without_keys(cli, {}))
    assert ran.code == 2, ran.stdout + ran.stderr
    assert "Bad configuration option: nosuchoption" in ran.stdout
    assert cli.ask("state") == "ready"


def test_a_proxyjump_chain_goes_through_every_hop_in_order(
    lab_factory: LabFactory, ssh_home: Callable[[Lab], SshHome], tmp_path: Path
) -> None:
    lab = lab_factory(3)
    cli = LabCli(lab, ssh_home(lab), tmp_path / "state")
    node, first, second = (lab.node(f"node-{n}").ssh for n in (1, 2, 3))
    (cli.home.home / ".ssh" / "config").write_text(
        f"Host node-1\n  HostName {node.host}\n  Port {node.port}\n  ProxyJump hop-a,hop-b\n"
        f"Host hop-a\n  HostName {first.host}\n  Port {first.port}\n"
        f"Host hop-b\n  HostName {second.host}\n  Port {second.port}\n"
        f"Host *\n  User {node.user}\n  IdentityFile {lab.identity_file}\n"
    )

    def logins() -> list[int]:
        return [
            hop.process.log_path.read_text().count("Accepted publickey") for hop in (first, second)
        ]

    before = logins()
    ran = cli("status", inventory=inventory_without_keys(cli, {}))
    assert ran.code == 0, ran.stdout + ran.stderr
    # Neither is in this inventory: each was reached as a hop.
    wait_for(lambda: all(now > then for now, then in zip(logins(), before, strict=True)), timeout=5)


def test_proxyjump_hops_read_as_openssh_writes_them() -> None:
    assert Hop.parse("bastion") == Hop("bastion")
    assert Hop.parse("ops@bastion:2222") == Hop("bastion", "ops", 2222)
    assert Hop.parse("ssh://ops@bastion:2222") == Hop("bastion", "ops", 2222)
