"""Hostile files and values: exit 2 with file:line, quickly, nothing touched, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from upgradectl.cli import main
from upgradectl.errors import UsageError
from upgradectl.journal import Journal

PLAYBOOK = """\
name: tiny
drain: {timeout: 1m, poll: 1s}
lock: "WORK/lock"
steps:
  block: "touch WORK/blocked"
  active: {run: "echo 0 active", parse: "(\\\\d+) active"}
  upgrade: "echo {{ version | quote }} > WORK/version"
  unblock: "rm -f WORK/blocked"
"""
INVENTORY = """\
defaults: {transport: local, playbook: ./tiny.yaml}
groups:
  voice: {max_unavailable: 1}
nodes:
  node-a: {groups: [voice], pair: node-b}
  node-b: {groups: [voice], pair: node-a}
"""


class Site:
    """An inventory with two local nodes whose work dir must stay empty, and a state dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir()
        self.state = root / "state"
        self.playbook(PLAYBOOK)
        self.inventory(INVENTORY)

    def playbook(self, text: str) -> Path:
        path = self.root / "tiny.yaml"
        path.write_text(text.replace("WORK", str(self.work)))
        return path

    def inventory(self, text: str | bytes) -> Path:
        path = self.root / "inventory.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def untouched(self) -> bool:
        return list(self.work.iterdir()) == [] and not self.state.exists()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out + err


def refused(
    capsys: pytest.CaptureFixture[str], site: Site, *args: str, inventory: Path | None = None
) -> str:
    """Run `upgrade` (or ARGS) against the site: it must exit 2, clearly, touching nothing."""
    command = args or ("upgrade", "node-a", "--version", "1", "--yes")
    path = inventory or site.root / "inventory.yaml"
    code, output = run(capsys, "-i", str(path), "--state-dir", str(site.state), *command)
    assert code == 2, output
    assert "Traceback" not in output and output.startswith("upgradectl: "), output
    assert site.untouched()
    return output


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BOMB + "nodes: {node-a: {vars: {x: *i}}}\n",
            "aliases expand past 100000 values; refusing",
        ),
        (
            "nodes: &n {node-a: {vars: {me: *n}}}\n",
            "inventory.yaml:1: nodes.node-a.vars.me: a recursive alias",
        ),
        (
            "nodes:\n  node-a: {vars: {x: " + "[" * 100 + "]" * 100 + "}}\n",
            "inventory.yaml:2: nested more than 64 levels deep",
        ),
        # libyaml stops at 1,000 levels on its own (the pure-Python parser would get to ours)
        ("nodes:\n  node-a: {vars: {x: " + "[" * 5000 + "]" * 5000 + "}}\n", "inventory.yaml:2: "),
        (b"nodes:\n  node-a: {host: caf\xe9}\n", "inventory.yaml:2: not UTF-8 text (byte 0xe9)"),
        (b"nodes:\n\n  node-a: {host: a\x00b}\n", "inventory.yaml:3: a NUL byte"),
        (
            "nodes:\n  ? [a, b]\n  : {}\n",
            "inventory.yaml:2: nodes: a key must be text, not a list or a mapping",
        ),
        (
            "nodes:\n  node-a: {port: " + "9" * 5000 + "}\n",
            "inventory.yaml:2: nodes.node-a.port: unreadable value",
        ),
        (
            "nodes:\n  a: {pair: b}\n  b: {}\n",
            "inventory.yaml:2: nodes.a.pair: b does not name a as its pair",
        ),
        (
            "nodes:\n  a: {pair: b}\n  b: {pair: a}\n  c: {pair: b}\n",
            "inventory.yaml:4: nodes.c.pair: b is paired with a, not with c",
        ),
        (
            "groups: {voice: {max_unavailable: 0%}}\nnodes: {a: {groups: [voice]}}\n",
            "inventory.yaml:1: groups.voice.max_unavailable: expected a number of nodes (1 or more) or a percentage (1% to 100%), got '0%'",
        ),
        (
            "groups: {voice: {max_unavailable: 150%}}\nnodes: {a: {}}\n",
            "groups.voice.max_unavailable: expected",
        ),
        ("nodes:\n  'node a': {}\n", "inventory.yaml:2: nodes.node a: 'node a' is not a node name"),
        (
            "nodes:\n  a: {groups: [[x]]}\n",
            "inventory.yaml:2: nodes.a.groups.0: expected a group name, got a list",
        ),
        (
            "nodes:\n  a: {host: ''}\n",
            "inventory.yaml:2: nodes.a.host: expected a host name or address, got an empty text",
        ),
        (
            "defaults: {transport: local}\nnodes:\n  a: {}\n  b:\n    playbook: ./nosuch.yaml\n",
            "inventory.yaml:5: nodes.b.playbook: playbook './nosuch.yaml': no such file",
        ),
        (
            "defaults:\n  playbook: ./nosuch.yaml\nnodes:\n  a: {}\n",
            "inventory.yaml:2: defaults.playbook: playbook './nosuch.yaml': no such file",
        ),
    ],
)
def test_a_hostile_inventory_is_refused_quickly_naming_file_and_line(
    site: Site, capsys: pytest.CaptureFixture[str], text: str | bytes, expected: str
) -> None:
    path = site.inventory(text if isinstance(text, bytes) else text.replace("nodes:", "nodes:", 1))
    started = time.monotonic()
    output = refused(capsys, site, "check", inventory=path)
    assert time.monotonic() - started < 5
    assert expected in output


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("poll: 1s", "poll: 0"), "tiny.yaml:2: drain.poll: must be at least 0.1s, got 0"),
        (("timeout: 1m", "timeout: 0"), "tiny.yaml:2: drain.timeout: must be more than 0, got 0"),
        (
            ("timeout: 1m", "timeout: .nan"),
            "tiny.yaml:2: drain.timeout: not a duration: nan is not a finite number",
        ),
        (
            ("timeout: 1m", "timeout: .inf"),
            "tiny.yaml:2: drain.timeout: not a duration: inf is not a finite number",
        ),
        (
            ("timeout: 1m", "timeout: 99999999d"),
            "drain.timeout: not a duration: '99999999d' is longer than 366d",
        ),
        (('upgrade: "echo', 'upgrade: {timeout: 0, run: "echo'), None),
        (
            ('unblock: "rm -f WORK/blocked"', 'unblock: ""'),
            "tiny.yaml:8: steps.unblock.run: expected a command, got an empty text",
        ),
        (
            ('lock: "WORK/lock"', "lock: ''"),
            "tiny.yaml:3: lock: expected a path, got an empty text",
        ),
    ],
)
def test_a_value_outside_its_domain_is_refused_at_its_line(
    site: Site, capsys: pytest.CaptureFixture[str], change: tuple[str, str], expected: str | None
) -> None:
    text = PLAYBOOK.replace(*change)
    if expected is None:  # a step's timeout: 0 (a flow mapping on one line)
        text = text.replace('> WORK/version"', '> WORK/version"}')
        expected = "tiny.yaml:7: steps.upgrade.timeout: must be more than 0, got 0"
    site.playbook(text)
    assert expected in refused(capsys, site)
    assert expected in refused(capsys, site, "plan", "node-a", "--version", "1")
    assert expected in refused(capsys, site, "check")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--version", ""), "--version: expected a version, got ''"),
        (("--version", " "), "--version: expected a version, got ' '"),
        (("--version", "1\n2"), "--version: expected a version"),
        (("--version", "1", "--timeout", "0"), "--timeout: must be more than 0"),
        (("--version", "1", "--timeout", "0s"), "--timeout: must be more than 0"),
        (
            ("--version", "1", "--max-unavailable", "0%"),
            "--max-unavailable: a percentage must be from 1% to 100%",
        ),
    ],
)
def test_a_command_line_value_outside_its_domain_is_refused(
    site: Site, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    output = refused(capsys, site, "upgrade", "--group", "voice", "--yes", *args)
    assert expected in output


def test_an_inventory_that_is_a_fifo_is_refused_without_waiting_for_a_writer(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = site.root / "fifo.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    output = refused(capsys, site, "check", inventory=fifo)
    assert time.monotonic() - started < 5
    assert "fifo.yaml: not a regular file (a FIFO); refusing to read it" in output


def test_an_inventory_that_is_a_device_or_a_directory_is_refused(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "/dev/zero: not a regular file (a character device)" in refused(
        capsys, site, "check", inventory=Path("/dev/zero")
    )
    assert f"{site.root}: not a regular file (a directory)" in refused(
        capsys, site, "check", inventory=site.root
    )


def test_a_playbook_over_the_size_limit_is_refused_unread(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.playbook(PLAYBOOK + "#" * (17 * 1024 * 1024) + "\n")
    assert "tiny.yaml: larger than 16 MB; refusing to read it" in refused(capsys, site)


def start_record(site: Site, **data: object) -> str:
    inputs = {"command": "upgrade", "nodes": ["node-a"], "options": {"version": "1"},
              "inventory": str(site.root / "inventory.yaml"), **data}  # fmt: skip
    return json.dumps({"run": "R", "time": 1.0, "kind": "run-start", "node": None, "data": inputs})


CORRUPT: dict[str, object] = {
    "kind is a number": '{"kind": 5, "time": 1}',
    "data is text": '{"kind": "blocked", "node": "node-a", "data": "x", "time": 1}',
    "node is a list": '{"kind": "blocked", "node": ["node-a"], "time": 1}',
    "time is text": '{"kind": "blocked", "node": "node-a", "time": "noon"}',
    "no time": '{"kind": "reading", "node": "node-a", "data": {"active": 3}}',
    "not an object": "[1, 2, 3]",
    "nested too deep": "[" * 100_000 + "]" * 100_000,
    "binary": b"\xff\xfe\x00garbage",
    "forced sessions not a list": '{"kind": "forced", "node": "node-a", "time": 1, "data": {"sessions": 5}}',
    "start without inventory": {"inventory": None},
    "start with unknown option": {"options": {"bogus": 1}},
    "start with a bad timeout": {"options": {"timeout": "soon"}},
    "start with nodes not names": {"nodes": [["node-a"]]},
}


@pytest.mark.parametrize("corruption", list(CORRUPT))
@pytest.mark.parametrize(
    "command", [("status",), ("resume", "--yes"), ("history",), ("history", "--forced")]
)
def test_a_hand_corrupted_journal_gives_a_clear_message_never_a_traceback(
    site: Site, capsys: pytest.CaptureFixture[str], corruption: str, command: tuple[str, ...]
) -> None:
    runs = site.state / "runs"
    runs.mkdir(parents=True, mode=0o700)
    site.state.chmod(0o700)
    bad = CORRUPT[corruption]
    if isinstance(bad, dict):
        lines = [start_record(site, **bad).replace(', "inventory": null', "")]
    else:
        lines = [start_record(site), bad.decode("latin-1") if isinstance(bad, bytes) else str(bad)]
    (runs / "20261130T010000-abcd.jsonl").write_bytes(
        "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"
    )
    code, output = run(
        capsys, "-i", str(site.root / "inventory.yaml"), "--state-dir", str(site.state), *command
    )
    assert code in (0, 2), output  # status answers; a resumable run may be resumed
    assert "Traceback" not in output
    if isinstance(bad, dict) and command[0] == "resume":  # the start record itself is bad
        assert code == 2, output
        assert "start record is not readable" in output or "no unfinished run" in output
        assert list(site.work.iterdir()) == []  # resume never acts on a record it cannot read


# --- the state directory ----------------------------------------------------------------------


def upgrade(capsys: pytest.CaptureFixture[str], site: Site, *extra: str) -> tuple[int, str]:
    return run(capsys, "-i", str(site.root / "inventory.yaml"), "--state-dir", str(site.state),
               *extra, "upgrade", "node-a", "--version", "1", "--yes")  # fmt: skip


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
@pytest.mark.parametrize("command", ["upgrade", "status", "history", "resume"])
def test_a_state_directory_others_may_write_to_is_refused(
    site: Site, capsys: pytest.CaptureFixture[str], mode: int, command: str
) -> None:
    site.state.mkdir()
    site.state.chmod(mode)
    args = {"upgrade": ["upgrade", "node-a", "--version", "1", "--yes"], "status": ["status"],
            "history": ["history"], "resume": ["resume", "--yes"]}[command]  # fmt: skip
    code, output = run(
        capsys, "-i", str(site.root / "inventory.yaml"), "--state-dir", str(site.state), *args
    )
    assert code == 2, output
    assert f"state directory {site.state}: writable by others (mode {mode:o}); refusing" in output
    assert list(site.work.iterdir()) == [] and list(site.state.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_state_directory_owned_by_another_user_is_refused(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.state.mkdir(mode=0o700)
    os.chown(site.state, 65534, 65534)
    code, output = upgrade(capsys, site)
    assert code == 2 and "not by root (uid 0); refusing to use it" in output
    assert list(site.work.iterdir()) == []


def test_a_state_directory_that_cannot_be_created_is_refused_before_anything_runs(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    (site.root / "a-file").write_text("")
    site.state = site.root / "a-file" / "state"
    code, output = upgrade(capsys, site)
    assert (
        code == 2 and f"state directory {site.state}: cannot create it: Not a directory" in output
    )
    assert list(site.work.iterdir()) == []


def test_a_run_lock_symlink_is_refused_and_its_target_left_alone(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.state.mkdir(mode=0o700)
    target = site.root / "precious"
    target.write_text("keep me\n")
    target.chmod(0o644)
    (site.state / "run.lock").symlink_to(target)
    code, output = upgrade(capsys, site)
    assert code == 2 and "run.lock: cannot open the run lock: a symbolic link" in output
    assert target.read_text() == "keep me\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert list(site.work.iterdir()) == []


def test_a_journal_is_created_afresh_and_never_opened_through_a_symlink(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (runs / "R1.jsonl").symlink_to(target)
    for new, reason in ((True, "File exists"), (False, "a symbolic link")):
        with pytest.raises(UsageError, match=rf"R1\.jsonl: cannot open it: {reason}"):
            Journal(str(tmp_path), "R1", new=new)
    (runs / "R2.jsonl").write_text("")
    with pytest.raises(UsageError, match=r"R2\.jsonl: cannot open it: File exists"):
        Journal(str(tmp_path), "R2", new=True)  # a new run never appends to an existing file
    assert target.read_text() == "keep me\n"
