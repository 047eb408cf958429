"""Synthetic NetBSD-shaped set archives for tests (no NetBSD download needed).

:func:`entries`, :func:`make_set` (xz, gz, zst, bz2 or none) and :func:`write_tree` for
the kinds of :data:`KINDS`; the same kind and seed give the same bytes. The kinds and
what each holds: ``tests/helpers/README.md``."""

from __future__ import annotations

import gzip
import io
import lzma
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

KINDS = ("rescue", "base", "etc", "dev")
COMPRESSIONS = ("xz", "gz", "zst", "bz2", "none")
SET_MTIME = 1_700_000_000

def _words(text: str) -> list[str]:
    return text.split()


#: Names under ./rescue, all hard links to one crunched binary.
RESCUE_PROGRAMS = tuple(
    _words("""
    [ atactl badsect bioctl brconfig bunzip2 bzcat bzip2 cat ccdconfig cgdconfig chflags chgrp
    chio chmod chown chroot cksum cp cpio csh date dd df dhcpcd disklabel dkctl dmesg
    domainname dump dump_lfs echo ed egrep expr fdisk fgrep fsck fsck_ext2fs fsck_ffs
    fsck_lfs fsck_msdos fsdb ftp gpt grep gunzip gzcat gzip halt head hostname ifconfig init
    kill ldconfig less lfs_cleanerd link ln ls lvm mbrlabel mdconfig mkdir mknod
    mount mount_cd9660 mount_ext2fs mount_fdesc mount_ffs mount_kernfs mount_lfs
    mount_msdos mount_nfs mount_null mount_overlay mount_procfs mount_tmpfs mount_umap
    mount_union mt mv newfs newfs_ext2fs newfs_lfs newfs_msdos pax pdisk pgrep pickup ping
    ping6 pkill poweroff ps pwd raidctl rcmd rcp rdump rdump_lfs reboot restore rm rmdir
    rndctl route routed rrestore rsh savecore scsictl setkey sh shutdown slattach sleep
    swapctl swapoff swapon sync sysctl tar test tetris umount unlink unlzma unxz
    vi vnconfig wdogctl wiconfig xz xzcat zcat zfs zpool
    """)
) + tuple(f"tool{i:02d}" for i in range(17))


@dataclass(frozen=True)
class Entry:
    """One member of a set. ``type``: file, dir, symlink, hardlink, char, block, fifo.
    ``target`` is the symlink target or the hard link's first name (``./`` path)."""

    path: str
    type: str
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    mtime: int = SET_MTIME


def _blob(rng: random.Random, size: int) -> bytes:
    """Bytes that look like a program: compressible, but not trivially."""
    words = [rng.randbytes(rng.randint(4, 64)) for _ in range(64)]
    out = bytearray(b"\x7fELF\x02\x01\x01")
    while len(out) < size:
        out += words[rng.randrange(64)]
        if rng.random() < 0.2:
            out += rng.randbytes(16)
    return bytes(out[:size])


def _text(rng: random.Random, lines: int, tag: str) -> bytes:
    return "".join(f"# {tag} {rng.getrandbits(48):012x}\n" for _ in range(lines)).encode()


def _dirs(paths: list[str], mode: int = 0o755) -> list[Entry]:
    return [Entry(p, "dir", mode) for p in paths]


def _rescue(rng: random.Random) -> list[Entry]:
    out = _dirs(["./rescue"])
    first = f"./rescue/{RESCUE_PROGRAMS[0]}"
    out.append(Entry(first, "file", 0o555, data=_blob(rng, 1 << 20)))
    out += [Entry(f"./rescue/{n}", "hardlink", 0o555, target=first) for n in RESCUE_PROGRAMS[1:]]
    return out


def _base(rng: random.Random) -> list[Entry]:
    out = _dirs(["./bin", "./sbin", "./usr", "./usr/bin", "./usr/sbin", "./usr/lib",
                 "./usr/libexec", "./usr/share", "./usr/share/misc",
                 "./libexec", "./lib"])
    for d, names in (("./bin", _words("sh ls cat cp mv rm ln mkdir echo test date ps kill")),
                     ("./sbin", _words("init mount mount_ffs mount_ext2fs fsck ifconfig reboot")),
                     ("./usr/bin", _words("awk grep sed vi less find xargs env id uname")),
                     ("./usr/sbin", _words("chown pwd_mkdb sysctl"))):
        out += [Entry(f"{d}/{n}", "file", 0o555, data=_blob(rng, rng.randint(2_000, 60_000)))
                for n in names]
    out += [Entry("./bin/[", "hardlink", 0o555, target="./bin/test"),
            Entry("./usr/bin/su", "file", 0o4555, data=_blob(rng, 20_000)),
            Entry("./usr/bin/passwd", "file", 0o4555, data=_blob(rng, 30_000)),
            Entry("./sbin/ping", "file", 0o4555, data=_blob(rng, 40_000)),
            Entry("./sbin/shutdown", "file", 0o4554, gid=5, data=_blob(rng, 25_000)),
            # the bozohttpd binary, named httpd, as in NetBSD's base set
            Entry("./usr/libexec/httpd", "file", 0o555, data=_blob(rng, 150_000)),
            Entry("./libexec/ld.elf_so", "file", 0o555, data=_blob(rng, 90_000)),
            Entry("./usr/libexec/ld.elf_so", "symlink", 0o755, target="/libexec/ld.elf_so"),
            Entry("./lib/libc.so.12.220", "file", 0o444, data=_blob(rng, 1_500_000)),
            Entry("./lib/libc.so.12", "symlink", 0o755, target="libc.so.12.220"),
            Entry("./usr/lib/libc.so", "symlink", 0o755, target="../../lib/libc.so.12"),
            Entry("./usr/lib/libutil.so.7.24", "file", 0o444, data=_blob(rng, 80_000)),
            Entry("./usr/lib/libutil.so.7", "symlink", 0o755, target="libutil.so.7.24"),
            Entry("./usr/share/misc/terminfo", "file", 0o444, data=_text(rng, 2_000, "ti")),
            Entry("./usr/share/misc/empty", "file", 0o444)]
    return out


def _etc(rng: random.Random) -> list[Entry]:
    out = _dirs(["./etc", "./etc/rc.d", "./dev", "./var", "./var/run", "./var/log", "./root"])
    out.append(Entry("./tmp", "dir", 0o1777))
    out += [Entry("./etc/rc", "file", 0o644, data=b"#!/bin/sh\n" + _text(rng, 40, "rc")),
            Entry("./etc/rc.conf", "file", 0o644, data=b"rc_configured=YES\n"),
            Entry("./etc/master.passwd", "file", 0o600,
                  data=b"root:*:0:0::0:0:Charlie &:/root:/bin/sh\n"),
            Entry("./etc/passwd", "file", 0o644, data=b"root:*:0:0:Charlie &:/root:/bin/sh\n"),
            Entry("./etc/group", "file", 0o644, data=b"wheel:*:0:root\noperator:*:5:root\n"),
            Entry("./etc/fstab", "file", 0o644, data=b"/dev/ld0a / ffs ro 1 1\n"),
            Entry("./dev/MAKEDEV", "file", 0o555, data=b"#!/bin/sh\n" + _text(rng, 300, "md")),
            Entry("./root/.profile", "file", 0o644, data=b"PATH=/bin:/sbin:/rescue\n")]
    out += [Entry(f"./etc/rc.d/{n}", "file", 0o555, data=b"#!/bin/sh\n" + _text(rng, 20, n))
            for n in _words("DAEMON LOGIN NETWORKING root mountcritlocal network sshd syslogd")]
    return out


def _dev(rng: random.Random) -> list[Entry]:
    del rng
    chars = {"console": (0, 0, 0o600), "tty": (1, 0, 0o666), "mem": (2, 0, 0o640),
             "kmem": (2, 1, 0o640), "null": (2, 2, 0o666), "zero": (2, 12, 0o666),
             "tty00": (8, 0, 0o600), "random": (46, 0, 0o444), "urandom": (46, 1, 0o644),
             "rld0a": (69, 0, 0o640), "rld0d": (69, 3, 0o640)}
    out = _dirs(["./dev"])
    for name, (major, minor, mode) in sorted(chars.items()):
        gid = 2 if name in ("mem", "kmem") else 5 if name.startswith("rld") else 0
        out.append(Entry(f"./dev/{name}", "char", mode, gid=gid, rdev=(major, minor)))
    out += [Entry("./dev/ld0a", "block", 0o640, gid=5, rdev=(19, 0)),
            Entry("./dev/ld0d", "block", 0o640, gid=5, rdev=(19, 3)),
            Entry("./dev/initctl", "fifo", 0o600),
            Entry("./dev/stdin", "symlink", 0o755, target="fd/0")]
    return out


_MAKERS = {"rescue": _rescue, "base": _base, "etc": _etc, "dev": _dev}


def entries(kind: str = "rescue", seed: int = 0) -> list[Entry]:
    """The members of a synthetic set of *kind*, in archive order (parents first)."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown set kind {kind!r} (choose from {', '.join(KINDS)})")
    return _MAKERS[kind](random.Random(f"{kind}-{seed}"))


def tar_bytes(items: list[Entry]) -> bytes:
    """*items* as an uncompressed ustar archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for e in items:
            info = tarfile.TarInfo(e.path)
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, e.mtime
            info.uname, info.gname = "root", "wheel"
            payload = None
            if e.type == "file":
                info.size = len(e.data)
                payload = io.BytesIO(e.data)
            elif e.type == "dir":
                info.type = tarfile.DIRTYPE
            elif e.type == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
            elif e.type == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.target
            elif e.type in ("char", "block"):
                info.type = tarfile.CHRTYPE if e.type == "char" else tarfile.BLKTYPE
                info.devmajor, info.devminor = e.rdev
            elif e.type == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                raise ValueError(e.type)
            tf.addfile(info, payload)
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    """*data* compressed as a NetBSD set would be (fast presets, deterministic)."""
    if compression == "none":
        return data
    if compression == "gz":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if compression == "xz":
        return lzma.compress(data, preset=0)
    if compression == "bz2":
        import bz2

        return bz2.compress(data, 1)
    if compression == "zst":
        import zstandard

        return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
    raise ValueError(f"unknown compression {compression!r} (choose from {COMPRESSIONS})")


SUFFIX = {"xz": ".tar.xz", "gz": ".tgz", "zst": ".tar.zst", "bz2": ".tar.bz2", "none": ".tar"}


def make_set(path: str | Path, kind: str = "rescue", compression: str = "xz",
             seed: int = 0) -> Path:
    """Write a synthetic *kind* set to *path* (a file, or a directory to put
    ``<kind>.<suffix>`` in) and return the file's path."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{kind}{SUFFIX[compression]}"
    path.write_bytes(compress(tar_bytes(entries(kind, seed)), compression))
    return path


def write_tree(root: str | Path, kind: str = "rescue", seed: int = 0) -> Path:
    """Write the files, directories, symlinks and hard links of a *kind* set under *root*."""
    import os

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dir_modes: list[tuple[Path, int]] = []
    for e in entries(kind, seed):
        dest = root / e.path
        if e.type == "dir":
            dest.mkdir(parents=True, exist_ok=True)
            dir_modes.append((dest, e.mode))
        elif e.type == "file":
            dest.write_bytes(e.data)
            dest.chmod(e.mode)
            os.utime(dest, (e.mtime, e.mtime))
        elif e.type == "symlink":
            dest.symlink_to(e.target)
        elif e.type == "hardlink":
            os.link(root / e.target, dest)
    for dest, mode in reversed(dir_modes):
        dest.chmod(mode)
        os.utime(dest, (SET_MTIME, SET_MTIME))
    return root
