"""A SIP lab on loopback for the kamailio playbook's tests.

Kamailio (dispatcher and dialog, ``kamailio.cfg`` next to this file) in front of SIPp call servers
``cs-1``, ``cs-2``..., and SIPp callers placing calls through it. Every SIPp writes a short message
trace, one line per SIP message with its epoch time and Call-ID: the tests read what happened to
each call from SIPp's own records.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import string
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from upgradectl.lab import LabServer, free_ports, start_servers, stop_servers, wait_for
from upgradectl.lab.process import ServerProcess

HERE = Path(__file__).parent
KAMAILIO = "/usr/sbin/kamailio"
KAMCMD = "/usr/sbin/kamcmd"
SIPP = "/usr/bin/sipp"
LOOPBACK = "127.0.0.1"
DISPATCHER_SET = 1
DIALOG_PROFILE = "calls"
# SIPp quits by itself after this long, so none outlives a test runner that was killed.
SIPP_LIFETIME = "180s"
RPC_TIMEOUT = 10.0
# What Kamailio logs when `dlg.end_dlg` found the dialog deleted before its second BYE (5.6, 5.7+).
DROPPED_BYE_LINES = ("terminating non-confirmed dialogs not supported", "BYE not sent")


def missing_programs() -> list[str]:
    """The programs the lab needs that are not installed (Debian packages kamailio, sip-tester)."""
    return [path for path in (KAMAILIO, KAMCMD, SIPP) if not os.access(path, os.X_OK)]


def free_udp_ports(count: int) -> list[int]:
    """``count`` ports free for both TCP and UDP on 127.0.0.1 (SIP here is UDP)."""
    while True:
        ports = free_ports(count)
        if all(_udp_free(port) for port in ports):
            return ports


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _udp_listening(port: int) -> bool:
    """Whether a process has bound UDP ``port`` (from /proc: probing by binding would race)."""
    wanted = f":{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1].endswith(wanted) for line in lines)


# --- SIPp ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SipMessage:
    """One line of a SIPp short message trace."""

    time: float
    sent: bool
    call_id: str
    first_line: str

    @property
    def method(self) -> str | None:
        """The request's method, or None for a response."""
        word = self.first_line.split(" ", 1)[0]
        return None if word.startswith("SIP/") else word


def read_trace(path: Path) -> list[SipMessage]:
    """The messages of a ``-trace_shortmsg`` file: date, time, epoch, S|R, Call-ID, CSeq, line."""
    if not path.exists():
        return []
    messages = []
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) >= 7:  # SIPp may be halfway through writing the last line
            messages.append(SipMessage(float(fields[2]), fields[3] == "S", fields[4], fields[6]))
    return messages


def _requests(path: Path, method: str, *, sent: bool) -> dict[str, float]:
    """Call-ID -> time of the first ``method`` request sent (or received) in a trace."""
    found: dict[str, float] = {}
    for message in read_trace(path):
        if message.method == method and message.sent == sent:
            found.setdefault(message.call_id, message.time)
    return found


def _sipp(scenario: Path, port: int, control_port: int, trace: Path) -> list[str]:
    """SIPp on 127.0.0.1:port running ``scenario``, tracing its messages, without a keyboard."""
    return [
        SIPP, "-sf", str(scenario), "-i", LOOPBACK, "-p", str(port), "-cp", str(control_port),
        "-nostdin", "-timeout", SIPP_LIFETIME, "-trace_shortmsg", "-shortmessage_file", str(trace),
    ]  # fmt: skip


# The call server's own count of its live calls, from its SIPp message trace (date, time, epoch,
# S|R, Call-ID, CSeq, first line): offered (INVITE received) and not yet ended (BYE or CANCEL
# received). It prints Asterisk's wording, which the kamailio playbook's `node_active` reads.
LIVE_CALLS_AWK = (
    "awk -F'\\t' '$4 == \"R\" && $7 ~ /^INVITE / { live[$5] = 1 } "
    '$4 == "R" && $7 ~ /^(BYE|CANCEL) / { delete live[$5] } '
    'END { n = 0; for (call in live) n++; print n " active calls" }\''
)
# While a call rings, a CANCEL ends it (label `cancelled`); when the ring is over it is answered.
_RINGING = '<recv request="CANCEL" timeout="{ms}" ontimeout="answer" next="cancelled"/>'


class CallServer(LabServer):
    """A SIPp call server (``call_server.xml``): rings ``ring`` seconds (a CANCEL ends the call
    there), answers, and waits for its BYE."""

    def __init__(
        self, directory: Path, name: str, port: int, control_port: int, ring: float = 0.0
    ) -> None:
        self.name = name
        self.port = port
        self.uri = f"sip:{LOOPBACK}:{port}"
        self.trace = directory / f"{name}.trace"
        self.scenario = directory / f"{name}.xml"
        self.ring = ring
        argv = _sipp(self.scenario, port, control_port, self.trace)
        self.process = ServerProcess(name, argv, directory / f"{name}.log")

    def _write_config(self) -> None:
        ringing = _RINGING.format(ms=round(self.ring * 1000)) if self.ring else ""
        template = string.Template((HERE / "call_server.xml").read_text())
        self.scenario.write_text(template.substitute(ringing=ringing))

    @property
    def live_calls_command(self) -> str:
        """The shell command that prints this server's own count of live calls."""
        return f"{LIVE_CALLS_AWK} {shlex.quote(str(self.trace))}"

    def live(self) -> set[str]:
        """The Call-IDs of the calls this server holds: offered, neither hung up nor cancelled."""
        return self.calls() - self.ended() - self.cancelled()

    def cancelled(self) -> set[str]:
        """The Call-IDs of the calls cancelled here while they rang."""
        return set(_requests(self.trace, "CANCEL", sent=False))

    def _is_ready(self) -> bool:
        return _udp_listening(self.port)

    def calls(self) -> set[str]:
        """The Call-IDs of every call this server was offered."""
        return set(_requests(self.trace, "INVITE", sent=False))

    def ended(self) -> set[str]:
        """The Call-IDs of the calls that ended here with a BYE."""
        return set(_requests(self.trace, "BYE", sent=False))


@dataclass(frozen=True)
class CallTotals:
    """SIPp's own final counters of a caller."""

    successful: int
    failed: int


class Caller:
    """A SIPp caller placing ``calls`` calls at ``rate`` per second through the proxy.

    Each call is held ``hold`` seconds, then hung up; a BYE from the proxy before that (a forced
    end) is answered, and the call counts as cut.
    """

    def __init__(
        self, directory: Path, name: str, proxy_port: int, *, calls: int, rate: float, hold: float
    ) -> None:
        port, control_port = free_udp_ports(2)
        self.trace = directory / f"{name}.trace"
        self.stats = directory / f"{name}-stats.csv"
        scenario = directory / f"{name}.xml"
        template = string.Template((HERE / "caller.xml").read_text())
        scenario.write_text(template.substitute(hold_ms=round(hold * 1000)))
        argv = [
            *_sipp(scenario, port, control_port, self.trace), f"{LOOPBACK}:{proxy_port}",
            "-m", str(calls), "-r", str(rate), "-trace_stat", "-stf", str(self.stats),
        ]  # fmt: skip
        self.process = ServerProcess(name, argv, directory / f"{name}.log")

    def start(self) -> Self:
        """Start placing calls; returns at once."""
        self.process.start()
        return self

    def wait(self, timeout: float) -> CallTotals:
        """Wait until every call has ended and SIPp has quit; its final counters."""
        wait_for(
            lambda: not self.process.running, timeout, interval=0.1, what="the caller to finish"
        )
        rows = self.stats.read_text().splitlines()
        final = dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))
        return CallTotals(int(final["SuccessfulCall(C)"]), int(final["FailedCall(C)"]))

    def invites(self) -> dict[str, float]:
        """Call-ID -> when the caller sent its INVITE (epoch seconds)."""
        return _requests(self.trace, "INVITE", sent=True)

    def cut(self) -> set[str]:
        """The Call-IDs of the calls the network ended (a BYE the caller received)."""
        return set(_requests(self.trace, "BYE", sent=False))

    def stop(self) -> None:
        """Stop placing calls, if it has not finished."""
        self.process.stop()

    def die(self) -> None:
        """SIGKILL the caller, as a phone losing power: its calls are never hung up."""
        self.process.send(signal.SIGKILL)
        self.process.wait()

    def answered(self, code: int) -> set[str]:
        """The Call-IDs of the calls the caller got a ``code`` final response for."""
        return {
            message.call_id
            for message in read_trace(self.trace)
            if not message.sent and message.first_line.startswith(f"SIP/2.0 {code} ")
        }


# --- Kamailio -----------------------------------------------------------------------------


class Proxy(LabServer):
    """Kamailio on 127.0.0.1:port: dispatcher set 1 holds ``destinations``; its own ctl socket."""

    def __init__(
        self, directory: Path, port: int, destinations: Sequence[str], ctl_socket: Path
    ) -> None:
        self.directory = directory
        self.port = port
        self.destinations = list(destinations)
        self.dispatcher_list = directory / "dispatcher.list"
        self.ctl_socket = ctl_socket
        self.process = ServerProcess(
            "kamailio",
            [
                KAMAILIO, "-DD", "-E", "-f", str(HERE / "kamailio.cfg"),
                "-l", f"udp:{LOOPBACK}:{port}", "-n", "2", "-m", "32", "-M", "4",
                "-Y", str(directory / "run"), "-w", str(directory),
                "-A", f'CTL_SOCKET="unix:{self.ctl_socket}"',
                "-A", f'DISPATCHER_LIST="{self.dispatcher_list}"',
            ],
            directory / "kamailio.log",
        )  # fmt: skip

    @property
    def kamcmd(self) -> str:
        """The kamcmd command line that reaches this Kamailio (the playbook's ``kamcmd`` var)."""
        return f"{KAMCMD} -s unix:{self.ctl_socket}"

    def rpc(self, *args: str) -> str:
        """One kamcmd call: its output, errors included (kamcmd exits 0 on most of them)."""
        done = subprocess.run(
            [KAMCMD, "-s", f"unix:{self.ctl_socket}", *args],
            capture_output=True, text=True, timeout=RPC_TIMEOUT, check=False,
        )  # fmt: skip
        return done.stdout + done.stderr

    def flags(self) -> dict[str, str]:
        """Destination URI -> its dispatcher flags (``AX`` active, ``DX`` disabled...)."""
        found: dict[str, str] = {}
        uri = ""
        for line in self.rpc("dispatcher.list").splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "URI":
                uri = value
            elif key == "FLAGS":
                found[uri] = value
        return found

    def dropped_byes(self) -> int:
        """How often Kamailio said it sent a BYE to one leg of a dialog it was ending, but not to
        the other: its dialog module's race (kamailio#4268, #4169). The reply to the first BYE,
        handled by another process, deletes the dialog before the second BYE is sent; a busy
        machine widens that window."""
        log = self.process.log_path.read_text(errors="replace")
        return sum(log.count(line) for line in DROPPED_BYE_LINES)

    def active(self, uri: str) -> int:
        """How many calls the dialog profile holds for destination ``uri``."""
        return int(self.rpc("dlg.profile_get_size", DIALOG_PROFILE, uri))

    def _write_config(self) -> None:
        (self.directory / "run").mkdir(parents=True, exist_ok=True)
        lines = [f"{DISPATCHER_SET} {uri}\n" for uri in self.destinations]
        self.dispatcher_list.write_text("".join(lines))

    def _is_ready(self) -> bool:
        if not self.ctl_socket.exists():
            return False
        return set(self.flags()) == set(self.destinations)


# --- the lab ------------------------------------------------------------------------------


class SipLab:
    """Kamailio in front of call servers ``cs-1``, ``cs-2``...; all on 127.0.0.1."""

    def __init__(
        self, directory: Path, call_servers: int = 2, ring: dict[str, float] | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        ports = free_udp_ports(1 + 2 * call_servers)
        rings = ring or {}
        self.call_servers = {
            name: CallServer(directory, name, ports[2 * i - 1], ports[2 * i], rings.get(name, 0.0))
            for i, name in ((i, f"cs-{i}") for i in range(1, call_servers + 1))
        }
        # A unix socket's path must fit in 108 bytes, which pytest's tmp paths may not.
        self._socket_dir = tempfile.TemporaryDirectory(prefix="kamctl-")
        destinations = [server.uri for server in self.call_servers.values()]
        ctl_socket = Path(self._socket_dir.name) / "ctl.sock"
        self.proxy = Proxy(directory, ports[0], destinations, ctl_socket)
        self.callers: list[Caller] = []

    def start(self) -> Self:
        """Start Kamailio and the call servers; return once all of them answer."""
        start_servers([self.proxy, *self.call_servers.values()])
        return self

    def stop(self) -> None:
        """Stop every process of the lab."""
        for caller in self.callers:
            caller.stop()
        stop_servers([self.proxy, *self.call_servers.values()])
        self._socket_dir.cleanup()

    def call(self, calls: int, rate: float, hold: float) -> Caller:
        """Start a caller: ``calls`` calls at ``rate`` per second, each held ``hold`` seconds."""
        name = f"caller-{len(self.callers) + 1}"
        caller = Caller(self.directory, name, self.proxy.port, calls=calls, rate=rate, hold=hold)
        self.callers.append(caller)
        return caller.start()

    def write_inventory(self, path: Path) -> Path:
        """An inventory: ``proxy`` and the call servers, ``transport: local``, playbook kamailio."""
        nodes: dict[str, Any] = {"proxy": {"transport": "local"}}
        for name, server in self.call_servers.items():
            nodes[name] = {
                "host": LOOPBACK, "transport": "local", "playbook": "kamailio",
                "vars": {"sip_port": server.port, "node_active_command": server.live_calls_command},
            }  # fmt: skip
        # The node lock goes under the test's directory, not this machine's /var/tmp.
        defaults = {"vars": {"kamcmd": self.proxy.kamcmd, "node_state_dir": str(self.directory)}}
        path.write_text(yaml.safe_dump({"defaults": defaults, "nodes": nodes}, sort_keys=False))
        return path
