"""The guest's end as its console says it: NetBSD's ``The operating system has halted.``
(``halt -p`` without ACPI: QEMU keeps running) ends an attached run and a detached VM; a
kernel panic, a fatal trap or the kernel debugger is reported at once, in one line after
the console's last lines, with QEMU stopped and a non-zero exit.

The test kernels print the lines (``smoltest.say=``); the genuine cases boot NetBSD's own
GENERIC, which panics unstripped (``$MKSMOLNB_NETBSD_DIR/netbsd-GENERIC``), and the VM
kernel with a service whose rc halts.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from helpers.runner import Runner
from kernels import TestKernels

from launcher.stagescan import StageDetector, guest_end

HALTED = ("smoltest.say=The_operating_system_has_halted.",
          "smoltest.say=Please_press_any_key_to_reboot.")
PANIC = ("smoltest.say=panic:_kernel_diagnostic_assertion_failed",
         "smoltest.say=fatal_breakpoint_trap_in_supervisor_mode",
         "smoltest.say=Stopped_in_pid_0.1_(system)_at_0xffffffff802a3ef5:_leave")


def words(*say: str) -> list[str]:
    return [a for w in say for a in ("-a", w)]


@pytest.fixture
def pvh(tmp_path: Path, test_kernels: TestKernels) -> Path:
    """The PVH test kernel, copied below the test's directory (the runner's needle)."""
    return Path(shutil.copy(test_kernels.pvh, tmp_path / "smoltest-pvh.elf"))


@pytest.mark.parametrize(("line", "kind"), [
    ("The operating system has halted.", "halted"),
    # alone, not yet: a program may print "panic: " (test_panic_line_needs_the_kernels_next)
    ("panic: kernel diagnostic assertion \"p != NULL\" failed: file \"x.c\", line 323 ",
     None),
    ("fatal breakpoint trap in supervisor mode", "panic"),
    ("fatal page fault in supervisor mode", "panic"),
    ("fatal protection fault in user mode", "panic"),
    ("Stopped in pid 0.1 (system) at  ffffffff802a3ef5:       leave", "panic"),
    ("db{0}> ", "panic"),
    ("Please press any key to reboot.", None),
    ("rescue: ready; 'exit' powers the VM off", None),
    ("sh: panic: not found", None),  # a command named panic is not a kernel panic
    ("mount_ffs: /dev/ld0a on /: Operation not supported", None),
    ("halt: halted by root", None),
])
def test_guest_end_lines(line: str, kind: str | None) -> None:
    assert guest_end(line) == kind
    det = StageDetector()
    det.feed_line(1.0, line)
    assert det.end == ((kind, line) if kind else None)


KERNEL_PANIC = "panic: kernel diagnostic assertion \"p != NULL\" failed"
GO_PANIC = "panic: runtime error: index out of range [3] with length 3"


@pytest.mark.parametrize(("lines", "end"), [
    ([KERNEL_PANIC, "fatal breakpoint trap in supervisor mode"], KERNEL_PANIC),
    ([KERNEL_PANIC, "", "cpu0: Begin traceback..."], KERNEL_PANIC),
    ([KERNEL_PANIC, "Stopped in pid 0.1 (system) at  ffffffff802a3ef5: leave"], KERNEL_PANIC),
    ([KERNEL_PANIC, "dump to dev 19,1 not possible"], KERNEL_PANIC),
    (["[   1.0312] " + KERNEL_PANIC, "[   1.0312] cpu0: Begin traceback..."], KERNEL_PANIC),
    ([GO_PANIC, "", "goroutine 1 [running]:", "main.main()", "cpu0: Begin traceback..."],
     None),
    ([GO_PANIC, "syncing disks... done", "rebooting..."], None),  # rc's shutdown after it
    ([GO_PANIC], None),
])
def test_panic_line_needs_the_kernels_next(lines: list[str], end: str | None) -> None:
    """A ``panic:`` line is the kernel's once the next line that is not blank is one the
    kernel prints after its panic message; Go's runtime prints ``panic: `` too."""
    from launcher.stagescan import scan_end

    det = StageDetector()
    for i, line in enumerate(lines):
        det.feed_line(float(i), line)
    assert det.end == (("panic", end) if end else None)
    if end:
        assert det.end_at == 0.0  # when the panic message came
    data = "".join(f"{line}\r\n" for line in lines).encode()
    assert scan_end(b"", data)[1] == (("panic", end) if end else None)
    partial = b""  # one byte at a time, as a slow console gives them
    found = None
    for i in range(len(data)):
        partial, found = scan_end(partial, data[i:i + 1])
        if found:
            break
    assert found == (("panic", end) if end else None)


def test_panic_line_then_qemu_gone_is_a_panic() -> None:
    """A machine reset straight after the panic message (QEMU ends, -no-reboot): it was
    the kernel's last word."""
    det = StageDetector()
    det.feed_line(1.0, KERNEL_PANIC)
    det.feed_line(1.5, "")
    assert det.end is None
    assert det.exited() == ("panic", KERNEL_PANIC) and det.end_at == 1.0
    quiet = StageDetector()
    quiet.feed_line(1.0, "SERVICE READY")
    assert quiet.exited() is None


def test_panic_then_the_debuggers_prompt_without_a_line_end() -> None:
    from launcher.stagescan import scan_end

    assert scan_end(b"", f"{KERNEL_PANIC}\r\ndb{{0}}> ".encode())[1] == ("panic", KERNEL_PANIC)


@pytest.mark.qemu
def test_userland_panic_line_leaves_the_vm_running(runner: Runner, pvh: Path) -> None:
    """A Go program's panic on the console after the ready line (caddy is Go): the
    detached VM's keeper does not stop it."""
    r = runner.startnb(str(pvh), "-N", "-d", "--name", "gopanic", "--timeout", "60",
                       "-a", "smoltest.saywait=300",
                       *words("panic:_runtime_error:_index_out_of_range", "",
                              "goroutine_1_[running]:", "main.main()"), timeout=60)
    assert r.returncode == 0, r.stderr
    log = runner.state / "gopanic" / "serial.log"
    deadline = time.monotonic() + 30
    while "main.main()" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # the keeper reads the log every POLL seconds
    assert runner.qemu_left(), "a userland panic line stopped the VM"
    manifest = json.loads((runner.state / "gopanic" / "manifest.json").read_text())
    assert manifest.get("guest_end") is None
    r = runner.startnb("stop", "--force", "gopanic")
    assert r.returncode == 0, r.stderr
    assert not runner.qemu_left(wait=5)


@pytest.mark.qemu
def test_halt_after_ready_ends_an_attached_run(runner: Runner, pvh: Path) -> None:
    for fast in (False, True):  # the first run saves a plan, the second starts from it
        t0 = time.monotonic()
        r = runner.startnb(str(pvh), "-N", "--json", "--debug", "--timeout", "60",
                           *words(*HALTED), timeout=60)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert ("(started from a cached plan)" in r.stderr) is fast, r.stderr
        assert "startnb: the guest halted; QEMU stopped" in r.stderr
        report = json.loads(r.stdout.splitlines()[0])
        assert report["ready"] and report["timing"]["stages"]["ready"] is not None
        assert took < 30, f"{took:.1f} s: the halt was not seen"
        assert not runner.qemu_left(wait=2)


@pytest.mark.qemu
def test_halt_before_ready_fails_at_once(runner: Runner, pvh: Path) -> None:
    for fast in (False, True):
        r = runner.startnb(str(pvh), "-N", "--timeout", "60", "--debug", "-a",
                           "smoltest.noready", *words(*HALTED), timeout=60)
        assert r.returncode == 1, r.stderr
        assert ("(started from a cached plan)" in r.stderr) is fast, r.stderr
        last = r.stderr.strip().splitlines()
        assert "startnb: error: the guest halted before the service was ready; QEMU stopped" \
            in last, r.stderr
        assert "  | The operating system has halted." in last
        assert not runner.qemu_left(wait=2)


@pytest.mark.qemu
@pytest.mark.parametrize("when", ["after-ready", "before-ready", "detached-before-ready"])
def test_panic_is_reported_at_once(runner: Runner, pvh: Path, when: str) -> None:
    args = [str(pvh), "-N", "--timeout", "60", *words(*PANIC)]
    if when != "after-ready":
        args += ["-a", "smoltest.noready"]
    if when.startswith("detached"):
        args += ["-d", "--name", "panicky"]
    t0 = time.monotonic()
    r = runner.startnb(*args, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    err = r.stderr.strip().splitlines()
    assert err[-2].startswith("startnb: error: the guest's kernel panicked (panic: kernel "
                              "diagnostic assertion failed); QEMU stopped"), r.stderr
    # the console's last lines come first, with the lines after the panic
    assert "  | fatal breakpoint trap in supervisor mode" in err
    assert any(line.startswith("  | Stopped in pid 0.1") for line in err)
    assert took < 20, f"{took:.1f} s: not at once"
    assert not runner.qemu_left(wait=2)
    assert not list(runner.state.iterdir()), "a failed detached VM left its state"


@pytest.mark.qemu
@pytest.mark.parametrize("kind", ["halted", "panic"])
def test_detached_vm_that_ends_is_stopped_and_forgotten(runner: Runner, pvh: Path,
                                                        kind: str) -> None:
    # the end comes 1 s after the ready line: the keeper, not startnb, sees it
    say = HALTED if kind == "halted" else PANIC
    r = runner.startnb(str(pvh), "-N", "-d", "--name", "ender", "--timeout", "60",
                       "-a", "smoltest.saywait=1000", *words(*say), timeout=60)
    assert r.returncode == 0, r.stderr
    assert runner.qemu_left(), "QEMU ended before the guest did"
    assert not runner.qemu_left(wait=10), "the ended guest's QEMU still runs"
    manifest = json.loads((runner.state / "ender" / "manifest.json").read_text())
    assert manifest["guest_end"]["kind"] == kind
    keeper = int((runner.state / "ender" / "keeper.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(keeper) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(keeper), "the keeper outlived its QEMU"
    assert (runner.state / "ender" / "qemu.exit").exists(), "QEMU's end not recorded"
    logs = runner.startnb("logs", "ender")
    assert ("Stopped in pid 0.1" in logs.stdout) is (kind == "panic")
    ps = runner.startnb("ps", "--json")
    assert json.loads(ps.stdout) == []


@pytest.fixture(scope="module")
def halting_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rescue set with an rc that says it is ready, then ``halt -p``: on these
    kernels (no ACPI) NetBSD halts and QEMU runs on."""
    from helpers.genuine import netbsd_root, rescue_set

    root = netbsd_root()
    out = tmp_path_factory.mktemp("halting")
    svc = out / "svc" / "halting" / "etc"
    svc.mkdir(parents=True)
    (svc / "rc").write_text("#!/bin/sh\n. /etc/include/basicrc\necho 'halting: ready'\n"
                            "sleep 1\nhalt -lpq\n")
    image = out / "halting.img"
    builder = Runner(out)
    try:
        builder.run("smolfs", "build", "-s", "halting", "--services-dir", str(out / "svc"),
                    "-x", str(rescue_set(root)), "-i", str(image), "--ro", "--offline",
                    check=True)
    finally:
        builder.close()
    return image


@pytest.mark.netbsd
@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
def test_genuine_halt_ends_the_vm(runner: Runner, halting_image: Path, detach: bool) -> None:
    from helpers.genuine import BOOT_TIMEOUT, first, netbsd_root

    kernel = Path(shutil.copy(first(netbsd_root(), "netbsd"), runner.workdir / "netbsd"))
    args = ["-k", str(kernel), "-i", str(halting_image), "--ro", "-N", "--json",
            "--ready", "console:^halting: ready", "--timeout", BOOT_TIMEOUT]
    if detach:
        args += ["-d", "--name", "halting"]
    t0 = time.monotonic()
    r = runner.startnb(*args)
    assert r.returncode == 0, r.stderr
    if detach:  # startnb returned at ready; the keeper stops QEMU after the halt
        assert not runner.qemu_left(wait=30), "the halted guest's QEMU still runs"
        manifest = runner.state / "halting" / "manifest.json"
        if manifest.exists():  # (ps may have forgotten the VM already)
            end = json.loads(manifest.read_text()).get("guest_end")
            assert end == {"kind": "halted", "line": "The operating system has halted."}
    else:
        assert "startnb: the guest halted; QEMU stopped" in r.stderr
        assert json.loads(r.stdout.splitlines()[-1])["ready"] is True
        assert not runner.qemu_left(wait=5)
    assert time.monotonic() - t0 < 60


# -- what the genuine tests count as an error line on a console -------------------------

@pytest.mark.parametrize("line", [
    "mount_ffs: /dev/ld0a on /: Operation not supported",  # basicrc's mount -u / on ro
    "sh: httpd: not found",
    "/etc/rc: 12: Syntax error: end of file unexpected",
    "ifconfig: SIOCAIFADDR: File exists",
    "route: writing to routing socket: Network is unreachable",
    "smolsrv: bind failed: errno 48",
    "mount: /dev/ld0b: No such file or directory",
    "ksh: cannot create /etc/resolv.conf: Read-only file system",
    "WARNING: R/W mount of / denied.  Filesystem is not clean - run fsck",
    "init: couldn't exec /bin/sh",
    "usage: halt [-dlnpqvxz]",
    "panic: init died (signal 0, exit 1)",
])
def test_error_line_catches_real_failures(line: str) -> None:
    from helpers.genuine import error_lines

    assert error_lines(f"NetBSD 7.99.4\nroot file system type: ffs\n{line}\n") == [line]


def test_error_line_spares_clean_genuine_consoles() -> None:
    """The kernel's own lines before the root is mounted ("... not configured", "Kernel
    symbol table invalid!") are not looked at; the clean consoles have no error line."""
    from helpers.genuine import error_lines

    clean = ("vendor 8086 product 7010 (IDE mass storage, interface 0x80) at pci0 dev 1 "
             "function 1 not configured\n[ Kernel symbol table invalid! ]\n"
             "root file system type: ext2fs\nkern.module.path=/stand/amd64/7.99.4/modules\n"
             "vioif0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> mtu 1500\n"
             "rescue: ready; 'exit' powers the VM off\nsyncing disks... done\nrebooting...\n")
    assert error_lines(clean) == []
    assert error_lines("no root here\n") == ["(the root was never mounted)"]


def test_error_line_spares_the_random_generators_chance_failure() -> None:
    """NetBSD 7's kernel fails its own statistical test of the random generator's output
    by chance now and then ("cprng kernel: failed statistical RNG test"): no error of
    the boot; a line that only looks like it still is one."""
    from helpers.genuine import error_lines

    chance = "cprng kernel: failed statistical RNG test"
    console = f"root file system type: ffs\n{chance}\r\nrescue: ready\n"
    assert error_lines(console) == []
    other = "cprng kernel: failed statistical RNG test; mount_ffs: /: Device busy"
    assert error_lines(f"root file system type: ffs\n{other}\n") == [other]


def _alive(pid: int) -> bool:
    """``pid`` runs (not a zombie: a keeper's parent, startnb, has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.qemu
@pytest.mark.parametrize("how", ["stop", "qemu-killed"])
def test_one_keeper_beside_a_detached_vm_goes_with_its_qemu(runner: Runner, pvh: Path,
                                                            how: str) -> None:
    """Beside a detached QEMU runs exactly one process of ours, its keeper (a fork of
    startnb: its argv names the kernel), which also watches the console; it exits as soon
    as QEMU does, whoever stopped it."""
    import os
    import signal

    from conftest import live_processes

    def ours() -> list[int]:
        return [pid for pid, argv in live_processes()
                if any(runner.needle.encode() in a for a in argv) and b"qemu" not in argv[0]]

    r = runner.startnb(str(pvh), "-N", "-d", "--name", "quiet", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    keeper = int((runner.state / "quiet" / "keeper.pid").read_text())
    assert ours() == [keeper], "not the keeper alone beside the detached VM"
    with open(f"/proc/{keeper}/comm") as f:
        assert f.read() == "startnb-keeper\n"
    if how == "stop":
        runner.startnb("stop", "--force", "quiet")
    else:
        qemu = int((runner.state / "quiet" / "qemu.pid").read_text())
        os.kill(qemu, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while ours() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ours() == []
    assert runner.qemu_left() == []


@pytest.mark.netbsd
@pytest.mark.parametrize(("name", "kind", "line"), [
    ("amd64-GENERIC-unstripped-panic.txt", "panic", "panic: kernel diagnostic assertion"),
    ("amd64-vm-rescue-sh.txt", "halted", "The operating system has halted."),
    ("amd64-GENERIC-stripped.txt", None, None),
    ("i386-vm.txt", None, None),
])
def test_recorded_genuine_consoles(name: str, kind: str | None, line: str | None) -> None:
    """The consoles recorded beside the shared kernels (``console/``), fed line by line."""
    from helpers.genuine import first, netbsd_root

    path = first(netbsd_root() / "console", name)
    det = StageDetector()
    for i, text in enumerate(path.read_text(errors="replace").splitlines()):
        det.feed_line(float(i), text)
    assert {"banner", "root"} <= set(det.times) or kind == "panic", det.times
    if kind is None:
        assert det.end is None, det.end
    else:
        assert det.end is not None and det.end[0] == kind and det.end[1].startswith(line)
