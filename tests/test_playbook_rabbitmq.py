"""The bundled rabbitmq playbook against Debian's real RabbitMQ server, started once for the module
in a temporary directory on loopback ports with an epmd of its own (otplab): AMQP clients
connected through pika are the sessions; `upgrade` puts the node in maintenance mode (which
closes them), restarts the broker and takes it out of maintenance again.

Each test leaves the broker as it found it (out of maintenance, no client connected), and the
fixture makes sure of it before the next one: a broker boot is the dearest part of this module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
from clihelp import Ran
from conftest import wait_for
from otplab import accepts, local_cli, with_epmd

from upgradectl.lab import LabServer, free_ports
from upgradectl.lab.process import ServerProcess

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
pytestmark = pytest.mark.skipif(
    not (RABBITMQ_BIN / "rabbitmq-server").exists() or shutil.which("epmd") is None,
    reason="Debian's rabbitmq-server is not installed (.ci/run installs it)",
)


class RabbitMq(LabServer):
    """rabbitmq-server in the foreground, everything it writes under ``directory``."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.amqp_port, dist_port = free_ports(2)
        self.node = f"rabbit_{os.getpid()}_{self.amqp_port}@localhost"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "enabled_plugins").write_text("[].\n")
        self.env = {
            **env,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_BASE": str(directory),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(directory / "plugins-expand"),
            # ADDITIONAL: RABBITMQ_SERVER_ERL_ARGS would replace rabbitmq-env's own flags, among
            # them +sbwt none (idle schedulers sleep instead of spinning on a shared CPU).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.process = ServerProcess(
            "rabbitmq",
            [
                "env",
                *(f"{k}={v}" for k, v in self.env.items()),
                str(RABBITMQ_BIN / "rabbitmq-server"),
            ],
            directory / "rabbitmq.log",
        )

    def _write_config(self) -> None:
        """Written in __init__: the environment names every file."""

    def _is_ready(self) -> bool:
        # The AMQP listener opens before the boot ends: until rabbit:is_running() says so, a
        # CLI command that needs the running app fails validation (exit 64, with its usage).
        return accepts(self.amqp_port) and self.eval("rabbit:is_running().") == "true"

    def eval(self, expression: str) -> str:
        """Evaluate Erlang in the broker (with the cookie it wrote in HOME); what erl_call
        printed (``{ok, Term}``), or its error."""
        try:
            cookie = (Path(self.env["HOME"]) / ".erlang.cookie").read_text().strip()
        except FileNotFoundError:  # not written yet: the broker is still starting
            return ""
        done = subprocess.run(
            ["erl_call", "-sname", self.node, "-c", cookie, "-e"],
            input=expression + "\n", env={**os.environ, **self.env},
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        text = done.stdout.strip()
        return text.removeprefix("{ok,").removesuffix("}").strip() if done.returncode == 0 else text

    def in_maintenance(self) -> bool:
        """Whether the broker is in maintenance mode, as it says itself."""
        return self.eval("rabbit_maintenance:is_being_drained_local_read(node()).") == "true"

    def reset(self) -> None:
        """Back as a test finds it: booted (a test may have restarted the app), out of
        maintenance mode, no client connected."""
        wait_for(self._is_ready, 30, what="the broker to run")
        self.eval(
            "case rabbit_maintenance:is_being_drained_local_read(node()) of "
            "true -> rabbit_maintenance:revive(); false -> ok end, "
            '[rabbit_networking:close_connection(P, "test reset") || '
            "P <- rabbit_networking:connections()], ok."
        )
        wait_for(
            lambda: self.eval("rabbit_networking:connections().") == "[]",
            10,
            what="the broker to have no client connected",
        )

    def tool(self, name: str) -> str:
        """A CLI tool of this broker as a command line that carries its own environment (the
        upgrade step runs through sudo, which clears the environment)."""
        # The broker's enabled plugins file too: without it a CLI tool waits about 2 s for
        # its plugins on every run.
        keep = ("HOME", "ERL_EPMD_PORT", "RABBITMQ_ENABLED_PLUGINS_FILE")
        env = " ".join(f"{key}={self.env[key]}" for key in keep)
        return f"env {env} {RABBITMQ_BIN / name} -n {self.node}"

    def client(self) -> Client:
        """An AMQP client connected to the broker (guest may log in from loopback)."""
        return Client(self.amqp_port)


class Client:
    """An AMQP client that serves its connection, as a real client's I/O loop does: the broker's
    Connection.Close is answered at once (one never read is closed by the broker only after its
    30 s close handshake timeout)."""

    def __init__(self, port: int) -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        self.closed_by_broker = threading.Event()
        self._stop = threading.Event()
        self._serving = threading.Thread(target=self._serve, daemon=True)
        self._serving.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                self.connection.process_data_events(time_limit=0.1)
        except pika.exceptions.AMQPError:
            self.closed_by_broker.set()

    def close(self) -> None:
        """Stop serving; close the connection unless the broker did."""
        self._stop.set()
        self._serving.join(timeout=5)
        if not self.closed_by_broker.is_set():
            self.connection.close()


@dataclass
class Broker:
    """The broker and the CLI aimed at it."""

    rabbit: RabbitMq
    tmp: Path
    clients: list[Client]

    def client(self) -> Client:
        """A client of the broker, closed after the test."""
        client = self.rabbit.client()
        self.clients.append(client)
        return client

    def cli(self, *args: str) -> Ran:
        """`upgradectl --json ARGS` on one local node with the rabbitmq playbook."""
        rabbitmqctl = self.rabbit.tool("rabbitmqctl")
        node_vars = {
            "rabbitmqctl": rabbitmqctl,
            "rabbitmq_upgrade": self.rabbit.tool("rabbitmq-upgrade"),
            "rabbitmq_diagnostics": self.rabbit.tool("rabbitmq-diagnostics"),
            # As an upgrade would, without a package to install: the broker restarts.
            "upgrade_command": f"{rabbitmqctl} stop_app && {rabbitmqctl} start_app",
        }
        return local_cli(self.tmp, "rmq-1", "rabbitmq", node_vars, *args)


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMq]:
    """epmd and a RabbitMQ broker for the whole module; both stopped after its last test."""
    directory = tmp_path_factory.mktemp("rabbitmq")
    with with_epmd(directory, lambda env: RabbitMq(directory / "rabbitmq", env)) as (rabbit, _):
        yield rabbit


@pytest.fixture
def broker(rabbit: RabbitMq, tmp_path: Path) -> Iterator[Broker]:
    """The module's broker as a test finds it (out of maintenance, no client), with the test's
    own inventory and state directory; the test's clients closed after it."""
    rabbit.reset()
    clients: list[Client] = []
    yield Broker(rabbit, tmp_path, clients)
    for client in clients:
        client.close()


def probe_of(ran: Ran) -> dict[str, Any]:
    """What the run read from the node before acting (the probe `status` shows too)."""
    return next(e for e in ran.events if e["event"] == "probe")


def said(ran: Ran, kind: str) -> str:
    """The message of the run's first ``kind`` event."""
    return str(next(e for e in ran.events if e["event"] == kind)["message"])


@pytest.mark.slow
def test_upgrade_drains_the_broker_in_maintenance_mode_and_revives_it(broker: Broker) -> None:
    clients = [broker.client() for _ in range(3)]

    ran = broker.cli("upgrade", "rmq-1", "--version", "3.10.9", "--yes")

    assert ran.code == 0, ran.stdout[-3000:] + ran.stderr
    probe = probe_of(ran)
    assert (probe["active"], probe["blocked"], probe["version"]) == (3, False, "3.10.8")
    kinds = [k for k in ran.kinds("rmq-1") if k in ("blocked", "drained", "upgraded", "unblocked")]
    assert kinds == ["blocked", "drained", "upgraded", "unblocked"]
    assert "forced" not in ran.kinds("rmq-1")  # maintenance mode closed them, not `force`
    wait_for(
        lambda: all(client.closed_by_broker.is_set() for client in clients),
        10,
        what="the clients to be closed",
    )
    assert "(is_blocked says so)" in said(ran, "unblocked")  # the playbook read it revived
    assert broker.rabbit.in_maintenance() is False
    broker.client()  # and it takes clients again


@pytest.mark.slow
def test_drain_leaves_the_broker_in_maintenance_until_unblock_revives_it(broker: Broker) -> None:
    drained = broker.cli("drain", "rmq-1", "--yes")

    assert drained.code == 0, drained.stdout[-3000:]
    assert probe_of(drained)["blocked"] is False
    assert "(is_blocked says so)" in said(drained, "blocked")  # the playbook read maintenance
    assert broker.rabbit.in_maintenance() is True

    unblocked = broker.cli("unblock", "rmq-1", "--yes")

    assert unblocked.code == 0, unblocked.stdout[-3000:]
    assert "(is_blocked says so)" in said(unblocked, "unblocked")
    assert broker.rabbit.in_maintenance() is False
