"""Helpers shared by the filesystem writer tests (FFS and ext2)."""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from smolfs.errors import ImageTooSmall
from smolfs.fs.filedata import Data
from smolfs.fs.tree import Tree


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
    """Write *tree* with *writer* (``smolfs.fs.ffs`` or ``smolfs.fs.ext2``) into a new file at
    *path*, at *size* bytes or the writer's minimum; return the size written."""
    size = writer.minimum_size(tree, opts) if size is None else size
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writer.write(tree, fd, size, opts)
    finally:
        os.close(fd)
    assert path.stat().st_size == size
    return size


# ---------------------------------------------------------------------------
# NetBSD's own fsck_ffs, run on the host over every FFS image the suite writes

FSCK_FFS_OK = re.compile(
    r"^(\*\* .*|\d+ files, \d+ used, \d+ free \(\d+ frags, \d+ blocks, [\d.]+% fragmentation\)"
    r"|\s*)$")


def fsck_ffs_path() -> tuple[str | None, str]:
    """NetBSD's ``fsck_ffs`` built for the host (``$MKSMOLNB_NETBSD_DIR/fsck_ffs``), or
    None and the reason it cannot run."""
    where = os.environ.get("MKSMOLNB_NETBSD_DIR")
    if not where:
        return None, "MKSMOLNB_NETBSD_DIR is not set"
    path = os.path.join(where, "fsck_ffs")
    if not os.access(path, os.X_OK):
        return None, f"{path} is missing or not executable"
    return path, ""


def fsck_ffs(image: str | os.PathLike[str]) -> str | None:
    """Judge *image* with NetBSD's ``fsck_ffs -n -f -F``: fail the test unless it exits 0
    and prints nothing but its phases and totals; its output. Without the program,
    nothing is checked: None, and a warning saying why (shown in pytest's summary)."""
    path, reason = fsck_ffs_path()
    if path is None:
        warnings.warn(f"host fsck_ffs not run: {reason}", stacklevel=2)
        return None
    r = subprocess.run([path, "-n", "-f", "-F", os.fspath(image)], capture_output=True,
                       text=True, errors="replace", timeout=300, check=False)
    odd = [line for line in r.stdout.splitlines()[1:] if not FSCK_FFS_OK.match(line)]
    assert r.returncode == 0 and not odd and not r.stderr.strip(), (
        f"fsck_ffs -n -f -F {os.fspath(image)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r.stdout
