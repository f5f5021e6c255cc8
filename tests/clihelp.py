"""Running the real command line against a lab, and making playbook variants for a test."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from schemacheck import schema_errors

from upgradectl.cli import main
from upgradectl.lab import Lab, SshHome
from upgradectl.loader import bundled_playbooks


@dataclass
class Ran:
    """One finished CLI run: exit code, output, and the JSON events when --json was given."""

    code: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """The final summary event."""
        return next(e for e in reversed(self.events) if e["event"] == "summary")

    def kinds(self, node: str | None = None) -> list[str]:
        """The event kinds, in order (of one node when given)."""
        return [e["event"] for e in self.events if node is None or e.get("node") == node]

    def step_output(self, step: str | None = None) -> str:
        """What the steps printed (their step-output events, shown with -v); of one step when
        given."""
        return "\n".join(
            e["message"] for e in self.events
            if e["event"] == "step-output"
            and (step is None or e["message"].startswith(f"{step}:"))
        )  # fmt: skip

    def outcome(self) -> str:
        """The nodes' results and what the steps printed, for a failed assertion (not the
        commands); a run that ended without a summary (a crash) shows its stderr all the same."""
        ended = [e["nodes"] for e in self.events if e["event"] == "summary"] or ["(no summary)"]
        return "\n".join([str(ended[-1]), self.step_output(), self.stderr])


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Ran:
    """``python -m upgradectl ARGS`` with no terminal and no stdin, as cron would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "upgradectl", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    return _ran(args, done.returncode, done.stdout, done.stderr)


def run_cli_here(*args: str) -> Ran:
    """``upgradectl ARGS`` run in this process: the same entry point (``main``, its exit codes),
    standard input empty and no terminal, as ``run_cli`` runs it, without the ~0.2 s of CPU a
    fresh interpreter spends importing. For commands a test runs by the hundred (the kill sweep's
    status, resume and history after each kill); the killed controller itself stays a process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        mock.patch("sys.stdin", io.StringIO()),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            main(list(args))
        except SystemExit as end:
            code = end.code if isinstance(end.code, int) else 1
    return _ran(args, code, stdout.getvalue(), stderr.getvalue())


def _ran(args: tuple[str, ...], code: int, stdout: str, stderr: str) -> Ran:
    events = []
    if "--json" in args:
        events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    # Every event of every run the tests make, and every document, follows the shipped schema.
    assert not (problems := schema_errors(events)), "\n".join(problems)
    return Ran(code, stdout, stderr, events)


class LabCli:
    """The CLI pointed at one lab, with its own HOME and state directory."""

    def __init__(self, lab: Lab, home: SshHome, state_dir: Path) -> None:
        self.lab = lab
        self.home = home
        self.state_dir = state_dir

    def __call__(self, *args: str, inventory: Path | None = None) -> Ran:
        """Run a command with --json against the lab's inventory."""
        return run_cli(
            "-i", str(inventory or self.lab.inventory_path), "--state-dir", str(self.state_dir), "--json", *args,
            env=self.home.env,
        )  # fmt: skip

    def ask(self, command: str, node: str = "node-1") -> str:
        """A control command to a lab node's call server, its answer stripped."""
        return self.lab.node(node).control(command).strip()

    def playbook_variant(self, name: str, drain: dict[str, Any] | None = None, **steps: Any) -> str:
        """A copy of the bundled lab playbook with fast polls and some steps replaced (None removes one)."""
        playbook = yaml.safe_load(Path(bundled_playbooks()["lab"]).read_text())
        playbook["name"] = name
        playbook["drain"] = {**playbook["drain"], "poll": "0.2s", **(drain or {})}
        for step, spec in steps.items():
            if spec is None:
                playbook["steps"].pop(step, None)
            else:
                playbook["steps"][step] = spec
        path = self.lab.inventory_path.parent / f"{name}.yaml"
        path.write_text(yaml.safe_dump(playbook))
        return str(path)
