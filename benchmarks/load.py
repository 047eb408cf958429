#!/usr/bin/env python3
"""Many detached VMs at once: ``startnb -d`` N times from one read-only image.

Usage: python benchmarks/load.py [-n N] [--spin MS] [--timeout S]

Starts N (default 20) ``startnb -d --ro`` of the smoltest PVH kernel (built from
``tests/kernels`` with gcc) on one 1 MiB image, all spawned at once, each waiting for
``SERVICE READY`` (``smoltest.spin=MS`` makes the guest busy-wait first, default 0).
Then: how many got ready and how long each took (from its spawn to startnb's exit,
which happens at readiness: min, median, slowest); the resident memory (``VmRSS`` of
``/proc/PID/status``) of each QEMU and of each keeper (the process of startnb that stays
QEMU's parent; with its proportional share, ``Pss``, as keepers share most pages); the
CPU time each keeper and each QEMU used over ``--idle`` seconds (10) of the running VMs
(``utime + stime`` of ``/proc/PID/stat``: the keeper reads the serial log 10 times a
second);
``startnb ps`` over all of them (its time, and whether it lists every VM); ``startnb
stop --all`` (the guests power off on the ACPI button: ``smoltest.acpi``); and a final
count of the processes left with the benchmark's directory in their argv, which must be
0 (exit status 1 otherwise, or when a VM did not get ready).

All VMs share the machine's cores: on a small host, the slowest time to ready measures
mostly how long N TCG boots queue for the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def memory_kib(pid: int, field: str = "VmRSS", source: str = "status") -> int | None:
    """A memory figure of ``pid`` in KiB: ``VmRSS`` from ``/proc/PID/status`` (resident),
    or ``Pss`` from ``/proc/PID/smaps_rollup`` (resident, shared pages divided among
    their sharers); None if the process is gone."""
    try:
        with open(f"/proc/{pid}/{source}") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def vm_rss_kib(pid: int) -> int | None:
    return memory_kib(pid)


def pss_kib(pid: int) -> int | None:
    return memory_kib(pid, "Pss", "smaps_rollup")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time ``pid`` used so far, in seconds; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_over(pids: list[int], seconds: float) -> list[float]:
    """The CPU time (ms) each of ``pids`` used over ``seconds`` of wall clock."""
    before = {pid: cpu_seconds(pid) for pid in pids}
    time.sleep(seconds)
    out = []
    for pid, t0 in before.items():
        t1 = cpu_seconds(pid)
        if t0 is not None and t1 is not None:
            out.append((t1 - t0) * 1000)
    return out


def processes_with(needle: str) -> list[int]:
    """Live (not zombie) processes with ``needle`` in their argv."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        if needle.encode() in argv:
            out.append(int(entry))
    return out


def wait_all(procs: list[subprocess.Popen[str]]) -> list[tuple[float, str, str]]:
    """Wait for every process, each in its own thread (one waiting in turn would time
    each as the slowest before it): (perf_counter at its exit, stdout, stderr)."""
    import threading

    ended: list[tuple[float, str, str]] = [(0.0, "", "")] * len(procs)

    def wait(i: int) -> None:
        out, err = procs[i].communicate()
        ended[i] = (time.perf_counter(), out, err)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(procs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ended


def spread(values: list[float], unit: str, fmt: str = ".2f") -> str:
    if not values:
        return "none"
    return (f"min {min(values):{fmt}} {unit}, median {statistics.median(values):{fmt}} "
            f"{unit}, max {max(values):{fmt}} {unit}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="number of VMs (20)")
    ap.add_argument("--spin", type=int, default=0, metavar="MS",
                    help="guest busy-wait before its ready line (0)")
    ap.add_argument("--timeout", type=float, default=120.0, metavar="S",
                    help="--timeout of each startnb (120)")
    ap.add_argument("--idle", type=float, default=10.0, metavar="S",
                    help="seconds over which the CPU time of keepers and QEMUs is read (10)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from kernels import build_test_kernels

    work = Path(tempfile.mkdtemp(prefix="bench-load-", dir="/tmp"))  # short socket paths
    env = dict(os.environ, MKSMOLNB_CACHE=str(work / "cache"),
               MKSMOLNB_STATE=str(work / "state"))
    startnb = [sys.executable, "-m", "launcher"]
    try:
        kernel = build_test_kernels(work / "k").pvh
        image = work / "disk.img"
        with image.open("wb") as f:
            f.truncate(1 << 20)
        image.chmod(0o444)
        extra = ["-a", "smoltest.acpi"] + (["-a", f"smoltest.spin={args.spin}"]
                                          if args.spin else [])
        print(f"{args.n} detached VMs: smoltest PVH kernel, one read-only image, "
              f"spawned at once ({os.cpu_count()} CPUs)")
        procs = []
        for i in range(args.n):
            argv = [*startnb, "-d", "--name", f"load-{i}", "--ro", "-N", "--json",
                    "--timeout", f"{args.timeout:g}", *extra, str(kernel), str(image)]
            procs.append((time.perf_counter(), subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)))
        ended = wait_all([p for _, p in procs])
        took: list[float] = []
        pids: list[int] = []
        failures: list[str] = []
        for (spawned, p), (at, out, err) in zip(procs, ended, strict=True):
            if p.returncode == 0:
                took.append(at - spawned)
                pids.append(int(json.loads(out)["pid"]))
            else:
                failures.append(err.strip().splitlines()[-1] if err.strip() else
                                f"exit {p.returncode}")
        print(f"ready: {len(took)}/{args.n}; time to ready (spawn to startnb's exit): "
              f"{spread(took, 's')}")
        for line in sorted(set(failures)):
            print(f"  failed: {line} (x{failures.count(line)})")
        qemu_rss = [r / 1024 for r in map(vm_rss_kib, pids) if r is not None]
        keepers = []
        for d in sorted((work / "state").glob("load-*")):
            with contextlib.suppress(OSError, ValueError):
                keepers.append(int((d / "keeper.pid").read_text()))
        keeper_rss = [r / 1024 for r in map(vm_rss_kib, keepers) if r is not None]
        keeper_pss = [r / 1024 for r in map(pss_kib, keepers) if r is not None]
        print(f"QEMU VmRSS: {spread(qemu_rss, 'MiB', '.1f')} (sum {sum(qemu_rss):.0f} MiB)")
        print(f"keeper VmRSS: {spread(keeper_rss, 'MiB', '.1f')}; its own share (Pss): "
              f"{spread(keeper_pss, 'MiB', '.1f')} (sum {sum(keeper_pss):.0f} MiB)")
        if args.idle > 0:
            cpu = cpu_over(keepers + pids, args.idle)
            keeper_cpu, qemu_cpu = cpu[:len(keepers)], cpu[len(keepers):]
            print(f"CPU over {args.idle:g} s: keeper {spread(keeper_cpu, 'ms', '.0f')}; "
                  f"QEMU {spread(qemu_cpu, 'ms', '.0f')} (clock tick "
                  f"{1000 / os.sysconf('SC_CLK_TCK'):.0f} ms)")

        start = time.perf_counter()
        ps = subprocess.run([*startnb, "ps", "--json"], cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
        ps_time = time.perf_counter() - start
        listed = sorted(int(v["pid"]) for v in json.loads(ps.stdout or "[]"))
        print(f"startnb ps: {ps_time:.2f} s, {len(listed)} listed, "
              f"{'all' if listed == sorted(pids) else 'NOT all'} of the running VMs")

        start = time.perf_counter()
        stop = subprocess.run([*startnb, "stop", "--all", "--grace", "10"], cwd=REPO,
                              env=env, capture_output=True, text=True, check=False)
        stop_time = time.perf_counter() - start
        hows = [line.split(", ", 1)[1].split(")")[0] for line in stop.stderr.splitlines()
                if line.startswith("startnb: stopped ")]
        counts = ", ".join(f"{hows.count(h)} {h}" for h in sorted(set(hows))) or "none"
        print(f"startnb stop --all: {stop_time:.2f} s, exit {stop.returncode} ({counts})")

        time.sleep(0.5)
        left = processes_with(str(work))
        print(f"leftover processes: {len(left)}")
        return 0 if not left and not failures and listed == sorted(pids) else 1
    finally:
        for pid in processes_with(str(work)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
