"""The bundled rabbitmq playbook against Debian's real RabbitMQ server, started by the test in a
temporary directory on loopback ports with an epmd of its own (otplab): AMQP clients connected
through pika are the sessions; `upgrade` puts the node in maintenance mode (which closes them),
restarts the broker and takes it out of maintenance again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
            "RABBITMQ_SERVER_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
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
        # The AMQP listener opens last, once the broker has booted.
        return accepts(self.amqp_port)

    def tool(self, name: str) -> str:
        """A CLI tool of this broker as a command line that carries its own environment (the
        upgrade step runs through sudo, which clears the environment)."""
        keep = ("HOME", "ERL_EPMD_PORT")
        env = " ".join(f"{key}={self.env[key]}" for key in keep)
        return f"env {env} {RABBITMQ_BIN / name} -n {self.node}"

    def client(self) -> pika.BlockingConnection:
        """An AMQP client connected to the broker (guest may log in from loopback)."""
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.amqp_port))


@dataclass
class Broker:
    """The broker and the CLI aimed at it."""

    rabbit: RabbitMq
    tmp: Path

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


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """epmd and a RabbitMQ broker; both stopped after the test."""
    with with_epmd(tmp_path, lambda env: RabbitMq(tmp_path / "rabbitmq", env)) as (rabbit, _):
        yield Broker(rabbit, tmp_path)


def closed(client: pika.BlockingConnection) -> bool:
    """Whether the broker closed this client's connection (it is noticed on the next read)."""
    try:
        client.process_data_events(time_limit=0)
    except pika.exceptions.AMQPError:
        return True
    return bool(client.is_closed)


@pytest.mark.slow
@pytest.mark.timeout(300)  # two broker restarts: 50 to 75 s beside other tests on 2 cores
def test_upgrade_drains_the_broker_in_maintenance_mode_and_revives_it(broker: Broker) -> None:
    clients = [broker.rabbit.client() for _ in range(3)]
    status = broker.cli("status", "rmq-1")
    assert status.code == 0, status.stdout + status.stderr
    row = status.events[0]["nodes"][0]
    assert (row["active"], row["blocked"], row["version"]) == (3, False, "3.10.8")

    ran = broker.cli("upgrade", "rmq-1", "--version", "3.10.9", "--yes")

    assert ran.code == 0, ran.stdout[-3000:] + ran.stderr
    kinds = [k for k in ran.kinds("rmq-1") if k in ("blocked", "drained", "upgraded", "unblocked")]
    assert kinds == ["blocked", "drained", "upgraded", "unblocked"]
    assert "forced" not in ran.kinds("rmq-1")  # maintenance mode closed them, not `force`
    wait_for(lambda: all(closed(client) for client in clients), 10, what="the clients to be closed")
    after = broker.cli("status", "rmq-1").events[0]["nodes"][0]
    assert (after["active"], after["blocked"]) == (0, False)  # revived: out of maintenance
    broker.rabbit.client().close()  # and it takes clients again


@pytest.mark.slow
def test_drain_leaves_the_broker_in_maintenance_until_unblock_revives_it(broker: Broker) -> None:
    drained = broker.cli("drain", "rmq-1", "--yes")
    assert drained.code == 0, drained.stdout[-3000:]
    status = broker.cli("status", "rmq-1").events[0]["nodes"][0]
    assert status["blocked"] is True
    unblocked = broker.cli("unblock", "rmq-1", "--yes")
    assert unblocked.code == 0, unblocked.stdout[-3000:]
    assert broker.cli("status", "rmq-1").events[0]["nodes"][0]["blocked"] is False
