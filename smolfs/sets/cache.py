"""The download cache: verified files only, resumable, safe to share between processes.

``F.part`` renamed to ``F`` once its SHA512 matches, a ``flock`` on ``.F.lock`` per
file, every cached file checked again when used (see ``smolfs/sets/README.md``)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from smolfs import cachedir, log
from smolfs.errors import ChecksumMismatch, FetchError
from smolfs.sets import mirror as transport
from smolfs.sets.mirror import Mirror, TransientError
from smolfs.sets.progress import Progress

CACHE_ENV = cachedir.ENV
HASH_CHUNK = 1 << 20


class NoSpace(FetchError):
    """The cache's filesystem is full (ENOSPC) or the user's quota is exhausted."""


def default_cache_dir() -> Path:
    """``$MKSMOLNB_CACHE``, else ``$XDG_CACHE_HOME/mksmolnb``, else ``~/.cache/mksmolnb``
    (:func:`smolfs.cachedir.cache_root`)."""
    return Path(cachedir.cache_root())


def is_no_space(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space(cache: Path, what: str) -> NoSpace:
    return NoSpace(
        f"no space left in the cache directory {cache} while writing {what}",
        hint=f"free some space there, or point {CACHE_ENV} (or --cache-dir) "
        "at a directory on a larger disk",
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` (on the hidden ``.<name>.lock`` beside it);
    say so if we must wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"waiting for another download of {path.name}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def hash_file(path: Path, algo: str = "sha512") -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def check_cached(path: Path, expected: str, discard: bool, algo: str = "sha512",
                 memo: Path | None = None) -> bool:
    """True when ``path`` exists and matches ``expected``.

    With *memo* (a cache directory), a SHA512 computed earlier for the file in exactly
    its present state (path, device, inode, size, mtime, ctime:
    :func:`smolfs.sets.fastsets.recall_digest`) stands for hashing it again; a file changed
    in any way has another ctime, hence is hashed. A cached file that does not match is
    removed; that is reported as a :class:`ChecksumMismatch` unless ``discard`` (we are
    about to download it again).
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if not path.is_file():
        return False
    if memo is not None and algo == "sha512":
        from smolfs.sets import fastsets

        actual = fastsets.file_digest(path, st, lambda: hash_file(path, algo), memo)
    else:
        actual = hash_file(path, algo)
    if actual == expected:
        return True
    path.unlink()
    if discard:
        log.info(f"cached {path.name} does not match the published {algo.upper()} "
                 "(damaged, or changed on the mirror); downloading it again")
        return False
    raise ChecksumMismatch(
        f"cached {path.name} is damaged ({algo.upper()} expected {expected}, got {actual}); "
        "removed it",
        expected=expected,
        actual=actual,
        hint="run the same command without --offline to download it again",
    )


def download(mirror: Mirror, rel: str, dest: Path, expected: str, algo: str = "sha512") -> None:
    """Fetch ``rel`` from ``mirror`` into ``dest``, verified against ``expected`` (hex digest).

    The caller holds :func:`locked` for ``dest``. Transfers that break are resumed
    from the partial file, a couple of times. When a download that was resumed
    does not verify (the partial file came from elsewhere, or the file changed on
    the mirror meanwhile), it is thrown away and fetched once more, whole.
    """
    part = dest.with_name(dest.name + ".part")
    may_restart = True
    while True:
        actual, resumed = download_with_retries(mirror, rel, part, algo)
        if actual == expected:
            os.replace(part, dest)
            return
        part.unlink()
        if resumed and may_restart:
            log.warn(f"{dest.name}: resumed download does not verify; fetching it whole")
            may_restart = False
            continue
        raise ChecksumMismatch(
            f"{dest.name} from {mirror.url_of(rel)} does not match its published "
            f"{algo.upper()} (expected {expected}, got {actual}); the file was discarded",
            expected=expected,
            actual=actual,
            hint="the mirror may be damaged or out of date: try again later or another "
            "mirror with --mirror URL",
        )


def download_with_retries(mirror: Mirror, rel: str, part: Path, algo: str) -> tuple[str, bool]:
    for delay in transport.RETRY_DELAYS:
        try:
            return _download_once(mirror, rel, part, algo)
        except TransientError as err:
            log.info(f"{err.message}; trying again")
            time.sleep(delay)
    return _download_once(mirror, rel, part, algo)


def _download_once(mirror: Mirror, rel: str, part: Path, algo: str) -> tuple[str, bool]:
    """Append the missing bytes to ``part``; return the digest of the whole file and
    whether the transfer resumed from bytes already there."""
    have = part.stat().st_size if part.exists() else 0
    stream = mirror.open(rel, have)
    try:
        h = hashlib.new(algo)
        if stream.offset:
            with part.open("rb") as f:
                while chunk := f.read(HASH_CHUNK):
                    h.update(chunk)
        progress = Progress(part.name.removesuffix(".part"), stream.total, stream.offset)
        # "r+b" rather than "ab": the hash covers exactly bytes [0, offset) already.
        with part.open("r+b" if stream.offset else "wb") as out:
            if stream.offset:
                out.seek(stream.offset)
                out.truncate()
            try:
                for chunk in stream.chunks:
                    out.write(chunk)
                    h.update(chunk)
                    progress.advance(len(chunk))
            except OSError as err:
                err.filename = err.filename or str(part)
                raise
            finally:
                progress.clear()
        progress.finish()
        return h.hexdigest(), stream.offset > 0
    finally:
        stream.close()
