"""YAML files -> plain data that remembers the line of every key, read with limits.

An inventory or a playbook may come from anyone who can write a file the controller reads, so
reading one must end quickly and clearly whatever it holds: a FIFO or a device is refused
without waiting on it, a file past a few MB is refused unread, bytes that are not UTF-8 (or a
NUL) are refused with their line, nesting deeper than any real file is refused before it is
composed (a parser's recursion would crash on it), and aliases may not expand past a size (a
ten-line "billion laughs" file would otherwise take minutes and gigabytes). Every refusal is a
usage error naming the file and the line.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Any

import yaml

from upgradectl.errors import Location, UsageError

KeyPath = tuple[str, ...]

# Room for an inventory of 40,000 nodes with their vars; a playbook is a few KB.
MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
# Values that aliases may add, beyond the file's own: generous for anchors reused across a large
# inventory, far below what a bomb expands to.
MAX_ALIAS_VALUES = 100_000

# libyaml's parser when PyYAML has it: many times faster on a large inventory.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Document:
    """A parsed YAML file that remembers the line of every key."""

    path: str
    data: Any
    lines: dict[KeyPath, int]

    def where(self, keys: KeyPath) -> Location:
        """The location of ``keys``, or of its nearest ancestor that has a line."""
        for end in range(len(keys), -1, -1):
            if keys[:end] in self.lines:
                return Location(self.path, self.lines[keys[:end]], ".".join(keys))
        return Location(self.path, None, ".".join(keys))

    def error(self, keys: KeyPath, message: str) -> UsageError:
        """A usage error located at ``keys``."""
        return UsageError(message, self.where(keys))


def read_text(path: str, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``; anything else is a usage error, at once."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise UsageError(f"{path}: not a regular file ({_kind(kind)}); refusing to read it")
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise UsageError(f"{path}: is a directory") from None
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UsageError(f"{path}: larger than {limit // (1024 * 1024)} MB; refusing to read it")
    nul = data.find(b"\0")
    if nul >= 0:
        raise UsageError("a NUL byte: this is not a text file", _at(path, data, nul))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x})", _at(path, data, exc.start)
        ) from None


def _read_at_most(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
        stat.S_ISDIR: "a directory",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a file")


def _at(path: str, data: bytes, offset: int) -> Location:
    return Location(path, data.count(b"\n", 0, offset) + 1, "")


def read_yaml(path: str) -> Document:
    """Parse ``path``, keeping key lines; malformed or hostile YAML is a usage error with its line."""
    text = read_text(path)
    _check_depth(path, text)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = _Converter(path, lines, loader).convert(root, ()) if root else None
    except yaml.MarkedYAMLError as exc:
        raise _malformed(path, exc) from None
    except yaml.YAMLError as exc:  # a reader error: a character YAML does not allow
        raise UsageError(f"malformed YAML: {exc}", Location(path, None, "")) from None
    finally:
        loader.dispose()
    return Document(path, data, lines)


def _malformed(path: str, exc: yaml.MarkedYAMLError) -> UsageError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    context = ""
    if exc.context and exc.context_mark:
        context = f" ({exc.context}, from line {exc.context_mark.line + 1})"
    return UsageError(f"malformed YAML: {exc.problem or exc}{context}", Location(path, line, ""))


def _check_depth(path: str, text: str) -> None:
    """Refuse nesting past MAX_DEPTH from the parser's events, which take no recursion."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else None
                    raise UsageError(
                        f"nested more than {MAX_DEPTH} levels deep", Location(path, line, "")
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        raise _malformed(path, exc) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"malformed YAML: {exc}", Location(path, None, "")) from None


class _Converter:
    """Composed YAML nodes -> dicts, lists and scalars, counting what aliases add."""

    def __init__(self, path: str, lines: dict[KeyPath, int], loader: yaml.SafeLoader) -> None:
        self.path = path
        self.lines = lines
        self.loader = loader
        self.seen: set[int] = set()  # nodes converted once: meeting one again is an alias
        self.inside: set[int] = set()  # the collections being converted: an alias to one loops
        self.from_aliases = 0

    def convert(self, node: yaml.Node, keys: KeyPath) -> Any:
        """``node`` as plain data; ``keys`` is its key path."""
        self.lines.setdefault(keys, node.start_mark.line + 1)
        if id(node) in self.inside:
            raise self._error(node, keys, "a recursive alias (it contains itself)")
        if id(node) in self.seen:
            self.from_aliases += 1
            if self.from_aliases > MAX_ALIAS_VALUES:
                raise self._error(
                    node, keys, f"aliases expand past {MAX_ALIAS_VALUES} values; refusing"
                )
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            self.inside.add(id(node))
            try:
                return self._collection(node, keys)
            finally:
                self.inside.discard(id(node))
        try:
            return self.loader.construct_object(node)
        except (ValueError, OverflowError) as exc:  # e.g. an integer of 5,000 digits
            raise self._error(node, keys, f"unreadable value: {exc}") from None

    def _collection(self, node: yaml.MappingNode | yaml.SequenceNode, keys: KeyPath) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*keys, str(i))) for i, item in enumerate(node.value)]
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self._error(key_node, keys, "`<<` merge keys are not supported")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._error(key_node, keys, "a key must be text, not a list or a mapping")
            # Keys are read as written: YAML 1.1 would turn the key `on:` into True.
            key = key_node.value
            if key in result:
                raise self._error(key_node, (*keys, key), "duplicate key")
            self.lines[(*keys, key)] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node, (*keys, key))
        return result

    def _error(self, node: yaml.Node, keys: KeyPath, message: str) -> UsageError:
        return UsageError(message, Location(self.path, node.start_mark.line + 1, ".".join(keys)))
