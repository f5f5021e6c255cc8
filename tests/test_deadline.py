"""A command's deadline holds on the node and on the link: against a real sshd, a stalling proxy
in front of it, and this machine (the local transport)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from clihelp import LabCli
from conftest import LabFactory, wait_for
from stallproxy import BIG, StallingProxy

from upgradectl.errors import CommandTimedOut
from upgradectl.lab import Lab
from upgradectl.transport.deadline import ANSWER_GRACE, KILL_AFTER
from upgradectl.transport.local import LocalTransport
from upgradectl.transport.ssh import SshTransport
from upgradectl.transport.sshconfig import Endpoint


def unique_sleep() -> str:
    """``sleep S`` with an S no other process on this machine has (other test runs included)."""
    return f"sleep {40 + secrets.randbelow(10**6) / 10**6:.6f}"


def processes_running(marker: str) -> list[int]:
    """The pids of this machine's processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(
                errors="replace"
            ).replace("\0", " "):
                found.append(int(entry.name))
        except OSError:
            continue  # ended while we looked
    return found


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    return lab_factory(1)


def ssh_to(lab: Lab, tmp_path: Path, port: int | None = None) -> SshTransport:
    """A transport to the lab's node-1, or to ``port`` on loopback (a proxy in front of it)."""
    ssh = lab.node("node-1").ssh
    endpoint = Endpoint(
        alias="node-1",
        hostname=ssh.host,
        port=port or ssh.port,
        user=ssh.user,
        identity_files=(str(lab.identity_file),),
        known_hosts=(str(tmp_path / "known_hosts"),),  # trusted on first use: a test's own file
    )
    return SshTransport(endpoint, accept_new_host_keys=True)


@pytest.fixture
def transport(lab: Lab, tmp_path: Path) -> Iterator[SshTransport]:
    made = ssh_to(lab, tmp_path)
    yield made
    made.close()


def test_a_timed_out_command_is_stopped_on_the_node_with_all_it_started(
    lab: Lab, transport: SshTransport
) -> None:
    # `sleep 12; write version` with a short timeout: the write must never happen afterwards.
    version = lab.node("node-1").node_dir / "version"
    marker = unique_sleep()
    started = time.monotonic()
    with pytest.raises(CommandTimedOut) as raised:
        transport.run(f"{marker}; echo 2.0 > {version}", 1.5)
    assert raised.value.stopped
    assert "timed out after 1.5s; the command was stopped" in str(raised.value)
    assert time.monotonic() - started < 1.5 + KILL_AFTER + 1
    wait_for(lambda: not processes_running(marker), timeout=KILL_AFTER + 2, what="no orphan")
    assert not version.exists()


def test_a_command_that_ignores_term_is_killed_at_the_deadline(
    lab: Lab, transport: SshTransport
) -> None:
    marker = unique_sleep()
    with pytest.raises(CommandTimedOut) as raised:
        transport.run(f"trap '' TERM; {marker}; {marker}", 1)
    assert raised.value.stopped
    wait_for(lambda: not processes_running(marker), timeout=KILL_AFTER + 2, what="no orphan")


def test_a_step_reading_stdin_gets_its_end_at_once(transport: SshTransport) -> None:
    started = time.monotonic()
    result = transport.run("cat; echo read-to-the-end", 10)
    assert result.stdout.strip() == "read-to-the-end"
    assert time.monotonic() - started < 5  # not the 10 s timeout


@pytest.mark.slow
def test_a_link_that_stalls_after_the_channel_opened_ends_the_wait_at_the_deadline(
    lab: Lab, tmp_path: Path
) -> None:
    ssh = lab.node("node-1").ssh
    with StallingProxy((ssh.host, ssh.port)) as proxy:
        transport = ssh_to(lab, tmp_path, proxy.port)
        try:
            assert transport.run("echo up", 5).stdout.strip() == "up"
            proxy.arm()
            started = time.monotonic()
            # The padding makes the exec request the one packet big enough to stall on.
            with pytest.raises(CommandTimedOut) as raised:
                transport.run(f": {'x' * BIG}; echo never", 1)
            took = time.monotonic() - started
        finally:
            transport.close()
    assert proxy.stalled.is_set()
    assert not raised.value.stopped  # nothing came back that could say so
    assert "not known whether the command was stopped" in str(raised.value)
    assert 1 + ANSWER_GRACE <= took < 1 + ANSWER_GRACE + 2


def test_a_local_command_and_its_children_are_stopped_at_the_deadline(tmp_path: Path) -> None:
    marker = unique_sleep()
    version = tmp_path / "version"
    with pytest.raises(CommandTimedOut) as raised:
        LocalTransport("here").run(f"sh -c '{marker}; echo 2.0 > {version}'", 1)
    assert raised.value.stopped
    wait_for(lambda: not processes_running(marker), timeout=KILL_AFTER + 2, what="no orphan")
    assert not version.exists()


# --- through the command line: what the run does and says -----------------------------------

CTL = "socat - UNIX-CONNECT:{{ ctl_socket }}"


def upgrade(playbook: str) -> tuple[str, ...]:
    return ("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", playbook)


def test_an_upgrade_that_times_out_is_stopped_and_not_called_restored(cli: LabCli) -> None:
    marker = unique_sleep()  # then the upgrade: an orphan would write the version later
    slow = cli.playbook_variant(
        "slow",
        upgrade={"run": f"{marker}; echo upgrade {{{{ version }}}} | {CTL}", "timeout": "2s"},
    )
    ran = cli(*upgrade(slow))
    assert ran.code == 1, ran.stdout
    node = ran.summary["nodes"]["node-1"]
    assert node["result"] == "failed" and node["in_service"] is True, node
    assert "timed out after 2s; the command was stopped" in node["message"]
    # Nothing was rolled back (the lab playbook has no rollback): never "restored".
    assert "restored" not in node["message"]
    assert "not rolled back (the playbook has no rollback step), but it verifies" in node["message"]
    assert not processes_running(marker)
    assert cli.ask("version") == "version 1.0" and cli.ask("state") == "ready"


@pytest.mark.slow
def test_a_run_whose_link_stalls_after_the_channel_opened_ends_soon_after_the_timeout(
    cli: LabCli,
) -> None:
    node = cli.lab.node("node-1").ssh
    stalls = cli.playbook_variant(
        "stalls",
        drain={"reconnect_for": "2s"},
        # The padding makes the upgrade's exec request the one packet big enough to stall on.
        upgrade={"run": f": {'x' * BIG}; echo upgrade {{{{ version }}}} | {CTL}", "timeout": "3s"},
    )
    with StallingProxy((node.host, node.port)) as proxy:
        inventory = yaml.safe_load(cli.lab.inventory_path.read_text())
        inventory["nodes"]["node-1"]["port"] = proxy.port
        through_proxy = cli.lab.inventory_path.with_name("proxied.yaml")
        through_proxy.write_text(yaml.safe_dump(inventory))
        proxy.arm()
        started = time.monotonic()
        ran = cli("--accept-new-host-keys", *upgrade(stalls), inventory=through_proxy)
        took = time.monotonic() - started
    assert proxy.stalled.is_set()
    assert ran.code == 4, ran.stdout
    result = ran.summary["nodes"]["node-1"]
    assert result["result"] == "unreachable"
    assert "timed out after 3s; no answer from the node" in ran.stdout
    # The command's timeout, the wait for the node's word, one reconnect budget for the node
    # (the lock's release has none of its own), and the controller's start-up.
    assert took < 3 + ANSWER_GRACE + 2 + 4, took
