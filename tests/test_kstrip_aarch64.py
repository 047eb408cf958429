"""kstrip on AArch64 kernels: the fake kernel of tests/kstrip_fixtures as an AArch64 ELF64
(its data compiled to assembly by the host gcc, which is the same under LP64, and assembled
and linked by Debian's aarch64 cross binutils at NetBSD/evbarm's kernel base), and its
arm64 Image (``objcopy -O binary`` with an Image header first, as ``netbsd-GENERIC64.img``)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from test_kstrip import FIXTURES, SOURCE, byte_diff, expected_changes

import kstrip
from conftest import REPO
from kstrip.defaults import DEFAULT_KEEP, VIRT_KEEP
from smolfs.errors import KernelError, UsageError

KERNBASE = "0xffffffc000000000"  # NetBSD/aarch64's kernel virtual base
TOOLS = ("aarch64-linux-gnu-as", "aarch64-linux-gnu-ld", "aarch64-linux-gnu-objcopy")
#: _start: an arm64 Image header (magic "ARM\x64" at byte 56), then a branch to itself.
START = """
	.text
	.globl	_start
	.type	_start, %function
_start:
	b	1f
	.long	0
	.quad	0, 0x10000, 2, 0, 0, 0
	.ascii	"ARM\\x64"
	.long	0
1:	b	1b
"""


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], tuple[Path, Path]]:
    """``build(layout) -> (elf, image)``."""
    missing = [t for t in ("gcc", *TOOLS) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (binutils-aarch64-linux-gnu)")
    out = tmp_path_factory.mktemp("aarch64-kernels")

    def _build(layout: int) -> tuple[Path, Path]:
        elf, image = out / f"netbsd-GENERIC64-{layout}", out / f"netbsd-GENERIC64-{layout}.img"
        if elf.exists():
            return elf, image
        release = "9.3" if layout == 9 else "10.1"
        asm = subprocess.run(
            ["gcc", "-m64", "-O0", "-ffreestanding", "-fno-pic", "-fno-stack-protector",
             "-fno-asynchronous-unwind-tables", "-fno-ident", "-S", "-o", "-", "-DNO_START",
             f"-DLAYOUT={layout}", f'-DRELEASE="{release}"', str(SOURCE)],
            capture_output=True, text=True, check=True).stdout
        # Directives whose meaning differs between the two assemblers.
        asm = re.sub(r"^(\s*)\.align\s", r"\1.balign ", asm, flags=re.M)
        asm = re.sub(r"^(\s*)\.value\s", r"\1.short ", asm, flags=re.M)
        asm = asm.replace("@object", "%object").replace("@progbits", "%progbits")
        src = out / f"k{layout}.s"
        src.write_text(asm + START)
        obj = src.with_suffix(".o")
        subprocess.run([TOOLS[0], "-o", str(obj), str(src)], check=True)
        subprocess.run([TOOLS[1], "-nostdlib", "-static", "--build-id=none",
                        f"--defsym=KERNBASE={KERNBASE}", "--defsym=TEXTOFF=0",
                        "-T", str(FIXTURES / "kernel.ld"), "-o", str(elf), str(obj)], check=True)
        subprocess.run([TOOLS[2], "-O", "binary", str(elf), str(image)], check=True)
        return elf, image

    return _build


def image_offsets(elf_path: Path, offsets: dict[int, int]) -> dict[int, int]:
    """ELF file offsets → offsets in the raw image (load address - lowest load address)."""
    with elf_path.open("rb") as f:
        loads = [s.header for s in ELFFile(f).iter_segments()
                 if s["p_type"] == "PT_LOAD" and s["p_filesz"]]
    base = min(h.p_paddr for h in loads)
    out = {}
    for off, value in offsets.items():
        h = next(h for h in loads if h.p_offset <= off < h.p_offset + h.p_filesz)
        out[h.p_paddr + off - h.p_offset - base] = value
    return out


@pytest.mark.parametrize("layout", [9, 10])
def test_aarch64_elf(build: Callable[[int], tuple[Path, Path]], tmp_path: Path,
                     layout: int) -> None:
    elf, _ = build(layout)
    with elf.open("rb") as f:
        assert ELFFile(f)["e_machine"] == "EM_AARCH64"
    kernel = tmp_path / "netbsd-GENERIC64.gz"
    kernel.write_bytes(gzip.compress(elf.read_bytes()))
    result = kstrip.strip(kernel, keep=DEFAULT_KEEP)  # the fixture's table is x86-shaped
    assert result.arch == "aarch64" and result.bits == 64 and int(result.layout) == layout
    assert byte_diff(elf.read_bytes(), result.output.read_bytes()) == \
        expected_changes(elf, 64, layout)


@pytest.mark.parametrize("layout", [9, 10])
def test_arm64_image_patched_through_its_elf(build: Callable[[int], tuple[Path, Path]],
                                             tmp_path: Path, layout: int) -> None:
    elf, image = build(layout)
    original = image.read_bytes()
    assert original[56:60] == b"ARM\x64"
    kernel = tmp_path / "netbsd-GENERIC64.img.gz"
    kernel.write_bytes(gzip.compress(original))
    result = kstrip.strip(kernel, keep=DEFAULT_KEEP, symbols=elf)
    assert result.output == tmp_path / "netbsd-GENERIC64.img.stripped"
    assert result.symbols == elf and result.arch == "aarch64"
    want = image_offsets(elf, expected_changes(elf, 64, layout))
    out = result.output.read_bytes()
    assert len(out) == len(original) and byte_diff(original, out) == want
    # the same states the ELF gets, at the image's places
    elf_out = kstrip.strip(elf, out=tmp_path / "elf.stripped", keep=DEFAULT_KEEP)
    assert [e.new_state for e in elf_out.entries] == [e.new_state for e in result.entries]


def test_image_needs_its_own_elf(build: Callable[[int], tuple[Path, Path]],
                                 tmp_path: Path) -> None:
    elf10, image10 = build(10)
    elf9, _ = build(9)
    with pytest.raises(KernelError, match="an arm64 Image, which has no symbol table") as e:
        kstrip.strip(image10, out=tmp_path / "x")
    assert e.value.hint and "--symbols" in e.value.hint
    with pytest.raises(KernelError, match="differ from the ELF's: not the image of that kernel"):
        kstrip.strip(image10, out=tmp_path / "x", symbols=elf9)
    with pytest.raises(UsageError, match="--symbols is for an arm64 Image"):
        kstrip.strip(elf10, out=tmp_path / "x", symbols=elf10)
    assert not (tmp_path / "x").exists()


def test_default_keep_list_for_virt(build: Callable[[int], tuple[Path, Path]]) -> None:
    """An AArch64 kernel gets the -M virt list by default (the x86 names it lacks are gone;
    its shared names, virtio ld vioif viornd cpu, are kept)."""
    elf, _ = build(10)
    result = kstrip.list_entries(elf)
    assert result.keep == VIRT_KEEP
    kept = {e.driver for e in result.entries if e.action.value == "keep"}
    assert kept == {"cpu", "virtio", "ld", "vioif", "viornd"}
    assert not result.warnings  # names of the default list a kernel lacks are not warned of


def test_cli_image_and_help(build: Callable[[int], tuple[Path, Path]], tmp_path: Path) -> None:
    elf, image = build(10)
    r = subprocess.run([sys.executable, "-m", "kstrip", "--json", "--add", "com,pci",
                        "--symbols", str(elf), "-o", str(tmp_path / "out.img"), str(image)],
                       cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["arch"] == "aarch64" and data["symbols"] == str(elf)
    assert data["keep"] == [*VIRT_KEEP, "com", "pci"]
    assert (tmp_path / "out.img").read_bytes()[56:60] == b"ARM\x64"
    h = subprocess.run([sys.executable, "-m", "kstrip", "--help"], cwd=REPO,
                       capture_output=True, text=True, check=True).stdout
    words = " ".join(h.split())
    assert "patched in the image at the same virtual addresses" in words
    assert "default keep list for aarch64 kernels (QEMU -M virt): " + " ".join(VIRT_KEEP) \
        in words
