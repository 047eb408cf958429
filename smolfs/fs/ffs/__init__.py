"""FFS (UFS1 and UFS2) images written in pure Python, the way NetBSD's kernel reads them.

``write(tree, fd, size, opts)`` writes a complete image; ``minimum_size(tree, opts)``
is the smallest size that holds a tree; :class:`FfsOptions` holds makefs-style
parameters (``FfsOptions.from_makefs({"version": "2"})``).
"""

from __future__ import annotations

from smolfs.fs.ffs import layout, sizing
from smolfs.fs.ffs.options import FfsOptions
from smolfs.fs.ffs.writer import write
from smolfs.fs.tree import Tree

__all__ = ["FfsOptions", "default_density", "inodes_used", "minimum_size", "write"]


def minimum_size(tree: Tree, opts: FfsOptions) -> int:
    """Smallest image size in bytes (a multiple of the block size) that holds *tree*."""
    return sizing.minimum_size(layout.cached_plan(tree, opts), opts)


def inodes_used(tree: Tree, opts: FfsOptions) -> int:
    """Inodes *tree* takes in an image, counting the reserved ones (0 and 1)."""
    return layout.cached_plan(tree, opts).inodes_used


def default_density(size: int, opts: FfsOptions) -> int:
    """Bytes per inode newfs would choose for an image of *size* bytes."""
    return opts.default_density(size)
