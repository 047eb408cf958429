"""Process lifetime without QEMU (what a spawned child inherits: test_spawn.py): how a
fast-path QEMU is stopped, the keeper of a detached QEMU when the launcher is gone, the
relay's memory, and the plan cache's defences (malformed files, changed code, retargeted
image links)."""

from __future__ import annotations

import json
import marshal
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.pipes import read_all

from conftest import REPO, live_processes
from launcher import fastpath, proc
from launcher.spawned import Spawned, relay_until_ready
from launcher.vm import TAIL_LINES
from smolfs.spawn import spawn


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MKSMOLNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MKSMOLNB_STATE", str(tmp_path / "state"))
    return tmp_path / "cache"


def _pids_with_arg(arg: str) -> list[int]:
    return [pid for pid, argv in live_processes() if arg.encode() in argv]


# -- Spawned.kill: SIGTERM first ------------------------------------------------------------


def test_spawned_kill_sends_sigterm_before_sigkill() -> None:
    """A fast-path QEMU is asked to stop (SIGTERM: QEMU restores the terminal it made raw)
    and killed only when it does not within the grace period."""
    script = ("trap 'echo got-term; exit 0' TERM; echo up; "
              "while :; do sleep 0.02; done")
    for ignores in (False, True):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        code = ("trap '' TERM; echo up; while :; do sleep 0.02; done" if ignores else script)
        pid = spawn(["/bin/sh", "-c", code], 0, out_w, err_w, die_with_parent=True)
        os.close(out_w)
        os.close(err_w)
        assert os.read(out_r, 3) == b"up\n"
        dup = os.dup(out_r)  # Spawned.kill closes its own copy
        spawned = Spawned(pid, ["sh"], time.monotonic(), time.time(), out_r, err_r,
                                   interactive=False)
        start = time.monotonic()
        spawned.kill(grace=0.5)
        took = time.monotonic() - start
        rest = read_all(dup)
        if ignores:
            assert rest == b"" and took >= 0.5
        else:
            assert rest == b"got-term\n" and took < 0.5
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped


def test_spawned_kill_closes_the_console_its_relay_opened(tmp_path: Path) -> None:
    from launcher.relay import ConsoleOut

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = spawn(["/bin/sleep", "30"], 0, out_w, err_w, die_with_parent=True)
    os.close(out_w)
    os.close(err_w)
    spawned = Spawned(pid, ["sleep"], time.monotonic(), time.time(), out_r, err_r,
                               interactive=False)
    console = ConsoleOut("file", str(tmp_path / "serial.log"), False, 0.0)
    spawned.console = console
    spawned.kill()
    assert console.out is not None and console.out.closed


# -- the keeper of a detached QEMU ----------------------------------------------------------


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique sleep duration: names the processes this test starts."""
    arg = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6:06d}"
    yield arg
    for pid in _pids_with_arg(arg):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("launcher_gone", ["before-pid-report", "after-pid-report"])
def test_keeper_stops_its_child_when_the_launcher_is_gone(marker: str, launcher_gone: str
                                                          ) -> None:
    """The launcher died between forking the keeper and reading its report: the report
    write fails (EPIPE) and the keeper must still stop its child, not leave it orphaned."""
    early = launcher_gone == "before-pid-report"
    keeper, ctl_w, st_r = _fork_keeper(marker, launcher_gone=early)
    if not early:
        assert os.read(st_r, 64).startswith(b"pid ")
        os.close(st_r)  # the launcher goes away: both pipes closed
        os.close(ctl_w)
    os.waitpid(keeper, 0)
    assert _pids_with_arg(marker) == [], "the keeper left its child running"


def _fork_keeper(marker: str, launcher_gone: bool = False, exit_file: Path | None = None,
                 state: Path | None = None, tied: bool = True) -> tuple[int, int, int]:
    """Fork a keeper of ``sleep MARKER`` as the launcher does: (keeper pid, the control
    pipe's write end, the report pipe's read end). ``launcher_gone``: both ends are
    closed before the fork (returned as -1), as when the launcher died at once.
    ``state``: the directory of its serial log and manifest. ``tied=False``: as where no
    pseudo-terminal can be had (the child gets ``PR_SET_PDEATHSIG`` then)."""
    import launcher.keeper
    from launcher.keeper import keep as _keep

    ctl_r, ctl_w = os.pipe()
    st_r, st_w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    if launcher_gone:
        os.close(st_r)  # nobody reads the report: its write fails with EPIPE
        os.close(ctl_w)  # and the control pipe is at end of file: stop the child
        st_r = ctl_w = -1
    keeper = os.fork()
    if keeper == 0:
        try:
            for fd in (ctl_w, st_r):
                if fd >= 0:
                    os.close(fd)
            if not tied:
                launcher.keeper.hold_terminal = lambda: None  # type: ignore[assignment]
            _keep(["/bin/sleep", marker], null, null, ctl_r, st_w,
                  str(exit_file) if exit_file else None,
                  serial_log=str(state / "serial.log") if state else None,
                  manifest=str(state / "manifest.json") if state else None)
        finally:
            os._exit(0)
    for fd in (ctl_r, st_w, null):
        os.close(fd)
    return keeper, ctl_w, st_r


def _stat(pid: int) -> tuple[int, ...]:
    """From ``/proc/PID/stat``: parent, process group, session, controlling terminal."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return tuple(int(x) for x in fields[1:5])


def _parent(pid: int) -> int:
    return _stat(pid)[0]


def _wait_exited(pid: int, seconds: float = 5.0) -> int:
    """Reap our child ``pid`` within ``seconds``; its exit code."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"process {pid} still running after {seconds} s")


def _gone(marker: str, seconds: float = 3.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (pids := _pids_with_arg(marker)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pids


def _read_to_eof(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 64):
        out += chunk
    return out


def _detached_keeper(marker: str, state: Path, manifest: str, log: bytes | None = None
                     ) -> tuple[int, int, int, int]:
    """A keeper of ``sleep MARKER`` (:func:`_fork_keeper`) told ``d``, as once the VM is
    ready, its files in ``state``: ``manifest`` written there first, and ``log`` as its
    serial log when given. (Keeper pid, the control pipe's write end, the report pipe's
    read end, the child's pid.)"""
    (state / "manifest.json").write_text(manifest)
    if log is not None:
        (state / "serial.log").write_bytes(log)
    keeper, ctl_w, st_r = _fork_keeper(marker, exit_file=state / "qemu.exit", state=state)
    pid = int(os.read(st_r, 64).split()[1])
    os.write(ctl_w, b"d")
    assert _read_to_eof(st_r) == b""
    return keeper, ctl_w, st_r, pid


def test_keeper_stays_the_parent_once_detached_and_records_the_exit(marker: str,
                                                                    tmp_path: Path) -> None:
    """After ``d`` the keeper lets its child run, stays its parent (so the child's
    ``PR_SET_PDEATHSIG`` still points at it), holds nothing of the caller's, and writes
    the child's exit status when it ends."""
    exit_file = tmp_path / "qemu.exit"
    keeper, ctl_w, st_r = _fork_keeper(marker, exit_file=exit_file)
    try:
        pid = int(os.read(st_r, 64).split()[1])
        os.write(ctl_w, b"d")
        assert _read_to_eof(st_r) == b""  # the keeper closed its report pipe
        assert _pids_with_arg(marker) == [pid] and _parent(pid) == keeper
        held = {int(fd): os.readlink(f"/proc/{keeper}/fd/{fd}")
                for fd in os.listdir(f"/proc/{keeper}/fd")}
        assert sorted(held) == [0, 1, 2, 3, 4] and all(  # and its terminal's two sides
            held[fd] == "/dev/ptmx" or held[fd].startswith("/dev/pts/") for fd in (3, 4)
        ), held
        # the child: in the keeper's process group and session, whose terminal it is
        assert _stat(pid)[1:] == _stat(keeper)[1:] and _stat(keeper)[1] == keeper
        assert _stat(keeper)[3] != 0
        with open(f"/proc/{keeper}/comm") as f:
            assert f.read() == "startnb-keeper\n"  # what ps -e and top show
        os.kill(pid, signal.SIGTERM)
        assert _wait_exited(keeper) == 0
    finally:
        os.close(ctl_w)
        os.close(st_r)
    assert exit_file.read_text() == f"{-signal.SIGTERM}\n"


@pytest.mark.parametrize("tied", [True, False], ids=["terminal", "pdeathsig"])
@pytest.mark.parametrize("detached", [False, True], ids=["before-ready", "after-ready"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT,
                                 signal.SIGHUP], ids=lambda s: s.name)
def test_a_signalled_keeper_takes_its_child_with_it(marker: str, tmp_path: Path,
                                                    detached: bool, sig: signal.Signals,
                                                    tied: bool) -> None:
    """However the keeper ends, its child does not outlive it: SIGKILL through the SIGHUP
    the system sends the process group of a terminal's controlling process when it ends
    (or, where the keeper could not have a terminal, the child's ``PR_SET_PDEATHSIG``);
    SIGINT, SIGTERM, SIGHUP by stopping the child first (before ready also saying so on
    the report pipe: ``signal N``, then ``exit S``)."""
    exit_file = tmp_path / "qemu.exit"
    keeper, ctl_w, st_r = _fork_keeper(marker, exit_file=exit_file, tied=tied)
    try:
        assert os.read(st_r, 64).startswith(b"pid ")
        if detached:
            os.write(ctl_w, b"d")
            assert _read_to_eof(st_r) == b""
        os.kill(keeper, sig)
        code = _wait_exited(keeper)
        assert not _gone(marker), "the child outlived its keeper"
        reports = _read_to_eof(st_r)
    finally:
        os.close(ctl_w)
        os.close(st_r)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL and reports == b"" and not exit_file.exists()
        return
    assert code == 0
    assert exit_file.read_text() == f"{-signal.SIGTERM}\n"
    assert reports == (b"" if detached else f"signal {int(sig)}\nexit -15\n".encode())


# -- the keeper follows the serial log of a detached VM -----------------------------------

BOOT_LINES = (b"NetBSD 7.99.4 (SMOL) #0: Mon Jan  1 00:00:00 UTC 2024\r\n"
              b"root file system type: ffs\r\nhalt: halted by root\r\n"
              b"sh: panic: not found\r\nSERVICE READY\r\n")


@pytest.mark.parametrize(("say", "kind", "line"), [
    (b"syncing disks... done\r\nThe operating system has halted.\r\n"
     b"Please press any key to reboot.\r\n", "halted", "The operating system has halted."),
    (b"[  12.3456789] The operating system has halted.\r\n", "halted",
     "The operating system has halted."),  # NetBSD >= 9 stamps kernel lines with uptime
    (b"panic: kernel diagnostic assertion failed\r\nfatal breakpoint trap in supervisor "
     b"mode\r\nStopped in pid 0.1 (system) at 0xffffffff802a3ef5: leave\r\ndb{0}> ",
     "panic", "panic: kernel diagnostic assertion failed"),
], ids=["halted", "halted-stamped", "panic"])
def test_keeper_stops_its_child_when_the_guest_ends(marker: str, tmp_path: Path, say: bytes,
                                                    kind: str, line: str) -> None:
    """Once detached, the keeper reads the serial log (from its start, even if it appears
    late): lines that merely look alike leave the child running; a halt or a panic line
    gets ``guest_end`` into the manifest, the child stopped (SIGTERM), its exit status
    recorded, and the keeper gone."""
    exit_file = tmp_path / "qemu.exit"
    manifest = tmp_path / "manifest.json"
    keeper, ctl_w, st_r, pid = _detached_keeper(
        marker, tmp_path, json.dumps({"name": "vm", "ready": True}))
    try:
        with open(tmp_path / "serial.log", "wb", buffering=0) as log:
            log.write(BOOT_LINES)
            time.sleep(0.5)  # several of the keeper's reads
            assert _pids_with_arg(marker) == [pid], "the child was stopped too early"
            for i in range(0, len(say), 7):  # lines split across reads
                log.write(say[i:i + 7])
        assert _wait_exited(keeper, 10) == 0
    finally:
        os.close(ctl_w)
        os.close(st_r)
    assert not _gone(marker)
    assert json.loads(manifest.read_text()) == {
        "name": "vm", "ready": True, "guest_end": {"kind": kind, "line": line}}
    assert exit_file.read_text() == f"{-signal.SIGTERM}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json", "qemu.exit", "serial.log"]


def test_keeper_without_an_end_leaves_the_manifest_alone(marker: str, tmp_path: Path
                                                         ) -> None:
    """A child that ends by itself (QEMU stopped by 'startnb stop') ends the keeper at
    once, with no ``guest_end``."""
    manifest = tmp_path / "manifest.json"
    keeper, ctl_w, st_r, pid = _detached_keeper(marker, tmp_path, "{}", BOOT_LINES)
    try:
        os.kill(pid, signal.SIGKILL)
        assert _wait_exited(keeper) == 0
    finally:
        os.close(ctl_w)
        os.close(st_r)
    assert manifest.read_text() == "{}"
    assert (tmp_path / "qemu.exit").read_text() == f"{-signal.SIGKILL}\n"


def _wakes(pid: int) -> int:
    """How many times ``pid`` has been put to sleep and woken (its context switches)."""
    with open(f"/proc/{pid}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd (Linux >= 5.3): "
                    "the keeper reads the console every POLL seconds there")
def test_an_idle_keeper_sleeps_until_its_console_or_child_says_something(
        marker: str, tmp_path: Path) -> None:
    """Once detached, a keeper whose guest prints nothing is not woken (no polling of the
    serial log: 20 idle VMs cost no CPU), and still sees a halt written after its sleep."""
    from launcher.tending import POLL

    manifest = tmp_path / "manifest.json"
    keeper, ctl_w, st_r, _ = _detached_keeper(marker, tmp_path, "{}", BOOT_LINES)
    try:
        time.sleep(0.3)  # settled: the log read, the watch made
        before = _wakes(keeper)
        time.sleep(10 * POLL)
        assert _wakes(keeper) - before <= 2, "an idle keeper keeps waking up"
        with open(tmp_path / "serial.log", "ab") as log:
            log.write(b"The operating system has halted.\r\n")
        assert _wait_exited(keeper, 10) == 0
    finally:
        os.close(ctl_w)
        os.close(st_r)
    assert json.loads(manifest.read_text())["guest_end"]["kind"] == "halted"
    assert not _gone(marker)


def test_scan_end_carries_lines_across_chunks() -> None:
    from launcher.stagescan import MAX_PARTIAL, scan_end

    partial, end = scan_end(b"", b"boot\r\nThe operating system ha")
    assert (partial, end) == (b"The operating system ha", None)
    partial, end = scan_end(partial, b"s halted.\r\nPlease press any key")
    assert end == ("halted", "The operating system has halted.")
    partial, end = scan_end(b"", b"x" * (3 * MAX_PARTIAL))  # no line end: bounded
    assert end is None and len(partial) == MAX_PARTIAL
    assert scan_end(b"", b"[   3.5] panic: init died\n[   3.5] cpu0: Begin traceback...\n"
                    )[1] == ("panic", "panic: init died")
    assert scan_end(b"", b"halt: halted by root\nsh: panic: not found\n")[1] is None


# -- the relay: bounded memory, same stages ----------------------------------------------


def test_relay_memory_is_bounded_and_stages_still_found() -> None:
    """Megabytes of console before the ready line (an interactive session that never gets
    one): the relay keeps the stage times and the last lines, not the whole stream."""
    filler = b"x" * 78 + b"\r\n"
    many = filler * 60_000  # 4.8 MB
    stream = [b"first\r\n", many, b"NetBSD 10.1 (SMOLTEST) #0: Mon Jan  1 00:00:00 UTC 2024\r\n",
              many, b"root file system type: ffs\r\n", b"Starting smoltest service.\r\n",
              many, b"tail line\r\n" * 3, b"SERVICE READY\r\n", b"after ready\r\npart"]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.close(err_w)

    def write() -> None:
        for chunk in stream:
            os.write(out_w, chunk)
        os.close(out_w)

    writer = threading.Thread(target=write)
    spawned = Spawned(0, ["qemu"], time.monotonic(), time.time(), out_r, err_r,
                               interactive=False)
    relay = {"console": "none", "path": None, "timestamps": False, "pattern": "SERVICE READY",
             "timeout": 60}
    tracemalloc.start()
    try:
        writer.start()
        relay_until_ready(spawned, relay, time.monotonic())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        writer.join()
        os.close(out_r)
        os.close(err_r)
    assert peak < 1_500_000, f"the relay held {peak} bytes for a 14 MB console"
    assert spawned.ready_at is not None and spawned.seen is not None
    times = spawned.seen.detector.times
    order = [times[s] for s in ("first_byte", "banner", "root", "rc")]
    assert order == sorted(order)
    assert times["rc"] <= spawned.ready_at
    tail = list(spawned.seen.tail)
    assert len(tail) == TAIL_LINES and tail[-3:] == ["tail line", "SERVICE READY",
                                                     "after ready"], tail
    assert spawned.seen.partial == b"part"


# -- the plan cache: malformed files, changed code, retargeted images ---------------------


@pytest.mark.parametrize("content", [[1, 2, 3], [(1, 2)], [((), "plan")], ("k", {}),
                                     [(("k",), {"argv": 5})]],
                         ids=["ints", "int-key", "str-plan", "not-a-list", "bad-plan"])
def test_an_unexpected_plan_file_is_ignored(cache: Path, content: object,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid marshal file of another shape: no crash, the ordinary path runs, and a
    plan can still be saved over it."""
    cache.mkdir(parents=True)
    path = Path(fastpath.plans_path())
    path.write_bytes(marshal.dumps(content))
    monkeypatch.setattr(fastpath, "plan_key", lambda argv: ("k",))
    assert fastpath.try_fast(["k"]) == (("k",), None)
    fastpath.save_plan(("other",), {"argv": ["x"]})
    assert fastpath._load()[0] == (("other",), {"argv": ["x"]})
    env = dict(os.environ, MKSMOLNB_CACHE=str(cache))
    path.write_bytes(marshal.dumps(content))
    for args in (["--help"], ["--version"]):
        r = subprocess.run([sys.executable, "-m", "launcher", *args], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_a_plan_with_a_broken_relay_is_not_used(cache: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    qemu = proc.which("true")
    assert qemu is not None
    key = fastpath.plan_key(["k"])
    plan = fastpath.make_plan([qemu], qemu, [], [], None, False, False, relay={"console": 1})
    fastpath.save_plan(key, plan)
    assert fastpath.try_fast(["k"]) == (key, None)


@pytest.mark.parametrize("name", ["__main__.py", "boot.py", "checks.py", "config.py",
                                  "fastpath.py", "host.py", "kernel.py", "proc.py", "qemu.py"])
def test_changing_the_code_that_computes_the_argv_retires_plans(cache: Path, name: str
                                                                ) -> None:
    source = Path(fastpath.__file__).parent / name
    st = source.stat()
    before = fastpath.plan_key(["k", "img"])
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
        assert fastpath.plan_key(["k", "img"]) != before
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fastpath.plan_key(["k", "img"]) == before


def test_plan_key_names_the_version() -> None:
    import tomllib

    from launcher import VERSION

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == VERSION
    assert VERSION in fastpath.plan_key(["k"])[-1]  # type: ignore[operator]


def test_image_users_are_looked_up_by_the_path_resolved_now(cache: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            marker: str) -> None:
    """The plan was saved for a link to a.img; the link now points at b.img, which a
    detached VM uses read-write: the plan must not start a second QEMU on b.img."""
    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    a, b, link = tmp_path / "a.img", tmp_path / "b.img", tmp_path / "root.img"
    for image in (a, b):
        image.write_bytes(b"\0" * 4096)
    link.symlink_to(a)
    qemu = proc.which("true")
    assert qemu is not None
    plan = fastpath.make_plan([qemu], qemu, [], [], (str(link), str(link.resolve())),
                              False, False)
    assert fastpath._usable(plan)
    fake = tmp_path / "qemu-system-x86_64"  # a process that looks like a QEMU to ps
    shutil.copy("/bin/sleep", fake)
    holder = subprocess.Popen([str(fake), marker])
    try:
        vm_dir = tmp_path / "state" / "holder"
        vm_dir.mkdir(parents=True)
        (vm_dir / "image").write_bytes(b"rw\n" + os.fsencode(b.resolve()))
        (vm_dir / "qemu.pid").write_text(f"{holder.pid}\n")
        assert fastpath._usable(plan)  # b.img in use; the link still names a.img
        link.unlink()
        link.symlink_to(b)
        assert not fastpath._usable(plan)
    finally:
        holder.kill()
        holder.wait()


def test_a_plan_whose_console_directory_is_gone_is_not_used(cache: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("MKSMOLNB_QEMU", "true")
    qemu = proc.which("true")
    assert qemu is not None
    logs = tmp_path / "logs"
    logs.mkdir()
    relay = {"console": "file", "path": str(logs / "serial.log"), "timestamps": False,
             "pattern": "SERVICE READY", "timeout": None}
    plan = fastpath.make_plan([qemu], qemu, [], [], None, False, False, relay=relay)
    assert fastpath._usable(plan)
    logs.rmdir()
    assert not fastpath._usable(plan)


# -- ps and stop over the state directory ---------------------------------------------------


def _startnb(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MKSMOLNB_STATE=str(state))
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_stop_wants_a_name_or_all(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for args in ([], ["web", "--all"]):
        r = _startnb("stop", *args, state=state)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "give either the name of a VM or --all" in r.stderr
    r = _startnb("stop", "--all", state=state)
    assert r.returncode == 0 and r.stderr == "startnb: no detached VM\n", r.stderr


def test_stop_all_forgets_vms_whose_qemu_is_gone_and_stops_the_others(
        tmp_path: Path, marker: str) -> None:
    """Two VM directories: one whose QEMU ended (its keeper recorded the exit status),
    one running (a process that looks like a QEMU to ps). ``stop --all`` ends the live one
    and forgets both."""
    state = tmp_path / "state"
    fake = tmp_path / "qemu-system-x86_64"
    shutil.copy("/bin/sleep", fake)
    live = subprocess.Popen([str(fake), marker])
    try:
        for name, pid in (("gone", 2**22 + 1), ("live", live.pid)):
            d = state / name
            d.mkdir(parents=True)
            (d / "qemu.pid").write_text(f"{pid}\n")
            (d / "manifest.json").write_text(json.dumps({"started": time.time() - 60}))
        (state / "gone" / "qemu.exit").write_text("0\n")
        r = _startnb("stop", "--all", "--grace", "0.1", state=state)
        assert r.returncode == 0, r.stderr
        assert r.stderr.splitlines() == [
            "startnb: gone was not running",
            f"startnb: stopped live (pid {live.pid}, sigterm): no QMP socket; QEMU ended on "
            "SIGTERM"], r.stderr
        assert live.wait(5) == -signal.SIGTERM
        assert list(state.iterdir()) == []
        assert json.loads(_startnb("ps", "--json", state=state).stdout) == []
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()


def test_ps_does_not_forget_a_vm_being_started(tmp_path: Path) -> None:
    """A VM directory just made (no QEMU yet, no manifest): a ``ps`` at that moment does
    not list it and must not delete it under the startnb creating it."""
    state = tmp_path / "state"
    (state / "starting").mkdir(parents=True)
    r = _startnb("ps", "--json", state=state)
    assert r.returncode == 0 and json.loads(r.stdout) == []
    assert (state / "starting").is_dir()


def test_keeper_starts_its_child_in_the_callers_directory(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """QEMU's argv may name the image relatively (``startnb SERVICE`` builds it in the
    working directory): the keeper starts QEMU there, and only then leaves for ``/``."""
    from launcher.keeper import start_keeper

    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "cwd.txt"
    monkeypatch.chdir(work)
    keeper = start_keeper(["/bin/sh", "-c", f"pwd > {out}.tmp && mv {out}.tmp {out}"],
                          None)
    try:
        assert os.read(keeper.report, 64).startswith(b"pid ")
        os.write(keeper.ctl, b"d")
        os.close(keeper.ctl)
        assert _read_to_eof(keeper.report) == b""
        assert _wait_exited(keeper.pid) == 0
        assert out.read_text().strip() == str(work)
    finally:
        os.close(keeper.report)


@pytest.mark.parametrize("script", ["printf 'hello\\n' >> serial.log; exec sleep 30",
                                    "exit 3"], ids=["first-byte", "qemu-exits"])
def test_detached_fast_path_waits_for_the_first_byte_or_the_end(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 script: str) -> None:
    """``-d`` from a plan: the launcher waits for QEMU's first console byte before its own
    work, but no longer once the keeper reports QEMU's end; what it read of the keeper's
    reports is handed to the Vm that adopts the keeper."""
    from launcher.keeper import start_keeper
    from launcher.vm import Vm

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fastpath, "FIRST_BYTE_WAIT", 10.0)
    keeper = start_keeper(["/bin/sh", "-c", script], str(tmp_path))
    t = time.monotonic()
    reports, _ = fastpath._await_first_byte(keeper, str(tmp_path / "serial.log"))
    assert time.monotonic() - t < 5.0
    vm = Vm(["/bin/sh"], detach=True)
    vm.adopt_keeper(keeper, reports)
    try:
        if script == "exit 3":
            assert b"exit 3" in reports
            assert vm.wait(5.0) == 3
        else:
            assert (tmp_path / "serial.log").read_bytes() == b"hello\n"
            assert vm.poll() is None
    finally:
        vm.kill()
        vm.close()


GOOD_DETACHED = {"result": {}, "manifest": {}, "image": None, "qmp": None, "timeout": None,
                 "json": False, "notes": ["a note"],
                 "ready": {"kind": "console", "pattern": "READY", "port": 0, "path": "/",
                           "guest_port": 0}}


@pytest.mark.parametrize("broken", [
    {"ready": 1}, {"ready": {"kind": "console"}},
    {"ready": {**GOOD_DETACHED["ready"], "pattern": "("}},  # type: ignore[dict-item]
    {"notes": 5}, {"manifest": [1]}, {"result": None}])
def test_a_detached_report_of_another_shape_is_handed_over(tmp_path: Path, broken: dict,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """launcher.detached never fails on a plan's report it cannot read: it hands the run
    to the ordinary path before printing anything."""
    from launcher import detached
    from launcher.spawned import Spawned

    spawned = Spawned(0, ["qemu"], 0.0, 0.0, -1, -1, False)
    spawned.keeper, spawned.vmdir = object(), str(tmp_path)  # type: ignore[assignment]
    spawned.detached = {**GOOD_DETACHED, **broken}
    assert detached.finish(spawned, 0.0, lambda *a: None) is False
    assert capsys.readouterr().err == "" and not spawned.notes_said


@pytest.mark.parametrize(("binary", "package"), [("qemu-system-aarch64", "qemu-system-arm"),
                                                 ("qemu-system-x86_64", "qemu-system-x86")])
def test_a_missing_qemu_names_the_package_that_provides_it(tmp_path: Path, binary: str,
                                                           package: str) -> None:
    """The hint comes from the one table of programs and packages (smolfs.run.PACKAGES)."""
    from launcher.vm import Vm
    from smolfs.errors import LaunchError

    vm = Vm([str(tmp_path / binary), "-version"])
    with pytest.raises(LaunchError) as err:
        vm.start()
    assert err.value.message == f"{tmp_path / binary} not found"
    assert err.value.hint == f"install it: apt-get install {package}"


@pytest.mark.parametrize("watched", [True, False], ids=["news", "no-news"])
def test_keeper_tells_the_launcher_of_console_writes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     watched: bool) -> None:
    """Until ready the keeper tells the launcher when a file of the state directory is
    written to (a byte on ``written``: the launcher wakes instead of polling, and the
    watch's slow teardown is the keeper's); where it cannot watch, ``written`` ends at
    once and the launcher polls."""
    from launcher import filewatch
    from launcher.keeper import read_news, start_keeper
    from launcher.vm import Vm

    if not watched:
        monkeypatch.setattr(filewatch, "watch", lambda path: None)  # (the fork inherits it)
    monkeypatch.chdir(tmp_path)
    keeper = start_keeper(["/bin/sh", "-c", "sleep 0.3; printf x >> serial.log; sleep 30"],
                          str(tmp_path))
    first = os.read(keeper.report, 64)
    try:
        assert first.startswith(b"pid ")
        if watched:
            assert select.select([keeper.written], [], [], 0.2)[0] == []  # nothing yet
            assert select.select([keeper.written], [], [], 5.0)[0] == [keeper.written]
            assert read_news(keeper.written) is True
            assert (tmp_path / "serial.log").read_bytes() == b"x"
        else:
            assert select.select([keeper.written], [], [], 5.0)[0] == [keeper.written]
            assert read_news(keeper.written) is False  # at once: no news will come
            assert not (tmp_path / "serial.log").exists()
    finally:
        vm = Vm(["/bin/sh"], detach=True)
        vm.adopt_keeper(keeper, first)
        vm.kill(0.5)
        vm.close()


def test_keeper_stops_watching_when_nobody_listens(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The ordinary path adopts a keeper without reading its news of writes (it closes
    that pipe): at the next write the keeper drops its watch instead of waking on every
    console write of the boot."""
    from launcher.keeper import start_keeper
    from launcher.vm import Vm

    monkeypatch.chdir(tmp_path)
    keeper = start_keeper(["/bin/sh", "-c", "sleep 0.3; while :; do printf x >> serial.log; "
                           "sleep 0.05; done"], str(tmp_path))

    def watching() -> bool:
        links = [os.readlink(f"/proc/{keeper.pid}/fd/{fd}")
                 for fd in os.listdir(f"/proc/{keeper.pid}/fd")]
        return any("inotify" in link for link in links)

    vm = Vm(["/bin/sh"], detach=True)
    vm.adopt_keeper(keeper)  # closes the news pipe: nobody listens
    try:
        deadline = time.monotonic() + 2.0
        while not watching() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not watching():
            pytest.skip("no inotify here: nothing to drop")
        deadline = time.monotonic() + 5.0
        while watching() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not watching(), "the keeper still watches with nobody listening"
        assert (tmp_path / "serial.log").exists()  # (dropped at a write, not before)
    finally:
        vm.kill(0.5)
        vm.close()
