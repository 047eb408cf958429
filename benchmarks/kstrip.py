#!/usr/bin/env python3
"""Time kstrip on a GENERIC-sized kernel, against the gdb way of doing the same job.

Usage: python benchmarks/kstrip.py [--runs N] [--kernel netbsd-GENERIC.gz]

Without --kernel, builds a synthetic amd64 kernel shaped like NetBSD 10 GENERIC (about
30 MB uncompressed, 10 MB gzip-compressed, 490 driver entries, 60,000 symbols) with gcc.
Each run starts from the .gz, as NetBSD ships kernels:

- ``kstrip``: ``python -m kstrip KERNEL.gz -o OUT`` (decompress, find, patch, write);
- peer, the way the old shell script did it: ``gunzip -c`` to a file, then gdb with
  ``set write on`` walking ``cfdata`` and writing each disabled state in place.

Prints min and median wall time over N runs (default 5) and the ratio to the peer,
after checking that both produce byte-identical kernels.

Genuine rows: with ``$MKSMOLNB_NETBSD_DIR`` holding ``netbsd-GENERIC`` (NetBSD's own amd64
GENERIC, NetBSD <= 9 table layout, uncompressed), the same two are timed on it too (the
peer copies the kernel instead of gunzipping it); skipped with a message without it.
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
from kstrip.defaults import DEFAULT_KEEP as KEEP  # noqa: E402

DRIVER_NAMES = """
mainbus cpu ioapic acpi pci pchb pcib isa com virtio ld vioif viornd wd atabus ahcisata uhci
ehci xhci usb uhub uhidev ukbd ums wm re bge em iwm ath sd cd scsibus atapibus mpt mfi aac
ciss twe ess sb vga wsdisplay pckbc pckbd pms lpt fdc fd audio hdaudio hdafg radeon nouveau
"""
DRIVERS = DRIVER_NAMES.split()

GDB_SCRIPT = """\
import gdb
keep = set({keep!r})
inf = gdb.selected_inferior()
base = int(gdb.parse_and_eval("(unsigned long)&cfdata"))
i = 0
while True:
    ent = base + i * 48
    name_ptr = int.from_bytes(inf.read_memory(ent, 8).tobytes(), "little")
    if name_ptr == 0:
        break
    name = gdb.parse_and_eval("(char*)%d" % name_ptr).string()
    state = inf.read_memory(ent + {state_offset}, 1).tobytes()[0]
    if name not in keep and state in (0, 2):
        inf.write_memory(ent + {state_offset}, bytes([4 if state == 0 else 3]))
    i += 1
"""


def synthetic_kernel(work: Path) -> Path:
    rnd = random.Random(1)
    blob = work / "blob"
    with open(blob, "wb") as f:  # a third noise: gzip gets it to about a third, as a kernel
        for _ in range(10):
            f.write(rnd.randbytes(1 << 20) + bytes(2 << 20))
    lines = ["struct cfdata { const char *n, *a; unsigned u:24; unsigned char s; int *l;"
             " int f; const void *p; };", "struct cfdata cfdata[] = {"]
    for i in range(490):
        d = DRIVERS[i % len(DRIVERS)]
        lines.append(f'{{"{d}", "{d}_at{i % 7}", {i // len(DRIVERS)}, {rnd.choice((0, 2, 2))},'
                     " 0, 0, 0},")
    lines.append("{0}};")
    lines += [f"int sym_{i};" for i in range(60000)]
    lines.append('const char version[] = "NetBSD 10.1 (GENERIC) #0: Mon Dec 16 2024\\n";')
    lines.append(f'__asm__(".section .rodata\\n.incbin \\"{blob}\\"\\n.previous");')
    lines.append("void _start(void) { for (;;) continue; }")
    src = work / "generic.c"
    src.write_text("\n".join(lines) + "\n")
    out = work / "netbsd-GENERIC"
    subprocess.run(["gcc", "-m64", "-mcmodel=kernel", "-O0", "-ffreestanding", "-fno-pic",
                    "-nostdlib", "-static", "-no-pie",
                    "-Wl,--defsym=KERNBASE=0xffffffff80000000", "-Wl,--defsym=TEXTOFF=0x200000",
                    f"-Wl,-T,{REPO / 'tests/kstrip_fixtures/kernel.ld'}", "-o", str(out),
                    str(src)], check=True)
    subprocess.run(["gzip", "-k", "-6", str(out)], check=True)
    return out.with_name("netbsd-GENERIC.gz")


def timeit(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def compare(kernel: Path, work: Path, runs: int, state_offset: int, title: str) -> bool:
    """Time kstrip and the gdb peer on ``kernel``; False when their outputs differ."""
    ours, peer = work / "ours", work / "peer"
    script = work / "strip.py"
    script.write_text(GDB_SCRIPT.format(keep=KEEP, state_offset=state_offset))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    gz = kernel.suffix == ".gz"

    def run_kstrip() -> None:
        subprocess.run([sys.executable, "-m", "kstrip", str(kernel), "-o", str(ours)],
                       check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)

    def run_peer() -> None:
        if gz:
            with open(peer, "wb") as f:
                subprocess.run(["gunzip", "-c", str(kernel)], stdout=f, check=True)
        else:
            shutil.copyfile(kernel, peer)
        # (a gdb without NetBSD's OS ABI would take long as 32 bits: say GNU/Linux's)
        subprocess.run(["gdb", "-nx", "-batch", "-ex", "set osabi GNU/Linux", "-ex",
                        "set write on", "-ex", f"file {peer}", "-ex", f"source {script}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    peer_name = ("gunzip" if gz else "cp") + " + gdb (peer)"
    results = {peer_name: timeit(run_peer, runs), "kstrip": timeit(run_kstrip, runs)}
    if ours.read_bytes() != peer.read_bytes():
        print(f"{title}: kstrip and the peer disagree on the output", file=sys.stderr)
        return False
    size = kernel.stat().st_size
    print(f"{title}: {kernel.name} ({size / 1e6:.1f} MB{' compressed' if gz else ''}), "
          f"{runs} runs")
    base = statistics.median(results[peer_name])
    print(f"{'command':22} {'min s':>7} {'median s':>9} {'ratio to peer':>14}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:22} {min(times):7.3f} {med:9.3f} {med / base:14.2f}")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kernel", type=Path, help="a genuine netbsd-GENERIC.gz (amd64)")
    args = ap.parse_args()
    if not shutil.which("gdb"):
        print("gdb not installed: no peer to compare with", file=sys.stderr)
        return 1
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kernel = args.kernel or synthetic_kernel(work)
        ok = compare(kernel, work, args.runs, 19, "NetBSD 10 layout kernel")
    nb = os.environ.get("MKSMOLNB_NETBSD_DIR")
    generic = Path(nb) / "netbsd-GENERIC" if nb else None
    if generic is None or not generic.is_file():
        print("\ngenuine GENERIC: skipped (set MKSMOLNB_NETBSD_DIR to a directory with "
              "netbsd-GENERIC)")
    else:
        print()
        with tempfile.TemporaryDirectory() as tmp:
            ok = compare(generic, Path(tmp), args.runs, 18,
                         "genuine NetBSD 7.99 GENERIC (<= 9 layout)") and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
