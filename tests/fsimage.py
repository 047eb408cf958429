"""Helpers shared by the filesystem writer tests (FFS and ext2)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from smolfs.errors import ImageTooSmall
from smolfs.tree import Data, Tree


class SparseData(Data):
    """File contents with explicit data regions at offsets; everything else is a hole."""

    def __init__(self, size: int, chunks: dict[int, bytes]) -> None:
        self.size = size
        self.chunks = {off: data for off, data in chunks.items() if data}

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray(length)
        for off, data in self.chunks.items():
            a, b = max(off, offset), min(off + len(data), offset + length)
            if a < b:
                out[a - offset:b - offset] = data[a - off:b - off]
        return bytes(out)

    def extents(self) -> list[tuple[int, int]]:
        return sorted((off, len(data)) for off, data in self.chunks.items())

    def content(self) -> bytes:
        return self.read(0, self.size)


def refused_as_too_small(writer: ModuleType, tree: Tree, path: Path, opts: Any,
                         size: int) -> ImageTooSmall:
    """Writing *tree* at *size* bytes into a new file at *path* must fail with
    ImageTooSmall before a byte is written; the error."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with pytest.raises(ImageTooSmall) as err:
            writer.write(tree, fd, size, opts)
    finally:
        os.close(fd)
    assert path.stat().st_size == 0, "nothing written when too small"
    return err.value


def write_image(writer: ModuleType, tree: Tree, path: Path, opts: Any,
                size: int | None = None) -> int:
    """Write *tree* with *writer* (``smolfs.ffs`` or ``smolfs.ext2``) into a new file at
    *path*, at *size* bytes or the writer's minimum; return the size written."""
    size = writer.minimum_size(tree, opts) if size is None else size
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writer.write(tree, fd, size, opts)
    finally:
        os.close(fd)
    assert path.stat().st_size == size
    return size
