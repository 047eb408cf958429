"""FFS geometry for one image size: cylinder groups, inodes per group, where metadata sits.

Computed the way NetBSD's makefs (``usr.sbin/makefs/ffs/mkfs.c``) does, so that the
same size and density give the same superblock geometry. All addresses are in
fragments. :meth:`Geometry.extents` lists the whole blocks left for data, and
:class:`VirtualMap` lays a run of virtual blocks onto them in order.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from smolfs.fs.ffs import structs as s
from smolfs.fs.ffs.options import FfsOptions


def howmany(a: int, b: int) -> int:
    """How many *b*-sized pieces hold *a* (NetBSD's ``howmany``)."""
    return -(-a // b)


def _roundup(a: int, b: int) -> int:
    return -(-a // b) * b


def _log2(n: int) -> int:
    return n.bit_length() - 1


@dataclass(frozen=True)
class Geometry:
    """Superblock geometry for one image size (all addresses in fragments)."""

    version: int
    bsize: int
    fsize: int
    size: int  # fs_size: fragments in the filesystem
    sblkno: int
    cblkno: int
    iblkno: int
    dblkno: int
    fpg: int
    ipg: int
    ncg: int
    density: int
    contigsumsize: int

    @property
    def frag(self) -> int:
        return self.bsize // self.fsize

    @property
    def fragshift(self) -> int:
        return _log2(self.frag)

    @property
    def inode_size(self) -> int:
        return 128 if self.version == 1 else 256

    @property
    def inopb(self) -> int:
        return self.bsize // self.inode_size

    @property
    def inopf(self) -> int:
        return self.inopb // self.frag

    @property
    def nindir(self) -> int:
        return self.bsize // (4 if self.version == 1 else 8)

    @property
    def sblockloc(self) -> int:
        return s.SBLOCK_UFS1 if self.version == 1 else s.SBLOCK_UFS2

    @property
    def old_cpg(self) -> int:
        return 1 if self.version == 1 else 0

    @property
    def cssize(self) -> int:
        return _roundup(self.ncg * 16, self.fsize)

    @property
    def csfrags(self) -> int:
        return self.cssize // self.fsize

    @property
    def cgsize(self) -> int:
        return _roundup(cg_size(self.version, self.bsize, self.fsize, self.contigsumsize,
                                self.ipg, self.fpg), self.fsize)

    @property
    def inodes(self) -> int:
        return self.ncg * self.ipg

    def cg_ndblk(self, c: int) -> int:
        return min(self.fpg, self.size - c * self.fpg)

    def extents(self) -> list[tuple[int, int]]:
        """Whole blocks free for data, as ``(first fragment, number of blocks)``, in order."""
        frag = self.frag
        out: list[tuple[int, int]] = []

        def add(start: int, end: int) -> None:
            start, end = _roundup(start, frag), end // frag * frag
            if end <= start:
                return
            if out and out[-1][0] + out[-1][1] * frag == start:
                out[-1] = (out[-1][0], out[-1][1] + (end - start) // frag)
            else:
                out.append((start, (end - start) // frag))

        for c in range(self.ncg):
            base = c * self.fpg
            end = base + self.cg_ndblk(c)
            if c > 0:
                add(base, min(end, base + self.sblkno))
            add(base + self.dblkno + (self.csfrags if c == 0 else 0), end)
        return out

    def data_blocks(self) -> int:
        return sum(n for _, n in self.extents())


def cg_size(version: int, bsize: int, fsize: int, contigsumsize: int, ipg: int, fpg: int) -> int:
    """CGSIZE of fs.h: the bytes a cylinder group block needs."""
    old_cpg = 1 if version == 1 else 0
    size = s.SIZEOF_CG + 4 + old_cpg * 4 + old_cpg * 2 + howmany(ipg, 8) + howmany(fpg, 8)
    if contigsumsize > 0:
        size += contigsumsize * 4 + howmany(fpg // (bsize // fsize), 8)
    return size


def contig_sum_size(opts: FfsOptions) -> int:
    bsize, _ = opts.block_sizes()
    maxcontig = opts.maxcontig or max(1, min(s.MAXPHYS, s.MAXBSIZE) // bsize)
    return min(maxcontig, s.FS_MAXCONTIG) if maxcontig > 1 else 0


def geometry(size_bytes: int, opts: FfsOptions, inodes: int) -> Geometry | None:
    """The geometry of an image of *size_bytes* holding at least *inodes* inodes.

    *inodes* counts the reserved inodes 0 and 1. None when no geometry fits.
    With ``opts.density`` None the density is lowered until the inodes fit.
    """
    _, fsize = opts.block_sizes()
    fs_size = size_bytes // fsize
    if fs_size <= 0:
        return None
    if opts.density is not None:
        return _geometry_for_density(fs_size, opts, opts.density)
    density = max(fsize, fs_size * fsize // max(inodes, 1))
    while True:
        geo = _geometry_for_density(fs_size, opts, density)
        if geo is not None and geo.inodes >= inodes:
            return geo
        if density <= fsize:
            return geo
        have = geo.inodes if geo is not None else 0
        density = max(fsize, min(density - fsize, density * max(have, 1) // inodes))


def _geometry_for_density(fs_size: int, opts: FfsOptions, density: int) -> Geometry | None:
    bsize, fsize = opts.block_sizes()
    version = opts.version
    frag = bsize // fsize
    csum = contig_sum_size(opts)
    isize = 128 if version == 1 else 256
    inopb = bsize // isize
    inopf = inopb // frag
    sblockloc = s.SBLOCK_UFS1 if version == 1 else s.SBLOCK_UFS2
    sblkno = _roundup(howmany(sblockloc + s.SBLOCKSIZE, fsize), frag)
    cblkno = sblkno + _roundup(howmany(s.SBLOCKSIZE, fsize), frag)
    iblkno = cblkno + frag

    def cgsize(ipg: int, fpg: int) -> int:
        return cg_size(version, bsize, fsize, csum, ipg, fpg)

    # Smallest cylinder group meeting the density; where even that group's block would
    # overflow, the density is lowered (makefs steps it down one fragment at a time;
    # the group grows with the density, so a binary search finds the same value).
    def smallest(fpi: int) -> tuple[int, int]:
        minfpg = min(fpi * inopb, fs_size)
        fpg = max(_roundup(iblkno + inopb // inopf, frag), minfpg)
        ipg = _roundup(howmany(fpg, fpi), inopb)
        fpg = max(_roundup(iblkno + ipg // inopf, frag), minfpg)
        return fpg, _roundup(howmany(fpg, fpi), inopb)

    fpi = max(density // fsize, 1)
    fpg, ipg = smallest(fpi)
    if cgsize(ipg, fpg) >= bsize:
        lo, hi = 0, fpi - 1  # the largest fitting value, 0 when none does
        while lo < hi:
            mid = (lo + hi + 1) // 2
            trial_fpg, trial_ipg = smallest(mid)
            if cgsize(trial_ipg, trial_fpg) < bsize:
                lo = mid
            else:
                hi = mid - 1
        if lo == 0:
            return None
        fpi = lo
        density = fpi * fsize
        fpg, ipg = smallest(fpi)
    fpg = _roundup(fpg, frag)

    def ipg_of(f: int) -> int:
        return _roundup(howmany(f, fpi), inopb)

    # Grow the group as far as its cylinder group block allows, but not past the image.
    cap = max(fpg, _roundup(fs_size, frag))
    lo, hi = 0, (cap - fpg) // frag
    while lo < hi:
        mid = (lo + hi + 1) // 2
        f = fpg + mid * frag
        if cgsize(ipg_of(f), f) <= bsize:
            lo = mid
        else:
            hi = mid - 1
    fpg += lo * frag
    ipg = ipg_of(fpg)

    # Make the last group big enough to hold its own metadata.
    while True:
        ncg = howmany(fs_size, fpg)
        lastmin = _roundup(iblkno + ipg // inopf, frag)
        if fs_size < lastmin or fpg < lastmin:
            return None
        rest = fs_size % fpg
        if rest == 0 or rest >= lastmin:
            break
        fpg -= frag
        ipg = ipg_of(fpg)
    dblkno = iblkno + ipg // inopf
    geo = Geometry(version=version, bsize=bsize, fsize=fsize, size=fs_size, sblkno=sblkno,
                   cblkno=cblkno, iblkno=iblkno, dblkno=dblkno, fpg=fpg, ipg=ipg, ncg=ncg,
                   density=density, contigsumsize=csum)
    if geo.cgsize > bsize or dblkno + geo.csfrags > geo.cg_ndblk(0):
        return None
    return geo


class VirtualMap:
    """Maps virtual blocks onto the geometry's data extents."""

    def __init__(self, geo: Geometry) -> None:
        self.frag = geo.frag
        self.starts: list[int] = []  # first virtual block of each extent
        self.phys: list[int] = []  # first fragment of each extent
        self.counts: list[int] = []
        v = 0
        for first, count in geo.extents():
            self.starts.append(v)
            self.phys.append(first)
            self.counts.append(count)
            v += count
        self.total = v

    def frag_of(self, vblock: int) -> int:
        i = bisect.bisect_right(self.starts, vblock) - 1
        return self.phys[i] + (vblock - self.starts[i]) * self.frag

    def runs(self, vblock: int, count: int) -> list[tuple[int, int]]:
        """Physical runs ``(first fragment, blocks)`` for virtual blocks ``[vblock, +count)``."""
        out: list[tuple[int, int]] = []
        i = bisect.bisect_right(self.starts, vblock) - 1
        while count > 0:
            off = vblock - self.starts[i]
            n = min(count, self.counts[i] - off)
            out.append((self.phys[i] + off * self.frag, n))
            vblock += n
            count -= n
            i += 1
        return out
