"""Packages streamed into an image tree, as ``pkg_add`` would install them.

Each package file is read once, front to back, ``+CONTENTS`` obeyed and checked; the
package database written as ``pkg_add`` writes it; what must run in the guest goes to
``/etc/rc.pkgfirstboot``. What is refused and why: ``smolfs/pkg/README.md``."""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolfs.errors import InputError
from smolfs.fs.filedata import BytesData
from smolfs.fs.tree import Kind, Node, Tree, split_path
from smolfs.pkg import archive, installscript, pattern
from smolfs.pkg.plist import with_prefix
from smolfs.pkg.summary import Package
from smolfs.pkg.users import Accounts

PKG_DBDIR = "/usr/pkg/pkgdb"
FIRSTBOOT = "/etc/rc.pkgfirstboot"
FIRSTBOOT_DONE = "/var/db/pkgfirstboot.done"


class PackageError(InputError):
    """A package file is malformed, unsafe or does not match what it declares."""


@dataclass
class Installed:
    name: str
    prefix: str
    meta: archive.Meta
    files: list[str] = field(default_factory=list)  # absolute paths
    size_pkg: int = 0
    execs: list[str] = field(default_factory=list)
    automatic: bool = False


@dataclass
class _Member:
    """A member of a package file as read: its header and, for a file, where its data went
    in the spool and the MD5 of that data."""

    info: tarfile.TarInfo
    offset: int = 0
    md5: str = ""


class SpoolRegions:
    """Hands out regions of a :class:`~smolfs.sets.spool.Spool` to several readers at once:
    each reserves the size of a file, then writes it there with ``pwrite``."""

    def __init__(self, spool: Any) -> None:
        import threading

        self.spool = spool
        self._lock = threading.Lock()

    def write(self, pieces: Any, size: int) -> tuple[int, str]:
        """Copy *size* bytes of *pieces* (memoryviews) into a new region; its offset and
        the MD5 of the bytes."""
        with self._lock:
            start = self.spool.size
            self.spool.size += size
        md5 = hashlib.md5(usedforsecurity=False)
        fd = self.spool.fileno()
        at = start
        try:
            for view in pieces:
                md5.update(view)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], at + done)
                at += len(view)
        except OSError as err:
            from smolfs.sets.spool import write_error

            raise write_error(err, "the spool file of package data", self.spool.dir) from err
        return start, md5.hexdigest()


def read_package(path: Path, label: str, regions: SpoolRegions
                 ) -> tuple[archive.Meta, list[_Member]]:
    """Read a package file once, front to back: its metadata, and every other member with
    the data of files copied into the spool (decompression runs in a thread of its own)."""
    from smolfs.sets.decompress import Corrupt, Stream, detect_format

    where = f"{label} ({path.name})"
    try:
        f = path.open("rb")
    except OSError as err:
        raise PackageError(f"cannot read {path}: {err.strerror}") from None
    with f:
        head = f.read(512)
        fmt = detect_format(head)
        if fmt is None:
            raise PackageError(f"{where}: not a binary package (not a tar archive)")
        stream = Stream(f, fmt, head, checksum=False)
        try:
            with tarfile.open(fileobj=stream, mode="r:") as tf:  # type: ignore[call-overload]
                meta, m = archive.read_members(tf, where)
                members: list[_Member] = []
                while m is not None:
                    rec = _Member(m)
                    if m.isreg():
                        stream.seek(m.offset_data)
                        rec.offset, rec.md5 = regions.write(stream.pieces(m.size), m.size)
                    members.append(rec)
                    m = tf.next()
                tf.members = []
            stream.finish()
        except (Corrupt, tarfile.TarError, EOFError, ValueError) as err:
            raise PackageError(f"{where}: corrupt or truncated package ({err})") from None
        finally:
            stream.close()
    return meta, members


def apply_mode(spec: str, mode: int, pkg: str) -> int:
    """``@mode`` (octal, or ``chmod`` symbolic like ``u+s,go-w``) applied to *mode*."""
    if spec.isdigit():
        return int(spec, 8) & 0o7777
    who_bits = {"u": 0o4700, "g": 0o2070, "o": 0o0007, "a": 0o6777}
    perm_bits = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}
    for clause in spec.split(","):
        i = 0
        who = 0
        while i < len(clause) and clause[i] in who_bits:
            who |= who_bits[clause[i]]
            i += 1
        if i >= len(clause) or clause[i] not in "+-=":
            raise PackageError(f"{pkg}: +CONTENTS: cannot read @mode {spec!r}")
        op = clause[i]
        bits = 0
        for c in clause[i + 1 :]:
            if c not in perm_bits:
                raise PackageError(f"{pkg}: +CONTENTS: cannot read @mode {spec!r}")
            bits |= perm_bits[c]
        mask = who or 0o7777
        bits &= mask
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mode = (mode & ~mask) | bits
    return mode & 0o7777


class Installer:
    """Installs packages into *tree*, file data into *spool*."""

    def __init__(self, tree: Tree, spool: Any, mtime: int) -> None:
        self.tree = tree
        self.spool = spool
        self.mtime = mtime
        self.accounts = Accounts(tree)
        self.owners: dict[str, str] = {}  # absolute path → package
        self.installed: list[Installed] = []

    def install(self, path: Path, pkg: Package | None = None) -> Installed:
        """Install one package file (*pkg*: its index entry, for messages)."""
        return self.install_all([(path, pkg)])[0]

    def install_all(self, items: Sequence[tuple[Path, Package | None]]) -> list[Installed]:
        """Install package files in order. They are read (decompressed, hashed, spooled)
        two at a time in threads; each goes into the tree, in order, once read."""
        from concurrent.futures import ThreadPoolExecutor

        regions = SpoolRegions(self.spool)
        labels = [pkg.name if pkg is not None else path.name for path, pkg in items]
        out: list[Installed] = []
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="pkg-read") as pool:
            futures = [pool.submit(read_package, path, label, regions)
                       for (path, _), label in zip(items, labels, strict=True)]
            try:
                for fut, label in zip(futures, labels, strict=True):
                    meta, members = fut.result()
                    out.append(self._install(meta, members, label))
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        return out

    def _install(self, meta: archive.Meta, members: list[_Member], label: str) -> Installed:
        pl = meta.plist(label)
        name = label = pl.name or label
        prefix = pl.cwd or "/usr/pkg"
        inst = Installed(name, prefix, meta)
        directives = installscript.parse(meta.text("+INSTALL"), label)
        installscript.apply(directives, self.tree, self.accounts, prefix, name, self.mtime,
                            "pre")
        md5s: dict[str, str] = {}
        it = iter(members)
        member = next(it, None)
        for entry in pl.files:
            if entry.ignored:
                continue
            full = self._target(label, prefix, entry.cwd, entry.name)
            if member is None:
                raise PackageError(f"{label}: +CONTENTS lists {entry.name}, which the "
                                   "package file lacks")
            m = member.info
            if m.name.removeprefix("./") != entry.name:
                raise PackageError(f"{label}: +CONTENTS lists {entry.name} where the package "
                                   f"file has {m.name} (out of order or not listed)")
            other = self.owners.get(full)
            if other is not None and other != name:
                raise PackageError(f"{full} is in two packages: {other} and {name}",
                                   hint=f"install only one of {other} and {name}")
            md5s[full] = self._add(member, full, entry, label, prefix, md5s)
            self.owners[full] = name
            inst.files.append(full)
            if m.isreg():
                inst.size_pkg += m.size
            member = next(it, None)
        if member is not None:
            raise PackageError(f"{label}: the package file has {member.info.name}, which "
                               "+CONTENTS does not list")
        for d in pl.pkgdirs:
            rel = d.removeprefix(prefix.rstrip("/") + "/") if d.startswith(prefix) else d
            self.tree.mkdirs(self._target(label, prefix, prefix, rel), mtime=self.mtime)
        inst.execs = pl.execs
        installscript.apply(directives, self.tree, self.accounts, prefix, name, self.mtime,
                            "post")
        self.installed.append(inst)
        return inst

    def _target(self, label: str, prefix: str, cwd: str, name: str) -> str:
        full = name if name.startswith("/") else f"{cwd.rstrip('/')}/{name}"
        parts = full.split("/")
        if ".." in parts or name.startswith("/") or not (
                full == prefix or full.startswith(prefix.rstrip("/") + "/")):
            raise PackageError(f"{label}: +CONTENTS names {name!r} (in {cwd}), outside the "
                               f"prefix {prefix}; refusing the package")
        split_path(full)
        return full

    def _add(self, member: _Member, full: str, entry: Any, label: str, prefix: str,
             md5s: dict[str, str]) -> str:
        m = member.info
        mode = m.mode & 0o7777
        if entry.mode:
            mode = apply_mode(entry.mode, mode, label)
        uid = self._id(entry.owner or m.uname, m.uid, self.accounts.uid, label, "user")
        gid = self._id(entry.group or m.gname, m.gid, self.accounts.gid, label, "group")
        mtime = int(m.mtime)
        got = ""
        if m.isreg():
            got = member.md5
            node = Node(Kind.FILE, mode=mode, uid=uid, gid=gid, mtime=mtime,
                        data=self.spool.data(member.offset, m.size))
            self.tree.add(full, node)
        elif m.issym():
            if entry.symlink is not None and entry.symlink != m.linkname:
                raise PackageError(f"{label}: {full} links to {m.linkname}, but +CONTENTS "
                                   f"records {entry.symlink}")
            self.tree.add(full, Node(Kind.SYMLINK, mode=mode, uid=uid, gid=gid, mtime=mtime,
                                     target=os.fsencode(m.linkname)))
            return ""
        elif m.islnk():
            target = self._target(label, prefix, entry.cwd, m.linkname.removeprefix("./"))
            if target not in md5s:
                raise PackageError(f"{label}: {full} is a hard link to {target}, which the "
                                   "package has not installed before it")
            self.tree.link(full, target)
            got = md5s[target]
        elif m.isdir():
            node = self.tree.mkdirs(full, mtime=mtime)
            node.mode, node.uid, node.gid = mode, uid, gid
            return ""
        else:
            raise PackageError(f"{label}: {m.name} has a type a package may not hold")
        if entry.md5 is not None and got != entry.md5:
            raise PackageError(f"{label}: {full} does not match +CONTENTS (MD5 {got}, "
                               f"recorded {entry.md5}); the package is damaged",
                               hint="fetch it again (delete it from the cache) or report "
                                    "the repository")
        return got

    @staticmethod
    def _id(name: str, number: int, lookup: Any, label: str, what: str) -> int:
        if name:
            found = lookup(name)
            if found is not None:
                return int(found)
        return number

    # -- after every package -------------------------------------------------------------
    def finish(self, requested: Sequence[str] = ()) -> None:
        """The package database, users and groups, and the first-boot script."""
        names = [i.name for i in self.installed]
        deps: dict[str, list[str]] = {}
        for inst in self.installed:
            wanted = inst.meta.plist(inst.name).pkgdeps
            for pat in wanted:
                hit = next((n for n in names if pattern.match(pat, n)), None)
                if hit is not None:
                    deps.setdefault(inst.name, []).append(hit)
        required_by: dict[str, list[str]] = {}
        for who, ds in deps.items():
            for d in ds:
                required_by.setdefault(d, []).append(who)
        sizes = {i.name: i.size_pkg for i in self.installed}

        def closure(n: str, seen: set[str]) -> set[str]:
            for d in deps.get(n, []):
                if d not in seen:
                    seen.add(d)
                    closure(d, seen)
            return seen

        top = set()
        for req in requested:
            hit = pattern.best(req, names)
            if hit:
                top.add(hit)
        for inst in self.installed:
            self._pkgdb(inst, required_by.get(inst.name, []),
                        sizes[inst.name] + sum(sizes[d] for d in closure(inst.name, set())),
                        automatic=bool(requested) and inst.name not in top)
        self.accounts.write(self.mtime)
        self._firstboot()

    def _pkgdb(self, inst: Installed, required_by: list[str], size_all: int,
               automatic: bool) -> None:
        d = f"{PKG_DBDIR}/{inst.name}"
        self.tree.mkdirs(d, mtime=self.mtime)
        files = dict(inst.meta.files)
        files["+CONTENTS"] = with_prefix(inst.meta.text("+CONTENTS"), inst.name,
                                         inst.prefix).encode()
        files.setdefault("+SIZE_PKG", f"{inst.size_pkg}\n".encode())
        files.setdefault("+SIZE_ALL", f"{size_all}\n".encode())
        if required_by:
            files["+REQUIRED_BY"] = "".join(f"{r}\n" for r in sorted(required_by)).encode()
        else:
            files.pop("+REQUIRED_BY", None)
        if automatic:
            files["+INSTALLED_INFO"] = b"automatic=yes\n"
        for name, data in sorted(files.items()):
            mode = archive.META_MODES.get(name, 0o444)
            self.tree.add(f"{d}/{name}", Node(Kind.FILE, mode=mode, mtime=self.mtime,
                                               data=BytesData(data)))

    def _firstboot(self) -> None:
        steps = []
        for inst in self.installed:
            if "+INSTALL" in inst.meta.files:
                steps.append(f"( cd {PKG_DBDIR}/{inst.name} && PKG_PREFIX={inst.prefix} "
                             f"PKG_METADATA_DIR={PKG_DBDIR}/{inst.name} "
                             f"./+INSTALL {inst.name} POST-INSTALL ) || "
                             f"echo \"pkgfirstboot: {inst.name}: +INSTALL failed\"")
            steps.extend(f"( {cmd} ) || echo \"pkgfirstboot: {inst.name}: @exec failed\""
                         for cmd in inst.execs)
        if not steps:
            return
        script = (
            "#!/bin/sh\n"
            "# Written by smolfs build: what the installed packages' +INSTALL scripts and\n"
            "# @exec lines do beyond what the build applied. Runs once; a root that\n"
            f"# cannot be written runs it at every boot. Done: {FIRSTBOOT_DONE}.\n"
            f"[ -f {FIRSTBOOT_DONE} ] && exit 0\n"
            + "".join(f"{s}\n" for s in steps)
            + f"mkdir -p {os.path.dirname(FIRSTBOOT_DONE)} 2>/dev/null; "
              f": > {FIRSTBOOT_DONE} 2>/dev/null || true\n"
        )
        self.tree.add(FIRSTBOOT, Node(Kind.FILE, mode=0o755, mtime=self.mtime,
                                      data=BytesData(script.encode())))
