"""Ansible inventories, INI and YAML, read as they are and turned into upgradectl's own form.

An operator who already keeps the fleet in an Ansible inventory points ``-i`` at it. Groups,
``children``, ``[group:vars]``, host ranges (``node[01:20]``, ``db-[a:c]``, ``[1:9:2]``) and
``host:port`` mean what they mean to Ansible; variables merge as Ansible merges them (``all``,
then parent groups before their children, then the host). These variables fill the node's fields:

| Ansible variable | upgradectl field |
|---|---|
| ``ansible_host`` (``ansible_ssh_host``) | ``host`` |
| ``ansible_port`` (``ansible_ssh_port``) | ``port`` |
| ``ansible_user`` (``ansible_ssh_user``) | ``user`` |
| ``ansible_ssh_private_key_file`` (``ansible_private_key_file``) | ``identity_file`` |
| ``ansible_become`` | ``sudo`` |
| ``ansible_connection: local`` | ``transport: local`` |
| ``upgradectl_playbook``, ``upgradectl_pair`` | ``playbook``, ``pair`` |
| ``upgradectl_max_unavailable`` (a group's) | the group's ``max_unavailable`` |

Every other variable is a template variable. The result is a native document (with the Ansible
file's lines), so the inventory is validated exactly as a native one, errors naming file:line.
"""

from __future__ import annotations

import ast
import re
import shlex
import string
from dataclasses import dataclass, field
from typing import Any

from upgradectl.errors import Location, UsageError
from upgradectl.yamlread import Document, KeyPath, read_text

# Ansible variable -> upgradectl node field; the first spelling of each wins over the second.
NODE_VARIABLES = {
    "ansible_host": "host",
    "ansible_ssh_host": "host",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "identity_file",
    "ansible_private_key_file": "identity_file",
    "ansible_become": "sudo",
    "ansible_connection": "transport",
    "upgradectl_playbook": "playbook",
    "upgradectl_pair": "pair",
}
GROUP_VARIABLES = {"upgradectl_max_unavailable": "max_unavailable"}
# Ansible's own groups: every host is in `all`; `ungrouped` holds hosts of no other group.
IMPLICIT_GROUPS = ("all", "ungrouped")
_TRUE = {"y", "yes", "on", "1", "true", "t"}
_FALSE = {"n", "no", "off", "0", "false", "f"}
_CONNECTIONS = {"local": "local", "ssh": "ssh", "paramiko": "ssh", "smart": "ssh"}
_YAML_GROUP_KEYS = ("hosts", "children", "vars")
_RANGE = re.compile(r"\[([^\]\[:]*):([^\]\[:]*)(?::(\d+))?\]")


@dataclass
class Value:
    """A variable's value and the line it was written on."""

    value: Any
    line: int | None


@dataclass
class Group:
    """One Ansible group as written: its hosts (with their inline variables), children, vars."""

    name: str
    line: int | None = None
    hosts: dict[str, dict[str, Value]] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Value] = field(default_factory=dict)


@dataclass
class Tree:
    """Every group of an Ansible inventory, and where each host was first written."""

    path: str
    groups: dict[str, Group] = field(default_factory=dict)
    host_lines: dict[str, int | None] = field(default_factory=dict)

    def group(self, name: str, line: int | None = None) -> Group:
        """The group ``name``, created (at ``line``) on first mention, as Ansible does."""
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = Group(name, line)
        elif found.line is None:
            found.line = line
        return found

    def add_host(
        self, group: str, host: str, variables: dict[str, Value], line: int | None
    ) -> None:
        """Put ``host`` (with inline variables) in ``group``."""
        self.host_lines.setdefault(host, line)
        self.group(group).hosts.setdefault(host, {}).update(variables)

    def error(self, line: int | None, message: str) -> UsageError:
        """A usage error at ``line`` of the Ansible file."""
        return UsageError(message, Location(self.path, line, ""))


# --- which format ---------------------------------------------------------------------------


def is_ini(path: str, text: str) -> bool:
    """Whether ``path`` is an INI inventory: by extension, else by its first meaningful line."""
    if path.endswith((".yaml", ".yml", ".json")):
        return False
    if path.endswith((".ini", ".cfg")):
        return True
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return stripped.startswith("[") or not re.match(r"^(---|[\w.-]+:(\s|$))", stripped)
    return False


def is_ansible_yaml(data: Any) -> bool:
    """Whether parsed YAML is an Ansible inventory: groups of hosts/children/vars, no ``nodes``."""
    if not isinstance(data, dict) or not data or "nodes" in data:
        return False
    return all(
        spec is None or (isinstance(spec, dict) and set(spec) <= set(_YAML_GROUP_KEYS))
        for spec in data.values()
    )


# --- reading ----------------------------------------------------------------------------------


def read_ini(path: str) -> Document:
    """An INI inventory as a native inventory document."""
    tree = Tree(path)
    section, kind, section_line = "ungrouped", "hosts", None
    for number, raw in enumerate(read_text(path).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section, kind = _section(tree, line, number)
            section_line = number
            tree.group(section, section_line)
        elif kind == "hosts":
            _ini_hosts(tree, section, line, number)
        elif kind == "vars":
            key, equals, value = line.partition("=")
            if not equals or not key.strip():
                raise tree.error(number, f"expected key=value in [{section}:vars], got {line!r}")
            tree.group(section).vars[key.strip()] = Value(_literal(value.strip()), number)
        else:
            tree.group(section).children.append(line.split()[0])
            tree.group(line.split()[0], number)
    return native(tree)


def _section(tree: Tree, line: str, number: int) -> tuple[str, str]:
    match = re.fullmatch(r"\[([^\]:\s]+)(?::(\w+))?\]\s*([#;].*)?", line)
    if match is None:
        raise tree.error(number, f"not a section header: {line!r}")
    name, kind = match.group(1), match.group(2) or "hosts"
    if kind not in ("hosts", "vars", "children"):
        raise tree.error(number, f"[{name}:{kind}]: expected :vars or :children")
    return name, kind


def _ini_hosts(tree: Tree, group: str, line: str, number: int) -> None:
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise tree.error(number, f"cannot read the host line {line!r}: {exc}") from None
    if not words:
        return
    pattern, port = _host_and_port(words[0])
    variables: dict[str, Value] = {}
    for word in words[1:]:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise tree.error(number, f"expected key=value after the host, got {word!r}")
        variables[key] = Value(_literal(value), number)
    if port is not None:
        variables.setdefault("ansible_port", Value(port, number))
    for host in expand(pattern, tree, number):
        tree.add_host(group, host, dict(variables), number)


def read_ansible_yaml(doc: Document) -> Document:
    """A YAML Ansible inventory (already parsed, with its lines) as a native inventory document."""
    tree = Tree(doc.path)
    for name, spec in doc.data.items():
        _yaml_group(tree, doc, (name,), name, spec)
    return native(tree)


def _yaml_group(tree: Tree, doc: Document, keys: KeyPath, name: str, spec: Any) -> None:
    group = tree.group(str(name), doc.lines.get(keys))
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise doc.error(keys, "expected a group: a mapping of hosts, children and vars")
    for key in spec:
        if key not in _YAML_GROUP_KEYS:
            raise doc.error((*keys, key), f"unknown key; a group has {', '.join(_YAML_GROUP_KEYS)}")
    for host, host_vars in _yaml_mapping(doc, (*keys, "hosts"), spec.get("hosts")).items():
        where = (*keys, "hosts", str(host))
        variables = {
            key: Value(value, doc.lines.get((*where, key)))
            for key, value in _yaml_mapping(doc, where, host_vars).items()
        }
        pattern, port = _host_and_port(str(host))
        if port is not None:
            variables.setdefault("ansible_port", Value(port, doc.lines.get(where)))
        for expanded in expand(pattern, tree, doc.lines.get(where)):
            tree.add_host(group.name, expanded, dict(variables), doc.lines.get(where))
    for key, value in _yaml_mapping(doc, (*keys, "vars"), spec.get("vars")).items():
        group.vars[str(key)] = Value(value, doc.lines.get((*keys, "vars", key)))
    for child, child_spec in _yaml_mapping(doc, (*keys, "children"), spec.get("children")).items():
        group.children.append(str(child))
        _yaml_group(tree, doc, (*keys, "children", str(child)), str(child), child_spec)


def _yaml_mapping(doc: Document, keys: KeyPath, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(keys, "expected a mapping")
    return value


def _literal(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal when it is one, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _host_and_port(pattern: str) -> tuple[str, int | None]:
    """``host:2222`` -> (host, 2222); an IPv6 address or a range's colons are left alone."""
    head, colon, tail = pattern.rpartition(":")
    if colon and tail.isdigit() and "[" not in tail and head.count(":") == 0:
        return head, int(tail)
    if pattern.startswith("[") and "]:" in pattern:  # [::1]:2222
        address, _, port = pattern[1:].partition("]:")
        return address, int(port) if port.isdigit() else None
    return pattern, None


def expand(pattern: str, tree: Tree, line: int | None) -> list[str]:
    """A host pattern's names: ``node[01:03]`` -> node01, node02, node03; ``[a:c]``; ``[1:9:2]``."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    start, end, stride = match.group(1), match.group(2), int(match.group(3) or 1)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        values = [str(n).zfill(width) for n in range(int(start), int(end) + 1, stride)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha():
        letters = string.ascii_letters
        values = list(letters[letters.index(start) : letters.index(end) + 1 : stride])
    else:
        values = []
    if not values:
        raise tree.error(line, f"bad host range {match.group(0)!r} in {pattern!r}")
    return [name for value in values for name in expand(head + value + tail, tree, line)]


# --- into upgradectl's form ------------------------------------------------------------------


def native(tree: Tree) -> Document:
    """The native inventory document (``defaults``, ``groups``, ``nodes``) the tree describes."""
    tree.group("all")
    depth = _depths(tree)
    data: dict[str, Any] = {"defaults": {}, "groups": {}, "nodes": {}}
    lines: dict[KeyPath, int] = {}
    all_vars = tree.groups["all"].vars
    data["defaults"]["vars"] = _plain(all_vars, ("defaults", "vars"), lines, NODE_VARIABLES)
    for name, group in tree.groups.items():
        if name in IMPLICIT_GROUPS:
            continue
        keys = ("groups", name, "vars")
        spec: dict[str, Any] = {
            "vars": _plain(group.vars, keys, lines, NODE_VARIABLES | GROUP_VARIABLES)
        }
        _set(lines, ("groups", name), group.line)
        for variable, key in GROUP_VARIABLES.items():
            if variable in group.vars:
                spec[key] = group.vars[variable].value
                _set(lines, ("groups", name, key), group.vars[variable].line)
        data["groups"][name] = spec
    members = _members(tree)
    for host, line in tree.host_lines.items():
        groups = sorted(members[host], key=lambda g: (depth[g], g))
        data["nodes"][host] = _node(tree, host, groups, lines)
        _set(lines, ("nodes", host), line)
    return Document(tree.path, data, lines)


def _node(tree: Tree, host: str, groups: list[str], lines: dict[KeyPath, int]) -> dict[str, Any]:
    """A host's native entry: fields from the merged variables, its own variables as vars."""
    own: dict[str, Value] = {}
    for written in tree.groups.values():  # its inline variables, wherever it was written
        own.update(written.hosts.get(host, {}))
    merged: dict[str, Value] = dict(tree.groups["all"].vars)
    for group in groups:
        merged.update(tree.groups[group].vars)
    merged.update(own)
    entry: dict[str, Any] = {"groups": [g for g in groups if g not in IMPLICIT_GROUPS]}
    for variable, key in reversed(NODE_VARIABLES.items()):  # the first spelling wins
        if variable in merged:
            found = merged[variable]
            entry[key] = _field(tree, key, found)
            _set(lines, ("nodes", host, key), found.line)
    entry["vars"] = _plain(own, ("nodes", host, "vars"), lines, NODE_VARIABLES)
    return entry


def _field(tree: Tree, key: str, found: Value) -> Any:
    """An Ansible value in the type upgradectl's field wants (Ansible is lenient with text)."""
    value = found.value
    if key == "sudo":
        text = str(value).lower()
        if text not in _TRUE | _FALSE:
            raise tree.error(found.line, f"ansible_become: expected a boolean, got {value!r}")
        return text in _TRUE
    if key == "port" and isinstance(value, str) and value.isdigit():
        return int(value)
    if key == "transport":
        if str(value) not in _CONNECTIONS:
            raise tree.error(
                found.line,
                f"ansible_connection: {value!r} is not a connection upgradectl has (ssh, local)",
            )
        return _CONNECTIONS[str(value)]
    return value


def _plain(
    variables: dict[str, Value], keys: KeyPath, lines: dict[KeyPath, int], mapped: dict[str, str]
) -> dict[str, Any]:
    """Template variables: every one but those that became fields."""
    found = {}
    for name, value in variables.items():
        if name not in mapped:
            found[name] = value.value
            _set(lines, (*keys, name), value.line)
    return found


def _set(lines: dict[KeyPath, int], keys: KeyPath, line: int | None) -> None:
    if line is not None:
        lines[keys] = line


def _members(tree: Tree) -> dict[str, set[str]]:
    """Host -> every group it is in, directly or through children."""
    parents: dict[str, set[str]] = {}
    for group in tree.groups.values():
        for child in group.children:
            parents.setdefault(child, set()).add(group.name)
    found: dict[str, set[str]] = {host: set() for host in tree.host_lines}
    for group in tree.groups.values():
        for host in group.hosts:
            found[host] |= _ancestors(group.name, parents)
    return found


def _ancestors(group: str, parents: dict[str, set[str]]) -> set[str]:
    seen, todo = {group}, [group]
    while todo:
        for parent in parents.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _depths(tree: Tree) -> dict[str, int]:
    """How deep each group sits below ``all``: parents' variables give way to their children's."""
    depth = {name: 0 for name in tree.groups}
    for _ in range(len(tree.groups)):  # a cycle cannot make this run away
        changed = False
        for group in tree.groups.values():
            for child in group.children:
                if depth.get(child, 0) <= depth[group.name]:
                    depth[child] = depth[group.name] + 1
                    changed = True
        if not changed:
            break
    return depth
