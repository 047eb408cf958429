"""Facts about the host that decide how QEMU runs: the binary, its version, KVM, a CPU model.

:func:`probe_host` reads them; every path it reads can be injected, so tests can describe
any host (no ``/dev/kvm``, a denied one, the nested ``kvm_pvm``, hardware ``kvm_intel``).
The QEMU version is cached by the binary's path, size and mtime: asking QEMU costs tens of
milliseconds, which the boot path cannot afford every time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from .fastpath import (
    KVM_DENIED,
    KVM_HARDWARE,
    KVM_MISSING,
    KVM_NESTED_PVM,
    KVM_UNKNOWN,
    kvm_state,
    which,
)

QEMU_BINARY = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"

#: KVM states (from :mod:`launcher.fastpath`); only HARDWARE lets ``--accel auto`` pick KVM.
__all__ = ["KVM_DENIED", "KVM_HARDWARE", "KVM_MISSING", "KVM_NESTED_PVM", "KVM_UNKNOWN",
           "HostInfo", "choose_accel", "probe_host", "qemu_version", "which"]


class HostInfo(NamedTuple):
    """What :func:`probe_host` found."""

    qemu: str | None  # absolute path of qemu-system-x86_64, None when not installed
    qemu_version: tuple[int, ...] | None
    kvm: str  # one of the KVM_* states
    kvm_detail: str  # one line saying why KVM is (not) usable
    nested: bool  # the host itself is a virtual machine (cpuinfo "hypervisor" flag)

    @property
    def kvm_usable(self) -> bool:
        return self.kvm == KVM_HARDWARE

    def cpu_model(self, accel: str) -> str:
        """``host`` only on hardware KVM on bare metal; a named model everywhere else.

        ``-cpu host`` aborts on some nested hosts (``failed to set MSR 0x10a``).
        """
        if accel == "kvm" and not self.nested:
            return "host"
        return "qemu64"


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
    import subprocess

    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        return None
    version = tuple(int(g or 0) for g in m.groups())
    if cache:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": key, "version": version}))
            tmp.replace(cache)
        except OSError:
            pass
    return version


def probe_host(
    *,
    qemu: str | None = None,
    dev_kvm: str | os.PathLike[str] = "/dev/kvm",
    sys_module: str | os.PathLike[str] = "/sys/module",
    cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo",
    cache_dir: Path | None = None,
    want_version: bool = True,
) -> HostInfo:
    """Probe QEMU and KVM. ``qemu`` is a binary name or path (default: from ``$PATH``)."""
    binary = which(qemu or os.environ.get("MKSMOLNB_QEMU") or QEMU_BINARY)
    version = qemu_version(binary, cache_dir) if binary and want_version else None
    kvm, detail = _kvm_state(Path(dev_kvm), Path(sys_module))
    return HostInfo(qemu=binary, qemu_version=version, kvm=kvm, kvm_detail=detail,
                    nested=_nested(Path(cpuinfo)))


def choose_accel(requested: str, host: HostInfo) -> tuple[str, str | None]:
    """The accelerator to use and, when ``auto`` did not pick KVM, the one-line reason.

    ``--accel kvm`` on a host without usable hardware KVM raises :class:`LaunchError`.
    """
    from smolfs.errors import LaunchError

    if requested == "tcg":
        return "tcg", None
    if requested == "kvm":
        if not host.kvm_usable:
            raise LaunchError(f"--accel kvm: {host.kvm_detail}",
                              hint="use --accel tcg (or auto)")
        return "kvm", None
    if host.kvm_usable:
        return "kvm", None
    return "tcg", f"using TCG: {host.kvm_detail}"
