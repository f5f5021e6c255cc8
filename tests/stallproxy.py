"""A TCP proxy in front of a real sshd that, once armed, stalls the link after a channel opens.

SSH is encrypted, but sizes show through: once armed, the first packet from the client of at
least ``big`` bytes is held back and from then on nothing is forwarded either way, on every
connection, old or new (a new one gets no banner). Give the command to stall on a padding
longer than ``big``: the channel open before it is small and goes through, so the stall comes
after the channel opened, while the client waits for the reply to its `exec` request.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

# Larger than any packet of an established connection except a padded command (KEXINIT and
# the key exchange are over by the time a test arms the proxy).
BIG = 3000


class StallingProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until the stall; close it (or use ``with``)."""

    def __init__(self, target: tuple[str, int], big: int = BIG) -> None:
        self.target = target
        self.big = big
        self.armed = threading.Event()
        self.stalled = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        """Stall at the next packet of at least ``big`` bytes from the client."""
        self.armed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.target)
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if from_client and self.armed.is_set() and len(data) >= self.big:
                self.stalled.set()
            if self.stalled.is_set():
                continue  # swallowed: the link is silent, though TCP still holds it open
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        """Stop forwarding and close every socket."""
        with self._lock:
            self._closed = True
            for sock in self._sockets:
                # shutdown wakes the threads blocked in accept() and recv(); close alone may not.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
