"""Prometheus metrics of a run, for node_exporter's textfile collector.

``--metrics-file /var/lib/node_exporter/textfile/upgradectl.prom`` writes, at the end of a run,
the run's outcome in the Prometheus text format. The file is replaced atomically: the collector
reads every ``*.prom`` file in its directory at any moment, so it must never see half a file
(the temporary file's name does not end in ``.prom``).

Two values outlive the run that wrote them, read back from the previous file: the time of the
last successful run (operators alert on "no successful run in 48h", so a failed run must not
reset it) and the count of sessions forced, a counter summed over every run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from upgradectl.atomicfile import replace_atomically
from upgradectl.model import NODE_RESULTS
from upgradectl.results import RunSummary

PREFIX = "upgradectl_"


_LAST_SUCCESS = "last_success_timestamp_seconds"
_SESSIONS_FORCED = "sessions_forced_total"


def write_metrics(path: Path | str, summary: RunSummary) -> None:
    """Write the metrics of the run ``summary`` to ``path``, replacing it atomically."""
    path = Path(path)
    previous = _read_previous(path)
    finished = summary.finished
    last_success = finished if _succeeded(summary) else previous.get(_LAST_SUCCESS, 0.0)
    forced = previous.get(_SESSIONS_FORCED, 0.0) + _sessions_forced(summary)
    text = "".join(
        [
            _family("last_run_timestamp_seconds", "gauge", "When the last run ended.", finished),
            _family(
                "last_run_exit_code", "gauge", "Exit code of the last run.", int(summary.exit_code)
            ),
            _family(
                "last_run_duration_seconds",
                "gauge",
                "How long the last run took.",
                finished - summary.started,
            ),
            _labelled_family(
                "nodes",
                "gauge",
                "Nodes of the last run, by the result they ended with.",
                "result",
                _count_results(summary).items(),
            ),
            _family(
                _SESSIONS_FORCED,
                "counter",
                "Sessions disconnected by the straggler policy, over every run.",
                forced,
            ),
            _labelled_family(
                "drain_seconds",
                "gauge",
                "How long each node of the last run took to drain.",
                "node",
                _drain_seconds(summary).items(),
            ),
            _family(
                _LAST_SUCCESS,
                "gauge",
                "When the last run that did everything asked of it ended (0: never).",
                last_success,
            ),
        ]
    )
    replace_atomically(path, text, mode=0o644)  # node_exporter usually runs as another user


def _succeeded(summary: RunSummary) -> bool:
    """Whether the run did everything asked of it; a dry run changes nothing, so it does not."""
    dry = any(node.result == "dry-run" for node in summary.results)
    return summary.exit_code == 0 and not dry


def _count_results(summary: RunSummary) -> dict[str, int]:
    """How many nodes ended with each result; every known result is present, maybe with 0."""
    counts = dict.fromkeys(NODE_RESULTS, 0)
    for node in summary.results:
        counts[node.result] = counts.get(node.result, 0) + 1
    return counts


def _sessions_forced(summary: RunSummary) -> int:
    """How many sessions the run disconnected, over all nodes."""
    return len(summary.forced)


def _drain_seconds(summary: RunSummary) -> dict[str, float]:
    """How long each node that drained took to, to the millisecond as in the JSON summary."""
    return {
        node.node: round(node.drain_seconds, 3)
        for node in sorted(summary.results, key=lambda node: node.node)
        if node.drain_seconds is not None
    }


def _family(name: str, kind: str, help_text: str, value: float) -> str:
    """The HELP, TYPE and single sample lines of an unlabelled metric."""
    return _header(name, kind, help_text) + f"{PREFIX}{name} {_number(value)}\n"


def _labelled_family(
    name: str, kind: str, help_text: str, label: str, samples: Iterable[tuple[str, float]]
) -> str:
    """The HELP and TYPE lines of a metric, then one sample per value of ``label``."""
    lines = [
        f'{PREFIX}{name}{{{label}="{_escape_label(key)}"}} {_number(value)}\n'
        for key, value in samples
    ]
    return _header(name, kind, help_text) + "".join(lines)


def _header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {PREFIX}{name} {help_text}\n# TYPE {PREFIX}{name} {kind}\n"


def _escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value: integers without a fraction, floats in their shortest exact form."""
    return str(value) if isinstance(value, int) else repr(float(value))


def _read_previous(path: Path) -> dict[str, float]:
    """The unlabelled samples of the previous metrics file, by name without the prefix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].startswith(PREFIX) and "{" not in fields[0]:
            try:
                values[fields[0].removeprefix(PREFIX)] = float(fields[1])
            except ValueError:  # a damaged line: start that value afresh
                continue
    return values
