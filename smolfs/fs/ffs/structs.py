"""On-disk structures of FFS (UFS1 and UFS2), after NetBSD's ``fs.h``, ``dinode.h`` and
``dir.h``, little-endian.

Declared with the construct-like names of :mod:`smolfs.fs.ffs.fields` and compiled by
:class:`Packed` into :class:`struct.Struct` objects (see ``smolfs/fs/README.md``)."""

from __future__ import annotations

import struct
from typing import Any

from smolfs.fs.ffs.fields import (
    Array,
    Bytes,
    Int8ul,
    Int16sl,
    Int16ul,
    Int32sl,
    Int32ul,
    Int64sl,
    Int64ul,
    Padding,
    Struct,
)

# --- constants (fs.h, dinode.h, dir.h) --------------------------------------
FS_UFS1_MAGIC = 0x011954
FS_UFS2_MAGIC = 0x19540119
CG_MAGIC = 0x090255
SBLOCK_UFS1 = 8192
SBLOCK_UFS2 = 65536
SBLOCKSIZE = 8192
MAXFRAG = 8
MINBSIZE = 4096
MAXBSIZE = 65536
FS_MAXCONTIG = 16
MAXPHYS = 65536
NDADDR = 12  # direct block pointers in an inode
NIADDR = 3  # single, double, triple indirect
ROOTINO = 2
DIRBLKSIZ = 512
MAXNAMLEN = 255
MAXVOLLEN = 32
FS_44INODEFMT = 2
FS_DYNAMICPOSTBLFMT = 1
FS_FLAGS_UPDATED = 0x80
FS_ISCLEAN = 0x01
FS_OPTTIME = 0
FS_OPTSPACE = 1
AVFILESIZ = 16384
AFPDIR = 64
MINFREE = 5
DEV_BSIZE = 512

# --- the superblock (struct fs, 1376 bytes) ---------------------------------
Csum = Struct(
    "cs_ndir" / Int32sl,
    "cs_nbfree" / Int32sl,
    "cs_nifree" / Int32sl,
    "cs_nffree" / Int32sl,
)

Superblock = Struct(
    "fs_firstfield" / Int32sl,
    "fs_unused_1" / Int32sl,
    "fs_sblkno" / Int32sl,
    "fs_cblkno" / Int32sl,
    "fs_iblkno" / Int32sl,
    "fs_dblkno" / Int32sl,
    "fs_old_cgoffset" / Int32sl,
    "fs_old_cgmask" / Int32sl,
    "fs_old_time" / Int32sl,
    "fs_old_size" / Int32sl,
    "fs_old_dsize" / Int32sl,
    "fs_ncg" / Int32sl,
    "fs_bsize" / Int32sl,
    "fs_fsize" / Int32sl,
    "fs_frag" / Int32sl,
    "fs_minfree" / Int32sl,
    "fs_old_rotdelay" / Int32sl,
    "fs_old_rps" / Int32sl,
    "fs_bmask" / Int32sl,
    "fs_fmask" / Int32sl,
    "fs_bshift" / Int32sl,
    "fs_fshift" / Int32sl,
    "fs_maxcontig" / Int32sl,
    "fs_maxbpg" / Int32sl,
    "fs_fragshift" / Int32sl,
    "fs_fsbtodb" / Int32sl,
    "fs_sbsize" / Int32sl,
    "fs_spare1" / Array(2, Int32sl),
    "fs_nindir" / Int32sl,
    "fs_inopb" / Int32sl,
    "fs_old_nspf" / Int32sl,
    "fs_optim" / Int32sl,
    "fs_old_npsect" / Int32sl,
    "fs_old_interleave" / Int32sl,
    "fs_old_trackskew" / Int32sl,
    "fs_id" / Array(2, Int32sl),
    "fs_old_csaddr" / Int32sl,
    "fs_cssize" / Int32sl,
    "fs_cgsize" / Int32sl,
    "fs_spare2" / Int32sl,
    "fs_old_nsect" / Int32sl,
    "fs_old_spc" / Int32sl,
    "fs_old_ncyl" / Int32sl,
    "fs_old_cpg" / Int32sl,
    "fs_ipg" / Int32sl,
    "fs_fpg" / Int32sl,
    "fs_old_cstotal" / Array(4, Int32sl),  # struct csum
    "fs_fmod" / Int8ul,
    "fs_clean" / Int8ul,
    "fs_ronly" / Int8ul,
    "fs_old_flags" / Int8ul,
    "fs_fsmnt" / Bytes(468),
    "fs_volname" / Bytes(32),
    "fs_swuid" / Int64ul,
    "fs_pad" / Int32sl,
    "fs_cgrotor" / Int32sl,
    Padding(128),  # in-core pointers (fs_ocsp, fs_csp, ...)
    "fs_old_cpc" / Int32sl,
    "fs_maxbsize" / Int32sl,
    "fs_sparecon64" / Array(17, Int64sl),
    "fs_sblockloc" / Int64sl,
    "fs_cstotal" / Array(8, Int64sl),  # struct csum_total
    "fs_time" / Int64sl,
    "fs_size" / Int64sl,
    "fs_dsize" / Int64sl,
    "fs_csaddr" / Int64sl,
    "fs_pendingblocks" / Int64sl,
    "fs_pendinginodes" / Int32sl,
    "fs_snapinum" / Array(20, Int32sl),
    "fs_avgfilesize" / Int32sl,
    "fs_avgfpdir" / Int32sl,
    "fs_save_cgsize" / Int32sl,
    "fs_sparecon32" / Array(26, Int32sl),
    "fs_flags" / Int32ul,
    "fs_contigsumsize" / Int32sl,
    "fs_maxsymlinklen" / Int32sl,
    "fs_old_inodefmt" / Int32sl,
    "fs_maxfilesize" / Int64ul,
    "fs_qbmask" / Int64sl,
    "fs_qfmask" / Int64sl,
    "fs_state" / Int32sl,
    "fs_old_postblformat" / Int32sl,
    "fs_old_nrpos" / Int32sl,
    "fs_spare5" / Array(2, Int32sl),
    "fs_magic" / Int32sl,
)

# --- the cylinder group header (struct cg up to cg_space) --------------------
CylinderGroup = Struct(
    "cg_firstfield" / Int32sl,
    "cg_magic" / Int32sl,
    "cg_old_time" / Int32sl,
    "cg_cgx" / Int32sl,
    "cg_old_ncyl" / Int16sl,
    "cg_old_niblk" / Int16sl,
    "cg_ndblk" / Int32sl,
    "cg_cs" / Array(4, Int32sl),  # struct csum
    "cg_rotor" / Int32sl,
    "cg_frotor" / Int32sl,
    "cg_irotor" / Int32sl,
    "cg_frsum" / Array(MAXFRAG, Int32sl),
    "cg_old_btotoff" / Int32sl,
    "cg_old_boff" / Int32sl,
    "cg_iusedoff" / Int32sl,
    "cg_freeoff" / Int32sl,
    "cg_nextfreeoff" / Int32sl,
    "cg_clustersumoff" / Int32sl,
    "cg_clusteroff" / Int32sl,
    "cg_nclusterblks" / Int32sl,
    "cg_niblk" / Int32sl,
    "cg_initediblk" / Int32sl,
    "cg_sparecon32" / Array(3, Int32sl),
    "cg_time" / Int64sl,
    "cg_sparecon64" / Array(3, Int64sl),
)
SIZEOF_CG = 176  # sizeof(struct cg): the header plus cg_space[1], aligned to 8

# --- inodes ------------------------------------------------------------------
Ufs1Dinode = Struct(
    "di_mode" / Int16ul,
    "di_nlink" / Int16sl,
    "di_inumber" / Int32ul,  # was di_oldids
    "di_size" / Int64ul,
    "di_atime" / Int32sl,
    "di_atimensec" / Int32sl,
    "di_mtime" / Int32sl,
    "di_mtimensec" / Int32sl,
    "di_ctime" / Int32sl,
    "di_ctimensec" / Int32sl,
    "di_db" / Array(NDADDR, Int32sl),
    "di_ib" / Array(NIADDR, Int32sl),
    "di_flags" / Int32ul,
    "di_blocks" / Int32ul,
    "di_gen" / Int32sl,
    "di_uid" / Int32ul,
    "di_gid" / Int32ul,
    "di_modrev" / Int64ul,
)

Ufs2Dinode = Struct(
    "di_mode" / Int16ul,
    "di_nlink" / Int16sl,
    "di_uid" / Int32ul,
    "di_gid" / Int32ul,
    "di_blksize" / Int32ul,
    "di_size" / Int64ul,
    "di_blocks" / Int64ul,
    "di_atime" / Int64sl,
    "di_mtime" / Int64sl,
    "di_ctime" / Int64sl,
    "di_birthtime" / Int64sl,
    "di_mtimensec" / Int32sl,
    "di_atimensec" / Int32sl,
    "di_ctimensec" / Int32sl,
    "di_birthnsec" / Int32sl,
    "di_gen" / Int32sl,
    "di_kernflags" / Int32ul,
    "di_flags" / Int32ul,
    "di_extsize" / Int32sl,
    "di_extb" / Array(2, Int64sl),
    "di_db" / Array(NDADDR, Int64sl),
    "di_ib" / Array(NIADDR, Int64sl),
    "di_modrev" / Int64ul,
    "di_freelink" / Int32ul,
    "di_spare" / Array(3, Int32ul),
)

# --- directory entries (struct direct, header only; the name follows) --------
DirectHeader = Struct(
    "d_ino" / Int32ul,
    "d_reclen" / Int16ul,
    "d_type" / Int8ul,
    "d_namlen" / Int8ul,
)


class Packed:
    """A flat structure declaration compiled to :class:`struct.Struct`.

    Fields keep their declared names; array fields take and give lists. Values
    not given to :meth:`pack` are zero (or empty bytes).
    """

    def __init__(self, decl: Struct) -> None:
        self.fields: list[tuple[str, int, Any]] = []  # name, count (0 = scalar), zero
        self.offsets: dict[str, int] = {}
        offset = 0
        for f in decl.fields:
            if f.name is not None:
                self.fields.append((f.name, f.count, b"" if f.code.endswith("s") else 0))
                self.offsets[f.name] = offset
            offset += f.size
        self.struct = struct.Struct("<" + "".join(f.code for f in decl.fields))
        self.size = self.struct.size
        if self.size != decl.sizeof():  # pragma: no cover - guards the compiler
            raise AssertionError(f"compiled size {self.size} != declared {decl.sizeof()}")

    def values(self, fields: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for name, count, zero in self.fields:
            value = fields.get(name, zero)
            if count:
                value = list(value) if value else [0] * count
                if len(value) != count:
                    raise ValueError(f"{name}: {count} values expected, got {len(value)}")
                out.extend(value)
            else:
                out.append(value)
        return out

    def pack(self, **fields: Any) -> bytes:
        return self.struct.pack(*self.values(fields))

    def unpack(self, data: bytes, offset: int = 0) -> dict[str, Any]:
        flat = self.struct.unpack_from(data, offset)
        out: dict[str, Any] = {}
        i = 0
        for name, count, _ in self.fields:
            if count:
                out[name] = list(flat[i:i + count])
                i += count
            else:
                out[name] = flat[i]
                i += 1
        return out


SUPERBLOCK = Packed(Superblock)
CG = Packed(CylinderGroup)
UFS1_DINODE = Packed(Ufs1Dinode)
UFS2_DINODE = Packed(Ufs2Dinode)
DIRECT = Packed(DirectHeader)
CSUM = Packed(Csum)

assert SUPERBLOCK.size == 1376 and SUPERBLOCK.offsets["fs_magic"] == 1372
assert CG.size == 168 and UFS1_DINODE.size == 128 and UFS2_DINODE.size == 256
