"""kstrip: switch off the drivers a VM does not need in a NetBSD kernel ELF.

:func:`strip` and :func:`list_entries` are the API (:mod:`kstrip.api`),
:data:`DEFAULT_KEEP` the drivers kept by default; they are imported on first use so that
``kstrip --help`` stays fast. ``kstrip.strip("netbsd-GENERIC.gz", out="netbsd-vm")``."""

from __future__ import annotations

from kstrip.defaults import DEFAULT_KEEP

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds of every start
if TYPE_CHECKING:
    from typing import Any

    from kstrip.api import StripResult, default_output, list_entries, strip
    from kstrip.cfdata import Action, FState, Layout, Release
    from kstrip.table import Entry

_LAZY = {
    "Action": "kstrip.cfdata", "FState": "kstrip.cfdata", "Layout": "kstrip.cfdata",
    "Release": "kstrip.cfdata", "Entry": "kstrip.table", "StripResult": "kstrip.api",
    "default_output": "kstrip.api", "list_entries": "kstrip.api", "strip": "kstrip.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kstrip' has no attribute {name!r}")


__all__ = ["DEFAULT_KEEP", "Action", "Entry", "FState", "Layout", "Release", "StripResult",
           "default_output", "list_entries", "strip"]
