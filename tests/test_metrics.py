"""The metrics file, read back with Prometheus' own parser."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from upgradectl.errors import ExitCode
from upgradectl.metrics import write_metrics
from upgradectl.model import NODE_RESULTS
from upgradectl.results import NodeResult, RunSummary

STARTED = 1_700_000_000.0
FINISHED = STARTED + 3600.0


def run_summary(
    *nodes: NodeResult, started: float = STARTED, finished: float = FINISHED
) -> RunSummary:
    """A run's summary built as the runner builds it; ``nodes`` default to a typical night."""
    results = nodes or (
        node("upgraded", drain_seconds=812.5, forced=2, name="node-a"),
        node("upgraded", drain_seconds=30.0, name="node-b"),
        node("deferred", name="node-c"),
    )
    return RunSummary("20241110-020000-ab12", "upgrade", started, finished, results, {})


def node(
    result: str,
    drain_seconds: float | None = None,
    forced: int = 0,
    name: str = "node-a",
    exit_code: ExitCode = ExitCode.OK,
) -> NodeResult:
    """One node's result, with ``forced`` sessions cut."""
    cut = [{"id": f"call-{n}", "age": 3000.0 + n} for n in range(forced)]
    return NodeResult(name, result, exit_code, drain_seconds=drain_seconds, forced=cut)


FAILED = node("failed", drain_seconds=60.0, exit_code=ExitCode.STEP_FAILED)


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
    write_metrics(path, run_summary())
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
    write_metrics(path, run_summary())
    counts = {result: value(path, "nodes", result=result) for result in NODE_RESULTS}
    assert counts == {result: 0 for result in NODE_RESULTS} | {"upgraded": 2, "deferred": 1}


def test_every_metric_has_help_and_a_type(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary())
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
    write_metrics(path, run_summary())
    write_metrics(path, run_summary(FAILED, started=STARTED + 86400, finished=FINISHED + 86400))
    assert value(path, "last_success_timestamp_seconds") == FINISHED
    assert value(path, "last_run_timestamp_seconds") == FINISHED + 86400
    assert value(path, "last_run_exit_code") == 1
    assert value(path, "nodes", result="failed") == 1


def test_a_failed_first_run_reports_no_success_yet_as_zero(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(node("aborted", exit_code=ExitCode.GAVE_UP)))
    assert value(path, "last_success_timestamp_seconds") == 0


def test_a_dry_run_is_not_a_success(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(node("dry-run")))
    assert value(path, "last_run_exit_code") == 0
    assert value(path, "last_success_timestamp_seconds") == 0


def test_forced_sessions_add_up_over_runs(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary())
    write_metrics(path, run_summary(node("upgraded", 5.0, forced=3, name="node-b")))
    assert value(path, "sessions_forced_total") == 5


def test_drain_seconds_are_written_to_the_millisecond_as_in_the_json_summary(
    tmp_path: Path,
) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(node("upgraded", drain_seconds=12.34567)))
    assert value(path, "drain_seconds", node="node-a") == 12.346


@pytest.mark.parametrize("name", ['node "a"', "back\\slash", "two\nlines", "plain"])
def test_label_values_are_escaped(tmp_path: Path, name: str) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary(node("upgraded", drain_seconds=1.5, name=name)))
    assert value(path, "drain_seconds", node=name) == 1.5


def test_the_file_is_replaced_whole_leaving_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary())
    first_inode = path.stat().st_ino
    write_metrics(path, run_summary(FAILED))
    assert path.stat().st_ino != first_inode  # renamed over, never rewritten in place
    assert [entry.name for entry in tmp_path.iterdir()] == ["upgradectl.prom"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter must be able to read it


def test_a_summary_that_cannot_be_written_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "upgradectl.prom"
    write_metrics(path, run_summary())
    before = path.read_text()
    broken = node("upgraded", drain_seconds=cast(float, "soon"))  # fails while rendering
    with pytest.raises(TypeError):
        write_metrics(path, run_summary(broken))
    assert path.read_text() == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["upgradectl.prom"]
