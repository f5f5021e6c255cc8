"""Commands over one reused SSH connection per node (paramiko), the way OpenSSH would connect.

``~/.ssh/config`` is resolved by OpenSSH itself (``sshconfig.py``), the keys offered are chosen
as OpenSSH would (``identities.py``) and ssh-agent is honoured; OpenSSH's ``known_hosts`` is
checked and an unknown host key is refused unless the operator said ``--accept-new-host-keys``. A changed host key is always refused, as
OpenSSH's ``accept-new`` does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from upgradectl.errors import (
    CommandTimedOut,
    ConnectionLost,
    ConnectionRefused,
    HostKeyRefused,
    Unreachable,
)
from upgradectl.transport.alarm import ALARMS
from upgradectl.transport.backoff import retry
from upgradectl.transport.base import CommandResult
from upgradectl.transport.deadline import ANSWER_GRACE, bounded, stopped_at_deadline
from upgradectl.transport.identities import Identities
from upgradectl.transport.known_hosts import HostId, KnownHosts
from upgradectl.transport.paramiko_lean import paramiko
from upgradectl.transport.sshconfig import Endpoint

CONNECT_TIMEOUT = 10.0
KEEPALIVE_SECONDS = 5
# How often paramiko's thread of an idle connection wakes (it sends the keepalives then).
IDLE_WAKE_SECONDS = float(KEEPALIVE_SECONDS)
# OpenSSH refuses an eleventh session on one connection (MaxSessions defaults to 10). A fleet's
# steps on one balancer, or a wide probe, share that connection: they queue here instead.
MAX_CHANNELS = 8
# How long a channel closed without an exit status waits for paramiko to mark its connection
# dead before the command counts as one that exited -1.
CLOSE_GRACE = 1.0
# sshd refuses a session past MaxSessions, counting sessions still closing (slow under load).
# A refusal says nothing about the connection: the open is retried on it, for this long at most.
CHANNEL_RETRY_SECONDS = 10.0
_NETWORK_ERRORS = (paramiko.SSHException, OSError, EOFError)
_GCM = "-gcm@openssh.com"
# A step that reads stdin reads its end at once, as under the local transport: the node gives it
# an empty stdin. Not the client's EOF (shutdown_write): paramiko sends that outside the channel's
# lock, so when the command ends at once its EOF can reach sshd after the CLOSE its own thread
# sent for the server's CLOSE; sshd then drops the whole connection ("ieof packet referred to
# nonexistent channel"), and every command sharing it is lost.
NO_STDIN = "exec </dev/null; "


class SshTransport:
    """One SSH connection to one node, opened on first use and reused for every command."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        accept_new_host_keys: bool = False,
        warn: Callable[[str], None] = lambda message: None,
        jump: SshTransport | None = None,
        known_hosts: KnownHosts | None = None,
    ) -> None:
        self.name = endpoint.alias
        self.known_hosts = known_hosts or KnownHosts(
            endpoint.known_hosts, endpoint.global_known_hosts
        )
        self.endpoint = endpoint
        self.accept_new_host_keys = accept_new_host_keys
        self.warn = warn
        self.jump = jump
        self.connections_opened = 0
        self.identities = Identities(endpoint)
        self._channels = threading.BoundedSemaphore(MAX_CHANNELS)
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    # -- connecting ------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, check the host key and log in now, once: the preflight's question."""
        self._connected()

    def _connected(self, deadline: float | None = None) -> paramiko.Transport:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                transport = self._connect(deadline)
            return transport

    def _connect(self, deadline: float | None = None) -> paramiko.Transport:
        """Connect, each of the handshake's waits bounded by CONNECT_TIMEOUT and ``deadline``."""
        self._drop()
        wait = _within(CONNECT_TIMEOUT, deadline)
        client = paramiko.SSHClient()
        known_as = HostId.of(
            self.endpoint.hostname, self.endpoint.port, self.endpoint.host_key_alias
        )
        client.set_missing_host_key_policy(
            self.known_hosts.policy(self.name, known_as, self.accept_new_host_keys, self.warn)
        )
        keys = self.identities.offered()  # AuthenticationRefused for a missing identity file
        try:
            client.connect(
                self.endpoint.hostname,
                port=self.endpoint.port,
                username=self.endpoint.user,
                key_filename=cast(Any, keys or None),  # str or list: both work
                look_for_keys=False,  # the defaults are in `keys` already, as OpenSSH lists them
                allow_agent=True,
                timeout=wait,
                banner_timeout=wait,
                auth_timeout=wait,
                sock=self._tunnel(wait),
                transport_factory=_aead_first(self.known_hosts.transport_factory(known_as)),
            )
        except HostKeyRefused:
            client.close()
            raise
        except paramiko.AuthenticationException:
            client.close()
            raise self.identities.refused() from None
        except paramiko.SSHException as exc:
            client.close()
            if "No authentication methods available" in str(exc):  # no key and no agent at all
                raise self.identities.refused() from None
            raise ConnectionLost(f"{self.name}: cannot connect: {exc}") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise self._unreachable(exc) from None
        transport = client.get_transport()
        assert transport is not None  # connect() succeeded, so a transport exists
        transport.set_keepalive(KEEPALIVE_SECONDS)
        if isinstance(transport.sock, socket.socket):  # not through a ProxyJump channel
            # Each command ends with small packets (EOF, close) and the next begins with one
            # (open): under Nagle that one waits for the server's delayed ACK, 40 ms a command.
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # paramiko's thread wakes at each timeout of its socket, 0.1 s by default: ten
            # times a second per connection for as long as the run lasts (the CPU that grew
            # faster than the fleet). Once per keepalive will do; closing shuts the socket down
            # first, so the thread still ends at once (_drop).
            transport.sock.settimeout(IDLE_WAKE_SECONDS)
        self._client = client
        self.connections_opened += 1
        return transport

    def _unreachable(self, error: OSError | EOFError) -> ConnectionLost:
        """Nothing answered at the socket: OpenSSH's words, "connect to host H port P: ..."."""
        if isinstance(error, EOFError):
            return ConnectionLost(f"{self.name}: the server closed the connection at once")
        reasons = getattr(error, "errors", {}).values() or [error]  # one per address tried
        why = "; ".join(sorted({_strerror(reason) for reason in reasons}))
        where = f"{self.endpoint.hostname} port {self.endpoint.port}"
        return ConnectionRefused(f"{self.name}: connect to host {where}: {why}")

    def _tunnel(self, wait: float) -> paramiko.Channel | None:
        if self.jump is None:
            return None
        try:
            return self.jump._connected(time.monotonic() + wait).open_channel(
                "direct-tcpip",
                (self.endpoint.hostname, self.endpoint.port),
                ("127.0.0.1", 0),
                timeout=wait,
            )
        except paramiko.ChannelException as exc:  # the jump host could not reach the node
            raise ConnectionRefused(
                f"{self.name}: ProxyJump {self.jump.name} cannot reach {self.endpoint.hostname}"
                f" port {self.endpoint.port}: {exc.text}"
            ) from None
        except _NETWORK_ERRORS as exc:
            raise ConnectionLost(f"{self.name}: ProxyJump {self.jump.name} failed: {exc}") from None

    def _drop(self) -> None:
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and isinstance(transport.sock, socket.socket):
                # Wakes paramiko's thread out of its read now, not at the socket's timeout.
                with contextlib.suppress(OSError):
                    transport.sock.shutdown(socket.SHUT_RDWR)
            self._client.close()
            self._client = None

    def reconnect(self, deadline: float) -> None:
        """Open the connection again, with exponential backoff, until ``deadline`` (monotonic)."""

        def connect() -> None:
            with self._lock:
                self._connect(deadline)

        def lost(exc: Exception) -> bool:
            return isinstance(exc, ConnectionLost)

        try:
            retry(connect, again=lost, first=0.2, most=5.0, until=deadline)
        except ConnectionLost as exc:
            raise Unreachable(f"{self.name}: unreachable: {exc}") from None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._drop()

    def _forget(self, transport: paramiko.Transport | None) -> None:
        """Close the connection a command was lost with, if it is still the node's: another
        command may have connected again meanwhile, and the new connection carries commands."""
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._drop()

    # -- running ---------------------------------------------------------------------------

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run ``command`` on the node's shell over the shared connection."""
        # Waiting for one of the connection's sessions is a wait like any other: sessions held
        # by hung commands must not keep a new command waiting past its own timeout.
        if not self._channels.acquire(timeout=timeout):
            raise CommandTimedOut(self.name, command, timeout, stopped=True, started=False)
        try:
            return self._run(command, timeout)
        finally:
            self._channels.release()

    def _run(self, command: str, timeout: float) -> CommandResult:
        # The node stops the command at `timeout`; the controller waits a little longer for the
        # word that it did, and never longer: every wait below (connect, channel open, exec,
        # output) ends by `deadline`.
        started = time.monotonic()
        deadline = started + timeout + ANSWER_GRACE
        try:
            channel = self._open_session(deadline)
        except _NETWORK_ERRORS as exc:  # the connection died (and was forgotten)
            raise ConnectionLost(f"{self.name}: connection lost: {exc}") from None
        try:
            self._exec(channel, NO_STDIN + bounded(command, timeout), deadline)
            stdout, stderr = self._collect(channel, deadline)
            code = channel.recv_exit_status()
        except _NoAnswer:
            raise CommandTimedOut(self.name, command, timeout, stopped=False) from None
        except _NETWORK_ERRORS as exc:
            self._forget(channel.get_transport())
            raise ConnectionLost(
                f"{self.name}: connection lost during {command!r}: {exc}"
            ) from None
        finally:
            _close(channel)
        elapsed = time.monotonic() - started
        if stopped_at_deadline(code, elapsed, timeout):
            raise CommandTimedOut(self.name, command, timeout, stopped=True)
        return CommandResult(command, code, stdout, stderr, elapsed)

    def _exec(self, channel: paramiko.Channel, command: str, deadline: float) -> None:
        """``exec_command``, which waits for the server's reply without a timeout, bounded by
        ``deadline``: closing the channel then ends its wait."""
        alarm = ALARMS.at(deadline, lambda: _close(channel))
        try:
            channel.exec_command(command)
        except _NETWORK_ERRORS:
            if time.monotonic() >= deadline:
                # The server never answered a channel request: the link is dead, though TCP
                # may not know it yet. The next command connects again.
                self._forget(channel.get_transport())
                raise _NoAnswer from None
            raise
        finally:
            alarm.cancel()

    def _open_session(self, deadline: float) -> paramiko.Channel:
        """A new channel on the shared connection; while the connection lives, ask again.

        paramiko reports sshd's refusal as a ChannelException, or, when two opens are refused
        at once, as a bare SSHException for one of them: any failure on a live connection is
        taken for a refusal. A dead connection raises (and is forgotten); refusals that
        outlast ``CHANNEL_RETRY_SECONDS`` raise ConnectionLost and leave it open.
        """
        transport = self._connected(deadline)

        def refused(exc: Exception) -> bool:
            return isinstance(exc, paramiko.SSHException) and transport.is_active()

        try:
            return retry(
                lambda: transport.open_session(timeout=_within(CONNECT_TIMEOUT, deadline)),
                again=refused,
                first=0.01,
                most=0.25,
                until=time.monotonic() + CHANNEL_RETRY_SECONDS,
            )
        except _NETWORK_ERRORS as exc:
            if not refused(exc):  # the connection died: the next command connects again
                self._forget(transport)
                raise
            raise ConnectionLost(
                f"{self.name}: sshd refused a new session for {CHANNEL_RETRY_SECONDS:g}s "
                f"({exc}; its MaxSessions?)"
            ) from None

    def _collect(self, channel: paramiko.Channel, deadline: float) -> tuple[str, str]:
        """The command's output, read with paramiko's own blocking reads (no descriptor is
        waited on: ``select()`` fails past descriptor 1024, and a channel's ``fileno()`` costs
        two more descriptors per command)."""
        stdout, stderr = bytearray(), bytearray()
        while True:  # stdout until its end; stderr taken as it comes, so neither fills the window
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _NoAnswer
            # The wait ends as soon as output or the end arrives; the cap only bounds how long
            # stderr may wait unread (its data shares the channel's window with stdout's).
            channel.settimeout(min(remaining, 1.0))
            try:
                chunk: bytes | None = channel.recv(65536)
            except TimeoutError:
                chunk = None
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
            if chunk == b"":
                break
            stdout += chunk or b""
        # At the end of stdout (EOF or a closed channel) stderr's buffer is closed too.
        while chunk := channel.recv_stderr(65536):
            stderr += chunk
        if not channel.eof_received:
            raise EOFError("the connection closed before the command finished")
        if not channel.status_event.wait(max(deadline - time.monotonic(), 0.0)):
            raise _NoAnswer
        if channel.exit_status == -1 and _dies(channel.get_transport(), CLOSE_GRACE):
            # No exit status, and the connection died: paramiko closes every channel of a dead
            # connection (a reboot) before it marks the connection dead, so this is the word
            # that the command's end is unknown, not a command that exited -1.
            raise EOFError("the connection closed before the command finished")
        return stdout.decode(errors="replace"), stderr.decode(errors="replace")


def _dies(transport: paramiko.Transport | None, within: float) -> bool:
    """Whether the connection is dead, or is marked dead within ``within`` seconds: paramiko's
    own thread marks it a moment after it closed the channels, and a reading taken in between
    would take a reboot for a command that exited -1."""
    until = time.monotonic() + within
    while transport is not None and transport.is_active() and not transport.saved_exception:
        if time.monotonic() >= until:
            return False
        time.sleep(0.01)  # paramiko's thread gives no event to wait on for this
    return True


def _close(channel: paramiko.Channel) -> None:
    """Close ``channel``; on a connection that died meanwhile, saying so to the server fails and
    is not worth an error (the death itself is reported by whoever waits on the connection)."""
    with contextlib.suppress(*_NETWORK_ERRORS):
        channel.close()


class _NoAnswer(Exception):
    """The node did not answer by the controller's deadline."""


def _aead_first(
    make: Callable[..., paramiko.Transport],
) -> Callable[..., paramiko.Transport]:
    """Transports that offer AES-GCM first. paramiko's own order picks AES-CTR with a separate
    HMAC, whose tag it computes and compares byte by byte in Python for every packet (about
    1 ms of the controller's CPU a node, of 17); GCM's tag is checked inside the cipher.
    OpenSSH offers an AEAD cipher first too (chacha20-poly1305, which paramiko lacks); a server
    without GCM agrees on the next one as before."""

    def made(*args: Any, **kwargs: Any) -> paramiko.Transport:
        transport = make(*args, **kwargs)
        options = transport.get_security_options()
        options.ciphers = sorted(options.ciphers, key=lambda name: not name.endswith(_GCM))
        return transport

    return made


def _within(wait: float, deadline: float | None) -> float:
    """``wait``, cut to what is left before ``deadline`` (never quite zero: that means forever)."""
    if deadline is None:
        return wait
    return max(min(wait, deadline - time.monotonic()), 0.01)


def _strerror(error: OSError) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "Connection timed out"
    return error.strerror or str(error)
