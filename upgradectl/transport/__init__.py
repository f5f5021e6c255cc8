"""How commands reach a node: over SSH (``ssh.py`` and its helpers, the only paramiko importers)
or on this machine."""

from upgradectl.transport.base import CommandResult, Transport

__all__ = ["CommandResult", "Transport"]
