#!/usr/bin/env python3
"""smolfs's mkfs against the C tools, on a NetBSD-base-shaped corpus.

Usage: python benchmarks/mkfs.py [--runs 5] [--fs ffs,ext2] [--files 8000] [--mb 250]
                                 [--workdir DIR] [--archive]

For each filesystem, N runs (default 5) of:
- smolfs: ``smolfs.image.mkfs.mkfs(image, [corpus], fstype=..., size=SIZE)``, each run in a
  fresh Python process (its start-up is counted, as the C tools' is);
- the peer from the same directory to the same size: ``makefs -t ffs -o version=1 -s
  SIZE`` for ffs, ``mke2fs -q -F -t ext2 -d DIR IMAGE SIZE`` for ext2.
Runs alternate between smolfs and the peer so both see the same page cache. SIZE is
the size smolfs picks automatically (content plus 10%), rounded up to a MiB.

Prints per tool the min and median wall seconds and the peak memory (``ru_maxrss`` of
the child), then smolfs/peer ratios of the medians. Targets: ratio at most 1.0, peak
memory under 200 MB. The corpus comes from ``benchmarks/corpus.py`` (generated once,
cached); images are written into ``--workdir`` (default: a temporary directory on the
corpus's filesystem) and deleted after each run.

``--archive`` also times reading the corpus as a set (``.tar.xz``, made once with
``tar | xz -0`` and cached beside the corpus): ``smolfs.sets.sources.add_archive`` (stream,
spool, SHA-512) against ``xz -dc`` alone. Target: ratio close to 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from corpus import corpus  # noqa: E402

READ_SET = """\
import sys
from smolfs.sets.sources import add_archive
from smolfs.sets.spool import Spool
from smolfs.fs.tree import Tree
with Spool(dir=sys.argv[2]) as spool:
    add_archive(Tree(), sys.argv[1], spool)
"""

SMOLFS = """\
import sys
from smolfs.image.mkfs import mkfs
mkfs(sys.argv[1], [sys.argv[2]], fstype=sys.argv[3], size=int(sys.argv[4]))
"""


def timed(argv: list[str]) -> tuple[float, float]:
    """Run *argv*; return (wall seconds, peak RSS in MB). Fails loudly on error."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


def peer_argv(fstype: str, image: Path, tree: Path, size: int) -> list[str]:
    if fstype == "ffs":
        return [_tool("makefs"), "-t", "ffs", "-o", "version=1", "-s", str(size),
                str(image), str(tree)]
    return [_tool("mke2fs"), "-q", "-F", "-t", "ext2", "-d", str(tree), str(image),
            f"{size // 1024}k"]


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        raise SystemExit(f"{name} not found (Debian: apt-get install "
                         f"{'makefs' if name == 'makefs' else 'e2fsprogs'})")
    return path


def auto_size(fstype: str, tree: Path) -> int:
    from smolfs.fs.tree import Tree
    from smolfs.image.mkfs import image_size, make_options
    from smolfs.sets.hostdir import add_directory

    t = Tree()
    add_directory(t, tree)
    size = image_size(t, fstype, make_options(fstype), None)
    return -(-size // (1 << 20)) * (1 << 20)


def corpus_set(tree: Path) -> Path:
    """The corpus as an xz-compressed tar, made once and cached beside it."""
    path = tree.with_name(tree.name + ".tar.xz")
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as out:
            tar = subprocess.Popen(["tar", "-C", str(tree), "--sort=name", "-cf", "-", "."],
                                   stdout=subprocess.PIPE)
            subprocess.run(["xz", "-0", "-T0"], stdin=tar.stdout, stdout=out, check=True)
            if tar.wait():
                raise SystemExit("tar failed")
        os.replace(tmp, path)
    return path


def bench_archive(tree: Path, runs: int, workdir: Path) -> None:
    archive = corpus_set(tree)
    ours = [sys.executable, "-c", READ_SET, str(archive), str(workdir)]
    peer = ["sh", "-c", f"exec xz -dc '{archive}' > /dev/null"]
    times: dict[str, list[tuple[float, float]]] = {"ours": [], "peer": []}
    for _ in range(runs):
        times["ours"].append(timed(ours))
        times["peer"].append(timed(peer))
    print(f"set: {archive} ({archive.stat().st_size / 1e6:.0f} MB)")
    med = {}
    for who, label in (("ours", "smolfs add_archive"), ("peer", "xz -dc > /dev/null")):
        secs = [t for t, _ in times[who]]
        med[who] = statistics.median(secs)
        print(f"{'set':5} {label:28} {min(secs):7.2f} {med[who]:9.2f} "
              f"{max(m for _, m in times[who]):8.0f}")
    print(f"{'set':5} {'ratio smolfs/xz':28} {'':>7} {med['ours'] / med['peer']:9.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fs", default="ffs,ext2", help="comma-separated: ffs, ext2")
    ap.add_argument("--files", type=int, default=8000)
    ap.add_argument("--mb", type=int, default=250)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--archive", action="store_true",
                    help="also time reading the corpus as a .tar.xz set against xz -dc")
    args = ap.parse_args()

    tree = corpus(args.files, args.mb)
    names = sum(len(f) + len(d) for _, d, f in os.walk(tree))
    data = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(tree) for f in fs)
    print(f"corpus: {tree} ({names} names, {data / 1e6:.0f} MB), {args.runs} runs each")
    workdir = Path(tempfile.mkdtemp(prefix="mkfs-bench.", dir=args.workdir or tree.parent))
    rows = []
    try:
        for fstype in args.fs.split(","):
            size = auto_size(fstype, tree)
            image = workdir / f"{fstype}.img"
            smolfs_argv = [sys.executable, "-c", SMOLFS, str(image), str(tree), fstype, str(size)]
            times: dict[str, list[tuple[float, float]]] = {"smolfs": [], "peer": []}
            for _ in range(args.runs):
                for who, argv in (("smolfs", smolfs_argv),
                                  ("peer", peer_argv(fstype, image, tree, size))):
                    times[who].append(timed(argv))
                    image.unlink()
            peer = "makefs -t ffs -o version=1" if fstype == "ffs" else "mke2fs -t ext2 -d"
            med = {}
            for who, label in (("smolfs", f"smolfs mkfs -t {fstype}"), ("peer", peer)):
                secs = [t for t, _ in times[who]]
                med[who] = statistics.median(secs)
                rss = max(m for _, m in times[who])
                rows.append((fstype, label, min(secs), med[who], rss))
            rows.append((fstype, "ratio smolfs/peer", None, med["smolfs"] / med["peer"], None))
            print(f"{fstype}: image size {size >> 20} MiB")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'fs':5} {'tool':28} {'min s':>7} {'median s':>9} {'peak MB':>8}")
    for fstype, label, lo, med, rss in rows:
        if lo is None:
            print(f"{fstype:5} {label:28} {'':>7} {med:9.2f} {'':>8}   (target <= 1.0)")
        else:
            print(f"{fstype:5} {label:28} {lo:7.2f} {med:9.2f} {rss:8.0f}")
    print("targets: ratio <= 1.0, smolfs peak memory < 200 MB")
    if args.archive:
        workdir = Path(tempfile.mkdtemp(prefix="mkfs-bench.", dir=args.workdir or tree.parent))
        try:
            bench_archive(tree, args.runs, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
