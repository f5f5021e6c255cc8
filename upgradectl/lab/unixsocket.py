"""Unix sockets that take one command per connection: call-server and HAProxy control sockets."""

from __future__ import annotations

import socket
import sys
from pathlib import Path


def ask(socket_path: Path, command: str, timeout: float = 5.0) -> str:
    """Send `command` and a newline, return everything the server says until it closes.

    This is what `echo COMMAND | socat - UNIX-CONNECT:SOCKET` prints.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as channel:
        channel.settimeout(timeout)
        channel.connect(str(socket_path))
        channel.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := channel.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


if __name__ == "__main__":  # `python unixsocket.py SOCKET`: the demo's client, without the lab
    sys.stdout.write(ask(Path(sys.argv[1]), sys.stdin.read().strip()))
