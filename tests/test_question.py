"""Asking before acting (terraform's way), global options anywhere, --version, bare resume and
downgrades, against a node on this machine (`transport: local`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import Ran, run_cli
from conftest import sessions_until_blocked, start_sessions

import upgradectl
from upgradectl.cli.question import describe
from upgradectl.intent import Intent, older


def site_args(site: Path) -> list[str]:
    return ["-i", str(site / "inventory.yaml"), "--state-dir", str(site / "state")]


def with_stdin_a_terminal(site: Path, args: list[str], answer: bytes) -> Ran:
    """The CLI with a terminal on stdin only (its output piped, as through `tee`), the answer
    typed ahead."""
    controller, terminal = os.openpty()
    os.write(controller, answer)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "upgradectl", *site_args(site), *args],
            stdin=terminal, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)
    return Ran(done.returncode, done.stdout, done.stderr)


def test_without_a_terminal_and_without_yes_it_refuses_and_touches_nothing(
    local_site: Path,
) -> None:
    ran = run_cli(*site_args(local_site), "upgrade", "node-a", "--version", "2")
    assert ran.code == 2
    assert "no terminal to ask on" in ran.stderr and "pass --yes" in ran.stderr
    assert not (local_site / "work" / "blocked").exists()
    assert not (local_site / "state").exists()  # not even a journal: nothing was started


def test_piped_through_tee_at_a_terminal_it_still_asks_showing_sessions_and_the_most_cut(
    local_site: Path,
) -> None:
    args = ["upgrade", "node-a", "--version", "2", "--stragglers", "force", "--max-stragglers", "3"]
    with sessions_until_blocked(local_site, {"call-1": 0.0, "call-2": 0.0}):
        ran = with_stdin_a_terminal(local_site, args, b"y\n")
    assert ran.code == 0, ran.stdout + ran.stderr
    assert "upgrade to version 2, 1 node(s), in this order:" in ran.stderr
    assert "node-a" in ran.stderr and "2 active" in ran.stderr and "at most 3 cut" in ran.stderr
    assert "live sessions now: 2; sessions that could be cut at most: 3" in ran.stderr
    assert "Proceed? [y/N]" in ran.stderr
    assert (local_site / "work" / "version").read_text().strip() == "2"


def test_answering_no_touches_nothing(local_site: Path) -> None:
    ran = with_stdin_a_terminal(local_site, ["drain", "node-a"], b"n\n")
    assert ran.code == 1
    assert "the operator answered no" in ran.stdout
    assert not (local_site / "work" / "blocked").exists()


def test_global_options_are_accepted_anywhere_on_the_line(local_site: Path) -> None:
    ran = run_cli(
        "upgrade", "node-a", "--version", "2", "--yes", "-q", "--json", *site_args(local_site)
    )
    assert ran.code == 0, ran.stdout + ran.stderr
    summary = json.loads(ran.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["exit_code"] == 0
    planned = run_cli("plan", "node-a", "--json", *site_args(local_site), "--version", "3")
    assert planned.code == 0, planned.stderr
    assert json.loads(planned.stdout)["nodes"][0]["node"] == "node-a"
    # A command's own option keeps its value, even one that looks like a global option.
    varied = run_cli("plan", "node-a", "--var", "x=-q", "--version", "-v", *site_args(local_site))
    assert varied.code == 0, varied.stderr
    assert "echo -v > " in varied.stdout


def test_version_says_the_tools_version() -> None:
    ran = run_cli("--version")
    assert (ran.code, ran.stdout) == (0, f"upgradectl {upgradectl.__version__}\n")


def versioned_site(site: Path, running: str) -> None:
    playbook = site / "files.yaml"
    playbook.write_text(playbook.read_text() + '  version: "cat {{ dir }}/version"\n')
    (site / "work" / "version").write_text(running + "\n")


def test_a_downgrade_needs_allow_downgrade_and_is_said_as_such(local_site: Path) -> None:
    versioned_site(local_site, "7.0")
    refused = run_cli(*site_args(local_site), "upgrade", "node-a", "--version", "6.0", "--yes")
    assert refused.code == 2, refused.stdout + refused.stderr
    assert "node-a runs 7.0, newer than 6.0: a downgrade needs --allow-downgrade" in refused.stdout
    assert (local_site / "work" / "version").read_text().strip() == "7.0"
    allowed = run_cli(
        *site_args(local_site), "--json", "upgrade", "node-a", "--version", "6.0", "--yes",
        "--allow-downgrade",
    )  # fmt: skip
    assert allowed.code == 0, allowed.stdout + allowed.stderr
    assert any(
        e["message"] == "downgrade: 7.0 -> 6.0" for e in allowed.events if e["event"] == "warning"
    )
    assert (local_site / "work" / "version").read_text().strip() == "6.0"


def test_the_question_names_a_downgrade() -> None:
    intent = Intent("upgrade", "6.0", ["node-a"], {"node-a": 4}, {"node-a": 0}, {"node-a": "7.0"})
    assert "DOWNGRADE: node-a runs 7.0; this installs 6.0" in describe(intent)


@pytest.mark.parametrize(
    ("version", "than", "is_older"),
    [("6.0", "7.0", True), ("6.10", "6.9", False), ("2.0", "2.0.1", True), ("2.0", "2.0", False)],
)
def test_versions_compare_their_numbers_as_numbers(version: str, than: str, is_older: bool) -> None:
    assert older(version, than) is is_older


def test_bare_resume_carries_on_the_newest_interrupted_run_and_says_which(local_site: Path) -> None:
    start_sessions(local_site, {"call-1": 4.0})
    with subprocess.Popen(
        [sys.executable, "-m", "upgradectl", *site_args(local_site), "--json", "drain", "node-a",
         "--yes"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    ) as drain:  # fmt: skip
        assert drain.stdout is not None
        for line in drain.stdout:
            if json.loads(line)["event"] == "blocked":
                drain.send_signal(signal.SIGTERM)
                break
        run_id = None
        for line in drain.stdout:
            event = json.loads(line)
            run_id = event.get("run_id", run_id)
        assert drain.wait(timeout=30) == 5
    resumed = run_cli(*site_args(local_site), "resume", "--yes")
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert f"resuming run {run_id} (the newest run left unfinished): node-a from block" in (
        resumed.stderr
    )


def completions(site: Path, words: str) -> list[str]:
    """What bash completion offers for the last of ``words``."""
    done = subprocess.run(
        [sys.executable, "-m", "upgradectl"],
        env={**os.environ, "_UPGRADECTL_COMPLETE": "bash_complete", "COMP_WORDS": words,
             "COMP_CWORD": str(len(words.split()) - 1)},
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return [line.split(",", 1)[1] for line in done.stdout.splitlines()]


def test_shell_completion_offers_nodes_groups_and_playbooks(local_site: Path) -> None:
    inventory = local_site / "inventory.yaml"
    inventory.write_text(inventory.read_text() + "  node-b: {groups: [voice]}\n  lb: {}\n")
    prefix = f"upgradectl -i {inventory}"
    assert completions(local_site, f"{prefix} upgrade node-") == ["node-a", "node-b"]
    assert completions(local_site, f"{prefix} upgrade --group v") == ["voice"]
    assert completions(local_site, f"{prefix} plan node-a --playbook ha") == ["haproxy"]


def test_a_percentage_over_100_is_refused_before_anything_is_touched(local_site: Path) -> None:
    ran = run_cli(
        *site_args(local_site), "upgrade", "node-a", "--version", "2", "--yes",
        "--max-unavailable", "150%",
    )  # fmt: skip
    assert ran.code == 2
    assert "--max-unavailable: a percentage must be from 1% to 100%, got '150%'" in ran.stderr
    assert not (local_site / "work" / "version").exists()
