"""What an FFS or ext2 image holds and has free, read from the image itself.

Totals come from the per-group summaries the kernel keeps up to date (FFS: the
cylinder group summary array at ``fs_csaddr``; ext2: the group descriptors), so
they are right for an image NetBSD has written into since it was built.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass
from typing import Any

from smolfs.errors import InputError

UFS1_MAGIC, UFS2_MAGIC = 0x011954, 0x19540119
EXT2_MAGIC = 0xEF53
_FS_MAGIC_OFFSET = 1372  # fs_magic in struct fs (NetBSD sys/ufs/ffs/fs.h)


@dataclass(frozen=True)
class FsStat:
    """Totals of one image: bytes and inodes, in all and free."""

    fstype: str  # "ffs" or "ext2"
    variant: str  # "UFS1", "UFS2", "rev 0", "rev 1"
    size: int  # bytes the filesystem spans
    block_size: int
    free_bytes: int  # in free blocks and fragments (the root reserve included)
    inodes: int
    free_inodes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read(fd: int, offset: int, length: int) -> bytes:
    return os.pread(fd, length, offset)


def stat_image(path: str | os.PathLike[str]) -> FsStat:
    """The totals of the FFS or ext2 image at *path*; InputError when it is neither."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise InputError(f"cannot read {os.fspath(path)}: {err.strerror}") from err
    try:
        for loc in (65536, 8192):
            raw = _read(fd, loc, 1376)
            if len(raw) == 1376:
                magic = struct.unpack_from("<i", raw, _FS_MAGIC_OFFSET)[0]
                if magic in (UFS1_MAGIC, UFS2_MAGIC):
                    return _ffs(fd, raw, magic == UFS2_MAGIC)
        raw = _read(fd, 1024, 1024)
        if len(raw) == 1024 and struct.unpack_from("<H", raw, 56)[0] == EXT2_MAGIC:
            return _ext2(fd, raw)
    finally:
        os.close(fd)
    raise InputError(f"{os.fspath(path)}: neither an FFS nor an ext2 filesystem")


def _ffs(fd: int, sb: bytes, ufs2: bool) -> FsStat:
    def i32(off: int) -> int:
        return int(struct.unpack_from("<i", sb, off)[0])

    def i64(off: int) -> int:
        return int(struct.unpack_from("<q", sb, off)[0])

    ncg, bsize, fsize, frag = i32(44), i32(48), i32(52), i32(56)
    ipg = i32(184)
    size = i64(1080) or i32(36)  # fs_size, else fs_old_size
    csaddr = i64(1096) or i32(152)  # fs_csaddr, else fs_old_csaddr
    summaries = _read(fd, csaddr * fsize, ncg * 16)
    if len(summaries) < ncg * 16:
        raise InputError("FFS image truncated: its cylinder group summaries are missing")
    nbfree = nifree = nffree = 0
    for _, b, i, f in struct.iter_unpack("<4i", summaries):
        nbfree, nifree, nffree = nbfree + b, nifree + i, nffree + f
    return FsStat("ffs", "UFS2" if ufs2 else "UFS1", size * fsize, bsize,
                  (nbfree * frag + nffree) * fsize, ncg * ipg, nifree)


def _ext2(fd: int, sb: bytes) -> FsStat:
    inodes, blocks = struct.unpack_from("<II", sb, 0)
    first_data, log_bsize = struct.unpack_from("<II", sb, 20)
    bpg = struct.unpack_from("<I", sb, 32)[0]
    rev = struct.unpack_from("<I", sb, 76)[0]
    bsize = 1024 << log_bsize
    ngroups = -(-(blocks - first_data) // bpg)
    table = _read(fd, (first_data + 1) * bsize, ngroups * 32)
    if len(table) < ngroups * 32:
        raise InputError("ext2 image truncated: its group descriptors are missing")
    free_blocks = free_inodes = 0
    for g in range(ngroups):
        fb, fi = struct.unpack_from("<HH", table, g * 32 + 12)
        free_blocks, free_inodes = free_blocks + fb, free_inodes + fi
    return FsStat("ext2", f"rev {rev}", blocks * bsize, bsize, free_blocks * bsize,
                  inodes, free_inodes)
