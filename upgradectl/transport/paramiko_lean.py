"""paramiko, imported without what this tool never uses.

- ``paramiko.config`` imports invoke (and through it ``unittest.mock``) for its ``Match exec``;
  this tool has OpenSSH resolve ``~/.ssh/config`` (``sshconfig.py``) and never uses paramiko's
  parser, and that import was a third of the upgrade path's import time. invoke is hidden while
  paramiko is imported (paramiko then keeps ``Match exec`` unavailable, as it does when invoke
  is not installed).
- ``paramiko/__init__`` reads its own version with ``importlib.metadata``, whose import (email,
  zipfile, csv, calendar: about 10 ms of CPU) cost more than any one part of paramiko itself,
  for one string: the version in the client's banner (``SSH-2.0-paramiko_5.1.0``). While
  paramiko is imported, ``importlib.metadata`` is a stand-in that reads the version from the
  name of paramiko's ``NAME-VERSION.dist-info`` folder beside it, where importlib.metadata reads
  it too (``tests/test_imports.py`` checks both say the same); anything else asked of it, or a
  paramiko installed without such a folder, imports the real module.

Both only while paramiko is imported: a later ``import invoke`` or ``importlib.metadata`` works
as usual.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any


def _real_metadata() -> types.ModuleType:
    """The real ``importlib.metadata``, in place of the stand-in."""
    if sys.modules.get("importlib.metadata") is _STAND_IN:
        del sys.modules["importlib.metadata"]
    from importlib import metadata  # noqa: PLC0415 - the stand-in's fallback

    return metadata


def _version(name: str) -> str:
    """The version of the installed distribution ``name``: its dist-info folder's name says it."""
    for folder in sys.path:
        if os.path.isfile(os.path.join(folder or ".", name, "__init__.py")):
            prefix = f"{name}-"
            found = [
                entry[len(prefix) : -len(".dist-info")]
                for entry in os.listdir(folder or ".")
                if entry.startswith(prefix) and entry.endswith(".dist-info")
            ]
            if len(found) == 1:
                return found[0]
            break  # the package is here, its version is not plain to see
    return str(_real_metadata().version(name))


def _anything_else(attribute: str) -> Any:
    return getattr(_real_metadata(), attribute)


_STAND_IN = types.ModuleType("importlib.metadata", "version() only; see upgradectl's paramiko_lean")
_STAND_IN.version = _version  # type: ignore[attr-defined]
_STAND_IN.__getattr__ = _anything_else  # type: ignore[method-assign]

_HIDDEN_INVOKE = "invoke" not in sys.modules
_STANDING_IN = "importlib.metadata" not in sys.modules
if _HIDDEN_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # import invoke: ImportError
if _STANDING_IN:
    sys.modules["importlib.metadata"] = _STAND_IN
try:
    import paramiko
finally:
    if _HIDDEN_INVOKE:
        del sys.modules["invoke"]
    if _STANDING_IN and sys.modules.get("importlib.metadata") is _STAND_IN:
        del sys.modules["importlib.metadata"]

__all__ = ["paramiko"]
