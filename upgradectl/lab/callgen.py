"""Callers for the lab: calls of chosen lengths, and a generator that keeps placing them.

Every call records its fate, which is what the lab's tests and benchmarks judge a rollout by:
`completed` (the caller said BYE and the server answered), `dropped` (the server said HANGUP or the
connection broke mid-call) or `refused` (no connection, BUSY, or no OK).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Self

from upgradectl.lab.running import Running

ANSWER_TIMEOUT = 5.0


class Fate(StrEnum):
    """How a call ended."""

    COMPLETED = "completed"
    DROPPED = "dropped"
    REFUSED = "refused"


@dataclass(frozen=True)
class CallRecord:
    """One call as the caller saw it; `ended` and `fate` are None while it is live."""

    caller: str
    planned_seconds: float
    started: float  # wall-clock time the call was placed (time.time())
    call_id: str | None = None
    address: str | None = None  # the caller's end of the connection, "HOST:PORT", once connected
    ended: float | None = None
    fate: Fate | None = None

    @property
    def node(self) -> str | None:
        """The node that answered, read from the call id (`node-3-17` -> `node-3`)."""
        return self.call_id.rsplit("-", 1)[0] if self.call_id else None


class _LineReader:
    """Lines from a socket, with a timeout per read."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def readline(self, timeout: float) -> str | None:
        """The next line without its newline; None on EOF or a broken connection.

        Raises TimeoutError when no full line arrives within `timeout`.
        """
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = self._sock.recv(4096)
            except TimeoutError:
                raise  # a subclass of OSError, but it means "nothing yet", not "broken"
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()


class Call:
    """One call, carried by its own thread from dial to hang-up."""

    def __init__(self, host: str, port: int, caller: str, seconds: float) -> None:
        self.host = host
        self.port = port
        self._record = CallRecord(caller=caller, planned_seconds=seconds, started=time.time())
        self._answered = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._hang_up_wanted = False
        self._said_bye = False
        self._thread = threading.Thread(target=self._run, name=f"call {caller}", daemon=True)

    @property
    def record(self) -> CallRecord:
        """The call as it stands now."""
        return self._record

    @property
    def call_id(self) -> str | None:
        """The id the server gave the call, once answered."""
        return self._record.call_id

    def dial(self) -> Self:
        """Place the call; returns at once."""
        self._thread.start()
        return self

    def wait_answered(self, timeout: float = ANSWER_TIMEOUT * 2) -> CallRecord:
        """Wait until the server answered (OK) or refused the call."""
        if not self._answered.wait(timeout):
            raise TimeoutError(f"call {self._record.caller} got no answer within {timeout:g}s")
        return self._record

    def wait(self, timeout: float | None = None) -> CallRecord:
        """Wait until the call has ended and return its record (check `fate`: None means live)."""
        self._thread.join(timeout)
        return self._record

    @property
    def live(self) -> bool:
        """True until the call has ended (its fate is known)."""
        return self._record.fate is None

    def hang_up(self) -> None:
        """Say BYE now instead of at the planned end (the call still counts as completed).

        A call not answered yet says BYE as soon as it is.
        """
        with self._lock:
            self._hang_up_wanted = True
            self._say_bye()

    def _say_bye(self) -> None:
        """Send BYE once, if connected; the caller holds `_lock`."""
        if self._sock is None or self._said_bye:
            return
        self._said_bye = True
        with contextlib.suppress(OSError):
            self._sock.sendall(b"BYE\n")

    def _run(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=ANSWER_TIMEOUT)
        except OSError:
            self._finish(Fate.REFUSED)
            return
        self._record = replace(self._record, address="{}:{}".format(*sock.getsockname()[:2]))
        with sock:
            self._talk(sock)

    def _talk(self, sock: socket.socket) -> None:
        lines = _LineReader(sock)
        record = self._record
        try:
            sock.sendall(f"CALL {record.caller} {record.planned_seconds:g}\n".encode())
            answer = lines.readline(ANSWER_TIMEOUT)
        except (TimeoutError, OSError):
            answer = None
        if answer is None or not answer.startswith("OK "):
            self._finish(Fate.REFUSED)
            return
        self._record = replace(record, call_id=answer.split()[1])
        with self._lock:
            self._sock = sock
            if self._hang_up_wanted:
                self._say_bye()
        self._answered.set()
        self._finish(self._hold(lines))

    def _hold(self, lines: _LineReader) -> Fate:
        """Stay on the line for the planned time, then say BYE; the server may cut in first."""
        try:
            heard = lines.readline(self._record.planned_seconds)
        except TimeoutError:
            self.hang_up()
            try:
                heard = lines.readline(ANSWER_TIMEOUT)
            except TimeoutError:
                heard = None
        # BYE is only ever the answer to our own BYE (sent here or by hang_up from outside).
        return Fate.COMPLETED if heard == "BYE" else Fate.DROPPED

    def _finish(self, fate: Fate) -> None:
        self._record = replace(self._record, ended=time.time(), fate=fate)
        self._answered.set()


def place_calls(
    host: str, port: int, durations: Sequence[float], caller_prefix: str = "probe"
) -> list[Call]:
    """Open one call per duration (seconds), one after another, each answered before the next.

    Returns the live handles: e.g. `place_calls(host, port, [2, 2, 2, 6])` for "three calls of 2 s
    and one of 6 s". A refused call is returned too, already ended with fate `refused`.
    """
    calls = []
    for number, seconds in enumerate(durations, start=1):
        call = Call(host, port, f"{caller_prefix}-{number}", seconds).dial()
        call.wait_answered()
        calls.append(call)
    return calls


@dataclass(frozen=True)
class CallResult:
    """Every call a generator placed, and how each one ended."""

    calls: tuple[CallRecord, ...]

    @property
    def counts(self) -> dict[Fate, int]:
        """How many calls met each fate (every fate present, zero included)."""
        return {fate: sum(1 for call in self.calls if call.fate is fate) for fate in Fate}

    def with_fate(self, fate: Fate) -> list[CallRecord]:
        """The calls that met `fate`."""
        return [call for call in self.calls if call.fate is fate]


class CallGenerator(Running):
    """Places calls at a steady rate with random lengths, each on its own thread, until stopped."""

    def __init__(
        self,
        host: str,
        port: int,
        rate_per_second: float,
        *,
        duration: tuple[float, float] = (1.0, 3.0),
        caller_prefix: str = "caller",
        rng: random.Random | None = None,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self.host = host
        self.port = port
        self.interval = 1.0 / rate_per_second
        self.duration = duration
        self.caller_prefix = caller_prefix
        self._rng = rng or random.Random()
        self._calls: list[Call] = []
        self._calls_lock = threading.Lock()
        self._stopping = threading.Event()
        self._placer = threading.Thread(target=self._place, name="call generator", daemon=True)

    def start(self) -> Self:
        """Start placing calls."""
        self._placer.start()
        return self

    def snapshot(self) -> CallResult:
        """The calls so far, live ones included (their fate is None)."""
        with self._calls_lock:
            return CallResult(tuple(call.record for call in self._calls))

    def stop(self, timeout: float = 30.0) -> CallResult:
        """Stop placing calls and let the live ones run out; after `timeout`, hang them up."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._placer.join()
        for call in self._calls:
            call.wait(max(deadline - time.monotonic(), 0.0))
        for call in self._calls:
            call.hang_up()
        for call in self._calls:
            call.wait(ANSWER_TIMEOUT)
        return self.snapshot()

    def _place(self) -> None:
        next_call = time.monotonic()
        number = 0
        while not self._stopping.wait(max(next_call - time.monotonic(), 0.0)):
            number += 1
            seconds = self._rng.uniform(*self.duration)
            call = Call(self.host, self.port, f"{self.caller_prefix}-{number}", seconds)
            with self._calls_lock:
                self._calls.append(call)
            call.dial()
            next_call += self.interval
