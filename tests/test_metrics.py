"""The metrics file, read back with Prometheus' own parser."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from upgradectl.metrics import write_metrics
from upgradectl.model import NODE_RESULTS

STARTED = 1_700_000_000.0
FINISHED = STARTED + 3600.0


def run_summary(
    exit_code: int = 0, nodes: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A run's JSON summary, as the runner emits it; ``nodes`` default to a typical night."""
    return {
        "event": "summary",
        "run_id": "20241110-020000-ab12",
        "command": "upgrade",
        "started": STARTED,
        "finished": FINISHED,
        "exit_code": exit_code,
        "result": "ok" if exit_code == 0 else "failed",
        "nodes": nodes
        or {
            "node-a": node("upgraded", drain_seconds=812.5, forced=2),
            "node-b": node("upgraded", drain_seconds=30.0),
            "node-c": node("deferred"),
        },
    }


def node(result: str, drain_seconds: float | None = None, forced: int = 0) -> dict[str, Any]:
    """One node's entry in a summary, with ``forced`` sessions cut."""
    return {
        "result": result,
        "exit_code": 0,
        "drain_seconds": drain_seconds,
        "forced": [{"id": f"call-{n}", "age": 3000.0 + n} for n in range(forced)],
    }


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics file, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def value(path: Path, name: str, **labels: str) -> float:
    """One sample's value."""
    return samples(path)[(f"upgradectl_{name}", tuple(sorted(labels.items())))]


def test_a_successful_run_is_written_with_every_metric(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(), now=FINISHED + 5)
    assert value(path, "last_run_timestamp_seconds") == FINISHED
    assert value(path, "last_run_exit_code") == 0
    assert value(path, "last_run_duration_seconds") == 3600.0
    assert value(path, "sessions_forced_total") == 2
    assert value(path, "drain_seconds", node="node-a") == 812.5
    assert value(path, "drain_seconds", node="node-b") == 30.0
    assert ("upgradectl_drain_seconds", (("node", "node-c"),)) not in samples(path)
    assert value(path, "last_success_timestamp_seconds") == FINISHED


def test_every_node_result_is_present_even_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(), now=FINISHED)
    counts = {result: value(path, "nodes", result=result) for result in NODE_RESULTS}
    assert counts == {result: 0 for result in NODE_RESULTS} | {"upgraded": 2, "deferred": 1}


def test_every_metric_has_help_and_a_type(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(), now=FINISHED)
    families = {family.name: family for family in text_string_to_metric_families(path.read_text())}
    assert {name: family.type for name, family in families.items()} == {
        "upgradectl_last_run_timestamp_seconds": "gauge",
        "upgradectl_last_run_exit_code": "gauge",
        "upgradectl_last_run_duration_seconds": "gauge",
        "upgradectl_nodes": "gauge",
        "upgradectl_sessions_forced": "counter",
        "upgradectl_drain_seconds": "gauge",
        "upgradectl_last_success_timestamp_seconds": "gauge",
    }
    assert all(family.documentation for family in families.values())


def test_a_failed_run_keeps_the_last_success_of_an_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(), now=FINISHED)
    failed = run_summary(exit_code=1, nodes={"node-a": node("failed", drain_seconds=60.0)})
    failed["started"], failed["finished"] = STARTED + 86400, FINISHED + 86400
    write_metrics(path, failed, now=FINISHED + 86400)
    assert value(path, "last_success_timestamp_seconds") == FINISHED
    assert value(path, "last_run_timestamp_seconds") == FINISHED + 86400
    assert value(path, "last_run_exit_code") == 1
    assert value(path, "nodes", result="failed") == 1


def test_a_failed_first_run_reports_no_success_yet_as_zero(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(exit_code=3, nodes={"node-a": node("aborted")}), now=FINISHED)
    assert value(path, "last_success_timestamp_seconds") == 0


def test_a_dry_run_is_not_a_success(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(nodes={"node-a": node("dry-run")}), now=FINISHED)
    assert value(path, "last_run_exit_code") == 0
    assert value(path, "last_success_timestamp_seconds") == 0


def test_forced_sessions_add_up_over_runs(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(), now=FINISHED)
    write_metrics(
        path, run_summary(nodes={"node-b": node("upgraded", 5.0, forced=3)}), now=FINISHED
    )
    assert value(path, "sessions_forced_total") == 5


def test_a_summary_without_an_end_time_ends_now(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    unfinished = run_summary()
    del unfinished["finished"]
    write_metrics(path, unfinished, now=STARTED + 90)
    assert value(path, "last_run_timestamp_seconds") == STARTED + 90
    assert value(path, "last_run_duration_seconds") == 90


@pytest.mark.parametrize("name", ['node "a"', "back\\slash", "two\nlines", "plain"])
def test_label_values_are_escaped(tmp_path: Path, name: str) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(
        path, run_summary(nodes={name: node("upgraded", drain_seconds=1.5)}), now=FINISHED
    )
    assert value(path, "drain_seconds", node=name) == 1.5


def test_the_file_is_replaced_whole_leaving_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(), now=FINISHED)
    first_inode = path.stat().st_ino
    write_metrics(path, run_summary(exit_code=1), now=FINISHED)
    assert path.stat().st_ino != first_inode  # renamed over, never rewritten in place
    assert [entry.name for entry in tmp_path.iterdir()] == ["upgradectl.prom"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter must be able to read it


def test_a_summary_that_cannot_be_written_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(), now=FINISHED)
    before = path.read_text()
    broken = run_summary()
    del broken["exit_code"]
    with pytest.raises(KeyError):
        write_metrics(path, broken, now=FINISHED)
    assert path.read_text() == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["upgradectl.prom"]
