"""On-disk structures of ext2, declared with ``construct`` (NetBSD's field names), and the
:class:`struct.Struct` objects derived from them for inodes and directory entries, the
structures written thousands of times (see ``smolfs/fs/README.md``)."""

from __future__ import annotations

import struct

from construct import Array, Bytes, Const, Int8ul, Int16ul, Int32ul, Padding, Struct

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
MAGIC = 0xEF53

ROOT_INO = 2
FIRST_INO = 11  # first inode not reserved (revision 0 fixes it; revision 1 stores it)
INODE_SIZE = 128
N_DIRECT = 12
N_BLOCKS = 15  # 12 direct, single, double, triple indirect
FAST_SYMLINK_MAX = 59  # targets shorter than the 60 bytes of i_block live in the inode
LINK_MAX = 32000

# e2fs_state
STATE_CLEAN = 0x0001
# e2fs_beh
ERRORS_CONTINUE = 1
# e2fs_creator: no NetBSD value exists; NetBSD's own newfs_ext2fs writes Linux's.
CREATOR_LINUX = 0

REV0 = 0
REV1 = 1

INCOMPAT_FILETYPE = 0x0002
ROCOMPAT_SPARSE_SUPER = 0x0001
ROCOMPAT_LARGE_FILE = 0x0002

# i_flags
FL_IMMUTABLE = 0x00000010
FL_APPEND = 0x00000020
FL_NODUMP = 0x00000040

# directory entry file types (filetype feature)
FT_UNKNOWN, FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_SYMLINK = range(8)


superblock = Struct(
    "e2fs_icount" / Int32ul,
    "e2fs_bcount" / Int32ul,
    "e2fs_rbcount" / Int32ul,
    "e2fs_fbcount" / Int32ul,
    "e2fs_ficount" / Int32ul,
    "e2fs_first_dblock" / Int32ul,
    "e2fs_log_bsize" / Int32ul,
    "e2fs_log_fsize" / Int32ul,
    "e2fs_bpg" / Int32ul,
    "e2fs_fpg" / Int32ul,
    "e2fs_ipg" / Int32ul,
    "e2fs_mtime" / Int32ul,
    "e2fs_wtime" / Int32ul,
    "e2fs_mnt_count" / Int16ul,
    "e2fs_max_mnt_count" / Int16ul,
    "e2fs_magic" / Const(MAGIC, Int16ul),
    "e2fs_state" / Int16ul,
    "e2fs_beh" / Int16ul,
    "e2fs_minrev" / Int16ul,
    "e2fs_lastfsck" / Int32ul,
    "e2fs_fsckintv" / Int32ul,
    "e2fs_creator" / Int32ul,
    "e2fs_rev" / Int32ul,
    "e2fs_ruid" / Int16ul,
    "e2fs_rgid" / Int16ul,
    # revision 1 ("dynamic") fields; all zero in a revision 0 superblock
    "e2fs_first_ino" / Int32ul,
    "e2fs_inode_size" / Int16ul,
    "e2fs_block_group_nr" / Int16ul,
    "e2fs_features_compat" / Int32ul,
    "e2fs_features_incompat" / Int32ul,
    "e2fs_features_rocompat" / Int32ul,
    "e2fs_uuid" / Bytes(16),
    "e2fs_vname" / Bytes(16),
    "e2fs_fsmnt" / Bytes(64),
    "e2fs_algo" / Int32ul,
    "e2fs_prealloc" / Int8ul,
    "e2fs_dir_prealloc" / Int8ul,
    "e2fs_reserved_ngdb" / Int16ul,
    "e4fs_journal_uuid" / Bytes(16),
    "e4fs_journal_ino" / Int32ul,
    "e4fs_journal_dev" / Int32ul,
    "e4fs_last_orphan" / Int32ul,
    "e4fs_hash_seed" / Array(4, Int32ul),
    "e4fs_def_hash_version" / Int8ul,
    "e4fs_jnl_backup_type" / Int8ul,
    "e4fs_desc_size" / Int16ul,
    "e4fs_default_mount_opts" / Int32ul,
    "e4fs_first_meta_bg" / Int32ul,
    "e4fs_mkfs_time" / Int32ul,
    Padding(SUPERBLOCK_SIZE - 0x10C),
)

group_desc = Struct(
    "ext2bgd_b_bitmap" / Int32ul,
    "ext2bgd_i_bitmap" / Int32ul,
    "ext2bgd_i_tables" / Int32ul,
    "ext2bgd_nbfree" / Int16ul,
    "ext2bgd_nifree" / Int16ul,
    "ext2bgd_ndirs" / Int16ul,
    Padding(14),
)
GROUP_DESC_SIZE = 32

inode = Struct(
    "e2di_mode" / Int16ul,
    "e2di_uid" / Int16ul,
    "e2di_size" / Int32ul,
    "e2di_atime" / Int32ul,
    "e2di_ctime" / Int32ul,
    "e2di_mtime" / Int32ul,
    "e2di_dtime" / Int32ul,
    "e2di_gid" / Int16ul,
    "e2di_nlink" / Int16ul,
    "e2di_nblock" / Int32ul,  # 512-byte units, indirect blocks included
    "e2di_flags" / Int32ul,
    "e2di_version" / Int32ul,
    "e2di_blocks" / Array(N_BLOCKS, Int32ul),  # block pointers, short symlink, or device
    "e2di_gen" / Int32ul,
    "e2di_facl" / Int32ul,
    "e2di_size_hi" / Int32ul,  # upper 32 bits of a regular file's size (large_file)
    "e2di_faddr" / Int32ul,
    "e2di_nfrag" / Int8ul,
    "e2di_fsize" / Int8ul,
    "e2di_linux_reserved2" / Int16ul,
    "e2di_uid_high" / Int16ul,
    "e2di_gid_high" / Int16ul,
    "e2di_linux_reserved3" / Int32ul,
)

# Hot-path packers, same layout as the declarations above (i_block as 60 raw bytes).
INODE = struct.Struct("<HHIIIIIHHIII60sIIIIBBHHHI")
GROUP_DESC = struct.Struct("<IIIHHH14x")
DIRENT_HEAD_REV1 = struct.Struct("<IHBB")  # inode, rec_len, name_len, file_type
DIRENT_HEAD_REV0 = struct.Struct("<IHH")  # inode, rec_len, name_len
DIRENT_HEAD_SIZE = 8

dirent_rev1 = Struct(
    "e2d_ino" / Int32ul,
    "e2d_reclen" / Int16ul,
    "e2d_namlen" / Int8ul,
    "e2d_type" / Int8ul,
)
dirent_rev0 = Struct(
    "e2d_ino" / Int32ul,
    "e2d_reclen" / Int16ul,
    "e2d_namlen" / Int16ul,
)
