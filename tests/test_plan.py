"""Rendering a plan: variable precedence, shell quoting, delegation; connecting to nothing."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from upgradectl.errors import UsageError
from upgradectl.loader import bundled_playbooks, load_inventory, load_playbooks
from upgradectl.model import Inventory, Node, Playbook, Playbooks, StepSpec
from upgradectl.plan import Plan, PlanOptions, build_plan
from upgradectl.sudo import wrap_sudo

PLAYBOOK = """\
name: layered
vars: {who: playbook, backend: pb, lb_socket: /run/haproxy/admin.sock}
drain: {timeout: 15m, stragglers: force, max_stragglers: 3}
steps:
  precheck: {run: "check {{ node.pair }}", on: "{{ node.pair }}"}
  block: {run: "echo {{ ('set server ' ~ backend ~ '/' ~ node.name ~ ' state drain') | quote }} | socat stdio {{ lb_socket | quote }}", on: lb}
  active: {run: "count {{ who }}", parse: "(\\\\d+)"}
  upgrade: {run: "install {{ version | quote }} {{ run_id }}", timeout: 20m}
  unblock: {run: "ready {{ backend }}", on: lb}
"""
INVENTORY = """\
defaults: {playbook: ./layered.yaml, vars: {who: defaults, backend: dflt}}
groups:
  voice: {max_unavailable: 1, vars: {who: group, backend: calls}}
nodes:
  lb: {host: 10.9.9.9}
  node-a: {host: 10.9.9.11, groups: [voice], pair: node-b, vars: {who: node}}
  node-b: {host: 10.9.9.12, groups: [voice], pair: node-a}
"""


def planned(
    inventory: Inventory, names: list[str], command: str, options: PlanOptions, run_id: str
) -> Plan:
    """The plan, from the playbooks the loader loads for ``inventory``: the planner reads no file."""
    return build_plan(
        inventory, names, command, options, run_id, load_playbooks(inventory, options.playbook)
    )


@pytest.fixture
def inventory_path(tmp_path: Path) -> Path:
    (tmp_path / "layered.yaml").write_text(PLAYBOOK)
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return path


def render(path: Path, node: str, **options: Any) -> dict[str, str]:
    plan = planned(
        load_inventory(str(path)),
        [node],
        "upgrade",
        PlanOptions(version="2.4 beta", **options),
        "R1",
    )
    return {
        name: f"{command.target}: {command.run}" for name, command in plan.nodes[0].steps.items()
    }


def test_variables_layer_playbook_defaults_group_node_then_command_line(
    inventory_path: Path,
) -> None:
    assert render(inventory_path, "node-a")["active"] == "node-a: count node"
    assert render(inventory_path, "node-b")["active"] == "node-b: count group"
    assert (
        render(inventory_path, "node-a", extra_vars={"who": "cli"})["active"] == "node-a: count cli"
    )


def test_templates_quote_for_the_shell_and_know_the_built_ins(inventory_path: Path) -> None:
    steps = render(inventory_path, "node-a")
    assert steps["upgrade"] == "node-a: install '2.4 beta' R1"
    assert (
        steps["block"]
        == "lb: echo 'set server calls/node-a state drain' | socat stdio /run/haproxy/admin.sock"
    )


def test_on_runs_a_step_on_another_inventory_node_and_pairs_are_symmetric(
    inventory_path: Path,
) -> None:
    assert render(inventory_path, "node-a")["precheck"] == "node-b: check node-b"
    assert render(inventory_path, "node-b")["precheck"] == "node-a: check node-a"


def test_plan_connects_to_nothing_and_never_imports_paramiko(inventory_path: Path) -> None:
    probe = (
        "import sys; from upgradectl.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as done:\n"
        "    assert 'paramiko' not in sys.modules, 'paramiko was imported'\n    raise\n"
    )
    args = ["-i", str(inventory_path), "--json", "plan", "--group", "voice", "--version", "2.4"]
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert [node["node"] for node in plan["nodes"]] == ["node-a", "node-b"]
    steps = {step["step"]: step for step in plan["nodes"][0]["steps"]}
    assert steps["upgrade"]["timeout"] == 1200 and steps["block"]["on"] == "lb"
    assert plan["nodes"][0]["drain"]["max_stragglers"] == 3


def test_help_does_not_import_paramiko_rich_jinja_or_plotext() -> None:
    probe = (
        "import sys; from upgradectl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n"
        "    print(sorted(m for m in ('paramiko', 'rich', 'jinja2', 'plotext') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith("[]")


def test_help_loads_the_command_line_only_not_the_run() -> None:
    probe = (
        "import sys; from upgradectl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n"
        "    print(sorted(m for m in sys.modules if m.startswith('upgradectl.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = done.stdout.strip().splitlines()[-1]
    assert loaded == str(
        [
            "upgradectl.cli", "upgradectl.cli.commands", "upgradectl.cli.completion",
            "upgradectl.cli.globalopts", "upgradectl.cli.options", "upgradectl.errors",
        ]
    )  # fmt: skip


def test_all_means_the_grouped_nodes_not_the_balancer(inventory_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "upgradectl", "-i", str(inventory_path), "plan", "--all", "--version", "1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "node-a (10.9.9.11)" in done.stdout and "lb (" not in done.stdout


def test_the_readme_example_inventory_checks_and_plans() -> None:
    example = str(Path(__file__).parent.parent / "examples" / "inventory.yaml")
    said = {}
    for command, *args in (
        ["check"],
        ["plan", "node-a", "--version", "2.4.1"],
        ["drain", "node-a", "--help"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "upgradectl", "-i", example, command, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        said[command] = done.stdout
    # The plan spells out the balancer's block command; the help shows an example.
    assert "echo 'set server calls/node-a state drain'" in said["plan"]
    assert "Example" in said["drain"]


def test_a_variable_holding_a_template_is_resolved_before_it_is_quoted(
    inventory_path: Path,
) -> None:
    options = {"extra_vars": {"who": "{{ node.name }}'s {{ version }}"}}
    assert (
        render(inventory_path, "node-a", **options)["active"] == "node-a: count node-a's 2.4 beta"
    )
    quoted = {"extra_vars": {"backend": "{{ node.name }} pool"}}
    steps = render(inventory_path, "node-a", **quoted)
    assert steps["block"].startswith("lb: echo 'set server node-a pool/node-a state drain'")


def test_a_variable_that_needs_an_undefined_one_fails_only_where_used(inventory_path: Path) -> None:
    plan = planned(
        load_inventory(str(inventory_path)),
        ["node-a"],
        "drain",
        PlanOptions(extra_vars={"unused": "{{ version }}"}),
        "R",
    )
    assert (
        "upgrade" not in plan.nodes[0].steps
    )  # drain renders only what it runs; `unused` never bites
    with pytest.raises(UsageError, match="'version' \\(give --version V\\), which 'who' needs"):
        planned(
            load_inventory(str(inventory_path)),
            ["node-a"],
            "drain",
            PlanOptions(extra_vars={"who": "{{ version }}"}),
            "R",
        )


def test_plan_shows_a_patch_for_a_playbook_that_can_only_patch(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(
        "defaults: {transport: local, playbook: erlang, vars: {erlang_node: calls@host, module: call_handler,"
        " beam_source: /srv/call_handler.beam}}\nnodes:\n  erl-1: {}\n"
    )
    args = [
        sys.executable,
        "-m",
        "upgradectl",
        "-i",
        str(tmp_path / "inventory.yaml"),
        "--json",
        "plan",
        "erl-1",
    ]
    done = subprocess.run([*args, "--version", "2"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["command"] == "patch"
    assert [step["step"] for step in plan["nodes"][0]["steps"]] == ["patch", "verify", "rollback"]


def test_sudo_wraps_a_command_for_the_node_it_runs_on_and_never_prompts(
    inventory_path: Path,
) -> None:
    text = INVENTORY.replace("lb: {host: 10.9.9.9}", "lb: {host: 10.9.9.9, sudo: true}")
    inventory_path.write_text(text)
    plan = planned(
        load_inventory(str(inventory_path)), ["node-a"], "upgrade", PlanOptions(version="2"), "R"
    )
    steps = plan.nodes[0].steps
    assert (
        steps["block"].sudo and steps["unblock"].sudo
    )  # they run on the balancer, which needs sudo
    assert not steps["upgrade"].sudo  # node-a itself does not
    # One simple command runs as written (a per-command sudoers rule matches it); a shell
    # construct runs under sh -c.
    assert wrap_sudo("echo 'a b'") == "sudo -n -- echo 'a b'"
    assert wrap_sudo("echo 'a b' | wc") == "sudo -n -- sh -c 'echo '\"'\"'a b'\"'\"' | wc'"


def test_a_template_carries_a_file_shipped_with_upgradectl_to_the_node_unaltered(
    tmp_path: Path,
) -> None:
    # The erlang playbooks pipe their helper into erl on the node: the command must hold the
    # shipped file byte for byte (a variable's value is rendered again while it looks like a
    # template, so the helper must never look like one).
    (tmp_path / "inventory.yaml").write_text(
        "nodes: {erl-1: {playbook: erlang, vars: {erlang_node: a@b, module: m}}}\n"
    )
    plan = planned(
        load_inventory(str(tmp_path / "inventory.yaml")), ["erl-1"], "patch",
        PlanOptions(version="2"), "R1",
    )  # fmt: skip
    command = plan.nodes[0].steps["patch"].run
    helper = Path(bundled_playbooks()["erlang"]).parent / "erlang" / "upgradectl_otp.erl"
    assert command.startswith("printf '%s' " + shlex.quote(helper.read_text()) + " |")


def test_a_file_that_does_not_ship_with_upgradectl_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: p\nsteps:\n  patch: \"{{ bundled('../../etc/passwd') }}\"\n"
    )
    (tmp_path / "inventory.yaml").write_text("nodes: {n: {playbook: ./p.yaml}}\n")

    with pytest.raises(UsageError, match=r"bundled\('\.\./\.\./etc/passwd'\): no such file"):
        planned(
            load_inventory(str(tmp_path / "inventory.yaml")), ["n"], "patch", PlanOptions(), "R1"
        )


def test_the_planner_takes_loaded_playbooks_and_reads_no_file() -> None:
    patch_only = Playbook(
        "hotfix", "/nowhere/hotfix.yaml", steps={"patch": StepSpec("patch", "fix {{ node.name }}")}
    )
    inventory = Inventory("/nowhere/inventory.yaml", {"n": Node("n", playbook="hotfix")}, groups={})

    plan = build_plan(
        inventory, ["n"], "patch", PlanOptions(), "R1", Playbooks({"hotfix": patch_only})
    )

    assert plan.nodes[0].steps["patch"].run == "fix n"


def test_what_a_playbook_supports_is_data_read_from_its_steps() -> None:
    steps = {name: StepSpec(name, name) for name in ("patch", "block", "active", "unblock")}
    playbook = Playbook("p", "p.yaml", steps=steps)

    assert [c for c in ("drain", "upgrade", "patch") if playbook.supports(c)] == ["drain", "patch"]
    assert playbook.lacks("upgrade") == ["upgrade"]


def test_a_missing_playbook_fails_only_the_nodes_that_use_it_at_their_playbook_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "ok.yaml").write_text("name: ok\nsteps:\n  patch: {run: fix}\n")
    (tmp_path / "inventory.yaml").write_text(
        "nodes:\n  good: {playbook: ./ok.yaml}\n  bad:\n    playbook: ./gone.yaml\n"
    )
    inventory = load_inventory(str(tmp_path / "inventory.yaml"))
    playbooks = load_playbooks(inventory)

    assert build_plan(inventory, ["good"], "patch", PlanOptions(), "R1", playbooks).nodes
    with pytest.raises(UsageError, match=r"inventory\.yaml:4: .*nodes\.bad\.playbook.*gone\.yaml"):
        build_plan(inventory, ["bad"], "patch", PlanOptions(), "R1", playbooks)
