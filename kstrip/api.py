"""kstrip's API: read a kernel's driver table (:mod:`kstrip.table`), decide, write the
stripped kernel.

``strip(kernel, out=None, keep=None, disable=(), dry_run=False, layout=None)`` is what
``kstrip`` and ``startnb --strip`` call. The input is never modified; the output is the
uncompressed kernel with the state of every driver entry not kept switched to its
disabled form, written atomically.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kstrip.cfdata import Action, Layout, Release
from kstrip.defaults import DEFAULT_KEEP, default_keep
from kstrip.elf import open_kernel, read_kernel
from kstrip.table import Entry, read_table, to_image
from smolfs.errors import InputError, KernelError, UsageError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ARCH = {"386": "i386", "X86_64": "amd64", "AARCH64": "aarch64"}
#: The arm64 Image header's magic, at byte 56 (NetBSD's ``netbsd-GENERIC64.img``).
IMAGE_MAGIC, IMAGE_MAGIC_AT = b"ARM\x64", 56


@dataclass(frozen=True)
class StripResult:
    """What :func:`strip` found and did."""

    kernel: Path
    output: Path  # where the stripped kernel is (or would be) written
    written: bool  # False for dry runs and listings
    compressed: bool  # the input was gzip-compressed
    bits: int  # 32 (i386) or 64 (amd64, aarch64)
    machine: str  # ELF machine, "386", "X86_64" or "AARCH64"
    release: Release | None
    layout: Layout
    keep: tuple[str, ...]  # the driver names kept (after --disable)
    entries: tuple[Entry, ...]
    warnings: tuple[str, ...] = field(default=())
    #: The ELF the symbols came from when the kernel patched is an arm64 Image.
    symbols: Path | None = None

    @property
    def arch(self) -> str:
        """NetBSD's name for the kernel's architecture (``i386``, ``amd64``, ``aarch64``)."""
        return ARCH.get(self.machine, self.machine.lower())

    @property
    def version(self) -> str | None:
        """The NetBSD release the kernel names, e.g. ``"10.1"``."""
        return self.release.text if self.release else None

    @property
    def changed(self) -> int:
        """Entries whose state this run switches (or would switch) to disabled."""
        return sum(1 for e in self.entries if e.new_state is not None)

    def count(self, action: Action) -> int:
        return sum(1 for e in self.entries if e.action is action)

    def summary(self) -> str:
        n = self.changed
        verb = "changed" if self.written else "would change"
        text = (f"{n} {'entry' if n == 1 else 'entries'} {verb}"
                f" ({self.count(Action.KEEP)} kept,"
                f" {self.count(Action.ALREADY_DISABLED)} already disabled")
        if self.count(Action.LEAVE_FOUND):
            text += f", {self.count(Action.LEAVE_FOUND)} left in state FOUND"
        text += f", {len(self.entries)} in all)"
        return text + (f" -> {self.output}" if self.written else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel": str(self.kernel), "output": str(self.output), "written": self.written,
            "symbols": str(self.symbols) if self.symbols else None,
            "compressed": self.compressed, "bits": self.bits, "arch": self.arch,
            "version": self.version, "banner": self.release.banner if self.release else None,
            "layout": int(self.layout), "keep": list(self.keep),
            "changed": self.changed, "kept": self.count(Action.KEEP),
            "already_disabled": self.count(Action.ALREADY_DISABLED),
            "found": self.count(Action.LEAVE_FOUND),
            "warnings": list(self.warnings),
            "entries": [e.to_json() for e in self.entries],
        }


def default_output(kernel: str | os.PathLike[str]) -> Path:
    """``KERNEL.stripped`` beside the input; ``netbsd-GENERIC.gz`` -> ``netbsd-GENERIC.stripped``
    (the output is never compressed)."""
    kernel = Path(kernel)
    name = kernel.name.removesuffix(".gz") or kernel.name
    return kernel.with_name(name + ".stripped")


def parse_names(text: str) -> list[str]:
    """Driver names from ``a,b c`` text or a keep file (``#`` starts a comment)."""
    names = []
    for line in text.splitlines():
        names += [n for n in re.split(r"[\s,]+", line.split("#", 1)[0]) if n]
    return names


def _check_names(names: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        names = parse_names(names)
    out = tuple(dict.fromkeys(names))
    for name in out:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise UsageError(f"{what}: {name!r} is not a driver name",
                             hint="driver names are like 'ld', 'vioif', 'com'")
    return out


def list_entries(
    kernel: str | os.PathLike[str],
    keep: Iterable[str] | None = None,
    disable: Iterable[str] = (),
    layout: Layout | int | None = None,
) -> StripResult:
    """Read *kernel* and decide every entry, writing nothing (``kstrip --list``)."""
    return strip(kernel, keep=keep, disable=disable, dry_run=True, layout=layout)


def strip(
    kernel: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    keep: Iterable[str] | None = None,
    disable: Iterable[str] = (),
    dry_run: bool = False,
    layout: Layout | int | None = None,
    add: Iterable[str] = (),
    symbols: str | os.PathLike[str] | None = None,
) -> StripResult:
    """Disable every driver of *kernel* not in *keep* (default: :data:`DEFAULT_KEEP`, or
    :data:`~kstrip.defaults.VIRT_KEEP` for an AArch64 kernel).

    *keep* replaces the default list; *add* extends it; *disable* removes names from it.
    An arm64 Image (``netbsd-GENERIC64.img``, no symbol table) is patched with the symbols
    of its ELF, *symbols* (``netbsd-GENERIC64`` or ``.gz``): the same driver table, found at
    the same virtual addresses, which the image holds at (load address - lowest load
    address); its bytes there must equal the ELF's. The output
    (default :func:`default_output`) is the uncompressed kernel, written atomically with
    the input's permission bits; the input is never changed. *layout* (9 or 10) overrides
    the layout the kernel's version string implies. *dry_run* decides and reports without
    writing. Raises :class:`~smolfs.errors.KernelError` for a kernel kstrip cannot handle,
    :class:`~smolfs.errors.UsageError` for bad arguments. Names the kernel does not have
    (among explicit *keep* and *disable*) become ``warnings`` on the result.
    """
    kernel = Path(kernel)
    explicit = keep is not None
    if keep is not None:
        _check_names(keep, "keep list")
    add_names = _check_names(add, "--add")
    disable_names = _check_names(disable, "--disable")
    forced = _layout_arg(layout)
    output = Path(out) if out is not None else default_output(kernel)
    if not dry_run and output.exists() and kernel.exists() and os.path.samefile(output, kernel):
        raise UsageError(f"{output}: the output would overwrite the input kernel",
                         hint="give another -o; kstrip never changes its input")

    data, compressed = read_kernel(kernel)
    image: bytes | None = None
    if data[IMAGE_MAGIC_AT:IMAGE_MAGIC_AT + 4] == IMAGE_MAGIC and not data.startswith(b"\x7fELF"):
        if symbols is None:
            raise KernelError(
                f"{kernel}: an arm64 Image, which has no symbol table to find the driver "
                "table by", hint="give the kernel's ELF too: --symbols netbsd-GENERIC64.gz "
                "(binary/kernel/ of the release has both)")
        image, (data, _) = data, read_kernel(symbols)
        elf = open_kernel(str(symbols), data)
    elif symbols is not None:
        raise UsageError(f"--symbols is for an arm64 Image; {kernel} is not one",
                         hint="an ELF kernel carries its own symbols: drop --symbols")
    else:
        elf = open_kernel(str(kernel), data)
    base = default_keep(elf.machine) if keep is None else keep
    keep_names = _check_names([*base, *add_names], "keep list")
    if not keep_names:
        raise UsageError("the keep list is empty: the kernel would attach no device at all",
                         hint=f"the default list is: {' '.join(default_keep(elf.machine))}")
    kept = tuple(n for n in keep_names if n not in disable_names)
    release, chosen, entries = read_table(elf, frozenset(kept), forced)
    if image is not None:
        entries = to_image(elf, image, entries, kernel)
        data = image

    warnings = _name_warnings(entries, keep_names if explicit else add_names, disable_names,
                              kept)
    root = "armfdt" if elf.machine == "AARCH64" else "mainbus"
    if root not in kept:
        warnings.append(f"'{root}' is not kept: the kernel will attach no device at all")
    result = StripResult(kernel, output, False, compressed, elf.bits, elf.machine, release,
                         chosen, kept, tuple(entries), tuple(warnings),
                         Path(symbols) if image is not None and symbols is not None else None)
    if dry_run:
        return result
    _write(output, data, entries, chosen, kernel)
    return dataclasses.replace(result, written=True)


def _layout_arg(layout: Layout | int | None) -> Layout | None:
    if layout is None:
        return None
    try:
        return Layout(int(layout))
    except ValueError:
        raise UsageError(f"layout {layout!r}: use 9 (NetBSD <= 9) or 10 (NetBSD >= 10)") from None


def _name_warnings(entries: list[Entry], keep: tuple[str, ...], disable: tuple[str, ...],
                   kept: tuple[str, ...]) -> list[str]:
    drivers = sorted({e.driver for e in entries})
    owners: dict[str, str] = {}
    for e in entries:
        owners.setdefault(e.attachment, e.driver)
    warnings = []
    for what, names in (("keep list", keep), ("--disable", disable)):
        for n in names:
            if n in drivers:
                continue
            msg = f"{what} names '{n}', a driver this kernel does not have"
            if n in owners:
                msg += f" ('{n}' is an attachment of driver '{owners[n]}'; lists take drivers)"
            elif near := difflib.get_close_matches(n, drivers, n=3, cutoff=0.6):
                msg += " (near: " + ", ".join(near) + ")"
            warnings.append(msg)
    stuck = sorted({e.driver for e in entries if e.action is Action.ALREADY_DISABLED
                    and e.driver in kept}
                   - {e.driver for e in entries if e.action is Action.KEEP})
    if stuck:
        warnings.append("kept but already disabled in this kernel: " + ", ".join(stuck)
                        + " (kstrip never re-enables a driver; strip the original kernel)")
    return warnings


def _write(output: Path, data: bytes, entries: list[Entry], layout: Layout,
           kernel: Path) -> None:
    from smolfs.fileutil import atomic_output

    mode = kernel.stat().st_mode & 0o777
    try:
        with atomic_output(output, mode=mode) as f:
            f.write(data)
            for e in entries:
                if e.new_state is not None:
                    f.seek(e.offset)
                    f.write(layout.encode_state(e.new_state))
    except OSError as err:
        raise InputError(f"{output}: cannot write: {err.strerror or err}",
                         hint="choose another place with -o") from None


__all__ = ["DEFAULT_KEEP", "StripResult", "default_output", "list_entries", "parse_names",
           "strip"]
