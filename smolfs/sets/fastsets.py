"""Quick-to-read copies of set archives: ``$CACHE/fast/<SHA512 of the set>.tar.zst``.

Written with zstd on the side by the first build that reads a set, read by later ones
(7 to 15 times faster than xz here). Never stale (named by the set's digest), checked
on every read (:class:`DamagedCopy`), atomic, best effort; the rules and their reasons:
``smolfs/sets/README.md``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smolfs import log
from smolfs.errors import InputError

#: zstd level of the copies, chosen by measurement. On a tar of Linux programs and man
#: pages (150 MB): level 1 writes 62 MB at 370 MB/s, level 3 54 MB at 220 MB/s, and xz -6
#: would take 45 MB; every level decompresses at about 500 MB/s. The copy is written
#: while a first build reads the set, so writing fast matters more than 15% of disk.
LEVEL = 1
#: Copies unused for this many days are removed when a new copy is written.
KEEP_DAYS = 30
SUFFIX = ".tar.zst"
#: Free space left beyond twice a set's size, or no copy of it is started.
ROOM_MARGIN = 64 << 20
#: Remembered digests: ``<sha256 of path and stat>.sha512`` (see :func:`remember_digest`).
MEMO_SUFFIX = ".sha512"
#: A digest is remembered only for a file unchanged for this long before it was hashed.
RACY_SECONDS = 2.0
#: Times :func:`lock` takes a lock again after finding the lock file replaced meanwhile.
LOCK_ATTEMPTS = 5

_DIGEST = re.compile(r"[0-9a-f]{128}")


class DamagedCopy(InputError):
    """A fast copy could not be read back (corrupt, truncated): remove it, use the set."""

    def __init__(self, path: Path, digest: str, reason: str) -> None:
        super().__init__(f"fast copy {path} is damaged ({reason})")
        self.path, self.digest = path, digest


def directory(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the copies live: ``fast`` in the download cache (``MKSMOLNB_CACHE``...)."""
    if cache_dir is None:
        from smolfs.cachedir import cache_root

        return Path(cache_root()) / "fast"
    return Path(cache_dir) / "fast"


def path_for(digest: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a SHA512 hex digest: {digest!r}")
    return directory(cache_dir) / f"{digest}{SUFFIX}"


def find(digest: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The copy of the set whose SHA512 is *digest*, if one is in the cache.

    Its modification time is set to now: copies in use are not pruned."""
    path = path_for(digest, cache_dir)
    try:
        os.utime(path)
    except FileNotFoundError:
        return None
    except OSError:  # a cache we may read but not write: still usable
        if not path.is_file():
            return None
    return path


def discard(path: Path) -> None:
    """Remove a damaged copy (if we can; the next build tries again otherwise)."""
    with contextlib.suppress(OSError):
        path.unlink()


class Writer:
    """Receives a set's decompressed tar (as an ``add_archive`` tee) and keeps it as a copy.

    Made with :meth:`start`, which returns None when no copy should be written
    (another process is writing it, it exists, the cache is not writable). Then
    :meth:`commit` once the set was read without error, else :meth:`abort`.
    Failures to write only abandon the copy, with a warning: they never fail a build.
    """

    def __init__(self, digest: str, final: Path, lock_fd: int, tmp: str, out: Any) -> None:
        import zstandard

        self.digest, self.final, self._lock_fd, self._tmp, self._out = (
            digest, final, lock_fd, tmp, out)
        self._z = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).compressobj()
        self._failed: OSError | None = None  # the first failure to write the copy

    @classmethod
    def start(cls, digest: str, cache_dir: str | os.PathLike[str] | None = None,
              size: int = 0) -> Writer | None:
        """A writer for the copy of the set whose SHA512 is *digest* and whose file has
        *size* bytes, or None. No copy is started when the cache's filesystem has less
        free space than :func:`room_needed` for it: the build needs that disk more."""
        final = path_for(digest, cache_dir)
        lock_fd: int | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            free = free_space(final.parent)
            if free is not None and free < room_needed(size):
                log.debug(f"no fast copy of a set of {size} bytes: {free} bytes free in "
                          f"{final.parent}")
                return None
            lock_fd = lock(lock_path(final))
            if lock_fd is None:
                return None  # another build is writing it
            if final.exists():
                raise FileExistsError(final)  # another build has just written it
            fd, tmp = _create_temporary(final.parent, f".{digest}.")
            return cls(digest, final, lock_fd, tmp, os.fdopen(fd, "wb", buffering=1 << 20))
        except FileExistsError:
            pass
        except OSError as err:
            _warn(final.parent, err)
        if lock_fd is not None:  # a copy in place, or a failure: no lock file left
            unlock(lock_path(final), lock_fd)
        return None

    def __call__(self, piece: bytes) -> None:
        if self._failed is None:
            try:
                self._out.write(self._z.compress(piece))
            except Exception as err:  # a copy never fails a build
                self._failed = err if isinstance(err, OSError) else OSError(str(err))
                self._drop_temporary()  # at once: the build may need that space

    def _drop_temporary(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def commit(self, digest: str) -> Path | None:
        """Put the copy in place if the set read had the expected *digest*; its path."""
        try:
            if self._failed is None and digest == self.digest:
                try:
                    self._out.write(self._z.flush())
                    self._out.close()
                    os.replace(self._tmp, self.final)
                    prune(self.final.parent)
                    return self.final
                except OSError as err:
                    self._failed = err
            if self._failed is not None:
                _warn(self.final.parent, self._failed)
            return None
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temporary file (if still there) and the lock file."""
        self._drop_temporary()
        if self._lock_fd >= 0:
            unlock(lock_path(self.final), self._lock_fd)
            self._lock_fd = -1


def lock_path(final: Path) -> Path:
    """The lock file of the copy *final*: ``.<digest>.lock`` beside it."""
    return final.with_name(f".{final.name.removesuffix(SUFFIX)}.lock")


def lock(path: Path, create: bool = True) -> int | None:
    """Take the exclusive ``flock`` of the lock file *path* without waiting: its
    descriptor, or None when another process holds it (or, unless *create*, there is
    no such file).

    Its holder removes the file before letting go (:func:`unlock`), so that none is
    left behind. A process that opened the file before that removal and gets the lock
    after it would hold a lock that excludes nobody (a third process creates and
    locks a new file): so a lock counts only once *path* is seen to still be the
    locked file, else it is taken again, on the file *path* now is. Only a holder so
    confirmed removes *path*: it is never another's lock file."""
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    for _ in range(LOCK_ATTEMPTS):
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = os.fstat(fd)
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # removed by the holder we waited for: try the new one
        if not create and now is None:
            return None
    return None  # replaced again and again: as busy


def unlock(path: Path, fd: int) -> None:
    """Remove the lock file *path*, whose lock *fd* holds (from :func:`lock`), then let
    go of the lock."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(fd)


def free_space(where: Path) -> int | None:
    """Bytes an ordinary user may still write on the filesystem of *where* (None: unknown)."""
    try:
        st = os.statvfs(where)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def room_needed(size: int) -> int:
    """Free space below which no copy of a set file of *size* bytes is started: the copy
    takes about 1.4 times the set, and the build's spool and image come first."""
    return 2 * size + ROOM_MARGIN


def _create_temporary(where: Path, prefix: str) -> tuple[int, str]:
    """A new file ``<prefix><random>.tmp`` in *where*, created exclusively (never through
    a symlink, never one another process is writing): its descriptor and path."""
    import secrets

    while True:
        tmp = str(where / f"{prefix}{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), tmp
        except FileExistsError:
            continue


def prune(where: Path, keep_days: float = KEEP_DAYS, now: float | None = None) -> list[Path]:
    """Remove copies and remembered digests unused for *keep_days*, and the temporary
    and lock files of builds killed while writing (older than a day; a lock file only
    when nobody holds it). Returns what was removed."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(where))
    except OSError:
        return removed
    for e in entries:
        if e.name.endswith((SUFFIX, MEMO_SUFFIX)) and not e.name.startswith("."):
            limit = keep_days * 86400
        elif e.name.startswith(".") and e.name.endswith((".tmp", ".lock")):
            limit = 86400
        else:
            continue
        try:
            if now - e.stat(follow_symlinks=False).st_mtime <= limit:
                continue
            if e.name.endswith(".lock"):
                fd = lock(Path(e.path), create=False)
                if fd is None:
                    continue  # held: a writer uses it
                unlock(Path(e.path), fd)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            continue
    return removed


# ---------------------------------------------------------------------------
# remembered digests of set files


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _memo_path(path: Path, st: os.stat_result, cache_dir: str | os.PathLike[str] | None
               ) -> Path:
    import hashlib

    key = repr((os.fsencode(os.path.realpath(path)), *_stat_key(st))).encode()
    return directory(cache_dir) / f"{hashlib.sha256(key).hexdigest()}{MEMO_SUFFIX}"


def recall_digest(path: Path, st: os.stat_result,
                  cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The SHA512 remembered for the set file *path* in the state *st* (its ``stat``)."""
    memo = _memo_path(path, st, cache_dir)
    try:
        text = memo.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _DIGEST.fullmatch(text):
        return None
    with contextlib.suppress(OSError):
        os.utime(memo)
    return text


def remember_digest(path: Path, st: os.stat_result, digest: str, started: float,
                    cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Remember *digest* for *path* as it was when ``stat`` gave *st*, if that is safe.

    It is when the file is still in that state, and its last change (ctime, which no
    user can set back) is more than :data:`RACY_SECONDS` older than *started*, the
    moment hashing began: any later change then gets another ctime, hence another key,
    even on filesystems with coarse timestamps. Returns whether it was remembered.
    """
    if started - max(st.st_mtime, st.st_ctime) < RACY_SECONDS:
        return False
    try:
        if _stat_key(os.stat(path)) != _stat_key(st):
            return False
        memo = _memo_path(path, st, cache_dir)
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temporary(memo.parent, f".{memo.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(digest + "\n")
            os.replace(tmp, memo)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return False
    return True


def file_digest(path: Path, st: os.stat_result, compute: Callable[[], str],
                cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The SHA512 of *path* in the state *st*: remembered from an earlier call
    (:func:`recall_digest`), else ``compute()``, then remembered when that is safe
    (:func:`remember_digest`)."""
    digest = recall_digest(path, st, cache_dir)
    if digest is None:
        started = time.time()
        digest = compute()
        remember_digest(path, st, digest, started, cache_dir)
    return digest


_warned: set[str] = set()


def _warn(where: Path, err: OSError) -> None:
    if str(where) in _warned:
        return
    _warned.add(str(where))
    why = "no space left" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (
        err.strerror or str(err))
    log.warn(f"cannot keep a fast copy of a set in {where} ({why}); builds will read the "
             "sets themselves (slower). Free some space, or build with --no-fast-copy")
