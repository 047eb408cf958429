"""What a build adds to the sets: ``/etc/fstab``, the service's files, the device nodes
a kernel needs, the ``/rescue`` links, the host name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from smolfs.arch import Arch
from smolfs.errors import InputError
from smolfs.fs.filedata import BytesData, FileData
from smolfs.fs.tree import Kind, Node, Tree
from smolfs.image.devices import device_nodes
from smolfs.image.service import Service

#: Links made when the sets bring a crunched /rescue but not the programs init needs.
RESCUE_LINKS: tuple[tuple[str, str], ...] = (
    ("sbin/init", "/rescue/init"),
    ("bin/sh", "/rescue/sh"),
    ("sbin/mount_ffs", "/rescue/mount_ffs"),
    ("sbin/mount_ext2fs", "/rescue/mount_ext2fs"),
)


#: How each filesystem is named in /etc/fstab.
FSTAB_TYPE = {"ffs": "ffs", "ext2": "ext2fs"}


def file_node(content: str | bytes, mtime: int, mode: int) -> Node:
    data = content.encode() if isinstance(content, str) else content
    return Node(Kind.FILE, mode=mode, mtime=mtime, data=BytesData(data))


def fstab(fs: str, ro: bool, arch: Arch = Arch.AMD64) -> str:
    """The generated ``/etc/fstab``: the root filesystem on the first virtio disk
    (``ld0a``; ``ld4a`` on aarch64, see :attr:`Arch.root_disk`)."""
    opts = "ro" if ro else "rw"
    return (
        "# /etc/fstab written by smolfs build\n"
        f"/dev/{arch.root_disk}a / {FSTAB_TYPE[fs]} {opts} 1 1\n"
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
