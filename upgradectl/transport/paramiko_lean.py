"""paramiko, imported without what this tool never uses.

``paramiko.config`` imports invoke (and through it ``unittest.mock``) for its ``Match exec``;
this tool has OpenSSH resolve ``~/.ssh/config`` (``sshconfig.py``) and never uses paramiko's
parser, and that import was a third of the upgrade path's import time. invoke is hidden while
paramiko is imported (paramiko then keeps ``Match exec`` unavailable, as it does when invoke is
not installed), and only then: a later ``import invoke`` works as usual.
"""

from __future__ import annotations

import sys

_HIDDEN = "invoke" not in sys.modules
if _HIDDEN:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # import invoke: ImportError
try:
    import paramiko
finally:
    if _HIDDEN:
        del sys.modules["invoke"]

__all__ = ["paramiko"]
