"""FFS settings: one frozen dataclass, parsed from makefs-style ``-o key=value`` pairs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from smolfs.errors import UsageError
from smolfs.fs.ffs import structs as s

DEFAULT_BSIZE = 8192
DEFAULT_FSIZE = 1024

#: newfs (sbin/newfs/newfs.c): one inode per NFPI fragments, its fragment size by the
#: file system size (SMALL_FSSIZE 20 MiB, MEDIUM_FSSIZE 1000 MiB, LARGE_FSSIZE 128 GiB).
NFPI = 4
NEWFS_FSIZES = ((20 << 20, 512), (1000 << 20, 1024), (128 << 30, 2048))


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class FfsOptions:
    """Parameters of an FFS image; the defaults are makefs's (UFS1, 8192/1024, minfree 5%).

    ``bsize``/``fsize`` left as None follow makefs: 8192 and 1024, or derived from
    the other one when only one is given. ``density`` (bytes of image per inode)
    None follows NetBSD's newfs for the image size (:func:`default_density`) where the
    image has room for that many inodes, else as many as the tree needs. ``inodes``
    asks for at least that many inodes in all instead (newfs ``-n``; no default
    density then). ``free_inodes`` and ``free_space`` (bytes) are the least the image
    must keep free beyond its content (makefs ``-f`` and ``-b``). ``timestamp`` None
    means the newest mtime in the tree; ``uuid`` None derives the filesystem id from
    the tree and options.
    """

    version: int = 1
    bsize: int | None = None
    fsize: int | None = None
    density: int | None = None
    inodes: int | None = None
    free_inodes: int = 0
    free_space: int = 0
    minfree: int = s.MINFREE
    optimization: str = "time"
    maxbpg: int | None = None
    maxcontig: int | None = None
    avgfilesize: int = s.AVFILESIZ
    avgfpdir: int = s.AFPDIR
    label: str = ""
    timestamp: int | None = None
    uuid: bytes | None = None

    ALIASES: ClassVar[dict[str, str]] = {"maxbpf": "maxbpg"}  # makefs's name for it
    KEYS = ("version", "bsize", "fsize", "density", "inodes", "minfree", "optimization", "maxbpg",
            "maxcontig", "avgfilesize", "avgfpdir", "label")

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise UsageError(f"ffs version={self.version}: must be 1 (UFS1) or 2 (UFS2)")
        bsize, fsize = self.block_sizes()
        if not _pow2(bsize) or not s.MINBSIZE <= bsize <= s.MAXBSIZE:
            raise UsageError(f"ffs bsize={bsize}: must be a power of 2 from "
                             f"{s.MINBSIZE} to {s.MAXBSIZE}")
        if not _pow2(fsize) or fsize < s.DEV_BSIZE or fsize > bsize:
            raise UsageError(f"ffs fsize={fsize}: must be a power of 2 from {s.DEV_BSIZE} "
                             f"to bsize ({bsize})")
        if bsize // fsize > s.MAXFRAG:
            raise UsageError(f"ffs bsize={bsize}, fsize={fsize}: at most {s.MAXFRAG} "
                             f"fragments per block (use fsize={bsize // s.MAXFRAG} or more)")
        if self.density is not None and self.density < fsize:
            raise UsageError(
                f"ffs density={self.density}: at least fsize ({fsize}) bytes per inode")
        if self.inodes is not None and not 1 <= self.inodes < 2**31:
            raise UsageError(f"ffs inodes={self.inodes}: use 1 to {2**31 - 1}")
        if self.free_inodes < 0 or self.free_space < 0:
            raise UsageError("ffs: free inodes and free space must not be negative")
        if not 0 <= self.minfree <= 99:
            raise UsageError(f"ffs minfree={self.minfree}: must be a percentage from 0 to 99")
        if self.optimization not in ("time", "space"):
            raise UsageError(f"ffs optimization={self.optimization!r}: must be time or space")
        for name in ("maxbpg", "maxcontig", "avgfilesize", "avgfpdir"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"ffs {name}={value}: must be a positive number")
        if len(self.label.encode()) >= s.MAXVOLLEN:
            raise UsageError(f"ffs label={self.label!r}: at most {s.MAXVOLLEN - 1} bytes")
        if self.uuid is not None and len(self.uuid) < 8:
            raise UsageError("ffs uuid: at least 8 bytes are needed for the filesystem id")

    def block_sizes(self) -> tuple[int, int]:
        """(bsize, fsize) with makefs's defaults applied."""
        if self.bsize is None and self.fsize is None:
            return DEFAULT_BSIZE, DEFAULT_FSIZE
        if self.bsize is None:
            assert self.fsize is not None
            return min(DEFAULT_BSIZE, s.MAXFRAG * self.fsize), self.fsize
        if self.fsize is None:
            return self.bsize, min(self.bsize, max(DEFAULT_FSIZE, self.bsize // s.MAXFRAG))
        return self.bsize, self.fsize

    @classmethod
    def from_makefs(cls, opts: dict[str, str]) -> FfsOptions:
        """Options from makefs-style pairs, e.g. ``{"version": "2", "bsize": "16384"}``."""
        fields: dict[str, object] = {}
        for key, raw in opts.items():
            key = cls.ALIASES.get(key, key)
            if key not in cls.KEYS:
                raise UsageError(f"unknown ffs option {key!r}",
                                 hint="valid ffs options: " + ", ".join(cls.KEYS))
            if key in ("optimization", "label"):
                fields[key] = raw
                continue
            try:
                fields[key] = int(raw, 0)
            except ValueError:
                raise UsageError(f"ffs option {key}={raw!r}: a whole number is needed") from None
        return cls(**fields)  # type: ignore[arg-type]

    def default_density(self, size: int) -> int:
        """Bytes per inode as NetBSD's newfs chooses them: four fragments per inode
        (``NFPI``), with newfs's fragment size for the image size (512 bytes below
        20 MiB, 1024 below 1000 MiB, 2048 below 128 GiB, 4096 beyond) unless a block
        or fragment size was given (then that fragment size)."""
        if self.bsize is not None or self.fsize is not None:
            return NFPI * self.block_sizes()[1]
        for limit, fsize in NEWFS_FSIZES:
            if size < limit:
                return NFPI * fsize
        return NFPI * 4096

    def with_defaults(self) -> FfsOptions:
        """A copy with bsize and fsize filled in."""
        bsize, fsize = self.block_sizes()
        return replace(self, bsize=bsize, fsize=fsize)
