"""ext2 filesystem writer: revision 1 (filetype, sparse_super, large_file when needed) or 0.

``write(tree, fd, size, opts)`` lays a :class:`~smolfs.fs.tree.Tree` out as an image
NetBSD's ext2fs mounts read-write and ``e2fsck`` finds clean, the same bytes for the same
inputs; ``minimum_size(tree, opts)`` is the smallest size that holds it. Where readers
disagree (device numbers, creator OS, flags): ``smolfs/fs/README.md``."""

from smolfs.fs.ext2 import geometry
from smolfs.fs.ext2.options import Ext2Options
from smolfs.fs.ext2.writer import inodes_used, minimum_size, write

__all__ = ["Ext2Options", "default_density", "inodes_used", "minimum_size", "write"]


def default_density(size: int, opts: Ext2Options | None = None) -> int:
    """Bytes per inode mke2fs would choose for an image of *size* bytes."""
    return geometry.default_density(size)
