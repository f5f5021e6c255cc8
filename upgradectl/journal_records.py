"""What a journal record must look like to be believed: a journal edited by hand, truncated or
corrupted must give `status`, `history` and `resume` a clear message, never a traceback.

A line that is not a well-formed record is set aside like a torn line (and reported with it).
"""

from __future__ import annotations

import json
from typing import Any

# The fields some record kinds carry, and the type each must have when present.
_DATA_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "run-start": {"command": str, "nodes": list, "inventory": str, "options": dict, "argv": list},
    "forced": {"sessions": list},
    "result": {"result": str, "exit_code": int, "message": str},
    "run-end": {"exit_code": int, "result": str},
    "reading": {"active": (int, type(None))},
}
# What a start record needs for `resume` to rebuild the run's plan.
_START_NEEDS = ("command", "nodes", "inventory")


def parse_record(line: str) -> dict[str, Any] | None:
    """The record on ``line``, or None when the line is torn, corrupt or not a record."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # torn, not JSON, or nested past Python's stack
        return None
    return record if well_formed(record) else None


def well_formed(record: Any) -> bool:
    """Whether ``record`` has the shape every reader of the journal relies on."""
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        return False
    time = record.get("time")
    data = record.get("data", {})
    return (
        isinstance(record.get("node"), str | None)
        and isinstance(time, int | float)
        and not isinstance(time, bool)
        and isinstance(data, dict)
        and _data_well_formed(record["kind"], data)
    )


def _data_well_formed(kind: str, data: dict[str, Any]) -> bool:
    expected = _DATA_FIELDS.get(kind, {})
    if any(key in data and not isinstance(data[key], types) for key, types in expected.items()):
        return False
    if kind == "forced":
        return all(isinstance(session, dict) for session in data.get("sessions", []))
    if kind == "run-start":
        return all(isinstance(node, str) for node in data.get("nodes", []))
    return True


def start_problem(data: dict[str, Any]) -> str | None:
    """What keeps `resume` from rebuilding a run from its start record's data, if anything."""
    missing = [key for key in _START_NEEDS if key not in data]
    return f"it lacks {', '.join(missing)}" if missing else None
