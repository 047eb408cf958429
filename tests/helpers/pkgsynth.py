"""Synthetic pkgsrc binary packages and repositories, in the real format (the package
layout: ``tests/helpers/README.md``)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MTIME = 1_700_000_000


@dataclass
class SynthPkg:
    name: str  # "foo-1.0"
    files: dict[str, bytes] = field(default_factory=dict)  # relative to the prefix
    symlinks: dict[str, str] = field(default_factory=dict)
    hardlinks: dict[str, str] = field(default_factory=dict)  # name → earlier file
    modes: dict[str, int] = field(default_factory=dict)  # archive mode of a file
    plist_mode: dict[str, str] = field(default_factory=dict)  # @mode before a file
    plist_owner: dict[str, tuple[str, str]] = field(default_factory=dict)
    depends: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    pkgdirs: list[str] = field(default_factory=list)
    machine_arch: str = "x86_64"
    opsys: str = "NetBSD"
    os_version: str = "10.0"
    install: str | None = None
    prefix: str = "/usr/pkg"
    comment: str = ""
    bad_md5: set[str] = field(default_factory=set)  # files recorded with a wrong MD5
    plist_extra: list[str] = field(default_factory=list)  # raw +CONTENTS file lines
    plist_before: dict[str, list[str]] = field(default_factory=dict)  # raw lines before a file
    plist_head: list[str] = field(default_factory=list)  # raw lines right after @cwd
    unlisted: dict[str, bytes] = field(default_factory=dict)  # in the tar only

    @property
    def base(self) -> str:
        return self.name.rpartition("-")[0]

    def order(self) -> list[str]:
        names = list(self.files) + list(self.symlinks) + list(self.hardlinks)
        return names

    def contents(self) -> str:
        lines = [f"@name {self.name}", "@comment PKG_FORMAT_REVISION:1.1"]
        lines += [f"@pkgdep {d}" for d in self.depends]
        lines += [f"@pkgcfl {c}" for c in self.conflicts]
        lines.append(f"@cwd {self.prefix}")
        lines += self.plist_head
        for n in self.order():
            lines += self.plist_before.get(n, [])
            if n in self.plist_mode:
                lines.append(f"@mode {self.plist_mode[n]}")
            if n in self.plist_owner:
                lines += [f"@owner {self.plist_owner[n][0]}", f"@group {self.plist_owner[n][1]}"]
            lines.append(n)
            if n in self.files or n in self.hardlinks:
                data = self.files[n] if n in self.files else self.files[self.hardlinks[n]]
                digest = hashlib.md5(data).hexdigest()
                if n in self.bad_md5:
                    digest = "0" * 32
                lines.append(f"@comment MD5:{digest}")
            else:
                lines.append(f"@comment Symlink:{self.symlinks[n]}")
            if n in self.plist_mode:
                lines.append("@mode")
            if n in self.plist_owner:
                lines += ["@owner", "@group"]
        lines += self.plist_extra
        lines += [f"@pkgdir {d}" for d in self.pkgdirs]
        return "\n".join(lines) + "\n"

    def build_info(self) -> str:
        lines = [f"MACHINE_ARCH={self.machine_arch}", f"OPSYS={self.opsys}",
                 f"OS_VERSION={self.os_version}", "PKGTOOLS_VERSION=20211115",
                 f"PKGPATH=synth/{self.base}"]
        lines += [f"REQUIRES={r}" for r in self.requires]
        lines += [f"PROVIDES={p}" for p in self.provides]
        return "\n".join(lines) + "\n"

    def size_pkg(self) -> int:
        return sum(len(d) for d in self.files.values())

    def tgz(self) -> bytes:
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            meta = [("+CONTENTS", self.contents()),
                    ("+COMMENT", (self.comment or f"the {self.base} package") + "\n"),
                    ("+DESC", f"{self.base}: a synthetic package for tests.\n"),
                    ("+BUILD_INFO", self.build_info()),
                    ("+SIZE_PKG", f"{self.size_pkg()}\n")]
            if self.install is not None:
                meta.append(("+INSTALL", self.install))
            for name, text in meta:
                _add(tar, name, text.encode(), 0o644)
            for n in self.order():
                if n in self.files:
                    _add(tar, n, self.files[n], self.modes.get(n, 0o644))
                elif n in self.symlinks:
                    info = _info(n, 0o755)
                    info.type, info.linkname = tarfile.SYMTYPE, self.symlinks[n]
                    tar.addfile(info)
                else:
                    info = _info(n, self.modes.get(self.hardlinks[n], 0o644))
                    info.type, info.linkname = tarfile.LNKTYPE, self.hardlinks[n]
                    tar.addfile(info)
            for n, data in self.unlisted.items():
                _add(tar, n, data, 0o644)
        return buf.getvalue()


def _info(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, "root", "wheel"
    info.mtime = MTIME
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = _info(name, mode)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def summary_entry(p: SynthPkg, blob: bytes, cksum: bool = True) -> str:
    v = [f"PKGNAME={p.name}", f"COMMENT={p.comment or 'the ' + p.base + ' package'}",
         f"MACHINE_ARCH={p.machine_arch}", f"OPSYS={p.opsys}", f"OS_VERSION={p.os_version}",
         f"PKGPATH=synth/{p.base}", "CATEGORIES=synth", "BUILD_DATE=2024-01-01 00:00:00 +0000",
         f"FILE_NAME={p.name}.tgz", f"FILE_SIZE={len(blob)}", f"SIZE_PKG={p.size_pkg()}",
         f"DESCRIPTION={p.base}: a synthetic package for tests.",
         "DESCRIPTION=Second line."]
    v += [f"DEPENDS={d}" for d in p.depends]
    v += [f"CONFLICTS={c}" for c in p.conflicts]
    v += [f"REQUIRES={r}" for r in p.requires]
    v += [f"PROVIDES={r}" for r in p.provides]
    if cksum:
        v.append(f"FILE_CKSUM=sha256 {hashlib.sha256(blob).hexdigest()}")
    return "\n".join(v) + "\n\n"


def write_repo(all_dir: Path, pkgs: list[SynthPkg], compressions: tuple[str, ...] = ("gz",),
               cksum: bool = True, sha512: bool = False, summary: bool = True) -> Path:
    """Write the packages and their index into *all_dir*; return it."""
    all_dir.mkdir(parents=True, exist_ok=True)
    text = ""
    for p in pkgs:
        blob = p.tgz()
        (all_dir / f"{p.name}.tgz").write_bytes(blob)
        text += summary_entry(p, blob, cksum)
    raw = text.encode()
    if summary:
        for c in compressions:
            data = {"gz": lambda b: gzip.compress(b, mtime=0), "bz2": bz2.compress,
                    "xz": lzma.compress}[c](raw)
            (all_dir / f"pkg_summary.{c}").write_bytes(data)
    if sha512:
        lines = "".join(
            f"SHA512 ({f.name}) = {hashlib.sha512(f.read_bytes()).hexdigest()}\n"
            for f in sorted(all_dir.glob("*.tgz")))
        (all_dir / "SHA512.bz2").write_bytes(bz2.compress(lines.encode()))
    return all_dir


def repo_path(root: Path, arch: str = "x86_64", version: str = "10.0") -> Path:
    """The official layout below a mirror root."""
    return root / "pub" / "pkgsrc" / "packages" / "NetBSD" / arch / version / "All"
