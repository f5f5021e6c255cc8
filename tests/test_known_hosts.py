"""known_hosts judged as OpenSSH judges it: each case runs the real `ssh` and our transport
against the same real sshd, on copies of the same known_hosts file, and compares the verdicts
(connected or refused) and what each wrote to the file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LabKeys

from upgradectl.errors import HostKeyRefused
from upgradectl.lab import KeyPair, lab_account
from upgradectl.lab.sshd import SshServer
from upgradectl.transport.known_hosts import parse
from upgradectl.transport.ssh import SshTransport
from upgradectl.transport.sshconfig import Endpoint, resolve


def keygen(path: Path, kind: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", kind, "-f", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    return path


def public(path: Path) -> str:
    """`type base64` of a key pair's public half."""
    key_type, blob, *_ = path.with_name(path.name + ".pub").read_text().split()
    return f"{key_type} {blob}"


def sign_host_key(ca: Path, host_key: Path, principal: str, identity: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", identity, "-h", "-n", principal,
                    "-V", "-1d:+1d", str(host_key.with_name(host_key.name + ".pub"))],
                   check=True, capture_output=True)  # fmt: skip
    return host_key.with_name(host_key.name + "-cert.pub")


@dataclass
class Keys:
    """The host keys a test sshd may offer, the CAs, and keys nobody uses."""

    ed25519: Path
    ecdsa: Path
    ca: Path
    other_ca: Path
    stranger: Path
    cert: Path  # ed25519 signed by `ca` for 127.0.0.1
    wrong_cert: Path  # ecdsa signed by `other_ca`
    alias_cert: Path  # ed25519 (a copy) signed by `ca` for node-alias


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("hostkeys")
    made = {name: keygen(folder / name, kind) for name, kind in
            [("ed25519", "ed25519"), ("ecdsa", "ecdsa"), ("ca", "ed25519"), ("other_ca", "ecdsa"),
             ("stranger", "ed25519")]}  # fmt: skip
    cert = sign_host_key(made["ca"], made["ed25519"], "127.0.0.1", "node-1")
    wrong = sign_host_key(made["other_ca"], made["ecdsa"], "127.0.0.1", "node-1")
    for suffix in ("", ".pub"):  # one key file has one certificate file: sign a copy
        shutil.copy(f"{made['ed25519']}{suffix}", folder / f"aliased{suffix}")
    alias_cert = sign_host_key(made["ca"], folder / "aliased", "node-alias", "node-1")
    return Keys(**made, cert=cert, wrong_cert=wrong, alias_cert=alias_cert)


class HostKeysServer(SshServer):
    """The lab's sshd with the host keys (and certificates) a case asks for."""

    def __init__(self, workdir: Path, lab_keys: LabKeys, host_keys: list[Path], certs: list[Path],
                 authorized: Path) -> None:  # fmt: skip
        super().__init__("node-1", workdir, host_key=KeyPair(host_keys[0]), client_key=lab_keys.client,
                         authorized_keys=authorized, user=lab_account().name)  # fmt: skip
        self.extra = [f"HostKey {key}" for key in host_keys[1:]] + [
            f"HostCertificate {c}" for c in certs
        ]

    def _write_config(self) -> None:
        super()._write_config()
        with self.config_path.open("a") as config:
            config.write("\n".join(self.extra) + "\n")


@pytest.fixture
def serve(tmp_path: Path, lab_keys: LabKeys) -> Iterator[Callable[..., HostKeysServer]]:
    servers: list[HostKeysServer] = []
    # sshd reads authorized_keys as the lab user, who cannot enter pytest's 0700 tmp_path.
    shared = Path(tempfile.mkdtemp(prefix="upgradectl-hostkeys-"))
    shared.chmod(0o755)
    authorized = shared / "authorized_keys"
    authorized.write_text(lab_keys.client.public_line() + "\n")
    authorized.chmod(0o644)

    def start(host_keys: list[Path], certs: list[Path] = ()) -> HostKeysServer:  # type: ignore[assignment]
        server = HostKeysServer(
            tmp_path / f"sshd-{len(servers)}", lab_keys, host_keys, list(certs), authorized
        )
        for key in [*host_keys, *certs]:
            key.chmod(0o600 if not key.name.endswith(".pub") else 0o644)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
    shutil.rmtree(shared)


def real_ssh(server: HostKeysServer, known_hosts: Path, client: Path, accept_new: bool) -> bool:
    """Whether OpenSSH's own client connects (StrictHostKeyChecking accept-new, or yes)."""
    done = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", f"StrictHostKeyChecking={'accept-new' if accept_new else 'yes'}",
         "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
         "-o", "IdentitiesOnly=yes", "-i", str(client), "-p", str(server.port), f"{server.user}@{server.host}", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 255), done.stderr
    assert done.returncode == 0 or "Host key verification failed" in done.stderr, done.stderr
    return done.returncode == 0


def ours(server: HostKeysServer, known_hosts: Path, client: Path, accept_new: bool) -> bool:
    """Whether our transport connects, given the same file."""
    endpoint = Endpoint(alias="node-1", hostname=server.host, port=server.port, user=server.user,
                        identity_files=(str(client),), known_hosts=(str(known_hosts),), proxy_jump=())  # fmt: skip
    return connects(SshTransport(endpoint, accept_new_host_keys=accept_new))


def connects(transport: SshTransport) -> bool:
    """Whether ``transport`` connects (False: its host key was refused)."""
    try:
        transport.connect()
    except HostKeyRefused:
        return False
    finally:
        transport.close()
    return True


def hashed(name: str) -> str:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


# Each case: the host keys the server offers, its certificates, and known_hosts lines, where
# HOST is `[127.0.0.1]:PORT`, and ED25519, ECDSA, CA... are `type base64` of the keys above.
CASES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "unknown host": (["ed25519"], [], []),
    "known key": (["ed25519"], [], ["HOST ED25519"]),
    "changed key, same type": (["ed25519"], [], ["HOST STRANGER"]),
    "known host, new key type": (["ed25519"], [], ["HOST ECDSA"]),
    "known key type offered among others": (["ed25519", "ecdsa"], [], ["HOST ECDSA"]),
    "hashed name": (["ed25519"], [], ["HASHED ED25519"]),
    "hashed name, changed key": (["ed25519"], [], ["HASHED STRANGER"]),
    "wildcard": (["ed25519"], [], ["[127.0.0.*]:PORT ED25519"]),
    "wildcard ?": (["ed25519"], [], ["[127.0.0.?]:PORT ED25519"]),
    "star matches any host": (["ed25519"], [], ["* ED25519"]),
    "negated": (["ed25519"], [], ["[127.0.0.*]:PORT,!HOST ED25519"]),
    "negated, changed key elsewhere": (["ed25519"], [], ["*,!HOST STRANGER"]),
    "no port: another host": (["ed25519"], [], ["127.0.0.1 STRANGER"]),
    "revoked key": (["ed25519"], [], ["@revoked HOST ED25519", "HOST ED25519"]),
    "revoked for another host": (["ed25519"], [], ["@revoked other.example ED25519", "HOST ED25519"]),
    "certificate from a listed CA": (["ed25519"], ["cert"], ["@cert-authority HOST CA"]),
    "certificate from a wildcard CA": (["ed25519"], ["cert"], ["@cert-authority * CA"]),
    "certificate from an unlisted CA": (["ecdsa"], ["wrong_cert"], ["@cert-authority HOST CA"]),
    "certificate whose CA is revoked": (["ed25519"], ["cert"], ["@cert-authority HOST CA", "@revoked * CA"]),
    "CA listed for another host": (["ed25519"], ["cert"], ["@cert-authority other.example CA"]),
    "garbage lines are skipped": (["ed25519"], [], ["#comment", "", "@bogus HOST ED25519", "HOST", "HOST ssh-ed25519 !!!", "HOST ED25519"]),
}  # fmt: skip


def known_hosts_text(lines: list[str], keys: Keys, port: int) -> str:
    names = {"ED25519": keys.ed25519, "ECDSA": keys.ecdsa, "STRANGER": keys.stranger, "CA": keys.ca}
    text = "\n".join(lines)
    for word, key in names.items():
        text = text.replace(word, public(key))
    text = text.replace("HASHED", hashed(f"[127.0.0.1]:{port}")).replace(
        "HOST", f"[127.0.0.1]:{port}"
    )
    return text.replace("PORT", str(port)) + ("\n" if text else "")


@pytest.mark.parametrize("accept_new", [True, False], ids=["accept-new", "strict"])
@pytest.mark.parametrize("case", list(CASES))
def test_our_verdict_is_opensshs(
    case: str,
    accept_new: bool,
    keys: Keys,
    serve: Callable[..., HostKeysServer],
    lab_keys: LabKeys,
    tmp_path: Path,
) -> None:
    host_keys, certs, lines = CASES[case]
    server = serve([getattr(keys, k) for k in host_keys],
                   [getattr(keys, c) for c in certs])  # fmt: skip
    text = known_hosts_text(lines, keys, server.port)
    theirs_file, ours_file = tmp_path / "theirs", tmp_path / "ours"
    theirs_file.write_text(text)
    ours_file.write_text(text)
    client = lab_keys.client.private_key
    ssh_says = real_ssh(server, theirs_file, client, accept_new)
    we_say = ours(server, ours_file, client, accept_new)
    assert we_say == ssh_says, f"{case}: ssh {'connects' if ssh_says else 'refuses'}, we do not"
    added = {e.blob for e in parse(theirs_file.read_text())} - {e.blob for e in parse(text)}
    we_added = {e.blob for e in parse(ours_file.read_text())} - {e.blob for e in parse(text)}
    assert we_added == added, f"{case}: ssh added {len(added)} key(s), we added {len(we_added)}"


# The known_hosts files an ssh config names: two UserKnownHostsFile, one GlobalKnownHostsFile
# (a temporary file: the machine's /etc/ssh is never read or written), with or without a
# HostKeyAlias. Each case: the alias (or None), the certificate the server offers with its
# ed25519 key, then the lines of user-1, user-2 and global.
FILES = ("user-1", "user-2", "global")
CONFIG_CASES: dict[str, tuple[str | None, str, list[str], list[str], list[str]]] = {
    "unknown everywhere: written to the first user file": (None, "cert", [], [], []),
    "known only in the global file": (None, "cert", [], [], ["HOST ED25519"]),
    "changed in the global file": (None, "cert", [], [], ["HOST STRANGER"]),
    "known only in the second user file": (None, "cert", [], ["HOST ED25519"], []),
    "changed in the second user file": (None, "cert", [], ["HOST STRANGER"], []),
    "new key type in the global file": (None, "cert", [], [], ["HOST ECDSA"]),
    "known in one file, another key in another": (None, "cert", ["HOST STRANGER"], [], ["HOST ED25519"]),
    "revoked in the global file": (None, "cert", ["HOST ED25519"], [], ["@revoked * ED25519"]),
    "CA only in the global file": (None, "cert", [], [], ["@cert-authority HOST CA"]),
    "alias known": ("Node-Alias", "cert", ["node-alias ED25519"], [], []),
    "alias known in the global file": ("node-alias", "cert", [], [], ["node-alias ED25519"]),
    "alias changed": ("node-alias", "cert", ["node-alias STRANGER"], [], []),
    "alias unknown, host:port known": ("node-alias", "cert", ["HOST ED25519"], [], []),
    "alias unknown: written under the alias": ("node-alias", "cert", [], [], []),
    "alias hashed": ("node-alias", "cert", [], [], ["ALIASHASHED ED25519"]),
    "alias with a port is not the alias": ("node-alias", "cert", ["[node-alias]:PORT ED25519"], [], []),
    "alias, certificate naming the host": ("node-alias", "cert", ["@cert-authority * CA"], [], []),
    "alias, certificate naming the alias": ("node-alias", "alias_cert", ["@cert-authority node-alias CA"], [], []),
    "no alias, certificate naming another": (None, "alias_cert", ["@cert-authority * CA"], [], []),
}  # fmt: skip


def write_config(folder: Path, server: HostKeysServer, client: Path, alias: str | None) -> Path:
    """An ssh config naming the case's known_hosts files in ``folder``, as `.ssh/config`."""
    user_files = " ".join(str(folder / name) for name in FILES[:2])
    config = folder / "home" / ".ssh" / "config"
    config.parent.mkdir(parents=True)
    config.write_text(
        f"Host node-1\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {client}\n  IdentitiesOnly yes\n  UserKnownHostsFile {user_files}\n"
        f"  GlobalKnownHostsFile {folder / 'global'}\n"
        + (f"  HostKeyAlias {alias}\n" if alias else "")
    )
    return config


@pytest.mark.parametrize("accept_new", [True, False], ids=["accept-new", "strict"])
@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_every_known_hosts_file_and_the_alias_as_openssh(
    case: str,
    accept_new: bool,
    keys: Keys,
    serve: Callable[..., HostKeysServer],
    lab_keys: LabKeys,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alias, cert, *contents = CONFIG_CASES[case]
    server = serve([keys.ed25519], [getattr(keys, cert)])
    texts = [known_hosts_text(lines, keys, server.port).replace(
        "ALIASHASHED", hashed("node-alias")) for lines in contents]  # fmt: skip
    client = lab_keys.client.private_key
    theirs, ours_ = tmp_path / "theirs", tmp_path / "ours"
    for folder in (theirs, ours_):
        folder.mkdir()
        for name, text in zip(FILES, texts, strict=True):
            (folder / name).write_text(text)
    done = subprocess.run(
        ["ssh", "-F", str(write_config(theirs, server, client, alias)), "-o", "BatchMode=yes",
         "-o", f"StrictHostKeyChecking={'accept-new' if accept_new else 'yes'}", "node-1", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0 or "Host key verification failed" in done.stderr, done.stderr
    write_config(ours_, server, client, alias)
    monkeypatch.setenv("HOME", str(ours_ / "home"))  # resolve() reads its .ssh/config with -F
    endpoint = resolve("node-1", None, None, None, None)
    assert endpoint.known_hosts == (str(ours_ / "user-1"), str(ours_ / "user-2"))
    assert endpoint.global_known_hosts == (str(ours_ / "global"),)
    we_connect = connects(SshTransport(endpoint, accept_new_host_keys=accept_new))
    ssh_connects = done.returncode == 0
    assert we_connect == ssh_connects, (
        f"{case}: ssh {'connects' if ssh_connects else 'refuses'}, we do not"
    )
    for name in FILES:
        assert (ours_ / name).read_text() == (theirs / name).read_text(), (
            f"{case}: {name} differs from what ssh left"
        )
