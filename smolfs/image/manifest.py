"""The build manifest: what an image was built from, written beside it as ``IMAGE.json``.

It records the tool version, service, sets (file names and SHA512 digests),
filesystem, size, read-only flag, architecture, release and build time. It does
not record a digest of the image itself: a read-write root changes as soon as it
boots, so such a digest would mislead more than it helps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from smolfs.errors import InputError
from smolfs.fileutil import atomic_output

FORMAT = 1
SUFFIX = ".json"


def path_for(image: str | os.PathLike[str]) -> Path:
    """``rescue-amd64.img`` → ``rescue-amd64.img.json``."""
    p = Path(image)
    return p.with_name(p.name + SUFFIX)


def write(image: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write *manifest* beside *image*, atomically; return its path."""
    dest = path_for(image)
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    with atomic_output(dest) as f:
        f.write(text.encode())
    return dest


def read(image: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of *image* (or the manifest file itself, when given its path)."""
    p = Path(image)
    mpath = p if p.name.endswith(SUFFIX) and p.is_file() else path_for(p)
    if not p.exists():
        raise InputError(f"{p}: no such image")
    try:
        text = mpath.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            f"{p}: no manifest ({mpath.name} is missing)",
            hint="only images made by 'smolfs build' have one; rebuild the image to get it",
        ) from None
    except OSError as err:
        raise InputError(f"cannot read {mpath}: {err.strerror}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{mpath}: not a valid manifest ({err.msg} at line {err.lineno})"
        ) from None
    if not isinstance(data, dict) or data.get("tool") != "mksmolnb":
        raise InputError(f"{mpath}: not a mksmolnb manifest")
    return data


def format_size(n: int) -> str:
    """As :func:`smolfs.fs.sizes.format_size` (KiB below 1 MiB)."""
    from smolfs.fs.sizes import format_size as fmt

    return fmt(n)


def format_fs(fs: Any) -> str:
    """Lines for the filesystem totals of :class:`smolfs.fs.fsstat.FsStat` *fs*."""
    used_inodes = fs.inodes - fs.free_inodes
    return "\n".join([
        f"fs:        {fs.fstype} {fs.variant}, {format_size(fs.size)}, "
        f"blocks of {format_size(fs.block_size)} (read from the image)",
        f"free:      {format_size(fs.free_bytes)} of {format_size(fs.size)}, "
        f"{fs.free_inodes} of {fs.inodes} inodes ({used_inodes} used)",
    ])


def format_text(m: dict[str, Any]) -> str:
    """A readable rendering of a manifest for ``smolfs info``."""
    lines = [
        f"image:     {m.get('image', '?')}",
        f"service:   {m.get('service', '?')}",
        f"system:    NetBSD {m.get('release') or '(release not known: sets from files)'} "
        f"{m.get('arch', '?')}",
        f"root fs:   {m.get('fs', '?')}, {format_size(int(m.get('size', 0)))}, "
        f"{'read-only' if m.get('ro') else 'read-write'}",
        f"built:     {m.get('built', '?')} by mksmolnb {m.get('version', '?')}",
    ]
    sets = m.get("sets") or []
    lines.append(f"sets:      {len(sets)}")
    for s in sets:
        digest = s.get("sha512") or ""
        lines.append(f"  {s.get('name', '?'):<8} {s.get('file', '?')}  sha512:{digest[:16]}…")
    if m.get("kernel"):
        lines.append(f"kernel:    {m['kernel']}")
    if m.get("ready"):
        lines.append(f"ready:     console line matching {m['ready']!r}")
    pkgs = m.get("pkgs") or {}
    if pkgs.get("installed"):
        lines.append(f"packages:  {len(pkgs['installed'])} from {pkgs.get('repo', '?')}")
        lines.extend(f"  {p.get('name', '?')}" for p in pkgs["installed"])
    scripts = m.get("postinst") or []
    if scripts:
        lines.append(f"postinst:  {', '.join(scripts)}")
    return "\n".join(lines)
