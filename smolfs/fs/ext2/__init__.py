"""ext2 filesystem writer: revision 1 (filetype, sparse_super, large_file when needed) or 0.

``write(tree, fd, size, opts)`` lays a :class:`~smolfs.fs.tree.Tree` out as an ext2 image
that NetBSD's ext2fs mounts read-write and ``e2fsck`` finds clean;
``minimum_size(tree, opts)`` is the smallest size that holds it. Output is
deterministic: the same tree, size and options give the same bytes.

Choices where formats or readers differ:

- Device numbers are stored as NetBSD's ``makedev(major, minor)`` in the first block
  pointer (NetBSD reads ``e2di_rdev`` = ``e2di_blocks[0]``). For major and minor
  below 256 that is also Linux's old encoding, so debugfs and Linux agree; larger
  numbers are read correctly only by NetBSD (Linux expects them in the second pointer).
- ``s_creator_os`` is 0 (Linux): ext2 has no NetBSD value, and NetBSD's own
  ``newfs_ext2fs`` writes the same.
- The upper 16 bits of uid and gid go in ``e2di_uid_high``/``e2di_gid_high`` (Linux's
  layout, read by NetBSD) in both revisions.
- BSD file flags map to ext2's where one exists (immutable, append-only, nodump), on
  regular files and directories only (e2fsck rejects them on devices).
- Timestamps outside 0..2**32-1 are clamped.
"""

from smolfs.fs.ext2 import geometry
from smolfs.fs.ext2.options import Ext2Options
from smolfs.fs.ext2.writer import inodes_used, minimum_size, write

__all__ = ["Ext2Options", "default_density", "inodes_used", "minimum_size", "write"]


def default_density(size: int, opts: Ext2Options | None = None) -> int:
    """Bytes per inode mke2fs would choose for an image of *size* bytes."""
    return geometry.default_density(size)
