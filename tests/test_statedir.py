"""The state directory is checked first, and a journal that fails mid-run stops the run: on a
small tmpfs mounted for the test (the suite runs as root), filled to chosen levels."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelp import Ran, run_cli
from conftest import start_sessions

from upgradectl.statedir import RESERVE_PER_NODE, RESERVE_PER_RUN

RESERVE = RESERVE_PER_RUN + RESERVE_PER_NODE  # of a run of one node
SIZE = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until only about ``leave`` bytes are free."""
    with (disk / "filler").open("wb") as filler:
        filler.write(b"\0" * (SIZE - leave))


def upgrade(site: Path, state_dir: Path, *extra: str) -> Ran:
    return run_cli(
        "-i", str(site / "inventory.yaml"), "--state-dir", str(state_dir),
        "upgrade", "node-a", "--version", "2.0", "--yes", *extra,
    )  # fmt: skip


def untouched(site: Path) -> bool:
    work = site / "work"
    return not any((work / name).exists() for name in ("blocked", "lock", "version"))


@pytest.mark.parametrize("leave", [0, 4096, RESERVE // 2, RESERVE - 8192])
def test_a_state_dir_without_room_for_the_journal_is_refused_before_any_node_is_touched(
    local_site: Path, small_disk: Path, leave: int
) -> None:
    fill(small_disk, leave)
    ran = upgrade(local_site, small_disk / "state")
    assert ran.code == 2, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    assert str(small_disk / "state") in ran.stderr and "nothing was touched" in ran.stderr
    assert untouched(local_site)


@pytest.mark.parametrize("option", ["--report", "--metrics-file"])
def test_an_output_file_that_cannot_be_written_is_refused_before_any_node_is_touched(
    local_site: Path, tmp_path: Path, option: str
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    ran = upgrade(local_site, tmp_path / "state", option, str(a_file / "out"))
    assert ran.code == 2, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    assert f"{option} {a_file / 'out'}: cannot be written" in ran.stderr
    assert untouched(local_site)


# A force names the sessions it will cut, in the journal, before it cuts them: here so many
# (and so long) that the record cannot fit in what the disk has left after the reserve check.
LONG_SESSIONS = """\
  sessions: "for n in $(seq 400); do printf 'call-%s %0900d\\\\n' $n 0; done"
  force: "rm -f {{ dir }}/sessions/*; touch {{ dir }}/forced"
"""


def test_a_journal_that_cannot_be_written_mid_run_stops_the_run_and_puts_the_node_back(
    local_site: Path, small_disk: Path
) -> None:
    playbook = local_site / "files.yaml"
    playbook.write_text(
        playbook.read_text()
        .replace("timeout: 30s", "timeout: 1s")
        .replace("abort", "force, max_stragglers: 3")
        + LONG_SESSIONS
    )
    start_sessions(local_site, {"call-1": 600})
    fill(small_disk, RESERVE + 64 * 1024)  # the reserve, and more; not the 360 KiB record
    ran = upgrade(local_site, small_disk / "state")
    assert ran.code == 1, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    assert "the journal cannot be written (No space left on device)" in ran.stderr
    work = local_site / "work"
    assert not (work / "forced").exists()  # its intention unwritten, the cut never happened
    assert (work / "sessions" / "call-1").exists()
    assert not (work / "blocked").exists()  # back in service
    assert not (work / "version").exists() and not (work / "lock").exists()
