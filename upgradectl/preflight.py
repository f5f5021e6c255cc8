"""Before the first block: every host the run will use lets us in, all asked at once.

Each selected node and each host a step runs on (``on:``) is connected, its host key checked and
the login made, and every ``sudo: true`` step's exact command is put to ``sudo -n -l`` on its
host: in parallel and without retries (nothing is touched yet, so there is nothing to wait for).
Any failure ends the run before anything is touched: a refusal (credentials, host key, sudo) is
exit 2, a host nothing answers at is exit 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from upgradectl.errors import (
    ExitCode,
    SudoRefused,
    UnexpectedError,
    UpgradectlError,
    most_serious,
)
from upgradectl.events import Events
from upgradectl.plan import TOOL_TIMEOUT, Command, Plan
from upgradectl.sudo import sudo_check
from upgradectl.transport.base import Transport

# Connecting is mostly waiting on the network: more threads than cores pays.
MAX_THREADS = 64


def hosts_of(plan: Plan, names: Iterable[str]) -> list[str]:
    """Every inventory host the run of ``names`` uses: the nodes and their steps' targets."""
    found = set()
    for name in names:
        found.add(name)
        found.update(command.target for command in plan.node(name).steps.values())
    return sorted(found)


@dataclass(frozen=True)
class Refusals:
    """What the preflight found wrong: host -> error (false when nothing was)."""

    plan: Plan
    errors: dict[str, UpgradectlError]

    def __bool__(self) -> bool:
        return bool(self.errors)

    @property
    def exit_code(self) -> ExitCode:
        """A refusal is the operator's setup (exit 2); a host that did not answer, a failure (1).

        Nothing was touched either way: never 4, which says a node may be out of service.
        """
        return most_serious(
            [
                ExitCode.USAGE if error.exit_code == ExitCode.USAGE else ExitCode.STEP_FAILED
                for error in self.errors.values()
            ]
        )

    def own(self, name: str) -> list[str]:
        """The refusals of node ``name``'s own hosts (itself, its steps' targets)."""
        return [
            str(self.errors[host]) for host in hosts_of(self.plan, [name]) if host in self.errors
        ]

    def result(self, name: str) -> str:
        """``failed`` for a node whose hosts refused, ``skipped`` for one stopped by another's."""
        return "failed" if self.own(name) else "skipped"

    def reason(self, name: str) -> str:
        """Why node ``name`` was not started."""
        own = self.own(name)
        if own:
            return "not started: " + "; ".join(own)
        return f"not started: the preflight failed on {', '.join(sorted(self.errors))}"


def sudo_commands(plan: Plan, names: Iterable[str]) -> dict[str, list[Command]]:
    """Host -> the ``sudo: true`` commands the run of ``names`` may run there (each once)."""
    found: dict[str, dict[str, Command]] = {}
    for name in names:
        for command in plan.node(name).steps.values():
            if command.sudo:
                found.setdefault(command.target, {}).setdefault(command.run, command)
    return {host: list(commands.values()) for host, commands in found.items()}


def preflight(
    plan: Plan, names: Iterable[str], transport_for: Callable[[str], Transport], events: Events
) -> Refusals:
    """Ask every host the run uses, at once, whether it lets us in and sudo lets its steps run."""
    names = list(names)
    hosts = hosts_of(plan, names)
    sudo = sudo_commands(plan, names)
    with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(hosts) or 1)) as pool:
        answers = list(pool.map(lambda host: _ask(transport_for, host, sudo.get(host, [])), hosts))
    errors = {host: error for host, error in zip(hosts, answers, strict=True) if error is not None}
    for host, error in errors.items():
        events.emit("preflight", host, f"preflight: {error}", error=str(error))
    return Refusals(plan, errors)


def _ask(
    transport_for: Callable[[str], Transport], host: str, sudo: list[Command]
) -> UpgradectlError | None:
    try:
        transport = transport_for(host)  # resolving its ~/.ssh/config may fail too
        transport.connect()
        for command in sudo:
            check = sudo_check(command.run)
            said = transport.run(check, TOOL_TIMEOUT)
            if said.exit_code != 0:
                return SudoRefused(transport.name, command.step, check, said.output)
    except UpgradectlError as exc:  # refused, unanswered, or unresolvable
        return exc
    except Exception as exc:  # a fault of ours: the run still ends before anything is touched
        return UnexpectedError(exc)
    return None
