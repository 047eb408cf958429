"""Tiny test kernels, compiled from source at test time, that QEMU boots in milliseconds.

``smoltest`` comes in two boot protocols: a PVH ELF (``-M microvm`` through qboot, ``-M pc``
through QEMU's pvh option ROM) and a multiboot ELF (``-M pc``; microvm only with its option
ROMs on). Both print, on COM1, what the guest received (command line, RAM) and which virtio
devices it found, then the lines a NetBSD boot prints at each stage; see README.md beside
this file for the console protocol and the ``smoltest.*`` command-line words.

Use from tests: add ``from kernels import test_kernels  # noqa: F401`` to ``conftest.py`` and
ask for the session fixture ``test_kernels`` (a :class:`TestKernels`).
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SOURCE_DIR = Path(__file__).resolve().parent

#: The lines a NetBSD boot prints at its stages, as smoltest prints them, in order.
KERNEL_BANNER = "NetBSD 10.1 (SMOLTEST) #0: Mon Jan  1 00:00:00 UTC 2024"
ROOT_MOUNTED = "root file system type: ffs"
RC_LINE = "Starting smoltest service."
READY_LINE = "SERVICE READY"
PANIC_LINE = "panic: smoltest"
STAGE_LINES = (KERNEL_BANNER, ROOT_MOUNTED, RC_LINE, READY_LINE)

#: Exit status of QEMU when smoltest writes N to isa-debug-exit: (N << 1) | 1.
DEBUG_EXIT_DEVICE = ("-device", "isa-debug-exit,iobase=0xf4,iosize=4")

_CFLAGS = (
    "-m32", "-march=i686", "-std=gnu11", "-Os", "-Wall", "-Wextra", "-Werror",
    "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fno-ident", "-nostdinc",
)


@dataclass(frozen=True)
class _Variant:
    out: str
    entry_src: str
    entry: str
    defines: tuple[str, ...] = ()
    elf64: bool = False  # objcopy the linked ELF32 to ELF64 (the code stays 32-bit)


_VARIANTS = (
    _Variant("smoltest-pvh.elf", "pvh.S", "pvh_start"),
    _Variant("smoltest-multiboot.elf", "multiboot.S", "multiboot_start"),
    _Variant("smoltest-pvh64.elf", "pvh.S", "pvh_start", ("-DPVH_NOTE64",), elf64=True),
    _Variant("smoltest-noboot.elf", "pvh.S", "pvh_start", ("-DNO_PVH_NOTE",)),
)
_GZIPPED = ("smoltest-pvh.elf", "smoltest-multiboot.elf")


class ToolchainMissing(Exception):
    """gcc, ld or gcc's 32-bit support is not installed: the kernels cannot be built."""


class KernelBuildError(Exception):
    """The toolchain is there but compiling or linking failed."""


@dataclass(frozen=True)
class TestKernels:
    """Paths of the built kernels and their gzip-compressed copies."""

    __test__ = False  # not a pytest test class

    pvh: Path  # ELF32 with the Xen PVH entry note
    multiboot: Path  # ELF32 with a multiboot (v1) header
    pvh_gz: Path  # gzip of pvh (QEMU cannot load it as is)
    multiboot_gz: Path  # gzip of multiboot
    pvh64: Path  # ELF64 with the PVH note (8-byte value), like an amd64 NetBSD kernel
    noboot: Path  # ELF32 with neither PVH note nor multiboot header: QEMU refuses it


def _run(argv: list[str], cwd: Path) -> None:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError as exc:
        raise ToolchainMissing(f"{argv[0]} not found (install gcc, binutils, gcc-multilib)") \
            from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise KernelBuildError(f"{' '.join(argv)} failed with status {proc.returncode}:\n"
                               + "\n".join(tail))


def _check_toolchain(work: Path) -> None:
    for tool in ("gcc", "ld", "objcopy"):
        if shutil.which(tool) is None:
            raise ToolchainMissing(f"{tool} not found (install gcc, binutils, gcc-multilib)")
    probe = work / "probe.c"
    probe.write_text("unsigned long long probe(unsigned long long x) { return x * 3; }\n")
    try:
        _run(["gcc", *_CFLAGS, "-c", "probe.c", "-o", "probe.o"], work)
    except KernelBuildError as exc:
        raise ToolchainMissing("gcc cannot compile for x86 -m32 (install gcc-multilib; "
                               "not available on non-x86 hosts)") from exc


def _gzip(src: Path, dest: Path) -> None:
    """Deterministic gzip: no file name, mtime 0."""
    with src.open("rb") as f, dest.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        shutil.copyfileobj(f, gz)


def build_test_kernels(outdir: Path) -> TestKernels:
    """Compile both smoltest kernels into ``outdir``; same sources → same bytes.

    Raises :class:`ToolchainMissing` when gcc, ld or 32-bit support is missing and
    :class:`KernelBuildError` when a compile or link fails.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=outdir, prefix=".build-") as tmp:
        work = Path(tmp)
        for name in ("smoltest.c", "pvh.S", "multiboot.S", "kernel.ld"):
            shutil.copyfile(SOURCE_DIR / name, work / name)
        _check_toolchain(work)
        _run(["gcc", *_CFLAGS, "-c", "smoltest.c", "-o", "smoltest.o"], work)
        for v in _VARIANTS:
            obj = v.out.replace(".elf", ".o")
            _run(["gcc", *_CFLAGS, *v.defines, "-c", v.entry_src, "-o", obj], work)
            _run(["ld", "-m", "elf_i386", "-T", "kernel.ld", "-nostdlib", "--build-id=none",
                  "-z", "noexecstack", "-e", v.entry, "-o", v.out, obj, "smoltest.o"], work)
            if v.elf64:
                _run(["objcopy", "-O", "elf64-x86-64", v.out, v.out], work)
            (work / v.out).replace(outdir / v.out)
        for name in _GZIPPED:
            _gzip(outdir / name, outdir / (name + ".gz"))
    return TestKernels(
        pvh=outdir / "smoltest-pvh.elf",
        multiboot=outdir / "smoltest-multiboot.elf",
        pvh_gz=outdir / "smoltest-pvh.elf.gz",
        multiboot_gz=outdir / "smoltest-multiboot.elf.gz",
        pvh64=outdir / "smoltest-pvh64.elf",
        noboot=outdir / "smoltest-noboot.elf",
    )


#: Debian's cross binutils (binutils-aarch64-linux-gnu): no cross compiler is needed, the
#: aarch64 kernel is assembly (Debian's gcc-aarch64-linux-gnu cannot be installed beside
#: gcc-multilib, which the i386 kernels need).
ARM64_TOOLS = ("aarch64-linux-gnu-as", "aarch64-linux-gnu-ld", "aarch64-linux-gnu-objcopy")


@dataclass(frozen=True)
class Arm64Kernel:
    """smoltest for ``qemu-system-aarch64 -M virt`` (see ``arm64.S``)."""

    image: Path  # the arm64 Image (header, then code): what -kernel boots
    elf: Path  # the same code as an AArch64 ELF (not bootable as is: no Image header read)


def build_arm64_kernel(outdir: Path) -> Arm64Kernel:
    """Assemble and link ``arm64.S``; same source, same bytes. Raises
    :class:`ToolchainMissing` without the cross binutils."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    as_, ld, objcopy = ARM64_TOOLS
    for tool in ARM64_TOOLS:
        if shutil.which(tool) is None:
            raise ToolchainMissing(f"{tool} not found (install binutils-aarch64-linux-gnu)")
    with tempfile.TemporaryDirectory(dir=outdir, prefix=".build-arm64-") as tmp:
        work = Path(tmp)
        for name in ("arm64.S", "kernel-arm64.ld"):
            shutil.copyfile(SOURCE_DIR / name, work / name)
        _run([as_, "-o", "arm64.o", "arm64.S"], work)
        _run([ld, "-T", "kernel-arm64.ld", "-nostdlib", "--build-id=none", "-z", "noexecstack",
              "-z", "max-page-size=4096", "-o", "smoltest-arm64.elf", "arm64.o"], work)
        _run([objcopy, "-O", "binary", "smoltest-arm64.elf", "smoltest-arm64.img"], work)
        for name in ("smoltest-arm64.elf", "smoltest-arm64.img"):
            (work / name).replace(outdir / name)
    return Arm64Kernel(image=outdir / "smoltest-arm64.img", elf=outdir / "smoltest-arm64.elf")


def fixture_arm64_kernel(tmp_path_factory: pytest.TempPathFactory) -> Arm64Kernel:
    """Build the aarch64 kernel once per session; skip (one line) without cross binutils."""
    try:
        return build_arm64_kernel(tmp_path_factory.mktemp("arm64-kernel"))
    except ToolchainMissing as exc:
        pytest.skip(f"aarch64 test kernel: {exc}")


arm64_kernel = pytest.fixture(scope="session", name="arm64_kernel")(fixture_arm64_kernel)


def fixture_test_kernels(tmp_path_factory: pytest.TempPathFactory) -> TestKernels:
    """Build the kernels once per session; skip (one line) when the toolchain is missing."""
    try:
        return build_test_kernels(tmp_path_factory.mktemp("test-kernels"))
    except ToolchainMissing as exc:
        pytest.skip(f"test kernels: {exc}")


test_kernels = pytest.fixture(scope="session", name="test_kernels")(fixture_test_kernels)


@dataclass(frozen=True)
class VirtioDevice:
    """One ``SMOLTEST virtio`` line: ``transport`` is "pci" or "mmio"."""

    transport: str
    location: str  # "00:03.0" (pci) or "0xfeb02e00" (mmio)
    ident: str  # "1af4:1001" (pci) or the decimal virtio device id (mmio)
    kind: str  # net, blk, console, rng or other


@dataclass
class Console:
    """What a smoltest console said, parsed by :func:`parse_console`."""

    boot: str | None = None
    cmdline: str | None = None
    mem_kib: int | None = None
    virtio: list[VirtioDevice] = field(default_factory=list)
    spin: tuple[int, str] | None = None  # (milliseconds, "pit" | "tsc")
    lines: list[str] = field(default_factory=list)
    psci: str | None = None  # arm64: the PSCI conduit the device tree names (hvc, smc)

    def stages(self) -> list[str]:
        """The stage lines seen, in the order they came."""
        return [line for line in self.lines if line in (*STAGE_LINES, PANIC_LINE)]


_VIRTIO = re.compile(r"SMOLTEST virtio (pci|mmio) (\S+) (\S+) (\S+)")


def parse_console(text: str) -> Console:
    """Parse smoltest's console output (``\\r\\n`` or ``\\n`` line ends)."""
    con = Console()
    for line in text.replace("\r\n", "\n").split("\n"):
        con.lines.append(line)
        if line.startswith("SMOLTEST boot "):
            con.boot = line.removeprefix("SMOLTEST boot ")
        elif line.startswith("SMOLTEST cmdline"):
            con.cmdline = line.removeprefix("SMOLTEST cmdline").removeprefix(" ")
        elif line.startswith("SMOLTEST mem "):
            con.mem_kib = int(line.split()[2])
        elif line.startswith("SMOLTEST psci "):
            con.psci = line.removeprefix("SMOLTEST psci ")
        elif line.startswith("SMOLTEST spin "):
            ms, clock = line.split()[2:4]
            con.spin = (int(ms), clock)
        elif m := _VIRTIO.fullmatch(line):
            con.virtio.append(VirtioDevice(*m.groups()))
    return con
