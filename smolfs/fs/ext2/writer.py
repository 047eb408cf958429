"""Write an ext2 image into a file descriptor.

The layout comes from :mod:`smolfs.fs.ext2.layout` and :mod:`smolfs.fs.ext2.geometry`;
this module turns it into bytes: inode tables, group metadata
(:mod:`smolfs.fs.ext2.groups`), buffered metadata blocks, file data with ``copy_to``."""

from __future__ import annotations

import os
import struct
from bisect import bisect_right

from smolfs.errors import ImageTooSmall
from smolfs.fs.ext2 import structs as S
from smolfs.fs.ext2.geometry import Geometry, Short, choose_geometry, minimum_blocks
from smolfs.fs.ext2.groups import write_groups
from smolfs.fs.ext2.layout import (
    BLOCKS_MAX,
    TIME_MAX,
    Counts,
    Inode,
    Scan,
    close_data,
    count_blocks,
    default_bsize,
    dirent_size,
    rdev_encode,
    scan,
)
from smolfs.fs.ext2.options import Ext2Options
from smolfs.fs.tree import Kind, Tree

FLUSH_BYTES = 4 << 20
BIG_IMAGE = 512 << 20

# BSD file flags (chflags) with an ext2 counterpart
UF_NODUMP, UF_IMMUTABLE, UF_APPEND = 0x1, 0x2, 0x4
SF_IMMUTABLE, SF_APPEND = 0x20000, 0x40000


_last: tuple[Tree, tuple[int, int | None], list[tuple[object, ...]],
            tuple[Scan, int, Counts]] | None = None


def _fingerprint(tree: Tree) -> list[tuple[object, ...]]:
    """What a scan depends on: names, node identities, kinds, sizes, data and attributes."""
    return [(path, id(n), n.kind, n.size, id(n.data), n.target, n.mode, n.uid, n.gid,
             n.mtime, n.atime, n.ctime, n.flags, n.rdev) for path, n in tree.walk()]


def plan(tree: Tree, opts: Ext2Options) -> tuple[Scan, int, Counts]:
    """The tree scanned and its blocks counted; the previous plan again when the same
    unchanged tree is planned with the same revision and block size (the size and
    inode options do not change a plan: ``minimum_size`` several times, then ``write``)."""
    global _last
    fingerprint = _fingerprint(tree)
    key = (opts.revision, opts.bsize)
    if _last is not None and _last[0] is tree and _last[1] == key and _last[2] == fingerprint:
        return _last[3]
    sc = scan(tree, opts.revision)
    bsize = opts.bsize or default_bsize(sc)
    planned = (sc, bsize, count_blocks(sc, bsize, opts.revision))
    _last = (tree, key, fingerprint, planned)
    return planned


def _free(opts: Ext2Options, bsize: int) -> dict[str, int]:
    return {"free_inodes": opts.free_inodes, "free_blocks": -(-opts.free_space // bsize)}


def minimum_size(tree: Tree, opts: Ext2Options | None = None) -> int:
    """The smallest image size in bytes that holds *tree* with *opts*."""
    opts = opts or Ext2Options()
    sc, bsize, counts = plan(tree, opts)
    return bsize * minimum_blocks(sc, counts, bsize, opts.revision, opts.inodes, opts.density,
                                  **_free(opts, bsize))


def inodes_used(tree: Tree, opts: Ext2Options | None = None) -> int:
    """Inodes *tree* takes in an image, counting the reserved ones (1 to 10 and
    lost+found in revision 1)."""
    return plan(tree, opts or Ext2Options())[0].max_ino


def write(tree: Tree, fd: int, size: int, opts: Ext2Options | None = None) -> None:
    """Write an ext2 filesystem of *tree*, exactly *size* bytes, into *fd*.

    Raises :class:`ImageTooSmall` (naming the minimum) before writing anything when
    the content does not fit.
    """
    global _last
    opts = opts or Ext2Options()
    sc, bsize, counts = plan(tree, opts)
    _last = None  # counted again below for other block sizes; and the tree is let go
    geo = None
    if opts.bsize is None and size >= BIG_IMAGE and bsize < 4096:
        geo = _try_big_blocks(sc, size, opts)
    if geo is None:
        blocks = min(size // bsize, BLOCKS_MAX)
        fit = (sc, counts, bsize)
        free = _free(opts, bsize)
        try:
            geo = choose_geometry(*fit, blocks, opts.revision, opts.inodes, opts.density,
                                  **free)
        except Short:
            need = minimum_blocks(*fit, opts.revision, opts.inodes, opts.density, **free)
            if need <= blocks:  # a size between two that fit: name the next one that does
                need = minimum_blocks(*fit, opts.revision, opts.inodes, opts.density,
                                      blocks + 1, **free)
            raise ImageTooSmall(
                f"an ext2 image of {size} bytes cannot hold this content; "
                f"it needs at least {need * bsize} bytes",
                need * bsize,
                hint=f"use a size of at least {-(-need * bsize // 1024)}k, or no fixed size",
            ) from None
    os.ftruncate(fd, size)
    _Writer(sc, geo, opts, fd, size).run()


def _try_big_blocks(sc: Scan, size: int, opts: Ext2Options) -> Geometry | None:
    """4 KiB blocks for a large image (as mke2fs), when the content fits that way.

    On success the inodes of *sc* are counted for 4 KiB blocks; otherwise they are
    left counted for the default block size.
    """
    counts = count_blocks(sc, 4096, opts.revision)
    try:
        return choose_geometry(sc, counts, 4096, min(size // 4096, BLOCKS_MAX),
                               opts.revision, opts.inodes, opts.density, **_free(opts, 4096))
    except Short:
        count_blocks(sc, default_bsize(sc), opts.revision)
        return None


# ---------------------------------------------------------------------------


def _pack_range(first: int, count: int) -> bytes:
    return struct.pack(f"<{count}I", *range(first, first + count))


def pointers(mapping: list[tuple[int, int, int]], starts: list[int], first: int,
             count: int) -> bytearray:
    """Block pointers for logical blocks ``[first, first+count)``; 0 where a hole is."""
    out = bytearray(4 * count)
    end = first + count
    i = max(0, bisect_right(starts, first) - 1)
    while i < len(mapping):
        lblk, pblk, n = mapping[i]
        if lblk >= end:
            break
        a, b = max(lblk, first), min(lblk + n, end)
        if a < b:
            out[4 * (a - first) : 4 * (b - first)] = _pack_range(pblk + a - lblk, b - a)
        i += 1
    return out


def ext2_flags(flags: int) -> int:
    out = 0
    if flags & UF_NODUMP:
        out |= S.FL_NODUMP
    if flags & (UF_IMMUTABLE | SF_IMMUTABLE):
        out |= S.FL_IMMUTABLE
    if flags & (UF_APPEND | SF_APPEND):
        out |= S.FL_APPEND
    return out


def _time(t: int) -> int:
    return min(max(t, 0), TIME_MAX)


class _Allocator:
    """Hands out content blocks from one cursor, group after group."""

    def __init__(self, geo: Geometry) -> None:
        self.groups = geo.groups
        self.g = 0
        self.pos = self.groups[0].data
        self.used = [g.data - g.start for g in self.groups]

    def take(self, n: int) -> list[tuple[int, int]]:
        runs = []
        while n:
            grp = self.groups[self.g]
            room = grp.end - self.pos
            if room == 0:
                self.g += 1
                self.pos = self.groups[self.g].data
                continue
            k = min(n, room)
            runs.append((self.pos, k))
            self.pos += k
            self.used[self.g] += k
            n -= k
        return runs


class _MetaArea:
    """The metadata blocks, numbered in allocation order and written in big pieces."""

    def __init__(self, fd: int, bsize: int, runs: list[tuple[int, int]]) -> None:
        self.fd, self.bsize = fd, bsize
        self.blocks = (b for start, n in runs for b in range(start, start + n))
        self.buf = bytearray()
        self.buf_start = 0

    def next(self) -> int:
        return next(self.blocks)

    def put(self, block: int, data: bytes | bytearray) -> None:
        """Queue *data* (a whole number of blocks) for contiguous blocks from *block*."""
        if self.buf and block != self.buf_start + len(self.buf) // self.bsize:
            self.flush()
        if not self.buf:
            self.buf_start = block
        self.buf += data
        if len(self.buf) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            os.pwrite(self.fd, self.buf, self.buf_start * self.bsize)
            self.buf = bytearray()


class _Writer:
    def __init__(self, sc: Scan, geo: Geometry, opts: Ext2Options, fd: int, size: int) -> None:
        self.sc, self.geo, self.opts, self.fd, self.size = sc, geo, opts, fd, size
        self.bsize = geo.bsize
        self.per = geo.bsize // 4
        self.rev1 = opts.revision == 1
        self.table_group = -1  # the group whose inode table is being filled
        self.itable = bytearray()

    def run(self) -> None:
        sc, geo = self.sc, self.geo
        alloc = _Allocator(geo)
        meta_runs = alloc.take(sum(i.meta for i in sc.inodes))
        mappings: dict[int, list[tuple[int, int, int]]] = {}
        for ino in sc.inodes:
            if ino.data:
                mapping = []
                for lblk, count in ino.runs:
                    for pblk, n in alloc.take(count):
                        mapping.append((lblk, pblk, n))
                        lblk += n
                mappings[ino.ino] = mapping
        meta = _MetaArea(self.fd, self.bsize, meta_runs)
        for ino in sc.inodes:
            self.inode(ino, meta, mappings.get(ino.ino))
        meta.flush()
        self.flush_table()
        write_groups(self.fd, sc, geo, self.opts, self.size, alloc.used)
        for ino in sc.inodes:
            if ino.data:
                self.copy_data(ino, mappings[ino.ino])

    # -- inodes and their metadata blocks ------------------------------------
    def inode(self, ino: Inode, meta: _MetaArea, mapping: list[tuple[int, int, int]] | None
              ) -> None:
        node = ino.node
        kind = node.kind
        bsize = self.bsize
        size = 0
        flags = 0
        iblock: bytes | bytearray = bytes(60)
        nblocks = ino.meta + ino.data
        if kind == Kind.DIR:
            n = ino.runs[0][1]
            mapping = self._place(meta, self.pack_dir(ino.entries, n), n)
            size = n * bsize
            flags = ext2_flags(node.flags)
        elif kind == Kind.FILE:
            size = node.size
            flags = ext2_flags(node.flags)
        elif kind == Kind.SYMLINK:
            size = len(node.target)
            if ino.meta:
                block = node.target + bytes(bsize - size)
                mapping = self._place(meta, block, 1)
            else:
                iblock = node.target + bytes(60 - size)
        elif kind in (Kind.CHR, Kind.BLK):
            iblock = struct.pack("<I56x", rdev_encode(*node.rdev))
        if mapping is not None:
            iblock = self.block_pointers(ino, meta, mapping)
        a, m, c = node.times()
        uid, gid = node.uid, node.gid
        group, index = divmod(ino.ino - 1, self.geo.ipg)
        if group != self.table_group:
            self.flush_table()
            self.table_group = group
            used = min(self.sc.max_ino - group * self.geo.ipg, self.geo.ipg)
            self.itable = bytearray(-(-used * S.INODE_SIZE // bsize) * bsize)
        S.INODE.pack_into(
            self.itable, index * S.INODE_SIZE,
            int(kind) | (node.mode & 0o7777), uid & 0xFFFF, size & 0xFFFFFFFF,
            _time(a), _time(c), _time(m), 0, gid & 0xFFFF, ino.nlink,
            nblocks * (bsize // 512), flags, 0, bytes(iblock), 0, 0,
            size >> 32 if kind == Kind.FILE else 0, 0, 0, 0, 0, uid >> 16, gid >> 16, 0,
        )

    def flush_table(self) -> None:
        """Write the used part of the current group's inode table (one group at a time)."""
        if self.itable:
            grp = self.geo.groups[self.table_group]
            os.pwrite(self.fd, self.itable, grp.itable * self.bsize)
            self.itable = bytearray()

    def _place(self, meta: _MetaArea, content: bytes | bytearray, n: int
               ) -> list[tuple[int, int, int]]:
        """Put *n* blocks of *content* in the metadata area; return their mapping."""
        bsize = self.bsize
        mapping: list[tuple[int, int, int]] = []
        for i in range(n):
            pblk = meta.next()
            meta.put(pblk, content[i * bsize : (i + 1) * bsize])
            if mapping and mapping[-1][1] + mapping[-1][2] == pblk:
                lblk, start, k = mapping[-1]
                mapping[-1] = (lblk, start, k + 1)
            else:
                mapping.append((i, pblk, 1))
        return mapping

    def block_pointers(self, ino: Inode, meta: _MetaArea,
                       mapping: list[tuple[int, int, int]]) -> bytes:
        """i_block for *mapping*, writing the indirect blocks it needs."""
        per = self.per
        starts = [m[0] for m in mapping]
        phys = {key: meta.next() for key in ino.indirect}
        base2 = S.N_DIRECT + per
        base3 = base2 + per * per
        for key in ino.indirect:
            if key == (1,):
                block = pointers(mapping, starts, S.N_DIRECT, per)
            elif key == (2,):
                block = struct.pack(f"<{per}I", *(phys.get((2, i), 0) for i in range(per)))
            elif key[0] == 2:
                block = pointers(mapping, starts, base2 + key[1] * per, per)
            elif key == (3,):
                block = struct.pack(f"<{per}I", *(phys.get((3, i), 0) for i in range(per)))
            elif len(key) == 2:
                i = key[1]
                block = struct.pack(f"<{per}I", *(phys.get((3, i, j), 0) for j in range(per)))
            else:
                block = pointers(mapping, starts, base3 + (key[1] * per + key[2]) * per, per)
            meta.put(phys[key], block)
        direct = pointers(mapping, starts, 0, S.N_DIRECT)
        return bytes(direct) + struct.pack(
            "<3I", phys.get((1,), 0), phys.get((2,), 0), phys.get((3,), 0)
        )

    def pack_dir(self, entries: list[tuple[bytes, int, int]], nblocks: int) -> bytearray:
        """Directory blocks: entries in order, the last of each block reaching its end."""
        bsize = self.bsize
        out = bytearray(nblocks * bsize)
        head = S.DIRENT_HEAD_REV1 if self.rev1 else S.DIRENT_HEAD_REV0
        block = used = last = 0
        for name, ino, ftype in entries:
            size = dirent_size(len(name))
            if used + size > bsize:
                struct.pack_into("<H", out, last + 4, block + bsize - last)
                block += bsize
                used = 0
            off = block + used
            if self.rev1:
                head.pack_into(out, off, ino, size, len(name), ftype)
            else:
                head.pack_into(out, off, ino, size, len(name))
            out[off + 8 : off + 8 + len(name)] = name
            last = off
            used += size
        struct.pack_into("<H", out, last + 4, block + bsize - last)
        for spare in range(block + bsize, nblocks * bsize, bsize):  # empty blocks
            struct.pack_into("<IH", out, spare, 0, bsize)
        return out

    # -- file data -----------------------------------------------------------
    def copy_data(self, ino: Inode, mapping: list[tuple[int, int, int]]) -> None:
        data = ino.node.data
        assert data is not None
        bsize, fd = self.bsize, self.fd
        i = 0
        for off, length in ino.extents:
            end = off + length
            while i < len(mapping) and (mapping[i][0] + mapping[i][2]) * bsize <= off:
                i += 1
            j = i
            while j < len(mapping) and mapping[j][0] * bsize < end:
                lblk, pblk, n = mapping[j]
                a, b = max(off, lblk * bsize), min(end, (lblk + n) * bsize)
                if a < b:
                    data.copy_to(fd, a, pblk * bsize + a - lblk * bsize, b - a)
                j += 1
        close_data(data)

