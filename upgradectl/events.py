"""The one stream of events a run produces; the views in ``upgradectl.cli.views`` show it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SCHEMA_VERSION = 1
"""The version of the JSON form of events (``events.schema.json``): raised when a field
changes meaning or goes away; a new optional field or a new event kind does not raise it."""


@dataclass(frozen=True)
class Event:
    """Something that happened: ``kind`` is stable (scripts match on it), ``message`` is for people."""

    kind: str
    node: str | None
    message: str
    time: float
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"event": kind, "schema_version": 1, "time": ..., "node": ...,
        "message": ..., **data}``, as ``events.schema.json`` describes it."""
        body: dict[str, Any] = {
            "event": self.kind,
            "schema_version": SCHEMA_VERSION,
            "time": round(self.time, 3),
        }
        if self.node is not None:
            body["node"] = self.node
        if self.message:
            body["message"] = self.message
        body.update(self.data)
        return body


Sink = Callable[[Event], None]


class Events:
    """Fans each event out to every sink, one event at a time even from several threads."""

    def __init__(self, *sinks: Sink, clock: Callable[[], float] = time.time) -> None:
        self.sinks = list(sinks)
        self.clock = clock
        self._lock = threading.Lock()

    def emit(self, kind: str, node: str | None = None, message: str = "", **data: Any) -> Event:
        """Publish an event."""
        # Read-only, as model.frozen_mapping makes it; `data` is this call's own dict already.
        # (The model is not imported here: `history` reads events and needs none of it.)
        event = Event(kind, node, message, self.clock(), MappingProxyType(data))
        with self._lock:
            for sink in self.sinks:
                sink(event)
        return event
