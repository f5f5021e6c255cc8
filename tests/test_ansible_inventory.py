"""Ansible inventories, INI and YAML, read as Ansible itself reads them (`ansible-inventory --list`
is the witness), and used for a real upgrade of the lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from clihelp import LabCli, run_cli

from upgradectl.ansible_inventory import GROUP_VARIABLES, NODE_VARIABLES
from upgradectl.errors import UsageError
from upgradectl.loader import load_inventory
from upgradectl.model import Inventory

INI = """\
# the fleet, as the Ansible playbooks know it
lb ansible_host=10.0.0.5 ansible_connection=ssh

[voice]
node[01:03] ansible_user=deploy
node03 upgradectl_pair=node04
node04:2201 ansible_host=10.0.0.14 upgradectl_pair=node03  # the spare

[voice:vars]
ansible_become=true
backend=calls
upgradectl_max_unavailable=1

[east:children]
voice

[east:vars]
region='east'
ansible_port=2222

[all:vars]
ansible_ssh_private_key_file=~/.ssh/id_fleet
lb_host=lb
"""

YAML = """\
all:
  vars:
    lb_host: lb
    ansible_user: deploy
  hosts:
    lb: {ansible_host: 10.0.0.5}
  children:
    voice:
      vars: {backend: calls, ansible_become: yes, upgradectl_max_unavailable: 2}
      hosts:
        media-[a:c]:
        media-d:
          ansible_host: 10.0.0.24
          ansible_port: 2200
          ansible_ssh_private_key_file: /etc/keys/fleet
      children:
        west:
          vars: {region: west, backend: west-calls}
          hosts:
            media-a:
"""


def ansible_list(path: Path) -> dict[str, Any]:
    """What Ansible itself reads from ``path``."""
    tool = Path(sys.executable).with_name("ansible-inventory")
    done = subprocess.run(
        [str(tool), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ANSIBLE_LOCAL_TEMP": str(path.parent / "ansible-tmp")},
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def ansible_groups(listed: dict[str, Any], host: str) -> set[str]:
    """Every group ``host`` is in, directly or through children, as Ansible lists them."""
    direct = {g for g, spec in listed.items() if host in spec.get("hosts", [])}
    parents = {c: g for g, spec in listed.items() for c in spec.get("children", [])}
    found = set()
    for start in direct:
        group: str | None = start
        while group:
            found.add(group)
            group = parents.get(group)
    return found - {"all", "ungrouped"}


def our_variables(inventory: Inventory, name: str) -> dict[str, Any]:
    """The template variables upgradectl gives ``name``: defaults, groups in order, the node."""
    node = inventory.nodes[name]
    merged = dict(inventory.defaults_vars)
    for group in node.groups:
        merged.update(inventory.groups[group].vars)
    merged.update(node.vars)
    return merged


@pytest.mark.parametrize(("file_name", "text"), [("hosts.ini", INI), ("hosts.yml", YAML)])
def test_an_ansible_inventory_reads_as_ansible_inventory_lists_it(
    tmp_path: Path, file_name: str, text: str
) -> None:
    path = tmp_path / file_name
    path.write_text(text)
    listed = ansible_list(path)
    inventory = load_inventory(str(path))
    hostvars = listed["_meta"]["hostvars"]
    assert sorted(inventory.nodes) == sorted(hostvars)
    for name, found in hostvars.items():
        node = inventory.nodes[name]
        port = found.get("ansible_port")
        assert (node.host, node.port, node.user) == (
            found.get("ansible_host"),
            None if port is None else int(port),
            found.get("ansible_user"),
        ), name
        key = found.get("ansible_ssh_private_key_file")
        assert node.identity_file == (os.path.expanduser(key) if key else None), name
        assert node.sudo == (str(found.get("ansible_become", "no")).lower() in ("true", "yes")), (
            name
        )
        assert set(node.groups) == ansible_groups(listed, name), name
        assert node.pair == found.get("upgradectl_pair"), name
        mapped = set(NODE_VARIABLES) | set(GROUP_VARIABLES)
        expected = {k: v for k, v in found.items() if k not in mapped}
        assert our_variables(inventory, name) == expected, name
    voice = inventory.groups["voice"]
    assert voice.max_unavailable == str(
        hostvars[sorted(inventory.members("voice"))[0]]["upgradectl_max_unavailable"]
    )


def test_a_bad_host_range_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("[voice]\nnode01\nnode[05:x]\n")
    with pytest.raises(UsageError, match=r"hosts:3: bad host range '\[05:x\]' in 'node\[05:x\]'"):
        load_inventory(str(path))


def test_a_bad_value_is_reported_at_its_line_in_the_ansible_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text("[voice]\nnode01\n\n[voice:vars]\nansible_port=twenty\n")
    ran = run_cli("-i", str(path), "check")
    assert ran.code == 2
    assert "hosts.ini:5: nodes.node01.port: expected a port number, got text" in ran.stderr


def test_an_ini_copy_of_the_lab_upgrades_a_node_with_the_playbook_given_on_the_line(
    cli: LabCli,
) -> None:
    native = yaml.safe_load(cli.lab.inventory_path.read_text())
    defaults = native["defaults"]
    lines = ["[voice]"]
    for name, node in native["nodes"].items():
        own = " ".join(f"{key}={value}" for key, value in node["vars"].items())
        lines.append(
            f"{name} ansible_host={node['host']} ansible_port={node['port']} "
            f"upgradectl_pair={node['pair']} {own}"
        )
    lines += ["", "[all:vars]", f"ansible_user={defaults['user']}"]
    lines += [f"ansible_ssh_private_key_file={defaults['identity_file']}", ""]
    path = cli.lab.dir / "hosts"  # no extension, as Ansible's own default file
    path.write_text("\n".join(lines))
    ran = cli("upgrade", "node-1", "--version", "2.0", "--yes", "--playbook", "lab", inventory=path)
    assert ran.code == 0, ran.stdout + ran.stderr
    assert cli.ask("version") == "version 2.0"
    without = cli("upgrade", "node-1", "--version", "2.0", "--yes", inventory=path)
    assert without.code == 2  # an Ansible inventory names no playbook: --playbook picks it
    assert "no playbook" in without.stderr + without.stdout
