"""The kernel file as kstrip sees it: bytes, loadable segments and a symbol table.

pyelftools reads the headers, imported inside :func:`open_kernel` so that ``kstrip
--help`` stays fast; the symbol table is scanned with :mod:`struct` for the few names
kstrip needs (see ``kstrip/README.md``)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from smolfs.errors import KernelError

GZIP_MAGIC = b"\x1f\x8b"
ELF_MAGIC = b"\x7fELF"
STT_OBJECT = 1
STB_GLOBAL = 1
SHN_UNDEF = 0


@dataclass(frozen=True)
class Segment:
    """One ``PT_LOAD`` program header: ``filesz`` bytes at ``offset`` map to ``vaddr``
    (and load at physical address ``paddr``)."""

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    paddr: int | None = None  # None: same as vaddr


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    kind: int  # STT_*
    bind: int  # STB_*
    shndx: int


def read_kernel(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """The uncompressed bytes of the kernel file and whether it was gzip-compressed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KernelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise KernelError(f"{path}: is a directory, not a kernel file") from None
    except OSError as err:
        raise KernelError(f"{path}: cannot read: {err.strerror or err}") from None
    if not raw.startswith(GZIP_MAGIC):
        return raw, False
    import gzip
    import zlib

    try:
        return gzip.decompress(raw), True
    except (OSError, EOFError, zlib.error) as err:
        raise KernelError(
            f"{path}: corrupt gzip data ({err})",
            hint="fetch the kernel again; 'gzip -t' checks the file",
        ) from None


class KernelElf:
    """Read-only view of a kernel ELF held in memory."""

    def __init__(self, name: str, data: bytes, bits: int, machine: str,
                 segments: tuple[Segment, ...], symtab: tuple[int, int, int, int] | None) -> None:
        self.name = name
        self.data = data
        self.bits = bits
        self.machine = machine
        self.segments = segments
        # (symtab offset, symtab size, strtab offset, strtab size), None when stripped.
        self._symtab = symtab

    @property
    def pointer_size(self) -> int:
        return self.bits // 8

    @property
    def has_symbols(self) -> bool:
        return self._symtab is not None

    def offset_of(self, vaddr: int, size: int = 1) -> int:
        """File offset of *size* bytes at virtual address *vaddr*, or KernelError."""
        for seg in self.segments:
            if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.memsz:
                if vaddr + size > seg.vaddr + seg.filesz:
                    raise KernelError(
                        f"{self.name}: address {vaddr:#x} lies in memory the kernel zeroes "
                        "at boot (not stored in the file)"
                    )
                return seg.offset + (vaddr - seg.vaddr)
        raise KernelError(
            f"{self.name}: address {vaddr:#x} (+{size}) is outside every loadable segment"
        )

    def image_offset(self, file_offset: int) -> int:
        """Where the byte at *file_offset* of this ELF lies in the raw image
        ``objcopy -O binary`` makes of it (an arm64 ``Image``): sections are laid out by
        load address from the lowest one (NetBSD's ``netbsd.img`` is made that way)."""
        base = min(s.vaddr if s.paddr is None else s.paddr for s in self.segments
                   if s.filesz)
        for s in self.segments:
            if s.offset <= file_offset < s.offset + s.filesz:
                load = s.vaddr if s.paddr is None else s.paddr
                return load + (file_offset - s.offset) - base
        raise KernelError(f"{self.name}: file offset {file_offset:#x} is in no loadable "
                          "segment")

    def maps(self, vaddr: int, size: int = 1) -> bool:
        return any(s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz
                   for s in self.segments)

    def read(self, vaddr: int, size: int) -> bytes:
        off = self.offset_of(vaddr, size)
        return self.data[off:off + size]

    def cstring(self, vaddr: int, limit: int = 256) -> bytes | None:
        """The NUL-terminated string at *vaddr*, or None if unmapped or unterminated."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                start = seg.offset + (vaddr - seg.vaddr)
                end = min(start + limit, seg.offset + seg.filesz)
                nul = self.data.find(b"\0", start, end)
                return None if nul < 0 else self.data[start:nul]
        return None

    def symbols(self, names: tuple[str, ...]) -> dict[str, Symbol]:
        """The defined symbols among *names* (globals preferred over locals)."""
        if self._symtab is None:
            return {}
        symoff, symsize, stroff, strsize = self._symtab
        strtab = self.data[stroff:stroff + strsize]
        # Every strtab offset whose string reads as a wanted name (strings may share tails).
        wanted: dict[int, str] = {}
        for name in names:
            needle = name.encode() + b"\0"
            at = strtab.find(needle)
            while at >= 0:
                wanted[at] = name
                at = strtab.find(needle, at + 1)
        if not wanted:
            return {}
        if self.bits == 64:
            entsize, full = 24, struct.Struct("<IBBHQQ")
        else:
            entsize, full = 16, struct.Struct("<IIIBBH")
        table = memoryview(self.data)[symoff:symoff + symsize - symsize % entsize]
        found: dict[str, Symbol] = {}
        for index, (st_name,) in enumerate(struct.iter_unpack(f"<I{entsize - 4}x", table)):
            if st_name not in wanted:
                continue
            fields = full.unpack_from(table, index * entsize)
            if self.bits == 64:
                _, info, _, shndx, value, size = fields
            else:
                _, value, size, info, _, shndx = fields
            if shndx == SHN_UNDEF:
                continue
            sym = Symbol(wanted[st_name], value, size, info & 0xF, info >> 4, shndx)
            best = found.get(sym.name)
            if best is None or (best.bind != STB_GLOBAL and sym.bind == STB_GLOBAL):
                found[sym.name] = sym
        return found


def open_kernel(name: str, data: bytes) -> KernelElf:
    """Parse the ELF headers of *data* (the uncompressed kernel named *name*)."""
    if not data.startswith(ELF_MAGIC):
        raise KernelError(
            f"{name}: not an ELF file",
            hint="give a NetBSD kernel such as netbsd-GENERIC or netbsd-GENERIC.gz",
        )
    import io

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        if not elf.little_endian:
            raise KernelError(f"{name}: big-endian ELF; kstrip handles i386, amd64 and "
                              "aarch64 kernels")
        segments = tuple(
            Segment(seg["p_vaddr"], seg["p_memsz"], seg["p_offset"], seg["p_filesz"],
                    seg["p_paddr"])
            for seg in elf.iter_segments()
            if seg["p_type"] == "PT_LOAD"
        )
        symtab = None
        for section in elf.iter_sections():
            if section["sh_type"] == "SHT_SYMTAB":
                strsec = elf.get_section(section["sh_link"])
                symtab = (section["sh_offset"], section["sh_size"],
                          strsec["sh_offset"], strsec["sh_size"])
                break
        machine = str(elf["e_machine"]).removeprefix("EM_")
        bits = elf.elfclass
    except KernelError:
        raise
    except ELFError as err:
        raise KernelError(f"{name}: damaged ELF file ({err})") from None
    except Exception as err:  # pyelftools meets corrupt headers with assorted exceptions
        raise KernelError(f"{name}: damaged ELF file ({type(err).__name__}: {err})") from None
    if not segments:
        raise KernelError(f"{name}: ELF file has no loadable segment; not a kernel")
    for start, size in ((symtab[0], symtab[1]), (symtab[2], symtab[3])) if symtab else ():
        if start + size > len(data):
            raise KernelError(f"{name}: symbol table runs past the end of the file (truncated?)")
    for seg in segments:
        if seg.offset + seg.filesz > len(data):
            raise KernelError(f"{name}: a loadable segment runs past the end of the file "
                              "(truncated?)")
    return KernelElf(name, data, bits, machine, segments, symtab)
