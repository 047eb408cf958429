"""The pure parts of kstrip: table layouts, the layout cross-check, release strings."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kstrip.cfdata import (
    Action,
    FState,
    Layout,
    decide,
    find_banner,
    fitting_layouts,
    parse_release,
    parse_table,
)


def encode(layout: Layout, unit: int, state: int) -> int:
    """The unit/state word as the C compiler lays it out (see the gdb test for proof)."""
    if layout is Layout.NETBSD9:
        return struct.unpack("<I", struct.pack("<hh", unit, state))[0]
    return unit | state << 24


entries = st.lists(st.tuples(st.integers(0, 0x7FFF), st.sampled_from(list(FState))),
                   min_size=1, max_size=60)


@given(entries, st.sampled_from(list(Layout)))
def test_a_table_fits_its_own_layout_and_only_it(rows: list, layout: Layout) -> None:
    words = [encode(layout, u, s) for u, s in rows]
    fits = fitting_layouts(words)
    assert layout in fits
    if any(s != FState.NOTFOUND for _, s in rows):
        assert fits == [layout]
    else:
        assert fits == [Layout.NETBSD9, Layout.NETBSD10]
    assert [layout.decode(w) for w in words] == [(u, int(s)) for u, s in rows]


@given(entries, st.sampled_from([32, 64]))
def test_parse_table_stops_at_null_name(rows: list, bits: int) -> None:
    size = 24 if bits == 32 else 48
    ptr = "I" if bits == 32 else "Q"
    table = b""
    for i, (unit, state) in enumerate(rows):
        entry = struct.pack(f"<{ptr}{ptr}I", 0x1000 + i, 0x2000 + i,
                            encode(Layout.NETBSD10, unit, state))
        table += entry.ljust(size, b"\xee")
    assert parse_table(table, bits) is None  # no terminator yet
    table += bytes(size) + b"\xff" * size  # terminator, then junk that must not be read
    parsed = parse_table(table, bits)
    assert parsed is not None and len(parsed) == len(rows)
    assert [(p.index, p.name_ptr, p.atname_ptr) for p in parsed] == \
        [(i, 0x1000 + i, 0x2000 + i) for i in range(len(rows))]


@pytest.mark.parametrize(("bits", "layout", "offset"), [
    (32, Layout.NETBSD9, 10), (64, Layout.NETBSD9, 18),
    (32, Layout.NETBSD10, 11), (64, Layout.NETBSD10, 19),
])
def test_state_offsets(bits: int, layout: Layout, offset: int) -> None:
    assert layout.state_offset(bits) == offset


def test_disabling_follows_netbsd() -> None:
    keep = frozenset({"ld"})
    assert decide("wd", FState.NOTFOUND, keep) == (Action.DISABLE, FState.DNOTFOUND)
    assert decide("wd", FState.STAR, keep) == (Action.DISABLE, FState.DSTAR)
    assert decide("wd", FState.DSTAR, keep) == (Action.ALREADY_DISABLED, None)
    assert decide("ld", FState.DNOTFOUND, keep) == (Action.ALREADY_DISABLED, None)
    assert decide("wd", FState.FOUND, keep) == (Action.LEAVE_FOUND, None)
    assert decide("ld", FState.STAR, keep) == (Action.KEEP, None)


@pytest.mark.parametrize(("text", "release", "layout"), [
    (b"10.1", "10.1", Layout.NETBSD10),
    (b"9.3_STABLE", "9.3_STABLE", Layout.NETBSD9),
    (b"8.2", "8.2", Layout.NETBSD9),
    (b"9.99.81", "9.99.81", None),  # NetBSD-current changed layout during 9.99
    (b"11.0_BETA", "11.0_BETA", Layout.NETBSD10),
])
def test_release_layouts(text: bytes, release: str, layout: Layout | None) -> None:
    rel = parse_release(text)
    assert rel is not None and rel.text == release and rel.layout is layout


def test_banner_search_skips_decoys() -> None:
    data = (b"\0NetBSD is a registered trademark\0Copyright NetBSD 2024\0"
            b"NetBSD 10.1 (GENERIC) #0: Mon Dec 16 13:08:11 UTC 2024\n\tbuilder@host\0")
    rel = find_banner(data)
    assert rel is not None and rel.text == "10.1" and rel.major == 10
    assert rel.banner == "NetBSD 10.1 (GENERIC) #0: Mon Dec 16 13:08:11 UTC 2024"
    assert find_banner(b"NetBSD is great 10.1\0") is None
