#!/usr/bin/env python3
"""``startnb`` to ready against the bare QEMU command it runs, measured in the same run.

Usage: python benchmarks/boot.py [--runs N] [--machine microvm|pc]

For each of N rounds (default 10), interleaved: (1) ``python -m launcher KERNEL IMAGE``
with the console on stdout, timed from spawn until ``SERVICE READY`` is read on stdout;
(2) the argv ``startnb --print-cmd`` prints, run directly, timed the same way by the same
minimal reader. Same kernel, same image, same flags. Prints min and median of both, the
ratio of the medians (target at most 1.05) and startnb's own start-up before QEMU's exec,
as startnb reports it (target under 60 ms).

Kernel: the smoltest PVH kernel (built from ``tests/kernels`` with gcc), carrying the
strings of NetBSD's virtio-mmio attachment so that startnb picks ``-M microvm`` as it does
for a MICROVM kernel; measured once as is (ready in tens of milliseconds) and once with
``smoltest.spin=MS`` (default 500: about as long as genuine NetBSD takes to a service
under TCG here), where the ratio reads as it would for NetBSD. With ``$MKSMOLNB_NETBSD_DIR``
set (files ``netbsd`` or ``netbsd.gz`` and ``root.img``, a root image whose service prints
``SERVICE READY``), the same is measured for genuine NetBSD.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY = b"SERVICE READY"
MMIO_MARKERS = b"\0virtio_mmio.device=\0mmio_cmdline\0"


def time_to_ready(argv: list[str], env: dict[str, str], timeout: float = 60.0,
                  stderr_until: bytes | None = None) -> tuple[float, str]:
    """Spawn ``argv``; seconds until a stdout line holds READY; then stop it (once stderr
    holds ``stderr_until``, when given). Also returns its stderr."""
    start = time.perf_counter()
    err_buf = b""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=REPO)
    assert p.stdout is not None
    elapsed = None
    try:
        buf = b""
        deadline = start + timeout
        while time.perf_counter() < deadline:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            if READY in buf:
                elapsed = time.perf_counter() - start
                break
        err_buf = b""
        assert p.stderr is not None
        while stderr_until and stderr_until not in err_buf and time.perf_counter() < deadline:
            chunk = os.read(p.stderr.fileno(), 65536)
            if not chunk:
                break
            err_buf += chunk
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=10)
        err = err_buf + err
    if elapsed is None:
        raise SystemExit(f"not ready: {shlex.join(argv)}\n{err.decode(errors='replace')}")
    return elapsed, err.decode(errors="replace")


def interpreter_floor(runs: int) -> list[float]:
    """``python -c pass``: the part of startnb's overhead that is Python's own start."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out.append(time.perf_counter() - t)
    return out


def bench(name: str, startnb: list[str], runs: int, env: dict[str, str]) -> float:
    printed = subprocess.run([*startnb, "--print-cmd"], capture_output=True, text=True,
                             env=env, cwd=REPO, check=True).stdout
    bare = shlex.split(printed)
    # Warm caches (kernel inspection, page cache) once for both.
    time_to_ready(startnb, env)
    time_to_ready(bare, env)
    t_startnb, t_bare, startup = [], [], []
    for _ in range(runs):
        t, err = time_to_ready(startnb, env, stderr_until=b"launcher start-up")
        t_startnb.append(t)
        m = re.search(r"launcher start-up\s+([\d.]+) ms", err)
        if m:
            startup.append(float(m.group(1)) / 1e3)
        t_bare.append(time_to_ready(bare, env)[0])
    t_py = interpreter_floor(runs)
    med_s, med_b = statistics.median(t_startnb), statistics.median(t_bare)
    print(f"\n{name}: {runs} runs to '{READY.decode()}'")
    print(f"  {'':28} {'min ms':>8} {'median ms':>10}")
    print(f"  {'startnb':28} {min(t_startnb) * 1e3:8.1f} {med_s * 1e3:10.1f}")
    print(f"  {'bare QEMU argv (peer)':28} {min(t_bare) * 1e3:8.1f} {med_b * 1e3:10.1f}")
    print(f"  {'python -c pass (floor)':28} {min(t_py) * 1e3:8.1f} "
          f"{statistics.median(t_py) * 1e3:10.1f}")
    if startup:
        print(f"  {'startnb start-up to exec':28} {min(startup) * 1e3:8.1f} "
              f"{statistics.median(startup) * 1e3:10.1f}   (target < 60 ms)")
    print(f"  ratio startnb / bare (medians): {med_s / med_b:.3f}   (target <= 1.05)")
    return med_s / med_b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--machine", default="auto", choices=("auto", "microvm", "pc"))
    ap.add_argument("--spin", type=int, default=500, metavar="MS",
                    help="guest busy-wait before READY in the second case (500)")
    args = ap.parse_args()
    # Byte-compile the checkout as an installed package is (PYTHONDONTWRITEBYTECODE would
    # otherwise make every run compile the launcher from source).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "launcher"),
                    str(REPO / "smolfs")], check=True, stdout=subprocess.DEVNULL)
    sys.path.insert(0, str(REPO / "tests"))
    from kernels import build_test_kernels

    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, MKSMOLNB_CACHE=str(work / "cache"),
                   MKSMOLNB_STATE=str(work / "state"))
        k = build_test_kernels(work / "k")
        kernel = work / "smoltest-mmio.elf"
        kernel.write_bytes(k.pvh.read_bytes() + MMIO_MARKERS)
        image = work / "disk.img"
        with image.open("wb") as f:
            f.truncate(1 << 20)
        base = [sys.executable, "-m", "launcher", "--console", "stdio",
                "--machine", args.machine]
        bench(f"smoltest kernel ({args.machine} machine)",
              [*base, str(kernel), str(image)], args.runs, env)
        # The same kernel waiting as long as a genuine NetBSD boot takes here (0.4-0.8 s
        # to a service under TCG), so the ratio reads as it would for NetBSD.
        bench(f"smoltest kernel, smoltest.spin={args.spin} ({args.machine} machine)",
              [*base, str(kernel), str(image), "-a", f"smoltest.spin={args.spin}"],
              args.runs, env)
        nb = os.environ.get("MKSMOLNB_NETBSD_DIR")
        if nb:
            d = Path(nb)
            nbk = next((d / n for n in ("netbsd", "netbsd.gz") if (d / n).exists()), None)
            if nbk and (d / "root.img").exists():
                bench("genuine NetBSD", [*base, "--ro", str(nbk), str(d / "root.img")],
                      args.runs, env)
            else:
                print(f"\ngenuine NetBSD: skipped ({d} needs netbsd[.gz] and root.img)")
        else:
            print("\ngenuine NetBSD: skipped (set MKSMOLNB_NETBSD_DIR)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
