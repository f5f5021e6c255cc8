"""The preflight against real sshd: an operator's SSH mistakes end the run at once, in OpenSSH's
words, with nothing touched; a node nothing answers at fails fast, as a failure (exit 1)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml
from clihelp import LabCli, Ran

from upgradectl.lab import KeyPair
from upgradectl.lab.ports import free_ports


def with_node_1(cli: LabCli, **fields: object) -> Path:
    """The lab's inventory with some of node-1's fields replaced."""
    inventory = yaml.safe_load(cli.lab.inventory_path.read_text())
    inventory["nodes"]["node-1"].update(fields)
    path = cli.lab.inventory_path.with_name("changed.yaml")
    path.write_text(yaml.safe_dump(inventory))
    return path


def drain(cli: LabCli, inventory: Path) -> tuple[Ran, float]:
    started = time.monotonic()
    ran = cli("-v", "drain", "node-1", "node-2", "--timeout", "5s", "--yes", inventory=inventory)
    return ran, time.monotonic() - started


def assert_untouched(cli: LabCli, ran: Ran) -> None:
    """No node was blocked, and no step ran: the preflight ended the run."""
    assert cli.ask("state", "node-1") == "ready"
    assert cli.ask("state", "node-2") == "ready"
    assert "step" not in ran.kinds()  # -v shows every step: none ran
    assert "run-start" in ran.kinds()
    results = {node: found["result"] for node, found in ran.summary["nodes"].items()}
    assert results == {"node-1": "failed", "node-2": "skipped"}


def node_1_said(ran: Ran) -> str:
    return str(ran.summary["nodes"]["node-1"]["message"])


def test_a_rejected_key_is_exit_2_at_once_naming_the_keys_tried(
    cli: LabCli, tmp_path: Path
) -> None:
    stranger = KeyPair.generate(tmp_path / "stranger", "not authorized")
    ran, took = drain(cli, with_node_1(cli, identity_file=str(stranger.private_key)))
    assert ran.code == 2, ran.stdout + ran.stderr
    assert took < 10
    user, port = cli.lab.user, cli.lab.node("node-1").ssh.port
    assert f"node-1: {user}@127.0.0.1: Permission denied (publickey); tried keys: " in node_1_said(
        ran
    )
    assert str(stranger.private_key) in node_1_said(ran)
    assert f"port {port}" not in node_1_said(ran)  # not a network error
    assert_untouched(cli, ran)


def test_an_encrypted_key_without_an_agent_says_add_it_with_ssh_add_and_works_once_added(
    cli: LabCli, tmp_path: Path, agent: str
) -> None:
    key = tmp_path / "locked_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "sesame", "-C", "locked", "-f", str(key)],
        check=True,
    )
    authorized = cli.lab.node("node-1").ssh.authorized_keys
    authorized.write_text(authorized.read_text() + key.with_suffix(".pub").read_text())
    inventory = with_node_1(cli, identity_file=str(key))
    ran, took = drain(cli, inventory)
    assert ran.code == 2, ran.stdout + ran.stderr
    assert took < 10
    assert f"{key} is encrypted and no agent key was accepted: add it with ssh-add {key}" in (
        node_1_said(ran)
    )
    assert_untouched(cli, ran)

    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho sesame\n")
    askpass.chmod(0o700)
    env = {**cli.home.env, "SSH_AUTH_SOCK": agent}
    added = {**env, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    subprocess.run(["ssh-add", "-q", str(key)], env=added, check=True, stdin=subprocess.DEVNULL)
    cli.home.env["SSH_AUTH_SOCK"] = agent
    ran = cli("status", "node-1", inventory=inventory)
    assert ran.code == 0, ran.stdout + ran.stderr


def test_a_missing_identity_file_is_exit_2_naming_it(cli: LabCli, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_key"
    ran, took = drain(cli, with_node_1(cli, identity_file=str(missing)))
    assert ran.code == 2, ran.stdout + ran.stderr
    assert took < 10
    assert f"no such identity file: {missing}" in node_1_said(ran)
    assert_untouched(cli, ran)


def test_an_unknown_host_key_is_exit_2_at_once(cli: LabCli) -> None:
    cli.home.known_hosts.write_text("")
    ran, took = drain(cli, cli.lab.inventory_path)
    assert ran.code == 2, ran.stdout + ran.stderr
    assert took < 10
    assert "unknown host key" in node_1_said(ran)
    assert "--accept-new-host-keys" in node_1_said(ran)
    assert cli.ask("state", "node-1") == "ready"
    assert "step" not in ran.kinds()


def test_a_changed_host_key_is_exit_2_at_once_even_accepting_new_keys(
    cli: LabCli, tmp_path: Path
) -> None:
    stranger = KeyPair.generate(tmp_path / "stranger", "not node-1")
    node_1 = cli.lab.node("node-1").ssh
    lines = cli.home.known_hosts.read_text().replace(
        node_1.known_hosts_line(), f"[{node_1.host}]:{node_1.port} {stranger.public_line()}"
    )
    cli.home.known_hosts.write_text(lines)
    started = time.monotonic()
    ran = cli("-v", "--accept-new-host-keys", "drain", "node-1", "node-2", "--timeout", "5s",
              "--yes")  # fmt: skip
    assert ran.code == 2, ran.stdout + ran.stderr
    assert time.monotonic() - started < 10
    assert "host key of" in node_1_said(ran) and "CHANGED" in node_1_said(ran)
    assert f"{cli.home.known_hosts}:" in node_1_said(ran)  # file:line of the listed key
    assert cli.home.known_hosts.read_text() == lines  # nothing added, nothing removed
    assert_untouched(cli, ran)


def test_a_closed_port_fails_in_about_a_second_as_a_failure_not_attention(cli: LabCli) -> None:
    (closed,) = free_ports(1)
    ran, took = drain(cli, with_node_1(cli, port=closed))
    assert ran.code == 1, ran.stdout + ran.stderr
    # No reconnects before anything was touched (they would take the 60 s reconnect budget).
    assert took < 30 and "reconnecting" not in ran.stdout
    assert node_1_said(ran) == (
        f"not started: node-1: connect to host 127.0.0.1 port {closed}: Connection refused"
    )
    assert_untouched(cli, ran)
