"""Accelerator choice: a pure function of probed host facts and the guest's architecture,
tested on faked Linux (x86 and arm64), macOS (Apple Silicon and Intel) and NetBSD hosts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.host import (
    KVM_HARDWARE,
    KVM_MISSING,
    KVM_NESTED_PVM,
    NVMM_DENIED,
    NVMM_MISSING,
    NVMM_USABLE,
    HostInfo,
    choose_accel,
    probe_host,
)
from smolfs.errors import LaunchError

BASE = HostInfo(qemu="/usr/bin/qemu", qemu_version=None, kvm=KVM_MISSING,
                kvm_detail="/dev/kvm does not exist (no KVM on this host)", nested=False)
LINUX_X86_KVM = BASE._replace(kvm=KVM_HARDWARE, kvm_detail="hardware KVM (kvm_intel)")
LINUX_X86_PVM = BASE._replace(kvm=KVM_NESTED_PVM, kvm_detail="KVM here is kvm_pvm",
                              nested=True)
LINUX_ARM_KVM = LINUX_X86_KVM._replace(cpu="aarch64", kvm_detail="hardware KVM (arm64)")
MAC_ARM = BASE._replace(system="Darwin", cpu="aarch64", hvf=True, kvm_detail="no KVM")
MAC_ARM_NO_HV = MAC_ARM._replace(hvf=False)
MAC_INTEL = MAC_ARM._replace(cpu="x86_64")
NETBSD_X86 = BASE._replace(system="NetBSD", nvmm=NVMM_USABLE, nvmm_detail="/dev/nvmm usable")
NETBSD_NO_NVMM = NETBSD_X86._replace(nvmm=NVMM_MISSING,
                                     nvmm_detail="/dev/nvmm does not exist (modload nvmm)")
NETBSD_ARM = NETBSD_X86._replace(cpu="aarch64", nvmm=NVMM_MISSING, nvmm_detail="")
FREEBSD = BASE._replace(system="FreeBSD")

CASES = [
    # host, guest, (accel, reason fragment or None)
    (LINUX_X86_KVM, "amd64", ("kvm", None)),
    (LINUX_X86_KVM, "i386", ("kvm", None)),
    (LINUX_X86_KVM, "aarch64",
     ("tcg", "aarch64 guest on an amd64 host: TCG, about 10× slower; use --arch amd64")),
    (LINUX_X86_PVM, "amd64", ("tcg", "using TCG: KVM here is kvm_pvm")),
    (BASE, "amd64", ("tcg", "using TCG: /dev/kvm does not exist")),
    (LINUX_ARM_KVM, "aarch64", ("kvm", None)),
    (LINUX_ARM_KVM, "amd64",
     ("tcg", "amd64 guest on an arm64 host: TCG, about 10× slower; use --arch aarch64")),
    (MAC_ARM, "aarch64", ("hvf", None)),
    (MAC_ARM, "amd64",
     ("tcg", "amd64 guest on an arm64 host: TCG, about 10× slower; use --arch aarch64")),
    (MAC_ARM_NO_HV, "aarch64", ("tcg", "using TCG: Hypervisor.framework unavailable")),
    (MAC_INTEL, "amd64", ("hvf", None)),
    (MAC_INTEL, "aarch64", ("tcg", "aarch64 guest on an amd64 host")),
    (NETBSD_X86, "amd64", ("nvmm", None)),
    (NETBSD_X86, "i386", ("nvmm", None)),
    (NETBSD_X86, "aarch64", ("tcg", "aarch64 guest on an amd64 host")),
    (NETBSD_NO_NVMM, "amd64", ("tcg", "using TCG: /dev/nvmm does not exist (modload nvmm)")),
    (NETBSD_ARM, "aarch64", ("tcg", "using TCG: NVMM runs on x86 hosts only")),
    (FREEBSD, "amd64", ("tcg", "using TCG: QEMU has no accelerator mksmolnb uses on FreeBSD")),
]


@pytest.mark.parametrize(("host", "guest", "want"), CASES,
                         ids=[f"{h.system}-{h.cpu}-{h.kvm}-{h.hvf}-{h.nvmm}-{g}"
                              for h, g, _ in CASES])
def test_auto(host: HostInfo, guest: str, want: tuple[str, str | None]) -> None:
    accel, reason = choose_accel("auto", host, guest)
    assert accel == want[0]
    if want[1] is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(want[1]) and "\n" not in reason


def test_explicit_choices() -> None:
    assert choose_accel("tcg", MAC_ARM, "aarch64") == ("tcg", None)
    assert choose_accel("hvf", MAC_ARM, "aarch64") == ("hvf", None)
    assert choose_accel("nvmm", NETBSD_X86, "amd64") == ("nvmm", None)
    assert choose_accel("kvm", LINUX_ARM_KVM, "aarch64") == ("kvm", None)
    with pytest.raises(LaunchError, match=r"--accel hvf: HVF is macOS's; this host runs Linux"):
        choose_accel("hvf", LINUX_X86_KVM, "amd64")
    with pytest.raises(LaunchError, match=r"--accel kvm: .*kvm_pvm"):
        choose_accel("kvm", LINUX_X86_PVM, "amd64")
    with pytest.raises(LaunchError, match=r"--accel hvf: .* runs arm64 guests only, not amd64"):
        choose_accel("hvf", MAC_ARM, "amd64")
    with pytest.raises(LaunchError, match=r"--accel nvmm: /dev/nvmm does not exist"):
        choose_accel("nvmm", NETBSD_NO_NVMM, "amd64")


def test_cpu_models() -> None:
    assert MAC_ARM.cpu_model("hvf", "aarch64") == "host"
    assert LINUX_ARM_KVM.cpu_model("kvm", "aarch64") == "host"
    assert NETBSD_X86.cpu_model("nvmm", "amd64") == "host"
    assert BASE.cpu_model("tcg", "aarch64") == "cortex-a57"
    assert BASE.cpu_model("tcg", "amd64") == "qemu64"
    assert LINUX_X86_PVM.cpu_model("kvm", "amd64") == "qemu64"  # nested: a named model


def test_probe_fakes(tmp_path: Path) -> None:
    """probe_host on described hosts: uname, sysctl and device paths are injected."""
    sysmod = tmp_path / "sys"
    (sysmod / "kvm").mkdir(parents=True)
    kvm = tmp_path / "kvm"
    kvm.write_bytes(b"")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    arm_linux = probe_host(qemu="sh", dev_kvm=kvm, sys_module=sysmod, cpuinfo=cpuinfo,
                           uname=("Linux", "aarch64"), want_version=False)
    assert (arm_linux.system, arm_linux.cpu, arm_linux.kvm) == ("Linux", "aarch64",
                                                                 KVM_HARDWARE)
    assert choose_accel("auto", arm_linux, "aarch64") == ("kvm", None)
    mac = probe_host(qemu="sh", uname=("Darwin", "arm64"), hv_support=lambda: True,
                     want_version=False)
    assert (mac.system, mac.cpu, mac.hvf, mac.kvm) == ("Darwin", "aarch64", True, KVM_MISSING)
    assert choose_accel("auto", mac, "aarch64") == ("hvf", None)
    mac_off = probe_host(qemu="sh", uname=("Darwin", "arm64"), hv_support=lambda: False,
                         want_version=False)
    assert choose_accel("auto", mac_off, "aarch64")[0] == "tcg"
    nvmm = tmp_path / "nvmm"
    nvmm.write_bytes(b"")
    nb = probe_host(qemu="sh", uname=("NetBSD", "amd64"), dev_nvmm=nvmm, want_version=False)
    assert (nb.cpu, nb.nvmm) == ("x86_64", NVMM_USABLE)
    assert choose_accel("auto", nb, "amd64") == ("nvmm", None)
    gone = probe_host(qemu="sh", uname=("NetBSD", "amd64"), dev_nvmm=tmp_path / "none",
                      want_version=False)
    assert gone.nvmm == NVMM_MISSING and "does not exist" in gone.nvmm_detail
    if os.geteuid() != 0:
        nvmm.chmod(0)
        denied = probe_host(qemu="sh", uname=("NetBSD", "amd64"), dev_nvmm=nvmm,
                            want_version=False)
        assert denied.nvmm == NVMM_DENIED and "group 'nvmm'" in denied.nvmm_detail
