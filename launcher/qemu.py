"""The QEMU command line: a pure function of the config, the host and the kernel.
Which machine boots which kernel, and why: ``launcher/README.md`` ("Machines")."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from smolfs.errors import KernelError, UsageError

from .config import LaunchConfig
from .host import HostInfo, choose_accel
from .kernel import KernelInfo

#: ``acpi=off``: a MICROVM kernel has no ACPI; QEMU then names each virtio-mmio transport on
#: the kernel command line (``virtio_mmio.device=512@0xfeb00e00:12``), where NetBSD's
#: ``mmio_cmdline`` attachment finds them.
MICROVM_PVH = "microvm,x-option-roms=off,rtc=off,pit=off,pic=off,acpi=off,isa-serial=on"
#: QEMU's multiboot loader is an option ROM: microvm must keep them for multiboot kernels.
MICROVM_MULTIBOOT = "microvm,rtc=off,pit=off,pic=off,acpi=off,isa-serial=on"
BASE = ("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot")
#: ``highmem=off``: every device window below 4 GiB (RAM up to 3 GiB); GICv3, which NetBSD's
#: GENERIC64 drives (``gicvthree``) and TCG and HVF emulate; under KVM the host's own GIC.
VIRT = "virt,highmem=off,gic-version=3"
VIRT_KVM = "virt,highmem=off,gic-version=host"


class RunPaths(NamedTuple):
    """Files QEMU writes or serves: all optional (attached runs need none)."""

    pidfile: Path | None = None
    qmp: Path | None = None
    serial_log: Path | None = None  # None: the serial console is QEMU's stdout
    #: The terminal's keystrokes go to the guest (QEMU reads stdin); Ctrl-A X quits QEMU.
    interactive: bool = False


def choose_machine(config: LaunchConfig, kernel: KernelInfo) -> str:
    """``microvm``, ``pc`` or ``virt``; raise if the user's choice cannot boot this kernel."""
    if kernel.arch == "aarch64":
        if config.machine not in ("auto", "virt"):
            raise UsageError(f"--machine {config.machine} is an x86 machine; this kernel is "
                             f"aarch64 ({kernel.kind})", hint="use --machine virt (or auto)")
        return "virt"
    if config.machine == "virt":
        raise UsageError(f"--machine virt is for aarch64 kernels; this one is {kernel.arch}",
                         hint="use --machine microvm, pc or auto")
    if config.machine == "microvm":
        return "microvm"
    if config.machine == "pc":
        return "pc"
    return "microvm" if kernel.virtio_mmio and kernel.pvh else "pc"


def machine_arg(machine: str, kernel: KernelInfo, accel: str = "tcg") -> str:
    if machine == "virt":
        return VIRT_KVM if accel == "kvm" else VIRT
    if machine == "pc":
        return "pc"
    return MICROVM_PVH if kernel.pvh else MICROVM_MULTIBOOT


def qemu_argv(config: LaunchConfig, host: HostInfo, kernel: KernelInfo,
              paths: RunPaths | None = None) -> list[str]:
    """The full argv, ``argv[0]`` being the QEMU binary. Pure: reads no file, starts nothing."""
    if not kernel.bootable:
        raise KernelError(f"kernel {kernel.source} is not bootable by QEMU")
    paths = paths or RunPaths()
    guest = kernel.arch
    accel, _reason = choose_accel(config.accel, host, guest)
    machine = choose_machine(config, kernel)
    bus = "pci" if machine == "pc" else "device"
    qemu = host.qemu or ("qemu-system-aarch64" if guest == "aarch64" else "qemu-system-x86_64")
    argv = [qemu, *BASE,
            "-M", machine_arg(machine, kernel, accel),
            "-accel", accel, "-cpu", host.cpu_model(accel, guest),
            "-m", str(config.memory_mb), "-smp", str(config.cpus),
            "-kernel", str(kernel.path), "-append", config.kernel_args(guest)]
    if config.image is not None:
        drive = f"if=none,id=hd0,format=raw,file={_escape(str(config.image))}"
        if config.readonly:
            drive += ",readonly=on"
        argv += ["-drive", drive, "-device", f"virtio-blk-{bus},drive=hd0"]
    if config.network == "user":
        netdev = "user,id=n0" + "".join(f",hostfwd={p.hostfwd()}" for p in config.ports)
        argv += ["-netdev", netdev, "-device", f"virtio-net-{bus},netdev=n0"]
    elif config.network == "tap":
        if not config.tap:
            raise UsageError("--tap needs an interface name")
        argv += ["-netdev", f"tap,id=n0,ifname={_escape(config.tap)},script=no,downscript=no",
                 "-device", f"virtio-net-{bus},netdev=n0"]
    if paths.serial_log is not None:
        argv += ["-chardev", f"file,id=con0,path={_escape(str(paths.serial_log))}"]
    elif paths.interactive:
        argv += ["-chardev", "stdio,id=con0,mux=on,signal=off"]
    else:
        argv += ["-chardev", "stdio,id=con0,signal=off"]
    argv += ["-serial", "chardev:con0"]
    if paths.pidfile is not None:
        argv += ["-pidfile", str(paths.pidfile)]
    if paths.qmp is not None:
        argv += ["-qmp", f"unix:{_escape(str(paths.qmp))},server=on,wait=off"]
    argv += list(config.qemu_args)
    return argv


def _escape(value: str) -> str:
    """QEMU option values escape a comma by doubling it."""
    return value.replace(",", ",,")
