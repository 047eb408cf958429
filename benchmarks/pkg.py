#!/usr/bin/env python3
"""Installing pkgsrc packages into an image: ``smolfs build --pkg`` against the classic
route (``tar`` each package into a directory, then ``makefs``), in the same run.

Inputs, generated once and cached in ``$XDG_CACHE_HOME/mksmolnb-bench/pkg-v1`` (or
``--cache DIR``): a repository of 15 synthetic packages in the real binary format (gzip
tar, ``+CONTENTS`` with an MD5 per file, ``pkg_summary.gz``) shaped like a real service's
closure: one application depending, directly or not, on 14 others; a few large shared
libraries, a language runtime of ~1,500 small files; about 60 MB installed, program-like
bytes that gzip shrinks 2-3x. A tiny set (a shell and a few files) stands for the sets.

- **smolfs**: ``python -m smolfs build -x tiny.tgz --pkg app --pkg-repo DIR -i out.img``
  from packages already in the cache (here a local repository: no download): index read,
  closure resolved, each package verified against its published size and SHA256, every
  file checked against its MD5, the package database written, the FFS image written;
- **classic**: ``tar -xzf`` of the set and of each package (metadata left out) into a
  temporary directory, then ``makefs -t ffs -o version=1``: no checks, no package
  database.

Runs interleave (same machine load); prints min and median seconds of each and the ratio
of medians smolfs / classic (target: at most 0.7). Needs ``tar``, ``gzip`` and ``makefs``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.pkgsynth import SynthPkg, write_repo  # noqa: E402

TARGET = 0.7
GEN = "pkg-v1"
_TABLE = bytes([0, 0, 0, 0, 0x48, 0x89, 0xE5, 0x8B, 0x45, 0xFF, 0x0F, 0x85, 0xC3, 0xE8, 0x74,
                0x24] * 16)


def _blob(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size).translate(_TABLE)


def closure() -> list[SynthPkg]:
    """15 packages, about 60 MB installed: app → runtime → libraries."""
    rng = random.Random(13)
    libs = []
    for i, size in enumerate((9, 7, 6, 5, 4, 3, 2, 2, 1, 1, 1, 1)):
        name = f"lib{i:02d}-1.{i}nb1"
        files = {f"lib/lib{i:02d}.so.1.{i}": _blob(rng, size << 20)}
        files.update({f"include/lib{i:02d}/h{j}.h": _blob(rng, 4000) for j in range(20)})
        link = {f"lib/lib{i:02d}.so": f"lib{i:02d}.so.1.{i}"}
        libs.append(SynthPkg(name, files=files, symlinks=link,
                             depends=[f"lib{i - 1:02d}>=1.0"] if i else [],
                             provides=[f"/usr/pkg/lib/lib{i:02d}.so.1.{i}"]))
    runtime_files = {f"lib/runtime/m{d:02d}/f{j:03d}.py": _blob(rng, rng.randint(500, 12000))
                     for d in range(30) for j in range(50)}
    runtime_files["bin/runtime"] = _blob(rng, 3 << 20)
    runtime = SynthPkg("runtime-3.11.7", files=runtime_files, modes={"bin/runtime": 0o755},
                       depends=[f"lib{i:02d}>=1.0" for i in range(12)])
    tools = SynthPkg("tools-2.0", files={f"bin/tool{j}": _blob(rng, 200_000) for j in range(10)},
                     depends=["runtime>=3.11"])
    app = SynthPkg("app-1.0", files={"bin/app": _blob(rng, 2 << 20),
                                     "share/examples/app/app.conf": b"listen 80\n"},
                   modes={"bin/app": 0o755}, depends=["runtime>=3.11", "tools>=2"],
                   install="# GROUP: app\n# USER: app:app::App:/var/app:/sbin/nologin\n"
                           "# FILE: etc/app.conf c share/examples/app/app.conf 0640 app app\n")
    return [*libs, runtime, tools, app]


def tiny_set(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("./rescue/sh", b"\x7fELF" + bytes(200_000)), ("./etc/rc", b"#\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))


def inputs(cache: Path) -> tuple[Path, Path, list[Path]]:
    d = cache / GEN
    repo, tiny = d / "All", d / "tiny.tgz"
    if not (repo / "pkg_summary.gz").is_file() or not tiny.is_file():
        print(f"generating {d} (once)...", file=sys.stderr, flush=True)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        write_repo(repo, closure())
        tiny_set(tiny)
    pkgs = sorted(repo.glob("*.tgz"))
    return repo, tiny, pkgs


def run_smolfs(repo: Path, tiny: Path, work: Path) -> float:
    img = work / "smolfs.img"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MKSMOLNB_CACHE": str(work / "cache")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "smolfs", "build", "-x", str(tiny), "--pkg", "app",
                    "--pkg-repo", str(repo), "-i", str(img), "--rw", "-f"], check=True, env=env,
                   stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    img.unlink()
    return elapsed


def run_classic(tiny: Path, pkgs: list[Path], work: Path) -> float:
    root, img = work / "root", work / "classic.img"
    t0 = time.perf_counter()
    (root / "usr" / "pkg").mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(tiny), "-C", str(root)], check=True)
    for p in pkgs:
        subprocess.run(["tar", "-xzf", str(p), "-C", str(root / "usr" / "pkg"),
                        "--exclude", "+*"], check=True)
    subprocess.run(["makefs", "-t", "ffs", "-o", "version=1", str(img), str(root)], check=True,
                   stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(root)
    img.unlink()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=5)
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    ap.add_argument("--cache", type=Path, default=default_cache / "mksmolnb-bench")
    args = ap.parse_args()
    for tool in ("tar", "gzip", "makefs"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install {tool})")
    repo, tiny, pkgs = inputs(args.cache)
    installed = 0
    for p in pkgs:
        with tarfile.open(p) as tar:
            installed += sum(m.size for m in tar if not m.name.startswith("+"))
    print(f"{len(pkgs)} packages, {sum(p.stat().st_size for p in pkgs) / 1e6:.1f} MB "
          f"compressed, {installed / 1e6:.1f} MB installed")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "smolfs")], check=True,
                   stdout=subprocess.DEVNULL)
    times: dict[str, list[float]] = {"smolfs": [], "classic": []}
    with tempfile.TemporaryDirectory(prefix="smolfs-bench-pkg-") as tmp:
        work = Path(tmp)
        run_smolfs(repo, tiny, work)  # warm the page cache and the verified stamps
        for _ in range(args.runs):
            times["smolfs"].append(run_smolfs(repo, tiny, work))
            times["classic"].append(run_classic(tiny, pkgs, work))
    print(f"{'pipeline':10} {'min':>7} {'median':>7}   (seconds, {args.runs} runs)")
    for name, ts in times.items():
        print(f"{name:10} {min(ts):7.2f} {statistics.median(ts):7.2f}")
    ratio = statistics.median(times["smolfs"]) / statistics.median(times["classic"])
    verdict = "meets the target" if ratio <= TARGET else f"above the {TARGET} target"
    print(f"ratio      {ratio:7.3f}   smolfs / classic, medians ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
