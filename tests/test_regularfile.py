"""A file's text is read only from a regular file: a FIFO is never waited on, a symlink is
followed only where the caller allows it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from upgradectl.regularfile import regular_text


def test_a_regular_file_reads_with_undecodable_bytes_replaced(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_bytes(b"node-1 ssh-ed25519 AAAA\n\xff\n")
    assert regular_text(path) == "node-1 ssh-ed25519 AAAA\n\ufffd\n"


def test_a_fifo_reads_as_nothing_at_once_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "R1.jsonl"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert regular_text(fifo) is None
    assert time.monotonic() - started < 5


def test_a_missing_file_a_directory_and_a_device_read_as_nothing(tmp_path: Path) -> None:
    assert regular_text(tmp_path / "absent") is None
    assert regular_text(tmp_path) is None
    assert regular_text("/dev/zero") is None


def test_a_symlink_is_followed_only_where_the_caller_allows(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("text\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert regular_text(link) == "text\n"
    assert regular_text(link, follow_links=False) is None
