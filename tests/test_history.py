"""Past runs: the list, one run as a page (text with its drain drawn, JSON with the readings),
and the same page as HTML, opened in a real headless browser."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clihelp import Ran, run_cli
from conftest import sessions_until_blocked, start_sessions

from upgradectl.cli.htmlpage import BOTTOM, HEIGHT, LEFT, TOP

WHO = f"{getpass.getuser()}@{socket.gethostname()}"


def cli(site: Path, *args: str) -> Ran:
    """The command line against the local site, without a terminal."""
    return run_cli("-i", str(site / "inventory.yaml"), "--state-dir", str(site / "state"), *args)


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real upgrade whose drain saw sessions end over time, then forced the last one; and a
    dry run after it. The site and the real run's id."""
    site = tmp_path_factory.mktemp("history")
    # The local_site and forcing_site fixtures, built by hand: this module shares one run.
    from conftest import FORCE_STEPS, PLAYBOOK  # noqa: PLC0415

    (site / "work" / "sessions").mkdir(parents=True)
    (site / "files.yaml").write_text(PLAYBOOK + FORCE_STEPS)
    (site / "inventory.yaml").write_text(
        f"defaults: {{transport: local, playbook: ./files.yaml, vars: {{dir: {site / 'work'}}}}}\n"
        "nodes:\n  node-a: {}\n"
    )
    start_sessions(site, {"long-1": 600.0})
    # Two sessions end 2 s and 4 s into the drain, however long the controller took to start.
    with sessions_until_blocked(site, {"first": 2.0, "second": 4.0}):
        ran = cli(site, "--json", "upgrade", "node-a", "--version", "2", "--yes", "--timeout", "6s",
                  "--stragglers", "force", "--max-stragglers", "1")  # fmt: skip
    assert ran.code == 0, ran.stderr
    assert cli(site, "upgrade", "node-a", "--version", "3", "--dry-run").code == 0
    return site, ran.summary["run_id"]


def test_the_list_shows_duration_nodes_forced_count_and_marks_the_dry_run(
    drained: tuple[Path, str],
) -> None:
    site, run_id = drained
    listed = cli(site, "history")
    assert listed.code == 0, listed.stderr
    dry, real = listed.stdout.splitlines()
    assert real.startswith(run_id) and f"  {WHO}  upgrade to 2 node-a: ok; 1 node, " in real
    assert real.endswith(", 1 forced") and "[dry run]" not in real
    assert "upgrade to 3 [dry run] node-a: ok; 1 node, " in dry and dry.endswith("nothing changed")
    rows = cli(site, "--json", "history").events
    assert [(row["dry_run"], row["forced_count"]) for row in rows] == [(True, 0), (False, 1)]
    assert 6 <= rows[1]["duration"] < 60 and rows[1]["schema_version"] == 1


def page_json(site: Path, run_id: str) -> dict[str, Any]:
    ran = cli(site, "--json", "history", run_id)
    assert ran.code == 0, ran.stderr
    (page,) = ran.events
    return page


def test_the_page_in_json_holds_each_milestone_the_sessions_cut_and_the_readings(
    drained: tuple[Path, str],
) -> None:
    site, run_id = drained
    page = page_json(site, run_id)
    assert (page["event"], page["run"], page["who"], page["command"]) == (
        "run",
        run_id,
        WHO,
        "upgrade",
    )
    node = page["results"]["node-a"]
    times = node["times"]
    assert list(times) == ["blocked", "drained", "forced", "upgraded", "verified", "back"]
    assert (
        times["blocked"] < times["forced"] <= times["drained"] < times["upgraded"] <= times["back"]
    )
    assert [session["id"] for session in node["forced"]] == ["long-1"]
    readings = node["readings"]
    assert [r["active"] for r in readings] == [3, 2, 1, 0]  # each change, as the sessions ended
    assert readings[0]["deadline"] == pytest.approx(readings[0]["time"] + 6, abs=1)
    assert node["deadline"] <= node["forcing_at"] < readings[-1]["time"]


def test_the_page_in_text_says_who_when_what_and_draws_the_drain(drained: tuple[Path, str]) -> None:
    site, run_id = drained
    ran = cli(site, "history", run_id)
    assert ran.code == 0, ran.stderr
    text = ran.stdout
    assert text.startswith(f"run {run_id}: upgrade to 2 node-a\n  by {WHO}, started ")
    assert (
        "exit 0 (ok)" in text and "command line: " in text and " upgrade node-a --version 2" in text
    )
    story = text.split("\nnode-a: upgraded (done; back in service)\n", 1)[1]
    moments = story.splitlines()[0]
    assert [part.split()[0] for part in moments.split(", ")] == [
        "blocked", "forced", "drained", "upgraded", "verified", "back"
    ]  # fmt: skip
    assert "  cut 1 session at " in story and "    long-1  lasted " in story
    chart = story.split("node-a: active sessions, seconds since the first reading", 1)[1]
    assert "deadline" in chart and "force" in chart
    assert any("\u2800" < char <= "\u28ff" for char in chart)  # the curve, in braille dots
    assert chart.splitlines()[2].startswith("3┤")  # the count axis starts at the first reading
    assert "\x1b[" not in text  # no colour without a terminal


def test_an_unknown_run_is_a_usage_error(drained: tuple[Path, str]) -> None:
    site, _ = drained
    ran = cli(site, "history", "20990101T000000-0000")
    assert ran.code == 2 and "no run 20990101T000000-0000" in ran.stderr
    assert cli(site, "history", "--html", str(site / "x.html")).code == 2


# Run inside the page by the test only (the page itself has no script): where the browser put
# the drain's curve and marks, and what it finds painted at the curve's first point.
PROBE = """<script>
const path = document.querySelector("svg.drain path.curve");
path.scrollIntoView();
const box = path.getBBox(), svg = path.ownerSVGElement.getBoundingClientRect();
const first = path.getPointAtLength(2);
const hit = document.elementFromPoint(svg.left + first.x, svg.top + first.y);
const lines = [...document.querySelectorAll("svg.drain line.deadline, svg.drain line.force")];
const found = document.createElement("pre");
found.id = "probe";
found.textContent = JSON.stringify({
  length: path.getTotalLength(), box: [box.x, box.y, box.width, box.height],
  hit: hit && hit.getAttribute("class"), stroke: getComputedStyle(path).stroke,
  marks: lines.map(l => [l.getAttribute("class"), l.getBBox().height]),
});
document.body.append(found);
</script>"""


def in_chromium(page: Path, profile: Path) -> dict[str, Any]:
    """Open ``page`` in headless Chromium with PROBE added; what PROBE found."""
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--window-size=1200,900", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0]))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run)")
def test_the_html_page_draws_the_drain_in_a_real_browser(
    drained: tuple[Path, str], tmp_path: Path
) -> None:
    site, run_id = drained
    html = tmp_path / "run.html"
    ran = cli(site, "history", run_id, "--html", str(html))
    assert ran.code == 0, ran.stderr
    text = html.read_text()
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert '<table class="helpdesk">' in text and "<td>long-1</td>" in text
    readings = page_json(site, run_id)["results"]["node-a"]["readings"]
    assert text.count(" L") == 2 * (len(readings) - 1)  # a step per reading after the first

    found = in_chromium(html, tmp_path / "profile")

    x, y, width, height = found["box"]
    assert (x, y) == (LEFT, TOP)  # the curve starts at the top left: the first reading's count
    assert height == HEIGHT - TOP - BOTTOM  # ...and falls all the way to zero
    assert width > 0 and found["length"] > height + width * 0.9
    assert found["hit"] == "curve" and found["stroke"] == "rgb(9, 105, 218)"  # painted, styled
    assert sorted(name for name, _ in found["marks"]) == ["deadline", "force"]
    assert all(tall == height for _, tall in found["marks"])


def test_the_upgrade_path_never_imports_plotext(drained: tuple[Path, str]) -> None:
    site, _ = drained
    probe = (
        "import sys; from upgradectl.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as done:\n"
        "    assert 'plotext' not in sys.modules, 'plotext was imported'\n    raise\n"
    )
    args = ["-i", str(site / "inventory.yaml"), "--state-dir", str(site / "state")]
    done = subprocess.run(
        [sys.executable, "-c", probe, *args, "upgrade", "node-a", "--version", "4", "--yes"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
