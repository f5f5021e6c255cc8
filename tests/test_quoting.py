"""`check` warns where a value reaches a shell command unquoted; `check --strict` fails on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from upgradectl.cli import main
from upgradectl.loader import bundled_playbooks

PLAYBOOK = """\
name: tiny
vars:
  dir: /srv/work
  install: "apt-get install -y {{ package }}"
  package: callserver
steps:
  block: "touch {{ dir | quote }}/blocked"
  active: {run: "echo 0 active", parse: "(\\\\d+) active"}
  upgrade: "{{ install | safe_shell }}={{ version | quote }}"
  unblock: "rm -f {{ dir }}/blocked"
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(PLAYBOOK)
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "defaults: {transport: local, playbook: ./tiny.yaml}\nnodes:\n  a: {}\n  b: {}\n"
    )
    return path


def test_an_unquoted_value_in_run_is_a_warning_naming_its_line_and_the_shell_code_it_feeds(
    capsys: pytest.CaptureFixture[str], inventory: Path
) -> None:
    code, out, err = run(capsys, "-i", str(inventory), "check")
    assert code == 0 and out.endswith("ok\n")
    folder = inventory.parent
    assert err.splitlines() == [  # once, though two nodes use the playbook
        f"warning: {folder}/tiny.yaml:4: vars.install: {{{{ package }}}} goes into a shell command"
        " unquoted: add `| quote` (or `| safe_shell` if the value is shell code on purpose)",
        f"warning: {folder}/tiny.yaml:10: steps.unblock.run: {{{{ dir }}}} goes into a shell"
        " command unquoted: add `| quote` (or `| safe_shell` if the value is shell code on purpose)",
    ]


def test_check_strict_fails_on_warnings_and_passes_once_they_are_fixed(
    capsys: pytest.CaptureFixture[str], inventory: Path
) -> None:
    code, _out, err = run(capsys, "-i", str(inventory), "check", "--strict")
    assert code == 2 and "2 warning(s), and --strict makes warnings errors" in err
    fixed = PLAYBOOK.replace("{{ package }}", "{{ package | quote }}").replace(
        "{{ dir }}", "{{ dir | quote }}"
    )
    (inventory.parent / "tiny.yaml").write_text(fixed)
    code, _out, err = run(capsys, "-i", str(inventory), "check", "--strict")
    assert (code, err) == (0, "")


def test_a_playbook_no_command_can_use_is_a_warning(
    capsys: pytest.CaptureFixture[str], inventory: Path
) -> None:
    (inventory.parent / "tiny.yaml").write_text("name: tiny\nsteps:\n  verify: 'true'\n")
    code, out, err = run(capsys, "-i", str(inventory), "check")
    assert code == 0 and "a: playbook tiny" in out and ": nothing" in out
    assert "tiny.yaml:1: no command can use playbook 'tiny': `drain` needs block" in err
    code, _, _ = run(capsys, "-i", str(inventory), "check", "--strict")
    assert code == 2


# What each bundled playbook needs from the inventory (its docs page says so).
NEEDS: dict[str, dict[str, object]] = {
    "haproxy": {"lb_host": "lb-1"},
    "kamailio": {"proxy_host": "lb-1"},
    "freeswitch": {},
    "asterisk": {},
    "erlang": {"erlang_node": "callserver@node-a", "module": "calls"},
    "erlang-release": {"erlang_node": "calls@node-a", "release_name": "calls"},
    "rabbitmq": {},
    "ejabberd": {},
    "lab": {"ctl_socket": "/run/lab.sock", "node_dir": "/var/tmp/lab"},
    "systemd": {"service": "callserver", "port": 5060, "block_command": "touch /run/blocked",
                "unblock_command": "rm -f /run/blocked"},
}  # fmt: skip


def test_every_bundled_playbook_passes_check_strict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert set(NEEDS) == set(bundled_playbooks())
    for name, needs in NEEDS.items():
        path = tmp_path / f"{name}.yaml"
        nodes = {"lb-1": {"host": "10.0.0.1"}, "node-a": {"host": "10.0.0.2"}}
        path.write_text(
            yaml.safe_dump({"defaults": {"playbook": name, "vars": needs}, "nodes": nodes})
        )
        code, _out, err = run(capsys, "-i", str(path), "check", "--strict")
        assert (code, err) == (0, ""), name


def test_the_example_inventory_passes_check_strict(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parent.parent / "examples" / "inventory.yaml"
    code, _out, err = run(capsys, "-i", str(example), "check", "--strict")
    assert (code, err) == (0, "")
