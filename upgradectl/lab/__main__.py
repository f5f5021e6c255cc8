"""`python -m upgradectl.lab`: start a lab in the foreground, or run the lab's call server."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import click

from upgradectl.lab.callgen import CallGenerator
from upgradectl.lab.callserver import read_configs, serve
from upgradectl.lab.demo import run_demo
from upgradectl.lab.lab import Lab
from upgradectl.lab.unixsocket import ask as unix_ask


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.group()
def main() -> None:
    """A rehearsal lab for upgradectl: real sshd nodes, call servers and HAProxy on 127.0.0.1."""


@main.command(
    epilog="Example: python -m upgradectl.lab up --nodes 4 --dir /tmp/lab --base-port 20000",
)
@click.option("--nodes", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the inventory, keys and logs (kept). Default: a temp dir, removed.",
)
@click.option("--haproxy/--no-haproxy", default=True, show_default=True, help="Balance calls.")
@click.option("--version", "version", default="1.0", show_default=True, help="Nodes' version.")
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65535),
    help="Use ports from here on, in order: node-1's sshd, its calls, node-2's sshd, ..., then "
    "the balancer's sshd and HAProxy's calls. Default: free ports at random.",
)
def up(
    nodes: int, directory: Path | None, haproxy: bool, version: str, base_port: int | None
) -> None:
    """Start a lab and keep it running until Ctrl-C or SIGTERM, then tear it all down."""
    signal.signal(signal.SIGTERM, _interrupt)
    lab_dir = directory or Path(tempfile.mkdtemp(prefix="upgradectl-lab-"))
    try:
        with Lab(lab_dir, nodes, haproxy=haproxy, version=version, base_port=base_port) as lab:
            _explain(lab)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        click.echo("lab stopped")
    except ValueError as exc:  # a --base-port range that is not free
        raise click.UsageError(str(exc)) from None
    finally:
        if directory is None:
            shutil.rmtree(lab_dir, ignore_errors=True)


def _explain(lab: Lab) -> None:
    home = lab.dir / "home"
    lab.write_home(home)
    click.echo(f"inventory: {lab.inventory_path}")
    click.echo(f"nodes log in as {lab.user} with {lab.identity_file}")
    for node in lab.nodes:
        click.echo(f"{node.name}: sshd 127.0.0.1:{node.ssh.port}, calls 127.0.0.1:{node.call_port}")
    if lab.haproxy is not None:
        click.echo(
            f"calls: 127.0.0.1:{lab.haproxy.port} (HAProxy, admin socket "
            f"{lab.haproxy.admin_socket})"
        )
    click.echo("upgradectl reads ~/.ssh/known_hosts; this HOME trusts the lab's host keys:")
    click.echo(f"  HOME={home} upgradectl -i {lab.inventory_path} status")
    click.echo("Ctrl-C stops the lab.")


@main.command(
    epilog="Example: python -m upgradectl.lab calls 127.0.0.1:20000 --rate 2 --length 2-8"
)
@click.argument("address", metavar="HOST:PORT")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=2.0,
    show_default=True,
    help="Calls a second.",
)
@click.option(
    "--length", default="2-8", show_default=True, metavar="LO-HI", help="Call lengths, seconds."
)
def calls(address: str, rate: float, length: str) -> None:
    """Keep placing calls to ADDRESS (HAProxy's frontend) until Ctrl-C; then count their fates."""
    host, _, port = address.rpartition(":")
    low, _, high = length.partition("-")
    signal.signal(signal.SIGTERM, _interrupt)
    generator = CallGenerator(
        host or "127.0.0.1", int(port), rate, duration=(float(low), float(high or low))
    )
    generator.start()
    try:  # a Ctrl-C right after the line below must still count the calls' fates
        click.echo("placing calls; Ctrl-C stops placing them and waits for the live ones to end")
        while True:
            signal.pause()
    except KeyboardInterrupt:
        counts = generator.stop().counts
    click.echo(", ".join(f"{count} {fate}" for fate, count in counts.items()))


@main.command(epilog="Example: python -m upgradectl.lab demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo here.",
)
def demo(directory: Path | None) -> None:
    """Upgrade a simulated node with live calls on this machine: no SSH, no balancer needed."""
    raise SystemExit(run_demo(directory))


@main.command(epilog="Example: echo count | python -m upgradectl.lab ask /tmp/lab/node-1/ctl.sock")
@click.argument("socket_path", type=click.Path(path_type=Path))
def ask(socket_path: Path) -> None:
    """Send the command on standard input to a control socket; print the answer (like socat)."""
    click.echo(unix_ask(socket_path, sys.stdin.read().strip()), nl=False)


@main.command(epilog="Example: python -m upgradectl.lab callserver /tmp/lab/callserver.json")
@click.argument("nodes", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def callserver(nodes: Path) -> None:
    """Serve the call-server simulator for the nodes listed in NODES (JSON) until SIGTERM."""
    asyncio.run(serve(read_configs(nodes)))


if __name__ == "__main__":
    main()
