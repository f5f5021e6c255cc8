"""Real OTP nodes for the erlang playbooks' tests: a private epmd, nodes reached with erl_call,
the test modules of tests/erlang built at any version.

Every Erlang process here is ours: epmd runs in the foreground on a port of its own (erl would
otherwise start a daemon we could not stop), and every erl, erl_call and `upgradectl` run is
pointed at it with ERL_EPMD_PORT. Distribution listens on 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from clihelp import Ran, run_cli

from upgradectl.lab import LabServer, free_ports, start_servers, stop_servers
from upgradectl.lab.process import ServerProcess
from upgradectl.loader import bundled_playbooks

SOURCES = Path(__file__).parent / "erlang"
PID = re.compile(r"<\d+\.\d+\.\d+>")


class Epmd(LabServer):
    """The Erlang port mapper on a port of our own, in the foreground, on loopback only."""

    def __init__(self, directory: Path, port: int) -> None:
        self.port = port
        self.process = ServerProcess(
            "epmd", ["epmd", "-port", str(port), "-address", "127.0.0.1"], directory / "epmd.log"
        )

    def _write_config(self) -> None:
        """epmd reads no files."""

    def _is_ready(self) -> bool:
        return accepts(self.port)


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` (a server is up)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


Server = TypeVar("Server", bound=LabServer)


@contextmanager
def with_epmd(
    directory: Path, make: Callable[[dict[str, str]], Server]
) -> Iterator[tuple[Server, dict[str, str]]]:
    """A private epmd, then the server ``make`` builds from the Erlang environment pointed at it
    (see :func:`erlang_env`); the server and that environment, both stopped after the block."""
    (epmd_port,) = free_ports(1)
    env = erlang_env(directory, epmd_port)
    epmd = Epmd(directory, epmd_port)
    server = make(env)
    start_servers([epmd])
    try:
        start_servers([server])
        yield server, env
    finally:
        stop_servers([server, epmd])


def erlang_env(directory: Path, epmd_port: int) -> dict[str, str]:
    """The environment of every Erlang program of a test: our epmd, loopback, no stray files."""
    home = directory / "home"
    home.mkdir(exist_ok=True)
    return {
        "HOME": str(home),  # erl may write ~/.erlang.cookie: never the real one
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_ZFLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_CRASH_DUMP": str(directory / "erl_crash.dump"),  # never into the working directory
    }


class Reachable:
    """A node that a test talks to with erl_call: a name, a cookie, and Erlang to evaluate."""

    def __init__(self, prefix: str, env: dict[str, str]) -> None:
        self.name = f"{prefix}_{secrets.token_hex(3)}@localhost"
        self.cookie = secrets.token_hex(8)
        self.env = env

    def eval(self, expression: str) -> str:
        """Evaluate Erlang on the node; the result term as erl_call prints it (strings unquoted)."""
        done = self.erl_call(expression)
        match = re.fullmatch(r"\{ok, (.*)\}", done.stdout.strip(), re.DOTALL)
        assert done.returncode == 0 and match, (
            f"erl_call {expression!r}: {done.stdout}{done.stderr}"
        )
        return match.group(1).strip('"')

    def erl_call(self, expression: str) -> subprocess.CompletedProcess[str]:
        """erl_call -e ``expression``, as it ran."""
        return subprocess.run(
            ["erl_call", "-sname", self.name, "-c", self.cookie, "-e"],
            input=expression + "\n",
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    def leg_state(self, pid: str) -> tuple[str, str, int]:
        """What a call leg says of itself: its code's vsn, its state's shape, its frames."""
        text = self.eval(
            f'{{V, Shape, _, N}} = gen_server:call(list_to_pid("{pid}"), state, 2000), '
            'lists:flatten(io_lib:format("~s ~s ~b", [V, Shape, N])).'
        )
        vsn, shape, frames = text.split()
        return vsn, shape, int(frames)

    def start_legs(self, count: int, frame_ms: int) -> list[str]:
        """``count`` call legs under the running call_sup, a frame every ``frame_ms``: pids."""
        legs = self.eval(
            f"[pid_to_list(call_sup:start_leg(I, {frame_ms})) || I <- lists:seq(1, {count})]."
        )
        return PID.findall(legs)


Spec = tuple[str, str, tuple[str, ...]]  # module, vsn, -D defines
_BEAMS: dict[Spec, Path] = {}


def build(module: str, vsn: str, directory: Path, *defines: str) -> Path:
    """``tests/erlang/MODULE.erl`` compiled as version ``vsn`` (with ``-DNAME`` ``defines``)
    into ``directory``: compiled once a test session, then copied (the tests build the same few
    versions again and again)."""
    spec = (module, vsn, defines)
    compile_all([spec])
    directory.mkdir(parents=True, exist_ok=True)
    beam = directory / f"{module}.beam"
    shutil.copyfile(_BEAMS[spec], beam)
    return beam


def compile_all(specs: Iterable[Spec]) -> None:
    """Compile, in one erl, each spec not compiled yet this session: erlc boots an Erlang VM
    for each module (0.13 s of CPU)."""
    missing = {
        spec: _compiled_dir() / "-".join((spec[0], spec[1], *spec[2]))
        for spec in specs
        if spec not in _BEAMS
    }
    if not missing:
        return
    script = ""
    for (module, vsn, defines), directory in missing.items():
        directory.mkdir()
        options = [f'{{outdir, "{directory}"}}', f"{{d, 'VSN', \"{vsn}\"}}"]
        options += [f"{{d, '{define}'}}" for define in defines]
        script += (
            f'{{ok, _}} = compile:file("{SOURCES / module}", [report, {", ".join(options)}]), '
        )
    subprocess.run(["erl", "-noshell", "-eval", script + "halt()."], check=True, timeout=60)
    for spec, directory in missing.items():
        _BEAMS[spec] = directory / f"{spec[0]}.beam"


@functools.cache
def _compiled_dir() -> Path:
    """Where the session's compiled test modules live; removed when the session ends."""
    directory = Path(tempfile.mkdtemp(prefix="upgradectl-otplab-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def private_lock_copy(playbook: str, directory: Path) -> str:
    """A copy of the bundled ``playbook`` whose node lock is under ``directory``.

    The tests' nodes are all this machine, where the default lock (/var/tmp, by node name) would
    be one file for every test running at once (pytest-xdist workers, or two checkouts).
    """
    copy = directory / f"{playbook}-playbook.yaml"
    text = Path(bundled_playbooks()[playbook]).read_text()
    copy.write_text(f'{text}\nlock: "{directory}/{{{{ node.name }}}}.lock"\n')
    return str(copy)


def local_cli(
    directory: Path,
    name: str,
    playbook: str,
    node_vars: dict[str, str],
    *args: str,
    env: dict[str, str] | None = None,
    beside: dict[str, Any] | None = None,
) -> Ran:
    """`upgradectl --json ARGS` on an inventory of the ``beside`` nodes and one local node
    ``name`` running the bundled ``playbook`` with ``node_vars``; its lock, the inventory and the
    state directory under ``directory``."""
    node = {
        "transport": "local",
        "playbook": private_lock_copy(playbook, directory),
        "vars": node_vars,
    }
    inventory = directory / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"nodes": {**(beside or {}), name: node}}))
    state = str(directory / "state")
    return run_cli("-i", str(inventory), "--state-dir", state, "--json", *args, env=env)
