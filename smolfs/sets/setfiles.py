"""The set archives a build reads: named sets (fetched into the cache) and archive files."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smolfs.errors import InputError, UsageError
from smolfs.log import step

_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar")


@dataclass(frozen=True)
class SetSource:
    name: str  # "base"
    path: Path
    digest: str | None = None  # SHA512 of the archive when known (verified by fetch)


def is_archive_path(token: str) -> bool:
    """A token names a file (not a set) when it has a directory part or an archive suffix."""
    return "/" in token or token.endswith(_ARCHIVE_SUFFIXES) or os.path.isfile(token)


def set_name_of(path: Path) -> str:
    """``/x/base.tar.xz`` → ``base``."""
    name = path.name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def resolve_sets(tokens: Sequence[str], release: str | None, arch: str, mirror: str | None,
                  offline: bool, kernel: str | None = None
                  ) -> tuple[list[SetSource], str | None, Path | None]:
    """Archive paths for *tokens*, fetching named sets (and *kernel*); the release used."""
    names = [t for t in tokens if not is_archive_path(t)]
    for n in names:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", n):
            raise UsageError(f"{n!r} is neither a set name nor an archive file")
    fetched: dict[str, Path] = {}
    known: dict[str, str | None] = {}
    kernel_path: Path | None = None
    if names or kernel:
        from smolfs.sets.fetch import fetch
        from smolfs.sets.release import DEFAULT_RELEASE

        release = release or DEFAULT_RELEASE
        what = ", ".join([*names, *([f"kernel {kernel}"] if kernel else [])])
        with step(f"fetch {what} (NetBSD {release} {arch})"):
            res = fetch(names, release=release, arch=arch, kernel=kernel, mirror=mirror,
                        offline=offline)
        fetched = {n: Path(res.sets[n]) for n in names}
        known = {n: res.digests.get(n) for n in names}
        kernel_path = Path(res.kernel).resolve() if res.kernel else None
    out: list[SetSource] = []
    for t in tokens:
        if t in fetched:
            out.append(SetSource(t, fetched[t], known.get(t)))
            continue
        path = Path(t)
        try:
            st = path.stat()
        except OSError as err:
            raise InputError(f"set archive {t}: {err.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"set archive {t} is not a regular file")
        out.append(SetSource(set_name_of(path), path))
    return out, release, kernel_path
