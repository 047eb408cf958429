"""What a kernel file is, read with ``struct`` (no ELF library on the boot path):
:func:`inspect_kernel` (format, boot protocols, NetBSD version, virtio transports),
compressed kernels decompressed once into the cache, and :func:`strip_kernel` for
``--strip``. The facts it reads: ``launcher/README.md`` ("What a kernel file says")."""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from pathlib import Path
from typing import NamedTuple

from smolfs.errors import KernelError, LaunchError
from smolfs.fileutil import atomic_output, write_atomic

MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_SEARCH = 8192
MULTIBOOT_AOUT_KLUDGE = 1 << 16
XEN_ELFNOTE_PHYS32_ENTRY = 18
PT_NOTE = 4
EM_386 = 3
EM_X86_64 = 62
EM_AARCH64 = 183
#: The arm64 Image header (Linux Documentation/arch/arm64/booting.rst): code0, code1,
#: text_offset, image_size, flags, three reserved words, then this magic at byte 56.
ARM64_IMAGE_MAGIC = b"ARM\x64"
ARM64_MAGIC_OFFSET = 56
_INFO_VERSION = 3

_VERSION_RE = rb"NetBSD (\d+\.\d+[\w.]*) \(([\w.+-]+)\) #\d+"
_MMIO_MARKERS = (b"virtio_mmio.device=", b"\0mmio_cmdline\0")
_PCI_MARKERS = (b"\0virtio_pci\0",)


class KernelInfo(NamedTuple):
    """Facts about one kernel; ``path`` is the file QEMU loads (decompressed if needed)."""

    path: Path
    source: Path
    compressed: bool
    elf_class: int | None  # 32, 64, or None when not an ELF
    machine: str | None  # "i386", "x86_64", "aarch64" or None
    pvh_entry: int | None
    multiboot_offset: int | None
    multiboot_aout: bool
    netbsd_version: str | None  # "10.1"
    netbsd_config: str | None  # "GENERIC"
    virtio_mmio: bool
    virtio_pci: bool
    viocon_earlyinit: bool
    #: An arm64 Image header: (text_offset, image_size) from it, None without one.
    arm64_image: tuple[int, int] | None = None

    @property
    def pvh(self) -> bool:
        return self.pvh_entry is not None

    @property
    def arch(self) -> str:
        """The guest architecture this kernel is for: ``amd64``, ``i386`` or ``aarch64``."""
        if self.arm64_image is not None or self.machine == "aarch64":
            return "aarch64"
        return "i386" if self.machine == "i386" else "amd64"

    @property
    def kind(self) -> str:
        """What was found, in words: ``arm64 Image``, ``AArch64 ELF``, ``ELF64``, ..."""
        if self.arm64_image is not None:
            return "arm64 Image"
        if self.machine == "aarch64":
            return f"AArch64 ELF{self.elf_class}"
        return f"ELF{self.elf_class}" if self.elf_class else "not ELF"

    @property
    def multiboot_loadable(self) -> bool:
        """QEMU loads a multiboot kernel that is an ELF32, or any file using the a.out kludge."""
        return self.multiboot_offset is not None and (self.multiboot_aout or self.elf_class == 32)

    @property
    def bootable(self) -> bool:
        return self.pvh or self.multiboot_loadable or self.arm64_image is not None

    def protocols(self) -> list[str]:
        out = []
        if self.pvh:
            out.append("PVH")
        if self.multiboot_loadable:
            out.append("multiboot")
        if self.arm64_image is not None:
            out.append("the arm64 Image protocol")
        return out

    def describe(self) -> str:
        name = (f"NetBSD {self.netbsd_version} ({self.netbsd_config})"
                if self.netbsd_version else "kernel")
        bits = self.kind
        transports = [t for t, on in (("virtio-mmio", self.virtio_mmio),
                                      ("virtio-pci", self.virtio_pci)) if on]
        return (f"{name}, {bits}, boots by {' and '.join(self.protocols()) or 'nothing'}"
                + (f", {' and '.join(transports)}" if transports else ""))

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = self._asdict()
        d["path"], d["source"] = str(self.path), str(self.source)
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> KernelInfo:
        d = dict(d)
        d["path"], d["source"] = Path(str(d["path"])), Path(str(d["source"]))
        if isinstance(d.get("arm64_image"), list):
            d["arm64_image"] = tuple(d["arm64_image"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


def _elf_notes(data: bytes | mmap.mmap, elf_class: int) -> list[tuple[bytes, int, bytes]]:
    """(name, type, desc) of every note in the ``PT_NOTE`` segments."""
    if elf_class == 32:
        (phoff,) = struct.unpack_from("<I", data, 28)
        phentsize, phnum = struct.unpack_from("<HH", data, 42)
    else:
        (phoff,) = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
    notes = []
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + phentsize > len(data):
            break
        if elf_class == 32:
            p_type, p_offset, _va, _pa, p_filesz = struct.unpack_from("<5I", data, at)
        else:
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", data, at)
        if p_type != PT_NOTE:
            continue
        pos, end = p_offset, min(p_offset + p_filesz, len(data))
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name_at = pos + 12
            desc_at = name_at + ((namesz + 3) & ~3)
            next_at = desc_at + ((descsz + 3) & ~3)
            if next_at > end:
                break
            notes.append((bytes(data[name_at:name_at + namesz]).rstrip(b"\0"), ntype,
                          bytes(data[desc_at:desc_at + descsz])))
            pos = next_at
    return notes


def _multiboot(head: bytes) -> tuple[int | None, bool]:
    """Offset of a valid multiboot header in ``head`` and whether it uses the a.out kludge."""
    magic = struct.pack("<I", MULTIBOOT_MAGIC)
    at = head.find(magic)
    while at >= 0:
        if at % 4 == 0 and at + 12 <= len(head):
            _m, flags, checksum = struct.unpack_from("<III", head, at)
            if (MULTIBOOT_MAGIC + flags + checksum) & 0xFFFFFFFF == 0:
                return at, bool(flags & MULTIBOOT_AOUT_KLUDGE)
        at = head.find(magic, at + 1)
    return None, False


def scan(path: Path, data: bytes | mmap.mmap, source: Path | None = None,
         compressed: bool = False) -> KernelInfo:
    """Inspect kernel bytes already in memory (or mapped)."""
    elf_class = machine = pvh_entry = None
    if len(data) >= 64 and data[:4] == b"\x7fELF" and data[5] == 1 and data[4] in (1, 2):
        elf_class = 32 if data[4] == 1 else 64
        (em,) = struct.unpack_from("<H", data, 18)
        machine = {EM_386: "i386", EM_X86_64: "x86_64", EM_AARCH64: "aarch64"}.get(
            em, f"machine {em}")
        for name, ntype, desc in _elf_notes(data, elf_class):
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY and len(desc) in (4, 8):
                pvh_entry = int.from_bytes(desc, "little")
    mb_offset, mb_aout = _multiboot(bytes(data[:MULTIBOOT_SEARCH]))
    arm64_image = None
    end = ARM64_MAGIC_OFFSET + len(ARM64_IMAGE_MAGIC)
    if elf_class is None and len(data) >= 64 and data[ARM64_MAGIC_OFFSET:end] == ARM64_IMAGE_MAGIC:
        text_offset, image_size = struct.unpack_from("<QQ", data, 8)
        arm64_image = (text_offset, image_size)
    m = re.search(_VERSION_RE, data)
    return KernelInfo(
        path=path, source=source or path, compressed=compressed,
        elf_class=elf_class, machine=machine, pvh_entry=pvh_entry,
        multiboot_offset=mb_offset, multiboot_aout=mb_aout,
        netbsd_version=m.group(1).decode() if m else None,
        netbsd_config=m.group(2).decode() if m else None,
        virtio_mmio=any(data.find(s) >= 0 for s in _MMIO_MARKERS),
        virtio_pci=any(data.find(s) >= 0 for s in _PCI_MARKERS),
        viocon_earlyinit=data.find(b"\0viocon_earlyinit\0") >= 0,
        arm64_image=arm64_image,
    )


def cache_dir() -> Path:
    """``$MKSMOLNB_CACHE``, else ``$XDG_CACHE_HOME/mksmolnb``, else ``~/.cache/mksmolnb``."""
    from smolfs.cachedir import cache_root

    return Path(cache_root())


def sha256_of(path: Path) -> str:
    import hashlib

    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _decompress(path: Path, cache: Path) -> Path:
    """Decompress a gzip kernel once into ``cache/kernels/<sha256>``; reuse it after."""
    import gzip
    import shutil
    import zlib

    out = cache / "kernels" / f"{sha256_of(path)}.elf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with gzip.open(path, "rb") as src, atomic_output(out) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError, zlib.error) as err:
        raise KernelError(f"kernel {path} is gzip-compressed but cannot be decompressed: "
                          f"{err}") from err
    return out


def inspect_kernel(kernel: str | os.PathLike[str], cache: Path | None = None) -> KernelInfo:
    """Inspect a kernel file (gzip or not); raise :class:`KernelError` if it is unreadable."""
    src = Path(kernel)
    cache = cache or cache_dir()
    try:
        st = src.stat()
        with src.open("rb") as f:
            magic = f.read(2)
    except FileNotFoundError as err:
        raise KernelError(f"kernel not found: {src}",
                          hint="give the path of a NetBSD kernel (netbsd, netbsd-GENERIC.gz)"
                          ) from err
    except OSError as err:
        raise KernelError(f"cannot read kernel {src}: {err.strerror}") from err
    if not src.is_file():
        raise KernelError(f"kernel {src} is not a regular file")
    key = f"{_INFO_VERSION}:{src.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    info_file = cache / "kernel-info" / f"{st.st_dev}-{st.st_ino}.json"
    try:
        cached = json.loads(info_file.read_text())
        info = KernelInfo.from_json(cached["info"])
        if cached["key"] == key and info.path.exists():
            return info
    except (OSError, ValueError, TypeError, KeyError):
        pass
    compressed = magic == b"\x1f\x8b"
    path = _decompress(src, cache) if compressed else src
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise KernelError(f"kernel {src} is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            info = scan(path, data, source=src, compressed=compressed)
    try:  # noqa: SIM105  (a cache that cannot be written is only slower)
        write_atomic(info_file, json.dumps({"key": key, "info": info.to_json()}).encode(),
                     makedirs=True)
    except OSError:
        pass
    return info


def require_bootable(info: KernelInfo) -> None:
    """Raise :class:`KernelError` naming the boot protocols looked for when QEMU can't boot it."""
    if info.bootable:
        return
    if info.machine == "aarch64":
        raise KernelError(
            f"kernel {info.source} is an AArch64 ELF: QEMU boots NetBSD/evbarm from its "
            "arm64 Image (no Image header found in this file)",
            hint="boot netbsd-GENERIC64.img (binary/kernel/netbsd-GENERIC64.img.gz of the "
            "release); the ELF is what kstrip reads symbols from")
    what = f"ELF{info.elf_class}" if info.elf_class else "not an ELF file"
    extra = ""
    if info.multiboot_offset is not None:
        extra = (" (a multiboot header is there, but QEMU loads multiboot only from an ELF32 "
                 "or with the a.out kludge)")
    raise KernelError(
        f"kernel {info.source} is not bootable by QEMU ({what}): looked for a PVH entry "
        f"(Xen ELF note type 18), a multiboot header in the first 8 KiB and an arm64 Image "
        f"header, found none"
        + extra,
        hint="use an amd64 kernel with a PVH entry (NetBSD 10+, MICROVM) or an i386 kernel",
    )


def strip_kernel(kernel: KernelInfo, cache: Path | None = None) -> Path:
    """The stripped copy of ``kernel`` (decompressed path), made on first use: found again
    by the kernel's stat (:func:`launcher.stripcache.lookup`), else by its digest; a
    stripped kernel changed since it was written is made again."""
    from . import stripcache

    root = str(cache or cache_dir())
    src = str(kernel.path)
    found = stripcache.lookup(src, root)
    if found is not None:
        return Path(found)
    before = stripcache.stat_of(src)
    digest = sha256_of(kernel.path)
    stripcache.remember(src, before, digest, root)
    found = stripcache.valid(digest, root)
    if found is not None:
        return Path(found)
    try:
        import kstrip
    except ImportError as err:
        raise LaunchError("--strip needs the kstrip package, which is not installed") from err
    strip = getattr(kstrip, "strip", None)
    if strip is None:
        raise LaunchError("--strip: this kstrip has no strip() function",
                          hint="update mksmolnb, or boot without --strip")
    out = Path(stripcache.output_for(digest, root))
    out.parent.mkdir(parents=True, exist_ok=True)
    strip(kernel.path, out=out)  # written beside out and renamed (smolfs.fileutil)
    stripcache.written(digest, root)
    return out
