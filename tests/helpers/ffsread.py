"""An independent FFS reader for tests: parses an image with plain ``struct`` and
hand-written offsets (from NetBSD's fs.h, dinode.h and dir.h, not from the writer's
declarations), walks every directory and inode, and recomputes every allocation
map and summary to compare them with what the image claims.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

UFS1_MAGIC, UFS2_MAGIC, CG_MAGIC = 0x011954, 0x19540119, 0x090255


def i32(buf: bytes, off: int) -> int:
    return struct.unpack_from("<i", buf, off)[0]


def i64(buf: bytes, off: int) -> int:
    return struct.unpack_from("<q", buf, off)[0]


@dataclass
class Super:
    ufs2: bool
    sblockloc: int
    sblkno: int
    cblkno: int
    iblkno: int
    dblkno: int
    ncg: int
    bsize: int
    fsize: int
    frag: int
    minfree: int
    sbsize: int
    nindir: int
    inopb: int
    cssize: int
    cgsize: int
    ipg: int
    fpg: int
    size: int
    dsize: int
    csaddr: int
    cstotal: tuple[int, int, int, int]
    old_cstotal: tuple[int, int, int, int]
    contigsumsize: int
    maxsymlinklen: int
    maxbpg: int
    raw: bytes


def read_super(img: bytes) -> Super:
    for loc in (65536, 8192):
        raw = img[loc:loc + 1376]
        magic = i32(raw, 1372) if len(raw) == 1376 else 0
        if magic in (UFS1_MAGIC, UFS2_MAGIC) and i64(raw, 1000) == loc:
            break
    else:
        raise AssertionError("no superblock")
    ufs2 = magic == UFS2_MAGIC
    return Super(
        ufs2=ufs2, sblockloc=loc, sblkno=i32(raw, 8), cblkno=i32(raw, 12), iblkno=i32(raw, 16),
        dblkno=i32(raw, 20), ncg=i32(raw, 44), bsize=i32(raw, 48), fsize=i32(raw, 52),
        frag=i32(raw, 56), minfree=i32(raw, 60), sbsize=i32(raw, 104), nindir=i32(raw, 116),
        inopb=i32(raw, 120), cssize=i32(raw, 156), cgsize=i32(raw, 160), ipg=i32(raw, 184),
        fpg=i32(raw, 188), size=i64(raw, 1080), dsize=i64(raw, 1088), csaddr=i64(raw, 1096),
        cstotal=struct.unpack_from("<4q", raw, 1008),
        old_cstotal=struct.unpack_from("<4i", raw, 192),
        contigsumsize=i32(raw, 1316), maxsymlinklen=i32(raw, 1320), maxbpg=i32(raw, 92),
        raw=raw)


@dataclass
class Inode:
    ino: int
    mode: int
    nlink: int
    size: int
    blocks: int  # di_blocks (512-byte units)
    uid: int
    gid: int
    flags: int
    gen: int
    atime: int
    mtime: int
    ctime: int
    db: list[int]
    ib: list[int]
    raw_ptrs: bytes  # the db/ib area (short symlinks live there)


def read_inode(img: bytes, sb: Super, ino: int) -> Inode:
    cg, idx = divmod(ino, sb.ipg)
    isize = 256 if sb.ufs2 else 128
    off = (cg * sb.fpg + sb.iblkno) * sb.fsize + idx * isize
    raw = img[off:off + isize]
    mode, nlink = struct.unpack_from("<Hh", raw, 0)
    if sb.ufs2:
        uid, gid = struct.unpack_from("<II", raw, 4)
        size, blocks = struct.unpack_from("<QQ", raw, 16)
        atime, mtime, ctime = struct.unpack_from("<qqq", raw, 32)
        gen, _, flags = struct.unpack_from("<iII", raw, 80)
        ptrs = list(struct.unpack_from("<15q", raw, 112))
        area = raw[112:232]
    else:
        size = struct.unpack_from("<Q", raw, 8)[0]
        atime, _, mtime, _, ctime, _ = struct.unpack_from("<6i", raw, 16)
        ptrs = list(struct.unpack_from("<15i", raw, 40))
        flags, blocks, gen, uid, gid = struct.unpack_from("<IIiII", raw, 100)
        area = raw[40:100]
    return Inode(ino, mode, nlink, size, blocks, uid, gid, flags, gen, atime, mtime, ctime,
                 ptrs[:12], ptrs[12:], area)


@dataclass
class FileBlocks:
    data: list[tuple[int, int, int]] = field(default_factory=list)  # (lbn, frag addr, nfrags)
    meta: list[int] = field(default_factory=list)  # indirect block frag addresses


def file_blocks(img: bytes, sb: Super, ino: Inode) -> FileBlocks:
    out = FileBlocks()
    fmt = f"<{sb.nindir}q" if sb.ufs2 else f"<{sb.nindir}i"
    nblocks = -(-ino.size // sb.bsize)

    def nfrags(lbn: int) -> int:
        if lbn >= 12 or ino.size >= (lbn + 1) * sb.bsize:
            return sb.frag
        return -(-(ino.size - lbn * sb.bsize) // sb.fsize)

    for lbn in range(min(12, nblocks)):
        if ino.db[lbn]:
            out.data.append((lbn, ino.db[lbn], nfrags(lbn)))
    span = 1
    base = 12
    for level in range(3):
        span *= sb.nindir

        def walk(addr: int, depth: int, first: int) -> None:
            out.meta.append(addr)
            ptrs = struct.unpack_from(fmt, img, addr * sb.fsize)
            step = sb.nindir ** depth
            for k, p in enumerate(ptrs):
                lbn = first + k * step
                if not p:
                    continue
                assert lbn < nblocks, f"inode {ino.ino}: pointer beyond the end"
                if depth == 0:
                    out.data.append((lbn, p, sb.frag))
                else:
                    walk(p, depth - 1, lbn)

        if ino.ib[level]:
            walk(ino.ib[level], level, base)
        base += span
    return out


def read_data(img: bytes, sb: Super, ino: Inode, blocks: FileBlocks, offset: int = 0,
              length: int | None = None) -> bytes:
    """Bytes ``[offset, offset + length)`` of a file (holes read as zeros)."""
    end = ino.size if length is None else min(ino.size, offset + length)
    out = bytearray(max(0, end - offset))
    for lbn, addr, n in blocks.data:
        start = lbn * sb.bsize
        a, b = max(start, offset), min(start + n * sb.fsize, end)
        if a < b:
            src = addr * sb.fsize + (a - start)
            out[a - offset:b - offset] = img[src:src + (b - a)]
    return bytes(out)


@dataclass
class Entry:
    name: bytes
    ino: int
    dtype: int


def read_dir(data: bytes) -> list[Entry]:
    out = []
    assert len(data) % 512 == 0, "directory size not a multiple of DIRBLKSIZ"
    for chunk in range(0, len(data), 512):
        off = chunk
        while off < chunk + 512:
            ino, reclen, dtype, namlen = struct.unpack_from("<IHBB", data, off)
            assert reclen >= 8 + ((namlen + 4) & ~3), "record shorter than its name"
            assert off + reclen <= chunk + 512, "entry crosses a DIRBLKSIZ boundary"
            assert reclen % 4 == 0
            name = data[off + 8:off + 8 + namlen]
            assert data[off + 8 + namlen] == 0, "name not NUL-terminated"
            if ino:
                out.append(Entry(name, ino, dtype))
            off += reclen
        assert off == chunk + 512
    return out


@dataclass
class Image:
    sb: Super
    inodes: dict[int, Inode]
    paths: dict[bytes, int]  # path -> inode number
    contents: dict[int, bytes]  # regular files and symlinks
    blocks: dict[int, FileBlocks]


def read_image(img: bytes) -> Image:
    sb = read_super(img)
    inodes: dict[int, Inode] = {}
    paths: dict[bytes, int] = {}
    contents: dict[int, bytes] = {}
    blocks: dict[int, FileBlocks] = {}
    stack = [(b"", 2, 2)]
    while stack:
        path, ino_no, parent = stack.pop()
        paths[path] = ino_no
        if ino_no in inodes:
            continue
        ino = read_inode(img, sb, ino_no)
        inodes[ino_no] = ino
        kind = ino.mode & 0o170000
        if kind in (0o040000, 0o100000) or (kind == 0o120000 and ino.size >= sb.maxsymlinklen):
            blocks[ino_no] = file_blocks(img, sb, ino)
            # huge (sparse) files are left to read_data with a range
            data = read_data(img, sb, ino, blocks[ino_no]) if ino.size < 1 << 26 else b""
        elif kind == 0o120000:
            data = ino.raw_ptrs[:ino.size]
        else:
            data = b""
        if kind == 0o040000:
            entries = read_dir(data)
            assert entries[0].name == b"." and entries[0].ino == ino_no
            assert entries[1].name == b".." and entries[1].ino == parent
            for e in entries[2:]:
                stack.append((path + b"/" + e.name if path else e.name, e.ino, ino_no))
                child = read_inode(img, sb, e.ino)
                assert e.dtype == (child.mode >> 12), f"d_type of {e.name!r}"
        else:
            contents[ino_no] = data
    return Image(sb, inodes, paths, contents, blocks)


def check_allocation(img: bytes, image: Image, old_totals: bool = True) -> dict[str, int]:
    """Recompute every map and summary from the inodes; assert the image agrees.

    *old_totals* False leaves out UFS1's ``fs_old_cstotal``: NetBSD's kernel stops
    updating it once ``FS_FLAGS_UPDATED`` is set, so it is stale in an image NetBSD wrote.
    Returns the recomputed totals.
    """
    sb = image.sb
    used = bytearray(sb.ncg * sb.fpg)  # 1 = fragment in use
    # metadata
    for c in range(sb.ncg):
        base = c * sb.fpg
        lo = base if c == 0 else base + sb.sblkno
        hi = base + sb.dblkno + (-(-sb.cssize // sb.fsize) if c == 0 else 0)
        used[lo:hi] = b"\1" * (hi - lo)
    assert sb.csaddr == sb.dblkno
    # inode blocks
    for ino_no, fb in image.blocks.items():
        nfr = 0
        for _, addr, n in fb.data:
            assert not any(used[addr:addr + n]), f"fragments at {addr} used twice ({ino_no})"
            used[addr:addr + n] = b"\1" * n
            assert addr // sb.frag == (addr + n - 1) // sb.frag, "fragment run crosses a block"
            nfr += n
        for addr in fb.meta:
            assert addr % sb.frag == 0
            assert not any(used[addr:addr + sb.frag]), f"fragments at {addr} used twice"
            used[addr:addr + sb.frag] = b"\1" * sb.frag
            nfr += sb.frag
        assert image.inodes[ino_no].blocks == nfr * (sb.fsize // 512), f"di_blocks of {ino_no}"
    for ino_no, ino in image.inodes.items():
        if ino_no not in image.blocks:
            assert ino.blocks == 0
    csum = struct.unpack_from(f"<{4 * sb.ncg}i", img, sb.csaddr * sb.fsize)
    totals = [0, 0, 0, 0]
    dirs = {n for n, i in image.inodes.items() if i.mode & 0o170000 == 0o040000}
    live = set(image.inodes) | {0, 1}
    for c in range(sb.ncg):
        base = c * sb.fpg
        cg = img[(base + sb.cblkno) * sb.fsize:(base + sb.cblkno) * sb.fsize + sb.cgsize]
        assert i32(cg, 4) == CG_MAGIC and i32(cg, 12) == c
        ndblk = min(sb.fpg, sb.size - base)
        assert i32(cg, 20) == ndblk
        cs = struct.unpack_from("<4i", cg, 24)
        frsum = struct.unpack_from("<8i", cg, 52)
        iusedoff, freeoff, nextfreeoff, clsumoff, cloff, nclb = struct.unpack_from("<6i", cg, 92)
        # inode map
        imap = cg[iusedoff:iusedoff + -(-sb.ipg // 8)]
        nifree, ndir = sb.ipg, 0
        for i in range(sb.ipg):
            ino_no = c * sb.ipg + i
            bit = imap[i >> 3] >> (i & 7) & 1
            assert bit == (ino_no in live), f"inode map bit of {ino_no}"
            nifree -= bit
            ndir += ino_no in dirs
        # fragment map
        fmap = cg[freeoff:freeoff + -(-sb.fpg // 8)]
        nbfree = nffree = 0
        mysum = [0] * 8
        free_blocks = []
        for b in range(-(-ndblk // sb.frag)):
            bits = 0
            for j in range(sb.frag):
                f = b * sb.frag + j
                isfree = f < ndblk and not used[base + f]
                mapbit = fmap[f >> 3] >> (f & 7) & 1
                assert mapbit == isfree, f"cg {c} fragment {f}: map {mapbit}, expected {isfree}"
                bits |= isfree << j
            if bits == (1 << sb.frag) - 1:
                nbfree += 1
                free_blocks.append(b)
            elif bits:
                for run in re.findall("1+", format(bits, f"0{sb.frag}b")):
                    mysum[len(run)] += 1
                    nffree += len(run)
        for f in range(ndblk, sb.fpg):
            assert not fmap[f >> 3] >> (f & 7) & 1, "free bit beyond the group's end"
        assert cs == (ndir, nbfree, nifree, nffree), f"cg {c} summary {cs}"
        assert tuple(csum[4 * c:4 * c + 4]) == cs, f"cg {c}: csum area differs"
        assert list(frsum) == mysum, f"cg {c} frsum {frsum} != {mysum}"
        if sb.contigsumsize > 0:
            assert nclb == ndblk // sb.frag
            cmap = cg[cloff:cloff + -(-(sb.fpg // sb.frag) // 8)]
            sums = [0] * (sb.contigsumsize + 1)
            run = 0
            freeset = set(free_blocks)
            for b in range(nclb + 1):
                bit = cmap[b >> 3] >> (b & 7) & 1 if b < nclb else 0
                if b < nclb:
                    assert bit == (b in freeset), f"cg {c} cluster bit {b}"
                if bit:
                    run += 1
                elif run:
                    sums[min(run, sb.contigsumsize)] += 1
                    run = 0
            stored = struct.unpack_from(f"<{sb.contigsumsize}i", cg, clsumoff + 4)
            assert list(stored) == sums[1:], f"cg {c} cluster sums {stored} != {sums[1:]}"
            assert nextfreeoff <= sb.cgsize
        for k, v in enumerate(cs):
            totals[k] += v
    assert tuple(sb.cstotal) == tuple(totals), f"superblock totals {sb.cstotal} != {totals}"
    if not sb.ufs2 and old_totals:
        assert tuple(sb.old_cstotal) == tuple(totals)
    return {"ndir": totals[0], "nbfree": totals[1], "nifree": totals[2], "nffree": totals[3]}
