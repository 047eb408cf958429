"""Build a bootable NetBSD root image for a service: :func:`build` (``smolfs build``).

Plan (:mod:`smolfs.image.plan`), sets streamed into a tree, the image's own content
(:mod:`smolfs.image.content`), postinst scripts, the image written atomically with its
manifest; an image whose inputs did not change is kept. See ``smolfs/README.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolfs import __version__ as VERSION
from smolfs.errors import ImageTooSmall, UsageError
from smolfs.fs.tree import Tree
from smolfs.image import manifest as _manifest
from smolfs.image import staleness
from smolfs.image.content import (
    add_devices,
    add_rescue_links,
    add_service,
    file_node,
    fstab,
)
from smolfs.image.options import (
    OPTIONS,
    BuildOptions,
)
from smolfs.image.options import request as options_request
from smolfs.image.plan import Plan, options_of, plan
from smolfs.log import info, step, warn
from smolfs.sets.fastcopies import FastCopies, add_set
from smolfs.sets.fastsets import DamagedCopy, discard
from smolfs.sets.setfiles import SetSource, resolve_sets

MIB = 1 << 20
#: What an automatically sized read-write root keeps free beyond its content (makefs
#: -b and -f); the free inodes also follow the free space (smolfs.image.mkfs.auto_inodes).
#: A read-only root gets the usual 10% headroom only.
RW_FREE_SPACE = 32 * MIB
RW_FREE_FILES = 4096


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` made: the image path and its manifest (also in ``IMAGE.json``)."""

    image: Path
    manifest: dict[str, Any]


def build(*, options: BuildOptions | None = None, **given: Any) -> BuildResult:
    """Build the root image of a service; return its path and manifest.

    Takes a :class:`~smolfs.image.options.BuildOptions` (``options=``) or its fields as
    keywords (``build(service="bozohttpd", sets="base,etc")``), never both; the options
    are declared in :data:`smolfs.image.options.OPTIONS`.
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
    time the set is read (see :mod:`smolfs.sets.fastsets`); False reads the archives only.
    ``pkgs``: pkgsrc packages (names or patterns, list or comma/space-separated string;
    None → the service's ``PKGS``) installed with their dependencies from ``pkg_repo``
    (None → the service's ``PKG_REPO``, ``$MKSMOLNB_PKG_REPO``, else the official
    repository of the release; see :mod:`smolfs.pkg`).
    ``postinst_timeout``: seconds each postinst script may run (0: no limit); None →
    the service's ``POSTINST_TIMEOUT``, else :data:`smolfs.image.postinst.DEFAULT_TIMEOUT`.
    Everything temporary lives in a ``.smolfs-staging-*`` directory beside the image
    (:mod:`smolfs.image.staging`), removed at the end; those of builds that were killed are
    removed by the next build. Raises :class:`~smolfs.errors.SmolError` subclasses;
    nothing is left at the destination on failure.
    """
    asked = options_of(options, given, "build")
    planned = plan(options=asked)
    if planned.size_mb:  # a size over the bound fails before any set is read
        from smolfs.fs.sizes import check_bound

        check_bound(planned.size_mb * MIB, str(planned.image), asked.force,
                    mistake=f"-m is in MiB: -m {planned.size_mb} is "
                            f"{planned.size_mb // 1024} GiB")
    limit = _postinst_limit(planned.postinst_timeout)
    from smolfs.image.staging import sweep

    sweep(planned.image.resolve().parent)  # what killed builds left here, even if none is built
    sources, release, kernel_path = resolve_sets(planned.set_tokens, planned.release,
                                                 planned.arch.value, asked.mirror,
                                                 asked.offline, asked.kernel)
    if release != planned.release:
        planned = dataclasses.replace(planned, options=planned.options.replace(release=release))
    packages = None
    if planned.pkgs:
        from smolfs.pkg.build import prepare
        from smolfs.sets.release import DEFAULT_RELEASE

        packages = prepare(planned.pkgs, planned.pkg_repo, planned.arch.value,
                           planned.release or DEFAULT_RELEASE, asked.mirror, asked.offline)
    key, stats = _inputs(planned, sources, kernel_path, packages.files if packages else ())
    request = staleness.request(options_request(asked))
    force = asked.force
    if not force:
        old = up_to_date(planned.image, key)
        if old is not None:
            since = "" if planned.ro is False else ", not modified since"
            info(f"{planned.image}: up to date (same inputs{since}); --force rebuilds")
            staleness.remember(planned.image, key, stats, request)  # for staleness.fresh
            return BuildResult(image=planned.image, manifest=old)

    staleness.forget(planned.image)  # the record of the image this build replaces
    fast = FastCopies(sources) if asked.fast_copies else None
    with fast if fast is not None else contextlib.nullcontext():
        while True:
            try:
                size, digests = _make_image(planned, sources, fast, limit, force, packages)
                break
            except DamagedCopy as err:  # removed; this set is read from its archive instead
                warn(f"{err.message}; removed it, reading the set itself")
                discard(err.path)
                assert fast is not None
                fast.avoid.add(err.digest)

    data = manifest_for(planned, sources, digests, size)
    if kernel_path is not None:
        data["kernel"] = str(kernel_path)
    if packages is not None:
        data["pkgs"] = packages.manifest()
    data["inputs"] = key
    _manifest.write(planned.image, data)
    staleness.remember(planned.image, key, stats, request)  # for smolfs.image.staleness.fresh
    info(f"{planned.image}: {_manifest.format_size(size)} {planned.fs}"
         f"{' (read-only root)' if planned.ro else ''}, service {planned.service.name}, "
         f"sets {', '.join(s.name for s in sources)}")
    return BuildResult(image=planned.image, manifest=data)


def _postinst_limit(limit: float | None) -> float:
    """Seconds each postinst script may run (0: no limit)."""
    from smolfs.image.postinst import DEFAULT_TIMEOUT

    if limit is None:
        return DEFAULT_TIMEOUT
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit >= 0:
        raise UsageError(f"postinst time limit must be a number of seconds >= 0 "
                         f"(0: no limit), not {limit!r}")
    return float(limit)


def _make_image(planned: Plan, sources: Sequence[SetSource], fast: FastCopies | None,
                postinst_timeout: float = 0, force: bool = False,
                packages: Any = None
                ) -> tuple[int, list[str]]:
    """Assemble the tree, run the postinst scripts, write the image; its size and the
    digests of the sets. Everything but the finished image stays in a staging
    directory beside it, from which the image is renamed into place. A read-write
    root keeps room to live (RW_FREE_*)."""
    from smolfs.image.mkfs import Room, write_image
    from smolfs.image.staging import staging_dir
    from smolfs.sets.spool import Spool, WriteError

    workdir = planned.image.resolve().parent
    with staging_dir(workdir) as work, Spool(dir=str(workdir)) as spool:
        tree, digests = assemble(planned, sources, spool, fast, packages)
        if planned.service.postinst:
            from smolfs.image.postinst import run_scripts

            run_scripts(tree, planned.service.postinst, work / "root", {
                "SERVICE": planned.service.name, "ARCH": planned.arch.value, "FS": planned.fs,
                "RO": "yes" if planned.ro else "no",
            }, timeout=postinst_timeout, binds=planned.service.postinst_bind)
        (work / "image").mkdir()  # apart from root/, home/... whatever the image's name
        staged = work / "image" / planned.image.name
        with step(f"write {planned.image.name} ({planned.fs})"):
            try:
                room = None if planned.ro or planned.size_mb else Room(RW_FREE_FILES, RW_FREE_SPACE)
                size = write_image(tree, staged, fstype=planned.fs,
                                   size=planned.size_mb * MIB if planned.size_mb else None,
                                   room=room, force=force)
            except ImageTooSmall as err:
                need = math.ceil(err.minimum / MIB)
                raise ImageTooSmall(
                    f"{planned.size_mb} MB is too small for service {planned.service.name!r}: "
                    f"the content needs at least {need} MB",
                    minimum=err.minimum,
                    hint=f"use -m {need} or more, or leave -m out for an automatic size",
                ) from None
            except WriteError as err:  # name the image's directory, not the staging one
                here = str(staged.parent)
                raise WriteError(err.message.replace(here, str(workdir)),
                                 hint=(err.hint or "").replace(here, str(workdir))
                                 or None) from None
        os.replace(staged, planned.image)
    return size, digests


def assemble(planned: Plan, sources: Sequence[SetSource], spool: Any,
             fast: FastCopies | None = None, packages: Any = None) -> tuple[Tree, list[str]]:
    """The image tree: the sets, then fstab, the service, devices and rescue links.

    Returns the tree and the SHA512 digest of each set archive. With *fast*, sets are
    read from their fast copies in the cache when there are some, and copies are made
    of the others (:mod:`smolfs.sets.fastsets`). Raises
    :class:`~smolfs.sets.fastsets.DamagedCopy` when a copy cannot be read back.
    """
    tree = Tree(mtime=planned.now)
    digests = [add_set(tree, src, spool, fast) for src in sources]
    if packages is not None:  # smolfs.pkg.build.Prepared
        from smolfs.pkg.build import add_packages

        add_packages(tree, packages, spool, planned.now, [s.name for s in sources])
    with step(f"add service {planned.service.name}"):
        # generated over the sets' fstab, under the service's own if it has one
        tree.add("etc/fstab", file_node(fstab(planned.fs, planned.ro, planned.arch),
                                        planned.now, 0o644))
        add_service(tree, planned.service, planned.now)
        if planned.hostname is not None:  # over the sets' and the service's own
            tree.add("etc/myname", file_node(f"{planned.hostname}\n", planned.now, 0o644))
        add_devices(tree, planned.arch, planned.now)
        add_rescue_links(tree, planned.now)
    return tree, digests


def manifest_for(planned: Plan, sources: Sequence[SetSource], digests: Sequence[str],
                 size: int) -> dict[str, Any]:
    return {
        "tool": "mksmolnb",
        "format": _manifest.FORMAT,
        "version": VERSION,
        "image": planned.image.name,
        **{o.name: getattr(planned.options, o.name) for o in OPTIONS if o.manifest},
        "size": size,
        "sets": [{"name": s.name, "file": s.path.name, "sha512": d}
                 for s, d in zip(sources, digests, strict=True)],
        "postinst": [s.name for s in planned.service.postinst],
        "ready": planned.service.ready,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(planned.now)),
        "built_epoch": planned.now,
    }


def inputs_key(planned: Plan, sources: Sequence[SetSource], kernel: Path | None,
               packages: Sequence[Path] = ()) -> str:
    """A digest of everything a build reads: options, set files, service files, kernel.

    Archives and the kernel are identified by path, size and modification time (as
    make does), service files by their content (:func:`smolfs.image.staleness.inputs`).
    """
    return _inputs(planned, sources, kernel, packages)[0]


def _inputs(planned: Plan, sources: Sequence[SetSource], kernel: Path | None,
            packages: Sequence[Path] = ()) -> tuple[str, list[list[object]]]:
    fields = (VERSION, os.environ.get("SOURCE_DATE_EPOCH"),
              *([o.name, value] for o in OPTIONS if o.keyed
                for value in [getattr(planned.options, o.name)] if value not in (None, ())))
    files = [*(s.path for s in sources), *([kernel] if kernel else []), *packages]
    trees = [t for t in (planned.service.path, planned.service.common) if t is not None]
    return staleness.inputs(fields, files, trees, dirs=[planned.service.path.parent])


def up_to_date(image: Path, key: str) -> dict[str, Any] | None:
    """The manifest of *image* when it was built from inputs *key* and not modified since."""
    return staleness.up_to_date(image, key)


