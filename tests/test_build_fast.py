"""Fast copies of sets (``smolfs.sets.fastsets``): made once, read by later builds, never stale,
never trusted when damaged, safe under concurrent builds. Images are read back with
sleuthkit, as in ``test_build``."""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import zstandard
from test_build import EPOCH, Image, ok, one_line_error
from test_build import smolfs as cli

from conftest import REPO
from smolfs.errors import InputError
from smolfs.image.build import build
from smolfs.sets import fastsets
from smolfs.sets import sources as smolfs_sources
from smolfs.sets import spool as smolfs_spool
from smolfs.sets.fastcopies import FastCopies
from smolfs.sets.sources import ArchiveCorrupt
from smolfs.sets.spool import WriteError

setsynth = pytest.importorskip("helpers.setsynth", reason="tests/helpers/setsynth.py is missing")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("MKSMOLNB_CACHE", str(d))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    return d


@pytest.fixture
def rescue(tmp_path: Path) -> Path:
    return setsynth.make_set(tmp_path / "rescue.tar.xz", "rescue", "xz")


@pytest.fixture
def read_from(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The archive files the build streams, in order."""
    seen: list[Path] = []
    real = smolfs_sources.add_archive

    def spy(tree, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(Path(path))
        return real(tree, path, *args, **kwargs)

    monkeypatch.setattr(smolfs_sources, "add_archive", spy)
    return seen


def sha512(path: Path) -> str:
    return hashlib.sha512(path.read_bytes()).hexdigest()


def unzstd(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())


def copies(cache: Path) -> list[str]:
    """What is in the cache's fast directory, remembered digests aside."""
    return sorted(p.name for p in (cache / "fast").iterdir() if not p.name.endswith(".sha512"))


def memos(cache: Path) -> list[Path]:
    return sorted((cache / "fast").glob("*.sha512"))


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many files builds hash to find their copies."""
    calls: list[int] = []
    real = hashlib.file_digest

    def spy(f, digest):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(f, digest)

    monkeypatch.setattr(hashlib, "file_digest", spy)
    return calls


def check_rescue_image(img: Path) -> None:
    image = Image(img, "ffs")
    crunched = next(e for e in setsynth.entries("rescue") if e.type == "file")
    assert image.read(crunched.path.removeprefix("./")) == crunched.data
    inodes = {image.entries[f"rescue/{p}"].inode for p in setsynth.RESCUE_PROGRAMS}
    assert len(inodes) == 1
    assert image.symlink("sbin/init") == "/rescue/init"


def test_first_build_keeps_a_copy_later_builds_read_it(cache: Path, rescue: Path,
                                                        tmp_path: Path,
                                                        read_from: list[Path]) -> None:
    digest = sha512(rescue)
    first = build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    copy = cache / "fast" / f"{digest}.tar.zst"
    assert copies(cache) == [copy.name]  # no temporary or lock file left
    assert unzstd(copy) == lzma.decompress(rescue.read_bytes())  # the very same tar
    second = build(service="rescue", image=tmp_path / "b.img", sets=[rescue])
    assert read_from == [rescue, copy]
    # the copy gives the same image; the manifest names the set, not the copy
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()
    for res in (first, second):
        assert res.manifest["sets"] == [{"name": "rescue", "file": "rescue.tar.xz",
                                         "sha512": digest}]
    check_rescue_image(tmp_path / "b.img")


@pytest.mark.parametrize("remembered", [False, True])
def test_changed_set_is_never_read_from_the_old_copy(cache: Path, tmp_path: Path,
                                                     read_from: list[Path], remembered: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Same path, inode, size and mtime, other content: another digest, another copy,
    whether or not the digest of the old content was remembered."""
    if remembered:  # as if the set had not changed for a while before the first build
        monkeypatch.setattr(fastsets, "RACY_SECONDS", -60.0)
    crunched = next(e for e in setsynth.entries("rescue") if e.type == "file")
    tar = bytearray(setsynth.tar_bytes(setsynth.entries("rescue")))
    archive = tmp_path / "rescue.tgz"  # gzip without compression: a byte changed in the
    archive.write_bytes(gzip.compress(tar, compresslevel=0, mtime=0))  # tar, same size
    build(service="rescue", image=tmp_path / "a.img", sets=[archive])
    assert len(memos(cache)) == remembered
    st = archive.stat()
    tar[tar.index(crunched.data[:64]) + 100] ^= 0xFF
    with archive.open("r+b") as f:  # in place: same inode
        f.write(gzip.compress(tar, compresslevel=0, mtime=0))
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (archive.stat().st_size, archive.stat().st_ino) == (st.st_size, st.st_ino)
    build(service="rescue", image=tmp_path / "b.img", sets=[archive])
    assert read_from == [archive, archive]  # no copy of the new content yet
    changed = bytearray(crunched.data)
    changed[100] ^= 0xFF
    assert Image(tmp_path / "b.img", "ffs").read(crunched.path[2:]) == bytes(changed)
    assert len(copies(cache)) == 2
    build(service="rescue", image=tmp_path / "c.img", sets=[archive])
    assert read_from[-1].parent == cache / "fast"
    assert (tmp_path / "b.img").read_bytes() == (tmp_path / "c.img").read_bytes()


def test_digest_of_an_unchanged_set_file_is_remembered(cache: Path, rescue: Path,
                                                        tmp_path: Path, hashed: list[int],
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    assert memos(cache) == []  # just written: changed too recently to be remembered
    assert len(hashed) == 1
    monkeypatch.setattr(fastsets, "RACY_SECONDS", -60.0)  # as if it were old
    build(service="rescue", image=tmp_path / "b.img", sets=[rescue])
    assert len(hashed) == 2 and len(memos(cache)) == 1
    assert memos(cache)[0].read_text().strip() == sha512(rescue)
    res = build(service="rescue", image=tmp_path / "c.img", sets=[rescue])
    assert len(hashed) == 2  # neither hashed nor decompressed from the xz set
    assert res.manifest["sets"][0]["sha512"] == sha512(rescue)
    os.utime(rescue)  # touched: another key, hashed again
    build(service="rescue", image=tmp_path / "d.img", sets=[rescue])
    assert len(hashed) == 3
    check_rescue_image(tmp_path / "d.img")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_copy_is_detected_and_rebuilt(cache: Path, rescue: Path, tmp_path: Path,
                                              read_from: list[Path], damage: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    copy = cache / "fast" / f"{sha512(rescue)}.tar.zst"
    good = copy.read_bytes()
    raw = bytearray(good)
    if damage == "flip":  # inside the compressed data: caught by zstd's checksum at the end
        raw[len(raw) // 2] ^= 0x10
    elif damage == "truncate":
        del raw[len(raw) - 1000:]
    else:
        raw.clear()
    copy.write_bytes(raw)
    res = build(service="rescue", image=tmp_path / "b.img", sets=[rescue])
    assert "is damaged" in capsys.readouterr().err
    assert read_from == [rescue, copy, rescue]  # tried the copy, then the set itself
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()
    assert res.manifest["sets"][0]["sha512"] == sha512(rescue)
    assert copy.read_bytes() == good  # written again, whole


def test_concurrent_builds_share_one_copy(cache: Path, rescue: Path, tmp_path: Path) -> None:
    env = {"MKSMOLNB_CACHE": str(cache), "SOURCE_DATE_EPOCH": EPOCH}

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "smolfs", "build", "-x", str(rescue), "-i", name],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stderr=subprocess.PIPE, text=True)

    def run_all(names: list[str]) -> None:
        procs = [start(n) for n in names]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err

    # While another writer holds the copy's lock, builds neither wait nor write a copy.
    fast = cache / "fast"
    fast.mkdir(parents=True)
    lock = os.open(fast / f".{sha512(rescue)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run_all(["held0.img", "held1.img"])
        assert copies(cache) == [f".{sha512(rescue)}.lock"]  # ours: nothing written
    finally:
        os.close(lock)
    os.unlink(fast / f".{sha512(rescue)}.lock")
    for round_ in ("cold", "warm"):
        run_all([f"{round_}{i}.img" for i in range(3)])
        assert copies(cache) == [f"{sha512(rescue)}.tar.zst"]
    names = ("held0", "held1", *(f"{r}{i}" for r in ("cold", "warm") for i in range(3)))
    images = {(tmp_path / f"{n}.img").read_bytes() for n in names}
    assert len(images) == 1
    check_rescue_image(tmp_path / "warm0.img")


def tar_of(rescue: Path) -> bytes:
    return lzma.decompress(rescue.read_bytes())


def test_writer_finding_the_copy_in_place_leaves_no_lock_file(cache: Path,
                                                              rescue: Path) -> None:
    """Build B found no copy and starts a writer just after build A put its copy in place
    and removed its lock file: B stops, and removes the lock file it created."""
    digest, tar = sha512(rescue), tar_of(rescue)
    a = fastsets.Writer.start(digest, cache)
    assert a is not None
    a(tar)
    assert a.commit(digest) == cache / "fast" / f"{digest}.tar.zst"
    assert fastsets.Writer.start(digest, cache) is None  # B
    assert copies(cache) == [f"{digest}.tar.zst"]


def test_lock_of_a_writer_that_gave_up_excludes_a_later_writer(
        cache: Path, rescue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B opens the lock file while A holds it; A gives up (its set failed to read) and
    removes it; C creates a new lock file and locks it; then B locks the file it opened,
    now removed. B must not write the copy too (nor later remove C's lock file)."""
    digest, tar = sha512(rescue), tar_of(rescue)
    a = fastsets.Writer.start(digest, cache)
    assert a is not None
    real_flock = fcntl.flock
    later: list[fastsets.Writer | None] = []

    def flock(fd: int, op: int) -> None:
        if not later and op & fcntl.LOCK_EX:  # B, between opening and locking
            later.append(None)
            a.abort()
            later[0] = fastsets.Writer.start(digest, cache)  # C
        return real_flock(fd, op)

    monkeypatch.setattr(fastsets.fcntl, "flock", flock)
    b = fastsets.Writer.start(digest, cache)
    monkeypatch.setattr(fastsets.fcntl, "flock", real_flock)
    c = later[0]
    assert c is not None  # C writes the copy
    assert b is None  # and only C
    assert (cache / "fast" / f".{digest}.lock").exists()  # C's, still held
    c(tar)
    assert c.commit(digest) is not None
    assert copies(cache) == [f"{digest}.tar.zst"]
    assert unzstd(cache / "fast" / f"{digest}.tar.zst") == tar


def test_prune_keeps_an_old_lock_file_a_writer_holds(cache: Path, rescue: Path) -> None:
    """A build killed while writing left a lock file two days ago; a writer uses it now.
    Pruning (after another set's copy) removes only lock files nobody holds."""
    digest, tar = sha512(rescue), tar_of(rescue)
    fast = cache / "fast"
    fast.mkdir(parents=True)
    lock = fast / f".{digest}.lock"
    lock.write_bytes(b"")
    other = fast / f".{'e' * 128}.lock"
    other.write_bytes(b"")
    for p in (lock, other):
        os.utime(p, (time.time() - 2 * 86400,) * 2)
    w = fastsets.Writer.start(digest, cache)
    assert w is not None
    assert fastsets.prune(fast) == [other]
    assert lock.exists()
    assert fastsets.Writer.start(digest, cache) is None  # still excluded
    w(tar)
    assert w.commit(digest) is not None
    assert copies(cache) == [f"{digest}.tar.zst"]


def test_no_fast_copy_option(cache: Path, rescue: Path, tmp_path: Path) -> None:
    ok(cli("build", "--no-fast-copy", "-x", rescue, "-i", "a.img", cwd=tmp_path))
    assert not (cache / "fast").exists()
    check_rescue_image(tmp_path / "a.img")


def test_cache_that_cannot_be_written_only_costs_speed(rescue: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # mkdir below it fails, even as root
    r = ok(cli("build", "-x", rescue, "-i", "a.img", cwd=tmp_path,
                  env={"MKSMOLNB_CACHE": str(blocker)}))
    assert "cannot keep a fast copy" in r.stderr
    check_rescue_image(tmp_path / "a.img")


def test_no_copy_of_a_set_that_fails_to_read(cache: Path, rescue: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(rescue.read_bytes()[: rescue.stat().st_size // 2])
    r = cli("build", "-x", cut, "-i", "a.img", cwd=tmp_path)
    assert r.returncode == 1 and "corrupt or truncated" in r.stderr
    assert copies(cache) == []
    assert not (tmp_path / "a.img").exists()


def test_fetched_set_copy_is_named_by_the_published_digest(cache: Path, rescue: Path,
                                                           tmp_path: Path,
                                                           read_from: list[Path]) -> None:
    from smolfs.sets.release import DEFAULT_RELEASE, set_filename

    name = set_filename("rescue", DEFAULT_RELEASE, "amd64")
    sets = tmp_path / "mirror/pub/NetBSD" / f"NetBSD-{DEFAULT_RELEASE}" / "amd64/binary/sets"
    sets.mkdir(parents=True)
    data = (rescue.read_bytes() if name.endswith(".tar.xz")
            else setsynth.make_set(tmp_path / "r.tgz", "rescue", "gz").read_bytes())
    (sets / name).write_bytes(data)
    digest = hashlib.sha512(data).hexdigest()
    (sets / "SHA512").write_text(f"SHA512 ({name}) = {digest}\n")
    mirror = f"file://{tmp_path / 'mirror'}"
    build(service="rescue", image=tmp_path / "a.img", sets="rescue", mirror=mirror)
    build(service="rescue", image=tmp_path / "b.img", sets="rescue", offline=True)
    assert read_from[1] == cache / "fast" / f"{digest}.tar.zst"
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()


def test_prune_removes_unused_copies_and_stale_temporaries(tmp_path: Path) -> None:
    now = time.time()
    old, fresh = "a" * 128, "b" * 128
    for name, age_days in ((f"{old}.tar.zst", 40), (f".{old}.lock", 2),
                           (f"{fresh}.tar.zst", 3), (f".{fresh}.lock", 0.1),
                           (f".{old}.123.tmp", 2), (f".{fresh}.456.tmp", 0.1),
                           ("c" * 64 + ".sha512", 31), ("d" * 64 + ".sha512", 29),
                           ("unrelated", 400)):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (now - age_days * 86400,) * 2)
    removed = fastsets.prune(tmp_path, now=now)
    assert sorted(p.name for p in removed) == sorted(
        [f"{old}.tar.zst", f".{old}.lock", f".{old}.123.tmp", "c" * 64 + ".sha512"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{fresh}.tar.zst", f".{fresh}.lock", f".{fresh}.456.tmp", "d" * 64 + ".sha512",
         "unrelated"])


def test_using_a_copy_keeps_it_from_being_pruned(cache: Path, rescue: Path,
                                                 tmp_path: Path) -> None:
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    copy = cache / "fast" / f"{sha512(rescue)}.tar.zst"
    os.utime(copy, (1, 1))
    build(service="rescue", image=tmp_path / "b.img", sets=[rescue])
    assert time.time() - copy.stat().st_mtime < 60
    assert json.loads((tmp_path / "b.img.json").read_text())["sets"][0]["file"] == rescue.name


@pytest.mark.parametrize("compression", ["zst", "none"])
def test_no_copy_of_a_set_already_quick_to_read(cache: Path, tmp_path: Path,
                                                read_from: list[Path], compression: str) -> None:
    archive = setsynth.make_set(tmp_path, "rescue", compression)
    build(service="rescue", image=tmp_path / "a.img", sets=[archive])
    build(service="rescue", image=tmp_path / "b.img", sets=[archive])
    assert read_from == [archive, archive]
    assert not (cache / "fast").exists()
    check_rescue_image(tmp_path / "b.img")


def test_full_disk_while_keeping_a_copy_only_costs_speed(cache: Path, rescue: Path,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    class Full:
        """A file on a full disk: every write fails with ENOSPC."""

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self) -> None:
            pass

    real_start = fastsets.Writer.start.__func__  # type: ignore[attr-defined]

    def start(cls, digest, cache_dir=None, size=0):  # type: ignore[no-untyped-def]
        writer = real_start(cls, digest, cache_dir, size)
        writer._out.close()
        writer._out = Full()
        return writer

    monkeypatch.setattr(fastsets.Writer, "start", classmethod(start))
    monkeypatch.setattr(fastsets, "_warned", set())
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    assert "no space left" in capsys.readouterr().err
    assert copies(cache) == []  # neither the copy nor its temporary file
    check_rescue_image(tmp_path / "a.img")


def test_tree_conflict_in_a_later_set_keeps_the_copy(cache: Path, rescue: Path,
                                                     tmp_path: Path, read_from: list[Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """An earlier set has a directory where the set read from its copy has a file: the
    build fails naming the conflict and the set (not the copy); the copy is not damaged."""
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    copy = cache / "fast" / f"{sha512(rescue)}.tar.zst"
    good = copy.read_bytes()
    link = next(e for e in setsynth.entries("rescue") if e.type == "hardlink")
    conflict = tmp_path / "conflict.tar"
    with tarfile.open(conflict, "w") as tf:
        ti = tarfile.TarInfo(link.path)
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(ti)
    capsys.readouterr()
    with pytest.raises(InputError) as caught:
        build(service="rescue", image=tmp_path / "b.img", sets=[conflict, rescue])
    assert not isinstance(caught.value, ArchiveCorrupt)
    assert str(caught.value) == f"{rescue}: {link.path} is a directory"
    assert "damaged" not in capsys.readouterr().err
    assert read_from[-2:] == [conflict, copy]  # the set was not read again
    assert copy.read_bytes() == good
    assert not (tmp_path / "b.img").exists()


def build_limited(nbytes: int, cache: Path, cwd: Path, *args: str | Path
                  ) -> subprocess.CompletedProcess[str]:
    """``smolfs build ARGS`` in a process that cannot write files larger than *nbytes*:
    a disk that fills up, for every file at once, without root."""
    limited = ("import os, resource, signal, sys\n"
               "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
               "n = int(sys.argv[1])\n"
               "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))\n"
               "os.execv(sys.executable, [sys.executable, '-m', 'smolfs', *sys.argv[2:]])\n")
    return subprocess.run(
        [sys.executable, "-c", limited, str(nbytes), "build", *map(str, args)],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), "MKSMOLNB_CACHE": str(cache),
                      "SOURCE_DATE_EPOCH": EPOCH},
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("warm", [True, False])
def test_disk_full_for_the_build_too_keeps_the_copy(cache: Path, rescue: Path, tmp_path: Path,
                                                    warm: bool) -> None:
    """The cache and the image share a filesystem that cannot take another large file
    (here: a file size limit). The build fails naming the directory and the cause, not
    the set; a copy already made stays, a copy being made leaves nothing behind."""
    if warm:
        build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    before = sorted((cache / "fast").iterdir()) if warm else []
    tar_size = len(lzma.decompress(rescue.read_bytes()))
    assert tar_size > 256 << 10
    out = tmp_path / "out"
    out.mkdir()
    r = build_limited(256 << 10, cache, out, "-x", rescue, "-i", "b.img")
    line = one_line_error(r)
    assert f"file too large: the spool file of archive data in {out} " in line, line
    assert "corrupt" not in r.stderr and "damaged" not in r.stderr
    assert sorted((cache / "fast").iterdir()) == before  # no copy lost, no temporary left
    assert list(out.iterdir()) == []


def test_no_space_for_the_spool_keeps_the_copy(cache: Path, rescue: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               read_from: list[Path]) -> None:
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    copy = cache / "fast" / f"{sha512(rescue)}.tar.zst"
    good = copy.read_bytes()

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(WriteError) as caught:
        build(service="rescue", image=tmp_path / "b.img", sets=[rescue])
    assert str(caught.value).startswith(f"no space left on device in {tmp_path} ")
    assert read_from == [rescue, copy]
    assert copy.read_bytes() == good


def test_no_copy_started_on_a_nearly_full_disk(cache: Path, rescue: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    real = os.statvfs
    asked: list[str] = []

    class Almost:
        f_frsize = 4096
        f_bavail = (fastsets.ROOM_MARGIN + 2 * rescue.stat().st_size) // 4096 - 1

    def statvfs(path):  # type: ignore[no-untyped-def]
        if Path(path) == cache / "fast":
            asked.append(str(path))
            return Almost()
        return real(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    assert asked and copies(cache) == []
    assert "warning" not in capsys.readouterr().err  # quietly: only the speed-up is lost
    Almost.f_bavail += 1
    build(service="rescue", image=tmp_path / "b.img", sets=[rescue])
    assert copies(cache) == [f"{sha512(rescue)}.tar.zst"]


def test_failed_copy_frees_its_space_at_once(cache: Path, rescue: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary copy is gone as soon as a write to it fails, not at the set's end."""
    seen: list[bool] = []
    real_call = fastsets.Writer.__call__

    def call(self, piece):  # type: ignore[no-untyped-def]
        if not seen:
            self._out.write = lambda data: (_ for _ in ()).throw(
                OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real_call(self, piece)
        seen.append(os.path.exists(self._tmp))

    monkeypatch.setattr(fastsets.Writer, "__call__", call)
    monkeypatch.setattr(fastsets, "_warned", set())
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    assert seen and not any(seen)
    assert copies(cache) == []
    check_rescue_image(tmp_path / "a.img")


def test_temporary_copy_of_another_writer_with_our_pid_is_left_alone(
        cache: Path, rescue: Path, tmp_path: Path) -> None:
    """A writer in another PID namespace may have our pid: its temporary file is its own."""
    fast = cache / "fast"
    fast.mkdir(parents=True)
    theirs = fast / f".{sha512(rescue)}.{os.getpid()}.tmp"
    theirs.write_bytes(b"being written")
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    assert theirs.read_bytes() == b"being written"
    assert copies(cache) == sorted([theirs.name, f"{sha512(rescue)}.tar.zst"])


def test_error_while_hashing_a_set_is_one_line(cache: Path, rescue: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> str:
        raise RuntimeError("no hash today")

    monkeypatch.setattr(FastCopies, "_file_digest", boom)
    with pytest.raises(InputError, match=f"set archive {rescue}: .*no hash today"):
        build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    assert not (tmp_path / "a.img").exists()


def _digest_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("set-digest") and t.is_alive()]


def test_first_set_does_not_wait_for_the_others_digests(cache: Path, rescue: Path,
                                                        tmp_path: Path, read_from: list[Path],
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    base = setsynth.make_set(tmp_path, "base", "xz")
    released = threading.Event()
    waited: list[bool] = []
    real_recall = fastsets.recall_digest

    def recall(path, st, cache_dir=None):  # type: ignore[no-untyped-def]
        if Path(path) == base:  # hashed only once the first set is being streamed
            waited.append(released.wait(10))
        return real_recall(path, st, cache_dir)

    real_add = smolfs_sources.add_archive

    def add(tree, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path) == rescue:
            released.set()
        return real_add(tree, path, *args, **kwargs)

    monkeypatch.setattr(fastsets, "recall_digest", recall)
    monkeypatch.setattr(smolfs_sources, "add_archive", add)
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue, base])
    assert waited == [True]


def test_failed_build_leaves_no_thread_hashing(cache: Path, rescue: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastsets, "RACY_SECONDS", -60.0)  # digests would be remembered
    real_recall = fastsets.recall_digest

    def slow(path, st, cache_dir=None):  # type: ignore[no-untyped-def]
        time.sleep(0.5)
        return real_recall(path, st, cache_dir)

    def no_spool(*args: object, **kwargs: object) -> None:
        raise InputError("cannot create a spool file")

    monkeypatch.setattr(fastsets, "recall_digest", slow)
    monkeypatch.setattr(smolfs_spool, "Spool", no_spool)
    with pytest.raises(InputError, match="spool"):
        build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    assert _digest_threads() == []
    time.sleep(0.7)
    assert memos(cache) == []  # stopped, not finished in the background


def test_image_over_the_file_size_limit_names_the_image(cache: Path, rescue: Path,
                                                        tmp_path: Path) -> None:
    """The spool fits under the limit, the image does not: the error says so."""
    build(service="rescue", image=tmp_path / "a.img", sets=[rescue])
    data = sum(len(e.data) for e in setsynth.entries("rescue") if e.type == "file")
    limit = data + (64 << 10)
    assert (tmp_path / "a.img").stat().st_size > limit
    out = tmp_path / "out"
    out.mkdir()
    r = build_limited(limit, cache, out, "-x", rescue, "-i", "b.img")
    line = one_line_error(r)
    assert f"file too large: the image b.img in {out} " in line, line
    assert list(out.iterdir()) == []
    assert copies(cache) == [f"{sha512(rescue)}.tar.zst"]
