"""OpenSSH's answers for a fleet (``ssh -G``): once for all hosts only where that is exact."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from upgradectl.transport.sshconfig import Answers, ask_openssh

Host = tuple[str, int | None, str | None]
HOSTS: list[Host] = [
    ("node-1", 2201, None),
    ("Node-2.Example", 2202, None),
    ("10.0.0.3", None, "ops"),
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME whose ~/.ssh/config the test writes, and `ssh` on PATH logging each `ssh -G`."""
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    real = shutil.which("ssh")
    shim = tmp_path / "bin" / "ssh"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "asked"}\nexec {real} "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    return tmp_path / "home"


def asked(home: Path) -> int:
    """How many answers `ssh -G` gave so far (not counting `ssh -G -v`, asked which files it
    reads: it runs once for each way of asking, when the first host is asked)."""
    log = home.parent / "asked"
    return sum("-v" not in line.split() for line in log.read_text().splitlines())


def each_alone(hosts: list[Host]) -> list[dict[str, list[str]]]:
    return [ask_openssh(*host) for host in hosts]


def test_a_configuration_that_answers_every_host_alike_is_asked_once_per_shape(home: Path) -> None:
    included = home / "fleet.conf"
    included.write_text("Host *\n  ServerAliveInterval 7\n  IdentityFile ~/.ssh/fleet_key\n")
    (home / ".ssh" / "config").write_text(
        f"# every host alike\nInclude {included}\nHost=*\n  User deploy\n  Port 2022\n"
    )
    hosts: list[Host] = [*HOSTS, ("node-4", 2204, None), ("node-5", None, None)]
    answers = Answers()
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        shared = list(pool.map(lambda host: answers.ask(*host), hosts))
    # One per way of asking: with a port, with a user, with neither.
    assert asked(home) == 3
    assert shared == each_alone(hosts)  # to the letter, every keyword OpenSSH printed


@pytest.mark.parametrize(
    "config",
    [
        "Host node-1\n  Port 2222\n",
        "Host *\n  User deploy\nHost !node-1 *\n  User other\n",
        "Match originalhost node-2.example\n  User bob\n",
        "Host *\n  IdentityFile ~/.ssh/id_%h\n",
        "Host *\n  UserKnownHostsFile ~/.ssh/known_%p\n",
        "Include ~/.ssh/by-name.conf\n",
    ],
)
def test_a_configuration_that_can_tell_hosts_apart_is_asked_for_each_host(
    home: Path, config: str
) -> None:
    (home / ".ssh" / "by-name.conf").write_text("Host node-*\n  HostKeyAlias fleet\n")
    (home / ".ssh" / "config").write_text(config)
    answers = Answers()
    shared = [answers.ask(*host) for host in HOSTS]
    assert asked(home) == len(HOSTS)
    assert shared == each_alone(HOSTS)


def test_a_host_name_openssh_would_parse_is_asked_alone(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host *\n  User deploy\n")
    hosts: list[Host] = [("node-1", 22, None), ("ops@node-2", 22, None), ("[::1]", 22, None)]
    answers = Answers()
    shared = [answers.ask(*host) for host in hosts]
    assert asked(home) == 3
    assert shared == each_alone(hosts)


def test_an_ssh_that_names_no_configuration_file_is_asked_for_each_host(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ssh whose -v output does not say which files it read (another version's wording).
    (home / ".ssh" / "config").write_text("Host *\n  User deploy\n")
    logged = home.parent / "bin" / "ssh"
    unworded = home.parent / "unworded" / "ssh"
    unworded.parent.mkdir()
    unworded.write_text(
        f"#!/bin/sh\n{{ {logged} \"$@\" 2>&1 1>&3 | grep -v 'Reading configuration' >&2; }} 3>&1\n"
    )
    unworded.chmod(0o755)
    monkeypatch.setenv("PATH", f"{unworded.parent}:{os.environ['PATH']}")
    answers = Answers()
    shared = [answers.ask(*host) for host in HOSTS]
    assert asked(home) == len(HOSTS)
    assert shared == each_alone(HOSTS)
