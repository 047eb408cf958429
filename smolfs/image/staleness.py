"""Is a built image still up to date? One answer for the builder (:func:`inputs`,
:func:`up_to_date`: the digest the manifest records) and for the launcher
(:func:`remember`, :func:`fresh`: the request and the stat of every input, kept in the
cache; no builder, no hashing). ``os`` only at import. The rules:
``smolfs/README.md`` ("Reusing an image")."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the launcher imports this module
if TYPE_CHECKING:
    from collections.abc import Sequence

#: The manifest's name beside its image (``IMAGE.json``).
SUFFIX = ".json"


def manifest_path(image: str | os.PathLike[str]) -> str:
    return os.fspath(image) + SUFFIX


def stat_of(path: str, follow: bool = False) -> list[object] | None:
    """What changes when a file or directory is replaced, written, or (a directory) gets
    or loses an entry: inode, size, modification time; None when it is missing.
    ``follow``: of what a symbolic link points to, and a third item True."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, *([True] if follow else [])]


def _tree(top: str) -> list[tuple[str, str, bool]]:
    """Every entry below ``top`` in a stable order: (full path, path relative to top,
    is a directory). Symbolic links to directories are entries, not followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            out.append((full, os.path.relpath(full, top), False))
        for name in dirnames:
            full = os.path.join(dirpath, name)
            out.append((full, os.path.relpath(full, top), True))
    return out


def inputs(fields: Sequence[object], files: Sequence[str | os.PathLike[str]],
           trees: Sequence[str | os.PathLike[str]], dirs: Sequence[str | os.PathLike[str]] = ()
           ) -> tuple[str, list[list[object]]]:
    """(digest of the inputs, their stats) of a build.

    ``fields``: the options; ``files``: set archives and kernel (by resolved path, size
    and mtime, as make does); ``trees``: the service directories (every file by content
    and executable bit, symbolic links by target); ``dirs``: directories whose entries
    decide which trees are read (the services directory: a ``common/`` appearing there
    replaces the shipped one), stat'ed only. The stats are taken before the content is
    read: a file changed while it is read leaves a stat that no longer matches.
    """
    import hashlib

    stats: list[list[object]] = []
    for f in files:  # a set or kernel named through a symbolic link: its target counts
        stats.append([os.fspath(f), stat_of(os.fspath(f), follow=True)])
    for f in [*dirs, *trees]:
        stats.append([os.fspath(f), stat_of(os.fspath(f))])
    listing = [(os.fspath(top), _tree(os.fspath(top))) for top in trees]
    for _top, entries in listing:
        stats.extend([full, stat_of(full)] for full, _rel, _d in entries)
    h = hashlib.sha256()

    def add(*parts: object) -> None:
        h.update(repr(parts).encode() + b"\n")

    add(*fields)
    for f in files:
        st = os.stat(f)
        add(os.path.realpath(f), st.st_size, st.st_mtime_ns)
    for top, entries in listing:
        for full, rel, is_dir in entries:
            if os.path.islink(full):
                add(top, rel, "->", os.readlink(full))
            elif not is_dir:
                with open(full, "rb") as fh:
                    add(top, rel, os.access(full, os.X_OK), fh.read())
    return h.hexdigest(), stats


def stats_hold(stats: object) -> bool:
    """Does every input recorded by :func:`inputs` still have its stat? (``os`` only.)"""
    if not isinstance(stats, list) or not stats:
        return False
    for entry in stats:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            return False
        want = entry[1]
        if not isinstance(want, list) or stat_of(entry[0], follow=len(want) == 4) != want:
            return False
    return True


def read_manifest(image: str | os.PathLike[str]) -> dict[str, object] | None:
    """The manifest beside ``image`` if it is one of ours, else None."""
    import json

    try:
        with open(manifest_path(image), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "mksmolnb" else None


def unmodified(image: str | os.PathLike[str], manifest: dict[str, object]) -> bool:
    """Can ``image`` be kept as the build left it: its size the manifest's, and, for a
    read-only root, not written to after the manifest was? A read-write root (manifest
    ``"ro": false``) keeps what its VM wrote: that is its purpose (``--force`` rebuilds)."""
    try:
        img, man = os.stat(image), os.stat(manifest_path(image))
    except OSError:
        return False
    if img.st_size != manifest.get("size"):
        return False
    return manifest.get("ro") is False or img.st_mtime_ns <= man.st_mtime_ns


def up_to_date(image: str | os.PathLike[str], key: str) -> dict[str, object] | None:
    """The manifest of ``image`` when it was built from inputs ``key`` and not modified
    since (the builder's check: ``key`` from :func:`inputs`)."""
    old = read_manifest(image)
    if old is None or old.get("inputs") != key or not unmodified(image, old):
        return None
    return old


def request(asked: dict[str, object]) -> list[object] | None:
    """What a build was asked for: the options that decide the image by name
    (:func:`smolfs.image.options.request`: paths absolute), with the environment that changes
    what the build reads. None when a stat of the inputs cannot tell (a daily build,
    whose checksums move: the fetch decides)."""
    from smolfs.cachedir import cache_root

    release = asked.get("release")
    if isinstance(release, str) and not all(c.isdigit() or c == "." for c in release):
        return None
    return [*([name, value] for name, value in asked.items()),
            os.path.abspath(cache_root()), os.environ.get("SOURCE_DATE_EPOCH")]


def record_path(image: str | os.PathLike[str]) -> str | None:
    """Where the stats of ``image``'s inputs are kept: the cache, by the image's device
    and inode (the manifest stays the same on every host: it holds no stat)."""
    from smolfs.cachedir import cache_root

    try:
        st = os.stat(image)
    except OSError:
        return None
    return os.path.join(cache_root(), "image-inputs", f"{st.st_dev}-{st.st_ino}.json")


def remember(image: str | os.PathLike[str], key: str, stats: list[list[object]],
             asked: list[object] | None) -> None:
    """Keep what :func:`fresh` needs for ``image``, just built or found up to date with
    inputs ``key`` (atomically; a cache that cannot be written is only slower)."""
    import json

    from smolfs.fileutil import write_atomic

    path = record_path(image)
    if path is None or asked is None:
        return
    data = {"image": os.path.abspath(image), "inputs": key, "request": asked,
            "manifest": stat_of(manifest_path(image)), "input_stats": stats}
    try:  # noqa: SIM105  (contextlib costs milliseconds)
        write_atomic(path, json.dumps(data).encode(), makedirs=True)
    except OSError:
        pass


def forget(image: str | os.PathLike[str]) -> None:
    """Drop the record of ``image`` (about to be replaced by a new build)."""
    import contextlib

    path = record_path(image)
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def recorded(image: str | os.PathLike[str]) -> dict[str, object] | None:
    """The record :func:`remember` kept for ``image``, if any."""
    import json

    path = record_path(image)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def snapshot(image: str | os.PathLike[str]) -> dict[str, object] | None:
    """What :func:`holds` needs to tell, from stats alone, that ``image`` is still as up
    to date as it is now: None unless its record matches its manifest, the image is
    unmodified and every input still has its recorded stat."""
    rec = recorded(image)
    old = read_manifest(image)
    if rec is None or old is None or rec.get("inputs") != old.get("inputs") \
            or rec.get("image") != os.path.abspath(image):
        return None
    snap = {"image": os.path.abspath(image), "manifest": rec.get("manifest"),
            "size": old.get("size"), "ro": old.get("ro"), "stats": rec.get("input_stats")}
    return snap if holds(snap) else None


def holds(snap: dict[str, object]) -> bool:
    """Is the image of :func:`snapshot` ``snap`` still up to date: its manifest the same
    file, the image kept (:func:`unmodified`), every input's stat the same? (``os`` only.)"""
    image = str(snap.get("image"))
    return (snap.get("manifest") is not None
            and stat_of(manifest_path(image)) == snap.get("manifest")
            and unmodified(image, snap) and stats_hold(snap.get("stats")))


def fresh(image: str | os.PathLike[str], asked: list[object] | None, version: str
          ) -> dict[str, object] | None:
    """The manifest of ``image`` when a build asked ``asked`` (:func:`request`) by this
    ``version`` would keep it: same request and version, manifest and image as the last
    build left them, every input's stat unchanged. Without the builder or any hashing."""
    if asked is None:
        return None
    rec = recorded(image)
    if rec is None or rec.get("request") != asked or snapshot(image) is None:
        return None
    old = read_manifest(image)
    return old if old is not None and old.get("version") == version else None
