"""Build a bootable NetBSD root image for a service: ``smolfs build`` and :func:`build`.

The image is assembled as a :class:`~smolfs.tree.Tree` and written by a
filesystem writer, without root and without extracting anything on the host:

1. the sets are streamed from their archives into the tree (file data goes to a
   spool file and is copied from there into the image);
2. ``<service>/etc/*`` is laid over ``/etc``, ``common/*`` goes to ``/etc/include``;
3. ``/etc/fstab`` is generated (unless the service ships one), the device nodes a
   kernel needs before ``MAKEDEV`` exists are added, and when the sets have a
   crunched ``/rescue`` but no ``/sbin/init``, the usual links into it are made;
4. ``postinst/*.sh`` scripts, if any, run on a staging copy (:mod:`smolfs.postinst`);
5. the image is written atomically, then the manifest beside it (``IMAGE.json``).

Embedding::

    from smolfs.build import build
    result = build("bozohttpd", image="web.img", sets=["base.tar.xz", "etc.tar.xz"])
    print(result.image, result.manifest["size"])
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import re
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolfs import manifest as _manifest
from smolfs.cli import VERSION
from smolfs.devices import Arch, device_nodes
from smolfs.errors import ImageTooSmall, InputError, UsageError
from smolfs.log import info, step
from smolfs.service import FILESYSTEMS, Service, load, split_list
from smolfs.tree import BytesData, FileData, Kind, Node, Tree, source_date_epoch

MIB = 1 << 20

#: Links made when the sets bring a crunched /rescue but not the programs init needs.
RESCUE_LINKS: tuple[tuple[str, str], ...] = (
    ("sbin/init", "/rescue/init"),
    ("bin/sh", "/rescue/sh"),
    ("sbin/mount_ffs", "/rescue/mount_ffs"),
    ("sbin/mount_ext2fs", "/rescue/mount_ext2fs"),
)

#: How each filesystem is named in /etc/fstab.
FSTAB_TYPE = {"ffs": "ffs", "ext2": "ext2fs"}

_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar")


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` made: the image path and its manifest (also in ``IMAGE.json``)."""

    image: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class SetSource:
    name: str  # "base"
    path: Path


def build(
    service: str = "rescue",
    image: str | os.PathLike[str] | None = None,
    sets: str | Sequence[str | os.PathLike[str]] | None = None,
    size_mb: int | None = None,
    fs: str | None = None,
    arch: str = "amd64",
    release: str | None = None,
    ro: bool | None = None,
    services_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    offline: bool = False,
) -> BuildResult:
    """Build the root image of *service*; return its path and manifest.

    ``sets``: set names (fetched into the cache when missing) and/or archive paths,
    as a list or a comma/space-separated string; None → the service's ``SETS``,
    else ``rescue``. ``size_mb``/``fs``/``ro`` None → the service's
    ``SIZE_MB``/``FS``/``RO``, else automatic size, ``ffs``, read-write.
    ``image`` None → ``<service>-<arch>.img`` in the current directory.
    Raises :class:`~smolfs.errors.SmolError` subclasses; nothing is left at the
    destination on failure.
    """
    arch_ = Arch.parse(arch)
    svc = load(service, services_dir)
    fs = fs or svc.fs or "ffs"
    if fs not in FILESYSTEMS:
        raise UsageError(f"unknown filesystem {fs!r} (choose from {', '.join(FILESYSTEMS)})")
    size_mb = size_mb if size_mb is not None else svc.size_mb
    if size_mb is not None and (not isinstance(size_mb, int) or size_mb <= 0):
        raise UsageError(f"image size must be a positive number of megabytes, not {size_mb!r}")
    ro = bool(ro if ro is not None else svc.ro)
    dest = Path(image) if image is not None else Path(f"{svc.name}-{arch_.value}.img")
    if dest.is_dir():
        raise UsageError(f"{dest} is a directory; give the image file name with -i")
    parent = dest.resolve().parent
    if not parent.is_dir():
        raise InputError(f"cannot write {dest}: no such directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {dest}: directory {parent} is not writable")
    tokens = _set_tokens(sets, svc)
    epoch = source_date_epoch()
    now = int(time.time()) if epoch is None else epoch

    release = release or _default_release()
    sources = _resolve_sets(tokens, release, arch_.value, mirror, offline)

    from smolfs.mkfs import write_image
    from smolfs.sources import Spool, add_archive

    spool_dir = parent
    with Spool(dir=str(spool_dir)) as spool, contextlib.ExitStack() as stack:
        tree = Tree(mtime=now)
        digests: list[str] = []
        for src in sources:
            with step(f"stream {src.path.name}"):
                digests.append(add_archive(tree, src.path, spool).sha512)
        with step(f"add service {svc.name}"):
            # generated over the sets' fstab, under the service's own if it has one
            tree.add("etc/fstab", _file(fstab(fs, ro), now, 0o644))
            add_service(tree, svc, now)
            add_devices(tree, arch_, now)
            add_rescue_links(tree, now)
        scripts = svc.postinst
        if scripts:
            from smolfs.postinst import run_scripts

            work = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix=".smolfs-staging-", dir=spool_dir)))
            run_scripts(tree, scripts, work / "root", {
                "SERVICE": svc.name, "ARCH": arch_.value, "FS": fs, "RO": "yes" if ro else "no",
            })
        with step(f"write {dest.name} ({fs})"):
            try:
                size = write_image(tree, dest, fstype=fs,
                                   size=size_mb * MIB if size_mb else None)
            except ImageTooSmall as err:
                need = math.ceil(err.minimum / MIB)
                raise ImageTooSmall(
                    f"{size_mb} MB is too small for service {svc.name!r}: "
                    f"the content needs at least {need} MB",
                    minimum=err.minimum,
                    hint=f"use -m {need} or more, or leave -m out for an automatic size",
                ) from None

    data = {
        "tool": "mksmolnb",
        "format": _manifest.FORMAT,
        "version": VERSION,
        "image": dest.name,
        "service": svc.name,
        "arch": arch_.value,
        "release": release,
        "fs": fs,
        "size": size,
        "ro": ro,
        "sets": [{"name": s.name, "file": s.path.name, "sha512": d}
                 for s, d in zip(sources, digests, strict=True)],
        "postinst": [p.name for p in scripts],
        "built": _dt.datetime.fromtimestamp(now, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "built_epoch": now,
    }
    _manifest.write(dest, data)
    info(f"{dest}: {_manifest.format_size(size)} {fs}{' (read-only root)' if ro else ''}, "
         f"service {svc.name}, sets {', '.join(s.name for s in sources)}")
    return BuildResult(image=dest, manifest=data)


# ---------------------------------------------------------------------------
# sets


def _default_release() -> str:
    from smolfs.fetch import DEFAULT_RELEASE

    return DEFAULT_RELEASE


def _set_tokens(sets: str | Sequence[str | os.PathLike[str]] | None, svc: Service) -> list[str]:
    if sets is None:
        return list(svc.sets or ("rescue",))
    if isinstance(sets, str | os.PathLike):
        sets = [sets]
    tokens: list[str] = []
    for item in sets:
        if isinstance(item, os.PathLike):
            tokens.append(os.fspath(item))
        else:
            tokens.extend(split_list(item))
    if not tokens:
        raise UsageError("no sets given", hint="name sets (-x base,etc) or archive files")
    return tokens


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


def _resolve_sets(tokens: Sequence[str], release: str, arch: str, mirror: str | None,
                  offline: bool) -> list[SetSource]:
    names = [t for t in tokens if not is_archive_path(t)]
    for n in names:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", n):
            raise UsageError(f"{n!r} is neither a set name nor an archive file")
    fetched: dict[str, Path] = {}
    if names:
        from smolfs.fetch import fetch

        with step(f"sets {', '.join(names)} (NetBSD {release} {arch})"):
            res = fetch(names, release=release, arch=arch, mirror=mirror, offline=offline)
        fetched = {n: Path(res.sets[n]) for n in names}
    out: list[SetSource] = []
    for t in tokens:
        if t in fetched:
            out.append(SetSource(t, fetched[t]))
            continue
        path = Path(t)
        try:
            st = path.stat()
        except OSError as err:
            raise InputError(f"set archive {t}: {err.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"set archive {t} is not a regular file")
        out.append(SetSource(set_name_of(path), path))
    return out


# ---------------------------------------------------------------------------
# what the build adds to the sets


def _file(content: str | bytes, mtime: int, mode: int) -> Node:
    data = content.encode() if isinstance(content, str) else content
    return Node(Kind.FILE, mode=mode, mtime=mtime, data=BytesData(data))


def fstab(fs: str, ro: bool) -> str:
    """The generated ``/etc/fstab``: the root filesystem on the first virtio disk."""
    opts = "ro" if ro else "rw"
    return (
        "# /etc/fstab written by smolfs build\n"
        f"/dev/ld0a / {FSTAB_TYPE[fs]} {opts} 1 1\n"
    )


def add_overlay(tree: Tree, host_dir: Path, prefix: str, mtime: int) -> None:
    """Copy a host directory into the tree below *prefix*, owned root:wheel.

    Modes are normalised (0755 for directories and executable files, else 0644)
    so that the image does not depend on the host's umask or owner.
    """
    tree.mkdirs(prefix, mtime=mtime)
    for dirpath, dirnames, filenames in os.walk(host_dir):
        dirnames.sort()
        rel = os.path.relpath(dirpath, host_dir)
        base = prefix if rel == "." else f"{prefix}/{rel}"
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                tree.add(f"{base}/{d}", Node(Kind.SYMLINK, mtime=mtime,
                                             target=os.fsencode(os.readlink(full))))
            else:
                tree.mkdirs(f"{base}/{d}", mtime=mtime)
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                node = Node(Kind.SYMLINK, mtime=mtime, target=os.fsencode(os.readlink(full)))
            elif stat.S_ISREG(st.st_mode):
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                node = Node(Kind.FILE, mode=mode, mtime=mtime, data=FileData(full))
            else:
                raise InputError(f"{full}: only files, directories and symlinks may be "
                                 "in a service directory")
            tree.add(f"{base}/{f}", node)


def add_service(tree: Tree, svc: Service, mtime: int) -> None:
    """``<service>/etc`` over ``/etc``; ``common`` into ``/etc/include``."""
    add_overlay(tree, svc.etc, "etc", mtime)
    if svc.common is not None:
        add_overlay(tree, svc.common, "etc/include", mtime)


def add_devices(tree: Tree, arch: Arch, mtime: int) -> None:
    """Device nodes for *arch* in ``/dev``; nodes the sets already have are kept."""
    if tree.get("dev") is None:
        tree.mkdirs("dev", mtime=mtime)
    for d in device_nodes(arch):
        path = f"dev/{d.name}"
        if tree.get(path) is None:
            tree.add(path, Node(d.kind, mode=d.mode, uid=0, gid=d.gid, mtime=mtime,
                                rdev=(d.major, d.minor)))


def add_rescue_links(tree: Tree, mtime: int) -> None:
    """``sbin/init`` → ``/rescue/init`` etc., for each program /rescue has and the tree lacks."""
    for link, target in RESCUE_LINKS:
        if tree.get(target) is not None and tree.get(link) is None:
            tree.mkdirs(os.path.dirname(link), mtime=mtime)
            tree.add(link, Node(Kind.SYMLINK, mode=0o755, mtime=mtime, target=target.encode()))
