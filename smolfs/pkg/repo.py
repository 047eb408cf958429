"""Where packages come from, and how they reach the cache verified.

A repository (the official layout, a URL or a directory of ``.tgz``), its index, and
its packages downloaded with the rules of sets and checked against ``FILE_SIZE``,
``FILE_CKSUM`` and a ``SHA512`` list (see ``smolfs/pkg/README.md``)."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from smolfs import log
from smolfs.errors import ChecksumMismatch, FetchError, InputError, UsageError
from smolfs.pkg import summary
from smolfs.pkg.summary import Package

REPO_ENV = "MKSMOLNB_PKG_REPO"
SUMMARY_NAMES = ("pkg_summary.xz", "pkg_summary.bz2", "pkg_summary.gz")
DIGEST_LISTS = ("SHA512.bz2", "SHA512.gz", "SHA512")
#: A cached index older than this is fetched again when online.
SUMMARY_TTL = 24 * 3600
ALGOS = {"sha512", "sha256", "sha1", "md5", "sha384"}

_ARCH_DIR = {"amd64": "x86_64", "i386": "i386", "aarch64": "aarch64"}


class NotCachedPkg(FetchError):
    """Offline, and a file of the package repository is not in the cache."""


def default_url(arch: str, release: str, mirror: str | None = None) -> str:
    """The official repository of packages for NetBSD *release* on *arch*."""
    from smolfs.sets.mirror import DEFAULT_MIRROR, MIRROR_ENV

    base = (mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR).rstrip("/")
    base = re.sub(r"/pub/NetBSD$", "", base)
    major = re.search(r"\d+", release)
    if major is None:
        raise UsageError(f"no pkgsrc packages for release {release!r}",
                         hint="give a numbered release (--release 10.1), or --pkg-repo URL")
    arch_dir = _ARCH_DIR.get(arch, arch)
    return f"{base}/pub/pkgsrc/packages/NetBSD/{arch_dir}/{major.group(0)}.0/All"


@dataclass
class Repository:
    """A repository of binary packages: its index and verified package files."""

    url: str
    local: Path | None  # a directory read in place
    mirror: object | None  # smolfs.sets.mirror.Mirror for remote ones; None offline or local
    cache: Path
    offline: bool = False
    _index: list[Package] | None = field(default=None, repr=False)
    _digests: dict[str, str] | None = field(default=None, repr=False)

    # -- the index ----------------------------------------------------------------------
    def index(self) -> list[Package]:
        if self._index is None:
            self._index = self._load_index()
        return self._index

    def _load_index(self) -> list[Package]:
        if self.local is not None:
            for name in (*SUMMARY_NAMES, "pkg_summary"):
                path = self.local / name
                if path.is_file():
                    return summary.parse(_decompress(path.read_bytes(), name), str(path))
            return scan_directory(self.local)
        return summary.parse(self._remote_summary(), f"{self.url}/pkg_summary")

    def _remote_summary(self) -> str:
        from smolfs.sets.cache import locked

        self.cache.mkdir(parents=True, exist_ok=True)
        cached = [self.cache / n for n in SUMMARY_NAMES if (self.cache / n).is_file()]
        fresh = [p for p in cached if time.time() - p.stat().st_mtime < SUMMARY_TTL]
        if self.mirror is None or fresh:
            if not cached:
                raise NotCachedPkg(
                    f"offline, and the package index of {self.url} is not in the cache",
                    hint="run the same command once without --offline")
            return _decompress(cached[0].read_bytes(), cached[0].name)
        from smolfs.fileutil import atomic_output
        from smolfs.sets.mirror import NotFound

        with locked(self.cache / "pkg_summary"):
            for name in SUMMARY_NAMES:
                try:
                    data = self.mirror.read(name)  # type: ignore[attr-defined]
                except NotFound:
                    continue
                text = _decompress(data, name)
                for old in cached:
                    old.unlink(missing_ok=True)
                with atomic_output(self.cache / name) as out:
                    out.write(data)
                (self.cache / "URL").write_text(self.url + "\n")
                return text
        raise FetchError(
            f"no package index at {self.url}: none of {', '.join(SUMMARY_NAMES)}",
            hint=f"check --pkg-repo / ${REPO_ENV}: it names the directory of the packages "
                 "(…/All), which holds pkg_summary.gz")

    def digests(self) -> dict[str, str]:
        """The SHA512 of each package file, from a list published beside the packages (the
        directory itself or its parent: ``SHA512.bz2``, ``SHA512.gz`` or ``SHA512``), when
        there is one. A remote list (or its absence) is cached like the index."""
        if self._digests is None:
            text = self._digest_text()
            self._digests = _parse_digests(text) if text else {}
        return self._digests

    def _digest_text(self) -> str | None:
        if self.local is not None:
            for d in (self.local, self.local.parent):
                for n in DIGEST_LISTS:
                    if (d / n).is_file():
                        return _decompress((d / n).read_bytes(), n)
            return None
        cached = self.cache / "SHA512.list"
        if cached.is_file() and (self.mirror is None
                                 or time.time() - cached.stat().st_mtime < SUMMARY_TTL):
            return cached.read_text("utf-8", "replace")
        if self.mirror is None:
            return None
        from smolfs.fileutil import atomic_output
        from smolfs.sets.mirror import resolve_mirror

        text = ""
        parent = resolve_mirror(self.url.rsplit("/", 1)[0])
        for m in (self.mirror, parent):
            for n in DIGEST_LISTS:
                try:
                    data = m.read(n)  # type: ignore[attr-defined]
                except FetchError:
                    continue
                text = _decompress(data, n)
                break
            if text:
                break
        self.cache.mkdir(parents=True, exist_ok=True)
        with atomic_output(cached) as out:
            out.write(text.encode())
        return text

    # -- package files ------------------------------------------------------------------
    def fetch(self, pkg: Package) -> Path:
        """A verified local file of *pkg* (downloaded into the cache first if needed)."""
        fname = pkg.file_name
        if "/" in fname or fname in ("", ".", ".."):
            raise InputError(f"{pkg.name}: unsafe FILE_NAME {fname!r} in the package index")
        checks = self._checks(pkg)
        if self.local is not None:
            path = self.local / fname
            if not path.is_file():
                raise FetchError(f"{pkg.name}: {path} does not exist",
                                 hint="the index names a package the directory lacks")
            bad = _verify(path, pkg.file_size, checks)
            if bad:
                raise ChecksumMismatch(f"{pkg.name}: {path}: {bad}", expected="", actual="",
                                       hint="the repository is damaged or out of date")
            return path
        dest = self.cache / "All" / fname
        if self.mirror is None:
            if dest.is_file() and not _verify(dest, pkg.file_size, checks, stamp=True):
                return dest
            raise NotCachedPkg(f"offline, and {fname} ({pkg.name}) is not in the cache",
                               hint="run the same command once without --offline")
        from smolfs.sets.cache import download_with_retries, locked

        with locked(dest):
            if dest.is_file():
                if not _verify(dest, pkg.file_size, checks, stamp=True):
                    log.info(f"using cached {fname}")
                    return dest
                dest.unlink()
            part = dest.with_name(dest.name + ".part")
            from smolfs.sets.mirror import NotFound

            for attempt in (1, 2):
                try:
                    download_with_retries(self.mirror, fname, part,  # type: ignore[arg-type]
                                           "sha512")
                except NotFound as err:
                    raise FetchError(f"{pkg.name}: the index names {fname}, but {err.url} "
                                     "does not exist",
                                     hint="the repository is being updated or damaged: try "
                                          "again later, or another with --pkg-repo") from None
                bad = _verify(part, pkg.file_size, checks)
                if not bad:
                    os.replace(part, dest)
                    _stamp(dest, checks)
                    return dest
                part.unlink(missing_ok=True)
                if attempt == 1:
                    log.warn(f"{fname}: {bad}; fetching it again")
            raise ChecksumMismatch(
                f"{pkg.name}: {fname} from {self.url}: {bad}; the file was discarded",
                expected="", actual="",
                hint="the repository may be damaged or changing: try again later, or "
                     "another with --pkg-repo URL")

    def _checks(self, pkg: Package) -> dict[str, str]:
        checks: dict[str, str] = {}
        ck = pkg.file_cksum
        if ck and ck[0] in ALGOS:
            checks[ck[0]] = ck[1]
        listed = self.digests().get(pkg.file_name)
        if listed:
            checks.setdefault("sha512", listed)
        return checks


def _verify(path: Path, size: int | None, checks: dict[str, str], stamp: bool = False
            ) -> str | None:
    """None when *path* has *size* and every digest of *checks*; else what is wrong."""
    st = path.stat()
    if size is not None and st.st_size != size:
        return f"size {st.st_size} bytes, the index says FILE_SIZE {size}"
    if not checks:
        return None
    if stamp and _stamp_key(st, checks) == _read_stamp(path):
        return None
    hashes = {a: hashlib.new(a) for a in checks}
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashes.values():
                h.update(chunk)
    for algo, want in checks.items():
        got = hashes[algo].hexdigest()
        if got != want:
            return f"{algo.upper()} {got}, published {want}"
    if stamp:
        _stamp(path, checks)
    return None


def _stamp_key(st: os.stat_result, checks: dict[str, str]) -> str:
    sums = " ".join(f"{a}:{d}" for a, d in sorted(checks.items()))
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino} {sums}\n"


def _stamp(path: Path, checks: dict[str, str]) -> None:
    """Remember that *path*, in its present state, matched *checks* (spares hashing it on
    the next build; any change to the file changes its ctime)."""
    if not checks:
        return
    with contextlib.suppress(OSError):
        path.with_name(f".{path.name}.ok").write_text(_stamp_key(path.stat(), checks))


def _read_stamp(path: Path) -> str | None:
    try:
        return path.with_name(f".{path.name}.ok").read_text()
    except OSError:
        return None


def _parse_digests(text: str) -> dict[str, str]:
    from smolfs.sets.release import parse_checksums

    try:
        found = parse_checksums(text, "SHA512", "sha512")
    except FetchError:
        return {}
    return {os.path.basename(k): v for k, v in found.items()}


def _decompress(data: bytes, name: str) -> str:
    try:
        if data[:6] == b"\xfd7zXZ\x00":
            data = lzma.decompress(data)
        elif data[:3] == b"BZh":
            data = bz2.decompress(data)
        elif data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (lzma.LZMAError, OSError, EOFError) as err:
        raise InputError(f"{name}: does not decompress ({err})") from None
    return data.decode("utf-8", "replace")


def open_repository(repo: str | None = None, arch: str = "amd64", release: str = "10.1",
                    mirror: str | None = None, offline: bool = False,
                    cache_dir: str | os.PathLike[str] | None = None) -> Repository:
    """The repository named by *repo*, ``$MKSMOLNB_PKG_REPO``, else the official one."""
    from smolfs.sets.cache import default_cache_dir
    from smolfs.sets.mirror import SCHEMES, resolve_mirror

    url = repo or os.environ.get(REPO_ENV) or default_url(arch, release, mirror)
    url = url.rstrip("/") or "/"
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache = cache_root / "pkgsrc" / hashlib.sha256(url.encode()).hexdigest()[:16]
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme and scheme not in SCHEMES:
        raise UsageError(f"unsupported package repository {url!r}",
                         hint="use https://, http://, file:// or a directory")
    if not scheme or scheme == "file":
        from urllib.parse import unquote, urlsplit

        path = Path(unquote(urlsplit(url).path)) if scheme else Path(url).expanduser()
        if not path.is_dir():
            raise InputError(f"package repository {url} is not a directory",
                             hint="give the directory that holds the .tgz packages")
        return Repository(url, path.resolve(), None, cache, offline)
    return Repository(url, None, None if offline else resolve_mirror(url), cache, offline)


def scan_directory(directory: Path) -> list[Package]:
    """A ``PKG_PATH``-style directory: each ``*.tgz`` described from its own metadata."""
    from smolfs.pkg.archive import read_meta

    out = []
    for path in sorted(directory.glob("*.tgz")):
        meta = read_meta(path)
        out.append(meta.as_summary(path))
    if not out:
        raise InputError(f"{directory} holds no pkg_summary and no .tgz packages",
                         hint="give the directory of the packages (…/All)")
    return out
