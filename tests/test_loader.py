"""Bad input gets a clear error naming the file, line and key, exit code 2, and nothing is touched."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from upgradectl.cli import main

PLAYBOOK = """\
name: tiny
drain: {timeout: 1m, poll: 1s}
steps:
  block: "touch {{ dir }}/blocked"
  active: {run: "echo 0 active", parse: "(\\\\d+) active"}
  upgrade: "echo {{ version | quote }} > {{ dir }}/version"
  unblock: "rm -f {{ dir }}/blocked"
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit code, everything it printed)."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out + err


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An inventory dir with a valid playbook and a local node whose work dir must stay untouched."""
    (tmp_path / "work").mkdir()
    write(tmp_path, "tiny.yaml", PLAYBOOK)
    return tmp_path


def inventory(site: Path, text: str) -> str:
    return str(write(site, "inventory.yaml", text))


GOOD = """\
defaults: {transport: local, playbook: ./tiny.yaml, vars: {dir: WORK}}
nodes:
  node-a: {}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "nodes:\n  node-a: {host: [unclosed\n",
            "inventory.yaml:3: malformed YAML: did not find expected ',' or ']' (while parsing a flow sequence, from line 2)",
        ),
        (
            "nodes:\n  node-a:\n    hots: 10.0.0.1\n",
            "inventory.yaml:3: nodes.node-a.hots: unknown key (did you mean 'host'?)",
        ),
        (
            "nodes:\n  node-a:\n    port: 99999\n",
            "inventory.yaml:3: nodes.node-a.port: not a port number",
        ),
        (
            "nodes:\n  node-a: {pair: node-z}\n",
            "inventory.yaml:2: nodes.node-a.pair: unknown node 'node-z'",
        ),
        (
            "nodes:\n  node-a: {groups: [voice]}\n",
            "inventory.yaml:2: nodes.node-a.groups.0: unknown group 'voice'",
        ),
        ("nodes: {}\n", "inventory.yaml:1: nodes: the inventory has no nodes"),
        (
            "groups:\n  voice: {max_unavailable: 0}\nnodes:\n  a: {}\n",
            "inventory.yaml:2: groups.voice.max_unavailable: expected a number of nodes (1 or more)",
        ),
        ("nodes:\n  a: {}\n  a: {}\n", "inventory.yaml:3: nodes.a: duplicate key"),
    ],
)
def test_a_bad_inventory_names_file_line_and_key(
    site: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    code, output = run(capsys, "-i", inventory(site, text), "check")
    assert code == 2
    assert expected in output


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("timeout: 1m", "timeout: 1hour"), "tiny.yaml:2: drain.timeout: not a duration: '1hour'"),
        (
            ('parse: "(\\\\d+) active"', 'parse: "(\\\\d+ active"'),
            "tiny.yaml:5: steps.active.parse: bad regular expression",
        ),
        (
            ("steps:", "steps:\n  blokc: x"),
            "tiny.yaml:4: steps.blokc: unknown key (did you mean 'block'?)",
        ),
        (
            ("poll: 1s}", "poll: 1s, stragglers: maybe}"),
            "tiny.yaml:2: drain.stragglers: expected one of force, abort, wait",
        ),
        (
            ("  block: ", "  block:\n    on: lb\n    run: "),
            "tiny.yaml:5: steps.block.on: on: 'lb' is not a node",
        ),
        (
            ("steps:", "steps:\n  node_active: {run: 'echo 0 calls', parse: '\\\\d+ calls'}"),
            "tiny.yaml:4: steps.node_active.parse: a count needs a group that captures the number",
        ),
    ],
)
def test_a_bad_playbook_names_file_line_and_key(
    site: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], expected: str
) -> None:
    write(site, "tiny.yaml", PLAYBOOK.replace(*change))
    code, output = run(
        capsys, "-i", inventory(site, GOOD.replace("WORK", str(site / "work"))), "check"
    )
    assert code == 2
    assert expected in output


def test_a_missing_variable_is_an_error_before_any_command_runs(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = inventory(
        site, "defaults: {transport: local, playbook: ./tiny.yaml}\nnodes:\n  node-a: {}\n"
    )
    code, output = run(
        capsys, "-i", path, "--state-dir", str(site / "state"), "drain", "node-a", "--yes"
    )
    assert code == 2
    assert "tiny.yaml:4: steps.block.run: missing variable: 'dir'" in output
    assert not (site / "state").exists()  # not even a journal: nothing started


def test_upgrade_without_a_version_names_the_option(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = inventory(site, GOOD.replace("WORK", str(site / "work")))
    code, output = run(capsys, "-i", path, "upgrade", "node-a", "--yes")
    assert code == 2
    assert "steps.upgrade.run: missing variable: 'version' (give --version V)" in output
    assert list((site / "work").iterdir()) == []


def test_an_unknown_playbook_lists_the_bundled_ones(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = inventory(site, "defaults: {transport: local, playbook: nosuch}\nnodes:\n  node-a: {}\n")
    code, output = run(capsys, "-i", path, "plan", "node-a")
    assert code == 2
    assert "unknown playbook 'nosuch'; bundled playbooks: " in output and "haproxy" in output


def test_an_unknown_node_on_the_command_line_is_a_usage_error(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run(capsys, "-i", inventory(site, GOOD), "drain", "node-z", "--yes")
    assert code == 2
    assert "unknown node 'node-z'" in output


def test_a_missing_inventory_says_how_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run(capsys, "-i", str(tmp_path / "nope.yaml"), "check")
    assert code == 2
    assert "no such inventory (give -i FILE or set UPGRADECTL_INVENTORY)" in output


def test_a_bad_var_or_timeout_on_the_command_line_is_a_usage_error(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = inventory(site, GOOD.replace("WORK", str(site / "work")))
    assert run(capsys, "-i", path, "drain", "node-a", "--var", "novalue", "--yes")[0] == 2
    code, output = run(capsys, "-i", path, "drain", "node-a", "--timeout", "soon", "--yes")
    assert code == 2 and "--timeout: not a duration: 'soon'" in output
    assert list((site / "work").iterdir()) == []


def test_check_accepts_a_good_inventory_and_says_what_each_node_can_do(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run(
        capsys, "-i", inventory(site, GOOD.replace("WORK", str(site / "work"))), "check"
    )
    assert code == 0, output
    assert "node-a: playbook tiny" in output and "drain, upgrade" in output
    assert (
        "counts sessions with active on node-a; no is_blocked step: the block and unblock are not read back\n"
        in output
    )


def test_check_names_both_witnesses_and_an_empty_command_turns_the_second_off(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = '  node_active: {run: "{{ calls }}", parse: "(?P<count>\\\\d+) calls", on: lb}\n'
    write(site, "tiny.yaml", PLAYBOOK + second)
    text = GOOD.replace("WORK", str(site / "work")) + "  lb: {}\n"
    with_it = inventory(site, text.replace("{dir:", "{calls: 'echo 0 calls', dir:"))
    code, output = run(capsys, "-i", with_it, "check")
    assert code == 0, output
    assert "counts sessions with active on node-a and node_active on lb;" in output
    without = inventory(site, text.replace("{dir:", "{calls: '', dir:"))
    code, output = run(capsys, "-i", without, "check")
    assert code == 0, output
    assert (
        "counts sessions with active on node-a; no is_blocked step: the block and unblock are not read back\n"
        in output
    )


def test_check_says_where_the_block_is_read_back(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    read_back = '  is_blocked: {run: "test -e {{ dir }}/blocked", on: lb}\n'
    write(site, "tiny.yaml", PLAYBOOK + read_back)
    text = GOOD.replace("WORK", str(site / "work")) + "  lb: {}\n"
    code, output = run(capsys, "-i", inventory(site, text), "check")
    assert code == 0, output
    assert "; reads the block back with is_blocked on lb\n" in output
