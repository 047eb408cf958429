"""Sizes as people write them on a command line: ``8192``, ``512k``, ``20m``, ``1g``.

Suffixes are binary and case-insensitive, as in NetBSD's ``makefs -s``: ``k`` (KiB),
``m`` (MiB), ``g`` (GiB), ``t`` (TiB), optionally followed by ``b`` or ``ib`` (``20mb``,
``20MiB``). A bare number is bytes.
"""

from __future__ import annotations

import re

from smolfs.errors import UsageError

MIB = 1 << 20
GIB = 1 << 30

#: The largest image written without ``--force`` (``force=True``): a bigger one is
#: most likely a typo (``1t`` for ``1g``) that would make a huge sparse file.
MAX_IMAGE = 64 * GIB

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
    """Short human form: ``23.4 MiB``, ``512 KiB``, ``900 B`` (below 1 MiB in KiB,
    never ``0.0 MiB``)."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                        ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def mib_ceil(n: int) -> int:
    """Whole MiB needed to hold *n* bytes (for hints like ``-s 23m``)."""
    return -(-n // MIB)


def size_arg(n: int) -> str:
    """The shortest size argument of at least *n* bytes: ``23m``, or ``300k`` below 1 MiB."""
    return f"{-(-n // 1024)}k" if n < MIB else f"{mib_ceil(n)}m"


def check_bound(size: int, where: str, force: bool = False, flag: str = "--force",
                mistake: str = "1t where 1g was meant?") -> None:
    """:class:`~smolfs.errors.ImageTooLarge` for *size* over :data:`MAX_IMAGE` unless *force*;
    *mistake*: the slip the hint suggests (the size argument's own)."""
    if size > MAX_IMAGE and not force:
        from smolfs.errors import ImageTooLarge

        raise ImageTooLarge(
            f"{where}: {format_size(size)} is over {format_size(MAX_IMAGE)}, the largest image "
            f"written without {flag}",
            size,
            hint=f"check the size ({mistake}), or add {flag} to write it anyway")
