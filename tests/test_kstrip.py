"""kstrip against fake NetBSD kernels compiled here with gcc (i386 and amd64, both layouts).

The fixture kernel (tests/kstrip_fixtures/kernel.c) carries a driver table in the NetBSD 9
or 10 layout, with what kstrip must do to each entry written beside it (``TABLE keep`` ...).
The judges are independent of kstrip: binutils' ``readelf`` gives the table's file offset,
a byte-level diff of input and output gives what changed, and gdb reads the patched
table back through the compiler's own idea of ``struct cfdata``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO
from smolfs.errors import KernelError, UsageError

FIXTURES = REPO / "tests" / "kstrip_fixtures"
SOURCE = FIXTURES / "kernel.c"
NOTFOUND, FOUND, STAR, DSTAR, DNOTFOUND = range(5)
STATES = {"NOTFOUND": 0, "FOUND": 1, "STAR": 2, "DSTAR": 3, "DNOTFOUND": 4}
BASES = {32: ("0xc0000000", "0x100000"), 64: ("0xffffffff80000000", "0x200000")}


@dataclass(frozen=True)
class Row:
    driver: str
    attachment: str
    unit: int
    state: int
    expect: str  # keep / disable / already / found


def table_rows() -> list[Row]:
    rows = []
    for m in re.finditer(r'E\("(\w+)", "(\w+)", (\d+), (\w+), \w+\),\s*/\* TABLE (\w+) \*/',
                         SOURCE.read_text()):
        rows.append(Row(m[1], m[2], int(m[3]), STATES[m[4]], m[5]))
    assert len(rows) >= 40
    return rows


ROWS = table_rows()


def _gcc_problem() -> str | None:
    if not shutil.which("gcc") or not shutil.which("readelf"):
        return "gcc or binutils (readelf) not installed"
    return None


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory):
    """``build(bits, layout, release="10.1", *defines) -> Path``, cached per arguments."""
    if reason := _gcc_problem():
        pytest.skip(reason)
    out_dir = tmp_path_factory.mktemp("kernels")
    cache: dict[tuple, Path] = {}

    def _build(bits: int, layout: int, release: str | None = None, *defines: str,
               debug: bool = False) -> Path:
        release = release or ("9.3" if layout == 9 else "10.1")
        key = (bits, layout, release, defines, debug)
        if key in cache:
            return cache[key]
        kernbase, textoff = BASES[bits]
        out = out_dir / f"netbsd-{bits}-{layout}-{release}-{'-'.join(defines)}{'-g' * debug}"
        argv = ["gcc", f"-m{bits}", "-O0", "-ffreestanding", "-fno-pic", "-fno-stack-protector",
                "-nostdlib", "-static", "-no-pie", f"-DLAYOUT={layout}",
                f'-DRELEASE="{release}"', *(f"-D{d}" for d in defines),
                f"-Wl,--defsym=KERNBASE={kernbase}", f"-Wl,--defsym=TEXTOFF={textoff}",
                f"-Wl,-T,{FIXTURES / 'kernel.ld'}", "-o", str(out), str(SOURCE)]
        if bits == 64:
            argv.insert(2, "-mcmodel=kernel")
        if debug:
            argv.insert(2, "-g")
        r = subprocess.run(argv, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            if bits == 32:
                last = (r.stderr.strip().splitlines() or ["?"])[-1]
                pytest.skip(f"gcc -m32 cannot build here (install gcc-multilib): {last}")
            raise AssertionError(r.stderr)
        cache[key] = out
        return out

    return _build


def readelf_table_offset(path: Path) -> int:
    """File offset of ``cfdata``, from readelf's symbol table and program headers."""
    syms = subprocess.run(["readelf", "-sW", str(path)], capture_output=True, text=True,
                          check=True).stdout
    value = int(re.search(r"^\s*\d+: ([0-9a-f]+)\s+\d+ OBJECT\s+GLOBAL\s+\w+\s+\d+ cfdata$",
                          syms, re.M)[1], 16)
    phdrs = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True,
                           check=True).stdout
    deltas = set()
    found = None
    for m in re.finditer(r"^\s*LOAD\s+0x([0-9a-f]+) 0x([0-9a-f]+) 0x[0-9a-f]+ "
                         r"0x([0-9a-f]+)", phdrs, re.M):
        off, vaddr, filesz = (int(g, 16) for g in m.groups())
        deltas.add(vaddr - off)
        if vaddr <= value < vaddr + filesz:
            found = value - vaddr + off
    assert len(deltas) >= 2, "fixture must map its segments with different deltas"
    assert found is not None
    return found


def expected_changes(path: Path, bits: int, layout: int, rows: list[Row] = ROWS
                     ) -> dict[int, int]:
    """{file offset: new byte} for every entry the default keep list disables."""
    base = readelf_table_offset(path)
    size = 24 if bits == 32 else 48
    state_at = (10 if bits == 32 else 18) + (layout == 10)
    return {base + i * size + state_at: {NOTFOUND: DNOTFOUND, STAR: DSTAR}[r.state]
            for i, r in enumerate(rows) if r.expect == "disable"}


def byte_diff(a: bytes, b: bytes) -> dict[int, int]:
    """{offset: byte in b} wherever *a* and *b* differ."""
    assert len(a) == len(b)
    diff = {}
    for start in range(0, len(a), 4096):
        if a[start:start + 4096] != b[start:start + 4096]:
            diff.update({i: b[i] for i in range(start, min(start + 4096, len(a)))
                         if a[i] != b[i]})
    return diff


def gdb_states(path: Path, count: int) -> list[int] | None:
    if not shutil.which("gdb"):
        return None
    code = (f'python print([int(gdb.parse_and_eval("cfdata")[i]["cf_fstate"]) '
            f"for i in range({count})])")
    r = subprocess.run(["gdb", "-nx", "-batch", "-ex", code, str(path)], capture_output=True,
                       text=True, check=True, timeout=60)
    return json.loads(r.stdout.strip().splitlines()[-1])


def kstrip_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kstrip", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


# --- what changes, byte for byte -------------------------------------------------------------

@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("layout", [9, 10])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gz"])
def test_exactly_the_state_bytes_change(build, tmp_path: Path, bits: int, layout: int,
                                        compressed: bool) -> None:
    import kstrip

    built = build(bits, layout)
    original = built.read_bytes()
    kernel = tmp_path / "netbsd-GENERIC"
    if compressed:
        kernel = kernel.with_name("netbsd-GENERIC.gz")
        kernel.write_bytes(gzip.compress(original))
    else:
        kernel.write_bytes(original)
    kernel.chmod(0o755)
    before = kernel.read_bytes()

    result = kstrip.strip(kernel)

    assert kernel.read_bytes() == before, "the input must never change"
    assert result.output == tmp_path / "netbsd-GENERIC.stripped" and result.written
    out = result.output.read_bytes()
    assert byte_diff(original, out) == expected_changes(built, bits, layout)
    assert stat.S_IMODE(result.output.stat().st_mode) == 0o755 & ~_umask()
    assert result.bits == bits and int(result.layout) == layout
    assert result.arch == {32: "i386", 64: "amd64"}[bits]
    assert result.version == ("9.3" if layout == 9 else "10.1")
    assert result.compressed is compressed
    assert result.changed == sum(r.expect == "disable" for r in ROWS)
    assert [(e.driver, e.attachment, e.unit, int(e.state)) for e in result.entries] == \
        [(r.driver, r.attachment, r.unit, r.state) for r in ROWS]
    assert [e.action.value for e in result.entries] == [
        {"keep": "keep", "disable": "disable", "already": "already_disabled",
         "found": "leave_found"}[r.expect] for r in ROWS]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(("bits", "layout"), [(64, 10), (32, 9)])
def test_gdb_reads_the_disabled_states(build, tmp_path: Path, bits: int, layout: int) -> None:
    """gdb, reading the table through the compiler's struct, sees the NetBSD states."""
    import kstrip

    kernel = build(bits, layout, None, debug=True)
    out = tmp_path / "k"
    kstrip.strip(kernel, out=out)
    states = gdb_states(out, len(ROWS))
    if states is None:
        pytest.skip("gdb not installed")
    want = []
    for r in ROWS:
        if r.expect == "disable":
            want.append({NOTFOUND: DNOTFOUND, STAR: DSTAR}[r.state])
        else:
            want.append(r.state)
    assert states == want


def test_idempotent(build, tmp_path: Path) -> None:
    import kstrip

    first = kstrip.strip(build(64, 10), out=tmp_path / "once")
    assert first.changed > 0
    second = kstrip.strip(first.output, out=tmp_path / "twice")
    assert second.changed == 0
    assert second.output.read_bytes() == first.output.read_bytes()
    r = kstrip_cli(first.output, "-o", tmp_path / "thrice")
    assert r.returncode == 0, r.stderr
    assert "0 entries changed" in r.stdout and r.stderr == ""
    assert (tmp_path / "thrice").read_bytes() == first.output.read_bytes()


def test_keep_replaces_and_disable_removes(build, tmp_path: Path) -> None:
    import kstrip

    kernel = build(64, 9)
    res = kstrip.strip(kernel, out=tmp_path / "a", keep=["mainbus", "cpu", "wd", "ld"],
                       disable=["ld"])
    acts = {(e.driver, e.attachment): e.action.value for e in res.entries}
    assert acts[("wd", "wd")] == "keep" and acts[("cpu", "cpu")] == "keep"
    assert acts[("ld", "ld_virtio")] == "disable" and acts[("ld", "ld_aac")] == "disable"
    assert acts[("pci", "pci")] == "disable" and acts[("com", "com_isa")] == "disable"
    assert res.keep == ("mainbus", "cpu", "wd")
    assert res.warnings == ()


def test_dry_run_writes_nothing(build, tmp_path: Path) -> None:
    import kstrip

    kernel = tmp_path / "netbsd"
    shutil.copy(build(32, 10), kernel)
    res = kstrip.strip(kernel, dry_run=True)
    assert not res.written and res.changed > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netbsd"]
    r = kstrip_cli("--dry-run", kernel)
    assert r.returncode == 0, r.stderr
    assert f"{res.changed} entries would change" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netbsd"]


def test_version_from_banner_text_without_symbols(build, tmp_path: Path) -> None:
    import kstrip

    kernel = build(64, 10, "10.0", "NO_VERSION_SYMBOLS")
    res = kstrip.strip(kernel, out=tmp_path / "o")
    assert res.version == "10.0" and res.release and res.release.banner.startswith(
        "NetBSD 10.0 (GENERIC) #0")
    assert byte_diff(kernel.read_bytes(), res.output.read_bytes()) == \
        expected_changes(kernel, 64, 10)


def test_no_version_layout_from_states(build, tmp_path: Path) -> None:
    import kstrip

    for layout in (9, 10):
        kernel = build(32, layout, None, "NO_VERSION")
        res = kstrip.strip(kernel, out=tmp_path / f"o{layout}")
        assert res.version is None and int(res.layout) == layout
        assert byte_diff(kernel.read_bytes(), res.output.read_bytes()) == \
            expected_changes(kernel, 32, layout)


def test_netbsd_current_9_99_decided_by_states(build, tmp_path: Path) -> None:
    import kstrip

    for layout in (9, 10):
        res = kstrip.strip(build(64, layout, "9.99.80"), dry_run=True)
        assert int(res.layout) == layout and res.version == "9.99.80"


def test_layout_override(build, tmp_path: Path) -> None:
    """--layout settles a table that reads the same in both layouts."""
    import kstrip

    kernel = build(64, 10, "9.99.80", "ALL_NOTFOUND")
    with pytest.raises(KernelError, match="unknown driver table layout"):
        kstrip.strip(kernel, out=tmp_path / "o")
    res = kstrip.strip(kernel, out=tmp_path / "o", layout=10)
    rows = [Row(r.driver, r.attachment, r.unit, NOTFOUND,
                "keep" if r.expect == "keep" else "disable") for r in ROWS]
    assert byte_diff(kernel.read_bytes(), res.output.read_bytes()) == {
        off: DNOTFOUND for off in expected_changes(kernel, 64, 10, rows)}
    with pytest.raises(UsageError, match="layout 8"):
        kstrip.strip(kernel, layout=8)


# --- listing ------------------------------------------------------------------------------

def test_list_and_json(build, tmp_path: Path) -> None:
    kernel = tmp_path / "netbsd-GENERIC.gz"
    kernel.write_bytes(gzip.compress(build(64, 10).read_bytes()))
    r = kstrip_cli("--list", kernel)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{kernel}: NetBSD 10.1, amd64 (64-bit, gzip), NetBSD >= 10 table layout"
    assert lines[1].split() == ["index", "driver", "attachment", "unit", "state", "action"]
    body = [ln.split() for ln in lines[2:-1]]
    assert len(body) == len(ROWS)
    assert body[0] == ["0", "mainbus", "mainbus", "0", "NOTFOUND", "keep"]
    assert body[3] == ["3", "acpi", "acpi", "0", "NOTFOUND", "disable", "->", "DNOTFOUND"]
    assert body[15] == ["15", "ahcisata", "ahcisata_pci", "0*", "STAR", "disable", "->", "DSTAR"]
    assert body[35] == ["35", "fdc", "fdc_isa", "0", "DNOTFOUND", "already", "disabled"]
    assert body[38] == ["38", "pcppi", "pcppi", "0", "FOUND", "left", "(found)"]
    assert "would change" in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netbsd-GENERIC.gz"]

    r = kstrip_cli("--list", "--json", kernel)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["written"] is False and doc["version"] == "10.1" and doc["layout"] == 10
    assert doc["bits"] == 64 and doc["arch"] == "amd64" and doc["compressed"] is True
    assert doc["changed"] == sum(row.expect == "disable" for row in ROWS)
    assert [e["driver"] for e in doc["entries"]] == [row.driver for row in ROWS]
    e = doc["entries"][15]
    assert (e["state"], e["action"], e["new_state"]) == ("STAR", "disable", "DSTAR")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netbsd-GENERIC.gz"]


def test_cli_writes_and_reports(build, tmp_path: Path) -> None:
    kernel = tmp_path / "netbsd.gz"
    kernel.write_bytes(gzip.compress(build(32, 9).read_bytes()))
    keep_file = tmp_path / "keep"
    keep_file.write_text("# VM drivers\nmainbus cpu\npci, pchb\n")
    r = kstrip_cli(kernel, "--keep-file", keep_file, "--add", "virtio,ld", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["keep"] == ["mainbus", "cpu", "pci", "pchb", "virtio", "ld"]
    assert doc["written"] is True and doc["output"] == str(tmp_path / "netbsd.stripped")
    assert (tmp_path / "netbsd.stripped").read_bytes()[:4] == b"\x7fELF"
    kept = {e["driver"] for e in doc["entries"] if e["action"] == "keep"}
    assert kept == {"mainbus", "cpu", "pci", "pchb", "virtio", "ld"}


# --- errors -----------------------------------------------------------------------------

def one_line_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("kstrip: error: ")
    return r.stderr


def test_not_an_elf(tmp_path: Path) -> None:
    bad = tmp_path / "netbsd"
    bad.write_text("#!/bin/sh\necho not a kernel\n")
    assert "netbsd: not an ELF file" in one_line_error(kstrip_cli(bad))
    gz = tmp_path / "netbsd.gz"
    gz.write_bytes(gzip.compress(b"hello"))
    assert "not an ELF file" in one_line_error(kstrip_cli(gz))
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(bytes(range(256)) * 64)[:200])
    assert "corrupt gzip data" in one_line_error(kstrip_cli(broken))
    assert "no such file" in one_line_error(kstrip_cli(tmp_path / "missing"))
    assert not any(p.name.endswith(".stripped") for p in tmp_path.iterdir())


def test_truncated_elf(build, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    cut.write_bytes(build(64, 10).read_bytes()[:3000])
    err = one_line_error(kstrip_cli(cut))
    assert "cut:" in err and ("truncated" in err or "damaged" in err)


@pytest.mark.parametrize("bits", [32, 64])
def test_damaged_kernels_give_kernel_errors(build, tmp_path: Path, bits: int) -> None:
    """Truncated or corrupted kernels end in a KernelError, never in a traceback."""
    import random

    import kstrip

    src = build(bits, 10 if bits == 64 else 9).read_bytes()
    rnd = random.Random(bits)
    kernel = tmp_path / "k"
    outcomes = set()
    for i in range(150):
        data = bytearray(src[:rnd.randrange(len(src))] if i < 30 else src)
        for _ in range(0 if i < 30 else rnd.randrange(1, 6)):
            region = i % 3  # ELF header, section headers (at the end), anywhere
            pos = (rnd.randrange(64), len(data) - 1 - rnd.randrange(1500),
                   rnd.randrange(len(data)))[region]
            data[pos] = rnd.randrange(256)
        kernel.write_bytes(data)
        try:
            kstrip.strip(kernel, dry_run=True)
            outcomes.add("ok")
        except KernelError as err:
            outcomes.add("error")
            assert "\n" not in err.message
    assert outcomes == {"ok", "error"}


@pytest.mark.parametrize("tool", ["strip", "objcopy"])
def test_stripped_kernel(build, tmp_path: Path, tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed")
    stripped = tmp_path / "netbsd"
    argv = [tool, "--strip-all", str(build(64, 10)), str(stripped)]
    if tool == "strip":
        argv[-1:] = ["-o", str(stripped)]
    subprocess.run(argv, check=True)
    err = one_line_error(kstrip_cli(stripped))
    assert "no symbol table" in err and "stripped" in err
    assert "kstrip: hint:" in err


def test_no_cfdata(build) -> None:
    err = one_line_error(kstrip_cli(build(32, 10, None, "NO_CFDATA")))
    assert "no 'cfdata' symbol" in err


@pytest.mark.parametrize(("layout", "release"), [(9, "10.1"), (10, "9.3")])
def test_version_and_states_disagree(build, tmp_path: Path, layout: int, release: str) -> None:
    kernel = build(64, layout, release)
    err = one_line_error(kstrip_cli(kernel, "-o", tmp_path / "o"))
    assert f"the kernel says NetBSD {release}" in err
    assert f"fit only the NetBSD {'<=' if layout == 9 else '>='}" in err
    assert f"--layout {layout}" in err
    assert not (tmp_path / "o").exists()
    # The override is honoured when the table reads that way.
    r = kstrip_cli(kernel, "-o", tmp_path / "o", "--layout", str(layout))
    assert r.returncode == 0, r.stderr
    assert byte_diff(kernel.read_bytes(), (tmp_path / "o").read_bytes()) == \
        expected_changes(kernel, 64, layout)


def test_states_fit_no_layout(build, tmp_path: Path) -> None:
    err = one_line_error(kstrip_cli(build(64, 10, None, "BAD_STATE"), "-o", tmp_path / "o"))
    assert "fit neither layout" in err
    err = one_line_error(kstrip_cli(build(32, 9, None, "BAD_STATE", "NO_VERSION"), "--list"))
    assert "unknown driver table layout" in err and "fit neither layout" in err
    assert not (tmp_path / "o").exists()


def test_unknown_keep_driver_warns(build, tmp_path: Path) -> None:
    kernel = build(64, 10)
    r = kstrip_cli(kernel, "-o", tmp_path / "o", "--keep", "mainbus,cpu,vioiff,ld_virtio",
                   "--disable", "nosuch")
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("kstrip: warning:")]
    assert len(warnings) == 3, r.stderr
    assert "'vioiff'" in warnings[0] and "near: vioif" in warnings[0]
    assert "'ld_virtio' is an attachment of driver 'ld'" in warnings[1]
    assert "'nosuch'" in warnings[2]
    assert (tmp_path / "o").exists()


def test_kept_but_already_disabled_warns_once(build, tmp_path: Path) -> None:
    import kstrip

    narrow = kstrip.strip(build(64, 10), out=tmp_path / "narrow", keep=["mainbus"])
    wide = kstrip.strip(narrow.output, out=tmp_path / "wide", keep=["mainbus", "pci", "fd"])
    assert wide.changed == 0
    assert wide.warnings == ("kept but already disabled in this kernel: fd, pci (kstrip never "
                             "re-enables a driver; strip the original kernel)",)


def test_default_keep_names_missing_do_not_warn(build, tmp_path: Path) -> None:
    import kstrip

    res = kstrip.strip(build(64, 10), dry_run=True)  # the fixture has no pv, viocon
    assert res.warnings == ()


def test_bad_arguments(build, tmp_path: Path) -> None:
    import kstrip

    kernel = build(64, 10)
    with pytest.raises(UsageError, match="keep list is empty"):
        kstrip.strip(kernel, keep=[])
    with pytest.raises(UsageError, match="not a driver name"):
        kstrip.strip(kernel, keep=["mainbus", "../x"])
    one_line_error(kstrip_cli(kernel, "--keep", "a", "--keep-file", "f"), code=2)
    one_line_error(kstrip_cli(kernel, "--layout", "8"), code=2)
    local = tmp_path / "netbsd"
    shutil.copy(kernel, local)
    err = one_line_error(kstrip_cli(local, "-o", local), code=2)
    assert "overwrite the input" in err
    err = one_line_error(kstrip_cli(local, "-o", local / "sub"))
    assert "cannot write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netbsd"]


def test_default_output_name() -> None:
    from kstrip import default_output

    assert default_output("/k/netbsd-GENERIC.gz") == Path("/k/netbsd-GENERIC.stripped")
    assert default_output("netbsd") == Path("netbsd.stripped")
    assert default_output("a/netbsd.stripped") == Path("a/netbsd.stripped.stripped")


# --- a genuine kernel ---------------------------------------------------------------------

@pytest.mark.netbsd
def test_genuine_generic_kernel(netbsd_dir: Path, tmp_path: Path) -> None:
    """``$MKSMOLNB_NETBSD_DIR/netbsd-GENERIC.gz`` (or ``netbsd-GENERIC``): list and strip."""
    import kstrip

    kernel = next((netbsd_dir / n for n in ("netbsd-GENERIC.gz", "netbsd-GENERIC")
                   if (netbsd_dir / n).exists()), None)
    if kernel is None:
        pytest.skip(f"netbsd: no netbsd-GENERIC.gz or netbsd-GENERIC in {netbsd_dir}")
    listed = kstrip.list_entries(kernel)
    assert len(listed.entries) > 100 and listed.version
    drivers = {e.driver for e in listed.entries}
    assert {"mainbus", "cpu", "pci", "com", "virtio", "ld", "vioif"} <= drivers
    res = kstrip.strip(kernel, out=tmp_path / "netbsd")
    assert res.changed == listed.changed > len(res.entries) // 2
    data = gzip.decompress(kernel.read_bytes()) if res.compressed else kernel.read_bytes()
    diff = byte_diff(data, res.output.read_bytes())
    assert set(diff) == {e.offset for e in res.entries if e.new_state is not None}
    again = kstrip.strip(res.output, out=tmp_path / "again")
    assert again.changed == 0
