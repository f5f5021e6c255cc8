"""Templates: Jinja2 in an immutable sandbox, with our two filters and nothing else.

Whoever writes an inventory, a playbook or a cron line writes templates; none of them may run
code on the controller. The sandbox refuses attributes and calls that reach outside it
(``''.__class__``, ``cycler.__init__.__globals__``), the environment has one global,
``bundled`` (the text of a file shipped with upgradectl's playbooks: how a playbook carries a
helper program to the node in its command), and only two filters: ``quote`` (shell quoting) and
``safe_shell`` (a marker: "this value is shell code on purpose"; it changes nothing).
"""

from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# The longest string or list a template may build with `*`, and the largest power: a template
# must not exhaust the controller's memory or CPU (`{{ 'x' * 10**12 }}`, `{{ 9**9**9 }}`).
MAX_PRODUCT = 1_000_000
MAX_EXPONENT = 64

QUOTE = "quote"
SAFE_SHELL = "safe_shell"

__all__ = ["SecurityError", "Substitution", "compiled", "is_template", "substitutions"]


class _Sandbox(ImmutableSandboxedEnvironment):
    """A sandbox that refuses loudly: reaching outside it is an error, never an empty string."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(
            f"attribute {attribute!r} of a {type(obj).__name__} is outside the sandbox"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and abs(_number(right)) > MAX_EXPONENT:
            raise SecurityError(f"{left!r} ** {right!r} is too large")
        if operator == "*" and _product_size(left, right) > MAX_PRODUCT:
            raise SecurityError(f"a product longer than {MAX_PRODUCT} items is refused")
        return super().call_binop(context, operator, left, right)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _product_size(left: Any, right: Any) -> float:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int):
            return len(sequence) * count
    return 0.0


def _environment() -> jinja2.Environment:
    env = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    env.globals.clear()
    env.globals["bundled"] = _bundled
    env.filters = {QUOTE: lambda value: shlex.quote(str(value)), SAFE_SHELL: lambda value: value}
    return env


@functools.lru_cache(maxsize=16)
def bundled_file(name: str) -> str:
    """The text of a file shipped beside the bundled playbooks, e.g. ``erlang/upgradectl_otp.erl``;
    OSError when there is none (a name may not climb out of the playbooks folder)."""
    parts = name.split("/")
    if ".." in parts or name.startswith("/"):
        raise FileNotFoundError(name)
    return (resources.files("upgradectl") / "playbooks").joinpath(*parts).read_text("utf-8")


def _bundled(name: str) -> str:
    try:
        return bundled_file(str(name))
    except OSError:
        raise jinja2.TemplateRuntimeError(
            f"bundled({name!r}): no such file ships with upgradectl"
        ) from None


ENVIRONMENT = _environment()


@functools.lru_cache(maxsize=4096)
def compiled(text: str) -> jinja2.Template:
    """Each distinct template compiled once, not once per node: compiling one costs ~1 ms,
    rendering it ~20 us, and a fleet's nodes share their playbook's templates."""
    return ENVIRONMENT.from_string(text)


def is_template(value: Any) -> bool:
    """Whether ``value`` is text with a ``{{ }}`` or ``{% %}`` in it."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@dataclass(frozen=True)
class Substitution:
    """One ``{{ ... }}`` of a template, as the quoting check sees it."""

    text: str  # as written, without the braces
    line: int  # within the template, from 1
    filter: str | None  # the last filter applied: quote, safe_shell, another, or None
    variable: str | None  # the variable, when the expression is one plain variable (and filter)

    @property
    def quoted(self) -> bool:
        """Whether the value reaches the shell as one quoted word."""
        return self.filter == QUOTE


@functools.lru_cache(maxsize=4096)
def substitutions(text: str) -> tuple[Substitution, ...]:
    """Every ``{{ ... }}`` in ``text``, in order; a template that does not parse has none
    (rendering it reports the error with its location)."""
    found = []
    try:
        blocks = list(_expression_blocks(text))
        for line, source in blocks:
            body = ENVIRONMENT.parse("{{" + source + "}}").body
            output = body[0] if body else None
            if isinstance(output, nodes.Output) and output.nodes:
                found.append(_substitution(source.strip(), line, output.nodes[0]))
    except jinja2.TemplateSyntaxError:
        return ()
    return tuple(found)


def _expression_blocks(text: str) -> list[tuple[int, str]]:
    """(line, source) of each ``{{ ... }}``, from Jinja's own lexer (so a ``}}`` inside a string
    literal does not end the block)."""
    blocks: list[tuple[int, str]] = []
    current: list[str] | None = None
    start = 0
    for line, kind, value in ENVIRONMENT.lex(text):
        if kind == "variable_begin":
            current, start = [], line
        elif kind == "variable_end" and current is not None:
            blocks.append((start, "".join(current)))
            current = None
        elif current is not None:
            current.append(value)
    return blocks


def _substitution(source: str, line: int, expression: nodes.Node) -> Substitution:
    name = expression.name if isinstance(expression, nodes.Filter) else None
    inner = expression.node if isinstance(expression, nodes.Filter) else expression
    variable = inner.name if isinstance(inner, nodes.Name) else None
    return Substitution(source, line, name, variable)
