"""Which keys a connection offers, and why none was accepted, in OpenSSH's words.

The identity files named (by the inventory or ``~/.ssh/config``) must exist; with none named,
OpenSSH's default ones that exist are offered. An encrypted key cannot be unlocked without a
prompt, so it is left to ssh-agent; when the login is refused, the message says which keys were
tried and, for an encrypted one, to add it with ssh-add.
"""

from __future__ import annotations

import functools
import os

from upgradectl.errors import AuthenticationRefused
from upgradectl.transport.paramiko_lean import paramiko
from upgradectl.transport.sshconfig import DEFAULT_IDENTITIES, Endpoint


class Identities:
    """The keys one endpoint offers, sorted once into usable and encrypted."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.login = f"{endpoint.user}@{endpoint.hostname}" if endpoint.user else endpoint.hostname
        self.usable: list[str] = []
        self.encrypted: list[str] = []

    def offered(self) -> list[str]:
        """The key files to offer (the agent's keys come on top); refused for a missing one."""
        named = self.endpoint.identity_files
        for path in named:
            if not os.path.exists(path):
                raise AuthenticationRefused(
                    f"{self.endpoint.alias}: {self.login}: no such identity file: {_tilde(path)}"
                    " (named by the inventory's identity_file or ~/.ssh/config's IdentityFile)"
                )
        candidates = named or tuple(
            found
            for path in DEFAULT_IDENTITIES
            if os.path.exists(found := os.path.expanduser(path))
        )
        kinds = {path: _kind(path, os.stat(path).st_mtime_ns) for path in candidates}
        self.usable = [path for path, kind in kinds.items() if kind == "usable"]
        self.encrypted = [path for path, kind in kinds.items() if kind == "encrypted"]
        return self.usable

    def refused(self) -> AuthenticationRefused:
        """The error for a login no offered key opened, saying what was tried and what to do."""
        tried = [_tilde(path) for path in self.usable]
        agent = _agent_keys()
        if agent:
            tried.append(f"{agent} from ssh-agent")
        message = (
            f"{self.endpoint.alias}: {self.login}: Permission denied (publickey); "
            f"tried keys: {', '.join(tried) or 'none (no identity file, no ssh-agent)'}"
        )
        for path in self.encrypted:
            message += (
                f"; {_tilde(path)} is encrypted and no agent key was accepted:"
                f" add it with ssh-add {_tilde(path)}"
            )
        return AuthenticationRefused(message)


@functools.lru_cache(maxsize=256)
def _kind(path: str, mtime_ns: int) -> str:
    """usable, encrypted (needs a passphrase) or unusable (a type paramiko cannot read).

    ``mtime_ns`` is part of the cache key: a key replaced during a long run is read again.
    """
    # The key types paramiko's client itself tries (PKey.from_path does not report a passphrase
    # as such for OpenSSH-format keys).
    for key_type in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key_type.from_private_key_file(path)
        except paramiko.PasswordRequiredException:
            return "encrypted"
        except (paramiko.SSHException, OSError, ValueError):
            continue
        return "usable"
    return "unusable"


def _agent_keys() -> int:
    """How many keys ssh-agent holds (0 without an agent)."""
    agent = paramiko.Agent()
    try:
        return len(agent.get_keys())
    finally:
        agent.close()


def _tilde(path: str) -> str:
    home = os.path.expanduser("~").rstrip("/") + "/"
    return "~/" + path[len(home) :] if path.startswith(home) else path
