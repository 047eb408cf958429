#!/usr/bin/env python3
"""``smolfs build`` against the classic pipeline, on the same cached sets, in the same run.

Two services are built N times (default 3) each, interleaved so that all see the same
machine load:

- **smolfs cold**: ``python -m smolfs build -s SERVICE -x SET -i out.img`` (FFS UFS1,
  automatic size) with an empty smolfs cache: the set (xz) is streamed into the image
  and, on the side, transcoded into the zstd copy that smolfs keeps in its cache;
- **smolfs warm**: the same command again, now reading that zstd copy (found by the
  set's digest, remembered from the cold build since the set file did not change), as
  every build after the first one of a set does;
- **classic**: ``tar -xpf`` of the set into a temporary directory, the service's files,
  fstab and rescue links copied in, then ``makefs -t ffs -o version=1 -b 32m -f 4096 -F
  spec`` (the room ``smolfs build`` gives a read-write root: 32 MiB and 4,096 inodes
  free), where the mtree spec (owners, modes, the device nodes) was generated from the
  archive headers beforehand, outside the timing, as mkimg.sh-era users kept one beside
  their sets.

Inputs are synthetic NetBSD-shaped sets, generated once and cached in
``$XDG_CACHE_HOME/mksmolnb-bench`` (or ``--cache DIR``):

- ``rescue``-like: one 10 MB crunched binary under 170 hard-linked names (xz);
- ``base``-like: about 8,000 files, 250 MB unpacked, xz, as NetBSD's base set.

smolfs's modules are byte-compiled first (an installed package is), outside the timing.
Prints min and median seconds per pipeline and service, the time of ``xz -dc`` alone
(the floor under the classic pipeline and a cold build: single-threaded decompression),
and the ratios smolfs / classic of the medians, cold and warm (target: at most 0.7),
saying which meets the target. Needs ``xz``, ``tar`` and ``makefs`` (Debian package
makefs).
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(REPO))

from smolfs.image.build import RW_FREE_FILES, RW_FREE_SPACE  # noqa: E402
from smolfs.image.content import fstab  # noqa: E402
from smolfs.image.devices import device_nodes  # noqa: E402

MTIME = 1_700_000_000
TARGET = 0.7  # smolfs at most this fraction of the classic pipeline's time
GEN_VERSION = 2  # bump when the generator changes: cached sets are regenerated


# ---------------------------------------------------------------------------
# synthetic sets (cached)

#: Maps random bytes onto 16 values common in x86 code: about 4 bits of entropy a byte.
_TABLE = bytes([0, 0, 0, 0, 0x48, 0x89, 0xE5, 0x8B, 0x45, 0xFF, 0x0F, 0x85, 0xC3, 0xE8, 0x74,
                0x24] * 16)


def _blob(rng: random.Random, size: int) -> bytes:
    """Program-like bytes: xz shrinks them about 2-3x, as it does real binaries."""
    return rng.randbytes(size).translate(_TABLE)


class _SetWriter:
    """A tar archive piped through ``xz`` plus the mtree spec lines of its members."""

    def __init__(self, path: Path) -> None:
        self.out = open(path, "wb")  # noqa: SIM115
        self.xz = subprocess.Popen(["xz", "-T1", "-2", "-c"], stdin=subprocess.PIPE,
                                   stdout=self.out)
        assert self.xz.stdin is not None
        self.tar = tarfile.open(  # noqa: SIM115
            fileobj=self.xz.stdin, mode="w|", format=tarfile.USTAR_FORMAT)
        self.spec: list[str] = []

    def _info(self, path: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0
              ) -> tarfile.TarInfo:
        ti = tarfile.TarInfo("./" + path)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, gid, MTIME
        ti.uname = ti.gname = ""
        return ti

    def dir(self, path: str, mode: int = 0o755) -> None:
        self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode))
        self.spec.append(f"./{path} type=dir mode={mode:04o} uid=0 gid=0")

    def file(self, path: str, data: bytes, mode: int = 0o555, gid: int = 0) -> None:
        import io

        ti = self._info(path, tarfile.REGTYPE, mode, 0, gid)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))
        self.spec.append(f"./{path} type=file mode={mode:04o} uid=0 gid={gid}")

    def hardlink(self, path: str, target: str, mode: int = 0o555) -> None:
        ti = self._info(path, tarfile.LNKTYPE, mode)
        ti.linkname = "./" + target
        self.tar.addfile(ti)
        self.spec.append(f"./{path} type=file mode={mode:04o} uid=0 gid=0")

    def symlink(self, path: str, target: str) -> None:
        ti = self._info(path, tarfile.SYMTYPE, 0o755)
        ti.linkname = target
        self.tar.addfile(ti)
        self.spec.append(f"./{path} type=link mode=0755 uid=0 gid=0 link={target}")

    def close(self) -> None:
        self.tar.close()
        assert self.xz.stdin is not None
        self.xz.stdin.close()
        if self.xz.wait() != 0:
            raise SystemExit("xz failed")
        self.out.close()


def make_rescue(path: Path) -> list[str]:
    rng = random.Random(1)
    w = _SetWriter(path)
    w.dir("rescue")
    w.file("rescue/sh", _blob(rng, 10 << 20))
    for i in range(170):
        w.hardlink(f"rescue/prog{i:03d}", "rescue/sh")
    for name in ("init", "mount_ffs", "mount_ext2fs"):
        w.hardlink(f"rescue/{name}", "rescue/sh")
    w.close()
    return w.spec


def make_base(path: Path) -> list[str]:
    rng = random.Random(2)
    w = _SetWriter(path)
    total = 0
    dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/lib", "usr/libexec",
            "usr/share", "var", "var/run", "etc", "libexec"]
    for i in range(60):
        dirs.append(f"usr/share/d{i:02d}")
        dirs.extend(f"usr/share/d{i:02d}/s{j}" for j in range(3))
    for d in dirs:
        w.dir(d)
    w.file("sbin/init", _blob(rng, 300_000))
    w.file("usr/libexec/httpd", _blob(rng, 200_000))
    w.file("usr/bin/su", _blob(rng, 30_000), mode=0o4555)
    w.file("sbin/shutdown", _blob(rng, 30_000), mode=0o4554, gid=5)
    w.file("bin/sh", _blob(rng, 400_000))
    # a few big libraries with version symlinks
    for i in range(24):
        name = f"usr/lib/libbig{i}.so.{i % 5}.0"
        w.file(name, _blob(rng, rng.randint(2 << 20, 6 << 20)), mode=0o444)
        w.symlink(f"usr/lib/libbig{i}.so", os.path.basename(name))
        total += 4 << 20
    n = 0
    while total < 250 << 20 and n < 8000:
        d = rng.choice(dirs)
        size = int(rng.paretovariate(1.2) * 3000)
        size = min(size, 900_000)
        w.file(f"{d}/f{n:05d}", _blob(rng, size), mode=rng.choice((0o444, 0o555, 0o644)))
        if n % 97 == 0:
            w.hardlink(f"{d}/h{n:05d}", f"{d}/f{n:05d}", mode=0o555)
        total += size
        n += 1
    w.close()
    return w.spec


def sets(cache: Path) -> dict[str, tuple[Path, list[str]]]:
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind, maker in (("rescue", make_rescue), ("base", make_base)):
        path = cache / f"{kind}-v{GEN_VERSION}.tar.xz"
        spec_path = cache / f"{kind}-v{GEN_VERSION}.spec"
        if not (path.exists() and spec_path.exists()):
            print(f"generating {path} (once)...", file=sys.stderr, flush=True)
            spec = maker(path)
            spec_path.write_text("\n".join(spec) + "\n")
        out[kind] = (path, spec_path.read_text().splitlines())
    return out


# ---------------------------------------------------------------------------
# the two pipelines


def classic_spec(set_spec: list[str], service: str) -> str:
    """The whole image's mtree spec: the set's entries, the service files, devices."""
    lines = ["/set type=file uid=0 gid=0", ". type=dir mode=0755 uid=0 gid=0", *set_spec]
    have = {ln.split()[0] for ln in lines}
    extra = ["./etc type=dir mode=0755 uid=0 gid=0", "./etc/include type=dir mode=0755",
             "./dev type=dir mode=0755 uid=0 gid=0", "./etc/fstab type=file mode=0644"]
    svc = REPO / "services" / service / "etc"
    for p in sorted(svc.rglob("*")):
        extra.append(f"./etc/{p.relative_to(svc)} type=file mode=0755")
    for p in sorted((REPO / "services/common").iterdir()):
        extra.append(f"./etc/include/{p.name} type=file mode=0644")
    for d in device_nodes("amd64"):
        kind = "char" if d.kind.name == "CHR" else "block"
        extra.append(f"./dev/{d.name} type={kind} mode={d.mode:04o} uid=0 gid={d.gid} "
                     f"device=netbsd,{d.major},{d.minor}")
    if service == "rescue":
        extra += ["./sbin type=dir mode=0755", "./bin type=dir mode=0755",
                  "./sbin/init type=link mode=0755 link=/rescue/init",
                  "./bin/sh type=link mode=0755 link=/rescue/sh"]
    lines += [e for e in extra if e.split()[0] not in have]
    return "\n".join(lines) + "\n"


def run_classic(archive: Path, spec: Path, service: str, work: Path) -> float:
    root = work / "root"
    img = work / "classic.img"
    t0 = time.perf_counter()
    root.mkdir()
    subprocess.run(["tar", "-xpf", str(archive), "-C", str(root)], check=True)
    (root / "etc" / "include").mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "services" / service / "etc", root / "etc", dirs_exist_ok=True)
    shutil.copytree(REPO / "services" / "common", root / "etc" / "include", dirs_exist_ok=True)
    (root / "etc" / "fstab").write_text(fstab("ffs", service == "rescue"))
    if service == "rescue":
        for d, name in (("sbin", "init"), ("bin", "sh")):
            (root / d).mkdir(exist_ok=True)
            os.symlink(f"/rescue/{name}", root / d / name)
    # The same room a read-write root gets from smolfs build (RW_FREE_SPACE, _FILES).
    subprocess.run(["makefs", "-t", "ffs", "-o", "version=1", "-b", f"{RW_FREE_SPACE}",
                    "-f", f"{RW_FREE_FILES}", "-F", str(spec), str(img), str(root)],
                   check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(root)
    img.unlink()
    return elapsed


def run_smolfs(archive: Path, service: str, work: Path, cache: Path) -> float:
    img = work / "smolfs.img"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MKSMOLNB_CACHE": str(cache)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "smolfs", "build", "-s", service, "-x", str(archive),
                    "-i", str(img), "--rw"], check=True, env=env, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    img.unlink()
    Path(str(img) + ".json").unlink()
    return elapsed


def decompress_only(archive: Path) -> float:
    """The floor under both pipelines: decompressing the set and nothing else."""
    t0 = time.perf_counter()
    subprocess.run(["xz", "-dc", str(archive)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=3)
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    ap.add_argument("--cache", type=Path, default=default_cache / "mksmolnb-bench")
    ap.add_argument("--only", choices=("rescue", "base"), default=None)
    args = ap.parse_args()
    for tool in ("xz", "tar", "makefs"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install {tool})")
    inputs = sets(args.cache)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "smolfs")], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"{'service':8} {'pipeline':13} {'min':>7} {'median':>7}   (seconds, {args.runs} runs)")
    for kind, service in (("rescue", "rescue"), ("base", "base")):
        if args.only and kind != args.only:
            continue
        archive, set_spec = inputs[kind]
        with tempfile.TemporaryDirectory(prefix="smolfs-bench-") as tmp:
            work = Path(tmp)
            spec = work / "image.spec"
            spec.write_text(classic_spec(set_spec, service))
            cache = work / "smolfs-cache"
            times: dict[str, list[float]] = {"smolfs cold": [], "smolfs warm": [], "classic": []}
            for _ in range(args.runs):  # interleaved: all see the same machine load
                shutil.rmtree(cache, ignore_errors=True)
                times["smolfs cold"].append(run_smolfs(archive, service, work, cache))
                times["smolfs warm"].append(run_smolfs(archive, service, work, cache))
                times["classic"].append(run_classic(archive, spec, service, work))
            times["xz -dc"] = [decompress_only(archive) for _ in range(args.runs)]
        for tool, ts in times.items():
            print(f"{service:8} {tool:13} {min(ts):7.2f} {statistics.median(ts):7.2f}")
        classic = statistics.median(times["classic"])
        meets = []
        for which in ("cold", "warm"):
            ratio = statistics.median(times[f"smolfs {which}"]) / classic
            if ratio <= TARGET:
                meets.append(which)
            verdict = "meets the target" if ratio <= TARGET else f"above the {TARGET} target"
            print(f"{service:8} ratio {which:7} {ratio:7.3f}   smolfs {which} / classic, "
                  f"medians ({verdict})")
        print(f"{service:8} target {TARGET} met by: {', '.join(meets) or 'neither'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
