"""smolfs: NetBSD root filesystem images (FFS UFS1/UFS2, ext2) written in pure Python.

``build``, ``mkfs``, ``fetch``, ``Tree`` and ``SmolError`` are imported on first use,
so that ``import smolfs`` stays cheap (the API: the top README's "Python API")."""

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
