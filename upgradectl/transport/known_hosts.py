"""OpenSSH's known_hosts, judged as ``ssh -o StrictHostKeyChecking=accept-new`` judges it.

Understood: hashed names (``|1|salt|hash``), wildcards (``*``, ``?``), negations (``!``),
``[host]:port``, ``@revoked`` keys, and ``@cert-authority`` lines, against which a host
certificate is checked (signature, host type, principal, validity). As OpenSSH does:

- a revoked key (or a certificate signed by a revoked CA) is refused, always;
- a certificate signed by a CA listed for the host is accepted; any other certificate is judged
  by the plain key inside it;
- a plain key listed for the host is accepted; a host listed with other keys only, of this type
  or any other, has CHANGED: refused, even with ``--accept-new-host-keys``;
- a host not listed at all is new: refused, or added with ``--accept-new-host-keys``.

Every UserKnownHostsFile, then every GlobalKnownHostsFile, is read, as one list: a key listed
in any is known, another key listed in any makes it changed; a new key is written to the first
UserKnownHostsFile only. With a HostKeyAlias the host is looked up, certified and written under
the alias (no port), not under ``[host]:port``.

The client offers first the host key types listed for the host (certificates first when a CA
is), as OpenSSH orders them, so that a host known by its ECDSA key is asked for that key.
A line this module cannot read is skipped, as ssh skips it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from upgradectl.errors import HostKeyRefused
from upgradectl.regularfile import regular_text
from upgradectl.transport.paramiko_lean import paramiko

CERT_SUFFIX = "-cert-v01@openssh.com"
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
# How many public fields each base key type has in a certificate, before its serial.
_CERT_KEY_FIELDS = {"ssh-ed25519": 1, "ecdsa-sha2-nistp256": 2, "ecdsa-sha2-nistp384": 2,
                    "ecdsa-sha2-nistp521": 2, "ssh-rsa": 2, "ssh-dss": 4}  # fmt: skip
_HOST_CERT = 2
# A known_hosts pattern that is not a plain name: a wildcard, a negation, a hashed name.
_PATTERN = re.compile(r"[*?]|^!|^\|1\|")


@dataclass(frozen=True)
class Entry:
    """One line of a known_hosts file."""

    file: str
    line: int
    marker: str | None  # "cert-authority", "revoked" or None
    patterns: tuple[str, ...]
    key_type: str
    blob: bytes

    def matches(self, name: str) -> bool:
        """Whether the host ``name`` (``host`` or ``[host]:port``) is one this line lists."""
        found = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _pattern_matches(pattern[1:] if negated else pattern, name):
                if negated:
                    return False  # a negation wins over every other pattern of the line
                found = True
        return found


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            _, _, salt, digest = pattern.split("|")
            wanted = base64.b64decode(digest, validate=True)
            mac = hmac.new(base64.b64decode(salt, validate=True), name.encode(), hashlib.sha1)
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(mac.digest(), wanted)
    return _wildcard(pattern.lower()).fullmatch(name) is not None


@functools.cache  # the re module's own cache holds 512: a fleet's file lists more
def _wildcard(pattern: str) -> re.Pattern[str]:
    """OpenSSH's patterns: ``*`` any run, ``?`` any one character, everything else literal."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    )


def host_name(hostname: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, else ``[host]:port``."""
    host = hostname.lower()
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class HostId:
    """What known_hosts knows a server by: ``name`` on its lines, ``principal`` in its host
    certificate. Both are the HostKeyAlias when there is one, as in OpenSSH."""

    name: str
    principal: str

    @classmethod
    def of(cls, hostname: str, port: int, alias: str | None = None) -> HostId:
        """The identity of ``hostname:port``, or of ``alias`` (OpenSSH adds no port to it)."""
        if alias:
            return cls(alias.lower(), alias.lower())
        return cls(host_name(hostname, port), hostname.lower())


def parse(text: str, file: str = "") -> list[Entry]:
    """The entries of a known_hosts file; lines that cannot be read are skipped, as ssh does."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker = fields[0][1:]
            fields = fields[1:]
            if marker not in ("cert-authority", "revoked"):
                continue
        if len(fields) < 3:
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except (ValueError, binascii.Error):
            continue
        patterns = tuple(fields[0].split(","))
        entries.append(Entry(file, number, marker, patterns, fields[1], blob))
    return entries


@dataclass(frozen=True)
class Verdict:
    """What known_hosts says of a server's key: ``known``, ``certified``, ``new``, ``changed``
    or ``revoked``, with the line that decided it (if any)."""

    kind: str
    entry: Entry | None = None


class KnownHosts:
    """The OpenSSH known_hosts files of a configuration, read once per run and shared by all
    its connections: the user files, then the global ones, in the configuration's order.

    Reading them per connection would cost O(lines) each, and a fleet's known_hosts lists the
    fleet: quadratic in the number of nodes.
    """

    def __init__(self, user_files: tuple[str, ...], global_files: tuple[str, ...] = ()) -> None:
        self.files = user_files + global_files
        # OpenSSH writes a new key to the first user file only; with none, nowhere.
        self.path = user_files[0] if user_files else None
        self._entries: list[Entry] = []
        # A line that lists hosts by plain name is found by that name; the others (wildcards,
        # negations, hashed names) are matched one by one. Matching every line for every
        # connection was quadratic in the fleet: 2 million matches for 1,000 nodes.
        self._by_name: dict[str, list[int]] = {}
        self._matched: list[int] = []
        self._lines = 0
        for file in self.files:
            # A missing or unreadable file, or one that is not a file, lists no host, as ssh
            # reads it.
            text = regular_text(file) or ""
            self._index(parse(text, file))
            if file == self.path:
                self._lines = len(text.splitlines())
        self._lock = threading.Lock()

    def _index(self, entries: list[Entry]) -> None:
        for entry in entries:
            position = len(self._entries)
            self._entries.append(entry)
            if any(_PATTERN.search(pattern) for pattern in entry.patterns):
                self._matched.append(position)
                continue
            for name in {pattern.lower() for pattern in entry.patterns}:
                self._by_name.setdefault(name, []).append(position)

    def where(self) -> str:
        """The files read, for a message."""
        return ", ".join(self.files) or "no known_hosts file"

    def for_host(self, host: HostId) -> list[Entry]:
        """The lines that list this host."""
        with self._lock:
            found = self._by_name.get(host.name, []) + [
                position for position in self._matched if self._entries[position].matches(host.name)
            ]
            return [self._entries[position] for position in sorted(found)]  # in the files' order

    def verdict(self, host: HostId, key: paramiko.PKey, now: float | None = None) -> Verdict:
        """Judge ``key`` (perhaps carrying a host certificate) as OpenSSH would."""
        lines = self.for_host(host)
        plain = key.asbytes()
        cert = _certificate(key)
        for entry in lines:
            if entry.marker == "revoked" and entry.blob in (plain, cert.ca if cert else None):
                return Verdict("revoked", entry)
        if cert is not None:
            for entry in lines:
                if entry.marker == "cert-authority" and cert.valid_for(
                    entry.blob, host.principal, time.time() if now is None else now
                ):
                    return Verdict("certified", entry)
        listed = [entry for entry in lines if entry.marker is None]
        for entry in listed:
            if entry.blob == plain:
                return Verdict("known", entry)
        if listed:
            same_type = [entry for entry in listed if entry.key_type == key.get_name()]
            return Verdict("changed", (same_type or listed)[0])
        return Verdict("new")

    def add(self, host: HostId, key: paramiko.PKey) -> str:
        """Trust ``key`` from now on, in this run and in the first user file; returns that file."""
        line = f"{host.name} {key.get_name()} {key.get_base64()}"
        with self._lock:
            if self.path is None:
                raise HostKeyRefused("cannot add a host key: UserKnownHostsFile is none")
            try:
                os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
                with open(self.path, "a", encoding="ascii") as stream:
                    stream.write(line + "\n")
            except OSError as exc:
                raise HostKeyRefused(
                    f"cannot add a host key to {self.path}: {exc.strerror}"
                ) from None
            self._lines += 1
            self._index([replace(entry, line=self._lines) for entry in parse(line, self.path)])
            return self.path

    def policy(
        self, alias: str, host: HostId, accept_new: bool, warn: Callable[[str], None]
    ) -> paramiko.MissingHostKeyPolicy:
        """The judge of one connection's server key (the client itself loads no known hosts)."""
        return _Judge(self, alias, host, accept_new, warn)

    def transport_factory(self, host: HostId) -> Callable[..., paramiko.Transport]:
        """Transports that offer first the host key types this host is known by."""
        lines = self.for_host(host)
        known = {entry.key_type for entry in lines if entry.marker is None}
        certified = any(entry.marker == "cert-authority" for entry in lines)

        def make(*args: Any, **kwargs: Any) -> paramiko.Transport:
            return _OrderedTransport(known, certified, *args, **kwargs)

        return make


class _OrderedTransport(paramiko.Transport):
    """A paramiko transport offering certificates first when a CA is known for the host, then
    the key types known for it, then the rest, as OpenSSH orders its HostKeyAlgorithms."""

    def __init__(self, known: set[str], certified: bool, *args: Any, **kwargs: Any) -> None:
        self._known_types = known
        self._certified = certified
        super().__init__(*args, **kwargs)

    @property
    def preferred_keys(self) -> tuple[str, ...]:
        offered = tuple(super().preferred_keys)

        def rank(algorithm: str) -> int:
            is_cert = algorithm.endswith(CERT_SUFFIX)
            base = algorithm.removesuffix(CERT_SUFFIX)
            key_type = "ssh-rsa" if base in _RSA_ALGORITHMS else base
            if is_cert:
                return 0 if self._certified else 3
            return 1 if key_type in self._known_types else 2

        return tuple(sorted(offered, key=rank))  # sorted is stable: paramiko's order within


class _Judge(paramiko.MissingHostKeyPolicy):
    """Accepts, adds or refuses the server's key by the run's KnownHosts."""

    def __init__(self, known: KnownHosts, alias: str, host: HostId, accept_new: bool,
                 warn: Callable[[str], None]) -> None:  # fmt: skip
        self.known = known
        self.alias = alias
        self.host = host
        self.accept_new = accept_new
        self.warn = warn

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        found = self.known.verdict(self.host, key)
        where = self.host.name
        offered = f"{key.get_name()} key {key.fingerprint}"
        at = f"{found.entry.file}:{found.entry.line}" if found.entry else self.known.where()
        if found.kind in ("known", "certified"):
            return
        if found.kind == "revoked":
            raise HostKeyRefused(
                f"{self.alias}: the {offered} of {where} is REVOKED ({at}); refusing to connect"
            )
        if found.kind == "changed":
            listed = found.entry.key_type if found.entry else "another key"
            raise HostKeyRefused(
                f"{self.alias}: the host key of {where} CHANGED: it sent its {offered}, but {at} "
                f"lists a {listed} key for it; refusing to connect, even with "
                "--accept-new-host-keys (remove the old key with ssh-keygen -R if the change is known)"
            )
        if not self.accept_new:
            raise HostKeyRefused(
                f"{self.alias}: unknown host key for {where} (not in {at}); check it "
                "and add it with ssh-keygen/ssh-keyscan, or pass --accept-new-host-keys"
            )
        written = self.known.add(self.host, key)
        self.warn(f"added {where}'s {offered} to {written}")


@dataclass(frozen=True)
class _Certificate:
    """The parts of an OpenSSH host certificate that decide whether to trust it."""

    signed: bytes  # everything the CA signed
    signature: bytes
    ca: bytes  # the CA's public key blob
    cert_type: int
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int

    def valid_for(self, ca_blob: bytes, hostname: str, now: float) -> bool:
        """Whether the CA ``ca_blob`` signed this for ``hostname``, valid ``now``."""
        if ca_blob != self.ca or self.cert_type != _HOST_CERT:
            return False
        if self.principals and hostname.lower() not in self.principals:
            return False
        if not self.valid_after <= now < self.valid_before:
            return False
        try:
            ca = paramiko.PKey.from_type_string(_string(ca_blob, 0)[0].decode(), ca_blob)
            return bool(ca.verify_ssh_sig(self.signed, paramiko.Message(self.signature)))
        except (paramiko.SSHException, ValueError, TypeError, struct.error):
            return False


def _certificate(key: paramiko.PKey) -> _Certificate | None:
    """The host certificate the server presented with ``key``, if any (and if readable)."""
    blob = getattr(key, "public_blob", None)
    if blob is None or not str(blob.key_type).endswith(CERT_SUFFIX):
        return None
    data = bytes(blob.key_blob)
    try:
        return _parse_certificate(data)
    except (struct.error, ValueError, IndexError):
        return None


def _parse_certificate(data: bytes) -> _Certificate:
    """PROTOCOL.certkeys: type, nonce, public fields, serial, type, id, principals, validity,
    options, extensions, reserved, CA key, signature (over everything before it)."""
    cert_type_name, at = _string(data, 0)
    base = cert_type_name.decode().removesuffix(CERT_SUFFIX)
    at = _string(data, at)[1]  # nonce
    for _ in range(_CERT_KEY_FIELDS[base]):
        at = _string(data, at)[1]
    at += 8  # serial
    (kind,) = struct.unpack_from(">I", data, at)
    at = _string(data, at + 4)[1]  # key id
    packed, at = _string(data, at)
    principals = []
    inner = 0
    while inner < len(packed):
        principal, inner = _string(packed, inner)
        principals.append(principal.decode().lower())
    after, before = struct.unpack_from(">QQ", data, at)
    at += 16
    for _ in range(3):  # critical options, extensions, reserved
        at = _string(data, at)[1]
    ca, at = _string(data, at)
    signed_end = at
    signature, _ = _string(data, at)
    return _Certificate(data[:signed_end], signature, ca, kind, tuple(principals), after, before)


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", data, at)
    end = at + 4 + length
    if end > len(data):
        raise ValueError("truncated")
    return data[at + 4 : end], end
