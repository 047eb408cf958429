"""kstrip: switch off the drivers a VM does not need in a NetBSD kernel ELF.

>>> import kstrip
>>> result = kstrip.strip("netbsd-GENERIC.gz", out="netbsd-vm")   # doctest: +SKIP
>>> result.changed, result.version, result.output                  # doctest: +SKIP
(456, '10.1', PosixPath('netbsd-vm'))

See :func:`kstrip.strip.strip` for the parameters; :data:`DEFAULT_KEEP` for the drivers
kept by default.
"""

from kstrip.cfdata import Action, FState, Layout, Release
from kstrip.strip import DEFAULT_KEEP, Entry, StripResult, default_output, list_entries, strip

__all__ = ["DEFAULT_KEEP", "Action", "Entry", "FState", "Layout", "Release", "StripResult",
           "default_output", "list_entries", "strip"]
