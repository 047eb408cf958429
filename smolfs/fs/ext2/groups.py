"""Group metadata of an ext2 image: the superblock, its copies, the group descriptor
table and the block and inode bitmaps, written one ``pwrite`` per group.
"""

from __future__ import annotations

import hashlib
import os
import struct

from smolfs.fs.ext2 import structs as S
from smolfs.fs.ext2.geometry import Geometry
from smolfs.fs.ext2.layout import Scan
from smolfs.fs.ext2.options import Ext2Options
from smolfs.fs.tree import Kind


def derive_uuid(sc: Scan, opts: Ext2Options, size: int) -> bytes:
    """A version-4-shaped UUID from the content, the options and the size."""
    h = hashlib.sha256(b"mksmolnb ext2 uuid\0" + sc.digest + opts.describe())
    h.update(size.to_bytes(8, "little"))
    raw = bytearray(h.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)


def bitmap(bsize: int, used: int, valid: int) -> bytearray:
    """A bitmap block: the first *used* bits set, and every bit from *valid* on (padding)."""
    out = bytearray(bsize)
    full, rem = divmod(used, 8)
    out[:full] = b"\xff" * full
    if rem:
        out[full] = (1 << rem) - 1
    full, rem = divmod(valid, 8)
    if rem:
        out[full] |= 0xFF & ~((1 << rem) - 1)
        full += 1
    out[full:] = b"\xff" * (bsize - full)
    return out


def write_groups(fd: int, sc: Scan, geo: Geometry, opts: Ext2Options, size: int,
                 used_blocks: list[int]) -> None:
    """Write every group's superblock copy, descriptor table copy and bitmaps."""
    bsize = geo.bsize
    ipg = geo.ipg
    ngroups = len(geo.groups)
    ndirs = [0] * ngroups
    for ino in sc.inodes:
        if ino.node.kind == Kind.DIR:
            ndirs[(ino.ino - 1) // ipg] += 1
    iused = [min(max(sc.max_ino - g * ipg, 0), ipg) for g in range(ngroups)]
    nbfree = [grp.end - grp.start - used_blocks[g] for g, grp in enumerate(geo.groups)]
    nifree = [ipg - iused[g] for g in range(ngroups)]
    gdt = bytearray(geo.gdt_blocks * bsize)
    for g, grp in enumerate(geo.groups):
        S.GROUP_DESC.pack_into(gdt, g * S.GROUP_DESC_SIZE, grp.bbitmap, grp.ibitmap,
                               grp.itable, nbfree[g], nifree[g], ndirs[g])
    sb = bytearray(superblock(sc, geo, opts, size, sum(nbfree), sum(nifree)))
    for g, grp in enumerate(geo.groups):
        buf = bytearray((grp.itable - grp.start) * bsize)
        if grp.sb:
            sb_off = S.SUPERBLOCK_OFFSET if grp.start == 0 else 0
            if opts.revision == 1:
                struct.pack_into("<H", sb, 0x5A, g)
            buf[sb_off : sb_off + S.SUPERBLOCK_SIZE] = sb
            gdt_off = (grp.bbitmap - geo.gdt_blocks - grp.start) * bsize
            buf[gdt_off : gdt_off + len(gdt)] = gdt
        off = (grp.bbitmap - grp.start) * bsize
        buf[off : off + bsize] = bitmap(bsize, used_blocks[g], grp.end - grp.start)
        buf[off + bsize : off + 2 * bsize] = bitmap(bsize, iused[g], ipg)
        write_at = grp.start * bsize
        if grp.start == 0:  # keep the boot block (first 1024 bytes) untouched
            del buf[: S.SUPERBLOCK_OFFSET]
            write_at = S.SUPERBLOCK_OFFSET
        os.pwrite(fd, buf, write_at)

def superblock(sc: Scan, geo: Geometry, opts: Ext2Options, size: int, free_blocks: int,
               free_inodes: int) -> bytes:
    """The primary superblock (each copy then gets its group number)."""
    stamp = opts.timestamp if opts.timestamp is not None else sc.newest
    log = geo.bsize.bit_length() - 11
    uuid = opts.uuid or derive_uuid(sc, opts, size)
    rocompat = S.ROCOMPAT_SPARSE_SUPER | (S.ROCOMPAT_LARGE_FILE if sc.large_file else 0)
    rev1 = opts.revision == 1
    return S.superblock.build({
        "e2fs_icount": geo.inodes,
        "e2fs_bcount": geo.blocks,
        "e2fs_rbcount": geo.blocks * opts.minfree // 100,
        "e2fs_fbcount": free_blocks,
        "e2fs_ficount": free_inodes,
        "e2fs_first_dblock": geo.first_dblock,
        "e2fs_log_bsize": log,
        "e2fs_log_fsize": log,
        "e2fs_bpg": geo.bpg,
        "e2fs_fpg": geo.bpg,
        "e2fs_ipg": geo.ipg,
        "e2fs_mtime": 0,
        "e2fs_wtime": stamp,
        "e2fs_mnt_count": 0,
        "e2fs_max_mnt_count": 0xFFFF,  # -1: no mount-count driven checks
        "e2fs_state": S.STATE_CLEAN,
        "e2fs_beh": S.ERRORS_CONTINUE,
        "e2fs_minrev": 0,
        "e2fs_lastfsck": stamp,
        "e2fs_fsckintv": 0,
        "e2fs_creator": S.CREATOR_LINUX,
        "e2fs_rev": S.REV1 if rev1 else S.REV0,
        "e2fs_ruid": 0,
        "e2fs_rgid": 0,
        "e2fs_first_ino": S.FIRST_INO if rev1 else 0,
        "e2fs_inode_size": S.INODE_SIZE if rev1 else 0,
        "e2fs_block_group_nr": 0,
        "e2fs_features_compat": 0,
        "e2fs_features_incompat": S.INCOMPAT_FILETYPE if rev1 else 0,
        "e2fs_features_rocompat": rocompat if rev1 else 0,
        "e2fs_uuid": uuid,
        "e2fs_vname": opts.label.encode().ljust(16, b"\0"),
        "e2fs_fsmnt": bytes(64),
        "e2fs_algo": 0,
        "e2fs_prealloc": 0,
        "e2fs_dir_prealloc": 0,
        "e2fs_reserved_ngdb": 0,
        "e4fs_journal_uuid": bytes(16),
        "e4fs_journal_ino": 0,
        "e4fs_journal_dev": 0,
        "e4fs_last_orphan": 0,
        "e4fs_hash_seed": [0, 0, 0, 0],
        "e4fs_def_hash_version": 0,
        "e4fs_jnl_backup_type": 0,
        "e4fs_desc_size": 0,
        "e4fs_default_mount_opts": 0,
        "e4fs_first_meta_bg": 0,
        "e4fs_mkfs_time": stamp if rev1 else 0,
    })
