"""Throwaway OpenSSH keys for the lab: one host key and one client key per lab."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key made by ssh-keygen: the private key file and `<file>.pub` beside it."""

    private_key: Path

    @property
    def public_key(self) -> Path:
        """The `.pub` file beside the private key."""
        return self.private_key.with_name(self.private_key.name + ".pub")

    def public_line(self) -> str:
        """`<type> <base64>` without the comment, as authorized_keys and known_hosts want it."""
        key_type, blob, *_comment = self.public_key.read_text().split()
        return f"{key_type} {blob}"

    @classmethod
    def generate(cls, path: Path, comment: str) -> KeyPair:
        """Make a new key without a passphrase at `path` (0600, owned by us)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )
        return cls(path)
