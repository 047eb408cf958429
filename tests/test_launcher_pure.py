"""The launcher's pure parts: option parsing, host probe, kernel inspector, QEMU argv."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest

from launcher.config import (
    Console,
    LaunchConfig,
    PortForward,
    Ready,
    parse_console,
    parse_port,
    parse_ready,
)
from launcher.host import (
    KVM_DENIED,
    KVM_HARDWARE,
    KVM_MISSING,
    KVM_NESTED_PVM,
    HostInfo,
    choose_accel,
    probe_host,
)
from launcher.kernel import KernelInfo, inspect_kernel, require_bootable, scan
from launcher.qemu import RunPaths, qemu_argv
from smolfs.errors import KernelError, LaunchError, UsageError

# --- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "want"), [
    ("8080:80", PortForward("tcp", "127.0.0.1", 8080, 80)),
    ("udp:5353:53", PortForward("udp", "127.0.0.1", 5353, 53)),
    ("0.0.0.0:2222:22", PortForward("tcp", "0.0.0.0", 2222, 22)),
    ("tcp:10.1.2.3:1:65535", PortForward("tcp", "10.1.2.3", 1, 65535)),
])
def test_parse_port(spec: str, want: PortForward) -> None:
    assert parse_port(spec) == want


def test_hostfwd_string() -> None:
    assert parse_port("udp:0.0.0.0:5353:53").hostfwd() == "udp:0.0.0.0:5353-:53"


@pytest.mark.parametrize("spec", ["80", "0:80", "8080:70000", "x:1:2:3", "sctp:1:2",
                                  "300.1.1.1:1:2", "a:b", ""])
def test_parse_port_rejects(spec: str) -> None:
    with pytest.raises(UsageError, match="-p"):
        parse_port(spec)


def test_parse_ready_and_console() -> None:
    assert parse_ready("console:^SERVICE READY$") == Ready("console", pattern="^SERVICE READY$")
    assert parse_ready("console:a:b") == Ready("console", pattern="a:b")
    assert parse_ready("http:8080") == Ready("http", port=8080, path="/")
    assert parse_ready("http:8080/health/x") == Ready("http", port=8080, path="/health/x")
    assert parse_ready("tcp:22") == Ready("tcp", port=22)
    for bad in ("console:(", "udp:1", "tcp:22/x", "http:", "ready"):
        with pytest.raises(UsageError, match="--ready"):
            parse_ready(bad)
    assert parse_console("file:/tmp/x.log") == Console("file", Path("/tmp/x.log"))
    assert parse_console("none") == Console("none")
    with pytest.raises(UsageError, match="--console"):
        parse_console("tty")


def test_config_validation() -> None:
    k = Path("k")
    with pytest.raises(UsageError, match="no -p forwards"):
        LaunchConfig(kernel=k, ready=Ready("http", port=8080))
    with pytest.raises(UsageError, match="-N"):
        LaunchConfig(kernel=k, network="none", ports=(parse_port("1:2"),))
    with pytest.raises(UsageError, match="twice"):
        LaunchConfig(kernel=k, ports=(parse_port("1:2"), parse_port("1:3")))
    with pytest.raises(UsageError, match="-m"):
        LaunchConfig(kernel=k, memory_mb=1)
    with pytest.raises(UsageError, match="--accel"):
        LaunchConfig(kernel=k, accel="whpx")
    c = LaunchConfig(kernel=k, append=("-v", "smoltest.exit=1"), root="NAME=root")
    assert c.kernel_args() == "console=com root=NAME=root -v smoltest.exit=1"
    with pytest.raises(UsageError, match="-m"):
        c._replace(memory_mb=1)  # a copy is validated too
    assert c._replace(cpus=2).cpus == 2 and c.cpus == 1
    with pytest.raises(AttributeError):
        c.cpus = 4  # type: ignore[misc]


# --- host -----------------------------------------------------------------------------


def fake_host(tmp_path: Path, modules: tuple[str, ...], kvm: str | None,
              cpu_flags: str = "fpu sse") -> HostInfo:
    sysmod = tmp_path / "module"
    for m in modules:
        (sysmod / m).mkdir(parents=True)
    dev = tmp_path / "kvm"
    if kvm is not None:
        dev.write_bytes(b"")
        dev.chmod(0o600 if kvm == "rw" else 0o000)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {cpu_flags}\n")
    return probe_host(qemu="sh", dev_kvm=dev, sys_module=sysmod, cpuinfo=cpuinfo,
                      want_version=False)


def test_probe_host_states(tmp_path: Path) -> None:
    hw = fake_host(tmp_path / "a", ("kvm", "kvm_intel"), "rw")
    assert hw.kvm == KVM_HARDWARE and hw.kvm_usable and not hw.nested
    assert choose_accel("auto", hw) == ("kvm", None)
    assert hw.cpu_model("kvm") == "host"
    nested_hw = fake_host(tmp_path / "b", ("kvm", "kvm_amd"), "rw", "fpu hypervisor")
    assert nested_hw.kvm_usable and nested_hw.cpu_model("kvm") == "qemu64"
    pvm = fake_host(tmp_path / "c", ("kvm", "kvm_pvm"), "rw", "hypervisor")
    assert pvm.kvm == KVM_NESTED_PVM and not pvm.kvm_usable
    accel, reason = choose_accel("auto", pvm)
    assert accel == "tcg" and reason and "kvm_pvm" in reason and "\n" not in reason
    with pytest.raises(LaunchError, match="kvm_pvm"):
        choose_accel("kvm", pvm)
    missing = fake_host(tmp_path / "d", ("kvm_intel",), None)
    assert missing.kvm == KVM_MISSING and "does not exist" in missing.kvm_detail
    assert choose_accel("tcg", missing) == ("tcg", None)
    assert missing.cpu_model("tcg") == "qemu64"
    assert missing.qemu and os.path.isabs(missing.qemu)


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any file: no permission error")
def test_probe_host_denied(tmp_path: Path) -> None:
    denied = fake_host(tmp_path, ("kvm_intel",), "none")
    assert denied.kvm == KVM_DENIED and "group 'kvm'" in denied.kvm_detail


def test_probe_host_denied_as_any_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Permission denied is told apart from missing, whoever runs the test."""
    import errno

    real_open = os.open

    def deny(path: object, flags: int, *a: object) -> int:
        if str(path).endswith("/kvm"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny)
    denied = fake_host(tmp_path, ("kvm_intel",), "rw")
    assert denied.kvm == KVM_DENIED and "not read-write" in denied.kvm_detail


def test_probe_real_qemu_version(tmp_path: Path) -> None:
    host = probe_host(cache_dir=tmp_path)
    if host.qemu is None:
        pytest.skip("qemu-system-x86_64 not installed")
    assert host.qemu_version and host.qemu_version >= (4, 0)
    assert (tmp_path / "qemu-version.json").exists()
    assert probe_host(cache_dir=tmp_path).qemu_version == host.qemu_version


# --- kernel inspector -----------------------------------------------------------------


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def make_elf(elf_class: int, notes: bytes = b"", body: bytes = b"") -> bytes:
    """A minimal little-endian x86 ELF with one PT_LOAD and (if notes) one PT_NOTE."""
    if elf_class == 32:
        ehsize, phentsize = 52, 32
    else:
        ehsize, phentsize = 64, 56
    phnum = 2 if notes else 1
    notes_at = ehsize + phnum * phentsize
    body_at = notes_at + len(notes)
    ident = b"\x7fELF" + bytes([1 if elf_class == 32 else 2, 1, 1]) + b"\0" * 9
    if elf_class == 32:
        hdr = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x100000, ehsize, 0, 0,
                                  ehsize, phentsize, phnum, 40, 0, 0)
        phdrs = struct.pack("<8I", 1, 0, 0x100000, 0x100000, body_at + len(body),
                            body_at + len(body), 5, 0x1000)
        if notes:
            phdrs += struct.pack("<8I", 4, notes_at, 0, 0, len(notes), len(notes), 4, 4)
    else:
        hdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x100000, ehsize, 0, 0,
                                  ehsize, phentsize, phnum, 64, 0, 0)
        phdrs = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x100000, 0x100000, body_at + len(body),
                            body_at + len(body), 0x1000)
        if notes:
            phdrs += struct.pack("<IIQQQQQQ", 4, 4, notes_at, 0, 0, len(notes), len(notes), 4)
    return hdr + phdrs + notes + body


def multiboot_header(flags: int) -> bytes:
    return struct.pack("<III", 0x1BADB002, flags, (-(0x1BADB002 + flags)) & 0xFFFFFFFF)


PVH_NOTE = note(b"Xen", 18, struct.pack("<I", 0x100020))
BANNER = b"\0NetBSD 10.1 (MICROVM) #0: Mon Jan  1 00:00:00 UTC 2024\n"


def test_scan_pvh64_mmio_viocon() -> None:
    body = BANNER + b"\0virtio_mmio.device=\0mmio_cmdline\0viocon_earlyinit\0"
    info = scan(Path("k"), make_elf(64, note(b"NetBSD", 1, b"\0" * 4) + PVH_NOTE, body))
    assert (info.elf_class, info.machine, info.pvh_entry) == (64, "x86_64", 0x100020)
    assert info.multiboot_offset is None and not info.multiboot_loadable
    assert (info.netbsd_version, info.netbsd_config) == ("10.1", "MICROVM")
    assert info.virtio_mmio and not info.virtio_pci and info.viocon_earlyinit
    assert info.protocols() == ["PVH"] and info.bootable


def test_scan_multiboot_elf32_pci() -> None:
    body = b"\0" * 12 + multiboot_header(3) + b"\0virtio_pci\0NetBSD 9.3 (GENERIC) #0: x"
    info = scan(Path("k"), make_elf(32, b"", body))
    assert info.elf_class == 32 and info.pvh_entry is None
    assert info.multiboot_offset is not None and info.multiboot_offset % 4 == 0
    assert info.multiboot_loadable and info.protocols() == ["multiboot"]
    assert info.virtio_pci and not info.virtio_mmio and not info.viocon_earlyinit
    assert info.netbsd_version == "9.3"


def test_scan_multiboot_rules() -> None:
    # ELF64 with a plain multiboot header: QEMU refuses it; the a.out kludge makes it load.
    plain = scan(Path("k"), make_elf(64, b"", b"\0" * 4 + multiboot_header(3)))
    assert plain.multiboot_offset is not None and not plain.bootable
    kludge = scan(Path("k"), make_elf(64, b"", b"\0" * 4 + multiboot_header(1 << 16)))
    assert kludge.multiboot_loadable
    # Bad checksum, misaligned, or beyond 8 KiB: no header.
    bad = struct.pack("<III", 0x1BADB002, 3, 0)
    assert scan(Path("k"), make_elf(32, b"", b"\0" * 4 + bad)).multiboot_offset is None
    misaligned = make_elf(32, b"", b"\0" * 5 + multiboot_header(3))
    assert scan(Path("k"), misaligned).multiboot_offset is None
    far = make_elf(32, b"", b"\0" * 8192 + multiboot_header(3))
    assert scan(Path("k"), far).multiboot_offset is None
    # Raw a.out-kludge image (not an ELF).
    raw = scan(Path("k"), multiboot_header(1 << 16) + b"\0" * 100)
    assert raw.elf_class is None and raw.multiboot_loadable


def test_require_bootable_names_protocols(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(make_elf(64, note(b"NetBSD", 1, b"\0" * 4), b"x" * 100))
    info = inspect_kernel(junk, cache=tmp_path / "cache")
    with pytest.raises(KernelError, match=r"PVH entry .*multiboot header"):
        require_bootable(info)
    with pytest.raises(KernelError, match="kernel not found"):
        inspect_kernel(tmp_path / "nope", cache=tmp_path / "cache")


def test_inspect_gzip_is_decompressed_once(tmp_path: Path) -> None:
    raw = make_elf(64, PVH_NOTE, BANNER)
    gz = tmp_path / "netbsd.gz"
    gz.write_bytes(gzip.compress(raw, mtime=0))
    cache = tmp_path / "cache"
    info = inspect_kernel(gz, cache=cache)
    assert info.compressed and info.source == gz and info.pvh_entry == 0x100020
    assert info.path.parent == cache / "kernels" and info.path.read_bytes() == raw
    mtime = info.path.stat().st_mtime_ns
    again = inspect_kernel(gz, cache=cache)
    assert again == info and again.path.stat().st_mtime_ns == mtime
    # Cached by (path, size, mtime): a changed kernel is inspected again.
    gz.write_bytes(gzip.compress(make_elf(32, b"", b"\0" * 4 + multiboot_header(3)), mtime=0))
    changed = inspect_kernel(gz, cache=cache)
    assert changed.elf_class == 32 and changed.path != info.path


def test_a_truncated_gzip_kernel_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    gz = tmp_path / "netbsd.gz"
    gz.write_bytes(gzip.compress(make_elf(64, PVH_NOTE, BANNER) * 50, mtime=0)[:-200])
    cache = tmp_path / "cache"
    with pytest.raises(KernelError, match="gzip-compressed but cannot be decompressed"):
        inspect_kernel(gz, cache=cache)
    assert list((cache / "kernels").iterdir()) == []


def test_inspect_test_kernels(test_kernels, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pvh = inspect_kernel(test_kernels.pvh, cache=tmp_path)
    assert pvh.pvh and pvh.elf_class == 32 and pvh.netbsd_version == "10.1"
    assert pvh.netbsd_config == "SMOLTEST"
    mb = inspect_kernel(test_kernels.multiboot_gz, cache=tmp_path)
    assert mb.compressed and mb.multiboot_loadable and not mb.pvh
    pvh64 = inspect_kernel(test_kernels.pvh64, cache=tmp_path)
    assert pvh64.elf_class == 64 and pvh64.pvh_entry == pvh.pvh_entry
    noboot = inspect_kernel(test_kernels.noboot, cache=tmp_path)
    assert noboot.elf_class == 32 and not noboot.bootable
    with pytest.raises(KernelError, match="not bootable by QEMU"):
        require_bootable(noboot)


# --- argv -----------------------------------------------------------------------------

TCG_HOST = HostInfo(qemu="/usr/bin/qemu-system-x86_64", qemu_version=(7, 2, 0),
                    kvm=KVM_NESTED_PVM, kvm_detail="kvm_pvm", nested=True)
KVM_HOST = TCG_HOST._replace(kvm=KVM_HARDWARE, kvm_detail="hardware KVM (kvm_intel)",
                   nested=False)


def kinfo(**kw: object) -> KernelInfo:
    base = dict(path=Path("/k/netbsd"), source=Path("/k/netbsd"), compressed=False,
                elf_class=64, machine="x86_64", pvh_entry=0x100000, multiboot_offset=None,
                multiboot_aout=False, netbsd_version="11.0", netbsd_config="MICROVM",
                virtio_mmio=True, virtio_pci=False, viocon_earlyinit=False)
    base.update(kw)
    return KernelInfo(**base)  # type: ignore[arg-type]


def test_argv_pvh_mmio_microvm() -> None:
    config = LaunchConfig(kernel=Path("/k/netbsd"), image=Path("/i/root.img"),
                          ports=(parse_port("8080:80"), parse_port("udp:5353:53")),
                          append=("-v",))
    assert qemu_argv(config, TCG_HOST, kinfo()) == [
        "/usr/bin/qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot",
        "-M", "microvm,x-option-roms=off,rtc=off,pit=off,pic=off,acpi=off,isa-serial=on",
        "-accel", "tcg", "-cpu", "qemu64",
        "-m", "256", "-smp", "1", "-kernel", "/k/netbsd",
        "-append", "console=com root=ld0a -v",
        "-drive", "if=none,id=hd0,format=raw,file=/i/root.img",
        "-device", "virtio-blk-device,drive=hd0",
        "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53",
        "-device", "virtio-net-device,netdev=n0",
        "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
    ]


def test_argv_pci_kernel_on_pc_kvm_detached(tmp_path: Path) -> None:
    config = LaunchConfig(kernel=Path("/k/netbsd"), image=Path("/i/a,b.img"), readonly=True,
                          memory_mb=128, cpus=2, network="none", root="ld0e",
                          accel="auto", detach=True)
    paths = RunPaths(pidfile=tmp_path / "qemu.pid", qmp=tmp_path / "qmp.sock",
                     serial_log=tmp_path / "serial.log")
    kernel = kinfo(virtio_mmio=False, virtio_pci=True, netbsd_config="GENERIC")
    assert qemu_argv(config, KVM_HOST, kernel, paths) == [
        "/usr/bin/qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot", "-M", "pc", "-accel", "kvm", "-cpu", "host",
        "-m", "128", "-smp", "2", "-kernel", "/k/netbsd", "-append", "console=com root=ld0e",
        "-drive", "if=none,id=hd0,format=raw,file=/i/a,,b.img,readonly=on",
        "-device", "virtio-blk-pci,drive=hd0",
        "-chardev", f"file,id=con0,path={tmp_path}/serial.log", "-serial", "chardev:con0",
        "-pidfile", f"{tmp_path}/qemu.pid", "-qmp", f"unix:{tmp_path}/qmp.sock,server=on,wait=off",
    ]


def test_argv_machine_rules() -> None:
    cfg = LaunchConfig(kernel=Path("k"), network="tap", tap="tap0")
    mb = kinfo(elf_class=32, machine="i386", pvh_entry=None, multiboot_offset=4,
               virtio_mmio=False, virtio_pci=True)
    argv = qemu_argv(cfg, TCG_HOST, mb)
    assert argv[argv.index("-M") + 1] == "pc"
    assert argv[argv.index("-netdev") + 1] == "tap,id=n0,ifname=tap0,script=no,downscript=no"
    assert "virtio-net-pci,netdev=n0" in argv
    # PVH without MMIO virtio (a GENERIC kernel): pc.
    generic = kinfo(virtio_mmio=False, virtio_pci=True)
    assert qemu_argv(cfg, TCG_HOST, generic)[7] == "pc"
    # Forced microvm with a multiboot kernel keeps option ROMs (the multiboot loader).
    forced = qemu_argv(cfg._replace(machine="microvm"), TCG_HOST, mb)
    assert forced[7].startswith("microvm,") and "x-option-roms=off" not in forced[7]
    # kvm asked on a host where it is unusable: an error, not a silent TCG.
    with pytest.raises(LaunchError, match="--accel kvm"):
        qemu_argv(cfg._replace(accel="kvm"), TCG_HOST, mb)
    # Never -cpu host on a nested host, even with hardware KVM.
    nested = KVM_HOST._replace(nested=True)
    argv = qemu_argv(cfg, nested, mb)
    assert argv[argv.index("-accel") + 1] == "kvm" and argv[argv.index("-cpu") + 1] == "qemu64"
    with pytest.raises(KernelError):
        qemu_argv(cfg, TCG_HOST, kinfo(pvh_entry=None))


def test_argv_interactive_console() -> None:
    config = LaunchConfig(kernel=Path("/k/netbsd"), network="none")
    argv = qemu_argv(config, TCG_HOST, kinfo(), RunPaths(interactive=True))
    assert argv[-4:] == ["-chardev", "stdio,id=con0,mux=on,signal=off", "-serial",
                         "chardev:con0"]


@pytest.mark.parametrize(("cache", "xdg"), [("~/c", None), (None, "relative/x"),
                                            (None, "/abs/xdg"), (None, None)])
def test_launcher_and_smolfs_share_one_cache(monkeypatch: pytest.MonkeyPatch, cache: str | None,
                                             xdg: str | None) -> None:
    """Kernels the launcher caches and sets smolfs fetches live under the same root."""
    from launcher.kernel import cache_dir
    from smolfs.sets.cache import default_cache_dir

    for var, value in (("MKSMOLNB_CACHE", cache), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert cache_dir() == default_cache_dir()
    assert "~" not in str(cache_dir()) and cache_dir().is_absolute()
