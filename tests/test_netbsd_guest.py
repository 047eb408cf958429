"""NetBSD itself judges the images smolfs writes.

For each kind of filesystem smolfs writes (FFS UFS1 and UFS2, ext2 revisions 1 and 0), a
read-only and a read-write root: ``smolfs.image.mkfs`` writes a NetBSD-shaped tree
(:mod:`nbtree`) plus the genuine rescue set, ``startnb`` boots it on the genuine amd64
kernel with a second virtio disk, and the image's own ``/etc/rc``
(``tests/guest/fscheck/rc``) has NetBSD

- check it with its own ``fsck_ffs -n -f`` / ``fsck_ext2fs -n -f`` (clean, exit 0);
- ``tar`` its whole root onto the second disk, which the host reads with ``tarfile`` and
  compares entry by entry with the tree (type, mode, owner, size, data, link target,
  device numbers, hard links, mtime);
- on a read-write root, write (files of 0 bytes to 3 MiB, many small files, a deep
  directory, a sparse file past the double and triple indirect thresholds, symlinks, hard
  links, renames, deletes, an append), sync, remount read-only, check again and halt.

After a read-write boot the host reads the image with readers that share nothing with
smolfs (``tests/helpers/ffsread.py`` and sleuthkit for FFS, ``debugfs`` for ext2) and runs
NetBSD's ``fsck_ffs -n -f -F`` / ``e2fsck -fn``: every original file intact, every
written file as the rc's rules (mirrored by :func:`written`) say. One boot per case.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ffsread, nbtree
from helpers.nbtree import Want

from conftest import qemu_pids

pytestmark = [pytest.mark.netbsd, pytest.mark.qemu, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
RC = HERE / "guest" / "fscheck" / "rc"
BOOT_TIMEOUT = 600  # seconds to the halt; TCG on a loaded machine (about 5 s alone)

#: name -> (smolfs type, writer options, NetBSD's name of the type)
KINDS = {
    "ufs1": ("ffs", {"version": "1", "bsize": "4096", "fsize": "512", "density": "8192"},
             "ffs"),
    "ufs2": ("ffs", {"version": "2", "density": "8192"}, "ffs"),
    "ext2r1": ("ext2", {"revision": "1", "density": "8192"}, "ext2fs"),
    "ext2r0": ("ext2", {"revision": "0", "bsize": "4096", "density": "8192"}, "ext2fs"),
}
IMAGE_SIZE = "48m"
TAR_DISK = 96 << 20  # the guest's tar of its root (a sparse file counts whole)

#: What the rw part of the rc writes (its settings, /etc/fscheck.conf).
MANY = 500
DEEP = 30
SIZES = (0, 1, 511, 512, 513, 4095, 4096, 4097, 65537, 1048579, 3 << 20)
FAR_KIB = (0, 1024, 5 * 1024, 18 * 1024, 68 * 1024)  # past UFS1-8K double, ext2-1K triple
PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 12  # 624 letters

#: Device nodes the rc writes through: their mtime may move on even a read-only root.
WRITTEN_NODES = frozenset({"dev/console", "dev/rld1d", "dev/null"})

#: The lines NetBSD's checkers print on a clean filesystem (anything else is a finding).
CLEAN = {
    "ffs": re.compile(r"\*\* /dev/rld0a \(NO WRITE\)|\*\* File system is already clean"
                      r"|\*\* Last Mounted on.*|\*\* Root file system|\*\* Phase \d - .*"
                      r"|\d+ files, \d+ used, \d+ free \(.*\)"
                      # the ld driver has no geometry ioctl: fsck says so and goes on
                      r"|fsck_ffs: DIOCGDISKGEOM on /dev/rld0a failed: .*"),
    "ext2fs": re.compile(r"\*\* /dev/rld0a \(NO WRITE\)|\*\* File system is already clean"
                         r"|\*\* Last Mounted on.*"
                         r"|\*\* Root file system|\*\* Phase \d - .*"
                         r"|\d+ files, \d+ used, \d+ free"
                         r"|fsck_ext2fs: DIOCGDISKGEOM on /dev/rld0a failed: .*"),
}


def fscheck_conf(netbsd_type: str, mode: str) -> bytes:
    return (f"FSTYPE={netbsd_type}\nMODE={mode}\nMANY={MANY}\nDEEP={DEEP}\n"
            f"SIZES='{' '.join(map(str, SIZES))}'\nFAR='{' '.join(map(str, FAR_KIB))}'\n"
            f"PAD={PAD}\n").encode()


def unit(name: str, i: int) -> bytes:
    """The rc's ``unit``: line I of a patterned file, 512 bytes."""
    head = f"{name}:{i:09d}:"
    return (head + PAD[:511 - len(head)] + "\n").encode()


def patterned(name: str, size: int) -> bytes:
    """The rc's ``patterned``: SIZE bytes of NAME's units."""
    return b"".join(unit(name, i) for i in range(-(-size // 512)))[:size]


def written(tree: nbtree.NbTree) -> tuple[dict[str, Want], frozenset[str]]:
    """The tree after the rc's ``write_all`` (rule for rule), and the paths whose mtime
    the guest set (unknown here). New entries: root's, umask 022."""
    want = dict(tree.want)
    data = dict(tree.data)
    touched = {"", "data", "bigdir"}

    def new(path: str, kind: str, content: bytes = b"", target: str = "") -> None:
        mode = {"dir": 0o755, "file": 0o644, "symlink": 0o755}[kind]
        want[path] = Want(kind, mode, 0, 0, 0, len(content) if kind == "file" else 0,
                          nbtree.digest(content) if kind == "file" else "", target)
        data[path] = content
        touched.add(path)

    def link(path: str, first: str) -> None:
        old = want[first].link
        members = [p for p, w in want.items() if p == first or (old and w.link == old)]
        group = min([*members, path])
        for p in members:
            want[p] = dataclasses.replace(want[p], link=group)
        want[path] = want[first]
        if first in touched:
            touched.add(path)

    def move(old: str, path: str) -> None:
        w = want.pop(old)
        want[path] = w
        if old in touched:
            touched.add(path)
        if w.link:
            regroup(w.link)

    def regroup(group: str) -> None:
        members = [p for p, w in want.items() if w.link == group]
        for p in members:
            want[p] = dataclasses.replace(want[p], link=min(members) if len(members) > 1 else "")

    new("w", "dir")
    for size in SIZES:
        new(f"w/size-{size}", "file", patterned(f"/w/size-{size}", size))
    new("w/many", "dir")
    for i in range(MANY):
        if i != 7:
            new(f"w/many/f{i}", "file", f"small {i}\n".encode())
    path = "w/deep"
    new(path, "dir")
    for i in range(DEEP):
        path += f"/d{i}"
        new(path, "dir")
    new(f"{path}/leaf", "file", f"deep {DEEP}\n".encode())
    piece = patterned("/w/piece", 4096)
    new("w/piece", "file", piece)
    far = bytearray(FAR_KIB[-1] * 1024 + 4096)
    for kib in FAR_KIB:
        far[kib * 1024:kib * 1024 + 4096] = piece
    new("w/far", "file", bytes(far))
    new("w/link", "symlink", target="../data/size-8193")
    new("w/longlink", "symlink", target=PAD[:200])
    link("w/hardlink", "w/size-4097")
    link("w/orig-link", "data/size-8192")
    move("w/size-513", "w/renamed-513")
    move("data/size-1025", "data/renamed-1025")
    move("data/size-1023", "w/moved-1023")
    for gone in ("data/size-4095", "data/large", "empty"):
        del want[gone]
    new("bigdir/new-entry", "file", b"a new entry\n")
    grown = data["data/size-1"] + b"appended\n"
    want["data/size-1"] = dataclasses.replace(want["data/size-1"], size=len(grown),
                                              digest=nbtree.digest(grown))
    touched.add("data/size-1")
    return want, frozenset(touched)


# -- booting -------------------------------------------------------------------------


class Guest:
    """Boots images with ``python -m launcher`` (private cache and state) and makes sure
    no QEMU of this test outlives it."""

    def __init__(self, workdir: Path, kernel: Path) -> None:
        self.workdir = workdir
        self.kernel = kernel
        self.state = Path(tempfile.mkdtemp(prefix="snbg-", dir="/tmp"))  # short socket paths
        self.env = dict(os.environ, MKSMOLNB_STATE=str(self.state),
                        MKSMOLNB_CACHE=str(workdir / "cache"))

    def launcher(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=self.workdir,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def boot(self, name: str, image: Path, disk2: Path,
             readonly: bool) -> tuple[str, float, dict[str, float]]:
        """Boot until the guest halts (or fails); return its whole console and the seconds
        to the end. QEMU is stopped afterwards: without ACPI, a halt does not end it."""
        drive = f"file={str(disk2).replace(',', ',,')},if=none,id=hd1,format=raw"
        args = ["-d", "--name", name, "-k", str(self.kernel), "-i", str(image), "-N",
                "--machine", "pc", "--json", "--timeout", str(BOOT_TIMEOUT),
                "--ready", "console:The operating system has halted|panic:|fatal trap"
                "|Stopped in pid|Enter pathname of shell",
                "--qemu-arg=-drive", f"--qemu-arg={drive}",
                "--qemu-arg=-device", "--qemu-arg=virtio-blk-pci,drive=hd1"]
        if readonly:
            args.append("--ro")
        start = time.monotonic()
        r = self.launcher(*args, timeout=BOOT_TIMEOUT + 60)
        seconds = time.monotonic() - start
        assert r.returncode == 0, f"startnb: exit {r.returncode}\n{r.stderr}"
        report = json.loads(r.stdout.splitlines()[0])
        console = (Path(report["state_dir"]) / "serial.log").read_text(errors="replace")
        stop = self.launcher("stop", name, "--grace", "0", timeout=60)
        assert stop.returncode == 0, stop.stderr
        return console, seconds, report["timing"]["stages"]

    def close(self) -> None:
        left = qemu_pids(str(self.state)) + qemu_pids(str(self.workdir))
        for pid in left:
            os.kill(pid, 9)
        shutil.rmtree(self.state, ignore_errors=True)
        assert not left, f"QEMU left running: {left}"


@pytest.fixture
def guest(tmp_path: Path, netbsd_dir: Path) -> Iterator[Guest]:
    kernel = netbsd_dir / "netbsd"
    if not kernel.is_file():
        pytest.skip(f"netbsd: {kernel} not found")
    g = Guest(tmp_path, kernel)
    try:
        yield g
    finally:
        g.close()


# -- reading the console ---------------------------------------------------------------


def results(console: str) -> dict[str, str]:
    """The rc's ``FSCHECK name status=N t=SECONDS`` lines: name -> N."""
    out = {}
    for m in re.finditer(r"^FSCHECK (.+?) status=(\d+) t=\d+\r?$", console, re.M):
        out[m.group(1)] = m.group(2)
    return out


def step_seconds(console: str) -> str:
    """How long each step of the rc took (whole seconds of the guest's clock)."""
    marks = re.findall(r"^FSCHECK (.+?)(?: status=\d+)? t=(\d+)\r?$", console, re.M)
    out = []
    for (_, t0), (name, t1) in itertools.pairwise(marks):
        out.append(f"{name.split(' fstype')[0]} {int(t1) - int(t0)}")
    return ", ".join(out)


def checker_lines(console: str, label: str) -> list[str]:
    """What the checker printed before ``FSCHECK fsck LABEL``."""
    head = console.split(f"FSCHECK fsck {label} ")[0]
    block = re.split(r"^FSCHECK .*$", head, flags=re.M)[-1]
    return [line.strip() for line in block.splitlines() if line.strip()]


def judge_checker(console: str, label: str, netbsd_type: str) -> list[str]:
    lines = checker_lines(console, label)
    problems = [f"fsck {label}: {line}" for line in lines
                if not CLEAN[netbsd_type].fullmatch(line)]
    if not any(re.fullmatch(r"\d+ files, \d+ used, \d+ free.*", line) for line in lines):
        problems.append(f"fsck {label}: no summary line")
    return problems


# -- reading the image on the host -------------------------------------------------------


def netbsd_dev(dev: int) -> tuple[int, int]:
    return (dev & 0x000FFF00) >> 8, (dev & 0xFF) | ((dev & 0xFFF00000) >> 12)


_TYPES = {0o040000: "dir", 0o100000: "file", 0o120000: "symlink", 0o020000: "char",
          0o060000: "block", 0o010000: "fifo"}


def group_links(got: dict[str, Want], inode_of: dict[str, int]) -> dict[str, Want]:
    groups: dict[int, list[str]] = {}
    for path, w in got.items():
        if w.kind != "dir":
            groups.setdefault(inode_of[path], []).append(path)
    for members in groups.values():
        if len(members) > 1:
            for p in members:
                got[p] = dataclasses.replace(got[p], link=min(members))
    return got


def read_ffs(image: Path) -> dict[str, Want]:
    """The image as tests/helpers/ffsread.py reads it (maps and summaries recomputed too)."""
    img = image.read_bytes()
    fs = ffsread.read_image(img)
    ffsread.check_allocation(img, fs, old_totals=False)  # NetBSD wrote it
    got: dict[str, Want] = {}
    inode_of: dict[str, int] = {}
    for raw, ino_no in fs.paths.items():
        path = raw.decode()
        ino = fs.inodes[ino_no]
        kind = _TYPES[ino.mode & 0o170000]
        size, sha, target, rdev = 0, "", "", None
        if kind == "file":
            size = ino.size
            h = hashlib.sha256()
            if ino_no in fs.contents and (ino.size < 1 << 26):
                h.update(fs.contents[ino_no])
            else:
                for off in range(0, ino.size, 8 << 20):
                    h.update(ffsread.read_data(img, fs.sb, ino, fs.blocks[ino_no], off, 8 << 20))
            sha = h.hexdigest()
        elif kind == "symlink":
            target = fs.contents[ino_no].decode()
        elif kind in ("char", "block"):
            rdev = netbsd_dev(ino.db[0] & 0xFFFFFFFF)
        got[path] = Want(kind, ino.mode & 0o7777, ino.uid, ino.gid, ino.mtime, size, sha,
                         target, rdev)
        inode_of[path] = ino_no
    return group_links(got, inode_of)


def sleuthkit_agrees(image: Path, got: dict[str, Want], paths: list[str]) -> list[str]:
    """sleuthkit's names are the reader's; its data of *paths* is the expected data."""
    listing = subprocess.run(["fls", "-r", "-p", "-f", "ufs", str(image)], check=True,
                             capture_output=True).stdout.decode()
    seen = {}
    for line in listing.splitlines():
        m = re.match(r"(\S)/(\S) (\* )?\s*(\d+):\t(.*)$", line)
        if m and not m.group(3) and not m.group(5).startswith("$"):  # "*": a deleted name
            seen[m.group(5)] = int(m.group(4))
    problems = [f"sleuthkit: {p} missing" for p in sorted(set(got) - set(seen) - {""})]
    problems += [f"sleuthkit: {p} extra" for p in sorted(set(seen) - set(got))]
    for path in paths:
        data = subprocess.run(["icat", "-f", "ufs", str(image), str(seen[path])], check=True,
                              capture_output=True).stdout
        if nbtree.digest(data) != got[path].digest:
            problems.append(f"sleuthkit: data of {path} differs")
    return problems


def read_ext2(image: Path, workdir: Path) -> dict[str, Want]:
    """The image as debugfs reads it."""
    from test_ext2 import read_image

    got: dict[str, Want] = {}
    inode_of: dict[str, int] = {}
    for raw, e in read_image(image, workdir).items():
        path = raw.decode()
        kind = _TYPES[e.mode & 0o170000]
        mtime = int(re.search(r"mtime: 0x([0-9a-f]+)", e.stat).group(1), 16)
        sha = e.content.hex() if kind == "file" and e.content is not None else ""
        target = e.content.decode() if kind == "symlink" and e.content else ""
        got[path] = Want(kind, e.mode & 0o7777, e.uid, e.gid, mtime,
                         e.size if kind == "file" else 0, sha, target)
        inode_of[path] = e.ino
    return group_links(got, inode_of)


def host_checker(image: Path, fstype: str, netbsd_dir: Path) -> None:
    if fstype == "ffs":
        argv = [str(netbsd_dir / "fsck_ffs"), "-n", "-f", "-F", str(image)]
    else:
        argv = ["e2fsck", "-fn", str(image)]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}{r.stderr}"


# -- the test ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ro", "rw"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_netbsd_judges_image(guest: Guest, netbsd_dir: Path, tmp_path: Path, kind: str,
                             mode: str) -> None:
    import smolfs

    rescue = netbsd_dir / "sets" / "rescue.tgz"
    if not rescue.is_file():
        pytest.skip(f"netbsd: {rescue} not found")
    if mode == "rw" and not shutil.which("fls" if KINDS[kind][0] == "ffs" else "debugfs"):
        pytest.skip("the host readers (sleuthkit, e2fsprogs) are not installed")
    fstype, options, netbsd_type = KINDS[kind]
    tree = nbtree.build(tmp_path, {
        "etc/rc": RC.read_bytes(),
        "etc/fscheck.conf": fscheck_conf(netbsd_type, mode),
        "etc/fstab": f"/dev/ld0a / {netbsd_type} {mode} 1 1\n".encode(),
    }, wide_ids=options.get("revision") != "0")
    tree.add_archive(rescue)
    image = tmp_path / f"{kind}.img"
    env_epoch = os.environ.pop("SOURCE_DATE_EPOCH", None)  # times as laid out
    try:
        smolfs.mkfs(image, [rescue, tree.source], fstype=fstype, size=IMAGE_SIZE,
                    options=options, spec=tree.spec, owner=(0, 0))
    finally:
        if env_epoch is not None:
            os.environ["SOURCE_DATE_EPOCH"] = env_epoch
    host_checker(image, fstype, netbsd_dir)  # the host's judges agree before NetBSD looks
    disk2 = tmp_path / "root.tar"
    with disk2.open("wb") as f:
        f.truncate(TAR_DISK)

    console, seconds, report = guest.boot(f"fscheck-{kind}-{mode}", image, disk2,
                                          mode == "ro")
    print(f"{kind} {mode}: boot to halt {seconds:.1f} s (root mounted at {report['root']} s;"
          f" steps in s: {step_seconds(console)})")
    try:
        status = results(console)
        problems = [f"rc: {name} status={value}" for name, value in status.items()
                    if value != "0" and name != "mount-ro-attempt"]
        want_steps = ["fsck before", "tar"] + (
            ["mount-rw", "write", "fsck after"] if mode == "rw" else [])
        problems += [f"rc: no result for {step}" for step in want_steps if step not in status]
        if not (re.search(r"^FSCHECK end t=", console, re.M)
                and "The operating system has halted." in console):
            problems.append("the rc did not reach its end and the halt")
        for label in ("before", "after") if mode == "rw" else ("before",):
            if f"fsck {label}" in status:
                problems += judge_checker(console, label, netbsd_type)
        assert not problems, "\n".join(problems)

        # what NetBSD sees is what smolfs wrote
        got = nbtree.from_tar(disk2)
        if fstype == "ext2":
            lost = got.pop("lost+found", None)
            assert lost is not None and lost.kind == "dir", "ext2 without lost+found"
            assert not [p for p in got if p.startswith("lost+found/")]
        diff = nbtree.compare(tree.want, got, newer_ok=WRITTEN_NODES)
        assert not diff, f"{len(diff)} differences:\n" + "\n".join(diff[:60])

        if mode == "ro":
            return
        # what NetBSD wrote, read back on the host by independent readers
        host_checker(image, fstype, netbsd_dir)
        final, touched = written(tree)
        if fstype == "ffs":
            seen = read_ffs(image)
            fields = ("kind", "mode", "uid", "gid", "mtime", "size", "digest", "target",
                      "rdev", "link")
        else:
            seen = read_ext2(image, tmp_path)
            seen.pop("lost+found", None)
            fields = ("kind", "mode", "uid", "gid", "mtime", "size", "digest", "target",
                      "link")
        diff = nbtree.compare(final, seen, newer_ok=WRITTEN_NODES, any_mtime=touched,
                              fields=fields)
        assert not diff, f"{len(diff)} differences after the guest wrote:\n" + "\n".join(
            diff[:60])
        if fstype == "ffs":
            new_files = [p for p in sorted(touched) if p in final
                         and final[p].kind == "file" and not p.startswith("w/many/")]
            problems = sleuthkit_agrees(image, seen, new_files)
            assert not problems, "\n".join(problems)
    except Exception:
        print(f"--- guest console ({kind}, {mode})\n{console}")
        raise
