"""aarch64 guests: the smoltest-arm64 kernel (assembled here with the cross binutils), kernel
inspection of arm64 Images and AArch64 ELFs, the ``-M virt`` command line, stage detection on
an evbarm console, and the real launcher booting the kernel end to end under TCG."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from helpers import setsynth
from helpers.fakemirror import FakeMirror, write_sha512
from kernels import STAGE_LINES, Arm64Kernel, VirtioDevice, build_arm64_kernel, parse_console

from conftest import REPO, qemu_pids
from launcher.config import LaunchConfig, parse_port
from launcher.host import KVM_HARDWARE, KVM_MISSING, HostInfo
from launcher.kernel import inspect_kernel, require_bootable
from launcher.qemu import RunPaths, qemu_argv
from launcher.timing import StageDetector
from services import shipped_dir
from smolfs.errors import KernelError, UsageError

CONSOLE = Path(__file__).resolve().parent / "data" / "console"
QEMU_ARM = "qemu-system-aarch64"
#: QEMU's virt machine fills its 32 virtio-mmio transports from the top address down.
VIRT_DEVICES = [VirtioDevice("mmio", "0x0a003c00", "1", "net"),
                VirtioDevice("mmio", "0x0a003e00", "2", "blk")]
TIMEOUT = 60.0


# -- the test kernel ----------------------------------------------------------------------


def test_build_is_deterministic(arm64_kernel: Arm64Kernel, tmp_path: Path) -> None:
    again = build_arm64_kernel(tmp_path)
    assert again.image.read_bytes() == arm64_kernel.image.read_bytes()
    assert again.elf.read_bytes() == arm64_kernel.elf.read_bytes()


def test_image_header_and_elf(arm64_kernel: Arm64Kernel) -> None:
    data = arm64_kernel.image.read_bytes()
    text_offset, image_size, flags = struct.unpack_from("<QQQ", data, 8)
    assert data[56:60] == b"ARM\x64"
    assert text_offset == 0 and image_size == len(data) and flags == 2
    with arm64_kernel.elf.open("rb") as f:
        elf = ELFFile(f)
        assert elf["e_machine"] == "EM_AARCH64" and elf.elfclass == 64 and elf.little_endian


def test_inspection_tells_image_from_elf(arm64_kernel: Arm64Kernel, tmp_path: Path) -> None:
    img = inspect_kernel(arm64_kernel.image, cache=tmp_path)
    assert img.arm64_image == (0, arm64_kernel.image.stat().st_size)
    assert (img.arch, img.kind, img.bootable) == ("aarch64", "arm64 Image", True)
    assert "arm64 Image, boots by the arm64 Image protocol" in img.describe()
    again = inspect_kernel(arm64_kernel.image, cache=tmp_path)  # from the cache
    assert again == img
    elf = inspect_kernel(arm64_kernel.elf, cache=tmp_path)
    assert (elf.arch, elf.kind, elf.machine, elf.bootable) == (
        "aarch64", "AArch64 ELF64", "aarch64", False)
    with pytest.raises(KernelError, match="is an AArch64 ELF: QEMU boots NetBSD/evbarm from "
                       "its arm64 Image") as err:
        require_bootable(elf)
    assert err.value.hint and "netbsd-GENERIC64.img" in err.value.hint


# -- the command line (pure) ----------------------------------------------------------------

TCG = HostInfo(qemu="/usr/bin/qemu-system-aarch64", qemu_version=(7, 2, 0), kvm=KVM_MISSING,
               kvm_detail="no /dev/kvm", nested=False)
ARM_KVM = TCG._replace(kvm=KVM_HARDWARE, kvm_detail="hardware KVM (arm64)", cpu="aarch64")
MAC = TCG._replace(system="Darwin", cpu="aarch64", hvf=True)


def image_info(tmp_path: Path) -> object:
    k = tmp_path / "netbsd-GENERIC64.img"
    k.write_bytes(b"\0" * 8 + struct.pack("<QQ", 0, 4096) + b"\0" * 32 + b"ARM\x64" + bytes(8))
    return inspect_kernel(k, cache=tmp_path / "cache")


def test_argv_virt_tcg(tmp_path: Path) -> None:
    info = image_info(tmp_path)
    config = LaunchConfig(kernel=info.path, image=Path("/i/root.img"),  # type: ignore[attr-defined]
                          ports=(parse_port("8080:80"),), append=("-v",))
    assert qemu_argv(config, TCG, info) == [  # type: ignore[arg-type]
        "/usr/bin/qemu-system-aarch64", "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot", "-M", "virt,highmem=off,gic-version=3", "-accel", "tcg",
        "-cpu", "cortex-a57", "-m", "256", "-smp", "1",
        "-kernel", str(tmp_path / "netbsd-GENERIC64.img"), "-append", "root=ld4a -v",
        "-drive", "if=none,id=hd0,format=raw,file=/i/root.img",
        "-device", "virtio-blk-device,drive=hd0",
        "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80",
        "-device", "virtio-net-device,netdev=n0",
        "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
    ]


def test_argv_virt_accelerated(tmp_path: Path) -> None:
    info = image_info(tmp_path)
    config = LaunchConfig(kernel=info.path, root="ld0a", network="none")  # type: ignore[attr-defined]
    kvm = qemu_argv(config, ARM_KVM, info, RunPaths(serial_log=tmp_path / "s.log"))  # type: ignore[arg-type]
    assert kvm[kvm.index("-M") + 1] == "virt,highmem=off,gic-version=host"
    assert kvm[kvm.index("-accel") + 1:kvm.index("-accel") + 4] == ["kvm", "-cpu", "host"]
    assert kvm[kvm.index("-append") + 1] == "root=ld0a"
    hvf = qemu_argv(config, MAC, info)  # type: ignore[arg-type]
    assert hvf[hvf.index("-M") + 1] == "virt,highmem=off,gic-version=3"
    assert hvf[hvf.index("-accel") + 1:hvf.index("-accel") + 4] == ["hvf", "-cpu", "host"]


def test_machine_must_fit_the_kernel(tmp_path: Path, test_kernels: object) -> None:
    info = image_info(tmp_path)
    with pytest.raises(UsageError, match="--machine microvm is an x86 machine"):
        qemu_argv(LaunchConfig(kernel=info.path, machine="microvm"), TCG, info)  # type: ignore[attr-defined,arg-type]
    x86 = inspect_kernel(test_kernels.pvh, cache=tmp_path / "cache")  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="--machine virt is for aarch64 kernels"):
        qemu_argv(LaunchConfig(kernel=x86.path, machine="virt"), TCG, x86)


# -- stage detection on an evbarm console ---------------------------------------------------


def test_stages_on_an_evbarm_console() -> None:
    """A constructed GENERIC64 console (see data/console/README.md): kernel lines carry
    NetBSD's uptime prefix; the first unprefixed line after the root mount is rc's."""
    det = StageDetector()
    det.mark("exec", 0.0)
    seen: dict[str, str] = {}
    for raw in (CONSOLE / "aarch64-GENERIC64-constructed.log").read_text().splitlines():
        m = re.match(r"^\[\s*(\d+\.\d+)\] ?(.*)$", raw)
        assert m, raw
        for stage in det.feed_line(float(m.group(1)), m.group(2)):
            seen[stage] = m.group(2)
    assert det.times == {"exec": 0.0, "first_byte": 0.048, "banner": 0.049, "root": 0.610,
                         "rc": 0.702}
    assert seen["banner"].endswith("NetBSD 10.1 (GENERIC64) #0: Mon Dec 16 13:08:11 UTC 2024")
    assert seen["rc"] == "rescue: ready; 'exit' powers the VM off"


# -- booting --------------------------------------------------------------------------------


@pytest.mark.aarch64
def test_kernel_boots_on_virt(arm64_kernel: Arm64Kernel, disk: Path) -> None:
    """QEMU alone: the kernel reports what the device tree gave it, then powers off (PSCI)."""
    argv = [QEMU_ARM, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-M", "virt", "-accel", "tcg", "-cpu", "cortex-a57", "-m", "128",
            "-kernel", str(arm64_kernel.image), "-append", "root=ld4a smoltest.x",
            "-drive", f"if=none,file={disk},format=raw,id=hd0",
            "-device", "virtio-blk-device,drive=hd0", "-netdev", "user,id=n0",
            "-device", "virtio-net-device,netdev=n0", "-serial", "stdio"]
    proc = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL)
    text = proc.stdout.decode("ascii", "replace")
    con = parse_console(text)
    assert proc.returncode == 0, text + proc.stderr.decode()  # PSCI SYSTEM_OFF
    assert con.boot == "arm64-image" and con.cmdline == "root=ld4a smoltest.x"
    assert con.mem_kib == 128 * 1024 and con.psci == "hvc"
    assert sorted(con.virtio, key=lambda d: d.location) == VIRT_DEVICES
    assert con.stages() == list(STAGE_LINES)
    assert text.count("\r\n") == text.count("\n")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    state = Path(tempfile.mkdtemp(prefix="snb-", dir="/tmp"))
    yield dict(os.environ, MKSMOLNB_STATE=str(state), MKSMOLNB_CACHE=str(tmp_path / "cache"))
    for pid in qemu_pids(str(tmp_path)):
        os.kill(pid, 9)
    shutil.rmtree(state, ignore_errors=True)


def startnb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.aarch64
def test_launcher_boots_it_end_to_end(arm64_kernel: Arm64Kernel, disk: Path, tmp_path: Path,
                                      env: dict[str, str]) -> None:
    """The real launcher on this x86 host: -M virt under TCG with the reason on stderr and in
    --json, the guest's command line and virtio-mmio devices, the stages, a plan reused."""
    kernel = tmp_path / "smoltest-arm64.img"
    kernel.write_bytes(arm64_kernel.image.read_bytes())
    console = tmp_path / "serial.log"
    args = (str(kernel), str(disk), "--append=-v", "--json", "--console", f"file:{console}",
            "--timeout", "40")
    r = startnb(env, *args)
    assert r.returncode == 0, r.stderr  # the guest powered off after its ready line
    result = json.loads(r.stdout.splitlines()[0])
    con = parse_console(console.read_text())
    assert con.cmdline == "root=ld4a -v"
    assert sorted(con.virtio, key=lambda d: d.location) == VIRT_DEVICES
    argv = result["argv"]
    assert os.path.basename(argv[0]) == QEMU_ARM
    assert argv[argv.index("-M") + 1] == "virt,highmem=off,gic-version=3"
    if os.uname().machine in ("x86_64", "amd64"):
        assert result["accel"] == "tcg" and argv[argv.index("-cpu") + 1] == "cortex-a57"
        assert result["accel_reason"] == ("aarch64 guest on an amd64 host: TCG, about 10× "
                                          "slower; use --arch amd64")
        assert "startnb: aarch64 guest on an amd64 host" in r.stderr
    stages = result["timing"]["stages"]
    assert all(stages[s] is not None for s in ("first_byte", "banner", "root", "rc", "ready"))
    assert stages["banner"] <= stages["root"] <= stages["rc"] <= stages["ready"]
    assert "arm64 Image" in result["kernel"]
    again = json.loads(startnb(env, *args).stdout.splitlines()[0])
    assert again["fast_path"] is True and again["argv"] == argv


@pytest.mark.aarch64
def test_print_cmd(arm64_kernel: Arm64Kernel, disk: Path, env: dict[str, str]) -> None:
    r = startnb(env, "--print-cmd", "--accel", "tcg", "-r", "ld0a", str(arm64_kernel.image),
                str(disk))
    assert r.returncode == 0, r.stderr
    assert re.search(r"qemu-system-aarch64 .*-M virt,highmem=off,gic-version=3 -accel tcg "
                     r"-cpu cortex-a57 .*-append root=ld0a .*virtio-blk-device", r.stdout)
    assert r.stderr == ""


@pytest.mark.aarch64
@pytest.mark.slow
def test_service_for_aarch64_from_a_mirror(arm64_kernel: Arm64Kernel, tmp_path: Path) -> None:
    """``startnb rescue --arch aarch64``: the evbarm-aarch64 tree's set and its bootable
    ``netbsd-GENERIC64.img.gz`` (here the test kernel) fetched, the image built with evbarm's
    device nodes, booted on -M virt with root=ld4a."""
    top = tmp_path / "mirror" / "pub/NetBSD/NetBSD-10.1/evbarm-aarch64/binary"
    (top / "sets").mkdir(parents=True)
    setsynth.make_set(top / "sets" / "rescue.tar.xz", "rescue", "xz")
    write_sha512(top / "sets")
    (top / "kernel").mkdir()
    (top / "kernel" / "netbsd-GENERIC64.img.gz").write_bytes(
        gzip.compress(arm64_kernel.image.read_bytes(), mtime=0))
    write_sha512(top / "kernel")
    services = tmp_path / "services"
    shutil.copytree(shipped_dir(), services, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    conf = services / "rescue" / "service.conf"
    conf.write_text(conf.read_text().replace("READY=^rescue: ready", "READY=^SERVICE READY$"))
    console = tmp_path / "console.txt"
    with FakeMirror(tmp_path / "mirror") as m:
        env = dict(os.environ, MKSMOLNB_MIRROR=m.url, MKSMOLNB_CACHE=str(tmp_path / "cache"),
                   MKSMOLNB_STATE=str(tmp_path / "state"))
        r = subprocess.run([sys.executable, "-m", "launcher", "rescue", "--arch", "aarch64",
                            "--release", "10.1", "--services-dir", str(services), "-N",
                            "--json", "--console", f"file:{console}", "--timeout", "40"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.splitlines()[0])
    assert os.path.basename(result["argv"][0]) == QEMU_ARM
    con = parse_console(console.read_text())
    assert con.cmdline == "root=ld4a" and con.boot == "arm64-image"
    assert [d.kind for d in con.virtio] == ["blk"]
    manifest = json.loads((tmp_path / "rescue-aarch64.img.json").read_text())
    assert manifest["arch"] == "aarch64"
    assert manifest["kernel"].endswith("/10.1/aarch64/kernel/netbsd-GENERIC64.img.gz")
