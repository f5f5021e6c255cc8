"""`status` for people shows each node's line as soon as that node (and those before it) answered,
not once the whole fleet has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A node's reading waits until its `go` exists (20 s at most), and says "blocked" if it did.
PLAYBOOK = """\
name: held
lock: "{{ dir }}/lock"
steps:
  is_blocked: "i=0; while [ ! -e {{ go }} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; test -e {{ go }}"
  active: "echo 0"
"""


def test_status_prints_a_nodes_line_while_a_later_node_is_still_being_asked(
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    (tmp_path / "held.yaml").write_text(PLAYBOOK)
    (tmp_path / "inventory.yaml").write_text(
        f"defaults: {{transport: local, playbook: ./held.yaml, vars: {{dir: {tmp_path}}}}}\n"
        "nodes:\n"
        f"  node-a: {{vars: {{go: {tmp_path}}}}}\n"  # a folder that exists: no wait
        f"  node-b: {{vars: {{go: {go}}}}}\n"
    )
    args = ["-i", "inventory.yaml", "--state-dir", "state", "status"]
    with subprocess.Popen(
        [sys.executable, "-m", "upgradectl", *args], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as status:  # fmt: skip
        assert status.stdout is not None and status.stderr is not None
        first = status.stdout.readline()
        go.touch()  # only now may node-b answer "blocked"; printed all at once, it would not
        rest, errors = status.stdout.read(), status.stderr.read()
        assert status.wait(timeout=60) == 0, errors
    assert first == "node-a: blocked, 0 active\n"
    assert rest == "node-b: blocked, 0 active\n"
