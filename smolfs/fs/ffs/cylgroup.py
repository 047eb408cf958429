"""Cylinder group blocks: inode map, free fragment map, cluster map and their summaries,
computed from the free map as NetBSD's ``fsck_ffs`` pass 5 recomputes them (the rules:
``smolfs/fs/README.md``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from smolfs.fs.ffs import structs as s
from smolfs.fs.ffs.geometry import Geometry

_RUN_OF_FREE = re.compile(b"\x01+")
_PARTIAL = re.compile(b"\x02")


def set_bits(buf: bytearray, start: int, end: int) -> None:
    """Set bits ``[start, end)`` of a little-endian bitmap."""
    if end <= start:
        return
    first, last = start >> 3, (end - 1) >> 3
    if first == last:
        buf[first] |= ((1 << (end - start)) - 1) << (start & 7)
        return
    buf[first] |= (0xFF << (start & 7)) & 0xFF
    if last > first + 1:
        buf[first + 1:last] = b"\xff" * (last - first - 1)
    buf[last] |= 0xFF >> (7 - ((end - 1) & 7))


def _fragment_runs(pattern: int, frag: int) -> list[int]:
    """Lengths of the maximal runs of set bits in a *frag*-bit block pattern."""
    runs, run = [], 0
    for i in range(frag):
        if pattern >> i & 1:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    if run:
        runs.append(run)
    return runs


_RUNS = {frag: [_fragment_runs(p, frag) for p in range(1 << frag)] for frag in (1, 2, 4, 8)}


@dataclass
class CgSummary:
    ndir: int
    nbfree: int
    nifree: int
    nffree: int


def block_patterns(freemap: bytes, ndblk: int, frag: int) -> bytes:
    """One byte per block (the last one possibly partial): its fragments' free bits."""
    nblocks = -(-ndblk // frag)
    if frag == 8:
        return bytes(freemap[:nblocks])
    value = int.from_bytes(freemap, "little")
    mask = (1 << frag) - 1
    return bytes((value >> (i * frag)) & mask for i in range(nblocks))


def build(geo: Geometry, c: int, inodes_used: int, ndir: int, free_ranges: list[tuple[int, int]],
          time: int, initediblk: int) -> tuple[bytes, CgSummary]:
    """The cylinder group block of group *c* (``fs_cgsize`` bytes) and its summary.

    *inodes_used*: inodes ``[0, inodes_used)`` of the group are in use (group 0
    counts the reserved inodes 0 and 1). *free_ranges*: free fragments, relative
    to the group's first fragment.
    """
    frag, ipg, fpg = geo.frag, geo.ipg, geo.fpg
    ndblk = geo.cg_ndblk(c)
    ufs1 = geo.version == 1
    iusedoff = s.CG.size + (6 if ufs1 else 0)  # UFS1 keeps the old rotational tables' room
    freeoff = iusedoff + -(-ipg // 8)
    mapbytes = -(-fpg // 8)
    csum = geo.contigsumsize
    if csum > 0:
        clustersumoff = (freeoff + mapbytes - 4 + 3) // 4 * 4
        clusteroff = clustersumoff + (csum + 1) * 4
        nextfreeoff = clusteroff + -(-(fpg // frag) // 8)
    else:
        clustersumoff = clusteroff = 0
        nextfreeoff = freeoff + mapbytes

    block = bytearray(geo.cgsize)
    set_bits(block, iusedoff * 8, iusedoff * 8 + inodes_used)
    freemap = bytearray(mapbytes)
    for a, b in free_ranges:
        set_bits(freemap, a, b)

    patterns = block_patterns(freemap, ndblk, frag)
    full = (1 << frag) - 1
    classes = patterns.translate(_class_table(full))
    nbfree = classes.count(1)
    nffree = 0
    frsum = [0] * s.MAXFRAG
    runs = _RUNS[frag]
    for m in _PARTIAL.finditer(classes):
        for run in runs[patterns[m.start()]]:
            frsum[run] += 1
            nffree += run
    block[freeoff:freeoff + mapbytes] = freemap

    nclusterblks = ndblk // frag if csum > 0 else 0
    if csum > 0:
        sums = [0] * (csum + 1)
        clusters = bytearray(-(-(fpg // frag) // 8))
        for m in _RUN_OF_FREE.finditer(classes, 0, nclusterblks):
            a, b = m.span()
            sums[min(b - a, csum)] += 1
            set_bits(clusters, a, b)
        for k in range(1, csum + 1):
            block[clustersumoff + 4 * k:clustersumoff + 4 * k + 4] = sums[k].to_bytes(4, "little")
        block[clusteroff:clusteroff + len(clusters)] = clusters

    nifree = ipg - inodes_used
    header = dict(
        cg_magic=s.CG_MAGIC,
        cg_cgx=c,
        cg_ndblk=ndblk,
        cg_cs=[ndir, nbfree, nifree, nffree],
        cg_frsum=frsum,
        cg_iusedoff=iusedoff,
        cg_freeoff=freeoff,
        cg_nextfreeoff=nextfreeoff,
        cg_clustersumoff=clustersumoff,
        cg_clusteroff=clusteroff,
        cg_nclusterblks=nclusterblks,
    )
    if ufs1:
        header.update(cg_old_time=time, cg_old_ncyl=1,
                      cg_old_niblk=(ipg + 0x8000) % 0x10000 - 0x8000,
                      cg_old_btotoff=s.CG.size, cg_old_boff=s.CG.size + 4)
    else:
        header.update(cg_time=time, cg_niblk=ipg, cg_initediblk=initediblk)
    block[:s.CG.size] = s.CG.pack(**header)
    return bytes(block), CgSummary(ndir, nbfree, nifree, nffree)


_CLASS_TABLES: dict[int, bytes] = {}


def _class_table(full: int) -> bytes:
    """Translate a block pattern to 0 (all used), 1 (all free) or 2 (partly free)."""
    table = _CLASS_TABLES.get(full)
    if table is None:
        table = bytes(0 if p == 0 else 1 if p == full else 2 for p in range(256))
        _CLASS_TABLES[full] = table
    return table
