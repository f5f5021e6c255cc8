"""Fixtures for the whole suite: labs of real sshd nodes, a HOME that trusts them, and waiting.

`wait_for` is re-exported here for tests: `from conftest import wait_for`.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from clihelp import LabCli

from upgradectl.lab import KeyPair, Lab, SshHome, lab_account, wait_for

# The suite starts `python -m upgradectl` some 500 times. An environment that sets
# PYTHONDONTWRITEBYTECODE (some CI images and sandboxes do) makes every one of them compile the
# package from source again, about 70 ms of CPU each; a user's `pip install` has its .pyc files.
# The children may write them (into __pycache__, which git ignores).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# What test modules import from here (wait_for is the lab's, re-exported).
__all__ = ["LabFactory", "LabKeys", "sessions_until_blocked", "start_sessions", "wait_for"]


@dataclass(frozen=True)
class LabKeys:
    """The host key and client key that every lab of a test session shares."""

    host: KeyPair
    client: KeyPair


class LabFactory(Protocol):
    """Builds and starts a lab; the fixture stops it after the test."""

    def __call__(self, nodes: int = 2, *, haproxy: bool = False, version: str = "1.0") -> Lab: ...


@pytest.fixture(scope="session")
def lab_keys(tmp_path_factory: pytest.TempPathFactory) -> LabKeys:
    """Keys made once per session: ssh-keygen per lab would add up over the suite."""
    lab_account()  # creates the lab user once (cached), before any lab needs it
    directory = tmp_path_factory.mktemp("lab-keys")
    return LabKeys(
        host=KeyPair.generate(directory / "host_key", "lab host"),
        client=KeyPair.generate(directory / "client_key", "lab client"),
    )


@pytest.fixture
def lab_factory(tmp_path: Path, lab_keys: LabKeys) -> Iterator[LabFactory]:
    """`lab_factory(nodes=2, haproxy=False)` starts a lab in tmp_path, stopped after the test."""
    labs: list[Lab] = []

    def build(nodes: int = 2, *, haproxy: bool = False, version: str = "1.0") -> Lab:
        lab = Lab(
            tmp_path / f"lab-{len(labs) + 1}",
            nodes,
            haproxy=haproxy,
            version=version,
            host_key=lab_keys.host,
            client_key=lab_keys.client,
        )
        labs.append(lab)
        return lab.start()

    yield build
    for lab in reversed(labs):
        lab.stop()


@pytest.fixture
def cli(lab_factory: LabFactory, ssh_home: Callable[[Lab], SshHome], tmp_path: Path) -> LabCli:
    """A lab of two paired nodes (tests act on node-1) and the CLI pointed at it."""
    lab = lab_factory(2)
    return LabCli(lab, ssh_home(lab), tmp_path / "state")


@pytest.fixture
def ssh_home(tmp_path: Path) -> Callable[[Lab], SshHome]:
    """`ssh_home(lab)`: a HOME holding only `.ssh/known_hosts` for the lab, and an env using it.

    The env has HOME set and no SSH_AUTH_SOCK, for subprocess runs of the CLI.
    """

    def make(lab: Lab) -> SshHome:
        return lab.ssh_home(tmp_path / "home")

    return make


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[str]:
    """A real ssh-agent of the test's own, in the foreground; its socket path."""
    socket_path = str(tmp_path / "agent.sock")
    process = subprocess.Popen(["ssh-agent", "-D", "-a", socket_path], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(socket_path), timeout=10, what="ssh-agent's socket")
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=10)


# A service on this machine: sessions are files holding their end time; blocked is a flag file.
PLAYBOOK = """\
name: files
drain: {timeout: 30s, poll: 0.2s, stragglers: abort, settle: 1}
lock: "{{ dir }}/lock"
steps:
  is_blocked: "test -e {{ dir }}/blocked"
  block: "touch {{ dir }}/blocked"
  active:
    run: "now=$(date +%s); n=0; for f in {{ dir }}/sessions/*; do [ -e \\"$f\\" ] && [ $(cat $f) -gt $now ] && n=$((n+1)); done; echo $n"
  upgrade: {run: "echo {{ version | quote }} > {{ dir }}/version", expected: 1m}
  verify: "test -s {{ dir }}/version"
  unblock: "rm -f {{ dir }}/blocked"
"""


@pytest.fixture
def local_site(tmp_path: Path) -> Path:
    """A node on this machine (`transport: local`) whose service is files: node-a in group voice."""
    (tmp_path / "work" / "sessions").mkdir(parents=True)
    (tmp_path / "files.yaml").write_text(PLAYBOOK)
    (tmp_path / "inventory.yaml").write_text(
        f"defaults: {{transport: local, playbook: ./files.yaml, vars: {{dir: {tmp_path / 'work'}}}}}\n"
        "groups:\n  voice: {max_unavailable: 1}\nnodes:\n  node-a: {groups: [voice]}\n"
    )
    return tmp_path


# What the `files` service needs for a force: its sessions listed by name, and cut.
FORCE_STEPS = """\
  sessions: "now=$(date +%s); for f in {{ dir }}/sessions/*; do [ -e $f ] && [ $(cat $f) -gt $now ] && echo $(basename $f) 5; done; true"
  force: "rm -f {{ dir }}/sessions/*"
"""


@pytest.fixture
def forcing_site(local_site: Path) -> Path:
    """``local_site`` whose playbook can list its sessions by name and cut them."""
    playbook = local_site / "files.yaml"
    playbook.write_text(playbook.read_text() + FORCE_STEPS)
    return local_site


def start_sessions(site: Path, lengths: dict[str, float]) -> None:
    """Sessions on a local site, by name, each ending after its length in seconds."""
    now = time.time()
    for name, lasts in lengths.items():
        # Written whole, then put in place: a drain counting meanwhile (sessions_until_blocked
        # re-dates live sessions) must never read an emptied file and miss a session.
        ending = site / "work" / f".{name}.new"
        ending.write_text(str(int(now + lasts)))
        ending.replace(site / "work" / "sessions" / name)


@contextmanager
def sessions_until_blocked(site: Path, lengths: dict[str, float]) -> Iterator[None]:
    """Sessions on a local site that last until the node is blocked, then each ``lengths[name]``
    seconds more: what the controller sees does not hang on how long it took to start (seconds,
    on a busy machine)."""
    start_sessions(site, dict.fromkeys(lengths, 3600.0))
    done = threading.Event()
    blocked = site / "work" / "blocked"

    def end_after_the_block() -> None:
        wait_for(lambda: blocked.exists() or done.is_set(), timeout=300, interval=0.01)
        if not done.is_set():
            start_sessions(site, lengths)

    watcher = threading.Thread(target=end_after_the_block)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests (over 5 s) first: the xdist workers start on them and the quick tests fill
    in around them, rather than a 40 s test being handed out last and running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
