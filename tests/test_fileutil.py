"""The one write-then-rename (smolfs.fileutil): a destination is the old file or the
whole new one, never half of it; and the writer costs the launcher no import."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from smolfs.fileutil import atomic_output, write_atomic


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_new_file_replaces_the_old_whole(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    with atomic_output(dest, mode=0o755) as f:
        f.write(b"new and ")
        f.seek(0)
        assert f.read() == b"new and "  # open for reading too (kstrip patches in place)
        assert dest.read_bytes() == b"old"
        f.write(b"longer")
    assert dest.read_bytes() == b"new and longer"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_output(dest) as f:
        f.write(b"half")
        raise KeyboardInterrupt
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_rename_leaves_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "a-directory"
    (dest / "full").mkdir(parents=True)
    with pytest.raises(OSError), atomic_output(dest) as f:
        f.write(b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]


def test_write_atomic_makes_the_directory_when_asked(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "sub" / "entry"
    with pytest.raises(FileNotFoundError):
        write_atomic(dest, b"x")
    write_atomic(dest, b"x", makedirs=True)
    assert dest.read_bytes() == b"x"
    assert os.listdir(dest.parent) == ["entry"]


def test_writers_before_qemu_import_nothing_heavy() -> None:
    """The launcher's stripped-kernel cache and the image staleness record write through
    fileutil before QEMU starts: it must load no module beyond ``os``."""
    code = ("import sys\nbase = set(sys.modules)\n"
            "import smolfs.fileutil, launcher.stripcache, smolfs.image.staleness\n"
            "print(sorted(set(sys.modules) - base))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == str(["__future__", "launcher", "launcher.stripcache", "smolfs",
                               "smolfs.cachedir", "smolfs.fileutil", "smolfs.image",
                               "smolfs.image.staleness"])
