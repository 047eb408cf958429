"""Streaming a set into a tree through its fast copy (:mod:`smolfs.sets.fastsets`): the
digests computed on the side, the copy read when there is one, kept when there is not."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from smolfs.errors import InputError
from smolfs.fs.tree import Tree
from smolfs.log import step
from smolfs.sets.fastsets import DamagedCopy
from smolfs.sets.setfiles import SetSource


class FastCopies:
    """Sets are read from (and kept as) fast copies, except those whose digest is in
    ``avoid`` (copies found damaged) and those already quick to read (zstd, plain tar).

    The digests of sets given as files are computed from the start, one thread per set
    (hashlib releases the GIL): they are ready by the time the build, done importing
    and setting up, looks for the copies, and the first set waits for its own digest
    only. A file's digest is remembered for its next builds
    (:func:`smolfs.sets.fastsets.remember_digest`). :meth:`close` (or the end of a ``with``
    block) stops the hashing still under way and waits for it: once it returns, no
    thread reads a set or writes a remembered digest.
    """

    #: Set formats worth a fast copy: those that decompress slowly.
    SLOW = ("xz", "gz", "bz2")

    def __init__(self, sources: Sequence[SetSource]) -> None:
        import threading

        self.avoid: set[str] = set()
        self._cancel = threading.Event()
        self._digests: dict[Path, str | BaseException | None] = {}
        self._threads: dict[Path, threading.Thread] = {}
        for i, src in enumerate(sources):
            if src.path not in self._threads:
                self._threads[src.path] = threading.Thread(
                    target=self._hash, args=(src,), daemon=True, name=f"set-digest-{i}")
                self._threads[src.path].start()

    def _hash(self, src: SetSource) -> None:
        from smolfs.sets.decompress import detect_format

        try:
            with open(src.path, "rb") as f:
                if detect_format(f.read(512)) not in self.SLOW:
                    found: str | None = None
                elif src.digest is not None:
                    found = src.digest
                else:
                    found = self._file_digest(src.path, f)
            self._digests[src.path] = found
        except BaseException as err:  # re-raised by digest()
            self._digests[src.path] = err

    def _file_digest(self, path: Path, f: BinaryIO) -> str:
        from smolfs.sets import fastsets

        def compute() -> str:
            f.seek(0)
            return hashlib.file_digest(_Cancellable(f, self._cancel), "sha512").hexdigest()

        return fastsets.file_digest(path, os.fstat(f.fileno()), compute)

    def digest(self, src: SetSource) -> str | None:
        """The SHA512 of *src*'s archive (verified by fetch, else computed here), or None
        when the set is not worth a copy."""
        thread = self._threads.get(src.path)
        if thread is not None:
            thread.join()
        else:  # not a set this object was made for: hashed here
            self._hash(src)
        found = self._digests[src.path]
        if isinstance(found, OSError):
            raise InputError(f"set archive {src.path}: {found.strerror or found}") from found
        if isinstance(found, BaseException):
            raise InputError(f"set archive {src.path}: cannot compute its SHA512 "
                             f"({type(found).__name__}: {found})") from found
        return found

    def close(self) -> None:
        """Stop hashing and wait until every thread of this object has ended."""
        self._cancel.set()
        for thread in self._threads.values():
            thread.join()

    def __enter__(self) -> FastCopies:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cancelled(Exception):
    """Hashing stopped by :meth:`FastCopies.close`."""


class _Cancellable:
    """A binary file whose reads raise :class:`_Cancelled` once *cancel* is set."""

    def __init__(self, f: BinaryIO, cancel: Any) -> None:
        self._f, self._cancel = f, cancel

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._cancel.is_set():
            raise _Cancelled("the build ended")
        return self._f.readinto(buf)  # type: ignore[attr-defined]


def add_set(tree: Tree, src: SetSource, spool: Any, fast: FastCopies | None = None) -> str:
    """Stream one set into *tree* (from its fast copy when *fast* and there is one);
    the SHA512 of the set archive.

    Raises :class:`~smolfs.sets.fastsets.DamagedCopy` when the copy itself is corrupt or
    truncated, and only then: a member the tree cannot take, or a failure to write the
    spool, is the build's error, and the copy stays."""
    from smolfs.sets.sources import ArchiveCorrupt, add_archive

    digest = fast.digest(src) if fast is not None else None
    if fast is None or digest is None:
        with step(f"stream {src.path.name}"):
            return add_archive(tree, src.path, spool).sha512
    from smolfs.sets import fastsets

    copy = fastsets.find(digest) if digest not in fast.avoid else None
    if copy is not None:
        with step(f"stream {src.path.name} (fast copy)"):
            try:
                add_archive(tree, copy, spool, checksum=False)
            except ArchiveCorrupt as err:
                reason = err.message.removeprefix(f"{copy}: ")
                raise DamagedCopy(copy, digest, reason) from err
            except InputError as err:  # about a member: name the set, not its copy
                if err.message.startswith(f"{copy}: "):
                    err.message = f"{src.path}: {err.message.removeprefix(f'{copy}: ')}"
                    err.args = (err.message,)
                raise
        return digest
    writer = fastsets.Writer.start(digest, size=_file_size(src.path))
    with step(f"stream {src.path.name}" + (" (keeping a fast copy)" if writer else "")):
        try:
            info = add_archive(tree, src.path, spool, tee=writer)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    if writer is not None:
        writer.commit(info.sha512)
    return info.sha512


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
