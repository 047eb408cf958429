"""Settings of the ext2 writer, and their parsing from makefs-style ``-o key=value`` pairs."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from smolfs.errors import UsageError

BLOCK_SIZES = (1024, 2048, 4096)


@dataclass(frozen=True)
class Ext2Options:
    """How to lay out an ext2 filesystem. Every field has a sensible default."""

    revision: int = 1  # 1: filetype + sparse_super (+ large_file when needed); 0: no features
    bsize: int | None = None  # block size; None: 1024 below 512 MiB of content, else 4096
    inodes: int | None = None  # at least this many inodes in all (no default density then)
    density: int | None = None  # one inode per this many bytes of image, when room allows;
    # None (and no inodes): mke2fs's default for the size (geometry.default_density)
    free_inodes: int = 0  # at least this many inodes free beyond the content (makefs -f)
    free_space: int = 0  # at least this many bytes of blocks free (makefs -b)
    minfree: int = 5  # percent of blocks reserved for root
    label: str = ""  # volume name, at most 16 bytes
    uuid: bytes | None = None  # None: derived from the tree and the options
    timestamp: int | None = None  # creation/write time; None: newest mtime in the tree

    def __post_init__(self) -> None:
        if self.revision not in (0, 1):
            raise UsageError(f"ext2 option revision={self.revision}: use 0 or 1")
        if self.bsize is not None and self.bsize not in BLOCK_SIZES:
            raise UsageError(
                f"ext2 option bsize={self.bsize}: use one of {', '.join(map(str, BLOCK_SIZES))}"
            )
        if self.inodes is not None and not 1 <= self.inodes < 2**32:
            raise UsageError(f"ext2 option inodes={self.inodes}: use 1 to {2**32 - 1}")
        if self.density is not None and not 1024 <= self.density <= 2**26:
            raise UsageError(f"ext2 option density={self.density}: use 1024 to {2**26}")
        if self.free_inodes < 0 or self.free_space < 0:
            raise UsageError("ext2: free inodes and free space must not be negative")
        if not 0 <= self.minfree <= 50:
            raise UsageError(f"ext2 option minfree={self.minfree}: use 0 to 50 (percent)")
        if len(self.label.encode()) > 16:
            raise UsageError(f"ext2 option label={self.label!r}: at most 16 bytes")
        if self.uuid is not None and len(self.uuid) != 16:
            raise UsageError("ext2 option uuid: a UUID is 16 bytes")
        if self.timestamp is not None and not 0 <= self.timestamp < 2**32:
            raise UsageError(f"ext2 option timestamp={self.timestamp}: use 0 to {2**32 - 1}")

    @classmethod
    def from_makefs(cls, opts: dict[str, str]) -> Ext2Options:
        """Options from ``-o key=value`` pairs, e.g. ``{"bsize": "4096", "revision": "0"}``."""
        parsers: dict[str, Callable[[str], Any]] = {
            "revision": _int,
            "bsize": _size,
            "inodes": _int,
            "density": _size,
            "minfree": _int,
            "label": str,
            "uuid": _uuid,
            "timestamp": _int,
        }
        values: dict[str, Any] = {}
        for key, raw in opts.items():
            parse = parsers.get(key)
            if parse is None:
                raise UsageError(
                    f"unknown ext2 option {key!r}",
                    hint="valid ext2 options: " + ", ".join(sorted(parsers)),
                )
            try:
                value = parse(raw)
            except ValueError:
                raise UsageError(f"ext2 option {key}={raw!r} is not valid") from None
            values[key] = value
        return replace(cls(), **values) if values else cls()

    def describe(self) -> bytes:
        """A stable byte string of every field (part of the derived UUID)."""
        return repr([(f.name, getattr(self, f.name)) for f in fields(self)]).encode()


def _int(text: str) -> int:
    return int(text, 0)


def _size(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
    return int(text[:-1] if mult > 1 else text, 0) * mult


def _uuid(text: str) -> bytes:
    return uuidlib.UUID(text).bytes
