"""The kill sweep: a controller killed (SIGKILL) right after each record of its journal, then
`status` and `resume`; whatever the kill point, the end is the same: nodes in service (blocked
only if they were blocked by hand), upgraded exactly once, no lock left, history consistent.

Nodes are `transport: local` (SSH is not the point here: tests/test_safety.py kills controllers
over real sshd); the kill is the journal's test hook, UPGRADECTL_TEST_KILL_AFTER_RECORD.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from clihelp import Ran, run_cli, run_cli_here
from conftest import wait_for

# A service of files on this machine: blocked is a flag; sessions are files holding their end
# time; each upgrade appends a line to `upgrades`, so a repeated upgrade shows.
PLAYBOOK = """\
name: files
drain: {timeout: 1s, poll: 0.1s, stragglers: force, max_stragglers: 3, settle: 1}
lock: "{{ dir }}/lock"
steps:
  is_blocked: "test -e {{ dir }}/blocked"
  block: "touch {{ dir }}/blocked"
  active:
    run: "now=$(date +%s); n=0; for f in {{ dir }}/sessions/*; do [ -e \\"$f\\" ] && [ $(cat $f) -gt $now ] && n=$((n+1)); done; echo $n"
  sessions: "now=$(date +%s); for f in {{ dir }}/sessions/*; do [ -e $f ] && [ $(cat $f) -gt $now ] && echo $(basename $f) 5; done; true"
  force: "rm -f {{ dir }}/sessions/*"
  upgrade: "echo {{ version | quote }} > {{ dir }}/version; echo {{ version | quote }} >> {{ dir }}/upgrades"
  verify: "test -s {{ dir }}/version"
  unblock: "rm -f {{ dir }}/blocked"
  version: "cat {{ dir }}/version 2>/dev/null || echo 1.0"
"""


@dataclass(frozen=True)
class Scenario:
    """A run to kill: its nodes, their sessions (name -> seconds), and who is blocked by hand."""

    nodes: tuple[str, ...] = ("node-a",)
    sessions: dict[str, float] | None = None
    hand_blocked: tuple[str, ...] = ()
    command: tuple[str, ...] = ("upgrade", "--version", "2.0", "--yes")
    named: bool = True  # False: the playbook has no `sessions` step, only counts

    @property
    def upgrades(self) -> bool:
        """Whether the run upgrades (a `drain` leaves its nodes blocked and not upgraded)."""
        return self.command[0] == "upgrade"


class Site:
    """The nodes of one attempt, their files, and the command line pointed at them."""

    def __init__(self, root: Path, scenario: Scenario) -> None:
        self.root = root
        self.scenario = scenario
        root.mkdir()
        (root / "files.yaml").write_text(
            PLAYBOOK
            if scenario.named
            else "".join(line for line in PLAYBOOK.splitlines(True) if "  sessions:" not in line)
        )
        nodes = "".join(
            f"  {name}: {{groups: [voice], vars: {{dir: {root / name}}}}}\n"
            for name in scenario.nodes
        )
        (root / "inventory.yaml").write_text(
            "defaults: {transport: local, playbook: ./files.yaml}\n"
            "groups:\n  voice: {max_unavailable: 1}\n"
            f"nodes:\n{nodes}"
        )
        now = time.time()
        for name in scenario.nodes:
            (root / name / "sessions").mkdir(parents=True)
            for session, lasts in (scenario.sessions or {}).items():
                (root / name / "sessions" / session).write_text(str(int(now + lasts)))
            if name in scenario.hand_blocked:
                (root / name / "blocked").touch()

    def __call__(self, *args: str, kill_after: int = 0, as_json: bool = True) -> Ran:
        env = {"UPGRADECTL_TEST_KILL_AFTER_RECORD": str(kill_after)}
        return run_cli(*self._site_args(as_json), *args, env=env)

    def here(self, *args: str, as_json: bool = True) -> Ran:
        """A command run in this process (``run_cli_here``): the sweep runs four after each of
        its hundred kills, and a fresh interpreter for each was most of the sweep's CPU."""
        return run_cli_here(*self._site_args(as_json), *args)

    def _site_args(self, as_json: bool) -> list[str]:
        state = ["--state-dir", str(self.root / "state")]
        return ["-i", str(self.root / "inventory.yaml"), *state, *(["--json"] if as_json else [])]

    def start(self, kill_after: int) -> Ran:
        command, *options = self.scenario.command
        return self(command, *self.scenario.nodes, *options, kill_after=kill_after)

    def file(self, node: str, name: str) -> Path:
        return self.root / node / name


SCENARIOS = {
    "single-node upgrade": Scenario(),
    "forced drain": Scenario(sessions={"call-1": 600}),
    "hand-blocked node": Scenario(hand_blocked=("node-a",)),
    "two-node fleet": Scenario(nodes=("node-a", "node-b")),
    "forced drain command": Scenario(sessions={"call-1": 600}, command=("drain", "--yes")),
    "unnamed forced drain": Scenario(sessions={"call-1": 600, "call-2": 600}, named=False),
}


def check_the_end(site: Site, kill_after: int) -> None:
    """status + resume after the kill, then the end every kill point must reach."""
    where = f"killed after record {kill_after}"
    status = site.here("status")
    assert status.code == 0, f"{where}: {status.stdout}{status.stderr}"
    if status.events[0]["unfinished_runs"]:  # (status closes a run whose nodes all finished)
        resumed = site.here("resume", "--yes")
        assert resumed.code == 0, f"{where}: {resumed.stdout}{resumed.stderr}"
    again = site.here("status").events[0]
    assert again["unfinished_runs"] == [], where
    upgrades = site.scenario.upgrades
    # A drain leaves its nodes blocked, by this tool, on purpose: that is what status says.
    left = set() if upgrades else set(site.scenario.nodes)
    assert set(again["left_out_of_service"]) == left, where
    for node in site.scenario.nodes:
        blocked = site.file(node, "blocked").exists()
        expected = node in site.scenario.hand_blocked or not upgrades
        assert blocked == expected, f"{where}: {node} blocked"
        if upgrades:
            assert site.file(node, "version").read_text().strip() == "2.0", where
            done = site.file(node, "upgrades").read_text().splitlines()
            assert done == ["2.0"], f"{where}: {node} upgraded {len(done)} times"
        else:
            assert not site.file(node, "upgrades").exists(), f"{where}: a drain upgraded"
        assert not site.file(node, "lock").exists(), f"{where}: {node}'s lock left"
    forced = site.here("history", "--forced").stdout
    if site.scenario.sessions and site.scenario.named:
        assert "call-1" in forced, f"{where}: the cut is missing from the helpdesk report"
    elif site.scenario.sessions:  # a count, never a name made up
        text = site.here("history", "--forced", as_json=False).stdout
        assert "2 unnamed sessions" in text and "call-" not in text, f"{where}: {text}"


@pytest.mark.slow
@pytest.mark.timeout(600)  # a controller run per record: 30 to 110 s beside other tests on 2 cores
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_controller_killed_at_every_record_is_carried_to_the_same_end(
    tmp_path: Path, name: str
) -> None:
    scenario = SCENARIOS[name]
    killed_at = []
    for kill_after in range(1, 60):
        site = Site(tmp_path / f"kill-{kill_after}", scenario)
        ran = site.start(kill_after)
        if ran.code != -9:  # the run wrote fewer records: every kill point is covered
            assert ran.code == 0, ran.stdout + ran.stderr
            break
        killed_at.append(kill_after)
        check_the_end(site, kill_after)
    assert len(killed_at) >= 7, killed_at


def test_an_upgrade_that_finished_as_its_controller_died_is_asked_about_not_run_again(
    tmp_path: Path,
) -> None:
    # The kill lands between the upgrade's end and its `upgraded` record: the journal cannot
    # know; the node's `version` step can.
    site = Site(tmp_path / "site", Scenario())
    playbook = site.root / "files.yaml"
    upgrade = 'upgrade: "echo {{ version | quote }} > {{ dir }}/version; echo {{ version | quote }} >> {{ dir }}/upgrades"'
    assert upgrade in playbook.read_text()
    playbook.write_text(playbook.read_text().replace(upgrade, upgrade[:-1] + '; kill -9 $PPID"'))
    assert site.start(0).code == -9
    resumed = site("resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert "already at version 2.0: the upgrade is not run again" in resumed.stdout
    assert site.file("node-a", "upgrades").read_text().splitlines() == ["2.0"]
    assert not site.file("node-a", "blocked").exists()


def test_without_a_version_step_resume_says_it_runs_the_upgrade_again(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", Scenario())
    playbook = site.root / "files.yaml"
    text = playbook.read_text()
    playbook.write_text(text[: text.index("  version:")])
    assert site.start(5).code == -9  # killed right after its `upgrading` record
    resumed = site("resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert "re-running the upgrade" in resumed.stdout and "safe to repeat" in resumed.stdout


def test_plan_says_when_an_upgrade_must_be_safe_to_repeat(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", Scenario())
    with_version = site("plan", "node-a", "--version", "2.0")
    playbook = site.root / "files.yaml"
    text = playbook.read_text()
    playbook.write_text(text[: text.index("  version:")])
    without = run_cli("-i", str(site.root / "inventory.yaml"), "plan", "node-a", "--version", "2")
    assert with_version.code == 0 and without.code == 0, without.stderr
    assert "safe to repeat (idempotent)" in without.stdout
    assert "idempotent" not in with_version.stdout


def test_a_killed_dry_run_is_neither_listed_nor_resumed(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", Scenario())
    killed = site("upgrade", "node-a", "--version", "2.0", "--dry-run", kill_after=1)
    assert killed.code == -9
    assert site("status").events[0]["unfinished_runs"] == []
    (run_id,) = [path.stem for path in (site.root / "state" / "runs").glob("*.jsonl")]
    resumed = site("resume", run_id, "--yes")
    assert resumed.code == 2 and "was a dry run: it changed nothing" in resumed.stderr
    assert not site.file("node-a", "blocked").exists()


def test_bare_resume_after_a_stopped_fleet_run_carries_on_every_node_it_did_not_finish(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site", Scenario(nodes=("node-a", "node-b"), sessions={"call": 600}))
    root = str(site.root)
    stopped = subprocess.Popen(
        [sys.executable, "-m", "upgradectl", "-i", f"{root}/inventory.yaml", "--state-dir",
         f"{root}/state", "upgrade", "--all", "--version", "2.0", "--yes"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: any(site.file(node, "blocked").exists() for node in site.scenario.nodes),
            30,
            what="the first node's block",
        )
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(30) == 5  # one node interrupted and put back, the other skipped
    finally:
        stopped.kill()
        stopped.wait()
    for node in site.scenario.nodes:
        (site.root / node / "sessions" / "call").unlink()
    resumed = site("resume", "--yes")  # no run id: the run ended, but interrupted
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    for node in site.scenario.nodes:
        assert site.file(node, "version").read_text().strip() == "2.0", node
        assert not site.file(node, "blocked").exists(), node


# The controller's pid, from the node lock it holds: the unblock goes in one round trip with
# verify (a shell of its own runs each), so its $PPID is not the controller.
KILL_THE_CONTROLLER = "kill -9 $(sed -n 's/.*\"pid\": \\([0-9]*\\).*/\\1/p' {{ dir }}/lock)"


def replace_step(site: Site, step: str, run: str) -> None:
    """Give the site's playbook another command for ``step``."""
    playbook = site.root / "files.yaml"
    lines = playbook.read_text().splitlines()
    (index,) = [n for n, line in enumerate(lines) if line.startswith(f"  {step}: ")]
    lines[index] = f"  {step}: {json.dumps(run)}"
    playbook.write_text("\n".join(lines) + "\n")


def test_a_cut_the_controller_died_during_is_reported_not_confirmed_then_reconciled(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site", Scenario(sessions={"call-1": 600}))
    replace_step(site, "force", "rm -f {{ dir }}/sessions/*; kill -9 $PPID")
    assert site.start(0).code == -9  # between the force and its `forced` record
    before = site("history", "--forced").stdout
    assert "call-1" in before and "not confirmed: controller died" in before
    resumed = site("resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    after = site("history", "--forced")
    (session,) = [json.loads(line) for line in after.stdout.splitlines()]
    assert session["id"] == "call-1"
    assert session["cut"] == "not confirmed: controller died; gone when resume looked"
    assert site.file("node-a", "upgrades").read_text().splitlines() == ["2.0"]


def unnamed_cut_killed(tmp_path: Path) -> Site:
    """Two sessions the playbook cannot name, cut by a force that kills its controller."""
    site = Site(tmp_path / "site", Scenario(sessions={"call-1": 600, "call-2": 600}, named=False))
    replace_step(site, "force", "rm -f {{ dir }}/sessions/*; kill -9 $PPID")
    assert site.start(0).code == -9  # between the force and its `forced` record
    before = site("history", "--forced", as_json=False).stdout
    assert "2 unnamed sessions" in before and "cut (not confirmed: controller died)" in before
    return site


def test_an_unnamed_cut_the_controller_died_during_is_counted_by_resume(tmp_path: Path) -> None:
    site = unnamed_cut_killed(tmp_path)
    resumed = site("resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    (forced,) = [e for e in resumed.events if e["event"] == "forced"]
    assert (forced["count"], forced["confirmed"], forced["sessions"]) == (2, False, [])
    assert "2 unnamed: count went from 2 to 0 when resume looked" in forced["message"]
    (line,) = [json.loads(line) for line in site("history", "--forced").stdout.splitlines()]
    assert "id" not in line and line["unnamed"] == 2
    assert (
        line["cut"] == "not confirmed: controller died; count went from 2 to 0 when resume looked"
    )
    assert site.file("node-a", "upgrades").read_text().splitlines() == ["2.0"]


def test_an_unnamed_cut_resume_cannot_count_stays_not_confirmed(tmp_path: Path) -> None:
    site = unnamed_cut_killed(tmp_path)
    playbook = site.root / "files.yaml"
    (count,) = [line for line in playbook.read_text().splitlines() if line.startswith("    run: ")]
    playbook.write_text(playbook.read_text().replace(count, "    run: echo not-a-count"))
    site("resume", "--yes")  # the drain cannot count either: whatever it ends with, the cut stays
    (line,) = [json.loads(line) for line in site("history", "--forced").stdout.splitlines()]
    assert (line["unnamed"], line["cut"]) == (2, "not confirmed: controller died")


def test_an_unnamed_cut_resume_could_not_count_is_journalled_not_confirmed(
    tmp_path: Path,
) -> None:
    site = unnamed_cut_killed(tmp_path)
    # The count is unreadable once, on its second read: the probe's is fine, resume's is not.
    flaky = site.file("node-a", "flaky")
    flaky.write_text("2")
    playbook = site.root / "files.yaml"
    once = (
        f"if [ -e {flaky} ]; then n=$(cat {flaky}); echo $((n-1)) > {flaky};"
        f" if [ $n -eq 1 ]; then rm {flaky}; echo unreadable; exit 0; fi; fi; "
    )
    playbook.write_text(playbook.read_text().replace('    run: "', f'    run: "{once}', 1))
    resumed = site("resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert not flaky.exists()
    (forced,) = [e for e in resumed.events if e["event"] == "forced"]
    assert (forced["count"], forced["active_before"], forced["active_after"]) == (2, 2, None)
    (line,) = [json.loads(line) for line in site("history", "--forced").stdout.splitlines()]
    assert (line["unnamed"], line["cut"]) == (2, "not confirmed: controller died")


def test_a_cut_seen_gone_is_reported_confirmed(tmp_path: Path) -> None:
    site = Site(tmp_path / "site", Scenario(sessions={"call-1": 600}))
    assert site.start(0).code == 0
    (session,) = [json.loads(line) for line in site("history", "--forced").stdout.splitlines()]
    assert (session["id"], session["cut"]) == ("call-1", "confirmed")


def test_an_unblock_that_worked_as_the_controller_died_is_found_so_on_resume(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site", Scenario())
    replace_step(site, "unblock", f"rm -f {{{{ dir }}}}/blocked; {KILL_THE_CONTROLLER}")
    assert site.start(0).code == -9
    replace_step(site, "unblock", "echo must not run again; exit 1")
    resumed = site("resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    # The node answers for itself: in service, on the version (the probe sees it so first).
    assert resumed.summary["nodes"]["node-a"]["result"] == "current"
    assert not site.file("node-a", "blocked").exists()
    assert site("status").events[0]["left_out_of_service"] == {}


def test_without_a_version_step_an_unblock_that_worked_is_asked_about_not_repeated(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site", Scenario())
    playbook = site.root / "files.yaml"
    text = playbook.read_text()
    playbook.write_text(text[: text.index("  version:")])  # nothing can say "current"
    replace_step(site, "unblock", f"rm -f {{{{ dir }}}}/blocked; {KILL_THE_CONTROLLER}")
    assert site.start(0).code == -9
    replace_step(site, "unblock", "echo must not run again; exit 1")
    resumed = site("resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert "found in service: the unblock before the crash worked" in resumed.stdout
    assert site("status").events[0]["left_out_of_service"] == {}


def test_a_block_that_worked_as_the_controller_died_is_asked_about_not_repeated(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path / "site", Scenario())
    # The block's read-back goes with it in one round trip: its $PPID is not the controller.
    replace_step(site, "block", f"touch {{{{ dir }}}}/blocked; {KILL_THE_CONTROLLER}")
    assert site.start(0).code == -9  # between the block and its `blocked` record
    replace_step(site, "block", "echo must not run again; exit 1")
    resumed = site("resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert "the block before the crash worked" in resumed.stdout
    assert site.file("node-a", "version").read_text().strip() == "2.0"
    assert not site.file("node-a", "blocked").exists()
