"""Fill a :class:`~smolfs.tree.Tree` from a host directory or a tar archive.

Nothing here changes the host: a directory is read as it is (modes, times, owners,
hard links, device numbers, holes), an archive is streamed once and its file
contents are appended to a :class:`Spool` — one temporary file — so that the
filesystem writers copy them into the image with ``copy_file_range`` and nothing
large is ever held in memory.

Archives: ``.tar``, ``.tgz``/``.tar.gz``, ``.tar.xz``/``.txz``, ``.tar.zst``/``.tzst``
and ``.tar.bz2``, recognised by their first bytes (the name does not matter).
Owners come from the numeric ``uid``/``gid`` of each header: NetBSD sets carry the
right numbers, and the names (``uname``/``gname``) are ignored so that the host's
user database never leaks into an image.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from smolfs.errors import InputError
from smolfs.tree import FileData, Kind, Node, Tree, check_name

#: Formats :func:`add_archive` reads, for messages.
SUPPORTED = ".tar, .tgz/.tar.gz, .tar.xz/.txz, .tar.zst/.tzst, .tar.bz2"

_CHUNK = 1 << 20  # copy and decompression buffer


# ---------------------------------------------------------------------------
# Host directories


class HostFileData(FileData):
    """A whole host file, opened only while it is being read.

    A tree may hold thousands of files: keeping each one open would run out of
    file descriptors, so every operation opens and closes the file. A file whose
    allocated blocks cover its size has no holes: its extents are known without
    opening it. Extents are computed once.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int = 0, size: int | None = None,
                 sparse: bool = True) -> None:
        super().__init__(path, offset, size, sparse)
        self._extents: list[tuple[int, int]] | None = None

    def extents(self) -> list[tuple[int, int]]:
        if self._extents is None:
            try:
                self._extents = super().extents()
            finally:
                self.close()
        return list(self._extents)

    def copy_to(self, fd: int, src_offset: int, dst_offset: int, length: int) -> None:
        try:
            super().copy_to(fd, src_offset, dst_offset, length)
        finally:
            self.close()

    def read(self, offset: int, length: int) -> bytes:
        try:
            return super().read(offset, length)
        finally:
            self.close()


def _join(prefix: bytes, name: bytes) -> bytes:
    return prefix + b"/" + name if prefix else name


def add_directory(
    tree: Tree,
    path: str | os.PathLike[str],
    prefix: str | bytes = "",
    owner: tuple[int, int] | None = None,
) -> int:
    """Add the contents of host directory *path* under *prefix* in *tree*.

    Like NetBSD's ``makefs``: modes, owners (the host's numeric uid/gid, or *owner*
    for every entry when given), modification times, hard links (same device and
    inode), symlinks (never followed), fifos, sockets and device nodes (the host's
    major/minor numbers) are taken as they are; holes in files stay holes. The
    directory itself gives its attributes to *prefix* (the root by default).
    Access and change times are set equal to the modification time, so copies of
    the same tree give the same image. Later sources replace earlier entries of
    the same name; directories merge. Returns the number of entries added.
    """
    top = os.fsencode(os.fspath(path))
    pre = os.fsencode(prefix) if isinstance(prefix, str) else prefix
    pre = b"/".join(p for p in pre.split(b"/") if p not in (b"", b"."))
    try:
        st = os.stat(top)
    except OSError as err:
        raise InputError(f"cannot read {os.fsdecode(top)}: {err.strerror}") from err
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{os.fsdecode(top)} is not a directory")
    root = tree.add(pre, _node_from_stat(st, b"", owner))
    links: dict[tuple[int, int], Node] = {}
    count = 0
    stack = [(top, root)]
    while stack:
        host_dir, parent = stack.pop()
        try:
            with os.scandir(host_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise InputError(f"cannot read directory {os.fsdecode(host_dir)}: {err.strerror}") \
                from err
        children = parent.children
        for entry in entries:
            name = entry.name
            check_name(name)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as err:
                raise InputError(f"cannot read {os.fsdecode(entry.path)}: {err.strerror}") \
                    from err
            count += 1
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                first = links.get(key)
                if first is not None:
                    _put(children, name, first)
                    first.nlink_extra += 1
                    continue
                node = links[key] = _node_from_stat(st, entry.path, owner)
            else:
                node = _node_from_stat(st, entry.path, owner)
            node = _put(children, name, node)
            if node.kind == Kind.DIR:
                stack.append((entry.path, node))
    return count


def _put(children: dict[bytes, Node], name: bytes, node: Node) -> Node:
    """``Tree.add`` for a known parent: directories merge, anything else is replaced."""
    old = children.get(name)
    if old is not None:
        if old.kind == Kind.DIR and node.kind == Kind.DIR:
            old.mode, old.uid, old.gid, old.mtime = node.mode, node.uid, node.gid, node.mtime
            old.atime, old.ctime, old.flags = node.atime, node.ctime, node.flags
            return old
        if old.kind != Kind.DIR and old.nlink_extra:
            old.nlink_extra -= 1
    children[name] = node
    return node


_KINDS = {int(k): k for k in Kind}


def _readable(st: os.stat_result, host: bytes) -> bool:
    if st.st_mode & 0o004 or (st.st_uid == _EUID and st.st_mode & 0o400) or _EUID == 0:
        return True
    return os.access(host, os.R_OK)


_EUID = os.geteuid() if hasattr(os, "geteuid") else -1


def _node_from_stat(st: os.stat_result, host: bytes, owner: tuple[int, int] | None) -> Node:
    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
    kind = _KINDS[stat.S_IFMT(st.st_mode)]
    node = Node(kind, stat.S_IMODE(st.st_mode), uid, gid, int(st.st_mtime),
                flags=getattr(st, "st_flags", 0))
    if kind == Kind.FILE:
        if not _readable(st, host):
            raise InputError(f"cannot read {os.fsdecode(host)}: permission denied")
        holes = st.st_blocks * 512 < st.st_size if hasattr(st, "st_blocks") else True
        node.data = HostFileData(os.fsdecode(host), 0, st.st_size, sparse=holes)
    elif kind == Kind.SYMLINK:
        try:
            node.target = os.readlink(host)
        except OSError as err:
            raise InputError(f"cannot read symlink {os.fsdecode(host)}: {err.strerror}") from err
    elif kind in (Kind.CHR, Kind.BLK):
        node.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return node


# ---------------------------------------------------------------------------
# The spool


class Spool:
    """A temporary file that holds the file contents streamed out of archives.

    Created in *dir* (the image's directory is a good choice: copies from it can
    then be reflinks or at least stay on one filesystem), else in ``$TMPDIR``.
    Deleted by :meth:`close` or at the end of a ``with`` block; the tree's
    :class:`SpoolData` references are valid until then.
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None) -> None:
        try:
            fd, self.path = tempfile.mkstemp(prefix=".smolfs-spool.", dir=dir)
        except OSError as err:
            where = os.fspath(dir) if dir is not None else tempfile.gettempdir()
            raise InputError(f"cannot create a spool file in {where}: {err.strerror}") from err
        self.fd: int | None = fd
        self.size = 0
        self._buf = bytearray(_CHUNK)

    def fileno(self) -> int:
        if self.fd is None:
            raise ValueError("spool is closed")
        return self.fd

    def append(self, src: BinaryIO, size: int) -> int:
        """Copy exactly *size* bytes from *src* to the end; return where they start."""
        fd = self.fileno()
        start = self.size
        view = memoryview(self._buf)
        left = size
        while left:
            n = src.readinto(view[: min(left, _CHUNK)])  # type: ignore[attr-defined]
            if not n:
                raise EOFError("unexpected end of data")
            done = 0
            while done < n:
                done += os.pwrite(fd, view[done:n], self.size + done)
            self.size += n
            left -= n
        return start

    def data(self, offset: int, size: int) -> SpoolData:
        return SpoolData(self, offset, size)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class SpoolData(FileData):
    """A slice of a :class:`Spool`, read through the spool's one open descriptor."""

    def __init__(self, spool: Spool, offset: int, size: int) -> None:
        super().__init__(spool.path, offset, size, sparse=False)
        self.spool = spool

    def fileno(self) -> int:
        return self.spool.fileno()

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# Archives


@dataclass(frozen=True)
class ArchiveInfo:
    """What :func:`add_archive` read: ``sha512`` is the hex digest of the file as stored
    (compressed), ``entries`` the number of members, ``bytes`` the file's size and
    ``data_bytes`` the total size of the regular files it held."""

    path: str
    sha512: str
    entries: int
    bytes: int
    data_bytes: int
    format: str


class _HashingReader:
    """A read-only binary stream that hashes and counts what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hash = hashlib.sha512()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data

    def readinto(self, b: memoryview | bytearray) -> int:
        n = self.f.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.hash.update(memoryview(b)[:n])
            self.count += n
        return n or 0

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class _ZstdReader:
    """A zstd-compressed stream decompressed on the fly; a cut-off frame is an error."""

    def __init__(self, raw: _HashingReader) -> None:
        import zstandard

        self.raw = raw
        self.dctx = zstandard.ZstdDecompressor()
        self.obj = self.dctx.decompressobj()
        self.buf = b""
        self.pos = 0
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        while not self.eof and (n < 0 or len(self.buf) - self.pos < n):
            chunk = self.raw.read(_CHUNK)
            if not chunk:
                self.eof = True
                if not self.obj.eof:
                    raise EOFError("compressed data ends in the middle of a zstd frame")
                break
            if self.obj.eof:  # a further frame follows
                tail = self.obj.unused_data
                self.obj = self.dctx.decompressobj()
                chunk = tail + chunk
            self.buf = self.buf[self.pos :] + self.obj.decompress(chunk)
            self.pos = 0
        if n < 0:
            out, self.buf, self.pos = self.buf[self.pos :], b"", 0
            return out
        out = self.buf[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def readable(self) -> bool:
        return True


def detect_format(head: bytes) -> str | None:
    """``"gz"``, ``"xz"``, ``"zst"``, ``"bz2"`` or ``"tar"`` from a file's first 512 bytes."""
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zst"
    if head.startswith(b"BZh"):
        return "bz2"
    if len(head) >= 263 and head[257:262] == b"ustar":
        return "tar"
    if len(head) >= 512 and _is_v7_header(head[:512]):
        return "tar"
    return None


def _is_v7_header(block: bytes) -> bool:
    try:
        stored = int(block[148:156].strip(b"\0 ") or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 256 + sum(block[156:512])


def _decompressed(fmt: str, raw: _HashingReader) -> BinaryIO:
    if fmt == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if fmt == "xz":
        return lzma.LZMAFile(raw)  # type: ignore[arg-type]
    if fmt == "bz2":
        return bz2.BZ2File(raw)  # type: ignore[arg-type]
    if fmt == "zst":
        return _ZstdReader(raw)  # type: ignore[return-value]
    return raw  # type: ignore[return-value]


def _member_path(archive: str, name: str) -> bytes:
    raw = os.fsencode(name)
    if raw.startswith(b"/"):
        raise InputError(f"{archive}: member {name!r} has an absolute path; refusing it")
    if b".." in raw.split(b"/"):
        raise InputError(f"{archive}: member {name!r} contains '..'; refusing it")
    return raw


def add_archive(
    tree: Tree, path: str | os.PathLike[str], spool: Spool, prefix: str | bytes = ""
) -> ArchiveInfo:
    """Add every member of tar archive *path* under *prefix* in *tree*.

    The archive is read once, front to back; the data of regular files goes to
    *spool*. Members keep their mode (setuid and sticky bits included), numeric
    uid/gid, modification time, symlink target and device numbers; hard links
    become the same node under several names. A member with an absolute path or a
    ``..`` component, a corrupt or truncated archive, or an unknown format raises
    :class:`InputError`.
    """
    name = os.fspath(path)
    pre = os.fsencode(prefix) if isinstance(prefix, str) else prefix
    pre = b"/".join(p for p in pre.split(b"/") if p not in (b"", b"."))
    try:
        f = open(name, "rb")  # noqa: SIM115
    except OSError as err:
        raise InputError(f"cannot read {name}: {err.strerror}") from err
    with f:
        head = f.read(512)
        fmt = detect_format(head)
        if fmt is None:
            raise InputError(
                f"{name}: not a tar archive in a format smolfs reads",
                hint=f"supported: {SUPPORTED} (recognised by content, not by name)",
            )
        f.seek(0)
        raw = _HashingReader(f)
        entries = data_bytes = 0
        try:
            stream = _decompressed(fmt, raw)
            with tarfile.open(fileobj=stream, mode="r|", bufsize=_CHUNK,  # type: ignore[call-overload]
                              encoding="utf-8", errors="surrogateescape") as tf:
                for member in tf:
                    entries += 1
                    data_bytes += _add_member(tree, tf, member, name, pre, spool)
            # Read to the very end so a cut-off compressed stream is noticed and the
            # digest covers the whole file.
            while stream.read(_CHUNK):
                pass
            raw.drain()
        except InputError:
            raise
        except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error,
                ValueError) as err:
            raise InputError(f"{name}: corrupt or truncated archive ({_reason(err)})") from err
        except Exception as err:
            if type(err).__module__.startswith("zstandard"):
                raise InputError(f"{name}: corrupt or truncated archive ({err})") from err
            raise
        if entries == 0:
            raise InputError(f"{name}: the archive holds no members")
    return ArchiveInfo(name, raw.hash.hexdigest(), entries, raw.count, data_bytes, fmt)


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text[0].lower() + text[1:] if text else text


def _add_member(tree: Tree, tf: tarfile.TarFile, m: tarfile.TarInfo, archive: str,
                pre: bytes, spool: Spool) -> int:
    dest = _join(pre, _member_path(archive, m.name).strip(b"/"))
    mode = m.mode & 0o7777
    mtime = int(m.mtime)
    if m.islnk():
        tree.link(dest, _join(pre, _member_path(archive, m.linkname).strip(b"/")))
        return 0
    if m.isreg():
        node = Node(Kind.FILE, mode=mode, uid=m.uid, gid=m.gid, mtime=mtime)
        fobj = tf.extractfile(m)
        assert fobj is not None
        offset = spool.append(fobj, m.size) if m.size else spool.size
        node.data = spool.data(offset, m.size)
        tree.add(dest, node)
        return m.size
    if m.isdir():
        kind = Kind.DIR
    elif m.issym():
        kind = Kind.SYMLINK
    elif m.ischr():
        kind = Kind.CHR
    elif m.isblk():
        kind = Kind.BLK
    elif m.isfifo():
        kind = Kind.FIFO
    else:
        raise InputError(f"{archive}: member {m.name!r} has a type smolfs cannot store "
                         f"({m.type!r})")
    node = Node(kind, mode=mode, uid=m.uid, gid=m.gid, mtime=mtime)
    if kind == Kind.SYMLINK:
        node.target = os.fsencode(m.linkname)
    elif kind in (Kind.CHR, Kind.BLK):
        node.rdev = (m.devmajor, m.devminor)
    tree.add(dest, node)
    return 0
