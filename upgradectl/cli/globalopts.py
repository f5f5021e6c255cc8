"""Global options anywhere on the line, as kubectl and gh take them.

``upgradectl upgrade node-a --yes -q`` means ``upgradectl -q upgrade node-a --yes``: before click
parses, every global option written after the command is moved in front of it. The command's
own options are read from click (which take a value), so a value is never mistaken for an
option; ``--`` ends the options, as everywhere.
"""

from __future__ import annotations

import click

# The group's options that are not per command; `--version` is not one of them: after a
# command it is that command's --version V (the version to roll out).
_GLOBAL_PARAMS = ("inventory", "state_dir", "as_json", "verbose", "quiet", "accept_new_host_keys")


def hoist(group: click.Group, args: list[str]) -> list[str]:
    """``args`` with the global options written after the command moved before it."""
    ctx = click.Context(group)
    flags, valued = _names(group.params, _GLOBAL_PARAMS)
    position = _command_position(args, valued)
    if position is None:
        return list(args)
    command = group.get_command(ctx, args[position])
    if command is None:
        return list(args)
    _, own_valued = _names(command.params, None)
    moved: list[str] = []
    kept: list[str] = []
    rest = args[position + 1 :]
    index = 0
    while index < len(rest):
        word = rest[index]
        name = word.split("=", 1)[0]
        if word == "--":
            kept += rest[index:]
            break
        if word in flags or _repeated_short(word, flags):
            moved.append(word)
        elif name in valued:
            taken = 1 if "=" in word or index + 1 >= len(rest) else 2
            moved += rest[index : index + taken]
            index += taken
            continue
        elif word in own_valued:
            kept += rest[index : index + 2]  # the option and its value, whatever it looks like
            index += 2
            continue
        else:
            kept.append(word)
        index += 1
    return [*args[:position], *moved, args[position], *kept]


def _names(
    params: list[click.Parameter], wanted: tuple[str, ...] | None
) -> tuple[set[str], set[str]]:
    """The option strings of ``params`` that are flags, and those that take a value."""
    flags: set[str] = set()
    valued: set[str] = set()
    for param in params:
        if not isinstance(param, click.Option) or (wanted and param.name not in wanted):
            continue
        names = set(param.opts) | set(param.secondary_opts)
        (flags if param.is_flag or param.count else valued).update(names)
    return flags, valued


def _command_position(args: list[str], valued: set[str]) -> int | None:
    """Where the command's name is: the first word that is neither an option nor its value."""
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            return index + 1 if index + 1 < len(args) else None
        if not word.startswith("-"):
            return index
        index += 2 if word in valued else 1
    return None


def _repeated_short(word: str, flags: set[str]) -> bool:
    """``-vv`` (a counted flag written twice)."""
    return (
        len(word) > 2
        and word[0] == "-"
        and word[1] != "-"
        and f"-{word[1]}" in flags
        and (set(word[1:]) == {word[1]})
    )
