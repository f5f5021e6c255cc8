"""Steps as root with real sudo and a narrow NOPASSWD rule, over a real sshd.

The rule allows the lab's log-in user one command (`install-callserver *`), the way sites grant
sudo; the steps run it as written, and the preflight proves it before anything is touched.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clihelp import LabCli

from upgradectl.lab import lab_account
from upgradectl.sudo import simple_words, sudo_check, wrap_sudo

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="writing a rule under /etc/sudoers.d needs root"
)


@pytest.fixture
def sudoers_rule() -> Iterator[Callable[[str], Path]]:
    """`sudoers_rule(text)`: a rule file of this test's own under /etc/sudoers.d, removed after."""
    written: list[Path] = []

    def write(text: str) -> Path:
        path = Path("/etc/sudoers.d") / f"upgradectl-test-{uuid.uuid4().hex[:12]}"
        draft = path.with_name("." + path.name)  # sudo skips names with a dot: never half-read
        draft.write_text(text)
        subprocess.run(["visudo", "-cqf", str(draft)], check=True)
        draft.chmod(0o440)
        draft.rename(path)
        written.append(path)
        return path

    yield write
    for path in written:
        path.unlink(missing_ok=True)


def install_scripts(cli: LabCli) -> tuple[Path, Path]:
    """`install-callserver VERSION` (upgrades the lab's call server, records who ran it) and
    `remove-callserver`, in a directory only root may write."""
    node = cli.lab.node("node-1")
    directory = cli.lab.dir / "sbin"
    directory.mkdir(mode=0o755)
    install = directory / "install-callserver"
    install.write_text(
        "#!/bin/sh\nset -e\nid -u > " + str(node.node_dir / "ran-as") + "\n"
        f'echo "upgrade $1" | socat - UNIX-CONNECT:{node.ctl_socket}\n'
    )
    remove = directory / "remove-callserver"
    remove.write_text("#!/bin/sh\ntouch " + str(node.node_dir / "removed") + "\n")
    for script in (install, remove):
        script.chmod(0o755)
    # The lab dir lies below pytest's 0700 tmp dir; sudo runs the script as root, but the path
    # must be traversable for the rule's path to match what `sudo -l` resolves.
    for parent in directory.parents:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    return install, remove


def test_a_narrow_nopasswd_rule_runs_the_step_as_written_as_root(
    cli: LabCli, sudoers_rule: Callable[[str], Path]
) -> None:
    install, _ = install_scripts(cli)
    sudoers_rule(f"{lab_account().name} ALL=(root) NOPASSWD: {install} *\n")
    playbook = cli.playbook_variant(
        "narrow", upgrade={"run": f"{install} {{{{ version | quote }}}}", "sudo": True}
    )
    ran = cli("-v", "upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", playbook)
    assert ran.code == 0, ran.stdout + ran.stderr
    assert (cli.lab.node("node-1").node_dir / "ran-as").read_text().strip() == "0"
    assert cli.ask("version") == "version 2.0"
    steps = [e["message"] for e in ran.events if e["event"] == "step"]
    assert f"upgrade on node-1: sudo -n -- {install} 2.0" in steps  # as written: the rule matches


def test_a_step_sudo_refuses_ends_the_run_at_the_preflight_with_nothing_touched(
    cli: LabCli, sudoers_rule: Callable[[str], Path]
) -> None:
    install, remove = install_scripts(cli)
    sudoers_rule(f"{lab_account().name} ALL=(root) NOPASSWD: {install} *\n")
    playbook = cli.playbook_variant(
        "refused",
        upgrade={"run": f"{install} {{{{ version | quote }}}}", "sudo": True},
        rollback={"run": str(remove), "sudo": True},  # not in the rule: found out at 3 a.m. before
    )
    ran = cli("-v", "upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", playbook)
    assert ran.code == 2, ran.stdout + ran.stderr
    message = ran.summary["nodes"]["node-1"]["message"]
    assert f"node-1: sudo refuses the rollback step's command (`sudo -n -l -- {remove}` failed" in (
        message
    )
    assert cli.ask("state") == "ready" and cli.ask("version") == "version 1.0"
    assert "step" not in ran.kinds()
    assert not (cli.lab.node("node-1").node_dir / "removed").exists()


def test_a_step_gets_the_shell_form_only_when_it_needs_a_shell() -> None:
    assert wrap_sudo("install-callserver 2.0") == "sudo -n -- install-callserver 2.0"
    assert sudo_check("install-callserver 2.0") == "sudo -n -l -- install-callserver 2.0"
    for shell in ("a | b", "a > /tmp/x", "a; b", "a && b", "echo $HOME", "FOO=1 a", "cd /x", "a *"):
        assert simple_words(shell) is None, shell
        assert wrap_sudo(shell).startswith("sudo -n -- sh -c "), shell
