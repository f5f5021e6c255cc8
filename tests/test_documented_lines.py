"""Every command line written in README.md, docs/**/*.md and the `--help` epilogs is run, so a
documented line can never fail again.

Lines are taken from fenced code blocks (in a block of `$ ` prompts, only the prompted lines),
the cron line and the systemd `ExecStart=`, inline code spans in prose (placeholders such as
NODE and RUN_ID filled in; a span that only names a command, `upgradectl upgrade`, is a mention,
not a line), and every command's epilog (upgradectl's and the lab's). Each runs with `bash -c`, standard input a terminal with "y" typed ahead (as an operator
at a terminal would answer), against:

- docs/lab.md: a real lab (four sshd nodes behind HAProxy, started by the test);
- docs/ansible.md: the INI inventory written on that page, with Ansible's own
  `ansible-inventory` (a test dependency);
- everything else: a site on this machine (`transport: local`) whose inventory names every node
  and group the documents use, served by the files playbook of conftest.py.

Lines that need real infrastructure get a substitution, each listed in SUBSTITUTIONS with its
reason; nothing is skipped. A line must exit 0 unless EXPECTED says what else it documents.
"""

from __future__ import annotations

import datetime
import http.server
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import PLAYBOOK, LabFactory, wait_for

from upgradectl.cli.commands import cli
from upgradectl.lab import Lab
from upgradectl.lab.__main__ import main as lab_cli
from upgradectl.lab.callserver import NodeConfig, write_configs
from upgradectl.lab.ports import free_ports, free_range

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BIN = Path(sys.executable).parent

# What starts a command line (after an optional `$ ` prompt and VAR=value words).
_COMMAND = re.compile(
    r"^(?:\S+=\S+\s+)*(?:upgradectl\b(?!_)|python3? -m upgradectl|ansible-inventory|pip install|"
    r"bash |eval |export |echo \S+ \| python|python3? -c )"
)
_CRON = re.compile(r"^(?:\S+\s+){5}(upgradectl .*)$")
_EXEC_START = re.compile(r"^ExecStart=(.*upgradectl .*)$")
_RUN_ID = re.compile(r"\b\d{8}T\d{6}-[0-9a-f]{4}\b")


@dataclass(frozen=True)
class Line:
    """One documented command line and where it was written."""

    where: str
    text: str


def fenced_lines(path: Path) -> list[Line]:
    """The command lines of a Markdown file's code blocks (and its cron and systemd lines)."""
    found: list[Line] = []
    block: list[tuple[int, str]] = []
    inside = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            if inside:
                found += _block_commands(path, block)
            inside, block = not inside, []
        elif inside:
            block.append((number, line.strip()))
    return found


def _block_commands(path: Path, block: list[tuple[int, str]]) -> list[Line]:
    prompted = any(text.startswith("$ ") for _, text in block)
    found = []
    for number, text in block:
        if prompted and not text.startswith("$ "):
            continue  # a console session: the rest is output
        written = text.removeprefix("$ ")
        command = written.split("  #")[0].strip()  # a comment after two spaces is not typed
        for pattern in (_CRON, _EXEC_START):
            if match := pattern.match(command):
                command = match.group(1)
        if _COMMAND.match(command):
            found.append(Line(f"{path.relative_to(ROOT)}:{number}", command))
    return found


# Inline spans that name a command rather than give a line to type: a subcommand with nothing to
# act on, a bare option, the module.
_MENTION = re.compile(
    r"^(upgradectl( -v| --help| (upgrade|drain|patch|unblock|status|resume|history))?|python -m upgradectl)$"
)


def inline_lines(path: Path) -> list[Line]:
    """The command lines written inline in prose (`upgradectl status node-a`), placeholders and
    all (NODE, V, RUN_ID, HOST:PORT), leaving out the spans that merely name a command."""
    text = re.sub(
        r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), path.read_text(), flags=re.S
    )
    found = []
    for match in re.finditer(r"`((?:upgradectl |python -m upgradectl)[^`]*)`", text):
        command = re.sub(r"\s+", " ", match.group(1)).strip()
        if command.startswith("upgradectl_") or _MENTION.match(command):
            continue
        number = text.count("\n", 0, match.start()) + 1
        found.append(Line(f"{path.relative_to(ROOT)}:{number}", command))
    return found


def epilog_lines() -> list[Line]:
    """Every example line of every `--help` epilog, upgradectl's and the lab's."""
    found = []
    for group, name in ((cli, "upgradectl"), (lab_cli, "python -m upgradectl.lab")):
        commands = [(name, group), *((f"{name} {c}", cmd) for c, cmd in group.commands.items())]
        for label, command in commands:
            for text in (command.epilog or "").splitlines():
                example = text.strip().removeprefix("Example: ")
                if _COMMAND.match(example):
                    found.append(Line(f"`{label} --help`", example))
    return found


def test_the_extraction_finds_the_lines_it_must() -> None:
    lines = [line.text for path in DOCUMENTS for line in fenced_lines(path)] + [
        line.text for line in epilog_lines()
    ]
    assert "upgradectl check" in lines
    assert any(
        text.startswith("upgradectl -i /etc/upgradectl/inventory.yaml upgrade") for text in lines
    )
    assert "upgradectl drain pbx-1 --timeout 30m --stragglers abort --yes" in lines
    assert "upgradectl -i prod.yaml check --strict" in lines  # an epilog
    assert not any(text.startswith("upgradectl drain 2026") for text in lines)  # output, not input
    assert len(lines) > 60


# --- substitutions ---------------------------------------------------------------------------


@dataclass
class Context:
    """Where the lines of one document run, and what their substitutions need."""

    cwd: Path
    env: dict[str, str]
    inventory: Path
    state_dir: Path
    notify_url: str = ""
    calls_port: int = 0
    lab_dir: Path | None = None
    real_playbooks: bool = False  # the lab runs them; `plan` on the Ansible page connects nowhere
    foreground: list[subprocess.Popen[str]] = field(default_factory=list)

    def newest_run(self) -> str:
        runs = sorted((self.state_dir / "runs").glob("*.jsonl"))
        assert runs, "no run in the state dir yet"
        return runs[-1].stem


def _open_window(match: re.Match[str], line: str) -> str:
    zone = re.search(r"--tz (\S+)", line)
    now = datetime.datetime.now(zoneinfo.ZoneInfo(zone.group(1)) if zone else None)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(hours=2)
    return f"--window {start:%H:%M}-{end:%H:%M}"


# (pattern, replacement, why): applied in order to every line. A replacement is text, or a
# function of the match, the whole line and the context.
Replacement = str | Callable[[re.Match[str], str, Context], str]
SUBSTITUTIONS: list[tuple[str, Replacement, str]] = [
    (r"^pip install \. && ", "", "the package is installed already (editable) by the test run"),
    (r"^bash \.ci/run$", f"bash -n {ROOT}/.ci/run", "CI runs this suite itself: the script is checked, not re-run"),
    (r"-i (?:/etc/upgradectl/inventory\.yaml|prod\.yaml)", lambda m, whole, c: f"-i {c.inventory}",
     "a production inventory: the test's own, naming the same nodes and groups"),
    (r"--playbook (haproxy|kamailio|freeswitch|asterisk|systemd|erlang|erlang-release|rabbitmq|ejabberd)\b",
     lambda m, whole, c: m.group(0) if c.real_playbooks else f"--playbook {c.cwd / 'files.yaml'}",
     "a bundled playbook needs its real service; each has its own test against it"),
    (r"\$\(cat /etc/upgradectl/target-version\)", "2.4.1", "the version file of a production host"),
    (r"/usr/local/bin/upgradectl", str(BIN / "upgradectl"), "installed in the test's venv"),
    (r"/var/lib/(\S+)", lambda m, whole, c: _made_dir_for(c.cwd / "var" / m.group(1)),
     "system paths (their directories exist on a host): under the test's dir"),
    (r"https://hooks\.example\.net/\S*", lambda m, whole, c: c.notify_url, "a webhook: a local HTTP server (no DNS)"),
    (r"--window \d\d:\d\d-\d\d:\d\d", lambda m, whole, c: _open_window(m, whole), "a night window: one open now"),
    (r"--base-port \d+", lambda m, whole, c: f"--base-port {free_range(32)}", "port 20000 may be taken here"),
    (r"--dir /tmp/lab\b", lambda m, whole, c: f"--dir {c.cwd / 'lab-up'}", "/tmp/lab may be another's"),
    (r"127\.0\.0\.1:(PORT|20000)", lambda m, whole, c: f"127.0.0.1:{c.calls_port}", "the lab's HAProxy port"),
    (r" PORT$", lambda m, whole, c: f" {c.calls_port}", "the lab's HAProxy port"),
    (r"/tmp/lab/node-1/ctl\.sock", lambda m, whole, c: str(_lab_socket(c)), "the test lab's node-1"),
    (r"/tmp/lab/callserver\.json", lambda m, whole, c: str(c.cwd / "callserver.json"), "a call server of its own"),
    (r"^export HOME=/tmp/lab/home .*$", lambda m, whole, c: _export_lab(c), "the test's lab, not /tmp/lab"),
    (r"\$\{TARGET_VERSION\}", "2.4.1", "systemd's EnvironmentFile"),
    (_RUN_ID.pattern, lambda m, whole, c: c.newest_run(), "a run id: the newest run of the state dir"),
    (r"--html run\.html", lambda m, whole, c: f"--html {c.cwd / 'run.html'}", "written in the test's dir"),
    (r"\bNODE\b", lambda m, whole, c: "node-1" if c.lab_dir else "node-a", "a placeholder: a node of the inventory"),
    (r"--version V\b", "--version 2.4.1", "a placeholder: a version"),
    (r"\bRUN_ID\b", lambda m, whole, c: c.newest_run(), "a placeholder: the newest run"),
    (r"\bHOST:PORT\b", lambda m, whole, c: f"127.0.0.1:{c.calls_port or 1}", "a placeholder: where calls go"),
]  # fmt: skip
# Commands that stay in the foreground until Ctrl-C: started, awaited until they say this, then
# stopped with SIGTERM (they must then exit 0).
FOREGROUND = {
    "python -m upgradectl.lab up": "Ctrl-C stops the lab.",
    "python -m upgradectl.lab calls": "placing calls",
    "python -m upgradectl.lab callserver": None,  # says nothing: ready when its socket exists
}
# Lines whose documented outcome is not exit 0.
EXPECTED: dict[str, int] = {}


def _made_dir_for(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def _lab_socket(context: Context) -> Path:
    assert context.lab_dir is not None
    inventory = yaml.safe_load(context.inventory.read_text())
    return Path(inventory["nodes"]["node-1"]["vars"]["ctl_socket"])


def _export_lab(context: Context) -> str:
    return (
        f"export UPGRADECTL_INVENTORY={context.inventory} UPGRADECTL_STATE_DIR={context.state_dir}"
    )


def substituted(line: str, context: Context) -> str:
    """``line`` with every substitution applied."""
    for pattern, replacement, _why in SUBSTITUTIONS:
        line = re.sub(pattern, _replacer(replacement, line, context), line)
    return re.sub(r"\s+", " ", line).strip()


def _replacer(
    replacement: Replacement, line: str, context: Context
) -> str | Callable[[re.Match[str]], str]:
    if isinstance(replacement, str):
        return replacement
    return lambda match: replacement(match, line, context)


# --- running ----------------------------------------------------------------------------------


def run_line(line: Line, context: Context) -> None:
    """Run one documented line in ``context``; fail naming it when it does not do what it says."""
    command = substituted(line.text, context)
    if command.startswith("export "):
        for word in shlex.split(command)[1:]:
            key, _, value = word.partition("=")
            context.env[key] = value
        return
    words = " ".join(command.split()[:4])  # `lab calls` is not `lab callserver`
    foreground = next((ready for start, ready in FOREGROUND.items() if words == start), "")
    if foreground != "":
        _run_foreground(line, command, foreground, context)
        return
    controller, terminal = os.openpty()
    os.write(controller, b"y\n")  # typed ahead, as an operator at the terminal would answer
    try:
        done = subprocess.run(
            [*_shell(command), command], cwd=context.cwd, env=context.env, stdin=terminal,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)
    expected = EXPECTED.get(line.text, 0)
    assert done.returncode == expected, (
        f"{line.where}: {line.text}\n  ran: {command}\n  exit {done.returncode}, documented "
        f"{expected}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    assert "Traceback" not in done.stderr, f"{line.where}: {line.text}\n{done.stderr}"


def _shell(command: str) -> list[str]:
    """The shell a line is written for: zsh and fish completion lines run in their own."""
    if "zsh_source" in command:
        return ["zsh", "-c", 'autoload -Uz compinit && compinit -u; eval "$0"']
    if "fish_source" in command:
        return ["fish", "-c"]
    return ["bash", "-c"]


def _run_foreground(line: Line, command: str, ready: str | None, context: Context) -> None:
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=context.cwd, env=context.env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    said = ""
    try:
        if ready is None:
            wait_for((context.cwd / "cs" / "ctl.sock").exists, timeout=20, what=command)
        else:
            assert process.stdout is not None
            deadline = time.monotonic() + 60
            while ready not in said and time.monotonic() < deadline:
                if select.select([process.stdout], [], [], 1.0)[0]:
                    chunk = os.read(process.stdout.fileno(), 65536)  # unbuffered: select tells
                    if not chunk:
                        break
                    said += chunk.decode(errors="replace")
            assert ready in said, f"{line.where}: {line.text}\n  ran: {command}\n{said}"
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, (
        f"{line.where}: {line.text}\n  ran: {command}\n  exit {process.returncode}\n"
        f"{errors.decode(errors='replace')}"
    )


@pytest.fixture
def webhook() -> Iterator[str]:
    """A local HTTP server that accepts `--notify` posts; its URL."""

    class Accept(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/upgradectl"
    server.shutdown()
    server.server_close()


SITE_NODES = {
    "voice": ["node-a", "node-b", "cs-1", "cs-2", "pbx-1", "pbx-2", "gw-1"],
    "media": ["fs-1", "fs-2"],
    "erlang": ["erl-1", "rel-1", "rmq-1", "rmq-2", "xmpp-1", "xmpp-2"],
}
# `version` has a default, as bundled playbooks that install the newest package have (kamailio).
FULL_PLAYBOOK = PLAYBOOK.replace("name: files\n", "name: files\nvars: {version: newest}\n") + (
    '  sessions: "ls {{ dir }}/sessions"\n'
    '  force: "rm -f {{ dir }}/sessions/*"\n'
    '  version: "cat {{ dir }}/version 2>/dev/null || echo 1.0"\n'
    '  patch: "echo {{ version | quote }} > {{ dir }}/version"\n'
    '  rollback: "true"\n'
)


def local_site(directory: Path, webhook_url: str) -> Context:
    """A site on this machine naming every node and group the documents use."""
    work = directory / "work"
    (work / "sessions").mkdir(parents=True)
    # Every value quoted, so that `check --strict` (an epilog's line) passes on the site.
    (directory / "files.yaml").write_text(FULL_PLAYBOOK.replace("{{ dir }}", "{{ dir | quote }}"))
    nodes: dict[str, object] = {"lb-1": {"playbook": None}}
    for group, members in SITE_NODES.items():
        for name in members:
            nodes[name] = {"groups": [group], "vars": {"dir": str(work / name)}}
            (work / name / "sessions").mkdir(parents=True)
    nodes["node-a"] = {**nodes["node-a"], "pair": "node-b"}  # type: ignore[dict-item]
    nodes["node-b"] = {**nodes["node-b"], "pair": "node-a"}  # type: ignore[dict-item]
    inventory = directory / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({
        "defaults": {"transport": "local", "playbook": "./files.yaml", "vars": {"lb_host": "lb-1"}},
        "groups": {group: {"max_unavailable": 1} for group in SITE_NODES},
        "nodes": nodes,
    }))  # fmt: skip
    return _context(directory, inventory, webhook_url)


def _context(directory: Path, inventory: Path, webhook_url: str) -> Context:
    home = directory / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    state = directory / "state"
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "UPGRADECTL_INVENTORY": str(inventory),
        "UPGRADECTL_STATE_DIR": str(state),
        "COLUMNS": "100",
    }
    env.pop("SSH_AUTH_SOCK", None)
    return Context(directory, env, inventory, state, notify_url=webhook_url)


def _seed_for(lines: list[Line], context: Context) -> None:
    """A finished run and an interrupted one, when a line reads past runs (history, a run id)
    or carries one on (resume); a page with none runs on the site as it is, and saves the
    seeds' two runs (a few seconds each)."""
    if any(re.search(r"\b(history|resume|RUN_ID)\b", line.text) or _RUN_ID.search(line.text)
           for line in lines):  # fmt: skip
        _seed_run(context)
        _seed_interrupted(context)


def _seed_run(context: Context) -> None:
    """One finished run, so that lines naming a run id have one to name."""
    subprocess.run(
        ["upgradectl", "upgrade", "node-a", "--version", "1.0", "--yes", "-q"],
        cwd=context.cwd, env=context.env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def _seed_interrupted(context: Context) -> None:
    """A drain interrupted by SIGTERM (exit 5), so that a bare `resume` has a run to carry on."""
    session = context.cwd / "work" / "node-b" / "sessions" / "call-1"
    session.write_text(str(int(time.time()) + 4))
    drain = subprocess.Popen(
        ["upgradectl", "--json", "drain", "node-b", "--yes"], cwd=context.cwd, env=context.env,
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert drain.stdout is not None
    for text in drain.stdout:
        if '"event": "blocked"' in text:
            drain.send_signal(signal.SIGTERM)
            break
    drain.communicate(timeout=60)
    assert drain.returncode == 5


LOCAL_DOCUMENTS = [path for path in DOCUMENTS if path.name not in ("lab.md", "ansible.md")]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", LOCAL_DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_line_of_a_document_runs(path: Path, tmp_path: Path, webhook: str) -> None:
    context = local_site(tmp_path, webhook)
    lines = fenced_lines(path) + inline_lines(path)
    _seed_for(lines, context)
    for line in lines:
        run_line(line, context)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_help_epilog_line_runs(tmp_path: Path, webhook: str, lab_factory: LabFactory) -> None:
    context = local_site(tmp_path, webhook)
    _seed_for(epilog_lines(), context)
    lab = lab_factory(2, haproxy=True)
    lab_lines = [line for line in epilog_lines() if "upgradectl.lab" in line.text]
    for line in epilog_lines():
        if line not in lab_lines:
            run_line(line, context)
    lab_context = _lab_context(lab, tmp_path / "lab-side", webhook)
    for line in lab_lines:
        run_line(line, lab_context)


def _lab_context(lab: Lab, directory: Path, webhook_url: str) -> Context:
    directory.mkdir()
    context = _context(directory, lab.inventory_path, webhook_url)
    lab.write_home(Path(context.env["HOME"]))
    assert lab.haproxy is not None
    context.calls_port = lab.haproxy.port
    context.lab_dir = lab.dir
    context.real_playbooks = True
    (directory / "cs").mkdir()
    config = NodeConfig(
        "cs", free_ports(1)[0], directory / "cs" / "ctl.sock", directory / "cs" / "state", "1.0"
    )
    write_configs(directory / "callserver.json", [config])
    return context


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_line_of_the_lab_page_runs_against_a_lab(
    tmp_path: Path, webhook: str, lab_factory: LabFactory
) -> None:
    lab = lab_factory(4, haproxy=True)
    context = _lab_context(lab, tmp_path / "side", webhook)
    for line in fenced_lines(ROOT / "docs" / "lab.md") + inline_lines(ROOT / "docs" / "lab.md"):
        run_line(line, context)


def test_every_line_of_the_ansible_page_runs_on_its_own_inventory(
    tmp_path: Path, webhook: str
) -> None:
    page = (ROOT / "docs" / "ansible.md").read_text()
    ini = re.search(r"```ini\n(.*?)```", page, re.DOTALL)
    assert ini is not None
    (tmp_path / "hosts.ini").write_text(ini.group(1))
    context = _context(tmp_path, tmp_path / "hosts.ini", webhook)
    context.env["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    context.real_playbooks = True
    page_lines = fenced_lines(ROOT / "docs" / "ansible.md") + inline_lines(
        ROOT / "docs" / "ansible.md"
    )
    for line in page_lines:
        run_line(line, context)
