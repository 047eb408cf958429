"""Stream a tar archive into a :class:`~smolfs.fs.tree.Tree`: headers become nodes, file
contents go to the spool (:mod:`smolfs.sets.spool`), decompressed on a thread of its own
(:mod:`smolfs.sets.decompress`); host directories are :mod:`smolfs.sets.hostdir`.

Owners come from the numeric ``uid``/``gid`` of each header (NetBSD sets carry the right
numbers); names are ignored so that the host's user database never leaks into an image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from smolfs.errors import InputError, SmolError
from smolfs.fs.tree import Kind, Node, Tree
from smolfs.sets.decompress import Corrupt, Stream, detect_format, reason
from smolfs.sets.hostdir import join_path
from smolfs.sets.spool import Spool

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
        stream = Stream(f, fmt, head, checksum, tee)  # the file may be a pipe: no seeking back
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
        except (Corrupt, tarfile.TarError, EOFError, ValueError) as err:
            raise ArchiveCorrupt(f"{name}: corrupt or truncated archive ({reason(err)})") \
                from err
        except OSError as err:  # reading the file itself
            raise InputError(f"cannot read {name}: {err.strerror or err}") from err
        finally:
            stream.close()
        if entries == 0:
            raise ArchiveCorrupt(f"{name}: the archive holds no members")
    digest = stream.hash.hexdigest() if stream.hash is not None else ""
    return ArchiveInfo(name, digest, entries, stream.count, data_bytes, fmt)


def _add_member(tree: Tree, tf: tarfile.TarFile, m: tarfile.TarInfo, archive: str,
                pre: bytes, spool: Spool) -> int:
    dest = join_path(pre, _member_path(archive, m.name).strip(b"/"))
    mode = m.mode & 0o7777
    mtime = int(m.mtime)
    if m.islnk():
        tree.link(dest, join_path(pre, _member_path(archive, m.linkname).strip(b"/")))
        return 0
    if m.isreg():
        node = Node(Kind.FILE, mode=mode, uid=m.uid, gid=m.gid, mtime=mtime)
        src: BinaryIO | Stream | None
        if isinstance(tf.fileobj, Stream) and not m.issparse():
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
