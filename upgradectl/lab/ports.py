"""Free TCP ports on 127.0.0.1 for lab servers.

A port found free is claimed for a while in a directory every lab on this machine shares: the
servers bind it seconds later, and until then another lab (a parallel test worker) looking for
ports at the same moment would find it free too. Two labs that took the same port failed to
start ("address already in use").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
import time
from pathlib import Path

# Below Linux's ephemeral range (32768-60999): the lab's own outgoing connections (hundreds of SSH
# sessions and calls) take ports from that range and could grab a port chosen for a server.
_FIRST_PORT = 20000
_LAST_PORT = 32767
# Where ports are claimed, and for how long: far longer than a lab takes to bind what it chose.
_CLAIMS = Path(tempfile.gettempdir()) / "upgradectl-lab-ports"
CLAIM_SECONDS = 120.0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that nothing listens on now; held open until all are chosen."""
    held: dict[int, socket.socket] = {}
    try:
        while len(held) < count:
            port = random.randint(_FIRST_PORT, _LAST_PORT)
            if port in held or not _claim(port):
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


def free_range(count: int) -> int:
    """The first of ``count`` consecutive ports, each claimed (as ``free_ports`` claims them) and
    free now: a range to give ``lab up --base-port``, which a lab starting at the same moment
    will not choose from."""
    for _ in range(200):
        base = random.randint(_FIRST_PORT, _LAST_PORT - count + 1)
        span = range(base, base + count)
        if all(_claim(port) for port in span) and all(_bindable(port) for port in span):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {_FIRST_PORT} and {_LAST_PORT}")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _claim(port: int) -> bool:
    """Claim ``port`` for this lab, unless another claimed it less than CLAIM_SECONDS ago."""
    with contextlib.suppress(FileExistsError):
        _CLAIMS.mkdir(mode=0o1777)
        _CLAIMS.chmod(0o1777)  # labs of other users claim here too (mkdir's mode is umasked)
    try:
        # A directory every user of the machine writes in: a claim planted as a symbolic link
        # (to a file of root's) is not followed, and that port is left alone.
        fd = os.open(_CLAIMS / str(port), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # only while deciding: two labs never both claim it
        claimed = os.fstat(fd)
        if claimed.st_size and time.time() - claimed.st_mtime < CLAIM_SECONDS:
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # a claim is a file with content, dated
        return True
    finally:
        os.close(fd)


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
