"""How fast is a rollout? upgradectl against N real sshd nodes on loopback, beside ansible-playbook.

    python bench/fleet.py --nodes 50 --mode parallel
    python bench/fleet.py --nodes 10 --mode sequential
    python bench/fleet.py --nodes 50 --sessions 5 --drain 3     # the last session ends at 3 s

Each node is a real OpenSSH sshd from the lab (`upgradectl.lab`), logged in as a user with a
plain /bin/sh. Its "service" is a few files in its `node_dir`, driven by bench/playbook.yaml
with sh, date, awk and grep only: sessions are end times, so the intrinsic drain time of a run
is known in advance (the latest end) and whatever the run takes beyond it is overhead: the
controller's start-up, SSH handshakes, commands and polls.

Printed per run: wall time, intrinsic drain time, overhead, the controller's CPU seconds and
peak RSS (wait4() on the controller: it and the children it reaped), the nodes' CPU seconds
(every sshd and what it ran: on this machine too, competing for the same cores), SSH
connections per node (the run's summary, and sshd's own log), where the wall time went (from
the events' timestamps), and `upgradectl --help` time. With ansible-playbook installed,
bench/ansible/drain.yml runs the same commands on the same nodes, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

import upgradectl
from upgradectl.duration import parse_duration
from upgradectl.lab import Lab, SshHome, lab_account, wait_for
from upgradectl.lab.sshd import SshServer

BENCH_DIR = Path(__file__).resolve().parent
PLAYBOOK = BENCH_DIR / "playbook.yaml"
ANSIBLE_PLAYBOOK = BENCH_DIR / "ansible" / "drain.yml"
GROUP = "fleet"
OLD_VERSION = "1"
NEW_VERSION = "2"
RUN_DEADLINE = 600.0  # a run that takes longer than this is hung, not slow
REAP_DEADLINE = 30.0  # for the nodes' sshd to reap their sessions after a run
FLOOR = BENCH_DIR / "floor.py"
# sshd logs one such line for each connection that logged in,
_ACCEPTED = re.compile(rb"^Accepted publickey for ", re.MULTILINE)
# and (at LogLevel DEBUG, which the bench's nodes run with) one for each command run.
_EXEC = re.compile(rb"server_input_channel_req: channel \d+ request exec ", re.MULTILINE)


@dataclass(frozen=True)
class Scenario:
    """What one benchmark run does."""

    nodes: int
    mode: str  # parallel: max_unavailable = nodes; sequential: 1
    sessions: int  # live sessions per node when the run starts
    drain: float  # the last of them ends this many seconds after the start
    poll: float | None = None  # overrides the playbook's drain.poll
    settle: int | None = None  # overrides the playbook's drain.settle

    @property
    def max_unavailable(self) -> int:
        """How many nodes may be out of service at once."""
        return self.nodes if self.mode == "parallel" else 1

    def session_ends(self, start: float) -> list[float]:
        """A node's session end times (epoch), evenly spread up to ``start + drain``."""
        return [start + self.drain * (i + 1) / self.sessions for i in range(self.sessions)]


@dataclass(frozen=True)
class Measured:
    """One finished process: how long, how much CPU and memory, what it printed."""

    wall: float
    cpu: float  # user + system, its own and its reaped children's
    peak_rss_mb: float
    exit_code: int
    stdout: str
    stderr: str


@dataclass
class Figures:
    """What one tool's run on the fleet cost."""

    tool: str
    wall: float
    intrinsic: float
    cpu: float
    peak_rss_mb: float
    node_cpu: float
    accepted_per_node: list[int]  # sshd's count
    commands_per_node: list[int] = field(default_factory=list)  # sshd's count of exec requests
    reported_per_node: list[int] = field(default_factory=list)  # the tool's own, if it says
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """Wall time beyond the intrinsic drain time."""
        return self.wall - self.intrinsic

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON data."""
        return asdict(self) | {"overhead": self.overhead}


def measure(argv: Sequence[str], env: dict[str, str], timeout: float = RUN_DEADLINE) -> Measured:
    """Run ``argv`` to the end; its rusage comes from wait4() on it alone, not on our other
    children (the lab's servers)."""
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
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Measured(
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
            exit_code=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


class BenchFleet:
    """A lab of N sshd nodes whose shell-only service is files in each node's ``node_dir``."""

    def __init__(self, workdir: Path, nodes: int) -> None:
        self.workdir = workdir
        self.lab = Lab(workdir / "lab", nodes)
        self._home: SshHome | None = None

    def start(self) -> None:
        """Start every sshd and make a HOME whose known_hosts trusts them."""
        self.lab.start()
        self._home = self.lab.ssh_home(self.workdir / "home")

    def stop(self) -> None:
        """Stop every server the lab started."""
        self.lab.stop()

    @property
    def home(self) -> SshHome:
        """HOME with the lab's known_hosts, and an environment (no ssh-agent) that uses it."""
        if self._home is None:
            raise RuntimeError("the fleet was never started")
        return self._home

    def reset(self, session_ends: list[float]) -> None:
        """Every node back to the old version, unblocked, unlocked, with these live sessions."""
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
        return self._logged(_ACCEPTED)

    def commands(self) -> list[int]:
        """How many commands each node's sshd has been asked to run so far."""
        return self._logged(_EXEC)

    def _logged(self, line: re.Pattern[bytes]) -> list[int]:
        return [
            len(line.findall(node.ssh.process.log_path.read_bytes())) for node in self.lab.nodes
        ]

    def node_cpu(self) -> float:
        """CPU seconds that every node's sshd, and all it ran, has used so far.

        Waits for the sessions to end first: a process's time reaches its parent when reaped.
        """

        def reaped() -> bool:
            return all(len(node.ssh.pids()) <= 1 for node in self.lab.nodes)

        wait_for(reaped, REAP_DEADLINE, interval=0.02, what="the nodes' SSH sessions to end")
        ticks = 0
        for node in self.lab.nodes:
            stat = Path(f"/proc/{node.ssh.process.pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

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
        return self._write("inventory.yaml", inventory)

    def write_ansible_inventory(self) -> Path:
        """The same nodes for ansible-playbook (its `raw` module needs no Python on them).

        OpenSSH finds ~/.ssh by the passwd entry, not $HOME, so known_hosts is named here.
        """
        hosts = {
            node.name: {
                "ansible_host": node.ssh.host,
                "ansible_port": node.ssh.port,
                "node_dir": str(node.node_dir),
            }
            for node in self.lab.nodes
        }
        connection = {
            "ansible_user": self.lab.user,
            "ansible_ssh_private_key_file": str(self.lab.identity_file),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.home.known_hosts}",
        }
        return self._write("ansible-inventory.yaml", {GROUP: {"hosts": hosts, "vars": connection}})

    def _write(self, name: str, document: dict[str, Any]) -> Path:
        path = self.workdir / name
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path


@dataclass(frozen=True)
class FleetRun:
    """A measured run and what the nodes saw of it."""

    measured: Measured
    accepted_per_node: list[int]
    commands_per_node: list[int]
    node_cpu: float
    spawned: float  # epoch seconds
    intrinsic: float  # from the spawn to the last session's end: no tool can beat it

    def figures(self, tool: str, **reported: Any) -> Figures:
        """What this run cost, as ``tool``'s figures (with what the tool itself reported)."""
        return Figures(
            tool=tool,
            wall=self.measured.wall,
            intrinsic=self.intrinsic,
            cpu=self.measured.cpu,
            peak_rss_mb=self.measured.peak_rss_mb,
            node_cpu=self.node_cpu,
            accepted_per_node=self.accepted_per_node,
            commands_per_node=self.commands_per_node,
            **reported,
        )


def run_on_fleet(
    fleet: BenchFleet, scenario: Scenario, argv: Sequence[str], env: dict[str, str], tool: str
) -> FleetRun:
    """Reset the nodes, run ``argv`` measured, and check that it upgraded every node."""
    accepted_before, node_cpu_before = fleet.accepted(), fleet.node_cpu()
    commands_before = fleet.commands()
    ends = scenario.session_ends(time.time())
    fleet.reset(ends)
    spawned = time.time()
    try:
        measured = measure(argv, env)
    finally:
        _close_ssh_masters(Path(env["HOME"]) / ".ansible" / "cp", env)
    if measured.exit_code != 0:
        raise RuntimeError(
            f"{tool} exited {measured.exit_code}:\n{measured.stderr[-3000:]}\n{measured.stdout[-3000:]}"
        )
    stale = [v for v in fleet.versions() if v != NEW_VERSION]
    if stale:
        raise RuntimeError(f"{tool} exited 0 but left {len(stale)} nodes not upgraded")
    node_cpu = fleet.node_cpu() - node_cpu_before  # waits for sshd to reap (and log) it all
    accepted = [a - b for a, b in zip(fleet.accepted(), accepted_before, strict=True)]
    commands = [a - b for a, b in zip(fleet.commands(), commands_before, strict=True)]
    intrinsic = max(max(ends, default=spawned) - spawned, 0.0)
    return FleetRun(measured, accepted, commands, node_cpu, spawned, intrinsic)


def _close_ssh_masters(control_dir: Path, env: dict[str, str]) -> None:
    """OpenSSH ControlMasters (Ansible's) outlive the run by ControlPersist: ask each to exit."""
    if not control_dir.is_dir():
        return
    for control_path in control_dir.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={control_path}", "-O", "exit", "bench-node"],
            env=env,
            capture_output=True,
            check=False,
            timeout=10,
        )


def bench_playbook(workdir: Path, scenario: Scenario) -> Path:
    """bench/playbook.yaml, or a copy of it with the scenario's drain.poll and drain.settle."""
    overrides = {"poll": scenario.poll, "settle": scenario.settle}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if not overrides:
        return PLAYBOOK
    playbook = yaml.safe_load(PLAYBOOK.read_text())
    playbook["drain"].update(overrides)
    path = workdir / "playbook.yaml"
    path.write_text(yaml.safe_dump(playbook, sort_keys=False))
    return path


def run_upgradectl(
    fleet: BenchFleet, scenario: Scenario, number: int, wrap: Sequence[str] = ()
) -> Figures:
    """`upgradectl upgrade --all` on the fleet, under ``wrap`` (a profiler) if given."""
    inventory = fleet.write_inventory(scenario, bench_playbook(fleet.workdir, scenario))
    state_dir = fleet.workdir / f"state-{number}"  # a fresh journal: no earlier runs to read
    argv = [
        *wrap, sys.executable, "-m", "upgradectl", "-i", str(inventory),
        "--state-dir", str(state_dir), "--json", "upgrade", "--all", "--version", NEW_VERSION, "--yes",
    ]  # fmt: skip
    ran = run_on_fleet(fleet, scenario, argv, fleet.home.env, "upgradectl")
    events = [json.loads(line) for line in ran.measured.stdout.splitlines() if line.startswith("{")]
    summary = next(event for event in events if event["event"] == "summary")
    return ran.figures(
        "upgradectl",
        reported_per_node=[summary["connections"].get(n.name, 0) for n in fleet.lab.nodes],
        phases=phases(events, ran.spawned, ran.spawned + ran.measured.wall),
    )


def phases(events: list[dict[str, Any]], spawned: float, exited: float) -> dict[str, float]:
    """Where the wall time went, from the events' own timestamps (milliseconds)."""

    def times(kind: str) -> list[float]:
        return [float(event["time"]) for event in events if event["event"] == kind]

    marks = {
        "start-up": min(times("run-start")),  # interpreter, imports, inventory, plan
        "probe": min(times("node-start")),  # connecting, asking every node how it is
        "nodes": max(times("node-done")),
        "exit": exited,  # closing connections, the summary
    }
    spent, previous = {}, spawned
    for name, mark in marks.items():
        spent[name] = max(mark - previous, 0.0)
        previous = max(mark, previous)
    return spent


def run_ansible(fleet: BenchFleet, scenario: Scenario) -> Figures:
    """bench/ansible/drain.yml on the same fleet with forks = N."""
    poll = scenario.poll or parse_duration(yaml.safe_load(PLAYBOOK.read_text())["drain"]["poll"])
    extra_vars = {
        "version": NEW_VERSION,
        "batch": scenario.max_unavailable,
        "poll_delay": max(1, round(poll)),  # Ansible's `delay` takes whole seconds only
    }
    argv = [
        "ansible-playbook", "-i", str(fleet.write_ansible_inventory()),
        "-f", str(scenario.nodes), "-e", json.dumps(extra_vars), str(ANSIBLE_PLAYBOOK),
    ]  # fmt: skip
    env = {**fleet.home.env, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    ran = run_on_fleet(fleet, scenario, argv, env, "ansible-playbook")
    return ran.figures(f"ansible-playbook (raw, forks {scenario.nodes})")


def run_floor(fleet: BenchFleet, scenario: Scenario) -> Figures:
    """bench/floor.py, bare paramiko, on the same fleet: the same six commands per node."""
    inventory = fleet.write_inventory(scenario, PLAYBOOK)
    argv = [sys.executable, str(FLOOR), str(inventory), str(fleet.home.known_hosts)]
    if scenario.mode == "sequential":
        argv.append("--sequential")
    ran = run_on_fleet(fleet, scenario, argv, fleet.home.env, "floor")
    return ran.figures("floor (bare paramiko, 6 commands)")


def status_seconds(fleet: BenchFleet, scenario: Scenario, runs: int) -> tuple[float, float]:
    """The median wall time of `upgradectl status` on the whole fleet (after the runs), and the
    median of its CPU time (the controller's: the nodes' sshd work is not in it)."""
    inventory = fleet.write_inventory(scenario, PLAYBOOK)
    argv = [
        sys.executable, "-m", "upgradectl", "-i", str(inventory),
        "--state-dir", str(fleet.workdir / "state-1"), "--json", "status",
    ]  # fmt: skip
    walls, cpus = [], []
    for _ in range(runs):
        ran = measure(argv, fleet.home.env)
        if ran.exit_code != 0:
            raise RuntimeError(f"status exited {ran.exit_code}:\n{ran.stderr[-3000:]}")
        walls.append(ran.wall)
        cpus.append(ran.cpu)
    return float(statistics.median(walls)), float(statistics.median(cpus))


def help_seconds(runs: int) -> float:
    """The median wall time of `upgradectl --help` (the console script beside this Python)."""
    script = Path(sys.executable).with_name("upgradectl")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "upgradectl"]
    env = dict(os.environ)
    return float(statistics.median(measure([*argv, "--help"], env).wall for _ in range(runs)))


def _per_node(counts: list[int]) -> str:
    low, high = min(counts), max(counts)
    return f"{low} per node" if low == high else f"{low} to {high} per node"


def report(figures: Figures) -> str:
    """The figures of one run, for people."""
    connections = f"{_per_node(figures.accepted_per_node)} (sshd's log)"
    if figures.reported_per_node:
        connections += f"; {_per_node(figures.reported_per_node)} (run summary)"
    lines = [
        f"{figures.tool}:",
        f"  wall            {figures.wall:7.2f} s",
        f"  intrinsic drain {figures.intrinsic:7.2f} s  (the last session's end)",
        f"  overhead        {figures.overhead:7.2f} s",
        f"  controller CPU  {figures.cpu:7.2f} s",
        f"  peak RSS        {figures.peak_rss_mb:7.1f} MB",
        f"  nodes' CPU      {figures.node_cpu:7.2f} s  (every sshd and what it ran; same cores)",
        f"  SSH connections {connections}",
    ]
    if figures.commands_per_node:
        lines.append(f"  commands        {_per_node(figures.commands_per_node)} (sshd's log)")
    if figures.phases:
        spent = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in figures.phases.items())
        lines.append(f"  phases          {spent}")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    found = {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "python": sys.version.split()[0],
        "openssh": ssh.stderr.strip(),
        "paramiko": package_version("paramiko"),
        "cryptography": package_version("cryptography"),
    }
    if shutil.which("ansible-playbook"):
        ansible = subprocess.run(
            ["ansible-playbook", "--version"], capture_output=True, text=True, check=False
        )
        found["ansible"] = ansible.stdout.partition("\n")[0]
    return found


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--nodes", type=int, default=50, help="sshd nodes to start (default 50)")
    add(
        "--mode",
        choices=("parallel", "sequential"),
        default="parallel",
        help="all nodes at once, or one after another (default parallel)",
    )
    add("--sessions", type=int, default=0, help="live sessions per node (default 0)")
    add(
        "--drain",
        type=float,
        default=3.0,
        help="seconds until each node's last session ends (default 3)",
    )
    add("--poll", type=float, help="override the playbook's drain.poll (seconds)")
    add("--settle", type=int, help="override the playbook's drain.settle")
    add("--repeat", type=int, default=1, help="upgradectl runs on the fleet (default 1)")
    add(
        "--ansible",
        choices=("auto", "no"),
        default="auto",
        help="also run bench/ansible/drain.yml when ansible-playbook exists (default auto)",
    )
    add(
        "--floor",
        choices=("yes", "no"),
        default="yes",
        help="also run bench/floor.py (bare paramiko) after each upgradectl run (default yes)",
    )
    add("--help-runs", type=int, default=5, help="`upgradectl --help` timings (default 5)")
    add("--json", metavar="FILE", type=Path, help="also write the figures as JSON to FILE")
    add("--workdir", type=Path, help="keep the lab's files, inventories and journals here")
    add(
        "--wrap",
        type=shlex.split,
        default=[],
        metavar="COMMAND",
        help="run the controller under COMMAND, e.g. --wrap 'py-spy record -o prof.svg --'",
    )
    args = parser.parse_args(argv)
    if min(args.nodes, args.repeat, args.help_runs) < 1 or args.sessions < 0 or args.drain <= 0:
        parser.error("--nodes, --repeat, --help-runs: at least 1; --sessions: at least 0")
    return args


def _raise_descriptor_limit() -> None:
    """A socket per node, and the fleet's log files: as many descriptors as allowed (the
    controller, Ansible and the floor inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _byte_compile_upgradectl() -> None:
    """upgradectl's modules byte-compiled, as `pip install .` leaves them: an editable install
    under PYTHONDONTWRITEBYTECODE=1 (some sandboxes set it) compiles them all again at each run,
    about 60 ms of the controller's CPU that the floor's libraries, compiled when installed,
    never pay."""
    compileall.compile_dir(Path(upgradectl.__file__).parent, quiet=1)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so a SIGTERM stops the fleet too


def main(argv: Sequence[str] | None = None) -> int:
    """Start the fleet, run the tools on it, print the figures, stop the fleet."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    _raise_descriptor_limit()
    _byte_compile_upgradectl()
    SshServer.log_level = "DEBUG"  # sshd then logs each command it runs: they are counted
    scenario = Scenario(args.nodes, args.mode, args.sessions, args.drain, args.poll, args.settle)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="upgradectl-bench-"))
    fleet = BenchFleet(workdir, args.nodes)
    started = time.monotonic()
    try:
        fleet.start()
        sessions = f", ending within {args.drain:g} s" if args.sessions else ""
        print(
            f"{args.nodes} sshd nodes up in {time.monotonic() - started:.1f} s; {args.mode}"
            f" (max_unavailable {scenario.max_unavailable}); {args.sessions} sessions per node"
            + sessions
        )
        runs, floors = [], []
        for number in range(1, args.repeat + 1):
            # Interleaved, so that both see the same load of a shared machine.
            runs.append(run_upgradectl(fleet, scenario, number, args.wrap))
            print(report(runs[-1]))
            if args.floor == "yes" and not args.wrap:
                floors.append(run_floor(fleet, scenario))
                print(report(floors[-1]))
        status, status_cpu = status_seconds(fleet, scenario, args.help_runs)
        print(
            f"upgradectl status on {args.nodes} nodes: {status:.2f} s, controller CPU "
            f"{status_cpu:.2f} s (medians of {args.help_runs}; load average {os.getloadavg()[0]:.1f})"
        )
        ansible = None
        if args.ansible == "auto" and shutil.which("ansible-playbook"):
            ansible = run_ansible(fleet, scenario)
            print(report(ansible))
    finally:
        fleet.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    median = statistics.median(figures.wall for figures in runs)
    print(f"upgradectl wall, median of {args.repeat}: {median:.2f} s")
    floor = statistics.median(figures.wall for figures in floors) if floors else None
    if floor is not None:
        print(f"floor wall, median of {len(floors)}: {floor:.2f} s")
        print(f"ratio upgradectl / floor wall: {median / floor:.2f}x")
    if ansible is not None:
        print(f"ratio ansible-playbook / upgradectl wall: {ansible.wall / median:.1f}x")
    help_time = help_seconds(args.help_runs)
    print(f"upgradectl --help: {help_time:.3f} s (median of {args.help_runs})")
    if args.json:
        results = {
            "scenario": asdict(scenario),
            "machine": machine(),
            "help_seconds": help_time,
            "status_seconds": status,
            "status_cpu_seconds": status_cpu,
            "upgradectl": [figures.as_dict() for figures in runs],
            "ansible": ansible.as_dict() if ansible else None,
            "floor": [figures.as_dict() for figures in floors],
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
