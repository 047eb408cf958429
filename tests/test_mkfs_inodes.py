"""Inode headroom and free space, as NetBSD's newfs/makefs and mke2fs give them.

A fixed size gets the C tools' inode density for that size; an automatic size gets
free inodes in proportion to its free space; ``-f``/``-b`` (makefs) ask for more.
Every image is judged by NetBSD's ``fsck_ffs`` (when ``$MKSMOLNB_NETBSD_DIR`` has it)
or ``e2fsck -fn``; the totals read by :mod:`smolfs.fs.fsstat` are checked against what
those checkers and ``dumpe2fs`` report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.fsimage import fsck_ffs, fsck_ffs_path

from smolfs.errors import ImageTooSmall, UsageError
from smolfs.fs import ext2, ffs
from smolfs.fs.filedata import BytesData
from smolfs.fs.fsstat import stat_image
from smolfs.fs.tree import Kind, Node, Tree
from smolfs.image.mkfs import Room, parse_free, write_image

T0 = 1_700_000_000
MIB = 1 << 20
needs_e2fs = pytest.mark.skipif(not (shutil.which("e2fsck") and shutil.which("mke2fs")),
                                reason="e2fsprogs (e2fsck, mke2fs) not installed")


def small_tree(files: int = 40) -> Tree:
    t = Tree(mtime=T0)
    t.root.mode = 0o755
    t.add("etc/rc", Node(Kind.FILE, mode=0o755, mtime=T0, data=BytesData(b"#!/bin/sh\n")))
    t.add("bin/sh", Node(Kind.SYMLINK, mode=0o755, mtime=T0, target=b"/rescue/sh"))
    for i in range(files):
        t.add(f"usr/share/f{i:04d}", Node(Kind.FILE, mode=0o644, mtime=T0,
                                          data=BytesData(b"x" * (i * 37 % 5000))))
    return t


def e2fsck(image: Path) -> tuple[int, int]:
    """``e2fsck -fn`` must find *image* clean; (inodes used, inodes in all)."""
    r = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r": (\d+)/(\d+) files", r.stdout)
    assert m, r.stdout
    return int(m.group(1)), int(m.group(2))


def judge(image: Path, fstype: str) -> None:
    """The checkers find the image clean and count what fsstat counts."""
    st = stat_image(image)
    if fstype == "ext2":
        used, total = e2fsck(image)
        assert (total, total - used) == (st.inodes, st.free_inodes)
        return
    out = fsck_ffs(image)
    if out is not None:  # "85 files, 431 used, 8 free (...)": files exclude inodes 0 and 1
        m = re.search(r"(\d+) files, (\d+) used, (\d+) free", out)
        assert m, out
        files, free = int(m.group(1)), int(m.group(3))
        assert st.inodes - st.free_inodes == files + 2
        assert st.free_bytes == free * 1024  # fragments of the default 1 KiB


# ---------------------------------------------------------------------------
# fixed sizes: the C tools' density


@needs_e2fs
@pytest.mark.parametrize("size_mib", [2, 64, 600])
def test_ext2_fixed_size_has_mke2fs_inode_count(tmp_path: Path, size_mib: int) -> None:
    """The regression of issue 10: a 64 MiB ext2 image had 128 inodes; mke2fs gives
    16384. Each size is compared with mke2fs itself (its "floppy", "small" and
    "default" types)."""
    theirs = tmp_path / "mke2fs.img"
    with theirs.open("wb") as f:
        f.truncate(size_mib * MIB)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", str(theirs)], check=True,
                   capture_output=True)
    _, want = e2fsck(theirs)
    ours = tmp_path / "ours.img"
    write_image(small_tree(), ours, "ext2", size=f"{size_mib}m")
    judge(ours, "ext2")
    assert stat_image(ours).inodes == want
    if size_mib == 64:
        assert want == 16384


@pytest.mark.skipif(shutil.which("makefs") is None, reason="makefs not installed")
@pytest.mark.parametrize(("size_mib", "density"), [(8, 2048), (64, 4096)])
def test_ffs_fixed_size_has_newfs_density(tmp_path: Path, size_mib: int, density: int) -> None:
    """newfs's density for the size (one inode per 4 fragments of its fragment size:
    512 below 20 MiB, 1024 below 1000 MiB) gives the inode count makefs writes with
    that density given."""
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "rc").write_text("#!/bin/sh\n")
    theirs = tmp_path / "makefs.img"
    subprocess.run(["makefs", "-t", "ffs", "-o", f"version=1,density={density}",
                    "-s", f"{size_mib}m", str(theirs), str(src)], check=True,
                   capture_output=True)
    ours = tmp_path / "ours.img"
    write_image(small_tree(), ours, "ffs", size=f"{size_mib}m")
    judge(ours, "ffs")
    assert stat_image(ours).inodes == stat_image(theirs).inodes
    assert stat_image(ours).inodes >= size_mib * MIB // density


def test_default_densities_follow_the_c_tools() -> None:
    opts = ffs.FfsOptions()
    assert [opts.default_density(n * MIB) for n in (1, 19, 20, 999, 1000, 128 << 10)] == [
        2048, 2048, 4096, 4096, 8192, 16384]
    assert ffs.FfsOptions(fsize=2048).default_density(1 * MIB) == 8192  # 4 fragments
    assert [ext2.default_density(n * MIB) for n in (2, 3, 511, 512, 4 << 20)] == [
        8192, 4096, 4096, 16384, 32768]


@pytest.mark.parametrize("fstype", ["ffs", "ext2"])
def test_density_option_wins(tmp_path: Path, fstype: str) -> None:
    img = tmp_path / "d.img"
    write_image(small_tree(), img, fstype, size="16m", options={"density": "65536"})
    judge(img, fstype)
    sparse = stat_image(img).inodes
    write_image(small_tree(), img, fstype, size="16m")
    assert stat_image(img).inodes > 8 * sparse


@pytest.mark.parametrize("fstype", ["ffs", "ext2"])
def test_fixed_size_just_over_the_content_still_fits(tmp_path: Path, fstype: str) -> None:
    """Where the default density's inode tables do not fit, the image gets the
    content's inodes and a little spare (no size that holds the content is refused)."""
    tree = small_tree(200)
    module = ffs if fstype == "ffs" else ext2
    opts = module.FfsOptions() if fstype == "ffs" else module.Ext2Options()
    minimum = module.minimum_size(tree, opts)
    img = tmp_path / "m.img"
    assert write_image(tree, img, fstype, size=minimum) == minimum
    judge(img, fstype)
    with pytest.raises(ImageTooSmall):
        write_image(small_tree(200), img, fstype, size=minimum - 64 * 1024)


# ---------------------------------------------------------------------------
# automatic sizes and makefs -f / -b


@pytest.mark.parametrize("fstype", ["ffs", "ext2"])
def test_automatic_size_free_inodes_follow_free_space(tmp_path: Path, fstype: str) -> None:
    module = ffs if fstype == "ffs" else ext2
    opts = ffs.FfsOptions() if fstype == "ffs" else ext2.Ext2Options()
    img = tmp_path / "a.img"
    size = write_image(small_tree(), img, fstype, room=Room(free_space="16m"))
    judge(img, fstype)
    st = stat_image(img)
    assert st.free_bytes >= 16 * MIB
    assert st.free_inodes >= st.free_bytes // module.default_density(size, opts) * 9 // 10
    # without room asked for: a tenth of headroom, inodes in proportion too
    size = write_image(small_tree(), img, fstype)
    judge(img, fstype)
    st = stat_image(img)
    assert st.free_inodes >= st.free_bytes // module.default_density(size, opts) * 9 // 10


@pytest.mark.parametrize("fstype", ["ffs", "ext2"])
@pytest.mark.parametrize("size", [None, "32m"])
def test_free_files_and_free_space(tmp_path: Path, fstype: str, size: str | None) -> None:
    img = tmp_path / "f.img"
    tree = small_tree()
    write_image(tree, img, fstype, size=size, room=Room(free_files=20000, free_space="3m"))
    judge(img, fstype)
    st = stat_image(img)
    assert st.free_inodes >= 20000 and st.free_bytes >= 3 * MIB
    write_image(small_tree(), img, fstype, size=size, room=Room("50%", "50%"))
    judge(img, fstype)
    assert stat_image(img).free_inodes >= 22  # half the 44 inodes the tree takes


def test_free_room_makes_a_fixed_size_too_small(tmp_path: Path) -> None:
    with pytest.raises(ImageTooSmall, match="the minimum is"):
        write_image(small_tree(), tmp_path / "x.img", "ffs", size="1m",
                    room=Room(free_space="2m"))
    assert not (tmp_path / "x.img").exists()


def test_parse_free() -> None:
    assert parse_free("4096", "free files") == (4096, 0)
    assert parse_free("8m", "free space") == (8 * MIB, 0)
    assert parse_free("10%", "free space") == (0, 10)
    assert parse_free(None, "free files") == (0, 0)
    for bad, what in (("100%", "free files"), ("x", "free files"), ("1m", "free files"),
                      ("-1%", "free space"), ("lots", "free space")):
        with pytest.raises(UsageError):
            parse_free(bad, what)


# ---------------------------------------------------------------------------
# NetBSD's fsck_ffs over the whole matrix


@pytest.mark.netbsd
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("files", [10, 3000])
@pytest.mark.parametrize("size", [None, "24m", "1100m"])
@pytest.mark.parametrize("room", [None, Room("1000", "4m"), Room("25%", "25%")])
def test_fsck_ffs_matrix(tmp_path: Path, version: int, files: int, size: str | None,
                         room: Room | None) -> None:
    """UFS1/UFS2, small and large trees, automatic and fixed sizes (below and above
    newfs's 20 MiB and 1000 MiB steps), with and without -f/-b: NetBSD's own fsck_ffs
    finds every image clean, and its totals are fsstat's."""
    assert fsck_ffs_path()[0] is not None, "this test runs NetBSD's fsck_ffs"
    img = tmp_path / "m.img"
    tree = small_tree(files)
    tree.add("big", Node(Kind.FILE, mode=0o644, mtime=T0, data=BytesData(b"b" * (3 * MIB))))
    write_image(tree, img, "ffs", size=size, options={"version": str(version)}, room=room)
    judge(img, "ffs")
