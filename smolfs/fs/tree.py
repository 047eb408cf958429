"""A filesystem-neutral tree: what goes into an image, before any on-disk format.

Sources fill a :class:`Tree`, a writer (:mod:`smolfs.fs.ffs`, :mod:`smolfs.fs.ext2`)
lays it out. Owners, modes, device numbers and link counts are plain fields, names are
``bytes``; file contents are :class:`~smolfs.fs.filedata.Data` objects."""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smolfs.errors import FilesystemLimitError, InputError

if TYPE_CHECKING:
    from smolfs.fs.filedata import Data

NAME_MAX = 255
SYMLINK_MAX = 1023


class Kind(enum.IntEnum):
    """File types, valued as the ``S_IFMT`` bits of a mode."""

    FIFO = stat.S_IFIFO
    CHR = stat.S_IFCHR
    DIR = stat.S_IFDIR
    BLK = stat.S_IFBLK
    FILE = stat.S_IFREG
    SYMLINK = stat.S_IFLNK
    SOCK = stat.S_IFSOCK


# ---------------------------------------------------------------------------
# Nodes


@dataclass(eq=False)
class Node:
    """One inode. A hard link is the same ``Node`` object under several names."""

    kind: Kind
    mode: int = 0o755  # permission bits only (incl. setuid/setgid/sticky): 0o7777
    uid: int = 0
    gid: int = 0
    mtime: int = 0  # seconds since the epoch
    atime: int | None = None  # None: same as mtime
    ctime: int | None = None  # None: same as mtime
    flags: int = 0  # BSD file flags (UF_*/SF_*), as chflags(2)
    data: Data | None = None  # FILE only
    target: bytes = b""  # SYMLINK only
    rdev: tuple[int, int] = (0, 0)  # CHR/BLK: (major, minor)
    children: dict[bytes, Node] = field(default_factory=dict)  # DIR only
    nlink_extra: int = 0  # maintained by Tree: names beyond the first

    @property
    def size(self) -> int:
        if self.kind == Kind.FILE:
            return self.data.size if self.data else 0
        if self.kind == Kind.SYMLINK:
            return len(self.target)
        return 0

    @property
    def full_mode(self) -> int:
        return int(self.kind) | (self.mode & 0o7777)

    def times(self) -> tuple[int, int, int]:
        """(atime, mtime, ctime)."""
        a = self.mtime if self.atime is None else self.atime
        c = self.mtime if self.ctime is None else self.ctime
        return a, self.mtime, c

    def is_dir(self) -> bool:
        return self.kind == Kind.DIR


def _b(name: str | bytes) -> bytes:
    return os.fsencode(name) if isinstance(name, str) else name


def split_path(path: str | bytes) -> list[bytes]:
    """``"./usr//bin/"`` → ``[b"usr", b"bin"]``; rejects ``..`` and NUL."""
    raw = _b(path)
    if b"\0" in raw:
        raise InputError(f"path {raw!r} contains a NUL byte")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise InputError(f"path {os.fsdecode(raw)!r} contains '..'")
    for p in parts:
        check_name(p)
    return parts


def check_name(name: bytes) -> None:
    if not name or name in (b".", b".."):
        raise InputError(f"invalid file name {name!r}")
    if b"/" in name or b"\0" in name:
        raise FilesystemLimitError(f"file name {name!r} contains '/' or NUL")
    if len(name) > NAME_MAX:
        raise FilesystemLimitError(
            f"file name {os.fsdecode(name[:40])!r}... is {len(name)} bytes; "
            f"the limit is {NAME_MAX}"
        )


class Tree:
    """A directory tree rooted at ``root`` (owned root:wheel, mode 0755 by default)."""

    def __init__(self, mtime: int = 0) -> None:
        self.root = Node(Kind.DIR, mode=0o755, mtime=mtime)

    # -- lookup ---------------------------------------------------------------
    def get(self, path: str | bytes) -> Node | None:
        node = self.root
        for part in split_path(path):
            if node.kind != Kind.DIR:
                return None
            nxt = node.children.get(part)
            if nxt is None:
                return None
            node = nxt
        return node

    def __contains__(self, path: str | bytes) -> bool:
        return self.get(path) is not None

    # -- building -------------------------------------------------------------
    def mkdirs(self, path: str | bytes, mode: int = 0o755, uid: int = 0, gid: int = 0,
               mtime: int = 0) -> Node:
        """Create missing directories along *path* (like ``mkdir -p``); return the last."""
        node = self.root
        for part in split_path(path):
            nxt = node.children.get(part)
            if nxt is None:
                nxt = Node(Kind.DIR, mode=mode, uid=uid, gid=gid, mtime=mtime)
                node.children[part] = nxt
            elif nxt.kind != Kind.DIR:
                raise InputError(f"{os.fsdecode(_b(path))}: {os.fsdecode(part)} is not a directory")
            node = nxt
        return node

    def add(self, path: str | bytes, node: Node, replace: bool = True) -> Node:
        """Put *node* at *path*, creating parent directories as needed.

        An existing directory at *path* that meets a new directory keeps its
        children and takes the new one's attributes. Any other existing entry is
        replaced when *replace* (later sources override earlier ones), otherwise
        :class:`InputError` is raised.
        """
        parts = split_path(path)
        if not parts:
            if node.kind != Kind.DIR:
                raise InputError("the root of an image must be a directory")
            self._merge_dir(self.root, node)
            return self.root
        parent = self.mkdirs(b"/".join(parts[:-1]))
        name = parts[-1]
        old = parent.children.get(name)
        if old is not None:
            if old.kind == Kind.DIR and node.kind == Kind.DIR:
                self._merge_dir(old, node)
                return old
            if not replace:
                raise InputError(f"{os.fsdecode(b'/'.join(parts))} exists already")
            self._unlink(old)
        parent.children[name] = node
        return node

    def link(self, path: str | bytes, existing: str | bytes) -> Node:
        """Make *path* a hard link to the non-directory at *existing*."""
        target = self.get(existing)
        if target is None:
            raise InputError(
                f"hard link {os.fsdecode(_b(path))} → {os.fsdecode(_b(existing))}: "
                "the target does not exist (yet)"
            )
        if target.kind == Kind.DIR:
            raise InputError(f"hard link {os.fsdecode(_b(path))}: target is a directory")
        parts = split_path(path)
        if not parts:
            raise InputError("cannot hard-link the root directory")
        parent = self.mkdirs(b"/".join(parts[:-1]))
        old = parent.children.get(parts[-1])
        if old is target:
            return target
        if old is not None:
            if old.kind == Kind.DIR:
                raise InputError(f"{os.fsdecode(_b(path))} is a directory")
            self._unlink(old)
        parent.children[parts[-1]] = target
        target.nlink_extra += 1
        return target

    def remove(self, path: str | bytes) -> None:
        parts = split_path(path)
        if not parts:
            raise InputError("cannot remove the root directory")
        parent = self.get(b"/".join(parts[:-1]))
        if parent is None or parent.kind != Kind.DIR or parts[-1] not in parent.children:
            raise InputError(f"{os.fsdecode(_b(path))}: no such file in the image")
        self._unlink(parent.children.pop(parts[-1]))

    @staticmethod
    def _unlink(node: Node) -> None:
        if node.kind != Kind.DIR and node.nlink_extra:
            node.nlink_extra -= 1

    @staticmethod
    def _merge_dir(old: Node, new: Node) -> None:
        old.mode, old.uid, old.gid = new.mode, new.uid, new.gid
        old.mtime, old.atime, old.ctime, old.flags = new.mtime, new.atime, new.ctime, new.flags
        for name, child in new.children.items():
            old.children[name] = child

    # -- walking --------------------------------------------------------------
    def walk(self) -> Iterator[tuple[bytes, Node]]:
        """Yield ``(path, node)`` depth-first, parents before children, names sorted.

        The root is yielded first as ``b""``. A hard-linked node is yielded once
        per name. The order is deterministic: the same tree walks the same way.
        """
        stack: list[tuple[bytes, Node]] = [(b"", self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            if node.kind == Kind.DIR:
                prefix = path + b"/" if path else b""
                for name in sorted(node.children, reverse=True):
                    stack.append((prefix + name, node.children[name]))

    def nlink(self, node: Node) -> int:
        """Link count as a filesystem stores it (a directory: 2 + subdirectories)."""
        if node.kind == Kind.DIR:
            return 2 + sum(1 for c in node.children.values() if c.kind == Kind.DIR)
        return 1 + node.nlink_extra

    def clamp_times(self, epoch: int) -> None:
        """Clamp every timestamp to at most *epoch* (``SOURCE_DATE_EPOCH``)."""
        seen: set[int] = set()
        for _, node in self.walk():
            if id(node) in seen:
                continue
            seen.add(id(node))
            a, m, c = node.times()
            node.mtime = min(m, epoch)
            node.atime = min(a, epoch)
            node.ctime = min(c, epoch)

    def stats(self) -> TreeStats:
        """Counts a writer needs to size an image."""
        st = TreeStats()
        seen: set[int] = set()
        for _, node in self.walk():
            st.entries += 1
            if id(node) in seen:
                continue
            seen.add(id(node))
            st.inodes += 1
            if node.kind == Kind.DIR:
                st.dirs += 1
            elif node.kind == Kind.FILE:
                st.files += 1
                st.data_bytes += node.size
        return st

    def validate(self, symlink_max: int = SYMLINK_MAX) -> None:
        """Check every symlink target length and data size for sanity."""
        for path, node in self.walk():
            if node.kind == Kind.SYMLINK:
                if not node.target or len(node.target) > symlink_max:
                    raise FilesystemLimitError(
                        f"symlink /{os.fsdecode(path)}: target is {len(node.target)} bytes; "
                        f"allowed 1 to {symlink_max}"
                    )
                if b"\0" in node.target:
                    raise FilesystemLimitError(f"symlink /{os.fsdecode(path)}: target contains NUL")


@dataclass
class TreeStats:
    entries: int = 0  # names, hard links counted once per name
    inodes: int = 0
    dirs: int = 0
    files: int = 0
    data_bytes: int = 0


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` as an int, or None when unset."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise InputError(
            f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds"
        ) from err
