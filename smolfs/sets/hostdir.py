"""A host directory read into a tree as it is: modes, times, owners, hard links, device
numbers, holes. Nothing on the host is changed."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from smolfs.errors import InputError
from smolfs.fs.filedata import HostFileData
from smolfs.fs.tree import Kind, Node, Tree, check_name

if TYPE_CHECKING:
    pass

_KINDS = {int(k): k for k in Kind}
_EUID = os.geteuid() if hasattr(os, "geteuid") else -1


def join_path(prefix: bytes, name: bytes) -> bytes:
    return prefix + b"/" + name if prefix else name


def add_directory(
    tree: Tree,
    path: str | os.PathLike[str],
    prefix: str | bytes = "",
    owner: tuple[int, int] | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> int:
    """Add the contents of host directory *path* under *prefix* in *tree*.

    Like NetBSD's ``makefs``: modes, owners (the host's numeric uid/gid, or *owner*
    for every entry when given), modification times, hard links (same device and
    inode), symlinks (never followed), fifos, sockets and device nodes (the host's
    major/minor numbers) are taken as they are; holes in files stay holes. The
    directory itself gives its attributes to *prefix* (the root by default).
    Access and change times are set equal to the modification time, so copies of
    the same tree give the same image. Later sources replace earlier entries of
    the same name; directories merge. Files whose ``(st_dev, st_ino)`` is in
    *exclude* are left out (an image being rewritten inside its own source).
    Returns the number of entries added.
    """
    top = os.fsencode(os.fspath(path))
    pre = os.fsencode(prefix) if isinstance(prefix, str) else prefix
    pre = b"/".join(p for p in pre.split(b"/") if p not in (b"", b"."))
    try:
        st = os.stat(top)
    except OSError as err:
        raise InputError(f"cannot read {os.fsdecode(top)}: {err.strerror}") from err
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{os.fsdecode(top)} is not a directory")
    root = tree.add(pre, _node_from_stat(st, b"", owner))
    links: dict[tuple[int, int], Node] = {}
    count = 0
    stack = [(top, root)]
    while stack:
        host_dir, parent = stack.pop()
        try:
            with os.scandir(host_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise InputError(f"cannot read directory {os.fsdecode(host_dir)}: {err.strerror}") \
                from err
        children = parent.children
        for entry in entries:
            name = entry.name
            check_name(name)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as err:
                raise InputError(f"cannot read {os.fsdecode(entry.path)}: {err.strerror}") \
                    from err
            if exclude and (st.st_dev, st.st_ino) in exclude:
                continue
            count += 1
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                first = links.get(key)
                if first is not None:
                    _put(children, name, first)
                    first.nlink_extra += 1
                    continue
                node = links[key] = _node_from_stat(st, entry.path, owner)
            else:
                node = _node_from_stat(st, entry.path, owner)
            node = _put(children, name, node)
            if node.kind == Kind.DIR:
                stack.append((entry.path, node))
    return count


def _put(children: dict[bytes, Node], name: bytes, node: Node) -> Node:
    """``Tree.add`` for a known parent: directories merge, anything else is replaced."""
    old = children.get(name)
    if old is not None:
        if old.kind == Kind.DIR and node.kind == Kind.DIR:
            old.mode, old.uid, old.gid, old.mtime = node.mode, node.uid, node.gid, node.mtime
            old.atime, old.ctime, old.flags = node.atime, node.ctime, node.flags
            return old
        if old.kind != Kind.DIR and old.nlink_extra:
            old.nlink_extra -= 1
    children[name] = node
    return node


def _readable(st: os.stat_result, host: bytes) -> bool:
    if st.st_mode & 0o004 or (st.st_uid == _EUID and st.st_mode & 0o400) or _EUID == 0:
        return True
    return os.access(host, os.R_OK)


def _node_from_stat(st: os.stat_result, host: bytes, owner: tuple[int, int] | None) -> Node:
    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
    kind = _KINDS[stat.S_IFMT(st.st_mode)]
    node = Node(kind, stat.S_IMODE(st.st_mode), uid, gid, int(st.st_mtime),
                flags=getattr(st, "st_flags", 0))
    if kind == Kind.FILE:
        if not _readable(st, host):
            raise InputError(f"cannot read {os.fsdecode(host)}: permission denied")
        holes = st.st_blocks * 512 < st.st_size if hasattr(st, "st_blocks") else True
        node.data = HostFileData(os.fsdecode(host), 0, st.st_size, sparse=holes)
    elif kind == Kind.SYMLINK:
        try:
            node.target = os.readlink(host)
        except OSError as err:
            raise InputError(f"cannot read symlink {os.fsdecode(host)}: {err.strerror}") from err
    elif kind in (Kind.CHR, Kind.BLK):
        node.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return node
