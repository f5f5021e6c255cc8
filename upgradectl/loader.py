"""YAML files -> model, with every error naming the file, the line and the key path."""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

from upgradectl import ansible_inventory as ansible
from upgradectl.duration import parse_duration
from upgradectl.errors import Location, UsageError
from upgradectl.model import (
    COUNT_STEPS,
    STEP_NAMES,
    STRAGGLER_POLICIES,
    DrainPolicy,
    Group,
    Inventory,
    Node,
    Playbook,
    Playbooks,
    StepSpec,
    frozen_mapping,
)
from upgradectl.yamlread import Document, KeyPath, read_text, read_yaml

T = TypeVar("T")

NODE_FIELDS = (
    "host", "port", "user", "identity_file", "groups", "pair",
    "playbook", "vars", "sudo", "transport",
)  # fmt: skip
GROUP_FIELDS = ("max_unavailable", "vars", "description")
STEP_FIELDS = (
    "run", "on", "parse", "fail_if", "timeout", "retries",
    "delay", "expected", "reboot", "sudo",
)  # fmt: skip
DRAIN_FIELDS = (
    "timeout", "poll", "poll_min", "stragglers", "max_stragglers", "settle", "force_when", "stall_after",
    "reconnect_for", "force_grace", "witness_grace",
)  # fmt: skip
PLAYBOOK_FIELDS = ("name", "description", "vars", "drain", "steps", "lock")
# At least one node, or a share of the group from 1% to 100%.
_MAX_UNAVAILABLE = re.compile(r"^(?:[1-9]\d*|(?:100|[1-9]\d?)%)$")
# Node names become file names, log fields and command words: no spaces, no control characters.
_NODE_NAME = re.compile(r"^[^\s\x00-\x1f\x7f/]+$")


# --- small typed readers --------------------------------------------------------------------


def _mapping(
    doc: Document, keys: KeyPath, value: Any, allowed: tuple[str, ...] | None
) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(keys, f"expected a mapping, got {_kind(value)}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise doc.error(
                    (*keys, key), f"unknown key{suggestion}; expected one of: {', '.join(allowed)}"
                )
    return value


def _typed(doc: Document, keys: KeyPath, value: Any, kind: type[T], what: str) -> T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise doc.error(keys, f"expected {what}, got {_kind(value)}")
    return value


def _duration(
    doc: Document, keys: KeyPath, value: Any, *, positive: bool = False, minimum: float = 0.0
) -> float:
    """A duration of at least ``minimum`` seconds, and more than 0 if ``positive``."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise doc.error(keys, str(exc)) from None
    if seconds < minimum:
        raise doc.error(keys, f"must be at least {minimum:g}s, got {value!r}")
    if positive and seconds == 0:
        # A timeout of 0 is an error, never the default in disguise.
        raise doc.error(keys, f"must be more than 0, got {value!r}")
    return seconds


# Polling faster than this floods a node with commands (poll: 0 made 196 SSH polls a second).
MIN_POLL = 0.1


def _text(doc: Document, keys: KeyPath, value: Any, what: str) -> str:
    """Text that says something: an empty command or path is an error, not a no-op."""
    text = _typed(doc, keys, value, str, what)
    if not text.strip():
        raise doc.error(keys, f"expected {what}, got an empty text")
    return text


def _regex(doc: Document, keys: KeyPath, value: Any) -> re.Pattern[str]:
    text = _typed(doc, keys, value, str, "a regular expression")
    try:
        # Multi-line: `fail_if: "^error"` must catch an error on any line of the output.
        return re.compile(text, re.MULTILINE)
    except re.error as exc:
        raise doc.error(keys, f"bad regular expression {text!r}: {exc}") from None


def _count(doc: Document, keys: KeyPath, value: Any, minimum: int) -> int:
    number = _typed(doc, keys, value, int, "a whole number")
    if number < minimum:
        raise doc.error(keys, f"must be at least {minimum}, got {number}")
    return number


def _vars(
    doc: Document, keys: KeyPath, value: Any
) -> tuple[Mapping[str, Any], Mapping[str, Location]]:
    """A ``vars:`` mapping, and where each of its variables was written."""
    found = _mapping(doc, keys, value, None)
    return frozen_mapping(found), frozen_mapping({key: doc.where((*keys, key)) for key in found})


def _optional(value: Any, read: Callable[[Any], T]) -> T | None:
    return None if value is None else read(value)


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "text",
        bool: "true/false",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


# --- inventory ------------------------------------------------------------------------------


def load_inventory(path: str) -> Inventory:
    """Read and validate an inventory file."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such inventory (give -i FILE or set UPGRADECTL_INVENTORY)")
    doc = _inventory_document(path)
    top = _mapping(doc, (), doc.data, ("defaults", "groups", "nodes"))
    defaults = _mapping(doc, ("defaults",), top.get("defaults"), NODE_FIELDS)
    groups = {
        name: _group(doc, name, spec)
        for name, spec in _mapping(doc, ("groups",), top.get("groups"), None).items()
    }
    raw_nodes = _mapping(doc, ("nodes",), top.get("nodes"), None)
    if not raw_nodes:
        raise doc.error(("nodes",), "the inventory has no nodes")
    nodes = {name: _node(doc, name, defaults, spec, groups) for name, spec in raw_nodes.items()}
    _check_pairs(doc, nodes)
    defaults_vars, defaults_vars_at = _vars(doc, ("defaults", "vars"), defaults.get("vars"))
    return Inventory(
        path, frozen_mapping(nodes), frozen_mapping(groups), defaults_vars, defaults_vars_at
    )


def _inventory_document(path: str) -> Document:
    """The inventory as a native document: upgradectl's YAML, or an Ansible INI or YAML one."""
    if ansible.is_ini(path, read_text(path)):
        return ansible.read_ini(path)
    doc = read_yaml(path)
    return ansible.read_ansible_yaml(doc) if ansible.is_ansible_yaml(doc.data) else doc


def _group(doc: Document, name: str, spec: Any) -> Group:
    keys = ("groups", name)
    fields = _mapping(doc, keys, spec, GROUP_FIELDS)
    limit = fields.get("max_unavailable")
    if limit is not None and not _MAX_UNAVAILABLE.match(str(limit)):
        raise doc.error(
            (*keys, "max_unavailable"),
            f"expected a number of nodes (1 or more) or a percentage (1% to 100%), got {limit!r}",
        )
    group_vars, vars_at = _vars(doc, (*keys, "vars"), fields.get("vars"))
    return Group(name, None if limit is None else str(limit), group_vars, vars_at)


def _node(
    doc: Document, name: str, defaults: dict[str, Any], spec: Any, groups: dict[str, Group]
) -> Node:
    keys = ("nodes", name)
    if not _NODE_NAME.match(name):
        raise doc.error(
            keys, f"{name!r} is not a node name (no spaces, slashes or control characters)"
        )
    own = _mapping(doc, keys, spec, NODE_FIELDS)
    # A node's own field wins over the default; the location reported is where the value came from.
    fields: dict[str, tuple[KeyPath, Any]] = {
        key: ((*keys, key), value) for key, value in own.items()
    }
    for key, value in defaults.items():
        if key != "vars":
            fields.setdefault(key, (("defaults", key), value))

    def get(key: str, kind: type[T], what: str) -> T | None:
        where, value = fields.get(key, ((), None))
        if value is None:
            return None
        if kind is str:
            return cast(T, _text(doc, where, value, what))
        return _typed(doc, where, value, kind, what)

    port = get("port", int, "a port number")
    if port is not None and not 0 < port < 65536:
        raise doc.error(fields["port"][0], "not a port number")
    transport = get("transport", str, "ssh or local") or "ssh"
    if transport not in ("ssh", "local"):
        raise doc.error(fields["transport"][0], f"expected ssh or local, got {transport!r}")
    member_of = tuple(get("groups", list, "a list of group names") or ())
    for index, group in enumerate(member_of):
        _typed(doc, (*keys, "groups", str(index)), group, str, "a group name")
        if group not in groups:
            raise doc.error((*keys, "groups", str(index)), f"unknown group {group!r}")
    identity = get("identity_file", str, "a path")
    node_vars, vars_at = _vars(doc, (*keys, "vars"), own.get("vars"))
    return Node(
        name=name,
        host=get("host", str, "a host name or address"),
        port=port,
        user=get("user", str, "a user name"),
        identity_file=os.path.expanduser(identity) if identity else None,
        groups=member_of,
        pair=get("pair", str, "a node name"),
        playbook=get("playbook", str, "a playbook name or path"),
        vars=node_vars,
        sudo=bool(get("sudo", bool, "true or false")),
        transport=cast(Any, transport),
        where=doc.where(keys),
        vars_at=vars_at,
        playbook_at=doc.where(fields["playbook"][0]) if "playbook" in fields else None,
    )


def _check_pairs(doc: Document, nodes: dict[str, Node]) -> None:
    for node in nodes.values():
        if node.pair is None:
            continue
        where = ("nodes", node.name, "pair")
        if node.pair == node.name:
            raise doc.error(where, "a node cannot be its own pair")
        peer = nodes.get(node.pair)
        if peer is None:
            raise doc.error(where, f"unknown node {node.pair!r}")
        if peer.pair is None:
            raise doc.error(
                where,
                f"{node.pair} does not name {node.name} as its pair: a pair is written on both "
                f"nodes (add `pair: {node.name}` to {node.pair})",
            )
        if peer.pair != node.name:
            raise doc.error(where, f"{node.pair} is paired with {peer.pair}, not with {node.name}")


def pair_of(inventory: Inventory, name: str) -> str | None:
    """The node that backs ``name`` up (both nodes of a pair name each other)."""
    return inventory.nodes[name].pair


# --- playbooks ------------------------------------------------------------------------------


@functools.cache  # the package's files do not change while it runs
def bundled_playbooks() -> dict[str, str]:
    """Name -> path of every playbook that ships inside the package."""
    folder = resources.files("upgradectl") / "playbooks"
    return {
        entry.name.removesuffix(".yaml"): str(entry)
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def find_playbook(reference: str, inventory_dir: str) -> str:
    """The file a playbook reference names: a path, ``playbooks/NAME.yaml``, or a bundled name."""
    if reference.endswith((".yaml", ".yml")) or os.sep in reference:
        path = os.path.normpath(os.path.join(inventory_dir, os.path.expanduser(reference)))
        if not os.path.exists(path):
            raise UsageError(f"playbook {reference!r}: no such file {path}")
        return path
    local = os.path.join(inventory_dir, "playbooks", f"{reference}.yaml")
    if os.path.exists(local):
        return local
    bundled = bundled_playbooks()
    if reference in bundled:
        return bundled[reference]
    raise UsageError(
        f"unknown playbook {reference!r}; bundled playbooks: {', '.join(bundled)} "
        f"(or give a path to a YAML file)"
    )


def load_playbooks(inventory: Inventory, override: str | None = None) -> Playbooks:
    """Every playbook the inventory's nodes name, or ``override`` (``--playbook``) alone; each
    file is read once however many nodes use it. The planner takes them from here."""
    folder = os.path.dirname(os.path.abspath(inventory.path))
    references = [override] if override else [n.playbook for n in inventory.nodes.values()]
    loaded: dict[str, Playbook] = {}
    unusable: dict[str, UsageError] = {}
    for reference in dict.fromkeys(r for r in references if r):
        try:  # two references to one file get the one object load_playbook keeps for it
            loaded[reference] = load_playbook(find_playbook(reference, folder))
        except UsageError as exc:
            unusable[reference] = exc
    return Playbooks(frozen_mapping(loaded), frozen_mapping(unusable))


def load_playbook(path: str) -> Playbook:
    """Read and validate a playbook file (once per version of the file: a fleet's nodes share a
    playbook, and every command that asks for it gets the same frozen object)."""
    try:
        found = os.stat(path)
    except OSError:
        return _load_playbook(path, None)  # reading it reports why it cannot be read
    return _load_playbook(path, (found.st_ino, found.st_size, found.st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _load_playbook(path: str, version: tuple[int, int, int] | None) -> Playbook:
    doc = read_yaml(path)
    top = _mapping(doc, (), doc.data, PLAYBOOK_FIELDS)
    name = _typed(doc, ("name",), top.get("name", Path(path).stem), str, "a name")
    raw_steps = _mapping(doc, ("steps",), top.get("steps"), STEP_NAMES)
    if not raw_steps:
        raise doc.error(("steps",), "the playbook has no steps")
    steps = {step: _step(doc, step, spec) for step, spec in raw_steps.items()}
    playbook_vars, vars_at = _vars(doc, ("vars",), top.get("vars"))
    return Playbook(
        name=name,
        path=path,
        description=_typed(doc, ("description",), top.get("description", ""), str, "text"),
        vars=playbook_vars,
        drain=_drain(doc, top.get("drain")),
        steps=frozen_mapping(steps),
        lock=_text(doc, ("lock",), top.get("lock", Playbook.lock), "a path"),
        where=doc.where(()),
        vars_at=vars_at,
        lock_at=doc.where(("lock",)),
    )


def _step(doc: Document, name: str, spec: Any) -> StepSpec:
    keys = ("steps", name)
    if isinstance(spec, str):  # `block: "command"` is short for `block: {run: "command"}`
        spec = {"run": spec}
    fields = _mapping(doc, keys, spec, STEP_FIELDS)
    if "run" not in fields:
        raise doc.error(keys, "a step needs `run:`, the command to run")

    def at(key: str) -> KeyPath:
        return (*keys, key)

    parse = _optional(fields.get("parse"), lambda v: _regex(doc, at("parse"), v))
    if name in COUNT_STEPS and parse is not None and not parse.groups:
        raise doc.error(
            at("parse"), "a count needs a group that captures the number, e.g. (?P<count>\\d+)"
        )
    reboot = _typed(doc, at("reboot"), fields.get("reboot", False), bool, "true or false")
    if reboot and name != "upgrade":
        raise doc.error(at("reboot"), "only the upgrade step may reboot the node")
    return StepSpec(
        name=name,
        run=_text(doc, at("run"), fields["run"], "a command"),
        on=_optional(fields.get("on"), lambda v: _typed(doc, at("on"), v, str, "a node name")),
        parse=parse,
        fail_if=_optional(fields.get("fail_if"), lambda v: _regex(doc, at("fail_if"), v)),
        timeout=_optional(
            fields.get("timeout"), lambda v: _duration(doc, at("timeout"), v, positive=True)
        ),
        retries=_count(doc, at("retries"), fields.get("retries", 1), 1),
        delay=_duration(doc, at("delay"), fields.get("delay", "2s")),
        expected=_optional(
            fields.get("expected"), lambda v: _duration(doc, at("expected"), v, positive=True)
        ),
        reboot=reboot,
        sudo=_optional(
            fields.get("sudo"), lambda v: _typed(doc, at("sudo"), v, bool, "true or false")
        ),
        where=doc.where(keys),
        lines=frozen_mapping(
            {key: doc.lines[(*keys, key)] for key in fields if (*keys, key) in doc.lines}
        ),
    )


def _drain(doc: Document, spec: Any) -> DrainPolicy:
    keys = ("drain",)
    fields = _mapping(doc, keys, spec, DRAIN_FIELDS)
    base = DrainPolicy()
    stragglers = fields.get("stragglers", base.stragglers)
    if stragglers not in STRAGGLER_POLICIES:
        raise doc.error(
            (*keys, "stragglers"),
            f"expected one of {', '.join(STRAGGLER_POLICIES)}, got {stragglers!r}",
        )
    force_when = fields.get("force_when", base.force_when)
    if force_when not in ("deadline", "eta_exceeds_deadline"):
        raise doc.error(
            (*keys, "force_when"), f"expected deadline or eta_exceeds_deadline, got {force_when!r}"
        )
    return DrainPolicy(
        timeout=_duration(
            doc, (*keys, "timeout"), fields.get("timeout", base.timeout), positive=True
        ),
        poll=_duration(doc, (*keys, "poll"), fields.get("poll", base.poll), minimum=MIN_POLL),
        poll_min=_duration(
            doc, (*keys, "poll_min"), fields.get("poll_min", base.poll_min), minimum=MIN_POLL
        ),
        stragglers=stragglers,
        max_stragglers=_count(
            doc, (*keys, "max_stragglers"), fields.get("max_stragglers", base.max_stragglers), 0
        ),
        settle=_count(doc, (*keys, "settle"), fields.get("settle", base.settle), 1),
        force_when=force_when,
        stall_after=_duration(
            doc, (*keys, "stall_after"), fields.get("stall_after", base.stall_after), positive=True
        ),
        reconnect_for=_duration(
            doc, (*keys, "reconnect_for"), fields.get("reconnect_for", base.reconnect_for)
        ),
        force_grace=_duration(
            doc, (*keys, "force_grace"), fields.get("force_grace", base.force_grace)
        ),
        witness_grace=_duration(
            doc, (*keys, "witness_grace"), fields.get("witness_grace", base.witness_grace)
        ),
    )
