"""Pure layout of an ext2 filesystem: inode numbers and the blocks each inode needs.

Nothing here writes. :func:`scan` turns a :class:`~smolfs.fs.tree.Tree` into inodes in
number order; :func:`count_blocks` says how many blocks each needs. Fitting them into
groups is :mod:`smolfs.fs.ext2.geometry`; why used inodes and blocks are a prefix of
each group: ``smolfs/fs/README.md``."""

from __future__ import annotations

import hashlib
import os
import struct
from collections import deque
from dataclasses import dataclass, field

from smolfs.errors import FilesystemLimitError, InputError
from smolfs.fs.ext2 import structs as S
from smolfs.fs.tree import SYMLINK_MAX, Kind, Node, Tree, check_name

LOSTFOUND = b"lost+found"
TIME_MAX = 2**32 - 1
BLOCKS_MAX = 2**32 - 1
LARGE_FILE = 2**31  # sizes from here on need the large_file feature

FTYPE = {
    Kind.FILE: S.FT_REG,
    Kind.DIR: S.FT_DIR,
    Kind.CHR: S.FT_CHR,
    Kind.BLK: S.FT_BLK,
    Kind.FIFO: S.FT_FIFO,
    Kind.SOCK: S.FT_SOCK,
    Kind.SYMLINK: S.FT_SYMLINK,
}


# ---------------------------------------------------------------------------
# Inodes


@dataclass(eq=False, slots=True)
class Inode:
    """One inode to write, with what its blocks hold."""

    ino: int
    node: Node
    path: bytes = b""  # the first name it was found under (for messages)
    nlink: int = 0
    parent: int = 0  # DIR: inode number of ".."
    entries: list[tuple[bytes, int, int]] = field(default_factory=list)  # DIR: name, ino, type
    extents: list[tuple[int, int]] = field(default_factory=list)  # FILE: data regions
    # filled by count_blocks for one block size:
    runs: list[tuple[int, int]] = field(default_factory=list)  # (logical, count) with content
    indirect: list[tuple[int, ...]] = field(default_factory=list)  # indirect block keys
    meta: int = 0  # blocks in the metadata area: directory, slow-symlink and indirect blocks
    data: int = 0  # file data blocks


@dataclass(slots=True)
class Scan:
    """A tree as ext2 inodes, in inode-number order (root 2, lost+found 11, then 12...)."""

    inodes: list[Inode]
    data_bytes: int
    newest: int  # newest mtime in the tree
    large_file: bool
    digest: bytes  # a hash of names and attributes, for a derived UUID

    @property
    def max_ino(self) -> int:
        return self.inodes[-1].ino


def scan(tree: Tree, revision: int) -> Scan:
    """Number every inode and list every directory's entries; check format limits."""
    tree.validate(SYMLINK_MAX)
    root = tree.root
    if root.kind != Kind.DIR:
        raise InputError("the root of an image must be a directory")
    lostfound = root.children.get(LOSTFOUND)
    if lostfound is None:
        lostfound = Node(Kind.DIR, mode=0o700)
        synthetic_lf = True
    elif lostfound.kind != Kind.DIR:
        raise FilesystemLimitError(
            "/lost+found must be a directory on ext2 (e2fsck needs it there)"
        )
    else:
        synthetic_lf = False

    inodes = [Inode(2, root, parent=2), Inode(S.FIRST_INO, lostfound)]
    by_id: dict[int, Inode] = {id(root): inodes[0], id(lostfound): inodes[1]}
    record: list[bytes] = []
    newest = 0
    data_bytes = 0
    large = False
    queue: deque[Inode] = deque(inodes[:1])
    while queue:
        d = queue.popleft()
        node = d.node
        entries = d.entries
        entries.append((b".", d.ino, S.FT_DIR))
        entries.append((b"..", d.parent, S.FT_DIR))
        at_root = d.ino == 2
        names = list(node.children)
        if at_root and synthetic_lf:
            names.append(LOSTFOUND)
        names.sort()
        subdirs = 0
        for name in names:
            child = lostfound if at_root and name == LOSTFOUND else node.children[name]
            path = d.path + b"/" + name
            check_name(name)
            kind = child.kind
            ci = by_id.get(id(child))
            if ci is None:
                ci = Inode(len(inodes) + 10, child, path)
                by_id[id(child)] = ci
                inodes.append(ci)
                newest = max(newest, child.mtime)
                if kind == Kind.DIR:
                    ci.parent = d.ino
                    queue.append(ci)
                elif kind == Kind.FILE:
                    size = child.size
                    data_bytes += size
                    large = large or size >= LARGE_FILE
                    ci.extents = _extents(child, path)
                elif kind in (Kind.CHR, Kind.BLK):
                    _check_rdev(child, path)
                elif kind not in FTYPE:
                    raise InputError(f"{_show(path)}: unknown file type {kind!r}")
                _check_owner(child, path)
            elif ci.ino == S.FIRST_INO and at_root and name == LOSTFOUND:
                ci.parent = 2
                ci.path = path
                newest = max(newest, child.mtime)
                _check_owner(child, path)
                queue.append(ci)
            elif kind == Kind.DIR or ci.ino <= S.FIRST_INO:
                raise InputError(f"directory {_show(path)} appears under two names")
            ci.nlink += 1
            if kind == Kind.DIR:
                subdirs += 1
            entries.append((name, ci.ino, FTYPE[kind]))
            record.append(struct.pack("<IIB", d.ino, ci.ino, kind >> 12) + name)
        d.nlink = 2 + subdirs
        if d.nlink > S.LINK_MAX:
            raise FilesystemLimitError(
                f"directory {_show(d.path)} holds {subdirs} subdirectories; "
                f"ext2 allows {S.LINK_MAX - 2}"
            )
    newest = max(newest, root.mtime, 0)
    if synthetic_lf:
        lostfound.mtime = min(newest, TIME_MAX)
    for ino in inodes:
        n = ino.node
        if n.kind != Kind.DIR and ino.nlink > S.LINK_MAX:
            raise FilesystemLimitError(
                f"{_show(ino.path)} has {ino.nlink} hard links; ext2 allows {S.LINK_MAX}"
            )
        if revision == 0 and n.size >= LARGE_FILE:
            raise FilesystemLimitError(
                f"{_show(ino.path)} is {n.size} bytes: it needs ext2 revision 1 "
                "(revision 0 stops at 2 GiB)",
                hint="use -o revision=1",
            )
        if revision == 0 and max(n.uid, n.gid) > 0xFFFF:
            # NetBSD reads the high halves only from revision 1 on (ext2fs_set_inode_guid)
            raise FilesystemLimitError(
                f"{_show(ino.path)}: owner {n.uid}:{n.gid} needs ext2 revision 1 "
                "(NetBSD reads only the low 16 bits of owners in revision 0)",
                hint="use -o revision=1",
            )
        record.append(
            struct.pack("<IIIIqqqQqqI", ino.ino, n.mode, n.uid, n.gid, *n.times(), n.size,
                        *n.rdev, n.flags & 0xFFFFFFFF) + n.target
        )
    digest = hashlib.sha256(b"\0".join(record)).digest()
    return Scan(inodes, data_bytes, min(newest, TIME_MAX), large, digest)


def _show(path: bytes) -> str:
    return os.fsdecode(path or b"/")


def _extents(node: Node, path: bytes) -> list[tuple[int, int]]:
    data = node.data
    if data is None or data.size == 0:
        return []
    try:
        ext = sorted((off, ln) for off, ln in data.extents() if ln > 0)
    finally:
        close_data(data)
    for off, ln in ext:
        if off < 0 or off + ln > data.size:
            raise InputError(f"{_show(path)}: data extent ({off}, {ln}) outside the file")
    return ext


def close_data(data: object) -> None:
    """Release a host file descriptor a data source keeps open (thousands of files)."""
    close = getattr(data, "close", None)
    if close is not None:
        close()


def _check_rdev(node: Node, path: bytes) -> None:
    major, minor = node.rdev
    if not (0 <= major <= 0xFFF and 0 <= minor <= 0xFFFFF):
        raise FilesystemLimitError(
            f"device {_show(path)}: {major},{minor} does not fit NetBSD's device "
            "encoding (major up to 4095, minor up to 1048575)"
        )


def _check_owner(node: Node, path: bytes) -> None:
    if not (0 <= node.uid < 2**32 and 0 <= node.gid < 2**32):
        raise FilesystemLimitError(
            f"{_show(path)}: owner {node.uid}:{node.gid} is not a 32-bit id"
        )


def rdev_encode(major: int, minor: int) -> int:
    """NetBSD's ``makedev``: what its ext2fs keeps in ``e2di_blocks[0]`` of a device."""
    return ((major << 8) & 0x000FFF00) | (minor & 0xFF) | ((minor << 12) & 0xFFF00000)


# ---------------------------------------------------------------------------
# Blocks per inode


def dirent_size(name_len: int) -> int:
    return S.DIRENT_HEAD_SIZE + ((name_len + 3) & ~3)


def dir_blocks(entries: list[tuple[bytes, int, int]], bsize: int) -> int:
    """Blocks a directory needs: entries never straddle a block."""
    blocks, used = 1, 0
    for name, _, _ in entries:
        size = dirent_size(len(name))
        if used + size > bsize:
            blocks += 1
            used = size
        else:
            used += size
    return blocks


def lostfound_blocks(bsize: int) -> int:
    """Blocks given to lost+found: 16 KiB within the direct blocks, as mke2fs does."""
    return max(2, min(S.N_DIRECT, 16384 // bsize))


def logical_runs(extents: list[tuple[int, int]], bsize: int) -> list[tuple[int, int]]:
    """Merged ``(first block, count)`` runs of a file's blocks holding data."""
    runs: list[tuple[int, int]] = []
    for off, ln in sorted(extents):
        b0, b1 = off // bsize, -(-(off + ln) // bsize)
        if runs and b0 <= runs[-1][0] + runs[-1][1]:
            start, count = runs[-1]
            runs[-1] = (start, max(count, b1 - start))
        else:
            runs.append((b0, b1 - b0))
    return runs


def indirect_keys(runs: list[tuple[int, int]], per: int) -> list[tuple[int, ...]]:
    """The indirect blocks a file needs, as sorted keys.

    ``(1,)`` single indirect; ``(2,)`` double and ``(2, i)`` its i-th child;
    ``(3,)`` triple, ``(3, i)`` and ``(3, i, j)``. Only blocks above some data exist.
    """
    keys: set[tuple[int, ...]] = set()
    base1 = S.N_DIRECT
    base2 = base1 + per
    base3 = base2 + per * per
    end3 = base3 + per**3
    for start, count in runs:
        a, b = start, start + count  # [a, b)
        if a < base2 and b > base1:
            keys.add((1,))
        if a < base3 and b > base2:
            keys.add((2,))
            lo, hi = max(a, base2) - base2, min(b, base3) - base2
            keys.update((2, i) for i in range(lo // per, (hi - 1) // per + 1))
        if b > base3:
            if a >= end3 or b > end3:
                raise FilesystemLimitError("file too large for ext2 block pointers")
            keys.add((3,))
            lo, hi = max(a, base3) - base3, b - base3
            for k in range(lo // per, (hi - 1) // per + 1):
                keys.add((3, k // per))
                keys.add((3, k // per, k % per))
    return sorted(keys)


def max_file_size(bsize: int, revision: int) -> int:
    """The largest file: revision 0 stops below 2 GiB; revision 1 at what pointers reach,
    and what a 32-bit count of 512-byte sectors (data and indirect blocks) can say."""
    if revision == 0:
        return LARGE_FILE - 1
    per = bsize // 4
    by_pointers = (S.N_DIRECT + per + per * per + per**3) * bsize
    by_iblocks = (2**32 - 1) * 512 * per // (per + 1) // bsize * bsize
    return min(by_pointers, by_iblocks)


@dataclass(frozen=True, slots=True)
class Counts:
    meta: int
    data: int

    @property
    def total(self) -> int:
        return self.meta + self.data


def count_blocks(sc: Scan, bsize: int, revision: int) -> Counts:
    """Fill each inode's runs, indirect keys and block counts for *bsize*."""
    per = bsize // 4
    limit = max_file_size(bsize, revision)
    meta = data = 0
    lf_min = lostfound_blocks(bsize)
    for ino in sc.inodes:
        kind = ino.node.kind
        if kind == Kind.DIR:
            n = dir_blocks(ino.entries, bsize)
            if ino.ino == S.FIRST_INO:
                n = max(n, lf_min)
            ino.runs = [(0, n)]
            ino.indirect = indirect_keys(ino.runs, per) if n > S.N_DIRECT else []
            ino.meta = n + len(ino.indirect)
        elif kind == Kind.FILE:
            if ino.node.size > limit:
                raise FilesystemLimitError(
                    f"{_show(ino.path)} is {ino.node.size} bytes, over ext2's limit of "
                    f"{limit} bytes with {bsize}-byte blocks"
                )
            ino.runs = logical_runs(ino.extents, bsize)
            ino.indirect = indirect_keys(ino.runs, per) if ino.runs else []
            ino.data = sum(c for _, c in ino.runs)
            ino.meta = len(ino.indirect)
            if (ino.data + ino.meta) * (bsize // 512) > 2**32 - 1:
                raise FilesystemLimitError(
                    f"{_show(ino.path)} is {ino.node.size} bytes, over ext2's block count limit"
                )
        elif kind == Kind.SYMLINK and len(ino.node.target) > S.FAST_SYMLINK_MAX:
            ino.runs = [(0, 1)]
            ino.meta = 1
        else:
            ino.meta = 0
        meta += ino.meta
        data += ino.data
    return Counts(meta, data)


def default_bsize(sc: Scan) -> int:
    """1024-byte blocks for small content (less waste), 4096 from 512 MiB on (as mke2fs)."""
    return 1024 if sc.data_bytes < 512 << 20 else 4096
