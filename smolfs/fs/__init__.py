"""Filesystems: the tree an image is laid out from and the FFS and ext2 writers."""
