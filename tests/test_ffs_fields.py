"""The FFS structure declarations agree with ``construct`` and do not need it at run time."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from conftest import REPO
from smolfs.fs.ffs import fields
from smolfs.fs.ffs import structs as s

DECLS = {
    "Superblock": (s.Superblock, s.SUPERBLOCK),
    "CylinderGroup": (s.CylinderGroup, s.CG),
    "Ufs1Dinode": (s.Ufs1Dinode, s.UFS1_DINODE),
    "Ufs2Dinode": (s.Ufs2Dinode, s.UFS2_DINODE),
    "DirectHeader": (s.DirectHeader, s.DIRECT),
    "Csum": (s.Csum, s.CSUM),
}

_RANGES = {"B": (0, 255), "h": (-(1 << 15), (1 << 15) - 1), "H": (0, (1 << 16) - 1),
           "i": (-(1 << 31), (1 << 31) - 1), "I": (0, (1 << 32) - 1),
           "q": (-(1 << 63), (1 << 63) - 1), "Q": (0, (1 << 64) - 1)}


def _values(decl: fields.Struct, rng: random.Random) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in decl.fields:
        if f.name is None:
            continue
        code = f.code.lstrip("0123456789")
        if code == "s":
            out[f.name] = rng.randbytes(f.size)
        elif f.count:
            out[f.name] = [rng.randint(*_RANGES[code]) for _ in range(f.count)]
        else:
            out[f.name] = rng.randint(*_RANGES[code])
    return out


@pytest.mark.parametrize("name", sorted(DECLS))
def test_packed_agrees_with_construct(name: str) -> None:
    decl, packed = DECLS[name]
    cons = fields.to_construct(decl)
    assert cons.sizeof() == packed.size == decl.sizeof()
    rng = random.Random(name)
    for _ in range(5):
        values = _values(decl, rng)
        raw = packed.pack(**values)
        assert cons.build(values) == raw
        parsed = cons.parse(raw)
        assert packed.unpack(raw) == {k: (list(v) if isinstance(v, list) else v)
                                      for k, v in parsed.items() if k in values}
    zero = {f.name: (b"\0" * f.size if f.code.endswith("s") else [0] * f.count if f.count else 0)
            for f in decl.fields if f.name is not None}
    for field, offset in packed.offsets.items():  # where construct puts each field
        blank = zero[field]
        if isinstance(blank, bytes):
            one: object = b"\1" + blank[1:]
        elif isinstance(blank, list):
            one = [1, *blank[1:]]
        else:
            one = 1
        raw = cons.build({**zero, field: one})
        assert raw.index(b"\1") == offset, field


def test_ffs_writer_does_not_import_construct() -> None:
    code = ("import sys, smolfs.fs.ffs, smolfs.image.build, smolfs.sets.sources, "
            "smolfs.image.mkfs; "
            "sys.exit('construct' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False)
    assert r.returncode == 0, "importing the FFS writer imports construct"
