"""Group geometry of an ext2 filesystem: how many groups, inodes and blocks, and sizing.

Pure functions. :func:`choose_geometry` fits the inodes and blocks counted by
:mod:`smolfs.fs.ext2.layout` into a given number of blocks or says how many are
missing (:class:`Short`); :func:`minimum_blocks` finds the smallest block count that
fits; :func:`default_density` is mke2fs's bytes-per-inode.
"""

from __future__ import annotations

from dataclasses import dataclass

from smolfs.errors import FilesystemLimitError
from smolfs.fs.ext2 import structs as S
from smolfs.fs.ext2.layout import BLOCKS_MAX, Counts, Scan

MIN_IPG = 16  # at least this many inodes per group (the 10 reserved ones fit in group 0)
MIN_LAST_GROUP = 50  # a last group with fewer free blocks than this is left out (as mke2fs)


def has_super(group: int, sparse: bool) -> bool:
    """Whether *group* holds a superblock copy (every group unless sparse_super)."""
    if not sparse or group <= 1:
        return True
    for base in (3, 5, 7):
        n = base
        while n < group:
            n *= base
        if n == group:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Group:
    start: int  # first block of the group
    end: int  # one past its last block
    sb: bool  # holds a superblock and descriptor copy
    bbitmap: int
    ibitmap: int
    itable: int
    data: int  # first block free for content


@dataclass(frozen=True, slots=True)
class Geometry:
    bsize: int
    blocks: int  # filesystem size in blocks
    first_dblock: int
    ipg: int  # inodes per group
    gdt_blocks: int
    sparse: bool
    groups: tuple[Group, ...]

    @property
    def bpg(self) -> int:
        return 8 * self.bsize

    @property
    def inodes(self) -> int:
        return self.ipg * len(self.groups)

    @property
    def itable_blocks(self) -> int:
        return self.ipg * S.INODE_SIZE // self.bsize

    @property
    def capacity(self) -> int:
        return sum(g.end - g.data for g in self.groups)


class Short(Exception):
    """The blocks given cannot hold the layout; at least ``deficit`` more are needed."""

    def __init__(self, deficit: int) -> None:
        super().__init__(deficit)
        self.deficit = max(1, deficit)


def geometry(bsize: int, blocks: int, inodes: int, sparse: bool) -> Geometry:
    """Groups for a filesystem of *blocks* blocks holding at least *inodes* inodes."""
    first = 1 if bsize == 1024 else 0
    bpg = 8 * bsize
    ipb = bsize // S.INODE_SIZE
    ngroups = max(1, -(-(blocks - first) // bpg))
    while True:
        ipg = max(-(-inodes // ngroups), MIN_IPG)
        ipg = -(-ipg // ipb) * ipb
        itb = ipg // ipb
        gdt = -(-ngroups * S.GROUP_DESC_SIZE // bsize)

        def overhead(g: int, gdt: int = gdt, itb: int = itb) -> int:
            return (1 + gdt if has_super(g, sparse) else 0) + 2 + itb

        if ipg > bpg:  # more inodes than one bitmap block can map: more groups needed
            want = first + ngroups * bpg + overhead(ngroups) + MIN_LAST_GROUP
            raise Short(want - blocks)
        if overhead(0) >= bpg:
            raise FilesystemLimitError("too many groups for ext2 without meta_bg")
        last = blocks - first - (ngroups - 1) * bpg
        if ngroups > 1 and last < overhead(ngroups - 1) + MIN_LAST_GROUP:
            ngroups -= 1
            blocks = first + ngroups * bpg
            continue
        if last < overhead(0) + 1:
            raise Short(overhead(0) + 1 - last)
        break
    groups = []
    for g in range(ngroups):
        start = first + g * bpg
        end = min(start + bpg, blocks)
        pos = start + (1 + gdt if has_super(g, sparse) else 0)
        groups.append(Group(start, end, has_super(g, sparse), pos, pos + 1, pos + 2,
                            pos + 2 + itb))
    return Geometry(bsize, blocks, first, ipg, gdt, sparse, tuple(groups))


#: mke2fs's default bytes per inode by size type (mke2fs.conf; types from mke2fs.c):
#: "floppy" below 3 MiB, "small" below 512 MiB, "default" below 4 TiB, "big" beyond.
MKE2FS_RATIOS = ((3 << 20, 8192), (512 << 20, 4096), (4 << 40, 16384))


def default_density(size: int) -> int:
    """Bytes per inode as mke2fs chooses them for an image of *size* bytes."""
    for limit, ratio in MKE2FS_RATIOS:
        if size < limit:
            return ratio
    return 32768


def inode_target(sc: Scan, inodes: int | None, free: int = 0) -> int:
    """Inodes to provide: the content's and a tenth more (at least 16) or *free* free,
    whichever is more; or *inodes* if more still."""
    used = sc.max_ino
    return max(used + max(16, used // 10, free), inodes or 0)


def choose_geometry(sc: Scan, counts: Counts, bsize: int, blocks: int, revision: int,
                    inodes: int | None, density: int | None, free_inodes: int = 0,
                    free_blocks: int = 0) -> Geometry:
    """The geometry for *blocks* blocks, or :class:`Short` when the content does not fit.

    One inode per *density* bytes when room allows, else as many as the content
    needs; neither *density* nor *inodes* given: mke2fs's density for the size.
    *free_inodes* and *free_blocks* must stay free beyond the content.
    """
    sparse = revision == 1
    target = inode_target(sc, inodes, free_inodes)
    total = counts.total + free_blocks
    if density is None and inodes is None:
        density = default_density(blocks * bsize)
    if density:
        first = 1 if bsize == 1024 else 0
        most = -(-(blocks - first) // (8 * bsize)) * 8 * bsize  # one inode bitmap block each
        dense = max(target, min(blocks * bsize // density, most, 2**32 - 1))
        if dense > target:
            try:
                geo = geometry(bsize, blocks, dense, sparse)
                if geo.capacity >= total:
                    return geo
            except Short:
                pass
    geo = geometry(bsize, blocks, target, sparse)
    if geo.capacity < total:
        raise Short(total - geo.capacity)
    return geo


def minimum_blocks(sc: Scan, counts: Counts, bsize: int, revision: int,
                   inodes: int | None, density: int | None, start: int = 0,
                   free_inodes: int = 0, free_blocks: int = 0) -> int:
    """The smallest block count from *start* on that holds the content."""
    def fits(n: int) -> bool:
        try:
            choose_geometry(sc, counts, bsize, n, revision, inodes, density, free_inodes,
                            free_blocks)
        except Short:
            return False
        return True

    n = max(start, counts.total + free_blocks + 4)
    lo = n - 1
    while True:
        if n > BLOCKS_MAX:
            raise FilesystemLimitError("the content is too large for an ext2 filesystem")
        try:
            choose_geometry(sc, counts, bsize, n, revision, inodes, density, free_inodes,
                            free_blocks)
            break
        except Short as short:
            lo = n
            n += short.deficit
    while n - lo > 1:  # capacity only grows with size: bisect back over the last step
        mid = (lo + n) // 2
        if fits(mid):
            n = mid
        else:
            lo = mid
    return n
