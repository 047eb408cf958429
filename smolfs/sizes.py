"""Sizes as people write them on a command line: ``8192``, ``512k``, ``20m``, ``1g``.

Suffixes are binary and case-insensitive, as in NetBSD's ``makefs -s``: ``k`` (KiB),
``m`` (MiB), ``g`` (GiB), ``t`` (TiB), optionally followed by ``b`` or ``ib`` (``20mb``,
``20MiB``). A bare number is bytes.
"""

from __future__ import annotations

import re

from smolfs.errors import UsageError

MIB = 1 << 20

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?)?", re.IGNORECASE)


def parse_size(text: str | int, what: str = "size") -> int:
    """``"20m"`` → 20971520. Raise :class:`UsageError` naming *what* on anything else."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"{what} must not be negative: {text}")
        return text
    s = str(text).strip()
    m = _SIZE.fullmatch(s)
    if not m:
        raise UsageError(
            f"invalid {what} {text!r}", hint="write bytes or a number with k, m or g: 512k, 20m, 1g"
        )
    number, unit = m.group(1), (m.group(2) or "").lower()
    if "." in number:
        if not unit:
            raise UsageError(f"invalid {what} {text!r}: a byte count must be a whole number")
        return int(float(number) * _UNITS[unit])
    return int(number) * _UNITS[unit]


def format_size(n: int) -> str:
    """Short human form: ``23.4 MiB``, ``512 KiB``, ``900 B``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def mib_ceil(n: int) -> int:
    """Whole MiB needed to hold *n* bytes (for hints like ``-s 23m``)."""
    return -(-n // MIB)
