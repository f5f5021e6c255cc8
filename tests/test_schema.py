"""The JSON events: a schema shipped with the package, a page generated from it, and real runs
that follow it event by event."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clihelp import run_cli
from conftest import start_sessions
from jsondoc import event_kinds, render
from jsonschema import Draft202012Validator
from schemacheck import SCHEMA, schema_errors

import upgradectl
from upgradectl.events import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "json.md"


def test_the_schema_is_a_valid_json_schema_of_the_version_events_carry() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$defs"]["envelope"]["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def emitted_kinds() -> set[str]:
    """Every event kind the package's code names where it emits, records or says an event."""
    kinds: set[str] = set()
    for path in Path(upgradectl.__file__).parent.rglob("*.py"):
        if "lab" in path.relative_to(ROOT / "upgradectl").parts:
            continue  # the lab's own tools, not a run's events
        for call in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(call, ast.Call) and call.args):
                continue
            name = getattr(call.func, "attr", getattr(call.func, "id", ""))
            if name not in ("emit", "say", "record"):
                continue
            first = call.args[0]
            options = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            kinds |= {
                o.value for o in options if isinstance(o, ast.Constant) and isinstance(o.value, str)
            }
    return kinds


def test_every_event_the_code_emits_is_in_the_schema_and_nothing_else_is() -> None:
    code = emitted_kinds()
    assert len(code) > 30  # the scan found the runner's events, not nothing
    assert code == set(event_kinds(SCHEMA))


def test_the_json_page_is_generated_from_the_schema() -> None:
    if os.environ.get("UPGRADECTL_WRITE_DOCS"):
        PAGE.write_text(render(SCHEMA))
    assert PAGE.read_text() == render(SCHEMA), (
        "docs/json.md is out of date: UPGRADECTL_WRITE_DOCS=1 python3 -m pytest tests/test_schema.py"
    )


def test_the_schema_rejects_an_event_that_breaks_it() -> None:
    poll = {"event": "poll", "schema_version": 1, "time": 1.0, "node": "n", "active": 3,
            "deadline": 2.0, "insight": "3 active"}  # fmt: skip
    assert schema_errors([poll]) == []
    assert schema_errors([{**poll, "active": "3"}])  # a count is a number
    assert schema_errors([{**poll, "surprise": 1}])  # an undocumented field
    assert schema_errors([{k: v for k, v in poll.items() if k != "node"}])  # whose drain?
    assert schema_errors([{**poll, "event": "pol"}])  # an undocumented event
    assert schema_errors([{k: v for k, v in poll.items() if k != "schema_version"}])


def run(site: Path, *args: str) -> list[dict[str, Any]]:
    """``upgradectl -v --json ARGS`` against the local site; its events (validated by run_cli)."""
    ran = run_cli(
        "-i",
        str(site / "inventory.yaml"),
        "--state-dir",
        str(site / "state"),
        "-v",
        "--json",
        *args,
    )
    assert ran.code in (0, 3), ran.stderr
    return ran.events


@pytest.mark.slow
def test_every_event_of_real_runs_follows_the_schema(forcing_site: Path) -> None:
    local_site = forcing_site
    start_sessions(local_site, {"short": 1.0, "long-1": 600.0, "long-2": 600.0})

    events = run(local_site, "upgrade", "node-a", "--version", "2", "--dry-run")
    events += run(local_site, "drain", "node-a", "--timeout", "2s", "--yes")  # too many: gives up
    events += run(local_site, "upgrade", "node-a", "--version", "2", "--yes", "--timeout", "2s",
                  "--stragglers", "force", "--max-stragglers", "2")  # fmt: skip

    kinds = {event["event"] for event in events}
    assert {"would", "aborted", "poll", "forcing", "forced", "upgraded", "summary"} <= kinds
    assert {"step", "step-output", "node-done", "run-start", "probe"} <= kinds
    assert all(event["schema_version"] == SCHEMA_VERSION for event in events)


def test_the_schema_ships_inside_the_package(tmp_path: Path) -> None:
    # setuptools' own build step copies what a wheel would hold: the modules and package data.
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build",
         "--build-base", str(tmp_path / "build"), "--build-lib", str(tmp_path / "lib")],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    shipped = tmp_path / "lib" / "upgradectl" / "events.schema.json"
    assert json.loads(shipped.read_text()) == SCHEMA


@pytest.mark.parametrize("kind", ["run-start", "poll", "forced", "node-done", "summary"])
def test_the_page_lists_each_event_with_its_fields(kind: str) -> None:
    page = PAGE.read_text()
    section = page.split(f"### `{kind}`", 1)[1].split("\n### ", 1)[0]
    for field in SCHEMA["$defs"][kind]["properties"]:
        if field != "event":
            assert f"| `{field}` |" in section
