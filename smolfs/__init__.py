"""smolfs: NetBSD root filesystem images (FFS UFS1/UFS2, ext2) written in pure Python.

The public API is imported lazily so that ``import smolfs`` stays cheap:

- :func:`smolfs.image.mkfs` — write an image from directories, archives and an mtree spec.
- :func:`smolfs.image.build` — build a bootable root image for a service from NetBSD sets.
- :func:`smolfs.sets.fetch` — download and verify NetBSD sets and kernels into the cache.
- :class:`smolfs.Tree` — the filesystem-neutral tree the writers lay out.
- :class:`smolfs.SmolError` — base of every error raised to a user.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds of every start
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "mkfs": ("smolfs.image.mkfs", "mkfs"),
    "build": ("smolfs.image.build", "build"),
    "fetch": ("smolfs.sets.fetch", "fetch"),
    "Tree": ("smolfs.fs.tree", "Tree"),
    "SmolError": ("smolfs.errors", "SmolError"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'smolfs' has no attribute {name!r}") from None
    import importlib

    return getattr(importlib.import_module(module_name), attr)
