"""Where mksmolnb keeps its cache: one rule for every component. Imports ``os`` only, so
that the launcher's fast path can use it before QEMU starts."""

from __future__ import annotations

import os

ENV = "MKSMOLNB_CACHE"


def cache_root() -> str:
    """``$MKSMOLNB_CACHE``, else ``$XDG_CACHE_HOME/mksmolnb`` (when it is an absolute path,
    as the XDG specification requires), else ``~/.cache/mksmolnb``."""
    if os.environ.get(ENV):
        return os.path.expanduser(os.environ[ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mksmolnb")
