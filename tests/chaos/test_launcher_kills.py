"""The kill matrix of ``startnb -d``: SIGKILL, SIGTERM, SIGINT and SIGHUP, delivered with
``os.kill`` to startnb, its keeper, both, or QEMU, before QEMU spawns, before the guest is
ready, after it is ready and during ``startnb stop``.

Each test covers one (phase, target) pair and runs the four signals at once, one VM each,
all from one read-only image. Afterwards, whatever happened: no process of the test is
left (found by the test's own directory in their argv, never globally), ``startnb ps``
lists exactly the QEMUs that run, no lock is left behind (the image boots read-write again
under a name a killed VM used) and each process ended within a bound well below the
``--timeout`` the boots were given.

After ready ``startnb -d`` has exited: its targets are the keeper and QEMU only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kernels import TestKernels

from conftest import REPO, live_processes, qemu_pids

pytestmark = [pytest.mark.chaos, pytest.mark.qemu]

SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: How long any process of a case may take to react; the boots have --timeout 60.
BOUND = 10.0


@dataclass
class Lab:
    """One test's directory (kernel, image, VM state): its name is in every argv."""

    root: Path
    kernel: Path
    image: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, MKSMOLNB_STATE=str(self.state),
                    MKSMOLNB_CACHE=str(self.root / "cache"))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "launcher", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=REPO, env=self.env, text=True,
                              capture_output=True, timeout=60, check=False)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), cwd=REPO, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def boot(self, name: str, *extra: str, kernel: Path | None = None
             ) -> subprocess.Popen[str]:
        return self.popen("-d", "--name", name, "--ro", "-N", "--timeout", "60",
                          str(kernel or self.kernel), str(self.image), *extra)

    def qemu(self, name: str) -> int | None:
        pids = qemu_pids(str(self.state / name) + "/")
        return pids[0] if pids else None

    def keeper(self, name: str) -> int:
        return int((self.state / name / "keeper.pid").read_text())

    def ps(self) -> list[dict[str, object]]:
        r = self.run("ps", "--json")
        assert r.returncode == 0, r.stderr
        return list(json.loads(r.stdout))

    def processes(self) -> list[tuple[int, list[bytes]]]:
        needle = str(self.root).encode()
        return [(pid, argv) for pid, argv in live_processes()
                if pid != os.getpid() and any(needle in a for a in argv)]

    def wait_no_process(self, seconds: float = BOUND) -> list[tuple[int, list[bytes]]]:
        deadline = time.monotonic() + seconds
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def assert_ps_truthful(self) -> None:
        listed = {int(str(v["pid"])) for v in self.ps()}
        running = set(qemu_pids(str(self.root)))
        assert listed == running, f"ps lists {listed}, QEMUs running: {running}"

    def assert_clean(self, reuse: str) -> None:
        """Nothing of the test runs, ps agrees, the image and the name ``reuse`` are free:
        a read-write boot of the image under that name gets ready."""
        left = self.wait_no_process()
        assert not left, f"processes left: {left}"
        self.assert_ps_truthful()
        from launcher.proc import image_locked

        assert not image_locked(self.image), "the image is still locked"
        r = self.run("-d", "--name", reuse, "-N", "--timeout", "60", str(self.kernel),
                     str(self.image))
        assert r.returncode == 0, r.stderr
        assert self.run("stop", "--force", reuse).returncode == 0
        left = self.wait_no_process()
        assert not left, f"processes left: {left}"
        assert self.ps() == []


@pytest.fixture
def lab(test_kernels: TestKernels) -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="snbc-", dir="/tmp"))  # short: unix socket paths
    kernel = root / "smoltest-pvh.elf"
    shutil.copyfile(test_kernels.pvh, kernel)
    image = root / "disk.img"
    with image.open("wb") as f:
        f.truncate(1 << 20)
    lab = Lab(root, kernel, image)
    try:
        yield lab
    finally:
        left = lab.processes()
        for pid, _ in left:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the test left: {left}"


def _wait(what: str, check: object, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _finish(p: subprocess.Popen[str], seconds: float = BOUND) -> tuple[int, str]:
    """Wait for ``p`` at most ``seconds``: its exit code and standard error."""
    try:
        _, err = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"{p.args} did not end within {seconds} s") from None
    return p.returncode, err


def _ended_by(sig: signal.Signals, code: int) -> bool:
    """The exit code of a startnb that got ``sig``: the signal itself, or 128+N (the
    command handles SIGINT, SIGTERM and SIGHUP and cleans up first)."""
    return code in (-sig, 128 + sig)


def _names() -> list[str]:
    return [s.name.lower() for s in SIGNALS]


def _serial_has(lab: Lab, name: str, text: str) -> bool:
    try:
        return text in (lab.state / name / "serial.log").read_text(errors="replace")
    except OSError:
        return False


# -- before QEMU spawns ---------------------------------------------------------------------


def test_startnb_killed_before_qemu_spawns(lab: Lab) -> None:
    """startnb is held before it spawns anything: its kernel is a FIFO it is reading."""
    fifo = lab.root / "held-kernel"
    os.mkfifo(fifo)
    procs = {name: lab.boot(name, kernel=fifo) for name in _names()}
    writer = -1
    try:
        # Opening the write end succeeds once a reader has it open; each reader then blocks
        # reading it (nothing is written while we hold it).
        def readers_in() -> bool:
            nonlocal writer
            if writer < 0:
                try:
                    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    return False
            return all(_reading(p.pid, fifo) for p in procs.values())

        _wait("startnb to open its kernel", readers_in)
        assert qemu_pids(str(lab.root)) == []
        for sig, p in zip(SIGNALS, procs.values(), strict=True):
            os.kill(p.pid, sig)
        for sig, p in zip(SIGNALS, procs.values(), strict=True):
            code, err = _finish(p)
            assert _ended_by(sig, code) and "Traceback" not in err, (sig, code, err)
    finally:
        if writer >= 0:
            os.close(writer)
    assert not any(lab.state.glob("*/qemu.pid"))
    lab.assert_clean(reuse="sigkill")


def _reading(pid: int, path: Path) -> bool:
    """Has process ``pid`` a descriptor open on ``path``?"""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


# -- before the guest is ready ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["startnb", "keeper", "both", "qemu"])
def test_killed_before_ready(lab: Lab, target: str) -> None:
    """The guest never gets ready (``smoltest.noready``): whichever dies, QEMU dies with
    it, and a surviving startnb says what happened in one line, at once."""
    procs = {name: lab.boot(name, "-a", "smoltest.noready") for name in _names()}
    for name in procs:
        _wait(f"{name} to boot", lambda n=name: _serial_has(lab, n, "Starting smoltest"))
    qemus = {name: lab.qemu(name) for name in procs}
    keepers = {name: lab.keeper(name) for name in procs}
    assert all(qemus.values()), qemus
    started = time.monotonic()
    for sig, (name, p) in zip(SIGNALS, procs.items(), strict=True):
        if target in ("keeper", "both"):
            os.kill(keepers[name], sig)
        if target in ("startnb", "both"):
            os.kill(p.pid, sig)
        if target == "qemu":
            os.kill(qemus[name], sig)  # type: ignore[arg-type]
    for sig, (name, p) in zip(SIGNALS, procs.items(), strict=True):
        code, err = _finish(p)
        assert "Traceback" not in err, err
        if target == "startnb" or (target == "both" and sig == signal.SIGKILL):
            assert _ended_by(sig, code), (sig, code, err)
        elif target == "keeper":
            assert code == 1, err
            how = "was killed (SIGKILL)" if sig == signal.SIGKILL else f"got {sig.name}"
            assert f"error: the keeper of QEMU (pid {keepers[name]}) {how} before the " \
                "VM was ready; QEMU stopped" in err, err
        elif target == "qemu":
            assert code == 1 and "before the service was ready" in err, err
        else:  # both, a catchable signal: either may notice first
            assert code == 1 or _ended_by(sig, code), (sig, code, err)
    assert time.monotonic() - started < BOUND
    lab.assert_clean(reuse="sigkill")


# -- after ready -----------------------------------------------------------------------------


def _boot_ready(lab: Lab, names: list[str], *extra: str) -> dict[str, int]:
    """Detached VMs, all ready (``startnb -d`` exited 0): name → QEMU pid."""
    procs = {name: lab.boot(name, *extra) for name in names}
    for p in procs.values():
        code, err = _finish(p, 60)
        assert code == 0, err
    qemus = {name: lab.qemu(name) for name in names}
    assert all(qemus.values()), qemus
    lab.assert_ps_truthful()
    return qemus  # type: ignore[return-value]


@pytest.mark.parametrize("target", ["keeper", "qemu"])
def test_killed_after_ready(lab: Lab, target: str) -> None:
    """The keeper stays QEMU's parent: killed, it takes QEMU with it (SIGKILL through
    PR_SET_PDEATHSIG; other signals: it stops QEMU and records how it ended); QEMU killed,
    the keeper records its exit status and ends."""
    qemus = _boot_ready(lab, _names())
    keepers = {name: lab.keeper(name) for name in qemus}
    for sig, name in zip(SIGNALS, qemus, strict=True):
        os.kill(keepers[name] if target == "keeper" else qemus[name], sig)
    for sig, name in zip(SIGNALS, qemus, strict=True):
        keeper = keepers[name]
        _wait(f"{name}'s keeper to end", lambda k=keeper: not _alive(k), BOUND)
        exit_file = lab.state / name / "qemu.exit"
        if target == "keeper" and sig == signal.SIGKILL:
            assert not exit_file.exists()
        else:
            assert exit_file.read_text().strip().lstrip("-").isdigit()
    lab.assert_ps_truthful()
    assert lab.ps() == []
    lab.assert_clean(reuse="sigkill")


def _alive(pid: int) -> bool:
    from launcher.state import alive

    return alive(pid)


# -- during startnb stop ---------------------------------------------------------------------


def _in_grace_wait(pid: int) -> bool:
    """``startnb stop`` has pressed the power button and sleeps, polling QEMU."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "nanosleep" in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("target", ["stop", "keeper", "both", "qemu"])
def test_killed_during_stop(lab: Lab, target: str) -> None:
    """``startnb stop`` waits out a guest that ignores the power button; meanwhile the
    stop command, the keeper, both or QEMU get a signal. A killed stop leaves the VM
    running and listed; the rest take QEMU down. ``stop --all`` ends what is left."""
    # a console showing ACPI (else stop would not wait for the power button)
    qemus = _boot_ready(lab, _names(), "-a", "smoltest.say=acpi0_at_mainbus0:_ACPI_(deaf)")
    for name in qemus:
        log = lab.state / name / "serial.log"
        _wait(f"{name}'s acpi0 line", lambda log=log: b"acpi0 at" in log.read_bytes())
    keepers = {name: lab.keeper(name) for name in qemus}
    stops = {name: lab.popen("stop", name, "--grace", "60") for name in qemus}
    for name, p in stops.items():
        _wait(f"stop {name} to press the button", lambda p=p: _in_grace_wait(p.pid))
    for sig, name in zip(SIGNALS, qemus, strict=True):
        if target in ("keeper", "both"):
            os.kill(keepers[name], sig)
        if target in ("stop", "both"):
            os.kill(stops[name].pid, sig)
        if target == "qemu":
            os.kill(qemus[name], sig)
    for sig, (name, p) in zip(SIGNALS, stops.items(), strict=True):
        code, err = _finish(p)
        assert "Traceback" not in err, err
        if target in ("stop", "both"):
            assert _ended_by(sig, code), (sig, code, err)
        else:  # QEMU went away while it waited: not the guest's doing, and stop says so
            assert code == 0 and f"stopped {name}" in err, err
            assert "ended): QEMU " in err and "before the guest powered off" in err, err
    if target == "stop":  # the VMs still run, and say so
        assert sorted(v["name"] for v in lab.ps()) == sorted(qemus)  # type: ignore[type-var]
    else:
        _wait("QEMU to end", lambda: not qemu_pids(str(lab.root)), BOUND)
    lab.assert_ps_truthful()
    r = lab.run("stop", "--all", "--force")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert lab.ps() == [] and not any(lab.state.iterdir())
    lab.assert_clean(reuse="sigkill")
