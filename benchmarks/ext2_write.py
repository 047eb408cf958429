#!/usr/bin/env python3
"""Speed of the ext2 writer against ``mke2fs -t ext2 -d`` on a NetBSD-base-shaped tree.

Usage: python benchmarks/ext2_write.py [--runs N] [--files N] [--mbytes N] [--bsize N]

Without --bsize each tool picks its own block size (both choose 1 KiB below 512 MiB).

Builds a deterministic corpus (default 8,000 files, 250 MB: mostly small files, a few
large ones, some symlinks and hard links) in a temporary directory, then times, in
the same run, N times each (default 5):

- smolfs: walk the directory into a Tree (plain ``os.scandir``) and ``ext2.write``;
- mke2fs: ``mke2fs -q -F -t ext2 [-b BSIZE] -d DIR IMAGE SIZE`` with the same size.

Prints min/median seconds, smolfs's peak memory (ru_maxrss of a child process) and
the ratio smolfs/mke2fs of the medians. Target: ratio at most 1.0.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smolfs.ext2 import Ext2Options, minimum_size  # noqa: E402
from smolfs.tree import FileData, Kind, Node, Tree  # noqa: E402


def make_corpus(root: Path, files: int, total: int) -> None:
    """Deterministic tree: ~1 directory per 12 files, lognormal sizes, 4 large files."""
    rng = random.Random(1)
    dirs = [root]
    for i in range(max(1, files // 12)):
        d = rng.choice(dirs) / f"d{i:04d}"
        d.mkdir()
        dirs.append(d)
    large = [total // 10, total // 16, total // 25, total // 40]
    sizes = [min(int(rng.lognormvariate(8.6, 1.6)), 4 << 20) for _ in range(files - len(large))]
    scale = (total - sum(large)) / max(1, sum(sizes))
    sizes = [max(0, int(s * scale)) for s in sizes] + large
    chunk = rng.randbytes(1 << 20)
    made: list[Path] = []
    for i, size in enumerate(sizes):
        p = rng.choice(dirs) / f"f{i:05d}.bin"
        with open(p, "wb") as f:
            left = size
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
        made.append(p)
    for i in range(files // 40):
        src = rng.choice(made)
        d = rng.choice(dirs)
        os.symlink(os.path.relpath(src, d), d / f"s{i:04d}")
        if i % 4 == 0:
            os.link(src, d / f"h{i:04d}")


def tree_from(root: Path) -> Tree:
    tree = Tree()
    seen: dict[tuple[int, int], Node] = {}

    def fill(dirnode: Node, path: str) -> None:
        with os.scandir(path) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                name = os.fsencode(e.name)
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    dirnode.children[name] = seen[key]
                    seen[key].nlink_extra += 1
                    continue
                kind = Kind(st.st_mode & 0o170000)
                node = Node(kind, mode=st.st_mode & 0o7777, mtime=int(st.st_mtime))
                if kind == Kind.DIR:
                    fill(node, e.path)
                elif kind == Kind.FILE:
                    node.data = FileData(e.path, size=st.st_size, sparse=False)
                    seen[key] = node
                elif kind == Kind.SYMLINK:
                    node.target = os.fsencode(os.readlink(e.path))
                dirnode.children[name] = node

    fill(tree.root, str(root))
    return tree


def run_smolfs(corpus: Path, image: Path, size: int, bsize: int | None) -> tuple[float, int]:
    """Time one write in a child process; return (seconds, peak RSS in bytes)."""
    code = (
        "import os,sys,time,resource\n"
        f"sys.path.insert(0,{str(REPO)!r})\n"
        "from benchmarks.ext2_write import tree_from\n"
        "from smolfs.ext2 import Ext2Options, write\n"
        "from pathlib import Path\n"
        "t=time.perf_counter()\n"
        f"tree=tree_from(Path({str(corpus)!r}))\n"
        f"fd=os.open({str(image)!r},os.O_RDWR|os.O_CREAT|os.O_TRUNC,0o644)\n"
        f"write(tree,fd,{size},Ext2Options(bsize={bsize},timestamp=0))\n"
        "os.close(fd)\n"
        "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    return float(out[0]), int(out[1]) * 1024


def run_mke2fs(corpus: Path, image: Path, size: int, bsize: int | None) -> float:
    image.write_bytes(b"")
    argv = ["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(corpus), str(image), f"{size // 1024}k"]
    if bsize:
        argv[5:5] = ["-b", str(bsize)]
    t = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=8000)
    ap.add_argument("--mbytes", type=int, default=250)
    ap.add_argument("--bsize", type=int, default=None)
    args = ap.parse_args()
    if not shutil.which("mke2fs"):
        print("mke2fs not found (install e2fsprogs)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="ext2bench.") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        make_corpus(corpus, args.files, args.mbytes << 20)
        opts = Ext2Options(bsize=args.bsize)
        size = int(minimum_size(tree_from(corpus), opts) * 1.10) // 4096 * 4096
        print(f"corpus: {args.files} files, {args.mbytes} MB; image {size} bytes, "
              f"bsize {args.bsize or 'default'}")
        ours, peaks, theirs = [], [], []
        for _ in range(args.runs):
            secs, peak = run_smolfs(corpus, Path(tmp) / "smol.img", size, args.bsize)
            ours.append(secs)
            peaks.append(peak)
            theirs.append(run_mke2fs(corpus, Path(tmp) / "mke2fs.img", size, args.bsize))
        check = subprocess.run(["e2fsck", "-fn", str(Path(tmp) / "smol.img")],
                               capture_output=True, text=True)
        print(f"{'tool':8} {'min s':>8} {'median s':>9}")
        print(f"{'smolfs':8} {min(ours):8.3f} {statistics.median(ours):9.3f}   "
              f"peak RSS {max(peaks) / 2**20:.0f} MB")
        print(f"{'mke2fs':8} {min(theirs):8.3f} {statistics.median(theirs):9.3f}")
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"ratio smolfs/mke2fs (median): {ratio:.2f}   e2fsck -fn exit {check.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
