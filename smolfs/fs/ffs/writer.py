"""Write an FFS image: inodes, data, indirect blocks, cylinder groups, superblocks.

The layout comes from :mod:`smolfs.fs.ffs.layout`; this module turns it into bytes
(contents with ``Data.copy_to``, metadata in few large ``pwrite`` calls; see
``smolfs/fs/README.md``)."""

from __future__ import annotations

import array
import hashlib
import os
import struct
import sys

from smolfs.errors import FilesystemLimitError, ImageTooSmall
from smolfs.fs.ffs import cylgroup
from smolfs.fs.ffs import structs as s
from smolfs.fs.ffs.geometry import Geometry, VirtualMap
from smolfs.fs.ffs.layout import Plan, PlannedInode, cached_plan, forget_plan, max_file_size
from smolfs.fs.ffs.options import FfsOptions
from smolfs.fs.ffs.sizing import choose_geometry, fits, minimum_size
from smolfs.fs.tree import Kind, Tree

_UFS1_INODE = struct.Struct("<HhIQiiiiii12i3iIIiIIQ")
_UFS2_INODE = struct.Struct("<HhIIIQQqqqqiiiiiIIi2q12q3qQI3I")
assert _UFS1_INODE.size == 128 and _UFS2_INODE.size == 256
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def makedev(major: int, minor: int) -> int:
    """NetBSD's ``makedev``: 12-bit major, 20-bit minor split around it."""
    return ((major << 8) & 0x000FFF00) | (minor & 0xFF) | ((minor << 12) & 0xFFF00000)


def _t32(t: int) -> int:
    return min(max(t, _INT32_MIN), _INT32_MAX)


def write(tree: Tree, fd: int, size: int, opts: FfsOptions) -> None:
    """Write the whole image (*size* bytes) for *tree* into the empty file *fd*."""
    p = cached_plan(tree, opts)
    _, fsize = opts.block_sizes()
    if opts.version == 1 and size // fsize >= 1 << 31:
        raise FilesystemLimitError(
            f"an FFS image of {size} bytes is too big for UFS1 with fsize={fsize} "
            "(at most 2^31 fragments)", hint="use -o version=2, or a bigger fsize")
    geo = choose_geometry(size, opts, p)
    if not fits(geo, p, opts):
        need = minimum_size(p, opts)
        raise ImageTooSmall(
            f"an FFS image of {size} bytes cannot hold this tree; it needs at least {need} bytes",
            need,
            hint=f"use a size of at least {-(-need // (1 << 20))}m, or leave the size automatic")
    assert geo is not None
    try:
        _Writer(tree, fd, size, opts, p, geo).run()
    finally:
        forget_plan()  # do not keep the tree alive after its image is written


class _Writer:
    def __init__(self, tree: Tree, fd: int, size: int, opts: FfsOptions, p: Plan,
                 geo: Geometry) -> None:
        self.tree, self.fd, self.size, self.opts, self.plan, self.geo = tree, fd, size, opts, p, geo
        self.vm = VirtualMap(geo)
        self.fsize, self.bsize, self.frag = geo.fsize, geo.bsize, geo.frag
        self.timestamp = opts.timestamp if opts.timestamp is not None else max(
            (pi.node.mtime for pi in p.inodes), default=0)
        digest = hashlib.sha256()
        for pi in p.inodes:
            digest.update(struct.pack("<IQq", pi.node.full_mode, pi.size, pi.node.mtime))
            if pi.content is not None:
                digest.update(pi.content)
        raw = opts.uuid if opts.uuid is not None else hashlib.sha256(
            digest.digest() + repr((opts, size)).encode()).digest()
        self.fs_id = struct.unpack_from("<ii", raw)
        self.gen_seed = int.from_bytes(raw[8:12] if len(raw) >= 12 else raw[:4], "little")
        self.meta: list[tuple[int, bytes]] = []  # (byte offset, bytes) of metadata and content

    # -- top level ------------------------------------------------------------
    def run(self) -> None:
        os.ftruncate(self.fd, self.size)
        geo = self.geo
        isize = geo.inode_size
        last_ino = s.ROOTINO + len(self.plan.inodes)  # one past the highest inode
        tables = [bytearray(min(max(last_ino - c * geo.ipg, 0), geo.ipg) * isize)
                  for c in range(geo.ncg)]
        ndirs = [0] * geo.ncg
        pack_inode = self._pack_ufs1 if geo.version == 1 else self._pack_ufs2
        for pi in self.plan.inodes:
            db, ib = self._place(pi)
            c, idx = divmod(pi.ino, geo.ipg)
            pack_inode(tables[c], idx * isize, pi, db, ib)
            if pi.node.kind == Kind.DIR:
                ndirs[c] += 1
        self._flush_meta()
        for c, table in enumerate(tables):
            if table:
                os.pwrite(self.fd, table, (c * geo.fpg + geo.iblkno) * self.fsize)
        self._write_groups(tables, ndirs)

    # -- blocks of one inode --------------------------------------------------
    def _place(self, pi: PlannedInode) -> tuple[list[int], list[int]]:
        """Map the inode's blocks to fragments, queue its writes; return (db, ib)."""
        db = [0] * s.NDADDR
        ib = [0] * s.NIADDR
        if not pi.runs and pi.tail is None:
            return db, ib
        vm, frag, bsize, fsize = self.vm, self.frag, self.bsize, self.fsize
        nindir = self.geo.nindir
        far: list[int] | None = None  # pointers for logical blocks >= NDADDR
        if pi.indirect:
            far = [0] * (-(-pi.size // bsize) - s.NDADDR)
        pieces: list[tuple[int, int, int]] = []  # (logical byte offset, image byte offset, len)
        for lbn, vblock, count in pi.runs:
            for first, n in vm.runs(vblock, count):
                pieces.append((lbn * bsize, first * fsize, n * bsize))
                end = lbn + n
                if lbn < s.NDADDR:
                    for k in range(lbn, min(end, s.NDADDR)):
                        db[k] = first + (k - lbn) * frag
                if far is not None and end > s.NDADDR:
                    a = max(lbn, s.NDADDR)
                    start = first + (a - lbn) * frag
                    far[a - s.NDADDR:end - s.NDADDR] = range(start, start + (end - a) * frag, frag)
                lbn = end
        if pi.tail is not None:
            lbn, vfrag, nfrags = pi.tail
            first = vm.frag_of(vfrag // frag) + vfrag % frag
            db[lbn] = first
            pieces.append((lbn * bsize, first * fsize, nfrags * fsize))
        if pi.indirect:
            assert far is not None
            self._indirect(pi, far, ib, nindir)
        self._queue_data(pi, pieces)
        return db, ib

    def _indirect(self, pi: PlannedInode, far: list[int], ib: list[int], nindir: int) -> None:
        n = nindir
        where = {key: self.vm.frag_of(vblock) for key, vblock in pi.indirect}
        code = "i" if self.geo.version == 1 else "q"
        for key, first in where.items():
            if key == (1,):
                ptrs = far[0:n]
                ib[0] = first
            elif key == (2,):
                ptrs = [where.get((2, i), 0) for i in range(n)]
                ib[1] = first
            elif key == (3,):
                ptrs = [where.get((3, i), 0) for i in range(n)]
                ib[2] = first
            elif key[0] == 2:
                a = n + key[1] * n
                ptrs = far[a:a + n]
            elif len(key) == 2:
                ptrs = [where.get((3, key[1], j), 0) for j in range(n)]
            else:
                a = n + n * n + (key[1] * n + key[2]) * n
                ptrs = far[a:a + n]
            arr = array.array(code, ptrs)
            if sys.byteorder == "big":
                arr.byteswap()
            self.meta.append((first * self.fsize,
                              arr.tobytes() + bytes((n - len(arr)) * arr.itemsize)))

    def _queue_data(self, pi: PlannedInode, pieces: list[tuple[int, int, int]]) -> None:
        size = pi.size
        if pi.content is not None:
            content = pi.content
            for lo, dst, n in pieces:
                chunk = content[lo:lo + n]
                if chunk:
                    self.meta.append((dst, chunk))
            return
        data = pi.data
        if data is None:
            return
        copies: list[tuple[int, int, int]] = []
        regions = pi.extents if pi.extents is not None else [(0, size)]
        for lo, dst, n in sorted(pieces):
            hi = min(lo + n, size)
            for off, length in regions:
                a, b = max(lo, off), min(hi, off + length)
                if a >= b:
                    continue
                target = dst + (a - lo)
                if copies and copies[-1][0] + copies[-1][2] == a and \
                        copies[-1][1] + copies[-1][2] == target:
                    prev = copies.pop()
                    copies.append((prev[0], prev[1], prev[2] + b - a))
                else:
                    copies.append((a, target, b - a))
        for src, dst, n in copies:
            data.copy_to(self.fd, src, dst, n)
        close = getattr(data, "close", None)
        if close is not None:
            close()

    def _flush_meta(self) -> None:
        """Write queued metadata, merging neighbours into larger writes."""
        self.meta.sort(key=lambda item: item[0])
        fd = self.fd
        start, parts, end = -1, [], -1
        for off, data in self.meta:
            if off == end:
                parts.append(data)
                end += len(data)
                continue
            if parts:
                os.pwrite(fd, b"".join(parts), start)
            start, parts, end = off, [data], off + len(data)
        if parts:
            os.pwrite(fd, b"".join(parts), start)
        self.meta = []

    # -- inodes ---------------------------------------------------------------
    def _common(self, pi: PlannedInode, db: list[int], ib: list[int]) -> tuple[int, list[int]]:
        node = pi.node
        if node.kind in (Kind.CHR, Kind.BLK):
            dev = makedev(*node.rdev)
            if self.geo.version == 1 and dev >= 1 << 31:  # di_rdev is an int32 in UFS1
                dev -= 1 << 32
            db = [dev] + [0] * (s.NDADDR - 1)
        gen = ((pi.ino * 2654435761) ^ self.gen_seed) & 0x7FFFFFFF or 1
        return gen, db + ib

    def _inline_symlink(self, table: bytearray, off: int, pi: PlannedInode) -> None:
        if pi.node.kind == Kind.SYMLINK and pi.content is None:
            target = pi.node.target
            table[off:off + len(target)] = target

    def _pack_ufs1(self, table: bytearray, off: int, pi: PlannedInode, db: list[int],
                   ib: list[int]) -> None:
        node = pi.node
        gen, ptrs = self._common(pi, db, ib)
        a, m, c = node.times()
        _UFS1_INODE.pack_into(
            table, off, node.full_mode, pi.nlink, 0, pi.size, _t32(a), 0, _t32(m), 0, _t32(c), 0,
            *ptrs, node.flags & 0xFFFFFFFF, pi.frags * (self.fsize // s.DEV_BSIZE), gen,
            node.uid, node.gid, 0)
        self._inline_symlink(table, off + 40, pi)

    def _pack_ufs2(self, table: bytearray, off: int, pi: PlannedInode, db: list[int],
                   ib: list[int]) -> None:
        node = pi.node
        gen, ptrs = self._common(pi, db, ib)
        a, m, c = node.times()
        _UFS2_INODE.pack_into(
            table, off, node.full_mode, pi.nlink, node.uid, node.gid, 0, pi.size,
            pi.frags * (self.fsize // s.DEV_BSIZE), a, m, c, min(a, m, c), 0, 0, 0, 0, gen, 0,
            node.flags & 0xFFFFFFFF, 0, 0, 0, *ptrs, 0, 0, 0, 0, 0)
        self._inline_symlink(table, off + 112, pi)

    # -- cylinder groups and superblocks ---------------------------------------
    def _free_ranges(self) -> list[list[tuple[int, int]]]:
        """Free fragments of each group, relative to the group's start."""
        geo, frag = self.geo, self.frag
        out: list[list[tuple[int, int]]] = [[] for _ in range(geo.ncg)]

        def add(a: int, b: int) -> None:
            while a < b:
                c = a // geo.fpg
                end = min(b, (c + 1) * geo.fpg)
                out[c].append((a - c * geo.fpg, end - c * geo.fpg))
                a = end

        # Pieces of the data area smaller than a block, never given out.
        for c in range(geo.ncg):
            base = c * geo.fpg
            end = base + geo.cg_ndblk(c)
            ranges = [(base + geo.dblkno + (geo.csfrags if c == 0 else 0), end)]
            if c > 0:
                ranges.insert(0, (base, min(end, base + geo.sblkno)))
            for a, b in ranges:
                ra, rb = -(-a // frag) * frag, b // frag * frag
                if rb <= ra:
                    add(a, b)
                else:
                    add(a, ra)
                    add(rb, b)
        # Whole blocks beyond the last one used.
        vm, used = self.vm, self.plan.vblocks
        for start, first, count in zip(vm.starts, vm.phys, vm.counts, strict=True):
            skip = min(max(used - start, 0), count)
            if skip < count:
                add(first + skip * frag, first + count * frag)
        # The unused ends of blocks shared by fragments.
        for vblock, nused in self.plan.partial:
            first = vm.frag_of(vblock)
            add(first + nused, first + frag)
        return out

    def _write_groups(self, tables: list[bytearray], ndirs: list[int]) -> None:
        geo, fd, fsize = self.geo, self.fd, self.fsize
        free = self._free_ranges()
        last_ino = s.ROOTINO + len(self.plan.inodes)  # one past the highest inode
        sums: list[cylgroup.CgSummary] = []
        blocks: list[bytes] = []
        for c in range(geo.ncg):
            used = min(max(last_ino - c * geo.ipg, 0), geo.ipg)
            inited = min(geo.ipg, max(2 * geo.inopb, -(-used // geo.inopb) * geo.inopb))
            block, summary = cylgroup.build(geo, c, used, ndirs[c], free[c], self.timestamp,
                                            inited)
            sums.append(summary)
            blocks.append(block)
        csum = b"".join(struct.pack("<iiii", x.ndir, x.nbfree, x.nifree, x.nffree) for x in sums)
        os.pwrite(fd, csum, geo.dblkno * fsize)
        sb = self._superblock(sums)
        os.pwrite(fd, sb, geo.sblockloc)
        for c in range(geo.ncg):
            base = c * geo.fpg
            # The backup superblock and the group block are neighbours: one write.
            gap = (geo.cblkno - geo.sblkno) * fsize - len(sb)
            os.pwrite(fd, sb + bytes(gap) + blocks[c], (base + geo.sblkno) * fsize)

    def _superblock(self, sums: list[cylgroup.CgSummary]) -> bytes:
        geo, opts = self.geo, self.opts
        ndir = sum(x.ndir for x in sums)
        nbfree = sum(x.nbfree for x in sums)
        nifree = sum(x.nifree for x in sums)
        nffree = sum(x.nffree for x in sums)
        dsize = geo.size - geo.sblkno - geo.ncg * (geo.dblkno - geo.sblkno) - geo.csfrags
        bsize, fsize, frag = geo.bsize, geo.fsize, geo.frag
        maxcontig = opts.maxcontig or max(1, min(s.MAXPHYS, s.MAXBSIZE) // bsize)
        ufs1 = geo.version == 1
        fields: dict[str, object] = dict(
            fs_sblkno=geo.sblkno, fs_cblkno=geo.cblkno, fs_iblkno=geo.iblkno,
            fs_dblkno=geo.dblkno, fs_ncg=geo.ncg, fs_bsize=bsize, fs_fsize=fsize, fs_frag=frag,
            fs_minfree=opts.minfree, fs_bmask=~(bsize - 1), fs_fmask=~(fsize - 1),
            fs_bshift=bsize.bit_length() - 1, fs_fshift=fsize.bit_length() - 1,
            fs_maxcontig=maxcontig, fs_maxbpg=opts.maxbpg or bsize // 4,
            fs_fragshift=geo.fragshift, fs_fsbtodb=(fsize // s.DEV_BSIZE).bit_length() - 1,
            fs_sbsize=min(s.SBLOCKSIZE, -(-s.SUPERBLOCK.size // fsize) * fsize),
            fs_nindir=geo.nindir, fs_inopb=geo.inopb,
            fs_optim=s.FS_OPTTIME if opts.optimization == "time" else s.FS_OPTSPACE,
            fs_id=list(self.fs_id), fs_cssize=geo.cssize, fs_cgsize=geo.cgsize,
            fs_ipg=geo.ipg, fs_fpg=geo.fpg, fs_clean=s.FS_ISCLEAN,
            fs_old_flags=s.FS_FLAGS_UPDATED, fs_volname=opts.label.encode(),
            fs_maxbsize=bsize, fs_sblockloc=geo.sblockloc,
            fs_cstotal=[ndir, nbfree, nifree, nffree, 0, 0, 0, 0],
            fs_time=self.timestamp, fs_size=geo.size, fs_dsize=dsize, fs_csaddr=geo.dblkno,
            fs_avgfilesize=opts.avgfilesize, fs_avgfpdir=opts.avgfpdir,
            fs_contigsumsize=geo.contigsumsize, fs_maxsymlinklen=60 if ufs1 else 120,
            fs_old_inodefmt=s.FS_44INODEFMT,
            fs_maxfilesize=max_file_size(2, bsize) if not ufs1 else _ufs1_maxfilesize(bsize),
            fs_qbmask=bsize - 1, fs_qfmask=fsize - 1, fs_magic=s.FS_UFS1_MAGIC if ufs1
            else s.FS_UFS2_MAGIC,
        )
        if ufs1:
            nspf = fsize // s.DEV_BSIZE
            fields.update(
                fs_old_cgoffset=0, fs_old_cgmask=-1, fs_old_time=_t32(self.timestamp),
                fs_old_size=geo.size, fs_old_dsize=dsize, fs_old_rotdelay=0, fs_old_rps=60,
                fs_old_nspf=nspf, fs_old_cpg=1, fs_old_interleave=1, fs_old_trackskew=0,
                fs_old_cpc=0, fs_old_postblformat=s.FS_DYNAMICPOSTBLFMT, fs_old_nrpos=1,
                fs_old_spc=geo.fpg * nspf, fs_old_nsect=geo.fpg * nspf,
                fs_old_npsect=geo.fpg * nspf, fs_old_ncyl=geo.ncg, fs_old_csaddr=geo.dblkno,
                fs_old_cstotal=[ndir, nbfree, nifree, nffree],
            )
        return s.SUPERBLOCK.pack(**fields)


def _ufs1_maxfilesize(bsize: int) -> int:
    """fs_maxfilesize as newfs/makefs store it for UFS1 (before the kernel's clamp)."""
    nindir = bsize // 4
    size = bsize * s.NDADDR - 1
    per = bsize
    for _ in range(s.NIADDR):
        per *= nindir
        size += per
    return size
