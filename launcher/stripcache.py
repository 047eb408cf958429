"""Where ``--strip`` keeps stripped kernels, and how one is found again without hashing
the kernel or importing kstrip (pyelftools): ``os`` and ``marshal`` only.

A stripped kernel is ``<cache>/stripped/<sha256 of the loaded kernel>.stripped``, written
once, with ``<sha256>.stat`` beside it: its stat when written. It is trusted only while
its stat is that one (a stripped kernel changed or replaced since is stripped again).
``<cache>/stripped/by-stat/<dev>-<ino>`` remembers, for a loaded kernel, its stat and
digest: while that stat holds, :func:`lookup` finds the stripped kernel by a few stats.
"""

from __future__ import annotations

import marshal
import os

from smolfs.cachedir import cache_root
from smolfs.fileutil import write_atomic

SUFFIX = ".stripped"


def stat_of(path: str) -> tuple[int, int, int, int] | None:
    """Inode, size, mtime, ctime (of what a symbolic link points to); None if missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def directory(cache: str | None = None) -> str:
    return os.path.join(cache or cache_root(), "stripped")


def output_for(digest: str, cache: str | None = None) -> str:
    """The stripped kernel of the loaded kernel whose SHA-256 is ``digest``."""
    return os.path.join(directory(cache), digest + SUFFIX)


def _load(path: str) -> object:
    try:
        with open(path, "rb") as f:
            return marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return None


def _dump(path: str, value: object) -> None:
    try:  # noqa: SIM105  (contextlib costs milliseconds)
        write_atomic(path, marshal.dumps(value), makedirs=True)
    except OSError:
        pass  # a cache that cannot be written is only slower


def valid(digest: str, cache: str | None = None) -> str | None:
    """The stripped kernel for ``digest`` if it is as it was written, else None."""
    out = output_for(digest, cache)
    written = _load(out.removesuffix(SUFFIX) + ".stat")
    now = stat_of(out)
    return out if now is not None and written == now else None


def written(digest: str, cache: str | None = None) -> None:
    """Record the stat of the stripped kernel for ``digest`` just written."""
    out = output_for(digest, cache)
    _dump(out.removesuffix(SUFFIX) + ".stat", stat_of(out))


def _index(kernel: str, cache: str | None) -> str | None:
    try:
        st = os.stat(kernel)
    except OSError:
        return None
    return os.path.join(directory(cache), "by-stat", f"{st.st_dev}-{st.st_ino}")


def lookup(kernel: str, cache: str | None = None) -> str | None:
    """The valid stripped kernel of the loaded kernel ``kernel`` when its digest is
    remembered for its current stat; None otherwise (the caller hashes and strips)."""
    index = _index(kernel, cache)
    entry = _load(index) if index else None
    if not (isinstance(entry, tuple) and len(entry) == 3):
        return None
    path, stat, digest = entry
    if path != os.path.abspath(kernel) or stat != stat_of(kernel) or not isinstance(digest, str):
        return None
    return valid(digest, cache)


def remember(kernel: str, stat: tuple[int, int, int, int] | None, digest: str,
             cache: str | None = None) -> None:
    """Remember that the loaded kernel ``kernel`` has SHA-256 ``digest`` while its stat is
    ``stat`` (taken before it was hashed: a kernel changed meanwhile is not remembered)."""
    index = _index(kernel, cache)
    if index is not None and stat is not None and stat == stat_of(kernel):
        _dump(index, (os.path.abspath(kernel), stat, digest))
