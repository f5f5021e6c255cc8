"""Validating JSON events against the schema the package ships (``upgradectl/events.schema.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA: dict[str, Any] = json.loads(
    files("upgradectl").joinpath("events.schema.json").read_text(encoding="utf-8")
)
VALIDATOR = Draft202012Validator(SCHEMA)


def schema_errors(events: Iterable[dict[str, Any]]) -> list[str]:
    """Every way ``events`` break the schema, one line each naming the event and the field."""
    problems = []
    for number, event in enumerate(events, start=1):
        for error in VALIDATOR.iter_errors(event):
            where = "/".join(str(part) for part in error.absolute_path) or "(the event)"
            problems.append(f"event {number} ({event.get('event')}): {where}: {error.message}")
    return problems
