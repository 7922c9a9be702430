"""Reading a space file as plain data, safely: what `yaml.safe_load` alone lets through is refused here.

A space is a small hand-written file, so anything that is not one is refused before it is parsed: a FIFO, a device
(`/dev/zero`) or a folder; a file over `MAX_BYTES`; text that is not UTF-8 (UTF-16 is named as such); a mapping that
repeats a key at any depth (YAML lets the last one win silently: a second `fixed:` would drop the first); and a
document whose aliases expand to more than `MAX_NODES` nodes (a "billion laughs" bomb is cheap to compose, since
aliases share nodes, but not to validate or print). Messages name the file and the line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from trainer.errors import ProxySearchError

MAX_BYTES = 1 << 20
MAX_NODES = 100_000


class SpaceFileError(ProxySearchError, ValueError):
    """The file cannot be read as a space; the message names the file and says why."""


def read_space_file(path: Path) -> Any:
    """The YAML document of `path` as plain data (mappings, lists, scalars), or `SpaceFileError`."""
    text = _read_text(path)
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, path)
        return loader.construct_document(node)
    except RecursionError:
        raise SpaceFileError(f"{path}: is nested too deeply; a space is a short YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SpaceFileError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever; it is refused below anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SpaceFileError(f"{path}: cannot read: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise SpaceFileError(f"{path}: is {kind}; a space is a YAML file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SpaceFileError(f"{path}: is larger than {MAX_BYTES // 2**20} MB; a space is a short YAML file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpaceFileError(f"{path}: is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpaceFileError(f"{path}: is not UTF-8 text (line {line}, byte {exc.start}); save it as UTF-8") from None


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key repeated in one mapping, naming both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader's own check reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise SpaceFileError(
                    f"{self.name}: key {_short(key)} appears twice in one mapping (lines {first} and "
                    f"{key_node.start_mark.line + 1}); YAML would keep only the last"
                )
        return super().construct_mapping(node, deep)


def _check_size(root: yaml.Node, path: Path) -> None:
    """Refuse a document whose aliases expand to more than MAX_NODES nodes (counted once per shared node)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a recursive alias counts once instead of looping
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        sizes[id(node)] = min(total, MAX_NODES + 1)
        return sizes[id(node)]

    if size(root) > MAX_NODES:
        raise SpaceFileError(
            f"{path}: expands to more than {MAX_NODES:,} values through its aliases (&/*); a space needs far fewer"
        )


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
