"""A NetBSD-shaped tree for tests that boot genuine NetBSD, and what it must look like.

:func:`build` lays it out (host directory and mtree spec) and returns the expected
entries, computed here, never by smolfs; :func:`from_tar` reads NetBSD's own tar into
the same shape; :func:`compare` lists the differences (``tests/helpers/README.md``)."""

from __future__ import annotations

import hashlib
import os
import random
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

#: Timestamps of the laid-out entries: fixed, distinct, all in UFS1's 32-bit range.
EPOCH = 1_420_070_400  # 2015-01-01

#: NetBSD amd64 device nodes: (path, type, major, minor, mode). ld: 16 partitions a unit.
DEVICES = [
    ("console", "char", 0, 0, 0o600), ("constty", "char", 0, 1, 0o600),
    ("tty", "char", 1, 0, 0o666), ("mem", "char", 2, 0, 0o640), ("kmem", "char", 2, 1, 0o640),
    ("null", "char", 2, 2, 0o666), ("full", "char", 2, 11, 0o666),
    ("zero", "char", 2, 12, 0o666), ("drum", "char", 4, 0, 0o640),
    ("klog", "char", 7, 0, 0o600), ("tty00", "char", 8, 0, 0o600),
    ("stdin", "char", 22, 0, 0o666), ("stdout", "char", 22, 1, 0o666),
    ("stderr", "char", 22, 2, 0o666), ("random", "char", 46, 0, 0o444),
    ("urandom", "char", 46, 1, 0o644), ("ksyms", "char", 85, 0, 0o440),
    ("ld0a", "block", 19, 0, 0o640), ("ld0d", "block", 19, 3, 0o640),
    ("rld0a", "char", 69, 0, 0o640), ("rld0d", "char", 69, 3, 0o640),
    ("ld1a", "block", 19, 16, 0o640), ("ld1d", "block", 19, 19, 0o640),
    ("rld1a", "char", 69, 16, 0o640), ("rld1d", "char", 69, 19, 0o640),
    # numbers that need NetBSD's split encoding (minor above 255, major above 255)
    ("wide", "char", 300, 0x12345, 0o600), ("dk300", "block", 168, 300, 0o640),
]


@dataclass(frozen=True)
class Want:
    """One entry as NetBSD must show it. ``link``: the hard-link group (the group's
    smallest path) for files with more than one name, else ""."""

    kind: str  # dir file symlink char block fifo
    mode: int  # permission bits, set-id and sticky included
    uid: int
    gid: int
    mtime: int
    size: int = 0
    digest: str = ""  # sha256 of a file's data
    target: str = ""  # a symlink's target
    rdev: tuple[int, int] | None = None
    link: str = ""


@dataclass
class NbTree:
    """What :func:`build` laid out: the host directory and spec to give smolfs, the
    expected entries (path without ``./``, "" is the root), and each file's data."""

    source: Path
    spec: Path
    want: dict[str, Want]
    data: dict[str, bytes] = field(default_factory=dict)

    def add_archive(self, archive: Path) -> None:
        """Expect *archive*'s entries too (read with ``tarfile``; added before ours)."""
        merged = from_tar(archive)
        merged.pop("", None)
        merged.update(self.want)
        self.want = merged
        with tarfile.open(archive) as tf:
            for m in tf:
                if m.isreg():
                    f = tf.extractfile(m)
                    assert f is not None
                    self.data[norm(m.name)] = f.read()


def norm(name: str) -> str:
    """``./a/b/`` → ``a/b``; ``.`` → ""."""
    name = name.rstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return "" if name in (".", "") else name.lstrip("/")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def threshold(bsize: int, ptr: int) -> int:
    """First byte mapped through the double indirect block (12 direct pointers)."""
    return (12 + bsize // ptr) * bsize


def _content(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def build(root: Path, extra: dict[str, bytes], seed: int = 10,
          wide_ids: bool = True) -> NbTree:
    """Lay out the tree under ``root/src`` and its spec at ``root/tree.spec``.

    *extra* maps paths (``etc/rc``) to the data of files the caller needs in the image,
    mode 0644, owned by root. *wide_ids* adds a file owned by ids above 16 bits (which
    ext2 revision 0 cannot hold for NetBSD)."""
    rng = random.Random(seed)
    src = root / "src"
    src.mkdir(parents=True)
    want: dict[str, Want] = {}
    data: dict[str, bytes] = {}
    spec: list[str] = []
    clock = iter(range(EPOCH, EPOCH + 10_000_000, 97))
    dirs: list[str] = []

    def mkdir(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        (src / path).mkdir(parents=True, exist_ok=True)
        os.chmod(src / path, mode & 0o777 | 0o700)  # readable by an ordinary user
        t = next(clock)
        want[path] = Want("dir", mode, uid, gid, t)
        dirs.append(path)
        if mode != 0o755 or uid or gid:
            spec.append(f"./{path} type=dir mode={mode:04o} uid={uid} gid={gid} time={t}")

    def parents(path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in want:
                mkdir(p)

    def put(path: str, content: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
            holes: list[tuple[int, bytes]] | None = None, size: int | None = None) -> None:
        parents(path)
        host = src / path
        with open(host, "wb") as f:
            if holes is None:
                f.write(content)
            else:  # sparse: only these pieces written, the rest left as holes
                for offset, piece in holes:
                    f.seek(offset)
                    f.write(piece)
                assert size is not None
                f.truncate(size)
        if holes is not None:
            buf = bytearray(size or 0)
            for offset, piece in holes:
                buf[offset:offset + len(piece)] = piece
            content = bytes(buf)
        os.chmod(host, mode & 0o777 | 0o600)  # readable by an ordinary user
        t = next(clock)
        os.utime(host, (t, t))
        want[path] = Want("file", mode, uid, gid, t, len(content), digest(content))
        data[path] = content
        if mode & 0o7777 != mode & 0o777 | 0o600 or uid or gid:
            spec.append(f"./{path} type=file mode={mode:04o} uid={uid} gid={gid}")

    def symlink(path: str, target: str) -> None:
        parents(path)
        os.symlink(target, src / path)
        t = next(clock)
        os.utime(src / path, (t, t), follow_symlinks=False)
        want[path] = Want("symlink", 0o777, 0, 0, t, target=target)  # the host's lrwxrwxrwx

    def hardlink(path: str, first: str) -> None:
        parents(path)
        os.link(src / first, src / path)
        old = want[first].link
        members = [p for p, w in want.items() if p == first or (old and w.link == old)]
        group = min([*members, path])
        for p in members:
            want[p] = replace(want[p], link=group)
        want[path] = want[first]
        data[path] = data[first]

    def node(path: str, kind: str, major: int, minor: int, mode: int) -> None:
        parents(path)
        t = next(clock)
        want[path] = Want(kind, mode, 0, 0, t, rdev=(major, minor))
        spec.append(f"./{path} type={kind} mode={mode:04o} uid=0 gid=0 "
                    f"device=netbsd,{major},{minor} time={t}")

    # the root and the usual directories; /dev and /tmp come from the spec only
    for path, mode in (("dev", 0o755), ("tmp", 0o1777)):
        t = next(clock)
        want[path] = Want("dir", mode, 0, 0, t)
        spec.append(f"./{path} type=dir mode={mode:04o} uid=0 gid=0 time={t}")
    for name, kind, major, minor, mode in DEVICES:
        node(f"dev/{name}", kind, major, minor, mode)
    t = next(clock)
    want["dev/fifo"] = Want("fifo", 0o644, 0, 0, t)
    spec.append(f"./dev/fifo type=fifo mode=0644 uid=0 gid=0 time={t}")
    symlink("bin/sh", "/rescue/sh")
    symlink("sbin/init", "/rescue/init")
    for tool in ("mount_ffs", "mount_ext2fs", "fsck_ffs", "fsck_ext2fs"):
        symlink(f"sbin/{tool}", f"/rescue/{tool}")
    for path, content in sorted(extra.items()):
        put(path, content)

    # files around the fragment, block and direct-pointer boundaries
    for size in (0, 1, 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 8193,
                 12 * 4096, 12 * 4096 + 1, 12 * 8192 + 1, 100_000):
        put(f"data/size-{size}", _content(rng, size))
    # dense, past the double indirect threshold for UFS1/UFS2 4 KiB and ext2 1-4 KiB blocks
    put("data/large", _content(rng, 5 * 1024 * 1024 + 123))
    # sparse: pieces in the direct, indirect and double indirect ranges of UFS1 and ext2
    # (any block size up to 4 KiB) and UFS2 (up to 8 KiB); NetBSD's tar reads holes whole
    pieces = [(0, b"head" * 100), (50_000, b"x" * 3000), (3 << 20, b"three" * 50),
              (threshold(8192, 8) + 4096, b"ufs2-8k-double" * 10)]
    put("data/sparse", b"", holes=pieces, size=threshold(8192, 8) + (1 << 20) + 4321)
    put("data/hole-only", b"", holes=[], size=3 << 20)
    put("data/hole-tail", b"", holes=[(0, b"tail" * 10)], size=1 << 20)
    # ownership and special modes
    put("perms/setuid", b"#!/bin/sh\n", 0o4755)
    put("perms/setgid", b"#!/bin/sh\n", 0o2755, gid=5)
    put("perms/none", b"secret\n", 0o000)
    put("perms/all", b"open\n", 0o777)
    put("perms/user", b"user\n", 0o640, uid=1000, gid=100)
    put("perms/nobody", b"nobody\n", 0o644, uid=32767, gid=39)
    if wide_ids:
        put("perms/wide-ids", b"ids above 16 bits\n", 0o600, uid=70000, gid=70001)
    mkdir("perms/sticky", 0o1777)
    mkdir("perms/owned", 0o750, uid=1000, gid=100)
    # hard links: a group across directories, and a second group of empty files
    put("data/hl-a", _content(rng, 3000))
    hardlink("etc/hl-b", "data/hl-a")
    hardlink("perms/hl-c", "data/hl-a")
    put("data/hl-empty-1", b"")
    hardlink("data/hl-empty-2", "data/hl-empty-1")
    # symlinks either side of the in-inode limits (UFS1 and ext2: < 60, UFS2: < 120)
    # (no length of 511 or 1023: NetBSD 7's tar then writes a GNU long-link record with one
    # block too many, which other tar readers take for the end of the archive)
    for n in (1, 58, 59, 60, 61, 119, 120, 121, 255, 1000):
        target = ("sub/" * 300)[:n - 1] + "z"
        symlink(f"links/len-{n}", target)
    symlink("links/to-dir", "../data")
    symlink("links/dangling", "/nowhere/at/all")
    # 255-byte names: a file, a directory holding one, a symlink
    long = "n" * 250
    put(f"names/{long}-file", b"long name\n")
    put(f"names/{long}-dir0/{'m' * 255}", b"inside a long-named directory\n")
    symlink(f"names/{long}-link", f"{long}-file")
    put("names/with space and ütf-8 ✓", b"odd characters\n")
    # a directory spanning many blocks: names of many lengths, a few of each kind
    for i in range(700):
        name = f"{i:04d}-" + "abcdefghij" * (i % 25)
        if i % 50 == 7:
            mkdir(f"bigdir/{name}")
        elif i % 50 == 9:
            symlink(f"bigdir/{name}", f"../bigdir/{i - 1:04d}")
        else:
            put(f"bigdir/{name}", f"{i}\n".encode() * (i % 4))
    # a deep directory
    deep = "/".join(f"d{i:02d}" for i in range(40))
    put(f"deep/{deep}/leaf", b"at the bottom\n")
    mkdir("empty")

    # directory times last: adding entries above changed them on the host
    for path in sorted(dirs, key=lambda p: -p.count("/")):
        t = want[path].mtime
        os.utime(src / path, (t, t))
    t = next(clock)
    want[""] = Want("dir", 0o755, 0, 0, t)
    spec.insert(0, f". type=dir mode=0755 uid=0 gid=0 time={t}")
    spec_path = root / "tree.spec"
    spec_path.write_text("\n".join(spec) + "\n")
    return NbTree(src, spec_path, want, data)


_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
          tarfile.FIFOTYPE: "fifo", tarfile.LNKTYPE: "file", tarfile.CONTTYPE: "file"}


def from_tar(path: Path, digests: bool = True) -> dict[str, Want]:
    """Every entry of the tar at *path* as a :class:`Want` (hard links grouped)."""
    out: dict[str, Want] = {}
    links: dict[str, str] = {}  # a hard link's name -> the name it links to
    with tarfile.open(path) as tf:
        for m in tf:
            name = norm(m.name)
            kind = _KINDS.get(m.type)
            assert kind is not None, f"{m.name}: unexpected tar type {m.type!r}"
            if m.islnk():
                links[name] = norm(m.linkname)
                continue
            size, sha = 0, ""
            if kind == "file":
                size = m.size
                if digests:
                    f = tf.extractfile(m)
                    assert f is not None
                    h = hashlib.sha256()
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                    sha = h.hexdigest()
            out[name] = Want(kind, m.mode & 0o7777, m.uid, m.gid, int(m.mtime), size, sha,
                             m.linkname if kind == "symlink" else "",
                             (m.devmajor, m.devminor) if kind in ("char", "block") else None)
    groups: dict[str, list[str]] = {}
    for name, first in links.items():
        assert first in out, f"hard link {name} to {first}, which the archive lacks"
        groups.setdefault(first, [first]).append(name)
    for members in groups.values():
        first = out[members[0]]
        for name in members:  # one inode: the first name's attributes
            out[name] = replace(first, link=min(members))
    return out


def compare(want: dict[str, Want], got: dict[str, Want],
            newer_ok: frozenset[str] = frozenset(), any_mtime: frozenset[str] = frozenset(),
            fields: tuple[str, ...] = ("kind", "mode", "uid", "gid", "mtime", "size",
                                       "digest", "target", "rdev", "link"),
            ) -> list[str]:
    """Every difference between the expected and the seen entries, one line each.
    Paths in *newer_ok* may show a later mtime (a device node the guest wrote through),
    paths in *any_mtime* any mtime (written by the guest at a time nobody knows)."""
    problems = []
    for path in sorted(want.keys() - got.keys()):
        problems.append(f"missing: /{path}")
    for path in sorted(got.keys() - want.keys()):
        problems.append(f"unexpected: /{path} ({got[path].kind})")
    for path in sorted(want.keys() & got.keys()):
        w, g = want[path], got[path]
        for name in fields:
            a, b = getattr(w, name), getattr(g, name)
            if name == "mtime" and (path in any_mtime or (path in newer_ok and b >= a)):
                continue
            if name == "mode":
                a, b = oct(a), oct(b)
            if a != b:
                problems.append(f"/{path}: {name} {a!r} expected, {b!r} seen")
    return problems
