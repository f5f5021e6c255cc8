"""The quoting check: every value put into a ``run:`` command goes through ``| quote``.

A value substituted raw into a shell command is shell code: a version, a host name or a
variable holding ``; rm -rf /`` runs on the node. ``| quote`` makes it one word. A value that
*is* shell code on purpose (a command prefix such as ``kamcmd`` or ``sudo apt-get install -y``,
held in a variable so that a site can change it) is marked ``| safe_shell``; the check then
reads that variable's own template the same way, since it becomes part of the command too.
"""

from __future__ import annotations

from dataclasses import dataclass

from upgradectl.errors import Location
from upgradectl.templates import QUOTE, SAFE_SHELL, is_template, substitutions
from upgradectl.variables import Variables


@dataclass(frozen=True)
class Unquoted:
    """One ``{{ ... }}`` that reaches a shell command unquoted and unmarked."""

    where: Location | None
    text: str

    def __str__(self) -> str:
        place = f"{self.where} " if self.where else ""
        return (
            f"{place}{{{{ {self.text} }}}} goes into a shell command unquoted: add `| quote` "
            "(or `| safe_shell` if the value is shell code on purpose)"
        )


def unquoted(template: str, where: Location | None, variables: Variables) -> list[Unquoted]:
    """The unquoted substitutions of the ``run:`` template ``template``, and of the variables
    it marks ``safe_shell`` (each variable read once)."""
    found: list[Unquoted] = []
    followed: set[str] = set()
    pending: list[tuple[str, Location | None]] = [(template, where)]
    while pending:
        text, place = pending.pop(0)
        for sub in substitutions(text):
            if sub.filter == QUOTE:
                continue
            if sub.filter != SAFE_SHELL:
                found.append(Unquoted(place, sub.text))
                continue
            value = variables.values.get(sub.variable) if sub.variable else None
            if sub.variable and sub.variable not in followed and is_template(value):
                followed.add(sub.variable)
                pending.append((str(value), variables.at(sub.variable)))
    return found
