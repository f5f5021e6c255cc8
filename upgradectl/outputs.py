"""The files a run leaves for others when it ends: the JSON report and the Prometheus metrics."""

from __future__ import annotations

import json

from upgradectl.atomicfile import replace_atomically
from upgradectl.metrics import write_metrics
from upgradectl.results import RunSummary
from upgradectl.unattended import Unattended


def write_outputs(options: Unattended, summary: RunSummary) -> None:
    """The JSON report (``--report``) and the metrics (``--metrics-file``), each replaced atomically."""
    if options.report:
        text = json.dumps(summary.as_dict(), indent=2, default=str) + "\n"
        replace_atomically(options.report, text, mode=0o600)  # it names nodes and sessions
    if options.metrics_file:
        write_metrics(options.metrics_file, summary)
