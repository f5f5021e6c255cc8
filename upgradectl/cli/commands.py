"""The commands: parse, call the core (``app``, ``status``, ``checkup``, ``history``), render.

No paramiko import here.

Exceptions become exit codes in one place, :func:`main`; :func:`run` is how a process of its
own (the console script, ``python -m upgradectl``) calls it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

from upgradectl.cli.globalopts import hoist
from upgradectl.cli.options import (
    acting_options,
    drain_options,
    fleet_options,
    nodes_argument,
    plan_options,
    selection_options,
    unattended_options,
    yes_option,
)
from upgradectl.errors import ExitCode, UpgradectlError, exit_code_for

if TYPE_CHECKING:
    from upgradectl.app import RunOptions
    from upgradectl.context import Stop
    from upgradectl.plan import Plan, PlanOptions
    from upgradectl.settings import Selection, Settings


@dataclass
class Cli:
    """The global options, as every command sees them."""

    inventory: str
    state_dir: str
    as_json: bool
    verbosity: int
    accept_new_host_keys: bool

    def settings(self) -> Settings:
        from upgradectl.settings import Settings  # noqa: PLC0415 - keep --help fast

        return Settings(self.inventory, self.state_dir, self.accept_new_host_keys)


EPILOG = """\b
Examples:
  upgradectl plan node-a --version 2.4.1
  upgradectl drain node-a --dry-run
  upgradectl upgrade node-a node-b --version 2.4.1 --yes
  upgradectl status
"""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.option(
    "-i", "--inventory", metavar="FILE", envvar="UPGRADECTL_INVENTORY", default="inventory.yaml",
    show_default=True, help="The inventory (else $UPGRADECTL_INVENTORY).",
)  # fmt: skip
@click.option(
    "--state-dir", metavar="DIR", envvar="UPGRADECTL_STATE_DIR", help="Where the journal lives."
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per event, and a final summary."
)
@click.option("-v", "--verbose", count=True, help="Show every command and its output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings, failures and the summary.")
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="Add unknown SSH host keys to known_hosts (loudly).",
)
@click.version_option(
    package_name="upgradectl", prog_name="upgradectl", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(
    ctx: click.Context,
    inventory: str,
    state_dir: str | None,
    as_json: bool,
    verbose: int,
    quiet: bool,
    accept_new_host_keys: bool,
) -> None:
    """Upgrade nodes of long-session services without cutting anyone off.

    The plan for each node: block new sessions, wait for the live ones to end (with a
    deadline and a straggler policy), upgrade and verify, unblock.

    The options above may also be written after the command (`upgradectl upgrade node-a -q`).
    """
    from upgradectl.journal import default_state_dir  # noqa: PLC0415

    ctx.obj = Cli(
        inventory,
        state_dir or default_state_dir(),
        as_json,
        -1 if quiet else verbose,
        accept_new_host_keys,
    )


# --- reading commands -----------------------------------------------------------------------


@cli.command(
    epilog="\b\nExamples:\n  upgradectl plan node-a --version 2.4.1\n  upgradectl --json plan --group voice --version 2.4.1\n"
    "  upgradectl plan erl-1 --for patch --version 2"
)
@selection_options
@plan_options
@click.option(
    "--for",
    "command",
    type=click.Choice(["upgrade", "drain", "patch", "unblock"]),
    help="The command to plan [default: upgrade; patch for a playbook that can only patch].",
)
@click.pass_obj
def plan(
    obj: Cli,
    /,
    nodes: tuple[str, ...],
    group: str | None,
    everything: bool,
    command: str | None,
    **options: Any,
) -> int:
    """Show the rendered plan of a command (an upgrade by default); connects to nothing."""
    from upgradectl.cli import render  # noqa: PLC0415
    from upgradectl.plan import make_plan  # noqa: PLC0415

    selection = _selection(nodes, group, everything)
    made = make_plan(obj.settings(), command, selection, _plan_options(options))
    click.echo(render.plan_json(made) if obj.as_json else render.plan_text(made))
    return ExitCode.OK


@cli.command(
    epilog="\b\nExamples:\n  upgradectl -i prod.yaml check\n  upgradectl -i prod.yaml check --strict"
)
@click.option("--strict", is_flag=True, help="Warnings (such as an unquoted value) fail the check.")
@click.pass_obj
def check(obj: Cli, strict: bool) -> int:
    """Validate the inventory and every playbook it uses; warn on values put unquoted into a shell."""
    from upgradectl import checkup  # noqa: PLC0415

    report = checkup.check(obj.settings(), strict=strict)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for line in report.lines:
        click.echo(line)
    return ExitCode.OK


@cli.command(epilog="\b\nExample:\n  upgradectl playbooks")
def playbooks() -> int:
    """List the bundled playbooks."""
    from upgradectl import checkup  # noqa: PLC0415

    for name, description in checkup.bundled_descriptions().items():
        click.echo(f"{name:<12} {description}")
    return ExitCode.OK


@cli.command(
    epilog="\b\nExamples:\n  upgradectl status\n  upgradectl status node-a node-b --playbook haproxy"
)
@nodes_argument
@plan_options
@click.pass_obj
def status(obj: Cli, /, nodes: tuple[str, ...], **options: Any) -> int:
    """Live: blocked?, active sessions, version, lock holder; and unfinished runs."""
    from upgradectl.cli import render  # noqa: PLC0415
    from upgradectl.status import status_report  # noqa: PLC0415

    def show(row: dict[str, Any]) -> None:  # a person reads the first nodes while the rest connect
        if not obj.as_json:
            click.echo(render.status_row_text(row))

    report = status_report(obj.settings(), nodes, _plan_options(options), on_row=show)
    if obj.as_json:  # one document, once every node has answered
        click.echo(render.status_json(report))
    elif journal := render.status_journal_text(report):
        click.echo(journal)
    # Reading touches nothing: a node that cannot be asked is a failure, never "attention".
    return ExitCode.STEP_FAILED if report.unreachable else ExitCode.OK


@cli.command(
    epilog="\b\nExamples:\n  upgradectl history --limit 5\n  upgradectl history --forced\n"
    "  upgradectl history 20261125T020000-3fa1\n"
    "  upgradectl history 20261125T020000-3fa1 --html run.html"
)
@click.argument("run_id", required=False)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs."
)
@click.option("--forced", is_flag=True, help="Every session cut, for the helpdesk.")
@click.option(
    "--html",
    "html_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, writable=True),
    help="With RUN_ID: write the run as a self-contained web page (drain curves as SVG).",
)
@click.pass_obj
def history(obj: Cli, run_id: str | None, limit: int, forced: bool, html_file: str | None) -> int:
    """Past runs: who, when, what, how long, result; RUN_ID: one run with its drain curves."""
    from upgradectl.cli import render  # noqa: PLC0415
    from upgradectl.history import newest_runs  # noqa: PLC0415

    if run_id is not None:
        return _run_page(obj, run_id, html_file)
    if html_file is not None:
        raise click.UsageError("--html needs a RUN_ID (`upgradectl history` lists them)")
    runs = newest_runs(obj.state_dir, limit)
    if forced:
        click.echo(render.forced_json(runs) if obj.as_json else render.forced_text(runs))
    else:
        click.echo(render.history_json(runs) if obj.as_json else render.history_text(runs))
    return ExitCode.OK


def _run_page(obj: Cli, run_id: str, html_file: str | None) -> int:
    import shutil  # noqa: PLC0415

    from upgradectl import history  # noqa: PLC0415
    from upgradectl.cli import runpage  # noqa: PLC0415

    page = history.page(history.find(obj.state_dir, run_id))
    if html_file is not None:
        from upgradectl.cli.htmlpage import page_html  # noqa: PLC0415

        with open(html_file, "w", encoding="utf-8") as stream:
            stream.write(page_html(page))
        click.echo(f"wrote {html_file}", err=True)
        return ExitCode.OK
    if obj.as_json:
        click.echo(runpage.page_json(page))
    else:
        width = min(shutil.get_terminal_size().columns, 100)
        click.echo(runpage.page_text(page, width, color=sys.stdout.isatty()))
    return ExitCode.OK


# --- acting commands ------------------------------------------------------------------------


@cli.command(
    epilog="\b\nExamples:\n  upgradectl drain node-a --dry-run\n  upgradectl drain node-a --timeout 2h --stragglers abort"
)
@nodes_argument
@drain_options
@plan_options
@acting_options
@click.pass_obj
def drain(obj: Cli, /, nodes: tuple[str, ...], **options: Any) -> int:
    """Block and wait (straggler policy at the deadline); the node stays blocked."""
    return _act(obj, "drain", _selection(nodes, None, False), options)


@cli.command(
    epilog="\b\nExamples:\n  upgradectl upgrade node-a --version 2.4.1\n"
    "  upgradectl upgrade --group voice --version 2.4.1 --yes --dry-run\n"
    "  upgradectl upgrade --group voice --version 2.4.1 --window 02:00-05:00 --yes -q"
)
@selection_options
@drain_options
@fleet_options
@unattended_options
@plan_options
@acting_options
@click.option(
    "--allow-downgrade", is_flag=True, help="Install --version even where a node runs a newer one."
)
@click.pass_obj
def upgrade(
    obj: Cli, /, nodes: tuple[str, ...], group: str | None, everything: bool, **options: Any
) -> int:
    """The whole plan: block, wait, upgrade, verify, unblock. Carries on a node `drain` drained.

    On a terminal it asks after looking at the nodes (their order, live sessions, how many could
    be cut); without one it needs --yes. An older --version than a node runs is a downgrade: it
    needs --allow-downgrade, or a yes to the question.
    """
    return _act(obj, "upgrade", _selection(nodes, group, everything), options)


@cli.command(epilog="\b\nExample:\n  upgradectl patch node-a --version 2.4.1-hotfix1")
@nodes_argument
@plan_options
@acting_options
@click.pass_obj
def patch(obj: Cli, /, nodes: tuple[str, ...], **options: Any) -> int:
    """Hot patch: the playbook's `patch` step, then `verify`; no drain."""
    return _act(obj, "patch", _selection(nodes, None, False), options)


@cli.command(epilog="\b\nExample:\n  upgradectl unblock node-a")
@nodes_argument
@plan_options
@acting_options
@click.pass_obj
def unblock(obj: Cli, /, nodes: tuple[str, ...], **options: Any) -> int:
    """Verify, then unblock."""
    return _act(obj, "unblock", _selection(nodes, None, False), options)


@cli.command(epilog="\b\nExamples:\n  upgradectl resume\n  upgradectl resume 20261125T020000-3fa1")
@click.argument("run_id", required=False)
@yes_option
@click.pass_obj
def resume(obj: Cli, run_id: str | None, yes: bool) -> int:
    """Carry on an interrupted run from its journal."""
    from upgradectl import app  # noqa: PLC0415
    from upgradectl.cli import question  # noqa: PLC0415
    from upgradectl.closing import close_finished_run  # noqa: PLC0415

    settings = obj.settings()
    made, start_at, found = app.resume_plan(settings, run_id)
    if not start_at:
        if found.finished is not None:
            click.echo(f"run {made.run_id}: every node finished; nothing to resume")
            return ExitCode.OK
        released = close_finished_run(settings, found, made, "resume")
        if released is None:
            click.echo(
                f"run {made.run_id}: every node had finished, but it cannot be closed now "
                "(a run holds the run lock, or a node did not answer); try again",
                err=True,
            )
            return ExitCode.NOT_NOW
        locks = (  # what the nodes said: a lock removed, or none of this run's left there
            f"released the node locks it left on {', '.join(released)}"
            if released
            else "it had left no node lock to release"
        )
        click.echo(
            f"run {made.run_id}: every node had finished when its controller died; "
            f"closed it; {locks}"
        )
        return ExitCode.OK
    steps = ", ".join(f"{node} from {stage}" for node, stage in start_at.items())
    which = "" if run_id else " (the newest run left unfinished)"
    click.echo(f"resuming run {made.run_id}{which}: {steps}", err=True)
    ask = question.must_ask("resume", yes=yes, dry_run=False)
    return _execute(obj, made, app.RunOptions(break_lock=False), start_at, ask=ask)


def _act(obj: Cli, command: str, selection: Selection, options: dict[str, Any]) -> int:
    from upgradectl import app  # noqa: PLC0415
    from upgradectl.cli import question  # noqa: PLC0415
    from upgradectl.journal import new_run_id  # noqa: PLC0415
    from upgradectl.plan import make_plan  # noqa: PLC0415
    from upgradectl.unattended import parse_unattended  # noqa: PLC0415

    run = app.RunOptions(
        dry_run=options.pop("dry_run"),
        break_lock=options.pop("break_lock"),
        max_unavailable=options.pop("max_unavailable", None),
        max_failures=options.pop("max_failures", None),
        allow_downgrade=options.pop("allow_downgrade", False),
        unattended=parse_unattended(
            *(
                options.pop(key, None)
                for key in ("window", "tz", "report", "metrics_file", "notify")
            )
        ),
    )
    made = make_plan(obj.settings(), command, selection, _plan_options(options), new_run_id(_now()))
    ask = question.must_ask(command, yes=options.pop("yes"), dry_run=run.dry_run)
    return _execute(obj, made, run, None, ask=ask)


def _execute(
    obj: Cli, made: Plan, run: RunOptions, start_at: dict[str, str] | None, *, ask: bool
) -> int:
    from upgradectl import app  # noqa: PLC0415
    from upgradectl.cli import question, views  # noqa: PLC0415
    from upgradectl.context import Stop  # noqa: PLC0415
    from upgradectl.events import Events  # noqa: PLC0415

    stop = Stop()
    # The view is closed last, after the signal handlers are back, whichever way the run ends.
    with views.opened(obj.as_json, obj.verbosity) as view, _signals_stop(stop):
        if ask:  # after the probe, before the first block, with the view paused
            run.confirm = question.asker(view)
        summary = app.execute(obj.settings(), made, Events(view), stop, run, start_at)
    return int(summary.exit_code)


@contextmanager
def _signals_stop(stop: Stop) -> Iterator[None]:
    """Ctrl-C or SIGTERM asks the run to stop at its next safe point; a second Ctrl-C exits at once."""
    from upgradectl.cli import views  # noqa: PLC0415 - here, not in the handler: no import there

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.requested and signum == signal.SIGINT:
            views.show_cursor_now()  # os._exit unwinds nothing: no view gets to close
            os.write(
                2,
                b"upgradectl: second interrupt: exiting now; `upgradectl resume` carries the run on\n",
            )
            os._exit(ExitCode.INTERRUPTED)
        stop.request(name)
        os.write(
            2,
            f"upgradectl: {name}: stopping at the next safe point (Ctrl-C again to exit now)\n".encode(),
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _selection(nodes: tuple[str, ...], group: str | None, everything: bool) -> Selection:
    from upgradectl.settings import Selection  # noqa: PLC0415

    return Selection(nodes, group, everything)


def _plan_options(options: dict[str, Any]) -> PlanOptions:
    from upgradectl.duration import parse_duration  # noqa: PLC0415
    from upgradectl.errors import UsageError  # noqa: PLC0415
    from upgradectl.plan import PlanOptions, parse_var  # noqa: PLC0415

    timeout = options.get("timeout")
    try:
        seconds = parse_duration(timeout) if timeout else None
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    return PlanOptions(
        version=options.get("version"),
        extra_vars=dict(parse_var(text) for text in options.get("extra_vars", ())),
        playbook=options.get("playbook"),
        timeout=seconds,
        stragglers=options.get("stragglers"),
        max_stragglers=options.get("max_stragglers"),
    )


def _now() -> float:
    import time  # noqa: PLC0415

    return time.time()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command line; every error becomes its exit code here and only here."""
    args = hoist(cli, sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="upgradectl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        click.echo("upgradectl: aborted; nothing was done", err=True)
        code = ExitCode.STEP_FAILED
    except click.ClickException as exc:
        exc.show()
        code = ExitCode.USAGE
    except UpgradectlError as exc:
        click.echo(f"upgradectl: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt as exc:
        code = exit_code_for(exc)
    sys.exit(int(code or 0))


def run() -> NoReturn:
    """The console script and ``python -m upgradectl``: :func:`main`, then the process ends.

    By then the run has closed its journal, its files and its connections, and every thread
    left is a daemon; the interpreter's own teardown would only free every object one by one (a
    fleet's connections, every module): 0.1 s of a 50-node run's wall time and 1.6 ms of CPU a
    node. So the output is flushed and the process exits at once. In-process callers (the
    tests) call ``main``.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)  # main's own: always an exit code
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a reader that went away, a stream closed
            stream.flush()
    os._exit(code)
