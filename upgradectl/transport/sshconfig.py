"""Where and as whom to connect, as OpenSSH itself resolves it: ``ssh -G HOST``.

OpenSSH's configuration has Include, Match, wildcards, tokens and canonicalisation; rather than
re-implement them (paramiko's parser has no Include), we ask OpenSSH's own resolver, once per
distinct host. OpenSSH reads the configuration of the account's home directory; a ``$HOME``
pointing elsewhere (a test, a shared controller account) is honoured by naming its
``.ssh/config`` with ``-F`` and reading its ``known_hosts`` there.

``ssh -G`` prints the known_hosts files with their tokens and ``~`` expanded, separated by
spaces: a file name containing a space cannot be told apart, and is read as two.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass

from upgradectl.errors import UsageError

# The identity files OpenSSH tries when the configuration names none (``ssh -G`` lists them).
DEFAULT_IDENTITIES = (
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
)
# ssh -G reads files only; a configuration that runs commands (Match exec) still ends quickly.
RESOLVE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Hop:
    """One ProxyJump hop, ``[user@]host[:port]``."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Hop:
        """Read one hop as OpenSSH writes it (``ssh://`` URIs included)."""
        text = text.removeprefix("ssh://")
        user, _, rest = text.rpartition("@")
        host, colon, port = rest.rpartition(":") if rest.count(":") == 1 else ("", "", "")
        if not colon:
            host = rest
        return cls(host.strip("[]"), user or None, int(port) if port.isdigit() else None)


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, after ``~/.ssh/config`` was applied."""

    alias: str
    hostname: str
    port: int
    user: str | None
    # Named by the inventory or the configuration; each must exist. Empty: OpenSSH's defaults,
    # those of them that exist, as `ssh` does with no IdentityFile.
    identity_files: tuple[str, ...]
    # UserKnownHostsFile, in order: the first is where a new key is written.
    known_hosts: tuple[str, ...]
    proxy_jump: tuple[Hop, ...] = ()
    global_known_hosts: tuple[str, ...] = ()  # GlobalKnownHostsFile, read only
    host_key_alias: str | None = None  # HostKeyAlias: the name the host key is known by


def resolve(
    alias: str, host: str | None, port: int | None, user: str | None, identity_file: str | None
) -> Endpoint:
    """Apply ``~/.ssh/config`` to a node as ``ssh`` would, the inventory's fields winning."""
    found = ask_openssh(host or alias, port, user)
    named = tuple(found.get("identityfile", ()))
    if identity_file:
        named = (identity_file,)
    elif named == DEFAULT_IDENTITIES:
        named = ()
    jump = found.get("proxyjump", ["none"])[0]
    if found.get("proxycommand", ["none"])[0] != "none":
        raise UsageError(
            f"{alias}: ~/.ssh/config gives it a ProxyCommand, which upgradectl cannot follow; "
            "use ProxyJump"
        )
    return Endpoint(
        alias=alias,
        hostname=found["hostname"][0],
        port=int(found["port"][0]),
        user=found["user"][0],
        identity_files=tuple(os.path.expanduser(path) for path in named),
        known_hosts=_known_hosts(found, "userknownhostsfile"),
        proxy_jump=() if jump == "none" else tuple(Hop.parse(hop) for hop in jump.split(",")),
        global_known_hosts=_known_hosts(found, "globalknownhostsfile"),
        host_key_alias=found.get("hostkeyalias", [None])[0],
    )


def ask_openssh(host: str, port: int | None, user: str | None) -> dict[str, list[str]]:
    """OpenSSH's resolved configuration for ``host``: keyword -> values, in order."""
    command = ["ssh", "-G", *_config_file()]
    if port:
        command += ["-p", str(port)]
    if user:
        command += ["-l", user]
    done = subprocess.run(
        [*command, "--", host],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=RESOLVE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.strip() or f"exit {done.returncode}"
        raise UsageError(f"{host}: ssh -G cannot resolve it: {said}")
    found: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        found.setdefault(keyword.lower(), []).append(value)
    return found


def _account_home() -> str:
    return pwd.getpwuid(os.getuid()).pw_dir


def _config_file() -> list[str]:
    """``-F $HOME/.ssh/config`` when $HOME is not the account's home OpenSSH would read."""
    home = os.path.expanduser("~")
    if os.path.realpath(home) == os.path.realpath(_account_home()):
        return []
    config = os.path.join(home, ".ssh", "config")
    return ["-F", config if os.path.exists(config) else os.devnull]


def _known_hosts(found: dict[str, list[str]], keyword: str) -> tuple[str, ...]:
    """The files of UserKnownHostsFile or GlobalKnownHostsFile, in order (``none``: no file),
    the account's home read as $HOME (see ``_config_file``)."""
    account = _account_home().rstrip("/") + "/"

    def in_home(path: str) -> str:
        path = os.path.expanduser(path)
        if path.startswith(account):
            return os.path.join(os.path.expanduser("~"), path[len(account) :])
        return path

    named = " ".join(found.get(keyword, ())).split()
    return tuple(in_home(path) for path in named if path != "none")
