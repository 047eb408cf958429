#!/usr/bin/env python3
"""A deterministic corpus shaped like NetBSD's base set, for filesystem benchmarks.

Usage: python benchmarks/corpus.py [--files 8000] [--mb 250] [--seed 0] [--dir DIR]

About 8,000 regular files and 250 MB by default, as NetBSD's base set unpacked:
mostly small files (manual pages, headers, scripts, small programs), some hundreds of
medium ones (libraries, larger programs), a handful of large ones (libc archives,
the compiler); about 600 directories, symlinks (library versions, ``usr/lib`` names)
and hard links (programs installed under several names). File contents are slices of
a seeded random pool: the same parameters give the same tree, byte for byte.

The tree is generated once into the cache (``$MKSMOLNB_CACHE`` or
``$XDG_CACHE_HOME/mksmolnb``, else ``~/.cache/mksmolnb``) under a name made of its
parameters, and reused after that; ``corpus(...)`` returns its path.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

VERSION = 1
MTIME = 1_700_000_000
POOL = 8 << 20

TOPS = ["bin", "sbin", "libexec", "lib", "usr/bin", "usr/sbin", "usr/lib", "usr/libexec",
        "usr/include", "usr/share/man", "usr/share/misc", "usr/share/locale", "usr/share/doc",
        "usr/share/examples", "usr/share/i18n", "usr/mdec", "etc", "var/db"]


def cache_dir() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from smolfs.cachedir import cache_root

    return Path(cache_root())


def _sizes(rng: random.Random, files: int, total: int) -> list[int]:
    """File sizes: 1% large, 11% medium, the rest small; scaled to *total* bytes."""
    n_large = max(1, files // 100)
    n_medium = files * 11 // 100
    n_small = files - n_large - n_medium
    sizes = ([int(rng.lognormvariate(8.3, 1.1)) for _ in range(n_small)]
             + [int(rng.uniform(64e3, 900e3)) for _ in range(n_medium)]
             + [int(rng.uniform(2e6, 9e6)) for _ in range(n_large)])
    scale = total / max(1, sum(sizes))
    sizes = [max(0, int(s * scale)) for s in sizes]
    for i in rng.sample(range(n_small), max(1, files // 200)):
        sizes[i] = 0  # empty files exist too
    rng.shuffle(sizes)
    return sizes


def generate(root: Path, files: int = 8000, mb: int = 250, seed: int = 0) -> dict[str, int]:
    """Write the corpus under *root* (which must not exist); return counts."""
    rng = random.Random(f"corpus-{seed}")
    pool = rng.randbytes(POOL)
    dirs: list[str] = []
    for top in TOPS:
        dirs.append(top)
        for i in range(rng.randint(8, 40)):
            sub = f"{top}/d{i:02d}"
            dirs.append(sub)
            if rng.random() < 0.3:
                dirs.append(f"{sub}/s{rng.randint(0, 9)}")
    dirs = sorted(set(dirs))
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for i, size in enumerate(_sizes(rng, files, mb * 1_000_000)):
        d = rng.choice(dirs)
        path = f"{d}/f{i:05d}" + rng.choice(["", "", ".so.1", ".h", ".1", ".conf", ".a"])
        with open(root / path, "wb") as f:
            left = size
            while left:
                start = rng.randrange(0, POOL - 1)
                n = min(left, POOL - start)
                f.write(pool[start : start + n])
                left -= n
        os.chmod(root / path, rng.choice([0o555, 0o555, 0o444, 0o644, 0o4555]))
        paths.append(path)
    links = 0
    for path in rng.sample(paths, files // 40):
        os.link(root / path, root / f"{path}.hl")
        links += 1
    symlinks = 0
    for path in rng.sample(paths, files // 25):
        target = os.path.basename(path) if rng.random() < 0.7 else "/" + path
        os.symlink(target, root / f"{path}.ln")
        symlinks += 1
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)
        os.utime(dirpath, (MTIME, MTIME))
    return {"dirs": len(dirs), "files": files, "hardlinks": links, "symlinks": symlinks}


def corpus(files: int = 8000, mb: int = 250, seed: int = 0, base: Path | None = None) -> Path:
    """The corpus directory for these parameters, generated on first use."""
    base = base or cache_dir()
    path = base / f"bench-corpus-v{VERSION}-{files}f-{mb}mb-s{seed}"
    done = path.with_name(path.name + ".complete")
    if done.exists() and path.is_dir():
        return path
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".corpus.", dir=base))
    try:
        generate(tmp / "tree", files, mb, seed)
        os.utime(tmp / "tree", (MTIME, MTIME))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp / "tree", path)
        done.write_text("ok\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8000)
    ap.add_argument("--mb", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, help="where to keep corpora (default: the cache)")
    args = ap.parse_args()
    path = corpus(args.files, args.mb, args.seed, args.dir)
    total = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)
    count = sum(len(fs) for _, _, fs in os.walk(path))
    print(f"{path}: {count} names, {total / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
