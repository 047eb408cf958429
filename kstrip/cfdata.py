"""NetBSD's autoconfiguration table (``struct cfdata``): layouts, states, decisions.

Pure functions over bytes and small values; nothing here reads files. The entry's
layout (NetBSD 9 and 10), where the unit/state word lives and how the layout is told
from the values: ``kstrip/README.md``."""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass


class FState(enum.IntEnum):
    """``FSTATE_*`` values of ``cf_fstate``."""

    NOTFOUND = 0  # not found yet: will be probed
    FOUND = 1  # found (set at run time; never in a kernel file as built)
    STAR = 2  # ``foo*``: probed, may attach many times
    DSTAR = 3  # a STAR entry, disabled
    DNOTFOUND = 4  # a NOTFOUND entry, disabled


#: How NetBSD disables an entry (what ``userconf``'s ``disable`` does).
DISABLED_FORM = {FState.NOTFOUND: FState.DNOTFOUND, FState.STAR: FState.DSTAR}
DISABLED = frozenset({FState.DSTAR, FState.DNOTFOUND})


class Layout(enum.IntEnum):
    """Where ``cf_unit`` and ``cf_fstate`` live in the unit/state word."""

    NETBSD9 = 9  # short cf_unit; short cf_fstate
    NETBSD10 = 10  # unsigned cf_unit:24; unsigned char cf_fstate

    @property
    def label(self) -> str:
        return "NetBSD <= 9" if self is Layout.NETBSD9 else "NetBSD >= 10"

    @property
    def state_size(self) -> int:
        """Bytes of ``cf_fstate``."""
        return 2 if self is Layout.NETBSD9 else 1

    def state_offset(self, bits: int) -> int:
        """Offset of ``cf_fstate`` within an entry (10/18 or 11/19)."""
        return word_offset(bits) + (2 if self is Layout.NETBSD9 else 3)

    def decode(self, word: int) -> tuple[int, int]:
        """(unit, state) from the little-endian unit/state word."""
        if self is Layout.NETBSD9:
            return word & 0xFFFF, word >> 16
        return word & 0xFFFFFF, word >> 24

    def plausible(self, word: int) -> bool:
        """A valid state, and a unit a kernel configuration can have.

        Units are below 32768 (a ``short`` up to NetBSD 9; far beyond any real
        configuration on 10). With that, a table whose states are not all NOTFOUND
        fits exactly one layout: a NetBSD 9 state read as a 10 unit is >= 65536, and a
        NetBSD 10 state read as a 9 state is a multiple of 256.
        """
        unit, state = self.decode(word)
        return state <= FState.DNOTFOUND and unit < 0x8000

    def encode_state(self, state: FState) -> bytes:
        return int(state).to_bytes(self.state_size, "little")


def entry_size(bits: int) -> int:
    return 24 if bits == 32 else 48


def word_offset(bits: int) -> int:
    """Offset of the unit/state word within an entry."""
    return 8 if bits == 32 else 16


@dataclass(frozen=True)
class RawEntry:
    """One table entry as stored: two pointers and the unit/state word."""

    index: int
    name_ptr: int
    atname_ptr: int
    word: int


def parse_table(table: bytes, bits: int) -> list[RawEntry] | None:
    """The entries of *table* up to (not including) the NULL-name terminator.

    None when *table* holds no terminator.
    """
    size = entry_size(bits)
    head = struct.Struct("<III" if bits == 32 else "<QQI")
    entries: list[RawEntry] = []
    for index in range(len(table) // size):
        name_ptr, atname_ptr, word = head.unpack_from(table, index * size)
        if name_ptr == 0:
            return entries
        entries.append(RawEntry(index, name_ptr, atname_ptr, word))
    return None


def fitting_layouts(words: list[int]) -> list[Layout]:
    """The layouts under which every unit/state word is plausible."""
    return [lay for lay in Layout if all(lay.plausible(w) for w in words)]


@dataclass(frozen=True)
class Release:
    """A NetBSD release as the kernel names itself (``NetBSD 10.1 (GENERIC) #0: ...``)."""

    text: str  # "10.1", "9.3_STABLE", "9.99.81"
    major: int
    minor: int
    banner: str  # first line of the kernel's version string ("" when unknown)

    @property
    def layout(self) -> Layout | None:
        """The table layout this release uses; None for NetBSD-current 9.99.x,
        which changed layout during its life."""
        if self.major >= 10:
            return Layout.NETBSD10
        if self.major == 9 and self.minor == 99:
            return None
        return Layout.NETBSD9


RELEASE_RE = re.compile(rb"(\d{1,3})\.(\d{1,3})((?:\.\d+)?(?:_[A-Za-z0-9]+)?)")
BANNER_RE = re.compile(rb"NetBSD (\d{1,3}\.\d{1,3}(?:\.\d+)?(?:_[A-Za-z0-9]+)?) \([^()\s]+\) #\d+")


def parse_release(text: bytes, banner: bytes = b"") -> Release | None:
    """Parse an ``osrelease``-style string (``10.1``) into a :class:`Release`."""
    m = RELEASE_RE.match(text)
    if not m:
        return None
    return Release(m.group(0).decode(), int(m.group(1)), int(m.group(2)),
                   banner.split(b"\n", 1)[0].decode("ascii", "replace").strip())


def find_banner(data: bytes) -> Release | None:
    """Find ``NetBSD X.Y (CONF) #N`` anywhere in *data* (when symbols name no version)."""
    m = BANNER_RE.search(data)
    if not m:
        return None
    end = data.find(b"\n", m.start(), m.start() + 512)
    banner = data[m.start():end if end > 0 else m.end()]
    return parse_release(m.group(1), banner)


class Action(enum.Enum):
    """What kstrip does with one entry."""

    KEEP = "keep"
    DISABLE = "disable"
    ALREADY_DISABLED = "already_disabled"
    LEAVE_FOUND = "leave_found"  # FOUND cannot be disabled the way NetBSD does it

    @property
    def label(self) -> str:
        return {"already_disabled": "already disabled", "leave_found": "left (found)"}.get(
            self.value, self.value)


def decide(driver: str, state: FState, keep: frozenset[str]) -> tuple[Action, FState | None]:
    """The action for one entry and the state it gets (None: unchanged)."""
    if state in DISABLED:
        return Action.ALREADY_DISABLED, None
    if driver in keep:
        return Action.KEEP, None
    if state is FState.FOUND:
        return Action.LEAVE_FOUND, None
    return Action.DISABLE, DISABLED_FORM[state]
