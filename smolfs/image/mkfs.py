"""Write an FFS or ext2 image from directories, tar archives and an mtree spec.

The public entry point is :func:`mkfs` (also ``smolfs.image.mkfs``)::

    from smolfs.image import mkfs
    result = mkfs("root.img", ["./overlay", "base.tar.xz"], fstype="ffs", size="64m",
                  options={"version": "1"}, spec="extra.spec")
    print(result.size, result.files)

:func:`write_image` writes an already-built :class:`~smolfs.fs.tree.Tree`. Both write to
a temporary file beside the image and rename it at the end: on any failure,
Ctrl-C included, nothing is left at the destination.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from smolfs import log
from smolfs.errors import ImageTooSmall, SmolError, UsageError
from smolfs.fs.sizes import check_bound, format_size, parse_size, size_arg
from smolfs.fs.tree import Tree, source_date_epoch
from smolfs.image.merge import build_tree
from smolfs.sets.sources import ArchiveInfo
from smolfs.sets.spool import Spool, write_error

#: Filesystem type → module holding its writer (``Options``, ``minimum_size``, ``write``).
WRITERS: dict[str, tuple[str, str]] = {
    "ffs": ("smolfs.fs.ffs", "FfsOptions"),
    "ext2": ("smolfs.fs.ext2", "Ext2Options"),
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
    free_inodes: int = 0  # read back from the image written
    free_bytes: int = 0


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


def parse_free(value: int | str | None, what: str) -> tuple[int, int]:
    """A makefs ``-f``/``-b`` value as ``(amount, percent)``: ``"4096"`` → (4096, 0),
    ``"8m"`` → (8388608, 0) for sizes, ``"10%"`` → (0, 10)."""
    if value is None:
        return 0, 0
    text = str(value).strip()
    if text.endswith("%"):
        number = text[:-1].strip()
        if not number.isdigit() or int(number) > 99:
            raise UsageError(f"invalid {what} {value!r}: a percentage is 0% to 99%")
        return 0, int(number)
    if what == "free files":
        if not text.isdigit():
            raise UsageError(f"invalid {what} {value!r}: write a number of inodes or PCT%")
        return int(text), 0
    return parse_size(text, what), 0


@dataclass(frozen=True)
class Room:
    """What an image keeps free beyond its content: at least ``free_files`` inodes and
    ``free_space`` bytes (makefs ``-f`` and ``-b``: a number, or ``"N%"`` of the
    content's inodes / of its minimum size)."""

    free_files: int | str | None = None
    free_space: int | str | None = None


def image_size(tree: Tree, fstype: str, opts: Any, size: int | str | None,
               headroom: float = 0.10, image: str | os.PathLike[str] = "image",
               min_size: int | str | None = None, max_size: int | str | None = None,
               room: Room | None = None, force: bool = False) -> int:
    """The size to write, in bytes: see :func:`size_and_options`."""
    return size_and_options(tree, fstype, opts, size, headroom, image, min_size, max_size,
                            room, force)[0]


def size_and_options(tree: Tree, fstype: str, opts: Any, size: int | str | None,
                     headroom: float = 0.10, image: str | os.PathLike[str] = "image",
                     min_size: int | str | None = None, max_size: int | str | None = None,
                     room: Room | None = None, force: bool = False) -> tuple[int, Any]:
    """The size to write, in bytes, and the writer options to write it with.

    A fixed *size* is checked against the writer's minimum (content plus *room*);
    its inode count follows the size (the writer's default density: newfs's for
    FFS, mke2fs's for ext2) unless the options give a density or an inode count.
    Otherwise: the minimum plus *headroom*, rounded up to :data:`SIZE_UNIT`, at
    least *min_size* and at most *max_size* (as ``makefs -M`` and ``-m``), with free
    inodes in proportion to the free space (:func:`auto_inodes`). Raises
    :class:`ImageTooSmall` naming the minimum when the content does not fit, and
    :class:`~smolfs.errors.ImageTooLarge` over :data:`smolfs.fs.sizes.MAX_IMAGE`
    unless *force*.
    """
    module, _ = writer(fstype)
    where = os.fspath(image)
    roomy = hasattr(module, "inodes_used") and hasattr(opts, "free_inodes")
    content = int(module.minimum_size(tree, opts))
    minimum = content
    if roomy and room is not None:
        files, files_pct = parse_free(room.free_files, "free files")
        space, space_pct = parse_free(room.free_space, "free space")
        if files or files_pct or space or space_pct:
            used = int(module.inodes_used(tree, opts))
            opts = dataclasses.replace(
                opts, free_inodes=max(opts.free_inodes, files + used * files_pct // 100),
                free_space=max(opts.free_space, space + content * space_pct // 100))
            minimum = int(module.minimum_size(tree, opts))
    if size is not None:
        size = parse_size(size, "image size")
        check_bound(size, where, force)
        if size < minimum:
            raise ImageTooSmall(
                f"{where}: {format_size(size)} cannot hold the content; "
                f"the minimum is {format_size(minimum)}",
                minimum,
                hint=f"use -s {size_arg(minimum)}, or leave the size out to size it "
                     "automatically",
            )
        return size, opts
    if headroom < 0:
        raise UsageError(f"headroom must not be negative: {headroom}")
    want = _round_unit(int(minimum * (1 + headroom)))
    if min_size is not None:
        want = max(want, parse_size(min_size, "minimum size"))
    limit = None
    if max_size is not None:
        limit = parse_size(max_size, "maximum size")
        if minimum > limit:
            raise ImageTooSmall(
                f"{where}: the content needs {format_size(minimum)}, more than the "
                f"maximum {format_size(limit)}",
                minimum,
                hint=f"raise the maximum to -m {size_arg(minimum)}",
            )
        want = min(want, limit)
    check_bound(want, where, force)
    if roomy and opts.density is None and opts.inodes is None:
        want, opts = auto_inodes(tree, module, opts, want, content, limit)
        check_bound(want, where, force)
    return want, opts


def _round_unit(n: int) -> int:
    return -(-n // SIZE_UNIT) * SIZE_UNIT


def auto_inodes(tree: Tree, module: ModuleType, opts: Any, size: int, content: int,
                limit: int | None = None) -> tuple[int, Any]:
    """Inodes for an automatically sized image: the content's, and free ones in
    proportion to the free space, at the writer's default density for the size
    (``(size - content) / density``), or ``opts.free_inodes`` if more. The size
    grows to hold them (up to *limit*); returns the size and the options."""
    used = int(module.inodes_used(tree, opts))
    free = max(opts.free_inodes, (size - content) // int(module.default_density(size, opts)))
    sized = dataclasses.replace(opts, free_inodes=free, inodes=used + free)
    need = int(module.minimum_size(tree, sized))
    if need <= size:
        return size, sized
    need = _round_unit(need)
    if limit is not None and need > limit:
        return size, opts  # no room for them under the maximum: the content's own
    return need, sized


def write_image(
    tree: Tree,
    image: str | os.PathLike[str],
    fstype: str = "ffs",
    size: int | str | None = None,
    options: Mapping[str, str] | Any | None = None,
    headroom: float = 0.10,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
    room: Room | None = None,
    force: bool = False,
) -> int:
    """Write *tree* as a *fstype* image at *image*; return the size in bytes.

    *size*: bytes, a string such as ``"20m"``, or None for automatic (the writer's
    minimum plus *headroom*, rounded up to 64 KiB, bounded by *min_size* and
    *max_size* when given, free inodes in proportion to the free space: see
    :func:`size_and_options`). *room*: free inodes and space to keep beyond the content
    (makefs ``-f``/``-b``). A fixed size that is too small raises
    :class:`ImageTooSmall` (naming the minimum) before anything is created; a size
    over 64 GiB raises :class:`~smolfs.errors.ImageTooLarge` unless *force*.
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
    nbytes, opts = size_and_options(tree, fstype, opts, size, headroom, image, min_size,
                                    max_size, room, force)
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
    free_files: int | str | None = None,
    free_space: int | str | None = None,
    force: bool = False,
) -> MkfsResult:
    """Write an *fstype* (``"ffs"`` or ``"ext2"``) image at *image* from *sources*.

    Each source is a directory or a tar archive (``.tar``, ``.tgz``, ``.tar.xz``,
    ``.tar.zst``; recognised by content). Sources are merged in order: a later
    entry replaces an earlier one of the same name, directories merge. An mtree
    *spec* (path or text) is applied last, as ``makefs -F`` does. *owner*
    ``(uid, gid)`` replaces the host owners of directory sources. *size*,
    *options*, *headroom*, *min_size*, *max_size* and *force* are as for
    :func:`write_image`; *free_files* and *free_space* are makefs's ``-f`` and
    ``-b`` (a count of inodes / a size, or ``"N%"`` of the content's). *progress*
    prints timed steps on stderr. Raises
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
    room = Room(free_files, free_space)
    parse_free(free_files, "free files")  # bad values fail before any reading
    parse_free(free_space, "free space")
    if size is not None:
        check_bound(size, os.fspath(image), force)
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
        args = (tree, dest, fstype, size, opts, headroom, min_size, max_size, room, force)
        if progress:
            with log.step(f"write {fstype} image {dest}"):
                nbytes = write_image(*args)
        else:
            nbytes = write_image(*args)
    finally:
        for made in spools:
            made.close()
    st = tree.stats()
    free_inodes = free_bytes = 0
    if fstype in ("ffs", "ext2"):
        from smolfs.fs.fsstat import stat_image

        fs = stat_image(dest)
        free_inodes, free_bytes = fs.free_inodes, fs.free_bytes
    return MkfsResult(dest, nbytes, fstype, st.entries, st.inodes, st.data_bytes, archives,
                      time.monotonic() - start, free_inodes, free_bytes)
