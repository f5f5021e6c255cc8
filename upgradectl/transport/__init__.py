"""How commands reach a node: over SSH (``ssh.py``, the only paramiko importer) or on this machine."""

from upgradectl.transport.base import CommandResult, Transport, wrap_sudo

__all__ = ["CommandResult", "Transport", "wrap_sudo"]
