"""smolfs: NetBSD root filesystem images (FFS UFS1/UFS2, ext2) written in pure Python.

The public API is imported lazily so that ``import smolfs`` stays cheap:

- :func:`smolfs.mkfs` — write an image from directories, archives and an mtree spec.
- :func:`smolfs.build` — build a bootable root image for a service from NetBSD sets.
- :func:`smolfs.fetch` — download and verify NetBSD sets and kernels into the cache.
- :class:`smolfs.Tree` — the filesystem-neutral tree the writers lay out.
- :class:`smolfs.SmolError` — base of every error raised to a user.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds of every start
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "mkfs": ("smolfs.mkfs", "mkfs"),
    "build": ("smolfs.build", "build"),
    "fetch": ("smolfs.fetch", "fetch"),
    "Tree": ("smolfs.tree", "Tree"),
    "SmolError": ("smolfs.errors", "SmolError"),
}

__all__ = sorted(_LAZY)


def callable_module(module_name: str, function_name: str) -> None:
    """Make module *module_name* callable as its function *function_name*.

    ``smolfs.build``, ``smolfs.mkfs`` and ``smolfs.fetch`` name both a module and the
    function the package exports; once the module is imported, the import system makes
    the package attribute the module. Calling such a module calls the function, so
    ``smolfs.build(...)`` works whatever was imported first. Each of those modules calls
    this last thing."""
    import sys
    import types

    module = sys.modules[module_name]

    class _Callable(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(self, function_name)(*args, **kwargs)

    module.__class__ = _Callable


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'smolfs' has no attribute {name!r}") from None
    import importlib

    return getattr(importlib.import_module(module_name), attr)
