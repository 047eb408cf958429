"""Which FFS images hold a plan (:mod:`smolfs.fs.ffs.layout`): an image fits when its
:mod:`~smolfs.fs.ffs.geometry` has enough inodes and data blocks for the plan, with the
free inodes and space the options ask for; :func:`minimum_size` searches the smallest.
"""

from __future__ import annotations

from dataclasses import replace

from smolfs.fs.ffs import structs as s
from smolfs.fs.ffs.geometry import Geometry, geometry, howmany
from smolfs.fs.ffs.layout import Plan
from smolfs.fs.ffs.options import FfsOptions

#: The smallest image: NetBSD (kernel and fsck_ffs) looks for a superblock at the UFS2
#: location (64 KiB) before the UFS1 one, and a disk that ends before it cannot be
#: read there ("CANNOT READ: BLK 128"), so even a UFS1 image reaches past it.
MIN_IMAGE = s.SBLOCK_UFS2 + s.SBLOCKSIZE


def fits(geo: Geometry | None, p: Plan, opts: FfsOptions | None = None) -> bool:
    """*geo* holds the plan, with the free inodes and space *opts* asks for."""
    if geo is None or geo.inodes < p.inodes_needed(opts):
        return False
    spare = howmany(opts.free_space, geo.bsize) if opts is not None else 0
    return geo.data_blocks() >= p.vblocks + spare


def choose_geometry(size: int, opts: FfsOptions, p: Plan) -> Geometry | None:
    """The geometry of an image of *size* bytes for the plan, None when it cannot hold it
    (or is smaller than :data:`MIN_IMAGE`).

    ``opts.density`` given: that density (as newfs ``-i``). ``opts.inodes`` given: at
    least that many inodes (newfs ``-n``). Neither: newfs's density for the size
    (:meth:`FfsOptions.default_density`) when the image has room for it, else as many
    inodes as the content needs (so any size that holds the content is accepted).
    """
    if size < MIN_IMAGE:
        return None
    need = p.inodes_needed(opts)
    if opts.density is None and opts.inodes is None:
        geo = geometry(size, replace(opts, density=opts.default_density(size)), need)
        if fits(geo, p, opts):
            return geo
    return geometry(size, opts, max(need, opts.inodes or 0))


def minimum_size(p: Plan, opts: FfsOptions) -> int:
    """Smallest image size in bytes (a multiple of the block size) that holds the plan."""
    bsize, _ = opts.block_sizes()
    need = max(p.inodes_needed(opts), opts.inodes or 0)

    def ok(blocks: int) -> bool:
        return fits(choose_geometry(blocks * bsize, opts, p), p, opts)

    isize = 128 if opts.version == 1 else 256
    spare = howmany(opts.free_space, bsize)
    lo = max(1, p.vblocks + spare + need * isize // bsize)  # a lower bound: data, inode tables
    if ok(lo):
        return lo * bsize
    hi = lo * 2 + 64
    while not ok(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi * bsize
