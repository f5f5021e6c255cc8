"""The local transport reads a command's output as the SSH transport does."""

from __future__ import annotations

from upgradectl.transport.local import LocalTransport


def test_output_that_is_not_utf8_is_read_with_replacement_characters() -> None:
    # An Erlang crash report can print raw bytes; it is output to show, never a crash of the run.
    ran = LocalTransport("here").run(r"printf 'caf\351\n'; printf '\377' >&2", 5)
    assert (ran.exit_code, ran.stdout, ran.stderr) == (0, "caf\ufffd\n", "\ufffd")
