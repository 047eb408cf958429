"""Contents of regular files: what a writer reads to fill a file's blocks.

A :class:`Data` knows its size, reads in pieces and reports its holes, so no writer
ever holds a whole large file in memory. :class:`BytesData` holds generated files;
:class:`FileData` and :class:`HostFileData` read regions of host files.
"""

from __future__ import annotations

import os

from smolfs.errors import InputError


class Data:
    """Contents of a regular file: a size, pieces to read, and where the holes are."""

    size: int = 0

    def read(self, offset: int, length: int) -> bytes:
        """Return up to *length* bytes at *offset* (short only at end of data)."""
        raise NotImplementedError

    def extents(self) -> list[tuple[int, int]]:
        """``(offset, length)`` regions holding data; the rest reads as zeros (holes).

        The default is one extent over the whole file. Writers may leave any
        filesystem block that lies entirely outside every extent unallocated.
        """
        return [(0, self.size)] if self.size else []

    def copy_to(self, fd: int, src_offset: int, dst_offset: int, length: int) -> None:
        """Write *length* bytes from *src_offset* into file descriptor *fd* at *dst_offset*."""
        done = 0
        while done < length:
            chunk = self.read(src_offset + done, min(length - done, 1 << 20))
            if not chunk:
                raise InputError(f"{self!r}: data ended early (expected {self.size} bytes)")
            os.pwrite(fd, chunk, dst_offset + done)
            done += len(chunk)


class BytesData(Data):
    """Contents held in memory (small generated files: fstab, manifests...)."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.size = len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def __repr__(self) -> str:
        return f"BytesData({self.size} bytes)"


class FileData(Data):
    """A region of a host file: a whole regular file, or a slice of a spool file.

    Copies use ``os.copy_file_range`` where the kernel allows it (no copy through
    Python), falling back to read/write. Holes of a whole host file are found with
    ``SEEK_DATA``/``SEEK_HOLE``.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int = 0, size: int | None = None,
                 sparse: bool = True) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        if size is None:
            try:
                size = os.stat(self.path).st_size - offset
            except OSError as err:
                raise InputError(f"cannot read {self.path}: {err.strerror}") from err
        self.size = size
        self.sparse = sparse
        self._fd: int | None = None

    def fileno(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError as err:
                raise InputError(f"cannot read {self.path}: {err.strerror}") from err
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = os.pread(self.fileno(), length, self.offset + offset)
        return out

    def extents(self) -> list[tuple[int, int]]:
        if not self.size:
            return []
        if not self.sparse or not hasattr(os, "SEEK_DATA"):
            return [(0, self.size)]
        fd = self.fileno()
        start, end = self.offset, self.offset + self.size
        out: list[tuple[int, int]] = []
        pos = start
        try:
            while pos < end:
                try:
                    data = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:  # ENXIO: no more data
                    break
                if data >= end:
                    break
                hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
                out.append((data - start, hole - data))
                pos = hole
        except OSError:
            return [(0, self.size)]
        return out

    def copy_to(self, fd: int, src_offset: int, dst_offset: int, length: int) -> None:
        src = self.fileno()
        pos, done = self.offset + src_offset, 0
        try:
            while done < length:
                n = os.copy_file_range(src, fd, length - done, pos + done, dst_offset + done)
                if n == 0:
                    raise InputError(f"{self.path}: file shrank while being read")
                done += n
        except OSError:
            super().copy_to(fd, src_offset + done, dst_offset + done, length - done)

    def __repr__(self) -> str:
        return f"FileData({self.path!r}, offset={self.offset}, size={self.size})"


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
