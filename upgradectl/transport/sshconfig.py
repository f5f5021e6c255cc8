"""Where and as whom to connect, as OpenSSH itself resolves it: ``ssh -G HOST``.

OpenSSH's configuration has Include, Match, wildcards, tokens and canonicalisation; rather than
re-implement them (paramiko's parser has no Include), we ask OpenSSH's own resolver, once per
host, or once for a whole fleet when its answer provably cannot depend on the host (``Answers``).
OpenSSH reads the configuration of the account's home directory; a ``$HOME`` pointing elsewhere
(a test, a shared controller account) is honoured by naming its ``.ssh/config`` with ``-F`` and
reading its ``known_hosts`` there.

``ssh -G`` prints the known_hosts files with their tokens and ``~`` expanded, separated by
spaces: a file name containing a space cannot be told apart, and is read as two.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import threading
from collections.abc import Callable
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
# Host and user names OpenSSH takes as they are: no user@, port, URI or IPv6 brackets to parse.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# `ssh -v` names each configuration file as it reads it, Included ones too.
_READING = "debug1: Reading configuration data "
# A configuration line's keyword and its arguments (`Keyword args` or `Keyword=args`).
_KEYWORD = re.compile(r"\s*=\s*|\s+")

Answer = dict[str, list[str]]


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
    alias: str,
    host: str | None,
    port: int | None,
    user: str | None,
    identity_file: str | None,
    *,
    ask: Callable[[str, int | None, str | None], Answer] | None = None,
) -> Endpoint:
    """Apply ``~/.ssh/config`` to a node as ``ssh`` would, the inventory's fields winning;
    ``ask`` is OpenSSH's resolver (``ask_openssh``, or a run's shared ``Answers``)."""
    found = (ask or ask_openssh)(host or alias, port, user)
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


class Answers:
    """OpenSSH's answers for one run's hosts, ``ssh -G`` asked as few times as is exact.

    ``ssh -G`` costs 4-5 ms of CPU (a process, its libraries, its configuration), as much as a
    tenth of what a whole node's upgrade costs the controller. Only ``Host`` patterns, ``Match``
    and ``%`` tokens (and canonicalisation, which re-reads the configuration under a new name)
    make OpenSSH answer one host name differently from another; a port or user given on the
    command line is printed as given. So the first host asked (per way of asking: with or
    without a port, with or without a user) is asked twice: ``ssh -G`` for its answer, and
    ``ssh -G -v``, which names every file OpenSSH reads; when none of them holds any of those,
    every other plain host name gets that answer with its own name, port and user. Otherwise, or for a name that is not plain, each
    host gets its own ``ssh -G``, as before. OpenSSH stays the resolver: it chose the files and
    their order, and answered; the files are only read to prove that it would answer alike.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (port given, user given) -> the first host's answer, or None: each host asks
        self._shared: dict[tuple[bool, bool], Answer | None] = {}

    def ask(self, host: str, port: int | None, user: str | None) -> Answer:
        """OpenSSH's resolved configuration for ``host``, as ``ask_openssh`` gives it."""
        if not _PLAIN_NAME.fullmatch(host) or not _PLAIN_NAME.fullmatch(user or "u"):
            return ask_openssh(host, port, user)
        shape = (bool(port), bool(user))
        with self._lock:  # the others wait for the first answer, rather than each ask at once
            if shape not in self._shared:
                self._shared[shape] = None  # should OpenSSH refuse, each host asks for itself
                found = ask_openssh(host, port, user)
                files = _files_read(host, port, user)
                if _alike_for_every_host(files) and found == _as_for(host, port, user, found):
                    self._shared[shape] = found
                return found
            shared = self._shared[shape]
        if shared is None:
            return ask_openssh(host, port, user)
        return _as_for(host, port, user, shared)


def _as_for(host: str, port: int | None, user: str | None, found: Answer) -> Answer:
    """``found``, OpenSSH's answer for another host of the same shape, as it is for ``host``:
    OpenSSH prints the name as given (``host``) and lowercased (``hostname``), and the port
    and user given on its command line."""
    answer = {**found, "hostname": [host.lower()]}
    if "host" in found:
        answer["host"] = [host]
    if port:
        answer["port"] = [str(port)]
    if user:
        answer["user"] = [user]
    return answer


def _alike_for_every_host(files: list[str]) -> bool:
    """Whether configuration ``files`` answer every host name alike: no ``Host`` line but
    ``Host *``, no ``Match``, no ``%`` token, no canonicalisation (unreadable: not proven).
    No file named is not proven either: an ``ssh`` that words its debug output otherwise would
    name none (OpenSSH reads at least the system's file, or the ``-F`` one)."""
    if not files:
        return False
    for path in files:
        try:
            with open(path, encoding="utf-8") as text:
                lines = [line.strip() for line in text.read().splitlines()]
        except (OSError, UnicodeDecodeError):
            return False
        for line in lines:
            if not line or line.startswith("#"):
                continue
            keyword, *args = _KEYWORD.split(line, maxsplit=1)
            keyword = keyword.lower()
            value = args[0].split() if args else []
            if (
                "%" in line
                or keyword == "match"
                or (keyword == "host" and value != ["*"])
                or (keyword == "canonicalizehostname" and value != ["no"])
            ):
                return False
    return True


def ask_openssh(host: str, port: int | None, user: str | None) -> Answer:
    """OpenSSH's resolved configuration for ``host``: keyword -> values, in order."""
    found: Answer = {}
    for line in _ssh_g(host, port, user).stdout.splitlines():
        keyword, _, value = line.partition(" ")
        found.setdefault(keyword.lower(), []).append(value)
    return found


def _files_read(host: str, port: int | None, user: str | None) -> list[str]:
    """The configuration files OpenSSH reads to answer for ``host``, as ``ssh -G -v`` names
    them (its answer then says ``loglevel DEBUG1``: not the one to keep)."""
    said = _ssh_g(host, port, user, "-v").stderr.splitlines()
    return [line.removeprefix(_READING) for line in said if line.startswith(_READING)]


def _ssh_g(
    host: str, port: int | None, user: str | None, *options: str
) -> subprocess.CompletedProcess[str]:
    command = ["ssh", "-G", *options, *_config_file()]
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
        said = [line for line in done.stderr.splitlines() if not line.startswith("debug")]
        words = "\n".join(said).strip() or f"exit {done.returncode}"
        raise UsageError(f"{host}: ssh -G cannot resolve it: {words}")
    return done


def _account_home() -> str:
    return pwd.getpwuid(os.getuid()).pw_dir


def _config_file() -> list[str]:
    """``-F $HOME/.ssh/config`` when $HOME is not the account's home OpenSSH would read."""
    home = os.path.expanduser("~")
    if os.path.realpath(home) == os.path.realpath(_account_home()):
        return []
    config = os.path.join(home, ".ssh", "config")
    return ["-F", config if os.path.exists(config) else os.devnull]


def _known_hosts(found: Answer, keyword: str) -> tuple[str, ...]:
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
