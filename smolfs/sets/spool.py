"""The spool: one temporary file the file data of archives is appended to, so that the
writers copy it into the image with ``copy_file_range`` and nothing large is held in
memory; and the error of a failed write (:class:`WriteError`)."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING, BinaryIO

from smolfs.errors import InputError, SmolError
from smolfs.fs.filedata import FileData

if TYPE_CHECKING:
    from smolfs.sets.decompress import Stream

_CHUNK = 1 << 20  # copy and decompression buffer

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

    def append(self, src: BinaryIO | Stream, size: int) -> int:
        """Copy exactly *size* bytes from *src* to the end; return where they start.

        A failure to write raises :class:`WriteError` (naming the spool's directory);
        *src* ending early, ``EOFError``."""
        from smolfs.sets.decompress import Stream

        start = self.size
        if isinstance(src, Stream):
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
