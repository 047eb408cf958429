"""Write-then-rename: nothing half-written is ever left at a destination.

One writer for every component: only ``os`` is imported, so that the launcher writes its
caches with it before QEMU starts.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from types import TracebackType
    from typing import BinaryIO


class atomic_output:
    """``with atomic_output(dest) as f:`` a new temporary file beside *dest*, open for
    reading and writing, renamed over *dest* only when the block ends without an
    exception; removed otherwise. *mode*: the file's, less the umask. *makedirs*: create
    the directory of *dest* first."""

    def __init__(self, dest: str | os.PathLike[str], mode: int = 0o644, *,
                 makedirs: bool = False) -> None:
        self.dest = os.fspath(dest)
        self.mode = mode
        self.makedirs = makedirs
        self.tmp = ""

    def __enter__(self) -> BinaryIO:
        directory, name = os.path.split(os.path.abspath(self.dest))
        if self.makedirs:
            os.makedirs(directory, exist_ok=True)
        while True:
            self.tmp = os.path.join(directory, f".{name}.{os.urandom(6).hex()}.tmp")
            try:
                fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             self.mode)
                break
            except FileExistsError:
                continue
        try:
            self.file: BinaryIO = open(fd, "w+b")
        except BaseException:
            os.close(fd)
            self._remove()
            raise
        return self.file

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is not None:  # the block failed: its error, not one of closing, goes on
            try:  # noqa: SIM105  (contextlib costs milliseconds)
                self.file.close()
            except OSError:
                pass
            self._remove()
            return
        try:
            self.file.close()
            os.replace(self.tmp, self.dest)
        except BaseException:
            self._remove()
            raise

    def _remove(self) -> None:
        try:  # noqa: SIM105  (contextlib costs milliseconds)
            os.unlink(self.tmp)
        except OSError:
            pass


def write_atomic(dest: str | os.PathLike[str], data: bytes, mode: int = 0o644, *,
                 makedirs: bool = False) -> None:
    """Write *data* to *dest* through :class:`atomic_output`."""
    with atomic_output(dest, mode, makedirs=makedirs) as f:
        f.write(data)
