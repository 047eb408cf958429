"""kstrip on NetBSD's own amd64 GENERIC (``$MKSMOLNB_NETBSD_DIR/netbsd-GENERIC``), judged
without kstrip's code: the ``cfdata`` table is found with ``nm``, mapped to the file with
``readelf``'s program headers and unpacked here (NetBSD <= 9 amd64 layout: 48-byte
entries, ``short cf_fstate`` at offset 18); every state byte of the output is checked
against what disabling the drivers outside the keep list must give, and no other byte may
differ. Then the stripped kernel boots the rescue service, and the unstripped one's panic
(a defect of this 2015 build, late in autoconfiguration) is reported at once.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.genuine import (
    BOOT_TIMEOUT,
    assert_stages_in_order,
    boot_detached,
    error_lines,
    first,
    netbsd_root,
    rescue_set,
)
from helpers.runner import Runner

pytestmark = [pytest.mark.netbsd]

#: What QEMU's VMs need (the README's default keep list), written out independently.
KEEP = {"mainbus", "cpu", "ioapic", "pci", "pchb", "pcib", "isa", "com", "virtio", "ld",
        "vioif", "pv", "viocon", "viornd"}
NOTFOUND, FOUND, STAR, DSTAR, DNOTFOUND = range(5)
ENTRY = struct.Struct("<QQhhxxxxQixxxxQ")  # name, atname, unit, fstate, loc, flags, pspec
STATE_OFFSET = 18


class Elf:
    """Virtual address → file offset through the program headers ``readelf`` prints."""

    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        out = subprocess.run(["readelf", "-l", "-W", str(path)], capture_output=True,
                             text=True, check=True).stdout
        self.loads = []
        for line in out.splitlines():
            f = line.split()
            if f and f[0] == "LOAD":
                off, vaddr, filesz = int(f[1], 16), int(f[2], 16), int(f[4], 16)
                self.loads.append((vaddr, off, filesz))

    def offset(self, vaddr: int) -> int:
        for start, off, size in self.loads:
            if start <= vaddr < start + size:
                return off + vaddr - start
        raise AssertionError(f"{vaddr:#x} is in no loaded segment")

    def string(self, vaddr: int) -> str:
        o = self.offset(vaddr)
        return self.data[o:self.data.index(b"\0", o)].decode()


def cfdata(kernel: Path) -> tuple[int, int, list[tuple[str, int]]]:
    """(file offset, size from nm, [(driver name, state)]) of the kernel's table."""
    if not shutil.which("nm") or not shutil.which("readelf"):
        pytest.skip("needs nm and readelf (Debian: binutils)")
    out = subprocess.run(["nm", "-S", str(kernel)], capture_output=True, text=True,
                         check=True).stdout
    addr, size = next((int(f[0], 16), int(f[1], 16)) for f in map(str.split, out.splitlines())
                      if len(f) == 4 and f[3] == "cfdata")
    elf = Elf(kernel)
    base = elf.offset(addr)
    entries = []
    for i in range(size // ENTRY.size):
        name, _at, _unit, state, _loc, _flags, _pspec = ENTRY.unpack_from(
            elf.data, base + i * ENTRY.size)
        if name == 0:
            break
        entries.append((elf.string(name), state))
    return base, size, entries


@pytest.fixture(scope="module")
def generic() -> Path:
    return first(netbsd_root(), "netbsd-GENERIC")


@pytest.fixture(scope="module")
def stripped(generic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kstrip")
    r = subprocess.run([sys.executable, "-m", "kstrip", str(generic), "-o",
                        str(out / "netbsd-vm"), "--json"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    (out / "report.json").write_text(r.stdout)
    return out / "netbsd-vm"


def test_kstrip_changes_exactly_the_state_bytes_it_must(generic: Path, stripped: Path) -> None:
    base, size, before = cfdata(generic)
    assert len(before) == 485 and size == 486 * ENTRY.size  # the README's count, + the end
    report = json.loads((stripped.parent / "report.json").read_text())
    assert report["layout"] == 9 and report["arch"] == "amd64"
    assert len(report["entries"]) == len(before)

    want = []
    for name, state in before:
        if name not in KEEP and state == NOTFOUND:
            want.append((name, DNOTFOUND))
        elif name not in KEEP and state == STAR:
            want.append((name, DSTAR))
        else:
            want.append((name, state))
    base_after, _, after = cfdata(stripped)
    assert base_after == base
    assert after == want
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == report["changed"] == 453
    assert sum(name in KEEP for name, _ in before) == report["kept"] == 32

    # no other byte of the kernel differs
    old, new = generic.read_bytes(), stripped.read_bytes()
    assert len(old) == len(new)
    diff = [i for i in range(base, base + size) if old[i] != new[i]]
    assert diff == [base + i * ENTRY.size + STATE_OFFSET for i in changed]
    assert old[:base] == new[:base] and old[base + size:] == new[base + size:]


@pytest.mark.qemu
@pytest.mark.slow
def test_stripped_generic_boots_rescue(runner: Runner, stripped: Path) -> None:
    kernel = Path(shutil.copy(stripped, runner.workdir / "netbsd-vm"))
    image = runner.workdir / "rescue.img"
    runner.run("smolfs", "build", "-s", "rescue", "-x", str(rescue_set(netbsd_root())),
               "-i", str(image), "--offline", check=True)
    report, console = boot_detached(runner, "generic", kernel, image, "--ro", "-N",
                                    "--ready", "console:^rescue: ready")
    assert "(GENERIC64)" in console and "rescue: ready" in console
    assert error_lines(console) == [], console
    assert_stages_in_order(report)
    runner.startnb("stop", "--force", "generic")
    assert not runner.qemu_left(wait=5)


@pytest.mark.qemu
@pytest.mark.slow
def test_unstripped_generic_panic_is_reported_at_once(runner: Runner, generic: Path) -> None:
    kernel = Path(shutil.copy(generic, runner.workdir / "netbsd-GENERIC"))
    image = runner.workdir / "rescue.img"
    runner.run("smolfs", "build", "-s", "rescue", "-x", str(rescue_set(netbsd_root())),
               "-i", str(image), "--offline", check=True)
    t0 = time.monotonic()
    r = runner.startnb("-k", str(kernel), "-i", str(image), "--ro", "-N", "--timeout",
                       BOOT_TIMEOUT, "--ready", "console:^rescue: ready")
    took = time.monotonic() - t0
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stderr
    assert any(line.startswith("startnb: error: the guest's kernel panicked (panic: kernel "
                               "diagnostic assertion") for line in lines), r.stderr
    assert any(line.startswith("  | fatal breakpoint trap") for line in lines), r.stderr
    assert not runner.qemu_left(wait=5)
    assert took < float(BOOT_TIMEOUT) / 3, f"{took:.1f} s: the panic waited for the timeout"
