"""An image's sources merged into one :class:`~smolfs.fs.tree.Tree`: directories, tar
archives and pkgsrc binary packages, in order (a later entry wins, directories merge),
then an mtree spec (:func:`build_tree`, for :func:`smolfs.image.mkfs.mkfs`).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from smolfs import log
from smolfs.errors import InputError
from smolfs.fs.tree import Tree, source_date_epoch
from smolfs.sets.hostdir import add_directory
from smolfs.sets.sources import ArchiveInfo, add_archive
from smolfs.sets.spool import Spool


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as err:
        raise InputError(f"cannot read source {path}: {err.strerror}") from err


def _is_package(path: str) -> bool:
    from smolfs.pkg.archive import is_package

    return is_package(path)


def _install_package(tree: Tree, path: str, spool: Spool | Callable[[], Spool],
                     installer: Any) -> Any:
    from smolfs.pkg.install import Installer

    if installer is None:
        epoch = source_date_epoch()
        installer = Installer(tree, spool if isinstance(spool, Spool) else spool(),
                              int(time.time()) if epoch is None else epoch)
    installer.install(Path(path))
    return installer


def build_tree(sources: Iterable[str | os.PathLike[str]], spool: Spool | Callable[[], Spool],
               spec: str | os.PathLike[str] | None = None, progress: bool = False,
               owner: tuple[int, int] | None = None,
               exclude: frozenset[tuple[int, int]] = frozenset(),
               ) -> tuple[Tree, list[ArchiveInfo]]:
    """Merge *sources* (directories or archives, later ones win) and apply *spec*.

    *spool* receives archive data; it may be a function making one when the first
    archive comes. Host files in *exclude* (``(st_dev, st_ino)``) are left out of
    directories."""
    from contextlib import nullcontext

    def step(title: str) -> Any:
        return log.step(title) if progress else nullcontext()

    tree = Tree()
    archives: list[ArchiveInfo] = []
    installer: Any = None
    for source in sources:
        path = os.fspath(source)
        if _is_dir(path):
            with step(f"read directory {path}"):
                add_directory(tree, path, owner=owner, exclude=exclude)
        elif _is_package(path):  # a pkgsrc binary package: installed as pkg_add would
            with step(f"install package {path}"):
                installer = _install_package(tree, path, spool, installer)
        else:
            with step(f"read archive {path}"):
                archives.append(add_archive(tree, path, spool if isinstance(spool, Spool)
                                            else spool()))
    if installer is not None:
        installer.finish()
    if spec is not None:
        from smolfs.fs.mtree import apply_spec

        with step(f"apply spec {os.fspath(spec)}"):
            apply_spec(tree, spec)
    return tree, archives
