"""A node's template variables: layered, each remembering where it was written, then resolved."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from upgradectl.errors import Location, UsageError
from upgradectl.model import Inventory, Node, Playbook
from upgradectl.templates import ENVIRONMENT, SecurityError, compiled, is_template


@dataclass(frozen=True)
class Variables:
    """Variable values as written (templates unrendered) and where each one was written."""

    values: Mapping[str, Any]
    where: Mapping[str, Location]

    def at(self, key: str) -> Location | None:
        """Where ``key`` was written."""
        return self.where.get(key)


def layered(
    inventory: Inventory,
    node: Node,
    playbook: Playbook,
    extra_vars: Mapping[str, str],
    builtins: Mapping[str, Any],
) -> Variables:
    """Lowest precedence first: playbook, defaults, groups, node, --var; then the built-ins."""
    values: dict[str, Any] = {}
    where: dict[str, Location] = {}
    layers: list[tuple[Mapping[str, Any], Mapping[str, Location]]] = [
        (playbook.vars, playbook.vars_at),
        (inventory.defaults_vars, inventory.defaults_vars_at),
        *((inventory.groups[g].vars, inventory.groups[g].vars_at) for g in node.groups),
        (node.vars, node.vars_at),
        (extra_vars, {key: Location(f"--var {key}", None, "") for key in extra_vars}),
    ]
    for layer, places in layers:
        values.update(layer)
        where.update(places)
        for key in layer.keys() - places.keys():
            where.pop(key, None)
    values.update(builtins)
    for key in builtins:
        where.pop(key, None)
    if "version" in builtins:
        where["version"] = Location("--version", None, "")
    return Variables(values, where)


class Renderer:
    """Renders a node's templates with its resolved variables; every failure is a usage error."""

    # Variables may hold templates ("{{ node.name }}-backend"). They are resolved first, a few
    # passes deep, so that filters such as `quote` see the final value. A variable that cannot
    # be resolved (it needs `version` and no --version was given) becomes a strict undefined
    # that fails only if a step of this command uses it. A variable that is a bad template, or
    # reaches outside the sandbox, fails at once, used or not, naming where it was written.
    MAX_PASSES = 5

    def __init__(self, variables: Variables) -> None:
        # What templates see: the environment's globals under the node's variables, made once
        # per node (Jinja would otherwise merge them into a new dict at every render).
        self._scope = self._resolved(variables)
        self.variables = {key: self._scope[key] for key in variables.values}

    def _resolved(self, variables: Variables) -> dict[str, Any]:
        resolved = {**ENVIRONMENT.globals, **variables.values}
        for _ in range(self.MAX_PASSES):
            pending = {key: value for key, value in resolved.items() if is_template(value)}
            if not pending:
                return resolved
            for key, value in pending.items():
                resolved[key] = self._resolve(key, value, resolved, variables.at(key))
        for key in [key for key, value in resolved.items() if is_template(value)]:
            resolved[key] = jinja2.StrictUndefined(
                hint=f"variable {key!r} refers to itself in a loop"
            )
        return resolved

    @staticmethod
    def _resolve(key: str, value: str, resolved: dict[str, Any], where: Location | None) -> Any:
        try:
            return _render(value, resolved, where)
        except jinja2.UndefinedError as exc:
            return jinja2.StrictUndefined(hint=f"{undefined_name(exc)}, which {key!r} needs")

    def render(self, template: str, where: Location | None) -> str:
        """``template`` rendered, stripped; a usage error at ``where`` if it cannot be."""
        try:
            return _render(template, self._scope, where).strip()
        except jinja2.UndefinedError as exc:
            raise UsageError(f"missing variable: {undefined_name(exc)}", where) from None


class TemplateRefused(UsageError):
    """A template tried to reach outside the sandbox, or to exhaust the controller."""


def _render(template: str, scope: dict[str, Any], where: Location | None) -> str:
    """Render with ``scope`` (globals included) as the context, not a copy of it; undefined
    variables propagate, every other failure is a usage error."""
    try:
        found = compiled(template)
        context = found.new_context(scope, shared=True)
        return str(found.environment.concat(found.root_render_func(context)))
    except jinja2.UndefinedError:
        raise
    except SecurityError as exc:
        raise TemplateRefused(f"template refused: {exc}", where) from None
    except jinja2.TemplateError as exc:
        raise UsageError(f"bad template: {exc}", where) from None
    except (RecursionError, MemoryError, OverflowError, ArithmeticError) as exc:
        raise TemplateRefused(f"template refused: {type(exc).__name__}: {exc}", where) from None
    except (TypeError, ValueError, LookupError, AttributeError) as exc:
        raise UsageError(f"bad template: {exc}", where) from None


def undefined_name(exc: jinja2.UndefinedError) -> str:
    """The name of the undefined variable, with a hint for ``version``."""
    text = str(exc.message)
    if "'version' is undefined" in text:
        return "'version' (give --version V)"
    return text.replace(" is undefined", "")
