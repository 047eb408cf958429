"""The smoltest kernels, booted directly by qemu-system-x86_64 (no launcher), under TCG.

The ``test_kernels`` session fixture comes from ``kernels`` through ``conftest.py``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from kernels import (
    DEBUG_EXIT_DEVICE,
    PANIC_LINE,
    RC_LINE,
    READY_LINE,
    ROOT_MOUNTED,
    STAGE_LINES,
    Console,
    KernelBuildError,
    TestKernels,
    ToolchainMissing,
    VirtioDevice,
    build_test_kernels,
    parse_console,
)

QEMU = "qemu-system-x86_64"
APPEND = "root=ld0a console=com smoltest.exit=1"
BASE = [QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
        "-no-reboot", *DEBUG_EXIT_DEVICE, "-accel", "tcg", "-m", "128"]
TIMEOUT = 30.0


def devices(machine: str, disk: Path) -> list[str]:
    """A virtio disk and a virtio network card, on the transport the machine has."""
    bus = "device" if machine.startswith("microvm") else "pci"
    return ["-drive", f"if=none,file={disk},format=raw,id=hd0",
            "-device", f"virtio-blk-{bus},drive=hd0",
            "-netdev", "user,id=n0", "-device", f"virtio-net-{bus},netdev=n0"]


def boot(machine: str, kernel: Path, append: str, extra: Sequence[str] = ()
         ) -> tuple[int, str]:
    """Boot to the end (a kernel that exits QEMU); the exit status and the console."""
    argv = [*BASE, "-M", machine, "-kernel", str(kernel), "-append", append, *extra]
    proc = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout.decode("ascii", "replace") + proc.stderr.decode(
        "ascii", "replace")


def boot_until(machine: str, kernel: Path, append: str, last: str, linger: float
               ) -> tuple[list[tuple[float, str]], int | None]:
    """Boot a kernel that halts: read console lines until `last`, `linger` seconds more,
    then kill QEMU. Returns (seconds since start, line) pairs and the exit status if QEMU
    ended on its own."""
    argv = [*BASE, "-M", machine, "-kernel", str(kernel), "-append", append]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines: list[tuple[float, str]] = []
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("ascii", "replace").rstrip("\r\n")
            lines.append((time.monotonic() - start, line))
            if line == last:
                break
        try:
            status: int | None = proc.wait(timeout=linger)
        except subprocess.TimeoutExpired:
            status = None
        lines.extend((time.monotonic() - start, line.rstrip("\r"))
                     for line in _drain(proc).splitlines())
        return lines, status
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()


def _drain(proc: subprocess.Popen[bytes]) -> str:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    return proc.stdout.read().decode("ascii", "replace")


def check_stages(con: Console, text: str) -> None:
    assert con.stages() == list(STAGE_LINES), text
    assert text.count("\r\n") == text.count("\n"), "every line ends in \\r\\n"


def test_build_is_deterministic(test_kernels: TestKernels, tmp_path: Path) -> None:
    again = build_test_kernels(tmp_path)
    for name in ("pvh", "multiboot", "pvh_gz", "multiboot_gz", "pvh64", "noboot"):
        assert getattr(again, name).read_bytes() == getattr(test_kernels, name).read_bytes()
    assert gzip.decompress(again.pvh_gz.read_bytes()) == again.pvh.read_bytes()
    assert gzip.decompress(again.multiboot_gz.read_bytes()) == again.multiboot.read_bytes()


def test_pvh_note_and_multiboot_header(test_kernels: TestKernels) -> None:
    with test_kernels.pvh.open("rb") as f:
        elf = ELFFile(f)
        notes = [n for seg in elf.iter_segments() if seg["p_type"] == "PT_NOTE"
                 for n in seg.iter_notes()]
        xen = [n for n in notes if n["n_name"] == "Xen" and n["n_type"] == 18]
        assert len(xen) == 1
        entry = int.from_bytes(xen[0]["n_descdata"], "little")
        symbols = elf.get_section_by_name(".symtab")
        assert entry == symbols.get_symbol_by_name("pvh_start")[0]["st_value"] == elf["e_entry"]
    head = test_kernels.multiboot.read_bytes()[:8192]
    at = head.find((0x1BADB002).to_bytes(4, "little"))
    assert at >= 0 and at % 4 == 0
    magic, flags, checksum = (int.from_bytes(head[at + i:at + i + 4], "little")
                              for i in (0, 4, 8))
    assert (magic + flags + checksum) & 0xFFFFFFFF == 0
    assert flags & 2  # memory information requested


MICROVM_ACPI = [VirtioDevice("mmio", "0xfeb02c00", "1", "net"),
                VirtioDevice("mmio", "0xfeb02e00", "2", "blk")]
#: Without ACPI microvm has 8 transports, not 24, and fills them from the top down too.
MICROVM_NO_ACPI = [VirtioDevice("mmio", "0xfeb00c00", "1", "net"),
                   VirtioDevice("mmio", "0xfeb00e00", "2", "blk")]
MICROVM_MINIMAL = "microvm,x-option-roms=off,rtc=off,pit=off,pic=off,isa-serial=on"

def test_missing_toolchain_is_one_clear_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainMissing, match=r"^gcc not found \(install gcc, binutils"):
        build_test_kernels(tmp_path / "out")


def test_build_error_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gcc that compiles the probe but fails on the kernel: the error says what failed."""
    real = shutil.which("gcc")
    if real is None:
        pytest.skip("gcc not installed")
    fake = tmp_path / "bin"
    fake.mkdir()
    gcc = fake / "gcc"
    gcc.write_text('#!/bin/sh\ncase "$*" in *smoltest.c*) echo "boom: bad source" >&2; '
                   f'exit 1;; esac\nexec {real} "$@"\n')
    gcc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(KernelBuildError, match=r"(?s)smoltest\.c.*status 1.*boom: bad source"):
        build_test_kernels(tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())  # the build directory is gone


BOOTS = [
    ("microvm", "pvh", MICROVM_ACPI),
    (MICROVM_MINIMAL, "pvh", MICROVM_ACPI),
    ("microvm,acpi=off,auto-kernel-cmdline=off", "pvh", MICROVM_NO_ACPI),
    ("pc", "pvh", [VirtioDevice("pci", "00:02.0", "1af4:1001", "blk"),
                   VirtioDevice("pci", "00:03.0", "1af4:1000", "net")]),
    ("pc", "multiboot", [VirtioDevice("pci", "00:02.0", "1af4:1001", "blk"),
                         VirtioDevice("pci", "00:03.0", "1af4:1000", "net")]),
    ("microvm", "pvh64", MICROVM_ACPI),
    ("pc", "pvh64", [VirtioDevice("pci", "00:02.0", "1af4:1001", "blk"),
                     VirtioDevice("pci", "00:03.0", "1af4:1000", "net")]),
]


@pytest.mark.qemu
@pytest.mark.parametrize(("machine", "variant", "expected"), BOOTS,
                         ids=[f"{m.replace(',', '+')}-{v}" for m, v, _ in BOOTS])
def test_boot_reports_cmdline_devices_and_stages(
    test_kernels: TestKernels, disk: Path, machine: str, variant: str,
    expected: list[VirtioDevice],
) -> None:
    kernel = getattr(test_kernels, variant)
    protocol = "multiboot" if variant == "multiboot" else "pvh"
    status, text = boot(machine, kernel, APPEND, devices(machine, disk))
    con = parse_console(text)
    assert status == 3, text  # isa-debug-exit: (1 << 1) | 1
    assert con.boot == protocol
    # QEMU's multiboot loader puts the kernel's file name before the arguments.
    want = APPEND if protocol == "pvh" else f"{kernel} {APPEND}"
    assert con.cmdline == want
    assert sorted(con.virtio, key=lambda d: d.kind) == sorted(expected, key=lambda d: d.kind)
    assert con.mem_kib is not None and 120 * 1024 < con.mem_kib <= 128 * 1024, text
    check_stages(con, text)


@pytest.mark.qemu
def test_multiboot_on_microvm_with_option_roms(test_kernels: TestKernels, disk: Path) -> None:
    status, text = boot("microvm", test_kernels.multiboot, APPEND, devices("microvm", disk))
    con = parse_console(text)
    assert status == 3, text
    assert con.boot == "multiboot"
    assert {d.kind for d in con.virtio} == {"blk", "net"}
    check_stages(con, text)


@pytest.mark.qemu
def test_no_devices_and_empty_cmdline(test_kernels: TestKernels) -> None:
    """Without -append nor devices: an empty command line, no virtio lines, and no exit
    request, so the kernel halts after READY."""
    lines, status = boot_until("microvm", test_kernels.pvh, "", READY_LINE, linger=0.3)
    text = "\n".join(line for _, line in lines)
    con = parse_console(text)
    assert status is None, text  # still running: halted, not exited
    assert con.cmdline == ""
    assert con.virtio == []
    assert con.stages() == list(STAGE_LINES)


@pytest.mark.qemu
def test_panic_resets_the_machine(test_kernels: TestKernels) -> None:
    status, text = boot("pc", test_kernels.pvh, "smoltest.panic smoltest.exit=1")
    con = parse_console(text)
    assert status == 0, text  # triple fault with -no-reboot: QEMU exits cleanly
    assert con.stages() == [STAGE_LINES[0], PANIC_LINE]


@pytest.mark.qemu
def test_noready_halts_without_ready_line(test_kernels: TestKernels) -> None:
    lines, status = boot_until("microvm", test_kernels.pvh,
                               "smoltest.noready smoltest.exit=1", RC_LINE, linger=0.5)
    text = "\n".join(line for _, line in lines)
    assert status is None, text  # no exit without readiness
    assert READY_LINE not in text
    assert ROOT_MOUNTED in text


@pytest.mark.qemu
def test_spin_delays_ready(test_kernels: TestKernels) -> None:
    lines, status = boot_until("pc", test_kernels.multiboot,
                               "smoltest.spin=400 smoltest.exit=2", READY_LINE, linger=5)
    text = "\n".join(line for _, line in lines)
    assert status == 5, text
    con = parse_console(text)
    assert con.spin == (400, "pit")
    at = {line: t for t, line in lines}
    assert 0.3 < at[READY_LINE] - at[RC_LINE] < 3.0, lines


@pytest.mark.qemu
def test_exit_without_debug_device_says_so(test_kernels: TestKernels) -> None:
    argv = [a for a in BASE if a not in DEBUG_EXIT_DEVICE]
    proc = subprocess.Popen([*argv, "-M", "microvm", "-kernel", str(test_kernels.pvh),
                             "-append", "smoltest.exit=1"],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        seen = []
        for raw in proc.stdout:
            seen.append(raw.decode())
            if raw.startswith(b"SMOLTEST exit failed"):
                break
        timer.cancel()
        assert seen[-1].startswith("SMOLTEST exit failed: no isa-debug-exit"), seen
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.qemu
def test_device_names(test_kernels: TestKernels) -> None:
    status, text = boot("q35", test_kernels.pvh, "smoltest.exit=1",
                        ["-device", "virtio-rng-pci", "-device", "virtio-serial-pci",
                         "-device", "virtio-balloon-pci"])
    assert status == 3, text
    assert [(d.ident, d.kind) for d in parse_console(text).virtio] == [
        ("1af4:1005", "rng"), ("1af4:1003", "console"), ("1af4:1002", "other")]


@pytest.mark.qemu
def test_microvm_without_acpi_appends_to_the_cmdline(test_kernels: TestKernels,
                                                      disk: Path) -> None:
    """What a launcher must know: microvm,acpi=off tells a Linux guest where its
    virtio-mmio devices are by adding words to the kernel command line."""
    status, text = boot("microvm,acpi=off", test_kernels.pvh, APPEND,
                        devices("microvm", disk))
    assert status == 3, text
    assert parse_console(text).cmdline == (
        f"{APPEND} virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=512@0xfeb00c00:11")


@pytest.mark.qemu
def test_spin_without_pit_falls_back_to_tsc(test_kernels: TestKernels) -> None:
    status, text = boot(MICROVM_MINIMAL, test_kernels.pvh, "smoltest.spin=10 smoltest.exit=1")
    assert status == 3, text
    assert parse_console(text).spin == (10, "tsc")


@pytest.mark.qemu
def test_boots_under_any_kvm(test_kernels: TestKernels, disk: Path) -> None:
    """KVM of any kind, the nested kvm_pvm included: trivial guests run under it."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("kvm: /dev/kvm is missing or not read-write")
    argv = [a if a != "tcg" else "kvm" for a in BASE]
    proc = subprocess.run([*argv, "-cpu", "qemu64", "-M", "microvm", "-kernel",
                           str(test_kernels.pvh), "-append", APPEND,
                           *devices("microvm", disk)],
                          capture_output=True, timeout=TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL)
    text = proc.stdout.decode("ascii", "replace")
    if proc.returncode == 1 and "kvm" in proc.stderr.decode().lower():
        pytest.skip(f"kvm: {proc.stderr.decode().strip().splitlines()[-1]}")
    assert proc.returncode == 3, text + proc.stderr.decode()
    con = parse_console(text)
    assert con.cmdline == APPEND
    assert con.virtio == MICROVM_ACPI
    check_stages(con, text)


@pytest.mark.qemu
@pytest.mark.parametrize("variant", ["noboot", "pvh_gz"])
def test_qemu_refuses_what_it_cannot_boot(test_kernels: TestKernels, variant: str) -> None:
    """No PVH note nor multiboot header, or gzip-compressed: QEMU stops before the guest runs
    (so a launcher should check first, and decompress)."""
    status, text = boot("pc", getattr(test_kernels, variant), "smoltest.exit=1")
    assert status == 1, text
    assert "SMOLTEST" not in text
