"""Free TCP ports on 127.0.0.1 for lab servers."""

from __future__ import annotations

import random
import socket

# Below Linux's ephemeral range (32768-60999): the lab's own outgoing connections (hundreds of SSH
# sessions and calls) take ports from that range and could grab a port chosen for a server.
_FIRST_PORT = 20000
_LAST_PORT = 32767


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that nothing listens on now; held open until all are chosen."""
    held: dict[int, socket.socket] = {}
    try:
        while len(held) < count:
            port = random.randint(_FIRST_PORT, _LAST_PORT)
            if port in held:
                continue
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                probe.close()
                continue
            held[port] = probe
        return list(held)
    finally:
        for probe in held.values():
            probe.close()


def ports_from(base: int, count: int) -> list[int]:
    """`count` consecutive ports from `base`, each checked free now (an operator's chosen range)."""
    if not 1024 <= base <= 65535 - count + 1:
        raise ValueError(f"--base-port {base}: the lab needs ports {base}-{base + count - 1}")
    for port in range(base, base + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                raise ValueError(f"port {port} on 127.0.0.1 is taken: {exc.strerror}") from None
    return list(range(base, base + count))
