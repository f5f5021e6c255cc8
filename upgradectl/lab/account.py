"""The account that lab nodes are logged in as.

As root, a dedicated system user with a plain /bin/sh: root's own shell start-up is slow (pyenv in
.bashrc) and a real fleet is not driven as root either. Otherwise the current user, since an
unprivileged sshd can only log in the user that runs it.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

LAB_USER = "upgradectl-lab"
LAB_HOME = Path("/var/tmp/upgradectl-lab")
_USERADD_NAME_IN_USE = 9
# Held while the user is looked up and created: useradd fails at once, rather than waits, when
# another holds /etc/passwd's lock (parallel test workers on a fresh machine, all at their start).
_CREATING = Path("/var/tmp/upgradectl-lab.creating")


@dataclass(frozen=True)
class LabAccount:
    """The log-in user of every lab node."""

    name: str
    uid: int
    gid: int

    def give(self, path: Path) -> None:
        """Make `path` belong to the lab user (a no-op when that is us)."""
        if (self.uid, self.gid) != (os.geteuid(), os.getegid()):
            os.chown(path, self.uid, self.gid)


def _create_lab_user() -> None:
    # Password '*' rather than useradd's default '!': with UsePAM no, sshd refuses accounts whose
    # password starts with '!' as locked, even for public-key logins. '*' still allows no password.
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--shell",
            "/bin/sh",
            "--create-home",
            "--home-dir",
            str(LAB_HOME),
            "--password",
            "*",
            LAB_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # Another lab (a parallel test run) may have created it between our look-up and useradd.
    if result.returncode not in (0, _USERADD_NAME_IN_USE):
        raise RuntimeError(f"useradd {LAB_USER} failed: {result.stderr.strip()}")


@functools.cache
def lab_account() -> LabAccount:
    """The lab's log-in user, created on first use when we are root."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
    else:
        lock = os.open(_CREATING, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entry = pwd.getpwnam(LAB_USER)
            except KeyError:
                _create_lab_user()
                entry = pwd.getpwnam(LAB_USER)
        finally:
            os.close(lock)
    return LabAccount(entry.pw_name, entry.pw_uid, entry.pw_gid)
