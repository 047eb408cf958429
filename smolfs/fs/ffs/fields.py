"""Flat little-endian structure declarations, spelt as in ``construct`` but free to import.

``"fs_magic" / Int32sl``, ``Array(2, Int32sl)``, ``Bytes(468)``, ``Padding(128)``,
``Struct(...)``; :func:`to_construct` gives the ``construct`` equivalent, which tests
compare (importing ``construct`` itself costs about 15 ms per ``smolfs build``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One member: ``code`` is its :mod:`struct` format (``"i"``, ``"468s"``, ``"128x"``),
    ``count`` the length of an array of integers (0 for anything else), ``name`` None for
    padding."""

    name: str | None
    code: str
    size: int
    count: int = 0
    construct: str = ""  # the construct name of the (item) type: "Int32sl"...


class _Type:
    """What may follow ``"name" /``: an integer type, an array of one, a byte string."""

    code: str
    size: int
    count: int = 0
    construct: str = ""

    def __rtruediv__(self, name: str) -> Field:
        return Field(name, self.code, self.size, self.count, self.construct)


class _Int(_Type):
    def __init__(self, code: str, size: int, construct: str) -> None:
        self.code, self.size, self.construct = code, size, construct


class Array(_Type):
    def __init__(self, count: int, item: _Int) -> None:
        self.code, self.size = f"{count}{item.code}", count * item.size
        self.count, self.construct = count, item.construct


class Bytes(_Type):
    def __init__(self, length: int) -> None:
        self.code, self.size = f"{length}s", length


def Padding(length: int) -> Field:  # capitalised as in construct
    return Field(None, f"{length}x", length)


class Struct:
    """A sequence of :class:`Field`; ``sizeof()`` as in construct."""

    def __init__(self, *fields: Field) -> None:
        self.fields = fields

    def sizeof(self) -> int:
        return sum(f.size for f in self.fields)


Int8ul = _Int("B", 1, "Int8ul")
Int16sl = _Int("h", 2, "Int16sl")
Int16ul = _Int("H", 2, "Int16ul")
Int32sl = _Int("i", 4, "Int32sl")
Int32ul = _Int("I", 4, "Int32ul")
Int64sl = _Int("q", 8, "Int64sl")
Int64ul = _Int("Q", 8, "Int64ul")


def to_construct(decl: Struct) -> Any:
    """The same structure as a ``construct.Struct`` (imports construct)."""
    import construct as c

    subcons = []
    for f in decl.fields:
        if f.name is None:
            subcons.append(c.Padding(f.size))
        elif f.count:
            subcons.append(f.name / c.Array(f.count, getattr(c, f.construct)))
        elif f.construct:
            subcons.append(f.name / getattr(c, f.construct))
        else:
            subcons.append(f.name / c.Bytes(f.size))
    return c.Struct(*subcons)
