"""Facts about the host that decide how QEMU runs: the binary, its version, the
accelerators (Linux KVM, macOS HVF, NetBSD NVMM), a CPU model.

:func:`probe_host` reads them; every path (and the ``uname`` and ``sysctl`` answers) it
reads can be injected, so tests can describe any host (no ``/dev/kvm``, a denied one, the
nested ``kvm_pvm``, hardware ``kvm_intel``, an arm64 Linux server, an Apple Silicon Mac,
a NetBSD host with NVMM). :func:`choose_accel` is a pure function of those facts and the
guest's architecture: an accelerator runs only a guest of the host CPU's own family.
The QEMU version is cached by the binary's path, size and mtime: asking QEMU costs tens of
milliseconds, which the boot path cannot afford every time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from .proc import (
    KVM_DENIED,
    KVM_HARDWARE,
    KVM_MISSING,
    KVM_NESTED_PVM,
    KVM_UNKNOWN,
    kvm_state,
    which,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable

QEMU_BINARY = "qemu-system-x86_64"
#: Accelerators by host system (``uname -s``); TCG runs everywhere.
SYSTEM_ACCEL = {"Linux": "kvm", "Darwin": "hvf", "NetBSD": "nvmm"}
ACCEL_NAMES = {"kvm": "KVM", "hvf": "HVF (Hypervisor.framework)", "nvmm": "NVMM"}
NVMM_USABLE, NVMM_MISSING, NVMM_DENIED = "usable", "missing", "denied"
#: ``uname -m`` spellings → the CPU family QEMU's accelerators run natively.
_CPU_FAMILY = {"x86_64": "x86_64", "amd64": "x86_64", "i386": "x86_64", "i686": "x86_64",
               "aarch64": "aarch64", "arm64": "aarch64", "evbarm": "aarch64"}
#: A guest architecture (``smolfs.arch.Arch`` value) → its CPU family.
GUEST_FAMILY = {"amd64": "x86_64", "i386": "x86_64", "aarch64": "aarch64"}
#: The name users know a CPU family by, and the --arch that runs natively on it.
_FAMILY_NAME = {"x86_64": "amd64", "aarch64": "arm64"}
_FAMILY_ARCH = {"x86_64": "amd64", "aarch64": "aarch64"}

#: KVM states (from :mod:`launcher.fastpath`); only HARDWARE lets ``--accel auto`` pick KVM.
__all__ = ["KVM_DENIED", "KVM_HARDWARE", "KVM_MISSING", "KVM_NESTED_PVM", "KVM_UNKNOWN",
           "NVMM_DENIED", "NVMM_MISSING", "NVMM_USABLE", "HostInfo", "choose_accel",
           "probe_host", "qemu_binary", "qemu_package", "qemu_version", "which"]


class HostInfo(NamedTuple):
    """What :func:`probe_host` found."""

    qemu: str | None  # absolute path of qemu-system-x86_64, None when not installed
    qemu_version: tuple[int, ...] | None
    kvm: str  # one of the KVM_* states
    kvm_detail: str  # one line saying why KVM is (not) usable
    nested: bool  # the host itself is a virtual machine (cpuinfo "hypervisor" flag)
    system: str = "Linux"  # uname -s: Linux, Darwin, NetBSD, ...
    cpu: str = "x86_64"  # the host CPU family: x86_64 or aarch64 (or uname -m as is)
    hvf: bool = False  # macOS: sysctl kern.hv_support is 1
    nvmm: str = NVMM_MISSING  # NetBSD: /dev/nvmm usable, missing or denied
    nvmm_detail: str = ""

    @property
    def kvm_usable(self) -> bool:
        return self.kvm == KVM_HARDWARE

    def available(self, accel: str) -> tuple[bool, str]:
        """Whether ``accel`` (kvm, hvf, nvmm) can run on this host at all, and why not."""
        if accel == "kvm":
            if self.system != "Linux":
                return False, f"KVM is Linux's; this host runs {self.system}"
            return self.kvm_usable, self.kvm_detail
        if accel == "hvf":
            if self.system != "Darwin":
                return False, f"HVF is macOS's; this host runs {self.system}"
            return self.hvf, ("Hypervisor.framework available (kern.hv_support 1)" if self.hvf
                              else "Hypervisor.framework unavailable (sysctl kern.hv_support "
                              "is not 1)")
        if accel == "nvmm":
            if self.system != "NetBSD":
                return False, f"NVMM is NetBSD's; this host runs {self.system}"
            if self.cpu != "x86_64":
                return False, "NVMM runs on x86 hosts only"
            return self.nvmm == NVMM_USABLE, self.nvmm_detail or f"/dev/nvmm {self.nvmm}"
        return accel == "tcg", f"unknown accelerator {accel!r}"

    def cpu_model(self, accel: str, guest: str = "amd64") -> str:
        """``host`` where a hardware accelerator runs the guest on bare metal; a named model
        everywhere else: ``qemu64`` (x86), ``cortex-a57`` (aarch64, an ARMv8.0 core NetBSD's
        GENERIC64 runs on and TCG emulates quickly).

        ``-cpu host`` aborts on some nested hosts (``failed to set MSR 0x10a``).
        """
        if accel in ("kvm", "hvf", "nvmm") and not self.nested:
            return "host"
        return "cortex-a57" if GUEST_FAMILY.get(guest) == "aarch64" else "qemu64"


def _kvm_state(dev_kvm: Path, sys_module: Path) -> tuple[str, str]:
    return kvm_state(str(dev_kvm), str(sys_module))


def _nested(cpuinfo: Path) -> bool:
    try:
        with cpuinfo.open() as f:
            for line in f:
                if line.startswith("flags"):
                    return "hypervisor" in line.split()
    except OSError:
        pass
    return False


def _version_cache_path(cache_dir: Path | None) -> Path | None:
    return cache_dir / "qemu-version.json" if cache_dir else None


def qemu_version(qemu: str, cache_dir: Path | None = None) -> tuple[int, ...] | None:
    """``qemu --version`` as a tuple, cached by the binary's (path, size, mtime)."""
    st = os.stat(qemu)
    key = f"{qemu}:{st.st_size}:{st.st_mtime_ns}"
    cache = _version_cache_path(cache_dir)
    if cache:
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return tuple(data["version"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    import re

    from smolfs.errors import ExternalCommandError
    from smolfs.run import run

    try:
        out = run([qemu, "--version"], timeout=10, check=False).stdout
    except (OSError, ExternalCommandError):  # missing, not executable, timed out
        return None
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        return None
    version = tuple(int(g or 0) for g in m.groups())
    if cache:
        from smolfs.fileutil import write_atomic

        try:  # noqa: SIM105  (a cache that cannot be written is only slower)
            write_atomic(cache, json.dumps({"key": key, "version": version}).encode(),
                         makedirs=True)
        except OSError:
            pass
    return version


def qemu_binary(guest: str = "amd64") -> str:
    """The QEMU binary for a guest architecture: ``$MKSMOLNB_QEMU`` (x86 guests) or
    ``$MKSMOLNB_QEMU_AARCH64`` when set, else ``qemu-system-x86_64`` or
    ``qemu-system-aarch64``."""
    if GUEST_FAMILY.get(guest) == "aarch64":
        return os.environ.get("MKSMOLNB_QEMU_AARCH64") or "qemu-system-aarch64"
    return os.environ.get("MKSMOLNB_QEMU") or QEMU_BINARY


def qemu_package(guest: str = "amd64") -> str:
    """Debian's package holding :func:`qemu_binary` (:data:`smolfs.run.PACKAGES`)."""
    from smolfs.run import PACKAGES

    aarch64 = GUEST_FAMILY.get(guest) == "aarch64"
    return PACKAGES["qemu-system-aarch64" if aarch64 else QEMU_BINARY]


def _nvmm_state(dev_nvmm: str) -> tuple[str, str]:
    import errno

    try:
        fd = os.open(dev_nvmm, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            return NVMM_DENIED, (f"{dev_nvmm} is not read-write for this user (add the user "
                                 "to group 'nvmm')")
        if err.errno == errno.ENOENT:
            return NVMM_MISSING, f"{dev_nvmm} does not exist (modload nvmm)"
        return NVMM_MISSING, f"{dev_nvmm} cannot be opened: {err.strerror}"
    os.close(fd)
    return NVMM_USABLE, f"{dev_nvmm} usable"


def _sysctl_hv_support() -> bool:
    """macOS: ``sysctl -n kern.hv_support`` prints 1 when Hypervisor.framework works."""
    from smolfs.errors import ExternalCommandError
    from smolfs.run import run

    try:
        out = run(["sysctl", "-n", "kern.hv_support"], timeout=5, check=False)
    except (OSError, ExternalCommandError):
        return False
    return out.stdout.strip() == "1"


def probe_host(
    *,
    qemu: str | None = None,
    dev_kvm: str | os.PathLike[str] = "/dev/kvm",
    sys_module: str | os.PathLike[str] = "/sys/module",
    cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo",
    dev_nvmm: str | os.PathLike[str] = "/dev/nvmm",
    uname: tuple[str, str] | None = None,
    hv_support: Callable[[], bool] | None = None,
    cache_dir: Path | None = None,
    want_version: bool = True,
) -> HostInfo:
    """Probe QEMU and the accelerators. ``qemu`` is a binary name or path (default:
    :func:`qemu_binary` of an x86 guest, from ``$PATH``); ``uname`` is (system, machine),
    by default ``os.uname()``'s; ``hv_support`` answers macOS's ``kern.hv_support``."""
    binary = which(qemu or qemu_binary())
    version = qemu_version(binary, cache_dir) if binary and want_version else None
    if uname is None:
        u = os.uname()
        uname = (u.sysname, u.machine)
    system, machine = uname
    cpu = _CPU_FAMILY.get(machine, machine)
    kvm, detail = KVM_MISSING, f"no KVM on {system}"
    if system == "Linux":
        kvm, detail = _kvm_state(Path(dev_kvm), Path(sys_module))
        if kvm == KVM_UNKNOWN and cpu == "aarch64":  # arm64 builds KVM into the kernel
            kvm, detail = KVM_HARDWARE, "hardware KVM (arm64)"
    hvf = system == "Darwin" and (hv_support or _sysctl_hv_support)()
    nvmm, nvmm_detail = NVMM_MISSING, ""
    if system == "NetBSD":
        nvmm, nvmm_detail = _nvmm_state(os.fspath(dev_nvmm))
    return HostInfo(qemu=binary, qemu_version=version, kvm=kvm, kvm_detail=detail,
                    nested=_nested(Path(cpuinfo)) if system == "Linux" else False,
                    system=system, cpu=cpu, hvf=hvf, nvmm=nvmm, nvmm_detail=nvmm_detail)


def choose_accel(requested: str, host: HostInfo, guest: str = "amd64"
                 ) -> tuple[str, str | None]:
    """The accelerator for a ``guest`` (``amd64``, ``i386``, ``aarch64``) on ``host`` and,
    when ``auto`` falls back to TCG, the one-line reason. Pure.

    An accelerator runs only guests of the host CPU's family: KVM on Linux (hardware KVM,
    not the nested ``kvm_pvm``), HVF on macOS (``kern.hv_support``), NVMM on NetBSD
    (``/dev/nvmm`` usable; x86 only, as NVMM is). Asking for one that cannot run the guest
    here (``--accel kvm|hvf|nvmm``) raises :class:`LaunchError` saying why.
    """
    from smolfs.errors import LaunchError

    if requested == "tcg":
        return "tcg", None
    family = GUEST_FAMILY.get(guest, guest)
    native = family == host.cpu
    mismatch = (f"{guest} guest on an {_FAMILY_NAME.get(host.cpu, host.cpu)} host: TCG, "
                f"about 10× slower; use --arch {_FAMILY_ARCH.get(host.cpu, host.cpu)}")
    if requested != "auto":
        usable, why = host.available(requested)
        if usable and not native:
            usable, why = False, (f"{ACCEL_NAMES[requested]} runs "
                                  f"{_FAMILY_NAME.get(host.cpu, host.cpu)} guests only, "
                                  f"not {guest}")
        if not usable:
            raise LaunchError(f"--accel {requested}: {why}", hint="use --accel tcg (or auto)")
        return requested, None
    accel = SYSTEM_ACCEL.get(host.system)
    if accel is None:
        return "tcg", f"using TCG: QEMU has no accelerator mksmolnb uses on {host.system}"
    if not native:
        return "tcg", mismatch
    usable, why = host.available(accel)
    if usable:
        return accel, None
    return "tcg", f"using TCG: {why}"
