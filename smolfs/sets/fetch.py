"""Download NetBSD sets and kernels from a mirror into the cache, verified.

:func:`fetch` returns a :class:`FetchResult`: the cached paths of the sets and the
kernel, each checked against the SHA512 list published beside it, and their digests.
Release spellings, the cache layout and kernels given by URL: ``smolfs/sets/README.md``."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from smolfs import log
from smolfs.errors import FetchError, UsageError
from smolfs.fileutil import atomic_output
from smolfs.sets.cache import (
    CACHE_ENV,
    NoSpace,
    check_cached,
    default_cache_dir,
    download,
    is_no_space,
    locked,
    no_space,
)
from smolfs.sets.mirror import (
    DEFAULT_MIRROR,
    MIRROR_ENV,
    Mirror,
    MirrorUnreachable,
    NotFound,
    resolve_mirror,
)
from smolfs.sets.release import (
    BRANCH_RE,
    DAILY_SPELLINGS,
    DEFAULT_RELEASE,
    KNOWN_RELEASES,
    KNOWN_SETS,
    RELEASE_RE,
    SET_EXTENSIONS,
    Release,
    check_arch,
    digest_for,
    kernel_filename,
    parse_sha512,
    published_kernels,
    published_sets,
    set_name,
    version_key,
)

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MIRROR",
    "MIRROR_ENV",
    "FetchResult",
    "NoSpace",
    "NotCached",
    "UnknownArtifact",
    "available",
    "fetch",
]


_URL_RE = re.compile(r"(https?|file)://", re.IGNORECASE)


class UnknownArtifact(FetchError):
    """The release, set or kernel asked for is not published (lists the valid ones)."""


class NotCached(FetchError):
    """Offline, and the file is not in the cache."""


@dataclass(frozen=True)
class FetchResult:
    """Verified files in the cache. ``digests`` maps set names (and the kernel's file name)
    to their SHA512."""

    sets: dict[str, Path]
    kernel: Path | None
    digests: dict[str, str]
    release: str = DEFAULT_RELEASE
    arch: str = "amd64"
    files: dict[str, Path] = field(default_factory=dict)  # file name → path, kernel included


def fetch(
    sets: Iterable[str] = (),
    release: str = DEFAULT_RELEASE,
    arch: str = "amd64",
    kernel: str | None = None,
    mirror: str | None = None,
    offline: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> FetchResult:
    """Make ``sets`` (names like ``base``) and ``kernel`` (``GENERIC``, or a URL) of a
    release available in the cache, downloading what is missing, and return their paths.

    ``mirror`` defaults to ``$MKSMOLNB_MIRROR``, then ``https://cdn.netbsd.org``;
    ``cache_dir`` to ``$MKSMOLNB_CACHE``, ``$XDG_CACHE_HOME/mksmolnb``, ``~/.cache/mksmolnb``.
    Raises :class:`~smolfs.errors.FetchError` (or a subclass: ``ChecksumMismatch``,
    ``UnknownArtifact``, ``NotCached``, ``NoSpace``) or ``UsageError``.
    """
    if isinstance(sets, str):
        sets = [sets]
    rel = Release.parse(release)
    arch = check_arch(arch)
    names = list(dict.fromkeys(set_name(s) for s in sets))
    kernel_url = kernel if kernel and _URL_RE.match(kernel) else None
    kfile = kernel_filename(kernel, arch) if kernel and not kernel_url else None
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    fetcher = _Fetcher(rel, arch, cache, None if offline else resolve_mirror(mirror))
    try:
        return fetcher.run(names, kfile, kernel_url)
    except OSError as err:
        raise _cache_error(cache, err) from None


def available(
    release: str = DEFAULT_RELEASE,
    arch: str = "amd64",
    mirror: str | None = None,
    offline: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, list[str]]:
    """What a release publishes, from its SHA512 lists: ``{"sets": [...], "kernels": [...]}``
    (set names like ``base``, kernel names like ``GENERIC``)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    f = _Fetcher(Release.parse(release), check_arch(arch), cache,
                 None if offline else resolve_mirror(mirror))
    try:
        sets = published_sets(f.checksums("sets"))
        try:
            kernels = published_kernels(f.checksums("kernel"))
        except (UnknownArtifact, NotCached):
            kernels = []
    except OSError as err:
        raise _cache_error(cache, err) from None
    return {"sets": sets, "kernels": kernels}


def _cache_error(cache: Path, err: OSError) -> FetchError:
    if is_no_space(err):
        name = os.path.basename(err.filename or "").removesuffix(".part")
        return no_space(cache, name or "a file")
    return FetchError(
        f"cache directory {cache}: {err.strerror}" + (f": {err.filename}" if err.filename else ""),
        hint=f"choose a writable cache with --cache-dir DIR or {CACHE_ENV}=DIR",
    )


class _Fetcher:
    def __init__(self, release: Release, arch: str, cache: Path, mirror: Mirror | None) -> None:
        self.release = release
        self.arch = arch
        self.mirror = mirror
        self.cache = cache
        self.dir = cache / release.name / arch

    def remote(self, sub: str, name: str) -> str:
        return f"{self.release.tree(self.arch)}/binary/{sub}/{name}"

    def what(self) -> str:
        return f"{self.release} {self.arch}"

    def run(self, names: list[str], kfile: str | None, kernel_url: str | None) -> FetchResult:
        files: dict[str, tuple[str, str]] = {}  # set → (file name, digest)
        if names:
            try:
                sums = self.checksums("sets")
            except (MirrorUnreachable, NotCached, UnknownArtifact):
                # A misspelt set name is the first thing to fix.
                for n in names:
                    if n not in KNOWN_SETS and not n.startswith("kern-"):
                        raise self.unknown_set(n, None) from None
                raise
            for n in names:
                f = self.set_file(n, sums)
                files[n] = (f, sums[f])
        kernel: tuple[str, str] | None = None
        if kfile:
            ksums = self.checksums("kernel")
            kernel = self.kernel_file(kfile, ksums)
        paths: dict[str, Path] = {}
        digests: dict[str, str] = {}
        by_file: dict[str, Path] = {}
        for n, (f, digest) in files.items():
            paths[n] = by_file[f] = self.get("sets", f, digest)
            digests[n] = digest
        kpath = None
        if kernel:
            kpath = by_file[kernel[0]] = self.get("kernel", *kernel)
            digests[kernel[0]] = kernel[1]
        if kernel_url:
            kpath, label = self.kernel_from_url(kernel_url)
            by_file[kpath.name] = kpath
            digests[kpath.name] = label
        return FetchResult(paths, kpath, digests, self.release.name, self.arch, by_file)

    def checksums(self, sub: str) -> dict[str, str]:
        """The SHA512 list of ``binary/<sub>``, from the cache or the mirror.

        A release's list is downloaded once; a daily build's on every online run.
        """
        dest = self.dir / sub / "SHA512"
        if self.mirror is None:
            if not dest.is_file():
                raise NotCached(
                    f"offline, and the SHA512 list of {self.what()} {sub} is not in the "
                    f"cache ({dest})",
                    hint="run the same command once without --offline",
                )
            return parse_sha512(dest.read_text("utf-8", "replace"), str(dest))
        if cached := self.cached_checksums(dest):
            return cached
        with locked(dest):
            if cached := self.cached_checksums(dest):  # another process just fetched it
                return cached
            rel = self.remote(sub, "SHA512")
            try:
                data = self.mirror.read(rel)
            except NotFound as err:
                raise self.not_published(sub, err.url) from None
            digests = parse_sha512(data.decode("utf-8", "replace"), self.mirror.url_of(rel))
            with atomic_output(dest) as out:
                out.write(data)
        return digests

    def cached_checksums(self, dest: Path) -> dict[str, str] | None:
        """A release's cached SHA512 list, when it is there and readable (online mode)."""
        if self.release.daily or not dest.is_file():
            return None
        try:
            return parse_sha512(dest.read_text("utf-8", "replace"), str(dest))
        except FetchError:
            log.warn(f"cached {dest} is not a SHA512 list; downloading it again")
            return None

    def get(self, sub: str, file: str, digest: str) -> Path:
        """The verified cached file of the release, downloaded first if needed."""
        return obtain(
            self.mirror, self.remote(sub, file), self.dir / sub / file, digest,
            what=f"{file} of {self.what()}", memo=self.cache,
        )

    def kernel_from_url(self, url: str) -> tuple[Path, str]:
        """A kernel named by URL, verified against a checksum published beside it:
        the ``SHA512`` list of its directory, else ``NAME.sha512`` or ``NAME.sha256``.
        Returns its path and digest (``sha256:<hex>`` when only a SHA256 is published)."""
        base, _, name = url.rstrip("/").rpartition("/")
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise UsageError(f"invalid kernel URL {url!r}", hint="name the kernel file itself")
        where = self.cache / "url" / hashlib.sha256(url.encode()).hexdigest()[:16]
        source = None if self.mirror is None else resolve_mirror(base)
        for sums_name, algo in (("SHA512", "sha512"), (f"{name}.sha512", "sha512"),
                                (f"{name}.sha256", "sha256")):
            sums_path = where / sums_name
            try:
                data = sums_path.read_bytes() if source is None else source.read(sums_name)
            except (NotFound, FileNotFoundError):
                continue
            digest = digest_for(name, data.decode("utf-8", "replace"), sums_name, algo)
            if digest is None:
                continue
            if source is not None:
                where.mkdir(parents=True, exist_ok=True)
                with atomic_output(sums_path) as out:
                    out.write(data)
            path = obtain(source, name, where / name, digest, algo=algo, what=url,
                          memo=self.cache)
            return path, digest if algo == "sha512" else f"{algo}:{digest}"
        if source is None:
            raise NotCached(
                f"offline, and the kernel {url} is not in the cache",
                hint="run the same command without --offline to download it",
            )
        raise FetchError(
            f"no checksum published for {url}: looked for SHA512 in its directory, "
            f"{name}.sha512 and {name}.sha256 beside it",
            hint="a kernel is used only once verified; publish one of those, or use --kernel "
            "NAME for a kernel of the release",
        )

    # --- what is valid, for error messages -------------------------------------------------

    def set_file(self, name: str, sums: dict[str, str]) -> str:
        preferred = name + self.release.set_extension(self.arch)
        for candidate in (preferred, *(name + ext for ext in SET_EXTENSIONS)):
            if candidate in sums:
                return candidate
        raise self.unknown_set(name, sums)

    def unknown_set(self, name: str, sums: dict[str, str] | None) -> UnknownArtifact:
        known = ", ".join(KNOWN_SETS)
        if sums is None:
            return UnknownArtifact(f"unknown set {name!r}", hint=f"known sets: {known}")
        published = published_sets(sums)
        msg = (
            f"{self.what()} publishes no set {name!r}"
            if name in KNOWN_SETS
            else f"unknown set {name!r} for {self.what()}"
        )
        return UnknownArtifact(
            msg, hint=f"its SHA512 lists: {', '.join(published) or 'no sets'} (known sets: {known})"
        )

    def kernel_file(self, file: str, sums: dict[str, str]) -> tuple[str, str]:
        for candidate in (file, file.removesuffix(".gz")):
            if candidate in sums:
                return candidate, sums[candidate]
        kernels = published_kernels(sums)
        wanted = file.removeprefix("netbsd-").removesuffix(".gz").removesuffix(".img")
        raise UnknownArtifact(
            f"{self.what()} publishes no kernel {wanted!r}",
            hint=f"kernels in its SHA512: {', '.join(kernels) or 'none'}",
        )

    def not_published(self, sub: str, url: str) -> UnknownArtifact:
        if sub == "kernel":
            return UnknownArtifact(
                f"{self.what()} publishes no kernels: {url} not found",
                hint="check --release and --arch",
            )
        return UnknownArtifact(
            f"{self.what()} not found on the mirror: {url} does not exist",
            hint=self.release_suggestions(),
        )

    def release_suggestions(self) -> str:
        assert self.mirror is not None
        if self.release.daily:
            names = self.mirror.listdir("pub/NetBSD-daily")
            branches = [n for n in names if n == "HEAD" or BRANCH_RE.fullmatch(n)]
            if branches:
                shown = ", ".join("current" if b == "HEAD" else b for b in branches)
                return f"daily builds on this mirror: {shown}"
            return f"daily builds are spelt {DAILY_SPELLINGS}"
        names = self.mirror.listdir("pub/NetBSD")
        found = [n.removeprefix("NetBSD-") for n in names if n.startswith("NetBSD-")]
        found = [r for r in found if RELEASE_RE.fullmatch(r)]
        if self.release.name in found:
            return f"NetBSD {self.release.name} exists but has no {self.arch} tree on this mirror"
        if found:
            found.sort(key=version_key, reverse=True)
            return f"releases on this mirror: {', '.join(found[:10])}; or {DAILY_SPELLINGS}"
        return f"known releases: {', '.join(KNOWN_RELEASES)}; or {DAILY_SPELLINGS}"


def obtain(
    source: Mirror | None, rel: str, dest: Path, digest: str, *, what: str,
    algo: str = "sha512", memo: Path | None = None,
) -> Path:
    """``dest``, verified, downloaded from ``source`` first if needed (``None``: offline).
    *memo*: the cache directory whose remembered digests spare hashing an unchanged file
    (:func:`smolfs.sets.cache.check_cached`)."""
    if source is None:
        if check_cached(dest, digest, discard=False, algo=algo, memo=memo):
            log.info(f"using cached {dest.name}")
            return dest
        raise NotCached(
            f"offline, and {what} is not in the cache ({dest})",
            hint="run the same command without --offline to download it",
        )
    with locked(dest):
        if check_cached(dest, digest, discard=True, algo=algo, memo=memo):
            log.info(f"using cached {dest.name}")
            return dest
        try:
            download(source, rel, dest, digest, algo)
        except NotFound as err:
            raise FetchError(
                f"{what} has a published checksum but the mirror has no {err.url}",
                hint=f"try another mirror with --mirror URL or {MIRROR_ENV}=URL",
            ) from None
    return dest

