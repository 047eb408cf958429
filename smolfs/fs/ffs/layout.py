"""Where every inode's data goes: the plan, independent of the image size.

:func:`plan` walks the tree once, numbers the inodes, builds directory contents
and allocates every data, fragment and indirect block in a *virtual* space of
whole blocks; :func:`cached_plan` keeps the last one. Which image sizes hold a plan
is :mod:`smolfs.fs.ffs.sizing`. The writer maps virtual blocks onto the geometry's
data extents.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from smolfs.errors import FilesystemLimitError, InputError
from smolfs.fs.ffs import structs as s
from smolfs.fs.ffs.geometry import howmany
from smolfs.fs.ffs.options import FfsOptions
from smolfs.fs.filedata import Data, FileData
from smolfs.fs.tree import SYMLINK_MAX, Kind, Node, Tree

LINK_MAX = 32767  # FFS link count limit (sys/ufs/ufs/ufs_vnops.c: LINK_MAX)

@dataclass(eq=False)
class PlannedInode:
    """One inode with its blocks in virtual block space (``vfrag = vblock * frag + offset``)."""

    ino: int
    node: Node
    nlink: int
    size: int
    content: bytes | None = None  # directory entries, or a symlink target kept in a block
    data: Data | None = None  # regular file contents
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (lbn, vblock, count)
    tail: tuple[int, int, int] | None = None  # (lbn, vfrag, nfrags)
    indirect: list[tuple[tuple[int, ...], int]] = field(default_factory=list)  # (key, vblock)
    frags: int = 0  # fragments allocated (data and indirect)
    extents: list[tuple[int, int]] | None = None  # data regions of a sparse file


@dataclass
class Plan:
    frag: int
    inodes: list[PlannedInode]  # inode order: ROOTINO, ROOTINO + 1, ...
    vblocks: int  # virtual blocks used
    partial: list[tuple[int, int]]  # blocks shared by fragments: (vblock, fragments used)

    @property
    def inodes_used(self) -> int:
        """Inodes the content takes, counting the reserved 0 and 1."""
        return len(self.inodes) + s.ROOTINO

    def inodes_needed(self, opts: FfsOptions | None = None) -> int:
        """Inodes the image must have: the content's, and some spare or
        ``opts.free_inodes`` free, whichever is more."""
        used = self.inodes_used
        return used + max(used // 10 + 8, opts.free_inodes if opts is not None else 0)


def _lbn_ranges(extents: list[tuple[int, int]] | None, size: int,
                bsize: int) -> list[tuple[int, int]]:
    """Logical block ranges ``[a, b)`` that hold data; the last block always counts."""
    nblocks = howmany(size, bsize)
    if nblocks == 0:
        return []
    if extents is None:
        return [(0, nblocks)]
    out: list[tuple[int, int]] = []
    for off, length in sorted(extents):
        if length <= 0:
            continue
        a, b = off // bsize, min(nblocks, howmany(off + length, bsize))
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif a < b:
            out.append((a, b))
    if not out or out[-1][1] < nblocks:
        out.append((nblocks - 1, nblocks))
    return out


def indirect_keys(ranges: list[tuple[int, int]], nindir: int) -> list[tuple[int, ...]]:
    """Indirect blocks the logical block ranges need, parents before children.

    Keys: ``(1,)`` single; ``(2,)`` double and ``(2, i)`` its children;
    ``(3,)``, ``(3, i)``, ``(3, i, j)`` for triple.
    """
    n = nindir
    base2 = s.NDADDR + n
    base3 = base2 + n * n
    keys: dict[tuple[int, ...], None] = {}
    for a, b in ranges:
        if b > s.NDADDR and a < base2:
            keys[(1,)] = None
        lo, hi = max(a, base2), min(b, base3)
        if lo < hi:
            keys[(2,)] = None
            for i in range((lo - base2) // n, (hi - 1 - base2) // n + 1):
                keys[(2, i)] = None
        lo, hi = max(a, base3), b
        if lo < hi:
            keys[(3,)] = None
            for i in range((lo - base3) // (n * n), (hi - 1 - base3) // (n * n) + 1):
                keys[(3, i)] = None
            for k in range((lo - base3) // n, (hi - 1 - base3) // n + 1):
                keys[(3, k // n, k % n)] = None
    return sorted(keys, key=lambda k: (k[0], len(k), k[1:]))


def max_file_size(version: int, bsize: int) -> int:
    nindir = bsize // (4 if version == 1 else 8)
    size = bsize * s.NDADDR - 1
    per = bsize
    for _ in range(s.NIADDR):
        per *= nindir
        size += per
    if version == 1:  # the kernel clamps UFS1 (ffs_oldfscompat_read)
        size = min(size, 0x80000000 * bsize - 1)
    return size


def dir_type(kind: Kind) -> int:
    return int(kind) >> 12


def build_directory(entries: list[tuple[bytes, int, int]]) -> bytes:
    """Directory contents: 512-byte chunks of ``struct direct``; each chunk's last entry
    stretches to the chunk's end."""
    out = bytearray()
    chunk_start = 0
    last = -1  # offset of the last entry in the current chunk
    pack = struct.Struct("<IHBB").pack
    for name, ino, dtype in entries:
        reclen = 8 + ((len(name) + 4) & ~3)
        if len(out) + reclen > chunk_start + s.DIRBLKSIZ:
            _stretch(out, last, chunk_start + s.DIRBLKSIZ)
            out.extend(bytes(chunk_start + s.DIRBLKSIZ - len(out)))
            chunk_start += s.DIRBLKSIZ
        last = len(out)
        out += pack(ino, reclen, dtype, len(name))
        out += name
        out += bytes(reclen - 8 - len(name))
    _stretch(out, last, chunk_start + s.DIRBLKSIZ)
    out.extend(bytes(chunk_start + s.DIRBLKSIZ - len(out)))
    return bytes(out)


def _stretch(buf: bytearray, entry: int, end: int) -> None:
    struct.pack_into("<H", buf, entry + 4, end - entry)


def plan(tree: Tree, opts: FfsOptions,
         walked: list[tuple[bytes, Node]] | None = None) -> Plan:
    """Number the inodes, build directories and allocate blocks in virtual space.

    *walked* is ``list(tree.walk())`` when the caller has it already.
    """
    bsize, fsize = opts.block_sizes()
    frag = bsize // fsize
    version = opts.version
    nindir = bsize // (4 if version == 1 else 8)
    maxsymlink = 60 if version == 1 else 120
    maxsize = max_file_size(version, bsize)
    if walked is None:
        walked = list(tree.walk())

    # Number inodes in walk order: parents first, names sorted, hard links once.
    numbers: dict[int, int] = {}
    names: dict[int, int] = {}  # names per node: the link count of a non-directory
    order: list[tuple[bytes, Node]] = []
    for path, node in walked:
        key = id(node)
        if key not in numbers:
            numbers[key] = s.ROOTINO + len(order)
            order.append((path, node))
            names[key] = 1
        elif node.kind == Kind.DIR:
            raise InputError(f"/{os.fsdecode(path)}: the same directory under two names "
                             "(directories cannot be hard links)")
        else:
            names[key] += 1

    inodes: list[PlannedInode] = []
    parents: dict[int, int] = {numbers[id(tree.root)]: s.ROOTINO}
    dir_kind = dir_type(Kind.DIR)
    for path, node in order:
        ino = numbers[id(node)]
        kind = node.kind
        if kind == Kind.DIR:
            entries = [(b".", ino, dir_kind), (b"..", parents[ino], dir_kind)]
            subdirs = 0
            for name in sorted(node.children):
                child = node.children[name]
                child_ino = numbers[id(child)]
                ckind = child.kind
                if ckind == Kind.DIR:
                    subdirs += 1
                    parents[child_ino] = ino
                entries.append((name, child_ino, int(ckind) >> 12))
            nlink = 2 + subdirs
            content = build_directory(entries)
            pi = PlannedInode(ino, node, nlink, len(content), content=content)
        elif kind == Kind.FILE:
            size = node.size
            if size > maxsize:
                raise FilesystemLimitError(
                    f"/{os.fsdecode(path)}: {size} bytes; UFS{version} with bsize={bsize} "
                    f"holds files up to {maxsize} bytes")
            pi = PlannedInode(ino, node, names[id(node)], size, data=node.data)
        elif kind == Kind.SYMLINK:
            target = node.target
            if not target or len(target) > SYMLINK_MAX or b"\0" in target:
                raise FilesystemLimitError(
                    f"symlink /{os.fsdecode(path)}: target must be 1 to {SYMLINK_MAX} bytes "
                    "without NUL")
            content = target if len(target) >= maxsymlink else None
            pi = PlannedInode(ino, node, names[id(node)], len(target), content=content)
        else:
            if kind in (Kind.CHR, Kind.BLK):
                major, minor = node.rdev
                if not (0 <= major <= 0xFFF and 0 <= minor <= 0xFFFFF):
                    raise FilesystemLimitError(
                        f"/{os.fsdecode(path)}: device {major},{minor} does not fit NetBSD's "
                        "encoding (major up to 4095, minor up to 1048575)")
            pi = PlannedInode(ino, node, names[id(node)], 0)
        if pi.nlink > LINK_MAX:
            raise FilesystemLimitError(
                f"/{os.fsdecode(path)}: {pi.nlink} links; FFS allows at most {LINK_MAX}")
        inodes.append(pi)

    alloc = _Allocator(frag)
    dense = _DenseFiles()
    for pi in inodes:
        if pi.content is None and pi.data is None:
            continue
        if pi.size == 0:
            continue
        if pi.data is not None and not dense.check(pi.data):
            extents = pi.data.extents()
            close = getattr(pi.data, "close", None)
            if close is not None:
                close()  # a tree may hold more files than a process may keep open
            if not (len(extents) == 1 and extents[0] == (0, pi.size)):
                pi.extents = sorted(e for e in extents if e[1] > 0)
        ranges = _lbn_ranges(pi.extents, pi.size, bsize)
        alloc.place(pi, ranges, bsize, fsize, nindir)
    partial = sorted(entry for bucket in alloc.partial for entry in bucket)
    return Plan(frag=frag, inodes=inodes, vblocks=alloc.next, partial=partial)


class _DenseFiles:
    """Tells cheaply that a host file has no holes (all its blocks are on disk).

    A :class:`FileData` region of a host file without holes has no holes either,
    so its extents need not be asked for (which would open the file). Files whose
    allocated blocks do not cover their size (sparse, or compressed by the host
    filesystem) are left to ``Data.extents()``.
    """

    def __init__(self) -> None:
        self.known: dict[str, bool] = {}

    def check(self, data: Data) -> bool:
        if not isinstance(data, FileData):
            return False
        if not data.sparse:
            return True
        dense = self.known.get(data.path)
        if dense is None:
            try:
                st = os.stat(data.path)
            except OSError:
                return False  # extents() reports the error
            dense = st.st_blocks * 512 >= st.st_size
            self.known[data.path] = dense
        return dense


class _Allocator:
    """Hands out virtual blocks in order, and fragment runs for file tails."""

    def __init__(self, frag: int) -> None:
        self.frag = frag
        self.next = 0
        # partly used blocks by number of free fragments at their end: [(vblock, used)]
        self.partial: list[list[tuple[int, int]]] = [[] for _ in range(frag)]

    def blocks(self, count: int) -> int:
        first = self.next
        self.next += count
        return first

    def fragments(self, count: int) -> int:
        """A run of *count* (< frag) fragments inside one block; returns its vfrag."""
        for free in range(count, self.frag):
            if self.partial[free]:
                vblock, used = self.partial[free].pop()
                self._keep(vblock, used + count)
                return vblock * self.frag + used
        vblock = self.blocks(1)
        self._keep(vblock, count)
        return vblock * self.frag

    def _keep(self, vblock: int, used: int) -> None:
        if used < self.frag:
            self.partial[self.frag - used].append((vblock, used))

    def place(self, pi: PlannedInode, ranges: list[tuple[int, int]], bsize: int, fsize: int,
              nindir: int) -> None:
        size = pi.size
        nblocks = howmany(size, bsize)
        tail_frags = 0
        if nblocks <= s.NDADDR:
            tail_frags = howmany(size - (nblocks - 1) * bsize, fsize)
            if tail_frags == self.frag:
                tail_frags = 0
        full_ranges = ranges
        if tail_frags:
            a, b = ranges[-1]
            full_ranges = ranges[:-1] + ([(a, b - 1)] if b - 1 > a else [])
        for a, b in full_ranges:
            pi.runs.append((a, self.blocks(b - a), b - a))
            pi.frags += (b - a) * self.frag
        if tail_frags:
            if pi.runs:
                vblock = self.blocks(1)
                self._keep(vblock, tail_frags)
                vfrag = vblock * self.frag
            else:
                vfrag = self.fragments(tail_frags)
            pi.tail = (nblocks - 1, vfrag, tail_frags)
            pi.frags += tail_frags
        if nblocks > s.NDADDR:
            for key in indirect_keys(ranges, nindir):
                pi.indirect.append((key, self.blocks(1)))
                pi.frags += self.frag


_last: tuple[Tree, tuple[int, int, int], list[tuple[object, ...]], Plan] | None = None


def _fingerprint(walked: list[tuple[bytes, Node]]) -> list[tuple[object, ...]]:
    """What a plan depends on: names, node identities, kinds, sizes and data objects."""
    return [(path, id(node), node.kind, node.size, id(node.data), node.target)
            for path, node in walked]


def cached_plan(tree: Tree, opts: FfsOptions) -> Plan:
    """:func:`plan`, reusing the previous one when the same unchanged tree is planned
    again with the same version and block sizes (``minimum_size`` followed by
    ``write``; the inode and size options do not change a plan)."""
    global _last
    walked = list(tree.walk())
    fingerprint = _fingerprint(walked)
    key = (opts.version, *opts.block_sizes())
    if _last is not None and _last[0] is tree and _last[1] == key and _last[2] == fingerprint:
        return _last[3]
    p = plan(tree, opts, walked)
    _last = (tree, key, fingerprint, p)
    return p


def forget_plan() -> None:
    """Drop the plan kept by :func:`cached_plan`."""
    global _last
    _last = None
