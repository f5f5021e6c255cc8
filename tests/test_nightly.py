"""Nightly runs from cron: windows, the run lock, reports, metrics and webhooks, with no terminal."""

from __future__ import annotations

import getpass
import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clihelp import run_cli
from conftest import wait_for
from prometheus_client.parser import text_string_to_metric_families
from schemacheck import schema_errors


def upgrade(local_site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "upgradectl",
        "-i",
        str(local_site / "inventory.yaml"),
        "--state-dir",
        str(local_site / "state"),
    ]
    return subprocess.run(
        [*command, "upgrade", "--all", "--version", "2.0", "--yes", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=60,
    )  # fmt: skip


def window_around(now: datetime, before: timedelta, after: timedelta) -> str:
    return f"{(now - before):%H:%M}-{(now + after):%H:%M}"


def test_outside_the_window_nothing_starts(local_site: Path) -> None:
    now = datetime.now(UTC)
    closed = window_around(now, -timedelta(hours=2), timedelta(hours=3))
    done = upgrade(local_site, "--window", closed, "--tz", "UTC")
    assert done.returncode == 75, done.stdout + done.stderr
    assert "is closed; it opens" in done.stderr
    assert not (local_site / "work" / "version").exists() and not (local_site / "state").exists()


def test_a_node_whose_drain_and_upgrade_do_not_fit_the_rest_of_the_window_is_deferred(
    local_site: Path,
) -> None:
    # An upgrade expected to take 3 h cannot fit in the hour left (HH:MM rounds the end down, so
    # 59 to 60 minutes): far from any minute boundary, the window is open whenever the run starts.
    playbook = local_site / "files.yaml"
    playbook.write_text(playbook.read_text().replace("expected: 1m", "expected: 3h"))
    now = datetime.now(UTC)
    short = window_around(now, timedelta(minutes=5), timedelta(hours=1))
    done = upgrade(
        local_site, "--window", short, "--tz", "UTC", "--report", str(local_site / "report.json")
    )
    assert done.returncode == 75, done.stdout + done.stderr
    report = json.loads((local_site / "report.json").read_text())
    assert report["nodes"]["node-a"]["result"] == "deferred"
    assert (
        not (local_site / "work" / "version").exists()
        and not (local_site / "work" / "blocked").exists()
    )


def test_a_cron_run_prints_plain_lines_and_writes_report_and_metrics(local_site: Path) -> None:
    now = datetime.now(UTC)
    wide = window_around(now, timedelta(hours=1), timedelta(hours=2))
    metrics = local_site / "upgradectl.prom"
    done = upgrade(
        local_site,
        "--window",
        wide,
        "--tz",
        "UTC",
        "--report",
        str(local_site / "r.json"),
        "--metrics-file",
        str(metrics),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b[" not in done.stdout  # no colour, no live view
    assert all(
        line[:4].isdigit() or line.startswith(("upgradectl ", "  "))
        for line in done.stdout.splitlines()
    )
    assert (
        "upgradectl upgrade" in done.stdout
        and "1 upgraded; 0 sessions forced; exit 0 (ok)" in done.stdout
    )
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["upgradectl_last_run_exit_code"].samples[0].value == 0
    upgraded = [s for s in families["upgradectl_nodes"].samples if s.labels["result"] == "upgraded"]
    assert upgraded[0].value == 1
    report = json.loads((local_site / "r.json").read_text())
    assert report["exit_code"] == 0 and not schema_errors([report])


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_webhook_hears_run_start_node_done_and_run_end(
    local_site: Path, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = webhook
    done = upgrade(local_site, "--notify", url)
    assert done.returncode == 0, done.stderr
    assert [event["event"] for event in received] == ["run-start", "node-done", "summary"]
    assert received[-1]["exit_code"] == 0
    assert not schema_errors(received)  # the structured event is whole beside its text
    start, node, summary = (str(event["text"]) for event in received)
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    assert start.startswith(f"upgradectl: {who} started upgrade node-a (run ")
    assert node == "upgradectl: node-a: upgraded: done; back in service"
    assert summary.startswith("upgradectl upgrade ") and "1 upgraded; 0 sessions forced" in summary
    assert "\n  node-a  upgraded" in summary


def test_a_webhook_that_refuses_connections_does_not_fail_the_run(
    local_site: Path, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, _ = webhook
    dead = url.rsplit(":", 1)[0] + ":9/hook"  # the discard port: nothing listens there on loopback
    done = upgrade(local_site, "--notify", dead)
    assert done.returncode == 0, done.stderr
    assert "--notify" in done.stdout and "WARNING" in done.stdout


def test_two_overlapping_runs_the_second_gets_75_naming_the_first(local_site: Path) -> None:
    # The first run holds the run lock until its drain ends: the call lasts until the second run
    # was refused, then hangs up. (A call of a fixed 4 s could end, and the first run finish,
    # before the second one, slow to start on a busy machine, reached the lock.)
    call = local_site / "work" / "sessions" / "call-1"
    call.write_text(str(int(datetime.now(UTC).timestamp()) + 3600))
    first = subprocess.Popen(
        [sys.executable, "-m", "upgradectl", "-i", str(local_site / "inventory.yaml"), "--state-dir", str(local_site / "state"),
         "upgrade", "node-a", "--version", "2.0", "--yes"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        wait_for((local_site / "work" / "blocked").exists, timeout=20)
        second = upgrade(local_site)
        assert second.returncode == 75, second.stdout + second.stderr
        assert "held by" in second.stderr or "run " in second.stderr
        assert f"pid {first.pid}" in second.stderr or str(first.pid) in second.stderr
    finally:
        call.unlink()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert (
        run_cli(
            "-i",
            str(local_site / "inventory.yaml"),
            "--state-dir",
            str(local_site / "state"),
            "history",
        ).code
        == 0
    )
