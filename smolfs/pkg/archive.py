"""A binary package file: a compressed tar whose first members are its metadata
(``+CONTENTS`` first), the installed files after them in packing-list order."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from smolfs.errors import InputError
from smolfs.pkg import plist as _plist
from smolfs.pkg import summary
from smolfs.pkg.summary import Package

#: The metadata a package may carry, with the mode pkg_add gives each in the database.
META_MODES = {
    "+CONTENTS": 0o644, "+COMMENT": 0o444, "+DESC": 0o444, "+INSTALL": 0o555,
    "+DEINSTALL": 0o555, "+DISPLAY": 0o444, "+MTREE_DIRS": 0o444, "+BUILD_VERSION": 0o444,
    "+BUILD_INFO": 0o444, "+SIZE_PKG": 0o444, "+SIZE_ALL": 0o444, "+PRESERVE": 0o444,
    "+VIEWS": 0o444, "+REQUIRED_BY": 0o644, "+INSTALLED_INFO": 0o644,
}
REQUIRED_META = ("+CONTENTS", "+COMMENT", "+DESC")


@dataclass
class Meta:
    files: dict[str, bytes] = field(default_factory=dict)

    def text(self, name: str) -> str:
        return self.files.get(name, b"").decode("utf-8", "replace")

    def plist(self, pkg: str) -> _plist.Plist:
        return _plist.parse(self.text("+CONTENTS"), pkg)

    def build_info(self) -> dict[str, list[str]]:
        return summary.parse_build_info(self.text("+BUILD_INFO"))

    def as_summary(self, path: Path) -> Package:
        """The package described as ``pkg_summary`` would (for directories without one)."""
        pl = self.plist(path.name)
        name = pl.name or path.name.removesuffix(".tgz")
        bi = self.build_info()
        v: dict[str, list[str]] = {"PKGNAME": [name], "FILE_NAME": [path.name],
                                   "FILE_SIZE": [str(path.stat().st_size)],
                                   "COMMENT": [self.text("+COMMENT").strip()],
                                   "DESCRIPTION": self.text("+DESC").splitlines() or [""]}
        if pl.pkgdeps:
            v["DEPENDS"] = pl.pkgdeps
        if pl.conflicts:
            v["CONFLICTS"] = pl.conflicts
        for key in ("MACHINE_ARCH", "OPSYS", "OS_VERSION", "REQUIRES", "PROVIDES",
                    "PKGPATH", "LICENSE", "HOMEPAGE", "CATEGORIES"):
            if key in bi:
                v[key] = bi[key]
        if self.files.get("+SIZE_PKG"):
            v["SIZE_PKG"] = [self.text("+SIZE_PKG").strip()]
        return Package(v)


def open_tar(f: IO[bytes], name: str) -> tarfile.TarFile:
    """A streaming reader of a package file (gzip, bzip2, xz or plain tar)."""
    try:
        return tarfile.open(fileobj=f, mode="r|*")  # type: ignore[call-overload]
    except tarfile.TarError as err:
        raise InputError(f"{name}: not a binary package (not a tar archive: {err})") from None


def read_members(tf: tarfile.TarFile, name: str) -> tuple[Meta, tarfile.TarInfo | None]:
    """Read the metadata members; return them and the first member that is not metadata."""
    meta = Meta()
    try:
        m = tf.next()
        if m is None or m.name.removeprefix("./") != "+CONTENTS":
            raise InputError(f"{name}: not a binary package (its first member is "
                             f"{m.name if m else 'missing'!r}, not +CONTENTS)")
        while m is not None and m.name.removeprefix("./").startswith("+"):
            if not m.isreg():
                raise InputError(f"{name}: metadata member {m.name!r} is not a file")
            src = tf.extractfile(m)
            assert src is not None
            meta.files[m.name.removeprefix("./")] = src.read()
            m = tf.next()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InputError(f"{name}: corrupt or truncated package ({err})") from None
    for req in REQUIRED_META:
        if req not in meta.files:
            raise InputError(f"{name}: not a binary package (no {req})")
    return meta, m


def read_meta(path: Path) -> Meta:
    """The metadata of a package file (reads only its first members)."""
    try:
        f = path.open("rb")
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None
    with f, open_tar(f, str(path)) as tf:
        return read_members(tf, str(path))[0]


def is_package(path: str) -> bool:
    """True when the file at *path* is a binary package: a tar (plain or gzip, bzip2, xz)
    whose first member is ``+CONTENTS``. Reads only its first bytes, and nothing from
    what is not a regular file (a pipe's bytes are the archive's)."""
    import bz2
    import lzma
    import os
    import stat
    import zlib

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    try:
        if head[:2] == b"\x1f\x8b":
            head = zlib.decompressobj(wbits=31).decompress(head, 1024)
        elif head[:3] == b"BZh":
            head = bz2.BZ2Decompressor().decompress(head, 1024)
        elif head[:6] == b"\xfd7zXZ\x00":
            head = lzma.LZMADecompressor().decompress(head, 1024)
    except (zlib.error, OSError, lzma.LZMAError, EOFError):
        return False
    return head[:12] in (b"+CONTENTS\0\0\0", b"./+CONTENTS\0") and head[257:262] == b"ustar"
