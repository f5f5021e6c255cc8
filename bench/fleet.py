"""How fast is a rollout? upgradectl against N real sshd nodes on loopback, beside ansible-playbook.

    python bench/fleet.py --nodes 50 --mode parallel
    python bench/fleet.py --nodes 10 --mode sequential
    python bench/fleet.py --nodes 50 --sessions 5 --drain 3     # sessions end within 3 s

Each node is a real OpenSSH sshd from the lab (`upgradectl.lab`), logged in as a user with a
plain /bin/sh. Its "service" is a few files in its `node_dir` (bench/playbook.yaml): sessions are
end times, so the intrinsic drain time of the run is known in advance: the latest end. Whatever
the run takes beyond that is overhead: the controller's start-up, SSH handshakes, commands, polls.

The figures: wall time, intrinsic drain time, overhead, the controller's CPU seconds and peak RSS
(from wait4() on the controller process: it and the children it reaped), SSH connections per
node (the run's summary, and sshd's own "Accepted" log lines), and `upgradectl --help` time.
With ansible-playbook installed, bench/ansible/drain.yml runs the same commands on the same nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from upgradectl.lab import Lab, SshHome, lab_account

BENCH_DIR = Path(__file__).resolve().parent
PLAYBOOK = BENCH_DIR / "playbook.yaml"
ANSIBLE_PLAYBOOK = BENCH_DIR / "ansible" / "drain.yml"
GROUP = "fleet"
OLD_VERSION = "1"
NEW_VERSION = "2"
RUN_DEADLINE = 600.0  # a run that takes longer than this is hung, not slow
# sshd (LogLevel INFO) logs one such line per SSH connection that logged in.
_ACCEPTED = re.compile(rb"^Accepted publickey for ", re.MULTILINE)


@dataclass(frozen=True)
class Scenario:
    """What one benchmark run does."""

    nodes: int
    mode: str  # parallel: max_unavailable = nodes; sequential: 1
    sessions: int  # live sessions per node when the run starts
    drain: float  # the last of them ends this many seconds after the start
    poll: float | None  # override the playbook's drain.poll
    settle: int | None  # override the playbook's drain.settle

    @property
    def max_unavailable(self) -> int:
        """How many nodes may be out of service at once."""
        return self.nodes if self.mode == "parallel" else 1

    def session_ends(self, start: float) -> list[float]:
        """Each node's session end times (epoch), evenly spread up to ``start + drain``."""
        return [start + self.drain * (i + 1) / self.sessions for i in range(self.sessions)]


@dataclass(frozen=True)
class Measured:
    """One finished process: how long, how much CPU and memory, what it said."""

    wall: float
    cpu_user: float
    cpu_system: float
    peak_rss_mb: float
    exit_code: int
    stdout: str
    stderr: str

    @property
    def cpu(self) -> float:
        """User plus system CPU seconds."""
        return self.cpu_user + self.cpu_system


@dataclass
class Figures:
    """What one tool's run on the fleet cost."""

    tool: str
    wall: float
    intrinsic: float
    cpu: float
    peak_rss_mb: float
    accepted_per_node: list[int]  # sshd's count, node by node
    reported_per_node: list[int] = field(default_factory=list)  # the tool's own count, if any
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """Wall time beyond the intrinsic drain time."""
        return self.wall - self.intrinsic


def measure(argv: Sequence[str], env: dict[str, str], timeout: float = RUN_DEADLINE) -> Measured:
    """Run ``argv`` to the end; its rusage comes from wait4() on it, not on our other children."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            wall=wall,
            cpu_user=usage.ru_utime,
            cpu_system=usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
            exit_code=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


class BenchFleet:
    """A lab of N sshd nodes whose shell-only 'service' is files in each node's ``node_dir``."""

    def __init__(self, workdir: Path, nodes: int) -> None:
        self.workdir = workdir
        self.lab = Lab(workdir / "lab", nodes)
        self.home: SshHome | None = None

    def start(self) -> None:
        """Start every sshd and make a HOME whose known_hosts trusts them."""
        self.lab.start()
        self.home = self.lab.ssh_home(self.workdir / "home")

    def stop(self) -> None:
        """Stop every server the lab started."""
        self.lab.stop()

    @property
    def env(self) -> dict[str, str]:
        """The environment the tools run in: HOME with the lab's known_hosts, no ssh-agent."""
        if self.home is None:
            raise RuntimeError("the fleet was never started")
        return self.home.env

    def reset(self, session_ends: list[float]) -> None:
        """Every node back to version 1, unblocked, unlocked, with these live sessions."""
        account = lab_account()
        for node in self.lab.nodes:
            for name in ("blocked", "upgradectl.lock"):
                (node.node_dir / name).unlink(missing_ok=True)
            files = {
                "version": OLD_VERSION + "\n",
                "sessions": "".join(f"{end:.3f}\n" for end in session_ends),
            }
            for name, text in files.items():
                path = node.node_dir / name
                path.write_text(text)
                account.give(path)  # the node's user rewrites its version

    def versions(self) -> list[str]:
        """Each node's version, as its version file says."""
        return [(node.node_dir / "version").read_text().strip() for node in self.lab.nodes]

    def accepted(self) -> list[int]:
        """How many SSH logins each node's sshd has accepted so far."""
        return [
            len(_ACCEPTED.findall(node.ssh.process.log_path.read_bytes()))
            for node in self.lab.nodes
        ]

    def write_inventory(self, scenario: Scenario, playbook: Path) -> Path:
        """An upgradectl inventory: every node in one group, no pairs, max_unavailable per mode."""
        nodes = {
            node.name: {
                "host": node.ssh.host,
                "port": node.ssh.port,
                "groups": [GROUP],
                "vars": {"node_dir": str(node.node_dir)},
            }
            for node in self.lab.nodes
        }
        inventory = {
            "defaults": {
                "user": self.lab.user,
                "identity_file": str(self.lab.identity_file),
                "playbook": str(playbook),
            },
            "groups": {GROUP: {"max_unavailable": scenario.max_unavailable}},
            "nodes": nodes,
        }
        path = self.workdir / "inventory.yaml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path

    def write_ansible_inventory(self) -> Path:
        """The same nodes for ansible-playbook (its `raw` module needs no Python on them).

        OpenSSH finds ~/.ssh by the passwd entry, not $HOME: known_hosts is named explicitly.
        """
        if self.home is None:
            raise RuntimeError("the fleet was never started")
        hosts = {
            node.name: {
                "ansible_host": node.ssh.host,
                "ansible_port": node.ssh.port,
                "node_dir": str(node.node_dir),
            }
            for node in self.lab.nodes
        }
        inventory = {
            GROUP: {
                "hosts": hosts,
                "vars": {
                    "ansible_user": self.lab.user,
                    "ansible_ssh_private_key_file": str(self.lab.identity_file),
                    "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.home.known_hosts}",
                },
            }
        }
        path = self.workdir / "ansible-inventory.yaml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path


def bench_playbook(workdir: Path, scenario: Scenario) -> Path:
    """bench/playbook.yaml, or a copy of it with the scenario's drain.poll/settle."""
    overrides: dict[str, Any] = {}
    if scenario.poll is not None:
        overrides["poll"] = scenario.poll
    if scenario.settle is not None:
        overrides["settle"] = scenario.settle
    if not overrides:
        return PLAYBOOK
    playbook = yaml.safe_load(PLAYBOOK.read_text())
    playbook["drain"].update(overrides)
    path = workdir / "playbook.yaml"
    path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    return path


def run_upgradectl(fleet: BenchFleet, scenario: Scenario, number: int) -> Figures:
    """`upgradectl upgrade --all` on the fleet; raises if any node was not upgraded."""
    inventory = fleet.write_inventory(scenario, bench_playbook(fleet.workdir, scenario))
    state_dir = fleet.workdir / f"state-{number}"  # a fresh journal: no earlier runs to read
    argv = [sys.executable, "-m", "upgradectl", "-i", str(inventory), "--state-dir", str(state_dir),
            "--json", "upgrade", "--all", "--version", NEW_VERSION, "--yes"]  # fmt: skip
    accepted_before = fleet.accepted()
    start = time.time()
    fleet.reset(scenario.session_ends(start))
    ran = measure(argv, fleet.env)
    events = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    summary = next((e for e in reversed(events) if e["event"] == "summary"), None)
    if ran.exit_code != 0 or summary is None:
        raise RuntimeError(
            f"upgradectl exited {ran.exit_code}:\n{ran.stderr[-3000:]}\n{ran.stdout[-3000:]}"
        )
    _check_upgraded(fleet, "upgradectl")
    names = [node.name for node in fleet.lab.nodes]
    return Figures(
        tool="upgradectl",
        wall=ran.wall,
        intrinsic=scenario.drain if scenario.sessions else 0.0,
        cpu=ran.cpu,
        peak_rss_mb=ran.peak_rss_mb,
        accepted_per_node=_minus(fleet.accepted(), accepted_before),
        reported_per_node=[summary["connections"].get(name, 0) for name in names],
        phases=_phases(events, start, start + ran.wall),
    )


def _phases(events: list[dict[str, Any]], spawned: float, exited: float) -> dict[str, float]:
    """Where the wall time went, from the events' own timestamps (milliseconds)."""

    def first(kind: str) -> float:
        return min(e["time"] for e in events if e["event"] == kind)

    def last(kind: str) -> float:
        return max(e["time"] for e in events if e["event"] == kind)

    marks = {
        "start-up": first("run-start"),
        "probe": max(first("node-start"), first("run-start")),
        "nodes": last("node-done"),
        "exit": exited,
    }
    phases, previous = {}, spawned
    for name, mark in marks.items():
        phases[name] = max(mark - previous, 0.0)
        previous = mark
    return phases


def run_ansible(fleet: BenchFleet, scenario: Scenario) -> Figures:
    """bench/ansible/drain.yml on the same fleet, forks = N; raises if a node was not upgraded."""
    inventory = fleet.write_ansible_inventory()
    poll = (
        scenario.poll
        if scenario.poll is not None
        else yaml.safe_load(PLAYBOOK.read_text())["drain"]["poll"]
    )
    delay = max(1, round(_seconds(poll)))  # Ansible's `delay` is whole seconds
    argv = ["ansible-playbook", "-i", str(inventory), "-f", str(scenario.nodes),
            "-e", f"version={NEW_VERSION} batch={scenario.max_unavailable} poll_delay={delay}",
            str(ANSIBLE_PLAYBOOK)]  # fmt: skip
    env = {**fleet.env, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    accepted_before = fleet.accepted()
    fleet.reset(scenario.session_ends(time.time()))
    try:
        ran = measure(argv, env)
    finally:
        _close_ssh_masters(Path(env["HOME"]) / ".ansible" / "cp", env)
    if ran.exit_code != 0:
        raise RuntimeError(
            f"ansible-playbook exited {ran.exit_code}:\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
        )
    _check_upgraded(fleet, "ansible-playbook")
    return Figures(
        tool="ansible-playbook",
        wall=ran.wall,
        intrinsic=scenario.drain if scenario.sessions else 0.0,
        cpu=ran.cpu,
        peak_rss_mb=ran.peak_rss_mb,
        accepted_per_node=_minus(fleet.accepted(), accepted_before),
    )


def _seconds(poll: object) -> float:
    from upgradectl.duration import parse_duration  # noqa: PLC0415 - only the Ansible run needs it

    return parse_duration(poll)


def _close_ssh_masters(control_dir: Path, env: dict[str, str]) -> None:
    """Ansible's OpenSSH ControlMasters outlive the run (ControlPersist): ask each one to exit."""
    if not control_dir.is_dir():
        return
    for socket_path in control_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "bench-node"],
                       env=env, capture_output=True, check=False, timeout=10)  # fmt: skip


def _check_upgraded(fleet: BenchFleet, tool: str) -> None:
    stale = [v for v in fleet.versions() if v != NEW_VERSION]
    if stale:
        raise RuntimeError(f"{tool}: {len(stale)} nodes were not upgraded")


def _minus(after: list[int], before: list[int]) -> list[int]:
    return [a - b for a, b in zip(after, before, strict=True)]


def help_seconds(runs: int) -> float:
    """The median wall time of `upgradectl --help` (the console script beside this Python)."""
    script = Path(sys.executable).with_name("upgradectl")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "upgradectl"]
    return statistics.median(measure([*argv, "--help"], dict(os.environ)).wall for _ in range(runs))


def _spread(counts: list[int]) -> str:
    low, high = min(counts), max(counts)
    return f"{low} per node" if low == high else f"{low}..{high} per node"


def report(figures: Figures) -> str:
    """The figures of one run, for people."""
    lines = [
        f"{figures.tool}:",
        f"  wall            {figures.wall:7.2f} s",
        f"  intrinsic drain {figures.intrinsic:7.2f} s  (the latest session end)",
        f"  overhead        {figures.overhead:7.2f} s",
        f"  controller CPU  {figures.cpu:7.2f} s",
        f"  peak RSS        {figures.peak_rss_mb:7.1f} MB",
        f"  SSH connections {_spread(figures.accepted_per_node)} (sshd's log)"
        + (
            f"; {_spread(figures.reported_per_node)} (run summary)"
            if figures.reported_per_node
            else ""
        ),
    ]
    if figures.phases:
        lines.append(
            "  phases          " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.phases.items())
        )
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown",
    )  # fmt: skip
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    found = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "python": sys.version.split()[0],
        "openssh": subprocess.run(
            ["ssh", "-V"], capture_output=True, text=True, check=False
        ).stderr.strip(),
    }
    for package in ("paramiko", "cryptography"):
        from importlib.metadata import version  # noqa: PLC0415

        found[package] = version(package)
    if shutil.which("ansible-playbook"):
        first = subprocess.run(
            ["ansible-playbook", "--version"], capture_output=True, text=True, check=False
        )
        found["ansible"] = first.stdout.splitlines()[0] if first.stdout else "?"
    return found


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=50, help="sshd nodes to start (default 50)")
    parser.add_argument("--mode", choices=("parallel", "sequential"), default="parallel",
                        help="all nodes at once, or one after another (default parallel)")  # fmt: skip
    parser.add_argument(
        "--sessions", type=int, default=0, help="live sessions per node (default 0)"
    )
    parser.add_argument("--drain", type=float, default=3.0,
                        help="seconds until each node's last session ends (default 3)")  # fmt: skip
    parser.add_argument("--poll", type=float, help="override the playbook's drain.poll (seconds)")
    parser.add_argument("--settle", type=int, help="override the playbook's drain.settle")
    parser.add_argument(
        "--repeat", type=int, default=1, help="upgradectl runs on the fleet (default 1)"
    )
    parser.add_argument("--ansible", choices=("auto", "no"), default="auto",
                        help="run bench/ansible/drain.yml too when ansible-playbook exists (default auto)")  # fmt: skip
    parser.add_argument(
        "--help-runs", type=int, default=5, help="`upgradectl --help` timings (default 5)"
    )
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="also write the figures as JSON here"
    )
    parser.add_argument("--workdir", type=Path, help="keep the lab, inventories and journals here")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.repeat < 1 or args.sessions < 0 or args.drain <= 0:
        parser.error(
            "--nodes and --repeat must be at least 1, --sessions at least 0, --drain above 0"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start the fleet, run the tools on it, print the figures, stop the fleet."""
    args = parse_args(argv)
    scenario = Scenario(args.nodes, args.mode, args.sessions, args.drain, args.poll, args.settle)
    # A fleet of N sshd listening sockets, and N connections from the controller: room for both.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="upgradectl-bench-"))
    fleet = BenchFleet(workdir, args.nodes)
    started = time.monotonic()
    fleet.start()
    print(f"{args.nodes} sshd nodes up in {time.monotonic() - started:.1f} s; "
          f"{args.mode} (max_unavailable {scenario.max_unavailable}), "
          f"{args.sessions} sessions per node" + (f" ending within {args.drain:g} s" if args.sessions else ""))  # fmt: skip
    try:
        runs = [run_upgradectl(fleet, scenario, number) for number in range(1, args.repeat + 1)]
        for figures in runs:
            print(report(figures))
        ansible = None
        if args.ansible == "auto" and shutil.which("ansible-playbook"):
            ansible = run_ansible(fleet, scenario)
            print(report(ansible))
    finally:
        fleet.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    best = statistics.median(f.wall for f in runs)
    if args.repeat > 1:
        print(f"upgradectl median wall over {args.repeat} runs: {best:.2f} s")
    if ansible is not None:
        print(f"ratio ansible-playbook / upgradectl wall: {ansible.wall / best:.1f}x")
    help_time = help_seconds(args.help_runs)
    print(f"upgradectl --help: {help_time:.3f} s (median of {args.help_runs})")
    if args.json:
        args.json.write_text(json.dumps({
            "scenario": asdict(scenario), "machine": machine(), "help_seconds": help_time,
            "upgradectl": [asdict(f) | {"overhead": f.overhead} for f in runs],
            "ansible": None if ansible is None else asdict(ansible) | {"overhead": ansible.overhead},
        }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
