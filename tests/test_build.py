"""``smolfs build`` end to end: synthetic NetBSD sets → images judged by independent readers.

FFS images are read with sleuthkit (``fls``/``istat``/``icat -f ufs``), ext2 images with
``e2fsck -fn``, sleuthkit and ``debugfs``. The CLI runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.fsimage import fsck_ffs

from conftest import REPO
from smolfs.errors import InputError
from smolfs.image.build import build

setsynth = pytest.importorskip("helpers.setsynth", reason="tests/helpers/setsynth.py is missing")

EPOCH = "1700000000"
SLEUTH_FS = {"ffs": "ufs", "ext2": "ext2"}


# ---------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds keep fast copies of sets in the cache: in a directory of each test's own."""
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "own-cache"))


@pytest.fixture(scope="session")
def sets_dir() -> Iterator[Path]:
    """Synthetic sets in every compression, in a directory any user can read."""
    d = Path(tempfile.mkdtemp(prefix="smolfs-sets-"))
    d.chmod(0o755)
    for kind in ("rescue", "base", "etc"):
        setsynth.make_set(d / f"{kind}.tar.xz", kind=kind, compression="xz")
    setsynth.make_set(d / "rescue.tgz", kind="rescue", compression="gz")
    setsynth.make_set(d / "rescue.tar.zst", kind="rescue", compression="zst")
    for p in d.iterdir():
        p.chmod(0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def smolfs(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
           user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    argv = [*(user or []), sys.executable, "-m", "smolfs", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=120, check=False)


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stderr
    return r


def one_line_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == 1, r.stderr
    return errors[0]


def run_tool(*argv: str | Path) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False,
                       errors="replace")
    assert r.returncode == 0, (argv, r.stderr)
    return r.stdout


@dataclass
class Entry:
    kind: str  # fls letter: r d l c b p
    inode: int


class Image:
    """An image read back by the independent tools."""

    def __init__(self, path: Path, fs: str) -> None:
        self.path, self.fs, self.tsk = path, fs, SLEUTH_FS[fs]
        if fs == "ext2":
            out = subprocess.run(["e2fsck", "-fn", str(path)], capture_output=True, text=True,
                                 check=False)
            assert out.returncode == 0, out.stdout + out.stderr
        else:
            fsck_ffs(path)  # NetBSD's own checker, when $MKSMOLNB_NETBSD_DIR has it
        self.entries: dict[str, Entry] = {}
        for line in run_tool("fls", "-r", "-p", "-f", self.tsk, path).splitlines():
            m = re.match(r"(\S)/\S \*? ?(\d+)(?:\(realloc\))?:\t(.*)$", line)
            assert m, line
            self.entries[m.group(3)] = Entry(m.group(1), int(m.group(2)))

    def istat(self, path: str) -> str:
        return run_tool("istat", "-f", self.tsk, self.path, self.entries[path].inode)

    def owner_mode(self, path: str) -> tuple[int, int, str]:
        if self.fs == "ffs" and self.entries[path].kind in "cb":
            # istat reads a UFS device number as a block address and gives up
            raw = self._ufs1_dinode(self.entries[path].inode)
            mode = struct.unpack_from("<H", raw, 0)[0]
            uid, gid = struct.unpack_from("<II", raw, 112)
            return uid, gid, stat.filemode(mode)[1:]
        st = self.istat(path)
        m = re.search(r"uid / gid: (\d+) / (\d+)", st)
        mode = re.search(r"mode: (\S+)", st)
        assert m and mode, st
        return int(m.group(1)), int(m.group(2)), mode.group(1)[1:]  # permissions only

    def device(self, path: str) -> tuple[int, int]:
        if self.fs == "ext2":
            st = self.istat(path)
            m = re.search(r"Device Major: (\d+)\s+Minor: (\d+)", st)
            assert m, st
            return int(m.group(1)), int(m.group(2))
        # sleuthkit's istat does not print a UFS device number: find the inode with
        # fsstat's layout, read di_db[0] (dinode.h: byte 40 of a 128-byte UFS1 dinode)
        # and decode it as NetBSD's makedev() encoded it.
        ino = self.entries[path].inode
        dev = struct.unpack_from("<i", self._ufs1_dinode(ino), 40)[0] & 0xFFFFFFFF
        return (dev & 0x000FFF00) >> 8, (dev & 0xFF) | ((dev & 0xFFF00000) >> 12)

    def _ufs1_dinode(self, ino: int) -> bytes:
        text = run_tool("fsstat", "-f", "ufs", self.path)
        assert "File System Type: UFS 1" in text
        fsize = int(re.search(r"Fragment Size: (\d+)", text).group(1))  # type: ignore[union-attr]
        for grp in re.split(r"\nGroup \d+:\n", text)[1:]:
            first, last = map(int, re.search(r"Inode Range: (\d+) - (\d+)", grp).groups())  # type: ignore[union-attr]
            table = int(re.search(r"Inode Table: (\d+)", grp).group(1))  # type: ignore[union-attr]
            if first <= ino <= last:
                with open(self.path, "rb") as f:
                    f.seek(table * fsize + (ino - first) * 128)
                    return f.read(128)
        raise AssertionError(f"inode {ino} not in any cylinder group")

    def read(self, path: str) -> bytes:
        r = subprocess.run(["icat", "-f", self.tsk, str(self.path),
                            str(self.entries[path].inode)], capture_output=True, check=True)
        return r.stdout

    def symlink(self, path: str) -> str:
        assert self.entries[path].kind == "l", path
        if self.fs == "ext2":
            out = run_tool("debugfs", "-R", f"stat <{self.entries[path].inode}>", self.path)
            m = re.search(r'Fast link dest: "(.*)"', out)
            if m:
                return m.group(1)
        m = re.search(r"symbolic link to: (.*)", self.istat(path))
        assert m, path
        return m.group(1)


# ---------------------------------------------------------------------------
# images


@pytest.mark.parametrize(("fs", "archive"), [("ffs", "rescue.tar.xz"), ("ext2", "rescue.tgz"),
                                             ("ffs", "rescue.tar.zst")])
def test_rescue_image(sets_dir: Path, tmp_path: Path, fs: str, archive: str) -> None:
    r = ok(smolfs("build", "-x", sets_dir / archive, "--fs", fs, cwd=tmp_path))
    img = Image(tmp_path / "rescue-amd64.img", fs)
    # the service over /etc, common in /etc/include
    assert img.read("etc/rc") == (REPO / "services/rescue/etc/rc").read_bytes()
    assert img.read("etc/include/basicrc") == (REPO / "services/common/basicrc").read_bytes()
    assert img.owner_mode("etc/rc") == (0, 0, "rwxr-xr-x")
    # read-only root by default for rescue
    fstype = "ffs" if fs == "ffs" else "ext2fs"
    assert img.read("etc/fstab").decode().splitlines()[-1] == f"/dev/ld0a / {fstype} ro 1 1"
    # device nodes with NetBSD's numbers
    assert img.entries["dev/console"].kind == "c" and img.device("dev/console") == (0, 0)
    assert img.entries["dev/ld0a"].kind == "b" and img.device("dev/ld0a") == (19, 0)
    assert img.entries["dev/rld0d"].kind == "c" and img.device("dev/rld0d") == (69, 3)
    assert img.device("dev/ksyms") == (85, 0)
    assert img.owner_mode("dev/ld0a") == (0, 5, "rw-r-----")
    # init, sh and mount helpers linked into /rescue
    for link in ("sbin/init", "bin/sh", "sbin/mount_ffs", "sbin/mount_ext2fs"):
        assert img.symlink(link) == "/rescue/" + link.rsplit("/", 1)[1]
    # the crunched binary: one inode under every name, content as in the set
    inodes = {img.entries[f"rescue/{p}"].inode for p in setsynth.RESCUE_PROGRAMS}
    assert len(inodes) == 1
    want = next(e for e in setsynth.entries("rescue") if e.type == "file")
    assert img.read(want.path.removeprefix("./")) == want.data
    assert "rescue-amd64.img" in r.stderr


def test_hostname_goes_to_etc_myname(sets_dir: Path, tmp_path: Path) -> None:
    """--hostname (service.conf HOSTNAME=) writes /etc/myname; the flag beats the key; a
    bad name is a one-line usage error; the host name is an input of the image."""
    rescue = sets_dir / "rescue.tar.xz"
    ok(smolfs("build", "-x", rescue, "--hostname", "web1.example", cwd=tmp_path))
    img = Image(tmp_path / "rescue-amd64.img", "ffs")
    assert img.read("etc/myname") == b"web1.example\n"
    assert img.owner_mode("etc/myname") == (0, 0, "rw-r--r--")
    manifest = json.loads((tmp_path / "rescue-amd64.img.json").read_text())
    assert manifest["hostname"] == "web1.example"
    # another name is another image: rebuilt, not kept
    r = ok(smolfs("build", "-x", rescue, "--hostname", "web2", cwd=tmp_path))
    assert "up to date" not in r.stderr
    assert Image(tmp_path / "rescue-amd64.img", "ffs").read("etc/myname") == b"web2\n"
    services = tmp_path / "svcs"
    shutil.copytree(REPO / "services" / "rescue", services / "named")
    (services / "named" / "service.conf").write_text("RO=yes\nHOSTNAME=fromconf\n")
    ok(smolfs("build", "--services-dir", services, "-s", "named", "-x", rescue, cwd=tmp_path))
    assert Image(tmp_path / "named-amd64.img", "ffs").read("etc/myname") == b"fromconf\n"
    msg = one_line_error(smolfs("build", "-x", rescue, "--hostname", "bad_name",
                                cwd=tmp_path), 2)
    assert "--hostname" in msg and "expected a host name" in msg



@pytest.mark.parametrize("fs", ["ffs", "ext2"])
def test_read_write_root_has_room_to_live(sets_dir: Path, tmp_path: Path, fs: str) -> None:
    """Issue 10: a read-write root fitted to its content ran out of inodes after ~60
    files. An automatic size now keeps RW_FREE_SPACE and RW_FREE_FILES free on a
    read-write root (read from the image), and only the usual headroom on a read-only
    one; a fixed size keeps the C tools' density."""
    from smolfs.fs.fsstat import stat_image
    from smolfs.image.build import RW_FREE_FILES, RW_FREE_SPACE

    archive = sets_dir / "rescue.tar.xz"
    ok(smolfs("build", "-x", archive, "--fs", fs, "--rw", "-i", "rw.img", cwd=tmp_path))
    ok(smolfs("build", "-x", archive, "--fs", fs, "--ro", "-i", "ro.img", cwd=tmp_path))
    ok(smolfs("build", "-x", archive, "--fs", fs, "--rw", "-m", "64", "-i", "m.img",
              cwd=tmp_path))
    rw, ro, fixed = (stat_image(tmp_path / n) for n in ("rw.img", "ro.img", "m.img"))
    for name in ("rw.img", "ro.img", "m.img"):
        Image(tmp_path / name, fs)  # fsck_ffs / e2fsck clean
    assert rw.free_bytes >= RW_FREE_SPACE and rw.free_inodes >= RW_FREE_FILES
    assert ro.free_bytes < RW_FREE_SPACE // 4 and ro.free_inodes < rw.free_inodes // 4
    assert fixed.size == 64 << 20 and fixed.inodes >= 16384  # 64 MiB / 4096 as newfs, mke2fs
    shown = json.loads(ok(smolfs("info", "--json", "rw.img", cwd=tmp_path)).stdout)
    assert shown["filesystem"]["free_inodes"] == rw.free_inodes


def test_image_over_64_gib_needs_force(sets_dir: Path, tmp_path: Path) -> None:
    r = smolfs("build", "-x", sets_dir / "rescue.tar.xz", "-m", "70000", cwd=tmp_path)
    err = one_line_error(r, code=2)
    assert "68.4 GiB is over 64 GiB" in err and "--force" in err
    # the hint fits -m MB, not mkfs -s SIZE's "1t where 1g was meant?"
    assert "-m is in MiB: -m 70000 is 68 GiB" in r.stderr and "1t where" not in r.stderr
    assert os.listdir(tmp_path) == []  # refused before any set is read or cached


@pytest.mark.netbsd
@pytest.mark.parametrize("fs", ["ffs", "ext2"])
@pytest.mark.parametrize("ro", ["--ro", "--rw"])
def test_genuine_rescue_set_image_is_clean(netbsd_dir: Path, tmp_path: Path, fs: str,
                                           ro: str) -> None:
    """The image of NetBSD 7.0's own rescue set: NetBSD's fsck_ffs (or e2fsck) finds it
    clean, read-only and read-write."""
    assert fs == "ext2" or (netbsd_dir / "fsck_ffs").exists()
    ok(smolfs("build", "-x", netbsd_dir / "sets" / "rescue.tgz", "--fs", fs, ro, "-i", "r.img",
              "--offline", cwd=tmp_path))
    img = Image(tmp_path / "r.img", fs)
    assert img.entries["rescue/sh"].inode == img.entries["rescue/init"].inode


def test_base_service_with_postinst(sets_dir: Path, tmp_path: Path) -> None:
    res = build(service="bozohttpd", image=tmp_path / "web.img", fs="ext2",
                sets=[sets_dir / "base.tar.xz", sets_dir / "etc.tar.xz"])
    img = Image(res.image, "ext2")
    page = img.read("var/www/index.html").decode()
    assert "Hello from NetBSD" in page and "bozohttpd image for amd64" in page
    assert img.owner_mode("var/www/index.html") == (0, 0, "rw-r--r--")
    httpd = next(e for e in setsynth.entries("base") if e.path == "./usr/libexec/httpd")
    assert img.entries["usr/libexec/httpd"].kind == "r"
    assert img.read("usr/libexec/httpd") == httpd.data
    assert img.read("etc/fstab").decode().splitlines()[-1] == "/dev/ld0a / ext2fs rw 1 1"
    # setuid programs and group owners from the archive survive the staging round trip
    su = next(e for e in setsynth.entries("base") if e.path.endswith("/su"))
    assert img.owner_mode(su.path.removeprefix("./"))[2][2] == "s"
    # the base set brings /sbin/init: no rescue links
    assert img.entries["sbin/init"].kind == "r"
    assert res.manifest["postinst"] == ["10-www.sh"]
    assert [s["name"] for s in res.manifest["sets"]] == ["base", "etc"]
    assert not list(tmp_path.glob(".*")), "temporary files left beside the image"


def test_no_staging_without_postinst(sets_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Sets go from the archive into the image; nothing is extracted on the host."""
    import smolfs.image.postinst

    def refuse(*_: object) -> None:
        raise AssertionError("the tree was materialised on the host")

    monkeypatch.setattr(smolfs.image.postinst, "materialise", refuse)
    res = build(service="base", image=tmp_path / "b.img", sets=[sets_dir / "base.tar.xz"])
    assert res.manifest["postinst"] == []
    with pytest.raises(AssertionError, match="materialised"):
        build(service="bozohttpd", image=tmp_path / "w.img", sets=[sets_dir / "base.tar.xz"])


def test_i386_and_rw(sets_dir: Path, tmp_path: Path) -> None:
    ok(smolfs("build", "-x", sets_dir / "rescue.tar.xz", "--arch", "i386", "--rw",
              "-i", "r.img", cwd=tmp_path))
    img = Image(tmp_path / "r.img", "ffs")
    assert img.device("dev/ksyms") == (101, 0)
    assert img.read("etc/fstab").decode().splitlines()[-1] == "/dev/ld0a / ffs rw 1 1"
    assert json.loads((tmp_path / "r.img.json").read_text())["arch"] == "i386"


@pytest.mark.parametrize("fs", ["ffs", "ext2"])
def test_aarch64_devices_and_root(sets_dir: Path, tmp_path: Path, fs: str) -> None:
    """evbarm-aarch64: majors of majors.arm32/majors.aarch64, 8 minors per disk unit, the
    PL011 node, and the root on ld4a (GENERIC64 wires ld0-ld3 to sdmmc0-3)."""
    ok(smolfs("build", "-x", sets_dir / "rescue.tar.xz", "--arch", "aarch64", "--fs", fs,
              cwd=tmp_path))
    img = Image(tmp_path / "rescue-aarch64.img", fs)
    fstype = "ffs" if fs == "ffs" else "ext2fs"
    assert img.read("etc/fstab").decode().splitlines()[-1] == f"/dev/ld4a / {fstype} ro 1 1"
    want = {"dev/console": ("c", 2, 0), "dev/tty": ("c", 3, 0), "dev/null": ("c", 0, 2),
            "dev/zero": ("c", 0, 12), "dev/drum": ("c", 1, 0), "dev/klog": ("c", 5, 0),
            "dev/stdin": ("c", 34, 0), "dev/urandom": ("c", 52, 1), "dev/ksyms": ("c", 105, 0),
            "dev/plcom0": ("c", 93, 0), "dev/ld0a": ("b", 92, 0), "dev/rld0d": ("c", 92, 3),
            "dev/ld4a": ("b", 92, 32), "dev/rld4a": ("c", 92, 32)}
    for path, (kind, major, minor) in want.items():
        assert (img.entries[path].kind, *img.device(path)) == (kind, major, minor), path
    assert "dev/tty00" not in img.entries
    assert img.owner_mode("dev/ld4a") == (0, 5, "rw-r-----")
    for link in ("sbin/init", "bin/sh", "sbin/mount_ffs", "sbin/mount_ext2fs"):
        assert img.symlink(link) == "/rescue/" + link.rsplit("/", 1)[1]
    assert json.loads((tmp_path / "rescue-aarch64.img.json").read_text())["arch"] == "aarch64"


def test_manifest_and_info(sets_dir: Path, tmp_path: Path) -> None:
    archive = sets_dir / "rescue.tar.xz"
    ok(smolfs("build", "-x", archive, "-m", "8", cwd=tmp_path, env={"SOURCE_DATE_EPOCH": EPOCH}))
    image = tmp_path / "rescue-amd64.img"
    assert image.stat().st_size == 8 << 20
    m = json.loads((tmp_path / "rescue-amd64.img.json").read_text())
    assert m["tool"] == "mksmolnb" and m["service"] == "rescue" and m["fs"] == "ffs"
    assert (m["arch"], m["ro"], m["size"]) == ("amd64", True, 8 << 20)
    assert m["built"] == "2023-11-14T22:13:20Z" and m["built_epoch"] == int(EPOCH)
    assert m["release"] is None  # sets from files: not known
    assert m["sets"] == [{"name": "rescue", "file": "rescue.tar.xz",
                          "sha512": hashlib.sha512(archive.read_bytes()).hexdigest()}]
    text = ok(smolfs("info", image, cwd=tmp_path)).stdout
    assert "service:   rescue" in text and "ffs, 8 MiB, read-only" in text
    assert "rescue.tar.xz" in text and m["sets"][0]["sha512"][:16] in text
    shown = json.loads(ok(smolfs("info", "--json", image, cwd=tmp_path)).stdout)
    fs = shown.pop("filesystem")
    assert shown == m
    assert (fs["fstype"], fs["variant"], fs["size"]) == ("ffs", "UFS1", 8 << 20)
    assert 0 < fs["free_inodes"] < fs["inodes"] and 0 < fs["free_bytes"] < 8 << 20
    assert f"{fs['free_inodes']} of {fs['inodes']} inodes" in text
    with open(image, "ab") as f:
        f.write(b"x")
    r = ok(smolfs("info", image, cwd=tmp_path))
    assert "it was changed after the build" in r.stderr and "service:   rescue" in r.stdout
    (tmp_path / "rescue-amd64.img.json").unlink()
    r = ok(smolfs("info", image, cwd=tmp_path))  # the filesystem alone, and why
    assert "no manifest beside it" in r.stderr and "service:" not in r.stdout
    assert f"{fs['free_inodes']} of {fs['inodes']} inodes" in r.stdout
    image.write_bytes(b"not a filesystem")
    err = one_line_error(smolfs("info", image, cwd=tmp_path))
    assert "neither an FFS nor an ext2 filesystem" in err
    err = one_line_error(smolfs("info", tmp_path / "nothing.img", cwd=tmp_path))
    assert "nothing.img: no such image" in err


def test_services_dir_and_conf(sets_dir: Path, tmp_path: Path) -> None:
    svc = tmp_path / "svcs" / "hello"
    (svc / "etc").mkdir(parents=True)
    (svc / "etc" / "rc").write_text("#!/bin/sh\necho hello\n")
    (svc / "etc" / "motd").write_text("hi\n")
    (svc / "etc" / "fstab").write_text("/dev/ld0a / ext2fs rw,noatime 1 1\n")
    (svc / "service.conf").write_text(f"SETS={sets_dir / 'rescue.tgz'}\nFS=ext2\nSIZE_MB=3\n")
    out = tmp_path / "out"
    out.mkdir()
    r = build(service="hello", services_dir=tmp_path / "svcs", image=out / "h.img")
    assert r.manifest["fs"] == "ext2" and r.manifest["size"] == 3 << 20 and not r.manifest["ro"]
    img = Image(r.image, "ext2")
    assert img.read("etc/motd") == b"hi\n"
    assert img.read("etc/fstab") == b"/dev/ld0a / ext2fs rw,noatime 1 1\n"  # the service's own
    assert img.read("etc/include/shutdown") == (REPO / "services/common/shutdown").read_bytes()
    assert r.manifest == json.loads((out / "h.img.json").read_text())


# ---------------------------------------------------------------------------
# sets from a mirror (file://), then from the cache only


def test_sets_fetched_from_mirror_then_offline(sets_dir: Path, tmp_path: Path) -> None:
    from smolfs.sets.release import DEFAULT_RELEASE, set_filename

    name = set_filename("rescue", DEFAULT_RELEASE, "amd64")
    tree = tmp_path / "mirror/pub/NetBSD" / f"NetBSD-{DEFAULT_RELEASE}" / "amd64/binary/sets"
    tree.mkdir(parents=True)
    src = sets_dir / ("rescue.tar.xz" if name.endswith(".tar.xz") else "rescue.tgz")
    shutil.copy(src, tree / name)
    digest = hashlib.sha512(src.read_bytes()).hexdigest()
    (tree / "SHA512").write_text(f"SHA512 ({name}) = {digest}\n")
    env = {"MKSMOLNB_CACHE": str(tmp_path / "cache"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    ok(smolfs("build", "-x", "rescue", "--mirror", f"file://{tmp_path / 'mirror'}",
              cwd=tmp_path, env=env))
    m = json.loads((tmp_path / "rescue-amd64.img.json").read_text())
    assert m["sets"] == [{"name": "rescue", "file": name, "sha512": digest}]
    assert m["release"] == DEFAULT_RELEASE
    assert "kernel" not in m
    # a kernel for the launcher: fetched and named in the manifest
    ktree = tree.parent / "kernel"
    ktree.mkdir()
    (ktree / "netbsd-GENERIC.gz").write_bytes(b"not really a kernel")
    kdigest = hashlib.sha512(b"not really a kernel").hexdigest()
    (ktree / "SHA512").write_text(f"SHA512 (netbsd-GENERIC.gz) = {kdigest}\n")
    ok(smolfs("build", "-x", "rescue", "-k", "GENERIC", "--mirror",
              f"file://{tmp_path / 'mirror'}", cwd=tmp_path, env=env))
    m = json.loads((tmp_path / "rescue-amd64.img.json").read_text())
    assert Path(m["kernel"]).read_bytes() == b"not really a kernel"
    assert Path(m["kernel"]).is_relative_to(tmp_path / "cache")
    shutil.rmtree(tmp_path / "mirror")
    (tmp_path / "rescue-amd64.img").unlink()
    ok(smolfs("build", "--offline", cwd=tmp_path, env=env))  # the service's SETS=rescue
    Image(tmp_path / "rescue-amd64.img", "ffs")


def test_up_to_date_image_is_kept(sets_dir: Path, tmp_path: Path) -> None:
    svc_dir = tmp_path / "svcs"
    shutil.copytree(REPO / "services", svc_dir, ignore=shutil.ignore_patterns("*.py"))
    archive = tmp_path / "rescue.tgz"
    shutil.copy(sets_dir / "rescue.tgz", archive)
    img = tmp_path / "r.img"

    def again(*extra: str) -> tuple[bool, int]:
        r = ok(smolfs("build", "--services-dir", svc_dir, "-x", archive, "-i", img, *extra,
                      cwd=tmp_path))
        return "up to date" in r.stderr, img.stat().st_ino

    kept, ino = again()
    assert not kept
    assert again() == (True, ino)  # same inputs: the same file, untouched
    assert again("--rw")[0] is False  # other options
    kept, ino = again("--rw")
    assert kept
    assert again("--rw", "--force")[0] is False
    (svc_dir / "rescue/etc/rc").write_text("#!/bin/sh\necho changed\n")
    assert again("--rw")[0] is False  # a service file changed
    os.utime(archive, ns=(1, 1))
    assert again("--rw")[0] is False  # the set changed
    kept, ino = again("--rw")
    assert kept

    def written_by_a_vm() -> None:
        with img.open("r+b") as f:  # the last bytes: free space of the filesystem
            f.seek(-5, os.SEEK_END)
            f.write(b"guest")
        later = (img.with_name("r.img.json").stat().st_mtime_ns + 10**9,) * 2
        os.utime(img, ns=later)

    written_by_a_vm()  # a read-write root keeps what its VM wrote
    assert again("--rw") == (True, ino)
    assert img.read_bytes().endswith(b"guest")
    assert again("--rw", "--force")[0] is False
    assert again()[0] is False  # a read-only root now
    written_by_a_vm()  # a read-only root that was written to: rebuilt
    assert again()[0] is False
    assert not img.read_bytes().endswith(b"guest")
    assert Image(img, "ffs").read("etc/rc") == b"#!/bin/sh\necho changed\n"


# ---------------------------------------------------------------------------
# rootless and reproducible; never calls a privileged or host-mkfs tool

SPY_TOOLS = ("mount", "umount", "losetup", "mknod", "chown", "sudo", "doas", "makefs",
             "mke2fs", "mkfs", "mkfs.ext2", "mkfs.ext4", "mkfs.ffs", "newfs", "fakeroot")


def test_never_calls_privileged_tools(sets_dir: Path, tmp_path: Path) -> None:
    spy = tmp_path / "spy"
    spy.mkdir()
    log = tmp_path / "called.log"
    for tool in SPY_TOOLS:
        (spy / tool).write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {log}\nexit 1\n")
        (spy / tool).chmod(0o755)
    env = {"PATH": f"{spy}:{os.environ['PATH']}"}
    for fs in ("ffs", "ext2"):
        ok(smolfs("build", "-s", "bozohttpd", "--fs", fs, "-i", f"{fs}.img",
                  "-x", f"{sets_dir / 'base.tar.xz'},{sets_dir / 'etc.tar.xz'}",
                  cwd=tmp_path, env=env))
    assert not log.exists(), log.read_text()


def _shared_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="smolfs-build-"))
    d.chmod(0o777)
    return d


def test_root_and_unprivileged_give_identical_bytes(sets_dir: Path) -> None:
    """Run as root and as nobody when root; twice as this user otherwise."""
    users: list[list[str]] = [[], []]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("setpriv (util-linux) is needed to drop privileges")
        users[1] = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    images = []
    dirs = [_shared_dir(), _shared_dir()]
    try:
        for i, (user, d) in enumerate(zip(users, dirs, strict=True)):
            for fs in ("ffs", "ext2"):
                ok(smolfs("build", "-s", "bozohttpd", "--fs", fs, "-i", f"{fs}.img",
                          "-x", f"{sets_dir / 'base.tar.xz'} {sets_dir / 'etc.tar.xz'}",
                          cwd=d, user=user,
                          env={"SOURCE_DATE_EPOCH": EPOCH, "HOME": str(d),
                               "MKSMOLNB_CACHE": str(d / "cache")}))
                if i == 1 and users[1]:
                    assert (d / f"{fs}.img").stat().st_uid == 65534
            images.append({fs: (d / f"{fs}.img").read_bytes() for fs in ("ffs", "ext2")})
        for fs in ("ffs", "ext2"):
            assert hashlib.sha256(images[0][fs]).digest() == hashlib.sha256(images[1][fs]).digest()
        assert (dirs[0] / "ffs.img.json").read_text() == (dirs[1] / "ffs.img.json").read_text()
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# bad input: one line, exit code, nothing at the destination


def _assert_nothing_written(d: Path) -> None:
    left = [p.name for p in d.iterdir() if p.name.endswith((".img", ".json")) or
            p.name.startswith(".")]
    assert left == [], left


def test_unknown_service(tmp_path: Path) -> None:
    err = one_line_error(smolfs("build", "-s", "nope", cwd=tmp_path))
    assert "unknown service 'nope'" in err and "(available: base, bozohttpd, caddy, rescue)" in err
    _assert_nothing_written(tmp_path)


def test_missing_rc(tmp_path: Path) -> None:
    (tmp_path / "svcs/broken/etc").mkdir(parents=True)
    err = one_line_error(smolfs("build", "--services-dir", tmp_path / "svcs", "-s", "broken",
                                cwd=tmp_path))
    assert "service 'broken' has no etc/rc" in err
    _assert_nothing_written(tmp_path)


def _tar_with(path: Path, name: str) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("./etc/ok")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"ok\n"))
        info = tarfile.TarInfo(name)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"bad\n"))
    return path


@pytest.mark.parametrize("member", ["/etc/passwd", "./etc/../../outside"])
def test_archive_member_escaping_is_rejected(tmp_path: Path, member: str) -> None:
    bad = _tar_with(tmp_path / "evil.tgz", member)
    out = tmp_path / "out"
    out.mkdir()
    err = one_line_error(smolfs("build", "-x", bad, "-i", out / "x.img", cwd=tmp_path))
    assert "evil.tgz" in err and repr(member) in err
    _assert_nothing_written(out)


def test_truncated_and_corrupt_archives(sets_dir: Path, tmp_path: Path) -> None:
    data = (sets_dir / "rescue.tar.xz").read_bytes()
    (tmp_path / "cut.tar.xz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flip.tar.xz").write_bytes(bytes(flipped))
    for name in ("cut.tar.xz", "flip.tar.xz"):
        err = one_line_error(smolfs("build", "-x", tmp_path / name, cwd=tmp_path))
        assert f"{name}: corrupt or truncated archive" in err
    err = one_line_error(smolfs("build", "-x", tmp_path / "absent.tgz", cwd=tmp_path))
    assert "absent.tgz" in err
    _assert_nothing_written(tmp_path)


def test_failing_postinst(sets_dir: Path, tmp_path: Path) -> None:
    svc = tmp_path / "svcs/web"
    (svc / "etc").mkdir(parents=True)
    (svc / "etc/rc").write_text("#!/bin/sh\n")
    (svc / "postinst").mkdir()
    (svc / "postinst/50-broken.sh").write_text("echo 'cannot find the thing' >&2\nexit 7\n")
    out = tmp_path / "out"
    out.mkdir()
    err = one_line_error(smolfs("build", "--services-dir", tmp_path / "svcs", "-s", "web",
                                "-x", sets_dir / "rescue.tar.xz", "-i", out / "w.img",
                                cwd=tmp_path))
    assert "postinst web/postinst/50-broken.sh failed with exit status 7: cannot find the thing" \
        in err
    _assert_nothing_written(out)


def test_image_too_small_names_minimum(sets_dir: Path, tmp_path: Path) -> None:
    r = smolfs("build", "-x", sets_dir / "base.tar.xz", "-m", "1", cwd=tmp_path)
    err = one_line_error(r)
    m = re.search(r"1 MB is too small for service 'rescue': the content needs at least (\d+) MB",
                  err)
    assert m, err
    assert f"use -m {m.group(1)} or more" in r.stderr
    _assert_nothing_written(tmp_path)
    ok(smolfs("build", "-x", sets_dir / "base.tar.xz", "-m", m.group(1), cwd=tmp_path))


def test_api_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown service"):
        build(service="nope", image=tmp_path / "x.img")
    with pytest.raises(InputError, match=r"set archive .*missing\.tgz"):
        build(image=tmp_path / "x.img", sets=str(tmp_path / "missing.tgz"))


# ---------------------------------------------------------------------------
# genuine NetBSD sets, when the machine has them


@pytest.mark.netbsd
@pytest.mark.parametrize("fs", ["ffs", "ext2"])
def test_genuine_rescue_set(netbsd_dir: Path, tmp_path: Path, fs: str) -> None:
    found = sorted(p for p in netbsd_dir.rglob("rescue.t*") if p.name.endswith((".tgz", ".xz")))
    if not found:
        pytest.skip(f"no rescue.tgz or rescue.tar.xz below {netbsd_dir}")
    ok(smolfs("build", "-x", found[0], "--fs", fs, "-i", "r.img", cwd=tmp_path))
    img = Image(tmp_path / "r.img", fs)
    assert img.entries["rescue/sh"].inode == img.entries["rescue/init"].inode
    assert img.symlink("sbin/init") == "/rescue/init"
    assert img.device("dev/console") == (0, 0)
