"""The real launcher, end to end: ``python -m launcher`` and ``launcher.boot.boot`` booting
the smoltest kernels under QEMU, checked from inside the guest (its console reports the
command line and the virtio devices it found) and from the host (no QEMU left behind).

Genuine NetBSD (marker ``netbsd``): ``$MKSMOLNB_NETBSD_DIR/netbsd`` (a kernel, or
``netbsd.gz``) and ``$MKSMOLNB_NETBSD_DIR/root.img`` (a root image whose service prints
``SERVICE READY`` on the console).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.ports import free_port
from kernels import READY_LINE, TestKernels, parse_console

from conftest import REPO, qemu_pids

DEBUG_EXIT = ["--qemu-arg=-device", "--qemu-arg=isa-debug-exit,iobase=0xf4,iosize=4"]
MMIO_MARKERS = b"\0virtio_mmio.device=\0mmio_cmdline\0"


def wait_gone(needle: str, seconds: float = 3.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (pids := qemu_pids(needle)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


@dataclass
class Vms:
    """Runs the launcher; remembers every console and kills every QEMU it may have left."""

    workdir: Path
    env: dict[str, str]
    needle: str  # a path only this test's QEMUs carry in their argv
    logs: list[Path] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "launcher", *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(self.argv(*args), cwd=REPO, env=self.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def console_file(self, name: str) -> Path:
        path = self.workdir / f"{name}.console"
        self.logs.append(path)
        return path

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        for pid in qemu_pids(self.needle):
            os.kill(pid, signal.SIGKILL)
        for vm_dir in Path(self.env["MKSMOLNB_STATE"]).glob("*"):
            self.logs.append(vm_dir / "serial.log")


@pytest.fixture
def vm(tmp_path: Path, test_kernels: TestKernels) -> Iterator[Vms]:
    """Every QEMU this test started dies at teardown; consoles are printed (pytest shows
    them for failing tests only)."""
    state = Path(tempfile.mkdtemp(prefix="snb-", dir="/tmp"))  # short: unix socket paths
    env = dict(os.environ, MKSMOLNB_STATE=str(state), MKSMOLNB_CACHE=str(tmp_path / "cache"))
    v = Vms(tmp_path, env, str(tmp_path))
    try:
        yield v
    finally:
        v.cleanup()
        for log in v.logs:
            if log.exists():
                print(f"--- {log}\n{log.read_text(errors='replace')}")
        leftover = qemu_pids(str(tmp_path))
        import shutil

        shutil.rmtree(state, ignore_errors=True)
        assert not leftover, f"QEMU left running: {leftover}"


@dataclass(frozen=True)
class Kernels:
    pvh: Path
    multiboot: Path
    multiboot_gz: Path
    pvh64: Path
    noboot: Path
    mmio: Path  # the PVH kernel carrying the strings of NetBSD's virtio-mmio attachment


@pytest.fixture
def kernels(tmp_path: Path, test_kernels: TestKernels) -> Kernels:
    """Copies in this test's directory, so its QEMUs are recognisable by path."""
    d = tmp_path / "k"
    d.mkdir()
    out = {}
    for name in ("pvh", "multiboot", "multiboot_gz", "pvh64", "noboot"):
        src = getattr(test_kernels, name)
        out[name] = d / src.name
        out[name].write_bytes(src.read_bytes())
    out["mmio"] = d / "smoltest-mmio.elf"
    out["mmio"].write_bytes(test_kernels.pvh.read_bytes() + MMIO_MARKERS)
    return Kernels(**out)



CASES = [
    # kernel, extra args, machine expected, transport, cmdline expected after the kernel path
    ("pvh", [], "pc", "pci", "console=com root=ld0a smoltest.exit=1"),
    ("multiboot_gz", ["-r", "ld0e"], "pc", "pci", "console=com root=ld0e smoltest.exit=1"),
    ("mmio", ["--append=-v"], "microvm", "mmio", "console=com root=ld0a -v smoltest.exit=1"),
    ("pvh", ["--machine", "microvm", "-m", "64"], "microvm", "mmio",
     "console=com root=ld0a smoltest.exit=1"),
    ("multiboot", ["--machine", "microvm"], "microvm", "mmio",
     "console=com root=ld0a smoltest.exit=1"),
    ("pvh64", ["--machine", "microvm"], "microvm", "mmio",
     "console=com root=ld0a smoltest.exit=1"),
]


@pytest.mark.qemu
@pytest.mark.parametrize(("kernel", "extra", "machine", "transport", "cmdline"), CASES,
                         ids=["pvh-pc", "multiboot-gz-pc", "mmio-auto-microvm", "pvh-microvm",
                              "multiboot-microvm", "pvh64-microvm"])
def test_guest_sees_cmdline_and_devices(vm: Vms, kernels: Kernels, disk: Path, kernel: str,
                                        extra: list[str], machine: str, transport: str,
                                        cmdline: str) -> None:
    console = vm.console_file(kernel)
    kpath = getattr(kernels, kernel)
    args = [*extra, "-a", "smoltest.exit=1", *DEBUG_EXIT]
    cmd = vm.run("--print-cmd", str(kpath), str(disk), *args)
    assert cmd.returncode == 0, cmd.stderr
    argv = shlex.split(cmd.stdout)
    assert argv[argv.index("-M") + 1].split(",")[0] == machine
    r = vm.run(str(kpath), str(disk), *args, "--json", "--console", f"file:{console}",
                "--timeout", "30")
    assert r.returncode == 3, r.stderr  # isa-debug-exit (1 << 1) | 1
    result = json.loads(r.stdout)
    assert result["ready"] and result["argv"] == argv
    stages = result["timing"]["stages"]
    order = [stages[s] for s in ("first_byte", "banner", "root", "rc", "ready")]
    assert all(t is not None for t in order) and order == sorted(order), stages
    assert result["timing"]["total"] >= stages["ready"]
    con = parse_console(console.read_text())
    assert con.cmdline is not None
    words = con.cmdline.split()
    ours = [w for w in words if not w.startswith("virtio_mmio.device=")]
    assert " ".join(ours).endswith(cmdline), con.cmdline
    assert ours[0].startswith("console=" if kernel.startswith(("pvh", "mmio")) else "/")
    kinds = sorted((d.transport, d.kind) for d in con.virtio)
    assert kinds == [(transport, "blk"), (transport, "net")], con.virtio
    if machine == "microvm" and not kernel.startswith("multiboot"):
        # acpi=off: QEMU names each transport on the command line, where a MICROVM
        # kernel (no ACPI) finds them.
        named = sorted(w.split("@")[1].split(":")[0] for w in words if w not in ours)
        assert named == sorted(d.location for d in con.virtio), con.cmdline
    if "-m" in extra:
        assert con.mem_kib is not None and con.mem_kib <= 64 * 1024


@pytest.mark.qemu
def test_no_network_and_readonly(vm: Vms, kernels: Kernels, disk: Path) -> None:
    console = vm.console_file("ro")
    r = vm.run(str(kernels.pvh), str(disk), "-N", "--ro", "-a", "smoltest.exit=1", *DEBUG_EXIT,
                "--console", f"file:{console}", "--timestamps", "--timeout", "30")
    assert r.returncode == 3, r.stderr
    assert "ready in" in r.stderr and "kernel banner" in r.stderr
    text = console.read_text()
    assert text.startswith("[") and "] SERVICE READY" in text  # timestamped lines
    con = parse_console("\n".join(line.split("] ", 1)[1] for line in text.splitlines()))
    assert [(d.transport, d.kind) for d in con.virtio] == [("pci", "blk")]


@pytest.mark.qemu
def test_python_api(vm: Vms, kernels: Kernels, disk: Path, monkeypatch: pytest.MonkeyPatch
                    ) -> None:
    from launcher.boot import boot
    from launcher.config import Console, LaunchConfig, parse_ready

    monkeypatch.setenv("MKSMOLNB_CACHE", vm.env["MKSMOLNB_CACHE"])
    config = LaunchConfig(kernel=kernels.mmio, image=disk, console=Console("none"),
                          ready=parse_ready("console:^Starting smoltest"), timeout=30,
                          append=("smoltest.exit=1",), accel="tcg",
                          qemu_args=tuple(a.split("=", 1)[1] for a in DEBUG_EXIT))
    result = boot(config)
    assert result.ready and result.exit_status == 3
    assert result.argv[result.argv.index("-M") + 1].startswith("microvm,x-option-roms=off")
    st = result.report.stages
    assert st["rc"] is not None and st["ready"] == st["rc"]  # readiness on the rc line
    assert result.report.total is not None and result.report.startup < result.report.total


@pytest.mark.qemu
@pytest.mark.parametrize("mode", ["http", "tcp"])
def test_port_readiness_not_fooled_by_qemu_accept(vm: Vms, kernels: Kernels, mode: str
                                                  ) -> None:
    """The guest never listens; QEMU's user network still accepts on the host port."""
    port = free_port()
    start = time.monotonic()
    r = vm.run(str(kernels.pvh), "-p", f"{port}:80", "--ready", f"{mode}:{port}",
                "--timeout", "2.5")
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - start >= 2.5
    assert f"not ready after 2.5 s (waiting for --ready {mode}:{port}" in r.stderr
    assert "QEMU stopped" in r.stderr and "| SERVICE READY" in r.stderr  # last console lines
    assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_console_timeout_leaves_no_qemu(vm: Vms, kernels: Kernels) -> None:
    r = vm.run(str(kernels.pvh), "-N", "-a", "smoltest.noready", "--timeout", "1.5")
    assert r.returncode == 1
    assert "not ready after 1.5 s" in r.stderr and "| Starting smoltest service." in r.stderr
    assert "Traceback" not in r.stderr
    assert not wait_gone(vm.needle, 0.5)


@pytest.mark.qemu
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["sigint", "sigterm", "sigkill"])
def test_launcher_death_takes_qemu_down(vm: Vms, kernels: Kernels, how: int) -> None:
    """Ctrl-C, a kill, or even SIGKILL of the launcher: QEMU goes with it."""
    p = vm.popen(str(kernels.pvh), "-N", "--console", "none")
    assert p.stderr is not None
    for line in p.stderr:
        if "ready in" in line:
            break
    assert qemu_pids(vm.needle), "QEMU should be running"
    p.send_signal(how)
    p.wait(10)
    assert p.returncode in (130, 128 + signal.SIGTERM, -signal.SIGKILL)
    assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_detach_ps_logs_stop(vm: Vms, kernels: Kernels, disk: Path) -> None:
    port = free_port()
    r = vm.run("-d", "--name", "web", "-k", str(kernels.pvh), "-i", str(disk),
                "-p", f"{port}:80", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    pid = info["pid"]
    assert info["name"] == "web" and qemu_pids(vm.needle) == [pid]
    state = Path(info["state_dir"])
    assert {p.name for p in state.iterdir()} >= {"qemu.pid", "serial.log", "qmp.sock",
                                                  "manifest.json"}
    ps = json.loads(vm.run("ps", "--json").stdout)
    assert [(v["name"], v["pid"]) for v in ps] == [("web", pid)]
    assert ps[0]["ports"] == [f"tcp:127.0.0.1:{port}->80"]
    assert ps[0]["image"] == str(disk.resolve())
    human = vm.run("ps").stdout
    assert "web" in human and str(pid) in human
    logs = vm.run("logs", "web")
    assert READY_LINE in logs.stdout
    # The image is in use: a second read-write boot is refused before QEMU starts.
    again = vm.run(str(kernels.pvh), str(disk), "--timeout", "5")
    assert again.returncode == 1 and "in use by the running VM 'web'" in again.stderr
    # The host port is taken by the first VM's QEMU.
    clash = vm.run(str(kernels.pvh), "-p", f"{port}:80", "--timeout", "5")
    assert clash.returncode == 1 and f"host port tcp:127.0.0.1:{port} is not available" \
        in clash.stderr
    follow = vm.popen("logs", "web", "-f")
    assert follow.stdout is not None
    seen = ""
    while READY_LINE not in seen:  # (before the stop: -f must have started following)
        line = follow.stdout.readline()
        assert line, "logs -f ended before the VM was stopped"
        seen += line
    stop = vm.run("stop", "web", "--grace", "0.3")
    assert stop.returncode == 0 and "stopped web" in stop.stderr, stop.stderr
    assert not wait_gone(vm.needle)
    follow.communicate(timeout=5)  # -f ends when the VM stops
    assert follow.returncode == 0
    assert json.loads(vm.run("ps", "--json").stdout) == []
    assert not state.exists()
    missing = vm.run("stop", "web")
    assert missing.returncode == 1 and "no VM named 'web'" in missing.stderr


@pytest.mark.qemu
def test_detach_with_relative_paths(vm: Vms, kernels: Kernels, disk: Path) -> None:
    """Kernel and image named relative to the caller's directory: the keeper leaves its
    directory only once QEMU has opened them."""
    r = subprocess.run(vm.argv("-d", "--name", "rel", "--json",
                               str(kernels.pvh.relative_to(disk.parent)), disk.name),
                       cwd=disk.parent, env=vm.env, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    pid = json.loads(r.stdout)["pid"]
    try:
        ps = json.loads(vm.run("ps", "--json").stdout)
        assert [(v["name"], v["pid"]) for v in ps] == [("rel", pid)]
        assert ps[0]["image"] == str(disk.resolve())
        stop = vm.run("stop", "rel", "--grace", "0.3")
        assert stop.returncode == 0, stop.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.qemu
def test_read_only_image_is_shared(vm: Vms, kernels: Kernels, disk: Path) -> None:
    for name in ("a", "b"):
        r = vm.run("-d", "--name", name, "--ro", str(kernels.pvh), str(disk), "-N")
        assert r.returncode == 0, r.stderr
    assert len(qemu_pids(vm.needle)) == 2
    r = vm.run("stop", "--force", "a")
    assert r.returncode == 0 and "sigkill" in r.stderr
    assert vm.run("stop", "b", "--grace", "0.1").returncode == 0
    assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_image_locked_by_foreign_qemu(vm: Vms, kernels: Kernels, disk: Path) -> None:
    """A QEMU the launcher did not start holds the image: refused, with the reason."""
    qemu = subprocess.Popen(["qemu-system-x86_64", "-nodefaults", "-display", "none",
                             "-M", "pc", "-accel", "tcg", "-S", "-drive",
                             f"if=none,id=d,format=raw,file={disk}"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from launcher.proc import image_locked

        deadline = time.monotonic() + 10
        while not image_locked(disk) and time.monotonic() < deadline:
            time.sleep(0.05)
        r = vm.run(str(kernels.pvh), str(disk))
        assert r.returncode == 1 and "is locked by a running QEMU" in r.stderr, r.stderr
    finally:
        qemu.kill()
        qemu.wait()
    assert not image_locked(disk)


@pytest.mark.qemu  # the checks run in order; QEMU's presence is the first
def test_errors_before_qemu(vm: Vms, kernels: Kernels, tmp_path: Path) -> None:
    r = vm.run(str(tmp_path / "nope.elf"))
    assert r.returncode == 1 and "kernel not found" in r.stderr
    r = vm.run(str(kernels.noboot))
    assert r.returncode == 1
    assert "PVH entry" in r.stderr and "multiboot header" in r.stderr
    r = vm.run(str(kernels.pvh), str(tmp_path / "missing.img"))
    assert r.returncode == 1 and "image not found" in r.stderr
    r = subprocess.run([sys.executable, "-m", "launcher", str(kernels.pvh)], cwd=REPO,
                       env=dict(vm.env, MKSMOLNB_QEMU="/nonexistent/qemu-system-x86_64"),
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 1 and "apt-get install qemu-system-x86" in r.stderr
    r = vm.run(str(kernels.pvh), "--ready", "http:8080")
    assert r.returncode == 2 and "no -p forwards" in r.stderr
    for err in (r.stderr,):
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


@pytest.mark.qemu
@pytest.mark.kvm
def test_boots_with_hardware_kvm(vm: Vms, kernels: Kernels, disk: Path) -> None:
    r = vm.run(str(kernels.mmio), str(disk), "--accel", "kvm", "-a", "smoltest.exit=1",
                *DEBUG_EXIT, "--json", "--timeout", "30")
    assert r.returncode == 3, r.stderr
    argv = json.loads(r.stdout)["argv"]
    assert argv[argv.index("-accel") + 1] == "kvm"


@pytest.mark.qemu
@pytest.mark.netbsd
def test_genuine_netbsd_to_ready(vm: Vms, netbsd_dir: Path, tmp_path: Path) -> None:
    """The genuine kernel and a root the test builds from NetBSD's rescue set, with an rc
    that prints SERVICE READY (the launcher's default ready line), then ends the VM."""
    kernel = next((netbsd_dir / n for n in ("netbsd", "netbsd.gz") if (netbsd_dir / n).exists()),
                  None)
    rescue = netbsd_dir / "sets" / "rescue.tgz"
    if kernel is None or not rescue.is_file():
        pytest.skip(f"netbsd: {netbsd_dir} needs netbsd (or netbsd.gz) and sets/rescue.tgz")
    svc = tmp_path / "svcs" / "ready" / "etc"
    svc.mkdir(parents=True)
    (svc / "rc").write_text("#!/bin/sh\n. /etc/include/basicrc\necho SERVICE READY\n"
                            ". /etc/include/shutdown\n")
    image = tmp_path / "root.img"
    b = subprocess.run([sys.executable, "-m", "smolfs", "build", "-s", "ready",
                        "--services-dir", str(tmp_path / "svcs"), "-x", str(rescue),
                        "-i", str(image), "--ro", "--offline"], env=vm.env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert b.returncode == 0, b.stderr
    console = vm.console_file("netbsd")
    r = vm.run(str(kernel), str(image), "--ro", "--json", "--console", f"file:{console}",
                "--timeout", "180", timeout=300)
    assert r.returncode in (0, 1) and r.stdout, r.stderr
    stages = json.loads(r.stdout.splitlines()[0])["timing"]["stages"]
    assert stages["banner"] is not None and stages["root"] is not None, stages
    assert stages["ready"] is not None and stages["ready"] >= stages["root"]


@pytest.mark.qemu
def test_cpu_host_rejected_falls_back(vm: Vms, kernels: Kernels, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A hardware-KVM host on which QEMU aborts with ``-cpu host`` (as nested hosts do):
    the launcher boots again with a named model. The stand-in QEMU runs TCG underneath."""
    from launcher import fastpath
    from launcher.boot import boot, prepare
    from launcher.config import Console, LaunchConfig
    from launcher.host import KVM_HARDWARE

    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" -cpu host "*) echo "qemu-system-x86_64: error: failed to set MSR '
        '0x10a to 0x0" >&2; exit 1;; esac\n'
        'for a in "$@"; do [ "$a" = kvm ] && a=tcg; set -- "$@" "$a"; shift; done\n'
        'exec qemu-system-x86_64 "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("MKSMOLNB_CACHE", vm.env["MKSMOLNB_CACHE"])
    config = LaunchConfig(kernel=kernels.pvh, network="none", console=Console("none"),
                          timeout=30, append=("smoltest.exit=1",),
                          qemu_args=tuple(a.split("=", 1)[1] for a in DEBUG_EXIT))
    monkeypatch.setenv("MKSMOLNB_QEMU", str(fake))
    prep = prepare(config)
    host = prep.host._replace(qemu=str(fake), kvm=KVM_HARDWARE, nested=False)
    key = fastpath.plan_key(["fallback"])
    result = boot(config, prepared=prep._replace(host=host), plan_key=key)
    assert result.ready and result.exit_status == 3
    assert result.argv[result.argv.index("-cpu") + 1] == "qemu64"
    assert result.argv[result.argv.index("-accel") + 1] == "kvm"
    # The plan is the retry's argv; the next identical boot starts it directly.
    [(saved_key, plan)] = fastpath._load()
    assert saved_key == key and plan["argv"] == result.argv and plan["nested"] is True
    _, spawned = fastpath.try_fast(["fallback"])
    assert spawned is not None and spawned.argv == result.argv
    again = boot(config, prepared=prep._replace(host=host), spawned=spawned, plan_key=key)
    assert again.fast_path and again.exit_status == 3 and again.argv == result.argv


@pytest.mark.qemu
def test_interactive_console_on_a_terminal(vm: Vms, kernels: Kernels) -> None:
    """On a terminal the console is interactive: keystrokes reach QEMU (Ctrl-A X quits)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: the launcher on a pseudo-terminal
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "launcher", str(kernels.pvh), "-N"],
                  vm.env)
    buf = b""
    try:
        deadline = time.monotonic() + 30
        while b"ready in" not in buf and time.monotonic() < deadline:
            buf += os.read(fd, 4096)
        assert b"SERVICE READY" in buf, buf
        os.write(fd, b"\x01x")
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, buf
    assert not wait_gone(vm.needle)


# -- detached VMs that fail before ready, the launcher crashing, stop ---------------------


def wait_for_file_text(path: Path, text: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if text in path.read_text(errors="replace"):
                return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.qemu
@pytest.mark.parametrize("how", ["timeout", "sigint", "sigterm", "sigkill"])
def test_detach_failing_before_ready_leaves_no_qemu(vm: Vms, kernels: Kernels, how: str
                                                    ) -> None:
    """``-d`` leaves QEMU running only once ready: a timeout, Ctrl-C, a kill, even SIGKILL
    of the launcher before that take QEMU down (the keeper stops it)."""
    state = Path(vm.env["MKSMOLNB_STATE"])
    args = ["-d", "--name", "early", str(kernels.pvh), "-N", "-a", "smoltest.noready"]
    if how == "timeout":
        r = vm.run(*args, "--timeout", "1.5")
        assert r.returncode == 1 and "not ready after 1.5 s" in r.stderr, r.stderr
        assert "| Starting smoltest service." in r.stderr and "Traceback" not in r.stderr
    else:
        p = vm.popen(*args, "--timeout", "60")
        wait_for_file_text(state / "early" / "serial.log", "Starting smoltest service.")
        assert qemu_pids(vm.needle), "QEMU should be running"
        p.send_signal({"sigint": signal.SIGINT, "sigterm": signal.SIGTERM,
                       "sigkill": signal.SIGKILL}[how])
        p.wait(10)
    assert not wait_gone(vm.needle), "QEMU outlived a detached launcher that never got ready"
    if how != "sigkill":  # a SIGKILLed launcher cannot clean up; ps forgets the VM
        assert not (state / "early").exists()
    assert json.loads(vm.run("ps", "--json").stdout) == []


@pytest.mark.qemu
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
def test_launcher_crash_takes_qemu_down(vm: Vms, kernels: Kernels,
                                        monkeypatch: pytest.MonkeyPatch, detach: bool) -> None:
    """An exception inside the launcher (here: in the ready callback, the last step before
    a detached VM is left running) stops QEMU and removes the VM's state."""
    from launcher.boot import boot
    from launcher.config import Console, LaunchConfig

    for key in ("MKSMOLNB_CACHE", "MKSMOLNB_STATE"):
        monkeypatch.setenv(key, vm.env[key])

    def crash(_result: object) -> None:
        assert qemu_pids(vm.needle)
        raise RuntimeError("launcher bug")

    config = LaunchConfig(kernel=kernels.pvh, network="none", console=Console("none"),
                          timeout=30, detach=detach)
    with pytest.raises(RuntimeError, match="launcher bug"):
        boot(config, name="crash", on_ready=crash)
    assert not wait_gone(vm.needle)
    assert not (Path(vm.env["MKSMOLNB_STATE"]) / "crash").exists()


@pytest.mark.qemu
def test_stop_guest_honours_acpi_power_button(vm: Vms, kernels: Kernels) -> None:
    r = vm.run("-d", "--name", "acpi", str(kernels.pvh), "-N", "-a", "smoltest.acpi")
    assert r.returncode == 0, r.stderr
    wait_for_file_text(Path(vm.env["MKSMOLNB_STATE"]) / "acpi" / "serial.log",
                       "SMOLTEST acpi pm 0x")  # the guest armed the power button
    start = time.monotonic()
    stop = vm.run("stop", "acpi", "--grace", "20")
    assert stop.returncode == 0, stop.stderr
    assert "(pid" in stop.stderr and "powerdown): the guest powered off (ACPI)" in stop.stderr
    assert time.monotonic() - start < 10
    assert not wait_gone(vm.needle, 0.5)


@pytest.mark.qemu
def test_stop_guest_ignoring_power_button_gets_sigterm(vm: Vms, kernels: Kernels) -> None:
    r = vm.run("-d", "--name", "deaf", str(kernels.pvh), "-N",
               "-a", "smoltest.say=acpi0_at_mainbus0:_ACPI_(deaf)")
    assert r.returncode == 0, r.stderr
    wait_for_file_text(Path(vm.env["MKSMOLNB_STATE"]) / "deaf" / "serial.log", "acpi0 at")
    start = time.monotonic()
    stop = vm.run("stop", "deaf", "--grace", "0.5")
    assert stop.returncode == 0, stop.stderr
    assert "sigterm): the guest ignored the ACPI power button for 0.5 s; QEMU ended on " \
        "SIGTERM" in stop.stderr, stop.stderr
    assert time.monotonic() - start >= 0.5
    assert not wait_gone(vm.needle, 0.5)


@pytest.mark.qemu
def test_stop_guest_whose_kernel_has_no_acpi_gets_sigterm_at_once(vm: Vms, kernels: Kernels
                                                                  ) -> None:
    """The console shows the root mounted and no ``acpi0 at`` (NetBSD's VM kernels): no
    power button to press, no grace to wait."""
    r = vm.run("-d", "--name", "noacpi", str(kernels.pvh), "-N")
    assert r.returncode == 0, r.stderr
    start = time.monotonic()
    stop = vm.run("stop", "noacpi", "--grace", "20")
    assert stop.returncode == 0, stop.stderr
    assert "sigterm): the guest's kernel has no ACPI (no acpi0 on its console); QEMU ended " \
        "on SIGTERM" in stop.stderr, stop.stderr
    assert time.monotonic() - start < 10
    assert not wait_gone(vm.needle, 0.5)


# -- the fast path: a cached plan, and everything that must invalidate it -------------------


def boot_json(vm: Vms, *args: str) -> tuple[dict[str, object], str]:
    console = vm.console_file("fast")
    r = vm.run(*args, "-a", "smoltest.exit=1", *DEBUG_EXIT, "--json",
                "--console", f"file:{console}", "--timeout", "30")
    assert r.returncode == 3, r.stderr
    return json.loads(r.stdout.splitlines()[0]), console.read_text()


@pytest.mark.qemu
def test_fast_path_reuses_a_plan_until_the_kernel_changes(vm: Vms, kernels: Kernels,
                                                          disk: Path) -> None:
    kernel = kernels.mmio
    first, con1 = boot_json(vm, str(kernel), str(disk))
    second, con2 = boot_json(vm, str(kernel), str(disk))
    assert (first["fast_path"], second["fast_path"]) == (False, True)
    assert second["argv"] == first["argv"]
    stages = second["timing"]["stages"]  # type: ignore[index]
    order = [stages[s] for s in ("first_byte", "banner", "root", "rc", "ready")]
    assert all(t is not None for t in order) and order == sorted(order), stages
    assert parse_console(con2).cmdline == parse_console(con1).cmdline
    assert sorted((d.transport, d.kind) for d in parse_console(con2).virtio) == \
        [("mmio", "blk"), ("mmio", "net")]
    # The same path, now a multiboot kernel: the plan is stale, the argv computed again.
    kernel.write_bytes(kernels.multiboot.read_bytes())
    third, con3 = boot_json(vm, str(kernel), str(disk))
    assert third["fast_path"] is False
    argv = third["argv"]
    assert isinstance(argv, list) and argv[argv.index("-M") + 1] == "pc"
    assert parse_console(con3).boot == "multiboot"
    assert boot_json(vm, str(kernel), str(disk))[0]["fast_path"] is True


@pytest.mark.qemu
def test_fast_path_still_checks_ports_and_images(vm: Vms, kernels: Kernels, disk: Path
                                                 ) -> None:
    port = free_port()
    args = [str(kernels.pvh), str(disk), "-p", f"{port}:80"]
    assert boot_json(vm, *args)[0]["fast_path"] is False
    assert boot_json(vm, *args)[0]["fast_path"] is True
    with socket.socket() as s:  # someone else takes the host port
        s.bind(("127.0.0.1", port))
        s.listen()
        r = vm.run(*args, "-a", "smoltest.exit=1", *DEBUG_EXIT, "--timeout", "30")
        assert r.returncode == 1
        assert f"host port tcp:127.0.0.1:{port} is not available" in r.stderr, r.stderr
    # A detached VM now uses the image read-write.
    d = vm.run("-d", "--name", "holder", str(kernels.pvh), str(disk), "-N")
    assert d.returncode == 0, d.stderr
    r = vm.run(*args, "-a", "smoltest.exit=1", *DEBUG_EXIT, "--timeout", "30")
    assert r.returncode == 1 and "in use by the running VM 'holder'" in r.stderr, r.stderr
    assert vm.run("stop", "holder", "--force").returncode == 0
    assert boot_json(vm, *args)[0]["fast_path"] is True


@pytest.mark.qemu
def test_fast_path_qemu_dies_with_the_launcher(vm: Vms, kernels: Kernels) -> None:
    args = [str(kernels.pvh), "-N", "--console", "none", "--json"]
    for expect_fast in (False, True):
        p = vm.popen(*args)
        assert p.stdout is not None
        result = json.loads(p.stdout.readline())
        assert result["fast_path"] is expect_fast
        assert qemu_pids(vm.needle) == [result["pid"]]
        p.send_signal(signal.SIGKILL if expect_fast else signal.SIGTERM)
        p.wait(10)
        assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_fast_path_timeout_and_early_exit_are_reported_alike(vm: Vms, kernels: Kernels
                                                             ) -> None:
    """The relay that runs before readiness on the fast path hands over timeouts and a
    QEMU that exits early exactly as the ordinary path reports them."""
    for fast in (False, True):
        r = vm.run(str(kernels.pvh), "-N", "-a", "smoltest.noready", "--timeout", "1",
                   "--debug")
        assert r.returncode == 1 and "not ready after 1 s" in r.stderr, r.stderr
        assert ("(started from a cached plan)" in r.stderr) is fast
        assert "| Starting smoltest service." in r.stderr
        assert not wait_gone(vm.needle, 0.5)
    for fast in (False, True):
        r = vm.run(str(kernels.pvh), "-N", "-a", "smoltest.panic", "--timeout", "30",
                   "--debug")
        assert r.returncode == 1, r.stderr
        assert ("(started from a cached plan)" in r.stderr) is fast
        assert "the guest's kernel panicked (panic: smoltest); QEMU stopped" in r.stderr
        assert "| panic: smoltest" in r.stderr
    plans = Path(vm.env["MKSMOLNB_CACHE"]) / "plans.marshal"
    assert plans.exists()


@pytest.mark.qemu
def test_fast_path_ctrl_c_before_ready(vm: Vms, kernels: Kernels) -> None:
    """Ctrl-C while the fast path's relay waits for the ready line: QEMU stopped, exit 130."""
    console = vm.console_file("noready")
    args = [str(kernels.pvh), "-N", "-a", "smoltest.noready", "--console", f"file:{console}",
            "--debug"]
    for fast in (False, True):
        console.unlink(missing_ok=True)
        p = vm.popen(*args)
        wait_for_file_text(console, "Starting smoltest service.")
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10)
        assert p.returncode == 130 and "interrupted" in err, err
        assert ("(started from a cached plan)" in err) is fast
        assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_fast_path_argv_mismatch_is_replaced(vm: Vms, kernels: Kernels) -> None:
    """Should a plan's argv ever differ from the one computed after the spawn, that QEMU is
    stopped and the right one started (here: a plan edited to boot with 64 MB)."""
    import marshal

    args = [str(kernels.pvh), "-N"]
    first, _ = boot_json(vm, *args)
    plans_file = Path(vm.env["MKSMOLNB_CACHE"]) / "plans.marshal"
    plans = marshal.loads(plans_file.read_bytes())
    assert len(plans) == 1
    argv = plans[0][1]["argv"]
    argv[argv.index("-m") + 1] = "64"
    plans_file.write_bytes(marshal.dumps(plans))
    second, console = boot_json(vm, *args)
    assert second["fast_path"] is False and second["argv"] == first["argv"]
    mem = parse_console(console).mem_kib
    assert mem is not None and mem > 64 * 1024  # the computed -m 256, not the plan's 64
    assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_stop_microvm_without_acpi_sends_sigterm_at_once(vm: Vms, kernels: Kernels) -> None:
    """``microvm,acpi=off`` has no power button: no grace period is spent waiting on it."""
    r = vm.run("-d", "--name", "micro", str(kernels.mmio), "-N")
    assert r.returncode == 0, r.stderr
    start = time.monotonic()
    stop = vm.run("stop", "micro")  # default grace: 5 s
    assert stop.returncode == 0, stop.stderr
    assert "sigterm): the machine has no ACPI power button; QEMU ended on SIGTERM" \
        in stop.stderr, stop.stderr
    assert time.monotonic() - start < 4
    assert not wait_gone(vm.needle, 0.5)


# -- signals, pipes and odd inputs on both paths ---------------------------------------------


@pytest.mark.qemu
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_signal_before_ready_restores_the_terminal(vm: Vms, kernels: Kernels, sig: int
                                                   ) -> None:
    """SIGTERM or SIGHUP before the ready line, console interactive on a terminal (QEMU
    makes it raw): exit 128+N, the terminal back as it was, no QEMU left; on the
    ordinary path and on the fast path alike."""
    import select
    import termios

    for fast in (False, True):
        master, slave = os.openpty()
        before = termios.tcgetattr(slave)
        try:
            p = subprocess.Popen(vm.argv(str(kernels.pvh), "-N", "-a", "smoltest.noready",
                                         "--debug"),
                                 stdin=slave, stdout=slave, stderr=slave, env=vm.env,
                                 cwd=REPO, start_new_session=True)
            buf = b""
            deadline = time.monotonic() + 30
            while b"Starting smoltest" not in buf and time.monotonic() < deadline:
                if select.select([master], [], [], 0.2)[0]:
                    buf += os.read(master, 4096)
            assert b"Starting smoltest" in buf, buf
            assert termios.tcgetattr(slave)[3] & termios.ECHO == 0  # raw: QEMU's console
            p.send_signal(sig)
            rc = p.wait(10)
            while select.select([master], [], [], 0.1)[0]:
                buf += os.read(master, 4096)
            after = termios.tcgetattr(slave)
        finally:
            os.close(slave)
            os.close(master)
        assert (b"(started from a cached plan)" in buf) is fast, buf
        assert rc == 128 + sig, buf
        assert b"Traceback" not in buf, buf
        assert after[3] & termios.ECHO and after[3] & termios.ICANON
        assert after == before
        assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_console_piped_into_a_reader_that_stops(vm: Vms, kernels: Kernels) -> None:
    """``startnb KERNEL | head -1``: the reader goes away while the console still flows.
    Both paths end quietly (exit 1, no traceback) and stop QEMU."""
    for fast in (False, True):
        r, w = os.pipe()
        p = subprocess.Popen(vm.argv(str(kernels.pvh), "-N", "-a", "smoltest.spin=800",
                                     "--timeout", "30", "--debug"),
                             stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.PIPE,
                             env=vm.env, cwd=REPO, text=True)
        vm.procs.append(p)
        os.close(w)
        with os.fdopen(r, "rb") as reader:
            first = reader.readline()  # head -1
        assert first.startswith(b"SMOLTEST boot"), first
        _, err = p.communicate(timeout=30)
        assert ("(started from a cached plan)" in err) is fast, err
        assert p.returncode == 1 and "Traceback" not in err, err
        assert "Exception ignored" not in err, err
        assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_detached_qemu_keeps_no_descriptor_of_the_caller(vm: Vms, kernels: Kernels) -> None:
    """A caller that waits for end of file on a pipe it gave ``startnb -d`` gets it when
    ``startnb`` exits, not when the VM is stopped."""
    import select

    r, w = os.pipe()
    p = subprocess.run(vm.argv("-d", "--name", "fds", str(kernels.pvh), "-N"), env=vm.env,
                       cwd=REPO, pass_fds=(w,), capture_output=True, text=True, timeout=60,
                       check=False)
    os.close(w)
    try:
        assert p.returncode == 0, p.stderr
        assert select.select([r], [], [], 5)[0] and os.read(r, 1) == b""
        pid = int((Path(vm.env["MKSMOLNB_STATE"]) / "fds" / "qemu.pid").read_text())
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))[:3] == [0, 1, 2]
    finally:
        os.close(r)
        vm.run("stop", "fds", "--force")


@pytest.mark.qemu
def test_console_file_in_a_missing_directory(vm: Vms, kernels: Kernels, tmp_path: Path
                                             ) -> None:
    """One line naming the directory, QEMU never started, no plan saved (the second run
    says the same, from the ordinary path)."""
    for _ in range(2):
        r = vm.run(str(kernels.pvh), "-N", "--console", f"file:{tmp_path}/no/such/x",
                   "--timeout", "30")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"directory of the console file not found: {tmp_path}/no/such" in r.stderr
        assert not (Path(vm.env["MKSMOLNB_CACHE"]) / "plans.marshal").exists()
    assert not qemu_pids(vm.needle)


@pytest.mark.qemu
def test_no_plan_saved_for_a_qemu_that_never_ran(vm: Vms, kernels: Kernels) -> None:
    """QEMU refusing its command line (here an unknown option) exits before a console
    byte: nothing is cached, the next run explains again from the ordinary path."""
    for _ in range(2):
        r = vm.run(str(kernels.pvh), "-N", "--qemu-arg=-no-such-option", "--timeout", "30",
                   "--debug")
        assert r.returncode == 1 and "QEMU exited with status 1" in r.stderr, r.stderr
        assert "(started from a cached plan)" not in r.stderr
        assert not (Path(vm.env["MKSMOLNB_CACHE"]) / "plans.marshal").exists()


@pytest.mark.qemu
def test_fast_path_console_file_that_cannot_be_opened(vm: Vms, kernels: Kernels,
                                                      tmp_path: Path) -> None:
    """The plan's console file became a directory: the QEMU the fast path started is
    stopped and the ordinary path says what is wrong, in one line."""
    console = tmp_path / "serial.log"
    args = [str(kernels.pvh), "-N", "-a", "smoltest.exit=1", *DEBUG_EXIT, "--timeout", "30",
            "--console", f"file:{console}", "--debug"]
    assert vm.run(*args).returncode == 3
    console.unlink()
    console.mkdir()
    r = vm.run(*args)
    assert "(started from a cached plan)" in r.stderr, r.stderr
    assert r.returncode == 1 and f"console file {console} is a directory" in r.stderr
    assert "IsADirectoryError" not in r.stderr, r.stderr  # (--debug shows the InputError's)
    assert not wait_gone(vm.needle)


@pytest.mark.qemu
def test_ready_line_among_the_last_output_of_an_exiting_qemu(
        vm: Vms, kernels: Kernels, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest that prints its ready line and powers off at once: the launcher may see
    QEMU gone before it read that line; it is still ready, not "exited before ready".
    The race is forced: nothing is read until QEMU has exited."""
    from launcher import vm as vm_module
    from launcher.boot import boot, prepare
    from launcher.config import Console, LaunchConfig

    monkeypatch.setenv("MKSMOLNB_CACHE", vm.env["MKSMOLNB_CACHE"])
    real_read = vm_module.Vm.read_console
    held: list[bool] = []

    def read_after_exit(self: vm_module.Vm, timeout: float) -> list[tuple[float, bytes]]:
        if not held:
            held.append(True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and os.waitid(
                    os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
                time.sleep(0.01)
            return []
        return real_read(self, timeout)

    monkeypatch.setattr(vm_module.Vm, "read_console", read_after_exit)
    config = LaunchConfig(kernel=kernels.pvh, network="none", console=Console("none"),
                          timeout=30, append=("smoltest.exit=1",),
                          qemu_args=tuple(a.split("=", 1)[1] for a in DEBUG_EXIT))
    result = boot(config, prepared=prepare(config))
    assert held and result.ready and result.exit_status == 3
    assert result.report.stages["ready"] is not None
