"""Build a bootable NetBSD root image for a service: ``smolfs build`` and :func:`build`.

The image is assembled as a :class:`~smolfs.tree.Tree` and written by a
filesystem writer, without root and without extracting anything on the host:

1. the sets are streamed from their archives into the tree (file data goes to a
   spool file and is copied from there into the image); a set compressed with xz,
   gzip or bzip2 is read, from its second build on, from a zstd copy kept in the
   cache, which the first build wrote on the side (:mod:`smolfs.fastsets`);
2. ``<service>/etc/*`` is laid over ``/etc``, ``common/*`` goes to ``/etc/include``;
3. ``/etc/fstab`` is generated (unless the service ships one), the device nodes a
   kernel needs before ``MAKEDEV`` exists are added, and when the sets have a
   crunched ``/rescue`` but no ``/sbin/init``, the usual links into it are made;
4. ``postinst/*.sh`` scripts, if any, run on a staging copy (:mod:`smolfs.postinst`);
5. the image is written atomically, then the manifest beside it (``IMAGE.json``).

An image is rebuilt only when needed: the manifest records a digest of the inputs
(options, set archives by path/size/mtime, service files by content, kernel), and an
image built from the same inputs and not written to since is kept (``force`` rebuilds).

Embedding::

    from smolfs.build import build
    result = build("bozohttpd", image="web.img", sets=["base.tar.xz", "etc.tar.xz"])
    print(result.image, result.manifest["size"])
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from smolfs import callable_module, staleness
from smolfs import manifest as _manifest
from smolfs.cli import VERSION
from smolfs.devices import Arch, device_nodes
from smolfs.errors import ImageTooSmall, InputError, UsageError
from smolfs.fastsets import DamagedCopy, discard
from smolfs.log import info, step, warn
from smolfs.service import FILESYSTEMS, Service, load, split_list
from smolfs.tree import BytesData, FileData, Kind, Node, Tree, source_date_epoch

MIB = 1 << 20
#: What an automatically sized read-write root keeps free beyond its content (makefs
#: -b and -f); the free inodes also follow the free space (smolfs.mkfs.auto_inodes).
#: A read-only root gets the usual 10% headroom only.
RW_FREE_SPACE = 32 * MIB
RW_FREE_FILES = 4096

#: Links made when the sets bring a crunched /rescue but not the programs init needs.
RESCUE_LINKS: tuple[tuple[str, str], ...] = (
    ("sbin/init", "/rescue/init"),
    ("bin/sh", "/rescue/sh"),
    ("sbin/mount_ffs", "/rescue/mount_ffs"),
    ("sbin/mount_ext2fs", "/rescue/mount_ext2fs"),
)

#: How each filesystem is named in /etc/fstab.
FSTAB_TYPE = {"ffs": "ffs", "ext2": "ext2fs"}

_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar.xz", ".txz", ".tar.zst", ".tzst", ".tar")


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` made: the image path and its manifest (also in ``IMAGE.json``)."""

    image: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class SetSource:
    name: str  # "base"
    path: Path
    digest: str | None = None  # SHA512 of the archive when known (verified by fetch)


@dataclass(frozen=True)
class Plan:
    """Every choice of a build, resolved from the arguments and the service's defaults."""

    service: Service
    image: Path
    set_tokens: tuple[str, ...]
    size_mb: int | None
    fs: str
    arch: Arch
    release: str | None  # None: not given (the fetch default when sets are fetched)
    ro: bool
    now: int  # SOURCE_DATE_EPOCH, else the current time
    pkgs: tuple[str, ...] = ()  # pkgsrc package patterns (smolfs.pkg)
    pkg_repo: str | None = None


def build(
    service: str = "rescue",
    image: str | os.PathLike[str] | None = None,
    sets: str | Sequence[str | os.PathLike[str]] | None = None,
    size_mb: int | None = None,
    fs: str | None = None,
    arch: str = "amd64",
    release: str | None = None,
    ro: bool | None = None,
    services_dir: str | os.PathLike[str] | None = None,
    mirror: str | None = None,
    offline: bool = False,
    kernel: str | None = None,
    force: bool = False,
    fast_copies: bool = True,
    postinst_timeout: float | None = None,
    pkgs: str | Sequence[str] | None = None,
    pkg_repo: str | None = None,
) -> BuildResult:
    """Build the root image of *service*; return its path and manifest.

    ``sets``: set names (fetched into the cache when missing) and/or archive paths,
    as a list or a comma/space-separated string; None → the service's ``SETS``,
    else ``rescue``. ``size_mb``/``fs``/``ro`` None → the service's
    ``SIZE_MB``/``FS``/``RO``, else automatic size, ``ffs``, read-write.
    ``image`` None → ``<service>-<arch>.img`` in the current directory.
    ``kernel`` (e.g. ``GENERIC``): also fetch that kernel of the release and name its
    path in the manifest (``"kernel"``), for a launcher to boot.
    An image whose inputs (options, sets, service files, kernel) did not change since it
    was built, and which was not modified since, is kept as it is unless ``force``
    (which also lets an image be bigger than 64 GiB). An automatic size gives a
    read-write root room to live: at least :data:`RW_FREE_SPACE` and
    :data:`RW_FREE_FILES` free inodes beyond the content.
    ``fast_copies``: read each set from a zstd copy kept in the cache, made the first
    time the set is read (see :mod:`smolfs.fastsets`); False reads the archives only.
    ``pkgs``: pkgsrc packages (names or patterns, list or comma/space-separated string;
    None → the service's ``PKGS``) installed with their dependencies from ``pkg_repo``
    (None → the service's ``PKG_REPO``, ``$MKSMOLNB_PKG_REPO``, else the official
    repository of the release; see :mod:`smolfs.pkg`).
    ``postinst_timeout``: seconds each postinst script may run (0: no limit); None →
    the service's ``POSTINST_TIMEOUT``, else :data:`smolfs.postinst.DEFAULT_TIMEOUT`.
    Everything temporary lives in a ``.smolfs-staging-*`` directory beside the image
    (:mod:`smolfs.staging`), removed at the end; those of builds that were killed are
    removed by the next build. Raises :class:`~smolfs.errors.SmolError` subclasses;
    nothing is left at the destination on failure.
    """
    release_asked = release
    p = plan(service, image, sets, size_mb, fs, arch, release, ro, services_dir, pkgs,
             pkg_repo)
    if p.size_mb:  # a size over the bound fails before any set is read
        from smolfs.sizes import check_bound

        check_bound(p.size_mb * MIB, str(p.image), force,
                    mistake=f"-m is in MiB: -m {p.size_mb} is {p.size_mb // 1024} GiB")
    limit = _postinst_limit(postinst_timeout, p.service)
    from smolfs.staging import sweep

    sweep(p.image.resolve().parent)  # what killed builds left here, even if nothing is built
    sources, release, kernel_path = _resolve_sets(p.set_tokens, p.release, p.arch.value,
                                                  mirror, offline, kernel)
    if release != p.release:
        p = dataclasses.replace(p, release=release)
    packages = None
    if p.pkgs:
        from smolfs.fetch import DEFAULT_RELEASE
        from smolfs.pkg.build import prepare

        packages = prepare(p.pkgs, p.pkg_repo, p.arch.value, p.release or DEFAULT_RELEASE,
                           mirror, offline)
    key, stats = _inputs(p, sources, kernel_path, packages.files if packages else ())
    asked = staleness.request(service, image, arch=arch, release=release_asked,
                              kernel=kernel, services_dir=_opt_path(services_dir), sets=sets,
                              size_mb=size_mb, fs=fs, ro=ro)
    if not force:
        old = up_to_date(p.image, key)
        if old is not None:
            since = "" if p.ro is False else ", not modified since"
            info(f"{p.image}: up to date (same inputs{since}); --force rebuilds")
            staleness.remember(p.image, key, stats, asked)  # for smolfs.staleness.fresh
            return BuildResult(image=p.image, manifest=old)

    staleness.forget(p.image)  # the record of the image this build replaces
    fast = FastCopies(sources) if fast_copies else None
    with fast if fast is not None else contextlib.nullcontext():
        while True:
            try:
                size, digests = _make_image(p, sources, fast, limit, force, packages)
                break
            except DamagedCopy as err:  # removed; this set is read from its archive instead
                warn(f"{err.message}; removed it, reading the set itself")
                discard(err.path)
                assert fast is not None
                fast.avoid.add(err.digest)

    data = manifest_for(p, sources, digests, size)
    if kernel_path is not None:
        data["kernel"] = str(kernel_path)
    if packages is not None:
        data["pkgs"] = packages.manifest()
    data["inputs"] = key
    _manifest.write(p.image, data)
    staleness.remember(p.image, key, stats, asked)  # for smolfs.staleness.fresh
    info(f"{p.image}: {_manifest.format_size(size)} {p.fs}"
         f"{' (read-only root)' if p.ro else ''}, service {p.service.name}, "
         f"sets {', '.join(s.name for s in sources)}")
    return BuildResult(image=p.image, manifest=data)


def _postinst_limit(given: float | None, svc: Service) -> float:
    """Seconds each postinst script may run (0: no limit)."""
    from smolfs.postinst import DEFAULT_TIMEOUT

    limit = given if given is not None else svc.postinst_timeout
    if limit is None:
        return DEFAULT_TIMEOUT
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit >= 0:
        raise UsageError(f"postinst time limit must be a number of seconds >= 0 "
                         f"(0: no limit), not {limit!r}")
    return float(limit)


def _opt_path(path: str | os.PathLike[str] | None) -> str | None:
    return os.fspath(path) if path is not None else None


def _make_image(p: Plan, sources: Sequence[SetSource], fast: FastCopies | None,
                postinst_timeout: float = 0, force: bool = False,
                packages: Any = None
                ) -> tuple[int, list[str]]:
    """Assemble the tree, run the postinst scripts, write the image; its size and the
    digests of the sets. Everything but the finished image stays in a staging
    directory beside it, from which the image is renamed into place. A read-write
    root keeps room to live (RW_FREE_*)."""
    from smolfs.mkfs import Room, write_image
    from smolfs.sources import Spool, WriteError
    from smolfs.staging import staging_dir

    workdir = p.image.resolve().parent
    with staging_dir(workdir) as work, Spool(dir=str(workdir)) as spool:
        tree, digests = assemble(p, sources, spool, fast, packages)
        if p.service.postinst:
            from smolfs.postinst import run_scripts

            run_scripts(tree, p.service.postinst, work / "root", {
                "SERVICE": p.service.name, "ARCH": p.arch.value, "FS": p.fs,
                "RO": "yes" if p.ro else "no",
            }, timeout=postinst_timeout, binds=p.service.postinst_bind)
        (work / "image").mkdir()  # apart from root/, home/... whatever the image's name
        staged = work / "image" / p.image.name
        with step(f"write {p.image.name} ({p.fs})"):
            try:
                room = None if p.ro or p.size_mb else Room(RW_FREE_FILES, RW_FREE_SPACE)
                size = write_image(tree, staged, fstype=p.fs,
                                   size=p.size_mb * MIB if p.size_mb else None,
                                   room=room, force=force)
            except ImageTooSmall as err:
                need = math.ceil(err.minimum / MIB)
                raise ImageTooSmall(
                    f"{p.size_mb} MB is too small for service {p.service.name!r}: "
                    f"the content needs at least {need} MB",
                    minimum=err.minimum,
                    hint=f"use -m {need} or more, or leave -m out for an automatic size",
                ) from None
            except WriteError as err:  # name the image's directory, not the staging one
                here = str(staged.parent)
                raise WriteError(err.message.replace(here, str(workdir)),
                                 hint=(err.hint or "").replace(here, str(workdir))
                                 or None) from None
        os.replace(staged, p.image)
    return size, digests


def plan(
    service: str = "rescue",
    image: str | os.PathLike[str] | None = None,
    sets: str | Sequence[str | os.PathLike[str]] | None = None,
    size_mb: int | None = None,
    fs: str | None = None,
    arch: str = "amd64",
    release: str | None = None,
    ro: bool | None = None,
    services_dir: str | os.PathLike[str] | None = None,
    pkgs: str | Sequence[str] | None = None,
    pkg_repo: str | None = None,
) -> Plan:
    """Check the arguments and fill in the service's defaults (no side effects)."""
    arch_ = Arch.parse(arch)
    svc = load(service, services_dir)
    fs = fs or svc.fs or "ffs"
    if fs not in FILESYSTEMS:
        raise UsageError(f"unknown filesystem {fs!r} (choose from {', '.join(FILESYSTEMS)})")
    size_mb = size_mb if size_mb is not None else svc.size_mb
    if size_mb is not None and (isinstance(size_mb, bool) or not isinstance(size_mb, int)
                                or size_mb <= 0):
        raise UsageError(f"image size must be a positive number of megabytes, not {size_mb!r}")
    tokens = tuple(_set_tokens(sets, svc))
    dest = Path(image) if image is not None else Path(f"{svc.name}-{arch_.value}.img")
    if dest.is_dir():
        raise UsageError(f"{dest} is a directory; give the image file name with -i")
    parent = dest.resolve().parent
    if not parent.is_dir():
        raise InputError(f"cannot write {dest}: no such directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {dest}: directory {parent} is not writable")
    epoch = source_date_epoch()
    return Plan(
        service=svc, image=dest, set_tokens=tokens, size_mb=size_mb,
        fs=fs, arch=arch_, release=release,
        ro=bool(ro if ro is not None else svc.ro),
        now=int(time.time()) if epoch is None else epoch,
        pkgs=tuple(_pkg_tokens(pkgs, svc)),
        pkg_repo=pkg_repo or svc.pkg_repo,
    )


def _pkg_tokens(pkgs: str | Sequence[str] | None, svc: Service) -> list[str]:
    if pkgs is None:
        return list(svc.pkgs or ())
    items = [pkgs] if isinstance(pkgs, str) else list(pkgs)
    return [t for item in items for t in split_list(item)]


def assemble(p: Plan, sources: Sequence[SetSource], spool: Any,
             fast: FastCopies | None = None, packages: Any = None) -> tuple[Tree, list[str]]:
    """The image tree: the sets, then fstab, the service, devices and rescue links.

    Returns the tree and the SHA512 digest of each set archive. With *fast*, sets are
    read from their fast copies in the cache when there are some, and copies are made
    of the others (:mod:`smolfs.fastsets`). Raises
    :class:`~smolfs.fastsets.DamagedCopy` when a copy cannot be read back.
    """
    tree = Tree(mtime=p.now)
    digests = [add_set(tree, src, spool, fast) for src in sources]
    if packages is not None:  # smolfs.pkg.build.Prepared
        from smolfs.pkg.build import add_packages

        add_packages(tree, packages, spool, p.now, [s.name for s in sources])
    with step(f"add service {p.service.name}"):
        # generated over the sets' fstab, under the service's own if it has one
        tree.add("etc/fstab", _file(fstab(p.fs, p.ro, p.arch), p.now, 0o644))
        add_service(tree, p.service, p.now)
        add_devices(tree, p.arch, p.now)
        add_rescue_links(tree, p.now)
    return tree, digests


class FastCopies:
    """Sets are read from (and kept as) fast copies, except those whose digest is in
    ``avoid`` (copies found damaged) and those already quick to read (zstd, plain tar).

    The digests of sets given as files are computed from the start, one thread per set
    (hashlib releases the GIL): they are ready by the time the build, done importing
    and setting up, looks for the copies, and the first set waits for its own digest
    only. A file's digest is remembered for its next builds
    (:func:`smolfs.fastsets.remember_digest`). :meth:`close` (or the end of a ``with``
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
        from smolfs.sources import detect_format

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
        from smolfs import fastsets

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

    Raises :class:`~smolfs.fastsets.DamagedCopy` when the copy itself is corrupt or
    truncated, and only then: a member the tree cannot take, or a failure to write the
    spool, is the build's error, and the copy stays."""
    from smolfs.sources import ArchiveCorrupt, add_archive

    digest = fast.digest(src) if fast is not None else None
    if fast is None or digest is None:
        with step(f"stream {src.path.name}"):
            return add_archive(tree, src.path, spool).sha512
    from smolfs import fastsets

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


def manifest_for(p: Plan, sources: Sequence[SetSource], digests: Sequence[str],
                 size: int) -> dict[str, Any]:
    return {
        "tool": "mksmolnb",
        "format": _manifest.FORMAT,
        "version": VERSION,
        "image": p.image.name,
        "service": p.service.name,
        "arch": p.arch.value,
        "release": p.release,
        "fs": p.fs,
        "size": size,
        "ro": p.ro,
        "sets": [{"name": s.name, "file": s.path.name, "sha512": d}
                 for s, d in zip(sources, digests, strict=True)],
        "postinst": [s.name for s in p.service.postinst],
        "ready": p.service.ready,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.now)),
        "built_epoch": p.now,
    }


# ---------------------------------------------------------------------------
# sets


def _set_tokens(sets: str | Sequence[str | os.PathLike[str]] | None, svc: Service) -> list[str]:
    if sets is None:
        return list(svc.sets or ("rescue",))
    if isinstance(sets, str | os.PathLike):
        sets = [sets]
    tokens: list[str] = []
    for item in sets:
        if isinstance(item, os.PathLike):
            tokens.append(os.fspath(item))
        else:
            tokens.extend(split_list(item))
    if not tokens:
        raise UsageError("no sets given", hint="name sets (-x base,etc) or archive files")
    return tokens


def is_archive_path(token: str) -> bool:
    """A token names a file (not a set) when it has a directory part or an archive suffix."""
    return "/" in token or token.endswith(_ARCHIVE_SUFFIXES) or os.path.isfile(token)


def set_name_of(path: Path) -> str:
    """``/x/base.tar.xz`` → ``base``."""
    name = path.name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _resolve_sets(tokens: Sequence[str], release: str | None, arch: str, mirror: str | None,
                  offline: bool, kernel: str | None = None
                  ) -> tuple[list[SetSource], str | None, Path | None]:
    """Archive paths for *tokens*, fetching named sets (and *kernel*); the release used."""
    names = [t for t in tokens if not is_archive_path(t)]
    for n in names:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", n):
            raise UsageError(f"{n!r} is neither a set name nor an archive file")
    fetched: dict[str, Path] = {}
    known: dict[str, str | None] = {}
    kernel_path: Path | None = None
    if names or kernel:
        from smolfs.fetch import DEFAULT_RELEASE, fetch

        release = release or DEFAULT_RELEASE
        what = ", ".join([*names, *([f"kernel {kernel}"] if kernel else [])])
        with step(f"fetch {what} (NetBSD {release} {arch})"):
            res = fetch(names, release=release, arch=arch, kernel=kernel, mirror=mirror,
                        offline=offline)
        fetched = {n: Path(res.sets[n]) for n in names}
        known = {n: res.digests.get(n) for n in names}
        kernel_path = Path(res.kernel).resolve() if res.kernel else None
    out: list[SetSource] = []
    for t in tokens:
        if t in fetched:
            out.append(SetSource(t, fetched[t], known.get(t)))
            continue
        path = Path(t)
        try:
            st = path.stat()
        except OSError as err:
            raise InputError(f"set archive {t}: {err.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"set archive {t} is not a regular file")
        out.append(SetSource(set_name_of(path), path))
    return out, release, kernel_path


# ---------------------------------------------------------------------------
# reusing an up-to-date image


def inputs_key(p: Plan, sources: Sequence[SetSource], kernel: Path | None,
               packages: Sequence[Path] = ()) -> str:
    """A digest of everything a build reads: options, set files, service files, kernel.

    Archives and the kernel are identified by path, size and modification time (as
    make does), service files by their content (:func:`smolfs.staleness.inputs`).
    """
    return _inputs(p, sources, kernel, packages)[0]


def _inputs(p: Plan, sources: Sequence[SetSource], kernel: Path | None,
            packages: Sequence[Path] = ()) -> tuple[str, list[list[object]]]:
    fields = (VERSION, p.service.name, p.fs, p.arch.value, p.release, p.ro, p.size_mb,
              os.environ.get("SOURCE_DATE_EPOCH"),
              *((p.pkgs, p.pkg_repo) if p.pkgs else ()))
    files = [*(s.path for s in sources), *([kernel] if kernel else []), *packages]
    trees = [t for t in (p.service.path, p.service.common) if t is not None]
    return staleness.inputs(fields, files, trees, dirs=[p.service.path.parent])


def up_to_date(image: Path, key: str) -> dict[str, Any] | None:
    """The manifest of *image* when it was built from inputs *key* and not modified since."""
    return staleness.up_to_date(image, key)


# ---------------------------------------------------------------------------
# what the build adds to the sets


def _file(content: str | bytes, mtime: int, mode: int) -> Node:
    data = content.encode() if isinstance(content, str) else content
    return Node(Kind.FILE, mode=mode, mtime=mtime, data=BytesData(data))


def fstab(fs: str, ro: bool, arch: Arch = Arch.AMD64) -> str:
    """The generated ``/etc/fstab``: the root filesystem on the first virtio disk
    (``ld0a``; ``ld4a`` on aarch64, see :attr:`Arch.root_disk`)."""
    opts = "ro" if ro else "rw"
    return (
        "# /etc/fstab written by smolfs build\n"
        f"/dev/{arch.root_disk}a / {FSTAB_TYPE[fs]} {opts} 1 1\n"
    )


def add_overlay(tree: Tree, host_dir: Path, prefix: str, mtime: int) -> None:
    """Copy a host directory into the tree below *prefix*, owned root:wheel.

    Modes are normalised (0755 for directories and executable files, else 0644)
    so that the image does not depend on the host's umask or owner.
    """
    tree.mkdirs(prefix, mtime=mtime)
    for dirpath, dirnames, filenames in os.walk(host_dir):
        dirnames.sort()
        rel = os.path.relpath(dirpath, host_dir)
        base = prefix if rel == "." else f"{prefix}/{rel}"
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                tree.add(f"{base}/{d}", Node(Kind.SYMLINK, mtime=mtime,
                                             target=os.fsencode(os.readlink(full))))
            else:
                tree.mkdirs(f"{base}/{d}", mtime=mtime)
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                node = Node(Kind.SYMLINK, mtime=mtime, target=os.fsencode(os.readlink(full)))
            elif stat.S_ISREG(st.st_mode):
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                node = Node(Kind.FILE, mode=mode, mtime=mtime, data=FileData(full))
            else:
                raise InputError(f"{full}: only files, directories and symlinks may be "
                                 "in a service directory")
            tree.add(f"{base}/{f}", node)


def add_service(tree: Tree, svc: Service, mtime: int) -> None:
    """``<service>/etc`` over ``/etc``; ``common`` into ``/etc/include``."""
    add_overlay(tree, svc.etc, "etc", mtime)
    if svc.common is not None:
        add_overlay(tree, svc.common, "etc/include", mtime)


def add_devices(tree: Tree, arch: Arch, mtime: int) -> None:
    """Device nodes for *arch* in ``/dev``; nodes the sets already have are kept."""
    if tree.get("dev") is None:
        tree.mkdirs("dev", mtime=mtime)
    for d in device_nodes(arch):
        path = f"dev/{d.name}"
        if tree.get(path) is None:
            tree.add(path, Node(d.kind, mode=d.mode, uid=0, gid=d.gid, mtime=mtime,
                                rdev=(d.major, d.minor)))


def add_rescue_links(tree: Tree, mtime: int) -> None:
    """``sbin/init`` → ``/rescue/init`` etc., for each program /rescue has and the tree lacks."""
    for link, target in RESCUE_LINKS:
        if tree.get(target) is not None and tree.get(link) is None:
            tree.mkdirs(os.path.dirname(link), mtime=mtime)
            tree.add(link, Node(Kind.SYMLINK, mode=0o755, mtime=mtime, target=target.encode()))


callable_module(__name__, "build")  # smolfs.build(...) once this module is imported
