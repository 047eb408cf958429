"""The driver table of a kernel ELF: found by its ``cfdata`` symbol, its layout chosen
(from the release the kernel names, and what its state values fit), every entry decoded
and decided (:class:`Entry`); for an arm64 Image, where those entries are in the image.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kstrip.cfdata import (
    Action,
    FState,
    Layout,
    Release,
    decide,
    entry_size,
    find_banner,
    fitting_layouts,
    parse_release,
    parse_table,
)
from kstrip.elf import KernelElf, Symbol
from smolfs.errors import KernelError

#: The symbols read: the table, and the two that name the release.
NAME_SYMBOLS = ("cfdata", "version", "osrelease")


@dataclass(frozen=True)
class Entry:
    """One driver entry, decoded, and what kstrip does with it."""

    index: int
    driver: str
    attachment: str
    unit: int
    state: FState
    action: Action
    new_state: FState | None  # None: left unchanged
    offset: int  # file offset of cf_fstate in the uncompressed kernel

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "driver": self.driver, "attachment": self.attachment,
            "unit": self.unit, "state": self.state.name, "action": self.action.value,
            "new_state": (self.state if self.new_state is None else self.new_state).name,
            "offset": self.offset,
        }


def to_image(elf: KernelElf, image: bytes, entries: list[Entry], kernel: Path) -> list[Entry]:
    """The entries with their offsets in the image; the image must hold the ELF's bytes
    from the first entry's state to the last one's."""
    if not entries:
        return entries
    first, last = entries[0].offset, entries[-1].offset
    at = elf.image_offset(first)
    if elf.image_offset(last) - at != last - first or at < 0 or at + last - first >= len(image) \
            or image[at:at + last - first + 1] != elf.data[first:last + 1]:
        raise KernelError(
            f"{kernel}: its bytes where {elf.name} puts the driver table differ from the ELF's: "
            "not the image of that kernel", hint="give the ELF of the same build "
            "(netbsd-GENERIC64.gz beside netbsd-GENERIC64.img.gz)")
    return [dataclasses.replace(e, offset=elf.image_offset(e.offset)) for e in entries]


def find_release(elf: KernelElf, syms: dict[str, Symbol]) -> Release | None:
    """The release from the ``version`` banner, else ``osrelease``, else a banner-shaped
    string anywhere in the file."""
    banner = b""
    if "version" in syms:
        banner = elf.cstring(syms["version"].value, 1024) or b""
        m = re.match(rb"NetBSD (\S+)", banner)
        if m and (rel := parse_release(m.group(1), banner)):
            return rel
    if "osrelease" in syms:
        text = elf.cstring(syms["osrelease"].value, 64) or b""
        if rel := parse_release(text, banner):
            return rel
    return find_banner(elf.data)


def read_table(
    elf: KernelElf, keep: frozenset[str], forced: Layout | None
) -> tuple[Release | None, Layout, list[Entry]]:
    """(release, layout, entries) of *elf*'s driver table, each entry decided against
    *keep*; *forced*: the layout given by the user, else the one the release implies."""
    name = elf.name
    if not elf.has_symbols:
        raise KernelError(
            f"{name}: no symbol table: this kernel was stripped (strip/objcopy), so its "
            "driver table cannot be found",
            hint="use the kernel as NetBSD ships it (binary/kernel/netbsd-GENERIC.gz keeps "
                 "its symbols)",
        )
    syms = elf.symbols(NAME_SYMBOLS)
    if "cfdata" not in syms:
        raise KernelError(
            f"{name}: no 'cfdata' symbol: not a NetBSD kernel, or one without a driver table",
        )
    cfdata = syms["cfdata"]
    bits = elf.bits
    size = entry_size(bits)
    start = elf.offset_of(cfdata.value, size)
    if cfdata.size:
        if cfdata.size % size:
            raise KernelError(f"{name}: 'cfdata' is {cfdata.size} bytes, not a whole number of "
                              f"{size}-byte entries: not a {bits}-bit NetBSD driver table")
        end = elf.offset_of(cfdata.value, cfdata.size) + cfdata.size
    else:  # no size recorded: bounded by the segment holding it
        end = next(s.offset + s.filesz for s in elf.segments
                   if s.offset <= start < s.offset + s.filesz)
    raw = parse_table(elf.data[start:end], bits)
    if raw is None:
        raise KernelError(f"{name}: 'cfdata' has no terminating entry (NULL driver name) "
                          f"within its {end - start} bytes")

    words = [r.word for r in raw]
    fits = fitting_layouts(words)
    release = find_release(elf, syms)
    chosen = choose_layout(name, release, fits, forced)

    entries = []
    for r in raw:
        driver = _name(elf, r.name_ptr, r.index, "driver")
        attachment = _name(elf, r.atname_ptr, r.index, "attachment") if r.atname_ptr else ""
        unit, state = chosen.decode(r.word)
        action, new = decide(driver, FState(state), keep)
        offset = start + r.index * size + chosen.state_offset(bits)
        entries.append(Entry(r.index, driver, attachment, unit, FState(state), action, new,
                             offset))
    return release, chosen, entries


def choose_layout(name: str, release: Release | None, fits: list[Layout],
                   forced: Layout | None) -> Layout:
    """The layout to read the table with, or a :class:`KernelError` saying why none fits."""

    def fit_text() -> str:
        if not fits:
            return "its state values fit neither layout"
        return "its state values fit only the " + " or the ".join(f.label for f in fits) + \
            " layout"

    if forced is not None:
        if forced not in fits:
            raise KernelError(f"{name}: the driver table does not read as the {forced.label} "
                              f"layout given: {fit_text()}")
        return forced
    expected = release.layout if release else None
    said = f"the kernel says NetBSD {release.text}" if release else "no NetBSD version string"
    if expected is not None:
        if expected in fits:
            return expected
        hint = (f"if you know better, force it with --layout {int(fits[0])}" if fits
                else "the file may not be a NetBSD kernel, or it is damaged")
        raise KernelError(f"{name}: {said} ({expected.label} layout) but {fit_text()}",
                          hint=hint)
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise KernelError(f"{name}: unknown driver table layout: {said} and {fit_text()}")
    raise KernelError(
        f"{name}: unknown driver table layout: {said} and every entry is NOTFOUND, "
        "which reads the same in both layouts",
        hint="give --layout 9 (NetBSD 9 and older) or --layout 10 (NetBSD 10 and newer)",
    )


def _name(elf: KernelElf, ptr: int, index: int, what: str) -> str:
    raw = elf.cstring(ptr, 64)
    if not raw or not all(0x21 <= b < 0x7F for b in raw):
        raise KernelError(f"{elf.name}: entry {index} of 'cfdata' has no readable {what} name "
                          f"at {ptr:#x}: not a NetBSD {elf.bits}-bit driver table")
    return raw.decode("ascii")
