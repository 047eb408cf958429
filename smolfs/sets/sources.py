"""Fill a :class:`~smolfs.fs.tree.Tree` from a host directory or a tar archive.

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

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from smolfs.errors import InputError, SmolError
from smolfs.fs.tree import FileData, HostFileData, Kind, Node, Tree, check_name

if TYPE_CHECKING:
    import tarfile

# Archive support (tarfile, the decompressors, threads) is imported when an archive is
# read: building from directories alone does not pay for it.

#: Formats :func:`add_archive` reads, for messages.
SUPPORTED = ".tar, .tgz/.tar.gz, .tar.xz/.txz, .tar.zst/.tzst, .tar.bz2"

_CHUNK = 1 << 20  # copy and decompression buffer


class ArchiveCorrupt(InputError):
    """The archive itself is bad: it does not decompress, its tar headers do not parse,
    or it ends too early. Raised only for what was read, never for a failure to write
    (:class:`WriteError`) or a member the tree cannot take (a plain :class:`InputError`)."""


class WriteError(SmolError):
    """Writing the spool or an image failed: a full disk, a file size limit..."""


def write_error(err: OSError, what: str, where: str | os.PathLike[str]) -> WriteError:
    """One line for a failure to write *what* (``"the image x.img"``) in directory *where*."""
    where = os.fspath(where)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteError(f"no space left on device in {where} (writing {what})",
                          hint=f"free some space in {where}, or write the image elsewhere")
    if err.errno == errno.EFBIG:
        return WriteError(f"file too large: {what} in {where} reached the size limit for a file",
                          hint="raise the file size limit (ulimit -f), or write the image on a "
                               "filesystem that holds larger files")
    return WriteError(f"cannot write {what} in {where}: {err.strerror or err}")


class _Corrupt(Exception):
    """Raised by :class:`_Decoder` for data that does not decompress (its reason)."""


# ---------------------------------------------------------------------------
# Host directories


def _join(prefix: bytes, name: bytes) -> bytes:
    return prefix + b"/" + name if prefix else name


def add_directory(
    tree: Tree,
    path: str | os.PathLike[str],
    prefix: str | bytes = "",
    owner: tuple[int, int] | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> int:
    """Add the contents of host directory *path* under *prefix* in *tree*.

    Like NetBSD's ``makefs``: modes, owners (the host's numeric uid/gid, or *owner*
    for every entry when given), modification times, hard links (same device and
    inode), symlinks (never followed), fifos, sockets and device nodes (the host's
    major/minor numbers) are taken as they are; holes in files stay holes. The
    directory itself gives its attributes to *prefix* (the root by default).
    Access and change times are set equal to the modification time, so copies of
    the same tree give the same image. Later sources replace earlier entries of
    the same name; directories merge. Files whose ``(st_dev, st_ino)`` is in
    *exclude* are left out (an image being rewritten inside its own source).
    Returns the number of entries added.
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
            if exclude and (st.st_dev, st.st_ino) in exclude:
                continue
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
    then be reflinks or at least stay on one filesystem), else in ``$TMPDIR``, and
    unlinked at once: it lives on as an open descriptor only, so nothing is left
    behind even if the process is killed. :meth:`close` (or the end of a ``with``
    block) frees it; the tree's :class:`SpoolData` references are valid until then.
    ``path`` is the name it had, for messages.
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None) -> None:
        import tempfile

        try:
            fd, self.path = tempfile.mkstemp(prefix=".smolfs-spool.", dir=dir)
        except OSError as err:
            where = os.fspath(dir) if dir is not None else tempfile.gettempdir()
            raise InputError(f"cannot create a spool file in {where}: {err.strerror}") from err
        os.unlink(self.path)
        self.dir = os.path.dirname(self.path)
        self.fd: int | None = fd
        self.size = 0
        self._buf = bytearray(_CHUNK)

    def fileno(self) -> int:
        if self.fd is None:
            raise ValueError("spool is closed")
        return self.fd

    def append(self, src: BinaryIO | _Stream, size: int) -> int:
        """Copy exactly *size* bytes from *src* to the end; return where they start.

        A failure to write raises :class:`WriteError` (naming the spool's directory);
        *src* ending early, ``EOFError``."""
        start = self.size
        if isinstance(src, _Stream):
            for view in src.pieces(size):
                self._pwrite(view)
            return start
        view = memoryview(self._buf)
        left = size
        while left:
            n = src.readinto(view[: min(left, _CHUNK)])  # type: ignore[attr-defined]
            if not n:
                raise EOFError("unexpected end of data")
            self._pwrite(view[:n])
            left -= n
        return start

    def _pwrite(self, view: memoryview) -> None:
        fd = self.fileno()
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(fd, view[done:], self.size + done)
        except OSError as err:
            raise write_error(err, "the spool file of archive data", self.dir) from err
        self.size += done

    def data(self, offset: int, size: int) -> SpoolData:
        return SpoolData(self, offset, size)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

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


class _Decoder:
    """Decompresses a stream fed in pieces; each output piece is at most ``_CHUNK`` bytes.

    Concatenated streams (several xz streams, gzip members or zstd frames) are read
    one after the other, as the command-line tools do.
    """

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.d = self._new()

    def _new(self) -> Any:
        import bz2
        import lzma
        import zlib

        if self.fmt == "xz":
            return lzma.LZMADecompressor()
        if self.fmt == "gz":
            return zlib.decompressobj(wbits=31)
        if self.fmt == "bz2":
            return bz2.BZ2Decompressor()
        if self.fmt == "zst":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj()
        return None

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decompressed pieces of *data*; :class:`_Corrupt` when it does not decompress."""
        if self.d is None:
            yield data
            return
        try:
            yield from self._feed(data)
        except Exception as err:  # lzma, zlib, bz2 (OSError), zstd: all mean bad data
            raise _Corrupt(_reason(err)) from err

    def _feed(self, data: bytes) -> Iterator[bytes]:
        d = self.d
        while data:
            if d.eof:  # a stream ended: another one follows, or only zero padding
                if not data.strip(b"\0"):
                    return
                d = self.d = self._new()
            if self.fmt == "zst":  # no output bound in this API: feed small pieces
                view, data, at = memoryview(data), b"", 0
                while at < len(view):
                    yield d.decompress(view[at : at + (1 << 16)])
                    at += 1 << 16
                    if d.eof:
                        data = d.unused_data + bytes(view[at:])
                        break
                continue
            if self.fmt == "gz":
                yield d.decompress(data, _CHUNK)
                while d.unconsumed_tail:
                    yield d.decompress(d.unconsumed_tail, _CHUNK)
            else:
                yield d.decompress(data, _CHUNK)
                while not d.eof and not d.needs_input:
                    yield d.decompress(b"", _CHUNK)
            data = d.unused_data if d.eof else b""

    def check_end(self) -> None:
        if self.d is not None and not self.d.eof:
            raise _Corrupt("the compressed data ends before the end of its stream")


class _Worker:
    """A thread that hands the pieces put to it, in order, to *consume*.

    :meth:`finish` waits until every piece was consumed and re-raises what *consume*
    raised; :meth:`stop` ends the thread without waiting for the rest.
    """

    def __init__(self, consume: Callable[[bytes], object], name: str) -> None:
        import queue
        import threading

        self._consume = consume
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._consume(piece)
                except BaseException as err:  # re-raised by put() and finish()
                    self._error = err

    def put(self, piece: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(piece)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        import queue

        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1)


class _Stream:
    """The decompressed contents of an archive, produced by a background thread.

    The thread reads the file in large pieces and decompresses them; the SHA-512 of
    the file as stored (unless *checksum* is false) and the *tee*, if any, get
    threads of their own. That work releases the GIL, while the caller parses tar
    headers and copies member data: both cores are used. Reading is forward only;
    :meth:`seek` skips ahead, which is all ``tarfile`` needs.
    """

    def __init__(self, f: BinaryIO, fmt: str, head: bytes = b"", checksum: bool = True,
                 tee: Callable[[bytes], object] | None = None) -> None:
        import hashlib
        import queue
        import threading

        self.hash = hashlib.sha512() if checksum else None
        self.tee = tee
        self.count = 0
        self._pos = 0
        self._piece = b""
        self._off = 0
        self._eof = False
        self._stop = threading.Event()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._produce, args=(f, fmt, head), daemon=True,
                                        name="archive-reader")
        self._thread.start()

    def _put(self, item: bytes | BaseException | None) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, f: BinaryIO, fmt: str, head: bytes) -> None:
        hasher = _Worker(self.hash.update, "archive-hash") if self.hash is not None else None
        tee = _Worker(self.tee, "archive-tee") if self.tee is not None else None
        try:
            decoder = _Decoder(fmt)
            chunk = head
            while True:
                chunk = chunk or f.read(_CHUNK)
                if not chunk:
                    break
                if hasher is not None:
                    hasher.put(chunk)
                self.count += len(chunk)
                for out in decoder.feed(chunk):
                    if not out:
                        continue
                    if tee is not None:
                        tee.put(out)
                    if not self._put(out):
                        return
                chunk = b""
            decoder.check_end()
            for worker in (hasher, tee):
                if worker is not None:
                    worker.finish()
            self._put(None)
        except BaseException as err:  # handed to the reading thread
            self._put(err)
        finally:
            for worker in (hasher, tee):
                if worker is not None:
                    worker.stop()

    def _next_piece(self) -> bool:
        if self._eof:
            return False
        item = self._queue.get()
        if item is None:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._piece, self._off = item, 0
        return True

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = 1 << 62
        parts: list[bytes] = []
        want = n
        while want:
            avail = len(self._piece) - self._off
            if not avail:
                if not self._next_piece():
                    break
                continue
            take = min(avail, want)
            parts.append(self._piece[self._off : self._off + take])
            self._off += take
            want -= take
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(out)
        return out

    def pieces(self, size: int) -> Iterator[memoryview]:
        """The next *size* bytes, as views of the decompressed pieces (no copy)."""
        left = size
        while left:
            avail = len(self._piece) - self._off
            if not avail:
                if not self._next_piece():
                    raise EOFError("unexpected end of data")
                continue
            take = min(avail, left)
            yield memoryview(self._piece)[self._off : self._off + take]
            self._off += take
            self._pos += take
            left -= take

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        if whence == 2 or pos < self._pos:
            import io

            raise io.UnsupportedOperation("an archive is read front to back only")
        while self._pos < pos:
            if not self.read(min(pos - self._pos, _CHUNK)):
                break
        return self._pos

    def finish(self) -> None:
        """Read to the very end: a cut-off stream is noticed, the digest is complete."""
        while self.read(_CHUNK):
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


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


def _member_path(archive: str, name: str) -> bytes:
    raw = os.fsencode(name)
    if raw.startswith(b"/"):
        raise InputError(f"{archive}: member {name!r} has an absolute path; refusing it")
    if b".." in raw.split(b"/"):
        raise InputError(f"{archive}: member {name!r} contains '..'; refusing it")
    return raw


def add_archive(
    tree: Tree, path: str | os.PathLike[str], spool: Spool, prefix: str | bytes = "",
    checksum: bool = True, tee: Callable[[bytes], object] | None = None,
) -> ArchiveInfo:
    """Add every member of tar archive *path* under *prefix* in *tree*.

    The archive is read once, front to back; the data of regular files goes to
    *spool*. Members keep their mode (setuid and sticky bits included), numeric
    uid/gid, modification time, symlink target and device numbers; hard links
    become the same node under several names. A member with an absolute path or a
    ``..`` component, a member the tree cannot take (a file where the tree has a
    directory...) or a file that cannot be read raise :class:`InputError`; an archive
    that is corrupt, truncated or in no format smolfs reads, :class:`ArchiveCorrupt`
    (a subclass), and nothing else does; a failure to write the spool,
    :class:`WriteError`.

    ``checksum=False`` skips the SHA-512 of the file (``ArchiveInfo.sha512`` is then
    empty). *tee*, when given, is called from another thread with the decompressed
    archive, piece by piece, in order, to the very end: the whole uncompressed tar
    once the call returns (a partial one if it raises); an exception *tee* raises
    ends the read.
    """
    import tarfile

    name = os.fspath(path)
    pre = os.fsencode(prefix) if isinstance(prefix, str) else prefix
    pre = b"/".join(p for p in pre.split(b"/") if p not in (b"", b"."))
    try:
        f = open(name, "rb")  # noqa: SIM115
    except OSError as err:
        raise InputError(f"cannot read {name}: {err.strerror}") from err
    with f:
        head = b""
        while len(head) < 512 and (more := f.read(512 - len(head))):
            head += more  # a pipe may deliver less than asked
        fmt = detect_format(head)
        if fmt is None:
            raise ArchiveCorrupt(
                f"{name}: not a tar archive in a format smolfs reads",
                hint=f"supported: {SUPPORTED} (recognised by content, not by name)",
            )
        stream = _Stream(f, fmt, head, checksum, tee)  # the file may be a pipe: no seeking back
        entries = data_bytes = 0
        try:
            with tarfile.open(fileobj=stream, mode="r:",  # type: ignore[call-overload]
                              encoding="utf-8", errors="surrogateescape") as tf:
                for member in tf:
                    entries += 1
                    try:
                        data_bytes += _add_member(tree, tf, member, name, pre, spool)
                    except InputError as err:
                        if err.message.startswith(f"{name}: "):
                            raise
                        raise InputError(f"{name}: {err.message}", err.hint) from err
                tf.members = []
            stream.finish()
        except SmolError:  # a bad member, a failure to write the spool: as they are
            raise
        except (_Corrupt, tarfile.TarError, EOFError, ValueError) as err:
            raise ArchiveCorrupt(f"{name}: corrupt or truncated archive ({_reason(err)})") \
                from err
        except OSError as err:  # reading the file itself
            raise InputError(f"cannot read {name}: {err.strerror or err}") from err
        finally:
            stream.close()
        if entries == 0:
            raise ArchiveCorrupt(f"{name}: the archive holds no members")
    digest = stream.hash.hexdigest() if stream.hash is not None else ""
    return ArchiveInfo(name, digest, entries, stream.count, data_bytes, fmt)


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
        src: BinaryIO | _Stream | None
        if isinstance(tf.fileobj, _Stream) and not m.issparse():
            src = tf.fileobj  # the data follows the header: straight from the stream
            src.seek(m.offset_data)
        else:
            src = tf.extractfile(m)
        assert src is not None
        offset = spool.append(src, m.size) if m.size else spool.size
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
