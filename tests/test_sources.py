"""Sources: host directories and streamed tar archives filling a Tree."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile

import pytest
from helpers import setsynth
from hypothesis import given, settings
from hypothesis import strategies as st

from smolfs.errors import InputError
from smolfs.fs.tree import Kind, Tree
from smolfs.sets.decompress import detect_format
from smolfs.sets.hostdir import add_directory
from smolfs.sets.sources import ArchiveCorrupt, add_archive
from smolfs.sets.spool import Spool, WriteError

TYPES = {"file": Kind.FILE, "dir": Kind.DIR, "symlink": Kind.SYMLINK, "char": Kind.CHR,
         "block": Kind.BLK, "fifo": Kind.FIFO}


def read_all(node) -> bytes:
    return node.data.read(0, node.size) if node.size else b""


def check_tree_matches(tree: Tree, items: list[setsynth.Entry]) -> None:
    """Every entry of a synthetic set is in *tree* with the attributes it was made with."""
    for e in items:
        node = tree.get(e.path)
        assert node is not None, e.path
        if e.type == "hardlink":
            assert node is tree.get(e.target), e.path
            continue
        assert node.kind == TYPES[e.type], e.path
        assert (node.mode, node.uid, node.gid, node.mtime) == (e.mode, e.uid, e.gid, e.mtime), \
            e.path
        if e.type == "file":
            assert node.size == len(e.data)
            assert read_all(node) == e.data, e.path
        elif e.type == "symlink":
            assert node.target == e.target.encode()
        elif e.type in ("char", "block"):
            assert node.rdev == e.rdev


# ---------------------------------------------------------------------------
# Directories


def test_directory_links_modes_holes(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "rescue").mkdir()
    (src / "rescue" / "sh").write_bytes(b"crunched" * 1000)
    for name in ("ls", "cat", "init"):
        os.link(src / "rescue" / "sh", src / "rescue" / name)
    os.link(src / "rescue" / "sh", src / "bin" / "sh")  # across directories
    (src / "bin" / "su").write_bytes(b"su")
    os.chmod(src / "bin" / "su", 0o4555)
    os.symlink("/rescue/init", src / "bin" / "init")
    os.mkfifo(src / "fifo")
    with open(src / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"middle")
    os.utime(src / "bin" / "su", (1_000_000, 1_234_567))

    tree = Tree()
    assert add_directory(tree, src) == 11
    sh = tree.get("rescue/sh")
    assert sh.kind == Kind.FILE and read_all(sh) == b"crunched" * 1000
    assert all(tree.get(p) is sh for p in ("rescue/ls", "rescue/cat", "rescue/init", "bin/sh"))
    assert tree.nlink(sh) == 5
    su = tree.get("bin/su")
    assert su.mode == 0o4555 and su.mtime == 1_234_567 and su.times() == (1_234_567,) * 3
    assert su.uid == os.getuid() and su.gid == os.getgid()
    assert tree.get("bin/init").kind == Kind.SYMLINK
    assert tree.get("bin/init").target == b"/rescue/init"
    assert tree.get("fifo").kind == Kind.FIFO
    sparse = tree.get("sparse")
    assert sparse.size == 8 << 20
    extents = sparse.data.extents()
    assert sum(length for _, length in extents) < 1 << 20  # the holes are seen
    assert any(off <= 4 << 20 < off + length for off, length in extents)
    assert sparse.data.read(4 << 20, 6) == b"middle"


def test_directory_owner_override_and_prefix(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    tree = Tree()
    add_directory(tree, tmp_path, prefix="usr/pkg", owner=(0, 5))
    node = tree.get("usr/pkg/a/f")
    assert (node.uid, node.gid) == (0, 5)
    assert (tree.get("usr/pkg").uid, tree.get("usr/pkg").gid) == (0, 5)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating device nodes on the host needs root")
def test_directory_device_nodes(tmp_path):
    os.mknod(tmp_path / "ld0a", 0o640 | stat.S_IFBLK, os.makedev(19, 0))
    os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(2, 2))
    tree = Tree()
    add_directory(tree, tmp_path)
    assert (tree.get("ld0a").kind, tree.get("ld0a").rdev) == (Kind.BLK, (19, 0))
    assert (tree.get("null").kind, tree.get("null").rdev) == (Kind.CHR, (2, 2))


def test_directory_errors(tmp_path):
    with pytest.raises(InputError, match="missing"):
        add_directory(Tree(), tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        add_directory(Tree(), tmp_path / "file")


def test_directory_later_source_overrides(tmp_path):
    for d, text in (("one", "first"), ("two", "second")):
        (tmp_path / d / "etc").mkdir(parents=True)
        (tmp_path / d / "etc" / "rc").write_text(text)
    (tmp_path / "one" / "etc" / "only1").write_text("kept")
    tree = Tree()
    add_directory(tree, tmp_path / "one")
    add_directory(tree, tmp_path / "two")
    assert read_all(tree.get("etc/rc")) == b"second"
    assert read_all(tree.get("etc/only1")) == b"kept"


# ---------------------------------------------------------------------------
# Archives


@pytest.mark.parametrize("compression", setsynth.COMPRESSIONS)
def test_archive_all_compressions(tmp_path, compression):
    tree = Tree()
    infos = []
    with Spool(dir=tmp_path) as spool:
        for kind in setsynth.KINDS:
            path = setsynth.make_set(tmp_path, kind, compression)
            info = add_archive(tree, path, spool)
            infos.append(info)
            blob = path.read_bytes()
            assert info.sha512 == hashlib.sha512(blob).hexdigest()
            assert info.bytes == len(blob)
            assert info.entries == len(setsynth.entries(kind))
            assert info.format == (compression if compression != "none" else "tar")
        for kind in setsynth.KINDS:
            check_tree_matches(tree, setsynth.entries(kind))
        sh = tree.get("rescue/sh")
        assert tree.nlink(sh) == len(setsynth.RESCUE_PROGRAMS)
        assert tree.get("usr/bin/su").mode == 0o4555
        assert tree.get("sbin/shutdown").gid == 5
        assert tree.get("tmp").mode == 0o1777
        # The spool holds each file's data once (hard links share it).
        assert spool.size == sum(i.data_bytes for i in infos)
        assert os.fstat(spool.fileno()).st_size == spool.size
        assert not os.path.exists(spool.path)  # never left behind, even on SIGKILL
    with pytest.raises(ValueError, match="closed"):
        spool.fileno()
    assert sorted(os.listdir(tmp_path)) == sorted(
        f"{k}{setsynth.SUFFIX[compression]}" for k in setsynth.KINDS)


def test_archive_detected_by_content_and_prefix(tmp_path):
    path = setsynth.make_set(tmp_path / "set.bin", "etc", "zst")
    assert detect_format(path.read_bytes()[:512]) == "zst"
    tree = Tree()
    with Spool(dir=tmp_path) as spool:
        add_archive(tree, path, spool, prefix="altroot")
        assert read_all(tree.get("altroot/etc/rc.conf")) == b"rc_configured=YES\n"


def test_spool_data_copies_into_an_image(tmp_path):
    items = setsynth.entries("base")
    tree = Tree()
    with Spool(dir=tmp_path) as spool:
        add_archive(tree, setsynth.make_set(tmp_path, "base", "gz"), spool)
        libc = tree.get("lib/libc.so.12.220")
        out = tmp_path / "out"
        fd = os.open(out, os.O_RDWR | os.O_CREAT)
        try:
            libc.data.copy_to(fd, 1000, 4096, libc.size - 1000)
        finally:
            os.close(fd)
        want = next(e.data for e in items if e.path == "./lib/libc.so.12.220")
        assert out.read_bytes() == b"\0" * 4096 + want[1000:]


def _tar(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, typ, payload in members:
            info = tarfile.TarInfo(name)
            if typ == tarfile.REGTYPE:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                info.type = typ
                info.linkname = payload.decode()
                tf.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "typ", "payload", "message"), [
    ("/etc/passwd", tarfile.REGTYPE, b"x", "'/etc/passwd' has an absolute path"),
    ("./etc/../../escape", tarfile.REGTYPE, b"x", "'./etc/../../escape' contains '..'"),
    ("./bin/sh", tarfile.LNKTYPE, b"../../etc/shadow", "'../../etc/shadow' contains '..'"),
    ("./bin/sh", tarfile.LNKTYPE, b"/etc/shadow", "'/etc/shadow' has an absolute path"),
    ("./bin/sh", tarfile.LNKTYPE, b"./rescue/sh", "./bin/sh → ./rescue/sh"),
])
def test_archive_rejects_bad_members_by_name(tmp_path, name, typ, payload, message):
    path = tmp_path / "bad.tar"
    path.write_bytes(_tar([("./ok", tarfile.REGTYPE, b"fine"), (name, typ, payload)]))
    with Spool(dir=tmp_path) as spool, pytest.raises(InputError) as err:
        add_archive(Tree(), path, spool)
    assert message in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize("compression", ["xz", "gz", "zst", "bz2", "none"])
def test_archive_truncated(tmp_path, compression):
    blob = setsynth.compress(setsynth.tar_bytes(setsynth.entries("base")), compression)
    path = tmp_path / "base.tar.xz"
    path.write_bytes(blob[: len(blob) // 2])
    with Spool(dir=tmp_path) as spool, pytest.raises(ArchiveCorrupt) as err:
        add_archive(Tree(), path, spool)
    assert str(path) in err.value.message
    assert "corrupt or truncated" in err.value.message


@pytest.mark.parametrize("compression", ["xz", "gz", "zst"])
def test_archive_cut_at_the_end_of_the_stream(tmp_path, compression):
    """Losing only the last bytes (the compressor's trailer) is noticed too."""
    blob = setsynth.compress(setsynth.tar_bytes(setsynth.entries("etc")), compression)
    path = tmp_path / "etc.set"
    path.write_bytes(blob[:-4])
    with Spool(dir=tmp_path) as spool, pytest.raises(ArchiveCorrupt, match="truncated"):
        add_archive(Tree(), path, spool)


@pytest.mark.parametrize("compression", ["xz", "gz", "zst", "bz2"])
def test_archive_corrupted(tmp_path, compression):
    blob = bytearray(setsynth.compress(setsynth.tar_bytes(setsynth.entries("base")),
                                       compression))
    for i in range(len(blob) // 3, len(blob) // 3 + 64):
        blob[i] ^= 0x5A
    path = tmp_path / "base.tgz"
    path.write_bytes(bytes(blob))
    with Spool(dir=tmp_path) as spool, pytest.raises(ArchiveCorrupt, match=r"base\.tgz: corrupt"):
        add_archive(Tree(), path, spool)


def test_archive_member_the_tree_cannot_take_is_not_corruption(tmp_path):
    path = tmp_path / "clash.tar"
    path.write_bytes(_tar([("./ok", tarfile.REGTYPE, b"fine"), ("./x", tarfile.DIRTYPE, b""),
                           ("./x", tarfile.LNKTYPE, b"./ok")]))
    with Spool(dir=tmp_path) as spool, pytest.raises(InputError) as err:
        add_archive(Tree(), path, spool)
    assert not isinstance(err.value, ArchiveCorrupt)
    assert err.value.message == f"{path}: ./x is a directory"


@pytest.mark.parametrize(("code", "message"), [
    (errno.ENOSPC, "no space left on device in {dir} (writing the spool file"),
    (errno.EDQUOT, "no space left on device in {dir} (writing the spool file"),
    (errno.EFBIG, "file too large: the spool file of archive data in {dir} "),
    (errno.EIO, "cannot write the spool file of archive data in {dir}: "),
])
@pytest.mark.parametrize("compression", ["xz", "none"])
def test_spool_write_failure_is_not_corruption(tmp_path, monkeypatch, code, message,
                                               compression):
    path = setsynth.make_set(tmp_path, "etc", compression)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()

    def failing(fd: int, data: bytes, offset: int) -> int:
        raise OSError(code, os.strerror(code))

    with Spool(dir=spool_dir) as spool:
        monkeypatch.setattr(os, "pwrite", failing)
        with pytest.raises(WriteError) as err:
            add_archive(Tree(), path, spool)
    assert not isinstance(err.value, InputError)
    assert err.value.message.startswith(message.format(dir=spool_dir)), err.value.message
    assert "\n" not in err.value.message


def test_archive_unknown_format_and_unreadable(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 200)
    with Spool(dir=tmp_path) as spool:
        with pytest.raises(InputError) as err:
            add_archive(Tree(), path, spool)
        assert "notes.txt" in err.value.message
        assert ".tar.xz" in err.value.hint and ".tar.zst" in err.value.hint
        with pytest.raises(InputError, match="cannot read"):
            add_archive(Tree(), tmp_path / "missing.tgz", spool)


@pytest.mark.parametrize("compression", ["xz", "gz", "zst", "bz2"])
def test_archive_of_concatenated_streams(tmp_path, compression):
    """``xz`` and friends read concatenated streams as one; so does add_archive."""
    raw = setsynth.tar_bytes(setsynth.entries("base"))
    cut = len(raw) // 3
    path = tmp_path / "base.set"
    path.write_bytes(setsynth.compress(raw[:cut], compression)
                     + setsynth.compress(raw[cut:], compression))
    tree = Tree()
    with Spool(dir=tmp_path) as spool:
        info = add_archive(tree, path, spool)
        check_tree_matches(tree, setsynth.entries("base"))
    assert info.entries == len(setsynth.entries("base"))


def test_archive_from_a_pipe(tmp_path):
    """A source may be a pipe (``<(curl ...)``): read once, never seeked."""
    fifo = tmp_path / "set.pipe"
    os.mkfifo(fifo)
    blob = setsynth.compress(setsynth.tar_bytes(setsynth.entries("etc")), "xz")
    pid = os.fork()
    if pid == 0:  # child: feed the pipe in small pieces
        try:
            with open(fifo, "wb", buffering=0) as f:
                for i in range(0, len(blob), 100):
                    f.write(blob[i : i + 100])
        finally:
            os._exit(0)
    tree = Tree()
    try:
        with Spool(dir=tmp_path) as spool:
            info = add_archive(tree, fifo, spool)
            check_tree_matches(tree, setsynth.entries("etc"))
    finally:
        os.waitpid(pid, 0)
    assert info.sha512 == hashlib.sha512(blob).hexdigest() and info.format == "xz"


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_archive_long_names(tmp_path, fmt):
    long_dir = "./usr/share/" + "d" * 200
    name = f"{long_dir}/{'n' * 255}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        info = tarfile.TarInfo(name)
        info.size, info.uid, info.gid = 5, 1_000_000, 3_000_000  # beyond ustar's fields
        tf.addfile(info, io.BytesIO(b"hello"))
        link = tarfile.TarInfo("./lnk")
        link.type, link.linkname = tarfile.SYMTYPE, "t" * 1023
        tf.addfile(link)
    path = tmp_path / "long.tar"
    path.write_bytes(buf.getvalue())
    tree = Tree()
    with Spool(dir=tmp_path) as spool:
        add_archive(tree, path, spool)
        node = tree.get(name)
        assert read_all(node) == b"hello" and (node.uid, node.gid) == (1_000_000, 3_000_000)
    assert tree.get("lnk").target == b"t" * 1023


def test_archive_name_too_long(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo("./etc/" + "x" * 256), io.BytesIO(b""))
    path = tmp_path / "bad.tar"
    path.write_bytes(buf.getvalue())
    with Spool(dir=tmp_path) as spool, pytest.raises(InputError) as err:
        add_archive(Tree(), path, spool)
    assert "bad.tar" in err.value.message and "256 bytes" in err.value.message


# ---------------------------------------------------------------------------
# Property: a directory and a tar of it give the same tree


file_names = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                     min_size=1, max_size=20).filter(lambda n: n not in (".", ".."))
contents = st.binary(max_size=3000)
host_trees = st.recursive(
    st.dictionaries(file_names, st.one_of(contents, st.builds(lambda t: ("link", t),
                                                              file_names)), max_size=5),
    lambda kids: st.dictionaries(file_names, kids, max_size=4), max_leaves=30)


def write_host_tree(root, tree: dict, links: list) -> None:
    for name, value in tree.items():
        path = root / name
        if isinstance(value, dict):
            path.mkdir()
            write_host_tree(path, value, links)
        elif isinstance(value, tuple):
            path.symlink_to(value[1])
        else:
            path.write_bytes(value)
            os.chmod(path, 0o4755 if len(value) % 3 == 0 else 0o640)
            links.append(path)


def tree_summary(tree: Tree) -> list[tuple]:
    out = []
    for path, node in tree.walk():
        data = read_all(node) if node.kind == Kind.FILE else b""
        out.append((path, node.kind, node.mode, node.uid, node.gid, node.mtime,
                    tree.nlink(node), node.target, hashlib.sha256(data).hexdigest()))
    return out


@settings(max_examples=25, deadline=None)
@given(host_trees, st.sampled_from(["gz", "xz", "zst", "none"]), st.randoms())
def test_directory_and_its_archive_agree(tree, compression, rnd):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        files: list = []
        write_host_tree(root, tree, files)
        for i, path in enumerate(files[:3]):  # hard links, some across directories
            os.link(path, root / f"hardlink{i}")
        for dirpath, _, names in os.walk(root):
            for n in names:
                os.utime(os.path.join(dirpath, n), (rnd.randint(0, 2**31),) * 2,
                         follow_symlinks=False)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            tf.add(root, arcname=".")
        archive = Path(tmp) / "set"
        archive.write_bytes(setsynth.compress(buf.getvalue(), compression))
        from_dir, from_tar = Tree(), Tree()
        add_directory(from_dir, root)
        with Spool(dir=tmp) as spool:
            add_archive(from_tar, archive, spool)
            assert tree_summary(from_dir) == tree_summary(from_tar)
