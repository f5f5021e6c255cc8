"""The bundled ejabberd playbook against Debian's real ejabberd, started once for the module in a
temporary directory (owned by the ejabberd user, whom ejabberdctl runs as) on loopback ports
with an epmd of its own (otplab). XMPP clients log in over a plain socket; a module changed on
disk is loaded hot by `ejabberdctl update`; `upgrade` kicks the users left and stops ejabberd
kindly (`stop_kindly`), and the upgrade command starts it again.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clihelp import Ran
from conftest import wait_for
from otplab import Epmd, Reachable, accepts, erlang_env, local_cli

from upgradectl.lab import LabServer, free_ports, start_servers, stop_servers
from upgradectl.lab.process import ServerProcess

EBIN = next(Path("/usr/lib/x86_64-linux-gnu").glob("ejabberd-*/ebin"), None)
pytestmark = pytest.mark.skipif(
    EBIN is None or shutil.which("ejabberdctl") is None,
    reason="Debian's ejabberd is not installed (.ci/run installs it)",
)

CONFIG = """\
hosts: [localhost]
loglevel: info
certfiles: []
listen:
  - {{port: {port}, ip: "127.0.0.1", module: ejabberd_c2s, starttls_required: false}}
acl:
  local: {{user_regexp: ""}}
access_rules:
  local: {{allow: local}}
  c2s: {{allow: all}}
auth_method: internal
modules:
  mod_adhoc: {{}}
  mod_announce: {{}}
  mod_disco: {{}}
  mod_time: {{}}
"""
STREAM = (
    "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)


class Ejabberd(Reachable, LabServer):
    """`ejabberdctl foreground` with its configuration, spool and logs under ``directory``, and
    its code from a copy of Debian's ebin directory there (so that a test may change a module)."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        super().__init__("ejabberd", env)
        self.directory = directory
        self.port = free_ports(1)[0]
        self.ebin = directory / "ebin"
        self.ctl = (
            f"ejabberdctl --config-dir {directory} --ctl-config {directory}/ejabberdctl.cfg "
            f"--spool {directory}/spool --logs {directory}/logs --config {directory}/ejabberd.yml"
        )
        self.process = ServerProcess(
            "ejabberd", [*self.ctl.split(), "foreground"], directory / "ejabberd.out"
        )
        self.clients: list[socket.socket] = []  # the tests' logins, closed when the server stops

    def _write_config(self) -> None:
        for sub in ("spool", "logs"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        assert EBIN is not None
        shutil.copytree(EBIN, self.ebin)
        (self.directory / "inetrc").write_text("")
        (self.directory / "ejabberd.yml").write_text(CONFIG.format(port=self.port))
        # The interface as an erl flag: INET_DIST_INTERFACE costs every ejabberdctl run one
        # more erl, to parse it.
        (self.directory / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE={self.name}\n"
            f'ERL_OPTIONS="-setcookie {self.cookie} -pa {self.ebin} '
            '-kernel inet_dist_use_interface {127,0,0,1}"\n'
            f"ERL_EPMD_PORT={self.env['ERL_EPMD_PORT']}\nexport ERL_EPMD_PORT\n"
        )
        ejabberd = pwd.getpwnam("ejabberd")
        for path in [self.directory, *self.directory.rglob("*")]:
            shutil.chown(path, ejabberd.pw_uid, ejabberd.pw_gid)

    def _is_ready(self) -> bool:
        # The c2s port opens before ejabberd has started all it runs (its auth tables among
        # them): ready once the ejabberd application has started, as `ejabberdctl status` asks.
        return (
            accepts(self.port)
            and self.erl_call(
                "lists:keymember(ejabberd, 1, application:which_applications())."
            ).stdout.strip()
            == "{ok, true}"
        )

    def control(self, *args: str) -> str:
        """ejabberdctl ARGS; its output."""
        done = subprocess.run(
            [*self.ctl.split(), *args], capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout

    def log_out(self) -> None:
        """Close the clients' sockets, and wait until the server has no user connected."""
        for client in self.clients:
            client.close()
        self.clients.clear()
        wait_for(
            lambda: self.eval("ejabberd_sm:connected_users_number().") == "0",
            10,
            what="ejabberd to have no user connected",
        )

    def stop(self) -> None:
        """Stop the node however it runs now (the upgrade starts it again detached), and close
        the clients' sockets: init:stop() through erl_call, then wait until the node is gone
        (`ejabberdctl stop` and `stopped` cost an erl each, and `stopped` polls every 2 s)."""
        for client in self.clients:
            client.close()
        self.erl_call("init:stop().")
        wait_for(lambda: self.erl_call("node().").returncode != 0, 60, what="ejabberd to stop")
        # As `ejabberdctl stopped` ends: the epmd on our port is killed. The upgrade's
        # `stopped` killed ours (no node left in it), and its `start` ran a daemon in its place.
        subprocess.run(
            ["epmd", "-kill"], env={**os.environ, **self.env}, capture_output=True, check=False
        )

    def login(self, user: str, resource: str) -> socket.socket:
        """An XMPP client session of ``user`` (SASL PLAIN, then a bound resource)."""
        # Through erl_call, not `ejabberdctl register` (an erl and a su): setup, not under test.
        registered = self.eval(
            f'ejabberd_auth:try_register(<<"{user}">>, <<"localhost">>, <<"secret">>).'
        )
        assert registered == "ok", registered
        client = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.clients.append(client)
        client.sendall(STREAM.encode())
        _read_until(client, "</stream:features>")
        plain = base64.b64encode(f"\0{user}\0secret".encode()).decode()
        client.sendall(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>".encode()
        )
        assert "<success" in _read_until(client, ">")
        client.sendall(STREAM.encode())
        _read_until(client, "</stream:features>")
        client.sendall(
            f"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>".encode()
        )
        _read_until(client, "</iq>")
        return client


def _read_until(client: socket.socket, token: str) -> str:
    text = ""
    while token not in text:
        data = client.recv(65536).decode()
        if not data:
            raise EOFError(text)
        text += data
    return text


def ended(client: socket.socket) -> bool:
    """Whether the server closed this client's stream."""
    client.settimeout(0.2)
    try:
        while data := client.recv(65536):
            if b"</stream:stream>" in data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


@dataclass
class Xmpp:
    """The server and the CLI aimed at it, with the test's own inventory and state directory."""

    server: Ejabberd
    tmp: Path
    env: dict[str, str]

    def cli(self, *args: str, **variables: str) -> Ran:
        """`upgradectl --json ARGS` on one local node with the ejabberd playbook."""
        node_vars = {"ejabberdctl": self.server.ctl, **variables}
        return local_cli(self.tmp, "ejb-1", "ejabberd", node_vars, *args, env=self.env)


@pytest.fixture(scope="module")
def ejabberd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ejabberd, dict[str, str]]]:
    """epmd and an ejabberd node for the whole module (a boot and a stop are most of what a
    test costs); both stopped after its last test, however the node runs then."""
    home = tmp_path_factory.mktemp("ejabberd-erlang")
    (epmd_port,) = free_ports(1)
    env = erlang_env(home, epmd_port)
    epmd = Epmd(home, epmd_port)
    # Not under pytest's temporary directories: pytest keeps those to root, and ejabberd runs
    # as its own user.
    directory = Path(tempfile.mkdtemp(prefix="upgradectl-ejabberd-"))
    server = Ejabberd(directory, env)
    start_servers([epmd])
    try:
        start_servers([server])
        yield server, env
    finally:
        server.stop()
        stop_servers([server, epmd])
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def xmpp(ejabberd: tuple[Ejabberd, dict[str, str]], tmp_path: Path) -> Iterator[Xmpp]:
    """The module's ejabberd as a test finds it: running, no user connected (each test's
    clients are closed after it)."""
    server, env = ejabberd
    yield Xmpp(server, tmp_path, env)
    server.log_out()


def changed_on_disk(server: Ejabberd, module: str) -> None:
    """Rebuild ``module`` in the node's ebin from its own abstract code, with one attribute
    more (`upgradectl_patch`): a new version of it on disk, not loaded yet."""
    beam = server.ebin / f"{module}.beam"
    script = (
        f'{{ok, {{_, [{{abstract_code, {{_, [File, Module | Rest]}}}}]}}}} = beam_lib:chunks("{beam}", [abstract_code]), '
        '{ok, _, Bin} = compile:forms([File, Module, {attribute, 1, upgradectl_patch, "2"} | Rest], [binary, debug_info]), '
        f'ok = file:write_file("{beam}", Bin), halt().'
    )
    subprocess.run(["erl", "-noshell", "-eval", script], check=True, timeout=60)


@pytest.mark.slow
def test_patch_loads_a_module_changed_on_disk_with_ejabberdctl_update(xmpp: Xmpp) -> None:
    client = xmpp.server.login("alice", "phone")
    changed_on_disk(xmpp.server, "mod_time")
    assert xmpp.server.control("update_list").split() == ["mod_time"]

    ran = xmpp.cli("-v", "patch", "ejb-1", "--version", "23.01", "--yes")

    assert ran.code == 0, ran.stdout[-3000:] + ran.stderr
    patched = xmpp.server.eval(
        "proplists:get_value(upgradectl_patch, mod_time:module_info(attributes))."
    )
    assert patched == "2"  # the new code is loaded, hot
    assert xmpp.server.control("update_list").split() == []
    assert not ended(client)  # the user's session went on
    status = xmpp.cli("status", "ejb-1").events[0]["nodes"][0]
    assert (status["active"], status["version"]) == (1, "23.01-1")


@pytest.mark.slow
def test_upgrade_kicks_the_users_left_and_stops_ejabberd_kindly(xmpp: Xmpp) -> None:
    client = xmpp.server.login("bob", "laptop")
    blocked = xmpp.tmp / "blocked"

    ran = xmpp.cli(
        "-v", "upgrade", "ejb-1", "--version", "23.01-2", "--yes",
        "--timeout", "2s", "--stragglers", "force", "--max-stragglers", "5",
        block_command=f"touch {blocked}", unblock_command=f"rm -f {blocked}",
        stop_delay="1", stop_message="upgrading: back in a minute",
        upgrade_command=f"{xmpp.server.ctl} start && {xmpp.server.ctl} started",
    )  # fmt: skip

    assert ran.code == 0, ran.stdout[-3000:] + ran.stderr
    kinds = [k for k in ran.kinds("ejb-1") if k in ("blocked", "forced", "upgraded", "unblocked")]
    assert kinds == ["blocked", "forced", "upgraded", "unblocked"]
    assert [s["id"] for s in ran.summary["nodes"]["ejb-1"]["forced"]] == ["bob@localhost/laptop"]
    assert ended(client)
    upgrade = ran.step_output()
    assert "Sending announcement to connected users... ok" in upgrade
    assert "Stopping ejabberd port listeners" in upgrade
    assert not blocked.exists()
    status = xmpp.cli("status", "ejb-1").events[0]["nodes"][0]
    assert (status["active"], status["version"]) == (0, "23.01-1")  # started again
