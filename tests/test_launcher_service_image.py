"""``--strip`` (kstrip) and ``startnb SERVICE`` (smolfs.image.build), from the launcher.

``--strip`` goes through a stand-in honouring kstrip's agreed signature (the launcher's
side of the contract: call shape, caching by digest, errors). ``startnb SERVICE`` runs
the real ``smolfs.image.build`` against a real HTTP mirror on 127.0.0.1 publishing synthetic
sets and the smoltest kernels as ``netbsd-SMOLTEST.gz`` of several releases and
architectures, then boots the result under QEMU: the guest tells which kernel came.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import setsynth
from helpers.fakemirror import FakeMirror, release_tree, write_sha512
from kernels import TestKernels, parse_console

from launcher.kernel import inspect_kernel, strip_kernel
from services import shipped_dir
from smolfs.errors import LaunchError

DEBUG_EXIT = ["--qemu-arg=-device", "--qemu-arg=isa-debug-exit,iobase=0xf4,iosize=4"]


def test_strip_is_cached_by_digest(tmp_path: Path, test_kernels: TestKernels,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, Path]] = []

    def strip(kernel: Path, out: Path | None = None, **kw: object) -> object:
        assert out is not None
        calls.append((Path(kernel), out))
        out.write_bytes(Path(kernel).read_bytes())
        return types.SimpleNamespace(out=out)

    monkeypatch.setitem(sys.modules, "kstrip", types.SimpleNamespace(strip=strip))
    info = inspect_kernel(test_kernels.pvh_gz, cache=tmp_path)
    out = strip_kernel(info, cache=tmp_path)
    assert calls == [(info.path, calls[0][1])] and out.suffix == ".stripped"
    assert out.parent == tmp_path / "stripped" and len(out.stem) == 64
    assert out.read_bytes() == test_kernels.pvh.read_bytes()
    assert strip_kernel(info, cache=tmp_path) == out and len(calls) == 1  # reused


def test_strip_cache_found_by_stat_and_made_again_when_changed(
        tmp_path: Path, test_kernels: TestKernels, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found again without hashing while the kernel's stat holds; a stripped kernel
    changed or gone, or another kernel at the same path, is stripped again."""
    import launcher.kernel as kernel_module

    calls: list[Path] = []

    def strip(kernel: Path, out: Path | None = None, **kw: object) -> object:
        assert out is not None
        calls.append(Path(kernel))
        out.write_bytes(b"stripped " + Path(kernel).read_bytes()[:16])
        return types.SimpleNamespace(out=out)

    monkeypatch.setitem(sys.modules, "kstrip", types.SimpleNamespace(strip=strip))
    kernel = tmp_path / "netbsd"
    shutil.copy(test_kernels.pvh, kernel)
    info = inspect_kernel(kernel, cache=tmp_path)
    out = strip_kernel(info, cache=tmp_path)
    hashed: list[Path] = []
    real_sha = kernel_module.sha256_of
    monkeypatch.setattr(kernel_module, "sha256_of", lambda p: hashed.append(p) or real_sha(p))
    assert strip_kernel(info, cache=tmp_path) == out and len(calls) == 1 and not hashed
    out.write_bytes(b"damaged")  # the cache entry changed: stripped again
    assert strip_kernel(info, cache=tmp_path) == out and len(calls) == 2
    assert out.read_bytes().startswith(b"stripped ")
    out.unlink()  # gone
    assert strip_kernel(info, cache=tmp_path) == out and len(calls) == 3
    os.utime(kernel, ns=(1, 1))  # touched, same content: hashed again, not stripped
    assert strip_kernel(info, cache=tmp_path) == out and len(calls) == 3 and hashed
    shutil.copy(test_kernels.pvh64, kernel)  # another kernel at the same path
    other = strip_kernel(inspect_kernel(kernel, cache=tmp_path), cache=tmp_path)
    assert other != out and len(calls) == 4


def test_strip_missing_function(tmp_path: Path, test_kernels: TestKernels,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kstrip", types.SimpleNamespace())
    info = inspect_kernel(test_kernels.pvh, cache=tmp_path)
    with pytest.raises(LaunchError, match=r"no strip\(\) function"):
        strip_kernel(info, cache=tmp_path)


# -- startnb SERVICE: the real build, a real mirror, a real boot ------------------------------

#: (release, arch) → the smoltest kernel published there as netbsd-SMOLTEST.gz
PUBLISHED = {("10.1", "amd64"): "pvh", ("9.3", "amd64"): "pvh64", ("10.1", "i386"): "multiboot"}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, test_kernels: TestKernels
           ) -> Iterator[FakeMirror]:
    root = tmp_path_factory.mktemp("mirror")
    for (release, arch), kernel in PUBLISHED.items():
        top = root / release_tree(release, arch)
        sets = top / "binary" / "sets"
        sets.mkdir(parents=True)
        new_amd64 = arch == "amd64" and release.startswith("10")
        setsynth.make_set(sets / ("rescue.tar.xz" if new_amd64 else "rescue.tgz"), "rescue",
                          "xz" if new_amd64 else "gz")
        write_sha512(sets)
        kdir = top / "binary" / "kernel"
        kdir.mkdir(parents=True)
        body = getattr(test_kernels, kernel).read_bytes()
        (kdir / "netbsd-SMOLTEST.gz").write_bytes(gzip.compress(body, mtime=0))
        write_sha512(kdir)
    with FakeMirror(root) as m:
        yield m


@pytest.fixture
def services(tmp_path: Path) -> Path:
    """A private copy of the shipped services, free to edit."""
    d = tmp_path / "services"
    shutil.copytree(shipped_dir(), d, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    conf = d / "rescue" / "service.conf"  # what the test kernel prints once "ready"
    conf.write_text(conf.read_text().replace("READY=^rescue: ready", "READY=^SERVICE READY$"))
    return d


def startnb(cwd: Path, mirror: FakeMirror, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MKSMOLNB_MIRROR=mirror.url, MKSMOLNB_CACHE=str(cwd / "cache"),
               MKSMOLNB_STATE=str(cwd / "state"))
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def boot_service(cwd: Path, mirror: FakeMirror, services: Path, *args: str
                 ) -> tuple[subprocess.CompletedProcess[str], dict[str, object], str]:
    console = cwd / "console.txt"
    r = startnb(cwd, mirror, "rescue", "--services-dir", str(services), "-k", "SMOLTEST",
                "-N", "--json", "--console", f"file:{console}", "--timeout", "30",
                "-a", "smoltest.exit=1", *DEBUG_EXIT, *args)
    assert r.returncode == 3, r.stderr  # the guest exited through isa-debug-exit
    return r, json.loads(r.stdout.splitlines()[0]), console.read_text()


@pytest.mark.qemu
@pytest.mark.slow
def test_service_build_is_reused_until_its_inputs_change(tmp_path: Path, mirror: FakeMirror,
                                                         services: Path) -> None:
    r, result, console = boot_service(tmp_path, mirror, services)
    image = tmp_path / "rescue-amd64.img"
    assert image.is_file() and "up to date" not in r.stderr
    assert parse_console(console).boot == "pvh"  # the 10.1 amd64 kernel
    argv = result["argv"]
    assert isinstance(argv, list)
    # rescue's root is read-only (RO=yes): so is the disk, which the guest cannot change
    assert argv[argv.index("-drive") + 1].endswith("file=rescue-amd64.img,readonly=on")
    manifest = json.loads((tmp_path / "rescue-amd64.img.json").read_text())
    assert "/10.1/amd64/" in manifest["kernel"] and manifest["kernel"].endswith("SMOLTEST.gz")
    built = image.stat()

    r, _, _ = boot_service(tmp_path, mirror, services)  # same inputs: reused as it is
    assert "up to date" in r.stderr
    again = image.stat()
    assert (again.st_ino, again.st_mtime_ns) == (built.st_ino, built.st_mtime_ns)

    rc = services / "rescue" / "etc" / "rc"
    rc.write_text(rc.read_text() + "# edited: rebuild me\n")
    r, _, _ = boot_service(tmp_path, mirror, services)  # a service file changed: rebuilt
    assert "up to date" not in r.stderr
    assert image.stat().st_mtime_ns != built.st_mtime_ns
    assert b"# edited: rebuild me" in image.read_bytes()


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize(("args", "img", "boot", "elf"), [
    (["--release", "9.3"], "rescue-amd64.img", "pvh", "ELF64"),
    (["--arch", "i386", "--release", "10.1"], "rescue-i386.img", "multiboot", "ELF32"),
], ids=["release", "arch"])
def test_service_fetches_the_kernel_of_its_arch_and_release(
        tmp_path: Path, mirror: FakeMirror, services: Path, args: list[str], img: str,
        boot: str, elf: str) -> None:
    _, result, console = boot_service(tmp_path, mirror, services, *args)
    assert parse_console(console).boot == boot
    assert elf in str(result["kernel"])
    assert (tmp_path / img).is_file()


@pytest.mark.qemu
@pytest.mark.slow
def test_service_with_a_kernel_file_fetches_no_kernel(tmp_path: Path, mirror: FakeMirror,
                                                      services: Path,
                                                      test_kernels: TestKernels) -> None:
    seen = len(mirror.seen)
    _, result, console = boot_service(tmp_path, mirror, services, "-k",
                                      str(test_kernels.multiboot))
    assert parse_console(console).boot == "multiboot"
    argv = result["argv"]
    assert isinstance(argv, list) and argv[argv.index("-kernel") + 1] == \
        str(test_kernels.multiboot)
    assert "kernel" not in json.loads((tmp_path / "rescue-amd64.img.json").read_text())
    assert not any("kernel/" in s.path for s in mirror.seen[seen:])


@pytest.mark.qemu
@pytest.mark.slow
def test_service_with_kernel_and_image_options(tmp_path: Path, mirror: FakeMirror,
                                               services: Path) -> None:
    """``startnb SERVICE -k NAME -i IMAGE``: the service built into IMAGE (not a second
    image beside the positional one)."""
    _, result, _ = boot_service(tmp_path, mirror, services, "-i", "web.img")
    argv = result["argv"]
    assert isinstance(argv, list)
    assert argv[argv.index("-drive") + 1].endswith("file=web.img,readonly=on")
    assert (tmp_path / "web.img").is_file() and not (tmp_path / "rescue-amd64.img").exists()


@pytest.mark.qemu
def test_unknown_name_is_a_missing_kernel(tmp_path: Path, mirror: FakeMirror) -> None:
    r = startnb(tmp_path, mirror, "rescuee")
    assert r.returncode == 1 and "kernel not found: rescuee" in r.stderr


@pytest.mark.qemu
@pytest.mark.slow
def test_service_ready_line_is_the_default_readiness(tmp_path: Path, mirror: FakeMirror,
                                                     services: Path) -> None:
    """``READY`` in service.conf is what ``startnb SERVICE`` waits for; ``--ready`` wins."""
    conf = services / "rescue" / "service.conf"
    conf.write_text(conf.read_text().replace("READY=^SERVICE READY$", "READY=^never printed"))
    r = startnb(tmp_path, mirror, "rescue", "--services-dir", str(services), "-k", "SMOLTEST",
                "-N", "--console", "none", "--timeout", "3")
    assert r.returncode != 0 and "not ready" in r.stderr.lower(), r.stderr
    assert "never printed" in json.loads((tmp_path / "rescue-amd64.img.json").read_text()
                                         )["ready"]
    r = startnb(tmp_path, mirror, "rescue", "--services-dir", str(services), "-k", "SMOLTEST",
                "-N", "--json", "--console", "none", "--timeout", "30",
                "--ready", "console:^SERVICE READY$", "-a", "smoltest.exit=1", *DEBUG_EXIT)
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["ready"] is True


def _build_service(cwd: Path, mirror: FakeMirror, services: Path) -> tuple[bool, str]:
    """``build_service`` in a fresh interpreter: (was smolfs.image.build imported, stderr)."""
    code = ("import sys\nfrom launcher.service_image import build_service\n"
            f"img, kernel, ready, ro = build_service('rescue', None, kernel='SMOLTEST', "
            f"services_dir={str(services)!r})\n"
            "assert img.is_file() and kernel is not None and kernel.is_file() and ro\n"
            "print('smolfs.image.build' in sys.modules)\n")
    env = dict(os.environ, MKSMOLNB_MIRROR=mirror.url, MKSMOLNB_CACHE=str(cwd / "cache"))
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120, check=True)
    return r.stdout.strip() == "True", r.stderr


def test_an_up_to_date_service_image_needs_no_builder(tmp_path: Path, mirror: FakeMirror,
                                                      services: Path) -> None:
    """The second ``startnb SERVICE`` learns from stats alone that the image is up to
    date; a changed input brings the builder back (a rebuild, or the image kept when the
    content is the same: then the stats are kept for the next time)."""
    image = tmp_path / "rescue-amd64.img"
    assert _build_service(tmp_path, mirror, services)[0]  # built
    built = image.stat().st_mtime_ns
    imported, err = _build_service(tmp_path, mirror, services)
    assert not imported and "up to date" in err
    rc = services / "rescue" / "etc" / "rc"
    rc.write_text(rc.read_text())  # same content, new stat: the builder decides, keeps it
    imported, err = _build_service(tmp_path, mirror, services)
    assert imported and "up to date" in err and image.stat().st_mtime_ns == built
    assert not _build_service(tmp_path, mirror, services)[0]
    rc.write_text(rc.read_text() + "# changed\n")  # new content: rebuilt
    imported, err = _build_service(tmp_path, mirror, services)
    assert imported and "up to date" not in err and image.stat().st_mtime_ns != built
    assert not _build_service(tmp_path, mirror, services)[0]


@pytest.mark.parametrize(("ready", "ports", "want"), [
    ("^caddy: serving", [], "console:^caddy: serving"),
    ("http:80/", ["8080:80"], "http:8080/"),
    ("http:80/health", ["udp:5353:80", "127.0.0.1:8081:80"], "http:8081/health"),
    ("tcp:22", ["2222:22", "8080:80"], "tcp:2222"),
])
def test_service_ready_maps_the_guest_port_to_the_forwarded_host_port(
        ready: str, ports: list[str], want: str) -> None:
    from launcher.__main__ import _service_ready

    assert _service_ready("web", ready, ports) == want


def test_service_ready_on_a_port_nobody_forwards_says_which_p_to_add(
        tmp_path: Path, mirror: FakeMirror, services: Path) -> None:
    conf = services / "rescue" / "service.conf"
    conf.write_text(conf.read_text().replace("READY=^SERVICE READY$", "READY=http:80/"))
    r = startnb(tmp_path, mirror, "rescue", "--services-dir", str(services), "-k", "SMOLTEST",
                "--timeout", "30", "-p", "2222:22")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "service rescue is ready when guest port 80 answers (http:80/), and no -p " \
        "forwards it" in r.stderr, r.stderr
    assert "add -p HOSTPORT:80, e.g. -p 8080:80" in r.stderr
