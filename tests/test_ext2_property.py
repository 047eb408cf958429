"""Random trees written as ext2 and read back by e2fsprogs (hypothesis).

Every example is checked by ``e2fsck -fn`` (clean, nothing to fix) and by ``debugfs``
agreeing on every entry: type, mode, owner, size, link count, content hash, symlink
target and device number. Trees mix deep paths, directories spanning several blocks,
255-byte names, files from empty to past the double-indirect threshold of 1 KiB
blocks, sparse files, hard links across directories, symlinks of 1 to 1023 bytes,
devices, fifos and sockets; revision 0 and 1; block sizes 1024, 2048 and 4096.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from helpers.fsimage import SparseData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ext2 import T0, compare, fsck, make_image, pytestmark  # noqa: F401

from smolfs.fs.ext2 import Ext2Options, minimum_size
from smolfs.fs.filedata import BytesData
from smolfs.fs.tree import Kind, Node, Tree

DOUBLE_INDIRECT_1K = (12 + 256) * 1024  # first byte reached through the double indirect block

NAME_BYTES = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+,=@ ~#%"
names = st.one_of(
    st.binary(min_size=1, max_size=12).map(
        lambda b: bytes(NAME_BYTES[x % len(NAME_BYTES)] for x in b)),
    st.integers(200, 255).map(lambda n: b"L" * n),
    st.binary(min_size=1, max_size=8).map(lambda b: bytes(0x80 | (x & 0x7F) for x in b)),
).filter(lambda n: n not in (b".", b".."))

owners = st.one_of(st.just(0), st.integers(0, 70_000), st.integers(0, 2**32 - 1))
times = st.integers(0, T0)


@st.composite
def file_data(draw: st.DrawFn) -> BytesData | SparseData:
    size = draw(st.one_of(st.integers(0, 3000), st.integers(0, 70_000),
                          st.integers(DOUBLE_INDIRECT_1K - 2048, DOUBLE_INDIRECT_1K + 40_000)))
    seed = draw(st.integers(0, 2**16))
    rnd = random.Random(seed)
    if size and draw(st.booleans()):
        chunks = []
        for _ in range(draw(st.integers(0, 4))):
            off = rnd.randrange(size)
            chunks.append((off, rnd.randbytes(min(size - off, rnd.randrange(1, 9000)))))
        merged: list[tuple[int, bytes]] = []
        for off, b in sorted(chunks):  # extents of a Data never overlap
            if merged and off < merged[-1][0] + len(merged[-1][1]):
                continue
            merged.append((off, b))
        return SparseData(size, dict(merged))
    return BytesData(rnd.randbytes(size))


@st.composite
def leaf(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from([Kind.FILE] * 5 + [Kind.SYMLINK] * 2 + [
        Kind.CHR, Kind.BLK, Kind.FIFO, Kind.SOCK]))
    node = Node(kind, mode=draw(st.integers(0, 0o7777)), uid=draw(owners), gid=draw(owners),
                mtime=draw(times), atime=draw(times), ctime=draw(times))
    if kind == Kind.FILE:
        node.data = draw(file_data())
    elif kind == Kind.SYMLINK:
        node.target = draw(st.one_of(
            st.binary(min_size=1, max_size=70),
            st.integers(1, 1023).map(lambda n: b"t" * n)).map(lambda b: b.replace(b"\0", b"0")))
    elif kind in (Kind.CHR, Kind.BLK):
        node.rdev = (draw(st.integers(0, 255)), draw(st.integers(0, 255)))
    return node


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    tree = Tree(mtime=draw(times))
    dirs: list[Node] = [tree.root]
    files: list[Node] = []
    for _ in range(draw(st.integers(0, 40))):
        parent = draw(st.sampled_from(dirs))
        name = draw(names)
        if name in parent.children:
            continue
        if draw(st.integers(0, 3)) == 0:
            node = Node(Kind.DIR, mode=draw(st.integers(0, 0o7777)), uid=draw(owners),
                        gid=draw(owners), mtime=draw(times))
            dirs.append(node)
        else:
            node = draw(leaf())
            if node.kind != Kind.DIR:
                files.append(node)
        parent.children[name] = node
    if draw(st.booleans()):  # a deep path
        node = tree.root
        for i in range(draw(st.integers(5, 40))):
            node = node.children.setdefault(b"deep%d" % i, Node(Kind.DIR, mtime=T0))
            if node.kind != Kind.DIR:
                break
            dirs.append(node)
    if draw(st.booleans()):  # a directory spanning several blocks, whatever the block size
        wide = tree.root.children.setdefault(b"wide", Node(Kind.DIR, mtime=T0))
        if wide.kind == Kind.DIR:
            for i in range(draw(st.integers(30, 90))):
                wide.children[b"%03d" % i + b"w" * 120] = Node(Kind.FIFO, mtime=T0)
    for _ in range(draw(st.integers(0, 6)) if files else 0):  # hard links across directories
        target = draw(st.sampled_from(files))
        parent = draw(st.sampled_from(dirs))
        name = draw(names)
        if name not in parent.children:
            parent.children[name] = target
            target.nlink_extra += 1
    return tree


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tree=trees(), revision=st.sampled_from([0, 1]),
       bsize=st.sampled_from([1024, 1024, 2048, 4096]),
       extra=st.one_of(st.integers(0, 1 << 20), st.integers(8 << 20, 40 << 20)))
def test_random_trees_read_back(tree: Tree, revision: int, bsize: int, extra: int) -> None:
    opts = Ext2Options(revision=revision, bsize=bsize, timestamp=T0)
    if revision == 0:  # 16-bit owners only: NetBSD ignores the high halves in revision 0
        for _, node in tree.walk():
            node.uid &= 0xFFFF
            node.gid &= 0xFFFF
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "fs.img"
        make_image(tree, img, opts, minimum_size(tree, opts) + extra)
        fsck(img)
        compare(tree, img, Path(tmp))
