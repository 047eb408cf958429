"""Write an FFS or ext2 image from directories, tar archives and an mtree spec.

The public entry point is :func:`mkfs` (also ``smolfs.mkfs``)::

    from smolfs import mkfs
    result = mkfs("root.img", ["./overlay", "base.tar.xz"], fstype="ffs", size="64m",
                  options={"version": "1"}, spec="extra.spec")
    print(result.size, result.files)

:func:`write_image` writes an already-built :class:`~smolfs.tree.Tree`. Both write to
a temporary file beside the image and rename it at the end: on any failure,
Ctrl-C included, nothing is left at the destination.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from smolfs import callable_module, log
from smolfs.errors import ImageTooSmall, InputError, SmolError, UsageError
from smolfs.sizes import format_size, mib_ceil, parse_size
from smolfs.sources import ArchiveInfo, Spool, add_archive, add_directory, write_error
from smolfs.tree import Tree, source_date_epoch

#: Filesystem type → module holding its writer (``Options``, ``minimum_size``, ``write``).
WRITERS: dict[str, tuple[str, str]] = {
    "ffs": ("smolfs.ffs", "FfsOptions"),
    "ext2": ("smolfs.ext2", "Ext2Options"),
}

#: Automatic sizes are rounded up to this (a multiple of every block size).
SIZE_UNIT = 64 * 1024


@dataclass(frozen=True)
class MkfsResult:
    """What :func:`mkfs` wrote: the image, its size in bytes, the filesystem type,
    the number of names (``files``) and inodes in it, the bytes of file data, and
    the archives read (with their SHA-512 digests)."""

    image: Path
    size: int
    fstype: str
    files: int
    inodes: int
    data_bytes: int
    archives: list[ArchiveInfo] = field(default_factory=list)
    seconds: float = 0.0


def check_fstype(fstype: str) -> tuple[str, str]:
    """The writer's module and options class names; UsageError for an unknown *fstype*."""
    try:
        return WRITERS[fstype]
    except KeyError:
        raise UsageError(f"unknown filesystem type {fstype!r} "
                         f"(choose from {', '.join(WRITERS)})") from None


def writer(fstype: str) -> tuple[ModuleType, type]:
    """The writer module and its options class for *fstype*."""
    module_name, options_name = check_fstype(fstype)
    module = importlib.import_module(module_name)
    options_cls = getattr(module, options_name, None)
    if options_cls is None or not hasattr(module, "write"):
        raise SmolError(f"the {fstype} writer is not available in this build of smolfs")
    return module, options_cls


def make_options(fstype: str, options: Mapping[str, str] | Any | None = None) -> Any:
    """Writer options from makefs-style strings (``{"version": "2"}``) or an Options object.

    With ``SOURCE_DATE_EPOCH`` set and no timestamp asked for, the filesystem's own
    timestamps are set to it.
    """
    _, options_cls = writer(fstype)
    if options is None:
        opts = options_cls.from_makefs({})
    elif isinstance(options, Mapping):
        opts = options_cls.from_makefs({str(k): str(v) for k, v in options.items()})
    elif isinstance(options, options_cls):
        opts = options
    else:
        raise UsageError(f"{fstype} options must be a dict of strings or a "
                         f"{options_cls.__name__}, not {type(options).__name__}")
    epoch = source_date_epoch()
    if epoch is not None and getattr(opts, "timestamp", 0) is None:
        opts = dataclasses.replace(opts, timestamp=epoch)
    return opts


def image_size(tree: Tree, fstype: str, opts: Any, size: int | str | None,
               headroom: float = 0.10, image: str | os.PathLike[str] = "image",
               min_size: int | str | None = None, max_size: int | str | None = None) -> int:
    """The size to write, in bytes.

    A fixed *size* is checked against the writer's minimum. Otherwise: the minimum
    plus *headroom*, rounded up to :data:`SIZE_UNIT`, at least *min_size* and at most
    *max_size* (as ``makefs -M`` and ``-m``). Raises :class:`ImageTooSmall` naming
    the minimum when the content does not fit.
    """
    module, _ = writer(fstype)
    minimum = int(module.minimum_size(tree, opts))
    where = os.fspath(image)
    if size is not None:
        size = parse_size(size, "image size")
        if size < minimum:
            raise ImageTooSmall(
                f"{where}: {format_size(size)} cannot hold the content; "
                f"the minimum is {minimum / (1 << 20):.1f} MiB",
                minimum,
                hint=f"use -s {mib_ceil(minimum)}m, or leave the size out to size it "
                     "automatically",
            )
        return size
    if headroom < 0:
        raise UsageError(f"headroom must not be negative: {headroom}")
    want = -(-int(minimum * (1 + headroom)) // SIZE_UNIT) * SIZE_UNIT
    if min_size is not None:
        want = max(want, parse_size(min_size, "minimum size"))
    if max_size is not None:
        limit = parse_size(max_size, "maximum size")
        if minimum > limit:
            raise ImageTooSmall(
                f"{where}: the content needs {minimum / (1 << 20):.1f} MiB, more than the "
                f"maximum {format_size(limit)}",
                minimum,
                hint=f"raise the maximum to -m {mib_ceil(minimum)}m",
            )
        want = min(want, limit)
    return want


def write_image(
    tree: Tree,
    image: str | os.PathLike[str],
    fstype: str = "ffs",
    size: int | str | None = None,
    options: Mapping[str, str] | Any | None = None,
    headroom: float = 0.10,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
) -> int:
    """Write *tree* as a *fstype* image at *image*; return the size in bytes.

    *size*: bytes, a string such as ``"20m"``, or None for automatic (the writer's
    minimum plus *headroom*, rounded up to 64 KiB, bounded by *min_size* and
    *max_size* when given: see :func:`image_size`). A fixed size that is too small
    raises :class:`ImageTooSmall` (naming the minimum) before anything is created.
    *options*: makefs-style strings (``{"version": "2", "bsize": "16384"}``) or the
    writer's Options object. With ``SOURCE_DATE_EPOCH`` set, every timestamp is
    clamped to it and it becomes the filesystem's own timestamp.
    """
    tree.validate()
    epoch = source_date_epoch()
    if epoch is not None:
        tree.clamp_times(epoch)
    module, _ = writer(fstype)
    opts = make_options(fstype, options)
    nbytes = image_size(tree, fstype, opts, size, headroom, image, min_size, max_size)
    dest = os.fspath(image)
    if os.path.isdir(dest):
        raise UsageError(f"{dest} is a directory; give the image file to write")
    from smolfs.fileutil import atomic_output

    try:
        with atomic_output(dest) as f:
            fd = f.fileno()
            module.write(tree, fd, nbytes, opts)
            if os.fstat(fd).st_size < nbytes:
                os.ftruncate(fd, nbytes)
    except OSError as err:
        raise write_error(err, f"the image {os.path.basename(dest)}",
                          os.path.dirname(os.path.abspath(dest))) from err
    return nbytes


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
        from smolfs.mtree import apply_spec

        with step(f"apply spec {os.fspath(spec)}"):
            apply_spec(tree, spec)
    return tree, archives


def mkfs(
    image: str | os.PathLike[str],
    sources: Iterable[str | os.PathLike[str]],
    fstype: str = "ffs",
    size: int | str | None = None,
    options: Mapping[str, str] | Any | None = None,
    spec: str | os.PathLike[str] | None = None,
    headroom: float = 0.10,
    owner: tuple[int, int] | None = None,
    progress: bool = False,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
) -> MkfsResult:
    """Write an *fstype* (``"ffs"`` or ``"ext2"``) image at *image* from *sources*.

    Each source is a directory or a tar archive (``.tar``, ``.tgz``, ``.tar.xz``,
    ``.tar.zst``; recognised by content). Sources are merged in order: a later
    entry replaces an earlier one of the same name, directories merge. An mtree
    *spec* (path or text) is applied last, as ``makefs -F`` does. *owner*
    ``(uid, gid)`` replaces the host owners of directory sources. *size*,
    *options*, *headroom*, *min_size* and *max_size* are as for
    :func:`write_image`. *progress* prints timed steps on stderr. Raises
    :class:`~smolfs.errors.SmolError` subclasses on bad input; nothing is left at
    *image* on failure.
    """
    start = time.monotonic()
    sources = list(sources)
    if not sources:
        raise UsageError("no sources given: name at least one directory or archive")
    check_fstype(fstype)
    if size is not None:
        size = parse_size(size, "image size")
    if min_size is not None:
        min_size = parse_size(min_size, "minimum size")
    if max_size is not None:
        max_size = parse_size(max_size, "maximum size")
    opts = make_options(fstype, options)  # bad options fail before any reading
    dest = Path(image)
    if dest.is_dir():
        raise UsageError(f"{dest} is a directory; give the image file to write")
    spool_dir = dest.resolve().parent
    if not spool_dir.is_dir():
        raise UsageError(f"cannot write {dest}: directory {spool_dir} does not exist")
    try:  # an image rewritten inside one of its own sources is not part of itself
        st = dest.stat()
        exclude = frozenset({(st.st_dev, st.st_ino)})
    except OSError:
        exclude = frozenset()
    spools: list[Spool] = []

    def spool() -> Spool:  # made when the first archive comes
        if not spools:
            spools.append(Spool(dir=spool_dir))
        return spools[0]

    try:
        tree, archives = build_tree(sources, spool, spec, progress, owner, exclude)
        if progress:
            with log.step(f"write {fstype} image {dest}"):
                nbytes = write_image(tree, dest, fstype, size, opts, headroom, min_size,
                                     max_size)
        else:
            nbytes = write_image(tree, dest, fstype, size, opts, headroom, min_size, max_size)
    finally:
        for made in spools:
            made.close()
    st = tree.stats()
    return MkfsResult(dest, nbytes, fstype, st.entries, st.inodes, st.data_bytes, archives,
                      time.monotonic() - start)


callable_module(__name__, "mkfs")  # smolfs.mkfs(...) once this module is imported
