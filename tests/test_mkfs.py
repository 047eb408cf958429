"""The mkfs API: sizing, options, SOURCE_DATE_EPOCH, atomic output, merging sources.

Written against the writer interface with a small in-test writer (this module itself,
registered as filesystem type ``fake``) so that the orchestration is checked apart from
the on-disk formats; ``test_mkfs_images.py`` checks real images with independent readers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys

import pytest
from helpers import setsynth

from smolfs.errors import ImageTooSmall, InputError, UsageError
from smolfs.fs.filedata import BytesData
from smolfs.fs.sizes import format_size, parse_size
from smolfs.fs.tree import Kind, Node, Tree
from smolfs.image import mkfs as mkfs_module
from smolfs.image.mkfs import mkfs, write_image

# ---------------------------------------------------------------------------
# A tiny writer honouring the interface: a manifest, then each file's data.

CALLS: list[str] = []


@dataclasses.dataclass(frozen=True)
class FakeOptions:
    timestamp: int | None = None
    uuid: bytes | None = None
    pad: int = 0

    @classmethod
    def from_makefs(cls, opts: dict[str, str]) -> FakeOptions:
        unknown = set(opts) - {"pad"}
        if unknown:
            raise UsageError(f"unknown fake option {sorted(unknown)[0]!r} (valid: pad)")
        return cls(pad=int(opts.get("pad", "0")))


def _manifest(tree: Tree, opts: FakeOptions) -> bytes:
    lines = [f"timestamp={opts.timestamp}"]
    for path, node in tree.walk():
        lines.append(f"{path!r} {node.kind.name} {node.mode:o} {node.uid}:{node.gid} "
                     f"{node.times()} {node.size} {tree.nlink(node)} {node.target!r} "
                     f"{node.rdev}")
    return "\n".join(lines).encode() + b"\n"


def minimum_size(tree: Tree, opts: FakeOptions) -> int:
    data = sum(n.size for _, n in tree.walk() if n.kind == Kind.FILE)
    return 4096 + len(_manifest(tree, opts)) + data + opts.pad


def write(tree: Tree, fd: int, size: int, opts: FakeOptions) -> None:
    CALLS.append("write")
    minimum = minimum_size(tree, opts)
    if size < minimum:
        raise ImageTooSmall("too small", minimum)
    manifest = _manifest(tree, opts)
    os.pwrite(fd, manifest, 0)
    pos = len(manifest)
    for _, node in tree.walk():
        if node.kind == Kind.FILE and node.size:
            node.data.copy_to(fd, 0, pos, node.size)
            pos += node.size
    os.ftruncate(fd, size)


@pytest.fixture(autouse=True)
def fake_writer(monkeypatch):
    monkeypatch.setitem(sys.modules, "smolfs_test_fake_writer", sys.modules[__name__])
    monkeypatch.setitem(mkfs_module.WRITERS, "fake",
                        ("smolfs_test_fake_writer", "FakeOptions"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    CALLS.clear()


def small_tree(mtime: int = 2_000_000_000) -> Tree:
    tree = Tree(mtime=mtime)
    tree.add("etc/rc", Node(Kind.FILE, mode=0o644, mtime=mtime, data=BytesData(b"#!/bin/sh\n")))
    tree.add("bin/sh", Node(Kind.SYMLINK, target=b"/rescue/sh", mtime=mtime))
    return tree


# ---------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(("text", "want"), [
    ("8192", 8192), ("512k", 512 << 10), ("512K", 512 << 10), ("20m", 20 << 20),
    ("20M", 20 << 20), ("20MiB", 20 << 20), ("20mb", 20 << 20), ("1g", 1 << 30),
    ("1.5g", 3 << 29), (4096, 4096),
])
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "x", "20q", "-1", "1.5", "m", "20 m b", "1e6", "0x10"])
def test_parse_size_rejects_junk(text):
    with pytest.raises(UsageError, match="invalid size"):
        parse_size(text)


def test_format_size():
    assert format_size(20 << 20) == "20 MiB"
    assert format_size(1536 << 10) == "1.5 MiB"
    assert format_size(100) == "100 B"


# ---------------------------------------------------------------------------
# write_image


def test_automatic_size_has_headroom_and_is_rounded(tmp_path):
    tree = small_tree()
    minimum = minimum_size(tree, FakeOptions())
    size = write_image(tree, tmp_path / "a.img", "fake")
    assert size % mkfs_module.SIZE_UNIT == 0 and size >= minimum * 1.1
    assert os.path.getsize(tmp_path / "a.img") == size
    big = write_image(small_tree(), tmp_path / "b.img", "fake", options={"pad": "1000000"},
                      headroom=0.5)
    assert big >= (minimum + 1_000_000) * 1.5


def test_fixed_size_too_small_fails_before_creating_anything(tmp_path):
    tree = small_tree()
    tree.add("big", Node(Kind.FILE, data=BytesData(b"x" * (3 << 20))))
    with pytest.raises(ImageTooSmall) as err:
        write_image(tree, tmp_path / "root.img", "fake", size="1m")
    assert err.value.minimum == minimum_size(tree, FakeOptions())
    assert "the minimum is 3.0 MiB" in err.value.message
    assert "-s 4m" in err.value.hint
    assert CALLS == []
    assert os.listdir(tmp_path) == []


def test_failures_leave_nothing(tmp_path, monkeypatch):
    (tmp_path / "keep").write_text("other files stay")
    for exc in (InputError("boom"), KeyboardInterrupt()):
        def broken(tree, fd, size, opts, exc=exc):
            os.pwrite(fd, b"half", 0)
            raise exc

        monkeypatch.setattr(sys.modules[__name__], "write", broken)
        with pytest.raises(type(exc)):
            write_image(small_tree(), tmp_path / "root.img", "fake")
        assert os.listdir(tmp_path) == ["keep"]


def test_existing_image_replaced_only_on_success(tmp_path, monkeypatch):
    image = tmp_path / "root.img"
    image.write_bytes(b"old image")
    with pytest.raises(ImageTooSmall):
        write_image(small_tree(), image, "fake", size=100)
    assert image.read_bytes() == b"old image"
    write_image(small_tree(), image, "fake")
    assert image.read_bytes().startswith(b"timestamp=")


def test_unknown_type_and_options(tmp_path):
    with pytest.raises(UsageError, match=r"unknown filesystem type 'zfs'.*ffs, ext2"):
        write_image(small_tree(), tmp_path / "x.img", "zfs")
    with pytest.raises(UsageError, match="unknown fake option 'bsize'"):
        write_image(small_tree(), tmp_path / "x.img", "fake", options={"bsize": "4096"})
    with pytest.raises(UsageError, match="must be a dict"):
        write_image(small_tree(), tmp_path / "x.img", "fake", options=42)
    assert os.listdir(tmp_path) == []


def test_invalid_tree_rejected(tmp_path):
    tree = small_tree()
    tree.add("bin/long", Node(Kind.SYMLINK, target=b"x" * 1024))
    with pytest.raises(InputError, match="1024 bytes"):
        write_image(tree, tmp_path / "x.img", "fake")
    assert os.listdir(tmp_path) == []


def test_source_date_epoch_clamps_and_stamps(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    tree = small_tree(mtime=2_000_000_000)
    tree.add("old", Node(Kind.FILE, mtime=1000, data=BytesData(b"")))
    write_image(tree, tmp_path / "a.img", "fake")
    assert tree.get("etc/rc").times() == (1_700_000_000,) * 3
    assert tree.get("old").mtime == 1000
    assert (tmp_path / "a.img").read_bytes().startswith(b"timestamp=1700000000\n")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InputError, match="SOURCE_DATE_EPOCH"):
        write_image(small_tree(), tmp_path / "b.img", "fake")


# ---------------------------------------------------------------------------
# mkfs: sources merged in order, spec last, spool cleaned up


def test_mkfs_merges_sources_and_applies_spec(tmp_path):
    sets = tmp_path / "sets"
    sets.mkdir()
    rescue = setsynth.make_set(sets, "rescue", "xz")
    etc = setsynth.make_set(sets, "etc", "zst")
    overlay = tmp_path / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc" / "rc").write_text("#!/bin/sh\nexec /rescue/sh\n")
    spec = tmp_path / "dev.spec"
    spec.write_text("./dev/console type=char mode=0600 device=netbsd,0,0 uname=root\n"
                    "./etc/rc mode=0555 uid=0 gid=0\n")
    out = tmp_path / "out"
    out.mkdir()
    result = mkfs(out / "root.img", [rescue, etc, overlay], fstype="fake", spec=spec,
                  options={"pad": "7"})
    assert result.image == out / "root.img" and result.fstype == "fake"
    assert result.size == os.path.getsize(out / "root.img")
    assert [a.sha512 for a in result.archives] == [
        hashlib.sha512(p.read_bytes()).hexdigest() for p in (rescue, etc)]
    n_entries = 1 + sum(len(setsynth.entries(k)) for k in ("rescue", "etc")) + 1  # root, console
    assert result.files == n_entries
    image = (out / "root.img").read_bytes()
    assert b"#!/bin/sh\nexec /rescue/sh\n" in image  # the overlay won
    assert b"b'etc/rc' FILE 555 0:0" in image  # the spec came last
    assert b"b'dev/console' CHR 600 0:0" in image
    sh = (f"b'rescue/sh' FILE 555 0:0 {(setsynth.SET_MTIME,) * 3} 1048576 "
          f"{len(setsynth.RESCUE_PROGRAMS)} ")
    assert sh.encode() in image
    assert os.listdir(out) == ["root.img"]  # no spool, no temporary file


def test_mkfs_bad_inputs_leave_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    spec = tmp_path / "bad.spec"
    spec.write_text("./etc/missing type=file\n")
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    cases = [
        ([tmp_path / "nope"], None, InputError, "nope"),
        ([src], spec, InputError, "./etc/missing"),
        ([], None, UsageError, "no sources"),
    ]
    for sources, spec_arg, exc, text in cases:
        with pytest.raises(exc, match=text):
            mkfs(out / "root.img", sources, fstype="fake", spec=spec_arg)
        assert os.listdir(out) == []
    with pytest.raises(UsageError, match="is a directory"):
        mkfs(out, [src], fstype="fake")
    with pytest.raises(UsageError, match="does not exist"):
        mkfs(tmp_path / "no" / "root.img", [src], fstype="fake")


def test_mkfs_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    src = setsynth.write_tree(tmp_path / "tree", "base")
    base = setsynth.make_set(tmp_path, "base", "gz")
    a = mkfs(tmp_path / "a.img", [src, base], fstype="fake")
    os.utime(src / "usr" / "bin" / "su", None)  # now: clamped anyway
    b = mkfs(tmp_path / "b.img", [src, base], fstype="fake")
    assert a.size == b.size
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()


def test_minimum_and_maximum_sizes(tmp_path):
    tree = small_tree()
    auto = write_image(tree, tmp_path / "a.img", "fake")
    assert write_image(tree, tmp_path / "b.img", "fake", min_size="1m") == 1 << 20
    assert write_image(tree, tmp_path / "c.img", "fake", min_size=1000) == auto
    minimum = minimum_size(tree, FakeOptions())
    assert write_image(tree, tmp_path / "d.img", "fake", max_size=minimum) == minimum
    with pytest.raises(ImageTooSmall, match="more than the maximum") as err:
        write_image(tree, tmp_path / "e.img", "fake", max_size=minimum - 1)
    assert err.value.minimum == minimum and f"-m {-(-minimum // 1024)}k" in err.value.hint
    assert sorted(os.listdir(tmp_path)) == ["a.img", "b.img", "c.img", "d.img"]


def test_package_level_function(tmp_path):
    """``smolfs.mkfs(...)`` works before and after the module of that name is imported."""
    import smolfs

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    for n in range(2):
        result = smolfs.mkfs(tmp_path / f"{n}.img", [src], fstype="fake")
        assert result.files == 2
    import smolfs.image.mkfs

    assert smolfs.mkfs(tmp_path / "2.img", [src], fstype="fake").size > 0


def test_image_inside_its_own_source(tmp_path):
    """Rewriting ./tree/root.img from ./tree does not put the old image in the new one."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "rc").write_text("x")
    first = mkfs(tmp_path / "root.img", [tmp_path], fstype="fake")
    second = mkfs(tmp_path / "root.img", [tmp_path], fstype="fake")
    assert first.files == second.files == 3
    assert b"root.img" not in (tmp_path / "root.img").read_bytes()


def test_format_size_below_one_mib_is_kib():
    assert format_size(1024) == "1 KiB"
    assert format_size(23 * 1024 + 512) == "23.5 KiB"
    assert format_size(1 << 40) == "1 TiB"


def test_image_over_the_bound_needs_force(tmp_path):
    from smolfs.errors import ImageTooLarge

    with pytest.raises(ImageTooLarge, match="1 TiB is over 64 GiB") as err:
        write_image(small_tree(), tmp_path / "a.img", "fake", size="1t")
    assert "--force" in err.value.message and err.value.size == 1 << 40
    with pytest.raises(ImageTooLarge):  # an automatic size too
        write_image(small_tree(), tmp_path / "a.img", "fake", min_size="65g")
    with pytest.raises(ImageTooLarge):
        mkfs(tmp_path / "a.img", [tmp_path], fstype="fake", size="65g")
    assert os.listdir(tmp_path) == []
    assert write_image(small_tree(), tmp_path / "a.img", "fake", size="65g",
                       force=True) == 65 << 30
    assert os.path.getsize(tmp_path / "a.img") == 65 << 30


def test_readme_inode_figures_are_the_writers(tmp_path):
    """README's "Inodes and free space": a 64 MiB UFS1 image gets 23,296 inodes (as
    makefs gives); ext2's density is mke2fs's, 32 KiB per inode beyond 4 TiB."""
    from pathlib import Path

    from smolfs.fs.ext2.geometry import default_density

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "a 64 MiB UFS1 image\n  gets 23,296 inodes" in readme
    assert "16 KiB below 4 TiB, 32 KiB beyond" in readme
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("hi\n")
    result = mkfs(tmp_path / "a.img", [tmp_path / "t"], "ffs", size="64m")
    assert result.free_inodes + 4 == 23296  # inodes 0 and 1 (reserved), root, the file
    assert default_density(3 << 40) == 16384 and default_density(5 << 40) == 32768
