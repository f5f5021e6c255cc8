"""Generated inventories and playbooks, valid and mutated, through the real `check` and `plan`:
exit 0 or 2, never a traceback, and no transport is ever made (no host is touched)."""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upgradectl import connections
from upgradectl.cli import main

TEMPLATES = st.sampled_from([
    "echo hi", "echo {{ version | quote }}", "{{ node.name }}", "{{ missing }}", "{{ x | safe_shell }}",
    "{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}", "{% for %}", "{{ 'a' * 99999999 }}",
    "{{ node.pair }}", "", " ", "{{ 2 ** 99999 }}", "{{ x }}{{ y }}", "{% if version is defined %}v{% endif %}",
])  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 0.0, -1, 10**400 // 10**395, 1e308]),
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.integers(10**20, 10**21),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), TEMPLATES,
    st.sampled_from(["90s", "15m", "1h30m", "0", "0s", "-1", "1%", "0%", "150%", "100%", "1hour"]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


VALID_INVENTORY: dict[str, Any] = {
    "defaults": {"transport": "local", "playbook": "./pb.yaml", "vars": {"dir": "/srv"}},
    "groups": {"voice": {"max_unavailable": 1}},
    "nodes": {"node-a": {"groups": ["voice"], "pair": "node-b"}, "node-b": {"groups": ["voice"], "pair": "node-a"}, "lb": {}},
}  # fmt: skip
VALID_PLAYBOOK: dict[str, Any] = {
    "name": "pb", "vars": {"x": "y"}, "lock": "/var/tmp/{{ node.name }}.lock",
    "drain": {"timeout": "1m", "poll": "1s", "stragglers": "force", "max_stragglers": 2},
    "steps": {"block": {"run": "touch {{ dir | quote }}/b", "on": "lb"}, "active": {"run": "echo 0", "parse": "(\\d+)"},
              "upgrade": {"run": "echo {{ version | quote }}", "timeout": "5m", "expected": "1m"},
              "verify": "true", "unblock": "rm -f {{ dir | quote }}/b", "patch": "true"},
}  # fmt: skip
INVENTORY_PATHS = [
    ("defaults",), ("defaults", "vars"), ("defaults", "playbook"), ("groups",), ("groups", "voice"),
    ("groups", "voice", "max_unavailable"), ("nodes",), ("nodes", "node-a"), ("nodes", "node-a", "pair"),
    ("nodes", "node-a", "port"), ("nodes", "node-a", "groups"), ("nodes", "node-b", "host"),
    ("nodes", "lb", "vars"), ("nodes", "node-c"), ("nodes", "node-a", "transport"), ("nodes", "lb", "bogus"),
]  # fmt: skip
PLAYBOOK_PATHS = [
    ("drain", "timeout"), ("drain", "poll"), ("drain", "poll_min"), ("drain", "settle"), ("drain", "stragglers"),
    ("drain", "max_stragglers"), ("drain", "stall_after"), ("lock",), ("vars",), ("vars", "x"), ("steps",),
    ("steps", "block"), ("steps", "block", "on"), ("steps", "active", "parse"), ("steps", "upgrade", "timeout"),
    ("steps", "upgrade", "expected"), ("steps", "upgrade", "run"), ("steps", "verify"), ("steps", "unblock"),
    ("steps", "upgrade", "reboot"), ("steps", "verify", "retries"), ("name",), ("steps", "node_active"),
]  # fmt: skip


def edit(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``path`` in ``document`` to ``value``, making mappings on the way where needed."""
    here: Any = document
    for key in path[:-1]:
        if not isinstance(here.get(key), dict):
            here[key] = {} if not isinstance(here.get(key), str) else {"run": here[key]}
        here = here[key]
    here[path[-1]] = value


@st.composite
def edited(draw: st.DrawFn, base: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """``base`` (valid) with a few of its fields set to anything at all."""
    document: dict[str, Any] = yaml.safe_load(yaml.safe_dump(base))
    for path in draw(st.lists(st.sampled_from(paths), max_size=3)):
        edit(document, path, draw(VALUES))
    return document


def dump(data: Any) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True).encode()


@st.composite
def mutated(draw: st.DrawFn, document: bytes) -> bytes:
    """``document`` with a few bytes changed, removed or inserted (YAML syntax, aliases, junk)."""
    data = bytearray(document)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"&a", b"*a", b"[", b"{", b"}", b":", b"\x00", b"\xff", b"- ", b"\n  ", b"? ", b"!!python/object:os.system"]))  # fmt: skip
        if draw(st.booleans()) and at < len(data):
            data[at : at + 1] = b""
        data[at:at] = junk
    return bytes(data)


@pytest.fixture
def no_transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every transport the code under test tries to make (it must make none)."""
    made: list[str] = []
    original = connections.Connections.__init__

    def spy(self: connections.Connections, *args: Any, **kwargs: Any) -> None:
        made.append("Connections")
        original(self, *args, **kwargs)

    monkeypatch.setattr(connections.Connections, "__init__", spy)
    yield made


def run(*args: str) -> int:
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        try:
            main(list(args))
        except SystemExit as done:
            return int(done.code or 0)
    raise AssertionError("main returned without exiting")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), inventory=edited(VALID_INVENTORY, INVENTORY_PATHS), playbook=edited(VALID_PLAYBOOK, PLAYBOOK_PATHS),
       version=st.sampled_from(["1", "", " ", "2; rm -rf /", "{{ ''.__class__ }}", "ñ"]))  # fmt: skip
@pytest.mark.slow
def test_check_and_plan_exit_0_or_2_on_any_input_and_touch_no_host(
    no_transport: list[str],
    data: st.DataObject,
    inventory: dict[str, Any],
    playbook: dict[str, Any],
    version: str,
) -> None:
    inventory_text, playbook_text = dump(inventory), dump(playbook)
    if data.draw(st.booleans(), "mutate the inventory"):
        inventory_text = data.draw(mutated(inventory_text))
    if data.draw(st.booleans(), "mutate the playbook"):
        playbook_text = data.draw(mutated(playbook_text))
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "inventory.yaml").write_bytes(inventory_text)
        (Path(folder) / "pb.yaml").write_bytes(playbook_text)
        path = str(Path(folder) / "inventory.yaml")
        for args in (["check"], ["check", "--strict"], ["plan", "--all", "--version", "1"],
                     ["plan", "--all", "--version", version],
                     ["--json", "plan", "--all", "--for", "drain"]):  # fmt: skip
            assert run("-i", path, *args) in (0, 2), args
    assert no_transport == []
