"""ext2 filesystem writer: revision 1 (filetype, sparse_super, large_file when needed) or 0.

``write(tree, fd, size, opts)`` lays a :class:`~smolfs.tree.Tree` out as an ext2 image
that NetBSD's ext2fs mounts read-write and ``e2fsck`` finds clean;
``minimum_size(tree, opts)`` is the smallest size that holds it. Output is
deterministic: the same tree, size and options give the same bytes.
"""

from smolfs.ext2.options import Ext2Options
from smolfs.ext2.writer import minimum_size, write

__all__ = ["Ext2Options", "minimum_size", "write"]
