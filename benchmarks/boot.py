#!/usr/bin/env python3
"""``startnb`` to ready against the bare QEMU command it runs, measured in the same run.

Usage: python benchmarks/boot.py [--runs N] [--machine microvm|pc] [--spin MS]

For each of N rounds (default 10), interleaved: (1) ``startnb KERNEL IMAGE`` with a warm
cache (the plan of an earlier identical command is valid: QEMU starts before the
launcher imports anything else), (2) the argv ``startnb --print-cmd`` prints, run
directly, (3) ``startnb`` with an empty cache (host probe, kernel inspection, argv
computed from scratch). Each is timed from spawn until ``SERVICE READY`` is read on its
stdout by the same minimal reader. Same kernel, same image, same flags. ``startnb`` is the
console script users run (beside the interpreter), else ``python -m launcher``.
Prints min and median of each, the ratio of the medians to bare QEMU (target at most 1.05)
with its 95% interval (the rounds resampled: how far the ratio could move on another run of
the same machine), and startnb's own start-up before QEMU's exec as startnb reports it
(target under 60 ms); Python's own start (``python -c pass``) is printed as the floor
under all of it. The repeated command and the bare QEMU take turns going first; the cold
command comes last in its round, its writes flushed (``sync``) before the next. The first
lines say which Python runs startnb and how steady the machine's CPU was (a fixed loop's
spread): on a shared host a ratio moves with it.

Then the main job, ``startnb SERVICE --strip -d`` (the service built from a local mirror
publishing synthetic sets and the smoltest kernel as ``netbsd-SMOLTEST.gz``): repeated
(everything cached: the plan starts QEMU), against the bare QEMU argv of the same boot
(``--print-cmd`` of the attached form: serial on stdout), and the first command of all
(cold: fetch, build, strip, then boot). A detached run is timed until ``startnb -d``
returns (it returns at readiness); start-up is what its ``--json`` report says. The
smoltest kernels have no driver table, so ``--strip`` goes through a stand-in of kstrip
(copies the kernel; only the cold command calls it). Readiness is the service's console
line: the smoltest guest serves no HTTP (``--ready http:`` rows need genuine NetBSD).

Kernel: the smoltest PVH kernel (built from ``tests/kernels`` with gcc), carrying the
strings of NetBSD's virtio-mmio attachment so that startnb picks ``-M microvm`` as it does
for a MICROVM kernel; measured once as is (ready in tens of milliseconds) and once with
``smoltest.spin=MS`` (default 500: about as long as genuine NetBSD takes to a service
under TCG here), where the ratio reads as it would for NetBSD.

Genuine NetBSD rows (:func:`genuine_rows`, with ``$MKSMOLNB_NETBSD_DIR``: ``netbsd``,
``netbsd-GENERIC``, ``sets/rescue.tgz``; skipped with a message without them): the shipped
``rescue`` service built from NetBSD's rescue set, timed to its ready line (``rescue:
ready``) on the VM kernel and on GENERIC stripped by kstrip, each by ``startnb`` and by the
bare QEMU argv it prints, the four interleaved in each round. Then the main job on genuine
NetBSD (:func:`genuine_service_rows`, also with ``--only-service``; needs
``sets/httpd.tgz`` too): ``startnb bozohttpd --strip -d --ready http:PORT/`` from a local
mirror publishing the genuine GENERIC kernel and the rescue and httpd sets, repeated and
cold, against the bare QEMU argv probed for HTTP the same way.

aarch64 (:func:`bench_aarch64`): the smoltest-arm64 kernel (``tests/kernels/arm64.S``, an
arm64 Image) on ``qemu-system-aarch64 -M virt`` as startnb picks it (TCG on an x86 host,
KVM/HVF on an arm64 one), measured the same way, when the cross binutils and
qemu-system-aarch64 are installed; ``--no-aarch64`` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
READY = b"SERVICE READY"
MMIO_MARKERS = b"\0virtio_mmio.device=\0mmio_cmdline\0"
T = TypeVar("T")


def time_to_ready(argv: list[str], env: dict[str, str], timeout: float = 60.0,
                  stderr_until: bytes | None = None, cwd: Path = REPO,
                  first_byte: list[float] | None = None) -> tuple[float, str]:
    """Spawn ``argv``; seconds until a stdout line holds READY; then stop it (once stderr
    holds ``stderr_until``, when given). Also returns its stderr. ``first_byte``: the
    seconds until its first stdout byte are appended to it."""
    start = time.perf_counter()
    err_buf = b""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=cwd)
    assert p.stdout is not None
    elapsed = None
    try:
        buf = b""
        deadline = start + timeout
        while time.perf_counter() < deadline:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            if not buf and first_byte is not None:
                first_byte.append(time.perf_counter() - start)
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


def startup_of(stderr: str) -> float | None:
    m = re.search(r"launcher start-up\s+([\d.]+) ms", stderr)
    return float(m.group(1)) / 1e3 if m else None


def ratio_text(num: list[float], den: list[float], target: bool = False) -> str:
    """``median(num) / median(den)`` and its 95% interval, by resampling the rounds (a
    value of each list measured in the same round: same state of the machine) with
    replacement: how far the ratio could move on another run here. ``target``: name the
    1.05 target."""
    rng = random.Random(0)
    n, draws = len(num), 2000
    ratios = []
    for _ in range(draws):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(statistics.median(num[i] for i in idx)
                      / statistics.median(den[i] for i in idx))
    ratios.sort()
    lo, hi = ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]
    ratio = statistics.median(num) / statistics.median(den)
    return (f"   ratio {ratio:.3f} (95%: {lo:.3f}-{hi:.3f})"
            + (" (target <= 1.05)" if target else ""))


def steadiness(times: int = 12) -> str:
    """How steady this machine's CPU is now: a fixed loop of about 30 ms timed ``times``
    times; the spread of its times (a shared or throttled host moves every figure here by
    as much)."""
    loop = []
    for _ in range(times):
        t = time.perf_counter()
        x = 0
        for i in range(300_000):
            x += i
        loop.append(time.perf_counter() - t)
    med = statistics.median(loop)
    return (f"machine: a fixed CPU loop took {min(loop) / med:.2f}-{max(loop) / med:.2f}x its "
            f"median over {times} runs")


def in_turn(round_no: int, items: list[T]) -> list[T]:
    """``items`` rotated by the round number: each goes first in some rounds, so none
    always runs right after another (a cold build's writes, say)."""
    k = round_no % len(items)
    return items[k:] + items[:k]


def row(label: str, values: list[float], extra: str = "") -> None:
    print(f"  {label:30} {min(values) * 1e3:8.1f} {statistics.median(values) * 1e3:10.1f}"
          f"{extra}")


def bench(name: str, startnb: list[str], runs: int, env: dict[str, str], cold: Path) -> float:
    env_cold = dict(env, MKSMOLNB_CACHE=str(cold))
    printed = subprocess.run([*startnb, "--print-cmd"], capture_output=True, text=True,
                             env=env, cwd=REPO, check=True).stdout
    bare = shlex.split(printed)
    # Warm the page cache for both, and the plan cache for the warm runs.
    time_to_ready(startnb, env)
    time_to_ready(bare, env)
    warm, plain, cold_t, up_warm, up_cold = [], [], [], [], []
    until = b"launcher start-up"
    for i in range(runs):
        for which in in_turn(i, ["warm", "bare"]):
            if which == "warm":
                t, err = time_to_ready(startnb, env, stderr_until=until)
                warm.append(t)
                up_warm.extend(x for x in [startup_of(err)] if x is not None)
            else:
                plain.append(time_to_ready(bare, env)[0])
        shutil.rmtree(cold, ignore_errors=True)
        t, err = time_to_ready(startnb, env_cold, stderr_until=until)
        cold_t.append(t)
        up_cold.extend(x for x in [startup_of(err)] if x is not None)
        os.sync()  # the cold run's writes land now, not during the next round
    t_py = interpreter_floor(runs)
    med_b = statistics.median(plain)
    print(f"\n{name}: {runs} runs to '{READY.decode()}'")
    print(f"  {'':30} {'min ms':>8} {'median ms':>10}")
    row("startnb, warm cache", warm, ratio_text(warm, plain, target=True))
    row("startnb, cold cache", cold_t, ratio_text(cold_t, plain))
    row("bare QEMU argv (peer)", plain)
    row("python -c pass (floor)", t_py)
    if up_warm:
        row("start-up to exec, warm", up_warm, "   (target < 60 ms)")
    if up_cold:
        row("start-up to exec, cold", up_cold, "   (target < 60 ms)")
    return statistics.median(warm) / med_b


def bench_aarch64(command: list[str], runs: int, env: dict[str, str], work: Path,
                  image: Path) -> None:
    """The aarch64 row: smoltest-arm64 to its ready line under whatever startnb picks."""
    from kernels import ToolchainMissing, build_arm64_kernel

    if shutil.which("qemu-system-aarch64") is None:
        print("\nsmoltest-arm64: skipped (qemu-system-aarch64 not installed: qemu-system-arm)")
        return
    try:
        k = build_arm64_kernel(work / "k-arm64")
    except ToolchainMissing as err:
        print(f"\nsmoltest-arm64: skipped ({err})")
        return
    accel = subprocess.run([*command, "--print-cmd", str(k.image), str(image)],
                           capture_output=True, text=True, env=env, cwd=REPO, check=True)
    argv = shlex.split(accel.stdout)
    how = f"{argv[argv.index('-accel') + 1]}, -cpu {argv[argv.index('-cpu') + 1]}"
    bench(f"smoltest-arm64 kernel (virt machine, {how})",
          [*command, "--console", "stdio", str(k.image), str(image)], runs, env,
          work / "cache-cold-arm64")


#: A stand-in for kstrip (the smoltest kernels have no driver table): copies the kernel.
FAKE_KSTRIP = ("import shutil\n"
               "def strip(kernel, out=None, **kw):\n    shutil.copyfile(kernel, out)\n")


def run_detached(argv: list[str], env: dict[str, str], cwd: Path, name: str,
                 stages: dict[str, list[float]] | None = None
                 ) -> tuple[float, float, float, bool]:
    """``startnb -d``: (seconds until its ready report, until it returned, its start-up,
    started from a plan); the VM is stopped afterwards. ``stages``: where each part of
    the time to the ready report went (see :func:`detached_stages`) is appended to it."""
    start = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    assert p.stdout is not None
    line = p.stdout.readline()
    reported = time.perf_counter() - start
    _, err = p.communicate(timeout=120)
    returned = time.perf_counter() - start
    command = argv[:3] if argv[1:3] == ["-m", "launcher"] else argv[:1]
    stop = subprocess.run([*command, "stop", name, "--force"],
                          capture_output=True, text=True, env=env, cwd=cwd, check=False)
    if p.returncode != 0 or stop.returncode != 0 or not line:
        raise SystemExit(f"failed: {shlex.join(argv)}\n{err}{stop.stderr}")
    info = json.loads(line)
    if stages is not None:
        for k, v in detached_stages(reported, info["timing"]).items():
            stages.setdefault(k, []).append(v)
    return reported, returned, float(info["timing"]["startup"]), bool(info["fast_path"])


def detached_stages(reported: float, timing: dict[str, object]) -> dict[str, float]:
    """The time to a ``startnb -d`` ready report in parts, from its ``--json`` timing
    (``total``: command start to ready; ``startup``: to QEMU's exec; stages from exec):
    the rest (the interpreter's start and ``bin/startnb``'s first import, before the
    command start; the report written once ready), start-up to QEMU's exec, exec to the
    first console byte as the launcher reads it (the keeper's fork and QEMU's own start;
    the bare run's spawn to its first byte is the peer; a detached launcher reads the
    serial log only once its own work is done, so the split between the last two parts
    says more about the launcher than about the guest; their sum is the comparison),
    first byte read to ready."""
    stages = timing["stages"]
    assert isinstance(stages, dict)
    total, startup = float(timing["total"]), float(timing["startup"])  # type: ignore[arg-type]
    first = float(stages["first_byte"])
    return {"interpreter start + report": reported - total, "start-up to exec": startup,
            "exec to first console byte read": first,
            "first byte read to ready": total - startup - first}


def detached_rounds(runs: int, command: list[str], args: list[str], env: dict[str, str],
                    env_cold: dict[str, str], warm_dir: Path, cold_dir: Path,
                    bare_time: Callable[[list[str]], float],
                    parts: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """``startnb ARGS -d --json``: built and its plan saved, then ``runs`` rounds of the
    repeated command (in ``warm_dir``), the bare QEMU argv it prints (timed by
    ``bare_time``, once beforehand to warm up) and the first command of all (the empty
    cache of ``env_cold``, in ``cold_dir``). Seconds, by row; ``parts``: see
    :func:`run_detached`."""
    detached = [*command, *args, "-d", "--json"]
    for _ in range(2):  # builds and strips; then saves the plan
        run_detached([*detached, "--name", "warm"], env, warm_dir, "warm")
    printed = subprocess.run([*command, *args, "--console", "stdio", "--print-cmd"],
                             capture_output=True, text=True, env=env, cwd=warm_dir,
                             check=True).stdout
    bare = shlex.split(printed)
    bare_time(bare)
    rows: dict[str, list[float]] = {k: [] for k in ("warm", "returned", "bare", "cold",
                                                   "up_warm", "up_cold")}
    for i in range(runs):
        for which in in_turn(i, ["warm", "bare"]):
            if which == "bare":
                rows["bare"].append(bare_time(bare))
                continue
            t, t_ret, up, fast = run_detached([*detached, "--name", "warm"], env, warm_dir,
                                              "warm", parts)
            if not fast:
                raise SystemExit("the repeated command did not start from its plan")
            rows["warm"].append(t)
            rows["returned"].append(t_ret)
            rows["up_warm"].append(up)
        shutil.rmtree(cold_dir, ignore_errors=True)
        shutil.rmtree(env_cold["MKSMOLNB_CACHE"], ignore_errors=True)
        cold_dir.mkdir()
        t, _, up, _ = run_detached([*detached, "--name", "cold"], env_cold, cold_dir, "cold")
        rows["cold"].append(t)
        rows["up_cold"].append(up)
        os.sync()  # the cold run's writes land now, not during the next round
    return rows


def detached_rows(title: str, rows: dict[str, list[float]], cold_work: str) -> None:
    """Print :func:`detached_rounds`' rows under ``title``, with ratios to bare QEMU."""
    bare = rows["bare"]
    print(f"\n{title}")
    print(f"  {'':30} {'min ms':>8} {'median ms':>10}")
    row("repeated (plan), ready report", rows["warm"],
        ratio_text(rows["warm"], bare, target=True))
    row("repeated (plan), returned", rows["returned"], ratio_text(rows["returned"], bare))
    row("first command (cold)", rows["cold"], ratio_text(rows["cold"], bare))
    row("bare QEMU argv (peer)", rows["bare"])
    row("start-up to exec, repeated", rows["up_warm"], "   (target < 10 ms)")
    row("start-up to exec, cold", rows["up_cold"], f"   ({cold_work})")


def bench_service(command: list[str], runs: int, env: dict[str, str], work: Path,
                  kernel: Path, spin: int, machine: str) -> None:
    """``startnb SERVICE --strip -d``: repeated, bare QEMU, first command (see above)."""
    sys.path.insert(0, str(REPO / "tests"))
    import gzip

    from helpers.fakemirror import FakeMirror, make_set, release_tree, write_sha512

    from services import shipped_dir
    from smolfs.sets.release import DEFAULT_RELEASE

    top = work / "mirror" / release_tree(DEFAULT_RELEASE, "amd64") / "binary"
    (top / "sets").mkdir(parents=True)
    make_set(top / "sets" / "rescue.tar.xz", "rescue")
    write_sha512(top / "sets")
    (top / "kernel").mkdir(parents=True)
    (top / "kernel" / "netbsd-SMOLTEST.gz").write_bytes(
        gzip.compress(kernel.read_bytes(), mtime=0))
    write_sha512(top / "kernel")
    services = work / "services"
    shutil.copytree(shipped_dir(), services, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    conf = services / "rescue" / "service.conf"
    conf.write_text(re.sub(r"(?m)^READY=.*$", "READY=^SERVICE READY$", conf.read_text()))
    fake = work / "fake-kstrip" / "kstrip"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_KSTRIP)
    warm_dir, cold_dir = work / "svc-warm", work / "svc-cold"
    warm_dir.mkdir()
    args = ["rescue", "--services-dir", str(services), "-k", "SMOLTEST", "--strip", "-N",
            "--machine", machine, "-a", f"smoltest.spin={spin}"]
    parts: dict[str, list[float]] = {}
    plain_first: list[float] = []
    with FakeMirror(work / "mirror") as mirror:
        env = dict(env, MKSMOLNB_MIRROR=mirror.url,
                   PYTHONPATH=os.pathsep.join([str(fake.parent), str(REPO)]))
        env_cold = dict(env, MKSMOLNB_CACHE=str(work / "cache-svc-cold"))
        rows = detached_rounds(
            runs, command, args, env, env_cold, warm_dir, cold_dir,
            lambda bare: time_to_ready(bare, env, cwd=warm_dir, first_byte=plain_first)[0],
            parts)
    del plain_first[0]  # (the warm-up's)
    plain = rows["bare"]
    detached_rows(f"startnb SERVICE --strip -d (smoltest kernel, smoltest.spin={spin}, "
                  f"{machine}): {runs} runs to ready", rows, "fetch, build, strip")
    print("  where the repeated run's time went (medians; the peer's in brackets):")
    peer = {"exec to first console byte read": plain_first,
            "first byte read to ready": [r - f for r, f in zip(plain, plain_first,
                                                                   strict=True)]}
    for label, values in parts.items():
        mine = statistics.median(values) * 1e3
        other = f"   [{statistics.median(peer[label]) * 1e3:7.1f}]" if label in peer else ""
        print(f"    {label:36} {mine:7.1f} ms{other}")
    print(f"    {'(python -c pass, for scale)':36} "
          f"{statistics.median(interpreter_floor(runs)) * 1e3:7.1f} ms")


def interpreter() -> str:
    """The Python startnb runs on (this one's venv), as its start-up depends on it: the
    version, the binary and whether libpython is a shared library (slower to start: its
    relocations; a distribution's python3 is linked whole)."""
    import platform

    with open("/proc/self/maps") if os.path.exists("/proc/self/maps") else open(os.devnull) as f:
        shared = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in f
                         if "libpython" in line})
    how = f"{', '.join(shared)}: shared" if shared else "libpython linked in"
    return f"Python {platform.python_version()} ({os.path.realpath(sys.executable)}, {how})"


def launcher_command() -> tuple[list[str], str]:
    script = Path(sys.executable).parent / "startnb"
    if script.exists():
        return [str(script)], str(script)
    return [sys.executable, "-m", "launcher"], "python -m launcher"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--machine", default="auto", choices=("auto", "microvm", "pc"))
    ap.add_argument("--spin", type=int, default=500, metavar="MS",
                    help="guest busy-wait before READY in the second case (500)")
    ap.add_argument("--no-aarch64", action="store_true",
                    help="leave out the aarch64 test kernel")
    ap.add_argument("--only-service", action="store_true",
                    help="measure only startnb SERVICE --strip -d")
    args = ap.parse_args()
    # Byte-compile the checkout as an installed package is (PYTHONDONTWRITEBYTECODE would
    # otherwise make every run compile the launcher from source).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "launcher"),
                    str(REPO / "smolfs"), str(REPO / "services"), str(REPO / "kstrip")],
                   check=True, stdout=subprocess.DEVNULL)
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
        command, shown = launcher_command()
        print(f"startnb: {shown}, on {interpreter()}")
        print(steadiness())
        base = [*command, "--console", "stdio", "--machine", args.machine]
        cold = work / "cache-cold"
        if args.only_service:
            bench_service(command, args.runs, env, work, kernel, args.spin, args.machine)
            genuine_service_rows(args.runs, command, work, env)
            return 0
        bench(f"smoltest kernel ({args.machine} machine)",
              [*base, str(kernel), str(image)], args.runs, env, cold)
        # The same kernel waiting as long as a genuine NetBSD boot takes here (0.4-0.8 s
        # to a service under TCG), so the ratio reads as it would for NetBSD.
        bench(f"smoltest kernel, smoltest.spin={args.spin} ({args.machine} machine)",
              [*base, str(kernel), str(image), "-a", f"smoltest.spin={args.spin}"],
              args.runs, env, cold)
        bench_service(command, args.runs, env, work, kernel, args.spin, args.machine)
        if not args.no_aarch64:
            bench_aarch64(command, args.runs, env, work, image)
        genuine_rows(args.runs, command, work, env)
        genuine_service_rows(args.runs, command, work, env)
    return 0


# -- genuine NetBSD: the rescue service, VM kernel vs stripped GENERIC -------------------

GENUINE_READY = b"rescue: ready"


def genuine_time_to_ready(argv: list[str], env: dict[str, str], timeout: float = 120.0
                          ) -> float:
    """Spawn ``argv`` (its console on stdout); seconds until the rescue service's ready
    line; then stop it (SIGTERM: startnb stops its QEMU, a bare QEMU ends)."""
    start = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    assert p.stdout is not None
    elapsed = None
    buf = b""
    try:
        while time.perf_counter() < start + timeout:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            if GENUINE_READY in buf:
                elapsed = time.perf_counter() - start
                break
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=10)
    if elapsed is None:
        raise SystemExit(f"not ready: {shlex.join(argv)}\n{buf[-2000:].decode(errors='replace')}")
    return elapsed


def genuine_rows(runs: int, command: list[str], work: Path, env: dict[str, str]) -> None:
    nb = os.environ.get("MKSMOLNB_NETBSD_DIR")
    if not nb:
        print("\ngenuine NetBSD: skipped (set MKSMOLNB_NETBSD_DIR)")
        return
    d = Path(nb)
    vm_kernel, generic = d / "netbsd", d / "netbsd-GENERIC"
    rescue = next((d / "sets" / n for n in ("rescue.tgz", "rescue.tar.xz")
                   if (d / "sets" / n).exists()), None)
    if not vm_kernel.exists() or not generic.exists() or rescue is None:
        print(f"\ngenuine NetBSD: skipped ({d} needs netbsd, netbsd-GENERIC and "
              "sets/rescue.tgz)")
        return
    image = work / "rescue.img"
    stripped = work / "netbsd-GENERIC-stripped"
    subprocess.run([sys.executable, "-m", "smolfs", "build", "-s", "rescue", "-x", str(rescue),
                    "-i", str(image), "--offline"], env=env, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "kstrip", str(generic), "-o", str(stripped)],
                   env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    cases: dict[str, list[str]] = {}
    for label, kernel in (("VM kernel", vm_kernel), ("kstrip'd GENERIC", stripped)):
        startnb = [*command, "--console", "stdio", "-k", str(kernel), "-i", str(image),
                   "--ro", "-N", "--ready", "console:^rescue: ready"]
        printed = subprocess.run([*startnb, "--print-cmd"], capture_output=True, text=True,
                                 env=env, cwd=REPO, check=True).stdout
        cases[f"{label}, startnb"] = startnb
        cases[f"{label}, bare QEMU"] = shlex.split(printed)
    for argv in cases.values():  # warm the page cache, and startnb's plan
        genuine_time_to_ready(argv, env)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(runs):
        for name in in_turn(i, list(cases)):
            times[name].append(genuine_time_to_ready(cases[name], env))
    print(f"\ngenuine NetBSD {d}: the rescue service to '{GENUINE_READY.decode()}', "
          f"{runs} runs, TCG")
    print(f"  {'':30} {'min ms':>8} {'median ms':>10}")
    med = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        label, _, how = name.partition(", ")
        extras = []
        if how == "startnb":
            extras.append(f"{med[name] / med[f'{label}, bare QEMU']:.3f} x bare QEMU")
        if label != "VM kernel":
            extras.append(f"{med[name] / med[f'VM kernel, {how}']:.3f} x VM kernel")
        row(name, values, "   " + ", ".join(extras) if extras else "")



# -- genuine NetBSD: the main job, startnb SERVICE --strip -d --ready http: ---------------

#: The local mirror serves the genuine sets under a release whose amd64 sets are .tgz.
GENUINE_RELEASE = "9.3"


def http_ready(argv: list[str], env: dict[str, str], port: int, cwd: Path,
               timeout: float = 120.0) -> float:
    """Spawn ``argv`` (a bare QEMU, console to /dev/null); seconds until the guest answers
    HTTP on ``port``, probed as ``startnb --ready http:`` probes
    (:func:`launcher.ready.first_http_answer`); then stop it."""
    from launcher.ready import first_http_answer

    start = time.monotonic()  # (the clock first_http_answer answers in)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    try:
        at = first_http_answer(port, "/", lambda: p.poll() is not None
                               or time.monotonic() > start + timeout)
    finally:
        p.terminate()
        p.wait(timeout=10)
    if at is None:
        raise SystemExit(f"no HTTP answer: {shlex.join(argv)}")
    return at - start


def genuine_service_rows(runs: int, command: list[str], work: Path,
                         env: dict[str, str]) -> None:
    """``startnb bozohttpd --strip -d --ready http:PORT/`` as a user runs it: a local mirror
    publishing the genuine GENERIC kernel (``netbsd-GENERIC.gz``) and the genuine rescue
    and httpd sets; the shipped bozohttpd service on those two sets. Repeated (from its
    plan), the bare QEMU argv of the same boot (probed for HTTP the same way) and the
    first command of all (cold: fetch, verify, build, kstrip, boot), interleaved."""
    nb = os.environ.get("MKSMOLNB_NETBSD_DIR")
    d = Path(nb) if nb else None
    need = ("netbsd-GENERIC", "sets/rescue.tgz", "sets/httpd.tgz")
    if d is None or not all((d / n).exists() for n in need):
        print("\ngenuine NetBSD service: skipped (MKSMOLNB_NETBSD_DIR with "
              f"{', '.join(need)})")
        return
    import gzip

    from helpers.fakemirror import FakeMirror, release_tree, write_sha512
    from helpers.ports import free_port

    from services import shipped_dir
    from smolfs.pkg import pwdb

    top = work / "gmirror" / release_tree(GENUINE_RELEASE, "amd64") / "binary"
    (top / "sets").mkdir(parents=True)
    for name in ("rescue", "httpd"):
        shutil.copyfile(d / "sets" / f"{name}.tgz", top / "sets" / f"{name}.tgz")
    write_sha512(top / "sets")
    (top / "kernel").mkdir(parents=True)
    (top / "kernel" / "netbsd-GENERIC.gz").write_bytes(
        gzip.compress((d / "netbsd-GENERIC").read_bytes(), compresslevel=6, mtime=0))
    write_sha512(top / "kernel")
    services = work / "gservices"
    shutil.copytree(shipped_dir(), services, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    conf = services / "bozohttpd" / "service.conf"
    # Read-only, as rescue: a root left dirty by the kill ending each run would otherwise
    # be checked at the next boot (of either side).
    conf.write_text(re.sub(r"(?m)^SETS=.*$", "SETS=rescue,httpd", conf.read_text())
                    + "RO=yes\n")
    pwd, _ = pwdb.databases(["root:*:0:0::0:0:Charlie &:/root:/bin/sh"])
    (services / "bozohttpd" / "etc" / "pwd.db").write_bytes(pwd)
    port = free_port()
    args = ["bozohttpd", "--services-dir", str(services), "--release", GENUINE_RELEASE,
            "--strip", "-p", f"{port}:80", "--ready", f"http:{port}/", "--timeout", "120"]
    warm_dir, cold_dir = work / "gsvc-warm", work / "gsvc-cold"
    warm_dir.mkdir()
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    with FakeMirror(work / "gmirror") as mirror:
        env = dict(env, MKSMOLNB_MIRROR=mirror.url, MKSMOLNB_CACHE=str(work / "gcache"))
        env_cold = dict(env, MKSMOLNB_CACHE=str(work / "gcache-cold"))
        rows = detached_rounds(runs, command, args, env, env_cold, warm_dir, cold_dir,
                               lambda bare: http_ready(bare, env, port, warm_dir))
    detached_rows(f"genuine NetBSD {d}: startnb bozohttpd --strip -d --ready http: (GENERIC, "
                  f"rescue and httpd sets from a local mirror), {runs} runs, TCG", rows,
                  "fetch, verify, build, kstrip")


if __name__ == "__main__":
    sys.exit(main())
