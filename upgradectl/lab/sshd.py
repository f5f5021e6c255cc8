"""A real OpenSSH server on 127.0.0.1 for one lab node."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from upgradectl.lab.keys import KeyPair
from upgradectl.lab.ports import free_ports
from upgradectl.lab.process import LabServer, ServerProcess

SSHD = "/usr/sbin/sshd"
# sshd's privilege separation directory; Debian creates it at boot, containers often lack it.
PRIVSEP_DIR = Path("/run/sshd")

_CONFIG = """\
Port {port}
ListenAddress {host}
HostKey {host_key}
PidFile {pid_file}
UsePAM no
StrictModes no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PrintMotd no
PrintLastLog no
X11Forwarding no
UseDNS no
# A lab may be hit by many controllers at once (benchmarks, parallel tests): the default
# MaxStartups (10:30:100) would refuse some handshakes. MaxSessions keeps OpenSSH's default
# of 10, as production nodes have it (a test may lower it): the controller must live within it.
MaxStartups 200
MaxSessions {max_sessions}
Subsystem sftp internal-sftp
LogLevel {log_level}
"""


def pid_file(config_path: Path) -> Path:
    """Where the sshd run with ``config_path`` writes its PID (the lab's power-off finds it)."""
    return config_path.with_name("sshd.pid")


class SshServer(LabServer):
    """`sshd -D -e` with a throwaway host key, accepting one client key for one user.

    `authorized_keys` must be readable by `user`: sshd reads it with that user's rights.
    """

    host = "127.0.0.1"
    max_sessions = 10
    """sshd's MaxSessions, read when it starts: sessions at once on one connection."""
    log_level = "INFO"
    """sshd's LogLevel, read when it starts: DEBUG logs each command run (the bench counts them)."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        host_key: KeyPair,
        client_key: KeyPair,
        authorized_keys: Path,
        user: str,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port if port is not None else free_ports(1)[0]
        self.user = user
        self.host_key = host_key
        self.client_key = client_key
        self.authorized_keys = authorized_keys
        self.config_path = workdir / "sshd_config"
        self.process = ServerProcess(
            f"sshd of {name}",
            [SSHD, "-D", "-e", "-f", str(self.config_path)],
            workdir / "sshd.log",
        )

    @property
    def identity_file(self) -> Path:
        """The private key that logs in as `user`."""
        return self.client_key.private_key

    def known_hosts_line(self) -> str:
        """This server's line for an OpenSSH known_hosts file."""
        return f"[{self.host}]:{self.port} {self.host_key.public_line()}"

    def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same host key."""
        self.stop()
        self.start()

    def _write_config(self) -> None:
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            _CONFIG.format(
                port=self.port,
                host=self.host,
                host_key=self.host_key.private_key,
                authorized_keys=self.authorized_keys,
                pid_file=pid_file(self.config_path),
                user=self.user,
                max_sessions=self.max_sessions,
                log_level=self.log_level,
            )
        )

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as probe:
                return probe.recv(4).startswith(b"SSH-")
        except OSError:
            return False
