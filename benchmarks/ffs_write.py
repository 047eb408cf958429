"""Speed of the FFS writer against NetBSD's makefs on a NetBSD-base-shaped tree.

Builds a deterministic corpus (about 8,000 files and 250 MB: mostly small files,
a few large ones, symlinks and hard links) in a temporary directory, then writes
a UFS1 image of it with ``smolfs.ffs`` (walk the directory, size automatically
with 10% headroom, write) and with ``makefs -t ffs -o version=1 -s SIZE``,
interleaved, several times each; prints min/median seconds, the ratio and peak
memory.

    python benchmarks/ffs_write.py [--runs 5] [--version 1] [--files 8000] [--mb 250]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smolfs.ffs import FfsOptions, minimum_size, write
from smolfs.tree import FileData, Kind, Node, Tree


def make_corpus(root: Path, files: int, total_mb: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    dirs = [root]
    for i in range(max(1, files // 12)):
        parent = rng.choice(dirs)
        d = parent / f"d{i:04d}"
        d.mkdir()
        dirs.append(d)
    big = [int(total_mb * (1 << 20) * f) for f in (0.12, 0.08, 0.05, 0.04, 0.03)]
    rest = total_mb * (1 << 20) - sum(big)
    small = files - len(big)
    weights = [rng.lognormvariate(0, 1.6) for _ in range(small)]
    scale = rest / sum(weights)
    sizes = big + [max(0, int(w * scale)) for w in weights]
    block = rng.randbytes(1 << 20)
    made: list[Path] = []
    for i, size in enumerate(sizes):
        path = rng.choice(dirs) / f"f{i:05d}"
        with open(path, "wb") as out:
            left = size
            while left:
                n = min(left, len(block))
                out.write(block[:n])
                left -= n
        made.append(path)
    for i in range(files // 40):
        (rng.choice(dirs) / f"l{i:04d}").symlink_to("../" + "x" * rng.randint(1, 90))
    for i in range(files // 100):
        os.link(rng.choice(made), rng.choice(dirs) / f"h{i:04d}")


def tree_of(root: Path) -> Tree:
    """The corpus as a Tree, read the way a directory source does (one lstat a file)."""
    tree = Tree()
    inodes: dict[int, str] = {}

    def scan(directory: str, node: Node, prefix: str) -> None:
        with os.scandir(directory) as it:
            for entry in it:
                path = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    child = Node(Kind.DIR, mode=0o755)
                    node.children[os.fsencode(entry.name)] = child
                    scan(entry.path, child, path + "/")
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1 and st.st_ino in inodes:
                    tree.link(path, inodes[st.st_ino])
                    continue
                if entry.is_symlink():
                    child = Node(Kind.SYMLINK, mode=0o777,
                                 target=os.fsencode(os.readlink(entry.path)))
                else:
                    child = Node(Kind.FILE, mode=0o644,
                                 data=FileData(entry.path, size=st.st_size))
                node.children[os.fsencode(entry.name)] = child
                inodes[st.st_ino] = path

    scan(str(root), tree.root, "")
    return tree


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--files", type=int, default=8000)
    ap.add_argument("--mb", type=int, default=250)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ffsbench-", dir=os.environ.get("TMPDIR")) as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        make_corpus(src, args.files, args.mb)
        opts = FfsOptions(version=args.version)
        tree = tree_of(src)
        size = int(minimum_size(tree, opts) * 1.1) // 8192 * 8192
        ours: list[float] = []
        theirs: list[float] = []
        makefs = shutil.which("makefs")
        for _ in range(args.runs):  # interleaved, so both see the same machine load
            image = Path(tmp) / "ours.img"
            image.unlink(missing_ok=True)

            def run(image: Path = image) -> None:
                tree = tree_of(src)  # read the source, size automatically, write
                auto = int(minimum_size(tree, opts) * 1.1) // 8192 * 8192
                fd = os.open(image, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    write(tree, fd, auto, opts)
                finally:
                    os.close(fd)
            ours.append(timed(run))
            image.unlink()
            if makefs:
                ref = Path(tmp) / "makefs.img"
                ref.unlink(missing_ok=True)
                argv = [makefs, "-t", "ffs", "-o", f"version={args.version}", "-s", str(size),
                        str(ref), str(src)]
                theirs.append(timed(lambda argv=argv: subprocess.run(
                    argv, check=True, stdout=subprocess.DEVNULL)))
                ref.unlink()
        print(f"image size {size} bytes, {args.files} files, {args.mb} MB, UFS{args.version}")
        print(f"smolfs  min {min(ours):.3f} s  median {statistics.median(ours):.3f} s")
        if theirs:
            print(f"makefs  min {min(theirs):.3f} s  median {statistics.median(theirs):.3f} s")
            ratio = statistics.median(ours) / statistics.median(theirs)
            print(f"ratio smolfs/makefs (median) {ratio:.2f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"smolfs peak memory (whole benchmark process) {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
