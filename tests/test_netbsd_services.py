"""The shipped services on genuine NetBSD, and the guest-side pieces the launcher relies on:

- ``rescue`` (NetBSD's own rescue set) reaches its ready line with no error line on the
  console, on FFS and ext2, read-only and read-write roots (and a read-write root really
  is mounted read-write, a read-only one never written);
- ``common/shutdown`` ends the VM on a kernel without ACPI: the bare QEMU argv startnb
  prints exits on its own;
- ``common/basicrc``'s network (``ifconfig``, ``route``) and ``startnb --ready http:`` /
  ``tcp:`` against a service of ours the guest runs (``tests/guest/smolsrv.c``);
- i386: the multiboot kernel boots a root holding only our static init;
- the boot stages startnb reports from these real consoles are all there, in order.

Reads ``$MKSMOLNB_NETBSD_DIR`` (``netbsd``, ``netbsd-i386``, ``sets/rescue.tgz``,
``fsck_ffs``); each test skips naming what it lacks.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import guest
import pytest
from helpers.genuine import (
    BOOT_TIMEOUT,
    assert_stages_in_order,
    boot_detached,
    error_lines,
    first,
    netbsd_root,
    report_of,
    rescue_set,
)
from helpers.ports import free_ports
from helpers.runner import Runner

pytestmark = [pytest.mark.netbsd, pytest.mark.qemu, pytest.mark.slow]

MATRIX = [(fs, mode) for fs in ("ffs", "ext2") for mode in ("ro", "rw")]


@pytest.fixture(scope="module")
def rescue_images(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """The rescue service built once per filesystem and root mode (the boots copy them)."""
    root = netbsd_root()
    rescue = rescue_set(root)
    out = tmp_path_factory.mktemp("rescue")
    builder = Runner(out)
    try:
        images = {}
        for fs, mode in MATRIX:
            image = out / f"rescue-{fs}-{mode}.img"
            builder.run("smolfs", "build", "-s", "rescue", "-x", str(rescue), "-i", str(image),
                        "--fs", fs, f"--{mode}", "--offline", check=True)
            images[fs, mode] = image
        return images
    finally:
        builder.close()


@pytest.mark.parametrize(("fs", "mode"), MATRIX, ids=[f"{f}-{m}" for f, m in MATRIX])
def test_rescue_service_boots_cleanly(runner: Runner, rescue_images: dict, fs: str,
                                      mode: str) -> None:
    root = netbsd_root()
    kernel = first(root, "netbsd", "netbsd.gz")
    image = Path(shutil.copy(rescue_images[fs, mode], runner.workdir / "rescue.img"))
    ro = ["--ro"] if mode == "ro" else []
    report, console = boot_detached(runner, "rescue", kernel, image, *ro,
                                    "--ready", "console:^rescue: ready")
    assert "rescue: ready" in console
    assert error_lines(console) == [], console
    assert_stages_in_order(report)
    runner.startnb("stop", "--force", "rescue")
    assert not runner.qemu_left(wait=5)
    # what the root mode did to the image: a read-write root was mounted read-write (the
    # kernel marked it in use, and the VM was killed: basicrc preens it at the next boot,
    # see test_killed_read_write_root_is_repaired_at_next_boot), a read-only one is untouched
    if fs == "ext2":
        state = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True,
                               text=True, check=False).stdout
        want = "clean" if mode == "ro" else "not clean"
        assert f"Filesystem state:         {want}\n" in state, state
    else:
        fsck = root / "fsck_ffs"
        if not fsck.is_file():
            return
        out = subprocess.run([str(fsck), "-n", "-F", str(image)], capture_output=True,
                             text=True, check=False).stdout
        assert ("File system is clean; not checking" in out) is (mode == "ro"), out


def host_fsck(root: Path, fs: str, image: Path) -> tuple[int, str]:
    """The host's read-only check of IMAGE: (exit status, output); 0 is clean."""
    if fs == "ext2":
        argv = ["e2fsck", "-fn", str(image)]
    else:
        fsck = root / "fsck_ffs"
        if not fsck.is_file():
            pytest.skip(f"netbsd: no fsck_ffs in {root}")
        argv = [str(fsck), "-n", "-f", "-F", str(image)]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("fs", ["ffs", "ext2"])
def test_killed_read_write_root_is_repaired_at_next_boot(runner: Runner, tmp_path: Path,
                                                         fs: str) -> None:
    """``startnb stop`` of a read-write root (no ACPI: QEMU gets SIGTERM) leaves the
    filesystem damaged; the next boot's basicrc preens it before ``mount -u /``: no error
    line on the console, the service ready, and a clean halt leaves it clean."""
    root = netbsd_root()
    kernel = first(root, "netbsd", "netbsd.gz")
    svc = tmp_path / "svc" / "twice" / "etc"
    svc.mkdir(parents=True)
    # first boot: write files, stay up; second boot: ready, then a clean halt
    (svc / "rc").write_text(
        "#!/bin/sh\n. /etc/include/basicrc\n"
        "if [ -e /booted ]; then echo 'twice: ready again'; rm /booted\n"
        ". /etc/include/shutdown\nfi\n"
        ": > /booted; sync\n"
        "mkdir /junk; i=0; while [ $i -lt 40 ]; do echo $i > /junk/$i; i=$((i+1)); done\n"
        "echo 'twice: ready'; sleep 3600\n")
    image = tmp_path / "twice.img"
    runner.run("smolfs", "build", "-s", "twice", "--services-dir", str(tmp_path / "svc"),
               "-x", str(rescue_set(root)), "-i", str(image), "--fs", fs, "--rw",
               "--offline", check=True)
    assert host_fsck(root, fs, image)[0] == 0
    _, console = boot_detached(runner, "twice", kernel, image,
                               "--ready", "console:^twice: ready$")
    assert error_lines(console) == [], console
    r = runner.startnb("stop", "twice")
    assert r.returncode == 0, r.stderr
    assert not runner.qemu_left(wait=5)
    status, out = host_fsck(root, fs, image)
    assert status != 0, out  # the kill left it dirty: what basicrc must repair

    r = runner.startnb("-k", str(kernel), "-i", str(image), "--timeout", BOOT_TIMEOUT,
                       "--ready", "console:^twice: ready again")
    console = r.stdout + r.stderr
    assert "twice: ready again" in console, console
    assert error_lines(console) == [], console
    assert "rld0a" in console, console  # fsck's preen lines name the device it repaired
    assert not runner.qemu_left(wait=5)
    status, out = host_fsck(root, fs, image)
    assert status == 0, out


def test_shutdown_ends_the_vm_without_acpi(runner: Runner, tmp_path: Path) -> None:
    """A service whose rc ends: ``common/shutdown`` must end QEMU itself on a kernel without
    ACPI; the bare QEMU command (``--print-cmd``) is run, so startnb's own watching of the
    console plays no part."""
    root = netbsd_root()
    kernel = first(root, "netbsd", "netbsd.gz")
    svc = tmp_path / "svc" / "once" / "etc"
    svc.mkdir(parents=True)
    (svc / "rc").write_text("#!/bin/sh\n. /etc/include/basicrc\necho 'once: ready'\n"
                            ". /etc/include/shutdown\n")
    image = tmp_path / "once.img"
    runner.run("smolfs", "build", "-s", "once", "--services-dir", str(tmp_path / "svc"),
               "-x", str(rescue_set(root)), "-i", str(image), "--rw", "--offline", check=True)
    r = runner.startnb("--print-cmd", "-N", "-k", str(kernel), "-i", str(image))
    assert r.returncode == 0, r.stderr
    argv = shlex.split(r.stdout.strip().splitlines()[-1])
    q = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=int(BOOT_TIMEOUT), check=False)
    assert q.returncode == 0, q.stderr
    assert "once: ready" in q.stdout
    assert "The operating system has halted." not in q.stdout, q.stdout
    assert error_lines(q.stdout) == [], q.stdout


@pytest.fixture(scope="module")
def web_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rescue + smolsrv (ours), started by the service's rc after basicrc's network."""
    root = netbsd_root()
    out = tmp_path_factory.mktemp("web")
    try:
        program = guest.build("smolsrv", "amd64", out)
    except guest.ToolchainMissing as err:
        pytest.skip(str(err))
    extra = guest.as_set({"sbin/smolsrv": program}, out / "smolsrv.tar")
    svc = out / "svc" / "smolsrv" / "etc"
    svc.mkdir(parents=True)
    (svc / "rc").write_text("#!/bin/sh\n. /etc/include/basicrc\n"
                            "echo '--- ifconfig vioif0'\nifconfig vioif0\n"
                            "echo '--- route -n show'\nroute -n show\n"
                            "exec /sbin/smolsrv\n")
    image = out / "web.img"
    builder = Runner(out)
    try:
        builder.run("smolfs", "build", "-s", "smolsrv", "--services-dir", str(out / "svc"),
                    "-x", f"{rescue_set(root)},{extra}", "-i", str(image), "--ro",
                    "--offline", check=True)
    finally:
        builder.close()
    return image



@pytest.mark.parametrize("ready", ["http", "tcp"])
def test_network_service_ready_over_forwarded_port(runner: Runner, web_image: Path,
                                                   ready: str) -> None:
    kernel = first(netbsd_root(), "netbsd", "netbsd.gz")
    image = Path(shutil.copy(web_image, runner.workdir / "web.img"))
    http, banner = free_ports(2)
    spec = f"http:{http}/" if ready == "http" else f"tcp:{banner}"
    report, console = boot_detached(runner, "web", kernel, image, "--ro",
                                    "-p", f"{http}:80", "-p", f"{banner}:7", "--ready", spec)
    assert_stages_in_order(report)
    # basicrc's network, as NetBSD's ifconfig and route show it
    assert "inet 10.0.2.15 netmask 0xffffff00" in console, console
    assert any(line.split()[:2] == ["default", "10.0.2.2"] for line in console.splitlines()
               ), console
    assert error_lines(console) == [], console
    # the guest itself answers both ports
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/any", timeout=30) as answer:
        assert answer.status == 200
        assert answer.read() == b"hello from NetBSD smolsrv\n"
    with socket.create_connection(("127.0.0.1", banner), timeout=30) as s:
        s.settimeout(30)
        assert s.recv(100).startswith(b"smolsrv banner: ")
    runner.startnb("stop", "--force", "web")
    assert not runner.qemu_left(wait=5)


def test_i386_multiboot_kernel_runs_our_init(runner: Runner, tmp_path: Path) -> None:
    """No i386 userland exists here: our static init is the whole root; the image builder
    gives it i386's device nodes (its console, opened by the program)."""
    kernel = first(netbsd_root(), "netbsd-i386")
    try:
        program = guest.build("smolinit", "i386", tmp_path)
    except guest.ToolchainMissing as err:
        pytest.skip(str(err))
    extra = guest.as_set({"sbin/init": program}, tmp_path / "init.tar")
    svc = tmp_path / "svc" / "bare" / "etc"
    svc.mkdir(parents=True)
    (svc / "rc").write_text("#!/bin/sh\necho 'never run: init is ours'\n")
    image = tmp_path / "i386.img"
    runner.run("smolfs", "build", "-s", "bare", "--services-dir", str(tmp_path / "svc"),
               "--arch", "i386", "-x", str(extra), "-i", str(image), "--ro", "--offline",
               check=True)
    console = tmp_path / "console.txt"
    r = runner.startnb("-k", str(kernel), "-i", str(image), "--ro", "-N", "--json",
                       "--console", f"file:{console}", "--timeout", BOOT_TIMEOUT)
    text = console.read_text(errors="replace")
    assert r.returncode == 0, f"{r.stderr}\n{text}"
    assert "smolinit: i386 userland runs" in text, text
    assert "kern.module.path=/stand/i386/" in text, text  # the kernel is i386's
    assert_stages_in_order(report_of(r.stdout))
    assert error_lines(text) == [], text
    assert not runner.qemu_left(wait=5)
