"""Build a Plan from the inventory, the playbooks and the options: connects to nothing.

``make_plan`` reads the files and renders; what the run does with a plan is ``app``'s (``plan``
imports none of the run: it starts in the time ``check`` does).

Every template is rendered here, so a missing variable or an unknown ``on:`` node is a usage
error before the first remote command.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from upgradectl.errors import UsageError
from upgradectl.loader import load_playbooks, pair_of
from upgradectl.model import (
    COMMAND_NEEDS,
    STEP_NAMES,
    STRAGGLER_POLICIES,
    DrainPolicy,
    Inventory,
    Node,
    Playbook,
    Playbooks,
    StepSpec,
    Stragglers,
    frozen_mapping,
)
from upgradectl.variables import Renderer, Variables, layered

if TYPE_CHECKING:
    from upgradectl.settings import Selection, Settings

# Which steps each command renders and runs, in order (what it cannot do without is the
# model's COMMAND_NEEDS).
COMMAND_STEPS: Mapping[str, tuple[str, ...]] = {
    "drain": ("precheck", "is_blocked", "block", "active", "node_active", "sessions", "force",
              "unblock"),
    "upgrade": ("version", "precheck", "is_blocked", "block", "active", "node_active", "sessions",
                "force", "upgrade", "ready", "verify", "rollback", "unblock"),
    "patch": ("patch", "verify", "rollback"),
    "unblock": ("is_blocked", "verify", "unblock"),
    "status": ("is_blocked", "active", "node_active", "version"),
    "check": STEP_NAMES,  # `check` renders every step
}  # fmt: skip

# A command without its own timeout gets one by what it does: polls are quick, upgrades are not.
DEFAULT_TIMEOUTS = {"upgrade": 600.0, "rollback": 600.0, "patch": 300.0}
DEFAULT_TIMEOUT = 60.0
# The tool's own commands on a node (its lock, the boot id, sudo's check) are quick: a host that
# takes longer than this is not well.
TOOL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Command:
    """One rendered step: what runs, on which inventory node, and how its output is read."""

    step: str
    target: str
    run: str
    timeout: float
    sudo: bool = False
    parse: re.Pattern[str] | None = None
    fail_if: re.Pattern[str] | None = None
    retries: int = 1
    delay: float = 2.0
    expected: float | None = None
    reboot: bool = False


@dataclass(frozen=True)
class NodePlan:
    """Everything needed to act on one node, rendered."""

    node: Node
    playbook: Playbook
    drain: DrainPolicy
    steps: Mapping[str, Command]
    lock_path: str
    pair: str | None = None
    variables: Mapping[str, Any] = field(default_factory=frozen_mapping)

    @property
    def name(self) -> str:
        """The node's inventory name."""
        return self.node.name

    def targets(self) -> set[str]:
        """Every inventory node this plan runs a command on."""
        return {self.node.name} | {command.target for command in self.steps.values()}


@dataclass(frozen=True)
class PlanOptions:
    """What the command line adds to the files."""

    version: str | None = None
    extra_vars: Mapping[str, str] = field(default_factory=frozen_mapping)
    playbook: str | None = None
    timeout: float | None = None
    stragglers: Stragglers | None = None
    max_stragglers: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the journal, from which `resume` rebuilds the same options."""
        return {
            "version": self.version,
            "extra_vars": dict(self.extra_vars),
            "playbook": self.playbook,
            "timeout": self.timeout,
            "stragglers": self.stragglers,
            "max_stragglers": self.max_stragglers,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanOptions:
        """The options :meth:`as_dict` wrote; ValueError when the data is not what it wrote."""
        kinds: dict[str, Any] = {
            "version": str, "extra_vars": dict, "playbook": str, "timeout": int | float,
            "stragglers": str, "max_stragglers": int,
        }  # fmt: skip
        for key, value in data.items():
            if key not in kinds or not isinstance(value, kinds[key] | None):
                raise ValueError(f"options.{key}: unexpected {value!r}")
        extra = data.get("extra_vars") or {}
        if not all(isinstance(v, str) for v in extra.values()):
            raise ValueError("options.extra_vars: not KEY=VALUE text")
        if data.get("stragglers") not in (None, *STRAGGLER_POLICIES):
            raise ValueError(f"options.stragglers: unexpected {data['stragglers']!r}")
        return cls(**data)


@dataclass(frozen=True)
class Plan:
    """The rendered plan of one run."""

    command: str
    run_id: str
    inventory: Inventory
    nodes: tuple[NodePlan, ...]
    playbooks: (
        Playbooks  # every playbook loaded for it: the nodes' neighbours are planned from them
    )
    options: PlanOptions = field(default_factory=PlanOptions)

    @property
    def version(self) -> str | None:
        """The ``--version`` being rolled out."""
        return self.options.version

    @functools.cached_property
    def _by_name(self) -> dict[str, NodePlan]:
        return {plan.name: plan for plan in self.nodes}

    def node(self, name: str) -> NodePlan:
        """The plan of node ``name``."""
        return self._by_name[name]


def parse_var(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from ``--var``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--var {text!r}: expected KEY=VALUE")
    return key.strip(), value


def select_nodes(
    inventory: Inventory, names: Sequence[str], group: str | None = None, everything: bool = False
) -> list[str]:
    """Node names chosen by name, ``--group`` or ``--all``; unknown names are usage errors.

    ``--all`` is every node in a group, or every node when the inventory has no groups.
    """
    if sum(bool(x) for x in (names, group, everything)) != 1:
        raise UsageError("name the nodes, or give --group G, or --all (exactly one of them)")
    if group is not None:
        if group not in inventory.groups:
            raise UsageError(
                f"{inventory.path}: unknown group {group!r}; groups: {', '.join(inventory.groups)}"
            )
        chosen = inventory.members(group)
        if not chosen:
            raise UsageError(f"{inventory.path}: group {group!r} has no nodes")
        return chosen
    if everything:
        # Balancers and other helpers live outside groups: --all means the grouped nodes.
        grouped = [node.name for node in inventory.nodes.values() if node.groups]
        return grouped or list(inventory.nodes)
    for name in names:
        if name not in inventory.nodes:
            raise UsageError(
                f"{inventory.path}: unknown node {name!r}; nodes: {', '.join(inventory.nodes)}"
            )
    return list(dict.fromkeys(names))


def make_plan(
    settings: Settings,
    command: str | None,
    selection: Selection,
    options: PlanOptions,
    run_id: str = "plan",
) -> Plan:
    """Validate everything and render the plan; raises UsageError before any host is touched.

    Without a ``command`` (``upgradectl plan``), an upgrade, or a patch when every chosen node's
    playbook can patch but not upgrade.
    """
    inventory = settings.load()
    playbooks = load_playbooks(inventory, options.playbook)
    names = select_nodes(inventory, selection.names, selection.group, selection.everything)
    if command is None:
        chosen = [
            playbooks.get(reference)
            for name in names
            if (reference := options.playbook or inventory.nodes[name].playbook)
        ]
        patch_only = chosen and all(
            p.supports("patch") and not p.supports("upgrade") for p in chosen
        )
        command = "patch" if patch_only else "upgrade"
    return build_plan(inventory, names, command, options, run_id, playbooks)


def build_plan(
    inventory: Inventory,
    names: Sequence[str],
    command: str,
    options: PlanOptions,
    run_id: str,
    playbooks: Playbooks,
) -> Plan:
    """Render the plan of ``command`` for ``names`` from loaded ``playbooks``: every template,
    every ``on:`` target."""
    _check_options(options)
    nodes = tuple(
        _node_plan(inventory, inventory.nodes[name], playbooks, command, options, run_id)
        for name in names
    )
    return Plan(command, run_id, inventory, nodes, playbooks, options)


def _check_options(options: PlanOptions) -> None:
    """The command line's values, in their domains: an empty --version from a cron line's
    `$(cat target-version)` of a missing file must not upgrade a group to nothing."""
    version = options.version
    if version is not None and (not version.strip() or not version.isprintable()):
        raise UsageError(f"--version: expected a version, got {version!r}")
    if options.timeout is not None and options.timeout <= 0:
        raise UsageError(f"--timeout: must be more than 0, got {options.timeout:g}")


def _node_plan(
    inventory: Inventory,
    node: Node,
    playbooks: Playbooks,
    command: str,
    options: PlanOptions,
    run_id: str,
) -> NodePlan:
    reference = options.playbook or node.playbook
    if not reference:
        raise UsageError(
            "no playbook (set `playbook:` in defaults or on the node, or give --playbook)",
            node.where,
        )
    playbook = playbooks.get(reference, None if options.playbook else node.playbook_at)
    wanted, required = COMMAND_STEPS[command], COMMAND_NEEDS[command]
    missing = playbook.lacks(command)
    if missing:
        raise UsageError(
            f"playbook {playbook.name!r} has no {', '.join(missing)} step, which `{command}` needs",
            playbook.where,
        )
    pair = pair_of(inventory, node.name)
    renderer = Renderer(node_variables(inventory, node, playbook, options, run_id, pair))
    # In the order the command runs them, for the plan's readers.
    steps: dict[str, Command] = {}
    for name in (name for name in wanted if name in playbook.steps):
        rendered = _command(renderer, inventory, node, playbook.steps[name])
        # A variable set to "" turns an optional step off (a call server with no CLI to count on).
        if rendered.run or name in required:
            steps[name] = rendered
    return NodePlan(
        node=node,
        playbook=playbook,
        drain=_drain_policy(playbook.drain, options),
        steps=frozen_mapping(steps),
        lock_path=renderer.render(playbook.lock, playbook.lock_at),
        pair=pair,
        variables=frozen_mapping(renderer.variables),
    )


def node_variables(
    inventory: Inventory,
    node: Node,
    playbook: Playbook,
    options: PlanOptions,
    run_id: str,
    pair: str | None,
) -> Variables:
    """The node's variables as written, with the built-ins: ``node``, ``run_id``, ``version``."""
    builtin_node = {"name": node.name, "host": node.address, "groups": list(node.groups)}
    if pair is not None:  # absent, not None: a template that needs the pair fails loudly
        builtin_node["pair"] = pair
    builtins: dict[str, Any] = {"node": builtin_node, "run_id": run_id}
    if options.version is not None:
        builtins["version"] = options.version
    return layered(inventory, node, playbook, options.extra_vars, builtins)


def _command(renderer: Renderer, inventory: Inventory, node: Node, spec: StepSpec) -> Command:
    where = spec.at
    target = node.name
    if spec.on is not None:
        target = renderer.render(spec.on, where("on"))
        if target not in inventory.nodes:
            raise UsageError(f"on: {target!r} is not a node in {inventory.path}", where("on"))
    sudo = spec.sudo if spec.sudo is not None else inventory.nodes[target].sudo
    return Command(
        step=spec.name,
        target=target,
        run=renderer.render(spec.run, where("run")),
        timeout=spec.timeout or DEFAULT_TIMEOUTS.get(spec.name, DEFAULT_TIMEOUT),
        sudo=sudo,
        parse=spec.parse,
        fail_if=spec.fail_if,
        retries=spec.retries,
        delay=spec.delay,
        expected=spec.expected,
        reboot=spec.reboot,
    )


def _drain_policy(policy: DrainPolicy, options: PlanOptions) -> DrainPolicy:
    overrides: dict[str, Any] = {
        "timeout": options.timeout,
        "stragglers": options.stragglers,
        "max_stragglers": options.max_stragglers,
    }
    return replace(policy, **{key: value for key, value in overrides.items() if value is not None})
