"""Templates render in a sandbox: no template, wherever it is written, runs code on the controller."""

from __future__ import annotations

from pathlib import Path

import pytest

from upgradectl.cli import main

ESCAPE = "{{ cycler.__init__.__globals__.os.system('touch pwned') }}"
MRO = "{{ ''.__class__.__mro__ }}"
PLAYBOOK = """\
name: tiny
vars: {{dir: WORK{vars}}}
lock: "{lock}"
steps:
  block: "touch {{{{ dir | quote }}}}/blocked"
  active: {{run: "echo 0 active", parse: "(\\\\d+) active"}}
  upgrade: "{upgrade}"
  unblock: "rm -f {{{{ dir | quote }}}}/blocked"
"""


def site(tmp_path: Path, *, upgrade: str = "echo {{ version | quote }}", variables: str = "",
         lock: str = "/var/tmp/x.lock") -> Path:  # fmt: skip
    """An inventory with one local node and a playbook holding the given templates."""
    (tmp_path / "work").mkdir(exist_ok=True)
    playbook = PLAYBOOK.format(vars=variables, lock=lock, upgrade=upgrade)
    (tmp_path / "tiny.yaml").write_text(playbook.replace("WORK", str(tmp_path / "work")))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "defaults: {transport: local, playbook: ./tiny.yaml}\nnodes:\n  node-a: {}\n"
    )
    return inventory


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out + err


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory, where a `touch pwned` that got through would show."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("payload", [ESCAPE, MRO])
@pytest.mark.parametrize(("option", "where"), [("--version", "--version:"), ("--var", "--var x:")])
def test_a_template_on_the_command_line_that_reaches_outside_the_sandbox_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, payload: str, option: str, where: str
) -> None:
    value = payload if option == "--version" else f"x={payload}"
    extra = ["--version", "1"] if option == "--var" else []
    code, output = run(capsys, "-i", str(site(tmp_path)), "plan", "node-a", *extra, option, value)
    assert code == 2, output
    assert f"upgradectl: {where} " in output and ("refused" in output or "missing" in output)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("payload", [ESCAPE, MRO])
@pytest.mark.parametrize(
    ("field", "line", "key"),
    [("upgrade", 7, "steps.upgrade.run"), ("variables", 2, "vars.x"), ("lock", 3, "lock")],
)
@pytest.mark.parametrize("command", ["check", "plan"])
def test_a_template_in_a_playbook_that_reaches_outside_the_sandbox_is_refused_naming_its_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    payload: str,
    field: str,
    line: int,
    key: str,
    command: str,
) -> None:
    templates = {"variables": f', x: "{payload}"'} if field == "variables" else {field: payload}
    inventory = site(tmp_path, **templates)
    args = ["plan", "node-a", "--version", "1"] if command == "plan" else ["check"]
    code, output = run(capsys, "-i", str(inventory), *args)
    assert code == 2, output
    assert f"tiny.yaml:{line}: {key}: " in output, output
    assert not (tmp_path / "pwned").exists()
    assert "Traceback" not in output


def test_the_mro_payload_is_refused_as_reaching_outside_not_as_a_missing_variable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, output = run(capsys, "-i", str(site(tmp_path)), "plan", "node-a", "--version", MRO)
    assert code == 2
    assert "template refused: attribute '__class__' of a str is outside the sandbox" in output


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 100000000 }}",  # a string too long for memory
        "{{ 2 ** 100000 }}",  # a number too long to compute quickly
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",  # endless recursion
        "{{ [].append(1) }}",  # the immutable sandbox: no mutation
        "{{ range(10) | list }}",  # no globals, and only our filters
        "{{ 'a' | lower }}",
    ],
)
def test_templates_cannot_exhaust_the_controller_or_use_more_than_our_filters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, template: str
) -> None:
    code, output = run(capsys, "-i", str(site(tmp_path)), "plan", "node-a", "--version", template)
    assert code == 2, output
    assert output.startswith("upgradectl: --version: ") and "Traceback" not in output


def test_quote_and_safe_shell_are_the_filters_and_render_as_documented(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = site(tmp_path, upgrade="{{ tool | safe_shell }} {{ version | quote }}",
                     variables=", tool: 'apt-get install -y'")  # fmt: skip
    code, output = run(capsys, "-i", str(inventory), "plan", "node-a", "--version", "2; rm -rf /")
    assert code == 0, output
    assert "apt-get install -y '2; rm -rf /'" in output
